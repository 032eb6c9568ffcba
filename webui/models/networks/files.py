"""Reading LoRA files: the safetensors header (metadata, tensor names and shapes), the tensors themselves, and
A1111's "addnet" hash (sha256 of the tensor data after the header)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes

from ..architecture import CheckpointFormatError
from ..hashing import CHUNK, digest_stream, sha256_file
from ..loader import read_state_dict

NETWORK_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
MAX_HEADER_BYTES = 100 * 2**20


class NetworkFileError(ValueError):
    """A LoRA file that cannot be read; the message names the file and says what is wrong."""


def _header_length(head: bytes, name: str) -> int:
    if len(head) < 8:
        raise NetworkFileError(f"{name}: too short to be a safetensors file ({len(head)} bytes)")
    length = int.from_bytes(head, "little")
    if not 2 <= length <= MAX_HEADER_BYTES:
        raise NetworkFileError(f"{name}: not a safetensors file (header length {length} is implausible)")
    return length


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(the JSON header, the offset where the tensor data starts). Raises NetworkFileError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            length = _header_length(f.read(8), path.name)
            raw = f.read(length)
    except OSError as exc:
        raise NetworkFileError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    return _parse_header(raw, length, path.name), 8 + length


def _parse_header(raw: bytes, length: int, name: str) -> dict:
    if len(raw) < length:
        raise NetworkFileError(f"{name}: truncated safetensors header")
    try:
        header = json.loads(raw)
    except ValueError:
        raise NetworkFileError(f"{name}: the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise NetworkFileError(f"{name}: the safetensors header is not a JSON object")
    return header


def header_metadata(header: dict) -> dict:
    """The `__metadata__` strings; values that hold a JSON object (e.g. `ss_tag_frequency`) are decoded, as A1111
    does."""
    raw = header.get("__metadata__")
    if not isinstance(raw, dict):
        return {}
    out = {}
    for key, value in raw.items():
        if isinstance(value, str) and value.startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out


def header_shapes(header: dict) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the header alone (no tensor is read)."""
    return {k: tuple(v.get("shape", ())) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict)}


def addnet_sha256(path: Path, chunk: int = CHUNK) -> str:
    """A1111's LoRA hash: sha256 of the file after the 8-byte length and the JSON header (full hex)."""
    path = Path(path)
    _, offset = read_safetensors_header(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        digest_stream(digest, f, os.fstat(f.fileno()).st_size - offset, path.name, chunk)
    return digest.hexdigest()


def network_file_sha256(path: Path) -> str:
    """The hash A1111 gives a LoRA file: the addnet hash for .safetensors, the full-file sha256 otherwise."""
    path = Path(path)
    return addnet_sha256(path) if path.suffix.lower() == ".safetensors" else sha256_file(path)


def read_network_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a LoRA file, in private memory (the file may be replaced afterwards).

    .safetensors are parsed from their bytes; .pt/.ckpt go through the loader's weights-only reader. Raises
    NetworkFileError with a message naming the file."""
    path = Path(path)
    name = path.name
    if path.suffix.lower() != ".safetensors":
        try:
            return read_state_dict(path, private=True), {}
        except CheckpointFormatError as exc:
            raise NetworkFileError(str(exc)) from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NetworkFileError(f"{name}: cannot read ({exc.strerror or exc})") from None
    length = _header_length(data[:8], name)
    header = _parse_header(data[8:8 + length], length, name)
    try:
        tensors = load_safetensors_bytes(data)
    except (ValueError, SafetensorError, RuntimeError) as exc:
        raise NetworkFileError(f"{name}: corrupt or truncated safetensors file ({exc})") from None
    return tensors, header_metadata(header)
