"""Input that used to crash the server or answer a 500, through the real HTTP API (a live server over a socket):
each is now a clear 4xx (or simply works), and a normal generation succeeds afterwards.

- oversized bodies (413) and prompts (422), with the limits in the message;
- a lone UTF-16 surrogate in a prompt (422 naming the field);
- pictures in any mode Pillow opens (CMYK JPEG, 16-bit, float, palette with transparency, ...) everywhere an image
  enters: img2img init and mask, extras, png-info, ControlNet units and /controlnet/detect, a batch folder;
- emphasis that overflows (3000 nested brackets: 422 about the prompt, not "the VAE produced NaNs");
- /controlnet/detect's processor resolution and thresholds (NaN, Infinity, 8192: 422, as for a unit);
- a broken VAE chosen in the options, the override_settings or the UI's picker (400 naming the file, the previous
  VAE kept), and a broken ControlNet model in a unit (422 naming the unit).

Plus the one error family those answers come from (`webui/core/errors.py`): each type's status, and what the API
and the UI make of a user error and of a bug.

One server (--nowebui) over a data dir with a tiny SD1 checkpoint, a good and several broken VAE and ControlNet
files; the working requests are 64x64 with 2 steps.
"""
from __future__ import annotations

import base64
import io
import json
import math
import socket
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from conftest import install_model
from live_server import serve
from webui.api.errors import ApiError, classify, error_body
from webui.api.limits import MAX_BODY_BYTES, BodyLimit
from webui.core.errors import RequestError, UserError
from webui.core.images import normalise_mode
from webui.core.request import MAX_PROMPT_CHARS, GenerationRequest
from webui.jobs.records import decode_payload, encode_payload
from webui.models.ldm_export import vae_to_ldm
from webui.models.tiny import build_modules, write_controlnet
from webui.outputs.infotext import parse_infotext
from webui.prompts.attention import MAX_WEIGHT, EmphasisError, check_weights, parse_attention

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 3}
GOOD_VAE, TRUNCATED_VAE, GARBAGE_VAE, NOT_A_VAE = ("good.safetensors", "truncated.safetensors", "garbage.pt",
                                                   "not-a-vae.safetensors")
CANNY, BROKEN_CN, GARBAGE_CN, NOT_A_CN = ("control_v11p_sd15_canny", "control_broken_canny",
                                          "control_garbage_canny", "control_notacn_canny")


# --- fixtures and helpers ------------------------------------------------------------------------------------------
def write_broken_models(data) -> None:
    vae_dir = data / "models" / "VAE"
    vae_dir.mkdir(parents=True, exist_ok=True)
    vae = build_modules("sd1", seed=21)[3]
    good = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in vae_to_ldm(vae).items()}
    save_file(good, str(vae_dir / GOOD_VAE))
    whole = (vae_dir / GOOD_VAE).read_bytes()
    (vae_dir / TRUNCATED_VAE).write_bytes(whole[: len(whole) // 2])  # a download cut off half way
    (vae_dir / GARBAGE_VAE).write_bytes(np.random.default_rng(1).bytes(4096))
    save_file({"weight": torch.zeros(3, 3)}, str(vae_dir / NOT_A_VAE))
    cn_dir = data / "models" / "ControlNet"
    write_controlnet(cn_dir / f"{CANNY}.safetensors", "sd1", "single", seed=1)
    whole = (cn_dir / f"{CANNY}.safetensors").read_bytes()
    (cn_dir / f"{BROKEN_CN}.safetensors").write_bytes(whole[: len(whole) // 3])
    (cn_dir / f"{GARBAGE_CN}.pth").write_bytes(np.random.default_rng(2).bytes(4096))
    save_file({"weight": torch.zeros(3, 3)}, str(cn_dir / f"{NOT_A_CN}.safetensors"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("bad-input-data")
    install_model(data, tiny_models["sd1"], "alpha-tiny.safetensors")
    write_broken_models(data)
    with serve(data, "--nowebui") as live:
        yield live


def post(server, route: str, body, timeout: float = 120) -> httpx.Response:
    """POST a JSON body (a dict), or raw bytes as the body (JSON a dict cannot hold: lone surrogates, NaN)."""
    url = route if route.startswith("http") else server.api(route)
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=timeout)
    return httpx.post(url, json=body, timeout=timeout)


def assert_refused(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, f"{response.status_code} {response.text[:600]}"
    payload = response.json()  # JSON in A1111's shape, never plain text
    assert set(payload) >= {"error", "detail"}, payload
    for word in words:
        assert word.lower() in payload["detail"].lower(), f"{word!r} not in {payload['detail']!r}"
    assert "Traceback" not in payload["detail"]
    return payload


def assert_works(server, **fields) -> dict:
    response = post(server, "txt2img", {**SMALL, "prompt": "still here", **fields})
    assert response.status_code == 200, response.text[:600]
    assert len(response.json()["images"]) == 1
    return response.json()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return b64(buffer.getvalue())


GOOD_IMAGE = png(Image.fromarray(np.full((64, 64, 3), 128, np.uint8)))


def picture(mode: str) -> tuple[bytes, str]:
    """A 64x64 file that Pillow opens in `mode`, with a white disc (white = inpaint, for masks): (bytes, format)."""
    grey = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(grey).ellipse((16, 16, 48, 48), fill=255)
    array = np.asarray(grey)
    if mode == "CMYK":
        image, fmt = Image.merge("CMYK", [Image.fromarray(255 - array)] * 3 + [Image.new("L", (64, 64), 0)]), "JPEG"
    elif mode == "P":  # a palette with transparency (tRNS)
        image, fmt = grey.convert("P"), "PNG"
        buffer = io.BytesIO()
        image.save(buffer, "PNG", transparency=0)
        return buffer.getvalue(), fmt
    elif mode == "I;16":
        image, fmt = Image.fromarray(array.astype(np.uint16) * 257), "PNG"
    elif mode == "I":
        image, fmt = Image.fromarray(array.astype(np.int32) * 257, "I"), "TIFF"
    elif mode == "F":
        image, fmt = Image.fromarray(array.astype(np.float32) / 255.0, "F"), "TIFF"
    elif mode == "LA":
        image, fmt = Image.merge("LA", [grey, Image.new("L", (64, 64), 255)]), "PNG"
    elif mode == "1":
        image, fmt = grey.convert("1"), "PNG"
    elif mode == "LAB":
        image, fmt = grey.convert("RGB").convert("LAB"), "TIFF"
    elif mode == "RGBA":
        image, fmt = Image.merge("RGBA", [grey] * 3 + [Image.new("L", (64, 64), 255)]), "PNG"
    else:
        raise ValueError(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue(), fmt


MODES = ["CMYK", "P", "I;16", "I", "F", "LA", "1", "LAB", "RGBA"]


# --- the error family ----------------------------------------------------------------------------------------------
def test_every_user_facing_error_type_is_a_user_error_with_its_status():
    from webui.control.annotators import AnnotatorError
    from webui.control.preprocessors import PreprocessorError, UnknownPreprocessorError
    from webui.core.samplers import SamplerError
    from webui.engine.engine import NaNOutputError
    from webui.extensions.manager import ExtensionAccessError, ExtensionError
    from webui.jobs.queue import DuplicateJobError, QueueClosedError
    from webui.jobs.records import PayloadError
    from webui.models.controlnet import ControlNetLoadError
    from webui.models.controlnet_registry import UnknownControlNetError
    from webui.models.manager import ModelLoadError
    from webui.models.registry import UnknownCheckpointError
    from webui.models.upscalers import UnknownUpscalerError, UpscalerLoadError
    from webui.models.vae import UnknownVaeError, VaeLoadError
    from webui.prompts.styles import StyleError
    from webui.settings.options import OptionError

    made = {
        RequestError("steps", "m"): (422, "InvalidRequest", ValueError),
        SamplerError("m"): (400, "UnknownSampler", ValueError),
        UnknownCheckpointError("x", ["a"]): (400, "UnknownCheckpoint", KeyError),
        UnknownVaeError("x", ["a"]): (400, "UnknownVaeError", KeyError),
        StyleError("m"): (400, "StyleError", ValueError),
        UnknownUpscalerError("x", ["a"]): (400, "UnknownUpscalerError", ValueError),
        UpscalerLoadError("x.pth", "m"): (400, "UpscalerLoadError", RuntimeError),
        ModelLoadError("m"): (400, "ModelLoadError", RuntimeError),
        VaeLoadError("m"): (400, "VaeLoadError", RuntimeError),
        NaNOutputError("m"): (400, "NaNOutput", RuntimeError),
        OptionError("m"): (422, "InvalidOption", ValueError),
        PreprocessorError("m"): (422, "PreprocessorError", RuntimeError),
        UnknownPreprocessorError("x", ["a"]): (422, "UnknownPreprocessor", KeyError),
        AnnotatorError("m"): (422, "AnnotatorError", RuntimeError),
        UnknownControlNetError("x", ["a"]): (422, "UnknownControlNet", KeyError),
        ControlNetLoadError("m"): (422, "ControlNetLoadError", RuntimeError),
        PayloadError("m"): (422, "UnusableStoredJob", ValueError),
        DuplicateJobError("m"): (409, "DuplicateTaskId", ValueError),
        QueueClosedError("m"): (503, "ShuttingDown", RuntimeError),
        ExtensionError("m"): (400, "ExtensionError", Exception),
        ExtensionAccessError("m"): (403, "ExtensionAccessDenied", Exception),
        ApiError(404, "UnknownJob", "m"): (404, "UnknownJob", Exception),
    }
    for error, (status, kind, base) in made.items():
        assert isinstance(error, UserError) and isinstance(error, base), type(error)
        assert (error.status, error.kind) == (status, kind), type(error)
        assert classify(error) is error  # the API answers it as it is
    assert str(UnknownCheckpointError("nope", ["alpha"])) == "Unknown checkpoint 'nope'. Available: alpha"
    bug = classify(ZeroDivisionError("division by zero"))
    assert (bug.status, bug.kind) == (500, "ZeroDivisionError")


def test_the_queue_and_the_ui_treat_the_family_as_user_errors(monkeypatch):
    from webui.jobs.queue import JobQueue
    from webui.models.vae import VaeLoadError
    from webui.services import USER_ERRORS
    from webui.ui import notices

    assert USER_ERRORS == (UserError,)
    shown = []
    monkeypatch.setattr(notices, "warn", shown.append)
    notices.report(VaeLoadError("VAE broken.safetensors: corrupt"))
    notices.report(ZeroDivisionError("oops"))
    assert shown == ["VAE broken.safetensors: corrupt", "ZeroDivisionError: oops"]  # a bug says what it is

    queue = JobQueue()
    queue.register("fail", lambda job: (_ for _ in ()).throw(VaeLoadError("VAE x.pt: not a VAE")))
    queue.start()
    try:
        job = queue.run("fail", None, timeout=10)
        assert job.state == "failed" and job.error == "VAE x.pt: not a VAE" and job.error_kind == "VaeLoadError"
    finally:
        queue.stop()


def test_error_bodies_carry_a_lone_surrogate_as_text():
    body = error_body("UnknownSampler", "Unknown sampler '\ud800'")
    assert json.loads(json.dumps(body, ensure_ascii=False).encode("utf-8")) == body
    assert "\\ud800" in body["detail"]


# --- request body and prompt limits --------------------------------------------------------------------------------
def test_the_body_limit_admits_an_8192_init_image_and_mask():
    # PNG cannot shrink noise: a noise RGBA 8192x8192 picture is its raw bytes plus a little, a noise 8-bit mask the
    # same; as base64 they weigh 4/3 of that (measured: 358 MB and 90 MB). Real pictures are smaller.
    worst = 4 / 3 * (8192 * 8192 * 4 + 8192 * 8192) * 1.01
    assert worst < MAX_BODY_BYTES <= 1024 * 2 ** 20


def test_a_body_over_the_limit_is_a_413_before_it_is_read(server):
    head = (f"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_BODY_BYTES + 1}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head + b'{"prompt": "')  # the rest never comes: the answer must not wait for it
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 413 " in status_line, reply[:300]
    payload = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert payload["error"] == "RequestTooLarge" and "512 MB" in payload["detail"]
    assert_works(server)


def test_a_chunked_body_over_the_limit_is_a_413_and_one_under_it_reaches_the_route():
    app = FastAPI()

    @app.post("/sdapi/v1/echo")
    @app.post("/gradio_api/upload")
    @app.post("/elsewhere")
    async def echo(request: Request):
        return {"length": len(await request.body())}

    app.add_middleware(BodyLimit, limit=1000)
    client = TestClient(app)

    def chunks(total: int):
        for _ in range(total // 100):
            yield b"x" * 100

    assert client.post("/sdapi/v1/echo", content=chunks(900)).json() == {"length": 900}
    refused = client.post("/sdapi/v1/echo", content=chunks(5000))
    assert refused.status_code == 413 and refused.json()["error"] == "RequestTooLarge"
    assert client.post("/sdapi/v1/echo", content=b"y" * 5000).status_code == 413  # by its Content-Length
    assert client.post("/gradio_api/upload", content=b"y" * 5000).status_code == 413  # the UI's uploads too
    assert client.post("/elsewhere", content=b"y" * 5000).json() == {"length": 5000}  # not the API's business


def test_a_content_length_beside_chunked_encoding_does_not_slip_past_the_limit():
    """The HTTP server reads chunks and ignores Content-Length when both are sent: the limit must count them."""
    import threading

    import uvicorn

    from live_server import free_port

    app = FastAPI()

    @app.post("/sdapi/v1/echo")
    async def echo(request: Request):
        return {"length": len(await request.body())}

    app.add_middleware(BodyLimit, limit=1000)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)

        def post(size: int) -> bytes:
            body = b"".join(b"%x\r\n%s\r\n" % (500, b"x" * 500) for _ in range(size // 500)) + b"0\r\n\r\n"
            head = (b"POST /sdapi/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(head + body)
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            return reply

        refused = post(5000)
        assert b" 413 " in refused.partition(b"\r\n")[0] and b"RequestTooLarge" in refused, refused[:300]
        admitted = post(500)  # under the limit, the route gets every chunk
        assert b" 200 " in admitted.partition(b"\r\n")[0] and b'{"length":500}' in admitted, admitted[:300]
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
@pytest.mark.parametrize("size", [1_000_000, 50_000_000])
def test_an_oversized_prompt_is_refused_at_once(server, field, size):
    started = time.monotonic()
    response = post(server, "txt2img", {**SMALL, field: "a fox, " * (size // 7)})
    assert_refused(response, 422, field, "too long", f"{MAX_PROMPT_CHARS:,}")
    assert time.monotonic() - started < 30  # no worker held for minutes, no gigabytes asked of the tokenizer
    assert_works(server)


def test_prompts_up_to_the_limit_are_accepted():
    GenerationRequest(prompt="a" * MAX_PROMPT_CHARS, negative_prompt="b" * MAX_PROMPT_CHARS).validate()
    with pytest.raises(RequestError, match="hr_prompt is too long") as refused:
        GenerationRequest(enable_hr=True, hr_prompt="c" * (MAX_PROMPT_CHARS + 1)).validate()
    assert refused.value.field == "hr_prompt" and refused.value.status == 422


def test_the_ui_generate_path_refuses_an_oversized_prompt(server, monkeypatch):
    from webui.ui import generation, notices, token_counter
    shown = []
    monkeypatch.setattr(notices, "warn", shown.append)
    values = ("x" * (MAX_PROMPT_CHARS + 1), "", "Euler", "Automatic", 2, 64, 64, 1, 1, 7.0, 3)
    updates = list(generation.generate(server.services, "txt2img", None, *values))
    assert len(updates) == 1 and "prompt is too long" in shown[-1] and f"{MAX_PROMPT_CHARS:,}" in shown[-1]
    token_counter.token_counter(server.services, "y" * (MAX_PROMPT_CHARS + 1))  # the counter says so too
    assert "too long" in shown[-1]
    assert not server.services.queue.pending()


# --- lone surrogates -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_lone_surrogate_in_a_prompt_is_a_422_naming_the_field(server, field):
    body = json.dumps({**SMALL, "prompt": "a fox"}).rstrip("}") + f', "{field}": "a \\ud800 fox"}}'
    response = post(server, "txt2img", body.encode("ascii"))
    payload = assert_refused(response, 422, field, "surrogate", "U+D800")
    assert payload["error"] == "InvalidRequest"
    assert_works(server)


def test_a_surrogate_echoed_in_a_message_is_rendered_not_a_500(server):
    response = post(server, "txt2img", (json.dumps(SMALL).rstrip("}") + ', "sampler_name": "\\udfff"}').encode())
    assert_refused(response, 400, "Unknown sampler", "\\udfff")
    assert_works(server)


# --- pictures in any mode ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_normalise_mode_gives_a_storable_picture(mode):
    data, _ = picture(mode)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == mode
    normal = normalise_mode(opened)
    assert normal.mode in ("RGB", "RGBA", "L")
    encoded = encode_payload(GenerationRequest(mode="img2img", init_images=[opened], mask=opened))
    rebuilt = decode_payload(encoded.json, encoded.images)
    assert rebuilt.init_images[0].size == (64, 64)
    centre = np.asarray(normal.convert("L"))[32, 32]
    assert centre > 200 or mode == "CMYK", (mode, centre)  # the white disc stays white (16-bit and float scaled)


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "PA", "La", "RGBa", "I;16B"])
def test_modes_no_file_brings_are_normalised_too(mode):
    base = Image.new("RGB", (8, 8), (200, 100, 50))
    if mode in ("YCbCr", "HSV"):
        image = base.convert(mode)
    elif mode == "PA":
        image = base.convert("P").convert("PA")
    elif mode in ("La", "RGBa"):
        image = (base.convert("LA") if mode == "La" else base.convert("RGBA")).convert(mode)
    else:
        image = Image.frombytes("I;16B", (8, 8), bytes(128))
    assert image.mode == mode
    normal = normalise_mode(image)
    assert normal.mode in ("RGB", "RGBA", "L")
    normal.save(io.BytesIO(), "PNG")


@pytest.mark.parametrize("mode", MODES)
def test_img2img_takes_init_image_and_mask_in_any_mode(server, mode):
    data, _ = picture(mode)
    task = f"task(modes-{mode.replace(';', '')})"
    response = post(server, "img2img", {**SMALL, "prompt": "a disc", "init_images": [b64(data)], "mask": b64(data),
                                        "denoising_strength": 0.5, "force_task_id": task})
    assert response.status_code == 200, response.text[:600]
    assert Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).size == (64, 64)
    record = httpx.get(f"{server.url}/queue/jobs/{task}", timeout=30).json()
    assert record["state"] == "done", record
    stored = server.services.queue.store.get(task)  # the history holds it (storing a CMYK PNG used to fail here)
    assert stored is not None and stored.state == "done"


def test_every_other_entry_takes_a_cmyk_jpeg(server, tmp_path):
    cmyk, _ = picture("CMYK")
    single = post(server, "extra-single-image", {"image": b64(cmyk), "upscaling_resize": 1, "upscaler_1": "None"})
    assert single.status_code == 200 and single.json()["image"], single.text[:600]
    batch = post(server, "extra-batch-images", {"imageList": [{"data": b64(cmyk), "name": "c.jpg"}],
                                                "upscaling_resize": 1})
    assert batch.status_code == 200 and len(batch.json()["images"]) == 1, batch.text[:600]
    info = post(server, "png-info", {"image": b64(cmyk)})
    assert info.status_code == 200, info.text[:600]
    detect = post(server, f"{server.url}/controlnet/detect",
                  {"controlnet_module": "canny", "controlnet_input_images": [b64(cmyk)]})
    assert detect.status_code == 200 and len(detect.json()["images"]) == 1, detect.text[:600]
    unit = {"enabled": True, "module": "canny", "model": CANNY, "image": b64(cmyk)}
    made = post(server, "txt2img", {**SMALL, "prompt": "a disc", "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert made.status_code == 200 and len(made.json()["images"]) == 2, made.text[:600]  # the image and its map
    folder = tmp_path / "batch-in"
    folder.mkdir()
    for mode in ("CMYK", "I;16", "P", "F"):
        data, fmt = picture(mode)
        (folder / f"{mode.replace(';', '')}.{ {'JPEG': 'jpg', 'PNG': 'png', 'TIFF': 'tif'}[fmt] }").write_bytes(data)
    batch_run = post(server, "img2img", {**SMALL, "prompt": "a disc", "init_images": [],
                                         "img2img_batch_input_dir": str(folder),
                                         "img2img_batch_output_dir": str(tmp_path / "batch-out")})
    assert batch_run.status_code == 200, batch_run.text[:600]
    assert len(list((tmp_path / "batch-out").iterdir())) == 4


def test_the_ui_inputs_take_any_mode(tmp_path):
    from webui.ui import canvas, extras_tab
    opened = Image.open(io.BytesIO(picture("CMYK")[0]))
    assert canvas.as_image(opened).mode == "RGB"
    path = tmp_path / "upload.tif"
    path.write_bytes(picture("F")[0])
    assert canvas.as_image(str(path)).mode == "L"
    image, name = extras_tab._open_file(str(path))
    assert image.mode == "L" and name == "upload.tif"


# --- emphasis ------------------------------------------------------------------------------------------------------
def test_emphasis_weights_are_bounded():
    check_weights(parse_attention("(" * 72 + "fox" + ")" * 72))  # 1.1^72 = 962: accepted
    with pytest.raises(EmphasisError, match="at most 72 nested brackets"):
        check_weights(parse_attention("(" * 73 + "fox" + ")" * 73))
    with pytest.raises(EmphasisError, match="too large for any number"):
        check_weights(parse_attention("(" * 8000 + "fox"))
    with pytest.raises(EmphasisError):
        check_weights(parse_attention(f"(fox:{MAX_WEIGHT * 10:g})"))
    check_weights(parse_attention(f"(fox:-{MAX_WEIGHT:g}) BREAK (cat:0)"))
    assert not math.isfinite(parse_attention("(" * 8000 + "fox")[0][1])  # parsing itself never raises


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_overflowing_emphasis_is_a_422_about_the_prompt(server, field):
    response = post(server, "txt2img", {**SMALL, "prompt": "a fox", field: "(" * 3000 + "a fox" + ")" * 3000})
    payload = assert_refused(response, 422, field, "emphasis", "nested brackets")
    assert "VAE" not in payload["detail"] and "NaN" not in payload["detail"]
    assert_works(server)


def test_emphasis_inside_prompt_editing_counts_at_every_step(server):
    nested = "(" * 80 + "fox" + ")" * 80
    response = post(server, "txt2img", {**SMALL, "prompt": f"[a cat:{nested}:1]"})
    assert_refused(response, 422, "prompt", "emphasis")


# --- /controlnet/detect and units: processor resolution and thresholds ---------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("controlnet_processor_res", "NaN"), ("controlnet_processor_res", "Infinity"),
    ("controlnet_processor_res", "-Infinity"), ("controlnet_processor_res", "8192"),
    ("controlnet_processor_res", "63"), ("controlnet_threshold_a", "NaN"), ("controlnet_threshold_b", "Infinity"),
])
def test_detect_refuses_resolutions_and_thresholds_a_unit_refuses(server, field, value):
    body = f'{{"controlnet_module": "canny", "controlnet_input_images": ["{GOOD_IMAGE}"], "{field}": {value}}}'
    payload = assert_refused(post(server, f"{server.url}/controlnet/detect", body.encode()), 422, field)
    if "processor_res" in field:
        assert "64..4096" in payload["detail"]
    ok = post(server, f"{server.url}/controlnet/detect", {"controlnet_module": "canny", "controlnet_input_images":
                                                          [GOOD_IMAGE], "controlnet_processor_res": 4096})
    assert ok.status_code == 200
    assert Image.open(io.BytesIO(base64.b64decode(ok.json()["images"][0]))).size == (4096, 4096)


@pytest.mark.parametrize("field, value", [("processor_res", "NaN"), ("processor_res", "Infinity"),
                                          ("processor_res", "8192"), ("threshold_a", "NaN")])
def test_a_unit_with_such_values_is_a_422_naming_it(server, field, value):
    unit = f'{{"enabled": true, "module": "canny", "model": "{CANNY}", "image": "{GOOD_IMAGE}", "{field}": {value}}}'
    body = json.dumps({**SMALL, "prompt": "a fox"}).rstrip("}") + \
        f', "alwayson_scripts": {{"controlnet": {{"args": [{unit}]}}}}}}'
    assert_refused(post(server, "txt2img", body.encode()), 422, "ControlNet unit 0", field)
    assert_works(server)


# --- broken model files --------------------------------------------------------------------------------------------
def options(server) -> dict:
    return httpx.get(server.api("options"), timeout=30).json()


def vae_in(result: dict) -> str | None:
    return parse_infotext(json.loads(result["info"])["infotexts"][0]).get("VAE")


@pytest.mark.parametrize("broken, words", [(TRUNCATED_VAE, ["corrupt or truncated"]), (GARBAGE_VAE, []),
                                           (NOT_A_VAE, ["not a VAE"])])
def test_choosing_a_broken_vae_is_refused_and_the_previous_one_stays(server, broken, words):
    assert post(server, "options", {"sd_vae": GOOD_VAE}).status_code == 200
    assert vae_in(assert_works(server)) == GOOD_VAE
    payload = assert_refused(post(server, "options", {"sd_vae": broken}), 400, broken, *words)
    assert payload["error"] == "VaeLoadError"
    assert options(server)["sd_vae"] == GOOD_VAE
    assert vae_in(assert_works(server)) == GOOD_VAE  # and every generation after it works
    post(server, "options", {"sd_vae": "Automatic"})


def test_a_broken_vae_is_refused_with_no_checkpoint_loaded(server):
    assert post(server, "options", {"sd_vae": "None"}).status_code == 200
    assert post(server, "unload-checkpoint", {}).status_code == 200
    assert_refused(post(server, "options", {"sd_vae": TRUNCATED_VAE}), 400, TRUNCATED_VAE)
    assert options(server)["sd_vae"] == "None"
    assert vae_in(assert_works(server)) is None
    post(server, "options", {"sd_vae": "Automatic"})


def test_a_broken_vae_in_override_settings_is_a_400_naming_the_file(server):
    assert post(server, "options", {"sd_vae": GOOD_VAE}).status_code == 200
    response = post(server, "txt2img", {**SMALL, "prompt": "a fox", "override_settings": {"sd_vae": TRUNCATED_VAE}})
    assert_refused(response, 400, TRUNCATED_VAE)
    assert vae_in(assert_works(server)) == GOOD_VAE
    post(server, "options", {"sd_vae": "Automatic"})


def test_the_ui_vae_picker_refuses_a_broken_vae_and_goes_back(server, monkeypatch):
    from webui.ui import notices, vae
    shown = []
    monkeypatch.setattr(notices, "warn", shown.append)
    assert vae.change_vae(server.services, GOOD_VAE).value == GOOD_VAE
    picker = vae.change_vae(server.services, TRUNCATED_VAE)
    assert picker.value == GOOD_VAE and TRUNCATED_VAE in shown[-1]
    assert server.services.options.get("sd_vae") == GOOD_VAE
    vae.change_vae(server.services, "Automatic")


@pytest.mark.parametrize("model, words", [(BROKEN_CN, ["corrupt or truncated"]), (GARBAGE_CN, []), (NOT_A_CN, [])])
def test_a_broken_controlnet_model_is_a_422_naming_the_unit(server, model, words):
    units = [{"enabled": False}, {"enabled": True, "module": "canny", "model": model, "image": GOOD_IMAGE}]
    response = post(server, "txt2img", {**SMALL, "prompt": "a fox", "alwayson_scripts": {"controlnet": {"args": units}}})
    payload = assert_refused(response, 422, "ControlNet unit 1", model, *words)
    assert payload["error"] == "ControlNetLoadError"
    good = [{"enabled": True, "module": "canny", "model": CANNY, "image": GOOD_IMAGE}]
    assert post(server, "txt2img", {**SMALL, "prompt": "a fox", "alwayson_scripts":
                                    {"controlnet": {"args": good}}}).status_code == 200
    assert_works(server)


# --- a bug of ours is a JSON 500 -----------------------------------------------------------------------------------
def test_a_bug_answers_json_500_in_a1111_shape(server, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(server.services.preprocessors, "run", broken)
    response = post(server, f"{server.url}/controlnet/detect",
                    {"controlnet_module": "canny", "controlnet_input_images": [GOOD_IMAGE]})
    assert response.status_code == 500 and response.json()["error"] == "ZeroDivisionError"


# --- the request record moved to webui/core ------------------------------------------------------------------------
def test_history_rows_written_before_the_move_still_rebuild():
    stored = json.dumps({"$dataclass": "webui.engine.request.GenerationRequest",
                         "fields": {"prompt": "an old job", "steps": 7,
                                    "outpaint": {"$dataclass": "webui.engine.request.Outpaint",
                                                 "fields": {"left": 64}}}})
    rebuilt = decode_payload(stored, [])
    assert isinstance(rebuilt, GenerationRequest) and (rebuilt.prompt, rebuilt.steps) == ("an old job", 7)
    assert rebuilt.outpaint.left == 64


# --- one vocabulary: unknown names are 400 wherever they are named, numbers no float holds 422 ----------------------
@pytest.mark.parametrize("route, fields, error", [
    ("txt2img", {"sampler_name": "Warp Drive"}, "UnknownSampler"),
    ("txt2img", {"enable_hr": True, "hr_sampler_name": "Warp Drive"}, "UnknownSampler"),
    ("txt2img", {"enable_hr": True, "hr_scheduler": "Sideways"}, "UnknownSampler"),
    ("txt2img", {"enable_hr": True, "hr_upscaler": "No Such Upscaler"}, "UnknownUpscalerError"),
    ("txt2img", {"enable_hr": True, "hr_checkpoint_name": "../../etc/passwd"}, "UnknownCheckpoint"),
    ("txt2img", {"override_settings": {"sd_vae": "no-such-vae.pt"}}, "UnknownVaeError"),
    ("txt2img", {"styles": ["no such style"]}, "StyleError"),
    ("extra-single-image", {"image": GOOD_IMAGE, "upscaler_1": "No Such Upscaler"}, "UnknownUpscalerError"),
])
def test_an_unknown_name_is_a_400_wherever_it_is_named(server, route, fields, error):
    body = {**SMALL, "prompt": "a fox", **fields} if route == "txt2img" else fields
    assert assert_refused(post(server, route, body), 400)["error"] == error
    assert_works(server)


@pytest.mark.parametrize("route, raw", [
    ("txt2img", b'{"prompt": "a fox", "steps": 1' + b"0" * 400 + b"}"),
    ("txt2img", b'{"prompt": "a fox", "seed": 1' + b"0" * 400 + b"}"),
    ("txt2img", b'{"prompt": "a fox", "eta": NaN}'),
    ("img2img", b'{"prompt": "a fox", "image_cfg_scale": Infinity}'),
    ("extra-single-image", b'{"image": "' + GOOD_IMAGE.encode() + b'", "upscaling_resize": NaN}'),
    ("options", b'{"inpainting_mask_weight": NaN}'),
    ("options", b'{"inpainting_mask_weight": 1' + b"0" * 400 + b"}"),
])
def test_numbers_no_float_holds_are_a_422(server, route, raw):
    assert_refused(post(server, route, raw), 422)
    assert httpx.get(server.api("options"), timeout=30).status_code == 200  # nothing unreadable was stored
    assert_works(server)
