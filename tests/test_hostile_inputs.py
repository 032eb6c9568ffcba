"""Hostile requests over a real socket, against every door a client can knock on: `/sdapi/v1/*`, `/controlnet/*`,
`/queue/*`, the Gradio routes (`/gradio_api/queue/join`, `/upload`, `/file=`, `/info`, `/config`) and
`/sd_extra_networks/thumb`.

Each case sends one bad request and checks what the user sees:

- the answer is a 4xx (never a 5xx, never a dropped connection or a hang); where README.md names the status,
  exactly that one (HTTP API: 422 invalid fields, undecodable or over-8192x8192 images, prompts over the limit or
  with a lone surrogate, too much emphasis, bad settings, a ControlNet unit's problems; 400 an unknown sampler,
  checkpoint, VAE, upscaler or style and a model file that does not load; 403 folder options under
  --hide-ui-dir-config; 404 an unknown job, and the server-stop routes without their flag; 413 a body over the
  limit);
- on our routes the body is A1111's error JSON, `{"error": ..., "detail": "<what was wrong>"}`, its detail naming
  the field or value (Gradio's and the UI's routes: JSON with a `detail`);
- then a normal generation (txt2img, 64x64, 2 Euler steps) returns 200 with one image, so a request that killed or
  wedged the queue's worker is caught at once (and after a POST /options, the settings still read back).

Some inputs are odd but valid. README says pictures in any mode Pillow reads are converted, a width that is not a
multiple of 8 is rounded down and `processor_res: -1` is the module's default: those must be served (200). A 1x1
picture, unknown override keys, a LoRA tag naming a path, huge `limit`s on the history: a 200 or a readable 4xx,
never a 5xx. A Gradio event joined with bad inputs answers the join with 200 (Gradio's protocol): it must then end
with `success: false` and a message. Nothing a case sends may bring back a file from outside the allowed folders.

One server with the UI mounted serves the module; a second, API-only one runs with --hide-ui-dir-config for the
folder options. The last test writes `test-artifacts/hostile-summary.json` (every case: its status, what was
expected, the first line of the answer, whether the next generation worked), prints the counts (`pytest -s`) and
fails if any case got a 5xx or no answer.
"""
from __future__ import annotations

import base64
import io
import json
import re
import socket
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from conftest import install_model
from live_server import serve
from webui.models.tiny import write_controlnet, write_single_file

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}
CANNY_MODEL = "control_v11p_sd15_canny"
BROKEN_VAE = "broken-vae.safetensors"
BROKEN_CONTROLNET = "broken_controlnet"
FINISHED_JOB = "task(hostile-finished)"
SECRET_WORDS = "TOP SECRET infotext of a file outside every allowed folder"
GENERATION_TIMEOUT = 60
ANSWER_TIMEOUT = 30  # a refusal must come well before this
HUGE_BODY = 600 * 2 ** 20  # what the oversized-body cases claim to send
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

RESULTS: dict[str, dict] = {}  # case id -> what happened, for the summary


# --- pictures, good and bad ----------------------------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(side: int = 100_000) -> bytes:
    """A PNG whose header declares side x side RGB pixels, with a tiny IDAT: a few hundred bytes on the wire that
    would be 30 GB once decoded."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9)) + _png_chunk(b"IEND", b""))


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (64, 64), 1)
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    image.paste(0, (0, 0, 32, 32))
    return _encoded(image, transparency=0)


_RNG = np.random.default_rng(3)
GOOD_PNG = _b64(_encoded(Image.fromarray(_RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8))))
_NOISE_PNG = _encoded(Image.fromarray(_RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)))

# kind -> (base64, what README.md says of it: "refused" (422: cannot be decoded, or over 8192x8192), "converted"
# (any mode Pillow reads is converted: served), "odd" (valid, not described: a 200 or a readable 4xx))
IMAGES = {
    "not-base64": ("@@@ this is not base64 @@@", "refused"),
    "text-file": (_b64(b"#!/bin/sh\necho plain text, no picture in here\n"), "refused"),
    "truncated-png": (_b64(_NOISE_PNG[:len(_NOISE_PNG) // 2]), "refused"),
    "bomb-100000x100000": (_b64(_bomb_png()), "refused"),
    "1x1": (_b64(_encoded(Image.new("RGB", (1, 1), (200, 10, 10)))), "odd"),
    "cmyk-jpeg": (_b64(_encoded(Image.new("CMYK", (64, 64), (0, 128, 255, 0)), "JPEG")), "converted"),
    "16bit-png": (_b64(_encoded(Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)))),
                  "converted"),
    "palette-transparent-png": (_b64(_palette_with_transparency()), "converted"),
}
# words the detail of a refused picture must hold, besides the field's name
IMAGE_WORDS = {"bomb-100000x100000": ["pixels"]}


# --- the cases -----------------------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int | None  # None: no answer (dropped connection, or nothing before the timeout)
    text: str = ""
    headers: dict = field(default_factory=dict)
    seconds: float = 0.0

    def json(self):
        return json.loads(self.text)


@dataclass
class Hostile:
    method: str
    path: str  # "/sdapi/v1/txt2img", ...; may hold "{port}"
    body: Any = None  # dict / list (JSON), bytes (raw, as application/json), or a callable(ctx) -> either
    params: dict | None = None
    expect: Any = "4xx"  # "4xx"; an int or a tuple of ints; "either": a 200 or a readable 4xx (odd but valid input)
    words: tuple = ()  # in the detail (case-insensitive) when refused
    send: Callable | None = None  # callable(ctx) -> Reply, for requests httpx will not make
    check: Callable | None = None  # callable(ctx, reply): more assertions (on a 200 too)
    after: Callable | None = None  # callable(ctx): put the server back as it was (runs even when the case fails)
    headers: dict | None = None
    routed: bool = True  # False: a path no route of ours matches (its 404 is the framework's {"detail"})

    @property
    def ours(self) -> bool:
        return self.routed and self.path.startswith(("/sdapi/", "/controlnet/", "/queue"))


def case(id_: str, *args, **kwargs):
    return pytest.param(Hostile(*args, **kwargs), id=id_)


def txt2img(fields: dict | None = None, **kw):
    return Hostile("POST", "/sdapi/v1/txt2img", {**SMALL, "prompt": "a hostile fox", **(fields or {})}, **kw)


def img2img(fields: dict | None = None, **kw):
    return Hostile("POST", "/sdapi/v1/img2img", {**SMALL, "prompt": "a hostile fox", "init_images": [GOOD_PNG],
                                                 **(fields or {})}, **kw)


def unit(**fields) -> dict:
    return {"alwayson_scripts": {"controlnet": {"args": [{"enabled": True, "image": GOOD_PNG, "module": "canny",
                                                          "model": CANNY_MODEL, **fields}]}}}


def detect(**fields) -> dict:
    return {"controlnet_module": "canny", "controlnet_input_images": [GOOD_PNG], **fields}


def extras(**fields) -> dict:
    return {"image": GOOD_PNG, "upscaler_1": "Lanczos", "upscaling_resize": 2, **fields}


NONFINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
TRAVERSALS = {"dotdot": "../../../../../../etc/passwd", "absolute": "/etc/passwd", "nul": "alpha-tiny\x00.safetensors"}


def _param(id_, hostile):
    return pytest.param(hostile, id=id_)


def _cases() -> list:
    cases = []
    add = lambda id_, hostile: cases.append(_param(id_, hostile))  # noqa: E731

    # -- the body itself
    add("txt2img-malformed-json", Hostile("POST", "/sdapi/v1/txt2img", b'{"prompt": "a fox", "steps": ', expect=422,
                                          words=("JSON",)))
    add("txt2img-json-array", Hostile("POST", "/sdapi/v1/txt2img", b'["a fox", 20]', expect=422))
    add("txt2img-json-string", Hostile("POST", "/sdapi/v1/txt2img", b'"a fox"', expect=422))
    add("txt2img-missing-body", Hostile("POST", "/sdapi/v1/txt2img", b"", expect=422))
    add("txt2img-invalid-utf8", Hostile("POST", "/sdapi/v1/txt2img", b'{"prompt": "\xff\xfe\xfd"}', expect=422))
    add("txt2img-text-plain", Hostile("POST", "/sdapi/v1/txt2img", b"prompt=a fox",
                                      headers={"Content-Type": "text/plain"}, expect=422))
    add("img2img-malformed-json", Hostile("POST", "/sdapi/v1/img2img", b"{{{", expect=422, words=("JSON",)))
    add("options-malformed-json", Hostile("POST", "/sdapi/v1/options", b"{,}", expect=422, words=("JSON",)))
    add("detect-malformed-json", Hostile("POST", "/controlnet/detect", b'{"controlnet_module": ', expect=422,
                                         words=("JSON",)))

    # -- wrong types, sizes and counts
    add("steps-a-word", txt2img({"steps": "many"}, expect=422, words=("steps",)))
    add("prompt-a-list", txt2img({"prompt": ["a", "list"]}, expect=422, words=("prompt",)))
    add("prompt-an-object", txt2img({"prompt": {"$gt": ""}}, expect=422, words=("prompt",)))
    add("seed-a-word", txt2img({"seed": "random"}, expect=422, words=("seed",)))
    add("seed-2^64", txt2img({"seed": 2 ** 64}, expect=422, words=("seed",)))
    add("seed-10^400", txt2img({"seed": 10 ** 400}, expect=422, words=("seed",)))
    add("steps-10^400", txt2img({"steps": 10 ** 400}, expect=422, words=("steps",)))
    add("steps-5000-digits", Hostile("POST", "/sdapi/v1/txt2img",
                                     b'{"prompt": "a fox", "steps": ' + b"9" * 5000 + b"}", expect=422))
    add("cfg-1e400", Hostile("POST", "/sdapi/v1/txt2img", b'{"prompt": "a fox", "cfg_scale": 1e400}', expect=422,
                             words=("cfg_scale",)))
    add("steps-0", txt2img({"steps": 0}, expect=422, words=("steps",)))
    add("steps-100000", txt2img({"steps": 100000}, expect=422, words=("steps",)))
    add("width-negative", txt2img({"width": -64}, expect=422, words=("width",)))
    add("width-0", txt2img({"width": 0}, expect=422, words=("width",)))
    add("width-63", txt2img({"width": 63}, expect=422, words=("width",)))
    add("width-65-rounded-down", txt2img({"width": 65}, expect=200, check=_image_size(64, 64)))
    add("height-100000", txt2img({"height": 100000}, expect=422, words=("height",)))
    add("width-10^30", txt2img({"width": 10 ** 30}, expect=422, words=("width",)))
    add("batch-size-huge", txt2img({"batch_size": 100000}, expect=422, words=("batch_size",)))
    add("n-iter-huge", txt2img({"n_iter": 10 ** 9}, expect=422, words=("n_iter",)))
    add("hires-scale-1000", txt2img({"enable_hr": True, "hr_scale": 1000}, expect=422, words=("hr_scale",)))
    add("outpaint-not-multiple-of-8", img2img({"outpaint": {"left": 13}}, expect=422, words=("outpaint",)))
    add("outpaint-huge", img2img({"outpaint": {"left": 10 ** 9}}, expect=422, words=("outpaint",)))
    add("img2img-no-init-image", img2img({"init_images": []}, expect=422, words=("init image",)))
    add("img2img-init-a-string", img2img({"init_images": GOOD_PNG}, expect=422, words=("init_images",)))
    add("override-settings-a-string", txt2img({"override_settings": "sd_vae=../../etc"}, expect=422,
                                              words=("override_settings",)))
    add("alwayson-controlnet-args-a-string", txt2img({"alwayson_scripts": {"controlnet": {"args": "x"}}},
                                                     expect=422, words=("controlnet",)))

    # -- NaN / Infinity / -Infinity in every float field (not JSON at all, RFC 8259: invalid input)
    floats = [
        ("cfg_scale", lambda v: txt2img({"cfg_scale": v}), ("cfg_scale",)),
        ("subseed_strength", lambda v: txt2img({"subseed_strength": v}), ("subseed_strength",)),
        ("seed", lambda v: txt2img({"seed": v}), ("seed",)),
        ("eta", lambda v: txt2img({"eta": v}), ("eta",)),
        ("hr_scale", lambda v: txt2img({"enable_hr": True, "hr_scale": v}), ("hr_scale",)),
        ("denoising_strength", lambda v: img2img({"denoising_strength": v}), ("denoising_strength",)),
        ("initial_noise_multiplier", lambda v: img2img({"initial_noise_multiplier": v}),
         ("initial_noise_multiplier",)),
        ("image_cfg_scale", lambda v: img2img({"image_cfg_scale": v}), ("image_cfg_scale",)),
        ("cn-weight", lambda v: txt2img(unit(weight=v)), ("weight",)),
        ("cn-guidance_start", lambda v: txt2img(unit(guidance_start=v)), ("guidance_start",)),
        ("cn-guidance_end", lambda v: txt2img(unit(guidance_end=v)), ("guidance_end",)),
        ("cn-processor_res", lambda v: txt2img(unit(processor_res=v)), ("processor_res",)),
        ("cn-threshold_a", lambda v: txt2img(unit(threshold_a=v)), ("threshold_a",)),
        ("detect-processor_res", lambda v: Hostile("POST", "/controlnet/detect", detect(controlnet_processor_res=v)),
         ("processor_res",)),
        ("detect-threshold_a", lambda v: Hostile("POST", "/controlnet/detect", detect(controlnet_threshold_a=v)),
         ("threshold_a",)),
        ("extras-upscaling_resize", lambda v: Hostile("POST", "/sdapi/v1/extra-single-image",
                                                      extras(upscaling_resize=v)), ("upscaling_resize",)),
        ("extras-upscaler_2_visibility", lambda v: Hostile("POST", "/sdapi/v1/extra-single-image",
                                                           extras(extras_upscaler_2_visibility=v)),
         ("extras_upscaler_2_visibility",)),
        ("options-inpainting_mask_weight", lambda v: Hostile("POST", "/sdapi/v1/options",
                                                             {"inpainting_mask_weight": v},
                                                             after=_reset_option("inpainting_mask_weight", 1.0)),
         ("inpainting_mask_weight",)),
    ]
    for name, build, words in floats:
        for label, value in NONFINITE.items():
            hostile = build(value)
            hostile.words, hostile.expect = words, 422  # README: invalid fields and bad settings are 422
            add(f"{name}-{label}", hostile)

    # -- unknown names
    add("unknown-sampler", txt2img({"sampler_name": "Warp Drive"}, expect=400, words=("Warp Drive", "Euler")))
    add("unknown-sampler-index", txt2img({"sampler_name": None, "sampler_index": "Warp Drive"}, expect=400,
                                         words=("Warp Drive",)))
    add("unknown-scheduler", txt2img({"scheduler": "Sideways"}, words=("Sideways",)))  # README: no status
    add("unknown-checkpoint-override", txt2img({"override_settings": {"sd_model_checkpoint": "no-such-model"}},
                                               expect=400, words=("no-such-model",)))
    add("unknown-hr-checkpoint", txt2img({"enable_hr": True, "hr_checkpoint_name": "no-such-model"}, expect=400,
                                         words=("no-such-model",)))
    add("unknown-vae-override", txt2img({"override_settings": {"sd_vae": "no-such-vae"}}, expect=400,
                                        words=("no-such-vae",)))
    add("unknown-hr-upscaler", txt2img({"enable_hr": True, "hr_upscaler": "No Such Upscaler"}, expect=400,
                                       words=("No Such Upscaler",)))
    add("unknown-hr-sampler", txt2img({"enable_hr": True, "hr_sampler_name": "Warp Drive"}, expect=400,
                                      words=("Warp Drive",)))
    add("unknown-style", txt2img({"styles": ["no-such-style"]}, expect=400, words=("no-such-style",)))
    add("unknown-script", txt2img({"script_name": "No Such Script"}, expect=422, words=("No Such Script",)))
    add("unknown-alwayson-script", txt2img({"alwayson_scripts": {"No Such Script": {"args": []}}}, expect=422,
                                           words=("No Such Script",)))
    add("unknown-extras-upscaler", Hostile("POST", "/sdapi/v1/extra-single-image",
                                           extras(upscaler_1="No Such Upscaler"), expect=400,
                                           words=("No Such Upscaler",)))
    add("unknown-cn-module", txt2img(unit(module="no_such_module"), expect=422, words=("no_such_module",)))
    add("unknown-cn-model", txt2img(unit(model="no_such_controlnet"), expect=422, words=("no_such_controlnet",)))
    add("options-unknown-checkpoint", Hostile("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "no-such-model"},
                                              expect=400, words=("no-such-model",)))
    add("options-unknown-vae", Hostile("POST", "/sdapi/v1/options", {"sd_vae": "no-such-vae"}, expect=400,
                                       words=("no-such-vae",)))

    # -- path traversal, absolute paths and NUL bytes in every name field
    names = [
        ("checkpoint-override", lambda v: txt2img({"override_settings": {"sd_model_checkpoint": v}}), 400),
        ("checkpoint-options", lambda v: Hostile("POST", "/sdapi/v1/options", {"sd_model_checkpoint": v}), 400),
        ("hr-checkpoint", lambda v: txt2img({"enable_hr": True, "hr_checkpoint_name": v}), 400),
        ("vae-override", lambda v: txt2img({"override_settings": {"sd_vae": v}}), 400),
        ("vae-options", lambda v: Hostile("POST", "/sdapi/v1/options", {"sd_vae": v}), 400),
        ("hr-upscaler", lambda v: txt2img({"enable_hr": True, "hr_upscaler": v}), 400),
        ("extras-upscaler", lambda v: Hostile("POST", "/sdapi/v1/extra-single-image", extras(upscaler_1=v)), 400),
        ("style", lambda v: txt2img({"styles": [v]}), 400),
        ("script", lambda v: txt2img({"script_name": v}), 422),
        ("cn-model", lambda v: txt2img(unit(model=v)), 422),
        ("cn-module", lambda v: txt2img(unit(module=v)), 422),
        ("detect-module", lambda v: Hostile("POST", "/controlnet/detect", detect(controlnet_module=v)), "4xx"),
    ]
    for name, build, status in names:
        for label, value in TRAVERSALS.items():
            hostile = build(value)
            hostile.expect = status
            add(f"{name}-{label}", hostile)
    add("checkpoint-absolute-outside-folder", Hostile(
        "POST", "/sdapi/v1/options", lambda ctx: {"sd_model_checkpoint": str(ctx.outside_model)}, expect=400))
    add("vae-absolute-outside-folder", Hostile(
        "POST", "/sdapi/v1/options", lambda ctx: {"sd_vae": str(ctx.outside_model)}, expect=400))
    add("batch-input-dir-etc", img2img({"img2img_batch_input_dir": "/etc"}, words=("batch input folder",)))
    add("lora-tag-traversal", txt2img({"prompt": "a fox <lora:../../../../etc/passwd:1>"}, expect="either"))

    # -- prompts
    add("prompt-lone-surrogate", txt2img({"prompt": "a fox \ud800"}, expect=422, words=("prompt",)))
    add("negative-prompt-lone-surrogate", txt2img({"negative_prompt": "blurry \udfff"}, expect=422,
                                                  words=("negative_prompt",)))
    add("hr-prompt-lone-surrogate", txt2img({"enable_hr": True, "hr_prompt": "a fox \ud800"}, expect=422,
                                            words=("hr_prompt",)))
    add("style-name-lone-surrogate", txt2img({"styles": ["\ud800"]}, words=("style",)))
    add("prompt-2MB", txt2img({"prompt": "a fox, " * (2 * 2 ** 20 // 7)}, expect=422, words=("prompt",),
                              check=_limit_named))
    add("negative-prompt-2MB", txt2img({"negative_prompt": "blurry, " * (2 * 2 ** 20 // 8)}, expect=422,
                                       words=("negative_prompt",), check=_limit_named))
    add("prompt-3000-open-parens", txt2img({"prompt": "(" * 3000 + "a fox"}, expect=422, words=("prompt",)))
    add("prompt-3000-nested-parens", txt2img({"prompt": "(" * 3000 + "a fox" + ")" * 3000}, expect=422,
                                             words=("prompt",)))
    add("prompt-1500-nested-edits", txt2img({"prompt": "[a:" * 1500 + "fox" + ":0.5]" * 1500}, expect="either"))
    add("prompt-3000-nested-brackets", txt2img({"prompt": "[" * 3000 + "a fox" + "]" * 3000}, expect="either"))

    # -- override_settings and /options
    add("override-unknown-key", txt2img({"override_settings": {"no_such_option": "x" * 1000}}, expect="either"))
    add("override-wrong-type", txt2img({"override_settings": {"CLIP_stop_at_last_layers": "deep"}}, expect=422,
                                       words=("CLIP_stop_at_last_layers",)))
    add("override-huge-int", txt2img({"override_settings": {"CLIP_stop_at_last_layers": 10 ** 30}}, expect=422,
                                     words=("CLIP_stop_at_last_layers",)))
    add("options-wrong-type", Hostile("POST", "/sdapi/v1/options", {"CLIP_stop_at_last_layers": "deep"}, expect=422,
                                      words=("CLIP_stop_at_last_layers",)))
    add("options-out-of-range", Hostile("POST", "/sdapi/v1/options", {"show_progress_every_n_steps": -5},
                                        expect=422, words=("show_progress_every_n_steps",)))
    add("options-huge-int", Hostile("POST", "/sdapi/v1/options", {"sd_checkpoints_limit": 10 ** 30}, expect=422,
                                    words=("sd_checkpoints_limit",)))
    add("options-bad-choice", Hostile("POST", "/sdapi/v1/options", {"samples_format": "exe"}, expect=422,
                                      words=("samples_format",)))
    add("options-a-list", Hostile("POST", "/sdapi/v1/options", ["sd_vae", "None"], expect=422))
    add("options-unknown-key", Hostile("POST", "/sdapi/v1/options", {"no_such_option": 1}, expect="either"))
    add("options-broken-vae-file", Hostile("POST", "/sdapi/v1/options", {"sd_vae": BROKEN_VAE}, expect=400,
                                           words=(BROKEN_VAE,), after=_reset_vae))
    add("override-broken-vae-file", txt2img({"override_settings": {"sd_vae": BROKEN_VAE}}, expect=400,
                                            words=(BROKEN_VAE,), after=_reset_vae))
    add("broken-controlnet-model", txt2img(unit(model=BROKEN_CONTROLNET), expect=422,
                                           words=("ControlNet unit 0", BROKEN_CONTROLNET)))

    # -- pictures: every kind in every image field
    image_fields = [
        ("init", lambda b64: img2img({"init_images": [b64]}), ("init_images[0]",)),
        ("mask", lambda b64: img2img({"mask": b64}), ("mask",)),
        ("cn-image", lambda b64: txt2img(unit(image=b64)), ("ControlNet unit 0", "image")),
        ("extras", lambda b64: Hostile("POST", "/sdapi/v1/extra-single-image", extras(image=b64)), ("image",)),
        ("extras-batch", lambda b64: Hostile("POST", "/sdapi/v1/extra-batch-images",
                                             {**extras(), "imageList": [{"data": b64, "name": "a.png"}]}),
         ("imageList[0]",)),
        ("png-info", lambda b64: Hostile("POST", "/sdapi/v1/png-info", {"image": b64}), ("image",)),
        ("detect", lambda b64: Hostile("POST", "/controlnet/detect", detect(controlnet_input_images=[b64])),
         ("controlnet_input_images",)),
    ]
    for field_name, build, words in image_fields:
        for kind, (data, fate) in IMAGES.items():
            hostile = build(data)
            # a converted mask may still mark nothing to inpaint: a 422 saying so is right too
            hostile.expect = 422 if fate == "refused" else 200 if fate == "converted" and field_name != "mask" \
                else "either"
            hostile.words = words + tuple(IMAGE_WORDS.get(kind, ()))
            add(f"{field_name}-{kind}", hostile)
    add("png-info-empty", Hostile("POST", "/sdapi/v1/png-info", {"image": ""}, expect=422, words=("image",)))
    add("png-info-a-number", Hostile("POST", "/sdapi/v1/png-info", {"image": 12345}, expect=422, words=("image",)))
    add("png-info-no-image", Hostile("POST", "/sdapi/v1/png-info", {}, expect=422, words=("image",)))
    add("png-info-data-url-svg", Hostile("POST", "/sdapi/v1/png-info",
                                         {"image": "data:image/svg+xml;base64," + _b64(b"<svg onload=alert(1)/>")},
                                         expect=422, words=("image",)))

    # -- extras
    add("extras-resize-1000", Hostile("POST", "/sdapi/v1/extra-single-image", extras(upscaling_resize=1000),
                                      expect=422, words=("upscaling_resize",)))
    add("extras-scale-to-10^9", Hostile("POST", "/sdapi/v1/extra-single-image",
                                        extras(resize_mode=1, upscaling_resize_w=10 ** 9, upscaling_resize_h=10 ** 9),
                                        expect=422, words=("upscaling_resize_w",)))
    add("extras-resize-mode-7", Hostile("POST", "/sdapi/v1/extra-single-image", extras(resize_mode=7),
                                        expect=422, words=("resize_mode",)))
    add("extras-no-image", Hostile("POST", "/sdapi/v1/extra-single-image", extras(image=""), expect=422,
                                   words=("image",)))
    add("extras-batch-empty", Hostile("POST", "/sdapi/v1/extra-batch-images", {**extras(), "imageList": []}))

    # -- /controlnet/detect
    for value, label in ((8192, "8192"), (0, "0"), (-2, "-2"), (10 ** 9, "10^9")):
        add(f"detect-processor-res-{label}", Hostile("POST", "/controlnet/detect",
                                                     detect(controlnet_processor_res=value), expect=422,
                                                     words=("processor_res",)))
    add("detect-processor-res-minus-1-is-default", Hostile("POST", "/controlnet/detect",
                                                           detect(controlnet_processor_res=-1), expect=200,
                                                           check=_detect_map))
    add("detect-unknown-module", Hostile("POST", "/controlnet/detect", detect(controlnet_module="no_such_module"),
                                         words=("no_such_module",)))
    add("detect-no-images", Hostile("POST", "/controlnet/detect", detect(controlnet_input_images=[]),
                                    words=("controlnet_input_images",)))
    add("detect-images-a-string", Hostile("POST", "/controlnet/detect", detect(controlnet_input_images=GOOD_PNG),
                                          expect=422, words=("controlnet_input_images",)))
    add("detect-masks-mismatch", Hostile("POST", "/controlnet/detect", detect(controlnet_masks=[GOOD_PNG] * 3),
                                         words=("controlnet_masks",)))
    add("cn-processor-res-8192", txt2img(unit(processor_res=8192), expect=422, words=("processor_res",)))
    add("cn-weight-1000", txt2img(unit(weight=1000), expect=422, words=("weight",)))
    add("cn-guidance-start-after-end", txt2img(unit(guidance_start=0.9, guidance_end=0.1), expect=422,
                                               words=("guidance_start",)))
    add("cn-unit-a-string", txt2img({"alwayson_scripts": {"controlnet": {"args": ["canny"]}}}, expect=422,
                                    words=("ControlNet unit 0",)))

    # -- /queue
    add("queue-job-nonexistent", Hostile("GET", "/queue/jobs/no-such-job", expect=404, words=("no-such-job",)))
    add("queue-job-traversal", Hostile("GET", "/queue/jobs/..%2F..%2F..%2Fetc%2Fpasswd", expect=404, routed=False))
    add("queue-delete-nonexistent", Hostile("DELETE", "/queue/jobs/no-such-job", expect=404,
                                            words=("no-such-job",)))
    add("queue-delete-finished", Hostile("DELETE", f"/queue/jobs/{FINISHED_JOB}",
                                         words=(FINISHED_JOB,)))
    add("queue-history-limit-minus-1", Hostile("GET", "/queue/history", params={"limit": -1}, expect="either",
                                               check=_history_page))
    add("queue-history-limit-10^9", Hostile("GET", "/queue/history", params={"limit": 10 ** 9}, expect="either",
                                            check=_history_page))
    add("queue-history-limit-10^30", Hostile("GET", "/queue/history", params={"limit": 10 ** 30}, expect="either",
                                             check=_history_page))
    add("queue-history-offset-10^30", Hostile("GET", "/queue/history", params={"offset": 10 ** 30},
                                              expect="either", check=_history_page))
    add("queue-history-offset-abc", Hostile("GET", "/queue/history", params={"offset": "abc"}, expect=422,
                                            words=("offset",)))
    add("queue-history-limit-nan", Hostile("GET", "/queue/history", params={"limit": "nan"}, expect=422,
                                           words=("limit",)))
    add("queue-rerun-nonexistent", Hostile("POST", "/queue/history/999999/rerun", expect=404, words=("999999",)))
    add("queue-rerun-negative", Hostile("POST", "/queue/history/-1/rerun", expect=404))
    add("queue-rerun-10^30", Hostile("POST", f"/queue/history/{10 ** 30}/rerun", expect=404))
    add("queue-rerun-abc", Hostile("POST", "/queue/history/abc/rerun", expect=422))
    add("queue-rerun-options-job", Hostile("POST", "/queue/history/{options_seq}/rerun", words=("set_options",)))
    add("queue-job-nul", Hostile("GET", "/queue/jobs/%00", expect=404))

    # -- other routes
    add("server-kill-without-flag", Hostile("POST", "/sdapi/v1/server-kill", expect=404, routed=False))
    add("thumb-etc-passwd", Hostile("GET", "/sd_extra_networks/thumb", params={"filename": "/etc/passwd"},
                                    expect=403))
    add("thumb-dotdot-config", Hostile("GET", "/sd_extra_networks/thumb",
                                       params={"filename": "models/Stable-diffusion/../../config.json"}, expect=403))
    add("thumb-model-file", Hostile("GET", "/sd_extra_networks/thumb",
                                    params={"filename": "models/Stable-diffusion/alpha-tiny.safetensors"},
                                    expect=403))

    # -- oversized bodies: a Content-Length far over any limit; the refusal must come before the body is read
    add("txt2img-content-length-600MB", Hostile("POST", "/sdapi/v1/txt2img", expect=413,
                                                send=_claim_huge_body("/sdapi/v1/txt2img", "application/json",
                                                                      b'{"prompt": "' + b"a" * 65536)))
    add("gradio-upload-content-length-600MB", Hostile("POST", "/gradio_api/upload", expect=413,
                                                      send=_claim_huge_body(
                                                          "/gradio_api/upload", "multipart/form-data; boundary=x",
                                                          b'--x\r\nContent-Disposition: form-data; name="files"; '
                                                          b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
                                                          + b"\x00" * 65536)))

    # -- Gradio
    add("gradio-join-fn-index-99999", Hostile("POST", "/gradio_api/queue/join",
                                              lambda ctx: _join_body(99999, [])))
    add("gradio-join-fn-index-minus-1", Hostile("POST", "/gradio_api/queue/join", lambda ctx: _join_body(-1, [])))
    add("gradio-join-fn-index-abc", Hostile("POST", "/gradio_api/queue/join", lambda ctx: _join_body("abc", [])))
    add("gradio-join-fn-index-10^30", Hostile("POST", "/gradio_api/queue/join",
                                              lambda ctx: _join_body(10 ** 30, [])))
    add("gradio-join-no-session", Hostile("POST", "/gradio_api/queue/join", {"fn_index": 0, "data": []}))
    add("gradio-join-data-a-string", Hostile("POST", "/gradio_api/queue/join",
                                             lambda ctx: _join_body(ctx.fn("read_parameters"), "x")))
    add("gradio-join-malformed-json", Hostile("POST", "/gradio_api/queue/join", b'{"fn_index": 1, '))
    add("gradio-join-too-few-inputs", Hostile("POST", "/gradio_api/queue/join", expect="either",
                                              send=_gradio_event("txt2img", lambda ctx: [1, 2, 3]),
                                              check=_event_failed))
    add("gradio-join-wrong-types", Hostile("POST", "/gradio_api/queue/join", expect="either",
                                           send=_gradio_event("read_parameters", lambda ctx: ["not a picture"]),
                                           check=_event_failed))
    add("gradio-join-file-outside-allowed", Hostile(
        "POST", "/gradio_api/queue/join", expect="either",
        send=_gradio_event("read_parameters", lambda ctx: [_file_data(ctx.secret_png)]), check=_no_secret))
    add("gradio-join-file-etc-passwd", Hostile(
        "POST", "/gradio_api/queue/join", expect="either",
        send=_gradio_event("read_parameters", lambda ctx: [_file_data("/etc/passwd")]), check=_no_secret))
    add("gradio-file-etc-passwd", Hostile("GET", "/gradio_api/file=/etc/passwd", expect=403))
    add("gradio-file-dotdot-encoded", Hostile("GET", "/gradio_api/file=..%2f..%2f..%2f..%2fetc%2fpasswd", expect=403))
    add("gradio-file-nul", Hostile("GET", "/gradio_api/file=%00", expect=403))
    add("gradio-file-data-config", Hostile("GET", "/gradio_api/file={data}/config.json", expect=403))
    add("gradio-file-model", Hostile("GET", "/gradio_api/file={data}/models/Stable-diffusion/alpha-tiny.safetensors",
                                     expect=403))
    add("gradio-file-outside-png", Hostile("GET", "/gradio_api/file={secret_png}", expect=403))
    add("gradio-file-ssrf-loopback", Hostile("GET", "/gradio_api/file=http://127.0.0.1:{port}/sdapi/v1/options",
                                             expect=403))
    add("gradio-upload-not-multipart", Hostile("POST", "/gradio_api/upload", b"just bytes",
                                               headers={"Content-Type": "application/octet-stream"}))
    add("gradio-upload-empty-filename", Hostile("POST", "/gradio_api/upload", expect="either",
                                                send=_upload("", b"")))
    add("gradio-upload-traversal-name", Hostile("POST", "/gradio_api/upload", expect="either",
                                                send=_upload("../../../../tmp/evil.png", b"x"), check=_upload_inside))
    add("gradio-upload-nul-name", Hostile("POST", "/gradio_api/upload", expect="either",
                                          send=_upload("evil\x00.png", b"x"), check=_upload_inside))
    add("gradio-info-bad-flag", Hostile("GET", "/gradio_api/info", params={"all_endpoints": "maybe"},
                                        expect="either"))
    add("gradio-config-traversal-page", Hostile("GET", "/config", params={"page": "../../../etc/passwd"},
                                                expect="either", check=_no_secret))
    return cases


# --- extra checks --------------------------------------------------------------------------------------------------
def _image_size(width: int, height: int):
    def check(ctx, reply: Reply):
        if reply.status == 200:
            image = Image.open(io.BytesIO(base64.b64decode(reply.json()["images"][0])))
            assert image.size == (width, height), f"made {image.size}, README says the size is rounded down"
    return check


def _limit_named(ctx, reply: Reply):
    """A refused long prompt says what the limit is (a number in the message)."""
    if reply.status in (413, 422):
        assert re.search(r"\d", _detail(reply)), f"the limit is not in the message: {_detail(reply)!r}"


def _detect_map(ctx, reply: Reply):
    payload = reply.json()
    assert len(payload["images"]) == 1 and payload["info"] == "Success", payload


def _history_page(ctx, reply: Reply):
    if reply.status == 200:
        payload = reply.json()
        assert isinstance(payload.get("jobs"), list) and len(payload["jobs"]) <= 500, str(payload)[:300]


def _no_secret(ctx, reply: Reply):
    assert SECRET_WORDS not in reply.text and "root:x:0:0" not in reply.text, \
        f"a file outside every allowed folder was read: {reply.text[:300]}"


def _event_failed(ctx, reply: Reply):
    """A Gradio event given bad inputs ends unsuccessfully, with a message."""
    if reply.status == 200:
        event = reply.json()
        assert event.get("success") is False, f"the event succeeded: {reply.text[:300]}"
        assert (event.get("output") or {}).get("error"), f"no message: {reply.text[:300]}"


def _upload_inside(ctx, reply: Reply):
    if reply.status == 200:
        for path in reply.json():
            assert ".." not in Path(path).parts and "\x00" not in path, path
            assert not Path(path).is_relative_to("/tmp/evil.png"), path


def _reset_vae(ctx) -> None:
    ctx.client.post(ctx.server.api("options"), json={"sd_vae": "Automatic"})


def _reset_option(key: str, value):
    def reset(ctx) -> None:
        ctx.client.post(ctx.server.api("options"), json={key: value})
    return reset


# --- senders for what httpx will not send --------------------------------------------------------------------------
def _claim_huge_body(path: str, content_type: str, start: bytes):
    """Send headers claiming a HUGE_BODY body and only its `start`; the answer must come without the rest."""
    def send(ctx) -> Reply:
        started = time.monotonic()
        with socket.create_connection((ctx.server.host, ctx.server.port), timeout=5) as sock:
            head = (f"POST {path} HTTP/1.1\r\nHost: {ctx.server.host}:{ctx.server.port}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {HUGE_BODY}\r\nConnection: close\r\n\r\n")
            sock.sendall(head.encode("ascii") + start)
            received = b""
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                    if _complete(received):
                        break
            except (socket.timeout, ConnectionError):
                pass
        seconds = time.monotonic() - started
        if not received:
            return Reply(None, f"no answer within {seconds:.0f}s: the server waits for the {HUGE_BODY:,}-byte body",
                         seconds=seconds)
        head, _, body = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            body = _unchunk(body)
        return Reply(status, body.decode("utf-8", "replace"), seconds=seconds)
    return send


def _complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"content-length:\s*(\d+)", head.lower())
    if match:
        return len(body) >= int(match.group(1))
    return body.endswith(b"0\r\n\r\n")


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, body = out + rest[:size], rest[size + 2:]
    return out


def _join_body(fn_index, data) -> dict:
    return {"fn_index": fn_index, "data": data, "session_hash": uuid.uuid4().hex[:11], "trigger_id": None,
            "event_data": None}


def _file_data(path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}, "orig_name": "picture.png"}


def _gradio_event(api_name: str, data: Callable):
    """Join Gradio's queue with this event's inputs and follow it to its end. The protocol answers a join with 200
    and an event id; a bad input then ends the event with success false. The reply: the join's status when it was
    refused, else 200 with the completion message (or no answer when the event never ends)."""
    def send(ctx) -> Reply:
        body = _join_body(ctx.fn(api_name), data(ctx))
        started = time.monotonic()
        joined = ctx.client.post(ctx.server.url + "/gradio_api/queue/join", json=body)
        if joined.status_code != 200:
            return Reply(joined.status_code, joined.text, seconds=time.monotonic() - started)
        with ctx.client.stream("GET", ctx.server.url + "/gradio_api/queue/data",
                               params={"session_hash": body["session_hash"]}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event.get("msg") == "process_completed":
                        return Reply(200, json.dumps(event), seconds=time.monotonic() - started)
        return Reply(None, "the event stream ended without process_completed", seconds=time.monotonic() - started)
    return send


def _upload(name: str, content: bytes):
    def send(ctx) -> Reply:
        started = time.monotonic()
        response = ctx.client.post(ctx.server.url + "/gradio_api/upload", files={"files": (name, content, "image/png")})
        return Reply(response.status_code, response.text, dict(response.headers), time.monotonic() - started)
    return send


# --- running a case ------------------------------------------------------------------------------------------------
@dataclass
class Context:
    server: Any
    client: httpx.Client
    outside_model: Path  # a real checkpoint outside the server's folders
    secret_png: Path  # a PNG with infotext outside every folder the server may serve
    options_seq: int  # the history's seq of a settings change (not a generation)
    fns: dict  # Gradio's api_name -> fn_index

    def fn(self, api_name: str) -> int:
        return self.fns[api_name]


def _send(ctx: Context, hostile: Hostile) -> Reply:
    if hostile.send is not None:
        try:
            return hostile.send(ctx)
        except httpx.TransportError as exc:
            return Reply(None, f"{type(exc).__name__}: {exc}")
    path = hostile.path.format(port=ctx.server.port, data=ctx.server.data_dir, secret_png=ctx.secret_png,
                               options_seq=ctx.options_seq)
    body = hostile.body(ctx) if callable(hostile.body) else hostile.body
    headers = dict(hostile.headers or {})
    content = None
    if isinstance(body, bytes):
        content = body
        headers.setdefault("Content-Type", "application/json")
    elif body is not None:
        content = json.dumps(body).encode("utf-8")  # NaN / Infinity as Python writes them
        headers.setdefault("Content-Type", "application/json")
    started = time.monotonic()
    try:
        response = ctx.client.request(hostile.method, ctx.server.url + path, content=content, headers=headers,
                                      params=hostile.params, timeout=ANSWER_TIMEOUT)
    except httpx.TransportError as exc:
        return Reply(None, f"{type(exc).__name__}: {exc}", seconds=time.monotonic() - started)
    return Reply(response.status_code, response.text, dict(response.headers), time.monotonic() - started)


def _detail(reply: Reply) -> str:
    try:
        payload = reply.json()
    except ValueError:
        return ""
    if isinstance(payload, dict):
        detail = payload.get("detail", payload.get("error", ""))
        return detail if isinstance(detail, str) else json.dumps(detail)
    return ""


def _expected(expect) -> str:
    if expect == "4xx":
        return "4xx"
    if expect == "either":
        return "200 or 4xx"
    return " or ".join(str(s) for s in (expect if isinstance(expect, tuple) else (expect,)))


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def run_case(ctx: Context, hostile: Hostile, record: dict) -> None:
    reply = _send(ctx, hostile)
    record.update(route=f"{hostile.method} {hostile.path}", expected=_expected(hostile.expect), status=reply.status,
                  seconds=round(reply.seconds, 2), answer=_first_line(reply.text))
    status = reply.status
    assert status is not None, f"no answer: {reply.text}"
    assert status < 500, f"{status} {reply.text[:500]}"
    expect = hostile.expect
    if expect == "4xx":
        assert 400 <= status < 500, f"expected a 4xx, got {status} {reply.text[:300]}"
    elif expect == "either":
        assert status == 200 or 400 <= status < 500, f"expected 200 or a 4xx, got {status} {reply.text[:300]}"
    else:
        wanted = expect if isinstance(expect, tuple) else (expect,)
        assert status in wanted, f"expected {_expected(expect)}, got {status} {reply.text[:300]}"
    if 400 <= status < 500:
        try:
            payload = reply.json()
        except ValueError:
            raise AssertionError(f"a {status} whose body is not JSON: {reply.text[:300]!r}") from None
        assert isinstance(payload, dict), payload
        if hostile.ours:
            assert {"error", "detail"} <= set(payload), f"not A1111's error shape: {payload}"
        else:
            assert "detail" in payload or "error" in payload, payload
        detail = _detail(reply)
        assert detail, f"no message for people: {payload}"
        assert "Traceback" not in detail and " object at 0x" not in detail, f"not meant for people: {detail!r}"
        for word in hostile.words:
            assert word.lower() in detail.lower(), f"{word!r} not in the detail: {detail!r}"
    if hostile.check is not None:
        hostile.check(ctx, reply)


def assert_still_generates(ctx) -> None:
    response = ctx.client.post(ctx.server.api("txt2img"), json={**SMALL, "prompt": "still here", "seed": 12})
    assert response.status_code == 200, f"the normal generation after it: {response.status_code} {response.text[:300]}"
    assert len(response.json()["images"]) == 1


def _run_and_record(ctx, request, hostile: Hostile, prefix: str = "") -> None:
    case_id = prefix + request.node.callspec.id
    record = RESULTS.setdefault(case_id, {})
    failures = []
    try:
        try:
            run_case(ctx, hostile, record)
        except AssertionError as exc:
            failures.append(f"the hostile request: {exc}")
        try:
            assert_still_generates(ctx)
            record["then_generates"] = True
        except (AssertionError, httpx.TransportError) as exc:
            record["then_generates"] = False
            failures.append(f"then: {exc}")
        if hostile.path == "/sdapi/v1/options":  # whatever it stored, the settings still read back
            try:
                readable = ctx.client.get(ctx.server.api("options"))
                if readable.status_code != 200:
                    failures.append(f"then GET /sdapi/v1/options: {readable.status_code} {readable.text[:200]}")
            except httpx.TransportError as exc:
                failures.append(f"then GET /sdapi/v1/options: no answer ({type(exc).__name__}: {exc})")
    finally:
        if hostile.after is not None:  # after the generation: a change that broke it must show
            hostile.after(ctx)
    record["passed"] = not failures
    if failures:
        record["failure"] = "; ".join(failures)[:500]
    assert not failures, "\n".join(failures)


def _client() -> httpx.Client:
    """One client for the module (building one costs more than a request); every request on its own connection
    (Connection: close), so nothing a hostile request did to one carries over to the next."""
    return httpx.Client(timeout=GENERATION_TIMEOUT, headers={"Connection": "close"})


# --- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny SD1 checkpoint (only this kind: quicker than the session's set of every kind)."""
    return write_single_file(tmp_path_factory.mktemp("hostile-model") / "tiny-sd1.safetensors", "sd1")


def _fill_data_dir(data: Path, checkpoint: Path) -> None:
    install_model(data, checkpoint, "alpha-tiny.safetensors")
    controlnets = data / "models" / "ControlNet"
    write_controlnet(controlnets / f"{CANNY_MODEL}.safetensors", "sd1", "single", seed=1)
    (controlnets / f"{BROKEN_CONTROLNET}.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}" * 8)
    (data / "models" / "VAE").mkdir(parents=True, exist_ok=True)
    (data / "models" / "VAE" / BROKEN_VAE).write_bytes(b"this is not a safetensors file\n" * 64)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, checkpoint):
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    _fill_data_dir(data, checkpoint)
    secret = root / "outside" / "secret.png"
    secret.parent.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{SECRET_WORDS}\nSteps: 3, Sampler: Euler, Seed: 1, Size: 8x8")
    Image.new("RGB", (8, 8)).save(secret, pnginfo=info)
    with serve(data) as server, _client() as client:
        made = client.post(server.api("txt2img"), json={**SMALL, "prompt": "first", "force_task_id": FINISHED_JOB})
        assert made.status_code == 200, made.text
        assert client.post(server.api("options"), json={"CLIP_stop_at_last_layers": 1}).status_code == 200
        jobs = client.get(server.url + "/queue/history", params={"kind": "set_options"}).json()["jobs"]
        config = client.get(server.url + "/config").json()
        fns = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}
        yield Context(server, client, checkpoint, secret, jobs[0]["seq"], fns)


@pytest.fixture(scope="module")
def hidden_dirs_ctx(tmp_path_factory, checkpoint):
    data = tmp_path_factory.mktemp("hostile-hidden-dirs")
    install_model(data, checkpoint, "alpha-tiny.safetensors")
    folder = tmp_path_factory.mktemp("hostile-folder")
    Image.new("RGB", (64, 64)).save(folder / "a.png")
    with serve(data, "--nowebui", "--hide-ui-dir-config") as server, \
            _client() as client:
        yield Context(server, client, checkpoint, folder / "a.png", 0, {})


# --- the tests -----------------------------------------------------------------------------------------------------
CASES = _cases()


@pytest.mark.parametrize("hostile", CASES)
def test_hostile_request_gets_a_4xx_and_the_server_keeps_generating(ctx, request, hostile):
    _run_and_record(ctx, request, hostile)


HIDDEN_DIR_CASES = [
    case("override-outdir-txt2img", "POST", "/sdapi/v1/txt2img",
         {**SMALL, "save_images": True, "override_settings": {"outdir_txt2img_samples": "/tmp/hostile-outdir"}},
         expect=403, words=("outdir_txt2img_samples", "--hide-ui-dir-config")),
    case("options-outdir-img2img", "POST", "/sdapi/v1/options", {"outdir_img2img_samples": "../../../../tmp/x"},
         expect=403, words=("outdir_img2img_samples", "--hide-ui-dir-config")),
    case("options-outdir-extras", "POST", "/sdapi/v1/options", {"outdir_extras_samples": "/etc"},
         expect=403, words=("outdir_extras_samples",)),
    case("batch-input-dir", "POST", "/sdapi/v1/img2img",
         lambda ctx: {**SMALL, "init_images": [GOOD_PNG], "img2img_batch_input_dir": str(ctx.secret_png.parent)},
         expect=403, words=("img2img_batch_input_dir", "--hide-ui-dir-config")),
    case("batch-output-dir", "POST", "/sdapi/v1/img2img",
         {**SMALL, "init_images": [GOOD_PNG], "img2img_batch_output_dir": "/tmp/hostile-out"},
         expect=403, words=("img2img_batch_output_dir",)),
]


@pytest.mark.parametrize("hostile", HIDDEN_DIR_CASES)
def test_hide_ui_dir_config_refuses_folder_paths(hidden_dirs_ctx, request, hostile):
    _run_and_record(hidden_dirs_ctx, request, hostile, prefix="hide-ui-dir-config/")
    options = hidden_dirs_ctx.client.get(hidden_dirs_ctx.server.api("options")).json()
    assert not any(options.get(key) for key in ("outdir_txt2img_samples", "outdir_img2img_samples",
                                                "outdir_extras_samples")), "a refused folder option was stored"


def test_summary():
    """Counts for the report (printed with -s, and written to test-artifacts/hostile-summary.json); fails when any
    hostile request got a 5xx or no answer."""
    if not RESULTS:
        pytest.skip("no case ran (the cases fill the summary)")
    statuses = [r.get("status") for r in RESULTS.values()]
    summary = {
        "cases": len(RESULTS),
        "4xx": sum(1 for s in statuses if s is not None and 400 <= s < 500),
        "2xx": sum(1 for s in statuses if s is not None and 200 <= s < 300),
        "5xx": sum(1 for s in statuses if s is not None and s >= 500),
        "no_answer": sum(1 for s in statuses if s is None),
        "failed": sum(1 for r in RESULTS.values() if not r.get("passed")),
        "broke_the_next_generation": sum(1 for r in RESULTS.values() if r.get("then_generates") is False),
        "results": RESULTS,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "hostile-summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=True))
    print(f"\nhostile requests: {summary['cases']} cases, {summary['4xx']} 4xx, {summary['2xx']} 2xx, "
          f"{summary['5xx']} 5xx, {summary['no_answer']} without an answer; {summary['failed']} failed, "
          f"{summary['broke_the_next_generation']} broke the next generation")
    for case_id, r in RESULTS.items():
        if not r.get("passed"):
            print(f"  FAIL {case_id}: {r.get('status')} (expected {r.get('expected')}) {r.get('answer', '')[:160]}")
    bad = {k: (r.get("status"), r.get("answer", "")[:120]) for k, r in RESULTS.items()
           if r.get("status") is None or r.get("status") >= 500}
    assert not bad, f"{len(bad)} hostile requests got a 5xx or no answer: {bad}"
