"""Face restoration (GFPGAN, CodeFormer, RestoreFormer), in Extras and as a generation option, as A1111 1.10 has it.

The models are random networks in the published layouts (tests/face_files.py); the face detector is RetinaFace in
facexlib's MobileNet layout, its weights set so it reports one face whose landmarks the test chooses. With the
landmarks of the FFHQ template scaled by 1/2 and moved to (LEFT, TOP), the aligned 512x512 crop is exactly the
picture's square at (LEFT, TOP) of side SIDE: the test knows where the face is without asking our code.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import replace
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from conftest import install_model
from face_files import (landmarks_for_square, write_codeformer, write_detector, write_gfpgan, write_restoreformer)
from webui.engine.extras import ExtrasRequest, run_extras
from webui.engine.face_restoration import restore_faces
from webui.models import face_download, face_sha256
from webui.models.face_restorers import FaceRestorationError, FaceRestorers
from webui.outputs.infotext import parse_infotext
from webui.outputs.save import read_infotext
from webui.settings.flags import parse_flags

LEFT, TOP, SIDE = 200, 180, 256  # the face's crop square in the picture the detector sees (short side 640)
DETECTOR = "detection_mobilenet0.25_Final.pth"


def noise_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def unb64(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    """Where two pictures differ (H, W booleans)."""
    return np.any(np.asarray(a.convert("RGB"), np.int16) != np.asarray(b.convert("RGB"), np.int16), axis=2)


def square_mask(shape, left: float, top: float, side: float, grow: float = 0.0) -> np.ndarray:
    """The pixels whose centres lie in the square, grown (or shrunk, when negative) by `grow` pixels."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    return (xs >= left - grow) & (xs < left + side + grow) & (ys >= top - grow) & (ys < top + side + grow)


def write_face_models(models, gfpgan: bool = True, codeformer: bool = True) -> None:
    write_detector(models / "GFPGAN" / DETECTOR, landmarks_for_square(LEFT, TOP, SIDE))
    write_restoreformer(models / "RestoreFormer" / "RestoreFormer.pth")
    if gfpgan:
        write_gfpgan(models / "GFPGAN" / "GFPGANv1.4.pth")
    if codeformer:
        write_codeformer(models / "Codeformer" / "codeformer-v0.1.0.pth")


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_models):
    """An API app over a data dir with a tiny SD1 checkpoint, the three restorers and the rigged detector."""
    data = tmp_path_factory.mktemp("faces-data")
    install_model(data, tiny_models["sd1"])
    write_face_models(data / "models")
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        yield SimpleNamespace(client=TestClient(app), services=services, data=data)
    finally:
        services.stop()


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """An API app whose data dir has no face restoration files at all."""
    data = tmp_path_factory.mktemp("faces-none")
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        yield SimpleNamespace(client=TestClient(app), services=services, data=data)
    finally:
        services.stop()


# --- the operation ------------------------------------------------------------------------------------------------
def test_restoration_changes_only_the_detected_face(api):
    source = noise_picture(640, 640)
    restored, faces = restore_faces(source, api.services.face_restorers, "RestoreFormer")
    assert faces == 1
    moved = changed(source, restored)
    # nothing outside the face's crop square moves ...
    assert not np.any(moved & ~square_mask(moved.shape, LEFT, TOP, SIDE, grow=0))
    # ... and the face itself is the network's output, placed back where it was cut from: computed here with
    # OpenCV's warp of the known square and spandrel's own call of the network (which scales to [-1, 1] itself)
    matrix = np.array([[512 / SIDE, 0, -LEFT * 512 / SIDE], [0, 512 / SIDE, -TOP * 512 / SIDE]], np.float32)
    crop = cv2.warpAffine(np.asarray(source), matrix, (512, 512))
    from spandrel import ImageModelDescriptor, canonicalize_state_dict
    from spandrel.architectures.RestoreFormer import RestoreFormerArch
    state = torch.load(api.data / "models" / "RestoreFormer" / "RestoreFormer.pth", weights_only=True)
    descriptor: ImageModelDescriptor = RestoreFormerArch().load(canonicalize_state_dict(state))
    with torch.inference_mode():
        out = descriptor(torch.from_numpy(crop / 255.0).float().permute(2, 0, 1)[None])
    face = (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.int16)
    core = square_mask(moved.shape, LEFT, TOP, SIDE, grow=-40)  # inside the feathered edge: the face alone
    ys, xs = np.nonzero(core)
    expected = face[(ys - TOP) * 2, (xs - LEFT) * 2]
    got = np.asarray(restored, np.int16)[ys, xs]
    # the same up to rounding: ours aligns by the detected landmarks (float32, a millionth of a pixel off), which
    # moves a crop pixel by one level here and there, and the random network amplifies that a little
    difference = np.abs(got - expected)
    assert difference.mean() < 0.5 and (difference <= 4).mean() > 0.995 and difference.max() <= 32
    assert moved[core].mean() > 0.9


def test_a_picture_without_faces_is_left_as_it_is(tmp_path, api):
    models = tmp_path / "models"
    write_detector(models / "GFPGAN" / DETECTOR, None)  # scores nothing as a face
    (models / "RestoreFormer").mkdir(parents=True)
    (models / "RestoreFormer" / "RestoreFormer.pth").write_bytes(
        (api.data / "models" / "RestoreFormer" / "RestoreFormer.pth").read_bytes())
    source = noise_picture(320, 200)
    restored, faces = restore_faces(source, FaceRestorers(models), "RestoreFormer")
    assert faces == 0 and not changed(source, restored).any()


def test_faces_are_found_at_any_size(api):
    """The detector sees the picture scaled to a short side of 640: the face scales with the picture."""
    source = noise_picture(160, 240, seed=3)  # a quarter: the face's square is (50, 45) with side 64
    restored, faces = restore_faces(source, api.services.face_restorers, "RestoreFormer")
    moved = changed(source, restored)
    assert faces == 1 and moved[square_mask(moved.shape, 50, 45, 64, grow=-12)].mean() > 0.9
    assert not np.any(moved & ~square_mask(moved.shape, 50, 45, 64, grow=0))


# --- Extras -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gfpgan_full(api):
    """A 320x320 picture and what `extra-single-image` makes of it with GFPGAN at visibility 1 (the response)."""
    source = noise_picture(320, 320, seed=1)  # half of 640: the face's square is (100, 90) with side 128
    response = api.client.post("/sdapi/v1/extra-single-image", json={"image": b64(source), "gfpgan_visibility": 1})
    assert response.status_code == 200, response.text
    return source, response.json()


def test_extras_api_gfpgan_visibility(gfpgan_full):
    source, payload = gfpgan_full
    restored = unb64(payload["image"])
    moved = changed(source, restored)
    assert moved[square_mask(moved.shape, 100, 90, 128, grow=-20)].mean() > 0.9
    assert not np.any(moved & ~square_mask(moved.shape, 100, 90, 128, grow=0))
    assert payload["html_info"] == "<p>GFPGAN visibility: 1.0</p>"
    assert read_infotext(restored) == "GFPGAN visibility: 1.0"  # the source had no parameters of its own


def test_extras_tab_has_a1111_controls_and_blends_by_visibility(api, gfpgan_full):
    import gradio as gr

    from webui.ui import extras_tab
    with gr.Blocks():
        tab = extras_tab.build_extras_tab(api.services)
    assert (tab.gfpgan_visibility.elem_id, tab.codeformer_visibility.elem_id, tab.codeformer_weight.elem_id) == \
        ("extras_gfpgan_visibility", "extras_codeformer_visibility", "extras_codeformer_weight")
    source, payload = gfpgan_full
    values = dict(source_mode=extras_tab.SINGLE, image=source, files=None, input_dir="", output_dir="",
                  show_results=True, resize_mode=0, upscaling_resize=1, width=512, height=512, crop=True,
                  upscaler_1="None", upscaler_2="None", visibility=0.0, gfpgan_visibility=0.5,
                  codeformer_visibility=0.0, codeformer_weight=0.0)
    updates = list(extras_tab.run(api.services, None, *values.values()))
    gallery = updates[-1][2]
    # visibility blends the restored picture over the source, as PIL's blend does (A1111's Image.blend)
    expected = Image.blend(source, unb64(payload["image"]).convert("RGB"), 0.5)
    assert len(gallery) == 1 and not changed(gallery[0], expected).any()
    assert "GFPGAN visibility: 0.5" in updates[-1][3]


def test_extras_codeformer_weight_reaches_the_network_after_the_upscale(api):
    source = noise_picture(160, 160, seed=2)

    def run(weight: float):
        request = ExtrasRequest(images=[(source, "a.png")], upscaler_1="Lanczos", upscaling_resize=2,
                                codeformer_visibility=1.0, codeformer_weight=weight)
        request.validate(api.services.upscalers.names(), api.services.face_restorers)
        return run_extras(request, api.services.upscalers, api.services.options, api.data / "outputs",
                          face_restorers=api.services.face_restorers)

    faithful, free = run(1.0), run(0.0)
    image = faithful.images[0]
    assert image.size == (320, 320)  # upscaled first: the face is found in the 320x320 picture
    upscaled = source.resize((320, 320), Image.LANCZOS)
    moved = changed(upscaled, image)
    assert moved[square_mask(moved.shape, 100, 90, 128, grow=-20)].mean() > 0.9
    assert not np.any(moved & ~square_mask(moved.shape, 100, 90, 128, grow=0))
    assert changed(image, free.images[0]).any()  # the weight changes what CodeFormer makes
    assert faithful.infos[0] == ("Postprocess upscale by: 2, Postprocess upscaler: Lanczos, "
                                 "CodeFormer visibility: 1.0, CodeFormer weight: 1.0")


# --- generation ---------------------------------------------------------------------------------------------------
SMALL = {"prompt": "a portrait", "steps": 2, "sampler_name": "Euler", "width": 128, "height": 128, "seed": 11}


def test_generation_with_restore_faces(api):
    plain = api.client.post("/sdapi/v1/txt2img", json=SMALL)
    settings = {"face_restoration_model": "RestoreFormer"}
    faces = api.client.post("/sdapi/v1/txt2img", json={**SMALL, "restore_faces": True, "override_settings": settings})
    assert plain.status_code == 200 and faces.status_code == 200, faces.text
    before, after = unb64(plain.json()["images"][0]), unb64(faces.json()["images"][0])
    info = json.loads(faces.json()["info"])
    assert parse_infotext(info["infotexts"][0])["Face restoration"] == "RestoreFormer"
    assert "Face restoration" not in parse_infotext(json.loads(plain.json()["info"])["infotexts"][0])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "RestoreFormer"
    # 128x128 is seen at 640: the face's square is (40, 36) with side 51.2; only it changed
    moved = changed(before, after)
    assert moved[square_mask(moved.shape, 40, 36, 51.2, grow=-10)].mean() > 0.9
    assert not np.any(moved & ~square_mask(moved.shape, 40, 36, 51.2, grow=0))


def test_the_setting_restores_faces_when_the_request_does_not_say(api):
    settings = {"face_restoration": True, "face_restoration_model": "RestoreFormer"}
    on = api.client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": settings})
    off = api.client.post("/sdapi/v1/txt2img", json={**SMALL, "restore_faces": False, "override_settings": settings})
    assert on.status_code == 200 and off.status_code == 200
    assert "Face restoration: RestoreFormer" in json.loads(on.json()["info"])["infotexts"][0]
    assert "Face restoration" not in json.loads(off.json()["info"])["infotexts"][0]


# --- listings, settings, refusals ---------------------------------------------------------------------------------
def test_face_restorers_route_lists_what_is_installed(api, bare):
    listed = api.client.get("/sdapi/v1/face-restorers").json()
    models = api.data / "models"
    assert listed == [{"name": "CodeFormer", "cmd_dir": str(models / "Codeformer")},
                      {"name": "GFPGAN", "cmd_dir": str(models / "GFPGAN")},
                      {"name": "RestoreFormer", "cmd_dir": str(models / "RestoreFormer")}]
    assert bare.client.get("/sdapi/v1/face-restorers").json() == []


def test_settings_are_a1111s(bare):
    options = bare.client.get("/sdapi/v1/options").json()
    assert {key: options[key] for key in ("face_restoration", "face_restoration_model", "code_former_weight",
                                          "face_restoration_unload")} == {
        "face_restoration": False, "face_restoration_model": "CodeFormer", "code_former_weight": 0.5,
        "face_restoration_unload": False}


def test_missing_models_are_refused_with_where_to_put_them(bare, tmp_path):
    generation = bare.client.post("/sdapi/v1/txt2img", json={**SMALL, "restore_faces": True})
    assert generation.status_code == 422
    assert "codeformer-v0.1.0.pth" in generation.json()["detail"]
    assert str(bare.data / "models" / "Codeformer") in generation.json()["detail"]
    extras = bare.client.post("/sdapi/v1/extra-single-image", json={"image": b64(noise_picture(64, 64)),
                                                                    "gfpgan_visibility": 0.5})
    assert extras.status_code == 422 and "gfpgan_visibility: No GFPGAN model" in extras.json()["detail"]
    assert "python -m webui.models.face_download gfpgan" in extras.json()["detail"]
    # a restorer without the detector: the detector is named
    write_restoreformer(bare.data / "models" / "RestoreFormer" / "RestoreFormer.pth")
    try:
        no_detector = bare.client.post("/sdapi/v1/txt2img", json={
            **SMALL, "restore_faces": True, "override_settings": {"face_restoration_model": "RestoreFormer"}})
        assert no_detector.status_code == 422
        assert "detection_Resnet50_Final.pth" in no_detector.json()["detail"]
    finally:
        (bare.data / "models" / "RestoreFormer" / "RestoreFormer.pth").unlink()


def test_a_file_of_the_wrong_kind_or_with_code_is_refused(tmp_path, api):
    models = tmp_path / "models"
    write_detector(models / "GFPGAN" / DETECTOR, landmarks_for_square(LEFT, TOP, SIDE))
    write_restoreformer(models / "GFPGAN" / "GFPGANv1.4.pth")  # a RestoreFormer under GFPGAN's name
    restorers = FaceRestorers(models)
    with pytest.raises(FaceRestorationError, match="is not a GFPGAN model .*RestoreFormer"):
        restore_faces(noise_picture(64, 64), restorers, "GFPGAN")
    (models / "Codeformer").mkdir()
    torch.save({"params_ema": {"x": torch.zeros(1)}, "opts": SimpleNamespace(lr=1)},
               models / "Codeformer" / "codeformer-v0.1.0.pth")  # pickles a Python object beside the weights
    with pytest.raises(FaceRestorationError, match="was refused: it holds Python objects"):
        restore_faces(noise_picture(64, 64), restorers, "CodeFormer")


# --- the download command -----------------------------------------------------------------------------------------
@pytest.fixture
def published(tmp_path, monkeypatch):
    """The MobileNet detector "published" at a file:// address (urllib opens it as it opens https)."""
    source = write_detector(tmp_path / "release" / DETECTOR, landmarks_for_square(LEFT, TOP, SIDE))
    data = source.read_bytes()

    def publish(sha256: str | None) -> None:
        entry = replace(face_sha256.FACE_FILES["detector-mobilenet"], url=source.as_uri(), sha256=sha256)
        monkeypatch.setitem(face_sha256.FACE_FILES, "detector-mobilenet", entry)

    return SimpleNamespace(data=data, publish=publish)


def test_download_checks_the_pinned_checksum(tmp_path, published):
    models = tmp_path / "models"
    published.publish("0" * 64)
    with pytest.raises(FaceRestorationError, match="does not match its checksum"):
        face_download.download_face_file("detector-mobilenet", models)
    assert list((models / "GFPGAN").iterdir()) == []  # nothing kept, not even the partial file
    published.publish(hashlib.sha256(published.data).hexdigest())
    seen = []
    path = face_download.download_face_file("detector-mobilenet", models,
                                            progress=lambda name, done, total: seen.append((done, total)))
    assert path == models / "GFPGAN" / DETECTOR and path.read_bytes() == published.data
    assert seen[-1] == (len(published.data), len(published.data))
    assert FaceRestorers(models).detector_path() == path


def test_download_refuses_what_has_no_pinned_checksum(tmp_path, capsys):
    assert face_sha256.FACE_FILES["codeformer"].sha256 is None
    with pytest.raises(FaceRestorationError, match="no sha256 pinned"):
        face_download.download_face_file("codeformer", tmp_path / "models")
    assert face_download.main(["codeformer", "nothing", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "codeformer: codeformer-v0.1.0.pth cannot be downloaded" in err and "unknown file 'nothing'" in err


def test_download_command_line(tmp_path, published, capsys):
    published.publish(hashlib.sha256(published.data).hexdigest())
    assert face_download.main(["detector-mobilenet", "--data-dir", str(tmp_path)]) == 0
    assert "detector-mobilenet: ready" in capsys.readouterr().out
    assert (tmp_path / "models" / "GFPGAN" / DETECTOR).read_bytes() == published.data
