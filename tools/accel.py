"""Where the training scripts run: CPU as before, or a CUDA GPU in bf16 with large batches.

One code path for both: `--device cpu --amp bf16` runs on the CPU exactly what a GPU run
does (autocast to bf16, the loss in f32, EMA by `torch._foreach_lerp_`), only slower, so
the GPU path is tested where no GPU is at hand (tools/test_gpu_path.sh).

    dev = accel.Device(args.device, args.amp, args.compile)   # auto: cuda if there is one
    with dev.autocast():
        loss = ...
    budget = accel.Budget(args.max_minutes)                    # stop before a run's limit
"""

import contextlib
import time

import torch


class Device:
    """The device, its mixed precision and whether to compile the model.

    `name`: "auto" (cuda when available, else cpu), "cpu" or "cuda[:N]".
    `amp`: "auto" (bf16 on cuda, none on cpu), "none" or "bf16".
    On cuda, TF32 is allowed for what stays in f32 (matmuls and convolutions).
    """

    def __init__(self, name="auto", amp="auto", compile=False):
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: torch sees no CUDA device")
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"
        if amp == "auto":
            amp = "bf16" if self.cuda else "none"
        if amp not in ("none", "bf16"):
            raise SystemExit(f"--amp {amp}: must be auto, none or bf16")
        self.amp, self.compile = amp, compile
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True

    def __str__(self):
        name = torch.cuda.get_device_name(self.device) if self.cuda else "cpu"
        return f"{self.device} ({name}), amp {self.amp}, compile {self.compile}"

    def autocast(self):
        """bf16 autocast on this device's type, or nothing (f32)."""
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def forward(self, module):
        """What the training step calls: the module, or torch.compile of it (its
        state_dict and the EMA stay on the module itself)."""
        return torch.compile(module) if self.compile else module

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)


@torch.no_grad()
def ema_update(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model, for every parameter at once."""
    pe = [p for p in ema.parameters()]
    pm = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(pe, pm, 1.0 - decay)


class Budget:
    """Wall-clock budget of one run (GPU machines are lent for minutes): `over()` once
    `minutes` have passed since it was made (None: never)."""

    def __init__(self, minutes=None):
        self.t0, self.minutes = time.time(), minutes

    def over(self):
        return self.minutes is not None and time.time() - self.t0 > self.minutes * 60

    def elapsed_minutes(self):
        return (time.time() - self.t0) / 60
