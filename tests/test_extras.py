"""Extras (A1111's tab and `/sdapi/v1/extra-*` routes): scale by / scale to (with and without crop), upscaler 2
blended in, infotext (the source's parameters kept, the Postprocess keys added), saving, batches, the queue, the
HTTP routes and their errors, and the Gradio tab's handler."""
from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from tiny_upscalers import write_compact
from webui.core.run_control import RunControl
from webui.engine.extras import ExtrasRequest, load_folder_images, run_extras
from webui.engine.hires import LATENT_UPSCALE_MODES
from webui.core.errors import RequestError
from webui.outputs.infotext import parse_infotext
from webui.outputs.save import encode_png_base64, read_infotext
from webui.settings.flags import parse_flags
from webui.ui import extras_tab
from webui.ui.blocks import build_ui

SOURCE_INFOTEXT = "a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 60x40"


def picture(width: int, height: int, seed: int = 0, infotext: str | None = None) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 5), max(2, width // 5), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    if infotext is not None:  # as a PNG file carries it
        image = Image.open(io.BytesIO(base64.b64decode(encode_png_base64(image, infotext))))
        image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def data_dir(root):
    write_compact(root / "models" / "ESRGAN" / "2x-TinyCompact.pth", scale=2, seed=1)
    write_compact(root / "models" / "RealESRGAN" / "TinyReal.safetensors", scale=4, seed=2)
    return root


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The API app (no checkpoint needed) over a data dir with two tiny upscalers."""
    data = data_dir(tmp_path_factory.mktemp("extras-data"))
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        yield SimpleNamespace(client=TestClient(app), services=services, data=data)
    finally:
        services.stop()


@pytest.fixture(scope="module")
def services(api):
    return api.services


def run(services, control=None, **fields) -> object:
    request = ExtrasRequest(**fields).validate(services.upscalers.names())
    return run_extras(request, services.upscalers, services.options, services.paths.outputs, control)


# --- the operation ------------------------------------------------------------------------------------------------
def test_scale_by_with_a_model(services):
    image = picture(48, 32)
    result = run(services, images=[(image, "fox.png")], upscaler_1="2x-TinyCompact", upscaling_resize=2)
    out = result.images[0]
    assert out.size == (96, 64)
    # the same model on the same picture in the same process: bit-identical
    assert np.array_equal(pixels(out), pixels(services.upscalers.upscale(image, "2x-TinyCompact", 96, 64)))
    assert result.infos == ["Postprocess upscale by: 2, Postprocess upscaler: 2x-TinyCompact"]
    assert result.html_info == "<p>Postprocess upscale by: 2, Postprocess upscaler: 2x-TinyCompact</p>"
    assert result.names == ["fox.png"] and result.saved_paths == [] and result.warnings == []


def test_scale_by_a_fraction(services):
    result = run(services, images=[(picture(30, 20), "a")], upscaler_1="Lanczos", upscaling_resize=2.5)
    assert result.images[0].size == (75, 50)
    assert result.infos[0].startswith("Postprocess upscale by: 2.5,")


def test_scale_to_with_crop_covers_then_centre_crops(services):
    image = picture(60, 40)
    result = run(services, images=[(image, "a")], resize_mode=1, upscaling_resize_w=128, upscaling_resize_h=128,
                 upscaling_crop=True, upscaler_1="Lanczos")
    covered = image.resize((192, 128), Image.LANCZOS)  # scaled by max(128/60, 128/40) = 3.2: covers the box
    assert np.array_equal(pixels(result.images[0]), pixels(covered.crop((32, 0, 160, 128))))
    assert result.infos[0] == ("Postprocess upscale to: 128x128, Postprocess crop to: 128x128, "
                               "Postprocess upscaler: Lanczos")


def test_scale_to_without_crop_keeps_the_aspect(services):
    result = run(services, images=[(picture(60, 40), "a")], resize_mode=1, upscaling_resize_w=128,
                 upscaling_resize_h=128, upscaling_crop=False, upscaler_1="Nearest")
    assert result.images[0].size == (192, 128)  # as A1111: the larger ratio, no crop
    assert "crop" not in result.infos[0]
    tall = run(services, images=[(picture(40, 60), "a")], resize_mode=1, upscaling_resize_w=100,
               upscaling_resize_h=300, upscaling_crop=True, upscaler_1="Lanczos")
    assert tall.images[0].size == (100, 300)


def test_upscaler_2_is_blended_with_its_visibility(services):
    image = picture(32, 24)
    result = run(services, images=[(image, "a")], upscaler_1="Nearest", upscaler_2="2x-TinyCompact",
                 extras_upscaler_2_visibility=0.3, upscaling_resize=2)
    first = image.resize((64, 48), Image.NEAREST)
    second = services.upscalers.upscale(image, "2x-TinyCompact", 64, 48)  # as the run made it: bit-identical
    assert np.array_equal(pixels(result.images[0]), pixels(Image.blend(first, second, 0.3)))
    assert result.infos[0].endswith("Postprocess upscaler: Nearest, Postprocess upscaler 2: 2x-TinyCompact")
    hidden = run(services, images=[(image, "a")], upscaler_1="Nearest", upscaler_2="2x-TinyCompact",
                 extras_upscaler_2_visibility=0, upscaling_resize=2)
    assert np.array_equal(pixels(hidden.images[0]), pixels(first)) and "upscaler 2" not in hidden.infos[0]


def test_source_parameters_are_kept_and_the_saved_file_carries_them(services):
    image = picture(60, 40, infotext=SOURCE_INFOTEXT)
    result = run(services, images=[(image, "fox.png")], upscaler_1="2x-TinyCompact", upscaling_resize=2, save=True)
    text = result.infotexts[0]
    assert text == SOURCE_INFOTEXT + ", Postprocess upscale by: 2, Postprocess upscaler: 2x-TinyCompact"
    params = parse_infotext(text)
    assert (params["Prompt"], params["Negative prompt"], params["Steps"], params["Seed"]) == \
        ("a red fox", "blurry", "20", "42")
    assert params["Postprocess upscaler"] == "2x-TinyCompact"
    path = result.saved_paths[0]
    assert path.parent.parent == services.paths.outputs / "extras-images" and path.name.endswith("-42.png")
    with Image.open(path) as saved:
        assert read_infotext(saved) == text
        assert saved.size == (120, 80)


def test_source_without_parameters_gets_the_postprocess_line(services):
    result = run(services, images=[(picture(20, 20, infotext="just a prompt"), "a")], upscaler_1="Lanczos")
    assert result.infotexts[0] == "just a prompt\nPostprocess upscale by: 2, Postprocess upscaler: Lanczos"
    plain = run(services, images=[(picture(20, 20), "a")], upscaler_1="Lanczos")
    assert plain.infotexts[0] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_batch_keeps_names_and_order_and_saves_under_them(services, tmp_path):
    images = [(picture(20, 10, seed=1), "one.png"), (picture(16, 16, seed=2), "two.jpg"),
              (picture(10, 30, seed=3), "three.png")]
    result = run(services, images=images, upscaler_1="2x-TinyCompact", save=True, output_dir=str(tmp_path / "out"))
    assert result.names == ["one.png", "two.jpg", "three.png"]
    assert [image.size for image in result.images] == [(40, 20), (32, 32), (20, 60)]
    assert [path.name for path in result.saved_paths] == ["one.png", "two.png", "three.png"]
    assert all(path.parent == tmp_path / "out" for path in result.saved_paths)


def test_none_leaves_the_image_and_warns(services):
    image = picture(20, 20)
    result = run(services, images=[(image, "a")], upscaler_1="None")
    assert np.array_equal(pixels(result.images[0]), pixels(image))
    assert result.infos == [""] and result.html_info == "<p></p>"
    assert any("Upscaler 1 is None" in w for w in result.warnings)
    # face restoration without its model files is refused, naming the field (tests/test_face_restoration.py has
    # it with the files)
    with pytest.raises(RequestError, match="gfpgan_visibility: No GFPGAN model"):
        ExtrasRequest(images=[(image, "a")], gfpgan_visibility=0.5).validate(
            services.upscalers.names(), services.face_restorers)


def test_interrupt_stops_between_images(services):
    control = RunControl()
    control.interrupt()
    result = run(services, control=control, images=[(picture(8, 8), "a"), (picture(8, 8), "b")],
                 upscaler_1="Lanczos")
    assert result.interrupted and result.images == []
    assert result.warnings[-1] == "Interrupted: 0 of 2 images were upscaled."


@pytest.mark.parametrize("fields, field, words", [
    ({"upscaling_resize": 9}, "upscaling_resize", "between 1 and 8"),
    ({"upscaling_resize_w": 32}, "upscaling_resize_w", "between 64 and 8192"),
    ({"upscaling_resize_h": 9000}, "upscaling_resize_h", "between 64 and 8192"),
    ({"resize_mode": 2}, "resize_mode", "0 (scale by) or 1 (scale to)"),
    ({"extras_upscaler_2_visibility": 1.5}, "extras_upscaler_2_visibility", "between 0 and 1"),
    ({"upscaler_1": "4x-UltraSharp"}, "upscaler_1", "'4x-UltraSharp' not found; available: None, Lanczos"),
    ({"upscaler_2": "nope"}, "upscaler_2", "2x-TinyCompact, TinyReal"),
    ({"images": []}, "image", "No image given"),
])
def test_bad_requests_name_the_field(services, fields, field, words):
    base = {"images": [(picture(8, 8), "a")], "upscaler_1": "Lanczos", **fields}
    with pytest.raises(RequestError) as caught:
        ExtrasRequest(**base).validate(services.upscalers.names())
    assert caught.value.field == field and words in str(caught.value)


def test_too_large_a_result_is_refused(services):
    request = ExtrasRequest(images=[(picture(4000, 8), "wide.png")], upscaler_1="Lanczos", upscaling_resize=8)
    with pytest.raises(RequestError, match="wide.png would become 32000x64"):
        request.validate(services.upscalers.names())


def test_folder_images(tmp_path):
    picture(10, 10).save(tmp_path / "b.png")
    picture(12, 10).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"nope")
    assert [(name, image.size) for image, name in load_folder_images(str(tmp_path))] == \
        [("a.jpg", (12, 10)), ("b.png", (10, 10))]
    with pytest.raises(RequestError, match="Input directory not found"):
        load_folder_images(str(tmp_path / "missing"))


# --- through the queue ---------------------------------------------------------------------------------------------
def test_services_extras_queues_a_job(services):
    job = services.extras(ExtrasRequest(images=[(picture(16, 16), "a")], upscaler_1="2x-TinyCompact"))
    assert job.wait(30) and job.kind == "extras" and job.state == "done"
    assert job.result.images[0].size == (32, 32)
    with pytest.raises(RequestError, match="upscaling_resize must be between 1 and 8"):
        services.extras(ExtrasRequest(images=[(picture(16, 16), "a")], upscaling_resize=0))


def test_a_model_file_dropped_in_later_is_usable(services, api):
    write_compact(api.data / "models" / "ESRGAN" / "sub" / "2x-Later.pth", scale=2, seed=5)
    job = services.extras(ExtrasRequest(images=[(picture(16, 16), "a")], upscaler_1="2x-Later"))
    assert job.wait(30) and job.state == "done"


def test_a_broken_model_fails_the_job_with_its_name(services, api):
    (api.data / "models" / "ESRGAN" / "4x-Broken.pth").write_bytes(b"\x00garbage" * 20)
    job = services.extras(ExtrasRequest(images=[(picture(16, 16), "a")], upscaler_1="4x-Broken"))
    job.wait(30)
    assert job.state == "failed" and "4x-Broken.pth" in job.error
    (api.data / "models" / "ESRGAN" / "4x-Broken.pth").unlink()


# --- HTTP ----------------------------------------------------------------------------------------------------------
def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def test_upscaler_listings(api):
    client = api.client
    listed = client.get("/sdapi/v1/upscalers").json()
    assert listed[:3] == [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
                          for name in ("None", "Lanczos", "Nearest")]
    tiny = next(item for item in listed if item["name"] == "2x-TinyCompact")
    assert tiny["model_path"].endswith("ESRGAN/2x-TinyCompact.pth") and tiny["scale"] == 2
    modes = client.get("/sdapi/v1/latent-upscale-modes").json()
    assert modes == [{"name": name} for name in LATENT_UPSCALE_MODES]
    assert {"name": "Latent (nearest-exact)"} in modes and len(modes) == 6
    real = client.get("/sdapi/v1/realesrgan-models").json()
    assert [(item["name"], item["path"].endswith("TinyReal.safetensors")) for item in real] == [("TinyReal", True)]
    assert client.get("/sdapi/v1/face-restorers").json() == []


def test_extra_single_image(api):
    source = picture(40, 30, infotext=SOURCE_INFOTEXT)
    saved_before = sorted(api.services.paths.outputs.rglob("*.png"))
    body = {"image": "data:image/png;base64," + encode_png_base64(source, SOURCE_INFOTEXT),
            "upscaler_1": "2x-TinyCompact", "upscaling_resize": 2}
    response = api.client.post("/sdapi/v1/extra-single-image", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: 2x-TinyCompact</p>"
    image = decode(answer["image"])
    assert image.size == (80, 60)
    assert parse_infotext(read_infotext(image))["Seed"] == "42"
    assert sorted(api.services.paths.outputs.rglob("*.png")) == saved_before  # A1111's API does not save


def test_extra_batch_images(api):
    body = {"imageList": [{"data": encode_png_base64(picture(20, 10), None), "name": "a.png"},
                          {"data": encode_png_base64(picture(8, 16), None), "name": "b.png"}],
            "resize_mode": 1, "upscaling_resize_w": 64, "upscaling_resize_h": 64, "upscaler_1": "Lanczos"}
    response = api.client.post("/sdapi/v1/extra-batch-images", json=body)
    assert response.status_code == 200, response.text
    assert [decode(data).size for data in response.json()["images"]] == [(64, 64), (64, 64)]
    assert "Postprocess crop to: 64x64" in response.json()["html_info"]


@pytest.mark.parametrize("path, body, words", [
    ("/sdapi/v1/extra-single-image", {"image": "not base64 at all!"}, "image: could not decode image"),
    ("/sdapi/v1/extra-single-image", {"image": ""}, "image: no image given"),
    ("/sdapi/v1/extra-single-image", {"upscaling_resize": 20}, "upscaling_resize must be between 1 and 8"),
    ("/sdapi/v1/extra-single-image", {"resize_mode": "sideways"}, "resize_mode"),
    ("/sdapi/v1/extra-batch-images", {"imageList": []}, "No image given"),
    ("/sdapi/v1/extra-batch-images", {"imageList": [{"data": "GOOD", "name": "a"}, {"data": "%%%", "name": "b"}]},
     "imageList[1].data: could not decode image"),
])
def test_bad_input_is_a_readable_422(api, path, body, words):
    good = encode_png_base64(picture(8, 8), None)
    if "imageList" in body:
        body = {"imageList": [{**item, "data": good if item["data"] == "GOOD" else item["data"]}
                              for item in body["imageList"]]}
    elif "image" not in body:
        body = {"image": good, **body}
    response = api.client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert words in str(response.json()["detail"])


def test_an_unknown_upscaler_is_a_400_as_every_unknown_name(api):
    body = {"image": encode_png_base64(picture(8, 8), None), "upscaler_1": "4x-Nope"}
    response = api.client.post("/sdapi/v1/extra-single-image", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "UnknownUpscalerError"
    assert "Upscaler '4x-Nope' not found" in response.json()["detail"]


def test_a_broken_model_is_a_400_naming_the_file(api):
    broken = api.data / "models" / "ESRGAN" / "4x-Corrupt.pth"
    broken.write_bytes(b"\x00" * 64)
    try:
        response = api.client.post("/sdapi/v1/extra-single-image",
                                   json={"image": encode_png_base64(picture(8, 8), None), "upscaler_1": "4x-Corrupt"})
    finally:
        broken.unlink()
    assert response.status_code == 400
    assert response.json()["error"] == "UpscalerLoadError" and "4x-Corrupt.pth" in response.json()["detail"]


# --- the tab -------------------------------------------------------------------------------------------------------
def tab_values(**changes) -> dict:
    values = dict(source_mode=extras_tab.SINGLE, image=None, files=None, input_dir="", output_dir="",
                  show_results=True, resize_mode=0, upscaling_resize=2, width=512, height=512, crop=True,
                  upscaler_1="2x-TinyCompact", upscaler_2="None", visibility=0.0)
    values.update(changes)
    return values


def run_tab(services, **changes) -> list[tuple]:
    return list(extras_tab.run(services, None, *tab_values(**changes).values()))


def test_tab_builds_with_a1111_elem_ids(services):
    blocks = build_ui(services)
    ids = {b.elem_id for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    expected = {"tab_extras", "extras_tab", "extras_image", "extras_image_batch", "extras_batch_input_dir",
                "extras_batch_output_dir", "extras_resize_mode", "extras_upscaling_resize",
                "extras_upscaling_resize_w", "extras_upscaling_resize_h", "extras_upscaling_crop", "extras_upscaler_1",
                "extras_upscaler_2", "extras_upscaler_2_visibility", "extras_generate", "html_info_extras",
                "extras_gallery"}
    assert expected <= ids, expected - ids
    dropdown = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "extras_upscaler_1")
    assert [choice[0] for choice in dropdown.choices][:4] == ["None", "Lanczos", "Nearest", "2x-TinyCompact"]


def test_tab_single_image_is_upscaled_saved_and_shown(services):
    updates = run_tab(services, image=picture(30, 20, infotext=SOURCE_INFOTEXT))
    state, progress, gallery, info, generate, interrupt = updates[-1]
    assert state["job_id"] is None and "Done" in progress
    assert [image.size for image in gallery] == [(60, 40)]
    assert gallery[0].info["parameters"].startswith(SOURCE_INFOTEXT)
    assert "Postprocess upscaler: 2x-TinyCompact" in info
    assert generate.visible and not interrupt.visible
    saved = sorted((services.paths.outputs / "extras-images").rglob("*.png"))
    assert saved and Image.open(saved[-1]).size == (60, 40)


def test_tab_batch_files_and_directory(services, tmp_path):
    files = []
    for name, size in (("x.png", (10, 10)), ("y.png", (12, 8))):
        picture(*size).save(tmp_path / name)
        files.append(str(tmp_path / name))
    updates = run_tab(services, source_mode=extras_tab.BATCH, files=files, upscaler_1="Lanczos")
    assert [image.size for image in updates[-1][2]] == [(20, 20), (24, 16)]
    out = tmp_path / "out"
    updates = run_tab(services, source_mode=extras_tab.DIRECTORY, input_dir=str(tmp_path), output_dir=str(out),
                      show_results=False, upscaler_1="Lanczos")
    assert updates[-1][2] == [] and f"Saved 2 images to {out}" in updates[-1][3]
    assert sorted(p.name for p in out.iterdir()) == ["x.png", "y.png"]


def test_tab_errors_are_notices(services):
    with pytest.warns(UserWarning, match="No image: drop one into Source"):
        updates = run_tab(services)
    assert len(updates) == 1 and updates[0][4].visible
    with pytest.warns(UserWarning, match="Upscaler 'gone' not found"):
        run_tab(services, image=picture(8, 8), upscaler_1="gone")


def test_tab_directory_hidden_and_refused_under_hide_ui_dir_config(services, tmp_path, monkeypatch):
    monkeypatch.setattr(services.flags, "hide_ui_dir_config", True)
    with gr.Blocks():
        tab = extras_tab.build_extras_tab(services)
    assert tab.tabs[extras_tab.DIRECTORY].visible is False and tab.tabs[extras_tab.BATCH].visible is not False
    with pytest.warns(UserWarning, match="--hide-ui-dir-config"):
        run_tab(services, source_mode=extras_tab.DIRECTORY, input_dir=str(tmp_path))


def test_tab_refresh_finds_new_files(services, api):
    write_compact(api.data / "models" / "SwinIR" / "2x-Fresh.pth", scale=2)
    first, second = extras_tab.refresh_upscalers(services, "2x-TinyCompact", "vanished")
    assert isinstance(first, gr.Dropdown) and "2x-Fresh" in [c[0] for c in first.choices]
    assert (first.value, second.value) == ("2x-TinyCompact", "None")


def test_batch_from_a_folder_never_overwrites_a_file(services, tmp_path):
    """Saving back into the input folder (or two sources with one stem) adds a number instead of overwriting."""
    folder = tmp_path / "in"
    folder.mkdir()
    source = picture(12, 12, seed=4)
    source.save(folder / "a.png")
    before = (folder / "a.png").read_bytes()
    images = [(picture(12, 12, seed=4), "a.png"), (picture(12, 12, seed=5), "a.jpg")]
    result = run(services, images=images, upscaler_1="Lanczos", save=True, output_dir=str(folder))
    assert [path.name for path in result.saved_paths] == ["a_1.png", "a_2.png"]
    assert (folder / "a.png").read_bytes() == before


def test_sixteen_bit_source_keeps_its_tones(services):
    grey = Image.fromarray(np.full((10, 10), 30000, dtype=np.uint16))
    result = run(services, images=[(grey, "grey.png")], upscaler_1="Lanczos")
    assert result.images[0].mode == "RGB" and np.all(np.abs(pixels(result.images[0]) - 117) <= 1)
