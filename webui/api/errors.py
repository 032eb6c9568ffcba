"""The API's errors: A1111's JSON shape, and one mapping from what failed (bad input, unknown names, a closed queue)
to an HTTP status, used by every route file."""
from __future__ import annotations

from typing import Any, Callable

from ..engine import samplers
from ..engine.request import RequestError
from ..jobs.queue import CANCELLED, DONE, DuplicateJobError, Job, QueueClosedError, QueueError
from ..models.manager import ModelLoadError
from ..models.registry import UnknownCheckpointError
from ..models.upscalers import UnknownUpscalerError, UpscalerLoadError
from ..models.vae import UnknownVaeError
from ..prompts.styles import StyleError
from ..settings.options import OptionError


class ApiError(Exception):
    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


def error_body(kind: str, detail: str, body: Any = "") -> dict:
    """A1111's error shape; `detail` is the message for people."""
    return {"error": kind, "detail": detail, "body": body, "errors": detail}


def classify(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, samplers.SamplerError) or (isinstance(exc, RequestError) and exc.field == "sampler_name"):
        return ApiError(400, "UnknownSampler", str(exc))
    if isinstance(exc, (StyleError, UnknownVaeError, UnknownUpscalerError, UpscalerLoadError)):
        return ApiError(400, type(exc).__name__, str(exc))  # (an unknown VAE is also an unknown checkpoint)
    if isinstance(exc, UnknownCheckpointError):
        return ApiError(400, "UnknownCheckpoint", str(exc))
    if isinstance(exc, RequestError):
        return ApiError(422, "InvalidRequest", str(exc))
    if isinstance(exc, OptionError):
        return ApiError(422, "InvalidOption", str(exc))
    if isinstance(exc, ModelLoadError):
        return ApiError(400, "ModelLoadError", str(exc))
    if isinstance(exc, DuplicateJobError):
        return ApiError(409, "DuplicateTaskId", str(exc))
    if isinstance(exc, QueueClosedError):
        return ApiError(503, "ShuttingDown", str(exc))
    return ApiError(500, type(exc).__name__, str(exc))


def job_failure(job: Job) -> ApiError:
    """The HTTP error for a job that did not finish: classified by what failed it, with the job's message."""
    if job.state == CANCELLED:
        return ApiError(409, "Cancelled", f"The job was cancelled: {job.error or 'cancelled'}")
    if job.exception is None:
        return ApiError(500, job.state, job.error or job.state)
    classified = classify(job.exception)
    return ApiError(classified.status, classified.kind, job.error or classified.detail)


def run_job(submit: Callable[[], Job]) -> Job:
    """Queue a job with `submit` and wait for it: refusals (bad input, a closed queue) and failures become
    ApiErrors with the right status."""
    try:
        job = submit()
    except (ValueError, KeyError, QueueError) as exc:
        raise classify(exc) from None
    job.wait()
    if job.state != DONE:
        raise job_failure(job)
    return job
