"""Which module of a loaded model a LoRA file's module name means.

Files name UNet modules by diffusers names (`down_blocks.0.attentions.0...`) or by LDM/SGM names
(`input_blocks.1.1...`), text encoder modules by transformers CLIP names (`text_model.encoder.layers.0...`), either
with dots or, as kohya does, with underscores after a `lora_unet_` / `lora_te_` / `lora_te1_` / `lora_te2_` prefix.
A `ModuleTable` lists every patchable module of one model under all those spellings. The LDM names come from
`ldm_export.unet_to_ldm`, so they follow the UNet's own configuration (SD1, SD2 and SDXL alike) without tables.
A FLUX.1 model's transformer is the "unet" component (diffusers' names, under `transformer.` or OneTrainer's
`lora_transformer_`; BFL names are renamed before they get here) and its CLIP-L text encoder "te1". So is an SD3
model's (SAI names are renamed in `sd3_names`), with CLIP-L "te1", CLIP-G "te2" and T5 "te3" (kohya's `lora_te3_`,
diffusers' `text_encoder_3.`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ..architecture import UNET_PREFIX
from ..ldm_export import unet_to_ldm

log = logging.getLogger(__name__)

_KOHYA_PREFIXES = (("lora_unet_", "unet"), ("lora_te1_", "te1"), ("lora_te2_", "te2"), ("lora_te3_", "te3"),
                   ("lora_te_", "te1"),
                   ("lora_transformer_", "unet"))  # OneTrainer's FLUX.1 transformer (diffusers' names)
_DOTTED_PREFIXES = (("unet.", "unet"), ("transformer.", "unet"), ("text_encoder_2.", "te2"),
                    ("text_encoder_3.", "te3"), ("text_encoder.", "te1"),
                    ("text_encoders.clip_g.transformer.", "te2"),  # ComfyUI's SD3 CLIP-G
                    ("model.diffusion_model.", "unet"), ("diffusion_model.", "unet"),
                    ("cond_stage_model.transformer.", "te1"), ("conditioner.embedders.0.transformer.", "te1"),
                    ("text_encoders.clip_l.transformer.", "te1"))  # ComfyUI's FLUX.1 CLIP-L
# old diffusers attention-processor names for CLIP attention projections
_CLIP_PROCESSOR_NAMES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


@dataclass(frozen=True)
class Target:
    """A patchable module: `component` is "unet", "te1" or "te2"; `name` its name inside that component."""

    component: str
    name: str
    module: torch.nn.Module

    @property
    def is_text_encoder(self) -> bool:
        return self.component != "unet"

    @property
    def key(self) -> tuple[str, str]:
        return self.component, self.name


def _has_weight(module: torch.nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), torch.nn.Parameter)


def _unet_ldm_names(unet, names: list[str]) -> dict[str, str]:
    """diffusers module name -> LDM module name. `unet_to_ldm` reads only `.config` and `.state_dict()` and passes
    the values through, so handing it names as values maps names without touching a tensor."""
    keys = [f"{name}.weight" for name in names]
    shim = SimpleNamespace(config=unet.config, state_dict=lambda: {k: k for k in keys})
    try:
        ldm = unet_to_ldm(shim)
    except (KeyError, AttributeError, TypeError) as exc:  # a UNet layout the LDM table does not know
        log.warning("No LDM names for this UNet's modules (%s); LoRA files must use diffusers names", exc)
        return {}
    return {value[:-len(".weight")]: key[len(UNET_PREFIX):-len(".weight")] for key, value in ldm.items()}


class ModuleTable:
    """Every module with a weight in a model's UNet and text encoders, under each name a LoRA file may use."""

    def __init__(self, unet: torch.nn.Module, text_encoders: list[torch.nn.Module]):
        self.dotted: dict[str, dict[str, Target]] = {}
        self.underscored: dict[str, dict[str, Target]] = {}
        unet_modules = [(n, m) for n, m in unet.named_modules() if n and _has_weight(m)]
        # LDM names exist for UNets only (a FLUX.1 transformer's BFL names are converted in formats.py)
        is_unet = "down_block_types" in getattr(unet, "config", {})
        ldm = _unet_ldm_names(unet, [n for n, _ in unet_modules]) if is_unet else {}
        for name, module in unet_modules:
            self._add("unet", Target("unet", name, module), [name, ldm.get(name)])
        for i, encoder in enumerate(text_encoders[:3]):  # SD3's third: T5
            component = f"te{i + 1}"
            if encoder is None:  # SD3 without its T5
                continue
            for name, module in encoder.named_modules():
                if not name or not _has_weight(module):
                    continue
                canonical = name if name.startswith(("text_model.", "text_projection")) else f"text_model.{name}"
                self._add(component, Target(component, name, module),
                          [canonical, canonical.removeprefix("text_model.")])
        self.targets = {t.key: t for table in self.dotted.values() for t in table.values()}

    def _add(self, component: str, target: Target, names: list[str | None]) -> None:
        dotted = self.dotted.setdefault(component, {})
        underscored = self.underscored.setdefault(component, {})
        for name in filter(None, names):
            dotted.setdefault(name, target)
            underscored.setdefault(name.replace(".", "_"), target)

    @property
    def components(self) -> set[str]:
        return set(self.dotted)

    def resolve(self, file_key: str) -> Target | None:
        """The module a file's module name (without the `.lora_down.weight`-like ending) refers to, or None."""
        for prefix, component in _KOHYA_PREFIXES:
            if file_key.startswith(prefix):
                return self.underscored.get(component, {}).get(file_key[len(prefix):])
        key = file_key.removeprefix("base_model.model.")
        for prefix, component in _DOTTED_PREFIXES:
            if key.startswith(prefix):
                return self._dotted(component, key[len(prefix):])
        return self._dotted("unet", key) or self._dotted("te1", key)  # PEFT adapters saved without a prefix

    def _dotted(self, component: str, name: str) -> Target | None:
        table = self.dotted.get(component, {})
        name = name.replace(".processor.", ".")
        found = table.get(name)
        if found is not None:
            return found
        head, _, last = name.rpartition(".")
        if component == "unet" and last == "to_out":  # diffusers' processor `to_out_lora` means to_out.0
            return table.get(f"{name}.0")
        if component != "unet" and last in _CLIP_PROCESSOR_NAMES:
            return table.get(f"{head}.{_CLIP_PROCESSOR_NAMES[last]}")
        return None
