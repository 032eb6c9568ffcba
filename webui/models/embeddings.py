"""Textual-inversion embeddings from the `embeddings/` folder (and its subfolders).

An embedding is used by writing its name in a prompt: the file's base name, or for an image-embedded one the name
stored inside it (as A1111 does). Formats: A1111 `.pt` (`string_to_param`), `.safetensors` (`emb_params`, or
`clip_l` + `clip_g` for SDXL), diffusers `.bin` (`{"<token>": tensor}`), and images carrying the embedding (see
`embedding_png`). `.pt`/`.bin` files are read with torch's weights-only unpickler: files that need arbitrary Python
objects are refused. Files that cannot be read are listed in `errors` and never raise.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes

from .embedding_png import EmbeddedDataError, read_image_embedding
from .folders import walk_folder
from .hashing import HashCache, file_signature

log = logging.getLogger(__name__)

HASH_KIND = "textual_inversion"
TENSOR_FILES = (".pt", ".bin", ".safetensors")
IMAGE_FILES = (".png", ".webp")
PREVIEW_SUFFIXES = tuple(f"{middle}{ext}" for middle in ("", ".preview") for ext in (".png", ".jpg", ".jpeg", ".webp"))
SINGLE = "*"  # the key of `Embedding.vectors` for a one-text-encoder embedding (A1111's placeholder string)
SDXL_KEYS = ("clip_l", "clip_g")


def _sdxl_keys(model) -> tuple[str, ...]:
    """The SDXL embedding vectors each text encoder of `model` takes: the refiner has OpenCLIP G alone."""
    return ("clip_g",) if getattr(model, "sdxl_refiner", False) else SDXL_KEYS


class EmbeddingFileError(ValueError):
    """A file in the embeddings folder is not a usable embedding; the message says why."""


def encoder_width(encoder: torch.nn.Module) -> int:
    """The token-embedding width of a text encoder (768 for SD1, 1024 for SD2, 768 / 1280 for SDXL's pair)."""
    get = getattr(encoder, "get_input_embeddings", None)
    weights = get() if callable(get) else None
    if weights is not None and getattr(weights, "weight", None) is not None:
        return int(weights.weight.shape[1])
    return int(encoder.config.hidden_size)


@dataclass(eq=False)
class Embedding:
    """One loaded embedding. `vectors`: float32 CPU tensors [n, width], keyed `clip_l`/`clip_g` (SDXL) or `*`."""

    name: str
    path: Path
    filename: str  # the path relative to the embeddings folder, posix style
    vectors: dict[str, torch.Tensor]
    hash_cache: HashCache = field(repr=False)
    step: int | None = None
    checkpoint: str | None = None  # sd_checkpoint_name: the checkpoint it was trained on
    checkpoint_hash: str | None = None  # sd_checkpoint
    embedded_in_image: bool = False
    _placed: dict = field(default_factory=dict, init=False, repr=False)  # vectors_for results by device/dtype

    @property
    def is_sdxl(self) -> bool:
        return set(self.vectors) == set(SDXL_KEYS)

    @property
    def vector_count(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def shape(self) -> int:
        """A1111's `shape`: the vector width (SDXL: clip_l + clip_g widths)."""
        return sum(int(v.shape[1]) for v in self.vectors.values())

    @property
    def sha256(self) -> str:
        return self.hash_cache.get_or_compute(self.path, HASH_KIND)

    @property
    def shorthash(self) -> str:
        """The `TI hashes` infotext value: sha256 of the file, first 12 hex."""
        return self.sha256[:12]

    @property
    def preview(self) -> Path | None:
        if self.embedded_in_image:
            return self.path
        base = self.path.with_suffix("")
        for suffix in PREVIEW_SUFFIXES:
            candidate = base.with_name(base.name + suffix)
            if candidate.is_file():
                return candidate
        return None

    def incompatibility(self, model) -> str | None:
        """Why this embedding cannot be used with `model` (a LoadedModel), or None when it can."""
        widths = [encoder_width(e) for e in model.text_encoders]
        if model.family == "sdxl":
            if not self.is_sdxl:
                width = self.shape
                return (f"made for a single text encoder of width {width} (SD1/SD2); SDXL checkpoints need "
                        f"clip_l and clip_g vectors")
            for key, width in zip(_sdxl_keys(model), widths):
                have = int(self.vectors[key].shape[1])
                if have != width:
                    return f"its {key} vectors have width {have}; this checkpoint's {key} text encoder is {width}"
            return None
        if self.is_sdxl:
            return "an SDXL embedding (clip_l + clip_g); this checkpoint is not SDXL"
        if self.shape != widths[0]:
            return f"made for a text encoder of width {self.shape}; this checkpoint's is {widths[0]}"
        return None

    def vectors_for(self, model, encoder_index: int) -> torch.Tensor:
        """[n, width] for text encoder `encoder_index` of `model`, on that encoder's device and in its dtype."""
        reason = self.incompatibility(model)
        if reason:
            raise ValueError(f"embedding {self.name}: {reason}")
        if self.is_sdxl:
            keys = _sdxl_keys(model)
            if encoder_index not in range(len(keys)):
                raise IndexError(f"embedding {self.name}: this SDXL checkpoint has {len(keys)} text encoders, not "
                                 f"{encoder_index + 1}")
            key = keys[encoder_index]
        elif encoder_index != 0:
            raise IndexError(f"embedding {self.name}: this model has one text encoder, not {encoder_index + 1}")
        else:
            key = SINGLE
        weight = model.text_encoders[encoder_index].get_input_embeddings().weight
        device = torch.device("cpu") if weight.is_meta else weight.device  # offloaded: weights live on the CPU
        slot = (key, device, weight.dtype)
        if slot not in self._placed:
            self._placed[slot] = self.vectors[key].to(device=device, dtype=weight.dtype)
        return self._placed[slot]


# --- reading one file ------------------------------------------------------------------------------------------

def _as_vectors(value, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise EmbeddingFileError(f"{what} is a {type(value).__name__}, not a tensor")
    if not value.is_floating_point():
        raise EmbeddingFileError(f"{what} holds {value.dtype} values, not floating point")
    if value.ndim == 1:
        value = value.unsqueeze(0)
    if value.ndim != 2 or value.shape[0] == 0 or value.shape[1] == 0:
        raise EmbeddingFileError(f"{what} has shape {list(value.shape)}; expected [vectors, width]")
    return value.detach().to(torch.float32).contiguous().clone()


def _vectors_from_data(data) -> dict[str, torch.Tensor]:
    """The vectors of an embedding document, whichever of the known layouts it uses."""
    if not isinstance(data, dict):
        raise EmbeddingFileError(f"holds a {type(data).__name__}, not an embedding dict")
    if "string_to_param" in data:  # A1111
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            count = len(params) if isinstance(params, dict) else "no"
            raise EmbeddingFileError(f"string_to_param holds {count} terms; an embedding file holds exactly one")
        return {SINGLE: _as_vectors(next(iter(params.values())), "string_to_param")}
    if "clip_l" in data and "clip_g" in data:  # SDXL
        vectors = {key: _as_vectors(data[key], key) for key in SDXL_KEYS}
        counts = {key: int(v.shape[0]) for key, v in vectors.items()}
        if counts["clip_l"] != counts["clip_g"]:
            raise EmbeddingFileError(f"clip_l has {counts['clip_l']} vectors but clip_g {counts['clip_g']}")
        return vectors
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:  # emb_params, or a diffusers concept {"<token>": tensor}
        key, value = next(iter(tensors.items()))
        return {SINGLE: _as_vectors(value, repr(key))}
    if tensors:
        raise EmbeddingFileError(f"holds {len(tensors)} tensors ({', '.join(list(tensors)[:4])}); an embedding "
                                 "file holds one (or clip_l and clip_g)")
    raise EmbeddingFileError("not a textual-inversion embedding (no string_to_param, emb_params, clip_l/clip_g "
                             "or token tensor)")


def _torch_load(path: Path):
    """A `.pt`/`.bin` through the weights-only unpickler. torch 1.11-era A1111 files keep `string_to_param` as a
    ParameterDict, a container of tensors that is allowed by name (and read as a plain dict)."""
    try:
        with torch.serialization.safe_globals([torch.nn.ParameterDict]):
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found is None:  # not a pickle of anything: junk or a damaged file
            problem = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            detail = problem.group(1).strip() if problem else _short(exc)
            raise EmbeddingFileError(f"not a readable PyTorch file ({detail})") from None
        raise EmbeddingFileError(
            f"contains Python objects besides tensors (it needs {found.group(1)}); unpickling them could run "
            "arbitrary code, so it was refused. Re-save it as .safetensors") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds (IndexError, RuntimeError...) on junk
        raise EmbeddingFileError(f"not a readable PyTorch file ({_short(exc)})") from None
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), torch.nn.ParameterDict):
        data = {**data, "string_to_param": dict(data["string_to_param"].items())}
    return data


def _short(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's run to paragraphs)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.split(". ")[0][:200]


def read_embedding_file(path: Path, filename: str, hash_cache: HashCache) -> Embedding | None:
    """The embedding in `path`, None for an image that holds none. Raises EmbeddingFileError with the reason."""
    suffix = path.suffix.lower()
    name = path.stem
    in_image = suffix in IMAGE_FILES
    if in_image:
        try:
            data = read_image_embedding(path)
        except EmbeddedDataError as exc:
            raise EmbeddingFileError(str(exc)) from None
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for unreadable images
            raise EmbeddingFileError(f"not a readable image ({_short(exc)})") from None
        if data is None:
            return None
        if isinstance(data.get("name"), str) and data["name"].strip():
            name = data["name"].strip()
    elif suffix == ".safetensors":
        try:
            data = load_safetensors_bytes(path.read_bytes())
        except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
            raise EmbeddingFileError(f"corrupt or truncated safetensors file ({_short(exc)})") from None
    else:
        data = _torch_load(path)
    vectors = _vectors_from_data(data)
    step = data.get("step")
    embedding = Embedding(
        name=name, path=path, filename=filename, vectors=vectors, hash_cache=hash_cache,
        step=step if isinstance(step, int) and not isinstance(step, bool) else None,
        checkpoint=data.get("sd_checkpoint_name") if isinstance(data.get("sd_checkpoint_name"), str) else None,
        checkpoint_hash=data.get("sd_checkpoint") if isinstance(data.get("sd_checkpoint"), str) else None,
        embedded_in_image=in_image)
    return embedding


# --- the folder ----------------------------------------------------------------------------------------------------

@dataclass
class _FileResult:
    signature: tuple[float, int]
    embedding: Embedding | None
    error: str | None


def _candidate(filename: str) -> bool:
    low = filename.lower()
    if filename.startswith("."):
        return False
    if low.endswith(IMAGE_FILES):
        return os.path.splitext(os.path.splitext(low)[0])[1] != ".preview"
    return low.endswith(TENSOR_FILES)


class EmbeddingDatabase:
    """The embeddings under `root`. Call `refresh()` before each use; it rereads only files that changed."""

    def __init__(self, root: Path, hash_cache: HashCache):
        self.root = Path(root)
        self.hash_cache = hash_cache
        self._lock = threading.RLock()
        self._refresh_lock = threading.Lock()
        self._listing: list[tuple[str, tuple[float, int]]] | None = None
        self._files: dict[str, _FileResult] = {}
        self._embeddings: dict[str, Embedding] = {}
        self._errors: dict[str, str] = {}

    def _scan(self) -> list[tuple[str, Path, tuple[float, int]]]:
        """(relative name, path, signature) of candidate files: the folder's own files, then subfolders by name."""
        found = []
        for folder, _, filenames in walk_folder(self.root):
            for fn in filenames:
                if not _candidate(fn):
                    continue
                path = folder / fn
                try:
                    signature = file_signature(path)
                except OSError:
                    continue  # vanished while scanning
                if signature[1] == 0:  # empty: being copied, or a placeholder (A1111 skips these too)
                    continue
                found.append((path.relative_to(self.root).as_posix(), path, signature))
        return found

    def refresh(self, force: bool = False) -> None:
        with self._refresh_lock:
            scanned = self._scan()
            listing = [(rel, sig) for rel, _, sig in scanned]
            if not force and listing == self._listing:
                return
            files: dict[str, _FileResult] = {}
            for rel, path, signature in scanned:
                known = self._files.get(rel)
                if known is not None and known.signature == signature and not force:
                    files[rel] = known
                    continue
                try:
                    files[rel] = _FileResult(signature, read_embedding_file(path, rel, self.hash_cache), None)
                except EmbeddingFileError as exc:
                    files[rel] = _FileResult(signature, None, str(exc))
                except Exception as exc:  # noqa: BLE001 - one odd file must not stop the others
                    log.exception("unexpected error reading embedding %s", path)
                    files[rel] = _FileResult(signature, None, f"could not be read ({type(exc).__name__}: {exc})")
            embeddings: dict[str, Embedding] = {}
            errors: dict[str, str] = {}
            for rel, result in files.items():
                if result.error is not None:
                    errors[rel] = result.error
                    if self._errors.get(rel) != result.error:  # say it once, not on every refresh
                        log.warning("embedding %s: %s", rel, result.error)
                elif result.embedding is not None:
                    first = embeddings.get(result.embedding.name)
                    if first is not None:
                        errors[rel] = (f"another embedding named '{first.name}' was loaded first from "
                                       f"{first.filename}; this file is ignored")
                    else:
                        embeddings[result.embedding.name] = result.embedding
            with self._lock:
                self._listing = listing
                self._files = files
                self._embeddings = dict(sorted(embeddings.items(), key=lambda item: item[0].lower()))
                self._errors = errors

    def all(self) -> dict[str, Embedding]:
        with self._lock:
            return dict(self._embeddings)

    @property
    def errors(self) -> dict[str, str]:
        """Files that could not be used: relative file name -> reason."""
        with self._lock:
            return dict(self._errors)

    def for_model(self, model) -> tuple[dict[str, Embedding], dict[str, str]]:
        """(embeddings usable with `model`, skipped name -> reason)."""
        usable, skipped = {}, {}
        for name, embedding in self.all().items():
            reason = embedding.incompatibility(model)
            if reason is None:
                usable[name] = embedding
            else:
                skipped[name] = reason
        return usable, skipped
