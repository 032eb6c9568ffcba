"""A small Qwen-style tokenizer in the real file formats, for tests (and the tiny Z-Image models built with it).

`write_tiny_qwen_tokenizer(folder)` writes a `tokenizer.json` laid out as Qwen2/Qwen3's (byte-level BPE: NFC
normaliser, Qwen's pre-tokenising expression then byte-level mapping, byte-level decoder) with the 256 byte symbols,
merges that spell a few dozen common words (with and without their leading space) and Qwen's chat special tokens
after them, plus a `tokenizer_config.json` naming `Qwen2Tokenizer` with a chat template of our own that renders what
ZImagePipeline asks for as Qwen3's does: every message as `<|im_start|>{role}\\n{content}<|im_end|>\\n`, then, with
`add_generation_prompt`, `<|im_start|>assistant\\n`, followed by an empty think block only when `enable_thinking`
is false. `TINY_QWEN_IDS` is the number of ids it produces: a tiny Qwen3Model needs `vocab_size >= TINY_QWEN_IDS`.
"""
from __future__ import annotations

import json
from pathlib import Path

from .qwen_tokenizer import TOKENIZER_CONFIG, TOKENIZER_JSON

# The expression transformers' Qwen2Tokenizer pre-tokenises with (letters with one leading non-letter, single
# digits, punctuation runs, newlines, spaces).
PRETOKENIZE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
WORDS = ("a", "the", "of", "and", "in", "on", "with", "photo", "cat", "dog", "sitting", "red", "blue", "green",
         "hat", "man", "woman", "portrait", "painting", "landscape", "mountain", "sky", "city", "night", "light",
         "beautiful", "detailed", "high", "quality", "style", "art", "by", "old", "house", "tree", "river", "sun",
         "moon", "user", "assistant", "think")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' ~ message['role'] ~ '\\n' ~ message['content'] ~ '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0..255, in byte order (GPT-2's mapping: bytes
    that are printable stand for themselves, the others take the code points from 256 up, in order)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    symbols, extra = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    symbols = _byte_symbols()
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    merges: list[tuple[str, str]] = []
    space = symbols[ord(" ")]
    for word in WORDS:  # the word spelled letter by letter, then the space joined to the whole word
        current = word[0]
        for char in word[1:]:
            merged = current + char
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((current, char))
            current = merged
        vocab[space + word] = len(vocab)
        merges.append((space, word))
    return vocab, merges


def _count_ids() -> int:
    vocab, _ = _vocab_and_merges()
    return len(vocab) + len(SPECIALS)


TINY_QWEN_IDS = _count_ids()


def write_tiny_qwen_tokenizer(folder: Path) -> Path:
    """Write tokenizer.json and tokenizer_config.json into `folder`; returns the folder."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges()
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                              end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tokenizer.save(str(folder / TOKENIZER_JSON))
    ids = {t: tokenizer.token_to_id(t) for t in SPECIALS}
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "model_max_length": 131072,
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                               "single_word": False, "special": True} for t in SPECIALS},
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
