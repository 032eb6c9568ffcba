"""Issue #19, part A: files in models/annotators are read only through torch's weights-only unpickler (with a small
allow-list for the plain data some published checkpoints carry), so a planted `.pth` never runs code, through the
preprocessor, the UI preview or `/controlnet/detect`; and each downloadable annotator file has its sha256 pinned in
the repository, a download that does not match it (or has none) is refused."""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from tests.annotator_files import WRITERS, serve_as_hub, write_module_files
from webui.control import annotator_sha256, annotators
from webui.control.preprocessors import PreprocessorError, PreprocessorRegistry
from webui.settings.flags import parse_flags
from webui.ui import controlnet_preview

PIDINET = "table5_pidinet.pth"  # softedge_pidinet's file: a small network, quick to build


def _plant_marker(path: str) -> str:
    """The harmless stand-in for an attacker's payload: full unpickling calls it, and it leaves a file behind."""
    Path(path).write_text("code ran")
    return "planted"


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _plant_marker, (self.marker,)


def plant(folder: Path, marker: Path) -> Path:
    """A real-layout PiDiNet file with the payload pickled beside its weights, as an attacker would leave it."""
    folder.mkdir(parents=True, exist_ok=True)
    state = WRITERS["pidinet"]()
    state["note"] = _Payload(marker)
    torch.save(state, folder / PIDINET)
    return folder / PIDINET


def photo(size: int = 64) -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_the_planted_file_would_run_code_if_fully_unpickled(tmp_path):
    """Control: the payload is real (a full unpickle writes the marker), so the tests below mean something."""
    marker = tmp_path / "marker"
    path = plant(tmp_path / "annotators", marker)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.read_text() == "code ran"


def test_the_preprocessor_refuses_a_planted_file_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / "annotators"
    plant(folder, marker)
    registry = PreprocessorRegistry(folder)
    with pytest.raises(PreprocessorError) as caught:
        registry.run("softedge_pidinet", photo())
    message = str(caught.value)
    assert PIDINET in message and str(folder) in message
    assert "refused" in message and "_plant_marker" in message and "could run code" in message
    assert not marker.exists()
    assert not registry.annotators.is_loaded("pidinet")
    with pytest.raises(PreprocessorError):  # asked again: refused again, still without running anything
        registry.run("scribble_pidinet", photo())
    assert not marker.exists()


def test_the_ui_preview_refuses_it_with_a_notice(tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / "annotators"
    plant(folder, marker)
    services = type("Services", (), {"preprocessors": PreprocessorRegistry(folder)})()
    with pytest.warns(UserWarning, match=re.escape(PIDINET)):
        shown = controlnet_preview.run_preview(services, "txt2img", 0, {"image": photo(),
                                                                        "module": "softedge_pidinet"}, 512, 512)
    assert not isinstance(shown, Image.Image)
    assert not marker.exists()


def test_detect_answers_422_naming_the_file_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    data = tmp_path / "data"
    plant(data / "models" / "annotators", marker)
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        buffer = io.BytesIO()
        photo().save(buffer, format="PNG")
        body = {"controlnet_module": "softedge_pidinet",
                "controlnet_input_images": [base64.b64encode(buffer.getvalue()).decode()]}
        response = TestClient(app).post("/controlnet/detect", json=body)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert PIDINET in detail and "refused" in detail
        assert not marker.exists()
    finally:
        services.stop()


def test_numpy_scalars_arrays_and_namespaces_beside_the_weights_still_load(tmp_path):
    """What the weights-only reader allows beyond tensors: a training checkpoint's epoch and loss as numpy scalars,
    a numpy array and its options as an argparse.Namespace; the preprocessor then runs as usual."""
    folder = tmp_path / "annotators"
    folder.mkdir()
    state = WRITERS["pidinet"]()
    state.update(epoch=np.int64(14), loss=np.float64(0.125), lr_steps=np.array([8, 12]),
                 args=argparse.Namespace(config="carv4", sa=True, dil=True, lr=0.005))
    torch.save(state, folder / PIDINET)
    read = annotators.read_weights(folder / PIDINET)
    assert read["epoch"] == 14 and read["args"].config == "carv4" and list(read["lr_steps"]) == [8, 12]
    shown = PreprocessorRegistry(folder).run("softedge_pidinet", photo())
    assert shown.mode == "RGB" and min(shown.size) > 0


def test_a_namespace_cannot_smuggle_the_payload_in(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "smuggled.pth"
    torch.save({"args": argparse.Namespace(hook=_Payload(marker)), "w": torch.zeros(2)}, path)
    with pytest.raises(annotators.AnnotatorError, match="smuggled.pth.*refused"):
        annotators.read_weights(path)
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_is_named_as_unreadable(tmp_path):
    path = tmp_path / PIDINET
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(annotators.AnnotatorError) as caught:
        annotators.read_weights(path)
    assert PIDINET in str(caught.value) and "could not be read" in str(caught.value)


# --- pinned checksums ---------------------------------------------------------------------------------------------
def test_every_downloadable_file_is_in_the_pinned_table():
    files = {name for spec in annotators.ANNOTATORS.values() for name in spec.files}
    assert files == set(annotator_sha256.PINNED_SHA256)
    for name, digest in annotator_sha256.PINNED_SHA256.items():
        assert digest is None or re.fullmatch(r"[0-9a-f]{64}", digest), name
    # torch.hub names a file after the start of its sha256: the pinned hash agrees with the name
    assert annotator_sha256.PINNED_SHA256["dpt_hybrid-midas-501f0c75.pt"].startswith("501f0c75")


def test_no_hub_lookup_is_left():
    assert not hasattr(annotators, "_hub_sha256")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """urlopen answering with the real-layout softedge_pidinet file; returns (its bytes, the URLs asked for)."""
    return serve_as_hub(monkeypatch, "softedge_pidinet", tmp_path / "hub")


def test_a_file_matching_its_pinned_hash_is_kept(tmp_path, hub, monkeypatch):
    data, asked = hub
    monkeypatch.setitem(annotator_sha256.PINNED_SHA256, PIDINET, hashlib.sha256(data).hexdigest())
    (path,) = annotators.download_annotators("softedge_pidinet", tmp_path / "annotators")
    assert path.read_bytes() == data and asked == [f"{annotators.ANNOTATOR_SOURCE}/resolve/main/{PIDINET}"]


def test_a_file_not_matching_its_pinned_hash_is_refused(tmp_path, hub):
    """The real pinned hash of table5_pidinet.pth: our random-weight stand-in does not match it."""
    folder = tmp_path / "annotators"
    with pytest.raises(annotators.AnnotatorError) as caught:
        annotators.download_annotators("softedge_pidinet", folder)
    message = str(caught.value)
    assert PIDINET in message and "does not match its checksum" in message
    assert annotator_sha256.PINNED_SHA256[PIDINET] in message
    assert list(folder.iterdir()) == []


def test_a_file_without_a_pinned_hash_is_not_downloaded(tmp_path, hub, monkeypatch):
    _, asked = hub
    monkeypatch.setitem(annotator_sha256.PINNED_SHA256, PIDINET, None)
    folder = tmp_path / "annotators"
    with pytest.raises(annotators.AnnotatorError) as caught:
        annotators.download_annotators("softedge_pidinet", folder)
    message = str(caught.value)
    assert PIDINET in message and "no sha256 pinned" in message and str(folder) in message
    assert asked == [] and not (folder / PIDINET).exists()


def test_the_command_line_reports_an_unpinned_file(tmp_path, hub, monkeypatch, capsys):
    from webui.control.download import main

    monkeypatch.delitem(annotator_sha256.PINNED_SHA256, PIDINET)
    assert main(["softedge_pidinet", "--dir", str(tmp_path / "annotators")]) == 1
    assert f"{PIDINET} cannot be downloaded" in capsys.readouterr().err
