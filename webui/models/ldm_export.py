"""Write diffusers/transformers modules back in the A1111/LDM single-file layout.

The inverse of what `loader` reads. The tiny-model tool uses it so tests exercise the real loading path on files
laid out exactly like the checkpoints users download; it can also save a loaded model as one `.safetensors`.
"""
from __future__ import annotations

import torch

from .architecture import (SD1_CLIP_PREFIX, SD2_OPENCLIP_PREFIX, SDXL_CLIP_PREFIX, SDXL_OPENCLIP_PREFIX,
                           SDXL_REFINER_OPENCLIP_PREFIX, UNET_PREFIX, VAE_PREFIX)

_UNET_FIXED = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
               "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
               "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."}
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


_MIDDLE = {"mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
           "mid_block.resnets.1.": "middle_block.2."}


def _down_prefixes(config, table: dict[str, str]) -> int:
    """Add the down blocks' names (UNet and ControlNet alike) to `table`; returns the number of input blocks."""
    levels, per_level = len(config["block_out_channels"]), config["layers_per_block"]
    block = 1
    for i in range(levels):
        for j in range(per_level):
            table[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{block}.0."
            table[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{block}.1."
            block += 1
        if i < levels - 1:
            table[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{block}.0.op."
            block += 1
    return block


def _unet_prefixes(config) -> dict[str, str]:
    levels, per_level = len(config["block_out_channels"]), config["layers_per_block"]
    table = dict(_UNET_FIXED)
    _down_prefixes(config, table)
    table.update(_MIDDLE)
    block = 0
    for i in range(levels):
        has_attention = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(per_level + 1):
            table[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{block}.0."
            table[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{block}.1."
            if j == per_level and i < levels - 1:
                table[f"up_blocks.{i}.upsamplers.0.conv."] = f"output_blocks.{block}.{2 if has_attention else 1}.conv."
            block += 1
    return table


def _split(key: str, table: dict[str, str]) -> tuple[str, str]:
    """(the diffusers module prefix of key, the rest of key)."""
    for prefix in sorted(table, key=len, reverse=True):
        if key.startswith(prefix):
            return prefix, key[len(prefix):]
    raise KeyError(f"no LDM name for {key}")


def _renamed(module, table: dict[str, str], prefix_out: str) -> dict[str, torch.Tensor]:
    """`module`'s weights under their LDM names (`table` maps diffusers module prefixes to LDM ones)."""
    out = {}
    for key, value in module.state_dict().items():
        prefix, rest = _split(key, table)
        if ".resnets." in prefix:
            head, _, tail = rest.partition(".")
            rest = f"{_UNET_RESNET.get(head, head)}.{tail}"
        out[prefix_out + table[prefix] + rest] = value
    return out


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    return _renamed(unet, _unet_prefixes(unet.config), UNET_PREFIX)


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        new = key
        for side in ("encoder", "decoder"):
            new = new.replace(f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.")
            new = new.replace(f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.")
            new = new.replace(f"{side}.conv_norm_out.", f"{side}.norm_out.")
        if ".mid_block.attentions.0." in new:
            new = new.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            for old, ldm in _VAE_ATTENTION.items():
                new = new.replace(f".attn_1.{old}.", f".attn_1.{ldm}.")
            if value.ndim == 2:  # LDM keeps these as 1x1 convolutions
                value = value[:, :, None, None]
        for i in range(levels):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            ldm_level = levels - 1 - i
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{ldm_level}.block.")
            new = new.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{ldm_level}.upsample.")
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        out[VAE_PREFIX + new] = value
    return out


def _clip_state(encoder) -> dict[str, torch.Tensor]:
    """The encoder's tensors named as checkpoints name them (`text_model.*`, plus `text_projection.weight`)."""
    out = {}
    for key, value in encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue
        if not key.startswith(("text_model.", "text_projection.")):
            key = "text_model." + key
        out[key] = value
    return out


def hf_clip_to_ldm(encoder, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in _clip_state(encoder).items() if k.startswith("text_model.")}


def open_clip_to_ldm(encoder, prefix: str, projection: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """OpenCLIP layout. `projection` ([width, proj]) is written as `text_projection` when the module has none."""
    sd = _clip_state(encoder)
    out = {
        prefix + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        prefix + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
    }
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in range(encoder.config.num_hidden_layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [sd[f"{src}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)
            for hf, oc in names.items():
                out[f"{dst}{oc}.{kind}"] = sd[f"{src}{hf}.{kind}"]
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    elif projection is not None:
        out[prefix + "text_projection"] = projection
    return out


def to_ldm_state_dict(family: str, unet, vae, text_encoders: list) -> dict[str, torch.Tensor]:
    """A whole checkpoint in A1111's layout. For SD2, pass the text encoder with all its layers."""
    state = {**unet_to_ldm(unet), **vae_to_ldm(vae)}
    if family == "sd1":
        state.update(hf_clip_to_ldm(text_encoders[0], SD1_CLIP_PREFIX))
    elif family == "sd2":
        width = text_encoders[0].config.hidden_size
        state.update(open_clip_to_ldm(text_encoders[0], SD2_OPENCLIP_PREFIX, torch.eye(width)))
    elif family == "sdxl":
        state.update(hf_clip_to_ldm(text_encoders[0], SDXL_CLIP_PREFIX))
        state.update(open_clip_to_ldm(text_encoders[1], SDXL_OPENCLIP_PREFIX))
    elif family == "sdxl-refiner":  # OpenCLIP G alone, first of the conditioner's embedders
        state.update(open_clip_to_ldm(text_encoders[0], SDXL_REFINER_OPENCLIP_PREFIX))
    else:
        raise ValueError(f"unknown family {family!r}")
    return {k: v.contiguous() for k, v in state.items()}


def controlnet_to_ldm(controlnet) -> dict[str, torch.Tensor]:
    """A diffusers ControlNetModel in the original ControlNet 1.0/1.1 file layout (`control_model.*` keys)."""
    config = controlnet.config
    table = {key: value for key, value in _UNET_FIXED.items() if not key.startswith(("conv_norm_out", "conv_out"))}
    blocks = _down_prefixes(config, table)
    for index in range(blocks):
        table[f"controlnet_down_blocks.{index}."] = f"zero_convs.{index}.0."
    table.update(_MIDDLE)
    table.update({"controlnet_mid_block.": "middle_block_out.0.",
                  "controlnet_cond_embedding.conv_in.": "input_hint_block.0."})
    hint_blocks = len(controlnet.controlnet_cond_embedding.blocks)
    for index in range(hint_blocks):
        table[f"controlnet_cond_embedding.blocks.{index}."] = f"input_hint_block.{2 * (index + 1)}."
    table["controlnet_cond_embedding.conv_out."] = f"input_hint_block.{2 * (hint_blocks + 1)}."
    return {key: value.contiguous() for key, value in _renamed(controlnet, table, "control_model.").items()}
