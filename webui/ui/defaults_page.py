"""A1111's Settings > Defaults: "View changes" lists the page's inputs (txt2img, img2img, Extras, ... by their
`ui-config.json` keys) whose current value differs from the default `ui-config.json` gives them; "Apply" writes those
values into `ui-config.json`, so pages built from then on (after "Reload UI") start from them. Elem_ids as A1111's:
`ui_defaults_view`, `ui_defaults_apply`, `ui_defaults_review`.
"""
from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from . import notices, ui_config

log = logging.getLogger(__name__)

INTRO = ("Save the values of the page's inputs (txt2img, img2img, Extras, ...) as their defaults in "
         "`ui-config.json`: set them in their tabs, press **View changes** to see what differs from the defaults, "
         "then **Apply**; pages built after **Reload UI** start from them.")


@dataclass
class DefaultsPage:
    view: gr.Button
    apply: gr.Button
    review: gr.HTML


def build_defaults_page() -> DefaultsPage:
    """The page's content (inside its Settings section); `wire` connects it once the whole page exists."""
    gr.Markdown(INTRO, elem_id="ui_defaults_intro")
    with gr.Row():
        view = gr.Button("View changes", elem_id="ui_defaults_view")
        apply = gr.Button("Apply", variant="primary", elem_id="ui_defaults_apply")
    review = gr.HTML("", elem_id="ui_defaults_review")
    return DefaultsPage(view, apply, review)


def _config_path(services) -> Path:
    return Path(services.paths.data_dir) / "ui-config.json"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def changes(services, inputs: dict[str, Any], values) -> list[tuple[str, Any, Any]]:
    """(ui-config key, default now, value on the page) for each input whose page value differs from its default:
    the `ui-config.json` entry, else the value the input was built with."""
    data = ui_config._json_file(_config_path(services)) or {}
    found = []
    for (key, component), value in zip(inputs.items(), values):
        full = f"{key}/value"
        if value is None:
            continue
        try:
            value = ui_config.fitted(component, value)
        except ValueError:
            continue  # a value the file could not hold (an empty number box): not a default
        old = data.get(full, ui_config._current(component, "value"))
        if value != old:
            found.append((full, old, value))
    return found


def _table(rows: list[tuple[str, Any, Any]]) -> str:
    if not rows:
        return "<p>No changes</p>"
    body = "".join(f"<tr><td>{html.escape(key)}</td><td>{html.escape(_json(old))}</td>"
                   f"<td>{html.escape(_json(new))}</td></tr>" for key, old, new in rows)
    return ("<table class=\"ui-defaults-table\"><thead><tr><th>Path</th><th>Old value</th><th>New value</th></tr>"
            f"</thead><tbody>{body}</tbody></table>")


def view_changes(services, inputs: dict[str, Any], *values) -> str:
    """"View changes": the table of what Apply would write."""
    return _table(changes(services, inputs, values))


def apply_defaults(services, inputs: dict[str, Any], *values) -> str:
    """"Apply": write the changed values into `ui-config.json` (a file that cannot be read is left alone, with a
    notice); the message says how many."""
    path = _config_path(services)
    data = ui_config._json_file(path)
    if data is None:
        message = f"{path.name} cannot be read (see the log): it was left as it is"
        notices.warn(message)
        return f"<p>{html.escape(message)}</p>"
    rows = changes(services, inputs, values)
    if not rows:
        return "<p>No changes</p>"
    data.update({key: new for key, _, new in rows})
    try:
        ui_config._write_json(path, data)
    except OSError as exc:
        notices.warn(f"Could not write {path.name}: {exc}")
        return f"<p>Could not write {html.escape(path.name)}: {html.escape(str(exc))}</p>"
    return (f"<p>Wrote {len(rows)} change{'s' if len(rows) != 1 else ''} to {html.escape(path.name)}; "
            "press Reload UI for new pages to start from them.</p>" + _table(rows))


def wire(page: DefaultsPage, services, inputs: dict[str, Any]) -> None:
    """Connect the buttons to every labelled input of the page (`ui_config.labelled_inputs`)."""
    components = list(inputs.values())
    page.view.click(lambda *values: view_changes(services, inputs, *values), inputs=components,
                    outputs=[page.review], show_progress="hidden", api_visibility="undocumented")
    page.apply.click(lambda *values: apply_defaults(services, inputs, *values), inputs=components,
                     outputs=[page.review], show_progress="hidden", api_visibility="undocumented")
