"""Live previews of a running batch from its latents, by the method the user chose (`show_progress_type`):

- "Approx cheap" (default): a fixed linear map from the 4 latent channels to RGB, no weights and no model call;
  a preview at 1/8 of the final size.
- "Approx NN" / "TAESD": small decoders from `models/VAE-approx` / `models/VAE-taesd`
  (`webui.models.preview_decoders`); offered when their files are there.
- "Full": the run's own VAE.

The engine only keeps a reference to each step's latents (`RunControl.publish_latents`); whoever shows previews
renders them in its own thread when it wants one (`current_preview`), so cheap, NN and TAESD previews cost the
sampling loop nothing. "Full" needs the VAE the run is using, so the engine decodes in the loop, every N steps
(`show_progress_every_n_steps`), and keeps the picture (`RunControl.publish_preview`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from PIL import Image

log = logging.getLogger(__name__)

CHEAP, APPROX_NN, TAESD, FULL = "Approx cheap", "Approx NN", "TAESD", "Full"
METHODS = (CHEAP, APPROX_NN, TAESD, FULL)
_ALIASES = {"approximate cheap": CHEAP, "approximate nn": APPROX_NN, "approx cheap": CHEAP,
            "approx nn": APPROX_NN, "taesd": TAESD, "full": FULL}

# rows: latent channels 0..3; columns: R, G, B
_SD_FACTORS = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
_SDXL_FACTORS = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163),
                 (-0.3730, -0.2499, -0.2088))


def method_name(value) -> str:
    """The method's name as the options store it ("Approximate NN" and other spellings accepted)."""
    name = _ALIASES.get(str(value).strip().lower())
    if name is None:
        raise ValueError(f"unknown live preview method {value!r}: one of {', '.join(METHODS)}")
    return name


def offered_methods(decoders) -> list[str]:
    """The methods a user can pick now: cheap and Full always, Approx NN and TAESD when their files are there."""
    found = set(decoders.methods()) if decoders is not None else set()
    return [method for method in METHODS if method in (CHEAP, FULL) or method in found]


def preview_every(options) -> int:
    """Steps between previews: `show_progress_every_n_steps`, 0 when live previews are off."""
    if not options.get("live_previews_enable"):
        return 0
    return max(0, int(options.get("show_progress_every_n_steps") or 0))


def _check(latents: torch.Tensor) -> None:
    if latents.ndim != 4 or latents.shape[1] != 4:
        raise ValueError(f"expected latents of shape (batch, 4, h, w), got {tuple(latents.shape)}")


def to_picture(rgb: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] as an RGB picture."""
    pixels = ((rgb.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")


def cheap_preview(latents: torch.Tensor, family: str = "sd1", index: int = 0) -> Image.Image:
    """The `index`-th image of a (batch, 4, h, w) latent tensor as an RGB picture of h x w pixels (1/8 of the
    final size)."""
    _check(latents)
    factors = torch.tensor(_SDXL_FACTORS if family == "sdxl" else _SD_FACTORS, dtype=torch.float32)
    latent = latents[min(index, latents.shape[0] - 1)].detach().to("cpu", torch.float32)
    return to_picture(torch.einsum("chw,cr->rhw", latent, factors))


@dataclass
class Previewer:
    """How one run's previews are rendered: the method and what it needs. `decoders` is the services'
    `PreviewDecoders`; `full_decode(latents) -> Image` decodes with the run's VAE (the engine passes it)."""
    method: str = CHEAP
    every: int = 10
    decoders: object = None
    full_decode: object = None
    problems: set = field(default_factory=set)  # methods that failed in this run (then: cheap, said once)

    @property
    def in_loop(self) -> bool:
        """Rendered by the engine in the sampling loop (the VAE), not on demand."""
        return self.method == FULL and self.full_decode is not None

    def due(self, step: int) -> bool:
        """After sampling step `step` (1-based), is an in-loop preview due?"""
        return self.every > 0 and step % self.every == 0

    def render(self, latents: torch.Tensor, family: str) -> Image.Image:
        _check(latents)
        first = latents[:1]
        if self.method == FULL and self.full_decode is not None:
            return self.full_decode(first)
        if self.method in (APPROX_NN, TAESD) and self.decoders is not None and self.method not in self.problems:
            try:
                return to_picture(self.decoders.decode(self.method, family, first)[0])
            except Exception as exc:  # noqa: BLE001 - a missing or broken file: cheap previews, said once
                self.problems.add(self.method)
                log.warning("live previews: %s; showing Approx cheap previews instead", exc)
        return cheap_preview(first, family)


def current_preview(control) -> Image.Image | None:
    """A preview of what `control`'s run is sampling now; None before there is one (the first step; with "Full",
    the first N steps)."""
    previewer = getattr(control, "previewer", None) or Previewer()
    if previewer.in_loop:
        return control.preview
    latents = control.latents
    if latents is None:
        return None
    return previewer.render(latents, control.latent_family)


class PreviewWatcher:
    """For a follower that shows a preview every N sampling steps (the UI's gallery, the event stream): `poll()`
    gives a new picture once per N steps, else None."""

    def __init__(self, control, every: int):
        self.control, self.every = control, every
        self._shown = None

    def poll(self) -> Image.Image | None:
        if self.every <= 0:
            return None
        step = self.control.progress.sampling_step
        marker = (self.control.progress.job_no, step // self.every)
        if step <= 0 or marker == self._shown:
            return None
        image = current_preview(self.control)
        if image is not None:
            self._shown = marker
        return image
