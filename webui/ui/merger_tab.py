"""The Checkpoint Merger tab (A1111's layout and elem_ids): A, B and C, the method and multiplier, format, float16,
config, VAE to bake in, weights to discard, metadata, and our "Overwrite" (off: an existing file is never replaced).
Merge queues a "merge" job (`Services.merge`); the tab shows its progress (tensor n of N), then the saved file and
its recipe, and every checkpoint list on the page (its own three, the quicksettings picker, and the txt2img /
img2img tabs' Refiner and Hires checkpoint lists) gains the new model.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import gradio as gr

from ..jobs.queue import DONE, QUEUED, RUNNING
from ..models.merge import read_metadata
from ..models.merge_request import CONFIG_SOURCES, FORMATS, METHODS, NO_VAE, WEIGHTED_SUM, MergeRequest
from . import checkpoints, notices
from .progress import progress_html

POLL_SECONDS = 0.2
DESCRIPTIONS = {
    "No interpolation": "A alone, unchanged: for converting its format, saving it as float16, baking in a VAE or "
                        "discarding weights. Needs A.",
    "Weighted sum": "A blend of two models: A × (1 − M) + B × M. Needs A and B.",
    "Add difference": "What B has that C lacks, added to A: A + (B − C) × M. Needs A, B and C.",
}


@dataclass
class MergerTab:
    description: gr.HTML
    primary: gr.Dropdown
    secondary: gr.Dropdown
    tertiary: gr.Dropdown
    refresh: list  # the three 🔄 buttons
    custom_name: gr.Textbox
    multiplier: gr.Slider
    method: gr.Radio
    checkpoint_format: gr.Radio
    save_as_half: gr.Checkbox
    config_source: gr.Radio
    bake_in_vae: gr.Dropdown
    refresh_vae: gr.Button
    discard_weights: gr.Textbox
    metadata_editor: gr.Accordion
    save_metadata: gr.Checkbox
    add_merge_recipe: gr.Checkbox
    copy_metadata_fields: gr.Checkbox
    metadata_json: gr.TextArea
    read_metadata: gr.Button
    overwrite: gr.Checkbox
    merge: gr.Button
    result: gr.HTML

    def inputs(self) -> list:
        """The components `merge` takes after `services`, in its parameter order."""
        return [self.primary, self.secondary, self.tertiary, self.method, self.multiplier, self.save_as_half,
                self.custom_name, self.checkpoint_format, self.config_source, self.bake_in_vae, self.discard_weights,
                self.save_metadata, self.add_merge_recipe, self.copy_metadata_fields, self.metadata_json,
                self.overwrite]


def describe(method: str) -> str:
    return f"<p style='margin-bottom: 2.5em'>{html.escape(DESCRIPTIONS.get(method, ''))}</p>"


def vae_choices(services) -> list[str]:
    return [NO_VAE, *services.models.vaes.names()]


def _title_now(services, value: str | None) -> str | None:
    """A chosen checkpoint's title as the list shows it now (it may have gained its hash); None once it is gone."""
    if not value:
        return None
    try:
        return services.models.resolve(value).title
    except Exception:  # noqa: BLE001 - a file that went away is simply no longer chosen
        return None


def refresh_checkpoints(services, value: str | None) -> gr.Dropdown:
    try:
        services.models.refresh()
    except Exception as exc:  # noqa: BLE001
        notices.report(exc)
    return gr.Dropdown(choices=checkpoints.checkpoint_titles(services), value=_title_now(services, value))


def refresh_vaes(services, value: str | None) -> gr.Dropdown:
    try:
        services.models.vaes.refresh()
    except Exception as exc:  # noqa: BLE001
        notices.report(exc)
    choices = vae_choices(services)
    return gr.Dropdown(choices=choices, value=value if value in choices else NO_VAE)


def show_metadata(services, primary: str | None, secondary: str | None, tertiary: str | None) -> str:
    """"Read metadata from selected checkpoints": their `.safetensors` metadata as one JSON object."""
    try:
        found = read_metadata(services.models.registry, [primary or "", secondary or "", tertiary or ""])
    except Exception as exc:  # noqa: BLE001 - an unknown name is a notice
        notices.report(exc)
        return gr.skip()
    return json.dumps(found, indent=4, ensure_ascii=False)


def panel(job, position: int = 0) -> str:
    """The progress shown while the merge waits and runs: "Merging A and B: tensor 40 of 1131" and a bar."""
    if job.state != RUNNING:
        return progress_html(job, position)
    progress = job.control.progress
    fraction = progress.fraction
    width = f"{max(0.0, min(1.0, fraction)) * 100:.1f}%"
    return (f'<div class="job-state job-running">{html.escape(progress.textinfo or "Merging")}</div>'
            f'<div class="progressbar"><div class="progress" style="width: {width}"></div>'
            f'<span class="progress-text">{int(fraction * 100)}%</span></div>')


def result_html(result) -> str:
    rows = [f"<p>{html.escape(result.message)}</p>", f"<p>Listed as <b>{html.escape(result.title)}</b></p>"]
    if result.config:
        rows.append(f"<p>Config copied to {html.escape(result.config)}</p>")
    if result.recipe:
        recipe = json.dumps(result.recipe, indent=2, ensure_ascii=False)
        rows.append(f"<p>sd_merge_recipe:</p><pre>{html.escape(recipe)}</pre>")
    return f'<div class="modelmerger-result">{"".join(rows)}</div>'


def _failed_html(message: str) -> str:
    return f'<div class="job-state job-failed">{html.escape(message)}</div>'


def _lists(services, primary, secondary, tertiary) -> tuple:
    """The three source pickers and the quicksettings picker with the current list (choices kept as chosen)."""
    titles = checkpoints.checkpoint_titles(services)
    pickers = tuple(gr.Dropdown(choices=titles, value=_title_now(services, value))
                    for value in (primary, secondary, tertiary))
    return (*pickers, gr.Dropdown(choices=titles, value=checkpoints.current_checkpoint(services)))


def merge(services, primary, secondary, tertiary, interp_method, multiplier, save_as_half, custom_name,
          checkpoint_format, config_source, bake_in_vae, discard_weights, save_metadata, add_merge_recipe,
          copy_metadata_fields, metadata_json, overwrite) -> Iterator[tuple]:
    """Queue the merge and stream (result panel, picker A, B, C, quicksettings picker)."""
    skip = gr.skip()
    request = MergeRequest(primary or "", secondary or "", tertiary or "", interp_method, multiplier, save_as_half,
                           custom_name or "", checkpoint_format, config_source, bake_in_vae or NO_VAE,
                           discard_weights or "", save_metadata, add_merge_recipe, copy_metadata_fields,
                           metadata_json, overwrite)
    try:
        job = services.merge(request, source="ui")
    except Exception as exc:  # noqa: BLE001 - refused before queueing: a notice and the reason in the panel
        notices.report(exc)
        yield (_failed_html(f"Error merging checkpoints: {exc}"), skip, skip, skip, skip)
        return
    shown = panel(job, services.queue.position(job))
    yield (shown, skip, skip, skip, skip)
    while not job.wait(POLL_SECONDS):
        now = panel(job, services.queue.position(job) if job.state == QUEUED else 0)
        if now != shown:
            shown = now
            yield (shown, skip, skip, skip, skip)
    if job.state != DONE:
        notices.warn(job.error or f"The merge ended {job.state}")
        yield (_failed_html(f"Error merging checkpoints: {job.error or job.state}"),
               *_lists(services, primary, secondary, tertiary))
        return
    notices.info(job.result.message)
    yield (result_html(job.result), *_lists(services, primary, secondary, tertiary))


# A checkpoint list elsewhere on the page and how it shows the current list: (its current value) -> its update
OtherPicker = tuple[gr.Dropdown, Callable[[str | None], gr.Dropdown]]


def build_merger_tab(services, checkpoint_picker: gr.Dropdown | None = None,
                     other_pickers: Sequence[OtherPicker] = ()) -> MergerTab:
    """Lay out the tab (inside the current gr.Tab) and wire it; `checkpoint_picker` (the quicksettings one) and
    `other_pickers` (the Refiner and Hires checkpoint lists, each with its own update) get the new list after a merge
    too."""
    titles = checkpoints.checkpoint_titles(services)
    c: dict = {"refresh": []}
    with gr.Row(equal_height=False):
        with gr.Column(variant="compact"):
            c["description"] = gr.HTML(describe(WEIGHTED_SUM), elem_id="modelmerger_interp_description")
            with gr.Row(elem_id="modelmerger_models"):
                for key, label, elem, letter in (("primary", "Primary model (A)", "primary", "A"),
                                                 ("secondary", "Secondary model (B)", "secondary", "B"),
                                                 ("tertiary", "Tertiary model (C)", "tertiary", "C")):
                    c[key] = gr.Dropdown(titles, value=None, label=label, elem_id=f"modelmerger_{elem}_model_name")
                    c["refresh"].append(gr.Button("🔄", elem_id=f"refresh_checkpoint_{letter}",
                                                  elem_classes="tool-button", scale=0, min_width=40))
            c["custom_name"] = gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name")
            c["multiplier"] = gr.Slider(minimum=0.0, maximum=1.0, step=0.05, value=0.3,
                                        label="Multiplier (M) - set to 0 to get model A",
                                        elem_id="modelmerger_interp_amount")
            c["method"] = gr.Radio(list(METHODS), value=WEIGHTED_SUM, label="Interpolation Method",
                                   elem_id="modelmerger_interp_method")
            with gr.Row():
                c["checkpoint_format"] = gr.Radio(list(FORMATS), value="safetensors", label="Checkpoint format",
                                                  elem_id="modelmerger_checkpoint_format")
                c["save_as_half"] = gr.Checkbox(False, label="Save as float16", elem_id="modelmerger_save_as_half")
            with gr.Row():
                with gr.Column():
                    c["config_source"] = gr.Radio(list(CONFIG_SOURCES), value=CONFIG_SOURCES[0], type="index",
                                                  label="Copy config from", elem_id="modelmerger_config_method")
                with gr.Column():
                    with gr.Row():
                        c["bake_in_vae"] = gr.Dropdown(vae_choices(services), value=NO_VAE, label="Bake in VAE",
                                                       elem_id="modelmerger_bake_in_vae")
                        c["refresh_vae"] = gr.Button("🔄", elem_id="modelmerger_refresh_bake_in_vae",
                                                     elem_classes="tool-button", scale=0, min_width=40)
            with gr.Row():
                c["discard_weights"] = gr.Textbox("", label="Discard weights with matching name",
                                                  elem_id="modelmerger_discard_weights")
            with gr.Accordion("Metadata", open=False) as c["metadata_editor"]:
                with gr.Row():
                    c["save_metadata"] = gr.Checkbox(True, label="Save metadata", elem_id="modelmerger_save_metadata")
                    c["add_merge_recipe"] = gr.Checkbox(True, label="Add merge recipe metadata",
                                                        elem_id="modelmerger_add_recipe")
                    c["copy_metadata_fields"] = gr.Checkbox(True, label="Copy metadata from merged models",
                                                            elem_id="modelmerger_copy_metadata")
                c["metadata_json"] = gr.TextArea("{}", label="Metadata in JSON format",
                                                 elem_id="modelmerger_metadata_json")
                c["read_metadata"] = gr.Button("Read metadata from selected checkpoints",
                                               elem_id="modelmerger_read_metadata")
            with gr.Row():
                c["overwrite"] = gr.Checkbox(False, label="Overwrite an existing file of that name",
                                             elem_id="modelmerger_overwrite")
            with gr.Row():
                c["merge"] = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column(variant="compact", elem_id="modelmerger_results_container"):
            with gr.Group(elem_id="modelmerger_results_panel"):
                c["result"] = gr.HTML(elem_id="modelmerger_result")
    tab = MergerTab(**c)
    _wire(tab, services, checkpoint_picker, list(other_pickers))
    return tab


def _wire(tab: MergerTab, services, checkpoint_picker: gr.Dropdown | None, others: list[OtherPicker]) -> None:
    quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}
    tab.method.change(describe, inputs=[tab.method], outputs=[tab.description], queue=False, **quiet)
    for button, picker in zip(tab.refresh, (tab.primary, tab.secondary, tab.tertiary)):
        button.click(lambda value: refresh_checkpoints(services, value), inputs=[picker], outputs=[picker], **quiet)
    tab.refresh_vae.click(lambda value: refresh_vaes(services, value), inputs=[tab.bake_in_vae],
                          outputs=[tab.bake_in_vae], **quiet)
    tab.checkpoint_format.change(lambda fmt: gr.Accordion(visible=fmt == "safetensors"),
                                 inputs=[tab.checkpoint_format], outputs=[tab.metadata_editor], queue=False, **quiet)
    tab.read_metadata.click(lambda a, b, c: show_metadata(services, a, b, c),
                            inputs=[tab.primary, tab.secondary, tab.tertiary], outputs=[tab.metadata_json], **quiet)

    count = len(tab.inputs())

    def run(*values):
        currents = values[count:]  # the other pickers' values, kept when their model is still listed
        for update in merge(services, *values[:count]):
            update = update if checkpoint_picker is not None else update[:4]
            refreshed = isinstance(update[1], gr.Dropdown)  # the lists are refreshed once the merge has ended
            yield (*update, *((show(current) if refreshed else gr.skip())
                              for (_, show), current in zip(others, currents)))

    picker_outputs = [checkpoint_picker] if checkpoint_picker is not None else []
    tab.merge.click(run, inputs=[*tab.inputs(), *(picker for picker, _ in others)],
                    outputs=[tab.result, tab.primary, tab.secondary, tab.tertiary, *picker_outputs,
                             *(picker for picker, _ in others)],
                    concurrency_limit=None, **quiet)
