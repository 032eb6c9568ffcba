"""Write textual-inversion embeddings in every layout users have, for the tests.

Written independently of the reader in `webui.models.embedding_png`: the image forms follow A1111's description
(JSON with `{"TORCHTENSOR": lists}`, base64 in the `sd-ti-embedding` chunk; or zlib-compressed, nibble-split,
xor-ed with a step-by-step LCG and laid out as [low block | black | picture | black | high block]).
"""
from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file


def random_vectors(count: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def a1111_document(vectors: torch.Tensor, name: str, step: int | None = 500,
                   checkpoint: str | None = "tiny-sd1", checkpoint_hash: str | None = "0123abcd") -> dict:
    """The dict A1111 saves for a trained embedding."""
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": name, "step": step,
            "sd_checkpoint": checkpoint_hash, "sd_checkpoint_name": checkpoint}


def write_a1111_pt(path: Path, vectors: torch.Tensor, **meta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(a1111_document(vectors, path.stem, **meta), path)
    return path


def write_old_a1111_pt(path: Path, vectors: torch.Tensor) -> Path:
    """torch 1.11-era A1111 files kept string_to_param as a ParameterDict (a pickled container of tensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors.clone())})
    torch.save({"string_to_param": params, "name": path.stem, "step": 10}, path)
    return path


def write_pt_with_object(path: Path, vectors: torch.Tensor) -> Path:
    """An embedding .pt that also pickles an arbitrary Python object (which the safe loader must refuse)."""
    import argparse

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**a1111_document(vectors, path.stem), "training_args": argparse.Namespace(lr=0.005)}, path)
    return path


def write_emb_params(path: Path, vectors: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": vectors.contiguous()}, str(path))
    return path


def write_sdxl(path: Path, clip_l: torch.Tensor, clip_g: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"clip_l": clip_l.contiguous(), "clip_g": clip_g.contiguous()}, str(path))
    return path


def write_diffusers_bin(path: Path, token: str, vectors: torch.Tensor) -> Path:
    """diffusers' learned_embeds.bin: {"<token>": tensor}, 1-D for a single vector."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({token: vectors}, path)
    return path


def _to_json(document: dict) -> str:
    def encode(obj):
        if isinstance(obj, torch.Tensor):
            return {"TORCHTENSOR": obj.detach().cpu().numpy().tolist()}
        raise TypeError(type(obj).__name__)
    return json.dumps(document, default=encode)


def picture(width: int = 24, height: int = 20, seed: int = 0) -> Image.Image:
    """A small colourful picture (every channel non-zero), standing for the training preview."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(30, 255, size=(height, width, 3), dtype=np.uint8), "RGB")


def write_png_text_chunk(path: Path, document: dict, image: Image.Image | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(_to_json(document).encode()))
    (image or picture()).save(path, "PNG", pnginfo=info)
    return path


def _naive_lcg_nibbles(count: int) -> np.ndarray:
    state, out = 0, []
    for _ in range(count):
        state = (1664525 * state + 1013904223) % 2 ** 32
        out.append((state % 255) & 0x0F)
    return np.array(out, dtype=np.uint8)


def write_png_pixels(path: Path, document: dict, image: Image.Image | None = None) -> Path:
    """The older form: the data hidden in two pixel blocks either side of the picture, no text chunk."""
    image = (image or picture()).convert("RGB")
    height = image.size[1]
    packed = np.frombuffer(zlib.compress(_to_json(document).encode(), 9), dtype=np.uint8)
    cells = -(-packed.size // (height * 3)) * height * 3  # whole columns of height x RGB
    packed = np.resize(packed, cells)  # padding repeats the data, as A1111's writer does
    blocks = []
    for nibbles in (packed & 0x0F, packed >> 4):
        block = nibbles.reshape(height, -1, 3) ^ _naive_lcg_nibbles(cells).reshape(height, -1, 3)
        decoration = 0x80 | (np.indices(block.shape).sum(axis=0) % 8 << 4)  # high bits only, never zero
        blocks.append((block | decoration).astype(np.uint8))
    low, high = blocks
    gap = np.zeros((height, 1, 3), dtype=np.uint8)
    canvas = np.concatenate([low, gap, np.asarray(image), gap, high], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas, "RGB").save(path, "PNG")
    return path
