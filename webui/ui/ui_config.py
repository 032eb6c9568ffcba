"""The page's defaults from A1111's `ui-config.json`, and the last used values of the generation tabs.

`ui-config.json` (in the data dir) maps `tab/Label/field` to a value: `txt2img/Sampling steps/value`,
`txt2img/Width/maximum`, `img2img/Prompt/visible`, ... Fields: `value` and `visible` for every input; `minimum`,
`maximum` and `step` for sliders. On start-up the page takes the values the file has and writes back the keys it
lacks with the page's own defaults, so the file lists everything a user can set. A key is the top tab's id, the
labels of the sub-tabs the component sits in, and its label; a label that repeats in the same place keeps only
its first component. A value that does not fit (a word for a number, a choice that does not exist) is ignored
with a warning in the log.

Last used values (option `ui_remember_last_used`): what a tab's Generate (or Extras' Generate) sent is written to
`ui-last-used.json` under the same keys, and a newly opened page starts from those values. Nothing is switched on
silently: the txt2img / img2img tabs show a "Restored last used values" note naming the features the restore
ticked (Hires. fix, Outpainting, Refiner, extensions' sections: their checkboxes sit in the accordions' headers),
with Undo (back to the defaults) and ✕.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from ..core.sizes import MAX_SIDE
from . import input_accordion, last_used_note

log = logging.getLogger(__name__)

INPUTS = (gr.Textbox, gr.Number, gr.Slider, gr.Checkbox, gr.Dropdown, gr.Radio, gr.CheckboxGroup)
SKIPPED_TABS = ("settings", "extensions", "history")  # their values live in config.json, or are not settings


# Dialogs that edit a file (the 🖌️ styles editor, a card's 🔧 metadata editor): their fields hold what is being
# edited, not how the page starts, so they get no ui-config key and are never remembered or restored.
EDITOR_CLASSES = frozenset({"styles-dialog", "extra-network-editor"})


def _classes(block) -> list[str]:
    classes = getattr(block, "elem_classes", None) or []
    return [classes] if isinstance(classes, str) else list(classes)


def labelled_inputs(blocks: gr.Blocks) -> dict[str, gr.components.Component]:
    """Each input with a label, by its ui-config key (without the field): A1111's `txt2img/Sampling steps`; when
    that label is taken in the tab already, the sub-tabs' labels go in between (`txt2img/ControlNet Unit 1/
    Weight`); a label still repeated keeps its first component."""
    found: dict[str, gr.components.Component] = {}

    def walk(block, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        for child in getattr(block, "children", None) or []:
            if isinstance(child, gr.Tab):
                name = str(child.id) if not path and child.id is not None else str(child.label)
                if not path and name in SKIPPED_TABS:
                    continue
                yield from walk(child, path + [name])
            elif isinstance(child, INPUTS):
                if path and child.label:
                    yield path, child
            elif not (EDITOR_CLASSES & set(_classes(child))):  # an editor's fields are not the page's settings
                yield from walk(child, path)

    for path, component in walk(blocks, []):
        label = str(component.label)
        for key in ("/".join([path[0], label]), "/".join([*path, label])):
            if key not in found:
                found[key] = component
                break
    return found


def _choices(component) -> list:
    return [choice[1] if isinstance(choice, (tuple, list)) else choice for choice in component.choices or []]


def fitted(component, value) -> Any:
    """`value` as `component` holds it; ValueError when it does not fit."""
    if isinstance(component, gr.Checkbox):
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if isinstance(component, (gr.Slider, gr.Number)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        if isinstance(component, gr.Slider) and not component.minimum <= value <= component.maximum:
            raise ValueError(f"outside {component.minimum}..{component.maximum}")
        return value
    if isinstance(component, gr.Textbox):
        if not isinstance(value, str):
            raise ValueError("expected text")
        return value
    if isinstance(component, gr.CheckboxGroup) or (isinstance(component, gr.Dropdown) and component.multiselect):
        if not isinstance(value, list) or any(item not in _choices(component) for item in value):
            raise ValueError("expected a list of the choices")
        return value
    if isinstance(component, (gr.Dropdown, gr.Radio)):
        if value not in _choices(component) and not getattr(component, "allow_custom_value", False):
            raise ValueError(f"not one of {_choices(component)}")
        return value
    raise ValueError(f"{type(component).__name__} is not a remembered kind")


def _fields(component) -> tuple[str, ...]:
    return ("value", "visible", "minimum", "maximum", "step") if isinstance(component, gr.Slider) \
        else ("value", "visible")


def _current(component, name: str):
    value = getattr(component, name)
    if name == "visible":
        return value is not False and value != "hidden"
    if value is None and isinstance(component, gr.Textbox):
        return ""
    return value


def _json_file(path: Path) -> dict | None:
    """The file's object; {} when there is no file; None when it cannot be read (said in the log)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("could not read %s (%s): using the page's defaults, the file is left as it is", path, exc)
        return None
    if not isinstance(data, dict):
        log.warning("%s does not hold a JSON object: using the page's defaults, the file is left as it is", path)
        return None
    return data


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=4, ensure_ascii=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# The image-side sliders' maximum before it became the API's (core/sizes.py): every ui-config.json written before
# then holds it, so it is read as "not chosen" and brought to MAX_SIDE (one limit for page and API).
FORMER_SIDE_MAXIMUM = 2048


def _former_side_limit(component, name: str, stored) -> bool:
    return (name == "maximum" and isinstance(component, gr.Slider) and component.maximum == MAX_SIDE
            and stored == FORMER_SIDE_MAXIMUM)


def apply_ui_config(path: Path, inputs: dict[str, Any]) -> list[str]:
    """Set the inputs from `path` (ui-config.json) and write back the keys it lacks; the problems, as said."""
    data = _json_file(path)
    readable = data is not None  # a file the user broke is never written over
    data = data or {}
    problems, added = [], False
    for key, component in inputs.items():
        for name in _fields(component):
            if name == "visible" and not _current(component, "visible"):
                continue  # hidden when built (a flag, a mode): the file neither shows it nor records it
            full = f"{key}/{name}"
            if full not in data:
                current = _current(component, name)
                if current is not None:  # no value (an empty picker): nothing to offer
                    data[full] = current
                    added = True
                continue
            wanted = data[full]
            if _former_side_limit(component, name, wanted):  # written by a version whose sliders stopped at 2048
                data[full] = wanted = MAX_SIDE
                added = True
            if wanted is None:
                continue
            try:
                if name == "value":
                    wanted = fitted(component, wanted)
                elif name == "visible":
                    if not isinstance(wanted, bool):
                        raise ValueError("expected true or false")
                elif isinstance(wanted, bool) or not isinstance(wanted, (int, float)):
                    raise ValueError("expected a number")
                setattr(component, name, wanted)
            except ValueError as exc:
                problems.append(f"{path.name}: {full} = {wanted!r} ignored ({exc})")
    for problem in problems:
        log.warning(problem)
    if added and readable:
        try:
            _write_json(path, data)
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc)
    return problems


@dataclass
class LastUsed:
    """The values a tab's Generate last sent, by ui-config key: `ui-last-used.json`, or with logins one file per
    user (`ui-last-used-<user>.json`), so nobody's prompts reach another user's page."""
    folder: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def path(self, user: str | None = None) -> Path:
        if not user:
            return self.folder / "ui-last-used.json"
        return self.folder / f"ui-last-used-{re.sub(r'[^A-Za-z0-9_.-]', '_', user)}.json"

    def remember(self, values: dict[str, Any], user: str | None = None) -> None:
        path = self.path(user)
        with self._lock:
            data = _json_file(path) or {}
            data.update(values)
            try:
                _write_json(path, data)
            except OSError as exc:
                log.warning("could not write %s: %s", path, exc)

    def values_for(self, inputs: dict[str, Any], user: str | None = None) -> list:
        """For each input: its last used value (when it still fits), else `gr.skip()`."""
        with self._lock:
            data = _json_file(self.path(user)) or {}
        shown = []
        for key, component in inputs.items():
            try:
                shown.append(fitted(component, data[key]) if key in data else gr.skip())
            except ValueError:
                shown.append(gr.skip())  # a choice that is gone, a range that changed: the page's default
        return shown


def wire_last_used(services, inputs: dict[str, Any], buttons: dict[str, Any], notes: dict[str, Any] | None = None
                   ) -> tuple:
    """Each of `buttons` (top tab id -> its Generate button) remembers its tab's inputs when clicked. Returns
    (restore, outputs) for the page's load event: the remembered inputs' last used values (when the option
    `ui_remember_last_used` is on), then for each of `notes` (tab id -> `last_used_note.RestoredNote`) the note:
    shown when the restore changed a value of that tab, naming the features it switched on; its Undo puts those
    values back to their defaults (ui-config's), ✕ hides it."""
    store = LastUsed(services.paths.data_dir)
    remembered = {key: component for key, component in inputs.items()
                  if key.split("/", 1)[0] in buttons and _rememberable(component)}
    defaults = {key: _current(component, "value") for key, component in remembered.items()}  # ui-config applied
    notes = {tab: note for tab, note in (notes or {}).items() if note is not None}
    for tab, button in buttons.items():
        keys = [key for key in remembered if key.split("/", 1)[0] == tab]
        if not keys:
            continue

        def remember(request: gr.Request, *values, keys=keys):  # Gradio passes the request first
            if services.options.get("ui_remember_last_used"):
                store.remember(dict(zip(keys, values)), _user(request))

        button.click(remember, inputs=[remembered[key] for key in keys], show_progress="hidden", queue=False,
                     api_visibility="undocumented")
    for tab, note in notes.items():
        _wire_note(tab, note, remembered, defaults)

    def restore(request: gr.Request | None = None):
        if not services.options.get("ui_remember_last_used"):
            return [gr.skip()] * len(remembered) + [gr.skip()] * (3 * len(notes))
        values = store.values_for(remembered, _user(request))
        changed = restored_changes(remembered, values, defaults)
        shown = []
        for tab, note in notes.items():
            keys = changed.get(tab, [])
            shown += last_used_note.shown(switched_on(remembered, keys, dict(zip(remembered, values)), defaults),
                                          keys)
        return [*values, *shown]

    return restore, [*remembered.values(), *(output for note in notes.values() for output in note.outputs())]


def restored_changes(remembered: dict[str, Any], values: list, defaults: dict[str, Any]) -> dict[str, list[str]]:
    """For each top tab, the keys whose restored value (`values`, in `remembered`'s order; `gr.skip()` where
    nothing was restored) differs from the default."""
    changed: dict[str, list[str]] = {}
    for key, value in zip(remembered, values):
        if _is_skip(value) or value == defaults.get(key):
            continue
        changed.setdefault(key.split("/", 1)[0], []).append(key)
    return changed


def switched_on(remembered: dict[str, Any], keys: list[str], values: dict[str, Any],
                defaults: dict[str, Any]) -> list[str]:
    """The features (named by `input_accordion.feature_name`: Hires. fix, Outpainting, an extension's section)
    whose enable checkbox among `keys` the restore ticked while its default is off, in page order, once each."""
    found: list[str] = []
    for key in keys:
        name = input_accordion.feature_name(remembered.get(key))
        if name and values.get(key) is True and defaults.get(key) is not True and name not in found:
            found.append(name)
    return found


def undo_values(remembered: dict[str, Any], tab: str, restored: list[str], defaults: dict[str, Any]) -> list:
    """Values for the tab's remembered inputs (in `remembered`'s order) that put the `restored` keys back to their
    defaults and leave the rest as the user has them."""
    restored = set(restored or [])
    return [defaults.get(key) if key in restored else gr.skip()
            for key in remembered if key.split("/", 1)[0] == tab]


def _wire_note(tab: str, note, remembered: dict[str, Any], defaults: dict[str, Any]) -> None:
    own = [component for key, component in remembered.items() if key.split("/", 1)[0] == tab]

    def undo(restored):
        return [*undo_values(remembered, tab, restored, defaults), *last_used_note.hidden()]

    note.undo.click(undo, inputs=[note.keys], outputs=[*own, *note.outputs()], show_progress="hidden",
                    queue=False, api_visibility="undocumented")
    note.dismiss.click(last_used_note.hidden, outputs=note.outputs(), show_progress="hidden", queue=False,
                       api_visibility="undocumented")


def _is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


def _user(request) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def _rememberable(component) -> bool:
    """Not a ControlNet unit's inputs: a unit restored as enabled has no picture, and its first Generate would fail.
    Not the Override settings: they belong to the infotext last sent to the tab, and restored they would act hidden."""
    elem_id = component.elem_id or ""
    return "_controlnet_" not in elem_id and not elem_id.endswith("_override_settings")
