"""The settings A1111 users look for (issue 22): JPEG / WebP quality where images are written, img2img colour
correction, the quicksettings row, Settings > Defaults (ui-config.json), Reload UI, and the new keys through
GET/POST /sdapi/v1/options."""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from conftest import install_model
from webui.core.request import GenerationRequest
from webui.services import build_services
from webui.settings.flags import parse_flags
from webui.ui import defaults_page, quicksettings, settings_tab
from webui.ui.blocks import build_ui
from webui.ui.ui_config import labelled_inputs


def run(services, **fields):
    base = dict(prompt="a fox", sampler_name="Euler", steps=3, width=64, height=64, seed=5, save_images=True)
    return services.engine.run(GenerationRequest(**{**base, **fields}))


# --- save formats -------------------------------------------------------------------------------------------------
def test_jpeg_quality_and_webp_lossless_apply_where_images_are_written(make_services):
    services = make_services("sd1")
    sizes, pictures = {}, {}
    for quality in (10, 95):
        services.options.update({"samples_format": "jpg", "jpeg_quality": quality}, save=False)
        result = run(services)
        path = Path(result.saved_paths[0])
        sizes[quality] = path.stat().st_size
        with Image.open(path) as saved:
            assert saved.format == "JPEG"
            pictures[quality] = np.asarray(saved.convert("RGB"))
        expected = io.BytesIO()  # Pillow's own encoder at that quality: the same pixels
        result.images[0].convert("RGB").save(expected, "JPEG", quality=quality)
        assert np.array_equal(pictures[quality], np.asarray(Image.open(expected).convert("RGB")))
    assert sizes[10] < sizes[95]

    services.options.update({"samples_format": "webp", "webp_lossless": True}, save=False)
    result = run(services)
    with Image.open(result.saved_paths[0]) as saved:
        assert saved.format == "WEBP"
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(result.images[0].convert("RGB")))


def test_export_for_4chan_writes_a_jpeg_copy_of_large_images(make_services):
    services = make_services("sd1")
    services.options.update({"export_for_4chan": True, "target_side_length": 32}, save=False)
    result = run(services)
    path = Path(result.saved_paths[0])
    copy = path.with_suffix(".jpg")
    with Image.open(copy) as saved:
        assert saved.format == "JPEG" and saved.size == (32, 32)
    services.options.update({"target_side_length": 4000}, save=False)  # small: no copy
    path = Path(run(services).saved_paths[0])
    assert not path.with_suffix(".jpg").exists()


# --- img2img colour correction ------------------------------------------------------------------------------------
def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0..255) to CIE LAB (D65), by the textbook formulas (or scikit-image's, when installed)."""
    try:
        from skimage import color
        return color.rgb2lab(rgb / 255.0)
    except ImportError:
        c = rgb / 255.0
        c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
        xyz = c @ np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]]).T / np.array([0.950456, 1.0, 1.088754])
        f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
        return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _quantile_distance(a: np.ndarray, b: np.ndarray) -> float:
    """How far apart two channels' histograms are: the mean gap between their sorted values."""
    return float(np.abs(np.sort(a.ravel()) - np.sort(b.ravel())).mean())


def test_img2img_color_correction_gives_the_init_images_colours(make_services):
    services = make_services("sd1")
    y, x = np.mgrid[0:64, 0:64]
    init = Image.fromarray(np.stack([190 + 50 * np.sin(x / 9), 70 + 40 * np.cos(y / 7), 40 + 30 * np.sin((x + y) / 11)],
                                    -1).clip(0, 255).astype(np.uint8))
    fields = dict(mode="img2img", init_images=[init], denoising_strength=0.9, seed=11)
    plain = np.asarray(run(services, **fields).images[0].convert("RGB"))
    services.options.update({"img2img_color_correction": True}, save=False)
    corrected_result = run(services, **fields)
    corrected = np.asarray(corrected_result.images[0].convert("RGB"))
    with Image.open(corrected_result.saved_paths[0]) as saved:  # what is saved is the corrected picture
        assert np.array_equal(np.asarray(saved.convert("RGB")), corrected)

    target, before, after = _lab(np.asarray(init, dtype=np.float64)), _lab(plain.astype(np.float64)), \
        _lab(corrected.astype(np.float64))
    for channel in (1, 2):  # a and b: the colours come from the init image (the luminosity stays the result's)
        assert _quantile_distance(after[..., channel], target[..., channel]) < 4.0
        assert _quantile_distance(after[..., channel], target[..., channel]) < \
            _quantile_distance(before[..., channel], target[..., channel]) / 3

    # A1111's recipe computed here: LAB histograms matched (CDF matching), back to RGB, then the W3C luminosity blend
    # with the uncorrected result
    def match(source, reference):
        values, inverse, counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
        ref_values, ref_counts = np.unique(reference.ravel(), return_counts=True)
        return np.interp(np.cumsum(counts) / source.size, np.cumsum(ref_counts) / reference.size,
                         ref_values)[inverse].reshape(source.shape)

    matched = np.stack([match(before[..., c], target[..., c]) for c in range(3)], -1)
    try:
        from skimage import color
        recoloured = color.lab2rgb(matched)
    except ImportError:
        pytest.skip("the reference's LAB to RGB conversion needs scikit-image")

    def lum(c):
        return c @ np.array([0.3, 0.59, 0.11])

    blended = recoloured + (lum(plain / 255.0) - lum(recoloured))[..., None]
    level = lum(blended)[..., None]
    low, high = blended.min(-1, keepdims=True), blended.max(-1, keepdims=True)
    blended = np.where(low < 0, level + (blended - level) * level / np.maximum(level - low, 1e-9), blended)
    blended = np.where(high > 1, level + (blended - level) * (1 - level) / np.maximum(high - level, 1e-9), blended)
    assert np.abs(blended * 255 - corrected).mean() < 2.0


# --- the page: quicksettings, Settings tab, Defaults, Reload UI --------------------------------------------------
@pytest.fixture(scope="module")
def ui(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("settings-more")
    install_model(data, tiny_models["sd1"])
    (data / "config.json").write_text(json.dumps({"quicksettings_list": [
        "sd_model_checkpoint", "CLIP_stop_at_last_layers", "eta_noise_seed_delta", "no_such_option"]}))
    services = build_services(parse_flags(["--data-dir", str(data)]))
    services.hasher.wait_idle(30)
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    yield SimpleNamespace(services=services, blocks=blocks, by_id=by_id, data=data)
    services.stop()


def _parent_ids(blocks, component) -> list[str]:
    ids, block = [], component
    while getattr(block, "parent", None) is not None:
        block = block.parent
        ids.append(getattr(block, "elem_id", None))
    return ids


def test_quicksettings_row_shows_the_listed_options(ui):
    clip, ensd = ui.by_id["setting_CLIP_stop_at_last_layers"], ui.by_id["setting_eta_noise_seed_delta"]
    for component in (clip, ensd, ui.by_id["setting_sd_model_checkpoint"], ui.by_id["setting_sd_vae"]):
        assert "quicksettings" in _parent_ids(ui.blocks, component)
    assert clip.label == "Clip skip" and (clip.minimum, clip.maximum) == (1, 12)
    # the Settings tab leaves them out (one `setting_<key>` on the page), and keeps the others
    shown = {key for section in settings_tab.setting_sections(ui.services) for key in section.keys}
    assert "CLIP_stop_at_last_layers" not in shown and "eta_noise_seed_delta" not in shown and "jpeg_quality" in shown
    assert quicksettings.listed_keys(ui.services) == ["CLIP_stop_at_last_layers", "eta_noise_seed_delta"]


def test_a_quicksetting_is_saved_when_changed(ui):
    slider = ui.by_id["setting_CLIP_stop_at_last_layers"]
    changed = next(fn for fn in ui.blocks.fns.values()  # what the page runs when the slider changes
                   if any(t[0] == slider._id and t[1] == "change" for t in fn.targets))
    assert [c._id for c in changed.inputs] == [slider._id]
    changed.fn(2.0)  # the slider sends a float
    assert ui.services.options.get("CLIP_stop_at_last_layers") == 2
    assert json.loads((ui.data / "config.json").read_text())["CLIP_stop_at_last_layers"] == 2
    refused = changed.fn(40)  # out of range: a notice, and the slider shows the saved value again
    assert refused == 2 and ui.services.options.get("CLIP_stop_at_last_layers") == 2
    quick = quicksettings.Quicksettings(fields=[settings_tab.SettingField(
        "CLIP_stop_at_last_layers", "Clip skip", settings_tab.PLAIN, "quicksettings")])
    assert quicksettings.current_values(ui.services, quick) == [2]  # what the page load shows
    ui.services.options.update({"CLIP_stop_at_last_layers": 1})


def test_defaults_view_and_apply_write_ui_config(ui):
    inputs = labelled_inputs(ui.blocks)
    assert "txt2img/Sampling steps" in inputs
    values = [component.value for component in inputs.values()]
    keys = list(inputs)
    values[keys.index("txt2img/Sampling steps")] = 33
    values[keys.index("txt2img/Prompt")] = "a default castle"
    view = defaults_page.view_changes(ui.services, inputs, *values)
    assert "txt2img/Sampling steps/value" in view and "33" in view and "a default castle" in view
    assert "txt2img/Width/value" not in view
    message = defaults_page.apply_defaults(ui.services, inputs, *values)
    assert "Wrote 2 changes" in message
    config = json.loads((ui.data / "ui-config.json").read_text())
    assert config["txt2img/Sampling steps/value"] == 33 and config["txt2img/Prompt/value"] == "a default castle"
    assert defaults_page.view_changes(ui.services, inputs, *values) == "<p>No changes</p>"
    # a page built from then on starts from them
    rebuilt = {b.elem_id: b for b in build_ui(ui.services).blocks.values() if getattr(b, "elem_id", None)}
    assert rebuilt["txt2img_steps"].value == 33 and rebuilt["txt2img_prompt"].value == "a default castle"


def test_settings_tab_has_reload_ui_and_defaults(ui):
    assert ui.by_id["settings_restart_gradio"].value == "Reload UI"
    assert {"ui_defaults_view", "ui_defaults_apply", "ui_defaults_review"} <= set(ui.by_id)
    restarts = []
    ui.services.restarter = restarts.append
    try:
        assert settings_tab.reload_ui(ui.services) is True and restarts == [ui.services]

        def failing(_services):
            raise OSError("cannot exec")
        ui.services.restarter = failing
        assert settings_tab.reload_ui(ui.services) is False
    finally:
        ui.services.restarter = None


# --- the API ------------------------------------------------------------------------------------------------------
NEW_KEYS = {"samples_filename_pattern": "", "directories_filename_pattern": "[date]", "save_to_dirs": True,
            "save_images_add_number": True, "directories_max_prompt_words": 8, "jpeg_quality": 80,
            "webp_lossless": False, "grid_save_to_dirs": True, "img2img_color_correction": False,
            "quicksettings_list": ["sd_model_checkpoint", "sd_vae"], "export_for_4chan": True,
            "target_side_length": 4000, "img_downscale_threshold": 4.0}


def test_api_shows_and_sets_the_new_options(tmp_path, tiny_models):
    install_model(tmp_path, tiny_models["sd1"])
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path), "--nowebui"]))
    try:
        client = TestClient(app)
        options = client.get("/sdapi/v1/options").json()
        assert {key: options[key] for key in NEW_KEYS} == NEW_KEYS
        changes = {"samples_filename_pattern": "[seed]-[prompt_words]", "jpeg_quality": 55,
                   "quicksettings_list": ["sd_model_checkpoint", "CLIP_stop_at_last_layers"],
                   "img2img_color_correction": True, "save_to_dirs": False}
        assert client.post("/sdapi/v1/options", json=changes).status_code == 200
        options = client.get("/sdapi/v1/options").json()
        assert {key: options[key] for key in changes} == changes
        response = client.post("/sdapi/v1/options", json={"jpeg_quality": 101})
        assert response.status_code == 422 and "jpeg_quality" in response.text
    finally:
        services.stop()


def test_patterns_are_locked_under_hide_ui_dir_config(tmp_path):
    app, services = create_app(parse_flags(["--data-dir", str(tmp_path), "--nowebui", "--hide-ui-dir-config"]))
    try:
        client = TestClient(app)
        for key, value in (("samples_filename_pattern", "[prompt]"), ("directories_filename_pattern", "x")):
            assert client.post("/sdapi/v1/options", json={key: value}).status_code == 403
        assert client.post("/sdapi/v1/options", json={"jpeg_quality": 90}).status_code == 200
    finally:
        services.stop()
