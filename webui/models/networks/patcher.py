"""Apply, re-weight and remove LoRA networks on a loaded model, in place.

Each affected weight gets the sum of its LoRAs' changes fused in (computed in float32 from the original, cast to the
weight's dtype, on the weight's device); the original is kept on the CPU and copied back to remove, so a weight goes
back bit for bit. The model remembers what each weight holds (`LoadedModel.networks`), so a call with the same list
does nothing and a change rewrites only the weights whose LoRAs or multipliers changed. The checkpoint is never
reloaded. The CPU copies stay after a LoRA is removed, so the next one needs no copy (they are checked against the
weights' version counters before reuse); `NetworkPatchState.release_originals()` frees them. A layer stored in float8
(FLUX.1 fp8 files) is held in its compute dtype while patched and returned to float8 when restored (`fp8_layers`); a
GGUF-quantised layer, or any linear layer of a transformer streamed from RAM, is never written: its LoRAs are added to
its output at run time (`runtime_patches`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .deltas import add_weight_delta_, bias_delta
from .fit import Fit, fit_network
from .fp8_layers import hold, hold_dtype, release
from .formats import NetworkFileCache, NetworkModule, ParsedNetwork, file_identity
from .keys import ModuleTable
from .registry import LoraInfo
from .runtime_patches import can_patch_at_run_time, clear_patch, is_quantized_layer, set_patch

if TYPE_CHECKING:
    from ..loader import LoadedModel

log = logging.getLogger(__name__)

MAX_FITS = 16


@dataclass
class NetworkRequest:
    """One `<lora:name:te:unet>` tag: the file and its multipliers for the text encoders and the UNet."""

    info: LoraInfo
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0


@dataclass
class ApplyReport:
    """`applied`: the LoRAs now active (also those at weight 0); `warnings`: readable, each naming its LoRA;
    `modules_changed`: weights rewritten or restored by this call; `seconds`: time the call took."""

    applied: list[LoraInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    modules_changed: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Contribution:
    identity: tuple[str, int, int]
    module: NetworkModule
    multiplier: float
    lora: str

    @property
    def signature(self) -> tuple:
        return self.identity, self.module.key, self.multiplier


_Param = tuple[tuple[str, str], str]  # (target key, "weight" | "bias")


def _storage(module: torch.nn.Module, name: str) -> torch.Tensor:
    """The tensor holding a parameter's values (a detached view: writing it bumps the parameter's version counter).
    Under accelerate's sequential offload (--lowvram) the parameter is a meta placeholder and the values live in
    the offload hook's weights map, read at every forward."""
    param = getattr(module, name)
    if param.device.type != "meta":
        return param.detach()
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or [hook]:
        weights = getattr(h, "weights_map", None)
        if weights is not None and name in weights:
            return weights[name]
    raise RuntimeError(f"the {name} of this module is not loaded anywhere")


def _guard(store: torch.Tensor) -> tuple[int, int]:
    """Changes when the tensor is replaced or written in place."""
    return store.data_ptr(), store._version


class NetworkPatchState:
    """What is patched into one model: the CPU originals of the weights changed, and what each weight holds now."""

    def __init__(self, model: "LoadedModel"):
        self.lock = threading.Lock()
        self.family = model.family
        self.table = ModuleTable(model.unet, model.text_encoders)
        self.files = NetworkFileCache()
        self._fits: OrderedDict[tuple, Fit] = OrderedDict()
        self._originals: dict[_Param, torch.Tensor] = {}  # CPU copies of the original values
        self._patched: set[_Param] = set()  # parameters holding LoRA changes now
        self._guards: dict[_Param, tuple[int, int]] = {}  # (data_ptr, version) of an unpatched parameter
        self._current: dict[tuple[str, str], tuple] = {}  # target -> signature of what is fused into it
        self._held: dict[tuple[str, str], torch.dtype] = {}  # float8 layers held in the compute dtype -> float8
        # components whose LoRAs are added at run time (a transformer streamed from RAM; set at each apply)
        self.runtime_components: frozenset[str] = frozenset()

    @property
    def patched(self) -> int:
        """How many modules hold LoRA changes now."""
        return len(self._current)

    @property
    def originals_bytes(self) -> int:
        """CPU memory taken by the kept originals."""
        return sum(t.numel() * t.element_size() for t in self._originals.values())

    def release_originals(self) -> int:
        """Free the kept originals of weights no LoRA patches now; returns the bytes freed. (They are kept after a
        LoRA is removed so that the next one needs no copy; they stay valid while nothing else writes the
        weights, which the parameters' version counters show.)"""
        with self.lock:
            idle = [p for p in self._originals if p not in self._patched]
            freed = sum(self._originals[p].numel() * self._originals[p].element_size() for p in idle)
            for p in idle:
                del self._originals[p]
                self._guards.pop(p, None)
            return freed

    def fit(self, identity: tuple, name: str, parsed: ParsedNetwork) -> Fit:
        found = self._fits.get(identity)
        if found is None:
            found = fit_network(name, parsed, self.table, self.family)
            self._fits[identity] = found
            while len(self._fits) > MAX_FITS:
                self._fits.popitem(last=False)
        else:
            self._fits.move_to_end(identity)
        return found

    def is_current(self, key: tuple[str, str], signature: tuple) -> bool:
        return self._current.get(key) == signature

    def keys(self) -> list[tuple[str, str]]:
        return list(self._current)

    # --- changing weights -----------------------------------------------------------------------------------------

    def _original(self, param: _Param, store: torch.Tensor) -> torch.Tensor:
        """The parameter's original values on the CPU; copied now unless a valid copy is kept."""
        kept = self._originals.get(param)
        if kept is not None and param not in self._patched and self._guards.get(param) != _guard(store):
            kept = None  # written by something else since we restored it (e.g. weights reloaded): copy afresh
        if kept is None:
            kept = store.to("cpu", copy=True)
            self._originals[param] = kept
        return kept

    def _restore_param(self, param: _Param, module: torch.nn.Module) -> None:
        if param in self._patched:
            store = _storage(module, param[1])
            store.copy_(self._originals[param])
            self._patched.discard(param)
            self._guards[param] = _guard(store)

    def restore(self, key: tuple[str, str]) -> None:
        """Put the target's original weight (and bias) back, bit for bit."""
        target = self.table.targets[key]
        clear_patch(target.module)  # a quantised layer's run-time change (nothing was written into its weight)
        with torch.no_grad():
            for name in ("weight", "bias"):
                self._restore_param((key, name), target.module)
            stored = self._held.pop(key, None)
            if stored is not None:  # the original values are back: float8 storage again (exact)
                release(target.module, stored)
                for name in ("weight", "bias"):
                    if (key, name) in self._guards:
                        self._guards[(key, name)] = _guard(_storage(target.module, name))
        self._current.pop(key, None)

    def patch(self, key: tuple[str, str], contributions: list[_Contribution]) -> None:
        """Fuse the contributions into the target's original weight (and bias). On failure the target is restored
        and the error raised."""
        target = self.table.targets[key]
        self._current.pop(key, None)
        try:
            with torch.no_grad():
                streamed = key[0] in self.runtime_components
                if is_quantized_layer(target.module) or streamed:  # beside the weight, at run time
                    set_patch(target.module, [(c.module, c.multiplier) for c in contributions], _dequantize, streamed)
                    self._current[key] = tuple(c.signature for c in contributions)
                    return
                self._patch_weight((key, "weight"), target.module, contributions)
                self._patch_bias((key, "bias"), target.module, contributions)
        except BaseException:
            self.restore(key)
            raise
        self._current[key] = tuple(c.signature for c in contributions)

    def _patch_weight(self, param: _Param, module: torch.nn.Module, contributions: list[_Contribution]) -> None:
        store = _storage(module, "weight")
        original = self._original(param, store)
        held = hold_dtype(module, store)
        if held is not None:  # float8 storage would round the change away: computed in `held` while patched
            self._held[param[0]] = hold(module, held)
            store = _storage(module, "weight")
        dora = any(c.module.dora_scale is not None for c in contributions)
        if store.dtype == torch.float32:
            accumulator = store  # fp32 weights: sum straight into the weight, no temporary
            if param in self._patched:
                store.copy_(original)
            # on the CPU: the original itself, no copy
            base = original.to(store.device, torch.float32) if dora else None
        else:
            accumulator = original.to(device=store.device, dtype=torch.float32, copy=True)
            base = accumulator.clone() if dora else None
        self._patched.add(param)  # from here on the weight may differ from the original
        for c in contributions:
            add_weight_delta_(accumulator, base, c.module, c.multiplier)
        if accumulator is not store:
            store.copy_(accumulator)

    def _patch_bias(self, param: _Param, module: torch.nn.Module, contributions: list[_Contribution]) -> None:
        changes = [(c, d) for c in contributions if (d := bias_delta(c.module, torch.device("cpu"))) is not None]
        if not changes:
            self._restore_param(param, module)  # a bias change from an earlier call is no longer wanted
            return
        store = _storage(module, "bias")
        original = self._original(param, store)
        accumulator = original.to(device=store.device, dtype=torch.float32, copy=True)
        for c, delta in changes:
            accumulator.add_(delta.to(store.device).reshape(accumulator.shape), alpha=c.multiplier)
        self._patched.add(param)
        store.copy_(accumulator)


def _streams_transformer(model) -> bool:
    placement = getattr(model, "placement", None)
    return bool(placement is not None and placement.stream_transformer)


def _dequantize(weight: torch.Tensor) -> torch.Tensor:
    from ..gguf_files import dequantize
    return dequantize(weight, torch.float32)


def patch_state(model: "LoadedModel") -> NetworkPatchState:
    """The model's patch state, created on first use."""
    state = getattr(model, "networks", None)
    if state is None:
        state = NetworkPatchState(model)
        model.networks = state
    return state


def _load(request: NetworkRequest, files: NetworkFileCache, report: ApplyReport):
    """(file identity, parsed file) or None with a warning added."""
    name, path = request.info.name, request.info.path
    try:
        identity = file_identity(path)
    except OSError as exc:
        report.warnings.append(f'LoRA "{name}": cannot read {path} ({exc.strerror or exc}): skipped')
        return None
    try:
        return identity, files.get(identity)
    except ValueError as exc:  # NetworkFileError: the message names the file
        report.warnings.append(f'LoRA "{name}" could not be loaded: {exc}: skipped')
    except Exception as exc:  # noqa: BLE001 - a bad file must never stop a generation
        log.exception("Reading LoRA %s failed", path)
        report.warnings.append(f'LoRA "{name}" could not be loaded: {path.name}: {exc}: skipped')
    return None


def apply_networks(model: "LoadedModel", wanted: list[NetworkRequest],
                   files: NetworkFileCache | None = None) -> ApplyReport:
    """Make `wanted` (in this order) the LoRAs patched into `model`; `[]` restores the original weights exactly.

    `files`: a parsed-file cache to share between models (default: the model's own). Problems with a LoRA (missing or
    corrupt file, another architecture, keys that fit nothing) become warnings; this never raises for them."""
    started = time.perf_counter()
    state = patch_state(model)
    files = files or state.files
    report = ApplyReport()
    with state.lock:
        runtime = frozenset({"unet"}) if _streams_transformer(model) else frozenset()
        if runtime != state.runtime_components:  # placed otherwise since the last call: patch everything afresh
            for key in state.keys():
                state.restore(key)
            state.runtime_components = runtime
        plan: dict[tuple[str, str], list[_Contribution]] = {}
        for request in wanted:
            loaded = _load(request, files, report)
            if loaded is None:
                continue
            identity, parsed = loaded
            fit = state.fit(identity, request.info.name, parsed)
            if fit.skipped:
                report.warnings.append(fit.skipped)
                continue
            report.warnings.extend(fit.warnings)
            report.applied.append(request.info)
            unpatchable = [target.name for target, _ in fit.pairs
                           if target.component in runtime and not can_patch_at_run_time(target.module)]
            if unpatchable:
                report.warnings.append(f'LoRA "{request.info.name}": {len(unpatchable)} of its modules (e.g. '
                                       f"{unpatchable[0]}) are not linear layers and cannot be applied while the "
                                       "transformer is streamed from RAM: skipped")
            for target, module in fit.pairs:
                if target.component in runtime and not can_patch_at_run_time(target.module):
                    continue
                multiplier = float(request.te_multiplier if target.is_text_encoder else request.unet_multiplier)
                if multiplier != 0.0:
                    plan.setdefault(target.key, []).append(
                        _Contribution(identity, module, multiplier, request.info.name))
        for key in state.keys():
            if key not in plan:
                state.restore(key)
                report.modules_changed += 1
        failed: set[str] = set()
        for key, contributions in plan.items():
            if state.is_current(key, tuple(c.signature for c in contributions)):
                continue
            report.modules_changed += 1
            try:
                state.patch(key, contributions)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory on the device; the weight is restored
                names = ", ".join(sorted({c.lora for c in contributions}))
                log.exception("Patching %s failed", key)
                if names not in failed:
                    failed.add(names)
                    report.warnings.append(f'LoRA "{names}": could not be applied to {key[0]} {key[1]} ({exc})')
    report.seconds = time.perf_counter() - started
    return report
