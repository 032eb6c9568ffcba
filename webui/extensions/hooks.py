"""The engine's side of extensions: the points where it calls out, and the record it hands them.

The engine holds one `ProcessingHooks` (`NoHooks` when nothing is installed) and calls it at fixed points of a
run, in A1111's order. Each call gets the `ProcessingRun`: the request and the per-image prompts and seeds,
which a hook may change before the engine reads them (`all_prompts` at `process`, a batch's `prompts` at
`before_batch`), and `extra_params`, infotext entries a hook adds. A hook that raises is reported under its
extension's name and skipped; the run goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .problems import ProblemLog


@dataclass
class ProcessingRun:
    request: Any  # webui.core.request.GenerationRequest (hooks may change it at before_process)
    control: Any  # webui.core.run_control.RunControl
    all_prompts: list[str] = field(default_factory=list)
    all_negative_prompts: list[str] = field(default_factory=list)
    all_seeds: list[int] = field(default_factory=list)
    all_subseeds: list[int] = field(default_factory=list)
    extra_params: dict = field(default_factory=dict)  # infotext entries added by extensions, in insertion order
    batch_number: int = -1  # the batch being made (of batch count), from 0
    prompts: list[str] = field(default_factory=list)  # the current batch's share of all_prompts (and below)
    negative_prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    model_info: Any = None  # webui.models.registry.CheckpointInfo of the checkpoint in use
    model: Any = None  # webui.models.loader.LoadedModel
    result: Any = None  # webui.engine.engine.GenerationResult being filled
    options: Any = None  # the options this run reads (override_settings included)
    state: dict = field(default_factory=dict)  # scratch space per hook consumer (the A1111 layer keeps `p` here)
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.request.batch_size * self.request.n_iter

    def batch_range(self, batch_number: int) -> range:
        size = self.request.batch_size
        return range(batch_number * size, (batch_number + 1) * size)


@dataclass
class ImageEvent:
    """One finished image, after decoding (and inpainting's paste-back), before its infotext and saving."""
    image: Any  # PIL image; a hook may replace it
    index: int  # in the run
    batch_number: int
    batch_index: int  # in its batch
    seed: int
    prompt: str
    negative_prompt: str


@dataclass
class SaveEvent:
    """An image about to be (`before_save`) or just (`saved`) written; before saving, the image and infotext may
    be changed."""
    image: Any
    infotext: str
    folder: str
    path: str | None = None  # set once it is written


@dataclass
class DenoiserEvent:
    """One model evaluation (A1111's CFGDenoiserParams): `x` (the batched latents before the model's input scaling:
    uncond rows first when CFG runs), `timestep` (A1111's sigma_in: each row's sigma; the timestep for DDIM, PLMS
    and UniPC), `text_cond` and `text_uncond` may be replaced."""
    x: Any
    image_cond: Any
    timestep: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any


class ProcessingHooks:
    """What the engine calls. The base class does nothing (a server with no extensions)."""

    wants_denoiser = False

    def before_process(self, run: ProcessingRun) -> None: ...
    def process(self, run: ProcessingRun) -> None: ...
    def before_batch(self, run: ProcessingRun) -> None: ...
    def process_batch(self, run: ProcessingRun) -> None: ...
    def after_batch(self, run: ProcessingRun, images: list) -> None: ...
    def image(self, run: ProcessingRun, event: ImageEvent) -> None: ...
    def before_save(self, run: ProcessingRun, event: SaveEvent) -> None: ...
    def saved(self, run: ProcessingRun, event: SaveEvent) -> None: ...
    def denoiser(self, run: ProcessingRun, event: DenoiserEvent) -> None: ...
    def after_process(self, run: ProcessingRun) -> None: ...


NoHooks = ProcessingHooks

POINTS = ("before_process", "process", "before_batch", "process_batch", "after_batch", "image", "before_save",
          "saved", "denoiser", "after_process")


class DispatchingHooks(ProcessingHooks):
    """Hooks that send every point to one `dispatch(point, *args)` (subclasses say where it goes)."""

    def dispatch(self, point: str, *args) -> None:
        """Where each point goes; the base sends nowhere (like ProcessingHooks)."""

    def before_process(self, run): self.dispatch("before_process", run)
    def process(self, run): self.dispatch("process", run)
    def before_batch(self, run): self.dispatch("before_batch", run)
    def process_batch(self, run): self.dispatch("process_batch", run)
    def after_batch(self, run, images): self.dispatch("after_batch", run, images)
    def image(self, run, event): self.dispatch("image", run, event)
    def before_save(self, run, event): self.dispatch("before_save", run, event)
    def saved(self, run, event): self.dispatch("saved", run, event)
    def denoiser(self, run, event): self.dispatch("denoiser", run, event)
    def after_process(self, run): self.dispatch("after_process", run)


class HookChain(DispatchingHooks):
    """Several consumers (our extension API, the A1111 script layer) called in order. A consumer reports its own
    extensions' failures; anything that still escapes is reported here and the run goes on."""

    def __init__(self, consumers: list[ProcessingHooks], problems: ProblemLog):
        self.consumers = list(consumers)
        self.problems = problems

    @property
    def wants_denoiser(self) -> bool:  # type: ignore[override]
        return any(c.wants_denoiser for c in self.consumers)

    def dispatch(self, point: str, *args) -> None:
        for consumer in self.consumers:
            if point == "denoiser" and not consumer.wants_denoiser:
                continue  # building a consumer's denoiser event costs a little at every evaluation
            try:
                getattr(consumer, point)(*args)
            except Exception as exc:  # noqa: BLE001
                self.problems.report(getattr(consumer, "name", type(consumer).__name__), point, exc)
