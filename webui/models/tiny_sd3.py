"""Write small random SD3 / SD3.5 models in the real file layouts (a tool for tests and benchmarks).

    python -m webui.models.tiny_sd3 OUTDIR [--layout SAI diffusers folder parts] [--variant sd3-medium]

Tiny models: an SD3Transformer2DModel (SD3's 64-wide heads, 2 heads, 2 joint blocks; SD3.5 Medium's has dual
attention in block 0, SD3.5's have RMS q/k norms), the 16-channel VAE (SD3's scaling and shift), CLIP-L (12 wide,
2 layers, CLIP's real vocabulary and 77 positions, an identity projection as SD3 uses it), OpenCLIP-G (16 wide,
32 layers as bigG, its own projection) and tiny_flux's T5 (32 wide, T5's real vocabulary). The widths follow SD3's
rules: CLIP-L + CLIP-G hidden widths (28) padded to T5's (32) = the joint attention width; the pooled projection
takes CLIP-L + CLIP-G's pooled outputs (28).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from .sd3 import (CLIP_G_LAYERS, CLIP_G_PREFIX, CLIP_L_PREFIX, DIFFUSERS_PART_PREFIXES, SAI_PREFIX, SD3_HEAD_DIM,
                  SD3_VAE_SCALING, SD3_VAE_SHIFT, T5_PREFIX, VARIANTS, diffusers_to_sai, scheduler_config)
from .tiny_flux import (T5_WIDTH, _plain, check_parts, clip_file_state, prefixed, randomise, save_parts, save_state,
                        t5_file_state, tiny_t5, tiny_vae, vae_ldm_state)

LAYOUTS = ("SAI", "diffusers")
PARTS = ("vae", "clip_l", "clip_g", "t5")
HEADS = 2
CLIP_L_WIDTH, CLIP_G_WIDTH = 12, 16
POS_EMBED_MAX = {"sd3-medium": 8, "sd3.5-medium": 12, "sd3.5-large": 8}
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}


def tiny_transformer_config(variant: str = "sd3-medium") -> dict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
    return {"sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 2,
            "attention_head_dim": SD3_HEAD_DIM, "num_attention_heads": HEADS, "joint_attention_dim": T5_WIDTH,
            "caption_projection_dim": SD3_HEAD_DIM * HEADS, "pooled_projection_dim": CLIP_L_WIDTH + CLIP_G_WIDTH,
            "out_channels": 16, "pos_embed_max_size": POS_EMBED_MAX[variant],
            "dual_attention_layers": (0,) if variant == "sd3.5-medium" else (),
            "qk_norm": "rms_norm" if variant.startswith("sd3.5") else None}


def _tiny_clip(width: int, layers: int, act: str) -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
        num_attention_heads=1, max_position_embeddings=77, hidden_act=act, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=1, projection_dim=width))


def tiny_sd3_modules(seed: int = 0, variant: str = "sd3-medium") -> dict:
    """{"transformer", "vae", "clip_l", "clip_g", "t5"}: tiny random modules in float32 (the same for the same seed).
    CLIP-L's projection is the identity (SD3 uses its pooled output unprojected)."""
    torch.manual_seed(seed)
    vae = tiny_vae()
    vae.register_to_config(scaling_factor=SD3_VAE_SCALING, shift_factor=SD3_VAE_SHIFT)
    modules = {"transformer": SD3Transformer2DModel(**tiny_transformer_config(variant)), "vae": vae,
               "clip_l": _tiny_clip(CLIP_L_WIDTH, 2, "quick_gelu"),
               "clip_g": _tiny_clip(CLIP_G_WIDTH, CLIP_G_LAYERS, "gelu"), "t5": tiny_t5()}
    for offset, module in enumerate(modules.values()):
        randomise(module, seed * 10 + offset + 1)
        module.eval().requires_grad_(False)
    with torch.no_grad():
        modules["clip_l"].text_projection.weight.copy_(torch.eye(CLIP_L_WIDTH))
    return modules


def _clip_l_file_state(clip_l: CLIPTextModelWithProjection, seed: int) -> dict[str, torch.Tensor]:
    """CLIP-L as files hold it, with a projection of its own (OpenAI's CLIP-L files carry one; SD3 does not use
    it): random, so a loader that used it would show."""
    state = clip_file_state(clip_l)
    generator = torch.Generator().manual_seed(seed + 99)
    state["text_projection.weight"] = torch.randn(CLIP_L_WIDTH, CLIP_L_WIDTH, generator=generator)
    return state


def sd3_state(modules: dict, layout: str, parts: Iterable[str] = (), seed: int = 0) -> dict[str, torch.Tensor]:
    """One file's tensors. SAI: `model.diffusion_model.` + the parts under `first_stage_model.` (LDM names),
    `text_encoders.clip_l.transformer.`, `text_encoders.clip_g.transformer.`, `text_encoders.t5xxl.transformer.`.
    diffusers: bare names, or with parts `transformer.` + `vae.`, `text_encoder.`, `text_encoder_2.`,
    `text_encoder_3.` (diffusers/transformers names)."""
    parts = check_parts(parts, PARTS)
    transformer = _plain(modules["transformer"])
    clips = {"clip_l": _clip_l_file_state(modules["clip_l"], seed), "clip_g": clip_file_state(modules["clip_g"])}
    if layout == "SAI":
        state = prefixed(SAI_PREFIX, diffusers_to_sai(transformer))
        if "vae" in parts:
            state.update(prefixed("first_stage_model.", vae_ldm_state(modules["vae"])))
        for part, prefix in (("clip_l", CLIP_L_PREFIX), ("clip_g", CLIP_G_PREFIX)):
            if part in parts:
                state.update(prefixed(prefix + "transformer.", clips[part]))
        if "t5" in parts:
            state.update(prefixed(T5_PREFIX + "transformer.", t5_file_state(modules["t5"])))
        return state
    if layout == "diffusers":
        if not parts:
            return transformer
        state = prefixed("transformer.", transformer)
        if "vae" in parts:
            state.update(prefixed("vae.", _plain(modules["vae"])))
        for part in ("clip_l", "clip_g"):
            if part in parts:
                state.update(prefixed(DIFFUSERS_PART_PREFIXES[part], clips[part]))
        if "t5" in parts:
            state.update(prefixed(DIFFUSERS_PART_PREFIXES["t5"], t5_file_state(modules["t5"])))
        return state
    raise ValueError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")


def write_sd3(path: Path, layout: str, variant: str = "sd3-medium", dtype: torch.dtype = torch.float32,
              parts: Iterable[str] | None = None, seed: int = 0) -> Path:
    """One `.safetensors` in `layout`; `parts` defaults to what such files usually hold (SAI: all four, as
    `sd3_medium_incl_clips_t5xxlfp16.safetensors`; diffusers: none). Every floating tensor is stored in `dtype`."""
    if parts is None:
        parts = PARTS if layout == "SAI" else ()
    return save_state(path, sd3_state(tiny_sd3_modules(seed, variant), layout, parts, seed), dtype)


def write_sd3_parts(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The separate files of Stability's SD3 repositories (`text_encoders/`): clip_l.safetensors,
    clip_g.safetensors, t5xxl_fp16.safetensors, t5xxl_fp8_e4m3fn.safetensors (transformers' names), and the VAE
    alone as sd3_vae.safetensors (LDM names)."""
    modules = tiny_sd3_modules(seed)
    return save_parts(folder, {"sd3_vae": (vae_ldm_state(modules["vae"]), torch.float32),
                               "clip_l": (_clip_l_file_state(modules["clip_l"], seed), torch.float16),
                               "clip_g": (clip_file_state(modules["clip_g"]), torch.float16),
                               "t5xxl_fp16": (t5_file_state(modules["t5"]), torch.float16),
                               "t5xxl_fp8_e4m3fn": (t5_file_state(modules["t5"]), torch.float8_e4m3fn)})


def write_sd3_folder(folder: Path, variant: str = "sd3-medium", seed: int = 0, tokenizer=None, tokenizer_2=None,
                     tokenizer_3=None) -> Path:
    """A diffusers folder for StableDiffusion3Pipeline (model_index.json, transformer/, vae/, text_encoder/,
    text_encoder_2/, text_encoder_3/, scheduler/); tokenizer folders only when tokenizers are given."""
    modules = tiny_sd3_modules(seed, variant)
    scheduler = FlowMatchEulerDiscreteScheduler(**scheduler_config(variant))
    pipe = StableDiffusion3Pipeline(transformer=modules["transformer"], scheduler=scheduler, vae=modules["vae"],
                                    text_encoder=modules["clip_l"], tokenizer=tokenizer,
                                    text_encoder_2=modules["clip_g"], tokenizer_2=tokenizer_2,
                                    text_encoder_3=modules["t5"], tokenizer_3=tokenizer_3)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--layout", nargs="+", default=[*LAYOUTS, "folder", "parts"])
    parser.add_argument("--variant", default="sd3-medium", choices=VARIANTS)
    parser.add_argument("--dtype", default="fp32", choices=sorted(_DTYPES))
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    for layout in args.layout:
        if layout == "folder":
            print(write_sd3_folder(out / f"tiny-{args.variant}", args.variant))
        elif layout == "parts":
            for path in write_sd3_parts(out / "sd3-parts").values():
                print(path)
        else:
            print(write_sd3(out / f"tiny-{args.variant}-{layout}.safetensors", layout, args.variant,
                            _DTYPES[args.dtype]))


if __name__ == "__main__":
    main()
