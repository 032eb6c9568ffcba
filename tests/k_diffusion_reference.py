"""k-diffusion 0.0.16 (the commit A1111 1.6-1.10 pins), the independent reference for A1111's samplers.

Only `k_diffusion.sampling` and `k_diffusion.external` are loaded: the package's `__init__` imports training extras
(wandb, CLIP, ...) that are not installed (requirements-test-nodeps.txt installs k-diffusion without them)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def load():
    """(k_diffusion.sampling, k_diffusion.external), imported without running the package's __init__."""
    if "k_diffusion" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("k-diffusion is not installed: ./launch.sh --test installs requirements-test-nodeps.lock")
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = package  # a bare package: its __init__ never runs
    return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")
