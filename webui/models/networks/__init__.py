"""LoRA / LyCORIS networks: finding and hashing the files (`LoraRegistry`), reading every common format, and
patching a loaded model's weights in place (`apply_networks`), exactly reversibly."""
from .files import NetworkFileError, addnet_sha256
from .formats import NetworkFileCache, NetworkModule, ParsedNetwork, load_network
from .patcher import ApplyReport, NetworkPatchState, NetworkRequest, apply_networks
from .registry import HASH_KIND, LoraInfo, LoraRegistry

__all__ = ["ApplyReport", "HASH_KIND", "LoraInfo", "LoraRegistry", "NetworkFileCache", "NetworkFileError",
           "NetworkModule", "NetworkPatchState", "NetworkRequest", "ParsedNetwork", "addnet_sha256", "apply_networks",
           "load_network"]
