"""A LoRA file's tensors grouped into per-module weights of one kind (LoRA/LoCon, LoHa, LoKr, full diff, norm),
whatever naming the file uses (kohya / LyCORIS, diffusers, PEFT), plus a small LRU cache of parsed files."""
from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .family import FAMILIES, families_from_tensors, guess_family
from .files import read_network_tensors
from .flux_names import convert_bfl_names, has_bfl_names
from .sd3_names import convert_sai_names, has_sai_names
from .zimage_names import convert_zimage_names, has_zimage_names

# tensor-name ending -> role; the longest ending wins
_ROLES = {
    ".lora_down.weight": "down", ".lora_up.weight": "up", ".lora_mid.weight": "mid",
    ".lora_A.weight": "down", ".lora_B.weight": "up",  # PEFT
    ".lora.down.weight": "down", ".lora.up.weight": "up",  # diffusers (before PEFT)
    ".lora_linear_layer.down.weight": "down", ".lora_linear_layer.up.weight": "up",
    "_lora.down.weight": "down", "_lora.up.weight": "up",  # diffusers attention processors: to_q_lora
    ".alpha": "alpha", ".dora_scale": "dora_scale",  # DoRA magnitudes: LyCORIS / kohya, and PEFT's below
    ".lora_magnitude_vector": "magnitude", ".lora_magnitude_vector.weight": "magnitude",
    ".hada_w1_a": "hada_w1_a", ".hada_w1_b": "hada_w1_b", ".hada_w2_a": "hada_w2_a", ".hada_w2_b": "hada_w2_b",
    ".hada_t1": "hada_t1", ".hada_t2": "hada_t2",
    ".lokr_w1": "lokr_w1", ".lokr_w1_a": "lokr_w1_a", ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2": "lokr_w2", ".lokr_w2_a": "lokr_w2_a", ".lokr_w2_b": "lokr_w2_b", ".lokr_t2": "lokr_t2",
    ".diff": "diff", ".diff_b": "diff_b", ".w_norm": "w_norm", ".b_norm": "b_norm",
}
_ENDINGS = sorted(_ROLES, key=len, reverse=True)
_PEFT_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")


@dataclass
class NetworkModule:
    """The weights a file holds for one model module. `key` is the module as the file names it
    (`lora_unet_down_blocks_0_..._to_q`, `unet.down_blocks.0....to_q`, ...); `tensors` are by role."""

    key: str
    kind: str  # "lora" | "loha" | "lokr" | "full" | "norm"
    tensors: dict[str, torch.Tensor]
    alpha: float | None = None
    rank_stabilised: bool = False  # PEFT use_rslora: scale alpha / sqrt(rank)

    @property
    def dora_scale(self) -> torch.Tensor | None:
        """DoRA magnitudes, if the module has them."""
        found = self.tensors.get("dora_scale")
        return found if found is not None else self.tensors.get("magnitude")

    @property
    def dora_per_output(self) -> bool:
        """PEFT magnitudes are per output channel whatever their shape; LyCORIS / kohya `dora_scale` is per input
        channel when shaped (1, in, ...), per output channel when shaped (out, 1, ...) (LyCORIS `wd_on_output`)."""
        scale = self.tensors.get("dora_scale")
        return scale is None or scale.ndim < 2 or scale.shape[0] != 1


@dataclass
class ParsedNetwork:
    """Everything read from one LoRA file."""

    path: Path
    modules: dict[str, NetworkModule]
    metadata: dict
    family: str | None  # "sd1" | "sd2" | "sdxl" | "flux" | "sd3" | None, from the tensors and the metadata
    families: frozenset[str] = FAMILIES  # the families the tensors allow (all when they tell nothing)
    not_understood: list[str] = field(default_factory=list)  # tensors with no known role, or incomplete modules

    @property
    def tensor_count(self) -> int:
        return sum(len(m.tensors) for m in self.modules.values())


def _split_key(key: str) -> tuple[str, str] | None:
    for ending in _ENDINGS:
        if key.endswith(ending) and len(key) > len(ending):
            return key[:-len(ending)], _ROLES[ending]
    return None


def _kind(roles: set[str]) -> str | None:
    if {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= roles:
        return "loha"
    if ({"lokr_w1"} <= roles or {"lokr_w1_a", "lokr_w1_b"} <= roles) and \
            ({"lokr_w2"} <= roles or {"lokr_w2_a", "lokr_w2_b"} <= roles):
        return "lokr"
    if {"down", "up"} <= roles:
        return "lora"
    if "diff" in roles:
        return "full"
    if "w_norm" in roles:
        return "norm"
    return None


def _peft_alphas(metadata: dict) -> dict[str, dict]:
    """diffusers' `lora_adapter_metadata` (the PEFT config of each component) by component prefix."""
    raw = metadata.get("lora_adapter_metadata")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    if not isinstance(raw, dict):
        return {}
    configs: dict[str, dict] = {}
    for key, value in raw.items():
        prefix, _, name = key.partition(".")
        if prefix in _PEFT_COMPONENTS and name:
            configs.setdefault(prefix, {})[name] = value
    return configs


def _peft_alpha(key: str, configs: dict[str, dict]) -> tuple[float | None, bool]:
    prefix, _, module = key.partition(".")
    config = configs.get(prefix)
    if not config:
        return None, False
    alpha = config.get("lora_alpha")
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?(?:{pattern})", module):
            alpha = value
            break
    return (float(alpha) if isinstance(alpha, (int, float)) else None), bool(config.get("use_rslora"))


def parse_network(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> ParsedNetwork:
    """Group a file's tensors by module and recognise each module's kind. FLUX.1 LoRAs in BFL's module names and
    SD3 LoRAs in Stability's and Z-Image LoRAs in its original names are renamed to diffusers' first (`flux_names`,
    `sd3_names`, `zimage_names`)."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    not_understood = []
    shapes = {key: tuple(tensor.shape) for key, tensor in tensors.items()}
    if has_sai_names(tensors):  # SD3 first: its `final_layer` would look like FLUX.1's BFL name
        tensors, left_out = convert_sai_names(tensors)
        not_understood.extend(left_out)
    if has_zimage_names(tensors):  # before FLUX.1: its `final_layer` would look like a BFL name
        tensors, left_out = convert_zimage_names(tensors)
        not_understood.extend(left_out)
    if has_bfl_names(tensors):
        tensors, left_out = convert_bfl_names(tensors)
        not_understood.extend(left_out)
    for key, tensor in tensors.items():
        split = _split_key(key)
        if split is None:
            not_understood.append(key)
            continue
        module, role = split
        if role == "alpha" and (inner := _split_key(module)) is not None and inner[1] == "down":
            module = inner[0]  # diffusers' kohya conversion names alphas `<...>.to_q_lora.down.weight.alpha`
        groups.setdefault(module, {})[role] = tensor
    peft = _peft_alphas(metadata)
    modules = {}
    for key, found in groups.items():
        kind = _kind(set(found))
        if kind is None:
            not_understood.extend(f"{key}.{role}" for role in found if role != "alpha")
            continue
        alpha = found.pop("alpha", None)
        rank_stabilised = False
        if alpha is not None:
            alpha = float(alpha.float().reshape(-1)[0]) if alpha.numel() else None
        elif kind == "lora":
            alpha, rank_stabilised = _peft_alpha(key, peft)
        modules[key] = NetworkModule(key, kind, found, alpha, rank_stabilised)
    family = guess_family(shapes, metadata)
    families = frozenset(families_from_tensors(shapes)) or FAMILIES  # empty: the hints contradict each other
    return ParsedNetwork(Path(path), modules, metadata, family, families, sorted(not_understood))


def load_network(path: Path) -> ParsedNetwork:
    """Read and parse a LoRA file. Raises NetworkFileError naming the file."""
    tensors, metadata = read_network_tensors(path)
    return parse_network(path, tensors, metadata)


def file_identity(path: Path) -> tuple[str, int, int]:
    """(absolute path, mtime in ns, size): a parsed file stays valid while these are unchanged. Raises OSError."""
    st = os.stat(path)
    return str(Path(path).absolute()), st.st_mtime_ns, st.st_size


class NetworkFileCache:
    """The last few parsed LoRA files, keyed by path + mtime + size, so re-weighting never re-reads a file."""

    def __init__(self, max_files: int = 5):
        self.max_files = max_files
        self.reads = 0  # files read from disk so far (for tests and logs)
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, ParsedNetwork] = OrderedDict()

    def get(self, identity: tuple[str, int, int]) -> ParsedNetwork:
        """The parsed file for `identity` (from `file_identity`); reads it when not cached. Raises
        NetworkFileError."""
        with self._lock:
            parsed = self._entries.get(identity)
            if parsed is not None:
                self._entries.move_to_end(identity)
                return parsed
        parsed = load_network(Path(identity[0]))
        with self._lock:
            self.reads += 1
            for old in [k for k in self._entries if k[0] == identity[0]]:  # an older version of the same file
                del self._entries[old]
            self._entries[identity] = parsed
            while len(self._entries) > self.max_files:
                self._entries.popitem(last=False)
        return parsed

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
