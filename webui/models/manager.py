"""The model manager: which checkpoints exist, which is selected, and an LRU cache of loaded ones.

Loading happens on the job worker's thread (between jobs), never during a running generation.
"""
from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from pathlib import Path

from ..core.errors import UserError
from .architecture import CheckpointFormatError
from .devices import DevicePolicy
from .load_progress import LoadStatus
from .loader import LoadedModel, load_checkpoint
from .registry import CheckpointInfo, CheckpointRegistry, UnknownCheckpointError
from .vae import apply_vae, probe_vae_file

log = logging.getLogger(__name__)


class ModelLoadError(UserError, RuntimeError):
    """A checkpoint could not be loaded; the message names the file and why. The previous model stays active
    (HTTP 400)."""

    status = 400
    kind = "ModelLoadError"


class ModelManager:
    """Checkpoints (loaded on demand, LRU-cached) and the add-ons patched onto them per run: LoRAs
    (`loras`), textual inversion embeddings (`embeddings`) and VAE files (`vaes`)."""

    def __init__(self, registry: CheckpointRegistry, policy: DevicePolicy, cache_dir: Path, options,
                 loras=None, embeddings=None, vaes=None):
        self.registry = registry
        self.loras = loras
        self.embeddings = embeddings
        self.vaes = vaes
        self.policy = policy
        self.cache_dir = cache_dir
        self.options = options
        self._loaded: OrderedDict[str, tuple[CheckpointInfo, LoadedModel]] = OrderedDict()
        self._current: str | None = None
        self._lock = threading.RLock()
        self.on_loaded: list = []  # listeners called with (info, model) after a checkpoint loads (extensions)
        self._loading: LoadStatus | None = None
        # () -> flux_assembly.SeparateParts: where FLUX.1 checkpoints' separate VAE / text encoders come from
        # (Forge's "VAE / Text Encoder" choice); set by services
        self.separate_parts = None

    # --- listings ---------------------------------------------------------------------------------------------
    def checkpoints(self) -> list[CheckpointInfo]:
        return self.registry.list()

    def refresh(self) -> None:
        self.registry.refresh()

    def resolve(self, query: str) -> CheckpointInfo:
        return self.registry.resolve(query)

    @property
    def current(self) -> tuple[CheckpointInfo, LoadedModel] | None:
        with self._lock:
            return self._loaded.get(self._current) if self._current else None

    def current_title(self) -> str | None:
        current = self.current
        return current[0].title if current else None

    @property
    def loading(self) -> LoadStatus | None:
        """The load in progress (name, fraction, stage), read from any thread without waiting; None when idle."""
        return self._loading

    def loaded_titles(self) -> list[str]:
        with self._lock:
            return [info.title for info, _ in self._loaded.values()]

    def held(self) -> list[CheckpointInfo]:
        """The checkpoints loaded, the current one first, then the others from the most recently used."""
        with self._lock:
            entries = [info for info, _ in reversed(list(self._loaded.values()))]
            current = self._current
        return sorted(entries, key=lambda info: str(info.path) != current)

    # --- loading ----------------------------------------------------------------------------------------------
    def get(self, query: str | None = None, modules: list | None = None) -> tuple[CheckpointInfo, LoadedModel]:
        """The checkpoint for `query` (None: the selected one, or the first available), loading it if needed.
        `modules`: a job's own "VAE / Text Encoder" choice (its override_settings), else the setting's."""
        with self._lock:
            if query is None and self._current is not None:
                key = self._current
                if self._loaded[key][1].parts_key == self._parts_key(self._loaded[key][1], modules):
                    self._loaded.move_to_end(key)
                    return self._loaded[key]
                query = self._loaded[key][0].name
            if query is None:
                remembered = self.options.get("sd_model_checkpoint") or None
                try:  # the checkpoint selected last time, if it is still there
                    query = self.registry.resolve(remembered).name if remembered else None
                except UnknownCheckpointError:
                    log.warning("the last selected checkpoint %r is gone; using the first one found", remembered)
            if query is None:
                available = self.registry.list()
                if not available:
                    raise ModelLoadError(
                        f"No checkpoint found. Put a .safetensors or .ckpt file (or a diffusers folder) in "
                        f"{', '.join(str(r) for r in self.registry.roots)} and press refresh.")
                query = available[0].name
            info = self.registry.resolve(query)
            key = str(info.path)
            if key in self._loaded and \
                    self._loaded[key][1].parts_key != self._parts_key(self._loaded[key][1], modules):
                self._drop(key)  # loaded with another "VAE / Text Encoder" choice
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            return self._load(info, modules)

    def _parts(self, modules: list | None = None):
        return self.separate_parts(modules) if self.separate_parts is not None else None

    def _parts_key(self, model: LoadedModel, modules: list | None = None) -> tuple[str, ...]:
        """The choice a loaded model should have been loaded with: only checkpoints with separate parts care."""
        if not model.part_names and not model.parts_key:
            return model.parts_key
        parts = self._parts(modules)
        return parts.key if parts is not None else ()

    def _drop(self, key: str) -> None:
        current = self._current == key
        self.forget(Path(key))
        gc.collect()
        if current:  # still the selected checkpoint: loaded again with the new parts
            self._current = None

    def select(self, query: str) -> tuple[CheckpointInfo, LoadedModel]:
        """Make `query` the current checkpoint (loading it, or taking it from the cache)."""
        with self._lock:
            info, model = self.get(query)
            self._current = str(info.path)
            self._evict(reserve=0)
            self.options.update({"sd_model_checkpoint": info.title})
            return info, model

    def _load(self, info: CheckpointInfo, modules: list | None = None) -> tuple[CheckpointInfo, LoadedModel]:
        """Load into the cache. The current model stays loaded until the new one has loaded successfully."""
        log.info("loading checkpoint %s", info.name)
        self._evict(reserve=1)
        self._loading = LoadStatus(info.name, 0.0, "starting")
        try:
            try:
                model = load_checkpoint(info.path, self.policy, self.cache_dir, info.config, info.name,
                                        on_progress=self._set_loading, parts=self._parts(modules))
            except CheckpointFormatError as exc:
                raise ModelLoadError(str(exc)) from None
            except MemoryError:
                raise ModelLoadError(f"{info.name}: not enough memory to load this checkpoint") from None
            except UserError:  # said as it is (a pool worker refusing a separate file it does not share)
                raise
            except Exception as exc:  # a loader bug must not take the server down; say what happened
                log.exception("unexpected error loading %s", info.name)
                raise ModelLoadError(f"{info.name}: could not load ({type(exc).__name__}: {exc})") from None
            if not info.sha256:  # the title's short hash: the file is read once more unless the hasher got there
                self._loading = LoadStatus(info.name, 1.0, "calculating the sha256")
            info.sha256 = self.registry.ensure_hash(info)
        finally:
            self._loading = None
        self._loaded[str(info.path)] = (info, model)
        if self._current is None:
            self._current = str(info.path)
        self._evict(reserve=0)
        log.info("loaded %s (%s) in %.1fs", info.name, model.label, model.load_seconds)
        for listener in list(self.on_loaded):
            try:
                listener(info, model)
            except Exception:  # a listener (an extension's callback) never undoes a load
                log.exception("a model-loaded listener failed")
        return info, model

    def use_vae(self, setting: str) -> None:
        """Apply an `sd_vae` setting now (a settings change, between jobs): to the current checkpoint, or with none
        loaded, read the file to check it is a VAE. UnknownVaeError / VaeLoadError name the file, and the VAE in
        use stays what it was."""
        if self.vaes is None:
            return
        with self._lock:
            self.vaes.refresh()
            current = self.current
            info = self.vaes.choose(setting, current[0].path if current is not None else None)
            if current is not None:
                apply_vae(current[1], info)
            elif info is not None:
                probe_vae_file(info.path)

    def _set_loading(self, status: LoadStatus) -> None:
        self._loading = status

    def trim(self) -> None:
        """Back within the cache's limits after a run borrowed another checkpoint (a hires fix checkpoint): the
        least recently used models go, the one just used included; never the current one."""
        with self._lock:
            self._evict(reserve=0, keep_recent=False)

    def _evict(self, reserve: int, keep_recent: bool = True) -> None:
        """Drop least recently used models beyond the cache size and RAM budget (never the current one, nor with
        `keep_recent` the most recently used). `reserve` makes room for a model about to be loaded."""
        limit = max(1, int(self.options.get("sd_checkpoints_limit"))) - reserve
        budget = float(self.options.get("sd_checkpoint_cache_ram_gb")) * 2 ** 30
        evicted = False
        while True:
            # never the current model, nor the most recently used one (just loaded, about to be used)
            candidates = list(self._loaded)[:-1] if keep_recent else list(self._loaded)
            victims = [key for key in candidates if key != self._current]
            total = sum(model.size_bytes for _, model in self._loaded.values())
            if not victims or (len(self._loaded) <= limit and total <= budget):
                break
            info, _ = self._loaded.pop(victims[0])
            evicted = True
            log.info("unloaded %s from the cache", info.name)
        if evicted:
            gc.collect()

    def unload_all(self) -> None:
        with self._lock:
            self._loaded.clear()
            self._current = None

    def forget(self, path: Path) -> None:
        """Drop the loaded model of the file at `path` (the file was replaced, say by a merge): the next use reads
        the file again. The current checkpoint stays the selected one (`sd_model_checkpoint`)."""
        with self._lock:
            dropped = self._loaded.pop(str(path), None)
            if dropped is not None and self._current == str(path):
                self._current = None


__all__ = ["ModelManager", "ModelLoadError", "UnknownCheckpointError"]
