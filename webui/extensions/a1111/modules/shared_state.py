"""A1111's `modules.shared_state`: `state`, what the running generation is doing, read from our job queue.

The job is the one this thread is running (a script's nested `process_images`) or else the queue's running job.
Progress fields an extension writes (`state.job_count = 3`, `state.textinfo = "..."`) are reported to that
job's progress; other writes, and writes while nothing runs, are kept on this object.
"""
from __future__ import annotations

import time
from typing import Any

from webui.extensions.a1111.runtime import RUNTIME

# Fields kept in the running job's Progress (webui.core.run_control.Progress).
_PROGRESS_FIELDS = ("job_no", "job_count", "sampling_step", "sampling_steps", "textinfo")

# What A1111's state holds when nothing runs.
_IDLE = {
    "interrupted": False, "skipped": False, "stopping_generation": False, "job": "", "job_no": 0, "job_count": 0,
    "processing_has_refined_job_count": False, "job_timestamp": "0", "sampling_step": 0, "sampling_steps": 0,
    "current_latent": None, "current_image": None, "current_image_sampling_step": 0, "id_live_preview": 0,
    "textinfo": None, "time_start": None, "server_command": None, "need_restart": False,
}


def _running():
    """(job or None, RunControl or None) of the generation this state describes."""
    control = RUNTIME.job_control
    services = RUNTIME.services
    job = services.queue.running if services is not None else None
    if control is None and job is not None:
        control = job.control
    return job, control


class State:
    """`shared.state`."""

    def __init__(self):
        object.__setattr__(self, "_stored", {})
        object.__setattr__(self, "server_start", time.time())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        job, control = _running()
        if control is not None:
            if name == "interrupted":
                return control.interrupted
            if name == "skipped":
                return control.skip_requested
            if name in _PROGRESS_FIELDS:
                return getattr(control.progress, name)
        if job is not None:
            if name == "job_timestamp":
                return time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created))
            if name == "time_start":
                return job.started
            if name == "job" and name not in self._stored:
                return job.kind
        if name in self._stored:
            return self._stored[name]
        if name in _IDLE:
            return _IDLE[name]
        raise AttributeError(f"'State' object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        _, control = _running()
        if control is not None:
            if name == "interrupted":
                if value:
                    control.interrupt()
                return
            if name == "skipped":
                if value:
                    control.skip()
                return
            if name in _PROGRESS_FIELDS:
                control.report(**{name: value})
                return
        self._stored[name] = value

    def interrupt(self) -> None:
        """Stop the running generation after its current step (its finished images are kept)."""
        _, control = _running()
        if control is not None:
            control.interrupt()

    def skip(self) -> None:
        """Drop the current batch of the running generation and go on with the next."""
        _, control = _running()
        if control is not None:
            control.skip()

    # --- A1111's job bookkeeping, called by scripts that run several generations (Ultimate SD upscale, ...) ------
    def begin(self, job: str = "(unknown)") -> None:
        """A script starts its own series of steps: counts from zero (the queue's job keeps its interrupt)."""
        self._stored["job"] = job
        self.job_no = 0
        self.sampling_step = 0
        self._stored["current_image"] = None

    def end(self) -> None:
        self._stored.pop("job", None)

    def nextjob(self) -> None:
        """The next of the script's generations: job_no + 1, steps from zero."""
        self.job_no = (getattr(self, "job_no", 0) or 0) + 1
        self.sampling_step = 0

    def set_current_image(self) -> None:
        """A1111 decodes a live preview here; ours comes from the engine's own previews."""

    def assign_current_image(self, image) -> None:
        self._stored["current_image"] = image

    def dict(self) -> dict[str, Any]:
        """The fields A1111's progress API reports."""
        return {name: getattr(self, name) for name in ("skipped", "interrupted", "job", "job_count",
                                                       "job_timestamp", "job_no", "sampling_step",
                                                       "sampling_steps")}

    def __repr__(self) -> str:
        return f"<modules.shared.state {self.dict()!r}>"


state = State()
