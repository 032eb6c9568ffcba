"""Read textual-inversion embeddings stored inside images, as A1111 saves them during training.

Two forms exist, both holding the same JSON document (the `.pt` dict, with each tensor written as
`{"TORCHTENSOR": nested lists}`):

- the PNG text chunk `sd-ti-embedding`: base64 of that JSON;
- older files: the zlib-compressed JSON hidden in the pixels. Two data blocks flank the picture, separated from it by
  one black column each; every pixel channel carries one nibble in its low 4 bits (the left block the low nibbles,
  the right block the high ones), xor-ed with a fixed LCG keystream. The high 4 bits are decoration.
"""
from __future__ import annotations

import base64
import binascii
import json
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TEXT_CHUNK = "sd-ti-embedding"
TENSOR_KEY = "TORCHTENSOR"
MAX_JSON_BYTES = 64 << 20  # an embedding is a few KB; anything near this is not one

# The keystream: x(k+1) = (A * x(k) + C) mod 2**32 from x(0) = 0; each byte is x(k) mod 255, low nibble used.
_LCG_A, _LCG_C, _LCG_M = 1664525, 1013904223, 2 ** 32


class EmbeddedDataError(ValueError):
    """The image claims to hold an embedding but the data cannot be decoded."""


def decode_json_document(raw: bytes | str) -> dict:
    """The embedding dict from A1111's JSON form, `{"TORCHTENSOR": [...]}` objects turned into float32 tensors."""
    def tensor_hook(obj: dict):
        if TENSOR_KEY in obj:
            try:
                return torch.from_numpy(np.asarray(obj[TENSOR_KEY], dtype=np.float32))
            except (TypeError, ValueError) as exc:
                raise EmbeddedDataError(f"a tensor in the embedded data is malformed ({exc})") from None
        return obj

    try:
        data = json.loads(raw, object_hook=tensor_hook)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EmbeddedDataError(f"the embedded data is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EmbeddedDataError("the embedded data is not a JSON object")
    return data


def decode_text_chunk(text: str) -> dict:
    """The embedding dict from the value of the `sd-ti-embedding` text chunk."""
    try:
        raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise EmbeddedDataError(f"the '{TEXT_CHUNK}' text chunk is not base64 ({exc})") from None
    return decode_json_document(raw)


def lcg_keystream(count: int) -> np.ndarray:
    """The first `count` xor nibbles (uint8), computed by doubling instead of one step at a time."""
    values = np.empty(count, dtype=np.uint64)
    if count == 0:
        return values.astype(np.uint8)
    values[0] = _LCG_C % _LCG_M
    filled, mult, add = 1, _LCG_A, _LCG_C  # (mult, add) advance a state by `filled` steps
    while filled < count:
        take = min(filled, count - filled)
        # uint64 arithmetic wraps mod 2**64, a multiple of 2**32, so the final mod 2**32 stays exact
        values[filled:filled + take] = (values[:take] * np.uint64(mult) + np.uint64(add)) % np.uint64(_LCG_M)
        add = (mult * add + add) % _LCG_M
        mult = (mult * mult) % _LCG_M
        filled += take
    return ((values % np.uint64(255)) & np.uint64(0x0F)).astype(np.uint8)


def _unmask(block: np.ndarray) -> np.ndarray:
    return block ^ lcg_keystream(block.size).reshape(block.shape)


def _crop_to_content(pixels: np.ndarray) -> np.ndarray:
    """The bounding box of pixels whose three channels are all non-zero (A1111 pads saved images with black)."""
    lit = (pixels > 0).all(axis=2)
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    if rows.size == 0:
        return pixels[:0, :0]
    return pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def decode_pixels(image: Image.Image) -> dict | None:
    """The embedding hidden in the pixels, or None when the image holds none (an ordinary picture)."""
    pixels = _crop_to_content(np.asarray(image.convert("RGB"), dtype=np.uint8)) & 0x0F
    empty = np.flatnonzero(pixels.sum(axis=(0, 2), dtype=np.int64) == 0)
    if empty.size < 2:
        return None
    low, high = pixels[:, :empty[0]], pixels[:, empty[-1] + 1:]
    if low.size == 0 or low.shape != high.shape:
        return None
    packed = ((_unmask(high) << 4) | _unmask(low)).astype(np.uint8).tobytes()
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(packed, MAX_JSON_BYTES)  # trailing bytes (the padding) are left unused
    except zlib.error:
        return None
    if not inflater.eof:
        return None
    return decode_json_document(raw)


def read_image_embedding(path: Path) -> dict | None:
    """The embedding dict stored in an image file, or None for a plain image (such as a preview).

    Raises `EmbeddedDataError` when the image has an `sd-ti-embedding` chunk that cannot be decoded, and `OSError`
    when the file is not a readable image."""
    with Image.open(path) as image:
        text = getattr(image, "text", None) or {}
        if TEXT_CHUNK in text:
            return decode_text_chunk(text[TEXT_CHUNK])
        image.load()
        return decode_pixels(image)
