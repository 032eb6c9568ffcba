"""Which base model a LoRA was trained for ("sd1" | "sd2" | "sdxl" | "flux"), from its tensor names and shapes (read
from the safetensors header, no tensor needed) and, where those leave a choice, its metadata. FLUX.1 LoRAs fit
FLUX.1 dev and schnell checkpoints alike (`lora_family` names the LoRA family a checkpoint family takes)."""
from __future__ import annotations

import re

FAMILIES = frozenset({"sd1", "sd2", "sdxl", "flux"})
LABELS = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "flux": "FLUX.1", "flux-schnell": "FLUX.1 schnell"}
_CHECKPOINT_TO_LORA = {"flux-schnell": "flux"}  # checkpoint family -> the LoRA family it takes, where they differ

# tensor-name endings whose shape[1] is the module's input width
_INPUT_ENDINGS = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight",
                  ".lora_linear_layer.down.weight", ".hada_w1_b", ".hada_w2_b")
_CONTEXT_WIDTH = {768: {"sd1"}, 1024: {"sd2"}, 2048: {"sdxl"}}  # cross-attention to_k / to_v inputs
_TEXT_WIDTH = {768: {"sd1", "sdxl", "flux"}, 1024: {"sd2"}, 1280: {"sdxl"}}  # text encoder attention inputs

_XL_TEXT = re.compile(r"^(lora_te2_|text_encoder_2\.)")
_TE1 = re.compile(r"^lora_te1_")  # SDXL's first text encoder, or FLUX.1's CLIP-L (kohya)
_TEXT = re.compile(r"^(lora_te[12]?_|text_encoder(_2)?\.|text_encoders\.clip_l\.)")
# FLUX.1's transformer in BFL names (kohya, ComfyUI, XLabs, fal) or diffusers' / OneTrainer's
_FLUX = re.compile(r"(^|[._])(double_blocks|single_blocks|single_transformer_blocks)[._]\d|^lora_transformer_"
                   r"|^transformer\.|transformer_blocks[._]\d+[._](attn[._]|ff_context|norm1_context)")
# SD's UNet in diffusers' or LDM names
_SD_UNET = re.compile(r"(^|[._])(down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block)[._]")
_DEEP_TRANSFORMER = re.compile(r"transformer_blocks[._][1-9]")  # SD1/SD2 have one block per transformer
_SD12_ONLY_ATTENTION = re.compile(  # attention at the first level / highest-resolution output blocks: not SDXL
    r"(down_blocks[._]0[._]attentions|up_blocks[._]3[._]attentions|input_blocks[._][12][._]1[._]"
    r"|output_blocks[._](9|10|11)[._]1[._])")
_CROSS_KV = re.compile(r"attn2[._](processor[._])?to_[kv]")
_TEXT_ATTENTION = re.compile(r"self_attn[._](processor[._])?(q|k|v|to_q|to_k|to_v)")


def family_from_metadata(metadata: dict) -> str | None:
    """kohya's `ss_base_model_version` / `ss_v2`, or the modelspec `modelspec.architecture`."""
    version = str(metadata.get("ss_base_model_version") or "").lower()
    if version.startswith("flux"):  # kohya: "flux1", "flux1_chroma"...
        return "flux"
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith(("sd_v2", "sd_2")):
        return "sd2"
    if version.startswith(("sd_v1", "sd_1")):
        return "sd1"
    architecture = str(metadata.get("modelspec.architecture") or "").lower()
    if architecture.startswith("flux-1"):  # "flux-1-dev/lora", "flux-1-schnell/lora"
        return "flux"
    if architecture.startswith("stable-diffusion-xl"):
        return "sdxl"
    if architecture.startswith("stable-diffusion-v2"):
        return "sd2"
    if architecture.startswith("stable-diffusion-v1"):
        return "sd1"
    if str(metadata.get("ss_v2", "")).lower() == "true":
        return "sd2"
    return None


def _input_width(name: str, shape: tuple[int, ...]) -> int | None:
    if len(shape) >= 2 and name.endswith(_INPUT_ENDINGS):
        return int(shape[1])
    return None


def families_from_tensors(shapes: dict[str, tuple[int, ...]]) -> set[str]:
    """The families the tensor names and shapes allow (all when nothing tells; empty when they contradict)."""
    candidates = set(FAMILIES)
    for name, shape in shapes.items():
        if _XL_TEXT.match(name):
            candidates &= {"sdxl"}
        elif _TE1.match(name):
            candidates &= {"sdxl", "flux"}
        text = bool(_TEXT.match(name))
        if not text and _FLUX.search(name):
            candidates &= {"flux"}
            continue  # (its `transformer_blocks.1` says nothing about SDXL)
        if not text and _SD_UNET.search(name):
            candidates -= {"flux"}
        if not text and _DEEP_TRANSFORMER.search(name):
            candidates &= {"sdxl"}
        if not text and _SD12_ONLY_ATTENTION.search(name):
            candidates &= {"sd1", "sd2"}
        width = _input_width(name, shape)
        if width is None:
            continue
        if not text and _CROSS_KV.search(name) and width in _CONTEXT_WIDTH:
            candidates &= _CONTEXT_WIDTH[width]
        elif text and _TEXT_ATTENTION.search(name) and width in _TEXT_WIDTH:
            candidates &= _TEXT_WIDTH[width]
    return candidates


def guess_family(shapes: dict[str, tuple[int, ...]], metadata: dict) -> str | None:
    """The tensors decide when they can; the metadata picks among what they allow; None when unsure."""
    allowed = families_from_tensors(shapes)
    if len(allowed) == 1:
        return next(iter(allowed))
    claimed = family_from_metadata(metadata)
    return claimed if claimed in allowed else None


def lora_family(checkpoint_family: str) -> str:
    """The LoRA family a checkpoint family takes ("flux" for FLUX.1 schnell too)."""
    return _CHECKPOINT_TO_LORA.get(checkpoint_family, checkpoint_family)
