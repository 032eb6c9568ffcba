"""The Checkpoint Merger (A1111's "Checkpoint Merger" tab): a new checkpoint from A, B and C.

    Weighted sum:      A * (1 - M) + B * M
    Add difference:    A + (B - C) * M
    No interpolation:  A alone (to convert the format, save as float16, bake in a VAE, discard weights)

As A1111: tensors whose name contains "model" and that B has too are merged; the rest of A is kept as it is, and
tensors only B has are left out. An inpainting (9 input channels) or instruct-pix2pix (8) A takes a normal B into
its first 4 input channels, and the result is named `.inpainting` / `.instruct-pix2pix`. A baked VAE's tensors
replace A's `first_stage_model.*`; "Discard weights with matching name" drops every tensor whose name the regular
expression matches. "Save as float16" stores every float32 tensor as float16 (A1111 converts only the merged ones,
leaving A's other tensors float32 in a file meant to be half the size). The merge is computed in float32 at least
and stored in the sources' own precision.

Memory: the sources are read tensor by tensor (`merge_io`), and a `.safetensors` result is written as it is
computed (its header is known up front), so the merge holds a few tensors at a time, not a model; a `.ckpt` result
needs its whole state dict for `torch.save` (one model). The file appears under its name only once complete
(written beside it under a hidden name, then renamed), with its sha256 already in the hash cache.

Metadata (`.safetensors` only, "Save metadata"): the sources' own metadata ("Copy metadata from merged models"),
the user's JSON, `format: pt`, and A1111's `sd_merge_recipe` / `sd_merge_models` ("Add merge recipe metadata").
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import UserError
from ..core.run_control import RunControl
from .architecture import VAE_PREFIX, CheckpointFormatError, detect_architecture, vae_config
from .hashing import sha256_file
from .ldm_export import vae_to_ldm
from .loader import read_state_dict
from .merge_io import SafetensorsSource, SafetensorsWriter, TensorMeta, open_source
from .merge_plan import MergePlan, plan_merge
from .merge_request import ADD_DIFFERENCE, NO_INTERPOLATION, WEIGHTED_SUM, MergeRequest
from .registry import CheckpointRegistry
from .vae import VaeLoadError, VaeRegistry, read_vae_weights

log = logging.getLogger(__name__)

_VAE_FILE_PREFIXES = ("first_stage_model.", "vae.")
_VAE_DROPPED = ("loss", "model_ema.")  # training leftovers in some VAE files (A1111 drops them too)
_DIFFUSERS_VAE = ("encoder.down_blocks.", "decoder.up_blocks.", "encoder.mid_block.", "decoder.mid_block.")


class MergeInterrupted(UserError):
    """Interrupt pressed while merging: nothing was written."""

    status = 409
    kind = "Interrupted"


class MergeWriteError(UserError):
    """The result could not be written (a full disk, no permission); nothing was left behind."""

    status = 500
    kind = "WriteFailed"


@dataclass
class MergeResult:
    name: str  # relative to the checkpoint folder, as the checkpoint list names it
    title: str  # the list's title, "name [shorthash]"
    path: str
    sha256: str
    config: str | None  # the .yaml copied beside it
    recipe: dict | None  # the sd_merge_recipe written into the file (None when no metadata was saved)
    message: str

    def as_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "filename": self.path, "sha256": self.sha256,
                "config": self.config, "recipe": self.recipe, "message": self.message}


def check_merge(request: MergeRequest, registry: CheckpointRegistry, vaes: VaeRegistry | None) -> None:
    """Refuse a merge that cannot run (RequestError / ConflictError / UnknownCheckpointError ...) before it is
    queued: only headers are read."""
    plan_merge(request, registry, vaes).close()


def run_merge(request: MergeRequest, registry: CheckpointRegistry, vaes: VaeRegistry | None,
              control: RunControl | None = None) -> MergeResult:
    """Merge and save (request validated); the checkpoint list is refreshed so the new model is in it."""
    control = control or RunControl()
    plan = plan_merge(request, registry, vaes)
    try:
        baked = _baked_vae(plan) if plan.vae is not None else {}
        layout = {key: _out_meta(plan, key, baked) for key in _kept_keys(plan)}
        metadata, recipe = _metadata(plan, registry, control) \
            if request.save_metadata and request.checkpoint_format == "safetensors" else (None, None)
        sha256 = _save(plan, layout, baked, metadata, control)
    finally:
        plan.close()
    registry.cache.put(plan.target, sha256, registry.cache_kind)
    registry.refresh()
    info = registry.resolve(plan.name)
    message = f"Checkpoint saved to {plan.target}"
    log.info("%s (%s)", message, request.interp_method)
    control.report(textinfo="Checkpoint saved")
    return MergeResult(info.name, info.title, str(plan.target), sha256,
                       str(info.config) if info.config is not None else None, recipe, message)


# --- the tensors -----------------------------------------------------------------------------------------------

def _kept_keys(plan: MergePlan) -> list[str]:
    pattern = plan.request.discard_pattern()
    return [key for key in plan.a.metas if pattern is None or not pattern.search(key)]


def _half(dtype: torch.dtype, request: MergeRequest) -> torch.dtype:
    return torch.float16 if request.save_as_half and dtype == torch.float32 else dtype


def _merged_dtype(plan: MergePlan, key: str) -> torch.dtype:
    dtype = torch.promote_types(plan.a.metas[key].dtype, plan.b.metas[key].dtype)
    if plan.c is not None and key in plan.c.metas:
        dtype = torch.promote_types(dtype, plan.c.metas[key].dtype)
    return dtype


def _out_meta(plan: MergePlan, key: str, baked: dict[str, torch.Tensor]) -> TensorMeta:
    if key in baked:
        shape, dtype = tuple(baked[key].shape), baked[key].dtype
    elif key in plan.merged_keys:
        shape, dtype = plan.a.metas[key].shape, _merged_dtype(plan, key)
    else:
        shape, dtype = plan.a.metas[key].shape, plan.a.metas[key].dtype
    return TensorMeta(shape, _half(dtype, plan.request))


def _combine_into(method: str, m: float, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None) -> None:
    """a := A * (1 - M) + B * M, or A + (B - C) * M, in place in `a` (and `b`, used as scratch): each product and
    sum rounded as the formula written out would be, without the temporaries (which, freed between tensors the
    result keeps, would leave the heap fragmented: a .ckpt result then cost two models of memory)."""
    if method == WEIGHTED_SUM:
        a.mul_(1 - m)
        a.add_(b.mul_(m))
    elif c is not None:
        a.add_(b.sub_(c).mul_(m))
    # Add difference with a tensor C lacks: A1111 takes the difference as zero, so A stays as it is


def _owned(source, key: str, dtype: torch.dtype) -> torch.Tensor:
    """The tensor in `dtype`, in memory this merge may overwrite (a `.safetensors` read is already its own; a
    `.ckpt` tensor maps the file, so it is copied)."""
    tensor = source.file.get(key)
    return tensor if isinstance(source.file, SafetensorsSource) and tensor.dtype == dtype \
        else tensor.to(dtype, copy=True)


def _merge_one(plan: MergePlan, key: str) -> torch.Tensor:
    request = plan.request
    dtype = _merged_dtype(plan, key)
    compute = torch.promote_types(dtype, torch.float32)
    a, b = _owned(plan.a, key, compute), _owned(plan.b, key, compute)
    c = _owned(plan.c, key, compute) if request.interp_method == ADD_DIFFERENCE and key in plan.c.metas else None
    if a.shape == b.shape:
        _combine_into(request.interp_method, request.multiplier, a, b, c)
    else:  # A's UNet input has extra channels (inpainting, instruct-pix2pix): B goes into the first 4
        first = a[:, :4].clone()
        _combine_into(request.interp_method, request.multiplier, first, b, c)
        a[:, :4] = first
    return a.to(dtype)


def _tensor(plan: MergePlan, key: str, baked: dict[str, torch.Tensor]) -> torch.Tensor:
    if key in baked:
        value = baked[key]
    elif key in plan.merged_keys:
        value = _merge_one(plan, key)
    else:
        value = plan.a.file.get(key)
    return value.to(_half(value.dtype, plan.request))


def _tensors(plan: MergePlan, layout: dict[str, TensorMeta], baked: dict, control: RunControl):
    """(key, tensor) in file order, reporting "tensor n of N" and stopping at Interrupt."""
    phase = {NO_INTERPOLATION: "Converting A", WEIGHTED_SUM: "Merging A and B",
             ADD_DIFFERENCE: "Merging A, B and C"}[plan.request.interp_method]
    total = len(layout)
    for index, key in enumerate(layout):
        if control.interrupted:
            raise MergeInterrupted("The merge was interrupted; nothing was saved")
        yield key, _tensor(plan, key, baked)
        control.report(job_no=0, job_count=1, sampling_step=index + 1, sampling_steps=total,
                       textinfo=f"{phase}: tensor {index + 1} of {total}")


# --- baking in a VAE -------------------------------------------------------------------------------------------

def _baked_vae(plan: MergePlan) -> dict[str, torch.Tensor]:
    """The VAE file's tensors under A's names (`first_stage_model.*`), those A has; files in diffusers' layout are
    renamed through diffusers' VAE module. Refused when nothing (or a shape) fits A's VAE."""
    path, a = Path(plan.vae.path), plan.a
    try:
        state = read_state_dict(path, private=True)
    except CheckpointFormatError as exc:
        raise VaeLoadError(f"Bake in VAE: {exc}") from None
    for prefix in _VAE_FILE_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not k.startswith(_VAE_DROPPED)}
    if any(k.startswith(_DIFFUSERS_VAE) for k in state):
        ldm = _diffusers_vae_as_ldm(plan, path)
    else:
        ldm = {VAE_PREFIX + k: v for k, v in state.items()}
    baked = {k: v for k, v in ldm.items() if k in a.metas}
    if not baked:
        raise VaeLoadError(f"Bake in VAE: none of {path.name}'s tensors belong to the VAE of {a.info.name} "
                           "(not a VAE, or one for another architecture)")
    for key, value in baked.items():
        if tuple(value.shape) != a.metas[key].shape:
            raise VaeLoadError(f"Bake in VAE: {path.name} does not fit {a.info.name}: {key} is "
                               f"{list(value.shape)} in the VAE and {list(a.metas[key].shape)} in the checkpoint")
    return baked


def _diffusers_vae_as_ldm(plan: MergePlan, path: Path) -> dict[str, torch.Tensor]:
    from diffusers import AutoencoderKL

    a = plan.a
    try:
        config = vae_config(detect_architecture(a.metas, a.info.name, a.info.config))
    except CheckpointFormatError as exc:
        raise VaeLoadError(f"Bake in VAE: {path.name} is in diffusers' layout, and {exc}") from None
    weights = read_vae_weights(path, config)
    with torch.device("meta"):
        module = AutoencoderKL.from_config(config)
    try:
        module.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1:2] or [str(exc)]
        raise VaeLoadError(f"Bake in VAE: {path.name} does not fit {a.info.name}'s VAE ({detail[0].strip()})") \
            from None
    return vae_to_ldm(module)


# --- metadata --------------------------------------------------------------------------------------------------

def _json_value(text: str | None):
    """A metadata value A1111 stores as JSON text (`sd_merge_recipe`, `sd_merge_models`), parsed; else None."""
    if not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _metadata(plan: MergePlan, registry: CheckpointRegistry, control: RunControl) -> tuple[dict, dict | None]:
    request = plan.request
    metadata: dict[str, str] = {}
    if request.copy_metadata_fields:
        for source in plan.sources:
            metadata.update(source.file.metadata)
    metadata.update(request.user_metadata())
    metadata["format"] = "pt"
    if not request.add_merge_recipe:
        return metadata, None
    for source in plan.sources:
        if not source.info.sha256:
            control.report(textinfo=f"Calculating sha256 of {source.info.name}")
        registry.ensure_hash(source.info)
    a, b, c = plan.a.info, plan.b.info if plan.b else None, plan.c.info if plan.c else None
    recipe = {
        "type": "webui",
        "primary_model_hash": a.sha256,
        "secondary_model_hash": b.sha256 if b else None,
        "tertiary_model_hash": c.sha256 if c else None,
        "interp_method": request.interp_method,
        "multiplier": request.multiplier,
        "save_as_half": request.save_as_half,
        "custom_name": request.custom_name,
        "config_source": request.config_source,
        "bake_in_vae": request.bake_in_vae,
        "discard_weights": request.discard_weights,
        "is_inpainting": plan.result_kind == "inpainting",
        "is_instruct_pix2pix": plan.result_kind == "instruct-pix2pix",
    }
    models: dict = {}
    for source in plan.sources:
        models[source.info.sha256] = {"name": source.info.name, "legacy_hash": source.info.legacy_hash,
                                      "sd_merge_recipe": _json_value(source.file.metadata.get("sd_merge_recipe"))}
        earlier = _json_value(source.file.metadata.get("sd_merge_models"))
        if isinstance(earlier, dict):
            models.update(earlier)
    metadata["sd_merge_recipe"] = json.dumps(recipe)
    metadata["sd_merge_models"] = json.dumps(models)
    return metadata, recipe


def read_metadata(registry: CheckpointRegistry, names: list[str]) -> dict:
    """The metadata of the named checkpoints (`.safetensors` headers) merged into one dict, JSON values parsed:
    A1111's "Read metadata from selected checkpoints"."""
    merged: dict = {}
    for name in names:
        if not name:
            continue
        info = registry.resolve(name)
        if info.kind != "safetensors":
            continue
        try:
            source = open_source(info.path)
        except CheckpointFormatError:
            continue
        try:
            merged.update({k: _json_value(v) if _json_value(v) is not None else v
                           for k, v in source.metadata.items()})
        finally:
            source.close()
    return merged


# --- saving ----------------------------------------------------------------------------------------------------

def _save(plan: MergePlan, layout: dict[str, TensorMeta], baked: dict, metadata: dict | None,
          control: RunControl) -> str:
    """Write the result under a hidden name beside the target, copy the config, then rename (the model, then its
    config; an overwritten model's old config goes when none is copied): the sha256."""
    target = plan.target
    partial = target.with_name(f".{target.name}.{os.getpid()}.merging")
    partial_config = target.with_name(f".{target.stem}.{os.getpid()}.yaml.merging")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if plan.request.checkpoint_format == "safetensors":
            with open(partial, "wb") as stream:
                writer = SafetensorsWriter(stream, layout, metadata)
                for key, tensor in _tensors(plan, layout, baked, control):
                    writer.write(key, tensor)
                sha256 = writer.finish()
                os.fsync(stream.fileno())
        else:
            state = dict(_tensors(plan, layout, baked, control))
            control.report(textinfo="Saving")
            torch.save(state, partial)
            del state
            sha256 = sha256_file(partial)
        if plan.config is not None:
            shutil.copyfile(plan.config, partial_config)
        # the model first: if its rename fails, the old model keeps its own config beside it
        os.replace(partial, target)
        if plan.config is not None:
            os.replace(partial_config, target.with_suffix(".yaml"))
        elif plan.request.overwrite:  # a replaced model's old config would be loaded with the new weights
            target.with_suffix(".yaml").unlink(missing_ok=True)
        return sha256
    except OSError as exc:
        status = 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else \
            403 if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else 500
        raise MergeWriteError(f"Could not write {plan.name} in {target.parent}: {exc.strerror or exc}",
                              status=status) from None
    finally:
        partial.unlink(missing_ok=True)
        partial_config.unlink(missing_ok=True)


__all__ = ["MergeRequest", "MergeResult", "MergeInterrupted", "check_merge", "run_merge", "read_metadata"]
