"""The model families we run, as data: what the engine, the prompt encoder and the UI need to know about each.

A checkpoint's family is recognised from its tensors (`architecture.py` for SD1/SD2/SDXL, `flux.py` for Flux); the
engine then reads everything family-specific from this table: the latent shape, how the VAE's latents are scaled,
how noise levels work (A1111's discrete DDPM schedule, or rectified flow with a shift), which samplers apply, how
the denoiser calls the network, how prompts are encoded, and the defaults the UI switches to when a checkpoint of
the family is chosen. A new family that reuses these mechanisms is a new row, not a new code path.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FlowShift:
    """Rectified-flow timestep shift: sigma' = s * sigma / (1 + (s - 1) * sigma).
    `dynamic`: s = exp(mu) with mu linear in the number of image tokens (patches of 2x2 latents) between
    (base_seq_len, base_shift) and (max_seq_len, max_shift), as BFL's reference sampler and diffusers' FluxPipeline
    compute it; else the constant `shift`."""

    shift: float = 1.0
    dynamic: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = 256
    max_seq_len: int = 4096


@dataclass(frozen=True)
class FamilyDefaults:
    """A family's usual settings (Forge's presets): the UI's fields switch to them when the chosen checkpoint is of
    another family than the previous one (webui/ui/family_defaults.py). The API keeps A1111's request defaults;
    the engine warns when a guidance-distilled family runs with real CFG above 1."""

    steps: int
    cfg_scale: float
    width: int
    height: int
    sampler: str
    scheduler: str
    distilled_cfg_scale: float | None = None


@dataclass(frozen=True)
class Family:
    name: str  # our key, stored on the loaded model ("sd1", "flux", ...)
    label: str
    latent_channels: int
    sampling: str  # "discrete" (A1111's DDPM schedule, eps / v) or "flow" (rectified flow, velocity prediction)
    network: str  # how the denoiser calls it: "unet" (UNet2DConditionModel), "flux" (packed 2x2 patches), "sd3"
    prompts: str  # "clip" (A1111's 75-token chunks), "flux" (CLIP-L pooled + T5), "sd3" (CLIP-L + CLIP-G + T5)
    defaults: FamilyDefaults
    vae_shift: float = 0.0  # latents = (vae latent - shift) * scaling factor
    shift: FlowShift = field(default_factory=FlowShift)
    distilled_guidance: bool = False  # takes "Distilled CFG Scale" (a guidance embedding)
    controlnet: bool = True  # our ControlNet units apply (SD-family ControlNets)
    clip_skip: bool = True
    size_multiple: int = 8  # image sides in pixels (transformers patch 2x2 latents: 16)
    own_schedule: str = "Uniform"  # flow families: what Automatic gives ("Simple": FluxPipeline's sigmas)
    # an inpainting checkpoint's extra network input (engine/img2img.py `inpaint_input`): "mask-latents" (SD's
    # 9-channel UNets: the mask at latent size, then the masked image's latents) or "latents-pixel-mask" (FLUX.1
    # Fill: the masked image's latents, then each latent pixel's 8x8 block of the pixel mask as 64 channels)
    inpaint_input: str = "mask-latents"
    inpainting: bool = False  # every checkpoint of the family takes that input (SD's: those with a 9-channel UNet)

    @property
    def pooled_input(self) -> bool:
        """The network takes a pooled text embedding beside the sequence (SDXL's goes in its added inputs)."""
        return self.prompts in ("flux", "sd3")


_SD_DEFAULTS = FamilyDefaults(20, 7.0, 512, 512, "DPM++ 2M", "Automatic")

FAMILIES: dict[str, Family] = {
    "sd1": Family("sd1", "SD1.x", 4, "discrete", "unet", "clip", _SD_DEFAULTS),
    "sd2": Family("sd2", "SD2.x", 4, "discrete", "unet", "clip", _SD_DEFAULTS),
    "sdxl": Family("sdxl", "SDXL", 4, "discrete", "unet", "clip",
                   FamilyDefaults(20, 7.0, 1024, 1024, "DPM++ 2M", "Automatic")),
    # FLUX.1 dev and its fine-tunes: guidance-distilled (real CFG off at scale 1), resolution-dependent shift
    "flux": Family("flux", "FLUX.1", 16, "flow", "flux", "flux",
                   FamilyDefaults(20, 1.0, 1024, 1024, "Euler", "Simple", 3.5), vae_shift=0.1159,
                   shift=FlowShift(dynamic=True), distilled_guidance=True, controlnet=False, clip_skip=False,
                   size_multiple=16, own_schedule="Simple"),
    # FLUX.1 Fill (inpainting / outpainting): dev with the masked image and the mask as extra inputs; BFL's
    # reference sampler runs it at guidance 30, 50 steps
    "flux-fill": Family("flux-fill", "FLUX.1 Fill", 16, "flow", "flux", "flux",
                        FamilyDefaults(50, 1.0, 1024, 1024, "Euler", "Simple", 30.0), vae_shift=0.1159,
                        shift=FlowShift(dynamic=True), distilled_guidance=True, controlnet=False, clip_skip=False,
                        size_multiple=16, own_schedule="Simple", inpaint_input="latents-pixel-mask",
                        inpainting=True),
    # FLUX.1 schnell: timestep-distilled, no guidance embedding, no shift, 4 steps
    "flux-schnell": Family("flux-schnell", "FLUX.1 schnell", 16, "flow", "flux", "flux",
                           FamilyDefaults(4, 1.0, 1024, 1024, "Euler", "Simple"), vae_shift=0.1159,
                           shift=FlowShift(1.0), controlnet=False, clip_skip=False, size_multiple=16,
                           own_schedule="Simple"),
    # SD3 / SD3.5 (Medium, Large): MMDiT, real CFG, a constant shift of 3
    # Z-Image (Tongyi-MAI, 2025; Turbo: 8-9 steps without CFG): single-stream DiT, Qwen3-4B text encoder,
    # FLUX.1's AE, a constant shift of 3; its prompts are chat-templated Qwen3 hidden states of their own length
    "zimage": Family("zimage", "Z-Image", 16, "flow", "zimage", "zimage",
                     FamilyDefaults(9, 1.0, 1024, 1024, "Euler", "Simple"), vae_shift=0.1159, shift=FlowShift(3.0),
                     controlnet=False, clip_skip=False, size_multiple=16, own_schedule="Simple"),
    "sd3": Family("sd3", "SD3", 16, "flow", "sd3", "sd3", FamilyDefaults(28, 4.5, 1024, 1024, "Euler", "Automatic"),
                  vae_shift=0.0609, shift=FlowShift(3.0), controlnet=False, size_multiple=16),
}

# The samplers that solve the flow ODE as they are (k-diffusion's deterministic ones on x0 predictions), and Euler a
# in its rectified-flow form; the others assume variance-exploding noise (ancestral / SDE steps, Restart) or a
# DDPM timestep table (DDIM, PLMS, UniPC, LCM).
FLOW_SAMPLERS = ("Euler", "Euler a", "Heun", "DPM++ 2M", "LMS", "DPM2")


def family_of(name: str) -> Family:
    return FAMILIES[name]


def is_flow(name: str) -> bool:
    return FAMILIES[name].sampling == "flow"
