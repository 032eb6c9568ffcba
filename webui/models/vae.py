"""VAE files: the `models/VAE` listing, choosing one for a checkpoint (A1111's `sd_vae` setting), and swapping a
loaded model's VAE weights in place.

Files come in the LDM layout (`encoder.down.0.block.0...`, possibly under `first_stage_model.`), the diffusers layout
(`encoder.down_blocks...`), or as `.pt`/`.ckpt` with a `state_dict` (read with the weights-only unpickler). The
checkpoint's own VAE is kept as a CPU copy the first time it is replaced, so choosing "None" restores it exactly.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from ..core.errors import UserError
from .architecture import CheckpointFormatError
from .folders import walk_folder
from .hashing import HashCache, file_signature
from .loader import read_state_dict
from .registry import UnknownCheckpointError

log = logging.getLogger(__name__)

HASH_KIND = "vae"
VAE_EXTENSIONS = (".pt", ".ckpt", ".safetensors")
BESIDE_CHECKPOINT = (".vae.pt", ".vae.ckpt", ".vae.safetensors")  # A1111's search order
AUTOMATIC, NONE = "Automatic", "None"
_PREFIXES = ("first_stage_model.", "vae.")
_DROPPED = ("loss.", "model_ema.")  # training leftovers in some VAE files
_DIFFUSERS_MARKERS = ("encoder.down_blocks.", "decoder.up_blocks.", "encoder.mid_block.", "decoder.mid_block.")
_LDM_MARKERS = ("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_SWAP_ATTR = "_webui_vae_swap"


class UnknownVaeError(UnknownCheckpointError):
    """The `sd_vae` setting names no VAE file; the message lists the choices (HTTP 400)."""

    kind = "UnknownVaeError"

    def __init__(self, query: str, available: Iterable[str]):
        super().__init__(query, list(available), "VAE")


class VaeLoadError(UserError, RuntimeError):
    """A VAE file could not be applied; the message names the file and what is wrong. The model's VAE is unchanged
    (HTTP 400, as a checkpoint that does not load)."""

    status = 400
    kind = "VaeLoadError"


@dataclass
class VaeInfo:
    name: str  # as shown in the settings dropdown
    path: Path
    hash_cache: HashCache = field(repr=False, compare=False)

    @property
    def filename(self) -> str:
        """The bare file name (what A1111 writes as `VAE` in infotext)."""
        return self.path.name

    @property
    def sha256(self) -> str:
        return self.hash_cache.get_or_compute(self.path, HASH_KIND)

    @property
    def shorthash(self) -> str:
        """The `VAE hash` infotext value: sha256 of the file, first 10 hex."""
        return self.sha256[:10]


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _vae_stem(filename: str) -> str:
    """`x.vae.safetensors` -> `x`; `x.pt` -> `x`."""
    stem = os.path.splitext(filename)[0]
    return stem[:-4] if stem.lower().endswith(".vae") else stem


def _walk_files(root: Path, wanted) -> list[Path]:
    return [folder / fn for folder, _, filenames in walk_folder(root) for fn in filenames if wanted(fn.lower())]


class VaeRegistry:
    """VAE files in `vae_root` (named by their path relative to it), plus `<name>.vae.*` files found under
    `checkpoint_roots` (named by their file name), as A1111 lists them."""

    def __init__(self, vae_root: Path, hash_cache: HashCache, checkpoint_roots: Iterable[Path] = ()):
        self.root = Path(vae_root)
        self.checkpoint_roots = [Path(r) for r in checkpoint_roots]
        self.hash_cache = hash_cache
        self._lock = threading.RLock()
        self._entries: list[VaeInfo] | None = None

    def refresh(self) -> None:
        entries: dict[str, VaeInfo] = {}
        for path in _walk_files(self.root, lambda low: low.endswith(VAE_EXTENSIONS)):
            name = path.relative_to(self.root).as_posix()
            entries[name] = VaeInfo(name, path, self.hash_cache)
        for root in self.checkpoint_roots:
            for path in _walk_files(root, lambda low: low.endswith(BESIDE_CHECKPOINT)):
                entries.setdefault(path.name, VaeInfo(path.name, path, self.hash_cache))
        with self._lock:
            self._entries = sorted(entries.values(), key=lambda info: _natural_key(info.name))

    def list(self) -> list[VaeInfo]:
        with self._lock:
            if self._entries is None:
                self.refresh()
            return list(self._entries)

    def names(self) -> list[str]:
        return [info.name for info in self.list()]

    def find(self, query: str) -> VaeInfo | None:
        """A VAE by dropdown name, bare file name or stem (exact case first)."""
        query = query.strip().replace("\\", "/")
        entries = self.list()
        keys = (lambda i: i.name, lambda i: i.filename, lambda i: _vae_stem(i.filename),
                lambda i: _vae_stem(i.name))
        for fold in (str, str.lower):
            for key in keys:
                for info in entries:
                    if fold(key(info)) == fold(query):
                        return info
        return None

    def choose(self, setting: str, checkpoint_path: Path | None) -> VaeInfo | None:
        """The VAE to use with `checkpoint_path` under the `sd_vae` setting; None means the checkpoint's own.

        Without a checkpoint, "Automatic" gives None (this also just validates a setting)."""
        setting = (setting or AUTOMATIC).strip()
        if setting.lower() == NONE.lower():
            return None
        if setting.lower() in (AUTOMATIC.lower(), "auto"):
            return self._automatic(Path(checkpoint_path)) if checkpoint_path is not None else None
        found = self.find(setting)
        if found is None:
            raise UnknownVaeError(setting, [AUTOMATIC, NONE, *self.names()])
        return found

    def _automatic(self, checkpoint: Path) -> VaeInfo | None:
        stem = checkpoint.name if checkpoint.is_dir() else checkpoint.stem
        for suffix in BESIDE_CHECKPOINT:
            beside = checkpoint.parent / f"{stem}{suffix}"
            if beside.is_file():
                known = next((i for i in self.list() if i.path == beside), None)
                return known or VaeInfo(beside.name, beside, self.hash_cache)
        matches = [i for i in self.list() if i.path.is_relative_to(self.root) and _vae_stem(i.filename) == stem]
        matches.sort(key=lambda i: (i.name.count("/"), _natural_key(i.name)))  # the folder's own files first
        return matches[0] if matches else None


# --- reading a VAE file ----------------------------------------------------------------------------------------

def _levels(keys: Iterable[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def read_vae_weights(path: Path, config) -> dict[str, torch.Tensor]:
    """The tensors of a VAE file, named as diffusers' AutoencoderKL (with `config`) names them."""
    try:
        state = read_state_dict(path, private=True)
    except CheckpointFormatError as exc:
        raise VaeLoadError(f"VAE {exc}") from None
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in state):  # also takes the VAE out of a whole checkpoint
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not k.startswith(_DROPPED)}
    if any(k.startswith(_DIFFUSERS_MARKERS) for k in state):
        renamed = {}
        for key, value in state.items():
            head, _, tail = key.rpartition(".")
            module_path, _, leaf = head.rpartition(".")
            if ".attentions." in key and leaf in _OLD_ATTENTION_NAMES:
                key = f"{module_path}.{_OLD_ATTENTION_NAMES[leaf]}.{tail}"
                if value.ndim == 4 and value.shape[2:] == (1, 1):  # saved as 1x1 convolutions
                    value = value[:, :, 0, 0]
            renamed[key] = value
        return renamed
    if any(k.startswith(_LDM_MARKERS) for k in state):
        levels = _levels(state, r"encoder\.down\.(\d+)\.")
        wanted = len(config["down_block_types"])
        if levels != wanted:
            raise VaeLoadError(f"VAE {path.name}: its encoder has {levels} levels; this model's VAE has {wanted}")
        return convert_ldm_vae_checkpoint(state, config)
    sample = ", ".join(list(state)[:3]) or "no tensors"
    raise VaeLoadError(f"VAE {path.name}: not a VAE (no encoder/decoder tensors in the LDM or diffusers layout; "
                       f"found {sample})")


def probe_vae_file(path: Path) -> None:
    """Read a VAE file to check it is one (when no checkpoint is loaded to apply it to); VaeLoadError naming the
    file otherwise."""
    try:
        state = read_state_dict(Path(path), private=True)
    except CheckpointFormatError as exc:
        raise VaeLoadError(f"VAE {exc}") from None
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    if not any(k.startswith(_DIFFUSERS_MARKERS + _LDM_MARKERS) for k in state):
        sample = ", ".join(list(state)[:3]) or "no tensors"
        raise VaeLoadError(f"VAE {Path(path).name}: not a VAE (no encoder/decoder tensors in the LDM or diffusers "
                           f"layout; found {sample})")


def _check_fits(weights: dict[str, torch.Tensor], live: dict[str, torch.Tensor], filename: str) -> None:
    for key, tensor in live.items():
        if key not in weights:
            raise VaeLoadError(f"VAE {filename} does not fit this model's VAE: it has no tensor {key}")
        have = weights[key]
        if not isinstance(have, torch.Tensor) or not have.is_floating_point():
            raise VaeLoadError(f"VAE {filename}: tensor {key} is not floating point")
        if tuple(have.shape) != tuple(tensor.shape):
            raise VaeLoadError(f"VAE {filename} does not fit this model's VAE: {key} is {list(have.shape)} in the "
                               f"file but {list(tensor.shape)} in the model")
    extra = [k for k in weights if k not in live]
    if extra:
        raise VaeLoadError(f"VAE {filename} does not fit this model's VAE: it has tensor {extra[0]}, which the "
                           f"model's VAE does not")


# --- swapping weights in place -------------------------------------------------------------------------------------

def _offloaded_weights(module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Where accelerate's sequential CPU offload keeps the real tensors of a module whose parameters are on `meta`."""
    for sub in module.modules():
        hook = getattr(sub, "_hf_hook", None)
        for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
            weights_map = getattr(h, "weights_map", None)
            store = getattr(weights_map, "dataset", weights_map)
            if isinstance(store, dict):
                return store
    return None


def _live_tensors(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that hold the VAE's weights right now (parameters, or the offload store for meta ones)."""
    live = {k: v for k, v in vae.state_dict(keep_vars=True).items()}
    if any(t.is_meta for t in live.values()):
        store = _offloaded_weights(vae) or {}
        for key, tensor in live.items():
            if tensor.is_meta:
                if key not in store:
                    raise VaeLoadError(f"the VAE's tensor {key} is offloaded where it cannot be replaced")
                live[key] = store[key]
    return {k: v.data if isinstance(v, torch.nn.Parameter) else v for k, v in live.items()}


@torch.no_grad()
def _copy_into(live: dict[str, torch.Tensor], source: dict[str, torch.Tensor]) -> None:
    for key, tensor in live.items():
        tensor.copy_(source[key])


@dataclass
class _Swap:
    original: dict[str, torch.Tensor]  # the checkpoint's own VAE, on the CPU
    applied: tuple | None = None  # (path, mtime, size) of the file now in the VAE


class VaeCache:
    """VAE files read recently, kept in RAM (A1111's "VAE Checkpoints to cache in RAM"); 0 keeps none."""

    def __init__(self, size: int = 1):
        self.size = max(0, int(size))
        self._items: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> dict[str, torch.Tensor] | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: tuple, weights: dict[str, torch.Tensor]) -> None:
        with self._lock:
            self._items[key] = weights
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def apply_vae(model, info: VaeInfo | None, cache: VaeCache | None = None) -> None:
    """Put `info`'s weights into `model.vae` (same module, device and dtype); None restores the checkpoint's own.

    Raises VaeLoadError when the file cannot be read or does not fit; the model's VAE is then unchanged."""
    vae = model.vae
    swap: _Swap | None = getattr(vae, _SWAP_ATTR, None)
    if info is None:
        if model.vae_file is not None and swap is not None:
            _copy_into(_live_tensors(vae), swap.original)
            swap.applied = None
        model.vae_file = None
        return
    path = Path(info.path)
    try:
        mtime, size = file_signature(path)
    except OSError as exc:
        raise VaeLoadError(f"VAE {path.name}: cannot read the file ({exc.strerror or exc})") from None
    signature = (str(path.absolute()), mtime, size)
    if model.vae_file == path and swap is not None and swap.applied == signature:
        return
    live = _live_tensors(vae)
    key = (*signature, len(vae.config.down_block_types))
    weights = cache.get(key) if cache is not None else None
    if weights is None:
        try:
            weights = read_vae_weights(path, vae.config)
        except VaeLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - a file with odd tensors must be a message naming it, not a crash
            log.exception("unexpected error reading VAE %s", path.name)
            raise VaeLoadError(f"VAE {path.name}: could not read it ({type(exc).__name__}: {exc})") from None
    _check_fits(weights, live, path.name)
    if cache is not None and cache.size:
        cache.put(key, weights)
    if model.vae_file is None or swap is None:  # the VAE holds the checkpoint's own weights: keep them
        swap = _Swap({k: t.detach().to("cpu", copy=True) for k, t in live.items()})
        object.__setattr__(vae, _SWAP_ATTR, swap)
    _copy_into(live, weights)
    swap.applied = signature
    model.vae_file = path
    log.info("VAE %s applied to %s", info.name, model.name)
