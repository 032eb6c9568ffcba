"""Tensor-by-tensor reading and writing of checkpoint files, for the Checkpoint Merger (`merge.py`).

A merge must not hold its sources in memory: a `.safetensors` source is read one tensor at a time with `pread`
into memory of its own (freed once the merged tensor is computed; mapping the file instead would leave every page
touched counted in the process's resident memory), and a `.ckpt` source is mapped by torch's weights-only loader.
The merged `.safetensors` file is written as it is computed: its header is known beforehand (every tensor's name,
dtype and shape), so the tensors go to disk one by one and the sha256 of the file is computed on the way.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from .architecture import CheckpointFormatError
from .loader import read_state_dict

DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
               torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class TensorMeta:
    """What a header says about a tensor (all the architecture checks need; nothing is read)."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point


class SafetensorsSource:
    """A `.safetensors` file opened for reading single tensors (`get`) after its header (`metas`, `metadata`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self._read_header()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            os.close(self._fd)
            raise CheckpointFormatError(f"{self.path.name}: corrupt or truncated safetensors file ({exc})") from None

    def _read_header(self) -> None:
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, 8, 0)
        if len(head) < 8:
            raise ValueError("file too small for a header")
        header_size = int.from_bytes(head, "little")
        if header_size <= 0 or 8 + header_size > size:
            raise ValueError(f"header length {header_size} does not fit in a {size}-byte file")
        header = json.loads(os.pread(self._fd, header_size, 8))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        self._base = 8 + header_size
        metadata = header.pop(METADATA_KEY, None) or {}
        self.metadata: dict[str, str] = {str(k): str(v) for k, v in metadata.items()} \
            if isinstance(metadata, dict) else {}
        self._offsets: dict[str, tuple[int, int]] = {}
        self.metas: dict[str, TensorMeta] = {}
        for key, entry in header.items():
            begin, end = (int(v) for v in entry["data_offsets"])
            meta = TensorMeta(tuple(int(d) for d in entry["shape"]), DTYPES[entry["dtype"]])
            if not 0 <= begin <= end or self._base + end > size or end - begin != meta.nbytes:
                raise ValueError(f"tensor {key} lies beyond the end of the file or has the wrong size")
            self._offsets[key] = (begin, end)
            self.metas[key] = meta

    def get(self, key: str) -> torch.Tensor:
        """The tensor, in memory of its own (not tied to the file)."""
        begin, end = self._offsets[key]
        meta = self.metas[key]
        raw = torch.empty(end - begin, dtype=torch.uint8)
        view, done = memoryview(raw.numpy()), 0
        while done < end - begin:
            got = os.preadv(self._fd, [view[done:]], self._base + begin + done)
            if got <= 0:
                raise CheckpointFormatError(f"{self.path.name}: tensor {key} is cut short (was the file changed?)")
            done += got
        return raw.view(meta.dtype).reshape(meta.shape)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StateDictSource:
    """A `.ckpt` (weights-only unpickler, tensors mapped from the file where its format allows) with the same
    interface as `SafetensorsSource`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._state = read_state_dict(self.path, private=False)
        self.metadata: dict[str, str] = {}
        self.metas = {key: TensorMeta(tuple(value.shape), value.dtype) for key, value in self._state.items()}

    def get(self, key: str) -> torch.Tensor:
        return self._state[key]

    def close(self) -> None:
        self._state = {}


def open_source(path: Path) -> SafetensorsSource | StateDictSource:
    """A single-file checkpoint opened for tensor-by-tensor reading (CheckpointFormatError when unreadable)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        try:
            return SafetensorsSource(path)
        except OSError as exc:
            raise CheckpointFormatError(f"{path.name}: cannot read the file ({exc.strerror or exc})") from None
    return StateDictSource(path)


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's raw little-endian bytes, without a copy when it is contiguous."""
    flat = tensor.detach().reshape(-1).contiguous()
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    return memoryview(flat.numpy()).cast("B")


class SafetensorsWriter:
    """Writes a `.safetensors` file whose tensors (`layout`: name -> TensorMeta, in file order) arrive one by one.

    The header comes first, so each tensor can be written and dropped as soon as it exists; `finish()` checks that
    every tensor came and returns the sha256 of the whole file."""

    def __init__(self, stream: BinaryIO, layout: dict[str, TensorMeta], metadata: dict[str, str] | None = None):
        self._stream = stream
        self._layout = list(layout.items())
        self._next = 0
        self._sha = hashlib.sha256()
        header: dict = {}
        if metadata:
            header[METADATA_KEY] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        for key, meta in self._layout:
            header[key] = {"dtype": DTYPE_NAMES[meta.dtype], "shape": list(meta.shape),
                           "data_offsets": [offset, offset + meta.nbytes]}
            offset += meta.nbytes
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        text += b" " * (-(8 + len(text)) % 8)  # the data starts 8-byte aligned, as safetensors' own writer does
        self._emit(len(text).to_bytes(8, "little"))
        self._emit(text)

    def _emit(self, data) -> None:
        self._sha.update(data)
        self._stream.write(data)

    def write(self, key: str, tensor: torch.Tensor) -> None:
        expected_key, meta = self._layout[self._next]
        if key != expected_key or tuple(tensor.shape) != meta.shape or tensor.dtype != meta.dtype:
            raise ValueError(f"tensor {key} {tuple(tensor.shape)} {tensor.dtype} does not match the header's "
                             f"{expected_key} {meta.shape} {meta.dtype}")
        self._emit(tensor_bytes(tensor))
        self._next += 1

    def finish(self) -> str:
        if self._next != len(self._layout):
            raise ValueError(f"only {self._next} of {len(self._layout)} tensors were written")
        self._stream.flush()
        return self._sha.hexdigest()
