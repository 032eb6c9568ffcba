"""ui-config.json (A1111's page defaults) and the last used values of txt2img / img2img / Extras."""
from __future__ import annotations

import json

import gradio as gr
import pytest

from webui.ui import ui_config
from webui.ui.blocks import build_ui


def built(services):
    blocks = build_ui(services)
    return blocks, ui_config.labelled_inputs(blocks)


def prop(blocks, elem_id: str, name: str = "value"):
    """What the page's config sends the browser for the component with this elem_id."""
    for component in blocks.config["components"]:
        if component.get("props", {}).get("elem_id") == elem_id:
            return component["props"].get(name)
    raise KeyError(elem_id)


def test_ui_config_is_written_with_a1111s_keys_and_read_back(make_services):
    services = make_services("sd1")
    path = services.paths.data_dir / "ui-config.json"
    blocks, inputs = built(services)
    data = json.loads(path.read_text())
    assert data["txt2img/Prompt/value"] == ""
    assert data["txt2img/Sampling steps/value"] == 20
    assert data["txt2img/Width/maximum"] == 4096 and data["txt2img/Width/step"] == 8
    assert data["img2img/Denoising strength/value"] == 0.75
    assert "txt2img/CFG Scale/visible" in data
    assert not any(key.startswith(("settings/", "extensions/")) for key in data)
    data.update({"txt2img/Sampling steps/value": 35, "txt2img/Width/maximum": 3072, "txt2img/Prompt/value": "a cat",
                 "txt2img/Sampling method/value": "Euler", "txt2img/Batch size/visible": False})
    path.write_text(json.dumps(data))
    blocks, _ = built(services)
    assert prop(blocks, "txt2img_steps") == 35
    assert prop(blocks, "txt2img_width", "maximum") == 3072  # a lower limit than the default
    assert prop(blocks, "txt2img_prompt") == "a cat"
    assert prop(blocks, "txt2img_sampling") == "Euler"
    assert prop(blocks, "txt2img_batch_size", "visible") is False
    assert prop(blocks, "img2img_steps") == 20  # the other tab keeps its own default


def test_values_that_do_not_fit_are_ignored_with_a_warning(make_services, caplog):
    services = make_services("sd1")
    path = services.paths.data_dir / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": "many", "txt2img/Sampling method/value": "Nope",
                                "txt2img/CFG Scale/value": 99.0, "txt2img/Seed/visible": "yes"}))
    blocks, _ = built(services)
    assert prop(blocks, "txt2img_steps") == 20 and prop(blocks, "txt2img_sampling") != "Nope"
    assert prop(blocks, "txt2img_cfg_scale") == 7.0
    text = caplog.text
    assert "txt2img/Sampling steps/value = 'many' ignored (expected a number)" in text
    assert "txt2img/Sampling method/value = 'Nope' ignored (not one of" in text
    assert "txt2img/CFG Scale/value = 99.0 ignored (outside 1.0..30.0)" in text
    assert "txt2img/Seed/visible = 'yes' ignored (expected true or false)" in text
    kept = json.loads(path.read_text())
    assert kept["txt2img/Sampling steps/value"] == "many"  # the user's file is not rewritten over their values
    assert kept["txt2img/Width/value"] == 512  # missing keys were added


def test_a_broken_ui_config_gives_the_defaults(make_services, caplog):
    services = make_services("sd1")
    (services.paths.data_dir / "ui-config.json").write_text("{not json")
    blocks, _ = built(services)
    assert prop(blocks, "txt2img_steps") == 20
    assert "could not read" in caplog.text


def test_keys_follow_sub_tabs_and_keep_the_first_of_a_repeated_label(make_services):
    services = make_services("sd1")
    _, inputs = built(services)
    assert isinstance(inputs["txt2img/Prompt"], gr.Textbox)
    assert inputs["txt2img/Prompt"].elem_id == "txt2img_prompt"
    unit_keys = [key for key in inputs if "ControlNet Unit" in key or "ControlNet-" in key]
    assert len(set(unit_keys)) == len(unit_keys)


def test_last_used_values_are_remembered_and_restored(make_services, tmp_path):
    services = make_services("sd1")
    _, inputs = built(services)
    with gr.Blocks():
        restore, outputs = ui_config.wire_last_used(services, inputs, {"txt2img": gr.Button()})
    assert all(key.startswith("txt2img/") for key in inputs if inputs[key] in outputs)
    assert all(value is gr.skip() or isinstance(value, type(gr.skip())) for value in restore())  # nothing yet
    store = ui_config.LastUsed(services.paths.data_dir)
    store.remember({"txt2img/Prompt": "a lighthouse", "txt2img/Sampling steps": 42,
                    "txt2img/Sampling method": "Gone sampler"})
    by_key = dict(zip([k for k in inputs if inputs[k] in outputs], restore()))
    assert by_key["txt2img/Prompt"] == "a lighthouse" and by_key["txt2img/Sampling steps"] == 42
    assert isinstance(by_key["txt2img/Sampling method"], type(gr.skip()))  # no longer a choice: the default
    services.options.update({"ui_remember_last_used": False}, save=False)
    assert all(isinstance(value, type(gr.skip())) for value in restore())


@pytest.mark.parametrize("value, ok", [(True, True), (1, False)])
def test_checkbox_values_must_be_booleans(value, ok):
    box = gr.Checkbox(render=False)
    if ok:
        assert ui_config.fitted(box, value) is True
    else:
        with pytest.raises(ValueError):
            ui_config.fitted(box, value)


def test_a_ui_config_of_the_former_2048_limit_gets_the_apis_limit(make_services):
    """ui-config.json files written while the size sliders stopped at 2048 (the API took 4096) held that maximum for
    every side slider: it is read as the former default and brought to the one limit of page and API."""
    services = make_services("sd1")
    path = services.paths.data_dir / "ui-config.json"
    built(services)
    data = json.loads(path.read_text())
    data.update({"txt2img/Width/maximum": 2048, "img2img/Height/maximum": 2048,
                 "txt2img/Resize seed from width/maximum": 2048, "txt2img/Sampling steps/maximum": 150})
    path.write_text(json.dumps(data))
    blocks, _ = built(services)
    assert prop(blocks, "txt2img_width", "maximum") == 4096
    assert prop(blocks, "img2img_height", "maximum") == 4096
    assert prop(blocks, "txt2img_seed_resize_from_w", "maximum") == 4096
    assert prop(blocks, "txt2img_steps", "maximum") == 150
    stored = json.loads(path.read_text())
    assert stored["txt2img/Width/maximum"] == 4096 and stored["img2img/Height/maximum"] == 4096


def test_editor_dialogs_fields_are_not_page_settings(make_services):
    """The 🖌️ styles editor's and a card's 🔧 metadata editor's fields hold what is being edited: no ui-config key,
    so never remembered, restored or listed by Settings > Defaults."""
    services = make_services("sd1")
    _, inputs = built(services)
    ids = {component.elem_id for component in inputs.values()}
    assert not any("_extra_edit_user_metadata_" in i or "_edit_style_" in i or "_styles_edit_select" in i
                   for i in ids if i)
    assert not {"txt2img/Description", "txt2img/Activation text", "txt2img/Notes"} & set(inputs)
    assert "txt2img/Prompt" in inputs and inputs["txt2img/Prompt"].elem_id == "txt2img_prompt"
