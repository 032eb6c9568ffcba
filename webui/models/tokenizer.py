"""CLIP tokenizers built offline.

The CLIP byte-pair vocabulary ships inside the `open_clip_torch` package (`bpe_simple_vocab_16e6.txt.gz`). We derive
the two files a transformers `CLIPTokenizer` reads (`vocab.json`, `merges.txt`) from it, once, into a cache folder.
The resulting ids are those of OpenAI's CLIP tokenizer (49408 entries, `<|startoftext|>` = 49406,
`<|endoftext|>` = 49407), which every Stable Diffusion text encoder was trained with.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

VOCAB_SIZE = 49408
MERGE_COUNT = VOCAB_SIZE - 256 * 2 - 2  # byte symbols, their end-of-word forms, and the two specials
_lock = threading.Lock()


def _bpe_source() -> Path:
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"the CLIP vocabulary is missing from open_clip_torch ({path}); reinstall it")
    return path


def _byte_symbols() -> list[str]:
    """Printable stand-ins for the 256 byte values, in the order byte-level BPE vocabularies list them."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    extra = 0
    mapping = {}
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in printable] + [mapping[b] for b in range(256) if b not in printable]


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def ensure_vocabulary(cache_dir: Path) -> Path:
    """Write vocab.json and merges.txt into cache_dir/clip-tokenizer (if not there yet); return that folder."""
    folder = Path(cache_dir) / "clip-tokenizer"
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    with _lock:
        if vocab_file.exists() and merges_file.exists():
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        lines = gzip.open(_bpe_source(), "rt", encoding="utf-8").read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:MERGE_COUNT + 1]]
        symbols = _byte_symbols()
        tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        if len(tokens) != VOCAB_SIZE:
            raise RuntimeError(f"derived CLIP vocabulary has {len(tokens)} entries, expected {VOCAB_SIZE}")
        _write_atomic(merges_file, "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        _write_atomic(vocab_file, json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    return folder


@lru_cache(maxsize=4)
def _load(folder: str, pad_token: str) -> CLIPTokenizer:
    vocab = json.loads(Path(folder, "vocab.json").read_text(encoding="utf-8"))
    lines = Path(folder, "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines[1:] if line]
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)


def clip_tokenizer(cache_dir: Path, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """A CLIP tokenizer padding with `pad_token` (SD1: `<|endoftext|>`; OpenCLIP encoders of SD2/SDXL: `!`)."""
    return _load(str(ensure_vocabulary(cache_dir)), pad_token)
