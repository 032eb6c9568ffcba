"""FLUX.1 LoRA files named after BFL's modules, renamed to diffusers' module names by diffusers' own conversion.

People's FLUX.1 LoRAs name the transformer's modules as BFL does (`double_blocks.N.img_attn.qkv`,
`single_blocks.N.linear1`, ...): kohya sd-scripts (`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight` with
`.alpha`), ComfyUI (`diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight`), the same with PEFT's
`lora_A` / `lora_B`, XLabs (`double_blocks.0.processor.qkv_lora1.down.weight`), BFL's control LoRAs. Our model is
diffusers' FluxTransformer2DModel, whose attention has separate `to_q` / `to_k` / `to_v` (and `proj_mlp` in single
blocks) where BFL has one fused `qkv` / `linear1` layer. `FluxLoraLoaderMixin.lora_state_dict` (public) renames those
LoRA tensors to diffusers' PEFT names and splits a fused layer's LoRA by output rows (the `lora_up` rows of each
part, `lora_down` shared, or chunked when the up matrix is block-diagonal), with kohya's alpha / rank baked in.
What it leaves alone (diffusers / PEFT names, OneTrainer's `lora_transformer_...`, the CLIP-L text encoder, LyCORIS
kinds) the ordinary key table resolves.

One exception: for `single_blocks.N.linear1` diffusers' kohya converter assumes FLUX.1's width (3072 -> parts of
3072, 3072, 3072, 12288 rows) and fails for any other; those are split here by the same rule (q, k, v of `width`
rows each, the MLP the rest, width = rows / 7), which tests/test_flux_lora.py checks against the converter's own
split at width 3072. Every use of diffusers' LoRA conversion is in this file.
"""
from __future__ import annotations

import logging
import re

import torch

log = logging.getLogger(__name__)

CONVERTER_WIDTH = 3072  # the single-block width diffusers' kohya converter splits linear1 for
_BFL_MODULES = r"(double_blocks|single_blocks|img_in|txt_in|time_in|vector_in|guidance_in|final_layer)"
# a BFL module name as the files spell it: kohya's underscores, or dots under ComfyUI's / fal's prefixes
_BFL_NAME = re.compile(rf"^(lora_unet_|(model\.)?diffusion_model\.|base_model\.model\.|transformer\.)?{_BFL_MODULES}"
                       r"[._]")
_XLABS = re.compile(r"^(diffusion_model\.)?(double|single)_blocks\.\d+\.processor\.")
_LORA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".alpha")
_LINEAR1 = re.compile(r"^(?:lora_unet_|(?:model\.)?diffusion_model\.)?single_blocks[._](\d+)[._]linear1$")


def has_bfl_names(keys) -> bool:
    """Whether a LoRA file names FLUX.1 transformer modules as BFL does (kohya, ComfyUI, XLabs, BFL, fal)."""
    return any(_BFL_NAME.match(k) or _XLABS.match(k) for k in keys)


def _module_and_suffix(key: str) -> tuple[str, str] | None:
    for suffix in _LORA_SUFFIXES:
        if key.endswith(suffix):
            return key[:-len(suffix)], suffix
    return None


def _kohya_spelling(key: str) -> str:
    """`diffusion_model.single_blocks.0.linear1.lora_A.weight` -> kohya's `lora_unet_single_blocks_0_linear1...`
    (ComfyUI's dotted spelling with PEFT's endings goes through diffusers' kohya branch that way)."""
    split = _module_and_suffix(key)
    if split is None:
        return key
    module, suffix = split
    suffix = {".lora_A.weight": ".lora_down.weight", ".lora_B.weight": ".lora_up.weight"}.get(suffix, suffix)
    for prefix in ("model.diffusion_model.", "diffusion_model.", "transformer."):
        if module.startswith(prefix):
            module = "lora_unet_" + module[len(prefix):].replace(".", "_")
            break
    else:
        if not module.startswith(("lora_unet_", "base_model.")):
            module = "lora_unet_" + module.replace(".", "_")
    return module + suffix


def _split_linear1(index: int, down: torch.Tensor, up: torch.Tensor) -> dict[str, torch.Tensor]:
    """One single block's fused linear1 LoRA (alpha already baked in) as the LoRAs of to_q, to_k, to_v and proj_mlp:
    `lora_down` shared, `lora_up` split by rows."""
    rows = up.shape[0]
    width = rows // 7
    base = f"transformer.single_transformer_blocks.{index}."
    out = {}
    for name, part in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
                          torch.split(up.float(), (width, width, width, rows - 3 * width), dim=0)):
        out[f"{base}{name}.lora_A.weight"] = down
        out[f"{base}{name}.lora_B.weight"] = part.contiguous()
    return out


def _bake_alphas(convert: dict[str, torch.Tensor]) -> None:
    """kohya's alpha / rank multiplied into `lora_down` (float32) and the alpha dropped: diffusers' converter bakes it
    the same way for most modules but ignores it for `final_layer`, so every module gets it here, once."""
    for key in [k for k in convert if k.endswith(".alpha")]:
        alpha = convert.pop(key)
        down = convert.get(key[:-len(".alpha")] + ".lora_down.weight")
        if down is not None and alpha.numel():
            convert[key[:-len(".alpha")] + ".lora_down.weight"] = down * (float(alpha.reshape(-1)[0]) / down.shape[0])


def convert_bfl_names(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the tensors with BFL-named LoRA modules renamed to diffusers' names, notes on tensors left out). Tensors of
    other kinds or names pass through unchanged. Never raises: what diffusers cannot convert is left out with a
    note (the caller reports it as not understood)."""
    from diffusers import FluxPipeline

    convert: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    xlabs = any(_XLABS.match(k) for k in tensors)
    for key, value in tensors.items():
        if xlabs and _XLABS.match(key):
            convert[key] = value.float()
        elif _BFL_NAME.match(key) and _module_and_suffix(key) is not None:
            convert[key if key.startswith("base_model.") else _kohya_spelling(key)] = value.float()
        elif _BFL_NAME.match(key) and key.endswith(".dora_scale"):
            notes.append(key)  # diffusers drops DoRA magnitudes: say so rather than apply a plain LoRA silently
        else:
            rest[key] = value
    if not convert:
        return dict(tensors), notes
    _bake_alphas(convert)
    out: dict[str, torch.Tensor] = {}
    for module in sorted({m for k in convert if (m := k.rsplit(".", 2 if k.endswith(".weight") else 1)[0])}):
        found = _LINEAR1.match(module)
        up = convert.get(f"{module}.lora_up.weight")
        if found and up is not None and up.shape[0] != 7 * CONVERTER_WIDTH and f"{module}.lora_down.weight" in convert:
            out.update(_split_linear1(int(found.group(1)), convert.pop(f"{module}.lora_down.weight"),
                                      convert.pop(f"{module}.lora_up.weight")))
    if convert:
        try:
            converted = FluxPipeline.lora_state_dict(dict(convert))
        except (KeyError, ValueError, AssertionError, RuntimeError, IndexError) as exc:
            log.warning("diffusers could not convert this FLUX.1 LoRA's BFL names: %s", exc)
            notes.extend(sorted(convert))
        else:
            out.update(converted)
    for key, value in out.items():
        rest[key] = value
    return rest, notes
