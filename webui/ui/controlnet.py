"""The ControlNet accordion of the txt2img and img2img tabs: one tab per unit (option `control_net_unit_count`, read
when the UI is built) with the controls of A1111's ControlNet extension, its handlers (the control type filter,
the preprocessor's sliders, refreshing the model list) and what a unit's values become: a request `ControlUnit`.

elem_ids are the extension's: `{tab}_controlnet_ControlNet-{i}_controlnet_enable_checkbox`, `..._input_image`,
`..._controlnet_preprocessor_dropdown`, ... (see `ELEM_IDS`). The preview (💥) lives in `controlnet_preview.py`,
pasting `ControlNet N` infotext back in `pnginfo.controlnet_values`.

Which units are on shows outside them: the accordion's title counts them ("ControlNet - 2 units") and their tabs
are marked ("ControlNet Unit 1 ✓"), also while the accordion is closed (`active_units`). Every value control of a
unit reaches the request (REQUEST_FIELDS); the Control Type only narrows the lists. The extension's "Low VRAM" box
is not offered: nothing here would act on it (the HTTP API still accepts its `low_vram` field).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from ..control.preprocessors import Preprocessor, UnknownPreprocessorError
from ..control.types import TYPE_NAMES, control_type, models_for_type
from ..control.units import CONTROL_MODES, CONTROL_RESIZE_MODES, NO_MODEL, NO_MODULE, ControlUnit
from ..core.errors import RequestError
from ..models.controlnet_registry import UnknownControlNetError
from . import canvas, notices

# Each unit's components: field -> elem_id suffix after `{tab}_controlnet_ControlNet-{i}` (A1111's where it has one).
ELEM_IDS = {
    "tab": "_tab",
    "use_input": "_controlnet_same_img2img_checkbox",
    "image": "_input_image",
    "mask": "_mask_image",
    "preview": "_generated_image",
    "enabled": "_controlnet_enable_checkbox",
    "pixel_perfect": "_controlnet_pixel_perfect_checkbox",
    "type_filter": "_controlnet_type_filter_radio",
    "module": "_controlnet_preprocessor_dropdown",
    "run_preprocessor": "_controlnet_trigger_preprocessor",
    "model": "_controlnet_model_dropdown",
    "refresh_models": "_controlnet_refresh_models",
    "weight": "_controlnet_control_weight_slider",
    "guidance_start": "_controlnet_start_control_step_slider",
    "guidance_end": "_controlnet_ending_control_step_slider",
    "processor_res": "_controlnet_preprocessor_resolution_slider",
    "threshold_a": "_controlnet_threshold_A_slider",
    "threshold_b": "_controlnet_threshold_B_slider",
    "control_mode": "_controlnet_control_mode_radio",
    "resize_mode": "_controlnet_resize_mode_radio",
    "use_preview": "_controlnet_use_preview_button",
}
# A unit's values Generate sends, in this order ("use_input" only in img2img).
REQUEST_FIELDS = ("enabled", "use_input", "image", "mask", "module", "model", "weight", "guidance_start",
                  "guidance_end", "processor_res", "threshold_a", "threshold_b", "control_mode", "resize_mode",
                  "pixel_perfect")
# What a change of preprocessor updates: its three sliders, the mask upload (inpaint modules), the model dropdown.
MODULE_OUTPUTS = ("processor_res", "threshold_a", "threshold_b", "mask", "model")
# What pasting a `ControlNet N` infotext entry sets in unit N.
PASTE_FIELDS = ("enabled", "type_filter", "module", "model", "weight", "resize_mode", "processor_res",
                "threshold_a", "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
USE_INPUT_LABEL = "Use the img2img input"
PANEL_TITLE = "ControlNet"
ENABLED_MARK = "✓"  # after an enabled unit's tab label
PREVIEW_AS_INPUT = "Use the preview as input (preprocessor: none)"


def unit_prefix(mode: str, index: int) -> str:
    return f"{mode}_controlnet_ControlNet-{index}"


def panel_title(enabled) -> str:
    """The accordion's title for the units' Enable values: "ControlNet", or "ControlNet - 2 units" while units are
    on (the extension's unit count badge), so a unit switched on shows while the accordion is closed."""
    count = sum(1 for on in enabled if on)
    return PANEL_TITLE if not count else f"{PANEL_TITLE} - {count} unit{'' if count == 1 else 's'}"


def unit_tab_label(index: int, enabled) -> str:
    """A unit's tab label: "ControlNet Unit 0", marked "ControlNet Unit 0 ✓" while the unit is enabled."""
    return f"ControlNet Unit {index}" + (f" {ENABLED_MARK}" if enabled else "")


def active_units(*enabled) -> tuple:
    """Updates of the accordion's title and each unit tab's label for the units' Enable values (in tab order)."""
    return (gr.update(label=panel_title(enabled)),
            *(gr.update(label=unit_tab_label(index, on)) for index, on in enumerate(enabled)))


@dataclass
class ControlNetUnitUI:
    """The components of one unit's tab."""
    mode: str
    index: int
    tab: gr.Tab
    use_input: gr.Checkbox | None  # img2img only: no image of its own, the engine uses the init image
    image: gr.Image
    mask: gr.Image
    preview: gr.Image
    enabled: gr.Checkbox
    pixel_perfect: gr.Checkbox
    type_filter: gr.Radio
    module: gr.Dropdown
    run_preprocessor: gr.Button
    model: gr.Dropdown
    refresh_models: gr.Button
    weight: gr.Slider
    guidance_start: gr.Slider
    guidance_end: gr.Slider
    processor_res: gr.Slider
    threshold_a: gr.Slider
    threshold_b: gr.Slider
    control_mode: gr.Radio
    resize_mode: gr.Radio
    use_preview: gr.Button

    def request_fields(self) -> tuple[str, ...]:
        return tuple(name for name in REQUEST_FIELDS if getattr(self, name) is not None)

    def components(self, names) -> list:
        return [getattr(self, name) for name in names]


@dataclass
class ControlNetPanel:
    """The accordion and its units."""
    mode: str
    accordion: gr.Accordion
    units: list[ControlNetUnitUI] = field(default_factory=list)

    def request_inputs(self) -> list:
        """Every unit's REQUEST_FIELDS components, unit after unit (what `split_values` takes apart)."""
        return [c for unit in self.units for c in unit.components(unit.request_fields())]

    def split_values(self, values) -> list[dict]:
        """The flat values of `request_inputs()` as one dict per unit, named as REQUEST_FIELDS."""
        values, units = list(values), []
        for unit in self.units:
            names = unit.request_fields()
            units.append(dict(zip(names, values[:len(names)])))
            values = values[len(names):]
        return units

    def paste_outputs(self) -> list:
        return [c for unit in self.units for c in unit.components(PASTE_FIELDS)]

    def elem_ids(self) -> list[str]:
        return [self.accordion.elem_id] + [getattr(unit, name).elem_id for unit in self.units for name in ELEM_IDS
                                           if getattr(unit, name) is not None]


# --- building ---------------------------------------------------------------------------------------------------
def _hidden_slider(label: str, elem_id: str, limits: tuple[float, float]) -> gr.Slider:
    """A preprocessor slider; `module_changed` gives it the module's label, range and default (or hides it).
    Until then its value is -1 ("the module's default") and its range spans every module's, so an API client that
    sets it without choosing in the page is not refused."""
    return gr.Slider(min(-1, limits[0]), limits[1], value=-1, label=label, visible=False, elem_id=elem_id)


def slider_limits(catalogue, slot: str) -> tuple[float, float]:
    """(lowest minimum, highest maximum) of the modules' `slot` sliders ("resolution", "threshold_a", ...)."""
    sliders = [getattr(entry, slot) for entry in catalogue if getattr(entry, slot) is not None]
    return (min((s.minimum for s in sliders), default=-1), max((s.maximum for s in sliders), default=1))


def build_unit(mode: str, index: int, module_names: list[str], model_titles: list[str],
               limits: dict[str, tuple[float, float]]) -> ControlNetUnitUI:
    """One unit's tab (inside the current gr.Tabs); `limits`: `slider_limits` of "resolution", "threshold_a" and
    "threshold_b"."""
    p = unit_prefix(mode, index)
    c: dict = {"mode": mode, "index": index, "use_input": None}
    with gr.Tab(unit_tab_label(index, False), id=f"{p}_tab", elem_id=f"{p}_tab") as c["tab"]:
        if mode == "img2img":
            c["use_input"] = gr.Checkbox(True, label=USE_INPUT_LABEL, elem_id=p + ELEM_IDS["use_input"],
                                         info="Untick to upload a control image of its own for this unit")
        with gr.Row(equal_height=True):
            c["image"] = gr.Image(label="Control image", type="pil", format="png", sources=["upload", "clipboard"],
                                  height=260, elem_id=p + ELEM_IDS["image"], visible=mode != "img2img",
                                  buttons=["download", "fullscreen"])
            c["preview"] = gr.Image(label="Preprocessor Preview", type="pil", format="png", interactive=False,
                                    buttons=["download"], height=260, elem_id=p + ELEM_IDS["preview"])
        c["mask"] = gr.Image(label="Inpaint mask (white = regenerate; empty: the img2img mask)", type="pil",
                             format="png", image_mode="L", sources=["upload", "clipboard"], height=200,
                             visible=False, elem_id=p + ELEM_IDS["mask"], buttons=["download", "fullscreen"])
        with gr.Row():
            c["enabled"] = gr.Checkbox(False, label="Enable", elem_id=p + ELEM_IDS["enabled"],
                                       elem_classes="cnet-unit-enabled")
            c["pixel_perfect"] = gr.Checkbox(False, label="Pixel Perfect", elem_id=p + ELEM_IDS["pixel_perfect"])
        c["type_filter"] = gr.Radio(list(TYPE_NAMES), value="All", label="Control Type",
                                    elem_id=p + ELEM_IDS["type_filter"])
        # Preprocessor and Model each on a row of their own, so a model's "name [hash]" title shows whole; the
        # sliders each full width (as the extension has them), so their labels stay on one line.
        with gr.Row():
            c["module"] = gr.Dropdown(module_names, value=NO_MODULE, label="Preprocessor", allow_custom_value=True,
                                      elem_id=p + ELEM_IDS["module"], scale=1)
            c["run_preprocessor"] = gr.Button("💥", elem_id=p + ELEM_IDS["run_preprocessor"],
                                              elem_classes="tool-button", scale=0, min_width=40)
        with gr.Row():
            c["model"] = gr.Dropdown(model_titles, value=NO_MODEL, label="Model", allow_custom_value=True,
                                     elem_id=p + ELEM_IDS["model"], scale=1)
            c["refresh_models"] = gr.Button("🔄", elem_id=p + ELEM_IDS["refresh_models"], elem_classes="tool-button",
                                            scale=0, min_width=40)
        c["weight"] = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control Weight",
                                elem_id=p + ELEM_IDS["weight"])
        c["guidance_start"] = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Starting Control Step",
                                        elem_id=p + ELEM_IDS["guidance_start"])
        c["guidance_end"] = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Ending Control Step",
                                      elem_id=p + ELEM_IDS["guidance_end"])
        c["processor_res"] = _hidden_slider("Preprocessor Resolution", p + ELEM_IDS["processor_res"],
                                            limits["resolution"])
        c["threshold_a"] = _hidden_slider("Threshold A", p + ELEM_IDS["threshold_a"], limits["threshold_a"])
        c["threshold_b"] = _hidden_slider("Threshold B", p + ELEM_IDS["threshold_b"], limits["threshold_b"])
        c["control_mode"] = gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control Mode",
                                     elem_id=p + ELEM_IDS["control_mode"])
        c["resize_mode"] = gr.Radio(list(CONTROL_RESIZE_MODES), value="Crop and Resize", label="Resize Mode",
                                    elem_id=p + ELEM_IDS["resize_mode"])
        c["use_preview"] = gr.Button(PREVIEW_AS_INPUT, size="sm", elem_id=p + ELEM_IDS["use_preview"])
    return ControlNetUnitUI(**c)


def build_panel(mode: str, services) -> ControlNetPanel:
    """The "ControlNet" accordion with `control_net_unit_count` unit tabs (inside the tab's settings column)."""
    count = int(services.options.get("control_net_unit_count"))
    modules, titles = services.preprocessors.names(), services.controlnets.titles()
    catalogue = services.preprocessors.catalogue()
    limits = {slot: slider_limits(catalogue, slot) for slot in ("resolution", "threshold_a", "threshold_b")}
    with gr.Accordion(PANEL_TITLE, open=False, elem_id=f"{mode}_controlnet") as accordion:
        with gr.Tabs(elem_id=f"{mode}_controlnet_tabs"):
            units = [build_unit(mode, index, modules, titles, limits) for index in range(count)]
    return ControlNetPanel(mode, accordion, units)


# --- handlers ---------------------------------------------------------------------------------------------------
def find_module(services, module) -> Preprocessor | None:
    try:
        return services.preprocessors.get(module)
    except UnknownPreprocessorError:
        return None


def slider_updates(entry: Preprocessor, pixel_perfect: bool, values=None) -> tuple[dict, dict, dict]:
    """Updates of the resolution and threshold A / B sliders for `entry`: its labels, ranges and steps, shown where
    the module has the slider (resolution hidden under Pixel Perfect, which computes it). `values` (three numbers or
    None each) sets the values, clamped to the range; "default" sets the module's defaults; None leaves them."""
    updates = []
    for slot, slider in enumerate((entry.resolution, entry.threshold_a, entry.threshold_b)):
        if slider is None:
            updates.append(gr.update(visible=False))
            continue
        props = {"label": slider.label, "minimum": slider.minimum, "maximum": slider.maximum, "step": slider.step,
                 "visible": not (slot == 0 and pixel_perfect)}
        if values == "default":
            props["value"] = slider.value
        elif values is not None:
            given = values[slot]
            props["value"] = slider.value if given is None or given == -1 else \
                min(max(float(given), slider.minimum), slider.maximum)
        updates.append(gr.update(**props))
    return tuple(updates)


def module_changed(services, module, pixel_perfect, reset: bool = False) -> tuple:
    """A new preprocessor (MODULE_OUTPUTS): its sliders (set to its defaults when `reset`, as when the user picks
    it), the mask upload for modules that use one, the model dropdown unless the module needs no model. An
    unknown name (typed or pasted) changes nothing here: Generate reports it."""
    entry = find_module(services, module)
    if entry is None:
        return (gr.skip(),) * len(MODULE_OUTPUTS)
    sliders = slider_updates(entry, bool(pixel_perfect), "default" if reset else None)
    return (*sliders, gr.update(visible=entry.uses_mask), gr.update(visible=not entry.model_free))


def resolution_shown(services, module, pixel_perfect) -> dict:
    """Pixel Perfect hides the resolution slider (the resolution then follows the generation size)."""
    entry = find_module(services, module)
    if entry is None or entry.resolution is None:
        return gr.skip()
    return gr.update(visible=not pixel_perfect)


def _model_choices(services, type_name: str) -> list[str]:
    return models_for_type(type_name, services.controlnets.titles())


def type_selected(services, type_name, module, model, pixel_perfect) -> tuple:
    """Control Type: narrow the Preprocessor and Model dropdowns to the type's and pick its default module (and
    its first model); then MODULE_OUTPUTS for that module, with its slider defaults. "All" lists everything and
    keeps the current choices."""
    try:
        modules = services.preprocessors.for_type(type_name)
        models = _model_choices(services, type_name)
        default = control_type(type_name).default_module
    except KeyError as exc:
        notices.warn(str(exc))
        return (gr.skip(),) * (2 + len(MODULE_OUTPUTS))
    if type_name == "All":
        keep_model = model if model in models else NO_MODEL
        return (gr.update(choices=modules), gr.update(choices=models, value=keep_model),
                *(gr.skip(),) * len(MODULE_OUTPUTS))
    if default not in modules:  # the type's usual module is not installed: its first one
        default = modules[1] if len(modules) > 1 else NO_MODULE
    chosen_model = models[1] if len(models) > 1 else NO_MODEL
    return (gr.update(choices=modules, value=default), gr.update(choices=models, value=chosen_model),
            *module_changed(services, default, pixel_perfect, reset=True))


def refresh_models(services, type_name, current) -> dict:
    """🔄: rescan models/ControlNet; the dropdown lists the type's models and keeps the chosen one (by name, so a
    pasted title whose file has just been added is found)."""
    services.controlnets.refresh()
    choices = _model_choices(services, type_name if type_name in TYPE_NAMES else "All")
    value = NO_MODEL
    if current and current != NO_MODEL:
        try:
            value = services.controlnets.resolve(current).title
        except UnknownControlNetError:
            notices.warn(f"ControlNet model {current!r} is not in models/ControlNet (after refreshing)")
            value = NO_MODEL
    return gr.update(choices=choices, value=value)


# --- the request ------------------------------------------------------------------------------------------------
def _number(values: dict, name: str, default, kind=float):
    value = values.get(name)
    return default if value is None else kind(value)


def _resolution(value) -> int:
    """The resolution slider's value; one below the smallest resolution (a slider never set) is -1: the module's
    default."""
    resolution = -1 if value is None else int(round(float(value)))
    return resolution if resolution >= 64 else -1


def unit_from_values(mode: str, index: int, values: dict) -> ControlUnit:
    """A unit tab's values (named as REQUEST_FIELDS) as a request unit. A disabled unit is an empty disabled one
    (it costs nothing and carries no pictures). An enabled unit needs its own image, except in img2img with "Use
    the img2img input" ticked (image None: the engine uses the init image)."""
    if not values.get("enabled"):
        return ControlUnit()
    use_input = mode == "img2img" and bool(values.get("use_input"))
    image = None if use_input else canvas.as_image(values.get("image"))
    if image is None and not use_input:
        hint = f'tick "{USE_INPUT_LABEL}"' if mode == "img2img" else "disable the unit"
        raise RequestError(f"controlnet_units[{index}]", f"ControlNet Unit {index} is enabled but has no control "
                           f"image: upload one (or {hint})")
    default = ControlUnit()
    return ControlUnit(
        enabled=True, module=values.get("module") or NO_MODULE, model=values.get("model") or NO_MODEL,
        weight=_number(values, "weight", default.weight), image=image, mask=canvas.as_image(values.get("mask")),
        resize_mode=values.get("resize_mode") or default.resize_mode,
        processor_res=_resolution(values.get("processor_res")),
        threshold_a=_number(values, "threshold_a", default.threshold_a),
        threshold_b=_number(values, "threshold_b", default.threshold_b),
        guidance_start=_number(values, "guidance_start", default.guidance_start),
        guidance_end=_number(values, "guidance_end", default.guidance_end),
        control_mode=values.get("control_mode") or default.control_mode,
        pixel_perfect=bool(values.get("pixel_perfect")))


def units_from_values(mode: str, units: list[dict] | None) -> list[ControlUnit]:
    """One request unit per unit tab, in tab order (so errors and infotext count units as the tabs do)."""
    return [unit_from_values(mode, index, values) for index, values in enumerate(units or [])]


# --- pasting infotext back --------------------------------------------------------------------------------------
def _choice(value, choices: tuple[str, ...], default: str) -> str:
    text = str(value or "").strip().lower()
    return next((choice for choice in choices if choice.lower() == text), default)


def _clamped(value, low: float, high: float, default: float):
    try:
        return min(max(float(value), low), high)
    except (TypeError, ValueError):
        return default


def _pasted_model(services, index: int, model: str) -> str:
    """The model's title here: the exact title if listed, else found by name; an unknown one is kept as written
    (Generate then says it is missing) with a notice now."""
    if not model or model == NO_MODEL:
        return NO_MODEL
    try:
        return services.controlnets.resolve(model).title
    except UnknownControlNetError:
        notices.warn(f"ControlNet {index}: model {model!r} is not in models/ControlNet; put the file there and "
                     "press 🔄, or pick another model")
        return model


def pasted_unit(services, index: int, unit: dict | None) -> tuple:
    """Values for PASTE_FIELDS of unit `index` from its parsed `ControlNet N` entry (`parse_unit_infotext`); a
    unit without an entry is only disabled."""
    if not unit:
        return (False, *(gr.skip(),) * (len(PASTE_FIELDS) - 1))
    default = ControlUnit()
    entry = find_module(services, unit.get("module") or NO_MODULE)
    module = entry.name if entry is not None else str(unit.get("module"))
    if entry is None:
        notices.warn(f"ControlNet {index}: unknown preprocessor {module!r}; pick one that is installed")
    model = _pasted_model(services, index, str(unit.get("model") or NO_MODEL))
    type_name = entry.control_type if entry is not None else "All"
    if model not in _model_choices(services, type_name):
        type_name = "All"
    pixel_perfect = bool(unit.get("pixel_perfect"))
    if entry is not None:
        sliders = slider_updates(entry, pixel_perfect, [unit.get(name) for name in
                                                        ("processor_res", "threshold_a", "threshold_b")])
    else:
        sliders = (gr.skip(),) * 3
    values = {
        "enabled": True,
        "type_filter": type_name,
        "module": gr.update(choices=services.preprocessors.for_type(type_name), value=module),
        "model": gr.update(choices=_model_choices(services, type_name), value=model),
        "weight": _clamped(unit.get("weight"), 0.0, 2.0, default.weight),
        "resize_mode": _choice(unit.get("resize_mode"), CONTROL_RESIZE_MODES, default.resize_mode),
        "processor_res": sliders[0], "threshold_a": sliders[1], "threshold_b": sliders[2],
        "guidance_start": _clamped(unit.get("guidance_start"), 0.0, 1.0, default.guidance_start),
        "guidance_end": _clamped(unit.get("guidance_end"), 0.0, 1.0, default.guidance_end),
        "pixel_perfect": pixel_perfect,
        "control_mode": _choice(unit.get("control_mode"), CONTROL_MODES, default.control_mode),
    }
    return tuple(values[name] for name in PASTE_FIELDS)


# --- wiring -----------------------------------------------------------------------------------------------------
def wire_panel(panel: ControlNetPanel, services, width: gr.Slider, height: gr.Slider, img2img=None) -> None:
    """Connect every unit: type filter, preprocessor sliders, model refresh, preview and "use the preview".
    `img2img` (the img2img tab's `Img2ImgInputs`) lets a unit that uses the img2img input preview that picture."""
    from . import controlnet_preview

    # The title counts the enabled units and their tabs are marked: on every change of an Enable box (the user's,
    # a paste's, the last used values') and on page load (values set from ui-config.json before the page is served).
    gr.on(None, active_units, inputs=[unit.enabled for unit in panel.units],
          outputs=[panel.accordion, *(unit.tab for unit in panel.units)], queue=False, show_progress="hidden",
          api_visibility="undocumented")
    for unit in panel.units:
        quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}
        module_outputs = unit.components(MODULE_OUTPUTS)

        def on_type(type_name, module, model, pixel_perfect):
            return type_selected(services, type_name, module, model, pixel_perfect)

        def on_module(module, pixel_perfect):
            return module_changed(services, module, pixel_perfect)

        def on_module_picked(module, pixel_perfect):
            return module_changed(services, module, pixel_perfect, reset=True)

        unit.type_filter.input(on_type, inputs=[unit.type_filter, unit.module, unit.model, unit.pixel_perfect],
                               outputs=[unit.module, unit.model, *module_outputs], queue=False, **quiet)
        # `change` also follows programmatic changes (type filter, paste, "use the preview"): labels, ranges,
        # visibility only; the user's own pick (`input`) also resets the values to the module's defaults.
        unit.module.change(on_module, inputs=[unit.module, unit.pixel_perfect], outputs=module_outputs,
                           queue=False, **quiet)
        unit.module.input(on_module_picked, inputs=[unit.module, unit.pixel_perfect], outputs=module_outputs,
                          queue=False, **quiet)
        unit.pixel_perfect.change(lambda module, on: resolution_shown(services, module, on),
                                  inputs=[unit.module, unit.pixel_perfect], outputs=[unit.processor_res],
                                  queue=False, **quiet)
        unit.refresh_models.click(lambda type_name, model: refresh_models(services, type_name, model),
                                  inputs=[unit.type_filter, unit.model], outputs=[unit.model], **quiet)
        if unit.use_input is not None:
            unit.use_input.change(lambda use: gr.update(visible=not use), inputs=[unit.use_input],
                                  outputs=[unit.image], queue=False, **quiet)
        controlnet_preview.wire_preview(unit, services, width, height, img2img)
