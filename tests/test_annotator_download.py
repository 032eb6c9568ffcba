"""The explicit annotator download (`python -m webui.control.download MODULE`): progress, the pinned checksum, the
load check and the atomic rename, with the network replaced by a local file served through urlopen."""
from __future__ import annotations

import hashlib
import urllib.request

import pytest

from tests.annotator_files import HubResponse, serve_as_hub
from webui.control import annotator_sha256, annotators
from webui.control.download import main


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The real-layout mlsd file as the 'Hub' serves it; returns (bytes, urls asked for)."""
    return serve_as_hub(monkeypatch, "mlsd", tmp_path / "hub")


def test_download_verifies_the_checksum_and_reports_progress(tmp_path, served, monkeypatch):
    data, asked = served
    monkeypatch.setitem(annotator_sha256.PINNED_SHA256, "mlsd_large_512_fp32.pth", hashlib.sha256(data).hexdigest())
    seen = []
    folder = tmp_path / "annotators"
    paths = annotators.download_annotators("mlsd", folder, progress=lambda n, done, total: seen.append((done, total)))
    assert [p.name for p in paths] == ["mlsd_large_512_fp32.pth"] and paths[0].read_bytes() == data
    assert asked == [f"{annotators.ANNOTATOR_SOURCE}/resolve/main/mlsd_large_512_fp32.pth"]
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert annotators.download_annotators("mlsd", folder) == paths and len(asked) == 1  # present: not fetched again


def test_a_checksum_mismatch_saves_nothing(tmp_path, served, monkeypatch):
    monkeypatch.setitem(annotator_sha256.PINNED_SHA256, "mlsd_large_512_fp32.pth", "0" * 64)
    folder = tmp_path / "annotators"
    with pytest.raises(annotators.AnnotatorError, match="does not match its checksum"):
        annotators.download_annotators("mlsd", folder)
    assert list(folder.iterdir()) == []


def test_a_file_that_does_not_load_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: HubResponse(b"<html>not a model</html>"))
    monkeypatch.setitem(annotator_sha256.PINNED_SHA256, "mlsd_large_512_fp32.pth",
                        hashlib.sha256(b"<html>not a model</html>").hexdigest())
    folder = tmp_path / "annotators"
    with pytest.raises(annotators.AnnotatorError, match="not a usable annotator file"):
        annotators.download_annotators("mlsd", folder)
    assert list(folder.iterdir()) == []


def test_command_line(tmp_path, served, monkeypatch, capsys):
    data, _ = served
    monkeypatch.setitem(annotator_sha256.PINNED_SHA256, "mlsd_large_512_fp32.pth", hashlib.sha256(data).hexdigest())
    folder = tmp_path / "annotators"
    assert main(["mlsd", "canny", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "mlsd: ready (mlsd_large_512_fp32.pth in" in out and "canny: needs no weight files" in out
    assert main(["no_such_module", "--dir", str(folder)]) == 2
    assert "unknown ControlNet preprocessor 'no_such_module'" in capsys.readouterr().err


def test_missing_file_message_names_the_download_command(tmp_path):
    from webui.control.preprocessors import PreprocessorError, PreprocessorRegistry
    from PIL import Image
    with pytest.raises(PreprocessorError) as caught:
        PreprocessorRegistry(tmp_path).run("mlsd", Image.new("RGB", (64, 64)))
    assert "mlsd_large_512_fp32.pth" in str(caught.value) and "python -m webui.control.download mlsd" in str(caught.value)
