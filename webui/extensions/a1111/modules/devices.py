"""A1111's `modules.devices`: the device and precision the server runs models in (its `DevicePolicy`).

`device`, `dtype`, `dtype_vae` (and A1111's per-task `device_*` names) are read when asked, so they follow the
running server; before it is bound they describe the best device PyTorch sees, in float32 on the CPU.
"""
from __future__ import annotations

import contextlib
import gc

import torch

from webui.extensions.a1111.runtime import RUNTIME, lazy_attributes

cpu = torch.device("cpu")


def has_mps() -> bool:
    """Apple's MPS backend is never used by this server."""
    return False


def get_optimal_device() -> torch.device:
    services = RUNTIME.services
    if services is not None:
        return services.policy.device
    return torch.device("cuda") if torch.cuda.is_available() else cpu


def get_optimal_device_name() -> str:
    return str(get_optimal_device())


def get_device_for(task: str) -> torch.device:
    """Every task (interrogate, upscalers, face restoration...) runs on the one device of the server."""
    return get_optimal_device()


def _policy():
    services = RUNTIME.services
    return services.policy if services is not None else None


def _dtype() -> torch.dtype:
    policy = _policy()
    if policy is not None:
        return policy.dtype
    return torch.float16 if torch.cuda.is_available() else torch.float32


def _dtype_vae() -> torch.dtype:
    policy = _policy()
    return policy.vae_dtype if policy is not None else _dtype()


def torch_gc() -> None:
    """Free what Python and the CUDA allocator hold but no longer use."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def autocast(disable: bool = False):
    """A context that runs in float16 autocast when the server does (`--precision autocast` on CUDA), else
    does nothing."""
    policy = _policy()
    if disable or policy is None or not policy.autocast or policy.device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16)


def without_autocast(disable: bool = False):
    """A context with autocast switched off (when it is on)."""
    if disable or not torch.is_autocast_enabled():
        return contextlib.nullcontext()
    return torch.autocast("cuda", enabled=False)


_DYNAMIC = {
    "device": get_optimal_device,
    "device_interrogate": get_optimal_device,
    "device_gfpgan": get_optimal_device,
    "device_esrgan": get_optimal_device,
    "device_codeformer": get_optimal_device,
    "dtype": _dtype,
    "dtype_unet": _dtype,
    "dtype_vae": _dtype_vae,
}


__getattr__, __dir__ = lazy_attributes(globals(), _DYNAMIC)  # names read when asked (they follow the server)
