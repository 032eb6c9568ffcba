"""The 🖌️ style editor (A1111 1.10's styles dialog), driven through the Blocks' own event functions: open it on a
chosen style, edit and save (styles.csv, read back with the csv module), a new style from the tab's prompts,
delete (only after the confirmation), the pickers of both tabs refreshed, the `{prompt}` placeholder kept."""
from __future__ import annotations

import csv

import gradio as gr
import pytest

from webui.ui import style_editor
from webui.ui.blocks import build_ui

FIELDS = ["name", "prompt", "negative_prompt"]


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        writer.writerows(rows)


def read_csv(path) -> tuple[list[str], dict[str, tuple[str, str]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], {row[0]: (row[1], row[2]) for row in rows[1:]}


@pytest.fixture
def app(make_services):
    services = make_services()
    write_csv(services.paths.styles_file, [("cinematic", "cinematic still of {prompt}, film grain", "cartoon"),
                                      ("sharp", "sharp focus", "blurry, lowres")])
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    return services, blocks, by_id


def event(app, elem_id: str, event_name: str = "click"):
    _, blocks, by_id = app
    trigger = by_id[elem_id]
    return next(fn for fn in blocks.fns.values() if any(t[0] == trigger._id and t[1] == event_name
                                                         for t in fn.targets))


def call(app, elem_id: str, values: dict, event_name: str = "click") -> list:
    """Run the event's function with its inputs: the value given by elem_id, else the component's own."""
    fn = event(app, elem_id, event_name)
    result = fn.fn(*[values.get(getattr(c, "elem_id", None), c.value) for c in fn.inputs])
    return list(result) if isinstance(result, (tuple, list)) else [result]


def outputs_of(app, elem_id: str, event_name: str = "click") -> list[str]:
    return [c.elem_id for c in event(app, elem_id, event_name).outputs]


def named(app, elem_id: str, values: dict, event_name: str = "click") -> dict:
    return dict(zip(outputs_of(app, elem_id, event_name), call(app, elem_id, values, event_name)))


def test_the_editor_has_a1111s_elem_ids_and_starts_closed(app):
    _, _, by_id = app
    for tab in ("txt2img", "img2img"):
        for name in ("styles_edit_button", "styles_dialog", "styles_edit_select", "style_copy", "style_apply_dialog",
                     "edit_style_prompt", "edit_style_neg_prompt", "edit_style_save", "edit_style_delete",
                     "edit_style_close"):
            assert f"{tab}_{name}" in by_id, name
        assert f"refresh_{tab}_styles" in by_id
        assert by_id[f"{tab}_styles_edit_button"].value == "🖌️"
        assert by_id[f"{tab}_styles_dialog"].visible is False
        assert by_id[f"{tab}_styles_edit_select"].allow_custom_value is True


def test_open_edit_save_and_the_style_applies(app, capsys):
    services, _, _ = app
    opened = named(app, "txt2img_styles_edit_button", {"txt2img_styles": ["cinematic"]})
    assert opened["txt2img_styles_dialog"].visible is True
    assert opened["txt2img_styles_edit_select"].value == "cinematic"
    assert opened["txt2img_edit_style_prompt"] == "cinematic still of {prompt}, film grain"
    assert opened["txt2img_edit_style_neg_prompt"] == "cartoon"
    assert opened["txt2img_edit_style_delete"].visible is True and opened["txt2img_edit_style_save"].visible

    picked = named(app, "txt2img_styles_edit_select", {"txt2img_styles_edit_select": "sharp"}, "change")
    assert (picked["txt2img_edit_style_prompt"], picked["txt2img_edit_style_neg_prompt"]) == \
        ("sharp focus", "blurry, lowres")

    edited = {"txt2img_styles_edit_select": "cinematic", "txt2img_edit_style_prompt": "moody photo of {prompt}",
              "txt2img_edit_style_neg_prompt": "flat, \"quoted\", text"}
    call(app, "txt2img_edit_style_save", edited)
    assert "Style 'cinematic' updated" in capsys.readouterr().out
    header, rows = read_csv(services.paths.styles_file)
    assert header == FIELDS
    assert rows == {"cinematic": ("moody photo of {prompt}", "flat, \"quoted\", text"),
                    "sharp": ("sharp focus", "blurry, lowres")}

    # 📋 in the dialog writes the chosen styles into the tab's prompts: {prompt} takes the user's prompt
    applied = named(app, "txt2img_style_apply_dialog", {"txt2img_prompt": "a red fox", "txt2img_neg_prompt": "",
                                                        "txt2img_styles": ["cinematic"]})
    assert applied["txt2img_prompt"] == "moody photo of a red fox"
    assert applied["txt2img_neg_prompt"] == "flat, \"quoted\", text"
    assert applied["txt2img_styles_dialog"].visible is False


def test_a_new_style_from_the_tabs_prompts(app):
    services, _, _ = app
    copied = named(app, "img2img_style_copy", {"img2img_prompt": "oil painting, {prompt}",
                                               "img2img_neg_prompt": "photo"})
    assert copied == {"img2img_edit_style_prompt": "oil painting, {prompt}", "img2img_edit_style_neg_prompt": "photo"}
    typed = named(app, "img2img_styles_edit_select", {"img2img_styles_edit_select": "painterly"}, "change")
    assert typed["img2img_edit_style_save"].visible is True and typed["img2img_edit_style_delete"].visible is False
    assert typed["img2img_edit_style_prompt"] == gr.skip()  # a new name keeps the copied prompts
    saved = named(app, "img2img_edit_style_save", {"img2img_styles_edit_select": "painterly",
                                                   "img2img_edit_style_prompt": "oil painting, {prompt}",
                                                   "img2img_edit_style_neg_prompt": "photo"})
    assert saved["img2img_edit_style_delete"].visible is True
    assert read_csv(services.paths.styles_file)[1]["painterly"] == ("oil painting, {prompt}", "photo")
    # both tabs' pickers and both editors get the new list (the refresh the save is followed by)
    refreshed = named(app, "refresh_img2img_styles", {"txt2img_styles": ["sharp"], "img2img_styles": []})
    for elem_id in ("txt2img_styles", "img2img_styles", "txt2img_styles_edit_select", "img2img_styles_edit_select"):
        assert [c[0] for c in refreshed[elem_id].choices] == ["cinematic", "sharp", "painterly"]
    assert refreshed["txt2img_styles"].value == ["sharp"]


def test_delete_needs_the_confirmation_and_unticks_the_style(app):
    services, _, _ = app
    fn = event(app, "txt2img_edit_style_delete")
    assert "confirm(" in fn.js  # the browser asks first; a cancel sends ""
    assert call(app, "txt2img_edit_style_delete", {"txt2img_styles_edit_select": ""}) == [gr.skip()] * 5
    assert set(read_csv(services.paths.styles_file)[1]) == {"cinematic", "sharp"}

    deleted = named(app, "txt2img_edit_style_delete", {"txt2img_styles_edit_select": "sharp"})
    assert deleted["txt2img_styles_edit_select"] == "" and deleted["txt2img_edit_style_prompt"] == ""
    assert deleted["txt2img_edit_style_delete"].visible is False
    header, rows = read_csv(services.paths.styles_file)
    assert header == FIELDS and rows == {"cinematic": ("cinematic still of {prompt}, film grain", "cartoon")}
    # a picker that still had it ticked loses it, so Generate does not send an unknown style
    refreshed = style_editor.refreshed(services, [["sharp", "cinematic"], ["sharp"]])
    assert refreshed[0].value == ["cinematic"] and refreshed[1].value == []
    assert [c[0] for c in refreshed[2].choices] == ["cinematic"]


def test_saving_without_a_name_or_deleting_a_missing_style_is_a_notice(app):
    services, _, _ = app
    before = services.paths.styles_file.read_bytes()
    with pytest.warns(UserWarning, match="needs a name"):
        assert style_editor.save_style(services, "  ", "x", "y") == (gr.skip(), gr.skip())
    with pytest.warns(UserWarning, match="Unknown style 'nope'"):
        assert style_editor.delete_style(services, "nope") == (gr.skip(),) * 5
    assert services.paths.styles_file.read_bytes() == before


def test_the_dialog_closes(app):
    closed = named(app, "txt2img_edit_style_close", {})
    assert closed["txt2img_styles_dialog"].visible is False
    again = named(app, "txt2img_styles_edit_button", {"txt2img_styles": []})
    assert again["txt2img_styles_dialog"].visible is True and again["txt2img_styles_edit_select"].value == ""
