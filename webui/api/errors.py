"""The API's errors: A1111's JSON shape for the one family of user errors (`webui/core/errors.py`), each with its
own HTTP status; anything else is a bug of ours and a 500."""
from __future__ import annotations

import json
from typing import Any, Callable

from ..core.errors import UserError
from ..jobs.queue import CANCELLED, DONE, Job


class ApiError(UserError):
    """An answer only the API gives (an unknown job id, a job already finished), with its status and kind."""

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail, status=status, kind=kind)


def _printable(text: str) -> str:
    """`text` as UTF-8 can carry it: a lone surrogate the client sent (echoed in a message) becomes `\\ud800`."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(kind: str, detail: str, body: Any = "") -> dict:
    """A1111's error shape; `detail` is the message for people."""
    detail = _printable(str(detail))
    return {"error": _printable(str(kind)), "detail": detail, "body": body, "errors": detail}


def classify(exc: BaseException) -> UserError:
    """What to answer for `exc`: a user error as it is (its status, kind and message), anything else a 500."""
    if isinstance(exc, UserError):
        return exc
    return ApiError(500, type(exc).__name__, str(exc))


def job_failure(job: Job) -> ApiError:
    """The HTTP error for a job that did not finish: classified by what failed it, with the job's message."""
    if job.state == CANCELLED:
        return ApiError(409, "Cancelled", f"The job was cancelled: {job.error or 'cancelled'}")
    if job.exception is None:
        return ApiError(500, job.state, job.error or job.state)
    classified = classify(job.exception)
    return ApiError(classified.status, classified.kind, job.error or str(classified))


def run_job(submit: Callable[[], Job]) -> Job:
    """Queue a job with `submit` and wait for it. Refusals (bad input, a closed queue: user errors) propagate to the
    app's handler, which answers their status; a job that failed becomes an ApiError with its error's status."""
    job = submit()
    job.wait()
    if job.state != DONE:
        raise job_failure(job)
    return job


async def send_error(send, error: UserError) -> None:
    """Answer an ASGI request with `error` in A1111's JSON shape and close the connection (for middlewares that
    refuse a request before any route runs)."""
    payload = json.dumps(error_body(error.kind, str(error))).encode("utf-8")
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


def app_path(scope) -> str:
    """The request's path inside the app (without the ASGI root_path a proxy may add)."""
    root, path = scope.get("root_path", ""), scope["path"]
    return path[len(root):] if root and path.startswith(root) else path
