"""The errors meant for people: one family, each carrying its HTTP status, a short kind (A1111's `error` field) and
the message.

The room that knows what went wrong raises one (an unknown sampler, a VAE file that does not load, a ControlNet unit
with bad values); the UI shows its message as a toast and the API answers `status` with `{"error": kind, "detail":
message, ...}` (`webui/api/errors.py`). Anything that is not a `UserError` is a bug of ours: logged with its
traceback, a 500 from the API.

Room-specific types (`UnknownCheckpointError`, `VaeLoadError`, `PreprocessorError`, ...) stay in their rooms and
subclass `UserError` (keeping the builtin base they always had, `ValueError`, `KeyError` or `RuntimeError`, for
callers that catch those); the generic ones below are for everyone. A subclass sets `status` and `kind` as class
attributes; one instance may override them (`RequestError(..., status=400, kind="UnknownSampler")`).
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; `str(exc)` is the message, shown as is (no traceback)."""

    status: int = 400
    kind: str = "BadRequest"

    def __init__(self, message: str = "", *, status: int | None = None, kind: str | None = None):
        super().__init__(message)
        if status is not None:
            self.status = int(status)
        if kind is not None:
            self.kind = kind

    @property
    def detail(self) -> str:  # the API's name for the message
        return str(self)


class RequestError(UserError, ValueError):
    """Bad input, with the field it concerns (`field`, a wire name such as `steps` or `controlnet_units[1]`)."""

    status = 422
    kind = "InvalidRequest"

    def __init__(self, field_name: str, message: str, *, status: int | None = None, kind: str | None = None):
        super().__init__(message, status=status, kind=kind)
        self.field = field_name


class RequestTooLargeError(UserError):
    """A request body over the server's limit (HTTP 413)."""

    status = 413
    kind = "RequestTooLarge"


class RefusedError(UserError):
    """Something this server's command-line flags refuse (HTTP 403), such as folder paths under
    --hide-ui-dir-config."""

    status = 403
    kind = "Refused"


class NotFoundError(UserError):
    """A thing the request names by id that does not exist (HTTP 404), such as a job."""

    status = 404
    kind = "NotFound"


class ConflictError(UserError):
    """The request clashes with the server's state (HTTP 409): a task id in use, a job already finished."""

    status = 409
    kind = "Conflict"


class UnavailableError(UserError):
    """The server cannot take the request now (HTTP 503), such as while shutting down."""

    status = 503
    kind = "Unavailable"
