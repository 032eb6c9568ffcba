"""bitsandbytes NF4 checkpoints (Forge's `flux1-dev-bnb-nf4*.safetensors`): the transformer's linear weights stay
4-bit in memory and are dequantised per layer at each call, as for GGUF files; no bitsandbytes needed to run them.

A file stores each quantised weight as bitsandbytes' `Linear4bit` saves it: `<layer>.weight` (the 4-bit codes, two
per byte, the first in the high nibble, flattened row-major), `.absmax` (one scale per block of `blocksize` values;
with double quantisation itself 8-bit: `nested_quant_map[absmax] * nested_absmax[block of nested_blocksize] +
nested_offset`), `.quant_map` (the 16 NF4 levels) and `.quant_state.bitsandbytes__nf4` (JSON: shape, blocksize,
...). Each weight is turned here into one uint8 tensor of rows: a row of the weight is its codes (in / 2 bytes)
followed by its blocks' float32 scales (4 x in / blocksize bytes), so the row operations the name conversion does
(splitting fused q/k/v, swapping halves) work on it unchanged. After the conversion `quantized_parameter` marks such
a tensor with its logical shape, and `NF4Linear` computes with it. tests/test_nf4.py checks the values against
bitsandbytes' own `dequantize_4bit`.
"""
from __future__ import annotations

import json
from typing import Mapping

import torch

from .architecture import CheckpointFormatError

STATE_SUFFIX = ".quant_state.bitsandbytes__nf4"
_FP4_SUFFIX = ".quant_state.bitsandbytes__fp4"
_PARTS = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", STATE_SUFFIX)


def is_nf4_file(state: Mapping[str, torch.Tensor]) -> bool:
    return any(key.endswith(STATE_SUFFIX) for key in state)


def is_fp4_file(state: Mapping[str, torch.Tensor]) -> bool:
    return any(key.endswith(_FP4_SUFFIX) for key in state)


def _quant_state(tensor: torch.Tensor, key: str, name: str) -> dict:
    try:
        info = json.loads(bytes(tensor.to(torch.uint8).tolist()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        info = None
    if not isinstance(info, dict):
        raise CheckpointFormatError(f"{name}: the NF4 quantisation state of {key} is unreadable")
    return info


def _absmax(state: Mapping, weight_key: str, info: dict, blocks: int, name: str) -> torch.Tensor:
    """The float32 scale of each block."""
    absmax = state[weight_key + ".absmax"]
    if weight_key + ".nested_absmax" not in state:
        if absmax.numel() != blocks:
            raise CheckpointFormatError(f"{name}: the NF4 scales of {weight_key} do not fit its shape")
        return absmax.float()
    code = state[weight_key + ".nested_quant_map"].float()
    nested = state[weight_key + ".nested_absmax"].float()
    size = int(info.get("nested_blocksize", 256))
    scales = nested.repeat_interleave(size)[:absmax.numel()]
    if scales.numel() != absmax.numel() or absmax.numel() != blocks:
        raise CheckpointFormatError(f"{name}: the NF4 scales of {weight_key} do not fit its shape")
    return code[absmax.long()] * scales + float(info.get("nested_offset", 0.0))


def to_rows(state: Mapping[str, torch.Tensor], name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """(the state with each NF4 weight as a uint8 tensor of rows [codes, float32 scales] and its companion tensors
    removed, the 16 NF4 levels, the block size). Other tensors pass through. A weight that cannot be read is a
    CheckpointFormatError naming it."""
    out = {k: v for k, v in state.items() if not k.endswith(_PARTS)}
    code, blocksize = None, None
    for key in [k for k in state if k.endswith(STATE_SUFFIX)]:
        weight_key = key[:-len(STATE_SUFFIX)]
        try:
            rows, levels, size = _weight_rows(state, weight_key, _quant_state(state[key], key, name), name)
        except CheckpointFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise CheckpointFormatError(f"{name}: the NF4 weight {weight_key} cannot be read ({type(exc).__name__}: "
                                        f"{exc})") from None
        if code is None:
            code, blocksize = levels, size
        elif not torch.equal(code, levels) or blocksize != size:
            raise CheckpointFormatError(f"{name}: its NF4 weights use different levels or block sizes")
        out[weight_key] = rows
    if code is None:
        raise CheckpointFormatError(f"{name}: no NF4 weights found")
    return out, code, blocksize


def _weight_rows(state: Mapping, weight_key: str, info: dict, name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(one NF4 weight as rows of [codes, float32 scales], its 16 levels, its block size)."""
    if str(info.get("quant_type", "nf4")) != "nf4":
        raise CheckpointFormatError(f"{name}: {weight_key} is {info.get('quant_type')}-quantised; only NF4 runs")
    shape = tuple(int(s) for s in info.get("shape", ()))
    size = int(info.get("blocksize", 64))
    if len(shape) != 2 or size <= 0 or size % 2 or shape[1] % size or weight_key not in state:
        raise CheckpointFormatError(f"{name}: the NF4 weight {weight_key} has a shape we cannot read ({shape}, "
                                    f"blocks of {size})")
    levels = state[weight_key + ".quant_map"].float().reshape(-1)
    if levels.numel() != 16:
        raise CheckpointFormatError(f"{name}: the NF4 weight {weight_key} has {levels.numel()} levels, not 16")
    rows, columns = shape
    packed = state[weight_key].reshape(-1)
    if packed.dtype != torch.uint8 or packed.numel() * 2 != rows * columns:
        raise CheckpointFormatError(f"{name}: the NF4 weight {weight_key} does not hold {rows}x{columns} codes")
    scales = _absmax(state, weight_key, info, rows * columns // size, name).reshape(rows, columns // size)
    return (torch.cat([packed.reshape(rows, columns // 2), scales.contiguous().view(torch.uint8).reshape(rows, -1)],
                      dim=1), levels, size)


def logical_columns(row_bytes: int, blocksize: int) -> int:
    """A row's value count from its bytes: codes (columns / 2) + scales (4 x columns / blocksize)."""
    return row_bytes * 2 * blocksize // (blocksize + 8)


def quantized_parameter(rows: torch.Tensor, code: torch.Tensor, blocksize: int) -> torch.nn.Parameter:
    """A row tensor as a parameter that says what it holds (`quant_type`, `quant_shape`: the layer code's marks)."""
    param = torch.nn.Parameter(rows.contiguous(), requires_grad=False)
    param.quant_type = "nf4"
    param.quant_shape = torch.Size((rows.shape[0], logical_columns(rows.shape[1], blocksize)))
    param.nf4_code, param.nf4_blocksize = code, blocksize
    return param


def _pair_table(param, device: torch.device) -> torch.Tensor:
    """[256, 2]: the two levels a code byte holds (high nibble first), made once per device and kept on the
    parameter, so no call copies anything from the CPU (which would stall a GPU's stream)."""
    tables = param.__dict__.setdefault("nf4_tables", {})
    if device not in tables:
        byte = torch.arange(256)
        tables[device] = torch.stack([param.nf4_code[byte >> 4], param.nf4_code[byte & 15]], dim=-1).to(device)
    return tables[device]


def dequantize(param: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight's values, computed in float32 and cast to `dtype` once."""
    rows, columns = param.quant_shape
    data = param.data if isinstance(param, torch.nn.Parameter) else param
    codes = data[:, :columns // 2]
    scales = data[:, columns // 2:].contiguous().view(torch.float32)
    values = _pair_table(param, data.device)[codes.int()]  # [rows, columns / 2, 2]: int32 indices, one per byte
    values = values.reshape(rows, columns // param.nf4_blocksize, param.nf4_blocksize)
    return (values * scales.unsqueeze(-1)).reshape(rows, columns).to(dtype)


class NF4Linear(torch.nn.Linear):
    """A linear layer whose weight is NF4 rows (`quantized_parameter`), dequantised in float32 at each call and
    computed in `compute_dtype`."""

    def __init__(self, in_features: int, out_features: int, bias: bool, compute_dtype: torch.dtype, device=None):
        super().__init__(in_features, out_features, bias, device=device)
        self.compute_dtype = compute_dtype

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        weight = dequantize(self.weight, self.compute_dtype)
        bias = self.bias.to(self.compute_dtype) if self.bias is not None else None
        return torch.nn.functional.linear(inputs.to(self.compute_dtype), weight, bias)
