"""The line syntax of A1111's "Prompts from file or textbox": a line is a prompt, or (when it starts with `--`)
shell-quoted options such as `--prompt "a cat" --steps 10 --sampler_name "Euler a"`. The options and their types are
A1111's `prompt_tags`; `--prompt` and `--negative_prompt` take every word up to the next `--` option.

Unlike A1111, which logs a line it cannot read and uses it as a prompt, a bad option line is refused (a 422 naming
the line and what is wrong), so a typo never silently generates the wrong pictures.
"""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field

from ...core.errors import RequestError, UserError
from ...core.request import GenerationRequest
from ...core.samplers import SAMPLER_NAMES, resolve_name
from .arg_checks import FIELD

TITLE = "Prompts from file or textbox"

# A1111's prompt_tags, in its order, with the type of each value.
TAGS: dict[str, str] = {
    "sd_model": "checkpoint", "outpath_samples": "path", "outpath_grids": "path", "prompt_for_display": "str",
    "prompt": "str", "negative_prompt": "str", "styles": "str", "seed": "int", "subseed_strength": "float",
    "subseed": "int", "seed_resize_from_h": "int", "seed_resize_from_w": "int", "sampler_index": "int",
    "sampler_name": "str", "batch_size": "int", "n_iter": "int", "steps": "int", "cfg_scale": "float",
    "width": "int", "height": "int", "restore_faces": "bool", "tiling": "bool", "do_not_save_samples": "bool",
    "do_not_save_grid": "bool",
}
_MULTI_WORD = ("prompt", "negative_prompt")
# Fields of the request a tag sets as it is (after its type is checked).
_PLAIN_FIELDS = ("seed", "subseed_strength", "subseed", "seed_resize_from_h", "seed_resize_from_w", "batch_size",
                 "n_iter", "steps", "cfg_scale", "width", "height", "tiling")


@dataclass
class PromptLine:
    number: int  # 1-based, counting the non-empty lines
    text: str
    options: dict = field(default_factory=dict)  # tag -> typed value (a plain prompt line: {"prompt": text})

    def error(self, message: str) -> RequestError:
        return RequestError(FIELD, f"{TITLE}: line {self.number} ({_short(self.text)}): {message}")


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")


def read_lines(text: str) -> list[PromptLine]:
    """The non-empty lines of `text`, each read (RequestError naming the first bad one)."""
    lines = [line.strip() for line in str(text or "").splitlines()]
    return [parse_line(number, line) for number, line in enumerate((line for line in lines if line), start=1)]


def parse_line(number: int, text: str) -> PromptLine:
    line = PromptLine(number, text)
    if not text.startswith("--"):
        line.options = {"prompt": text}
        return line
    try:
        words = shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise line.error(f"cannot be read as options ({exc})") from None
    position = 0
    while position < len(words):
        word = words[position]
        if not word.startswith("--"):
            raise line.error(f"expected an option starting with \"--\", got {word!r}")
        tag = word[2:]
        if tag not in TAGS:
            raise line.error(f"unknown option {word} (the options are: {', '.join('--' + t for t in TAGS)})")
        if position + 1 >= len(words):
            raise line.error(f"option {word} has no value")
        if tag in _MULTI_WORD:
            position += 1
            taken = [words[position]]
            position += 1
            while position < len(words) and not words[position].startswith("--"):
                taken.append(words[position])
                position += 1
            line.options[tag] = " ".join(taken)
            continue
        line.options[tag] = _typed(line, tag, words[position + 1])
        position += 2
    return line


def _typed(line: PromptLine, tag: str, value: str):
    kind = TAGS[tag]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise line.error(f"--{tag} needs {'a whole number' if kind == 'int' else 'a number'}, got {value!r}") \
            from None
    if kind == "bool":
        if value.lower() not in ("true", "false"):
            raise line.error(f"--{tag} needs true or false, got {value!r}")
        return value.lower() == "true"
    if kind == "path":
        raise line.error(f"--{tag} is not accepted here: output folders are set in Settings (Paths for saving)")
    if kind == "checkpoint" and not value.strip():
        raise line.error("--sd_model needs a checkpoint's name")
    return value


def line_request(request: GenerationRequest, line: PromptLine, position: str) -> GenerationRequest:
    """The request of one line: the job's, with the line's options; the line's prompt (and negative prompt) put
    before or after the job's (`position` "start" / "end") when both have one, as A1111. Checkpoint and styles are
    left to `resolve_names` (they need the server's lists). RequestError naming the line for a bad value."""
    options = line.options
    changes = {name: options[name] for name in _PLAIN_FIELDS if name in options}
    for name in _MULTI_WORD:
        if name not in options:
            continue
        own, theirs = options[name], getattr(request, name)
        changes[name] = (f"{own} {theirs}" if position == "start" else f"{theirs} {own}") if own and theirs else own
    if "restore_faces" in options:
        changes["restore_faces"] = options["restore_faces"]
    if options.get("do_not_save_samples"):
        changes["save_images"] = False
    try:
        if "sampler_index" in options:
            index = options["sampler_index"]
            if not 0 <= index < len(SAMPLER_NAMES):
                raise line.error(f"--sampler_index must be 0..{len(SAMPLER_NAMES) - 1} (A1111's sampler list: "
                                 f"{', '.join(s.name for s in SAMPLER_NAMES)}), got {index}")
            changes["sampler_name"] = SAMPLER_NAMES[index].name
        if "sampler_name" in options:
            changes["sampler_name"] = resolve_name(options["sampler_name"], request.scheduler)[0].name
        return dataclasses.replace(request, **changes).validate()
    except RequestError as exc:
        if str(exc).startswith(f"{TITLE}: line"):
            raise
        raise line.error(str(exc)) from None


def resolve_names(inner: GenerationRequest, line: PromptLine, models, apply_styles) -> GenerationRequest:
    """The line's checkpoint (`--sd_model`, any name the checkpoint dropdown or API accepts) and styles
    (`--styles "a, b"`: style names, comma-separated, applied to the line's prompts)."""
    try:
        if line.options.get("sd_model") and models is not None:
            inner.checkpoint = models.resolve(str(line.options["sd_model"])).title
        if line.options.get("styles"):
            names = [name.strip() for name in str(line.options["styles"]).split(",") if name.strip()]
            apply_styles(inner, names)
            inner.check_prompts()
    except UserError as exc:
        if str(exc).startswith(f"{TITLE}: line"):
            raise
        raise line.error(str(exc)) from None
    return inner
