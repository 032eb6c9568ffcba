"""GGUF-quantised transformers: FLUX.1 and SD3 / SD3.5 `.gguf` files as people download them (city96's
`flux1-dev-Q4_0.gguf`, `flux1-schnell-Q8_0.gguf`, `sd3.5_large-Q5_K_M.gguf`, ...: the transformer alone, BFL's or
Stability's tensor names, metadata `general.architecture` = "flux" / "sd3").

The file is read with the `gguf` package (llama.cpp's reader): its metadata and each tensor's logical shape come from
the header, so a file of another family is refused before its data is copied. Quantised tensors (Q4_0, Q5_K, Q8_0 and
the other types diffusers dequantises) are kept as they are in memory, as diffusers' `GGUFParameter`s (the blocks'
bytes plus their type); F32 / F16 / BF16 tensors (biases, norms, the small layers such files keep unquantised) become
ordinary tensors in the compute dtype. The names are converted as for safetensors files (`flux.bfl_to_diffusers`,
`sd3.sai_to_diffusers`: the fused projections are split by rows, which GGUF's row-wise blocks allow), the config comes
from the logical shapes, and every linear layer whose weight is quantised becomes a `QuantizedLinear` (diffusers'
`GGUFLinear`) that dequantises its weight at each call: in float32 with diffusers' per-type block functions (the same
values as `gguf.quants.dequantize`), rounded once to the compute dtype. Memory is the file's size plus one layer's
dequantised weight at a time. A quantised tensor of any other layer (none in city96's files) is dequantised at load.

The result is a `flux.FluxParts` / `sd3.SD3Parts` (transformer only) that `flux_assembly` completes from the separate
AE / CLIP / T5 files, as for transformer-only safetensors files.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from .architecture import CheckpointFormatError

GGUF_SUFFIX = ".gguf"
RUNNABLE = {"flux": "FLUX.1", "sd3": "SD3 / SD3.5"}  # general.architecture values of the families we run

TensorsRead = Callable[[int, int], None]  # (tensors read so far, tensors in the file)


def _gguf():
    """The `gguf` package and diffusers' GGUF helpers (imported on first use: only GGUF loads need them)."""
    try:
        import gguf
        from diffusers.quantizers.gguf import utils
    except ImportError as exc:  # a venv not synced to requirements.lock
        raise CheckpointFormatError(f"GGUF files need the `gguf` package ({exc}); run ./launch.sh to install the "
                                    "locked dependencies") from None
    return gguf, utils


@dataclass
class GgufFile:
    """A GGUF file's header: the architecture named in its metadata (None when absent), each tensor's logical shape
    and dtype (meta tensors: nothing is read) and how many tensors of each type it holds."""

    path: Path
    architecture: str | None
    shapes: dict[str, torch.Tensor]
    types: Counter

    @property
    def quantization(self) -> str:
        """The quantised types, most common first ("Q4_0", "Q5_K+Q8_0"); "unquantised" for F32/F16/BF16 files."""
        quantised = [name for name, _ in self.types.most_common() if name not in _FLOAT_TYPES]
        return "+".join(quantised) or "unquantised"


_FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_INT_TYPES = {"I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64}


def _reader(path: Path):
    gguf, _ = _gguf()
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointFormatError(f"{name}: cannot read the file ({exc.strerror})") from None
    if size == 0:
        raise CheckpointFormatError(f"{name}: the file is empty")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise CheckpointFormatError(f"{name}: not a readable GGUF file ({exc})") from None


def _architecture(reader) -> str | None:
    field = reader.get_field("general.architecture")
    if field is None:
        return None
    try:
        return str(field.contents()).strip().lower() or None
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _logical_shape(tensor) -> tuple[int, ...]:
    return tuple(int(x) for x in reversed(tensor.shape.tolist()))  # GGUF lists dimensions innermost first


def read_header(path: Path) -> GgufFile:
    """The header of a GGUF file (CheckpointFormatError when it is no readable GGUF file)."""
    path = Path(path)
    reader = _reader(path)
    shapes, types = {}, Counter()
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        types[kind] += 1
        dtype = _FLOAT_TYPES.get(kind) or _INT_TYPES.get(kind) or torch.float32
        shapes[tensor.name] = torch.empty(_logical_shape(tensor), dtype=dtype, device="meta")
    return GgufFile(path, _architecture(reader), shapes, types)


def read_tensors(path: Path, on_read: TensorsRead | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a GGUF file, copied into process memory (a mapped file overwritten while loaded would change the
    model): quantised ones as diffusers' `GGUFParameter` (the raw blocks, shaped [rows..., bytes per row]), the rest
    as ordinary tensors of their logical shape. Types diffusers cannot dequantise are refused by name."""
    gguf, utils = _gguf()
    path = Path(path)
    reader = _reader(path)
    supported = set(utils.SUPPORTED_GGUF_QUANT_TYPES)
    out: dict[str, torch.Tensor] = {}
    total = len(reader.tensors)
    try:
        for index, tensor in enumerate(reader.tensors):
            kind = tensor.tensor_type
            data = np.array(tensor.data, copy=True)  # the file's bytes, read now
            if kind.name in _FLOAT_TYPES or kind.name in _INT_TYPES:
                value = torch.from_numpy(data)
                if kind.name == "BF16":  # the reader gives BF16 as raw bytes
                    value = value.view(torch.bfloat16)
                out[tensor.name] = value.reshape(_logical_shape(tensor))
            elif kind in supported:
                out[tensor.name] = utils.GGUFParameter(torch.from_numpy(data), quant_type=kind)
            else:
                names = ", ".join(sorted(t.name for t in supported))
                raise CheckpointFormatError(f"{path.name}: tensor {tensor.name} is quantised as {kind.name}, which "
                                            f"cannot be dequantised here (supported: {names})")
            if on_read is not None:
                on_read(index + 1, total)
    except (ValueError, OSError, IndexError) as exc:  # data cut short: the reader's views do not fit
        raise CheckpointFormatError(f"{path.name}: corrupt or truncated GGUF file ({exc})") from None
    return out


def logical_shapes(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta tensors of each tensor's logical shape (a quantised tensor's `quant_shape`, not its bytes), for the
    config readers (`flux.flux_config`, `sd3.sd3_config`) and the layout checks."""
    return {key: torch.empty(tuple(getattr(value, "quant_shape", value.shape)), dtype=value.dtype, device="meta")
            for key, value in tensors.items()}


# --- quantised layers ----------------------------------------------------------------------------------------------

def dequantize(weight: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A GGUFParameter's values (ordinary tensors pass through): diffusers' per-type block function computed in
    float32, then cast to `dtype` (one rounding)."""
    quant_type = getattr(weight, "quant_type", None)
    if quant_type is None:
        return weight.to(dtype)
    if quant_type == "nf4":  # bitsandbytes NF4 files (nf4.py)
        from .nf4 import dequantize as dequantize_nf4
        return dequantize_nf4(weight, dtype)
    _, utils = _gguf()
    block_size, type_size = utils.GGML_QUANT_SIZES[quant_type]
    raw = weight.as_tensor().view(torch.uint8)
    blocks = raw.reshape(-1, type_size)
    values = utils.dequantize_functions[quant_type](blocks, block_size, type_size, dtype=torch.float32)
    return values.reshape(weight.quant_shape).to(dtype)


def _linear_class():
    _, utils = _gguf()

    class QuantizedLinear(utils.GGUFLinear):
        """diffusers' GGUFLinear, its weight dequantised in float32 at each call (GGUFLinear's own dequantises in
        float16, a second rounding before the compute dtype). The CUDA kernel path is diffusers' unchanged."""

        def forward_native(self, inputs: torch.Tensor) -> torch.Tensor:
            weight = dequantize(self.weight, self.compute_dtype)
            bias = self.bias.to(self.compute_dtype) if self.bias is not None else None
            return torch.nn.functional.linear(inputs, weight, bias)

    return QuantizedLinear


def is_quantized(tensor: torch.Tensor) -> bool:
    return getattr(tensor, "quant_type", None) is not None and hasattr(tensor, "quant_shape")


def build_quantized(cls, config: dict, weights: dict, what: str, name: str, dtype: torch.dtype,
                    linear: type | None = None) -> torch.nn.Module:
    """`cls` (a diffusers model) built empty from `config` with `weights` (diffusers' names) assigned: quantised
    linear weights stay quantised in `linear` layers (GGUF's `QuantizedLinear` by default; NF4 files pass
    `nf4.NF4Linear`), everything else in `dtype`."""
    from .loader import _empty_module
    from .transformer_files import assign_checked

    module = _empty_module(cls, config)
    linear = linear or _linear_class()
    plain: dict[str, torch.Tensor] = {}
    kept: set[str] = set()
    for key, value in weights.items():
        owner_name, _, leaf = key.rpartition(".")
        if is_quantized(value):
            try:
                owner = module.get_submodule(owner_name)
            except AttributeError:
                owner = None  # an unexpected tensor: named below
            if leaf == "weight" and type(owner) is torch.nn.Linear:
                expected = (owner.out_features, owner.in_features)
                if tuple(value.quant_shape) != expected:
                    raise CheckpointFormatError(f"{name}: the {what} tensor {key} is {tuple(value.quant_shape)}, "
                                                f"its layer needs {expected}")
                layer = linear(owner.in_features, owner.out_features, owner.bias is not None, compute_dtype=dtype,
                               device="meta")
                layer.weight = value
                parent_name, _, child = owner_name.rpartition(".")
                setattr(module.get_submodule(parent_name), child, layer)
                kept.add(key)
                continue
            value = dequantize(value, dtype)
        plain[key] = value.to(dtype) if value.is_floating_point() else value
    return assign_checked(module, plain, what, name, lambda key: key in kept)  # kept: in QuantizedLinear layers


# --- whole files ---------------------------------------------------------------------------------------------------

def _family_of(header: GgufFile) -> tuple[str, str]:
    """("flux" | "sd3", layout) for a file we run; CheckpointFormatError naming what the file is otherwise."""
    from .flux import flux_layout, other_family
    from .sd3 import sd3_layout

    name = header.path.name
    sd3 = sd3_layout(header.shapes)
    if sd3 is not None:
        return "sd3", sd3
    flux = flux_layout(header.shapes)
    if flux is not None:
        return "flux", flux
    family = other_family(header.shapes)
    arch = header.architecture
    if arch is not None and arch not in RUNNABLE:
        seen = f" ({family})" if family else ""
        raise CheckpointFormatError(f"{name}: a GGUF model of architecture {arch!r}{seen}; GGUF checkpoints run for "
                                    "FLUX.1 and SD3 / SD3.5 transformers only")
    if family is not None:
        raise CheckpointFormatError(f"{name}: a GGUF {family} model; this model family is not supported yet")
    said = f" (its metadata says {RUNNABLE[arch]})" if arch else ""
    raise CheckpointFormatError(f"{name}: no FLUX.1 or SD3 transformer tensors in this GGUF file{said}")


def open_gguf(path: Path) -> tuple[GgufFile, str, str]:
    """(header, "flux" | "sd3", layout) of a GGUF checkpoint; CheckpointFormatError for anything else."""
    header = read_header(Path(path))
    return (header, *_family_of(header))


def build_parts(header: GgufFile, family: str, layout: str, dtype: torch.dtype, on_read: TensorsRead | None = None,
                on_convert: Callable[[], None] | None = None):
    """The file's transformer as `flux.FluxParts` / `sd3.SD3Parts` (transformer only, computed in `dtype`,
    quantised weights kept quantised; `layout` says "BFL, GGUF Q4_0"). `on_convert()`: reading is done."""
    from . import flux, sd3

    name = header.path.name
    state = read_tensors(header.path, on_read)
    if on_convert is not None:
        on_convert()
    label = f"{layout}, GGUF {header.quantization}"
    split = flux._split_packed if family == "flux" else sd3._split_packed
    transformer_sd, parts = split(state, layout, name)
    del state
    if parts:
        raise CheckpointFormatError(f"{name}: this GGUF file holds more than the transformer ({', '.join(parts)}); "
                                    "only transformer-only GGUF files are supported: put the VAE and text encoders "
                                    "in models/VAE and models/text_encoder as .safetensors files")
    if family == "flux":
        weights = dict(transformer_sd) if layout == "diffusers" else flux.bfl_to_diffusers(transformer_sd, name)
        config = flux.flux_config(logical_shapes(weights))
        module = build_quantized(flux.FluxTransformer2DModel, config, weights, "Flux transformer", name, dtype)
        return flux.FluxParts(module, flux.variant_of(module.config), label, torch.uint8, dtype)
    weights = sd3.sai_to_diffusers(transformer_sd, name) if layout == "SAI" else dict(transformer_sd)
    try:
        config = sd3.sd3_config(logical_shapes(weights))
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{name}: {exc}") from None
    module = build_quantized(sd3.SD3Transformer2DModel, config, weights, "SD3 transformer", name, dtype)
    return sd3.SD3Parts(module, sd3.variant_of(module.config), label, torch.uint8, dtype)


def read_gguf_file(path: Path, dtype: torch.dtype = torch.bfloat16):
    """(family, parts) of a GGUF FLUX.1 / SD3 checkpoint (see `build_parts`)."""
    header, family, layout = open_gguf(path)
    return family, build_parts(header, family, layout, dtype)


def _dtype_for(policy, family: str) -> torch.dtype:
    dtype_for = getattr(policy, "dtype_for", None)
    return dtype_for(family) if dtype_for is not None else policy.dtype


def load_gguf(path: Path, policy, cache_dir: Path, name: str | None = None, parts=None, on_progress=None):
    """A `.gguf` checkpoint as a LoadedModel: its transformer (quantised), completed by `flux_assembly` from the
    separate files (`parts`: flux_assembly.SeparateParts)."""
    from .flux_assembly import SeparateParts, assemble_flux, assemble_sd3
    from .load_progress import SINGLE_FILE_STAGES, LoadProgress

    path = Path(path)
    name = name or path.name
    started = time.perf_counter()
    with LoadProgress(name, SINGLE_FILE_STAGES, on_progress) as progress:
        progress.begin("read")
        header, family, layout = open_gguf(path)
        model_parts = build_parts(header, family, layout, _dtype_for(policy, family), progress.within,
                                  lambda: progress.begin("convert"))
        separate = parts or SeparateParts()
        if family == "flux":
            return assemble_flux(model_parts, name, policy, cache_dir, separate, progress, started=started)
        return assemble_sd3(model_parts, name, policy, cache_dir, separate, progress, started=started)
