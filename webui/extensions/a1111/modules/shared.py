"""A1111's `modules.shared`: the globals extensions read, each a view onto the running server.

`opts` (options), `cmd_opts` (flags), `state` (the running job), and, read when asked (PEP 562): `sd_model` (a
view of the current checkpoint, None when none is loaded), `device`, `models_path`, `data_path`, `script_path`,
`hide_dirs`, `restricted_opts`.
"""
from __future__ import annotations

import weakref
from typing import Any

from webui.extensions.a1111.runtime import RUNTIME, lazy_attributes

from . import paths_internal
from .options import OptionHTML, OptionInfo, Options, options_section  # noqa: F401 - A1111 exports them here
from .shared_cmd_options import cmd_opts
from .shared_state import state

opts = Options()
sd_upscalers: list = []  # no upscalers are offered to extensions
script_path = paths_internal.script_path


class CheckpointInfoView:
    """A1111's `CheckpointInfo` names over our `webui.models.registry.CheckpointInfo`."""

    def __init__(self, info):
        self._info = info

    title = property(lambda self: self._info.title)
    filename = property(lambda self: str(self._info.path))
    name = property(lambda self: self._info.name)
    name_for_extra = property(lambda self: self._info.name_for_extra)
    model_name = property(lambda self: self._info.model_name)
    hash = property(lambda self: self._info.shorthash)
    shorthash = property(lambda self: self._info.shorthash)
    sha256 = property(lambda self: self._info.sha256)
    is_safetensors = property(lambda self: self._info.kind == "safetensors")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._info, name)

    def __repr__(self) -> str:
        return f"<CheckpointInfo {self.title}>"


class SdModelView:
    """`shared.sd_model`: A1111's names for the loaded checkpoint (`sd_checkpoint_info`, `sd_model_hash`,
    `is_sdxl`, ...); anything else is read from our `LoadedModel` (`unet`, `vae`, `text_encoders`, ...)."""

    def __init__(self, info, model):
        self._info = info
        self._model = model
        self.sd_checkpoint_info = CheckpointInfoView(info)

    sd_model_hash = property(lambda self: self._info.shorthash)
    sd_model_checkpoint = property(lambda self: str(self._info.path))
    is_sdxl = property(lambda self: self._model.family == "sdxl")
    is_sd2 = property(lambda self: self._model.family == "sd2")
    is_sd1 = property(lambda self: self._model.family == "sd1")
    is_sd3 = property(lambda self: False)
    is_ssd = property(lambda self: False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_info", "_model", "sd_checkpoint_info"):
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"shared.sd_model is read-only here (setting {name!r}); change the checkpoint through "
                             "settings or override_settings")

    def __repr__(self) -> str:
        return f"<sd_model {self._info.title} ({self._model.family})>"


# One view per loaded model, so that `shared.sd_model is shared.sd_model` while the checkpoint stays loaded.
_views: dict[int, tuple[weakref.ref, SdModelView]] = {}


def sd_model_view(info, model) -> SdModelView:
    """The `shared.sd_model` view of a loaded checkpoint (`info`: CheckpointInfo, `model`: LoadedModel)."""
    for key in [k for k, (ref, _) in _views.items() if ref() is None]:
        del _views[key]
    cached = _views.get(id(model))
    if cached is not None and cached[0]() is model and cached[1]._info is info:
        return cached[1]
    view = SdModelView(info, model)
    _views[id(model)] = (weakref.ref(model), view)
    return view


def _sd_model():
    services = RUNTIME.services
    current = services.models.current if services is not None else None
    return sd_model_view(*current) if current is not None else None


def _device():
    services = RUNTIME.services
    if services is not None:
        return services.policy.device
    from . import devices
    return devices.get_optimal_device()


_DYNAMIC = {
    "sd_model": _sd_model,
    "device": _device,
    "models_path": lambda: paths_internal.models_path,
    "data_path": lambda: paths_internal.data_path,
    "hide_dirs": lambda: {"visible": not cmd_opts.hide_ui_dir_config},
    "restricted_opts": lambda: opts.restricted_opts,  # a live set: keys added to it are locked too
}


__getattr__, __dir__ = lazy_attributes(globals(), _DYNAMIC)  # names read when asked (they follow the server)
