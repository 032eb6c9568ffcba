"""Refusals in front of Gradio's routes, for requests Gradio itself would answer with a 500.

- An event (`POST /gradio_api/queue/join`, `/gradio_api/run/...`, `/gradio_api/api/...`) whose `fn_index` names
  no event of the page: Gradio looks it up unchecked (a KeyError). Answered 422 naming it.
- An upload (`POST /gradio_api/upload`) with a `files` part that has no file name (to a multipart parser a part
  without `filename` is a form field, which Gradio's upload takes for a file: a TypeError), or a body that is not
  multipart as its Content-Type says (Gradio answers that in plain text). Answered 422 / 400. The parts' headers
  are read as the body streams in (the same `python_multipart` parser Gradio uses), so the refusal comes before
  Gradio sees the bad part, and a large upload is never held in memory.

Answers are JSON in the API's error shape (`webui.api.errors.error_body`). `GradioGuard` runs inside the body
limit (`webui.api.limits.BodyLimit`, a 413 before anything is read) and the UI's login gate.
"""
from __future__ import annotations

import json
import logging
from typing import Callable

from pydantic import TypeAdapter, ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..api.errors import app_path, send_error
from ..core.errors import RequestError, UserError

log = logging.getLogger(__name__)

EVENT_ROUTES = ("/gradio_api/queue/join", "/gradio_api/run/", "/gradio_api/api/")
UPLOAD_ROUTE = "/gradio_api/upload"
UPLOAD_FIELD = "files"  # the multipart field Gradio's upload reads (`form.getlist("files")`)
_FN_INDEX = TypeAdapter(int | None)  # Gradio's `PredictBody.fn_index`: what it accepts, it accepts as this


def event_ids(blocks, session_hash: str | None) -> set[int]:
    """The `fn_index`es Gradio can run for this session: the page's events (the `id`s of /config's dependencies)
    and those a session rendered itself (`gr.render`).

    GRADIO INTERNAL (gradio 6.x), the one this guard relies on: `route_utils.get_fn` looks `fn_index` up in
    `blocks.state_holder[session_hash].blocks_config.fns` (a fresh session's is a copy of `blocks.fns`), or
    `blocks.fns` without a session, and raises KeyError for anything else. Read without creating a session.
    `tests/test_api_route_guards.py::test_event_ids_are_what_gradio_looks_up` fails if Gradio changes this."""
    ids = set(blocks.fns)
    holder = getattr(blocks, "state_holder", None)
    if session_hash and holder is not None and session_hash in holder:
        ids.update(holder[session_hash].blocks_config.fns)
    return ids


def unknown_event(payload, blocks) -> RequestError | None:
    """The refusal for an event body whose `fn_index` names no event; None when it does (or when Gradio refuses
    the body itself: not JSON, `fn_index` not a number, none given)."""
    if not isinstance(payload, dict) or payload.get("fn_index") is None:
        return None
    try:
        fn_index = _FN_INDEX.validate_python(payload["fn_index"])
    except ValidationError:
        return None
    session = payload.get("session_hash")
    if fn_index is None or fn_index in event_ids(blocks, session if isinstance(session, str) else None):
        return None
    return RequestError("fn_index", f"fn_index {fn_index}: the page has no such event (reload the page if the "
                                    "server was restarted)", kind="UnknownEvent")


class _UploadRefused(MultipartParseError):
    """Raised into Gradio's upload from its body stream: a parse error to Gradio's parser, which then deletes the
    files it had begun; the guard answers with `error` instead of whatever Gradio makes of it."""

    def __init__(self, error: UserError):
        super().__init__(str(error))
        self.error = error


class UploadScanner:
    """Reads the parts' headers of a multipart body fed to it chunk by chunk; `feed` returns the refusal for the
    first part that is not a named file in the `files` field (or for a body that is not multipart), else None."""

    def __init__(self, boundary: bytes):
        self.field, self.value, self.disposition = b"", b"", b""
        self.problem: UserError | None = None
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._field, "on_header_value": self._value,
            "on_header_end": self._header, "on_headers_finished": self._headers})

    def feed(self, chunk: bytes) -> UserError | None:
        if self.problem is None and chunk:
            try:
                self.parser.write(chunk)
            except MultipartParseError as exc:
                self.problem = UserError(f"upload: not valid multipart/form-data ({exc})", status=400,
                                         kind="InvalidUpload")
        return self.problem

    def _begin(self) -> None:
        self.disposition = b""

    def _field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def _header(self) -> None:
        if self.field.lower() == b"content-disposition":
            self.disposition = self.value
        self.field, self.value = b"", b""

    def _headers(self) -> None:
        _, options = parse_options_header(self.disposition)
        if options.get(b"name") == UPLOAD_FIELD.encode() and not options.get(b"filename") and self.problem is None:
            self.problem = RequestError(UPLOAD_FIELD, f"upload: a part of the '{UPLOAD_FIELD}' field has no file "
                                                      "name; send each file with one (Content-Disposition: "
                                                      'form-data; name="files"; filename="picture.png")',
                                        kind="InvalidUpload")


def upload_scanner(headers) -> UploadScanner | None:
    """A scanner for a multipart upload's body; None when the body is not multipart/form-data (Gradio answers that
    itself, with a JSON 400) or names no boundary (an `UploadScanner` that refuses at once)."""
    content_type = next((value for name, value in headers if name == b"content-type"), b"")
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    scanner = UploadScanner(params.get(b"boundary") or b"-")
    if not params.get(b"boundary"):
        scanner.problem = UserError("upload: multipart/form-data without a boundary", status=400,
                                    kind="InvalidUpload")
    return scanner


class GradioGuard:
    """ASGI middleware: the refusals of the module's docstring. `blocks()` gives the mounted page (None before it
    is built: everything passes)."""

    def __init__(self, app, blocks: Callable[[], object]):
        self.app, self.blocks = app, blocks

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or self.blocks() is None:
            return await self.app(scope, receive, send)
        path = app_path(scope)
        if path.startswith(EVENT_ROUTES):
            return await self._event(scope, receive, send)
        if path.rstrip("/") == UPLOAD_ROUTE:
            return await self._upload(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _event(self, scope, receive, send):
        """The event's JSON body, read here (the route would read it whole too) and handed on unless refused."""
        messages, chunks = [], []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            payload = json.loads(b"".join(chunks))
        except (ValueError, RecursionError):  # not JSON: Gradio says so itself
            payload = None
        problem = unknown_event(payload, self.blocks())
        if problem is not None:
            return await send_error(send, problem)

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _upload(self, scope, receive, send):
        scanner = upload_scanner(scope.get("headers", []))
        if scanner is None:
            return await self.app(scope, receive, send)
        if scanner.problem is not None:
            return await send_error(send, scanner.problem)
        refused: list[UserError] = []
        answered = []

        async def scanned():
            message = await receive()
            if message["type"] == "http.request" and not refused:
                problem = scanner.feed(message.get("body", b""))
                if problem is not None:  # this chunk never reaches Gradio
                    refused.append(problem)
                    raise _UploadRefused(problem)
            return message

        async def answer(message):
            if not refused:
                answered.append(message["type"])
                await send(message)

        try:
            await self.app(scope, scanned, answer)
        except Exception:  # noqa: BLE001 - once refused, whatever Gradio raised is about the refused body
            if not refused:
                raise
        if refused and "http.response.start" not in answered:
            await send_error(send, refused[0])

