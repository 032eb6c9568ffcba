"""ControlNet preprocessors: the catalogue, model-free maps against OpenCV, and every neural annotator loading from
random-weight files in the published layouts (tests/annotator_files.py), offline.

Zoe and LeReS++ take about a minute each on two CPU cores (Zoe runs BEiT-L at 384x512; LeReS++ runs its pix2pix
merger at 1024x1024 several times); they write their files in their own test.
"""
from __future__ import annotations

import shutil
import threading

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.annotator_files import write_annotator, write_module_files
from webui.control import annotators
from webui.control.annotators import ANNOTATOR_SOURCE, MODULE_ANNOTATORS
from webui.control.preprocessors import CATALOGUE, PreprocessorError, PreprocessorRegistry, UnknownPreprocessorError
from webui.control.types import CONTROL_TYPES

HEAVY = {"depth_zoe", "depth_leres++"}


def photo(width: int = 192, height: int = 128, seed: int = 0) -> Image.Image:
    """A picture with edges worth finding: smooth gradients, a few shapes and some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=2)
    pixels = pixels + rng.normal(0, 6, pixels.shape)
    pixels = pixels.clip(0, 255).astype(np.uint8)
    cv2.rectangle(pixels, (width // 5, height // 5), (width // 2, height // 2), (240, 30, 30), -1)
    cv2.circle(pixels, (3 * width // 4, 2 * height // 3), min(width, height) // 6, (20, 20, 200), -1)
    return Image.fromarray(pixels)


@pytest.fixture
def registry(tmp_path):
    return PreprocessorRegistry(tmp_path / "annotators")


# --- catalogue and names ----------------------------------------------------------------------------------------

def test_catalogue_has_the_issue_modules_with_their_types():
    wanted = {"none": "All", "invert": "All", "canny": "Canny", "depth_midas": "Depth", "depth_leres": "Depth",
              "depth_leres++": "Depth", "depth_zoe": "Depth", "openpose": "OpenPose", "openpose_hand": "OpenPose",
              "openpose_face": "OpenPose", "openpose_faceonly": "OpenPose", "openpose_full": "OpenPose",
              "softedge_hed": "SoftEdge", "softedge_hedsafe": "SoftEdge", "softedge_pidinet": "SoftEdge",
              "softedge_pidisafe": "SoftEdge", "lineart_standard": "Lineart", "lineart_realistic": "Lineart",
              "lineart_coarse": "Lineart", "lineart_anime": "Lineart", "mlsd": "MLSD", "normal_bae": "NormalMap",
              "scribble_hed": "Scribble", "scribble_pidinet": "Scribble", "scribble_xdog": "Scribble",
              "shuffle": "Shuffle", "tile_resample": "Tile", "inpaint_only": "Inpaint"}
    assert {e.name: e.control_type for e in CATALOGUE} == wanted


def test_every_control_type_offers_its_default_module(registry):
    for control_type in CONTROL_TYPES:
        modules = registry.for_type(control_type.name)
        assert modules[0] == "none"
        assert control_type.default_module in modules, control_type
    assert "invert" in registry.for_type("Canny") and "invert" not in registry.for_type("Depth")
    assert registry.for_type("All") == registry.names()


@pytest.mark.parametrize("alias, name", [
    ("depth", "depth_midas"), ("hed", "softedge_hed"), ("hed_safe", "softedge_hedsafe"),
    ("pidinet", "softedge_pidinet"), ("pidinet_safe", "softedge_pidisafe"), ("pidinet_scribble", "scribble_pidinet"),
    ("lineart", "lineart_realistic"), ("inpaint", "inpaint_only"), ("DEPTH_MIDAS", "depth_midas"),
    ("invert (from white bg & black line)", "invert"),
    ("lineart_standard (from white bg & black line)", "lineart_standard"), (" Canny ", "canny"), ("", "none"),
])
def test_aliases_resolve_to_the_ui_name(registry, alias, name):
    assert registry.get(alias).name == name


def test_unknown_module_is_a_clear_error(registry):
    with pytest.raises(UnknownPreprocessorError) as caught:
        registry.run("depth_marigold", photo())
    assert "depth_marigold" in str(caught.value) and "canny" in str(caught.value)


def test_slider_labels_ranges_and_defaults(registry):
    canny = registry.get("canny")
    assert [s.as_api() for s in canny.sliders()] == [
        {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
        {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
        {"name": "Canny High Threshold", "value": 200, "min": 1, "max": 255, "step": 1}]
    assert canny.resolve(-1, -1, -1) == (512, 100.0, 200.0)
    assert canny.resolve(256, 300, 0) == (256, 255.0, 1.0)  # thresholds clamp to the slider range
    assert registry.get("mlsd").resolve(-1, -1, -1) == (512, 0.1, 0.1)
    assert [s.label for s in registry.get("mlsd").sliders()][1:] == ["MLSD Value Threshold", "MLSD Distance Threshold"]
    assert registry.get("depth_leres").resolve(-1, -1, -1) == (512, 0.0, 0.0)
    assert registry.get("scribble_xdog").threshold_a.as_api() == {"name": "XDoG Threshold", "value": 32, "min": 1,
                                                                   "max": 64, "step": 1}
    tile = registry.get("tile_resample")
    assert tile.sliders()[0] is None and tile.sliders()[1].label == "Down Sampling Rate"
    assert tile.resolve(-1, -1, -1) == (512, 1.0, 0.5)
    assert registry.get("inpaint_only").sliders() == [] and registry.get("none").sliders() == []
    assert registry.get("depth_zoe").sliders()[0].label == "Preprocessor Resolution"


def test_default_resolution_is_used_when_minus_one(registry):
    assert registry.run("canny", photo(768, 640)).size == (614, 512)
    assert registry.run("canny", photo(768, 640), processor_res=320).size == (384, 320)


# --- model-free maps --------------------------------------------------------------------------------------------

def test_canny_equals_cv2_canny_on_the_same_input():
    image = photo(256, 192)
    pixels = np.asarray(image)
    registry = PreprocessorRegistry("/nonexistent")
    at_size = np.asarray(registry.run("canny", image, processor_res=192, threshold_a=50, threshold_b=150))
    reference = cv2.Canny(pixels, 50, 150)
    assert at_size.shape == (192, 256, 3) and reference.any()
    for channel in range(3):
        np.testing.assert_array_equal(at_size[:, :, channel], reference)
    # at another resolution: the picture area-scaled to that shorter side, then cv2.Canny
    scaled = cv2.resize(pixels, (128, 96), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(np.asarray(registry.run("canny", image, 96, 50, 150))[:, :, 0],
                                  cv2.Canny(scaled, 50, 150))


def test_invert(registry):
    image = photo(160, 128)
    np.testing.assert_array_equal(np.asarray(registry.run("invert", image, 128)), 255 - np.asarray(image))


def test_none_passes_the_picture_through(registry):
    image = photo(100, 80)
    np.testing.assert_array_equal(np.asarray(registry.run("none", image)), np.asarray(image))


def test_tile_resample_downsamples_by_the_rate(registry):
    image = photo(200, 120)
    smaller = registry.run("tile_resample", image, threshold_a=2.0)
    assert smaller.size == (100, 60)
    np.testing.assert_array_equal(np.asarray(smaller), cv2.resize(np.asarray(image), (100, 60),
                                                                  interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(np.asarray(registry.run("tile_resample", image)), np.asarray(image))


def test_scribble_xdog_draws_dark_strokes_and_obeys_its_threshold(registry):
    pixels = np.full((128, 128, 3), 255, np.uint8)
    cv2.line(pixels, (10, 64), (118, 64), (0, 0, 0), 2)
    cv2.line(pixels, (64, 10), (64, 50), (230, 230, 230), 1)  # a faint stroke
    low = np.asarray(registry.run("scribble_xdog", Image.fromarray(pixels), 128, threshold_a=8))
    high = np.asarray(registry.run("scribble_xdog", Image.fromarray(pixels), 128, threshold_a=64))
    assert low.shape == (128, 128, 3) and set(np.unique(low)) <= {0, 255}
    assert low[64, 64, 0] == 255 and high[64, 64, 0] == 255  # the dark line survives both thresholds
    assert low[30, 64, 0] == 255 and high[30, 64, 0] == 0  # the faint one only the low threshold
    assert low[110, 20, 0] == 0  # blank paper stays black
    assert (high > 0).sum() < (low > 0).sum()


def test_shuffle_is_stable_for_a_picture_and_differs_between_pictures(registry):
    first = np.asarray(registry.run("shuffle", photo(seed=1), 128))
    again = np.asarray(registry.run("shuffle", photo(seed=1), 128))
    other = np.asarray(registry.run("shuffle", photo(seed=2), 128))
    assert first.shape == (128, 192, 3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, np.asarray(photo(seed=1)))


def test_lineart_standard_finds_black_lines_on_white(registry):
    pixels = np.full((256, 256, 3), 255, np.uint8)
    cv2.circle(pixels, (128, 128), 60, (0, 0, 0), 3)
    result = np.asarray(registry.run("lineart_standard", Image.fromarray(pixels), 128))
    assert result.shape == (128, 128, 3)
    assert result[64, 64 + 30, 0] > 100  # on the circle (radius 30 at half size)
    assert result[10, 10, 0] == 0 and result[64, 64, 0] == 0  # paper and the circle's middle stay black


def test_inpaint_only_returns_rgba_with_the_mask_as_alpha(registry):
    image = photo(96, 64)
    mask = Image.new("L", (48, 32), 0)
    mask.paste(255, (0, 0, 24, 32))  # left half white: to repaint (a smaller mask is scaled to the picture)
    result = registry.run("inpaint", image, mask=mask)
    pixels = np.asarray(result)
    assert result.mode == "RGBA" and result.size == (96, 64)
    np.testing.assert_array_equal(pixels[:, :, :3], np.asarray(image))
    assert (pixels[:, :40, 3] == 0).all() and (pixels[:, 56:, 3] == 255).all()


def test_inpaint_only_without_a_mask_is_a_clear_error(registry):
    with pytest.raises(PreprocessorError, match="needs a mask"):
        registry.run("inpaint_only", photo())


def test_model_free_runs_are_thread_safe():
    registry = PreprocessorRegistry("/nonexistent")
    images = [photo(seed=i) for i in range(8)]
    expected = [np.asarray(registry.run(name, img, 128)) for img in images for name in ("canny", "shuffle")]
    results: list = [None] * len(expected)

    def work(index):
        image, name = images[index // 2], ("canny", "shuffle")[index % 2]
        results[index] = np.asarray(registry.run(name, image, 128))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(expected))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


# --- weight files: missing and broken ---------------------------------------------------------------------------

def test_missing_file_message_names_the_file_folder_and_source(registry):
    folder = registry.annotators.folder
    with pytest.raises(PreprocessorError) as caught:
        registry.run("depth", photo())
    message = str(caught.value)
    assert "dpt_hybrid-midas-501f0c75.pt" in message and str(folder) in message and ANNOTATOR_SOURCE in message
    with pytest.raises(PreprocessorError) as caught:
        registry.run("openpose_full", photo())
    for name in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"):
        assert name in str(caught.value)
    assert registry.missing_files("lineart") == ["sk_model.pth"]
    assert registry.get("depth_leres++").weight_files == ("res101.pth", "latest_net_G.pth")


def test_unreadable_file_is_a_clear_error(registry):
    folder = registry.annotators.folder
    folder.mkdir(parents=True)
    (folder / "ControlNetHED.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(PreprocessorError) as caught:
        registry.run("softedge_hed", photo())
    assert "ControlNetHED.pth" in str(caught.value) and "could not be read" in str(caught.value)


def test_file_for_another_network_is_a_clear_error(registry, tmp_path):
    folder = registry.annotators.folder
    other = write_annotator("lineart", tmp_path / "other")
    folder.mkdir(parents=True)
    (folder / "ControlNetHED.pth").write_bytes(other.read_bytes())  # lineart weights under HED's name
    with pytest.raises(PreprocessorError) as caught:
        registry.run("hed", photo())
    assert "ControlNetHED.pth" in str(caught.value) and "does not fit" in str(caught.value)
    assert not registry.annotators.is_loaded("hed")


# --- neural annotators from random-weight files ---------------------------------------------------------------

NEURAL = sorted(MODULE_ANNOTATORS)


@pytest.fixture(scope="module")
def neural(tmp_path_factory):
    """One registry over a folder holding the files of every light neural module, shared by the tests below so
    each network is written and loaded once."""
    folder = tmp_path_factory.mktemp("annotators")
    for module in NEURAL:
        if module not in HEAVY:
            write_module_files(module, folder)
    yield PreprocessorRegistry(folder)
    shutil.rmtree(folder, ignore_errors=True)  # full-size random networks: gigabytes a CI disk need not keep


def _check_neural_map(registry, module, monkeypatch, repeat: bool = True):
    """`repeat`: run it a second time (same weights, same map; the heavy networks skip it: their forward is most of
    the suite's slowest tests, and the light modules check the property)."""
    loads = []
    real_load = annotators.load_annotator
    monkeypatch.setattr(annotators, "load_annotator", lambda key, *args: loads.append(key) or real_load(key, *args))
    image = photo(192, 128)
    first = registry.run(module, image, processor_res=128)
    assert first.mode == "RGB" and first.size == (192, 128)  # shorter side at processor_res
    if repeat:
        again = registry.run(module, image, processor_res=128)
        np.testing.assert_array_equal(np.asarray(first), np.asarray(again))  # same weights, same map
    for key in MODULE_ANNOTATORS[module]:
        assert registry.annotators.is_loaded(key)
        assert loads.count(key) <= 1  # loaded at most once (earlier modules may have loaded it already)


@pytest.mark.parametrize("module", [m for m in NEURAL if m not in HEAVY])
def test_neural_preprocessor_loads_and_maps(neural, module, monkeypatch):
    _check_neural_map(neural, module, monkeypatch)


@pytest.mark.parametrize("module", sorted(HEAVY))
def test_heavy_neural_preprocessor_loads_and_maps(neural, module, monkeypatch):
    written = write_module_files(module, neural.annotators.folder)
    try:
        _check_neural_map(neural, module, monkeypatch, repeat=False)
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def test_openpose_hand_and_face_networks_run(neural):
    """Random body weights find no person (so no hand or face crop): run the loaded hand and face networks on a
    small batch directly (their detectors rescale any crop to 368-1472 px, too slow for a unit test)."""
    import torch

    neural.run("openpose_full", photo(), 128)
    body, hand, face = annotators.detectors("openpose_full", neural.annotators)
    with torch.no_grad():
        hand_maps = hand.model(torch.rand(1, 3, 64, 64))
        face_maps = face.model(torch.rand(1, 3, 64, 64))[-1]
    assert hand_maps.shape == (1, 22, 8, 8) and torch.isfinite(hand_maps).all()  # 21 keypoints + background
    assert face_maps.shape == (1, 71, 8, 8) and torch.isfinite(face_maps).all()  # 70 landmarks + background


def test_neural_maps_depend_on_their_sliders(neural):
    image = photo(192, 128)
    plain = np.asarray(neural.run("depth_leres", image, 128))
    near_removed = np.asarray(neural.run("depth_leres", image, 128, threshold_a=60))
    background_removed = np.asarray(neural.run("depth_leres", image, 128, threshold_b=60))
    assert (near_removed == 255).sum() > (plain == 255).sum()  # removed near parts turn white, as in A1111
    assert (background_removed == 0).sum() > (plain == 0).sum()
    safe = np.asarray(neural.run("softedge_hedsafe", image, 128))
    assert len(np.unique(safe)) <= 3 < len(np.unique(np.asarray(neural.run("softedge_hed", image, 128))))


def test_neural_runs_from_threads_load_once(tmp_path, monkeypatch):
    write_module_files("softedge_pidinet", tmp_path)
    registry = PreprocessorRegistry(tmp_path)
    loads = []
    real_load = annotators.load_annotator
    monkeypatch.setattr(annotators, "load_annotator", lambda key, *args: loads.append(key) or real_load(key, *args))
    results = []
    threads = [threading.Thread(target=lambda: results.append(np.asarray(registry.run(name, photo(), 128))))
               for name in ("softedge_pidinet", "pidinet_safe", "pidinet_scribble", "softedge_pidinet")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == ["pidinet"] and len(results) == 4
    assert all(r.shape == (128, 192, 3) for r in results)
