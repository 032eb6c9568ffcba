"""Loading ControlNet models offline: original 1.0/1.1 single files (`control_model.*` keys, .safetensors or
.pth/.ckpt read weights-only), single files in diffusers' key layout (as SDXL ControlNets ship), and diffusers
folders. The architecture is read from the tensors (block widths and depths, cross-attention width, SDXL's added
embedding); attention heads come from a `.yaml` sidecar when there is one, else from the family's convention.
Loaded models are kept in a small LRU cache, apart from the checkpoint cache: changing units never reloads a
checkpoint, and using a ControlNet again never reloads it."""
from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import yaml
from diffusers import ControlNetModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

from ..core.errors import UserError
from .architecture import CheckpointFormatError
from .controlnet_registry import ControlNetInfo
from .devices import DevicePolicy
from .loader import _build, read_state_dict

log = logging.getLogger(__name__)

FAMILY_BY_CONTEXT = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}


class ControlNetLoadError(UserError, RuntimeError):
    """A ControlNet file could not be loaded; the message names the file and why (HTTP 422: a ControlNet unit's
    model that cannot be used; the engine names the unit)."""

    status = 422
    kind = "ControlNetLoadError"


@dataclass
class LoadedControlNet:
    info: ControlNetInfo
    model: ControlNetModel
    load_seconds: float = 0.0

    @property
    def is_sdxl(self) -> bool:
        return self.model.config.addition_embed_type == "text_time"

    @property
    def cross_attention_dim(self) -> int:
        return int(self.model.config.cross_attention_dim)

    @property
    def family_label(self) -> str:
        if self.is_sdxl:
            return "SDXL"
        return FAMILY_BY_CONTEXT.get(self.cross_attention_dim, f"{self.cross_attention_dim}-wide")

    def fits(self, unet, checkpoint_family: str | None = None) -> str | None:
        """None when the ControlNet fits the checkpoint's UNet, else why not (for the user). `checkpoint_family`
        ("sd1", "sd2", "sdxl") names the checkpoint in the message; else it is named from its UNet."""
        from .families import FAMILIES
        family = FAMILIES.get(checkpoint_family or "")
        if family is not None and not family.controlnet:  # a transformer family: SD ControlNets have nothing to fit
            return f"{self.info.title} is a{'n' if self.family_label[0] in 'S' else ''} {self.family_label} " \
                   f"ControlNet and the checkpoint is {family.label}, which takes no {self.family_label} ControlNet"
        unet_xl = unet.config.addition_embed_type == "text_time"
        unet_width = int(unet.config.cross_attention_dim)
        if unet_xl != self.is_sdxl or unet_width != self.cross_attention_dim:
            checkpoint = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}.get(
                checkpoint_family or "", "SDXL" if unet_xl else FAMILY_BY_CONTEXT.get(unet_width, f"{unet_width}-wide"))
            return f"{self.info.title} is a{'n' if self.family_label[0] in 'S' else ''} {self.family_label} " \
                   f"ControlNet and the checkpoint is {checkpoint}"
        levels = len(unet.config.block_out_channels)
        if len(self.model.config.block_out_channels) != levels:
            return f"{self.info.title} has {len(self.model.config.block_out_channels)} levels and the " \
                   f"checkpoint's UNet {levels}"
        return None


# --- reading the architecture from the tensors ------------------------------------------------------------------

def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def _sidecar_heads(config_path: Path | None, block_out: list[int]):
    if config_path is None or not config_path.is_file() or config_path.suffix != ".yaml":
        return None
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        params = config["model"]["params"]["control_stage_config"]["params"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise CheckpointFormatError(f"{config_path.name}: not a ControlNet config ({exc})") from None
    head_channels = params.get("num_head_channels", -1)
    if head_channels and head_channels > 0 and params.get("num_heads", -1) in (-1, None):
        return [c // head_channels for c in block_out]
    return params.get("num_heads")


def controlnet_config(state: dict, name: str, config_path: Path | None = None) -> dict:
    """A diffusers ControlNetModel config for weights in diffusers' key layout."""
    keys = list(state)
    if "controlnet_cond_embedding.conv_in.weight" not in state or "conv_in.weight" not in state:
        raise CheckpointFormatError(f"{name}: not a ControlNet model (no conditioning embedding)")
    levels = _count(keys, r"down_blocks\.(\d+)\.")
    block_out = [int(state[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)]
    per_level = _count(keys, r"down_blocks\.0\.resnets\.(\d+)\.")
    down_types, depths, context, linear = [], [], None, False
    for i in range(levels):
        depth = _count(keys, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")
        down_types.append("CrossAttnDownBlock2D" if depth else "DownBlock2D")
        depths.append(depth or 1)
        if depth and context is None:
            context = int(state[f"down_blocks.{i}.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1])
            linear = state[f"down_blocks.{i}.attentions.0.proj_in.weight"].ndim == 2
    mid_depth = _count(keys, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    if context is None and mid_depth:
        context = int(state["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1])
        linear = state["mid_block.attentions.0.proj_in.weight"].ndim == 2
    if context is None:
        raise CheckpointFormatError(f"{name}: a ControlNet without cross-attention is not supported")
    hint_blocks = _count(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    embedding = [int(state["controlnet_cond_embedding.conv_in.weight"].shape[0])]
    embedding += [int(state[f"controlnet_cond_embedding.blocks.{j}.weight"].shape[0])
                  for j in range(1, hint_blocks, 2)]
    sdxl = "add_embedding.linear_1.weight" in state
    heads = _sidecar_heads(config_path, block_out)
    if heads is None:
        heads = 8 if context == 768 else [max(1, c // 64) for c in block_out]
    config = {
        "in_channels": int(state["conv_in.weight"].shape[1]),
        "conditioning_channels": int(state["controlnet_cond_embedding.conv_in.weight"].shape[1]),
        "down_block_types": down_types,
        "block_out_channels": block_out,
        "layers_per_block": per_level,
        "cross_attention_dim": context,
        "attention_head_dim": heads,
        "use_linear_projection": bool(linear),
        "transformer_layers_per_block": depths,
        "conditioning_embedding_out_channels": embedding,
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_depth else None,
    }
    if sdxl:
        config.update({"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                       "projection_class_embeddings_input_dim": int(state["add_embedding.linear_1.weight"].shape[1])})
    return config


def _to_diffusers_layout(state: dict, name: str) -> dict:
    """Original-layout weights (with or without the `control_model.` prefix) in diffusers' key layout."""
    if "controlnet_cond_embedding.conv_in.weight" in state:
        return state
    if any(k.startswith("control_model.") for k in state):
        state = {k[len("control_model."):]: v for k, v in state.items() if k.startswith("control_model.")}
    if "input_hint_block.0.weight" not in state:
        raise CheckpointFormatError(f"{name}: not a ControlNet model (no input_hint_block or "
                                    "controlnet_cond_embedding tensors); ControlNet models go in models/ControlNet, "
                                    "checkpoints in models/Stable-diffusion")
    levels = _count(state, r"input_blocks\.(\d+)\.")
    per_level = 2 if levels in (12, 9) else 1  # SD1/2: 12 input blocks, SDXL: 9, both 2 resnets per level
    if "input_blocks.2.0.in_layers.0.weight" not in state or "input_blocks.2.0.op.weight" in state:
        per_level = 1
    converted = convert_controlnet_checkpoint(state, {"layers_per_block": per_level})
    for old, new in (("label_emb.0.0.", "add_embedding.linear_1."), ("label_emb.0.2.", "add_embedding.linear_2.")):
        for suffix in ("weight", "bias"):
            if old + suffix in state:
                converted[new + suffix] = state[old + suffix]
    return {k: v for k, v in converted.items() if v is not None}


def load_controlnet(info: ControlNetInfo, policy: DevicePolicy) -> LoadedControlNet:
    import time
    started = time.perf_counter()
    name = info.title
    if info.is_folder:
        try:
            model = ControlNetModel.from_pretrained(info.path, local_files_only=True, torch_dtype=policy.dtype)
        except (OSError, ValueError, RuntimeError, EnvironmentError) as exc:
            raise ControlNetLoadError(f"ControlNet {name}: could not load the diffusers folder ({exc})") from None
    else:
        try:
            state = _to_diffusers_layout(read_state_dict(info.path), name)
            config = controlnet_config(state, name, info.config)
            for key, value in state.items():
                if value.is_floating_point():
                    state[key] = value.to(policy.dtype)
            model = _build(ControlNetModel, config, state, "ControlNet", name)
        except CheckpointFormatError as exc:
            raise ControlNetLoadError(f"ControlNet {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any file must be a message naming it, never a crash
            log.exception("unexpected error loading ControlNet %s", name)
            raise ControlNetLoadError(f"ControlNet {name}: could not load ({type(exc).__name__}: {exc})") from None
    # Under --medvram/--lowvram a ControlNet waits in RAM and goes to the GPU only while a run uses it (the engine).
    model = model.eval().requires_grad_(False).to("cpu" if policy.offload != "none" else policy.device)
    return LoadedControlNet(info, model, time.perf_counter() - started)


class ControlNetCache:
    """Loaded ControlNets by file, least recently used dropped first beyond `limit`."""

    def __init__(self, policy: DevicePolicy, limit: int = 4):
        self.policy = policy
        self.limit = limit
        self._loaded: OrderedDict[tuple, LoadedControlNet] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, info: ControlNetInfo) -> LoadedControlNet:
        key = (str(info.path), info.mtime, info.size)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            loaded = load_controlnet(info, self.policy)
            log.info("loaded ControlNet %s (%s) in %.1f s", info.title, loaded.family_label, loaded.load_seconds)
            self._loaded[key] = loaded
            while len(self._loaded) > self.limit:
                self._loaded.popitem(last=False)
            return loaded

    def loaded_titles(self) -> list[str]:
        with self._lock:
            return [entry.info.title for entry in self._loaded.values()]
