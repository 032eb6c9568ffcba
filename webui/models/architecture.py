"""Recognise a Stable Diffusion checkpoint from its tensors, and describe its parts as diffusers configs.

An A1111/LDM single-file checkpoint holds the UNet under `model.diffusion_model.`, the VAE under
`first_stage_model.` and the text encoder(s) under `cond_stage_model.` (SD1/SD2) or `conditioner.embedders.N.`
(SDXL). We read the family from those keys and shapes, never from the file name. The UNet and VAE layout comes
from an LDM inference config: the `.yaml` beside the checkpoint when there is one (A1111's convention), else our
built-in description of the family. Text encoder sizes are read from the tensors themselves.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_OPENCLIP_PREFIX = "conditioner.embedders.0.model."  # the SDXL refiner: OpenCLIP ViT-bigG alone


class CheckpointFormatError(ValueError):
    """The file is readable but is not a checkpoint we can use; the message says why."""


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder inside the checkpoint."""

    prefix: str
    layout: str  # "hf-clip" (OpenAI CLIP in transformers' names) or "open-clip"
    with_projection: bool  # SDXL's second encoder feeds its pooled, projected output to the UNet
    drop_last_layer: bool  # SD2 uses the penultimate layer; diffusers' SD2 text encoder simply lacks the last one
    pad_token: str  # what fills prompts up to 77 tokens


@dataclass
class Architecture:
    family: str  # "sd1" | "sd2" | "sdxl"
    inpainting: bool
    prediction_type: str  # "epsilon" | "v_prediction"
    prediction_known: bool  # False: SD2 without a config; the loader runs A1111's test to decide
    ldm_config: dict = field(repr=False)
    config_source: str = "built-in"
    text_encoders: tuple[TextEncoderSpec, ...] = ()
    refiner: bool = False  # SDXL's refiner: one text encoder (OpenCLIP G), an aesthetic score among its UNet inputs

    @property
    def label(self) -> str:
        name = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}[self.family] + (" refiner" if self.refiner else "")
        if self.inpainting:
            name += " inpainting"
        if self.prediction_type == "v_prediction":
            name += " (v-prediction)"
        return name

    @property
    def unet_params(self) -> dict:
        params = self.ldm_config["model"]["params"]
        section = params.get("unet_config") or params.get("network_config")
        return section["params"]

    @property
    def vae_params(self) -> dict:
        return self.ldm_config["model"]["params"]["first_stage_config"]["params"]["ddconfig"]

    @property
    def vae_scaling_factor(self) -> float:
        default = 0.13025 if self.family == "sdxl" else 0.18215
        return float(self.ldm_config["model"]["params"].get("scale_factor", default))


# --- built-in LDM descriptions of each family (facts about the published architectures) -------------------

def _vae_section() -> dict:
    return {"params": {"embed_dim": 4, "ddconfig": {
        "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
        "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}}}


def builtin_ldm_config(family: str, inpainting: bool, v_prediction: bool, refiner: bool = False) -> dict:
    if family == "sdxl" and refiner:  # sd_xl_refiner.yaml: 2560 = pooled 1280 + 5 x 256 (sizes, crop, aesthetic)
        unet = {"adm_in_channels": 2560, "num_classes": "sequential", "in_channels": 4, "out_channels": 4,
                "model_channels": 384, "attention_resolutions": [4, 2], "num_res_blocks": 2,
                "channel_mult": [1, 2, 4, 4], "num_head_channels": 64, "use_linear_in_transformer": True,
                "transformer_depth": 4, "context_dim": [1280, 1280, 1280, 1280]}
        params = {"scale_factor": 0.13025, "network_config": {"params": unet}, "first_stage_config": _vae_section()}
    elif family == "sdxl":
        unet = {"adm_in_channels": 2816, "num_classes": "sequential", "in_channels": 9 if inpainting else 4,
                "out_channels": 4, "model_channels": 320, "attention_resolutions": [4, 2], "num_res_blocks": 2,
                "channel_mult": [1, 2, 4], "num_head_channels": 64, "use_linear_in_transformer": True,
                "transformer_depth": [1, 2, 10], "context_dim": 2048}
        params = {"scale_factor": 0.13025, "network_config": {"params": unet}, "first_stage_config": _vae_section()}
    else:
        unet = {"in_channels": 9 if inpainting else 4, "out_channels": 4, "model_channels": 320,
                "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
                "transformer_depth": 1}
        if family == "sd2":
            unet.update({"num_head_channels": 64, "use_linear_in_transformer": True, "context_dim": 1024})
        else:
            unet.update({"num_heads": 8, "context_dim": 768})
        params = {"linear_start": 0.00085, "linear_end": 0.012, "scale_factor": 0.18215,
                  "unet_config": {"params": unet}, "first_stage_config": _vae_section()}
        if v_prediction:
            params["parameterization"] = "v"
    return {"model": {"params": params}}


def read_ldm_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointFormatError(f"{path.name}: could not read the config: {exc}") from None
    try:
        params = data["model"]["params"]
        (params.get("unet_config") or params["network_config"])["params"]["model_channels"]
        params["first_stage_config"]["params"]["ddconfig"]["ch_mult"]
    except (KeyError, TypeError):
        raise CheckpointFormatError(
            f"{path.name}: not an LDM inference config (needs model.params.unet_config/network_config "
            "and first_stage_config)") from None
    return data


def _config_says_v_prediction(config: dict) -> bool | None:
    params = config["model"]["params"]
    if "parameterization" in params:
        return params["parameterization"] == "v"
    target = str(params.get("denoiser_config", {}).get("params", {}).get("scaling_config", {}).get("target", ""))
    if target:
        return "VScaling" in target
    return None


# --- detection -----------------------------------------------------------------------------------------------

def _looks_like(keys: set[str]) -> str:
    """A hint for files that are not checkpoints at all."""
    if any(k.startswith(("lora_", "lora_unet", "lora_te")) or ".lora_down." in k or "lora_A" in k for k in keys):
        return "it looks like a LoRA; put it in models/Lora"
    if any(k.startswith(("encoder.", "decoder.")) for k in keys) and not any(k.startswith(UNET_PREFIX) for k in keys):
        return "it looks like a VAE; put it in models/VAE"
    if any(k.startswith(("control_model.", "input_hint_block.", "controlnet_cond_embedding.")) for k in keys):
        return "it looks like a ControlNet model; put it in models/ControlNet"
    if any(k in ("emb_params", "string_to_param") for k in keys):
        return "it looks like a textual inversion embedding; put it in embeddings/"
    return "it has no Stable Diffusion UNet/VAE/text encoder tensors"


def detect_architecture(state: Mapping[str, Any], name: str, config_path: Path | None = None) -> Architecture:
    """Work out the family and layout of a single-file checkpoint from its tensors (and optional sidecar)."""
    keys = set(state.keys())
    conv_in = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None or not any(k.startswith(VAE_PREFIX) for k in keys):
        raise CheckpointFormatError(f"{name}: not a Stable Diffusion checkpoint ({_looks_like(keys)})")
    in_channels = int(conv_in.shape[1])
    if in_channels not in (4, 9):
        raise CheckpointFormatError(f"{name}: unsupported UNet with {in_channels} input channels "
                                    "(4 = normal, 9 = inpainting)")
    inpainting = in_channels == 9

    refiner = False
    if SDXL_REFINER_OPENCLIP_PREFIX + "ln_final.weight" in keys and SDXL_OPENCLIP_PREFIX + "ln_final.weight" \
            not in keys:
        family, refiner = "sdxl", True
        encoders = (TextEncoderSpec(SDXL_REFINER_OPENCLIP_PREFIX, "open-clip", True, False, "!"),)
    elif SDXL_OPENCLIP_PREFIX + "ln_final.weight" in keys:
        if SDXL_CLIP_PREFIX + "text_model.final_layer_norm.weight" not in keys:
            raise CheckpointFormatError(f"{name}: an SDXL checkpoint without its CLIP ViT-L text encoder "
                                        f"(conditioner.embedders.0): incomplete or of an unknown layout")
        family = "sdxl"
        encoders = (
            TextEncoderSpec(SDXL_CLIP_PREFIX, "hf-clip", False, False, "<|endoftext|>"),
            TextEncoderSpec(SDXL_OPENCLIP_PREFIX, "open-clip", True, False, "!"),
        )
    elif SD2_OPENCLIP_PREFIX + "ln_final.weight" in keys:
        family = "sd2"
        encoders = (TextEncoderSpec(SD2_OPENCLIP_PREFIX, "open-clip", False, True, "!"),)
    elif any(k.startswith(SD1_CLIP_PREFIX) for k in keys):
        family = "sd1"
        encoders = (TextEncoderSpec(SD1_CLIP_PREFIX, "hf-clip", False, False, "<|endoftext|>"),)
    else:
        raise CheckpointFormatError(f"{name}: has a UNet and VAE but no text encoder this program knows "
                                    "(expected SD1.x CLIP, SD2.x OpenCLIP or SDXL's two encoders)")

    if config_path is not None:
        ldm_config = read_ldm_yaml(config_path)
        source = config_path.name
    else:
        ldm_config = builtin_ldm_config(family, inpainting, v_prediction=False, refiner=refiner)
        source = "built-in"
    said_v = _config_says_v_prediction(ldm_config) if config_path is not None else None
    if family == "sd2" and said_v is None:
        prediction, known = "epsilon", False
    else:
        prediction, known = ("v_prediction" if said_v else "epsilon"), True
    return Architecture(family, inpainting, prediction, known, ldm_config, source, encoders, refiner)


# --- diffusers configs -----------------------------------------------------------------------------------------

def unet_config(arch: Architecture) -> dict:
    """diffusers UNet2DConditionModel config for the LDM UNet parameters."""
    p = arch.unet_params
    block_out = [p["model_channels"] * m for m in p["channel_mult"]]
    attention_at = set(p["attention_resolutions"])
    down, up, scale = [], [], 1
    for i in range(len(block_out)):
        down.append("CrossAttnDownBlock2D" if scale in attention_at else "DownBlock2D")
        if i < len(block_out) - 1:
            scale *= 2
    for _ in block_out:
        up.append("CrossAttnUpBlock2D" if scale in attention_at else "UpBlock2D")
        scale //= 2
    head_channels = p.get("num_head_channels", -1)
    if head_channels and head_channels > 0 and p.get("num_heads", -1) in (-1, None):
        heads: Any = [c // head_channels for c in block_out]
    else:
        heads = p["num_heads"]
    depth = p.get("transformer_depth", 1)
    context = p["context_dim"]
    config = {
        "sample_size": 128 if arch.family == "sdxl" else 64,
        "in_channels": p["in_channels"],
        "out_channels": p["out_channels"],
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": block_out,
        "layers_per_block": p["num_res_blocks"],
        "cross_attention_dim": context if isinstance(context, int) else context[0],
        "attention_head_dim": heads,
        "use_linear_projection": bool(p.get("use_linear_in_transformer", False)),
        "transformer_layers_per_block": depth if isinstance(depth, int) else list(depth),
    }
    if arch.family == "sdxl":
        config.update({"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                       "projection_class_embeddings_input_dim": p["adm_in_channels"]})
    return config


def vae_config(arch: Architecture) -> dict:
    """diffusers AutoencoderKL config for the LDM first-stage parameters."""
    d = arch.vae_params
    block_out = [d["ch"] * m for m in d["ch_mult"]]
    return {
        "in_channels": d["in_channels"],
        "out_channels": d["out_ch"],
        "down_block_types": ["DownEncoderBlock2D"] * len(block_out),
        "up_block_types": ["UpDecoderBlock2D"] * len(block_out),
        "block_out_channels": block_out,
        "latent_channels": d["z_channels"],
        "layers_per_block": d["num_res_blocks"],
        "sample_size": d.get("resolution", 256),
        "scaling_factor": arch.vae_scaling_factor,
    }


def scheduler_config(arch: Architecture) -> dict:
    """The training noise schedule, as a diffusers scheduler config every sampler starts from."""
    params = arch.ldm_config["model"]["params"]
    return {
        "num_train_timesteps": int(params.get("timesteps", 1000)),
        "beta_start": float(params.get("linear_start", 0.00085)),
        "beta_end": float(params.get("linear_end", 0.012)),
        "beta_schedule": "scaled_linear",
        "prediction_type": arch.prediction_type,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }


def with_prediction(arch: Architecture, prediction_type: str) -> Architecture:
    clone = copy.copy(arch)
    clone.prediction_type = prediction_type
    clone.prediction_known = True
    return clone
