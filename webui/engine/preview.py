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
import math
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
    if latents.ndim != 4:
        raise ValueError(f"expected latents of shape (batch, channels, h, w), got {tuple(latents.shape)}")


def to_picture(rgb: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] as an RGB picture."""
    pixels = ((rgb.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")


def cheap_preview(latents: torch.Tensor, family: str = "sd1", index: int = 0) -> Image.Image:
    """The `index`-th image of a (batch, 4, h, w) latent tensor as an RGB picture of h x w pixels (1/8 of the
    final size)."""
    _check(latents)
    latent = latents[min(index, latents.shape[0] - 1)].detach().to("cpu", torch.float32)
    if latent.shape[0] != 4:  # a family without published factors: its three main directions as colours
        return to_picture(principal_colours(latent))
    factors = torch.tensor(_SDXL_FACTORS if family == "sdxl" else _SD_FACTORS, dtype=torch.float32)
    return to_picture(torch.einsum("chw,cr->rhw", latent, factors))


def principal_colours(latent: torch.Tensor) -> torch.Tensor:
    """(C, h, w) latents as (3, h, w) in [-1, 1]: the three principal components of the channels over the
    picture, each scaled to its spread. Shows the composition (regions, edges) though not the real colours."""
    flat = latent.reshape(latent.shape[0], -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    _, _, directions = torch.linalg.svd(flat @ flat.T)  # the channels' covariance, C x C
    rgb = directions[:3] @ flat
    rgb = rgb / (rgb.abs().amax(dim=1, keepdim=True) + 1e-6)
    return rgb.reshape(3, *latent.shape[1:])


def grid(pictures: list[Image.Image]) -> Image.Image:
    """Pictures of one size in a near-square grid (A1111's preview of a whole batch)."""
    if len(pictures) == 1:
        return pictures[0]
    columns = math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    width, height = pictures[0].size
    sheet = Image.new("RGB", (columns * width, rows * height))
    for number, picture in enumerate(pictures):
        sheet.paste(picture, ((number % columns) * width, (number // columns) * height))
    return sheet


@dataclass
class Previewer:
    """How one run's previews are rendered: the method and what it needs. `decoders` is the services'
    `PreviewDecoders`; `full_decode(latents) -> [Image]` decodes with the run's VAE (the engine passes it).
    `whole_batch`: a grid of every image of the batch (`show_progress_grid`), else the first image."""
    method: str = CHEAP
    every: int = 10
    decoders: object = None
    full_decode: object = None
    whole_batch: bool = False
    problems: set = field(default_factory=set)  # methods that failed in this run (then: cheap, said once)
    _rendered_step: int = 0

    @property
    def in_loop(self) -> bool:
        """Rendered by the engine in the sampling loop (the VAE), not on demand."""
        return self.method == FULL and self.full_decode is not None and FULL not in self.problems

    def due(self, step: int) -> bool:
        """After sampling step `step` (1-based), is an in-loop preview due? Once per step, even when a sampler
        evaluates the model twice per step."""
        if self.every <= 0 or step % self.every or step == self._rendered_step:
            return False
        self._rendered_step = step
        return True

    def render(self, latents: torch.Tensor, family: str) -> Image.Image:
        """The preview of `latents`. A method that fails (an unreadable file, the VAE out of memory or giving
        NaNs) is replaced by Approx cheap for the rest of the run, said once in the log; never an error."""
        _check(latents)
        chosen = latents if self.whole_batch else latents[:1]
        if self.method in (FULL, APPROX_NN, TAESD) and self.method not in self.problems:
            try:
                if self.method == FULL and self.full_decode is not None:
                    return grid(self.full_decode(chosen))
                if self.method != FULL and self.decoders is not None:
                    return grid([to_picture(rgb) for rgb in self.decoders.decode(self.method, family, chosen)])
            except Exception as exc:  # noqa: BLE001 - a preview is a nicety: cheap previews, said once
                self.problems.add(self.method)
                log.warning("live previews (%s): %s: %s; showing Approx cheap previews instead", self.method,
                            type(exc).__name__, exc)
        return grid([cheap_preview(chosen, family, index) for index in range(chosen.shape[0])])


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


def shared_preview(control, every: int) -> tuple[object, Image.Image | None]:
    """(marker, picture): the run's preview for its current stage of N steps, rendered once per stage and shared
    by every follower (the UI's gallery, /progress, /queue/events); (None, None) when previews are off or nothing
    has been sampled yet."""
    watched = getattr(control.previewer, "watched", None)
    if watched is not None:  # a pool worker's job: it renders previews while someone asks for them
        watched()
    step = control.progress.sampling_step
    if every <= 0 or step <= 0:
        return None, None
    marker = (control.progress.job_no, step // every)
    cached = control.preview_cache
    if cached is not None and cached[0] == marker:
        return cached
    image = current_preview(control)
    if image is None:
        return None, None
    control.preview_cache = (marker, image)
    return marker, image


class PreviewWatcher:
    """For a follower that shows a preview every N sampling steps: `poll()` gives a new picture once per N steps,
    else None."""

    def __init__(self, control, every: int):
        self.control, self.every = control, every
        self._shown = None

    def poll(self) -> Image.Image | None:
        marker, image = shared_preview(self.control, self.every)
        if image is None or marker == self._shown:
            return None
        self._shown = marker
        return image
