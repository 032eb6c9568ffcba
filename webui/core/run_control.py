"""What a running generation reports and obeys: progress, Interrupt and Skip."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Progress:
    job_no: int = 0  # the batch (of batch count) being sampled, from 0
    job_count: int = 1
    sampling_step: int = 0
    sampling_steps: int = 0
    started: float = field(default_factory=time.monotonic)
    textinfo: str = ""

    @property
    def fraction(self) -> float:
        if self.sampling_steps <= 0:
            return 0.0
        done = self.job_no * self.sampling_steps + self.sampling_step
        return min(1.0, done / (self.job_count * self.sampling_steps))

    def as_dict(self) -> dict:
        """For followers (the queue's events and views)."""
        return {"step": self.sampling_step, "steps": self.sampling_steps, "job_no": self.job_no,
                "job_count": self.job_count, "progress": round(self.fraction, 4), "eta": round(self.eta_seconds, 2),
                "textinfo": self.textinfo}

    @property
    def eta_seconds(self) -> float:
        fraction = self.fraction
        if fraction <= 0:
            return 0.0
        elapsed = time.monotonic() - self.started
        return elapsed / fraction - elapsed


class RunControl:
    """Shared between the engine (which reports and polls) and whoever asked for the run (which may stop it)."""

    def __init__(self, on_progress: Callable[[Progress], None] | None = None,
                 on_event: Callable[[str, dict], None] | None = None):
        """`on_progress(progress)` after every report; `on_event(kind, data)` for whoever follows the run as
        events: "progress" (the Progress) and "image" ({"path", "infotext"} once an image is saved)."""
        self.progress = Progress()
        self._interrupt = threading.Event()
        self._skip = threading.Event()
        self._on_progress = on_progress
        self.on_event = on_event
        self.latents = None  # the running batch's latents after the last step: live previews render them on demand
        self.latent_family = ""
        self.latents_step = 0  # bumps with every publish, so watchers render a preview once per change
        self.previewer = None  # engine.preview.Previewer: how this run's previews are rendered (None: cheap)
        self.preview = None  # the last picture the engine rendered itself ("Full" previews)
        self.preview_cache = None  # (stage marker, picture): the followers' shared render (preview.shared_preview)
        self.forward = None  # command -> None: where Interrupt / Skip also go (a pool worker running the job)

    def interrupt(self) -> None:
        """Stop at the next model evaluation: the batch being sampled is decoded and kept, then the run ends."""
        first = not self._interrupt.is_set()
        self._interrupt.set()
        self._forward("interrupt")
        if first:
            self.report(textinfo="Interrupting...")

    def skip(self) -> None:
        """End the batch being sampled at the next model evaluation (it is decoded and kept), then go on."""
        first = not self._skip.is_set()
        self._skip.set()
        self._forward("skip")
        if first:
            self.report(textinfo="Skipping...")

    def _forward(self, command: str) -> None:
        if self.forward is not None:
            self.forward(command)

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    def take_skip(self) -> bool:
        """True once per Skip press: the current batch is dropped and the next one starts."""
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False

    @property
    def skip_requested(self) -> bool:
        return self._skip.is_set()

    def publish_latents(self, latents, family: str) -> None:
        """The batch's current latents, for live previews. Only a reference is kept: rendering happens in the thread
        of whoever asks (the API's /progress, the UI's poller), never in the sampling loop."""
        self.latents, self.latent_family = latents, family
        self.latents_step += 1

    def release(self) -> None:
        """The run is over: drop what only live previews needed (the latents, pictures, and the previewer, which
        may hold the run's model), so a finished job kept in the history holds no model or device memory."""
        self.latents = self.preview = self.preview_cache = self.previewer = None

    def publish_preview(self, image) -> None:
        """A preview the engine rendered in the loop (the "Full" method, which needs the run's VAE)."""
        self.preview = image

    def report(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self.progress, key, value)
        if self._on_progress is not None:
            self._on_progress(self.progress)
        self._emit("progress", {"progress": self.progress})

    def image_saved(self, path: str, infotext: str = "") -> None:
        """A finished image is on disk: the job's history records it at once, so a crash later loses nothing."""
        self._emit("image", {"path": str(path), "infotext": infotext})

    def batch_finished(self, batch: int, entries: dict) -> None:
        """Batch `batch` of the run is finished: `entries` are what it added to the result (its images, seeds,
        infotexts, saved paths). A pool's head keeps them, so a job moved to another worker does not make them again."""
        self._emit("batch", {"batch": batch, "entries": entries})

    def _emit(self, kind: str, data: dict) -> None:
        if self.on_event is not None:
            self.on_event(kind, data)
