"""ControlNet through the HTTP API as clients of A1111's ControlNet extension use it: the `/controlnet/*` routes
(their shapes, `detect` against OpenCV), units in `alwayson_scripts` (A1111's field names, legacy spellings and
values), the 422s for bad units, and txt2img with units on the tiny SD1 checkpoint (maps appended, infotext).

One API app serves the tests: a tiny SD1 checkpoint and three tiny ControlNets (an SD1 one in the original
single-file layout, an SD1 diffusers folder, and an SDXL one). Generations are 64x64 with 3 steps.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app import create_app
from conftest import install_model
from webui.api.models import Img2ImgBody, Txt2ImgBody
from webui.api.controlnet import units_from_alwayson
from webui.api.routes import _request_from_body
from webui.control.types import TYPE_NAMES
from webui.control.units import CONTROL_MODES, CONTROL_RESIZE_MODES
from webui.core.errors import RequestError
from webui.models.tiny import write_controlnet
from webui.outputs.infotext import parse_infotext
from webui.settings.flags import parse_flags

TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
DETECT = "/controlnet/detect"
SIZE = 64
SMALL = {"prompt": "a house", "width": SIZE, "height": SIZE, "steps": 3, "seed": 11, "sampler_name": "Euler"}
CANNY = "control_v11p_sd15_canny"
SDXL_CANNY = "controlnet_sdxl_canny"
DEPTH_FOLDER = "tiny_sd15_depth"


# --- fixtures and helpers ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("api-controlnet")
    install_model(data, tiny_models["sd1"])
    folder = data / "models" / "ControlNet"
    write_controlnet(folder / f"{CANNY}.safetensors", "sd1", "single", seed=1)
    write_controlnet(folder / DEPTH_FOLDER, "sd1", "diffusers", seed=2)
    write_controlnet(folder / f"{SDXL_CANNY}.safetensors", "sdxl", "diffusers-file", seed=3)
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        assert services.hasher.wait_idle(30)
        yield SimpleNamespace(client=TestClient(app), services=services, data=data, folder=folder)
    finally:
        services.stop()


@pytest.fixture
def client(api) -> TestClient:
    return api.client


def title_of(api, name: str) -> str:
    return next(info.title for info in api.services.controlnets.list() if info.name == name)


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.int16)


def shapes(width: int = SIZE, height: int = SIZE) -> Image.Image:
    """A picture with clear edges: a light rectangle and a dark disc on a mid-grey ground."""
    image = Image.new("RGB", (width, height), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 8, height // 8, width // 2, height // 2), fill=(240, 230, 220))
    draw.ellipse((width // 2, height // 2, width - 4, height - 4), fill=(20, 30, 40))
    return image


PICTURE = shapes()
PICTURE_B64 = encode_png(PICTURE)
MASK = Image.new("L", (SIZE, SIZE), 0)
MASK.paste(255, (0, 0, SIZE // 2, SIZE))
MASK_B64 = encode_png(MASK)


def cn(*units) -> dict:
    return {"alwayson_scripts": {"controlnet": {"args": list(units)}}}


def canny_unit(**fields) -> dict:
    return {"enabled": True, "image": PICTURE_B64, "module": "canny", "model": CANNY, "processor_res": SIZE,
            **fields}


def units_of(body_type=Txt2ImgBody, mode: str = "txt2img", **fields):
    return _request_from_body(body_type(**fields), mode).controlnet_units


def post(client: TestClient, body: dict, path: str = TXT2IMG):
    return client.post(path, json={**SMALL, **body})


def post_ok(client: TestClient, body: dict, path: str = TXT2IMG) -> dict:
    response = post(client, body, path)
    assert response.status_code == 200, response.text
    return response.json()


def assert_422(response, *words: str) -> str:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail
    return detail


# --- GET routes ----------------------------------------------------------------------------------------------------
def test_version(client):
    response = client.get("/controlnet/version")
    assert response.status_code == 200
    assert isinstance(response.json()["version"], int)


def test_model_list_is_none_then_titles_and_update_refreshes(api, client):
    expected = ["None", title_of(api, CANNY), title_of(api, SDXL_CANNY), title_of(api, DEPTH_FOLDER)]
    assert client.get("/controlnet/model_list").json() == {"model_list": expected}
    for title in expected[1:]:
        assert title.endswith("]") and len(title.rsplit("[", 1)[1]) == 9  # "name [8hex]"
    added = api.folder / "added_later_canny.safetensors"
    shutil.copy2(api.folder / f"{CANNY}.safetensors", added)
    try:
        assert client.get("/controlnet/model_list", params={"update": "false"}).json()["model_list"] == expected
        listed = client.get("/controlnet/model_list", params={"update": "true"}).json()["model_list"]
        assert listed[1].startswith("added_later_canny [") and listed[2:] == expected[1:]
    finally:
        added.unlink()
        api.services.controlnets.refresh()


def test_module_list_has_every_module_with_its_sliders(api, client):
    payload = client.get("/controlnet/module_list").json()
    names = api.services.preprocessors.names()
    assert payload["module_list"] == names
    assert {"none", "canny", "invert"} <= set(names)
    assert set(payload["module_detail"]) == set(names)
    for name, detail in payload["module_detail"].items():
        assert isinstance(detail["model_free"], bool)
        for slider in detail["sliders"]:
            assert slider is None or set(slider) == {"name", "value", "min", "max", "step"}, (name, slider)
    assert payload["module_detail"]["canny"]["sliders"] == [
        {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
        {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
        {"name": "Canny High Threshold", "value": 200, "min": 1, "max": 255, "step": 1}]
    assert payload["module_detail"]["none"]["sliders"] == []
    assert client.get("/controlnet/module_list", params={"alias_names": "true"}).json()["module_list"] == names


def test_control_types_narrow_modules_and_models(api, client):
    types = client.get("/controlnet/control_types").json()["control_types"]
    assert list(types) == list(TYPE_NAMES)
    canny = types["Canny"]
    assert canny["module_list"][0] == "none" and "canny" in canny["module_list"]
    assert canny["model_list"] == ["None", title_of(api, CANNY), title_of(api, SDXL_CANNY)]
    assert canny["default_option"] == "canny" and canny["default_model"] == title_of(api, CANNY)
    assert types["Depth"]["model_list"] == ["None", title_of(api, DEPTH_FOLDER)]
    assert types["OpenPose"]["model_list"] == ["None"] and types["OpenPose"]["default_model"] == "None"
    everything = types["All"]
    assert everything["module_list"] == api.services.preprocessors.names()
    assert everything["model_list"] == api.services.controlnets.titles()
    assert (everything["default_option"], everything["default_model"]) == ("none", "None")
    for entry in types.values():
        assert entry["default_option"] in entry["module_list"] and entry["default_model"] in entry["model_list"]


def test_settings_reports_the_unit_count_option(client):
    assert client.get("/controlnet/settings").json() == {"control_net_unit_count": 3}
    assert client.post("/sdapi/v1/options", json={"control_net_unit_count": 5}).status_code == 200
    try:
        assert client.get("/controlnet/settings").json() == {"control_net_unit_count": 5}
    finally:
        client.post("/sdapi/v1/options", json={"control_net_unit_count": 3})


def test_controlnet_routes_need_the_api_login(tmp_path):
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path), "--nowebui", "--api-auth", "user:pass"]))
    try:
        client = TestClient(app)
        for path in ("/controlnet/version", "/controlnet/model_list", "/controlnet/module_list",
                     "/controlnet/control_types", "/controlnet/settings"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, auth=("user", "wrong")).status_code == 401, path
            assert client.get(path, auth=("user", "pass")).status_code == 200, path
        body = {"controlnet_module": "canny", "controlnet_input_images": [PICTURE_B64]}
        assert client.post(DETECT, json=body).status_code == 401
        assert client.post(DETECT, json=body, auth=("user", "pass")).status_code == 200
    finally:
        services.stop()


# --- detect --------------------------------------------------------------------------------------------------------
def test_detect_canny_equals_opencv(client):
    wide = shapes(96, 64)
    body = {"controlnet_module": "canny", "controlnet_processor_res": 64,
            "controlnet_input_images": [encode_png(wide), "data:image/png;base64," + PICTURE_B64]}
    payload = client.post(DETECT, json=body).json()
    assert payload["info"] == "Success" and len(payload["images"]) == 2
    for data, source in zip(payload["images"], (wide, PICTURE)):
        edges = cv2.Canny(np.asarray(source), 100, 200)  # the module's default thresholds
        assert edges.any()
        assert np.array_equal(decode(data), np.repeat(edges[:, :, None], 3, axis=2).astype(np.int16))
    body = {**body, "controlnet_threshold_a": 20, "controlnet_threshold_b": 60, "controlnet_input_images": [
        PICTURE_B64]}
    (data,) = client.post(DETECT, json=body).json()["images"]
    assert np.array_equal(decode(data)[:, :, 0], cv2.Canny(np.asarray(PICTURE), 20, 60))


def test_detect_scales_to_the_processor_resolution(client):
    body = {"controlnet_module": "canny", "controlnet_input_images": [encode_png(shapes(96, 64))],
            "controlnet_processor_res": 128}
    (data,) = client.post(DETECT, json=body).json()["images"]
    assert decode(data).shape == (128, 192, 3)


def test_detect_module_none_returns_the_input(client):
    body = {"controlnet_module": "none", "controlnet_input_images": [PICTURE_B64]}
    (data,) = client.post(DETECT, json=body).json()["images"]
    assert np.array_equal(decode(data), np.asarray(PICTURE, dtype=np.int16))


@pytest.mark.parametrize("body, words", [
    ({"controlnet_module": "no_such_module", "controlnet_input_images": [PICTURE_B64]},
     ("no_such_module", "canny")),
    ({"controlnet_module": "canny", "controlnet_input_images": ["not base64!"]},
     ("controlnet_input_images[0]", "could not decode image")),
    ({"controlnet_module": "canny", "controlnet_input_images": []}, ("controlnet_input_images",)),
    ({"controlnet_module": "canny", "controlnet_input_images": [PICTURE_B64, PICTURE_B64],
      "controlnet_masks": [MASK_B64]}, ("controlnet_masks", "one mask per input image")),
])
def test_detect_errors_are_422_with_the_reason(client, body, words):
    assert_422(client.post(DETECT, json=body), *words)


def test_detect_missing_annotator_weights_is_a_422_naming_the_file(api, client):
    needing = [entry for entry in api.services.preprocessors.catalogue() if entry.weight_files]
    if not needing:
        pytest.skip("no preprocessor in the catalogue needs weight files yet")
    entry = needing[0]
    body = {"controlnet_module": entry.name, "controlnet_input_images": [PICTURE_B64]}
    detail = assert_422(client.post(DETECT, json=body))
    assert any(name in detail for name in entry.weight_files), detail


# --- units from alwayson_scripts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["controlnet", "ControlNet", "CONTROLNET"])
def test_alwayson_key_matches_in_any_case(key):
    (unit,) = units_of(alwayson_scripts={key: {"args": [canny_unit()]}})
    assert unit.enabled and unit.module == "canny" and unit.model == CANNY
    assert np.array_equal(np.asarray(unit.image), np.asarray(PICTURE))


def test_no_controlnet_key_or_empty_args_gives_no_units():
    assert units_of() == []
    assert units_from_alwayson({"some other script": {"args": [1, 2]}}) == []
    with pytest.raises(RequestError, match="always-on script 'some other script' not found"):
        units_of(alwayson_scripts={"some other script": {"args": [1, 2]}})  # A1111's API refuses unknown titles
    assert units_of(**cn()) == []


def test_a_unit_naming_a_model_is_on_unless_it_says_otherwise():
    """The extension's units default to enabled, and webuiapi's ControlNetUnit.to_dict() never sends the key."""
    (unit,) = units_of(**cn({"image": PICTURE_B64, "module": "canny", "model": CANNY}))
    assert unit.enabled is True
    (unit,) = units_of(**cn({"enabled": False, "image": PICTURE_B64, "module": "canny", "model": CANNY}))
    assert unit.enabled is False


def test_unit_defaults_are_a1111s_and_unknown_keys_are_ignored():
    (unit,) = units_of(**cn({"image": PICTURE_B64, "hr_option": "Both", "is_ui": False, "something_new": [1]}))
    assert unit.enabled is False  # no "enabled" key and no model: a placeholder unit, off
    assert (unit.module, unit.model, unit.weight) == ("none", "None", 1.0)
    assert (unit.resize_mode, unit.control_mode) == ("Crop and Resize", "Balanced")
    assert (unit.processor_res, unit.threshold_a, unit.threshold_b) == (-1, -1.0, -1.0)
    assert (unit.guidance_start, unit.guidance_end) == (0.0, 1.0)
    assert unit.pixel_perfect is False and unit.low_vram is False and unit.save_detected_map is True


def test_every_unit_field_reaches_the_unit():
    (unit,) = units_of(**cn({"enabled": True, "image": PICTURE_B64, "mask": MASK_B64, "module": "canny",
                             "model": CANNY, "weight": 0.6, "resize_mode": "Resize and Fill", "low_vram": True,
                             "processor_res": 256, "threshold_a": 50, "threshold_b": 150, "guidance_start": 0.2,
                             "guidance_end": 0.8, "control_mode": "My prompt is more important",
                             "pixel_perfect": True, "save_detected_map": False}))
    assert (unit.weight, unit.resize_mode, unit.low_vram, unit.processor_res) == (0.6, "Resize and Fill", True, 256)
    assert (unit.threshold_a, unit.threshold_b, unit.guidance_start, unit.guidance_end) == (50, 150, 0.2, 0.8)
    assert unit.control_mode == "My prompt is more important"
    assert unit.pixel_perfect is True and unit.save_detected_map is False
    assert np.array_equal(np.asarray(unit.mask.convert("L")), np.asarray(MASK))


def test_legacy_input_image_data_prefix_and_image_mask_dict():
    legacy, prefixed, pair = units_of(**cn(
        {"input_image": PICTURE_B64},
        {"image": "data:image/png;base64," + PICTURE_B64},
        {"image": {"image": PICTURE_B64, "mask": MASK_B64}}))
    for unit in (legacy, prefixed, pair):
        assert np.array_equal(np.asarray(unit.image.convert("RGB")), np.asarray(PICTURE))
    assert legacy.mask is None and prefixed.mask is None
    assert np.array_equal(np.asarray(pair.mask.convert("L")), np.asarray(MASK))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_legacy_integer_modes(index):
    (unit,) = units_of(**cn({"control_mode": index, "resize_mode": index}))
    assert unit.control_mode == CONTROL_MODES[index] and unit.resize_mode == CONTROL_RESIZE_MODES[index]


def test_legacy_resize_mode_names_and_lowvram_spelling():
    inner, outer = units_of(**cn({"resize_mode": "Inner Fit (Scale to Fit)", "lowvram": True},
                                 {"resize_mode": "Envelope (Outer Fit)"}))
    assert inner.resize_mode == "Crop and Resize" and inner.low_vram is True
    assert outer.resize_mode == "Resize and Fill"


def test_img2img_unit_without_image_uses_the_init_image():
    (unit,) = units_of(Img2ImgBody, "img2img", init_images=[PICTURE_B64], **cn({"enabled": True}))
    assert unit.enabled and unit.image is None  # the engine takes the init image


@pytest.mark.parametrize("units, field, words", [
    ([{"image": "%%%not-base64"}], "controlnet_units[0].image", ("ControlNet unit 0", "image", "base64")),
    ([{}, {"input_image": "aGVsbG8="}], "controlnet_units[1].input_image",
     ("ControlNet unit 1", "input_image", "could not decode image")),
    ([{"image": {"image": PICTURE_B64, "mask": "nope!"}}], "controlnet_units[0].image",
     ("ControlNet unit 0", "image.mask")),
    ([{"mask": "???"}], "controlnet_units[0].mask", ("ControlNet unit 0", "mask")),
    ([{"guidance_start": 0.8, "guidance_end": 0.3}], "controlnet_units[0]", ("guidance_start", "guidance_end")),
    ([{"weight": "heavy"}], "controlnet_units[0]", ("weight must be a number",)),
    ([{"control_mode": 7}], "controlnet_units[0]", ("control_mode", "Balanced")),
    (["canny"], "controlnet_units[0]", ("ControlNet unit 0", "object")),
])
def test_bad_unit_values_name_the_unit_and_field(units, field, words):
    with pytest.raises(RequestError) as caught:
        units_of(**cn(*units))
    assert caught.value.field == field
    for word in words:
        assert word in str(caught.value)


def test_args_must_be_a_list():
    with pytest.raises(RequestError, match="args"):
        units_of(alwayson_scripts={"ControlNet": {"args": "canny"}})


# --- 422s through the server ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit, words", [
    ({"image": "not an image"}, ("ControlNet unit 0", "image", "could not decode image")),
    ({"module": "no_such_module"}, ("ControlNet unit 0", "no_such_module", "canny", "invert")),
    ({"model": "no_such_model"}, ("ControlNet unit 0", "no_such_model", CANNY, SDXL_CANNY, DEPTH_FOLDER)),
    ({"guidance_start": 0.9, "guidance_end": 0.1}, ("ControlNet unit 0", "guidance_start (0.9)", "guidance_end")),
    ({"image": None}, ("ControlNet unit 0", "no image")),
])
def test_bad_units_are_a_422(client, unit, words):
    assert_422(post(client, cn(canny_unit(**unit))), *words)
    assert client.get("/sdapi/v1/progress").status_code == 200  # the server keeps serving


def test_bad_unit_in_img2img_is_a_422_too(client):
    body = {"init_images": [PICTURE_B64], **cn(canny_unit(model="no_such_model"))}
    assert_422(post(client, body, IMG2IMG), "no_such_model")


# --- generation ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain(api) -> dict:
    """txt2img without ControlNet, for comparisons."""
    return post_ok(api.client, {})


def test_canny_unit_returns_the_image_then_the_map_and_writes_infotext(api, client, plain):
    payload = post_ok(client, cn(canny_unit()))
    image, detected = payload["images"]
    info = json.loads(payload["info"])
    assert len(info["infotexts"]) == 1
    edges = cv2.Canny(np.asarray(PICTURE), 100, 200)
    assert np.array_equal(decode(detected)[:, :, 0], edges)
    assert not np.array_equal(decode(image), decode(plain["images"][0]))  # the unit steered the sampling
    entry = parse_infotext(info["infotexts"][0])["ControlNet 0"]
    assert entry.startswith(f"Module: canny, Model: {title_of(api, CANNY)}, Weight: 1.0, "
                            "Resize Mode: Crop and Resize, Processor Res: 64, Threshold A: 100.0, "
                            "Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, "
                            "Control Mode: Balanced"), entry
    assert "ControlNet 1" not in parse_infotext(info["infotexts"][0])


def test_parameters_echo_the_units_without_their_images(client):
    unit = canny_unit(enabled=False, mask=MASK_B64)
    params = post_ok(client, cn(unit))["parameters"]
    (echoed,) = params["alwayson_scripts"]["controlnet"]["args"]
    assert echoed == {k: v for k, v in unit.items() if k not in ("image", "mask")}


def test_disabled_unit_changes_nothing(client, plain):
    payload = post_ok(client, cn(canny_unit(enabled=False, module="no_such_module", model="no_such_model")))
    assert len(payload["images"]) == 1
    # the unit never runs: the same computation as `plain`, same batch size and process, bit-identical
    assert np.array_equal(decode(payload["images"][0]), decode(plain["images"][0]))
    assert "ControlNet 0" not in json.loads(payload["info"])["infotexts"][0]


def test_detected_maps_can_be_left_out(client):
    assert len(post_ok(client, cn(canny_unit(save_detected_map=False)))["images"]) == 1
    body = {**cn(canny_unit()), "override_settings": {"control_net_no_detectmap": True}}
    assert len(post_ok(client, body)["images"]) == 1
    assert len(post_ok(client, cn(canny_unit()))["images"]) == 2  # the override was for that request only


def test_two_units_give_two_maps_in_unit_order(api, client):
    inverted = canny_unit(module="invert", model=DEPTH_FOLDER, weight=0.6)
    payload = post_ok(client, cn(canny_unit(weight=0.6), {"enabled": False}, inverted))
    image, canny_map, invert_map = payload["images"]
    assert np.array_equal(decode(invert_map), 255 - np.asarray(PICTURE, dtype=np.int16))
    assert np.array_equal(decode(canny_map)[:, :, 0], cv2.Canny(np.asarray(PICTURE), 100, 200))
    params = parse_infotext(json.loads(payload["info"])["infotexts"][0])
    assert f"Model: {title_of(api, CANNY)}, Weight: 0.6" in params["ControlNet 0"]
    assert params["ControlNet 2"].startswith(f"Module: invert, Model: {title_of(api, DEPTH_FOLDER)}, Weight: 0.6")


def test_sdxl_controlnet_on_sd1_is_skipped_with_a_warning(api, client, plain):
    response = post(client, cn(canny_unit(model=SDXL_CANNY)))
    assert response.status_code == 200, response.text
    payload = response.json()
    warnings = " ".join(json.loads(payload["info"])["warnings"])
    assert "ControlNet unit 0 skipped" in warnings and "is an SDXL ControlNet and the checkpoint is SD1.x" in warnings
    # the skipped unit never runs: the same computation as `plain`, bit-identical
    assert np.array_equal(decode(payload["images"][0]), decode(plain["images"][0]))


def test_enabled_unit_without_a_model_is_skipped_with_a_warning(client, plain):
    payload = post_ok(client, cn(canny_unit(model="None")))
    assert len(payload["images"]) == 1
    # the skipped unit never runs: the same computation as `plain`, bit-identical
    assert np.array_equal(decode(payload["images"][0]), decode(plain["images"][0]))
    assert any("ControlNet unit 0" in warning and "no model" in warning
               for warning in json.loads(payload["info"])["warnings"])


def test_img2img_unit_without_image_detects_on_the_init_image(api, client):
    init = shapes(SIZE, SIZE).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    body = {"init_images": [encode_png(init)], "denoising_strength": 0.5,
            **cn(canny_unit(image=None, model=DEPTH_FOLDER))}
    image, detected = post_ok(client, body, IMG2IMG)["images"]
    assert np.array_equal(decode(detected)[:, :, 0], cv2.Canny(np.asarray(init), 100, 200))
    assert decode(image).shape == (SIZE, SIZE, 3)
