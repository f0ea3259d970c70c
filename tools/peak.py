"""f32 GEMM throughput of numpy (its BLAS) on this machine: the CPU's practical
peak, to put easel's lavapipe kernels (benches/kernels.rs) in proportion.

Prints one JSON line per (threads, size): 1 thread, then all cores.
Run: tools/.venv/bin/python tools/peak.py
"""

import json
import os
import subprocess
import sys
import time

SIZES = (256, 512, 1024, 2048)
# BLAS reads its thread count once, at import: each count runs in a child process.
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def measure(n, budget_s=1.0):
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget_s and len(times) < 50):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    return median * 1e3, 2 * n**3 / median / 1e9


def child(threads):
    for n in SIZES:
        ms, gflops = measure(n)
        print(json.dumps({"kernel": "numpy f32 matmul", "threads": threads,
                          "shape": f"{n}^3", "median_ms": round(ms, 3),
                          "gflops": round(gflops, 2)}), flush=True)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    for threads in (1, os.cpu_count()):
        env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
        subprocess.run([sys.executable, __file__, "--child", str(threads)], env=env, check=True)


if __name__ == "__main__":
    main()
