"""Write small random FLUX.1 models in the real file layouts (a tool for tests and benchmarks).

    python -m webui.models.tiny_flux OUTDIR [--layout BFL ComfyUI diffusers folder parts] [--variant dev]
    python -m webui.models.tiny_flux OUTDIR --full [--dtype bf16|fp8] [--blocks DOUBLE SINGLE] [--variant dev]

Tiny models: a FluxTransformer2DModel (head size 32, 2 heads, one double and one single block), a 16-channel AE, a
64-wide CLIP-L (CLIP's real vocabulary, 77 positions) and a 32-wide T5 (T5's real 32128-token vocabulary), written as
one file per layout (`flux.flux_layout` names), as a diffusers folder, or as separate part files (`ae.safetensors`,
`clip_l.safetensors`, `t5xxl_fp16.safetensors`, `t5xxl_fp8_e4m3fn.safetensors`). `--full` writes a FLUX.1-dev-shaped
transformer (random weights, BFL layout) tensor by tensor, so it needs no more memory than its largest tensor.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Iterable

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from .architecture import VAE_PREFIX
from .flux import (COMFY_CLIP_PREFIX, COMFY_PREFIX, COMFY_T5_PREFIX, DIFFUSERS_PART_PREFIXES, FLUX_VAE_SCALING,
                   FLUX_VAE_SHIFT, T5_VOCAB, diffusers_to_bfl, rope_axes, scheduler_config)
from .ldm_export import _clip_state, vae_to_ldm

LAYOUTS = ("BFL", "ComfyUI", "diffusers")
VARIANTS = ("dev", "schnell", "fill", "control")
IN_CHANNELS = {"fill": 384, "control": 128}  # FLUX.1 Fill: image, masked image, mask; Depth / Canny: image, control
HEAD_DIM, HEADS = 32, 2
CLIP_WIDTH, T5_WIDTH = 64, 32
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn,
           "fp8_e5m2": torch.float8_e5m2}


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Visible random values everywhere: matrices ~ N(0, 1/fan_in), biases small, norm scales about 1 (default
    inits leave modulation and output layers zero, which would hide layout bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) / max(1, param[0].numel()) ** 0.5)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            else:
                param.copy_(1 + torch.randn(param.shape, generator=generator) * 0.1)


def tiny_transformer_config(variant: str = "dev") -> dict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
    return {"patch_size": 1, "in_channels": IN_CHANNELS.get(variant, 64), "out_channels": 64, "num_layers": 1,
            "num_single_layers": 1, "attention_head_dim": HEAD_DIM, "num_attention_heads": HEADS,
            "joint_attention_dim": T5_WIDTH, "pooled_projection_dim": CLIP_WIDTH,
            "guidance_embeds": variant != "schnell", "axes_dims_rope": rope_axes(HEAD_DIM)}


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 32, 32),
                         layers_per_block=1, latent_channels=16, norm_num_groups=32, sample_size=64,
                         scaling_factor=FLUX_VAE_SCALING, shift_factor=FLUX_VAE_SHIFT, use_quant_conv=False,
                         use_post_quant_conv=False, force_upcast=True)


def tiny_clip() -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=CLIP_WIDTH, intermediate_size=4 * CLIP_WIDTH,
                                        num_hidden_layers=2, num_attention_heads=1, max_position_embeddings=77,
                                        hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                                        pad_token_id=1, projection_dim=CLIP_WIDTH))


def tiny_t5() -> T5EncoderModel:
    return T5EncoderModel(T5Config(vocab_size=T5_VOCAB, d_model=T5_WIDTH, d_kv=16, d_ff=64, num_layers=2,
                                   num_heads=2, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                   feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, tie_word_embeddings=False,
                                   is_encoder_decoder=False, use_cache=False))


def tiny_flux_modules(seed: int = 0, variant: str = "dev") -> dict:
    """{"transformer", "vae", "clip", "t5"}: tiny random modules in float32 (the same for the same seed)."""
    torch.manual_seed(seed)
    modules = {"transformer": FluxTransformer2DModel(**tiny_transformer_config(variant)), "vae": tiny_vae(),
               "clip": tiny_clip(), "t5": tiny_t5()}
    for offset, module in enumerate(modules.values()):
        randomise(module, seed * 10 + offset + 1)
        module.eval().requires_grad_(False)
    return modules


# --- state dicts in each layout ------------------------------------------------------------------------------------

def _plain(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items() if not k.endswith("position_ids")}


def clip_file_state(clip: CLIPTextModel) -> dict[str, torch.Tensor]:
    """CLIP-L as files hold it: transformers' names under `text_model.` (whatever this transformers version's
    module calls them)."""
    return _clip_state(clip)


def vae_ldm_state(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """The AE in LDM names without a prefix, as BFL's ae.safetensors."""
    return {k[len(VAE_PREFIX):]: v for k, v in vae_to_ldm(vae).items()}


def t5_file_state(t5: T5EncoderModel) -> dict[str, torch.Tensor]:
    """T5 as t5xxl_*.safetensors hold it: `shared.weight` once, no `encoder.embed_tokens.weight`."""
    return {k: v for k, v in _plain(t5).items() if k != "encoder.embed_tokens.weight"}


def flux_state(modules: dict, layout: str, parts: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """One file's tensors. BFL: the transformer alone. ComfyUI: `model.diffusion_model.` + the parts under
    `vae.` (LDM names), `text_encoders.clip_l.transformer.`, `text_encoders.t5xxl.transformer.`. diffusers: bare
    names, or with parts `transformer.` + `vae.`, `text_encoder.`, `text_encoder_2.` (diffusers/transformers names)."""
    parts = check_parts(parts, ("vae", "clip", "t5"))
    transformer = _plain(modules["transformer"])
    if layout == "BFL":
        if parts:
            raise ValueError("BFL files hold the transformer alone (write the parts with write_flux_parts)")
        return diffusers_to_bfl(transformer)
    if layout == "ComfyUI":
        state = prefixed(COMFY_PREFIX, diffusers_to_bfl(transformer))
        if "vae" in parts:
            state.update(prefixed("vae.", vae_ldm_state(modules["vae"])))
        if "clip" in parts:
            state.update(prefixed(COMFY_CLIP_PREFIX + "transformer.", clip_file_state(modules["clip"])))
        if "t5" in parts:
            state.update(prefixed(COMFY_T5_PREFIX + "transformer.", t5_file_state(modules["t5"])))
        return state
    if layout == "diffusers":
        if not parts:
            return transformer
        state = prefixed("transformer.", transformer)
        if "vae" in parts:
            state.update(prefixed("vae.", _plain(modules["vae"])))
        if "clip" in parts:
            state.update(prefixed(DIFFUSERS_PART_PREFIXES["clip"], clip_file_state(modules["clip"])))
        if "t5" in parts:
            state.update(prefixed(DIFFUSERS_PART_PREFIXES["t5"], t5_file_state(modules["t5"])))
        return state
    raise ValueError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")


# --- writing files (shared with tiny_sd3 and tiny_zimage) ---------------------------------------------------------

def _cast(state: dict, dtype: torch.dtype) -> dict:
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def prefixed(prefix: str, state: dict) -> dict:
    """`state` with `prefix` before every name (how packed files hold their parts)."""
    return {prefix + k: v for k, v in state.items()}


def check_parts(parts: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    """`parts` as a tuple; ValueError naming those not in `known`."""
    parts = tuple(parts)
    unknown = set(parts) - set(known)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}")
    return parts


def save_state(path: Path, state: dict, dtype: torch.dtype) -> Path:
    """`state` as one `.safetensors` at `path` (its folder created), every floating tensor stored in `dtype`."""
    state = _cast(state, dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def save_parts(folder: Path, files: dict[str, tuple[dict, torch.dtype]]) -> dict[str, Path]:
    """{stem: (state, dtype)} as `folder/stem.safetensors` files; {stem: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {stem: save_state(folder / f"{stem}.safetensors", state, dtype) for stem, (state, dtype) in files.items()}


def write_flux(path: Path, layout: str, variant: str = "dev", dtype: torch.dtype = torch.float32,
               parts: Iterable[str] | None = None, seed: int = 0) -> Path:
    """One `.safetensors` in `layout`; `parts` defaults to what such files usually hold (ComfyUI: all three;
    BFL and diffusers: none). Every floating tensor is stored in `dtype` (float8 included)."""
    if parts is None:
        parts = ("vae", "clip", "t5") if layout == "ComfyUI" else ()
    return save_state(path, flux_state(tiny_flux_modules(seed, variant), layout, parts), dtype)


def write_flux_parts(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The separate files Forge users keep in models/VAE and models/text_encoder: ae.safetensors (LDM names),
    clip_l.safetensors, t5xxl_fp16.safetensors and t5xxl_fp8_e4m3fn.safetensors (transformers' names)."""
    modules = tiny_flux_modules(seed)
    return save_parts(folder, {"ae": (vae_ldm_state(modules["vae"]), torch.float32),
                               "clip_l": (clip_file_state(modules["clip"]), torch.float16),
                               "t5xxl_fp16": (t5_file_state(modules["t5"]), torch.float16),
                               "t5xxl_fp8_e4m3fn": (t5_file_state(modules["t5"]), torch.float8_e4m3fn)})


def write_flux_folder(folder: Path, variant: str = "dev", seed: int = 0, tokenizer=None, tokenizer_2=None) -> Path:
    """A diffusers folder for FluxPipeline (model_index.json, transformer/, vae/, text_encoder/, text_encoder_2/,
    scheduler/); tokenizer folders only when tokenizers are given."""
    modules = tiny_flux_modules(seed, variant)
    scheduler = FlowMatchEulerDiscreteScheduler(**scheduler_config(variant))
    pipe = FluxPipeline(scheduler=scheduler, vae=modules["vae"], text_encoder=modules["clip"], tokenizer=tokenizer,
                        text_encoder_2=modules["t5"], tokenizer_2=tokenizer_2, transformer=modules["transformer"])
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


# --- a full-size transformer for benchmarks, written tensor by tensor ---------------------------------------------

FULL_CONFIG = {"patch_size": 1, "in_channels": 64, "out_channels": 64, "num_layers": 19, "num_single_layers": 38,
               "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
               "pooled_projection_dim": 768, "axes_dims_rope": (16, 56, 56)}


def full_shapes(double: int = 19, single: int = 38, variant: str = "dev") -> dict[str, tuple[int, ...]]:
    """BFL names and shapes of a FLUX.1-shaped transformer with `double` / `single` blocks (built on the meta
    device: no memory)."""
    config = dict(FULL_CONFIG, num_layers=double, num_single_layers=single, guidance_embeds=variant != "schnell",
                  in_channels=IN_CHANNELS.get(variant, 64))
    with torch.device("meta"):
        module = FluxTransformer2DModel(**config)
    return {k: tuple(v.shape) for k, v in diffusers_to_bfl(module.state_dict()).items()}


def write_full_transformer(path: Path, dtype: torch.dtype = torch.bfloat16, double: int = 19, single: int = 38,
                           variant: str = "dev", seed: int = 0) -> Path:
    """A FLUX.1-shaped transformer in BFL's layout with random weights, streamed: header first, then each tensor as
    it is drawn. Refuses when the disk lacks room (the whole model is 23.8 GB in bf16, 11.9 GB in float8)."""
    shapes = full_shapes(double, single, variant)
    size = torch.tensor([], dtype=dtype).element_size()
    header, offset = {}, 0
    for key, shape in shapes.items():
        nbytes = size * int(torch.Size(shape).numel())
        header[key] = {"dtype": _ST_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < offset + (1 << 30):
        raise SystemExit(f"{path.parent}: {free / 1e9:.1f} GB free, the file needs {offset / 1e9:.1f} GB (+1 GB "
                         "spare); write fewer blocks with --blocks DOUBLE SINGLE")
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    generator = torch.Generator().manual_seed(seed)
    with open(path, "wb") as out:
        out.write(len(raw).to_bytes(8, "little"))
        out.write(raw)
        for key, shape in shapes.items():
            if len(shape) >= 2:
                value = torch.randn(shape, generator=generator) / shape[1] ** 0.5
            elif key.endswith("bias"):
                value = torch.randn(shape, generator=generator) * 0.02
            else:
                value = 1 + torch.randn(shape, generator=generator) * 0.1
            out.write(value.to(dtype).contiguous().view(torch.uint8).numpy().tobytes())
            del value
    return path


_ST_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float8_e4m3fn: "F8_E4M3",
             torch.float8_e5m2: "F8_E5M2"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--layout", nargs="+", default=[*LAYOUTS, "folder", "parts"])
    parser.add_argument("--variant", default="dev", choices=VARIANTS)
    parser.add_argument("--dtype", default=None, choices=sorted(_DTYPES),
                        help="storage dtype (tiny: fp32 default; --full: bf16 default)")
    parser.add_argument("--full", action="store_true", help="a FLUX.1-dev-shaped transformer (BFL layout)")
    parser.add_argument("--blocks", nargs=2, type=int, metavar=("DOUBLE", "SINGLE"), default=(19, 38),
                        help="with --full: double and single blocks (FLUX.1: 19 38)")
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    if args.full:
        dtype = _DTYPES[args.dtype or "bf16"]
        double, single = args.blocks
        name = f"flux-{args.variant}-full-{double}x{single}-{args.dtype or 'bf16'}.safetensors"
        print(write_full_transformer(out / name, dtype, double, single, args.variant))
        return
    dtype = _DTYPES[args.dtype or "fp32"]
    for layout in args.layout:
        if layout == "folder":
            print(write_flux_folder(out / f"tiny-flux-{args.variant}", args.variant))
        elif layout == "parts":
            for path in write_flux_parts(out / "flux-parts").values():
                print(path)
        else:
            print(write_flux(out / f"tiny-flux-{args.variant}-{layout}.safetensors", layout, args.variant, dtype))


if __name__ == "__main__":
    main()
