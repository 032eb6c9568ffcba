"""Writes bitsandbytes' own NF4 files for tests/test_nf4.py, in a process of its own.

bitsandbytes lives in .venv/aside/ (requirements-test-aside.txt), not in the venv: installed there, diffusers would
import it in every process. tests/test_nf4.py runs this script with that folder on PYTHONPATH:

    python tests/nf4_reference.py IN.safetensors OUT.safetensors VALUES.safetensors PREFIX BLOCK NESTED QUANT_TYPE

IN: float tensors. OUT: the file as Forge saves bitsandbytes' Linear4bit layers (every 2-D `.weight` under PREFIX
whose rows are whole blocks: its 4-bit codes and the quantisation state's tensors beside it; the rest as it is).
VALUES: for each quantised weight, the float32 values bitsandbytes' `dequantize_4bit` gives back.
"""
from __future__ import annotations

import sys

import bitsandbytes.functional as bnb
from safetensors.torch import load_file, save_file


def main(source: str, target: str, values: str, prefix: str, block: str, nested: str, quant_type: str) -> None:
    size = int(block)
    out, held = {}, {}
    for key, value in load_file(source).items():
        if key.startswith(prefix) and key.endswith(".weight") and value.ndim == 2 and value.shape[1] % size == 0:
            codes, state = bnb.quantize_4bit(value.float().contiguous(), blocksize=size, quant_type=quant_type,
                                             compress_statistics=nested == "1")
            out[key] = codes
            for name, tensor in state.as_dict(packed=True).items():
                out[f"{key}.{name}"] = tensor
            held[key] = bnb.dequantize_4bit(codes, state).float()
        else:
            out[key] = value
    save_file({k: v.contiguous() for k, v in out.items()}, target)
    save_file({k: v.contiguous() for k, v in held.items()}, values)


if __name__ == "__main__":
    main(*sys.argv[1:])
