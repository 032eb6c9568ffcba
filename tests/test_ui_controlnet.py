"""The ControlNet units in the txt2img / img2img tabs, driven without a browser: the accordion the Blocks build
(unit count, A1111's elem_ids), the control type filter, the preprocessor's sliders, the 💥 preview (canny against
OpenCV), the units a Generate builds, pasting `ControlNet N` infotext back, the errors shown as notices, and a
generation through the UI path with a tiny ControlNet."""
from __future__ import annotations

import shutil

import cv2
import gradio as gr
import numpy as np
import pytest
from PIL import Image

from tests.conftest import install_model
from webui.control.units import ControlUnit, unit_infotext
from webui.core.errors import RequestError
from webui.models.tiny import write_controlnet
from webui.services import build_services
from webui.settings.flags import parse_flags
from webui.ui import controlnet, controlnet_preview, generation, pnginfo
from webui.ui.blocks import build_ui
from webui.ui.controlnet import PASTE_FIELDS, unit_prefix

# prompt, negative, sampler, schedule, steps, width, height, batch count, batch size, CFG, seed
SMALL = ("a red fox", "blurry", "Euler", "Automatic", 3, 64, 64, 1, 1, 7.0, 4321)
CANNY_MODEL = "control_v11p_sd15_canny"
DEPTH_MODEL = "control_v11f1p_sd15_depth"


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_models):
    """Services over a data dir with the tiny sd1 checkpoint and two tiny ControlNets (a canny and a depth one)."""
    data = tmp_path_factory.mktemp("data")
    install_model(data, tiny_models["sd1"])
    folder = data / "models" / "ControlNet"
    write_controlnet(folder / f"{CANNY_MODEL}.safetensors", "sd1")
    write_controlnet(folder / f"{DEPTH_MODEL}.safetensors", "sd1", seed=1)
    made = build_services(parse_flags(["--data-dir", str(data)]))
    made.hasher.wait_idle(30)
    yield made
    made.stop()


def title(services, name: str) -> str:
    return next(info.title for info in services.controlnets.list() if info.name == name)


def picture(size=(64, 64), seed=0) -> Image.Image:
    """A picture with edges for canny: a few bright shapes on noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
    pixels[10:40, 12:30] = (230, 200, 40)
    pixels[35:55, 30:60] = (20, 180, 240)
    return Image.fromarray(pixels)


def unit_values(**given) -> dict:
    """A unit tab's values (REQUEST_FIELDS) as the UI sends them by default, with `given` changes."""
    values = {"enabled": False, "use_input": True, "image": None, "mask": None, "module": "none", "model": "None",
              "weight": 1.0, "guidance_start": 0.0, "guidance_end": 1.0, "processor_res": -1, "threshold_a": -1,
              "threshold_b": -1, "control_mode": "Balanced", "resize_mode": "Crop and Resize",
              "pixel_perfect": False}
    values.update(given)
    return values


# --- the Blocks ---------------------------------------------------------------------------------------------------
def test_the_accordion_has_the_configured_units_with_a1111_elem_ids(services):
    services.options.update({"control_net_unit_count": 2})
    try:
        blocks = build_ui(services)
    finally:
        services.options.update({"control_net_unit_count": 3})
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    for mode in ("txt2img", "img2img"):
        assert f"{mode}_controlnet" in by_id and by_id[f"{mode}_controlnet"].label == "ControlNet"
        for index in range(2):
            p = unit_prefix(mode, index)
            assert by_id[f"{p}_tab"].label == f"ControlNet Unit {index}"
            for suffix in ("_controlnet_enable_checkbox", "_input_image", "_generated_image",
                           "_controlnet_pixel_perfect_checkbox", "_controlnet_type_filter_radio",
                           "_controlnet_preprocessor_dropdown", "_controlnet_trigger_preprocessor",
                           "_controlnet_model_dropdown", "_controlnet_refresh_models",
                           "_controlnet_control_weight_slider", "_controlnet_start_control_step_slider",
                           "_controlnet_ending_control_step_slider", "_controlnet_preprocessor_resolution_slider",
                           "_controlnet_threshold_A_slider", "_controlnet_threshold_B_slider",
                           "_controlnet_control_mode_radio", "_controlnet_resize_mode_radio"):
                assert p + suffix in by_id, p + suffix
        assert f"{unit_prefix(mode, 2)}_tab" not in by_id  # two units, as configured
    # img2img's units use the img2img input by default; txt2img's have no such choice
    same = by_id[f"{unit_prefix('img2img', 0)}_controlnet_same_img2img_checkbox"]
    assert same.value is True and same.label == controlnet.USE_INPUT_LABEL
    assert f"{unit_prefix('txt2img', 0)}_controlnet_same_img2img_checkbox" not in by_id
    p = unit_prefix("txt2img", 1)
    assert by_id[f"{p}_controlnet_enable_checkbox"].value is False
    assert by_id[f"{p}_controlnet_type_filter_radio"].value == "All"
    assert by_id[f"{p}_controlnet_preprocessor_dropdown"].value == "none"
    model = by_id[f"{p}_controlnet_model_dropdown"]
    assert model.value == "None"
    assert [choice[0] for choice in model.choices] == services.controlnets.titles()
    weight = by_id[f"{p}_controlnet_control_weight_slider"]
    assert (weight.minimum, weight.maximum, weight.value) == (0.0, 2.0, 1.0)
    assert by_id[f"{p}_controlnet_control_mode_radio"].value == "Balanced"
    assert by_id[f"{p}_controlnet_resize_mode_radio"].value == "Crop and Resize"
    assert not by_id[f"{p}_controlnet_threshold_A_slider"].visible  # "none" has no sliders
    # before any module is picked in the page, the preprocessor sliders accept every module's values (an API client
    # sets them directly) and start at -1, the module's default
    for suffix, values in (("preprocessor_resolution", (-1, 64, 512, 2048)), ("threshold_A", (-1, 1, 100, 255)),
                           ("threshold_B", (-1, 1, 200, 255))):
        slider = by_id[f"{p}_controlnet_{suffix}_slider"]
        assert slider.value == -1 and [slider.preprocess(v) for v in values] == list(values)

    # Gradio's API keeps working for clients that send no units: theirs are optional (left out: disabled)
    parameters = {p["parameter_name"]: p for p in blocks.get_api_info()["named_endpoints"]["/txt2img"]["parameters"]}
    assert parameters["controlnet_1_image"]["parameter_has_default"] and parameters["controlnet_1_image"][
        "parameter_default"] is None
    assert "controlnet_2_enabled" not in parameters and "prompt" in parameters

    # the PNG Info send buttons restore the units too
    enable = by_id[f"{unit_prefix('txt2img', 0)}_controlnet_enable_checkbox"]
    send = by_id["pnginfo_send_txt2img"]
    pastes = [d for d in blocks.config["dependencies"]
              if any(t[0] == send._id for t in d["targets"]) and enable._id in d["outputs"]]
    assert len(pastes) == 1


# --- control type, preprocessor sliders, models -------------------------------------------------------------------
def test_the_control_type_narrows_modules_and_models_and_picks_its_defaults(services):
    module, model, res, a, b, mask, model_shown = controlnet.type_selected(services, "Canny", "none", "None", False)
    assert module["choices"] == services.preprocessors.for_type("Canny") and module["value"] == "canny"
    assert module["choices"][0] == "none" and all(services.preprocessors.get(name).control_type in ("Canny", "All")
                                                  for name in module["choices"])
    assert model["choices"] == ["None", title(services, CANNY_MODEL)] and model["value"] == title(services,
                                                                                                   CANNY_MODEL)
    assert (a["label"], a["value"], a["minimum"], a["maximum"], a["visible"]) == ("Canny Low Threshold", 100, 1,
                                                                                  255, True)
    assert (b["label"], b["value"], b["visible"]) == ("Canny High Threshold", 200, True)
    assert res["value"] == 512 and res["visible"]
    assert mask["visible"] is False and model_shown["visible"] is True

    depth = controlnet.type_selected(services, "Depth", "canny", title(services, CANNY_MODEL), False)
    assert depth[1]["choices"] == ["None", title(services, DEPTH_MODEL)]
    assert all(choice in services.preprocessors.names() for choice in depth[0]["choices"])
    assert "canny" not in depth[0]["choices"]

    # "All" lists everything and keeps the current choices
    everything = controlnet.type_selected(services, "All", "canny", title(services, CANNY_MODEL), False)
    assert everything[0]["choices"] == services.preprocessors.names() and "value" not in everything[0]
    assert everything[1]["choices"] == services.controlnets.titles()
    assert everything[1]["value"] == title(services, CANNY_MODEL)


def test_sliders_follow_the_preprocessor(services):
    res, a, b, mask, model = controlnet.module_changed(services, "canny", False, reset=True)
    assert (a["label"], a["value"], b["label"], b["value"]) == ("Canny Low Threshold", 100, "Canny High Threshold",
                                                                200)
    assert res["label"] == "Preprocessor Resolution" and res["visible"] and res["value"] == 512
    # a programmatic change (paste, type filter) sets labels and ranges, not the values
    _, a, _, _, _ = controlnet.module_changed(services, "canny", False, reset=False)
    assert a["label"] == "Canny Low Threshold" and "value" not in a
    # "none" has no sliders: all hidden
    res, a, b, _, _ = controlnet.module_changed(services, "none", False, reset=True)
    assert res == a == b == {"__type__": "update", "visible": False}
    # Pixel Perfect computes the resolution: its slider is hidden
    res, a, _, _, _ = controlnet.module_changed(services, "canny", True, reset=True)
    assert res["visible"] is False and a["visible"] is True
    assert controlnet.resolution_shown(services, "canny", True)["visible"] is False
    assert controlnet.resolution_shown(services, "canny", False)["visible"] is True
    # a module with a mask (inpaint) shows the mask upload, when the catalogue has one
    masked = [e.name for e in services.preprocessors.catalogue() if e.uses_mask]
    if masked:
        assert controlnet.module_changed(services, masked[0], False)[3]["visible"] is True


def test_refreshing_models_finds_new_files_and_keeps_the_choice(services, tmp_path):
    folder = services.paths.controlnet
    extra = folder / "control_v11p_sd15_openpose.safetensors"
    shutil.copy2(folder / f"{CANNY_MODEL}.safetensors", extra)
    try:
        update = controlnet.refresh_models(services, "OpenPose", CANNY_MODEL)
        assert update["choices"] == ["None", title(services, "control_v11p_sd15_openpose")]
        assert update["value"] == title(services, CANNY_MODEL)  # found by name
    finally:
        extra.unlink()
        services.controlnets.refresh()


# --- preview ------------------------------------------------------------------------------------------------------
def test_the_canny_preview_is_opencv_canny(services):
    image = picture()
    shown = controlnet_preview.run_preview(services, "txt2img", 0, {
        "image": image, "module": "canny", "processor_res": 64, "threshold_a": 80, "threshold_b": 160}, 512, 512)
    expected = cv2.Canny(np.asarray(image), 80, 160)
    got = np.asarray(shown)
    assert got.shape == (64, 64, 3) and expected.any()
    assert all(np.array_equal(got[:, :, channel], expected) for channel in range(3))


def test_pixel_perfect_resolution_follows_the_generation_size(services):
    shown = controlnet_preview.run_preview(services, "txt2img", 0, {
        "image": picture((64, 32)), "module": "canny", "processor_res": 64, "threshold_a": 100,
        "threshold_b": 200, "pixel_perfect": True, "resize_mode": "Crop and Resize"}, 128, 128)
    assert shown.size == (256, 128)  # shorter side 32 * max(128/32, 128/64) = 128


def test_img2img_units_preview_the_img2img_picture(services):
    image = picture(seed=3)
    shown = controlnet_preview.run_preview(services, "img2img", 1, {"module": "canny", "processor_res": 64,
                                                                    "threshold_a": 100, "threshold_b": 200},
                                           64, 64, use_input=True, img2img={"img2img_mode": "img2img",
                                                                            "image": image})
    assert np.array_equal(np.asarray(shown)[:, :, 0], cv2.Canny(np.asarray(image), 100, 200))


def test_the_preview_becomes_the_input_with_preprocessor_none(services):
    image = picture()
    update, module, use_input = controlnet_preview.use_preview(0, image, True)
    assert update["value"] is image and update["visible"] and module == "none" and use_input is False
    assert controlnet_preview.use_preview(0, image, False)[1] == "none"
    with pytest.warns(UserWarning, match="no preview yet"):
        assert controlnet_preview.use_preview(0, None, False) == (gr.skip(),) * 2


@pytest.mark.parametrize("values, message", [
    ({"module": "canny"}, "ControlNet Unit 0: no control image to preprocess"),
    ({"module": "no_such_module", "image": picture()}, "unknown ControlNet preprocessor 'no_such_module'"),
])
def test_preview_errors_are_notices(services, values, message):
    with pytest.warns(UserWarning, match=message):
        result = controlnet_preview.run_preview(services, "txt2img", 0, values, 512, 512)
    assert not isinstance(result, Image.Image)


def test_a_missing_annotator_file_is_a_notice_naming_it(services):
    needing = [e for e in services.preprocessors.catalogue() if e.weight_files]
    if not needing:
        pytest.skip("no neural preprocessor in the catalogue yet")
    entry = needing[0]
    assert not any((services.paths.annotators / name).exists() for name in entry.weight_files)
    with pytest.warns(UserWarning, match=entry.weight_files[0].split("/")[-1]):
        result = controlnet_preview.run_preview(services, "txt2img", 0, {"module": entry.name, "image": picture()},
                                                512, 512)
    assert not isinstance(result, Image.Image)


# --- the request --------------------------------------------------------------------------------------------------
def test_generate_builds_one_control_unit_per_tab(services):
    image, mask = picture(), Image.new("L", (64, 64), 255)
    request = generation.build_request("txt2img", *SMALL, controlnet=[
        unit_values(enabled=True, image=image, mask=mask, module="canny", model=title(services, CANNY_MODEL),
                    weight=0.6, guidance_start=0.1, guidance_end=0.8, processor_res=256, threshold_a=90,
                    threshold_b=180, control_mode="My prompt is more important", resize_mode="Just Resize",
                    pixel_perfect=True),
        unit_values(image=image, module="canny")])  # disabled: nothing of it travels
    request.validate()
    first, second = request.controlnet_units
    assert first == ControlUnit(enabled=True, module="canny", model=title(services, CANNY_MODEL), weight=0.6,
                                image=image, mask=mask, resize_mode="Just Resize",
                                processor_res=256, threshold_a=90.0, threshold_b=180.0, guidance_start=0.1,
                                guidance_end=0.8, control_mode="My prompt is more important", pixel_perfect=True)
    assert second == ControlUnit() and second.image is None

    init = picture(seed=1)
    own = {"img2img_mode": "img2img", "image": init}
    request = generation.build_request("img2img", *SMALL, img2img=own, controlnet=[
        unit_values(enabled=True, use_input=True, image=image, module="canny"),
        unit_values(enabled=True, use_input=False, image=image, module="invert")])
    request.validate()
    uses_input, own_image = request.controlnet_units
    assert uses_input.enabled and uses_input.image is None  # the engine takes the init image
    assert (uses_input.processor_res, uses_input.threshold_a, uses_input.threshold_b) == (-1, -1.0, -1.0)
    assert own_image.image is image and own_image.module == "invert"


@pytest.mark.parametrize("mode, use_input, message", [
    ("txt2img", None, "ControlNet Unit 0 is enabled but has no control image: upload one \\(or disable the unit"),
    ("img2img", False, "ControlNet Unit 0 is enabled but has no control image: upload one \\(or tick"),
])
def test_an_enabled_unit_without_an_image_is_a_notice_and_queues_nothing(services, mode, use_input, message):
    with pytest.raises(RequestError, match=message):
        generation.build_request(mode, *SMALL, img2img={"image": picture()},
                                 controlnet=[unit_values(enabled=True, use_input=use_input)])
    pending = services.queue.pending()
    with pytest.warns(UserWarning, match=message):
        outputs = list(generation.generate(services, mode, None, *SMALL, img2img={"image": picture()},
                                           controlnet=[unit_values(enabled=True, use_input=use_input)]))
    last = dict(zip(generation.OUTPUTS, outputs[-1]))
    assert len(outputs) == 1 and last["state"]["job_id"] is None and services.queue.pending() == pending


def test_out_of_range_unit_values_are_request_errors(services):
    request = generation.build_request("txt2img", *SMALL, controlnet=[
        unit_values(enabled=True, image=picture(), guidance_start=0.9, guidance_end=0.2)])
    with pytest.raises(RequestError, match="ControlNet unit 0: guidance_start \\(0.9\\) is after guidance_end"):
        request.validate()


# --- paste-back ---------------------------------------------------------------------------------------------------
def infotext(services, *entries: tuple[int, ControlUnit, str]) -> str:
    params = ", ".join(f'ControlNet {index}: "{unit_infotext(unit, model, 512, 100.0, 200.0)}"'
                       for index, unit, model in entries)
    return f"a fox\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, Seed: 5, Size: 64x64, {params}, Version: v1"


def pasted(services, text: str, count: int = 3) -> list[dict]:
    values = pnginfo.controlnet_values(services, text, count)
    width = len(PASTE_FIELDS)
    return [dict(zip(PASTE_FIELDS, values[i * width:(i + 1) * width])) for i in range(count)]


def test_pasting_infotext_restores_the_units(services):
    canny = ControlUnit(enabled=True, module="canny", weight=0.65, resize_mode="Resize and Fill",
                        guidance_start=0.1, guidance_end=0.75, control_mode="ControlNet is more important")
    invert = ControlUnit(enabled=True, module="invert", pixel_perfect=True)
    # unit 0 by its exact title, unit 2 by its name with another file's hash
    text = infotext(services, (0, canny, title(services, CANNY_MODEL)), (2, invert, f"{DEPTH_MODEL} [0badf00d]"))
    first, second, third = pasted(services, text)
    assert first["enabled"] is True and first["type_filter"] == "Canny"
    assert first["module"]["value"] == "canny" and first["module"]["choices"] == services.preprocessors.for_type(
        "Canny")
    assert first["model"]["value"] == title(services, CANNY_MODEL)
    assert (first["weight"], first["resize_mode"], first["guidance_start"], first["guidance_end"]) == (
        0.65, "Resize and Fill", 0.1, 0.75)
    assert first["control_mode"] == "ControlNet is more important" and first["pixel_perfect"] is False
    assert (first["threshold_a"]["label"], first["threshold_a"]["value"]) == ("Canny Low Threshold", 100.0)
    assert (first["threshold_b"]["label"], first["threshold_b"]["value"]) == ("Canny High Threshold", 200.0)
    assert first["processor_res"]["value"] == 512 and first["processor_res"]["visible"]

    assert second["enabled"] is False  # no entry: disabled, the rest left as it is
    assert all(value == gr.skip() for name, value in second.items() if name != "enabled")

    assert third["enabled"] and third["module"]["value"] == "invert" and third["type_filter"] == "All"
    assert third["model"]["value"] == title(services, DEPTH_MODEL)
    assert third["pixel_perfect"] is True and third["processor_res"]["visible"] is False
    assert third["threshold_a"] == {"__type__": "update", "visible": False}


def test_pasting_unknown_models_and_extra_units_warns(services):
    unit = ControlUnit(enabled=True, module="canny")
    text = infotext(services, (0, unit, "control_missing [12345678]"), (4, unit, "None"))
    with pytest.warns(UserWarning) as caught:
        first = pasted(services, text)[0]
    messages = " | ".join(str(w.message) for w in caught)
    assert "model 'control_missing [12345678]' is not in models/ControlNet" in messages
    assert "ControlNet 4 not pasted: this UI has 3 units" in messages
    assert first["model"]["value"] == "control_missing [12345678]" and first["type_filter"] == "All"
    # no ControlNet entries: every unit disabled
    plain = pasted(services, "a fox\nSteps: 3, Sampler: Euler, Seed: 5, Size: 64x64")
    assert [unit["enabled"] for unit in plain] == [False, False, False]


# --- gallery --------------------------------------------------------------------------------------------------------
def test_a_detected_map_in_the_gallery_has_no_parameters():
    state = {**generation.new_state(), "infotexts": ["a fox\nSteps: 3"], "seeds": [5], "maps": 1}
    chosen, html = generation.select_image(state, 1)
    assert chosen["selected"] == 1 and html == generation.DETECTED_MAP_HTML
    assert generation.reuse_seed(chosen) == 5
    assert "Steps: 3" in generation.select_image(chosen, 0)[1]


# --- generating through the UI path -------------------------------------------------------------------------------
def generate_last(services, mode="txt2img", units=(), img2img=None) -> dict:
    outputs = list(generation.generate(services, mode, None, *SMALL, img2img=img2img, controlnet=list(units)))
    return dict(zip(generation.OUTPUTS, outputs[-1]))


def test_a_canny_unit_generates_writes_its_infotext_and_shows_its_map(services):
    image = picture()
    canny = unit_values(enabled=True, image=image, module="canny", model="sd15_canny", weight=0.8,
                        processor_res=64, threshold_a=100, threshold_b=200)  # the model by a part of its name
    last = generate_last(services, units=[canny, unit_values(), unit_values()])
    generated, detected = last["gallery"]  # the image, then the unit's map
    entry = (f'ControlNet 0: "Module: canny, Model: {title(services, CANNY_MODEL)}, Weight: 0.8, Resize Mode: Crop '
             'and Resize, Processor Res: 64, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance '
             'End: 1.0, Pixel Perfect: False, Control Mode: Balanced"')
    infotext = generated.info["parameters"]
    assert entry in infotext and "ControlNet 1" not in infotext
    assert "ControlNet 0: &quot;Module: canny" in last["infotext"]
    assert "parameters" not in detected.info and last["state"]["maps"] == 1
    assert np.array_equal(np.asarray(detected)[:, :, 0], cv2.Canny(np.asarray(image), 100, 200))
    # the unit changed the picture: the same seed without it differs
    plain = generate_last(services, units=[unit_values(), unit_values(), unit_values()])["gallery"]
    assert len(plain) == 1 and not np.array_equal(np.asarray(plain[0]), np.asarray(generated))

    # pasting the image's parameters back restores unit 0 as it was
    first = pasted(services, infotext)[0]
    assert first["enabled"] and first["module"]["value"] == "canny"
    assert first["model"]["value"] == title(services, CANNY_MODEL) and first["weight"] == 0.8
    assert first["processor_res"]["value"] == 64 and first["threshold_a"]["value"] == 100.0

    services.options.update({"control_net_no_detectmap": True})
    try:
        hidden = generate_last(services, units=[canny])
    finally:
        services.options.update({"control_net_no_detectmap": False})
    assert len(hidden["gallery"]) == 1 and hidden["state"]["maps"] == 0
    # hiding the map leaves the sampling as it was: the same computation, bit-identical
    assert np.array_equal(np.asarray(hidden["gallery"][0]), np.asarray(generated))


def test_an_img2img_unit_using_the_img2img_input_detects_the_init_image(services):
    init = picture(seed=7)
    unit = unit_values(enabled=True, use_input=True, module="canny", model=title(services, CANNY_MODEL),
                       processor_res=64, threshold_a=100, threshold_b=200)
    last = generate_last(services, "img2img", [unit], img2img={"img2img_mode": "img2img", "image": init,
                                                               "denoising_strength": 0.5})
    generated, detected = last["gallery"]
    assert "ControlNet 0: " in generated.info["parameters"]
    assert np.array_equal(np.asarray(detected)[:, :, 0], cv2.Canny(np.asarray(init), 100, 200))


# --- the Blocks' own event functions ------------------------------------------------------------------------------
def call_event(blocks, trigger, values_by_elem_id: dict, event: str = "click"):
    """Run the function the Blocks wired to `trigger`'s event with its real inputs: each component's current
    value, or the one given for its elem_id (what the page would send)."""
    fn = next(fn for fn in blocks.fns.values() if any(t[0] == trigger._id and t[1] == event for t in fn.targets))
    args = [values_by_elem_id.get(getattr(c, "elem_id", None), c.value) for c in fn.inputs]
    result = fn.fn(*args)
    return list(result) if hasattr(result, "__next__") else result


def test_the_tabs_events_carry_the_units_values(services):
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    image = picture(seed=4)
    p = unit_prefix("txt2img", 1)  # the second unit: the values must reach the right unit
    given = {"txt2img_prompt": "a fox", "txt2img_steps": 3, "txt2img_width": 64, "txt2img_height": 64,
             "txt2img_seed": 11, "txt2img_sampling": "Euler", f"{p}_controlnet_enable_checkbox": True,
             f"{p}_input_image": image, f"{p}_controlnet_preprocessor_dropdown": "canny",
             f"{p}_controlnet_model_dropdown": title(services, CANNY_MODEL),
             f"{p}_controlnet_preprocessor_resolution_slider": 64, f"{p}_controlnet_threshold_A_slider": 100,
             f"{p}_controlnet_threshold_B_slider": 200}
    outputs = call_event(blocks, by_id["txt2img_generate"], given)
    last = dict(zip(generation.OUTPUTS, outputs[-1]))
    generated, detected = last["gallery"]
    assert 'ControlNet 1: "Module: canny' in generated.info["parameters"]
    assert "ControlNet 0" not in generated.info["parameters"]
    assert np.array_equal(np.asarray(detected)[:, :, 0], cv2.Canny(np.asarray(image), 100, 200))

    # 💥 of an img2img unit that uses the img2img input previews the img2img picture
    init = picture(seed=5)
    q = unit_prefix("img2img", 0)
    shown = call_event(blocks, by_id[f"{q}_controlnet_trigger_preprocessor"], {
        "img2img_image": init, f"{q}_controlnet_preprocessor_dropdown": "canny",
        f"{q}_controlnet_preprocessor_resolution_slider": 64, f"{q}_controlnet_threshold_A_slider": 100,
        f"{q}_controlnet_threshold_B_slider": 200, "img2img_width": 64, "img2img_height": 64})
    assert np.array_equal(np.asarray(shown)[:, :, 0], cv2.Canny(np.asarray(init), 100, 200))
    # the user picking a preprocessor sets its sliders' defaults
    res, a, b, mask, model = call_event(blocks, by_id[f"{q}_controlnet_preprocessor_dropdown"],
                                        {f"{q}_controlnet_preprocessor_dropdown": "canny"}, event="input")
    assert (a["label"], a["value"], b["value"]) == ("Canny Low Threshold", 100, 200)


def test_sending_a_gallery_image_to_img2img_restores_its_units(services):
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    button = by_id["txt2img_send_to_img2img"]
    unit_outputs = {by_id[f"{unit_prefix('img2img', 0)}_controlnet_enable_checkbox"]._id}
    fn = next(fn for fn in blocks.fns.values() if any(t[0] == button._id for t in fn.targets)
              and unit_outputs & {c._id for c in fn.outputs})
    canny = ControlUnit(enabled=True, module="canny", weight=0.4)
    text = infotext(services, (0, canny, title(services, CANNY_MODEL)))
    state = {"infotexts": [text], "selected": 0}
    values = fn.fn(state)
    first = dict(zip(PASTE_FIELDS, values[:len(PASTE_FIELDS)]))
    assert first["enabled"] is True and first["weight"] == 0.4 and first["module"]["value"] == "canny"
    assert first["model"]["value"] == title(services, CANNY_MODEL)
    # a detected map is selected (no infotext): the units are left as they are
    assert all(value == gr.skip() for value in fn.fn({"infotexts": [text], "selected": 1}))


# --- which units are on: the accordion's title and the tabs' marks; no dead controls ------------------------------
def test_the_title_counts_the_enabled_units_and_their_tabs_are_marked():
    assert controlnet.panel_title([False, False, False]) == "ControlNet"
    assert controlnet.panel_title([False, True, False]) == "ControlNet - 1 unit"
    assert controlnet.panel_title([True, False, True]) == "ControlNet - 2 units"
    assert controlnet.panel_title([None, 1, True]) == "ControlNet - 2 units"  # what a client may send
    accordion, *tabs = controlnet.active_units(False, True, False)
    assert accordion == {"__type__": "update", "label": "ControlNet - 1 unit"}
    assert [tab["label"] for tab in tabs] == ["ControlNet Unit 0", "ControlNet Unit 1 ✓", "ControlNet Unit 2"]


def test_the_title_follows_every_enable_box_and_the_page_load(services):
    # ui-config.json switches unit 2 on before the page is served: the load event must count it
    (services.paths.data_dir / "ui-config.json").write_text(
        '{"txt2img/ControlNet Unit 2/Enable/value": true}', encoding="utf-8")
    try:
        blocks = build_ui(services)
    finally:
        (services.paths.data_dir / "ui-config.json").unlink()
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    accordion = by_id["txt2img_controlnet"]
    enables = [by_id[f"{unit_prefix('txt2img', i)}_controlnet_enable_checkbox"] for i in range(3)]
    tabs = [by_id[f"{unit_prefix('txt2img', i)}_tab"] for i in range(3)]
    assert enables[2].value is True
    fn = next(fn for fn in blocks.fns.values() if accordion in fn.outputs)
    assert [c._id for c in fn.inputs] == [c._id for c in enables]
    assert [c._id for c in fn.outputs] == [accordion._id, *(tab._id for tab in tabs)]
    triggers = {(target, event) for target, event in fn.targets}
    assert {(enable._id, "change") for enable in enables} <= triggers  # the user's clicks, pastes, restored values
    assert any(event == "load" for _, event in triggers)  # and the page load
    # what the load event computes from the page's values
    title, *labels = fn.fn(*(enable.value for enable in enables))
    assert title["label"] == "ControlNet - 1 unit"
    assert [label["label"] for label in labels] == ["ControlNet Unit 0", "ControlNet Unit 1", "ControlNet Unit 2 ✓"]
    # the img2img accordion has its own count
    img2img = next(fn for fn in blocks.fns.values() if by_id["img2img_controlnet"] in fn.outputs)
    assert img2img.fn(True, True, True)[0]["label"] == "ControlNet - 3 units"


def test_there_is_no_low_vram_box_and_every_unit_control_reaches_the_request(services):
    blocks = build_ui(services)
    labels = {getattr(b, "label", None) for b in blocks.blocks.values()}
    assert "Low VRAM" not in labels
    assert not any("low_vram" in (getattr(b, "elem_id", None) or "") for b in blocks.blocks.values())
    parameters = [p["parameter_name"] for p in blocks.get_api_info()["named_endpoints"]["/txt2img"]["parameters"]]
    assert "controlnet_0_low_vram" not in parameters and "controlnet_0_pixel_perfect" in parameters

    # every value control of a unit is sent with Generate, except the Control Type filter (it narrows the lists)
    values_fields = {name for name in controlnet.ELEM_IDS if name not in (
        "tab", "preview", "run_preprocessor", "refresh_models", "use_preview", "type_filter")}
    assert values_fields == set(controlnet.REQUEST_FIELDS)
    # ... and each of them changes the unit the request gets
    image, other = picture(), picture(seed=9)
    base = unit_values(enabled=True, use_input=False, image=image, module="canny", model="sd15_canny",
                       processor_res=256, threshold_a=90, threshold_b=180)
    changed = {"enabled": False, "use_input": True, "image": other, "mask": Image.new("L", (64, 64), 255),
               "module": "invert", "model": "sd15_depth", "weight": 0.5, "guidance_start": 0.2,
               "guidance_end": 0.7, "processor_res": 384, "threshold_a": 50, "threshold_b": 60,
               "control_mode": "ControlNet is more important", "resize_mode": "Just Resize", "pixel_perfect": True}
    assert set(changed) == set(controlnet.REQUEST_FIELDS)
    reference = controlnet.unit_from_values("img2img", 0, base)
    for name, value in changed.items():
        assert controlnet.unit_from_values("img2img", 0, {**base, name: value}) != reference, name
