"""A1111's quicksettings: the options named in `quicksettings_list` (Clip skip, ENSD, ...) shown in the top row
beside the checkpoint and SD VAE pickers (which are always there), each `setting_<key>` as in A1111 and saved as soon
as it changes (through the queue, as the Settings tab's Apply: between jobs). The Settings tab leaves them out, as
A1111's does. The list is read when the page is built: a change takes effect after "Reload UI".
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import gradio as gr

from ..settings.options import OptionError
from . import notices
from .settings_tab import HIDDEN_KEYS, SettingField, _build_field, _encode, changed_values

log = logging.getLogger(__name__)

ALWAYS = ("sd_model_checkpoint", "sd_vae")  # built by blocks.py's row with their refresh buttons
SECTION = "quicksettings"


def listed_keys(services) -> list[str]:
    """The keys of `quicksettings_list` shown as quicksettings: known options, in the list's order, once each; not
    the two pickers that are always shown, not the Extensions tab's list, not a folder option the server locks."""
    try:
        wanted = services.options.get("quicksettings_list") or []
    except KeyError:
        return []
    keys: list[str] = []
    for key in wanted:
        key = str(key)
        if key in keys or key in ALWAYS or key in HIDDEN_KEYS or key not in services.options.specs:
            continue
        if services.options.locked(key):
            continue
        keys.append(key)
    return keys


@dataclass
class Quicksettings:
    components: list = field(default_factory=list)
    fields: list[SettingField] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    saved: list = field(default_factory=list)  # each one's save event: the page's `opts` follow them


def build_quicksettings(services) -> Quicksettings:
    """The listed options' components (inside the top row), each as the Settings tab would build it, wired to save
    at once."""
    quick = Quicksettings()
    values = services.options.as_dict()
    for key in listed_keys(services):
        option = services.options.specs[key]
        try:
            component, setting = _build_field(key, option, values.get(key, option.default), SECTION, quick.warnings)
        except Exception as exc:  # noqa: BLE001 - an extension's odd option must not break the top row
            log.warning("quicksetting %r could not be built: %s", key, exc)
            continue
        component.scale, component.min_width = 0, 240
        quick.components.append(component)
        quick.fields.append(setting)
    for component, setting in zip(quick.components, quick.fields):
        quick.saved.append(component.change(lambda raw, setting=setting: save_setting(services, setting, raw),
                                            inputs=[component], outputs=[component], show_progress="hidden",
                                            trigger_mode="always_last", api_visibility="undocumented"))
    return quick


def _shown(services, setting: SettingField):
    option = services.options.specs[setting.key]
    return _encode(services.options.as_dict().get(setting.key, option.default), setting.encoding)


def save_setting(services, setting: SettingField, raw):
    """Save one quicksetting's new value (A1111's run_settings_single). Unchanged: nothing happens. Refused (a value
    out of range, a failed save): a notice, and the component shows the saved value again."""
    try:
        changes = changed_values(services, [setting], [raw])
        if not changes:
            return gr.skip()
        checked = services.options.validate(changes)
        job = services.set_options(checked, source="ui")
    except (OptionError, ValueError, KeyError) as exc:
        notices.warn(str(exc))
        return _shown(services, setting)
    job.wait()
    if not job.finished_ok:
        notices.warn(job.error or f"Saving {setting.label} ended {job.state}")
        return _shown(services, setting)
    return gr.skip()


def current_values(services, quick: Quicksettings) -> list:
    """On page load: what each quicksetting is now (another page or the API may have changed it)."""
    return [_shown(services, setting) for setting in quick.fields]
