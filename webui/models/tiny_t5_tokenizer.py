"""A small T5 tokenizer in the real file formats, for tests (and the tiny FLUX.1 models built with it).

`write_tiny_t5_tokenizer(folder)` writes a `spiece.model` (a SentencePiece Unigram ModelProto, serialised with the
schema transformers ships) laid out as T5's: `<pad>` = 0, `</s>` = 1, `<unk>` = 2 and then the pieces; the
tokenizer adds the 100 `<extra_id_N>` sentinels after them, as for the real one. `TINY_IDS` is the number of ids it
produces (pieces + sentinels): a tiny T5EncoderModel needs `vocab_size >= TINY_IDS` (FLUX.1's real one has 32128
rows for 32100 ids). `fmt="tokenizer.json"` writes the same vocabulary as a tokenizers Unigram `tokenizer.json`
(as FLUX.1's `tokenizer_2/` also ships one) instead.
"""
from __future__ import annotations

import math
import string
from pathlib import Path

from .t5_tokenizer import EXTRA_IDS, SPIECE, TOKENIZER_JSON

SPECIALS = (("<pad>", 3), ("</s>", 3), ("<unk>", 2))  # (piece, SentencePiece type: 2 unknown, 3 control)
WORDS = ("a", "the", "of", "and", "in", "on", "with", "photo", "cat", "dog", "sitting", "red", "blue", "green",
         "hat", "man", "woman", "portrait", "painting", "landscape", "mountain", "sky", "city", "night", "light",
         "beautiful", "detailed", "high", "quality", "style", "art", "by", "an", "old", "house", "tree", "river",
         "sun", "moon", "star", "cinematic", "lighting", "wearing", "holding", "flower", "garden", "car", "road",
         "street", "rain", "snow", "forest", "ocean", "beach", "sunset", "castle", "dragon", "robot", "girl", "boy",
         "is", "it", "to", "at", "for", "from", "black", "white", "yellow", "small", "large", "very", "long", "hair")
SUBWORDS = ("ing", "ed", "er", "s", "ly", "est", "tion", "al", "en", "es")
PUNCTUATION = ",.:;!?'\"-()[]/&"

# pieces: 3 specials, "▁", 26 "▁x" starts, 52 letters, 10 digits, 15 punctuation marks, 76 words, 10 suffixes
TINY_PIECES = len(SPECIALS) + 1 + 26 * 3 + 10 + len(PUNCTUATION) + len(WORDS) + len(SUBWORDS)
TINY_IDS = TINY_PIECES + EXTRA_IDS


def tiny_pieces() -> list[tuple[str, float, int]]:
    """(piece, log-probability score, type) in id order. Longer pieces score higher, so the Unigram model prefers
    whole words over letters, as a trained one does."""
    pieces: list[tuple[str, float, int]] = [(p, 0.0, kind) for p, kind in SPECIALS]
    normal = ["▁"] + ["▁" + w for w in WORDS] + list(SUBWORDS) + ["▁" + c for c in string.ascii_lowercase]
    normal += list(string.ascii_lowercase) + list(string.ascii_uppercase) + list(string.digits) + list(PUNCTUATION)
    for rank, piece in enumerate(normal):
        score = -2.0 - 0.01 * rank - 4.0 / math.sqrt(len(piece.lstrip("▁")) or 1)
        pieces.append((piece, round(score, 4), 1))
    assert len(pieces) == TINY_PIECES
    return pieces


def write_tiny_t5_tokenizer(folder: Path, fmt: str = SPIECE) -> Path:
    """Write the tiny tokenizer into `folder` as `spiece.model` (default) or `tokenizer.json`; returns the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == SPIECE:
        return _write_spiece(folder / SPIECE)
    if fmt == TOKENIZER_JSON:
        return _write_tokenizer_json(folder / TOKENIZER_JSON)
    raise ValueError(f"unknown tokenizer format {fmt!r}")


def _write_spiece(path: Path) -> Path:
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf()
    model = proto.ModelProto()
    for piece, score, kind in tiny_pieces():
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, kind
    spec = model.trainer_spec
    spec.model_type = 1  # UNIGRAM
    spec.vocab_size = TINY_PIECES
    spec.unk_id, spec.eos_id, spec.pad_id, spec.bos_id = 2, 1, 0, -1  # T5's layout: no <s>
    model.normalizer_spec.name = "identity"  # no precompiled table: ids depend on the pieces alone
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = True
    model.normalizer_spec.escape_whitespaces = True
    path.write_bytes(model.SerializeToString())
    return path


def _write_tokenizer_json(path: Path) -> Path:
    """The same vocabulary (sentinels included) as a tokenizers Unigram, framed as transformers' T5 conversion is."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = [(piece, score) for piece, score, _ in tiny_pieces()]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(EXTRA_IDS - 1, -1, -1)]
    tokenizer = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"],
                                                             special_tokens=[("</s>", 1)])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]])
    tokenizer.save(str(path))
    return path
