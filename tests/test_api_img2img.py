"""img2img inpainting through `/sdapi/v1/img2img` as an A1111 client sees it: the inpaint fields with A1111's
defaults and meanings, the mask (with or without a `data:` prefix), the `parameters` echo, outpainting through
A1111's script names and our `outpaint`, and img2img over a server folder (refused under --hide-ui-dir-config).

One API app (a tiny SD1 checkpoint, selected, and a tiny SD1 inpainting one) serves the tests; generations are
64x64 with 3 steps.
"""
from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from conftest import install_model
from webui.api.models import Img2ImgBody
from webui.api.routes import _request_from_body
from webui.engine import images as imaging
from webui.core.errors import RequestError
from webui.outputs.infotext import parse_infotext
from webui.settings.flags import parse_flags

IMG2IMG = "/sdapi/v1/img2img"
TXT2IMG = "/sdapi/v1/txt2img"
SIZE = 64
SMALL = {"width": SIZE, "height": SIZE, "steps": 3, "seed": 21, "sampler_name": "Euler"}
BLUR_REACH = 11  # a Gaussian of sigma 4 (the default mask blur) spreads 10 pixels


# --- fixtures and helpers ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("api-img2img")
    install_model(data, tiny_models["sd1"])
    install_model(data, tiny_models["sd1-inpaint"], name="zz-inpainting.safetensors")
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        assert services.hasher.wait_idle(30)
        yield SimpleNamespace(client=TestClient(app), services=services, data=data)
    finally:
        services.stop()


@pytest.fixture
def client(api) -> TestClient:
    return api.client


def post_ok(client: TestClient, body: dict, path: str = IMG2IMG) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def info_of(payload: dict) -> dict:
    return json.loads(payload["info"])


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(data: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def gradient(width: int = SIZE, height: int = SIZE) -> Image.Image:
    x = np.linspace(0, 255, width)[None, :] * np.ones((height, 1))
    y = np.linspace(0, 255, height)[:, None] * np.ones((1, width))
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1).astype(np.uint8), "RGB")


def right_half_mask() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (SIZE // 2, 0, SIZE, SIZE))
    return mask


INIT = gradient()
INIT_B64 = encode_png(INIT)
INIT_PIXELS = np.asarray(INIT, dtype=np.int16)
MASK_B64 = encode_png(right_half_mask())


def request_of(**fields):
    return _request_from_body(Img2ImgBody(init_images=[INIT_B64], **fields), "img2img")


# --- the fields reach the request with A1111's meanings ------------------------------------------------------------
def test_inpaint_defaults_are_a1111s_api_defaults():
    request = request_of()
    assert request.mask is None and request.outpaint is None and request.folder_batch is None
    assert (request.mask_blur_x, request.mask_blur_y) == (4, 4)
    assert request.inpainting_fill == 0  # fill
    assert request.inpaint_full_res is True and request.inpaint_full_res_padding == 0
    assert request.inpainting_mask_invert == 0
    assert request.initial_noise_multiplier == 1.0
    assert request.denoising_strength == 0.75


@pytest.mark.parametrize("fields, blur", [
    ({"mask_blur": 9}, (9, 9)),
    ({"mask_blur": 9, "mask_blur_x": 2, "mask_blur_y": 3}, (9, 9)),  # mask_blur wins over x and y
    ({"mask_blur": 0, "mask_blur_x": 2, "mask_blur_y": 3}, (0, 0)),
    ({"mask_blur_x": 2, "mask_blur_y": 3}, (2, 3)),
    ({"mask_blur": None, "mask_blur_y": 7}, (4, 7)),
])
def test_mask_blur_sets_both_directions(fields, blur):
    request = request_of(**fields)
    assert (request.mask_blur_x, request.mask_blur_y) == blur


def test_each_inpaint_field_reaches_the_request():
    request = request_of(mask=MASK_B64, inpainting_fill=2, inpaint_full_res=0, inpaint_full_res_padding=48,
                         inpainting_mask_invert=1, initial_noise_multiplier=1.3, image_cfg_scale=1.5,
                         denoising_strength=0.4, resize_mode=1)
    assert np.array_equal(np.asarray(request.mask.convert("L")), np.asarray(right_half_mask()))
    assert request.inpainting_fill == 2 and request.inpaint_full_res is False
    assert request.inpaint_full_res_padding == 48 and request.inpainting_mask_invert == 1
    assert request.initial_noise_multiplier == 1.3
    assert request.denoising_strength == 0.4 and request.resize_mode == 1


def test_inpaint_fields_are_written_to_the_infotext(client):
    body = {**SMALL, "init_images": [INIT_B64], "mask": MASK_B64, "mask_blur_x": 2, "mask_blur_y": 6,
            "inpainting_fill": 2, "inpaint_full_res": True, "inpaint_full_res_padding": 8,
            "inpainting_mask_invert": 1, "initial_noise_multiplier": 1.3, "denoising_strength": 0.6}
    info = info_of(post_ok(client, body))
    params = parse_infotext(info["infotexts"][0])
    assert params["Mask blur x"] == "2" and params["Mask blur y"] == "6"
    assert params["Masked content"] == "latent noise"
    assert params["Inpaint area"] == "Only masked" and params["Masked area padding"] == "8"
    assert params["Mask mode"] == "Inpaint not masked"
    assert params["Noise multiplier"] == "1.3" and params["Denoising strength"] == "0.6"
    assert info["denoising_strength"] == 0.6
    assert info["extra_generation_params"]["Masked content"] == "latent noise"
    assert info["is_using_inpainting_conditioning"] is False


# --- the mask -------------------------------------------------------------------------------------------------------
def test_mask_with_and_without_data_prefix_inpaints_only_the_masked_half(client):
    body = {**SMALL, "init_images": [INIT_B64], "mask": MASK_B64}
    plain = decode(post_ok(client, body)["images"][0])
    prefixed = decode(post_ok(client, {**body, "mask": "data:image/png;base64," + MASK_B64})["images"][0])
    assert np.array_equal(plain, prefixed)  # the same mask and request in the same process: bit-identical
    keep = SIZE // 2 - BLUR_REACH
    assert np.array_equal(plain[:, :keep], INIT_PIXELS[:, :keep])  # untouched, pixel for pixel
    assert np.abs(plain[:, SIZE // 2:] - INIT_PIXELS[:, SIZE // 2:]).max() > 8

    inverted = decode(post_ok(client, {**body, "inpainting_mask_invert": 1})["images"][0])
    assert np.array_equal(inverted[:, SIZE - keep:], INIT_PIXELS[:, SIZE - keep:])
    assert np.abs(inverted[:, :SIZE // 2] - INIT_PIXELS[:, :SIZE // 2]).max() > 8


@pytest.mark.parametrize("mask", ["@@@ not base64 @@@", base64.b64encode(b"no picture in here").decode("ascii"),
                                  encode_png(Image.new("L", (SIZE, SIZE), 0))])
def test_bad_or_empty_mask_is_a_422_naming_mask(client, mask):
    response = client.post(IMG2IMG, json={**SMALL, "init_images": [INIT_B64], "mask": mask})
    assert response.status_code == 422, response.text
    assert "mask" in response.json()["detail"]


def test_parameters_echo_leaves_out_the_inputs_unless_asked(client):
    body = {**SMALL, "init_images": [INIT_B64], "mask": MASK_B64, "steps": 2}
    params = post_ok(client, body)["parameters"]
    assert "init_images" not in params and "mask" not in params
    assert params["mask_blur_x"] == 4 and params["inpainting_fill"] == 0 and params["include_init_images"] is False
    echoed = post_ok(client, {**body, "include_init_images": True})["parameters"]
    assert echoed["init_images"] == [INIT_B64] and echoed["mask"] == MASK_B64


def test_inpainting_checkpoint_is_reported(client):
    body = {**SMALL, "init_images": [INIT_B64], "mask": MASK_B64,
            "override_settings": {"sd_model_checkpoint": "zz-inpainting"}}
    payload = post_ok(client, body)
    info = info_of(payload)
    assert info["sd_model_name"] == "zz-inpainting"
    assert info["is_using_inpainting_conditioning"] is True
    assert "Conditional mask weight: 1" in info["infotexts"][0]
    keep = SIZE // 2 - BLUR_REACH
    assert np.array_equal(decode(payload["images"][0])[:, :keep], INIT_PIXELS[:, :keep])


# --- outpainting ----------------------------------------------------------------------------------------------------
def test_poor_mans_outpainting_script(client):
    init = gradient(96, 80)  # fitted to 64x64 first, then grown
    body = {**SMALL, "init_images": [encode_png(init)], "script_name": "poor MAN'S outpainting",
            "script_args": [12, 4, 1, ["left", "UP"]]}  # 12 px rounds up to 16
    payload = post_ok(client, body)
    image = decode(payload["images"][0])
    assert image.shape == (SIZE + 16, SIZE + 16, 3)
    params = parse_infotext(info_of(payload)["infotexts"][0])
    assert params["Outpaint"] == "left 16 right 0 up 16 down 0"
    assert params["Outpaint fill"] == "edge" and params["Outpaint overlap"] == "8"
    assert params["Mask blur"] == "8"  # A1111's script blurs by twice its mask blur
    assert "Masked content" not in info_of(payload)["infotexts"][0]  # 1 = original
    # beyond the overlap and the blur, the (fitted) original is untouched
    fitted = np.asarray(imaging.fit(init, SIZE, SIZE, 0), dtype=np.int16)
    inner = 16 + 8 + 21
    assert np.array_equal(image[inner:, inner:], fitted[inner - 16:, inner - 16:])


def test_outpainting_mk2_script(client):
    body = {**SMALL, "init_images": [INIT_B64], "script_name": "Outpainting mk2",
            "script_args": ["", 8, 2, ["right"], 1.0, 0.05]}
    payload = post_ok(client, body)
    assert decode(payload["images"][0]).shape == (SIZE, SIZE + 8, 3)
    params = parse_infotext(info_of(payload)["infotexts"][0])
    assert params["Outpaint"] == "left 0 right 8 up 0 down 0"
    assert params["Outpaint fill"] == "noise" and params["Outpaint overlap"] == "2" and params["Mask blur"] == "8"


def test_outpainting_script_defaults_are_a1111s():
    poor = _request_from_body(Img2ImgBody(init_images=[INIT_B64], script_name="Poor man's outpainting"), "img2img")
    assert (poor.outpaint.left, poor.outpaint.right, poor.outpaint.up, poor.outpaint.down) == (128, 128, 128, 128)
    assert poor.inpainting_fill == 0 and poor.mask_blur_x == poor.mask_blur_y == 8 and poor.outpaint.fill == "edge"
    assert poor.inpaint_full_res is False
    mk2 = _request_from_body(Img2ImgBody(init_images=[INIT_B64], script_name="Outpainting mk2",
                                         script_args=[None, 20]), "img2img")
    assert (mk2.outpaint.left, mk2.outpaint.up) == (24, 24) and mk2.outpaint.fill == "noise"
    assert mk2.inpainting_fill == 1 and mk2.mask_blur_x == 32 and mk2.outpaint.overlap == 8


def test_outpaint_field_keeps_the_original_exactly(client):
    body = {**SMALL, "init_images": [INIT_B64], "mask_blur": 0,
            "outpaint": {"right": 16, "down": 8, "fill": "edge", "overlap": 0}}
    payload = post_ok(client, body)
    image = decode(payload["images"][0])
    assert image.shape == (SIZE + 8, SIZE + 16, 3)
    assert np.array_equal(image[:SIZE, :SIZE], INIT_PIXELS)
    assert "Outpaint: left 0 right 16 up 0 down 8" in info_of(payload)["infotexts"][0]


@pytest.mark.parametrize("path, body, words", [
    (IMG2IMG, {"script_name": "img2img alternative test"}, ["Script 'img2img alternative test' not found",
                                                             "Poor man's outpainting", "X/Y/Z plot"]),
    (TXT2IMG, {"script_name": "Poor man's outpainting"}, ["Script 'Poor man's outpainting' not found", "img2img"]),
    (IMG2IMG, {"script_name": "Outpainting mk2", "script_args": ["", 64, 4, ["sideways"]]}, ["sideways"]),
    (IMG2IMG, {"script_name": "Poor man's outpainting", "script_args": [64, 4, 0, ["left"], 1, 2]},
     ["at most 4 script_args"]),
    (IMG2IMG, {"script_name": "Poor man's outpainting", "outpaint": {"left": 8}}, ["outpaint"]),
    (IMG2IMG, {"outpaint": {"left": 12}}, ["multiple of 8"]),
])
def test_script_and_outpaint_errors_are_422(client, path, body, words):
    response = client.post(path, json={**SMALL, "init_images": [INIT_B64], **body})
    assert response.status_code == 422, response.text
    for word in words:
        assert word in response.json()["detail"]


# --- img2img over a server folder -----------------------------------------------------------------------------------
def test_folder_batch_through_the_api(client, tmp_path):
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    gradient().save(source / "first.png")
    gradient(80, 80).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(source / "second.webp", lossless=True)
    body = {**SMALL, "img2img_batch_input_dir": str(source), "img2img_batch_output_dir": str(target)}
    payload = post_ok(client, body)
    info = info_of(payload)
    assert len(payload["images"]) == 2 and len(info["infotexts"]) == 2
    assert info["saved_paths"] == [str(target / "first.png"), str(target / "second.png")]
    with Image.open(target / "second.png") as saved:
        assert saved.info["parameters"] == info["infotexts"][1]
        assert saved.size == (SIZE, SIZE)


def test_folder_batch_errors(client, tmp_path):
    response = client.post(IMG2IMG, json={**SMALL, "img2img_batch_input_dir": str(tmp_path / "missing")})
    assert response.status_code == 422, response.text
    assert "missing" in response.json()["detail"]
    response = client.post(IMG2IMG, json={**SMALL, "img2img_batch_output_dir": str(tmp_path)})
    assert response.status_code == 422, response.text
    assert "img2img_batch_input_dir" in response.json()["detail"]


def test_folder_batch_is_refused_under_hide_ui_dir_config(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    gradient().save(source / "one.png")
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path / "data"), "--nowebui",
                                            "--hide-ui-dir-config"]))
    try:
        client = TestClient(app)
        response = client.post(IMG2IMG, json={**SMALL, "img2img_batch_input_dir": str(source)})
        assert response.status_code == 403, response.text
        detail = response.json()["detail"]
        assert "--hide-ui-dir-config" in detail and "img2img_batch_input_dir" in detail
        assert not (tmp_path / "data" / "outputs" / "img2img-images").exists()
    finally:
        services.stop()


def test_request_errors_name_the_field():
    with pytest.raises(RequestError) as caught:
        request_of(mask="%%%")
    assert caught.value.field == "mask" and str(caught.value).startswith("mask: could not decode image")
