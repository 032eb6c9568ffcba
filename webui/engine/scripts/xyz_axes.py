"""X/Y/Z plot's axis types: A1111 1.10's, in its order and with its labels, each turning one value into a change
of a cell's request (a field, an override setting, the prompt).

An axis type arg is an index into the tab's list (`axes_for`), as A1111's: its built-in axes (txt2img and img2img
lists differ: Hires steps, Hires sampler and Hires upscaler are txt2img's, Image CFG Scale and Cond. Image Mask
Weight img2img's), then the ControlNet axes (what sd-webui-controlnet registers), then axes registered by A1111
extensions, then this server's own (Eta noise seed delta, FLUX.1's Distilled CFG Scale). A1111 axes whose setting this server lacks keep their
place (so A1111 clients' indexes stay right) but are refused with a message, and are not offered in the UI.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable

from ...core.request import GenerationRequest
from ...core.samplers import SAMPLER_NAMES, SCHEDULE_TYPES, SamplerError, resolve_name
from .xyz_values import ValueSyntaxError, expand_floats, expand_ints, split_values

BOTH = ("txt2img", "img2img")
TXT2IMG = ("txt2img",)
IMG2IMG = ("img2img",)
PERMUTATIONS = "permutations"  # the kind of "Prompt order": every order of the values


class AxisError(ValueError):
    """A value an axis cannot take (the caller names the axis)."""


@dataclass(frozen=True)
class Axis:
    """One axis type. `apply(ctx, request, value, values)` changes a cell's request; `confirm(ctx, request, values)`
    checks the values before any cell runs and returns them normalised (AxisError when one is bad); `choices(ctx)`
    the values a dropdown offers; `missing` says why this server has no such axis (empty: it has it)."""
    label: str
    kind: Any  # int, float, str or PERMUTATIONS
    apply: Callable | None
    modes: tuple[str, ...] = BOTH
    format: Callable[["Axis", Any], str] | None = None  # None: "Label: value"
    confirm: Callable | None = None
    cost: float = 0.0  # A1111's: the costliest axis to change (checkpoints, VAEs) is looped outermost
    choices: Callable | None = None
    missing: str = ""
    option: str = ""  # the setting an override axis changes (the axis is missing when this server has none)
    aliases: tuple[str, ...] = ()
    probe: bool = True  # check each value by applying it to a copy of the request and validating that

    def unavailable(self, ctx) -> str:
        """Why this server cannot plot this axis ("" when it can)."""
        if self.missing:
            return self.missing
        specs = getattr(getattr(ctx, "options", None), "specs", None)
        if self.option and specs is not None and self.option not in specs:
            return f"this server has no {self.option!r} setting"
        if self.option and specs is None:  # an options overlay: ask its base
            base = getattr(getattr(ctx, "options", None), "_base", None)
            if base is not None and self.option not in base.specs:
                return f"this server has no {self.option!r} setting"
        return ""

    def checked(self, ctx, request: GenerationRequest, values: list) -> list:
        """The values checked (AxisError when one is bad) and normalised."""
        return self.confirm(ctx, request, values) if self.confirm is not None else values

    def applied(self, ctx, request: GenerationRequest, value, values: list) -> None:
        """A cell's request changed for `value` (`values`: all the axis's, as A1111 passes them)."""
        self.apply(ctx, request, value, values)

    def cell_ready(self, ctx, request: GenerationRequest) -> None:
        """Called once a cell's request holds every axis's value and its seed: an axis keeping its own view of the
        request (an A1111 extension's `p`, xyz_bridge.ExtensionAxis) brings it up to date. The server's own keep
        none."""

    def offers(self, ctx) -> list[str] | None:
        return None if self.choices is None else [str(choice) for choice in self.choices(ctx)]

    def parse(self, text: str, chosen: list | None, csv_mode: bool, limit: int) -> list:
        """The axis's values from its text box (or its dropdown's choice, for axes with choices unless `csv_mode`).
        An axis with choices given only text (an API client) reads the text."""
        if self.label == "Nothing":
            return [0]
        if self.choices is not None and not csv_mode and chosen:
            items = [str(value).strip() for value in chosen]
        else:
            items = split_values(text)
        if self.kind is int:
            return expand_ints(items, limit)
        if self.kind is float:
            return expand_floats(items, limit)
        if self.kind == PERMUTATIONS:
            if math.factorial(len(items)) > limit:
                raise ValueSyntaxError(f"{len(items)} values have {math.factorial(len(items)):,} orders; at most "
                                       f"{limit:,} cells are allowed")
            return [list(order) for order in itertools.permutations(items)]
        return items

    def label_for(self, value) -> str:
        """The value's legend text (A1111's formats: floats rounded to 8 decimals)."""
        if isinstance(value, float):
            value = round(value, 8)
        if self.format is not None:
            return str(self.format(self, value))
        return f"{self.label}: {value}"


# --- formats (A1111's) ---------------------------------------------------------------------------------------------
def plain(axis: Axis, value) -> str:
    return str(value)


def nothing(axis: Axis, value) -> str:
    return ""


def joined(axis: Axis, value) -> str:
    return ", ".join(value)


def file_name(axis: Axis, value) -> str:
    return os.path.basename(str(value))


# --- applying a value ----------------------------------------------------------------------------------------------
def field(name: str) -> Callable:
    def apply(ctx, request: GenerationRequest, value, values) -> None:
        setattr(request, name, value)
    return apply


def set_override(request: GenerationRequest, key: str, value) -> None:
    """One override setting for this cell (a new dict: cells never share theirs)."""
    overrides = dict(request.extra.get("override_settings") or {})
    overrides[key] = value
    request.extra = {**request.extra, "override_settings": overrides}


def override(key: str, boolean: bool = False) -> Callable:
    def apply(ctx, request: GenerationRequest, value, values) -> None:
        set_override(request, key, str(value).strip().lower() == "true" if boolean else value)
    return apply


def _nothing(ctx, request, value, values) -> None:
    return None


def _prompt_sr(ctx, request: GenerationRequest, value, values) -> None:
    search = values[0]
    if search not in request.prompt and search not in request.negative_prompt:
        raise AxisError(f"Prompt S/R did not find {search} in prompt or negative prompt.")
    request.prompt = request.prompt.replace(search, value)
    request.negative_prompt = request.negative_prompt.replace(search, value)


def _prompt_order(ctx, request: GenerationRequest, value, values) -> None:
    """The tokens (each found in the prompt) put back in the order `value` gives, where the tokens stood."""
    rest = request.prompt
    parts = []
    for _, token in sorted((rest.find(token), token) for token in value):
        at = rest.find(token)
        parts.append(rest[:at])
        rest = rest[at + len(token):]
    request.prompt = "".join(part + token for part, token in zip(parts, value)) + rest


def _checkpoint(ctx, request: GenerationRequest, value, values) -> None:
    request.checkpoint = ctx.models.resolve(str(value)).title


def _refiner(ctx, request: GenerationRequest, value, values) -> None:
    request.refiner_checkpoint = None if _no_checkpoint(value) else ctx.models.resolve(str(value)).title


def _vae(ctx, request: GenerationRequest, value, values) -> None:
    set_override(request, "sd_vae", _vae_setting(ctx, value))


def _styles(ctx, request: GenerationRequest, value, values) -> None:
    ctx.apply_styles(request, _style_names(value))


def _unipc_order(ctx, request: GenerationRequest, value, values) -> None:
    set_override(request, "uni_pc_order", max(1, min(int(value), request.steps - 1)))


def _size(ctx, request: GenerationRequest, value, values) -> None:
    request.width, request.height = _parse_size(value)


def _face_restore(ctx, request: GenerationRequest, value, values) -> None:
    """A1111's: CodeFormer or GFPGAN turns restoration on with that model; true / yes / y / 1 on; anything else off."""
    choice = str(value).strip().lower()
    if choice in ("codeformer", "gfpgan"):
        set_override(request, "face_restoration_model", "CodeFormer" if choice == "codeformer" else "GFPGAN")
    request.restore_faces = choice in ("codeformer", "gfpgan", "true", "yes", "y", "1")


def _clip_skip(ctx, request: GenerationRequest, value, values) -> None:
    request.clip_skip = int(value)


# --- checking values -----------------------------------------------------------------------------------------------
def _confirm_samplers(ctx, request, values: list) -> list:
    for value in values:
        try:
            resolve_name(str(value))
        except SamplerError:
            raise AxisError(f"Unknown sampler: {value}") from None
    return values


def _confirm_schedules(ctx, request, values: list) -> list:
    out = []
    for value in values:
        wanted = str(value).strip().lower().replace("_", " ")
        match = next((s.label for s in SCHEDULE_TYPES
                      if wanted in (s.label.lower(), s.name.replace("_", " "), *(a.lower() for a in s.aliases))), None)
        if match is None:
            raise AxisError(f"Unknown schedule type: {value} (one of: {', '.join(s.label for s in SCHEDULE_TYPES)})")
        out.append(match)
    return out


def _no_checkpoint(value) -> bool:
    return value is None or str(value).strip() in ("", "None", "none")


def _confirm_checkpoints(ctx, request, values: list, allow_none: bool = False) -> list:
    from ...models.registry import UnknownCheckpointError
    for value in values:
        if allow_none and _no_checkpoint(value):
            continue
        try:
            ctx.models.resolve(str(value))
        except UnknownCheckpointError:
            raise AxisError(f"Unknown checkpoint: {value}") from None
    return values


def _vae_setting(ctx, value) -> str:
    name = str(value).strip()
    if name.lower() in ("auto", "automatic"):
        return "Automatic"
    if name.lower() == "none":
        return "None"
    found = ctx.models.vaes.find(name) if ctx.models is not None and ctx.models.vaes is not None else None
    if found is None:
        raise AxisError(f"Unknown VAE: {value}")
    return found.name


def _confirm_vaes(ctx, request, values: list) -> list:
    for value in values:
        _vae_setting(ctx, value)
    return values


def _style_names(value) -> list[str]:
    return [name.strip() for name in str(value).split(",") if name.strip()]


def _confirm_styles(ctx, request, values: list) -> list:
    known = set(_style_choices(ctx))
    for value in values:
        for name in _style_names(value):
            if name not in known:
                raise AxisError(f"Unknown style: {name} (styles: {', '.join(sorted(known)) or 'none'})")
    return values


def _confirm_booleans(ctx, request, values: list) -> list:
    for value in values:
        if str(value).strip().lower() not in ("true", "false"):
            raise AxisError(f"{value!r} is neither True nor False")
    return [str(value).strip().capitalize() for value in values]


def _confirm_upscalers(ctx, request, values: list) -> list:
    from ..hires import LATENT_UPSCALE_MODES
    out = []
    for value in values:
        if value in LATENT_UPSCALE_MODES:
            out.append(value)
            continue
        try:
            if ctx.upscalers is None:
                raise ValueError
            out.append(ctx.upscalers.find(str(value)).name)
        except ValueError:
            raise AxisError(f"Unknown hires upscaler: {value} (one of: "
                            f"{', '.join(_upscaler_choices(ctx))})") from None
    return out


def _confirm_rng(ctx, request, values: list) -> list:
    out = []
    for value in values:
        if str(value).strip().upper() not in ("GPU", "CPU", "NV"):
            raise AxisError(f"Unknown RNG source: {value} (one of: GPU, CPU, NV)")
        out.append(str(value).strip().upper())
    return out


def _confirm_prompt_sr(ctx, request: GenerationRequest, values: list) -> list:
    if values and values[0] not in request.prompt and values[0] not in request.negative_prompt:
        raise AxisError(f"Prompt S/R did not find {values[0]} in prompt or negative prompt.")
    return values


def _confirm_prompt_order(ctx, request: GenerationRequest, values: list) -> list:
    for token in (values[0] if values else []):
        if token not in request.prompt:
            raise AxisError(f"Prompt order did not find {token} in the prompt.")
    return values


def _parse_size(value) -> tuple[int, int]:
    width, _, height = str(value).lower().partition("x")
    try:
        return int(width.strip()), int(height.strip())
    except ValueError:
        raise AxisError(f"Invalid size {value!r} (write it as WIDTHxHEIGHT, such as 512x768)") from None


def _confirm_sizes(ctx, request, values: list) -> list:
    for value in values:
        _parse_size(value)
    return values


# --- choices -------------------------------------------------------------------------------------------------------
def _samplers(ctx) -> list[str]:
    return [sampler.name for sampler in SAMPLER_NAMES]


def _checkpoint_titles(ctx) -> list[str]:
    return sorted((info.title for info in ctx.models.checkpoints()), key=str.casefold) if ctx.models else []


def _vae_choices(ctx) -> list[str]:
    names = ctx.models.vaes.names() if ctx.models is not None and ctx.models.vaes is not None else []
    return ["Automatic", "None", *names]


def _style_choices(ctx) -> list[str]:
    styles = ctx.extra.get("styles")
    return list(styles.names()) if styles is not None else []


def _upscaler_choices(ctx) -> list[str]:
    from ..hires import LATENT_UPSCALE_MODES
    names = [name for name in (ctx.upscalers.names() if ctx.upscalers is not None else []) if name != "None"]
    return [*LATENT_UPSCALE_MODES, *names]


def _has_field(name: str) -> bool:
    return name in {f.name for f in fields(GenerationRequest)}


_NO_PIX2PIX = "this server does not run instruct-pix2pix checkpoints (their Image CFG Scale)"


def builtin_axes() -> list[Axis]:
    """A1111 1.10's `axis_options`, in its order (both tabs' entries; `Axis.modes` says which tab has one)."""
    refiner = "" if _has_field("refiner_checkpoint") else "this server has no refiner"
    return [
        Axis("Nothing", str, _nothing, format=nothing, probe=False),
        Axis("Seed", int, field("seed")),
        Axis("Var. seed", int, field("subseed")),
        Axis("Var. strength", float, field("subseed_strength")),
        Axis("Steps", int, field("steps")),
        Axis("Hires steps", int, field("hr_second_pass_steps"), TXT2IMG),
        Axis("CFG Scale", float, field("cfg_scale")),
        Axis("Image CFG Scale", float, None, IMG2IMG, missing=_NO_PIX2PIX),
        Axis("Prompt S/R", str, _prompt_sr, format=plain, confirm=_confirm_prompt_sr),
        Axis("Prompt order", PERMUTATIONS, _prompt_order, format=joined, confirm=_confirm_prompt_order),
        Axis("Sampler", str, field("sampler_name"), TXT2IMG, format=plain, confirm=_confirm_samplers,
             choices=_samplers),
        Axis("Hires sampler", str, field("hr_sampler_name"), TXT2IMG, confirm=_confirm_samplers, choices=_samplers),
        Axis("Sampler", str, field("sampler_name"), IMG2IMG, format=plain, confirm=_confirm_samplers,
             choices=_samplers),
        Axis("Checkpoint name", str, _checkpoint, format=file_name, confirm=_confirm_checkpoints, cost=1.0,
             choices=_checkpoint_titles),
        Axis("Negative Guidance minimum sigma", float, None,
             missing="this server has no negative guidance minimum sigma (s_min_uncond)"),
        Axis("Sigma Churn", float, field("s_churn")),
        Axis("Sigma min", float, field("s_tmin")),
        Axis("Sigma max", float, field("s_tmax")),
        Axis("Sigma noise", float, field("s_noise")),
        Axis("Schedule type", str, field("scheduler"), confirm=_confirm_schedules,
             choices=lambda ctx: [s.label for s in SCHEDULE_TYPES]),
        Axis("Schedule min sigma", float, override("sigma_min"), option="sigma_min"),
        Axis("Schedule max sigma", float, override("sigma_max"), option="sigma_max"),
        Axis("Schedule rho", float, override("rho"), option="rho"),
        Axis("Skip Early CFG", float, None, missing="this server has no 'Skip CFG on early steps' setting"),
        Axis("Beta schedule alpha", float, override("beta_dist_alpha"), option="beta_dist_alpha"),
        Axis("Beta schedule beta", float, override("beta_dist_beta"), option="beta_dist_beta"),
        Axis("Eta", float, field("eta")),
        Axis("Clip skip", int, _clip_skip),
        Axis("Denoising", float, field("denoising_strength")),
        Axis("Initial noise multiplier", float, field("initial_noise_multiplier")),
        Axis("Extra noise", float, override("img2img_extra_noise"), option="img2img_extra_noise"),
        Axis("Hires upscaler", str, field("hr_upscaler"), TXT2IMG, confirm=_confirm_upscalers,
             choices=_upscaler_choices),
        Axis("Cond. Image Mask Weight", float, override("inpainting_mask_weight"), IMG2IMG,
             option="inpainting_mask_weight"),
        Axis("VAE", str, _vae, cost=0.7, confirm=_confirm_vaes, choices=_vae_choices, option="sd_vae"),
        Axis("Styles", str, _styles, confirm=_confirm_styles, choices=_style_choices),
        Axis("UniPC Order", int, _unipc_order, cost=0.5, option="uni_pc_order"),
        Axis("Face restore", str, _face_restore, format=plain, option="face_restoration_model",
             missing="" if _has_field("restore_faces") else "this server has no face restoration"),
        Axis("Token merging ratio", float, None, missing="this server has no token merging"),
        Axis("Token merging ratio high-res", float, None, missing="this server has no token merging"),
        Axis("Always discard next-to-last sigma", str, override("always_discard_next_to_last_sigma", boolean=True),
             confirm=_confirm_booleans, choices=lambda ctx: ["False", "True"],
             option="always_discard_next_to_last_sigma"),
        Axis("SGM noise multiplier", str, override("sgm_noise_multiplier", boolean=True), confirm=_confirm_booleans,
             choices=lambda ctx: ["False", "True"], option="sgm_noise_multiplier"),
        Axis("Refiner checkpoint", str, _refiner, format=file_name, cost=1.0, missing=refiner,
             confirm=lambda ctx, request, values: _confirm_checkpoints(ctx, request, values, allow_none=True),
             choices=lambda ctx: ["None", *_checkpoint_titles(ctx)]),
        Axis("Refiner switch at", float, field("refiner_switch_at"), missing=refiner),
        Axis("RNG source", str, override("randn_source"), confirm=_confirm_rng,
             choices=lambda ctx: ["GPU", "CPU", "NV"], option="randn_source"),
        Axis("FP8 mode", str, None, cost=0.9, missing="this server has no FP8 weight storage",
             choices=lambda ctx: ["Disable", "Enable for SDXL", "Enable"]),
        Axis("Size", str, _size, confirm=_confirm_sizes),
    ]


def server_axes() -> list[Axis]:
    """This server's own axes, after everything A1111 and its extensions list."""
    return [Axis("Eta noise seed delta", int, override("eta_noise_seed_delta"), option="eta_noise_seed_delta",
                 aliases=("ENSD",)),
            # Forge's label; appended here rather than beside CFG Scale, so A1111 clients' indexes stay right
            Axis("Distilled CFG Scale", float, field("distilled_cfg_scale"))]
