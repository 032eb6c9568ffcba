"""Handlers of the txt2img and img2img tabs: plain functions of the services and the tab's values.

`generate` is a generator Gradio streams: it queues a `GenerationRequest` and yields the tab's outputs
(see `OUTPUTS`) while polling the job, first its queue place, then the progress bar, at last the images.
"""
from __future__ import annotations

import html
from typing import Any, Iterator

import gradio as gr

from ..core.errors import RequestError
from ..core.request import (INPAINT_AREAS, INPAINT_FILLS, MASK_MODES, RESIZE_MODES, FolderBatch, GenerationRequest,
                            Outpaint)
from ..engine.preview import preview_every
from ..jobs.queue import DONE, RUNNING
from ..outputs.infotext import parse_infotext
from . import canvas, notices
from .controlnet import units_from_values
from .hires_inputs import apply_hires
from .refiner_inputs import apply_refiner
from .override_settings import to_overrides
from .progress import preview_html, progress_html, updates_until_done, warnings_html


# What `generate` yields, in this order. The live preview is shown over the gallery (never in it, so the send buttons
# only ever see finished images); the warnings stay under the gallery until the next run ends.
OUTPUTS = ("state", "progress", "gallery", "infotext", "generate", "interrupt", "skip", "live_preview", "warnings")


def new_state() -> dict:
    """A tab's memory within one browser session: its job and what the last run made."""
    return {"job_id": None, "seeds": [], "subseeds": [], "subseed_strength": 0.0, "first": 0, "infotexts": [],
            "selected": 0, "elapsed": 0.0, "maps": 0}


def infotext_html(infotext: str, elapsed: float | None = None) -> str:
    if not infotext:
        return ""
    body = "<br>".join(html.escape(line) for line in infotext.split("\n"))
    took = f'<p class="time">Time taken: {elapsed:.2f}s</p>' if elapsed else ""
    return f'<div class="infotext"><p>{body}</p>{took}</div>'


# The img2img tab's own values after the shared ones, in this order (`img2img_inputs.Img2ImgInputs` names them).
IMG2IMG_FIELDS = ("img2img_mode", "image", "sketch", "inpaint", "inpaint_sketch", "inpaint_base", "inpaint_mask",
                  "batch_input_dir", "batch_output_dir", "batch_mask_dir", "denoising_strength", "resize_mode",
                  "mask_blur", "mask_mode", "inpainting_fill", "inpaint_area", "inpaint_padding", "outpaint_enable",
                  "outpaint_left", "outpaint_right", "outpaint_up", "outpaint_down", "outpaint_fill",
                  "outpaint_overlap")


# The seed extras and Tiling (A1111's "Extra" beside the seed, and the Tiling checkbox), in this order
# (`GenerationTab.seed_extra_inputs()`); optional in `generate`'s API signature.
SEED_EXTRA_FIELDS = ("subseed_show", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
                     "tiling", "distilled_cfg_scale")


def apply_seed_extras(request: GenerationRequest, values: dict | None) -> GenerationRequest:
    """The seed extras as A1111's seed section applies them: the variation seed and strength only while "Extra"
    is ticked and the strength is above 0, "Resize seed from" only while it is ticked and both sides are set;
    Tiling on its own. Missing values (an API client leaving them out) leave the request's defaults."""
    values = values or {}
    extra = bool(values.get("subseed_show"))
    strength = float(values.get("subseed_strength") or 0)
    if extra and strength > 0:
        request.subseed = _whole(values.get("subseed"), -1)
        request.subseed_strength = strength
    resize_w, resize_h = _whole(values.get("seed_resize_from_w")), _whole(values.get("seed_resize_from_h"))
    if extra and resize_w > 0 and resize_h > 0:
        request.seed_resize_from_w, request.seed_resize_from_h = resize_w, resize_h
    request.tiling = bool(values.get("tiling"))
    if values.get("distilled_cfg_scale") is not None:  # Forge's, beside the CFG scale
        request.distilled_cfg_scale = float(values["distilled_cfg_scale"])
    return request


def choice_index(field: str, label: str, value: Any, choices: tuple[str, ...], default: int = 0) -> int:
    """A radio's choice as the request's index (an index passes through); `label` names the control."""
    if isinstance(value, str):
        if value not in choices:
            raise RequestError(field, f"unknown {label} {value!r} (one of: {', '.join(choices)})")
        return choices.index(value)
    return default if value is None else value


def resize_mode_index(value: Any) -> int:
    return choice_index("resize_mode", "resize mode", value, RESIZE_MODES)


def _whole(value, default: int = 0) -> int:
    return default if value is None else int(round(float(value)))


def _outpaint(values: dict) -> Outpaint | None:
    if not values.get("outpaint_enable"):
        return None
    outpaint = Outpaint(*(_whole(values.get(f"outpaint_{side}")) for side in ("left", "right", "up", "down")),
                        fill=values.get("outpaint_fill") or "edge", overlap=_whole(values.get("outpaint_overlap"), 8))
    if not outpaint.active:
        raise RequestError("img2img_outpaint", "Outpainting is enabled but extends no side: set Left, Right, Up "
                           "or Down (or untick Enable)")
    return outpaint


def _folder_batch(values: dict, allow_folders: bool) -> FolderBatch:
    if not allow_folders:
        raise RequestError("img2img_batch_input_dir", "Batch folders are disabled: this server was started with "
                           "--hide-ui-dir-config")
    folders = [str(values.get(f"batch_{name}_dir") or "").strip() for name in ("input", "output", "mask")]
    if not folders[0]:
        raise RequestError("img2img_batch_input_dir", "Batch: enter the input directory (a folder of images on the "
                           "server)")
    return FolderBatch(*folders)


def apply_img2img(request: GenerationRequest, values: dict, allow_folders: bool = True) -> GenerationRequest:
    """Fill the img2img part of `request` from the tab's values (named as IMG2IMG_FIELDS): the selected sub-tab's
    picture and mask (see `canvas.init_and_mask`) or its batch folders, the shared denoising strength and resize
    mode, the inpaint options and outpainting."""
    mode = values.get("img2img_mode") or "img2img"
    request.denoising_strength = values.get("denoising_strength", 0.75)
    request.resize_mode = resize_mode_index(values.get("resize_mode"))
    blur = _whole(values.get("mask_blur"), 4)
    request.mask_blur_x = request.mask_blur_y = blur
    request.inpainting_mask_invert = choice_index("inpainting_mask_invert", "mask mode", values.get("mask_mode"),
                                                  MASK_MODES)
    request.inpainting_fill = choice_index("inpainting_fill", "masked content", values.get("inpainting_fill"),
                                           INPAINT_FILLS, 1)
    request.inpaint_full_res = bool(choice_index("inpaint_full_res", "inpaint area", values.get("inpaint_area"),
                                                 INPAINT_AREAS))
    request.inpaint_full_res_padding = _whole(values.get("inpaint_padding"), 32)
    request.outpaint = _outpaint(values)
    if mode == "batch":
        request.folder_batch = _folder_batch(values, allow_folders)
        request.init_images = []
        return request
    sources = {name: values.get(name) for name in ("image", "sketch", "inpaint", "inpaint_sketch", "inpaint_base",
                                                   "inpaint_mask")}
    init, mask = canvas.init_and_mask(mode, **sources, invert=bool(request.inpainting_mask_invert),
                                      allow_empty_mask=request.outpaint is not None)
    request.init_images = [init]
    request.mask = mask
    return request


def build_request(mode: str, prompt, negative_prompt, sampler, scheduler, steps, width, height, batch_count,
                  batch_size, cfg_scale, seed, *, img2img: dict | None = None, styles=None,
                  allow_folders: bool = True, controlnet: list[dict] | None = None,
                  scripts: dict | None = None, hires: dict | None = None,
                  override_settings: dict | None = None, seed_extras: dict | None = None,
                  refiner: dict | None = None) -> GenerationRequest:
    """The request for the tab's values (checked by `validate` when it is queued; the chosen `styles` are
    applied into the prompts then). img2img's own values come as a dict named as IMG2IMG_FIELDS, txt2img's hires
    fix as one named as `hires_inputs.HIRES_FIELDS`; the ControlNet units' as one dict per unit tab
    (`controlnet.REQUEST_FIELDS`); the Override settings as {option: value} (`override_settings.to_overrides`),
    the job's settings as the API's `override_settings` are; the seed extras and Tiling as one named as
    SEED_EXTRA_FIELDS; the Refiner accordion's as one named as `refiner_inputs.REFINER_FIELDS`."""
    request = GenerationRequest(mode=mode, prompt=prompt, negative_prompt=negative_prompt, sampler_name=sampler,
                                scheduler=scheduler, steps=steps, width=width, height=height, n_iter=batch_count,
                                batch_size=batch_size, cfg_scale=cfg_scale, seed=seed, styles=list(styles or []))
    if override_settings:
        request.extra["override_settings"] = dict(override_settings)
    apply_seed_extras(request, seed_extras)
    apply_refiner(request, refiner)
    if mode == "img2img":
        apply_img2img(request, img2img or {}, allow_folders)
    elif hires:
        apply_hires(request, hires)
    request.controlnet_units = units_from_values(mode, controlnet)
    if scripts:  # extensions' controls (extension_scripts.ScriptsPanel.values)
        request.script_args = dict(scripts.get("script_args") or {})
        request.script_name = scripts.get("script_name") or ""
        request.script_run_args = list(scripts.get("script_run_args") or [])
    return request


def _buttons(running: bool) -> tuple:
    return (gr.Button(visible=not running), gr.Button("Interrupt", visible=running, interactive=True),
            gr.Button(visible=running))


def _with_infotext(image, infotext: str):
    """A copy carrying its infotext, so that the PNG the gallery serves holds the parameters too."""
    image = image.copy()
    image.info["parameters"] = infotext
    return image


def generate(services, mode: str, state: dict | None, *values, img2img: dict | None = None,
             styles=None, controlnet: list[dict] | None = None, scripts: dict | None = None,
             hires: dict | None = None, override_settings=None, seed_extras: dict | None = None,
             refiner: dict | None = None, settings_in_ui: tuple | None = None) -> Iterator[tuple]:
    """Queue the tab's request and stream OUTPUTS (state, progress, gallery, infotext, generate, interrupt, skip,
    live preview, warnings).
    `values` are `build_request`'s shared ones; img2img's own come as a dict named as IMG2IMG_FIELDS, the
    ControlNet units' as one dict per unit, the settings shown in the tab as (MainUiOptions, their values), the
    Override settings as the dropdown's selected "Key: value" entries
    (one the server cannot use is a notice, and nothing is queued). The gallery shows the images, then the units'
    detected maps (unless the option `control_net_no_detectmap` is set); only the images carry infotext."""
    state = dict(state or new_state())
    skip = gr.skip()
    try:
        allow_folders = not getattr(services.flags, "hide_ui_dir_config", False)
        overrides = to_overrides(services, override_settings)
        if settings_in_ui is not None:  # the tab's added settings, under what Override settings holds
            panel, shown_values = settings_in_ui
            overrides = {**panel.decode(services, shown_values), **overrides}
        request = build_request(mode, *values, img2img=img2img, styles=styles, allow_folders=allow_folders,
                                controlnet=controlnet, scripts=scripts, hires=hires, override_settings=overrides,
                                seed_extras=seed_extras, refiner=refiner)
        job = services.generate(request, source="ui")
    except Exception as exc:  # noqa: BLE001 - bad input is a notice, never a crash
        notices.report(exc)
        yield (state, skip, skip, skip, *_buttons(False), skip, skip)
        return
    state = {**state, "job_id": job.id}  # a new dict per change: Gradio keeps what was yielded
    shown = progress_html(job, services.queue.position(job))
    yield (state, shown, skip, skip, *_buttons(True), "", skip)
    try:  # the gallery (and the state's infotexts) keep the last results until this job's arrive
        for panel, preview in updates_until_done(services.queue, job, shown, preview_every(services.options)):
            yield (state, skip if panel is None else panel, skip, skip, skip, skip, skip,
                   skip if preview is None else preview_html(preview), skip)
        state = {**state, "job_id": None}
        if job.state != DONE:
            error = job.error or f"The job ended {job.state}"
            notices.warn(error)
            yield (state, progress_html(job), skip, skip, *_buttons(False), "", warnings_html([], error))
            return
        result = job.result
        for warning in result.warnings:
            notices.warn(warning)
        if not result.images:
            yield (state, progress_html(job), skip, skip, *_buttons(False), "", warnings_html(result.warnings))
            return
        maps = [] if services.options.get("control_net_no_detectmap") else list(result.control_maps or [])
        state = {**state, "seeds": list(result.seeds), "subseeds": list(result.subseeds),
                 "subseed_strength": request.subseed_strength, "first": result.index_of_first_image,
                 "infotexts": list(result.infotexts), "selected": 0, "elapsed": result.elapsed, "maps": len(maps),
                 "saved_paths": list(result.saved_paths)}  # 📂 opens the selected one's folder (gallery_actions)
        gallery = [_with_infotext(image, text) for image, text in zip(result.images, result.infotexts)] + maps
        yield (state, progress_html(job), gallery, infotext_html(result.infotexts[0], result.elapsed),
               *_buttons(False), "", warnings_html(result.warnings))
    except Exception as exc:  # noqa: BLE001 - whatever happens, the tab must come back usable
        notices.report(exc)
        yield ({**state, "job_id": None}, skip, skip, skip, *_buttons(False), "", skip)


DETECTED_MAP_HTML = '<div class="infotext"><p>A ControlNet detected map (it carries no parameters)</p></div>'


def _job_of(services, state: dict | None):
    job_id = (state or {}).get("job_id")
    return services.queue.get(job_id) if job_id else None


def interrupt(services, state: dict | None):
    """Stop this tab's job: a queued one is cancelled; a running one stops at its next model evaluation and keeps
    the batch being sampled. The button says so at once (it comes back when the job has ended)."""
    job = _job_of(services, state)
    if job is not None:  # only this tab's job: a late click never stops someone else's
        services.queue.cancel(job.id)
    return gr.Button("Interrupting…", interactive=False)


def skip_batch(services, state: dict | None) -> None:
    """Drop the batch this tab's job is sampling and go on with the next one."""
    job = _job_of(services, state)
    if job is not None and job.state == RUNNING:
        job.control.skip()


def select_image(state: dict | None, index: int | None) -> tuple[dict, str]:
    """Gallery selection: show that image's infotext (and remember it for ♻️ and the send buttons). The
    ControlNet maps after the images have no parameters of their own."""
    state = dict(state or new_state())
    texts = state.get("infotexts") or []
    if index is None or not 0 <= index < len(texts) + (state.get("maps") or 0):
        return state, gr.skip()
    state["selected"] = index
    if index >= len(texts):
        return state, DETECTED_MAP_HTML
    return state, infotext_html(texts[index], state.get("elapsed"))


def reuse_seed(state: dict | None):
    """♻️: the seed of the selected image this tab made last; on a grid, its first picture's (an X/Y/Z plot's sub
    grid: its Z value's first cell's); the first image's when a detected map or nothing is selected."""
    return _reused(state, "seeds")


def reuse_subseed(state: dict | None):
    """♻️ beside the variation seed: the selected image's variation seed, or its seed when the run had no
    variation (A1111's)."""
    use_subseeds = float((state or {}).get("subseed_strength") or 0) > 0
    return _reused(state, "subseeds" if use_subseeds else "seeds")


def _reused(state: dict | None, key: str):
    state = state or {}
    numbers = state.get(key) or []
    if not numbers:
        notices.warn("No image generated yet in this tab: there is no seed to reuse")
        return gr.skip()
    selected, first = state.get("selected") or 0, state.get("first") or 0
    index = selected - first  # the grids in front have no entries in the seed lists
    if 0 <= index < len(numbers):
        return numbers[index]
    texts = state.get("infotexts") or []
    if 0 <= selected < min(first, len(texts)):  # a grid: the seed its infotext names (its first picture's)
        named = str(parse_infotext(texts[selected]).get(_INFOTEXT_SEEDS[key], ""))
        if named.strip().lstrip("-").isdigit():
            return int(named)
    return numbers[0]


_INFOTEXT_SEEDS = {"seeds": "Seed", "subseeds": "Variation seed"}  # a state list -> its infotext key


def random_seed() -> int:
    return -1
