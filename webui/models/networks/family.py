"""Which base model a LoRA was trained for ("sd1" | "sd2" | "sdxl" | "flux" | "sd3"), from its tensor names and shapes
(read from the safetensors header, no tensor needed) and, where those leave a choice, its metadata. FLUX.1 LoRAs fit
FLUX.1 dev and schnell checkpoints alike (`lora_family` names the LoRA family a checkpoint family takes); "sd3" is
SD3 and SD3.5 alike (a Medium LoRA on a Large model is caught by its shapes).

FLUX.1 and SD3 transformers share diffusers' MMDiT names (`transformer_blocks.N.attn.add_q_proj`, `context_embedder`,
`norm_out`): such names allow both, and what only one of them has decides (FLUX.1's single blocks and guidance
embedder, 19 double blocks and 3072-wide attention; SD3's `joint_blocks`, `pos_embed`, dual attention, blocks past
18, 1536 / 2432-wide attention, CLIP-G / T5 as its second / third text encoder)."""
from __future__ import annotations

import re

from .zimage_names import MARK as ZIMAGE_MARK

FAMILIES = frozenset({"sd1", "sd2", "sdxl", "flux", "sd3", "zimage"})
LABELS = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "flux": "FLUX.1", "flux-schnell": "FLUX.1 schnell",
          "flux-fill": "FLUX.1 Fill", "sd3": "SD3", "zimage": "Z-Image"}
# checkpoint family -> the LoRA family it takes, where they differ
_CHECKPOINT_TO_LORA = {"flux-schnell": "flux", "flux-fill": "flux"}

# tensor-name endings whose shape[1] is the module's input width
_INPUT_ENDINGS = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight",
                  ".lora_linear_layer.down.weight", ".hada_w1_b", ".hada_w2_b")
_CONTEXT_WIDTH = {768: {"sd1"}, 1024: {"sd2"}, 2048: {"sdxl"}}  # cross-attention to_k / to_v inputs
_TEXT_WIDTH = {768: {"sd1", "sdxl", "flux", "sd3"}, 1024: {"sd2"}, 1280: {"sdxl", "sd3"}}  # text encoder attention
_MMDIT_WIDTH = {3072: {"flux"}, 1536: {"sd3"}, 2432: {"sd3"}}  # MMDiT attention inputs: FLUX.1, SD3(.5) M, SD3.5 L

_XL_TEXT = re.compile(r"^(lora_te2_|text_encoder_2\.|text_encoders\.clip_g\.)")  # CLIP-G: SDXL's or SD3's
_TE1 = re.compile(r"^lora_te1_")  # SDXL's first text encoder, or FLUX.1's / SD3's CLIP-L (kohya)
_TEXT = re.compile(r"^(lora_te[123]?_|text_encoder(_[23])?\.|text_encoders\.(clip_l|clip_g|t5xxl)\.)")
_SD3_TEXT = re.compile(r"^(lora_te3_|text_encoder_3\.|text_encoders\.t5xxl\.)")  # SD3's T5
# FLUX.1's transformer in BFL names (kohya, ComfyUI, XLabs, fal) or what only its diffusers names have
_FLUX = re.compile(r"(^|[._])(double_blocks|single_blocks|single_transformer_blocks)[._]\d|guidance_embedder")
# SD3's MMDiT in SAI names (kohya, ComfyUI) or what only its diffusers names have
_MMDIT_HEAD = r"^(transformer\.|lora_transformer_|lora_unet_|base_model\.model\.|(model\.)?diffusion_model\.)?"
_SD3 = re.compile(r"(^|[._])joint_blocks[._]\d|" + _MMDIT_HEAD +
                  r"(pos_embed[._]proj|transformer_blocks[._](\d+[._]attn2[._]|(19|[2-9]\d)[._]))")
# diffusers' MMDiT names: FLUX.1 or SD3; OneTrainer's `lora_transformer_` prefix is used for both
_MMDIT = re.compile(r"^(transformer\.|lora_transformer_)|" + _MMDIT_HEAD +
                    r"(transformer_blocks[._]\d+[._](attn[._]|ff_context|norm1_context)|context_embedder[._]"
                    r"|time_text_embed[._])")
_MMDIT_ATTENTION = re.compile(r"[._](to_[qkv]|add_[qkv]_proj)[._]")
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
    if version.startswith(("sd3", "sd_3")):  # kohya: "sd3", "sd3.5" (SD3 and SD3.5 LoRAs alike)
        return "sd3"
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith(("sd_v2", "sd_2")):
        return "sd2"
    if version.startswith(("sd_v1", "sd_1")):
        return "sd1"
    architecture = str(metadata.get("modelspec.architecture") or "").lower()
    if architecture.startswith("flux-1"):  # "flux-1-dev/lora", "flux-1-schnell/lora"
        return "flux"
    if architecture.startswith("stable-diffusion-3"):  # "stable-diffusion-3-medium/lora", "...-3.5-large/lora"
        return "sd3"
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
        if not _TEXT.match(name) and ZIMAGE_MARK.search(name):  # Z-Image's transformer (either naming)
            candidates &= {"zimage"}
            continue
        if _XL_TEXT.match(name):
            candidates &= {"sdxl", "sd3"}
        elif _TE1.match(name):
            candidates &= {"sdxl", "flux", "sd3"}
        elif _SD3_TEXT.match(name):
            candidates &= {"sd3"}
        text = bool(_TEXT.match(name))
        if not text and (_FLUX.search(name) or _SD3.search(name) or _MMDIT.search(name)):
            # (an MMDiT's `transformer_blocks.1` says nothing about SDXL)
            candidates &= {"flux"} if _FLUX.search(name) else {"sd3"} if _SD3.search(name) else {"flux", "sd3"}
            width = _input_width(name, shape)
            if width in _MMDIT_WIDTH and _MMDIT_ATTENTION.search(name):
                candidates &= _MMDIT_WIDTH[width]
            continue
        if not text and _SD_UNET.search(name):
            candidates -= {"flux", "sd3"}
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
    """The tensors decide when they can; the metadata picks among what they allow; None when unsure. A file with
    CLIP-G weights and nothing else that tells (a text-encoder-only LoRA) counts as SDXL unless its metadata says
    SD3, as in A1111, where `lora_te2_` means SDXL."""
    allowed = families_from_tensors(shapes)
    if len(allowed) == 1:
        return next(iter(allowed))
    claimed = family_from_metadata(metadata)
    if claimed in allowed:
        return claimed
    return "sdxl" if allowed == {"sdxl", "sd3"} else None


def lora_family(checkpoint_family: str) -> str:
    """The LoRA family a checkpoint family takes ("flux" for FLUX.1 schnell and Fill too)."""
    return _CHECKPOINT_TO_LORA.get(checkpoint_family, checkpoint_family)
