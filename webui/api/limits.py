"""The request body limit of the HTTP API (and of the UI's uploads): a body over MAX_BODY_BYTES is refused with a
413 before it is read into memory (by its Content-Length, or while it streams in when it has none), so one huge
request cannot take the server's memory. The prompt limit is the request record's (`webui.core.request.MAX_PROMPT_CHARS`, a 422)."""
from __future__ import annotations

from ..core.errors import RequestTooLargeError
from .errors import app_path, send_error

# 512 MiB. The largest body a real client sends is an img2img at the decoder's limit: an 8192x8192 init image and
# a mask as base64 PNG. Measured: pure-noise pictures (which PNG cannot compress; real ones are far smaller) weigh
# 268 MB as RGB, 358 MB as RGBA, and a noisy 8-bit mask 90 MB (a drawn one ~0.1 MB): 448 MB at worst, under this.
MAX_BODY_BYTES = 512 * 2 ** 20
# The API's routes, and Gradio's (the UI's uploads, /gradio_api/upload: a picture dropped into the page; its events,
# /gradio_api/queue/join and others, whose JSON bodies Gradio reads whole).
# /login is the UI's login form (reachable without a login).
LIMITED_PREFIXES = ("/sdapi/", "/controlnet/", "/queue", "/gradio_api/", "/login")


def too_large(limit: int, size: int | None = None) -> RequestTooLargeError:
    weight = f"{size / 2 ** 20:,.0f} MB" if size is not None else f"over {limit / 2 ** 20:,.0f} MB"
    return RequestTooLargeError(f"request body too large: {weight}; the limit is {limit / 2 ** 20:,.0f} MB "
                                "(an 8192x8192 init image and mask as base64 PNG fit)")


class BodyLimit:
    """ASGI middleware: bodies of requests under `prefixes` (the API's routes, the UI's uploads) over `limit` bytes
    get a 413 in A1111's error shape. A body without a Content-Length is read here (the routes read it whole anyway)
    and handed on."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES, prefixes: tuple[str, ...] = LIMITED_PREFIXES):
        self.app, self.limit, self.prefixes = app, int(limit), tuple(prefixes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not app_path(scope).startswith(self.prefixes):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        size = int(declared) if declared is not None and declared.strip().isdigit() else None
        if size is not None and size > self.limit:
            return await send_error(send, too_large(self.limit, size))
        if size is not None and b"transfer-encoding" not in headers:
            return await self.app(scope, receive, send)  # the server reads exactly Content-Length bytes
        # No usable length, or a Transfer-Encoding beside it (the server then reads the chunks and ignores the
        # length): counted as it comes.
        chunks, total = [], 0  # no length given (chunked): counted as it comes
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return await self.app(scope, _replay([], message, receive), send)
            body = message.get("body", b"")
            total += len(body)
            if total > self.limit:
                return await send_error(send, too_large(self.limit))
            chunks.append(body)
            if not message.get("more_body", False):
                break
        return await self.app(scope, _replay(chunks, None, receive), send)


def _replay(chunks: list[bytes], last, receive):
    """A `receive` that hands the app the body read so far as one message, then whatever comes next."""
    pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}] if last is None else [last]

    async def replay():
        if pending:
            return pending.pop(0)
        return await receive()

    return replay

