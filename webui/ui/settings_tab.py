"""The Settings tab (as A1111's): every persisted option, ours and the ones extensions add, one component each
(`setting_<key>`), grouped in sections, with a search box (`settings_search`), "Apply settings"
(`settings_submit`) and its result (`settings_result`), "Reload UI" (`settings_restart_gradio`: the server rebuilds
the page and the browser reloads it, as the Extensions tab's "Apply and restart UI"), and the Defaults page
(`defaults_page.py`). Options in the quicksettings row (`quicksettings_list`) are shown there instead.

Handlers are plain functions of `services` and the components' values: `apply_settings` turns what the page sends
back into option values, validates the changed ones and saves them; `current_values` gives what the components
show for the options as they are now.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ..settings.options import Option, OptionError, OptionRestrictedError
from . import defaults_page, notices
from .extensions_tab import RELOAD_JS

log = logging.getLogger(__name__)

# Shown elsewhere: the quicksettings row (checkpoint, SD VAE) and the Extensions tab (disabled extensions).
HIDDEN_KEYS = frozenset({"sd_model_checkpoint", "sd_vae", "disabled_extensions", "forge_modules_by_checkpoint"})

SAVING = ("saving-images", "Saving images/grids")
STABLE_DIFFUSION = ("sd", "Stable Diffusion")
CONTROLNET = ("control_net", "ControlNet")
OTHER = ("other", "Other")

# Sections of our own options (A1111's section ids where A1111 has them); options not named here and without a
# section of their own go to "Other".
BUILTIN_SECTIONS: dict[str, tuple[str, str]] = {
    "samples_save": SAVING, "samples_format": SAVING,
    "sd_checkpoints_limit": STABLE_DIFFUSION, "sd_checkpoint_cache_ram_gb": STABLE_DIFFUSION,
    "CLIP_stop_at_last_layers": STABLE_DIFFUSION, "randn_source": STABLE_DIFFUSION, "emphasis": STABLE_DIFFUSION,
    "enable_prompt_comments": STABLE_DIFFUSION, "comma_padding_backtrack": STABLE_DIFFUSION,
    "inpainting_mask_weight": STABLE_DIFFUSION, "img2img_background_color": STABLE_DIFFUSION,
}
BUILTIN_PREFIXES: tuple[tuple[str, tuple[str, str]], ...] = (("outdir_", SAVING), ("control_net_", CONTROLNET))
SECTION_ORDER = (SAVING[0], STABLE_DIFFUSION[0], CONTROLNET[0])  # first, in this order; then by title; Other last

# Our options that look better with a component other than the one for their kind (as in A1111).
BUILTIN_COMPONENTS: dict[str, tuple[Any, dict]] = {
    key: (gr.ColorPicker, {}) for key in ("img2img_background_color", "grid_text_active_color",
                                          "grid_text_inactive_color", "grid_background_color")}

RESTART_NOTE = "(requires restart)"
LOCKED_NOTE = ("Folder and file-name settings are hidden and cannot be changed here: this server runs with "
               "`--hide-ui-dir-config`.")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

# How a component's value maps to the option's value.
PLAIN = "plain"  # the value itself (converted to the option's kind)
JSON = "json"  # a Textbox holding the value as JSON
LIST = "list"  # a multiselect Dropdown holding the list's items


@dataclass(frozen=True)
class SettingField:
    """One option as the tab shows it: which option, how its component's value maps to it, where it is."""
    key: str
    label: str
    encoding: str
    section: str  # the section's id
    locked: bool = False  # a folder option under --hide-ui-dir-config: hidden, and a change is refused


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    keys: tuple[str, ...]


@dataclass
class SettingsTab:
    components: list  # one per field, in the order of `fields` (the inputs of Apply, the outputs of a reload)
    fields: list[SettingField]
    sections: list[Section]
    accordions: list  # gr.Accordion per section, in the order of `sections`
    search: gr.Textbox
    submit: gr.Button
    reload: gr.Button
    result: gr.Textbox
    warnings: list[str] = field(default_factory=list)  # components an extension asked for that could not be built
    restart_gradio: Any = None  # "Reload UI"
    defaults: defaults_page.DefaultsPage | None = None  # wired by blocks.py once the page exists
    applied: Any = None  # Apply's event: the page's `opts` follow it (a1111_page_api.wire)


# --- sections -----------------------------------------------------------------------------------------------------
def _section_of(key: str, option: Option) -> tuple[str, str]:
    section = option.section
    if isinstance(section, (tuple, list)) and len(section) >= 2 and section[0]:
        return str(section[0]), str(section[1] or section[0])
    if isinstance(section, str) and section:
        return section, section
    if key in BUILTIN_SECTIONS:
        return BUILTIN_SECTIONS[key]
    for prefix, builtin in BUILTIN_PREFIXES:
        if key.startswith(prefix):
            return builtin
    return OTHER


def setting_sections(services) -> list[Section]:
    """The shown options grouped by section: ours first (Saving images/grids, Stable Diffusion, ControlNet), then
    the others by title, "Other" last. Within a section, options keep the order they were declared in."""
    from .quicksettings import listed_keys  # (it builds its fields with this module's functions)

    titles: dict[str, str] = {}
    keys: dict[str, list[str]] = {}
    quick = set(listed_keys(services))
    for key, option in services.options.specs.items():
        if key in HIDDEN_KEYS or key in quick:
            continue
        section_id, title = _section_of(key, option)
        titles.setdefault(section_id, title)
        keys.setdefault(section_id, []).append(key)

    def rank(section_id: str) -> tuple:
        if section_id in SECTION_ORDER:
            return 0, SECTION_ORDER.index(section_id), ""
        return (2 if section_id == OTHER[0] else 1), 0, titles[section_id].lower()

    return [Section(s, titles[s], tuple(keys[s])) for s in sorted(keys, key=rank)]


# --- components ---------------------------------------------------------------------------------------------------
def _label(option: Option) -> str:
    label = option.label
    if option.restart and "restart" not in label.lower():
        label = f"{label} {RESTART_NOTE}".strip()
    return label


def _choices(option: Option) -> list | None:
    choices = option.offered or option.choices
    if callable(choices):
        choices = choices()
    return list(choices) if choices else None


def _list_items(value) -> list:
    """A list option's items as a multiselect Dropdown can hold them."""
    items = value if isinstance(value, (list, tuple)) else []
    return [v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else str(v) for v in items]


def _encode(value, encoding: str):
    if encoding == JSON:
        return json.dumps(value, ensure_ascii=False, default=str)
    if encoding == LIST:
        return _list_items(value)
    return value


def _slider_step(option: Option) -> float:
    if option.kind is int:
        return 1
    span = float(option.maximum) - float(option.minimum)
    return 10 ** math.floor(math.log10(span / 100)) if span > 0 else 0.01


def _default_component(key: str, option: Option, value, label: str, elem_id: str = "") -> tuple[Any, str]:
    """(the component for the option's kind, its encoding)."""
    common = dict(label=label, elem_id=elem_id or f"setting_{key}", info=option.info or None, interactive=True)
    kind = option.kind
    if kind is bool:
        return gr.Checkbox(value=bool(value), **common), PLAIN
    if kind is list:
        items = _list_items(value)
        try:
            choices = _choices(option) or []
        except Exception as exc:  # noqa: BLE001 - an extension's choices function failed: offer what is stored
            log.warning("choices of setting %r failed: %s", key, exc)
            choices = []
        choices = _list_items(choices) + [v for v in items if v not in choices]
        return gr.Dropdown(choices=choices, value=items, multiselect=True, allow_custom_value=True, **common), LIST
    if kind in (str, int, float) and option.choices:
        choices = _choices(option)
        if value not in choices:  # a callable's list that no longer holds the stored value: keep it visible
            choices.append(value)
        return gr.Dropdown(choices=choices, value=value, **common), PLAIN
    if kind in (int, float):
        if option.minimum is not None and option.maximum is not None:
            return gr.Slider(minimum=option.minimum, maximum=option.maximum, step=_slider_step(option), value=value,
                             **common), PLAIN
        return gr.Number(value=value, **common), PLAIN  # the range, if any, is checked on Apply
    if kind is str:
        return gr.Textbox(value="" if value is None else str(value), lines=1, **common), PLAIN
    return gr.Textbox(value=_encode(value, JSON), lines=1, **common), JSON


def _requested_component(key: str, option: Option, component, args, value, label: str, elem_id: str = ""):
    """The component class (or factory) an extension asked for, with its arguments; our label, value and
    elem_id win over the arguments'. Built unrendered, so a failure leaves nothing in the page."""
    args = args() if callable(args) else args
    kwargs = dict(args or {})
    kwargs.update(label=label, value=value, elem_id=elem_id or f"setting_{key}", render=False)
    if option.info:
        kwargs["info"] = option.info
    try:
        parameters = inspect.signature(component).parameters
    except (TypeError, ValueError):
        parameters = None
    if parameters is not None:
        named = {n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        for name in ("info", "label", "render"):  # not every component has a hint or a label
            if name in kwargs and name not in named and (name == "info" or not open_ended):
                del kwargs[name]
    built = component(**kwargs)
    if not isinstance(built, gr.components.Component):
        raise TypeError(f"{getattr(component, '__name__', component)!r} did not make a Gradio component")
    return built


def _build_field(key: str, option: Option, value, section_id: str, warnings: list[str], elem_id: str = ""):
    """The setting's component (elem_id `setting_<key>` unless given) and its field record."""
    label = _label(option)
    component, args = option.component, option.component_args
    if component is None and key in BUILTIN_COMPONENTS:
        component, args = BUILTIN_COMPONENTS[key]
    if component is not None:
        try:
            built = _requested_component(key, option, component, args, value, label, elem_id)
            built.render()
            return built, SettingField(key, label, PLAIN, section_id)
        except Exception as exc:  # noqa: BLE001 - an extension's component: fall back to the one for its kind
            name = getattr(component, "__name__", repr(component))
            message = f"setting {key!r}: could not build its {name} ({type(exc).__name__}: {exc}); " \
                      f"showing a plain {option.kind.__name__} field instead"
            log.warning(message)
            warnings.append(message)
    try:
        built, encoding = _default_component(key, option, value, label, elem_id)
    except Exception as exc:  # noqa: BLE001 - a choices function that failed: edit the value as text
        message = f"setting {key!r}: {type(exc).__name__}: {exc}; showing it as text"
        log.warning(message)
        warnings.append(message)
        encoding = PLAIN if option.kind is str else JSON
        built = gr.Textbox(value=str(value) if encoding == PLAIN else _encode(value, JSON), label=label,
                           elem_id=elem_id or f"setting_{key}", info=option.info or None, interactive=True)
    return built, SettingField(key, label, encoding, section_id)


# What a locked field holds instead of its value: the page (and Gradio's config of it) never carries the path.
LOCKED_VALUE = "(hidden: --hide-ui-dir-config)"


def _locked_field(key: str, option: Option, value, section_id: str):
    """A setting --hide-ui-dir-config locks (an output folder...): a hidden, read-only field holding LOCKED_VALUE,
    which Apply sends back and which means "unchanged"."""
    encoding = PLAIN if option.kind is str else JSON
    built = gr.Textbox(value=LOCKED_VALUE, label=_label(option), elem_id=f"setting_{key}", visible=False,
                       interactive=False)
    return built, SettingField(key, _label(option), encoding, section_id, locked=True)


def build_settings_tab(services) -> SettingsTab:
    """The tab's content (inside the lead's `gr.Tab("Settings")`), built after extensions added their options;
    Apply, reload and search are wired here. The lead wires `current_values` on page load."""
    sections = setting_sections(services)
    values = services.options.as_dict()
    components, fields, accordions, warnings = [], [], [], []
    with gr.Row(elem_id="settings_top"):
        submit = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
        reload = gr.Button("Reload settings", elem_id="settings_reload")
        restart_gradio = gr.Button("Reload UI", elem_id="settings_restart_gradio")
        restarting = gr.Checkbox(False, visible="hidden", elem_id="settings_restarting")
    result = gr.Textbox(label="Result", interactive=False, elem_id="settings_result", lines=1)
    search = gr.Textbox(label="Search", placeholder="Search settings", elem_id="settings_search", lines=1)
    for index, section in enumerate(sections):
        safe_id = _ID_UNSAFE.sub("_", section.id)
        with gr.Accordion(section.title, open=index == 0, elem_id=f"settings_{safe_id}") as accordion:
            if any(services.options.locked(key) for key in section.keys):
                gr.Markdown(LOCKED_NOTE, elem_id=f"settings_locked_note_{safe_id}")
            for key in section.keys:
                option = services.options.specs[key]
                value = values.get(key, option.default)
                if services.options.locked(key):
                    component, setting = _locked_field(key, option, value, section.id)
                else:
                    component, setting = _build_field(key, option, value, section.id, warnings)
                components.append(component)
                fields.append(setting)
        accordions.append(accordion)
    with gr.Accordion("Defaults", open=False, elem_id="settings_section_defaults"):
        defaults = defaults_page.build_defaults_page()
    if warnings:
        gr.Markdown("\n".join(f"- {w}" for w in warnings), elem_id="settings_warnings")
    tab = SettingsTab(components, fields, sections, accordions, search, submit, reload, result, warnings,
                      restart_gradio, defaults)
    _wire(tab, services)
    restart_gradio.click(lambda: reload_ui(services), outputs=[restarting], show_progress="hidden",
                         api_visibility="undocumented").then(None, inputs=[restarting], js=RELOAD_JS,
                                                             api_visibility="undocumented")
    return tab


def reload_ui(services) -> bool:
    """"Reload UI" (A1111's `settings_restart_gradio`): the server restarts and rebuilds the page (settings that
    need a restart, the quicksettings list, ui-config.json defaults take effect); True when the restart began, and
    the page then waits for the server and reloads itself."""
    try:
        services.restart()
    except Exception as exc:  # noqa: BLE001 - a restart that cannot start is a notice, the page stays
        notices.report(exc)
        return False
    notices.info("Reloading the UI")
    return True


def _wire(tab: SettingsTab, services) -> None:
    fields = tab.fields
    tab.applied = tab.submit.click(lambda *values: apply_settings(services, fields, *values),
                                   inputs=tab.components, outputs=[tab.result], show_progress="minimal",
                                   api_visibility="undocumented")
    tab.reload.click(lambda: current_values(services, tab), outputs=tab.components, show_progress="hidden",
                     api_visibility="undocumented")
    tab.search.change(lambda query: search_settings(tab, query), inputs=[tab.search],
                      outputs=[*tab.components, *tab.accordions], show_progress="hidden", trigger_mode="always_last",
                      api_visibility="undocumented")


# --- handlers -----------------------------------------------------------------------------------------------------
def current_values(services, tab: SettingsTab) -> list:
    """What each of `tab.components` shows for the options as they are now: plain values, except an update with
    fresh choices for options whose choices come from a function."""
    values = services.options.as_dict()
    shown = []
    for setting, component in zip(tab.fields, tab.components):
        option = services.options.specs.get(setting.key)
        if option is None:  # cannot happen within one run; keep the component as it is
            shown.append(gr.skip())
            continue
        if setting.locked:
            shown.append(LOCKED_VALUE)
            continue
        value = _encode(values.get(setting.key, option.default), setting.encoding)
        dynamic = callable(option.choices) or option.offered is not None
        if dynamic and option.component is None and isinstance(component, gr.Dropdown):
            try:
                choices = _choices(option) or []
            except Exception as exc:  # noqa: BLE001 - keep the old list
                log.warning("choices of setting %r failed: %s", setting.key, exc)
                shown.append(value)
                continue
            if setting.encoding == LIST:
                choices = _list_items(choices) + [v for v in value if v not in choices]
            elif value not in choices:
                choices.append(value)
            shown.append(gr.update(choices=choices, value=value))
        else:
            shown.append(value)
    return shown


def _decode(setting: SettingField, option: Option, raw):
    """A component's value as the option's kind (a Slider's 3.0 for an int option is 3); what cannot be
    converted is left for validation to name."""
    if setting.encoding == JSON:
        try:
            return json.loads(raw if isinstance(raw, str) else "")
        except ValueError as exc:
            raise OptionError(f"setting {setting.label or setting.key!r}: not valid JSON ({exc})") from None
    if setting.encoding == LIST:
        return list(raw or [])
    kind = option.kind
    if kind is int and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if kind is str and raw is None:
        return ""
    return raw


def changed_values(services, fields: list[SettingField], values) -> dict[str, Any]:
    """The options whose component shows something other than their current value, as option values."""
    if len(values) != len(fields):
        raise ValueError(f"expected {len(fields)} setting values, got {len(values)}")
    current = services.options.as_dict()
    changes = {}
    for setting, raw in zip(fields, values):
        option = services.options.specs.get(setting.key)
        if option is None:
            continue
        if setting.locked:  # anything but the placeholder is a change, which validation refuses naming the option
            if raw != LOCKED_VALUE:
                changes[setting.key] = raw
            continue
        now = current.get(setting.key, option.default)
        if raw == _encode(now, setting.encoding):
            continue
        value = _decode(setting, option, raw)
        if value != now or type(value) is not type(now):
            changes[setting.key] = value
    return changes


def apply_settings(services, fields: list[SettingField], *values) -> str:
    """"Apply settings": validate the changed options and save them all, or none when any is invalid. Returns the
    result line ("2 settings changed: a, b." / "Nothing changed." / what was wrong)."""
    try:
        changes = changed_values(services, fields, values)
        checked = services.options.validate(changes)
    except OptionRestrictedError as exc:  # only a hand-made request changes a hidden field: say so loudly
        notices.warn(str(exc))
        return str(exc)
    except OptionError as exc:
        return str(exc)
    current = services.options.as_dict()
    checked = {k: v for k, v in checked.items() if current.get(k) != v or type(current.get(k)) is not type(v)}
    if not checked:
        return "Nothing changed."
    try:  # through the queue: applied between jobs, never under a running generation
        job = services.set_options(checked, source="ui")
    except (OptionError, ValueError, KeyError) as exc:
        return str(exc)
    job.wait()
    if not job.finished_ok:
        notices.warn(job.error or f"Applying the settings ended {job.state}")
        return f"Could not apply the settings: {job.error or job.state}"
    keys = list(checked)
    message = f"{len(keys)} setting{'s' if len(keys) != 1 else ''} changed: {', '.join(keys)}."
    restart = [k for k in keys if services.options.specs.get(k) is not None and services.options.specs[k].restart]
    if restart:
        message += f" Restart the UI for {', '.join(restart)} to take effect."
    return message


def search_settings(tab: SettingsTab, query: str | None) -> list:
    """Updates for the search box: the components whose label (or key) holds the text stay visible, and the
    sections holding one are shown open; an empty search shows everything again."""
    text = (query or "").strip().lower()
    matches = [not f.locked and (not text or text in f.label.lower() or text in f.key.lower()) for f in tab.fields]
    updates = [gr.update(visible=m) for m in matches]
    for section in tab.sections:
        found = any(m for f, m in zip(tab.fields, matches) if f.section == section.id)
        updates.append(gr.update(visible=found, open=True) if text else gr.update(visible=True))
    return updates
