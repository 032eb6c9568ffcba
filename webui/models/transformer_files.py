"""What the transformer families' file readers (`flux`, `sd3`, `zimage`, `gguf_files`) share.

Each family's file holds a transformer under a layout-dependent prefix, sometimes packed with its VAE and text
encoders under their own prefixes; its original names reach diffusers' names through diffusers' own converter,
with the fused q/k/v projections split here into row views (the converters copy them); its diffusers folder is read
part by part, offline. The family modules keep what differs (their prefixes, markers, name tables and the label
their messages use) and call these helpers with it.
"""
from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from .architecture import CheckpointFormatError

Converter = Callable[[dict], dict]  # a diffusers single-file converter: pops what it converts, returns the rest renamed
FusedSplit = Callable[[str, torch.Tensor], dict]  # (fused key, its tensor) -> {diffusers name: row view}


# --- prefixes ------------------------------------------------------------------------------------------------------

def find_prefix(state: Mapping, prefixes: Iterable[str], marks: Iterable[str], absent: Iterable[str] = ()) \
        -> str | None:
    """The first of `prefixes` under which every tensor name in `marks` is in `state` and none in `absent`; else
    None (how the families tell their layouts, and where in a file the transformer sits)."""
    marks, absent = tuple(marks), tuple(absent)
    for prefix in prefixes:
        if all(prefix + mark in state for mark in marks) and not any(prefix + other in state for other in absent):
            return prefix
    return None


def strip_prefix(state: Mapping, prefixes: Iterable[str]) -> dict:
    """The tensors under the first of `prefixes` that any tensor has, without it; else all of `state`."""
    for prefix in prefixes:
        inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if inner:
            return inner
    return dict(state)


def split_packed(state: Mapping, prefix: str, part_prefixes: Mapping[str, Iterable[str]], name: str,
                 model: str) -> tuple[dict, dict[str, dict]]:
    """(transformer tensors with `prefix` removed, {part: its tensors with the part's prefix removed}).

    `part_prefixes`: each packed part (in the order they are claimed) and the prefixes it may sit under, the first
    one present winning. A tensor under neither a part's prefix nor `prefix` is refused, naming the file and
    `model` (the family's label with its article: "a Flux model"), rather than silently dropped."""
    parts: dict[str, dict] = {}
    claimed: set[str] = set()
    for part, prefixes in part_prefixes.items():
        for p in prefixes:
            inner = {k[len(p):]: v for k, v in state.items() if k.startswith(p) and k not in claimed}
            if inner:
                parts[part] = inner
                claimed.update(k for k in state if k.startswith(p))
                break
    transformer, stray = {}, []
    for key, value in state.items():
        if key in claimed:
            continue
        if key.startswith(prefix):
            transformer[key[len(prefix):]] = value
        else:
            stray.append(key)
    if stray:
        raise CheckpointFormatError(f"{name}: {len(stray)} tensors belong to no part of {model} "
                                    f"(e.g. {', '.join(sorted(stray)[:3])})")
    return transformer, parts


# --- original names to diffusers' ------------------------------------------------------------------------------------

def convert_split_fused(original: Mapping[str, torch.Tensor], name: str, what: str, layout: str,
                        converter: Converter, fused: re.Pattern, split: FusedSplit,
                        stand_in_rows: Callable[[str, torch.Tensor], int] | None = None) -> dict[str, torch.Tensor]:
    """`original` (a transformer's original names, no prefix) in diffusers' names, by diffusers' `converter`, with
    the tensors whose names match `fused` (the fused q/k/v projections) split by `split` into row views.

    The converter names every tensor, but copies the fused projections: they reach it as shape-only stand-ins (meta
    tensors, `stand_in_rows(key, tensor)` rows when the converter expects another row count than the file's) and
    `split` gives the real views. Afterwards: tensors the converter left were not expected (refused, as is a
    converter error, naming `what` ("Flux transformer") and `layout` ("FLUX.1's layout")); a stand-in still in the
    result means diffusers names the fused parts differently now: better refused than loaded wrong."""
    work = dict(original)  # the converter pops what it converts; what is left was not expected
    parts = {k: v for k, v in work.items() if fused.fullmatch(k)}
    for key, value in parts.items():
        rows = stand_in_rows(key, value) if stand_in_rows is not None else value.shape[0]
        work[key] = torch.empty((rows, *value.shape[1:]), device="meta")
    try:
        out = converter(work)
    except KeyError as exc:
        raise CheckpointFormatError(f"{name}: the {what} is incomplete: tensor {exc.args[0]} is missing") from None
    except (IndexError, RuntimeError, ValueError) as exc:
        raise CheckpointFormatError(f"{name}: the {what} tensors do not fit {layout} ({exc})") from None
    if work:
        sample = ", ".join(sorted(work)[:3])
        raise CheckpointFormatError(f"{name}: the {what} has {len(work)} unexpected tensors (e.g. {sample})")
    for key, value in parts.items():
        try:
            out.update(split(key, value))
        except CheckpointFormatError as exc:
            raise CheckpointFormatError(f"{name}: {exc}") from None
    left = [k for k, v in out.items() if v.is_meta]
    if left and not any(v.is_meta for v in original.values()):
        raise CheckpointFormatError(f"{name}: no tensor for {', '.join(left[:3])} (converter layout changed?)")
    return out


class Renaming:
    """A state dict being renamed tensor by tensor (the inverse converters, diffusers' names back to a family's
    original ones): `move` and `cat` take tensors out of `w` into `out`; what is left in `w` found no place."""

    def __init__(self, weights: Mapping[str, torch.Tensor]):
        self.w = dict(weights)
        self.out: dict[str, torch.Tensor] = {}

    def move(self, src: str, dst: str) -> None:
        """`src.weight` / `src.bias` (those present) renamed `dst.weight` / `dst.bias`."""
        for kind in ("weight", "bias"):
            if f"{src}.{kind}" in self.w:
                self.out[f"{dst}.{kind}"] = self.w.pop(f"{src}.{kind}")

    def cat(self, srcs: Iterable[str], dst: str) -> None:
        """The weights and biases of `srcs`, concatenated by rows, as `dst`'s (a fused projection)."""
        srcs = tuple(srcs)
        for kind in ("weight", "bias"):
            self.out[f"{dst}.{kind}"] = torch.cat([self.w.pop(f"{s}.{kind}") for s in srcs], dim=0)


def swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """The two halves of the rows exchanged: the final adaLN's (shift, scale) in the original files are diffusers'
    (scale, shift)."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


# --- building modules ------------------------------------------------------------------------------------------------

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def fp8_dtype(tensors: Iterable[torch.Tensor]) -> torch.dtype | None:
    """The float8 dtype of the first float8 tensor among `tensors`; None when there is none."""
    for tensor in tensors:
        if tensor.dtype in FP8_DTYPES:
            return tensor.dtype
    return None


def packed_transformer(state: Mapping, layout: str, name: str, dtype: torch.dtype,
                       split: Callable[[Mapping, str, str], tuple[dict, dict]],
                       to_diffusers: Callable[[Mapping, str], dict] | None,
                       build: Callable[[dict, str, torch.dtype], torch.nn.Module]) \
        -> tuple[torch.nn.Module, torch.dtype, dict[str, dict]]:
    """(the transformer module, its storage dtype, {packed part: its tensors}) of a family's single file:
    `split(state, layout, name)` separates the parts, `to_diffusers(tensors, name)` renames the transformer's
    original names (None: they are diffusers' already) and `build(weights, name, dtype)` makes the module. The
    storage dtype is the file's float8 dtype when its transformer has float8 tensors (they stay float8), else
    `dtype`."""
    transformer_sd, parts = split(state, layout, name)
    weights = to_diffusers(transformer_sd, name) if to_diffusers is not None else dict(transformer_sd)
    del transformer_sd
    storage = fp8_dtype(weights.values()) or dtype
    return build(weights, name, dtype), storage, parts

def assign_checked(module: torch.nn.Module, weights: dict, what: str, name: str,
                   expected_missing: Callable[[str], bool] = lambda key: False) -> torch.nn.Module:
    """`weights` assigned into `module` (built empty, on the meta device), in eval mode without gradients; a
    CheckpointFormatError naming the file and `what` when a tensor does not fit, is missing (unless
    `expected_missing(key)`) or is unexpected, or a buffer is left without a value."""
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        detail = lines[0] if lines else str(exc)
        raise CheckpointFormatError(f"{name}: the {what} tensors do not fit its layout ({detail})") from None
    missing = [k for k in missing if not expected_missing(k)]
    if missing or unexpected:
        sample = ", ".join((missing or unexpected)[:3])
        raise CheckpointFormatError(f"{name}: the {what} is incomplete or of another layout ({len(missing)} tensors "
                                    f"missing, {len(unexpected)} unexpected, e.g. {sample})")
    for buffer_name, buffer in module.named_buffers():
        if buffer.is_meta:
            raise CheckpointFormatError(f"{name}: the {what} has no value for {buffer_name}")
    return module.eval().requires_grad_(False)


class PartsModules:
    """For the families' `*Parts` dataclasses: their modules are the fields holding one (the transformer first,
    then the packed or added parts in field order)."""

    def modules(self) -> list[torch.nn.Module]:
        values = (getattr(self, f.name) for f in fields(self))
        return [v for v in values if isinstance(v, torch.nn.Module)]

    @property
    def size_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in self.modules() for p in m.parameters())


def vae_dtype(dtype: torch.dtype) -> torch.dtype:
    """The VAE's compute dtype: float32 under float16 (the 16-channel AEs overflow float16), else `dtype`."""
    return torch.float32 if dtype == torch.float16 else dtype


# --- diffusers folders -----------------------------------------------------------------------------------------------

def pipeline_class(folder: Path, pattern: str) -> str | None:
    """The `_class_name` of a diffusers folder's model_index.json when it matches `pattern` (a family's pipeline
    classes); None otherwise or when the file is missing or unreadable."""
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cls = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    return cls if re.fullmatch(pattern, cls) else None


def load_part(folder: Path, cls, sub: str, **kwargs):
    """`cls.from_pretrained(folder / sub)` offline, or None when the folder has no `sub` folder."""
    path = Path(folder) / sub
    return cls.from_pretrained(path, local_files_only=True, **kwargs) if path.is_dir() else None


def for_inference(*modules: torch.nn.Module | None) -> None:
    """Eval mode without gradients for each module given (None skipped)."""
    for module in modules:
        if module is not None:
            module.eval().requires_grad_(False)
