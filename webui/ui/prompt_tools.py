"""The prompt box's tools in a txt2img / img2img tab (A1111's toprow and dimensions buttons).

- ↙️ `{tab}_paste`: "Read generation parameters from prompt or last generation if prompt is empty into user
  interface". An infotext in the prompt box (a prompt, perhaps `Negative prompt: ...`, then the `Steps: ...,
  Sampler: ...` line) is expanded into the tab's fields as PNG Info's Send does (the same `pnginfo` /
  `hires_inputs` / `refiner_inputs` / `controlnet` / `override_settings` / settings-in-UI values); an empty prompt
  reads the last generation's infotext (A1111's `params.txt`: here the newest finished generation of this tab in
  the job history, else of the other tab). Nothing to read is a notice.
- A picture dropped onto the prompt box goes (through the page script) into the hidden `{tab}_prompt_image` upload
  and its infotext is expanded the same way; one without parameters is a notice.
- 🗑️ `{tab}_clear_prompt`: clears both prompts after the page asks to confirm (all in the page).
- ⇅ `{tab}_res_switch_btn`: swaps width and height.
- The token counters recount after the page's load event and after a programmatic fill (`recount_after`), since
  a tab that is not shown is not in the page, so its boxes fire no change event for the page script.
- Ctrl+Up / Ctrl+Down emphasis editing and Alt+Left / Alt+Right item moves run in the page
  (`prompt_tools_assets`), with A1111's `keyedit_*` settings, which the load event writes into the hidden
  `keyedit_options` box (`keyedit_options`).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

import gradio as gr
from PIL import Image, UnidentifiedImageError

from ..outputs.infotext import PARSE_DEFAULTS, parse_infotext
from ..outputs.save import read_infotext
from . import hires_inputs, notices, override_settings, pnginfo, refiner_inputs, token_counter

PASTE_SYMBOL = "↙️"
CLEAR_PROMPT_SYMBOL = "🗑️"
SWITCH_VALUES_SYMBOL = "⇅"
KEYEDIT_KEYS = ("keyedit_precision_attention", "keyedit_precision_extra", "keyedit_delimiters",
                "keyedit_delimiters_whitespace", "keyedit_move")
HISTORY_LOOKBACK = 50  # finished generations searched for the last one of a tab
NOTHING_TO_READ = ("Nothing to read: the prompt holds no generation parameters (a line \"Steps: ..., Sampler: "
                   "...\" after the prompt)")


@dataclass
class PromptTools:
    """A tab's prompt tools (see the module's docstring); `res_switch` sits beside width and height."""
    paste: gr.Button
    clear_prompt: gr.Button
    prompt_image: gr.File | None = None
    res_switch: gr.Button | None = None


# --- layout -------------------------------------------------------------------------------------------------------
def build_buttons(tab: str) -> PromptTools:
    """↙️ and 🗑️ (A1111's toprow tools), in the current row."""
    paste = gr.Button(PASTE_SYMBOL, elem_id=f"{tab}_paste", elem_classes="tool-button", scale=0, min_width=40)
    clear = gr.Button(CLEAR_PROMPT_SYMBOL, elem_id=f"{tab}_clear_prompt", elem_classes="tool-button", scale=0,
                      min_width=40)
    return PromptTools(paste=paste, clear_prompt=clear)


def build_prompt_image(tab: str) -> gr.File:
    """The hidden upload a picture dropped on the prompt box goes to (A1111's `{tab}_prompt_image`)."""
    return gr.File(file_count="single", type="binary", visible="hidden", elem_id=f"{tab}_prompt_image",
                   show_label=False)


def build_res_switch(tab: str) -> gr.Button:
    """⇅ between the width / height sliders and the batch ones (A1111's `{tab}_res_switch_btn`)."""
    with gr.Column(scale=0, min_width=44, elem_id=f"{tab}_dimensions_row", elem_classes="dimensions-tools"):
        return gr.Button(SWITCH_VALUES_SYMBOL, elem_id=f"{tab}_res_switch_btn", elem_classes="tool-button",
                         scale=0, min_width=40)


def build_keyedit_holder() -> gr.Textbox:
    """The hidden box the load event fills with the `keyedit_*` settings (JSON) for the page script."""
    return gr.Textbox(visible="hidden", elem_id="keyedit_options", show_label=False, container=False, lines=2)


# --- handlers -----------------------------------------------------------------------------------------------------
def keyedit_options(services) -> str:
    """The `keyedit_*` settings as JSON (the page script's Ctrl+Up / Ctrl+Down and Alt+Left / Alt+Right)."""
    values = {}
    for key in KEYEDIT_KEYS:
        try:
            values[key] = services.options.get(key)
        except KeyError:
            continue
    return json.dumps(values)


def swap(width, height) -> tuple:
    """⇅: width and height swapped."""
    return height, width


def holds_parameters(text: str | None) -> bool:
    """Whether `text` is an infotext: its last line holds generation parameters (`Steps: 20, Sampler: ...`)."""
    if not (text or "").strip():
        return False
    parsed = parse_infotext(text)
    return any(key not in PARSE_DEFAULTS and key not in ("Prompt", "Negative prompt") for key in parsed)


def _first_infotext(result) -> str:
    """The first infotext of a generation's result (a GenerationResult, or the history's summary of one)."""
    texts = (result or {}).get("infotexts") if isinstance(result, dict) else getattr(result, "infotexts", None)
    return next((text for text in texts or [] if isinstance(text, str) and text.strip()), "")


def last_generation_infotext(services, mode: str) -> str:
    """A1111's `params.txt`: the first infotext of the newest finished generation made in tab `mode` (from the
    job history, or the queue's memory without one); of the other tab when this one has none; "" when none."""
    found: list[tuple[str | None, str]] = []  # (mode, infotext), newest first
    store = getattr(services.queue, "store", None)
    if store is not None:
        for record in store.list(HISTORY_LOOKBACK, kinds=("generate",), states=("done",)):
            found.append((record.summary.get("mode"), _first_infotext(record.result)))
    else:
        for job in reversed(services.queue.recent()):
            if job.kind == "generate" and job.state == "done":
                found.append((getattr(job.payload, "mode", None), _first_infotext(job.result)))
    found = [(made_in, text) for made_in, text in found if text]
    return next((text for made_in, text in found if made_in == mode), found[0][1] if found else "")


def infotext_to_paste(services, mode: str, prompt: str | None) -> str:
    """↙️: the infotext to expand: the prompt box's own, or with an empty prompt the last generation's (not under
    --hide-ui-dir-config, as A1111, so one user's page does not read another's prompts); "" after a notice."""
    if (prompt or "").strip():
        if holds_parameters(prompt):
            return prompt
        notices.warn(NOTHING_TO_READ)
        return ""
    if getattr(services.flags, "hide_ui_dir_config", False):
        notices.warn("Nothing to read: the prompt is empty (reading the last generation is off on this server, "
                     "--hide-ui-dir-config)")
        return ""
    text = last_generation_infotext(services, mode)
    if not text:
        notices.warn("Nothing to read: the prompt is empty and there is no last generation")
    return text


def image_infotext(data) -> str:
    """The infotext of a picture dropped on the prompt box (bytes, or a path); "" after a notice."""
    if data is None:
        return ""
    try:
        if isinstance(data, (bytes, bytearray)):
            image = Image.open(io.BytesIO(data))
        else:
            image = Image.open(str(data))
        with image:
            text = read_infotext(image) or ""
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        notices.warn(f"Not a picture this UI can read ({type(exc).__name__}): drop a PNG, JPEG or WebP made by "
                     "a Stable Diffusion web UI")
        return ""
    if not holds_parameters(text):
        notices.warn("No generation parameters found in this image")
        return ""
    return text


class PasteTargets:
    """Everything of a tab that an infotext fills, as PNG Info's Send fills it: the shared fields
    (`pnginfo.FIELDS`), img2img's own (`pnginfo.IMG2IMG_FIELDS`; the picture and the sub-tab stay), Hires. fix,
    the Refiner, the ControlNet units, the Override settings and the settings shown in the tab."""

    def __init__(self, tab):
        self.tab = tab
        self.groups: list[tuple[str, list]] = [("fields", [getattr(tab, name) for name in pnginfo.FIELDS])]
        if tab.img2img is not None:
            self.groups.append(("img2img", tab.img2img.components(pnginfo.IMG2IMG_FIELDS)))
        if tab.hires is not None:
            self.groups.append(("hires", tab.hires.components()))
        if tab.refiner is not None:
            self.groups.append(("refiner", tab.refiner.components()))
        if tab.controlnet is not None:
            self.groups.append(("controlnet", tab.controlnet.paste_outputs()))
        if tab.override_settings is not None:
            self.groups.append(("override_settings", [tab.override_settings]))
        if tab.settings_in_ui is not None:
            self.groups.append(("settings_in_ui", list(tab.settings_in_ui.components)))

    def outputs(self) -> list:
        return [component for _, components in self.groups for component in components]

    def skipped(self) -> tuple:
        return (gr.skip(),) * len(self.outputs())

    def values(self, services, text: str, current_sampler=None, current_scheduler=None) -> tuple:
        """Values for `outputs()` from infotext `text` (all unchanged when it is empty, or with a notice when the
        text, or what an extension's callback made of it, cannot fill the fields)."""
        if not (text or "").strip():
            return self.skipped()
        try:
            return self._values(services, text, current_sampler, current_scheduler)
        except Exception as exc:  # noqa: BLE001 - a paste never breaks the tab
            notices.report(exc)
            return self.skipped()

    def _values(self, services, text: str, current_sampler, current_scheduler) -> tuple:
        params = parse_infotext(text)
        host = getattr(services, "extension_host", None)
        if host is not None:  # extensions' infotext_pasted callbacks may amend the parsed values, as for Send
            host.callbacks.call("infotext_pasted", text, params)
        values: list = []
        for name, components in self.groups:
            values += list(self._group(name, services, text, params, current_sampler, current_scheduler,
                                       len(components)))
        return tuple(values)

    def _group(self, name, services, text, params, sampler, scheduler, count) -> tuple:
        if name == "fields":
            return pnginfo.generation_values(text, sampler, scheduler, params)
        if name == "img2img":
            return pnginfo.img2img_values(text, params)
        if name == "hires":
            return hires_inputs.paste_values(services, params)
        if name == "refiner":
            return refiner_inputs.paste_values(services, params)
        if name == "controlnet":
            return pnginfo.controlnet_values(services, text, len(self.tab.controlnet.units))
        if name == "override_settings":
            return (override_settings.pasted(services, text),)
        if name == "settings_in_ui":
            return tuple(self.tab.settings_in_ui.pasted(services, text))
        return (gr.skip(),) * count


def counters(services, prompt, negative_prompt, steps) -> tuple[str, str]:
    """Both token counters of a tab for its prompts."""
    return (token_counter.token_counter(services, prompt, steps),
            token_counter.token_counter(services, negative_prompt, steps))


# --- wiring -------------------------------------------------------------------------------------------------------
def recount_after(dependency, tabs, services):
    """Chain a recount of `tabs`' token counters (GenerationTab) after `dependency` (an event that filled their
    prompts: the load event, a Send, a paste); returns the new dependency."""
    tabs = [tab for tab in tabs if tab is not None]
    inputs = [c for tab in tabs for c in (tab.prompt, tab.negative_prompt, tab.steps)]
    outputs = [c for tab in tabs for c in (tab.token_counter, tab.negative_token_counter)]

    def recount(*values):
        shown = []
        for start in range(0, len(values), 3):
            shown += counters(services, *values[start:start + 3])
        return tuple(shown)

    return dependency.then(recount, inputs=inputs, outputs=outputs, show_progress="hidden", queue=False,
                           api_visibility="undocumented")


def wire(tab, services) -> None:
    """↙️, a dropped picture, 🗑️ and ⇅ of a GenerationTab that has `prompt_tools`."""
    tools: PromptTools = tab.prompt_tools
    targets = PasteTargets(tab)
    outputs = targets.outputs()

    def paste(prompt, sampler, scheduler):
        return targets.values(services, infotext_to_paste(services, tab.mode, prompt), sampler, scheduler)

    pasted = tools.paste.click(paste, inputs=[tab.prompt, tab.sampler, tab.scheduler], outputs=outputs,
                               show_progress="hidden", api_visibility="undocumented")
    recount_after(pasted, [tab], services)
    if tools.prompt_image is not None:
        def dropped(data, sampler, scheduler):
            return (None, *targets.values(services, image_infotext(data), sampler, scheduler))

        upload = tools.prompt_image.upload(dropped, inputs=[tools.prompt_image, tab.sampler, tab.scheduler],
                                           outputs=[tools.prompt_image, *outputs], show_progress="hidden",
                                           api_visibility="undocumented")
        recount_after(upload, [tab], services)
    cleared = tools.clear_prompt.click(None, inputs=[tab.prompt, tab.negative_prompt],
                                       outputs=[tab.prompt, tab.negative_prompt],
                                       js="(prompt, negative) => webuiConfirmClearPrompt(prompt, negative)",
                                       api_visibility="undocumented")
    recount_after(cleared, [tab], services)
    if tools.res_switch is not None:
        tools.res_switch.click(swap, inputs=[tab.width, tab.height], outputs=[tab.width, tab.height],
                               show_progress="hidden", queue=False, api_visibility="undocumented")
