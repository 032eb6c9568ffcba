"""Write small random Z-Image models in the real file layouts (a tool for tests and benchmarks).

    python -m webui.models.tiny_zimage OUTDIR [--layout ComfyUI diffusers folder parts] [--dtype fp32|bf16|fp8]

Tiny models: a ZImageTransformer2DModel (64 wide, 2 heads of 32, one refiner block of each kind, 2 joint blocks; the
timestep embedder keeps diffusers' fixed 1024-wide middle layer), a Qwen3Model (48 wide, 4 query heads and 2 key/value
heads of 16, so the head size differs from width / heads as in Qwen3-4B; TINY_QWEN_VOCAB ids) and tiny_flux's 16-channel
AE. Written as one file per layout (`zimage.zimage_layout` names), as a diffusers folder for ZImagePipeline, or as the
separate files ComfyUI users keep (`ae.safetensors`, `qwen_3_4b.safetensors`, `qwen_3_4b_fp8_e4m3fn.safetensors`).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import Qwen3Config, Qwen3Model

from .tiny_flux import _plain, check_parts, prefixed, randomise, save_parts, save_state, tiny_vae, vae_ldm_state
from .zimage import (COMFY_PREFIX, DIFFUSERS_PART_PREFIXES, QWEN3_MAX_POSITIONS, QWEN3_PREFIX, QWEN3_RMS_EPS,
                     QWEN3_ROPE_THETA, ZIMAGE_SHIFT, diffusers_to_comfy, rope_axes)

LAYOUTS = ("ComfyUI", "diffusers")
PARTS = ("vae", "qwen3")
DIM, HEADS = 64, 2
QWEN_WIDTH, QWEN_HEADS, QWEN_KV_HEADS, QWEN_HEAD_DIM = 48, 4, 2, 16
TINY_QWEN_VOCAB = 1024  # >= the tiny Qwen tokenizer's ids (see /work/notes26/zimage_api.md)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}


def tiny_transformer_config() -> dict:
    return {"all_patch_size": (2,), "all_f_patch_size": (1,), "in_channels": 16, "dim": DIM, "n_layers": 2,
            "n_refiner_layers": 1, "n_heads": HEADS, "n_kv_heads": HEADS, "norm_eps": 1e-5, "qk_norm": True,
            "cap_feat_dim": QWEN_WIDTH, "rope_theta": 256.0, "t_scale": 1000.0,
            "axes_dims": list(rope_axes(DIM // HEADS)), "axes_lens": [1536, 512, 512]}


def tiny_qwen3(vocab_size: int = TINY_QWEN_VOCAB) -> Qwen3Model:
    return Qwen3Model(Qwen3Config(
        vocab_size=vocab_size, hidden_size=QWEN_WIDTH, intermediate_size=2 * QWEN_WIDTH, num_hidden_layers=3,
        num_attention_heads=QWEN_HEADS, num_key_value_heads=QWEN_KV_HEADS, head_dim=QWEN_HEAD_DIM, hidden_act="silu",
        max_position_embeddings=QWEN3_MAX_POSITIONS, rms_norm_eps=QWEN3_RMS_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": QWEN3_ROPE_THETA}, tie_word_embeddings=True,
        use_cache=False))


def tiny_zimage_modules(seed: int = 0, vocab_size: int = TINY_QWEN_VOCAB) -> dict:
    """{"transformer", "vae", "qwen3"}: tiny random modules in float32 (the same for the same seed)."""
    torch.manual_seed(seed)
    modules = {"transformer": ZImageTransformer2DModel(**tiny_transformer_config()), "vae": tiny_vae(),
               "qwen3": tiny_qwen3(vocab_size)}
    for offset, module in enumerate(modules.values()):
        randomise(module, seed * 10 + offset + 1)
        module.eval().requires_grad_(False)
    return modules


def scheduler_config() -> dict:
    """Z-Image-Turbo's scheduler_config.json."""
    return {"num_train_timesteps": 1000, "use_dynamic_shifting": False, "shift": ZIMAGE_SHIFT}


# --- state dicts in each layout ------------------------------------------------------------------------------------

def qwen3_file_state(qwen: Qwen3Model) -> dict[str, torch.Tensor]:
    """Qwen3 as ComfyUI's qwen_3_4b.safetensors holds it: the causal LM's `model.` names, no lm_head."""
    return {"model." + k: v for k, v in _plain(qwen).items() if not k.endswith("rotary_emb.inv_freq")}


def zimage_state(modules: dict, layout: str, parts: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """One file's tensors. ComfyUI: the original names, bare (as Comfy-Org's z_image_turbo_bf16.safetensors) or,
    with parts, under `model.diffusion_model.` + the AE under `first_stage_model.` (LDM names) and Qwen3 under
    `text_encoders.qwen3_4b.transformer.` (ComfyUI's saved checkpoints). diffusers: bare names, or with parts
    `transformer.` + `vae.` and `text_encoder.` (diffusers / Qwen3Model names)."""
    parts = check_parts(parts, PARTS)
    transformer = _plain(modules["transformer"])
    if layout == "ComfyUI":
        comfy = diffusers_to_comfy(transformer)
        if not parts:
            return comfy
        state = prefixed(COMFY_PREFIX, comfy)
        if "vae" in parts:
            state.update(prefixed("first_stage_model.", vae_ldm_state(modules["vae"])))
        if "qwen3" in parts:
            state.update(prefixed(QWEN3_PREFIX + "transformer.", qwen3_file_state(modules["qwen3"])))
        return state
    if layout == "diffusers":
        if not parts:
            return transformer
        state = prefixed("transformer.", transformer)
        if "vae" in parts:
            state.update(prefixed("vae.", _plain(modules["vae"])))
        if "qwen3" in parts:
            state.update({DIFFUSERS_PART_PREFIXES["qwen3"] + k: v for k, v in _plain(modules["qwen3"]).items()
                          if not k.endswith("inv_freq")})
        return state
    raise ValueError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")


def write_zimage(path: Path, layout: str, dtype: torch.dtype = torch.float32, parts: Iterable[str] = (),
                 seed: int = 0) -> Path:
    """One `.safetensors` in `layout` (the transformer alone unless `parts` are named); every floating tensor stored
    in `dtype` (float8 included)."""
    return save_state(path, zimage_state(tiny_zimage_modules(seed), layout, parts), dtype)


def write_zimage_parts(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The separate files of Comfy-Org's Z-Image repackage: ae.safetensors (LDM names), qwen_3_4b.safetensors
    (bf16) and qwen_3_4b_fp8_e4m3fn.safetensors."""
    modules = tiny_zimage_modules(seed)
    return save_parts(folder, {"ae": (vae_ldm_state(modules["vae"]), torch.float32),
                               "qwen_3_4b": (qwen3_file_state(modules["qwen3"]), torch.bfloat16),
                               "qwen_3_4b_fp8_e4m3fn": (qwen3_file_state(modules["qwen3"]), torch.float8_e4m3fn)})


def write_zimage_data(data: Path, checkpoint: str = "z_image_turbo") -> Path:
    """A server's data folder as a Z-Image user has it: ComfyUI's transformer file in models/Stable-diffusion,
    ae.safetensors in models/VAE, qwen_3_4b.safetensors (bf16) and the Qwen3 tokenizer in models/text_encoder."""
    from .tiny_qwen_tokenizer import write_tiny_qwen_tokenizer

    write_zimage(data / "models" / "Stable-diffusion" / f"{checkpoint}.safetensors", "ComfyUI")
    parts = write_zimage_parts(data / "models" / "text_encoder")
    (data / "models" / "VAE").mkdir(parents=True, exist_ok=True)
    parts["ae"].rename(data / "models" / "VAE" / "ae.safetensors")
    parts["qwen_3_4b_fp8_e4m3fn"].unlink()
    write_tiny_qwen_tokenizer(data / "models" / "text_encoder" / "qwen3-tokenizer")
    return data


def zimage_pipeline(modules: dict, tokenizer=None) -> ZImagePipeline:
    """diffusers' own ZImagePipeline on the modules (Z-Image-Turbo's scheduler)."""
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**scheduler_config()), vae=modules["vae"],
                          text_encoder=modules["qwen3"], tokenizer=tokenizer, transformer=modules["transformer"])


def write_zimage_folder(folder: Path, seed: int = 0, tokenizer=None) -> Path:
    """A diffusers folder for ZImagePipeline (model_index.json, transformer/, vae/, text_encoder/, scheduler/);
    tokenizer/ only when a tokenizer is given."""
    zimage_pipeline(tiny_zimage_modules(seed), tokenizer).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--layout", nargs="+", default=[*LAYOUTS, "folder", "parts"])
    parser.add_argument("--dtype", default="fp32", choices=sorted(_DTYPES))
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    for layout in args.layout:
        if layout == "folder":
            print(write_zimage_folder(out / "tiny-zimage"))
        elif layout == "parts":
            for path in write_zimage_parts(out / "zimage-parts").values():
                print(path)
        else:
            print(write_zimage(out / f"tiny-zimage-{layout}.safetensors", layout, _DTYPES[args.dtype], PARTS))


if __name__ == "__main__":
    main()
