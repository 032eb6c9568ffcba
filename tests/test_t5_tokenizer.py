"""The T5 tokenizer FLUX.1 needs: built offline from spiece.model or tokenizer.json, the explicit pinned download."""
from __future__ import annotations

import hashlib
import importlib
import urllib.error
import urllib.request

import pytest
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import Unigram
from transformers import T5TokenizerFast

from tests.annotator_files import HubResponse
from webui.models import t5_tokenizer as t5
from webui.models.architecture import CheckpointFormatError
from webui.models.tiny_t5_tokenizer import TINY_IDS, TINY_PIECES, tiny_pieces, write_tiny_t5_tokenizer

convert_slow = importlib.import_module("transformers.convert_slow_tokenizer")  # the module, not its function
TEXTS = ["a photo of a cat sitting", "A Beautiful  Landscape, high-quality!", "zebra xylophone 42", "",
         "<extra_id_0> red hat</s>", "portrait of an old man, (cat:1.2) [dog]", "  leading and trailing  "]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("t5tok")
    write_tiny_t5_tokenizer(root / "spiece")
    write_tiny_t5_tokenizer(root / "json", fmt="tokenizer.json")
    return root


def _transformers_from_spiece(folder, monkeypatch):
    """transformers' own T5TokenizerFast.from_pretrained on a spiece.model. Its extractor asks for the sentencepiece
    package only to parse the file; without it the test lets it parse with protobuf, as its fallback would."""
    monkeypatch.setattr(convert_slow, "requires_backends", lambda *args: None)
    monkeypatch.setattr(convert_slow, "is_sentencepiece_available", lambda: False)
    return T5TokenizerFast.from_pretrained(str(folder), local_files_only=True)


def _independent_unigram() -> Tokenizer:
    """The same pieces through tokenizers' Unigram alone, framed as SentencePiece frames T5 text."""
    vocab = [(piece, score) for piece, score, _ in tiny_pieces()]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    tokenizer = Tokenizer(Unigram(vocab, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                       pre_tokenizers.Metaspace(prepend_scheme="always")])
    return tokenizer


@pytest.mark.parametrize("kind", ["spiece", "json"])
def test_loads_like_transformers_from_pretrained(folders, kind, monkeypatch):
    ours = t5.t5_tokenizer([folders / "missing", folders / kind])
    reference = _transformers_from_spiece(folders / "spiece", monkeypatch)
    unigram = _independent_unigram()
    assert len(ours) == len(reference) == TINY_IDS
    assert (ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == (0, 1, 2)
    assert ours.convert_tokens_to_ids("<extra_id_0>") == TINY_IDS - 1  # sentinels count down from the last id
    assert ours.convert_tokens_to_ids("<extra_id_99>") == TINY_PIECES
    for text in TEXTS:
        ids = ours(text).input_ids
        assert ids == reference(text).input_ids, text
        assert ids[-1] == 1  # </s> appended
        if "<" not in text:
            assert ids[:-1] == unigram.encode(text, add_special_tokens=False).ids, text
    padded = ours(["a cat", "a"], padding="max_length", max_length=6, truncation=True).input_ids
    assert padded == reference(["a cat", "a"], padding="max_length", max_length=6, truncation=True).input_ids
    assert padded[1][-4:] == [0, 0, 0, 0]
    assert ours.decode(ours("a red hat").input_ids, skip_special_tokens=True) == "a red hat"


def test_cached_per_file_version(folders, tmp_path):
    first = t5.t5_tokenizer([folders / "spiece"])
    assert t5.t5_tokenizer([folders / "spiece"]) is first
    copy = tmp_path / "copy"
    write_tiny_t5_tokenizer(copy)
    other = t5.t5_tokenizer([copy])
    assert other is not first and other("a cat").input_ids == first("a cat").input_ids


def test_missing_file_says_where_and_how(tmp_path):
    target = tmp_path / "models" / "text_encoder" / "t5-tokenizer"
    with pytest.raises(CheckpointFormatError) as caught:
        t5.t5_tokenizer([target, tmp_path / "other"])
    message = str(caught.value)
    assert "spiece.model" in message and str(target) in message
    assert "python -m webui.models.t5_tokenizer download" in message


def test_damaged_file_is_refused(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"\xff\xff not a sentencepiece model")
    with pytest.raises(CheckpointFormatError, match="spiece.model"):
        t5.t5_tokenizer([tmp_path])


def _serve(monkeypatch, data: bytes) -> list[str]:
    asked: list[str] = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        return HubResponse(data)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return asked


def test_download_refuses_a_checksum_mismatch(tmp_path, monkeypatch):
    data = write_tiny_t5_tokenizer(tmp_path / "src").read_bytes()
    asked = _serve(monkeypatch, data)
    folder = tmp_path / "t5-tokenizer"
    with pytest.raises(t5.T5TokenizerDownloadError, match="checksum"):
        t5.download_spiece(folder)
    assert asked == [f"https://huggingface.co/google/t5-v1_1-xxl/resolve/{t5.SOURCE_REVISION}/spiece.model"]
    assert list(folder.iterdir()) == []  # nothing left behind, not even the partial file
    with pytest.raises(CheckpointFormatError):
        t5.t5_tokenizer([folder])


def test_download_writes_the_verified_file(tmp_path, monkeypatch, capsys):
    data = write_tiny_t5_tokenizer(tmp_path / "src").read_bytes()
    _serve(monkeypatch, data)
    # The tiny file stands in for the real one: pin its size and digest, as the real pin is the real file's.
    monkeypatch.setattr(t5, "SOURCE_SIZE", len(data))
    monkeypatch.setattr(t5, "SOURCE_SHA256", hashlib.sha256(data).hexdigest())
    folder = tmp_path / "data" / "models" / "text_encoder" / "t5-tokenizer"
    assert t5.main(["download", "--data-dir", str(tmp_path / "data")]) == 0
    assert (folder / "spiece.model").read_bytes() == data
    assert sorted(p.name for p in folder.iterdir()) == ["spiece.model"]
    assert "ready" in capsys.readouterr().out
    assert t5.t5_tokenizer([folder])("a cat").input_ids == _independent_unigram().encode("a cat").ids + [1]


def test_download_failure_is_reported(tmp_path, monkeypatch, capsys):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert t5.main(["download", "--dir", str(tmp_path / "tok")]) == 1
    assert "could not download spiece.model" in capsys.readouterr().err
    assert not (tmp_path / "tok" / "spiece.model").exists()
    assert not (tmp_path / "tok" / ".spiece.model.partial").exists()
