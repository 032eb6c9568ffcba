"""File and folder names of saved images from A1111's patterns (`samples_filename_pattern`,
`directories_filename_pattern`): `[seed]`, `[prompt_words]`, `[date]`, `[datetime<%Y%m%d><Europe/Paris>]`, ...

`apply_pattern(pattern, ctx)` replaces the tags A1111 knows (case-insensitive) with the image's values; a tag it does
not know stays as written (`[foo]`), as in A1111. Tag values are file-name safe (`sanitize_part`); what the whole
pattern makes is made safe again for the disk (`safe_stem` for a file, `safe_subdir` for a folder): no path
separators (a folder pattern's own `/` nests folders, but every part stays inside the output folder), no `.` / `..`
parts, none of the characters Windows refuses, no Windows device names (`CON`, `NUL`, `COM1`, ...), no trailing dots
or spaces, and a length cap. `plan(folder, ctx, options, extension)` gives where an image goes and how it is named
(A1111's rules: a number prefix `NNNNN-` unless `save_images_add_number` is off; `save_to_dirs` puts it in the
folder the directory pattern names). The defaults give `outdir/YYYY-MM-DD/NNNNN-SEED.ext`.
"""
from __future__ import annotations

import hashlib
import os
import re
import string
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["NameContext", "apply_pattern", "sanitize_part", "safe_stem", "safe_subdir", "plan", "TAGS",
           "context_from_infotext"]

INVALID_CHARS = '#<>:"/\\|?*\n\r\t'  # A1111's `invalid_filename_chars`
MAX_PART_LENGTH = 128  # A1111's `max_filename_part_length`: one tag's value
MAX_DIR_PART_LENGTH = 128  # one folder name a directory pattern makes
NAME_MAX_BYTES = 255  # most file systems' limit of one name (ext4, NTFS in UTF-16 units, APFS)
DEFAULT_TIME_FORMAT = "%Y%m%d%H%M%S"
_CONTROL = {c: "_" for c in range(32)}
_UNSAFE = {**_CONTROL, **{ord(c): "_" for c in INVALID_CHARS}}
_RE_NONLETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + "]+")
_RE_PATTERN = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)", re.DOTALL)
_RE_PATTERN_ARG = re.compile(r"(.*)<([^>]*)>$", re.DOTALL)
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", *(f"COM{i}" for i in range(10)),
                     *(f"LPT{i}" for i in range(10)), "COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"}
_SKIP = object()  # A1111's NOTHING_AND_SKIP_PREVIOUS_TEXT: the tag and the literal text before it vanish


@dataclass
class NameContext:
    """What the tags of one saved image read. Values the saver does not know stay None (their tags give "")."""
    seed: int | None = None
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = field(default_factory=list)
    style_prompts: list[str] = field(default_factory=list)  # the chosen styles' prompt texts ([prompt_no_styles])
    model_name: str = ""
    model_hash: str = ""
    sampler: str = ""
    scheduler: str = ""
    cfg: Any = None
    steps: Any = None
    width: int | None = None
    height: int | None = None
    clip_skip: Any = None
    denoising: Any = None  # None or 0: [denoising] gives nothing (and drops the text before it), as A1111
    vae: str = ""  # the VAE's file name, "" when the checkpoint's own
    batch_size: int = 1
    n_iter: int = 1
    batch_index: int = 0
    iteration: int = 0
    all_seeds: list[int] = field(default_factory=list)
    job_timestamp: str = ""
    user: str = ""
    image: Any = None  # the PIL image ([image_hash], [width], [height])
    now: datetime | None = None
    max_prompt_words: int = 8  # the `directories_max_prompt_words` option


def sanitize_part(text, replace_spaces: bool = True) -> str:
    """A tag's value as part of a name (A1111's `sanitize_filename_part`): spaces to `_` (unless told), the
    characters file systems refuse and control characters to `_`, no leading spaces, at most 128 characters, no
    trailing spaces or dots."""
    if text is None:
        return ""
    text = str(text)
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate(_UNSAFE).lstrip(" ")[:MAX_PART_LENGTH]
    return text.rstrip(" .")


def _windows_safe(name: str) -> str:
    """`name` with a Windows device name (`CON`, `nul.txt`, `COM1`) prefixed with `_`, trailing dots and spaces
    gone (Windows drops them, so two names would meet)."""
    name = name.rstrip(" .")
    if name.split(".", 1)[0].strip().upper() in _WINDOWS_RESERVED:
        name = "_" + name
    return name


def _cut_bytes(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:max(limit, 0)].decode("utf-8", errors="ignore")


def safe_stem(text: str, limit: int = NAME_MAX_BYTES) -> str:
    """A file name (without extension) from what a pattern made: separators, refused and control characters to
    `_`, no leading dots or spaces (so never `..` nor a hidden file), Windows-safe, at most `limit` bytes."""
    text = str(text).translate(_UNSAFE).lstrip(" .")
    return _windows_safe(_cut_bytes(text, limit)).rstrip(" .")


def safe_subdir(text: str) -> Path:
    """A relative folder from what a directory pattern made: its `/` or `\\` nest folders; each part made safe as a
    name (no `.` or `..` parts, nothing absolute, at most 128 characters); Path("") when nothing is left."""
    parts = []
    for part in re.split(r"[/\\]+", str(text)):
        part = part.translate(_UNSAFE).strip(" ")[:MAX_DIR_PART_LENGTH]
        part = _windows_safe(part).lstrip(".")
        if part:
            parts.append(part)
    return Path(*parts) if parts else Path("")


# --- tags ---------------------------------------------------------------------------------------------------------
def _datetime(ctx: NameContext, time_format: str = "", zone: str = "") -> str:
    now = ctx.now or datetime.now()
    try:
        now = now.astimezone(ZoneInfo(zone)) if zone else now
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass  # an unknown zone: the server's time, as A1111
    try:
        text = now.strftime(time_format or DEFAULT_TIME_FORMAT)
    except (ValueError, TypeError):
        text = now.strftime(DEFAULT_TIME_FORMAT)
    return sanitize_part(text, replace_spaces=False)


def _prompt_words(ctx: NameContext) -> str:
    words = [word for word in _RE_NONLETTERS.split(ctx.prompt or "") if word] or ["empty"]
    return sanitize_part(" ".join(words[:max(int(ctx.max_prompt_words), 1)]), replace_spaces=False)


def _prompt_no_styles(ctx: NameContext) -> str:
    """The prompt without the chosen styles' text (A1111's): each style's parts around `{prompt}` removed."""
    prompt = ctx.prompt or ""
    for style in ctx.style_prompts:
        if not style:
            continue
        for part in style.split("{prompt}"):
            if part:
                prompt = prompt.replace(part, "").replace(", ,", ",").strip().strip(",")
        prompt = prompt.replace(style, "").strip().strip(",").strip()
    return sanitize_part(prompt, replace_spaces=False)


def _hasprompt(ctx: NameContext, *args: str) -> str:
    """`[hasprompt<castle|no-castle><night>]`: each word that is in the prompt (else its default after `|`)."""
    lower = (ctx.prompt or "").lower()
    found = ""
    for arg in args:
        if not arg:
            continue
        expected, _, default = arg.partition("|")
        expected = expected.lower()
        found += expected if expected in lower else default
    return sanitize_part(found)


def _hash(text: str, *args: str) -> str:
    length = int(args[0]) if args and args[0].isdigit() else 8
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _image_hash(ctx: NameContext, *args: str) -> str:
    if ctx.image is None:
        return ""
    length = int(args[0]) if args and args[0].isdigit() else None
    return hashlib.sha256(ctx.image.tobytes()).hexdigest()[:length]


def _size(ctx: NameContext, index: int):
    if ctx.image is not None:
        return ctx.image.size[index]
    return ctx.width if index == 0 else ctx.height


def _vae_filename(ctx: NameContext) -> str:
    name = os.path.basename(ctx.vae or "")
    if not name:
        return "None"
    pieces = name.split(".")
    return sanitize_part(pieces[1] if len(pieces) > 1 and pieces[0] == "" else pieces[0], replace_spaces=False)


def _number(value):
    """A number as A1111 writes it (7.0 stays 7.0); "" when unknown."""
    return "" if value is None else value


TAGS: dict[str, Callable[..., Any]] = {
    "seed": lambda ctx: "" if ctx.seed is None else str(ctx.seed),
    "seed_first": lambda ctx: ctx.all_seeds[0] if ctx.all_seeds else _number(ctx.seed),
    "seed_last": lambda ctx: _SKIP if ctx.batch_size == 1 or not ctx.all_seeds else ctx.all_seeds[-1],
    "steps": lambda ctx: _number(ctx.steps),
    "cfg": lambda ctx: _number(ctx.cfg),
    "width": lambda ctx: _number(_size(ctx, 0)),
    "height": lambda ctx: _number(_size(ctx, 1)),
    "styles": lambda ctx: sanitize_part(", ".join(s for s in ctx.styles if s != "None") or "None",
                                        replace_spaces=False),
    "sampler": lambda ctx: sanitize_part(ctx.sampler, replace_spaces=False),
    "scheduler": lambda ctx: sanitize_part(ctx.scheduler, replace_spaces=False),
    "sampler_scheduler": lambda ctx: sanitize_part(f"{ctx.sampler} {ctx.scheduler}".strip(), replace_spaces=False),
    "model_hash": lambda ctx: sanitize_part(ctx.model_hash),
    "model_name": lambda ctx: sanitize_part(ctx.model_name, replace_spaces=False),
    "date": lambda ctx: (ctx.now or datetime.now()).strftime("%Y-%m-%d"),
    "datetime": _datetime,
    "job_timestamp": lambda ctx: ctx.job_timestamp or (ctx.now or datetime.now()).strftime(DEFAULT_TIME_FORMAT),
    "prompt_hash": lambda ctx, *args: _hash(ctx.prompt or "", *args),
    "negative_prompt_hash": lambda ctx, *args: _hash(ctx.negative_prompt or "", *args),
    "full_prompt_hash": lambda ctx, *args: _hash(f"{ctx.prompt or ''} {ctx.negative_prompt or ''}", *args),
    "prompt": lambda ctx: sanitize_part(ctx.prompt),
    "prompt_no_styles": _prompt_no_styles,
    "prompt_spaces": lambda ctx: sanitize_part(ctx.prompt, replace_spaces=False),
    "prompt_words": _prompt_words,
    "batch_number": lambda ctx: _SKIP if ctx.batch_size == 1 else ctx.batch_index + 1,
    "batch_size": lambda ctx: ctx.batch_size,
    "generation_number": lambda ctx: (_SKIP if ctx.n_iter == 1 and ctx.batch_size == 1
                                      else ctx.iteration * ctx.batch_size + ctx.batch_index + 1),
    "hasprompt": _hasprompt,
    "clip_skip": lambda ctx: _number(ctx.clip_skip),
    "denoising": lambda ctx: ctx.denoising if ctx.denoising else _SKIP,
    "user": lambda ctx: sanitize_part(ctx.user),
    "vae_filename": _vae_filename,
    "none": lambda ctx: "",  # just the number
    "image_hash": _image_hash,
}


def apply_pattern(pattern: str, ctx: NameContext) -> str:
    """`pattern` with its tags replaced (A1111's `FilenameGenerator.apply`): `[tag]`, `[tag<arg>]`,
    `[tag<arg1><arg2>]`; a tag that is unknown, or whose value cannot be had, stays as written."""
    result = ""
    for match in _RE_PATTERN.finditer(pattern or ""):
        text, tag = match.groups()
        if tag is None:
            result += text
            continue
        name, args = tag, []
        while (arg := _RE_PATTERN_ARG.match(name)) is not None:
            name, value = arg.groups()
            args.insert(0, value)
        function = TAGS.get(name.lower())
        if function is not None:
            try:
                value = function(ctx, *args)
            except (TypeError, ValueError, AttributeError, IndexError):  # wrong arguments: left as written
                value = None
            if value is _SKIP:
                continue
            if value is not None:
                result += text + str(value)
                continue
        result += f"{text}[{tag}]"
    return result


# --- where an image goes ------------------------------------------------------------------------------------------
def _option(options, key: str, default):
    if options is None:
        return default
    try:
        value = options.get(key)
    except KeyError:
        return default
    return default if value is None else value


def _name_limit(folder: Path, extension: str) -> int:
    """Bytes left for a name's stem in `folder`: the file system's limit (255 when unknown), less the extension and
    room for a `-N` that avoids an existing name."""
    limit = NAME_MAX_BYTES
    if hasattr(os, "statvfs"):
        try:
            limit = min(limit, os.statvfs(folder).f_namemax)
        except OSError:
            pass
    return limit - len(extension.encode("utf-8")) - 1 - 8


def plan(folder: str | Path, ctx: NameContext, options=None, *, extension: str = "png", grid: bool = False,
         basename: str = "") -> tuple[Path, Callable[[Path], int] | None, Callable[[int], str]]:
    """(the folder, the number to start at or None, name(number)) for one saved image, by A1111's rules:
    the folder the directory pattern names under `folder` when `save_to_dirs` (`grid_save_to_dirs` for grids) is
    on; the file named `NNNNN-<pattern>` (`<basename>-NNNN-<pattern>` for grids: `grid-0001`), or just
    `<pattern>` when `save_images_add_number` is off. Grids carry the pattern only with `grid_extended_filename`.
    Without a number, an existing name gets `-1`, `-2`, ...: nothing is ever overwritten. The caller numbers with
    `first_number(folder)` (None: start at 0)."""
    folder = Path(folder)
    ctx.max_prompt_words = int(_option(options, "directories_max_prompt_words", 8))
    to_dirs = bool(_option(options, "grid_save_to_dirs" if grid else "save_to_dirs", True))
    if to_dirs:
        sub = safe_subdir(apply_pattern(str(_option(options, "directories_filename_pattern", "[date]"))
                                        or "[prompt_words]", ctx))
        candidate = folder / sub
        if os.path.normpath(candidate).startswith(os.path.normpath(folder)):  # always, by construction
            folder = candidate
    if grid and not _option(options, "grid_extended_filename", False):
        pattern = ""
    elif _option(options, "save_to_dirs", True):
        pattern = str(_option(options, "samples_filename_pattern", "")) or "[seed]"
    else:
        pattern = str(_option(options, "samples_filename_pattern", "")) or "[seed]-[prompt_spaces]"
    decoration = apply_pattern(pattern, ctx) if pattern else ""
    add_number = bool(_option(options, "save_images_add_number", True)) or not decoration or grid
    os.makedirs(folder, exist_ok=True)
    limit = _name_limit(folder, extension)

    if add_number:
        def name(number: int) -> str:
            prefix = f"{basename}-{number:04d}" if basename else f"{number:05d}"
            rest = safe_stem(decoration, limit - len(prefix) - 1) if decoration else ""
            return f"{prefix}-{rest}" if rest else prefix
        return folder, None, name
    stem = safe_stem(decoration, limit) or "_"

    def free(number: int) -> str:
        return stem if number == 0 else f"{stem}-{number}"
    return folder, (lambda _folder: 0), free


# --- what the engine knows of an image ----------------------------------------------------------------------------
def context_from_infotext(infotext: str, **known) -> NameContext:
    """A NameContext from an image's infotext (its prompt, model, sampler, ... as they really were), with `known`
    values (seed, styles, batch position, image, now, ...) set over it."""
    from .infotext import parse_infotext

    params = parse_infotext(infotext or "") if infotext else {}

    def value(key: str):
        return params.get(key) if key in params else None

    ctx = NameContext(
        prompt=str(params.get("Prompt", "") or ""), negative_prompt=str(params.get("Negative prompt", "") or ""),
        model_name=str(value("Model") or ""), model_hash=str(value("Model hash") or ""),
        sampler=str(value("Sampler") or ""), scheduler=str(value("Schedule type") or ""),
        cfg=value("CFG scale"), steps=value("Steps"), clip_skip=value("Clip skip") or 1,
        denoising=value("Denoising strength"), vae=str(value("VAE") or ""))
    seed = value("Seed")
    if seed is not None:
        try:
            ctx.seed = int(seed)
        except (TypeError, ValueError):
            pass
    for key, item in known.items():
        if item is not None and hasattr(ctx, key):
            setattr(ctx, key, item)
    return ctx
