"""Write small random Stable Diffusion models in the real file formats (a tool for tests and benchmarks).

    python -m webui.models.tiny OUTDIR [--kind sd1 sd2-v sd1-inpaint sdxl sdxl-inpaint sdxl-refiner diffusers] [--full]
                                       [--ckpt]

Tiny models are single files in A1111's layout with an LDM `.yaml` sidecar describing their small shapes, so the
real loader runs on them; `--full` writes an SD1.5-sized checkpoint (random weights, no sidecar) for benchmarks.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
import yaml
from diffusers import AutoencoderKL, ControlNetModel, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .architecture import Architecture, builtin_ldm_config, unet_config, vae_config
from .ldm_export import controlnet_to_ldm, to_ldm_state_dict
from .tokenizer import clip_tokenizer

KINDS = ("sd1", "sd2-v", "sd1-inpaint", "sdxl", "sdxl-inpaint")
TEXT_WIDTH = 64  # one attention head of 64, as CLIP sizes are derived (heads = width / 64)

_TINY_VAE = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
             "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def tiny_ldm_config(kind: str) -> dict:
    """An LDM inference config (the sidecar .yaml) with tiny shapes for the given kind."""
    family = "sdxl" if kind.startswith("sdxl") else ("sd2" if kind.startswith("sd2") else "sd1")
    refiner = kind == "sdxl-refiner"
    config = builtin_ldm_config(family, kind.endswith("inpaint"), v_prediction=kind.endswith("-v"), refiner=refiner)
    params = config["model"]["params"]
    unet = (params.get("unet_config") or params.get("network_config"))["params"]
    unet.update({"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1})
    if refiner:  # the refiner's context is OpenCLIP G's width; its added input pooled + 5 embedded numbers
        unet.update({"attention_resolutions": [2], "num_head_channels": 16, "transformer_depth": [1, 2],
                     "context_dim": TEXT_WIDTH, "adm_in_channels": TEXT_WIDTH + 5 * 256})
    elif family == "sd1":
        unet.update({"attention_resolutions": [1, 2], "num_heads": 2, "context_dim": TEXT_WIDTH})
    elif family == "sd2":
        unet.update({"attention_resolutions": [1, 2], "num_head_channels": 16, "context_dim": TEXT_WIDTH})
    else:
        unet.update({"attention_resolutions": [2], "num_head_channels": 16, "transformer_depth": [1, 2],
                     "context_dim": 2 * TEXT_WIDTH, "adm_in_channels": TEXT_WIDTH + 6 * 256})
    params["first_stage_config"]["params"]["ddconfig"] = copy.deepcopy(_TINY_VAE)
    return config


def _text_encoder(width: int, layers: int, act: str, projection: bool, seed: int):
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=width * 4,
                            num_hidden_layers=layers, num_attention_heads=max(1, width // 64),
                            max_position_embeddings=77, hidden_act=act, projection_dim=width,
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


def _randomise(module: torch.nn.Module, seed: int, weight_scale: float = 1.0) -> None:
    """Give every weight a visible random value (default inits leave some layers zero, which hides bugs).
    `weight_scale` multiplies the weight matrices and kernels (not biases or norms): below 1 a "calm" network, whose
    output moves smoothly with its input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            elif "norm" in name:
                param.copy_(1 + torch.randn(param.shape, generator=generator) * 0.05)
            else:
                fan_in = max(1, param[0].numel()) if param.ndim > 1 else 1
                value = torch.randn(param.shape, generator=generator) / fan_in ** 0.5
                param.copy_(value * weight_scale if weight_scale != 1.0 else value)


def build_modules(kind: str, full: bool = False, seed: int = 0, unet_weight_scale: float = 1.0):
    """(family, ldm_config, unet, vae, text_encoders) with random weights. `unet_weight_scale` < 1 makes the tiny
    UNet calmer (see `_randomise`): its pictures move less under tiny changes of the noise, so that float rounding
    stays far below one 8-bit level in exact-parity tests (tests/conftest.py `tiny_calm_sd1`)."""
    family = "sdxl" if kind.startswith("sdxl") else ("sd2" if kind.startswith("sd2") else "sd1")
    if full and kind == "sdxl-refiner":
        raise ValueError("no full-size SDXL refiner: tiny ones only")
    if full:
        ldm = builtin_ldm_config(family, kind.endswith("inpaint"), kind.endswith("-v"))
    else:
        ldm = tiny_ldm_config(kind)
    arch = Architecture(family, kind.endswith("inpaint"), "v_prediction" if kind.endswith("-v") else "epsilon",
                        True, ldm, refiner=kind == "sdxl-refiner")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(unet_config(arch)).eval()
    vae = AutoencoderKL.from_config(vae_config(arch)).eval()
    if not full:
        _randomise(unet, seed + 1, unet_weight_scale)
        _randomise(vae, seed + 2)
    if full:
        width, layers = {"sd1": (768, 12), "sd2": (1024, 24), "sdxl": (768, 12)}[family], None
        width, layers = width
    else:
        width, layers = TEXT_WIDTH, 2
    if family == "sd1":
        encoders = [_text_encoder(width, layers, "quick_gelu", False, seed + 3)]
    elif family == "sd2":  # written with one layer more: SD2 reads the penultimate layer, and the loader drops it
        encoders = [_text_encoder(width, layers + 1, "gelu", False, seed + 3)]
    elif arch.refiner:
        encoders = [_text_encoder(width, layers, "gelu", True, seed + 4)]
    else:
        encoders = [_text_encoder(width, layers, "quick_gelu", False, seed + 3),
                    _text_encoder(width, layers, "gelu", True, seed + 4)]
    if not full:  # default layer norms (weight 1, bias 0) give outputs of mean exactly 0, unlike real encoders
        for index, encoder in enumerate(encoders):
            _randomise_norms(encoder, seed + 5 + index)
    return family, ldm, unet, vae, encoders


def _randomise_norms(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name:
                shift = 0.3 if name.endswith("bias") else 1.0
                param.copy_(shift + torch.randn(param.shape, generator=generator) * 0.2)


def write_single_file(path: Path, kind: str, full: bool = False, seed: int = 0, ckpt: bool = False,
                      dtype: torch.dtype = torch.float32, unet_weight_scale: float = 1.0) -> Path:
    """Write `path` (.safetensors, or .ckpt when ckpt) and, for tiny models, the `.yaml` sidecar beside it.
    `unet_weight_scale` < 1: a calm UNet (tiny models only; see `build_modules`)."""
    family, ldm, unet, vae, encoders = build_modules(kind, full, seed, unet_weight_scale)
    layout = "sdxl-refiner" if kind == "sdxl-refiner" else family
    state = {k: v.to(dtype) for k, v in to_ldm_state_dict(layout, unet, vae, encoders).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ckpt:
        torch.save({"state_dict": state, "global_step": 0}, path)
    else:
        save_file(state, str(path))
    if not full:
        path.with_suffix(".yaml").write_text(yaml.safe_dump(ldm, sort_keys=False), encoding="utf-8")
    return path


def write_diffusers_folder(folder: Path, cache_dir: Path, seed: int = 0) -> Path:
    """A tiny SD1.x model as a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/...)."""
    _, ldm, unet, vae, encoders = build_modules("sd1", False, seed)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoders[0], tokenizer=clip_tokenizer(cache_dir),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def build_controlnet(kind: str = "sd1", seed: int = 0, full: bool = False) -> tuple[dict, ControlNetModel]:
    """(LDM config with a control_stage_config, ControlNetModel) matching the tiny (or full-size) UNet of `kind`,
    with random weights everywhere (zero convolutions included, so the residuals are visible)."""
    family = "sdxl" if kind.startswith("sdxl") else ("sd2" if kind.startswith("sd2") else "sd1")
    ldm = builtin_ldm_config(family, False, False) if full else tiny_ldm_config(kind.replace("-inpaint", ""))
    arch = Architecture(family, False, "epsilon", True, ldm)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(unet_config(arch))
    controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False).eval()
    if not full:
        _randomise(controlnet, seed + 11)
    else:  # random zero convolutions, small enough that full-size residuals stay in range
        with torch.no_grad():
            for name, param in controlnet.named_parameters():
                if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                    param.normal_(0, 0.01)
    params = copy.deepcopy(ldm["model"]["params"].get("unet_config") or ldm["model"]["params"]["network_config"])
    params["params"]["hint_channels"] = 3
    params["params"]["in_channels"] = 4
    control_ldm = {"model": {"params": {"control_stage_config": {
        "target": "cldm.cldm.ControlNet", "params": params["params"]}}}}
    return control_ldm, controlnet


def write_controlnet(path: Path, kind: str = "sd1", layout: str = "single", seed: int = 0,
                     full: bool = False) -> Path:
    """A random ControlNet for checkpoints of `kind`. layout "single": `path` (.safetensors or .pth) in the
    original ControlNet layout (`control_model.*`), with an LDM `.yaml` sidecar for tiny shapes; "diffusers-file":
    one .safetensors in diffusers' key layout (as SDXL ControlNets ship), no sidecar; "diffusers": a folder with
    config.json and diffusion_pytorch_model.safetensors."""
    control_ldm, controlnet = build_controlnet(kind, seed, full)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "diffusers":
        controlnet.save_pretrained(path, safe_serialization=True)
        return path
    if layout == "diffusers-file":
        save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, str(path))
        return path
    if layout != "single":
        raise ValueError(f"unknown layout {layout!r}")
    state = controlnet_to_ldm(controlnet)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    if not full:
        path.with_suffix(".yaml").write_text(yaml.safe_dump(control_ldm, sort_keys=False), encoding="utf-8")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--kind", nargs="+", default=list(KINDS) + ["diffusers"])
    parser.add_argument("--full", action="store_true", help="full SD-size shapes (random weights, no sidecar)")
    parser.add_argument("--ckpt", action="store_true", help="write .ckpt instead of .safetensors")
    parser.add_argument("--unet-weight-scale", type=float, default=1.0,
                        help="scale of the tiny UNet's random weights (below 1: a calm model for parity tests)")
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    for kind in args.kind:
        if kind == "diffusers":
            print(write_diffusers_folder(out / "tiny-diffusers", out / ".cache"))
        else:
            suffix = ".ckpt" if args.ckpt else ".safetensors"
            print(write_single_file(out / f"{'full' if args.full else 'tiny'}-{kind}{suffix}", kind, args.full,
                                    ckpt=args.ckpt, unet_weight_scale=args.unet_weight_scale))


if __name__ == "__main__":
    main()
