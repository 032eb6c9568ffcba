"""The Extras tab (A1111's elem_ids): upscale a single image, several files, or a folder, with upscaler 1, an
optional upscaler 2 blended in, "Scale by" or "Scale to" (with crop to fit), then restore faces with GFPGAN and
CodeFormer (each with its visibility). The work is an "extras" job in the queue (`Services.extras`); this module
only lays out the controls, builds the request and shows the result."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import gradio as gr
from PIL import Image

from ..core.errors import RequestError
from ..core.images import normalise_mode
from ..engine.extras import BUILTIN_ORDER, SCALE_BY, SCALE_TO, ExtrasOperation, ExtrasRequest, \
    load_folder_images, order_of, preferred_order, text_html
from ..jobs.queue import DONE, RUNNING
from . import notices
from .progress import panels_until_done, progress_html

SINGLE, BATCH, DIRECTORY = 0, 1, 2


@dataclass
class ExtrasTab:
    source_mode: gr.State  # SINGLE / BATCH / DIRECTORY: which sub-tab is selected
    resize_mode: gr.State  # SCALE_BY / SCALE_TO
    image: gr.Image
    image_batch: gr.Files
    input_dir: gr.Textbox
    output_dir: gr.Textbox
    show_results: gr.Checkbox
    upscaling_resize: gr.Slider
    upscaling_resize_w: gr.Slider
    upscaling_resize_h: gr.Slider
    upscaling_crop: gr.Checkbox
    upscaler_1: gr.Dropdown
    upscaler_2: gr.Dropdown
    upscaler_2_visibility: gr.Slider
    gfpgan_visibility: gr.Slider
    codeformer_visibility: gr.Slider
    codeformer_weight: gr.Slider
    refresh: gr.Button
    generate: gr.Button
    interrupt: gr.Button
    state: gr.State
    progress: gr.HTML
    gallery: gr.Gallery
    html_info: gr.HTML
    tabs: dict
    mode_tabs: gr.Tabs | None = None  # Single Image / Batch Process / Batch from Directory (`mode_extras`)
    scripts: list = field(default_factory=list)  # extensions' operations shown (A1111's ScriptPostprocessing)
    script_controls: list = field(default_factory=list)  # their controls, in that order (after `inputs()`'s own)

    def receive_outputs(self) -> list:
        """What `receive_image` updates: the single image, the source mode, the sub-tabs."""
        return [self.image, self.source_mode, self.mode_tabs]

    def inputs(self) -> list:
        """The components `run` takes after (services, state), in its parameter order."""
        return [self.source_mode, self.image, self.image_batch, self.input_dir, self.output_dir, self.show_results,
                self.resize_mode, self.upscaling_resize, self.upscaling_resize_w, self.upscaling_resize_h,
                self.upscaling_crop, self.upscaler_1, self.upscaler_2, self.upscaler_2_visibility,
                self.gfpgan_visibility, self.codeformer_visibility, self.codeformer_weight, *self.script_controls]


def upscaler_names(services) -> list[str]:
    return services.upscalers.names()


def refresh_upscalers(services, first: str | None, second: str | None) -> tuple[gr.Dropdown, gr.Dropdown]:
    """Rescan the upscaler folders; a choice whose file went away falls back to None."""
    try:
        services.upscalers.refresh()
    except Exception as exc:  # noqa: BLE001 - a listing failure is a notice
        notices.report(exc)
    names = upscaler_names(services)
    return tuple(gr.Dropdown(choices=names, value=value if value in names else "None") for value in (first, second))


def receive_image(image: Image.Image) -> tuple:
    """A picture sent here (the galleries' and PNG Info's "Send to extras"): into Single Image, that sub-tab shown
    (a programmatic switch fires no select event, so the source mode is set too); `ExtrasTab.receive_outputs()`."""
    return image, SINGLE, gr.Tabs(selected="single_image")


def build_extras_tab(services) -> ExtrasTab:
    """Lay out the tab (inside the current gr.Tab) and wire it."""
    hide_dirs = bool(getattr(services.flags, "hide_ui_dir_config", False))
    names = upscaler_names(services)
    c: dict = {"tabs": {}}
    with gr.Row(equal_height=False, elem_id="extras_tab"):
        with gr.Column(variant="compact"):
            c["source_mode"] = gr.State(SINGLE)
            c["resize_mode"] = gr.State(SCALE_BY)
            with gr.Tabs(elem_id="mode_extras") as c["mode_tabs"]:
                with gr.Tab("Single Image", id="single_image", elem_id="extras_single_tab") as c["tabs"][SINGLE]:
                    c["image"] = gr.Image(label="Source", type="pil", image_mode=None, format="png",
                                          elem_id="extras_image", sources=["upload", "clipboard"], height=360,
                                          buttons=["download", "fullscreen"])
                with gr.Tab("Batch Process", id="batch_process", elem_id="extras_batch_process_tab") \
                        as c["tabs"][BATCH]:
                    c["image_batch"] = gr.Files(label="Batch Process", file_count="multiple",
                                                elem_id="extras_image_batch")
                with gr.Tab("Batch from Directory", id="batch_from_directory", elem_id="extras_batch_directory_tab",
                            visible=not hide_dirs) as c["tabs"][DIRECTORY]:
                    c["input_dir"] = gr.Textbox(label="Input directory", max_lines=1,
                                                placeholder="A directory on the same machine where the server runs.",
                                                elem_id="extras_batch_input_dir")
                    c["output_dir"] = gr.Textbox(label="Output directory", max_lines=1,
                                                 placeholder="Leave blank to save images to the default path.",
                                                 elem_id="extras_batch_output_dir")
                    c["show_results"] = gr.Checkbox(True, label="Show result images",
                                                    elem_id="extras_show_extras_results")
            with gr.Row():
                c["generate"] = gr.Button("Generate", variant="primary", elem_id="extras_generate")
                c["interrupt"] = gr.Button("Interrupt", elem_id="extras_interrupt", visible=False)
            runner = postprocessing_runner(services)
            scripts = runner.scripts_in_preferred_order() if runner is not None else []
            builders = {"Upscale": lambda: _upscale_controls(c, names), "GFPGAN": lambda: _gfpgan_controls(c),
                        "CodeFormer": lambda: _codeformer_controls(c)}
            c["scripts"], c["script_controls"] = [], []
            for name, script in operations_in_order(services, scripts):  # A1111's order (webui/engine/extras.py)
                if script is None:
                    builders[name]()
                    continue
                with gr.Row(elem_id=f"extras_script_{_slug(name)}") as group:
                    runner.create_script_ui(script, c["script_controls"])
                script.group = group
                c["scripts"].append(script)
            if runner is not None:
                runner.ui_created = True
        with gr.Column():
            c["state"] = gr.State({"job_id": None})
            c["progress"] = gr.HTML(elem_id="extras_progress")
            c["gallery"] = gr.Gallery(label="Output", elem_id="extras_gallery", format="png", columns=4, preview=True,
                                      object_fit="contain", interactive=False, height=560, type="pil",
                                      buttons=["download", "download_all", "fullscreen"])
            c["html_info"] = gr.HTML(elem_id="html_info_extras")
    scale_by, scale_to = c.pop("scale_by"), c.pop("scale_to")
    tab = ExtrasTab(**c)
    _wire(tab, services, scale_by, scale_to)
    return tab


def postprocessing_runner(services):
    """The extensions' Extras operations (modules.scripts_postprocessing.ScriptPostprocessingRunner), or None."""
    host = getattr(services, "extension_host", None)
    return getattr(host, "postprocessing", None) if host is not None else None


def operations_in_order(services, scripts: list) -> list[tuple[str, object]]:
    """(name, script or None for a built-in operation) in A1111's order: what the tab lays out top to bottom."""
    entries = [ExtrasOperation(name, order, None) for name, order in BUILTIN_ORDER.items()] \
        + [ExtrasOperation(str(script.name), order_of(script.order), None) for script in scripts]
    by_id = {id(entry): (entry.name, None if index < len(BUILTIN_ORDER) else scripts[index - len(BUILTIN_ORDER)])
             for index, entry in enumerate(entries)}
    return [by_id[id(entry)] for entry in preferred_order(entries, services.options)]


def _slug(text: str) -> str:
    import re
    return re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", text.lower()))


def _upscale_controls(c: dict, names: list[str]) -> None:
    """A1111's Upscale operation: Scale by / Scale to, upscaler 1 (with refresh), upscaler 2 and its visibility."""
    with gr.Tabs(elem_id="extras_resize_mode"):
        with gr.Tab("Scale by", elem_id="extras_scale_by_tab") as c["scale_by"]:
            c["upscaling_resize"] = gr.Slider(1.0, 8.0, value=4.0, step=0.05, label="Resize",
                                              elem_id="extras_upscaling_resize")
        with gr.Tab("Scale to", elem_id="extras_scale_to_tab") as c["scale_to"]:
            with gr.Row():
                c["upscaling_resize_w"] = gr.Slider(64, 8192, value=512, step=8, label="Width",
                                                    elem_id="extras_upscaling_resize_w")
                c["upscaling_resize_h"] = gr.Slider(64, 8192, value=512, step=8, label="Height",
                                                    elem_id="extras_upscaling_resize_h")
            c["upscaling_crop"] = gr.Checkbox(True, label="Crop to fit", elem_id="extras_upscaling_crop")
    with gr.Row():
        c["upscaler_1"] = gr.Dropdown(names, value="None", label="Upscaler 1", elem_id="extras_upscaler_1")
        c["refresh"] = gr.Button("🔄", elem_id="extras_refresh_upscalers", scale=0, min_width=40)
    with gr.Row():
        c["upscaler_2"] = gr.Dropdown(names, value="None", label="Upscaler 2", elem_id="extras_upscaler_2")
        c["upscaler_2_visibility"] = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility",
                                               elem_id="extras_upscaler_2_visibility")


def _gfpgan_controls(c: dict) -> None:
    with gr.Row():  # A1111's GFPGAN and CodeFormer postprocessing controls (their files: README)
        c["gfpgan_visibility"] = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="GFPGAN visibility",
                                           elem_id="extras_gfpgan_visibility")


def _codeformer_controls(c: dict) -> None:
    with gr.Row():
        c["codeformer_visibility"] = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="CodeFormer visibility",
                                               elem_id="extras_codeformer_visibility")
        c["codeformer_weight"] = gr.Slider(0.0, 1.0, value=0.0, step=0.001,
                                           label="CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
                                           elem_id="extras_codeformer_weight")


def _wire(tab: ExtrasTab, services, scale_by: gr.Tab, scale_to: gr.Tab) -> None:
    quiet = {"show_progress": "hidden", "queue": False, "api_visibility": "undocumented"}
    for mode, sub_tab in tab.tabs.items():
        sub_tab.select(lambda mode=mode: mode, outputs=[tab.source_mode], **quiet)
    scale_by.select(lambda: SCALE_BY, outputs=[tab.resize_mode], **quiet)
    scale_to.select(lambda: SCALE_TO, outputs=[tab.resize_mode], **quiet)
    tab.refresh.click(lambda first, second: refresh_upscalers(services, first, second),
                      inputs=[tab.upscaler_1, tab.upscaler_2], outputs=[tab.upscaler_1, tab.upscaler_2], **quiet)

    own = len(tab.inputs()) - len(tab.script_controls)

    def generate(state, *values):
        runner = postprocessing_runner(services)
        script_args = runner.args_from_values(tab.scripts, values[own:]) if runner is not None else {}
        yield from run(services, state, *values[:own], script_args=script_args)

    tab.generate.click(generate, inputs=[tab.state, *tab.inputs()],
                       outputs=[tab.state, tab.progress, tab.gallery, tab.html_info, tab.generate, tab.interrupt],
                       show_progress="hidden", concurrency_limit=None, api_visibility="undocumented")
    tab.interrupt.click(lambda state: interrupt(services, state), inputs=[tab.state], concurrency_limit=None,
                        show_progress="hidden", api_visibility="undocumented")


def build_request(services, source_mode: int, image, files, input_dir: str, output_dir: str, resize_mode: int,
                  upscaling_resize: float, width: int, height: int, crop: bool, upscaler_1: str, upscaler_2: str,
                  visibility: float, gfpgan_visibility: float = 0.0, codeformer_visibility: float = 0.0,
                  codeformer_weight: float = 0.0, script_args: dict | None = None) -> ExtrasRequest:
    """The request for the tab's values: images from the selected source, saved as A1111's Extras tab saves."""
    output = ""
    if source_mode == DIRECTORY:
        if getattr(services.flags, "hide_ui_dir_config", False):
            raise RequestError("extras_batch_input_dir", "Batch from Directory is disabled on this server "
                                                         "(--hide-ui-dir-config)")
        images = load_folder_images(input_dir)
        output = str(output_dir or "").strip()
    elif source_mode == BATCH:
        images = [_open_file(file) for file in files or []]
        if not images:
            raise RequestError("extras_image_batch", "No files to process: add images to Batch Process")
    else:
        if image is None:
            raise RequestError("extras_image", "No image: drop one into Source")
        images = [(image, "image")]
    return ExtrasRequest(images=images, resize_mode=int(resize_mode), upscaling_resize=upscaling_resize,
                         upscaling_resize_w=width, upscaling_resize_h=height, upscaling_crop=crop,
                         upscaler_1=upscaler_1 or "None", upscaler_2=upscaler_2 or "None",
                         extras_upscaler_2_visibility=visibility, gfpgan_visibility=gfpgan_visibility or 0.0,
                         codeformer_visibility=codeformer_visibility or 0.0,
                         codeformer_weight=codeformer_weight or 0.0, save=True, output_dir=output,
                         script_args=dict(script_args or {}))


def _open_file(file) -> tuple[Image.Image, str]:
    """A Batch Process upload (a path, or a file object with `.name`) as (image, file name)."""
    path = Path(getattr(file, "name", file))
    try:
        with Image.open(path) as opened:
            opened.load()
            return normalise_mode(opened.copy()), path.name
    except (OSError, ValueError) as exc:
        raise RequestError("extras_image_batch", f"{path.name} is not an image this server can read ({exc})") \
            from None


def _buttons(running: bool) -> tuple:
    return gr.Button(visible=not running), gr.Button(visible=running)


def info_html(text: str) -> str:
    return f'<div class="infotext">{text_html(text)}</div>' if text else ""


def run(services, state: dict | None, source_mode, image, files, input_dir, output_dir, show_results, resize_mode,
        upscaling_resize, width, height, crop, upscaler_1, upscaler_2, visibility, gfpgan_visibility=0.0,
        codeformer_visibility=0.0, codeformer_weight=0.0, script_args: dict | None = None) -> Iterator[tuple]:
    """Queue the Extras job and stream (state, progress, gallery, html_info, generate, interrupt);
    `script_args`: the extensions' operations' values ({name: {argument: value}})."""
    state = dict(state or {})
    skip = gr.skip()
    try:
        request = build_request(services, source_mode, image, files, input_dir, output_dir, resize_mode,
                                upscaling_resize, width, height, crop, upscaler_1, upscaler_2, visibility,
                                gfpgan_visibility, codeformer_visibility, codeformer_weight, script_args)
        job = services.extras(request, source="ui")
    except Exception as exc:  # noqa: BLE001 - bad input is a notice, never a crash
        notices.report(exc)
        yield (state, skip, skip, skip, *_buttons(False))
        return
    state = {**state, "job_id": job.id}
    shown = progress_html(job, services.queue.position(job))
    yield (state, shown, skip, skip, *_buttons(True))
    try:
        for panel in panels_until_done(services.queue, job, shown):
            yield (state, panel, skip, skip, skip, skip)
        state = {**state, "job_id": None}
        if job.state != DONE:
            notices.warn(job.error or f"The job ended {job.state}")
            yield (state, progress_html(job), skip, skip, *_buttons(False))
            return
        result = job.result
        for warning in result.warnings:
            notices.warn(warning)
        shown_images = source_mode != DIRECTORY or bool(show_results)
        gallery = [_with_infotext(image, text) for image, text in zip(result.images, result.infotexts)] \
            if shown_images else []
        info = result.infos[-1] if result.infos else ""
        if result.saved_paths and source_mode == DIRECTORY:
            info = f"{info}\nSaved {len(result.saved_paths)} images to {Path(result.saved_paths[0]).parent}".strip()
        yield (state, progress_html(job), gallery, info_html(info), *_buttons(False))
    except Exception as exc:  # noqa: BLE001 - whatever happens, the tab must come back usable
        notices.report(exc)
        yield ({**state, "job_id": None}, skip, skip, skip, *_buttons(False))


def _with_infotext(image: Image.Image, infotext: str) -> Image.Image:
    """A copy carrying its infotext, so the PNG the gallery serves holds the parameters too."""
    image = image.copy()
    image.info["parameters"] = infotext
    return image


def interrupt(services, state: dict | None) -> None:
    """Stop this tab's job: a queued one is cancelled, a running one stops between tiles."""
    job_id = (state or {}).get("job_id")
    job = services.queue.get(job_id) if job_id else None
    if job is not None and job.state == RUNNING:
        job.control.interrupt()
    elif job is not None:
        services.queue.cancel(job.id)
