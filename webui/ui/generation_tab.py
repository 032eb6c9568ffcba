"""The layout of a txt2img / img2img tab (A1111's: prompts and Generate on top, settings left, gallery right)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, fields

import gradio as gr

from ..core.request import RESIZE_MODES
from ..core.samplers import SAMPLER_NAMES, SCHEDULE_NAMES
from ..core.sizes import MAX_SIDE, MIN_SIDE, SIDE_STEP
from . import (controlnet, extension_scripts, generation, hires_inputs, img2img_inputs, main_ui_options,
               override_settings, styles, token_counter)
from .controlnet import ControlNetPanel
from .extension_scripts import ScriptsPanel
from .main_ui_options import MainUiOptions
from .extra_networks_panel import ExtraNetworksPanel, build_panel, wire_panel
from .hires_inputs import HIRES_FIELDS, HiresInputs
from .img2img_inputs import Img2ImgInputs
from . import gallery_actions, refiner_inputs, run_assets
from . import prompt_tools
from .prompt_tools import PromptTools
from . import style_editor
from .style_editor import StyleEditor
from .gallery_actions import GalleryActions
from .refiner_inputs import REFINER_FIELDS, RefinerInputs
from . import last_used_note
from .last_used_note import RestoredNote


@dataclass
class GenerationTab:
    mode: str
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    sampler: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    width: gr.Slider
    height: gr.Slider
    batch_count: gr.Slider
    batch_size: gr.Slider
    cfg_scale: gr.Slider
    seed: gr.Number
    random_seed: gr.Button
    reuse_seed: gr.Button
    progress: gr.HTML
    gallery: gr.Gallery
    infotext: gr.HTML
    state: gr.State
    token_counter: gr.HTML
    negative_token_counter: gr.HTML
    token_button: gr.Button
    negative_token_button: gr.Button
    extra_networks: gr.Button
    networks: ExtraNetworksPanel
    styles: gr.Dropdown
    style_apply: gr.Button
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    actions: GalleryActions | None = None  # 📂 💾 🗜️ 📐 under the gallery (gallery_actions.py)
    img2img: Img2ImgInputs | None = None  # the img2img tab's sub-tabs, inpaint options, outpainting
    controlnet: ControlNetPanel | None = None  # the ControlNet units' accordion
    scripts: ScriptsPanel | None = None  # extensions' controls and the Script dropdown
    hires: HiresInputs | None = None  # txt2img's Hires. fix accordion
    refiner: RefinerInputs | None = None  # the Refiner accordion (refiner_inputs.REFINER_FIELDS)
    override_settings: gr.Dropdown | None = None  # settings an infotext sent here carries (override_settings.py)
    live_preview: gr.HTML | None = None  # the live preview, shown over the gallery while a job samples
    warnings: gr.HTML | None = None  # `{tab}_warnings`: the last job's warnings or error, under the infotext
    settings_in_ui: MainUiOptions | None = None  # settings shown in the tab (main_ui_options.py), inputs after styles
    # A1111's seed extras ("Extra" beside the seed shows them) and the Tiling checkbox (generation.SEED_EXTRA_FIELDS)
    subseed_show: gr.Checkbox | None = None
    seed_extras: gr.Group | None = None
    subseed: gr.Number | None = None
    random_subseed: gr.Button | None = None
    reuse_subseed: gr.Button | None = None
    subseed_strength: gr.Slider | None = None
    seed_resize_from_w: gr.Slider | None = None
    seed_resize_from_h: gr.Slider | None = None
    tiling: gr.Checkbox | None = None
    distilled_cfg_scale: gr.Slider | None = None  # Forge's: FLUX.1 dev's guidance embedding
    restored_note: RestoredNote | None = None  # "Restored last used values" with Undo (last_used_note.py)
    prompt_tools: PromptTools | None = None  # ↙️ 🗑️, the dropped-picture upload, ⇅ (prompt_tools.py)
    style_editor: StyleEditor | None = None  # 🖌️ and the styles dialog (style_editor.py)

    def request_inputs(self) -> list:
        """The components of `generation.build_request`'s shared values, in its order."""
        return [self.prompt, self.negative_prompt, self.sampler, self.scheduler, self.steps, self.width,
                self.height, self.batch_count, self.batch_size, self.cfg_scale, self.seed]

    def seed_extra_inputs(self) -> list:
        """The seed extras and Tiling, in generation.SEED_EXTRA_FIELDS' order (none for a tab built without them)."""
        found = [getattr(self, name) for name in generation.SEED_EXTRA_FIELDS]
        return found if all(component is not None for component in found) else []

    def generate_inputs(self) -> list:
        """`generate`'s inputs: the tab's state, the shared values, img2img's own (IMG2IMG_FIELDS) or txt2img's hires
        fix (HIRES_FIELDS), the seed extras and Tiling (SEED_EXTRA_FIELDS), the ControlNet units' values, the
        extensions' controls (and Script dropdown), the Override settings (when the tab has them), and last the
        chosen styles."""
        own = self.img2img.components(generation.IMG2IMG_FIELDS) if self.img2img else []
        own += self.hires.components(HIRES_FIELDS) if self.hires else []
        own += self.seed_extra_inputs()
        own += self.refiner.components() if self.refiner else []  # the Refiner accordion (REFINER_FIELDS)
        units = self.controlnet.request_inputs() if self.controlnet else []
        scripts = self.scripts.request_inputs() if self.scripts else []
        overrides = [self.override_settings] if self.override_settings is not None else []
        in_ui = self.settings_in_ui.components if self.settings_in_ui else []
        return [self.state, *self.request_inputs(), *own, *units, *scripts, *overrides, self.styles, *in_ui]

    def generate_outputs(self) -> list:
        return [getattr(self, name) for name in generation.OUTPUTS]

    def elem_ids(self) -> list[str]:
        return [getattr(self, f.name).elem_id for f in fields(self)
                if isinstance(getattr(self, f.name), gr.components.Component) and getattr(self, f.name).elem_id]


def _prompt_box(c: dict, tab: str, key: str, counter: str, **textbox) -> None:
    """A prompt textbox with its token counter (`{tab}_token_counter` / `{tab}_negative_token_counter`) in the
    top right corner, and the hidden button the page script presses, debounced, to recount."""
    button = counter.replace("counter", "button")
    with gr.Column(elem_classes="prompt-container"):
        c[key] = gr.Textbox(max_lines=20, show_label=False, **textbox)
        c[counter] = gr.HTML(token_counter.EMPTY, elem_id=f"{tab}_{counter}", elem_classes="token-counter",
                             padding=False)
        c[button] = gr.Button(visible="hidden", elem_id=f"{tab}_{button}")


def _tools(c: dict, p: str) -> None:
    """Under Generate, as A1111 1.10: a row of tools (🎴 extra networks, ↙️ 🗑️ the prompt tools, 📋 apply styles,
    🖌️ the styles editor, which also creates styles), then the style picker."""
    with gr.Row(elem_id=f"{p}_tools", elem_classes="prompt-tools"):
        c["extra_networks"] = gr.Button("🎴", elem_id=f"{p}_extra_networks", elem_classes="tool-button",
                                        scale=0, min_width=40)
        c["prompt_tools"] = prompt_tools.build_buttons(p)  # ↙️ 🗑️
        c["style_apply"] = gr.Button("📋", elem_id=f"{p}_style_apply", elem_classes="tool-button", scale=0,
                                     min_width=40)
        edit_button = style_editor.build_button(p)  # 🖌️
    with gr.Row(elem_id=f"{p}_styles_row", elem_classes="prompt-tools"):
        c["styles"] = gr.Dropdown([], value=[], multiselect=True, label="Styles", show_label=False,
                                  elem_id=f"{p}_styles", scale=1, min_width=120, container=False)
    c["style_editor"] = style_editor.build_dialog(p, edit_button)


def _seed_extras(c: dict, p: str) -> None:
    """A1111's seed extras, hidden until "Extra" is ticked: the variation seed (🎲, ♻️) and strength, and "Resize
    seed from" width / height (0: off)."""
    with gr.Group(visible=False, elem_id=f"{p}_seed_extras") as c["seed_extras"]:
        with gr.Row(elem_id=f"{p}_subseed_row"):
            c["subseed"] = gr.Number(value=-1, precision=0, label="Variation seed", elem_id=f"{p}_subseed", scale=4)
            c["random_subseed"] = gr.Button("🎲", elem_id=f"{p}_random_subseed", elem_classes="tool-button",
                                            scale=0, min_width=40)
            c["reuse_subseed"] = gr.Button("♻️", elem_id=f"{p}_reuse_subseed", elem_classes="tool-button",
                                           scale=0, min_width=40)
            c["subseed_strength"] = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Variation strength",
                                              elem_id=f"{p}_subseed_strength", scale=4)
        with gr.Row(elem_id=f"{p}_seed_resize_from_row"):
            c["seed_resize_from_w"] = gr.Slider(0, MAX_SIDE, value=0, step=SIDE_STEP,
                                                label="Resize seed from width", elem_id=f"{p}_seed_resize_from_w")
            c["seed_resize_from_h"] = gr.Slider(0, MAX_SIDE, value=0, step=SIDE_STEP,
                                                label="Resize seed from height", elem_id=f"{p}_seed_resize_from_h")


def build_tab(mode: str, hide_dirs: bool = False, services=None) -> GenerationTab:
    """Lay out the tab's components (inside the current gr.Tab); `wire_tab` connects them. `hide_dirs`
    (--hide-ui-dir-config) hides img2img's batch folders. With `services`, the tab has the ControlNet accordion
    (its unit count, preprocessors and models are read now)."""
    p = mode
    c = {}
    own = {}  # img2img's own inputs
    with gr.Row(elem_id=f"{p}_toprow", equal_height=True):
        with gr.Column(scale=6, elem_classes="prompt-row"):
            _prompt_box(c, p, "prompt", "token_counter", label="Prompt", lines=3, elem_id=f"{p}_prompt",
                        placeholder="Prompt (press Ctrl+Enter to generate)")
            _prompt_box(c, p, "negative_prompt", "negative_token_counter", label="Negative prompt", lines=2,
                        elem_id=f"{p}_neg_prompt", placeholder="Negative prompt (press Ctrl+Enter to generate)")
            prompt_image = prompt_tools.build_prompt_image(p)  # a picture dropped on the prompt box
        with gr.Column(scale=2, min_width=240, elem_classes="generate-box"):
            with gr.Row(elem_id=f"{p}_generate_box", elem_classes="generate-buttons"):  # A1111's: Interrupt and
                # Skip take Generate's place side by side while a job runs (run_assets.py), nothing moves
                c["interrupt"] = gr.Button("Interrupt", elem_id=f"{p}_interrupt", visible=False, variant="stop",
                                           min_width=0)
                c["skip"] = gr.Button("Skip", elem_id=f"{p}_skip", visible=False, min_width=0)
                c["generate"] = gr.Button("Generate", elem_id=f"{p}_generate", variant="primary", min_width=0)
            _tools(c, p)
    c["networks"] = build_panel(p)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, elem_id=f"{p}_settings"):
            c["restored_note"] = last_used_note.build(p)  # shown by the page's load event (ui_config)
            if mode == "img2img":
                own.update(img2img_inputs.build_sources(hide_dirs))
                own["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize mode",
                                              elem_id="resize_mode")
                own.update(img2img_inputs.build_inpaint_controls())
            with gr.Row():
                c["sampler"] = gr.Dropdown([s.name for s in SAMPLER_NAMES], value="DPM++ 2M", label="Sampling method",
                                           elem_id=f"{p}_sampling")
                c["scheduler"] = gr.Dropdown(list(SCHEDULE_NAMES), value="Automatic", label="Schedule type",
                                             elem_id=f"{p}_scheduler")
            c["steps"] = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{p}_steps")
            with gr.Row():
                with gr.Column(scale=3):
                    c["width"] = gr.Slider(MIN_SIDE, MAX_SIDE, value=512, step=SIDE_STEP, label="Width",
                                           elem_id=f"{p}_width")
                    c["height"] = gr.Slider(MIN_SIDE, MAX_SIDE, value=512, step=SIDE_STEP, label="Height",
                                            elem_id=f"{p}_height")
                res_switch = prompt_tools.build_res_switch(p)  # ⇅
                with gr.Column(scale=2):
                    c["batch_count"] = gr.Slider(1, 100, value=1, step=1, label="Batch count",
                                                 elem_id=f"{p}_batch_count")
                    c["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size",
                                                elem_id=f"{p}_batch_size")
            c["cfg_scale"] = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{p}_cfg_scale")
            c["distilled_cfg_scale"] = gr.Slider(0.0, 30.0, value=3.5, step=0.1, label="Distilled CFG Scale",
                                                 elem_id=f"{p}_distilled_cfg_scale",
                                                 info="FLUX.1 dev's guidance (other checkpoints ignore it)")
            if mode == "img2img":
                own["denoising_strength"] = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                                      elem_id="img2img_denoising_strength")
            with gr.Row():
                c["seed"] = gr.Number(value=-1, precision=0, label="Seed", elem_id=f"{p}_seed", scale=4)
                c["random_seed"] = gr.Button("🎲", elem_id=f"{p}_random_seed", elem_classes="tool-button",
                                             scale=0, min_width=40)
                c["reuse_seed"] = gr.Button("♻️", elem_id=f"{p}_reuse_seed", elem_classes="tool-button",
                                            scale=0, min_width=40)
                c["subseed_show"] = gr.Checkbox(label="Extra", value=False, elem_id=f"{p}_subseed_show", scale=1,
                                                min_width=80)
            _seed_extras(c, p)
            with gr.Row(elem_id=f"{p}_checkboxes"):
                c["tiling"] = gr.Checkbox(label="Tiling", value=False, elem_id=f"{p}_tiling",
                                          info="a picture that tiles seamlessly")
            if mode == "img2img":
                own.update(img2img_inputs.build_outpaint())
            else:
                c["hires"] = hires_inputs.build(services)
            c["refiner"] = refiner_inputs.build(p, services)
            c["settings_in_ui"] = main_ui_options.build(p, services)
            c["override_settings"] = override_settings.build(p)
            if services is not None:
                with gr.Column(elem_id=f"{p}_script_container"):  # A1111's id: extensions' scripts look in it
                    c["controlnet"] = controlnet.build_panel(mode, services)
                    c["scripts"] = extension_scripts.build_scripts(mode, getattr(services, "extension_host", None),
                                                                  services)
        with gr.Column(scale=1, elem_id=f"{p}_results"):
            with gr.Column(elem_id=f"{p}_gallery_container", elem_classes="run-gallery"):
                c["gallery"] = gr.Gallery(label="Output", elem_id=f"{p}_gallery", format="png", columns=4,
                                          preview=True, object_fit="contain", interactive=False,
                                          height=run_assets.GALLERY_HEIGHT, type="pil",  # fits the window
                                          buttons=["download", "download_all", "fullscreen"])  # no Share
                # over the gallery, taking no room (run_assets.py): the live preview, then the progress panel
                c["live_preview"] = gr.HTML("", elem_id=f"{p}_live_preview", elem_classes="live-preview")
                c["progress"] = gr.HTML(elem_id=f"{p}_progress", elem_classes="progress-overlay")
            with gr.Row(elem_id=f"{p}_send_buttons"):
                c["actions"] = gallery_actions.build_buttons(p, services)  # 📂 💾 🗜️
                c["send_to_img2img"] = gr.Button("Send to img2img", elem_id=f"{p}_send_to_img2img", size="sm")
                c["send_to_inpaint"] = gr.Button("Send to inpaint", elem_id=f"{p}_send_to_inpaint", size="sm")
                gallery_actions.extras_button(c["actions"], p)  # 📐
            c["infotext"] = gr.HTML(elem_id=f"html_info_{p}")
            c["warnings"] = gr.HTML("", elem_id=f"{p}_warnings", elem_classes="job-log")  # the last job's warnings
            gallery_actions.build_outputs(c["actions"], p)  # the saved files' download and "Saved: …" line
            # A1111's last element of the output panel: A1111 extensions put their controls after it (Config-Presets
            # builds its presets row in after_component of this id); nothing here presses it
            gr.Button(visible=False, elem_id=f"{p}_generation_info_button")
    c["state"] = gr.State(generation.new_state())
    c["prompt_tools"].prompt_image, c["prompt_tools"].res_switch = prompt_image, res_switch
    if mode == "img2img":
        c["img2img"] = Img2ImgInputs(**own)
    return GenerationTab(mode=mode, **c)


def wire_tab(tab: GenerationTab, services) -> None:
    mode = tab.mode
    shared = len(tab.request_inputs())
    own_count = len(generation.IMG2IMG_FIELDS) if tab.img2img else len(HIRES_FIELDS) if tab.hires else 0
    extra_count = len(tab.seed_extra_inputs())
    refiner_count = len(REFINER_FIELDS) if tab.refiner else 0

    unit_count = len(tab.controlnet.request_inputs()) if tab.controlnet else 0

    in_ui_count = len(tab.settings_in_ui.fields) if tab.settings_in_ui else 0

    def run(state, *values):
        if in_ui_count:
            values, in_ui = values[:-in_ui_count], values[-in_ui_count:]
        settings_in_ui = (tab.settings_in_ui, in_ui) if in_ui_count else None
        *values, overrides, chosen_styles = values if tab.override_settings is not None \
            else (*values[:-1], None, values[-1])
        own = dict(zip(generation.IMG2IMG_FIELDS, values[shared:shared + own_count])) if tab.img2img else None
        hires = dict(zip(HIRES_FIELDS, values[shared:shared + own_count])) if tab.hires else None
        extras = dict(zip(generation.SEED_EXTRA_FIELDS, values[shared + own_count:shared + own_count + extra_count]))
        start = shared + own_count + extra_count
        refiner = dict(zip(REFINER_FIELDS, values[start:start + refiner_count])) if tab.refiner else None
        rest = values[start + refiner_count:]
        units = tab.controlnet.split_values(rest[:unit_count]) if tab.controlnet else None
        scripts = tab.scripts.values(rest[unit_count:]) if tab.scripts else None
        yield from generation.generate(services, mode, state, *values[:shared], img2img=own, styles=chosen_styles,
                                       controlnet=units, scripts=scripts, hires=hires, override_settings=overrides,
                                       seed_extras=extras, refiner=refiner, settings_in_ui=settings_in_ui)

    run.__signature__ = _generate_signature(tab)

    def select(state, event: gr.SelectData):
        return generation.select_image(state, event.index)

    tab.generate.click(run, inputs=tab.generate_inputs(), outputs=tab.generate_outputs(),
                       show_progress="hidden", concurrency_limit=None, api_name=mode)
    tab.interrupt.click(lambda state: generation.interrupt(services, state), inputs=[tab.state],
                        outputs=[tab.interrupt], concurrency_limit=None, show_progress="hidden",
                        api_visibility="undocumented")
    tab.skip.click(lambda state: generation.skip_batch(services, state), inputs=[tab.state],
                   concurrency_limit=None, show_progress="hidden", api_visibility="undocumented")
    tab.random_seed.click(generation.random_seed, outputs=[tab.seed], show_progress="hidden",
                          api_visibility="undocumented")
    tab.reuse_seed.click(generation.reuse_seed, inputs=[tab.state], outputs=[tab.seed], show_progress="hidden",
                         api_visibility="undocumented")
    tab.gallery.select(select, inputs=[tab.state], outputs=[tab.state, tab.infotext], show_progress="hidden",
                       api_visibility="undocumented")
    if tab.seed_extra_inputs():
        _wire_seed_extras(tab)
    _wire_prompt_tools(tab, services)
    if tab.prompt_tools is not None:
        prompt_tools.wire(tab, services)
    wire_panel(tab.networks, tab.extra_networks, services)
    if tab.img2img:
        img2img_inputs.wire_inputs(tab.img2img)
    if tab.hires:
        hires_inputs.wire(tab.hires, tab.width, tab.height, services)
    if tab.refiner:
        refiner_inputs.wire(tab.refiner, services)
    if tab.controlnet:
        controlnet.wire_panel(tab.controlnet, services, tab.width, tab.height, tab.img2img)
    if tab.scripts:
        extension_scripts.wire_scripts(tab.scripts, services)
    if tab.actions:
        gallery_actions.wire(tab.actions, mode, tab.state, tab.gallery, services)


def _wire_seed_extras(tab: GenerationTab) -> None:
    """"Extra" shows or hides the seed extras (also when a paste or the last used values tick it); 🎲 and ♻️ of
    the variation seed."""
    tab.subseed_show.change(lambda shown: gr.Group(visible=bool(shown)), inputs=[tab.subseed_show],
                            outputs=[tab.seed_extras], show_progress="hidden", queue=False,
                            api_visibility="undocumented")
    tab.random_subseed.click(generation.random_seed, outputs=[tab.subseed], show_progress="hidden",
                             api_visibility="undocumented")
    tab.reuse_subseed.click(generation.reuse_subseed, inputs=[tab.state], outputs=[tab.subseed],
                            show_progress="hidden", api_visibility="undocumented")


# Names of `generation.build_request`'s shared values (GenerationTab.request_inputs' order).
REQUEST_NAMES = ("prompt", "negative_prompt", "sampler", "scheduler", "steps", "width", "height", "batch_count",
                 "batch_size", "cfg_scale", "seed")


def _generate_signature(tab: GenerationTab) -> inspect.Signature:
    """Generate's parameters as Gradio's API shows them (`/txt2img`, `/img2img`): named after the request's
    fields, the ControlNet units' optional (left out: the unit is disabled), so a client passing only the prompt
    and settings keeps working; the Override settings ("Key: value" entries) come before the styles, optional
    too."""
    def parameter(name: str, **default) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, **default)

    own = generation.IMG2IMG_FIELDS if tab.img2img else ()
    hires = list(HIRES_FIELDS) if tab.hires else []  # optional: left out, hires fix is off
    hires += list(generation.SEED_EXTRA_FIELDS) if tab.seed_extra_inputs() else []  # left out: off
    hires += list(REFINER_FIELDS) if tab.refiner else []  # left out: no refiner
    units = [f"controlnet_{unit.index}_{name}" for unit in (tab.controlnet.units if tab.controlnet else [])
             for name in unit.request_fields()]
    scripts = [f"script_arg_{i}" for i in range(len(tab.scripts.request_inputs()))] if tab.scripts else []
    return inspect.Signature([parameter("state"), *map(parameter, (*REQUEST_NAMES, *own)),
                              *(parameter(name, default=None) for name in hires + units + scripts),
                              *([parameter("override_settings", default=None)] if tab.override_settings is not None
                                else []),
                              parameter("styles", default=None),
                              *(parameter(f"setting_{field.key}", default=None)
                                for field in (tab.settings_in_ui.fields if tab.settings_in_ui else []))])


def _wire_prompt_tools(tab: GenerationTab, services) -> None:
    """Token counters (recounted by the page script, debounced, when a prompt or the steps change) and 📋."""

    def count(text, steps):
        return token_counter.token_counter(services, text, steps)

    def apply(prompt, negative_prompt, chosen):
        return styles.apply_styles(services, prompt, negative_prompt, chosen)

    for box, counter, button in ((tab.prompt, tab.token_counter, tab.token_button),
                                 (tab.negative_prompt, tab.negative_token_counter, tab.negative_token_button)):
        button.click(count, inputs=[box, tab.steps], outputs=[counter], show_progress="hidden",
                     trigger_mode="always_last", queue=False, api_visibility="undocumented")
        recount = f"() => {{ webuiCountTokens('{button.elem_id}'); }}"
        box.change(None, js=recount, api_visibility="undocumented")
        tab.steps.change(None, js=recount, api_visibility="undocumented")
    tab.style_apply.click(apply, inputs=[tab.prompt, tab.negative_prompt, tab.styles],
                          outputs=[tab.prompt, tab.negative_prompt, tab.styles], show_progress="hidden",
                          api_visibility="undocumented")
