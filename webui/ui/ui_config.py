"""The page's defaults from A1111's `ui-config.json`, and the last used values of the generation tabs.

`ui-config.json` (in the data dir) maps `tab/Label/field` to a value: `txt2img/Sampling steps/value`,
`txt2img/Width/maximum`, `img2img/Prompt/visible`, ... Fields: `value` and `visible` for every input; `minimum`,
`maximum` and `step` for sliders. On start-up the page takes the values the file has and writes back the keys it
lacks with the page's own defaults, so the file lists everything a user can set. A key is the top tab's id, the
labels of the sub-tabs the component sits in, and its label; a label that repeats in the same place keeps only
its first component. A value that does not fit (a word for a number, a choice that does not exist) is ignored
with a warning in the log.

Last used values (option `ui_remember_last_used`): what a tab's Generate (or Extras' Generate) sent is written to
`ui-last-used.json` under the same keys, and a newly opened page starts from those values.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

log = logging.getLogger(__name__)

INPUTS = (gr.Textbox, gr.Number, gr.Slider, gr.Checkbox, gr.Dropdown, gr.Radio, gr.CheckboxGroup)
SKIPPED_TABS = ("settings", "extensions", "history")  # their values live in config.json, or are not settings


def labelled_inputs(blocks: gr.Blocks) -> dict[str, gr.components.Component]:
    """Each input with a label, by its ui-config key (without the field): `txt2img/Sampling steps`."""
    found: dict[str, gr.components.Component] = {}

    def walk(block, path: list[str], depth: int) -> Iterator[tuple[str, Any]]:
        for child in getattr(block, "children", None) or []:
            if isinstance(child, gr.Tab):
                name = str(child.id) if depth == 0 and child.id is not None else str(child.label)
                if depth == 0 and name in SKIPPED_TABS:
                    continue
                yield from walk(child, path + [name], depth + 1)
            elif isinstance(child, INPUTS):
                if path and child.label:
                    yield "/".join(path + [str(child.label)]), child
            else:
                yield from walk(child, path, depth)

    for key, component in walk(blocks, [], 0):
        found.setdefault(key, component)  # a repeated label keeps its first component
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


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("could not read %s (%s): using the page's defaults", path, exc)
        return {}
    if not isinstance(data, dict):
        log.warning("%s does not hold a JSON object: using the page's defaults", path)
        return {}
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


def apply_ui_config(path: Path, inputs: dict[str, Any]) -> list[str]:
    """Set the inputs from `path` (ui-config.json) and write back the keys it lacks; the problems, as said."""
    data = _json_file(path)
    problems, added = [], False
    for key, component in inputs.items():
        for name in _fields(component):
            full = f"{key}/{name}"
            if full not in data:
                current = _current(component, name)
                if current is not None:  # no value (an empty picker): nothing to offer
                    data[full] = current
                    added = True
                continue
            wanted = data[full]
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
    if added:
        try:
            _write_json(path, data)
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc)
    return problems


@dataclass
class LastUsed:
    """The values a tab's Generate last sent (`ui-last-used.json`), by ui-config key."""
    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, values: dict[str, Any]) -> None:
        with self._lock:
            data = _json_file(self.path)
            data.update(values)
            try:
                _write_json(self.path, data)
            except OSError as exc:
                log.warning("could not write %s: %s", self.path, exc)

    def values_for(self, inputs: dict[str, Any]) -> list:
        """For each input: its last used value (when it still fits), else `gr.skip()`."""
        with self._lock:
            data = _json_file(self.path)
        shown = []
        for key, component in inputs.items():
            try:
                shown.append(fitted(component, data[key]) if key in data else gr.skip())
            except ValueError:
                shown.append(gr.skip())  # a choice that is gone, a range that changed: the page's default
        return shown


def wire_last_used(services, inputs: dict[str, Any], buttons: dict[str, Any]) -> tuple:
    """Each of `buttons` (top tab id -> its Generate button) remembers its tab's inputs when clicked. Returns
    (restore, outputs) for the page's load event: the remembered inputs' last used values (when the option
    `ui_remember_last_used` is on)."""
    store = LastUsed(services.paths.data_dir / "ui-last-used.json")
    for tab, button in buttons.items():
        keys = [key for key in inputs if key.split("/", 1)[0] == tab]
        if not keys:
            continue

        def remember(*values, keys=keys):
            if services.options.get("ui_remember_last_used"):
                store.remember(dict(zip(keys, values)))

        button.click(remember, inputs=[inputs[key] for key in keys], show_progress="hidden", queue=False,
                     api_visibility="undocumented")

    remembered = {key: component for key, component in inputs.items() if key.split("/", 1)[0] in buttons}

    def restore():
        if not services.options.get("ui_remember_last_used"):
            return [gr.skip()] * len(remembered)
        return store.values_for(remembered)

    return restore, list(remembered.values())
