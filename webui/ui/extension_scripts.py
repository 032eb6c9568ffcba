"""Extensions' controls in the txt2img / img2img tabs: always-on A1111 scripts (each in its group, where the
script usually draws its own accordion), our API's sections (an accordion each), and the Script dropdown of
selectable scripts (the chosen one's controls shown under it).

Their values reach the request as `script_args` (by lower-cased title), `script_name` and `script_run_args`:
the same fields the HTTP API fills from `alwayson_scripts` / `script_name` + `script_args`. Building also
records each control's default value, which the API uses for args a client leaves out.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ..engine import scripts as builtin_scripts
from ..extensions.a1111.runtime import RUNTIME
from . import input_accordion
from . import scripts as ui_scripts

NONE = "None"


@dataclass
class ScriptEntry:
    title: str
    extension: str
    alwayson: bool
    controls: list = field(default_factory=list)
    group: Any = None  # a selectable script's group (shown when chosen)
    builder: Any = None  # a built-in script's UI module (webui/ui/scripts): its `wire` runs with the tab's

    @property
    def key(self) -> str:
        return self.title.lower()


@dataclass
class ScriptsPanel:
    mode: str
    entries: list[ScriptEntry]
    dropdown: gr.Dropdown | None

    def request_inputs(self) -> list:
        controls = [c for entry in self.entries for c in entry.controls]
        return ([self.dropdown] if self.dropdown is not None else []) + controls

    def values(self, values: list) -> dict:
        """{"script_args": {key: [...]}, "script_name": str, "script_run_args": [...]} for the inputs' values."""
        values = list(values)
        chosen = values.pop(0) if self.dropdown is not None else NONE
        out = {"script_args": {}, "script_name": "", "script_run_args": []}
        for entry in self.entries:
            own, values = values[:len(entry.controls)], values[len(entry.controls):]
            if entry.alwayson:
                out["script_args"][entry.key] = own
            elif chosen and chosen != NONE and entry.title == chosen:
                out["script_name"], out["script_run_args"] = entry.title, own
        return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", text.lower()))


def _controls(host, extension: str, build, where: str) -> list:
    """Call an extension's UI builder; its components (anything else dropped), or [] when it raises."""
    ext = host.get(extension)
    try:
        with RUNTIME.loading(extension, ext.path) if ext else contextlib.nullcontext():
            made = build()
    except Exception as exc:  # noqa: BLE001 - a broken UI never stops the page from building
        host.problems.report(extension, where, exc)
        return []
    if made is None:
        return []
    if not isinstance(made, (list, tuple)):
        made = [made]
    return [c for c in made if isinstance(c, gr.components.Component)]


_ENABLE_WORDS = re.compile(r"^\s*(enable|enabled|active|activate|on)\b", re.IGNORECASE)


def _enable_flags(title: str, controls: list, container) -> None:
    """An always-on section's checkboxes switch its features on: each is named for the restored values' note
    (the title; "title: label" unless the label says "Enable" / "Active"). A first control that is a checkbox
    inside an accordion of the section (ours: the section's own) is its enable flag: shown in that accordion's
    header (`input_accordion`), as A1111's InputAccordion does; one made by the InputAccordion shim is already."""
    for component in controls:
        if isinstance(component, gr.Checkbox) and not input_accordion.feature_name(component):
            label = str(component.label or "").strip()
            plain = not label or label.lower() == title.lower() or _ENABLE_WORDS.match(label)
            input_accordion.mark_feature(component, title if plain else f"{title}: {label}")
    first = controls[0] if controls else None
    if not isinstance(first, gr.Checkbox) or input_accordion.CHECKBOX_CLASS in input_accordion.classes_of(first):
        return
    accordion = _accordion_within(first, container)
    if accordion is not None and input_accordion.ACCORDION_CLASS not in input_accordion.classes_of(accordion):
        input_accordion.adopt(accordion, first, input_accordion.feature_name(first))


def _accordion_within(component, container):
    """The closest accordion holding `component`, when it lies inside `container` (or is it)."""
    parent = component.parent
    while parent is not None:
        if isinstance(parent, gr.Accordion):
            return parent if parent is container or _holds(container, parent) else None
        if parent is container:
            return None
        parent = parent.parent
    return None


def _holds(container, block) -> bool:
    parent = block.parent
    while parent is not None:
        if parent is container:
            return True
        parent = parent.parent
    return False


def _defaults(controls: list) -> list:
    return [_default(c) for c in controls]


def _default(control):
    """The value the page would send for an untouched control, which the API uses for args a client leaves off:
    an index for a `type="index"` choice (Gradio keeps the choice's text as its value), "" for an empty text box
    (Gradio 6's default is None; scripts written for A1111's Gradio 3 expect a string)."""
    value = getattr(control, "value", None)
    if getattr(control, "type", None) == "index" and value is not None and hasattr(control, "preprocess"):
        try:
            return control.preprocess(value)
        except Exception:  # noqa: BLE001 - a value outside the choices stays as it is
            return value
    if value is None and isinstance(control, gr.Textbox):
        return ""
    return value


def build_scripts(mode: str, host, services=None) -> ScriptsPanel | None:
    """Lay out the extensions' controls and the Script dropdown for this tab (inside the current layout): A1111's
    built-in scripts first, then the extensions'. None: nothing to show."""
    runner = host.runners.get(mode) if host is not None else None
    is_img2img = mode == "img2img"
    entries: list[ScriptEntry] = []
    for script in (runner.alwayson_scripts if runner else []):
        extension = runner.extension(script)
        with gr.Group(elem_id=f"script_{mode}_{_slug(script.title())}", elem_classes="extension-script") as group:
            controls = _controls(host, extension, lambda s=script: s.ui(is_img2img), f"ui() of '{script.title()}'")
        _enable_flags(script.title(), controls, group)
        runner.defaults[id(script)] = _defaults(controls)
        entries.append(ScriptEntry(script.title(), extension, True, controls))
    for api in (host.apis() if host is not None else []):
        for section in api.sections:
            if mode not in section.modes:
                continue
            with gr.Accordion(section.title, open=section.open,
                              elem_id=f"{mode}_{_slug(api.name)}_{_slug(section.title)}") as accordion:
                controls = _controls(host, api.name, lambda s=section: s.build(mode), f"section '{section.title}'")
            _enable_flags(section.title, controls, accordion)
            host.record_section_defaults(section, mode, _defaults(controls))
            entries.append(ScriptEntry(section.title, api.name, True, controls))
    dropdown = None
    selectable = list(runner.selectable_scripts) if runner else []
    builtin = [(title, ui_scripts.builder(title)) for title in builtin_scripts.titles(mode)]
    if selectable or builtin:
        dropdown = gr.Dropdown([NONE, *[title for title, _ in builtin], *[s.title() for s in selectable]],
                               value=NONE, label="Script", elem_id=f"{mode}_script_list")
        for title, builder in builtin:
            with gr.Group(visible=False, elem_id=f"script_{mode}_{_slug(title)}") as group:
                controls = list(builder.build(mode, services))
            entries.append(ScriptEntry(title, "", False, controls, group, builder))
        for script in selectable:
            extension = runner.extension(script)
            with gr.Group(visible=False, elem_id=f"script_{mode}_{_slug(script.title())}") as group:
                controls = _controls(host, extension, lambda s=script: s.ui(is_img2img),
                                     f"ui() of '{script.title()}'")
            runner.defaults[id(script)] = _defaults(controls)
            entries.append(ScriptEntry(script.title(), extension, False, controls, group))
    if not entries:
        return None
    return ScriptsPanel(mode, entries, dropdown)


def wire_scripts(panel: ScriptsPanel, services=None) -> None:
    """Choosing a script in the dropdown shows its controls (and hides the others'); built-in scripts wire their
    own helpers (X/Y/Z plot's value fillers, ...)."""
    if panel.dropdown is None:
        return
    groups = [entry for entry in panel.entries if entry.group is not None]
    for entry in groups:
        if entry.builder is not None and hasattr(entry.builder, "wire"):
            entry.builder.wire(entry.controls, panel.mode, services)

    def show(chosen):
        return [gr.Group(visible=entry.title == chosen) for entry in groups]

    panel.dropdown.change(show, inputs=[panel.dropdown], outputs=[entry.group for entry in groups],
                          show_progress="hidden", api_visibility="undocumented")


def record_defaults_offscreen(host) -> None:
    """Without a web UI (--nowebui) the API still needs each script's default args: build the controls in a
    throwaway Blocks."""
    with gr.Blocks(analytics_enabled=False):
        for mode in ("txt2img", "img2img"):
            build_scripts(mode, host)


class ComponentCallbacks:
    """While the UI is built, every Gradio component's creation is announced to the scripts of the tab being
    built and to `before_component` / `after_component` callbacks (A1111's mechanism), with the component's
    keyword arguments (elem_id, label, ...)."""

    def __init__(self, host):
        self.host = host
        self.mode: str | None = None

    @contextlib.contextmanager
    def tab(self, mode: str):
        previous, self.mode = self.mode, mode
        try:
            yield
        finally:
            self.mode = previous

    def _scripts(self) -> list:
        runner = self.host.runners.get(self.mode) if self.mode else None
        return list(runner.scripts) if runner else []

    def _announce(self, when: str, component, kwargs: dict) -> None:
        runner = self.host.runners.get(self.mode) if self.mode else None
        for script in self._scripts():
            try:
                getattr(script, f"{when}_component")(component, **kwargs)
                targeted = getattr(script, f"on_{when}_component_elem_id", None)
                if targeted and kwargs.get("elem_id") == targeted[0]:
                    targeted[1](_OnComponent(component))
            except Exception as exc:  # noqa: BLE001
                self.host.problems.report(runner.extension(script) if runner else "",
                                          f"{when}_component of script '{script.title()}'", exc)
        self.host.callbacks.call(f"{when}_component", component, **kwargs)

    @contextlib.contextmanager
    def installed(self):
        """Patch component creation for the duration (only when something listens)."""
        listening = any(self.host.runners.get(m) and self.host.runners[m].scripts for m in ("txt2img", "img2img")) \
            or self.host.callbacks.has("before_component") or self.host.callbacks.has("after_component")
        if not listening:
            yield self
            return
        original = gr.components.Component.__init__
        announcer = self
        busy = {"depth": 0}

        def init(component, *args, **kwargs):
            if busy["depth"]:  # components made by a callback are not announced again
                return original(component, *args, **kwargs)
            busy["depth"] += 1
            try:
                announcer._announce("before", component, kwargs)
            finally:
                busy["depth"] -= 1
            original(component, *args, **kwargs)
            busy["depth"] += 1
            try:
                announcer._announce("after", component, kwargs)
            finally:
                busy["depth"] -= 1

        gr.components.Component.__init__ = init
        try:
            yield self
        finally:
            gr.components.Component.__init__ = original


@dataclass
class _OnComponent:
    component: Any
