"""One place decides where models live and in which precision (from the command-line flags)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    dtype: torch.dtype  # UNet and text encoders
    vae_dtype: torch.dtype
    offload: str  # "none" | "model" (--medvram) | "sequential" (--lowvram)
    attention: str  # "sdpa" | "xformers"
    autocast: bool

    @classmethod
    def from_flags(cls, flags) -> "DevicePolicy":
        wanted = getattr(flags, "device", "auto")
        if wanted == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was given but PyTorch sees no CUDA device")
        use_cuda = wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available())
        device = torch.device("cuda" if use_cuda else "cpu")
        precision = getattr(flags, "precision", "autocast")
        half = use_cuda and precision in ("half", "autocast") and not getattr(flags, "no_half", False)
        dtype = torch.float16 if half else torch.float32
        vae_dtype = torch.float32 if getattr(flags, "no_half_vae", False) else dtype
        offload = "sequential" if getattr(flags, "lowvram", False) else (
            "model" if getattr(flags, "medvram", False) else "none")
        if offload != "none" and not use_cuda:
            log.info("--medvram/--lowvram have no effect on the CPU")
            offload = "none"
        attention = "sdpa"
        if getattr(flags, "xformers", False):
            try:
                import xformers.ops  # noqa: F401
                attention = "xformers" if use_cuda else "sdpa"
            except ImportError:
                log.warning("--xformers given but xformers is not installed; using PyTorch SDPA attention")
        return cls(device, dtype, vae_dtype, offload, attention, autocast=half and precision == "autocast")

    @classmethod
    def cpu(cls) -> "DevicePolicy":
        return cls(torch.device("cpu"), torch.float32, torch.float32, "none", "sdpa", False)

    def _bf16_instead(self, dtype: torch.dtype, family: str) -> torch.dtype:
        """The transformer families (FLUX.1, SD3) overflow in float16: bfloat16 where the GPU has it."""
        if (dtype == torch.float16 and family in BF16_FAMILIES and self.device.type == "cuda"
                and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return dtype

    def dtype_for(self, family: str) -> torch.dtype:
        """The compute dtype of a family's network and text encoders."""
        return self._bf16_instead(self.dtype, family)

    def vae_dtype_for(self, family: str) -> torch.dtype:
        # SDXL's original VAE overflows in float16 (black or NaN images): keep it in float32 on the GPU.
        return torch.float32 if family == "sdxl" else self._bf16_instead(self.vae_dtype, family)


BF16_FAMILIES = ("flux", "flux-schnell", "flux-fill", "sd3", "zimage")
