"""Z-Image's Qwen3 tokenizer: offline loading (ids and chat template as transformers and tokenizers give them for
the same files), the messages users see, and the explicit pinned download against a fake hub."""
from __future__ import annotations

import hashlib
import json
import urllib.request

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from tests.annotator_files import HubResponse
from webui.models import qwen_tokenizer as qt
from webui.models.architecture import CheckpointFormatError
from webui.models.tiny_qwen_tokenizer import TINY_QWEN_IDS, _vocab_and_merges, write_tiny_qwen_tokenizer

PROMPTS = ["a red hat, photo 1", "", "The OLD house by the river at night!\n二", "  spaced   out  "]


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_qwen_tokenizer(tmp_path / "tok")


def render(tokenizer, prompt, thinking=True):
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=thinking)


def test_ids_and_template_equal_the_libraries_own_loading(tiny, tmp_path):
    ours = qt.qwen_tokenizer([tmp_path / "missing", tiny])
    theirs = AutoTokenizer.from_pretrained(str(tiny), local_files_only=True)
    raw = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    assert len(ours) == TINY_QWEN_IDS
    for prompt in PROMPTS:
        text = render(ours, prompt)
        # Qwen3's template for ZImagePipeline's call: one user turn, then the assistant's turn opened, no think block
        assert text == f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n" == render(theirs, prompt)
        assert render(ours, prompt, thinking=False).endswith("assistant\n<think>\n\n</think>\n\n")
        ids = ours(text).input_ids
        assert ids == theirs(text).input_ids == raw.encode(text).ids
    assert ours.pad_token_id == raw.token_to_id("<|endoftext|>") and ours.padding_side == "right"


def test_vocab_and_merges_folder_gives_the_same_ids(tiny, tmp_path):
    other = tmp_path / "pair"
    other.mkdir()
    vocab, merges = _vocab_and_merges()
    (other / "vocab.json").write_text(json.dumps(vocab))
    (other / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (other / "tokenizer_config.json").write_text((tiny / "tokenizer_config.json").read_text())
    ours, reference = qt.qwen_tokenizer([other]), Tokenizer.from_file(str(tiny / "tokenizer.json"))
    for prompt in PROMPTS:
        assert ours(render(ours, prompt)).input_ids == reference.encode(render(ours, prompt)).ids


def test_a_zimage_diffusers_folder_tokenizer_is_accepted(tmp_path):
    folder = write_tiny_qwen_tokenizer(tmp_path / "Z-Image-Turbo" / "tokenizer")
    default = qt.default_folder(tmp_path / "data")
    assert default == tmp_path / "data" / "models" / "text_encoder" / "qwen3-tokenizer"
    tokenizer = qt.qwen_tokenizer([folder, default])
    assert tokenizer(render(tokenizer, "cat")).input_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_missing_files_name_the_folder_and_the_download(tmp_path, tiny):
    with pytest.raises(CheckpointFormatError) as error:
        qt.qwen_tokenizer([tmp_path / "nowhere"])
    assert str(tmp_path / "nowhere") in str(error.value)
    assert "python -m webui.models.qwen_tokenizer download --dir" in str(error.value)
    (tiny / "tokenizer_config.json").unlink()
    with pytest.raises(CheckpointFormatError, match="tokenizer_config.json is missing"):
        qt.qwen_tokenizer([tiny])


def test_a_config_without_chat_template_or_a_damaged_file_is_refused(tmp_path):
    folder = write_tiny_qwen_tokenizer(tmp_path / "a")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError, match="no chat_template"):
        qt.qwen_tokenizer([folder])
    broken = write_tiny_qwen_tokenizer(tmp_path / "b")
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointFormatError, match="not a usable Qwen3 tokenizer"):
        qt.qwen_tokenizer([broken])


# --- the explicit download -----------------------------------------------------------------------------------------

def serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """urlopen answers each pinned URL with `files[name]`; returns the URLs asked for."""
    asked: list[str] = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        return HubResponse(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return asked


def pin_to(monkeypatch, files: dict[str, bytes]) -> None:
    monkeypatch.setattr(qt, "PINNED_FILES", tuple(
        qt.PinnedFile(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()))


def tiny_files(tiny) -> dict[str, bytes]:
    return {name: (tiny / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json")}


def test_download_fetches_the_pinned_revision_and_verifies(monkeypatch, tiny, tmp_path, capsys):
    files = tiny_files(tiny)
    pin_to(monkeypatch, files)
    asked = serve(monkeypatch, files)
    target = tmp_path / "data" / "models" / "text_encoder" / "qwen3-tokenizer"
    assert qt.main(["download", "--dir", str(target)]) == 0
    assert asked == [f"https://huggingface.co/Qwen/Qwen3-4B/resolve/{qt.SOURCE_REVISION}/{name}" for name in files]
    assert len(qt.SOURCE_REVISION) == 40
    assert sorted(p.name for p in target.iterdir()) == sorted(files)
    assert "ready" in capsys.readouterr().out
    tokenizer = qt.qwen_tokenizer([target])
    assert tokenizer(render(tokenizer, "cat")).input_ids == Tokenizer.from_file(
        str(tiny / "tokenizer.json")).encode(render(tokenizer, "cat")).ids
    assert qt.main(["download", "--dir", str(target)]) == 0 and len(asked) == 2  # already there: nothing fetched
    assert "already" in capsys.readouterr().out


def test_a_file_that_does_not_match_its_pin_is_refused_and_nothing_is_left(monkeypatch, tiny, tmp_path, capsys):
    serve(monkeypatch, tiny_files(tiny))  # the real pins: the tiny files match neither size nor sha256
    target = tmp_path / "out"
    assert qt.main(["download", "--dir", str(target)]) == 1
    message = capsys.readouterr().err
    assert "tokenizer.json does not match its checksum" in message and qt.PINNED_FILES[0].sha256 in message
    assert list(target.iterdir()) == []


def test_a_failed_connection_says_so_and_leaves_nothing(monkeypatch, tmp_path):
    import urllib.error

    def offline(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(qt.QwenTokenizerDownloadError, match="could not download tokenizer.json"):
        qt.download_tokenizer(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_file_without_a_trustworthy_pin_is_not_downloaded(monkeypatch, tmp_path):
    monkeypatch.setattr(qt, "PINNED_FILES", (qt.PinnedFile("merges.txt", 0, ""),))
    asked = serve(monkeypatch, {})
    with pytest.raises(qt.QwenTokenizerDownloadError, match="no trustworthy pinned checksum"):
        qt.download_tokenizer(tmp_path / "out")
    assert asked == []
