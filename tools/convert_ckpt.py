"""Convert a PyTorch pickle checkpoint (.ckpt / .pt / .bin) to .safetensors, which
is what easel reads (it never unpickles: a pickle can run code when loaded).

    tools/.venv/bin/python tools/convert_ckpt.py IN.ckpt OUT.safetensors

Loads with `torch.load(weights_only=True)` (PyTorch's restricted unpickler: tensors
and plain containers only), takes its `state_dict` when it has one, keeps the
tensors (dropping counters such as `global_step`), and writes them with their
names and dtypes unchanged; tensors that share storage are written as copies.
"""

import sys

import torch
from safetensors.torch import save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, target = sys.argv[1:]
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items() if torch.is_tensor(v)}
    dropped = sorted(k for k, v in state.items() if not torch.is_tensor(v))
    save_file(tensors, target)
    print(f"{target}: {len(tensors)} tensors" + (f" (not tensors, dropped: {', '.join(dropped)})" if dropped else ""))


if __name__ == "__main__":
    main()
