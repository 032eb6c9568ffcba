"""Save generated images with embedded infotext, read it back, and (de)serialise
images as base64 for the HTTP API.

Files are written atomically to ``<outdir>/YYYY-MM-DD/NNNNN-SEED.<ext>`` (the default name patterns;
``filename_pattern.py`` makes the others).
PNG stores the infotext in a ``parameters`` text chunk; JPEG/WEBP store it in
EXIF UserComment (``b"UNICODE\\0"`` + UTF-16-BE, as piexif/A1111 write it).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Callable

from PIL import ExifTags, Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from ..core.images import normalise_mode
from . import filename_pattern
from .filename_pattern import NameContext

__all__ = [
    "save_image",
    "save_image_as",
    "save_jpeg_copy",
    "encoding",
    "save_numbered",
    "read_infotext",
    "encode_png_base64",
    "decode_image_base64",
    "next_image_number",
]

PNG_TEXT_KEY = "parameters"
USER_COMMENT_TAG = 0x9286
JPEG_QUALITY = 80
WEBP_QUALITY = 80

_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
_UNICODE_HEADER = b"UNICODE\x00"
_ASCII_HEADER = b"ASCII\x00\x00\x00"
_RE_NUMBERED = re.compile(r"^(\d+)(?=[-.]|$)")  # 00012-seed.png, or 00012.png ([none])
_RE_DATA_URL = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)

# One process-wide lock: numbering + rename are quick, encoding happens outside it.
_save_lock = threading.Lock()

# Where a pool worker's saved images go (webui/worker_host.py): set once in a worker process, which sends each file's
# bytes to the head, where the head writes and numbers it; None (every other process): files are written here.
_writer = None


def route_writes(writer) -> None:
    """Send every image this process saves to `writer` (`write_numbered(data, folder, ext, numbering, template)` and
    `write_at(data, path)`, each returning the final path) instead of writing it: a pool worker's whole process."""
    global _writer
    _writer = writer


class _NumberMark(int):
    """Formats as a placeholder: `name(_NumberMark())` gives a name function's template (see `name_template`)."""

    def __format__(self, spec: str) -> str:
        return "\x00" + spec + "\x00"


def name_template(name: Callable[[int], str]) -> str:
    """`name(number)` as a template: the number's places as NUL-delimited format specs (`\x0005d\x00-123`)."""
    return name(_NumberMark(0))


def name_from_template(template: str) -> Callable[[int], str]:
    """The name function `name_template` described."""
    parts = template.split("\x00")
    if len(parts) % 2 == 0:
        raise ValueError("not a name template")
    if len(parts) == 1:  # a name without a number (save_images_add_number off): `-1`, `-2`, ... when taken
        return lambda number: template if number == 0 else f"{template}-{number}"

    def name(number: int) -> str:
        return "".join(format(number, part) if i % 2 else part for i, part in enumerate(parts))
    return name


def _numbering(first_number, folder: Path) -> str | int:
    """How `first_number` numbers a folder, as the head can redo it: "image", "grid", or a fixed number."""
    if first_number is None or first_number is next_image_number:
        return "image"
    from .grid import next_grid_number
    if first_number is next_grid_number:
        return "grid"
    return int(first_number(folder))


def numbering_function(numbering: str | int) -> Callable[[Path], int]:
    """The head's side of `_numbering`."""
    if numbering == "image":
        return next_image_number
    if numbering == "grid":
        from .grid import next_grid_number
        return next_grid_number
    return lambda _folder, fixed=int(numbering): fixed


def next_image_number(folder: str | Path) -> int:
    """Return 1 + the largest ``NNN-`` (or ``NNN.``) prefix among names in ``folder`` (0 if none)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    numbers = [int(m.group(1)) for m in map(_RE_NUMBERED.match, names) if m]
    return max(numbers) + 1 if numbers else 0


def _user_comment(text: str) -> bytes:
    """Encode ``text`` as an EXIF UserComment value (UNICODE header, UTF-16-BE)."""
    return _UNICODE_HEADER + text.encode("utf-16-be")


def _exif_with_comment(text: str) -> Image.Exif:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[USER_COMMENT_TAG] = _user_comment(text)
    return exif


def _write_image(image: Image.Image, fp, fmt: str, infotext: str, *, quality: int = JPEG_QUALITY,
                 lossless: bool = False) -> None:
    """Encode ``image`` into file object ``fp`` as ``fmt`` with ``infotext`` embedded; JPEG and lossy WEBP at
    ``quality`` (A1111's ``jpeg_quality``), WEBP lossless with ``lossless`` (``webp_lossless``).

    Pillow keeps per-save state on the Image object (``encoderinfo``), so a
    private copy is encoded: saving one image from several threads is safe.
    """
    image = image.copy()
    if fmt == "PNG":
        info = PngInfo()
        if infotext:
            info.add_text(PNG_TEXT_KEY, infotext)  # falls back to iTXt for non-Latin-1
        image.save(fp, "PNG", pnginfo=info)
        return
    kwargs: dict[str, object] = {}
    if infotext:
        kwargs["exif"] = _exif_with_comment(infotext)
    if fmt == "JPEG":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(fp, "JPEG", quality=int(quality), **kwargs)
    else:
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        if lossless:
            kwargs["lossless"] = True
        image.save(fp, "WEBP", quality=int(quality), **kwargs)


def save_image(
    image: Image.Image,
    outdir: str | Path,
    seed: int,
    infotext: str,
    *,
    now: datetime | None = None,
    extension: str = "png",
    options=None,
    context: NameContext | None = None,
) -> Path:
    """Save ``image`` under ``outdir`` as the options name it and return the path: A1111's
    ``directories_filename_pattern`` / ``samples_filename_pattern`` / ``save_to_dirs`` /
    ``save_images_add_number`` (``filename_pattern.plan``; the tags read ``context``, e.g. from the infotext),
    ``jpeg_quality`` and ``webp_lossless``. Without options, A1111's defaults:
    ``outdir/YYYY-MM-DD/NNNNN-SEED.<extension>``.

    The image is first encoded to a hidden ``.*.tmp`` file in the target folder
    and then renamed with :func:`os.replace`, so a final name never holds a
    partial file. Numbering is serialised by a lock and never reuses an
    existing name, so concurrent calls get distinct files.
    """
    ctx = context if context is not None else NameContext()
    ctx.seed = int(seed) if seed is not None else None
    ctx.now = now or ctx.now or datetime.now()
    if ctx.image is None:
        ctx.image = image
    ext = extension.lower().lstrip(".")
    if ext not in _FORMATS:
        raise ValueError(f"unsupported image extension: {extension!r}")
    folder, first, name = filename_pattern.plan(outdir, ctx, options, extension=ext)
    return save_numbered(image, folder, infotext, extension=ext, first_number=first or next_image_number,
                         name=name, **encoding(options))


def encoding(options) -> dict:
    """The encoder settings of the options (``jpeg_quality``, ``webp_lossless``) as ``save_numbered`` takes them;
    A1111's defaults (80, lossy) without options."""
    return {"quality": int(_option(options, "jpeg_quality", JPEG_QUALITY)),
            "lossless": bool(_option(options, "webp_lossless", False))}


def _option(options, key: str, default):
    """``options.get(key)``, or ``default`` without options, without the key or without a value."""
    try:
        value = options.get(key) if options is not None else None
    except KeyError:
        value = None
    return default if value is None else value


def save_numbered(
    image: Image.Image,
    folder: str | Path,
    infotext: str,
    *,
    extension: str,
    first_number: Callable[[Path], int],
    name: Callable[[int], str],
    quality: int = JPEG_QUALITY,
    lossless: bool = False,
) -> Path:
    """Save ``image`` atomically to ``folder/<name(number)>.<extension>``, the number being ``first_number(folder)``
    or the next one whose name is free (grids use it for ``grid-NNNN``). As ``save_image``: encoded to a hidden
    temporary file first, then renamed under the numbering lock, never over an existing file."""
    ext = extension.lower().lstrip(".")
    fmt = _FORMATS.get(ext)
    if fmt is None:
        raise ValueError(f"unsupported image extension: {extension!r}")
    if _writer is not None:  # a pool worker: the head writes the file (and numbers it in its own folder)
        data = io.BytesIO()
        _write_image(image, data, fmt, infotext or "", quality=quality, lossless=lossless)
        return _writer.write_numbered(data.getvalue(), Path(folder), ext, _numbering(first_number, Path(folder)),
                                      name_template(name))
    return write_numbered(lambda fp: _write_image(image, fp, fmt, infotext or "", quality=quality,
                                                  lossless=lossless),
                          folder, ext, first_number, name)


def write_numbered(write: Callable, folder: str | Path, ext: str, first_number: Callable[[Path], int],
                   name: Callable[[int], str]) -> Path:
    """`write(fp)` into a hidden temporary file of `folder`, then renamed to the first free `name(number)` from
    `first_number(folder)` on, under the numbering lock: a final name never holds a partial file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fp:
            write(fp)
        with _save_lock:
            number = first_number(folder)
            while True:
                final = folder / f"{name(number)}.{ext}"
                if not final.exists():
                    break
                number += 1
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def save_image_as(image: Image.Image, path: str | Path, infotext: str, *, quality: int = JPEG_QUALITY,
                  lossless: bool = False) -> Path:
    """Save ``image`` with ``infotext`` to exactly ``path`` (format from its extension), atomically: a
    partial file never appears under that name. An existing file there is replaced."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower().lstrip("."))
    if fmt is None:
        raise ValueError(f"unsupported image extension: {path.suffix!r}")
    if _writer is not None:  # a pool worker: the head writes the file
        data = io.BytesIO()
        _write_image(image, data, fmt, infotext or "", quality=quality, lossless=lossless)
        return _writer.write_at(data.getvalue(), path)
    return write_at(lambda fp: _write_image(image, fp, fmt, infotext or "", quality=quality, lossless=lossless),
                    path)


def write_at(write: Callable, path: str | Path) -> Path:
    """`write(fp)` into a hidden temporary file beside `path`, then renamed to it (replacing what was there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as fp:
            write(fp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_jpeg_copy(image: Image.Image, path: str | Path, infotext: str, options) -> Path | None:
    """A1111's ``export_for_4chan``: when the saved file is larger than ``img_downscale_threshold`` MB, or the image
    wider or taller than ``target_side_length``, a JPEG copy beside it (same name, ``.jpg``), shrunk to fit the side
    limit; None when no copy is due (the option off, a small image, or a file that is a JPEG already)."""
    path = Path(path)
    settings = {key: _option(options, key, default) for key, default in (
        ("export_for_4chan", False), ("img_downscale_threshold", 4.0), ("target_side_length", 4000))}
    if not settings["export_for_4chan"] or path.suffix.lower() in (".jpg", ".jpeg"):
        return None
    side = max(int(settings["target_side_length"]), 1)
    oversize = image.width > side or image.height > side
    if not oversize and path.stat().st_size <= float(settings["img_downscale_threshold"]) * 1024 * 1024:
        return None
    if oversize:
        if image.width >= image.height:
            size = (side, max(image.height * side // image.width, 1))
        else:
            size = (max(image.width * side // image.height, 1), side)
        image = image.resize(size, Image.LANCZOS)
    return save_image_as(image, path.with_suffix(".jpg"), infotext, **encoding(options))


def _decode_user_comment(raw: object) -> str | None:
    """Decode an EXIF UserComment value (UNICODE/ASCII/undefined header variants)."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, (bytes, bytearray)):
        return None
    raw = bytes(raw)
    header, body = raw[:8], raw[8:]
    if header == _UNICODE_HEADER:
        if body.startswith((b"\xfe\xff", b"\xff\xfe")):
            return body.decode("utf-16", errors="replace")
        # A1111/piexif write big-endian; ASCII text in little-endian has a
        # zero second byte, which is how we recognise the rare LE writers.
        little = len(body) >= 2 and body[0] != 0 and body[1] == 0
        return body.decode("utf-16-le" if little else "utf-16-be", errors="replace")
    if header == _ASCII_HEADER or header == b"\x00" * 8:
        return body.decode("utf-8", errors="replace").rstrip("\x00")
    return raw.decode("utf-8", errors="replace").rstrip("\x00")


def read_infotext(image: Image.Image) -> str | None:
    """Return the infotext stored in ``image`` (PNG ``parameters`` or EXIF UserComment)."""
    text = image.info.get(PNG_TEXT_KEY)
    if text is None:
        try:
            text = getattr(image, "text", {}).get(PNG_TEXT_KEY)
        except Exception:  # noqa: BLE001 - a broken trailing chunk means no text
            text = None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if isinstance(text, str):
        return text

    try:
        raw = image.getexif().get_ifd(ExifTags.IFD.Exif).get(USER_COMMENT_TAG)
    except Exception:  # noqa: BLE001 - malformed EXIF means no infotext
        return None
    return _decode_user_comment(raw) if raw is not None else None


def encode_png_base64(image: Image.Image, infotext: str | None) -> str:
    """Encode ``image`` as base64 PNG text, with ``infotext`` in the ``parameters`` chunk."""
    buffer = io.BytesIO()
    _write_image(image, buffer, "PNG", infotext or "")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


MAX_DECODED_PIXELS = 8192 * 8192  # images sent to the API larger than this are refused with a clear message


def decode_image_base64(data: str) -> Image.Image:
    """Decode base64 image data (optionally a ``data:image/...;base64,`` URL).

    Raises :class:`ValueError` ("could not decode image: ...") on invalid
    base64 or bytes that are not an image.
    """
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("ascii", errors="replace")
    if not isinstance(data, str):
        raise ValueError(f"could not decode image: expected a base64 string, got {type(data).__name__}")
    text = _RE_DATA_URL.sub("", data.strip(), count=1)
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)  # tolerate missing padding
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"could not decode image: invalid base64 ({exc})") from exc
    if not raw:
        raise ValueError("could not decode image: empty data")
    try:
        image = Image.open(io.BytesIO(raw))
    except UnidentifiedImageError:
        raise ValueError(f"could not decode image: the data ({len(raw):,} bytes) is not an image file "
                         "(PNG, JPEG, WEBP, ...)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        raise ValueError(f"could not decode image: {exc}") from exc
    width, height = image.size
    if width * height > MAX_DECODED_PIXELS:  # checked from the header, before the pixels take any memory
        raise ValueError(f"image too large: {width}x{height} is {width * height:,} pixels; the limit is "
                         f"{MAX_DECODED_PIXELS:,} (for example 8192x8192)")
    try:
        image.load()
        return normalise_mode(image)  # any mode Pillow opens (CMYK, 16-bit, palette...) as RGB, RGBA or L
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        raise ValueError(f"could not decode image: {exc}") from exc
