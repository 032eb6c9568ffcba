"""Bad requests over a real socket: each gets a 4xx with A1111's error shape and a `detail` a person can read
(naming the field that is wrong), and the server keeps serving: the next request works.

One server (--nowebui) over a data dir with one tiny SD1 checkpoint; the working requests are 64x64 with 2 steps.
"""
from __future__ import annotations

import base64
import io
import math

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import install_model
from live_server import serve
from webui.outputs.save import MAX_DECODED_PIXELS

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("errors-data")
    install_model(data, tiny_models["sd1"], "alpha-tiny.safetensors")
    with serve(data, "--nowebui") as live:
        yield live


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


GOOD_IMAGE = png_base64(Image.fromarray(np.full((64, 64, 3), 128, np.uint8)))
NOT_BASE64 = "@@@ this is not base64 @@@"
NOT_AN_IMAGE = base64.b64encode(b"plain text, no picture in here").decode("ascii")
# one pixel wider and taller than the server's limit; a 1-bit blank PNG, so only a few kilobytes on the wire
_SIDE = math.isqrt(MAX_DECODED_PIXELS) + 1
OVERSIZED = png_base64(Image.new("1", (_SIDE, _SIDE)))

# (route, body: a dict sent as JSON or raw bytes, expected statuses, words the detail must contain)
BAD_REQUESTS = [
    pytest.param("txt2img", b'{"prompt": "a fox", "steps": ', (422,), ["JSON"], id="malformed-json"),
    pytest.param("txt2img", b'["a fox", 20]', (422,), ["body"], id="json-array-not-object"),
    pytest.param("txt2img", {**SMALL, "steps": "many"}, (422,), ["steps", "integer"], id="steps-not-a-number"),
    pytest.param("txt2img", {**SMALL, "prompt": ["a", "list"]}, (422,), ["prompt", "string"], id="prompt-a-list"),
    pytest.param("txt2img", {**SMALL, "width": -64}, (422,), ["width", "-64"], id="negative-width"),
    pytest.param("txt2img", {**SMALL, "sampler_name": "Warp Drive"}, (400,),
                 ["Warp Drive", "Euler", "Euler a", "DPM++ 2M"], id="unknown-sampler"),
    pytest.param("img2img", {**SMALL, "init_images": [NOT_BASE64]}, (422,), ["init_images[0]", "decode"],
                 id="img2img-init-not-base64"),
    pytest.param("img2img", {**SMALL, "init_images": [NOT_AN_IMAGE]}, (422,), ["init_images[0]", "decode"],
                 id="img2img-init-not-an-image"),
    pytest.param("img2img", {**SMALL, "init_images": [GOOD_IMAGE], "mask": NOT_AN_IMAGE}, (422,),
                 ["mask", "decode"], id="img2img-mask-not-an-image"),
    pytest.param("img2img", {**SMALL, "init_images": [OVERSIZED]}, (413, 422),
                 ["init_images[0]", "too large", f"{_SIDE}x{_SIDE}"], id="img2img-init-oversized"),
    pytest.param("img2img", {**SMALL, "init_images": [GOOD_IMAGE], "mask": OVERSIZED}, (413, 422),
                 ["mask", "too large"], id="img2img-mask-oversized"),
    pytest.param("png-info", {"image": NOT_BASE64}, (422,), ["image", "decode"], id="png-info-not-base64"),
    pytest.param("png-info", {"image": NOT_AN_IMAGE}, (422,), ["image", "decode"], id="png-info-not-an-image"),
    pytest.param("png-info", {"image": OVERSIZED}, (413, 422), ["too large", f"{_SIDE}x{_SIDE}"],
                 id="png-info-oversized"),
    pytest.param("options", {"sd_model_checkpoint": "no-such-model"}, (400, 404, 422),
                 ["no-such-model", "alpha-tiny"], id="options-unknown-checkpoint"),
    pytest.param("options", {"CLIP_stop_at_last_layers": "deep"}, (422,), ["CLIP_stop_at_last_layers"],
                 id="options-wrong-type"),
]


def post(server, route: str, body) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(server.api(route), content=body, headers={"Content-Type": "application/json"},
                          timeout=60)
    return httpx.post(server.api(route), json=body, timeout=60)


def assert_works(server) -> None:
    response = httpx.post(server.api("txt2img"), json={**SMALL, "prompt": "still here", "seed": 12}, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1


@pytest.mark.parametrize("route, body, statuses, words", BAD_REQUESTS)
def test_bad_request_gets_a_readable_4xx_and_the_server_keeps_working(server, route, body, statuses, words):
    response = post(server, route, body)
    assert response.status_code in statuses, f"{route}: {response.status_code} {response.text[:500]}"
    payload = response.json()
    assert set(payload) >= {"error", "detail"}, payload  # A1111's {error, detail, body, errors}
    detail = payload["detail"]
    assert isinstance(detail, str) and detail, payload
    for word in words:
        assert word.lower() in detail.lower(), f"{word!r} not in the detail: {detail!r}"
    assert "Traceback" not in detail and " object at 0x" not in detail, f"not meant for people: {detail!r}"
    assert_works(server)


def test_a_refused_checkpoint_switch_keeps_the_loaded_model(server):
    assert_works(server)  # something is loaded
    before = httpx.get(server.api("options"), timeout=30).json()["sd_model_checkpoint"]
    assert before.startswith("alpha-tiny")
    response = post(server, "options", {"sd_model_checkpoint": "no-such-model", "CLIP_stop_at_last_layers": 2})
    assert 400 <= response.status_code < 500, response.text
    options = httpx.get(server.api("options"), timeout=30).json()
    assert options["sd_model_checkpoint"] == before
    assert options["CLIP_stop_at_last_layers"] == 1  # nothing of a refused change is applied
    made = httpx.post(server.api("txt2img"), json={**SMALL, "seed": 1}, timeout=60).json()
    assert "Model: alpha-tiny," in made["info"]


def test_many_bad_requests_in_a_row_leave_the_queue_serving(server):
    for _ in range(5):
        assert post(server, "img2img", {**SMALL, "init_images": [NOT_AN_IMAGE]}).status_code == 422
        assert post(server, "txt2img", b"{{{").status_code == 422
    progress = httpx.get(server.api("progress"), timeout=30).json()
    assert progress["state"]["job"] == "" and progress["progress"] == 0  # no job left hanging
    assert_works(server)
