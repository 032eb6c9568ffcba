"""The seed extras ("Extra" beside the seed: variation seed and strength, resize seed from) and the Tiling checkbox,
driven through the Blocks' own event functions as the page calls them, against the HTTP API's pictures."""
from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from conftest import assert_same_picture, install_model
from webui.settings.flags import parse_flags
from webui.ui import generation, ui_config
from webui.ui.blocks import build_ui

BASE = {"prompt": "a lighthouse", "negative_prompt": "fog", "steps": 3, "width": 64, "height": 64, "cfg_scale": 6.0,
        "seed": 321, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("seed-extras")
    install_model(data, tiny_models["sd1"])
    made, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    yield SimpleNamespace(client=TestClient(made), services=services, blocks=blocks, by_id=by_id, data=data)
    services.stop()


def event(app, elem_id: str, event_name: str = "click", outputs: str | None = None):
    """The function the Blocks wired to that component's event (the one writing to `outputs`, when given)."""
    trigger = app.by_id[elem_id]
    wanted = app.by_id[outputs]._id if outputs else None
    return next(fn for fn in app.blocks.fns.values()
                if any(t[0] == trigger._id and t[1] == event_name for t in fn.targets)
                and (wanted is None or wanted in {c._id for c in fn.outputs}))


def call(app, elem_id: str, values: dict, event_name: str = "click", outputs: str | None = None):
    """Run it with its real inputs: each component's value, or the one given for its elem_id."""
    fn = event(app, elem_id, event_name, outputs)
    args = [values.get(getattr(c, "elem_id", None), c.value) for c in fn.inputs]
    result = fn.fn(*args)
    return list(result) if hasattr(result, "__next__") else result


def page_values(tab: str, **extra) -> dict:
    return {f"{tab}_prompt": BASE["prompt"], f"{tab}_neg_prompt": BASE["negative_prompt"], f"{tab}_steps": 3,
            f"{tab}_width": 64, f"{tab}_height": 64, f"{tab}_cfg_scale": 6.0, f"{tab}_seed": 321,
            f"{tab}_sampling": "Euler", f"{tab}_scheduler": "Automatic",
            **{f"{tab}_{name}": value for name, value in extra.items()}}


def generate_from_page(app, tab: str = "txt2img", **extra) -> dict:
    outputs = call(app, f"{tab}_generate", page_values(tab, **extra))
    return dict(zip(generation.OUTPUTS, outputs[-1]))


def api_picture(app, **fields) -> tuple[Image.Image, dict]:
    response = app.client.post("/sdapi/v1/txt2img", json={**BASE, **fields})
    assert response.status_code == 200, response.text
    payload = response.json()
    image = Image.open(io.BytesIO(base64.b64decode(payload["images"][0])))
    image.load()
    return image.convert("RGB"), json.loads(payload["info"])


def test_the_seed_extras_are_a1111s_components(app):
    for tab in ("txt2img", "img2img"):
        ids = app.by_id
        assert ids[f"{tab}_subseed_show"].label == "Extra" and ids[f"{tab}_subseed_show"].value is False
        assert isinstance(ids[f"{tab}_seed_extras"], gr.Group) and ids[f"{tab}_seed_extras"].visible is False
        assert ids[f"{tab}_subseed"].label == "Variation seed" and ids[f"{tab}_subseed"].value == -1
        strength = ids[f"{tab}_subseed_strength"]
        assert (strength.label, strength.minimum, strength.maximum, strength.step) == ("Variation strength", 0, 1,
                                                                                       0.01)
        for side, word in (("w", "width"), ("h", "height")):
            slider = ids[f"{tab}_seed_resize_from_{side}"]
            assert (slider.label, slider.minimum, slider.maximum, slider.step, slider.value) == (
                f"Resize seed from {word}", 0, 4096, 8, 0)  # the one side limit of page and API
        assert {f"{tab}_random_subseed", f"{tab}_reuse_subseed"} <= set(ids)
        assert ids[f"{tab}_tiling"].label == "Tiling" and ids[f"{tab}_tiling"].value is False
    # "Extra" shows and hides the group
    assert call(app, "txt2img_subseed_show", {"txt2img_subseed_show": True}, "change").visible is True
    assert call(app, "txt2img_subseed_show", {"txt2img_subseed_show": False}, "change").visible is False
    assert call(app, "txt2img_random_subseed", {}) == -1


def test_a_variation_seed_from_the_page_is_the_apis_picture(app):
    last = generate_from_page(app, subseed_show=True, subseed=99, subseed_strength=0.4)
    picture = last["gallery"][0]
    text = picture.info["parameters"]
    assert "Variation seed: 99" in text and "Variation seed strength: 0.4" in text
    expected, _ = api_picture(app, subseed=99, subseed_strength=0.4)
    assert_same_picture(picture.convert("RGB"), expected)
    plain, _ = api_picture(app)
    assert np.abs(np.asarray(plain, np.int16) - np.asarray(expected, np.int16)).max() > 8  # the variation shows

    # Extra unticked: the hidden values are not used (A1111), the picture is the plain seed's
    hidden = generate_from_page(app, subseed_show=False, subseed=99, subseed_strength=0.4)["gallery"][0]
    assert "Variation seed" not in hidden.info["parameters"]
    assert_same_picture(hidden.convert("RGB"), plain)


def test_resize_seed_from_and_tiling_reach_the_request(app):
    last = generate_from_page(app, subseed_show=True, seed_resize_from_w=32, seed_resize_from_h=48, tiling=True)
    picture = last["gallery"][0]
    assert "Seed resize from: 32x48" in picture.info["parameters"] and "Tiling: True" in picture.info["parameters"]
    expected, _ = api_picture(app, seed_resize_from_w=32, seed_resize_from_h=48, tiling=True)
    assert_same_picture(picture.convert("RGB"), expected)
    # one side only: off, as A1111
    one_side = generate_from_page(app, subseed_show=True, seed_resize_from_w=32)["gallery"][0]
    assert "Seed resize from" not in one_side.info["parameters"]
    # the img2img tab has them too
    init = Image.new("RGB", (64, 64), (90, 120, 200))
    img2img = generate_from_page(app, "img2img", image=init, tiling=True, subseed_show=True, subseed=5,
                                 subseed_strength=0.5)["gallery"][0]
    assert "Tiling: True" in img2img.info["parameters"] and "Variation seed: 5" in img2img.info["parameters"]


def test_pasting_an_infotext_restores_the_seed_extras_and_tiling(app):
    text = ("a lighthouse\nNegative prompt: fog\nSteps: 3, Sampler: Euler, CFG scale: 6, Seed: 321, Size: 64x64, "
            "Variation seed: 12, Variation seed strength: 0.3, Seed resize from: 128x96, Tiling: True")
    fields = ("subseed_show", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "tiling")
    for tab, button in (("txt2img", "pnginfo_send_txt2img"), ("img2img", "pnginfo_send_img2img")):
        fn = event(app, button, outputs=f"{tab}_subseed")
        args = [text if getattr(c, "elem_id", None) == "pnginfo_generation_info" else c.value for c in fn.inputs]
        sent = fn.fn(*args)
        by_id = {getattr(c, "elem_id", None): value for c, value in zip(fn.outputs, sent)}
        assert {name: by_id[f"{tab}_{name}"] for name in fields} == {
            "subseed_show": True, "subseed": 12, "subseed_strength": 0.3, "seed_resize_from_w": 128,
            "seed_resize_from_h": 96, "tiling": True}
    # without those keys: Extra and Tiling unticked, the values left as they are (A1111)
    plain = text.split(", Variation seed")[0]
    fn = event(app, "pnginfo_send_txt2img", outputs="txt2img_subseed")
    sent = fn.fn(*[plain if getattr(c, "elem_id", None) == "pnginfo_generation_info" else c.value
                   for c in fn.inputs])
    by_id = {getattr(c, "elem_id", None): value for c, value in zip(fn.outputs, sent)}
    assert by_id["txt2img_subseed_show"] is False and by_id["txt2img_tiling"] is False
    assert by_id["txt2img_subseed"] == gr.skip()

    # the API's `infotext` field fills the same fields
    _, info = api_picture(app, infotext=text.replace("128x96", "32x48"))
    assert (info["subseed"], info["subseed_strength"]) == (12, 0.3)
    assert (info["seed_resize_from_w"], info["seed_resize_from_h"]) == (32, 48)
    assert "Tiling: True" in info["infotexts"][0]


def test_reusing_the_variation_seed_of_the_selected_image_past_the_grid(app):
    last = generate_from_page(app, batch_size=2, subseed_show=True, subseed=40, subseed_strength=0.2)
    state = last["state"]
    assert len(last["gallery"]) == 3 and state["first"] == 1  # the batch grid first
    assert state["subseeds"] == [40, 41]
    selected, _ = generation.select_image(state, 2)
    fn = event(app, "txt2img_reuse_subseed")
    assert fn.fn(selected) == 41 and event(app, "txt2img_reuse_seed").fn(selected) == 321
    grid_selected, _ = generation.select_image(state, 0)
    assert fn.fn(grid_selected) == 40  # the grid: the first image's
    # without a variation, ♻️ of the variation seed takes the image's seed (A1111)
    plain = generate_from_page(app, batch_size=2)["state"]
    assert fn.fn(generation.select_image(plain, 2)[0]) == 322


def test_ui_config_and_last_used_know_the_new_controls(app):
    inputs = ui_config.labelled_inputs(app.blocks)
    for tab in ("txt2img", "img2img"):
        for label in ("Extra", "Variation seed", "Variation strength", "Resize seed from width",
                      "Resize seed from height", "Tiling"):
            assert f"{tab}/{label}" in inputs
    with gr.Blocks():  # Generate remembers them as the last used values, and a new page restores them
        _, remembered = ui_config.wire_last_used(app.services, inputs, {"txt2img": gr.Button(),
                                                                        "img2img": gr.Button()})
    assert {f"{tab}_{name}" for tab in ("txt2img", "img2img") for name in generation.SEED_EXTRA_FIELDS} \
        <= {c.elem_id for c in remembered}
    data = json.loads((app.data / "ui-config.json").read_text())
    assert data["txt2img/Extra/value"] is False and data["img2img/Variation strength/maximum"] == 1
    # "Extra" ticked in ui-config.json: the extras are shown from the start
    data["txt2img/Extra/value"] = True
    (app.data / "ui-config.json").write_text(json.dumps(data))
    blocks = build_ui(app.services)
    shown = {c["props"].get("elem_id"): c["props"].get("visible") for c in blocks.config["components"]}
    assert shown["txt2img_seed_extras"] is True and shown["img2img_seed_extras"] is False
