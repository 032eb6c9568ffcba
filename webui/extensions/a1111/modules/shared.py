"""A1111's `modules.shared`: the globals extensions read, each a view onto the running server.

`opts` (options; inside a run's hooks they read that run's `override_settings`), `cmd_opts` (flags), `state`
(the running job), `total_tqdm`, and, read when asked (PEP 562): `sd_model` (a view of the current checkpoint,
None when none is loaded; A1111's LDM attributes on it are reported as internals), `prompt_styles` (our
styles.csv), `sd_upscalers` (our upscalers as A1111's `UpscalerData`), `device`, `models_path`, `data_path`,
`script_path`, `hide_dirs`, `restricted_opts`.
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


class OptionTemplates(dict):
    """`shared.options_templates`: in A1111 the very dict behind `opts.data_labels`, so an extension that adds
    `options_section(...)` entries to it declares options. Here each entry added is declared with
    `opts.add_option` (and shown in Settings like any extension option)."""

    def __setitem__(self, key, info) -> None:
        super().__setitem__(key, info)
        opts.add_option(key, info)

    def update(self, *args, **kwargs) -> None:
        for key, info in dict(*args, **kwargs).items():
            self[key] = info


options_templates = OptionTemplates()
script_path = paths_internal.script_path


def CheckpointInfoView(info):  # noqa: N802 - the name older code of ours used
    """A1111's `CheckpointInfo` (modules.sd_models) over our `webui.models.registry.CheckpointInfo`."""
    from .sd_models import CheckpointInfo
    return CheckpointInfo(None, info)


class TotalTQDM:
    """`shared.total_tqdm`: A1111's console bar over all steps of a job. Our console progress follows the jobs
    themselves (webui/console_progress.py); this keeps the counts extensions set and advance."""

    def __init__(self):
        self.total = 0
        self.done = 0

    def reset(self):
        self.done = 0

    def update(self):
        self.done += 1

    def updateTotal(self, new_total):  # noqa: N802 - A1111's name
        self.total = int(new_total)

    def clear(self):
        self.total = self.done = 0


total_tqdm = TotalTQDM()
parallel_processing_allowed = True

# What A1111's LDM model object has and ours doesn't: reading them from `shared.sd_model` says so clearly.
LDM_MODEL_ATTRIBUTES = frozenset((
    "model", "cond_stage_model", "first_stage_model", "conditioner", "decode_first_stage", "encode_first_stage",
    "get_first_stage_encoding", "get_learned_conditioning", "apply_model", "alphas_cumprod", "forge_objects",
    "parameterization", "latent_channels", "cond_stage_key", "q_sample", "sd_model_hash_full"))


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
        try:
            return getattr(self._model, name)
        except AttributeError:
            if name in LDM_MODEL_ATTRIBUTES:
                from webui.extensions.problems import ModelInternalsError
                raise ModelInternalsError(f"shared.sd_model.{name}") from None
            raise

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


def _prompt_styles():
    if RUNTIME.services is None:
        return None
    from .styles import StyleDatabase
    return StyleDatabase()


def _sd_upscalers():
    from .upscaler import sd_upscalers
    return sd_upscalers()


_DYNAMIC = {
    "sd_model": _sd_model,
    "prompt_styles": _prompt_styles,  # our styles.csv (modules/styles.py)
    "sd_upscalers": _sd_upscalers,  # our upscalers (modules/upscaler.py): None, Lanczos, Nearest, model files
    "device": _device,
    "models_path": lambda: paths_internal.models_path,
    "data_path": lambda: paths_internal.data_path,
    "hide_dirs": lambda: {"visible": not cmd_opts.hide_ui_dir_config},
    "restricted_opts": lambda: opts.restricted_opts,  # a live set: keys added to it are locked too
}


__getattr__, __dir__ = lazy_attributes(globals(), _DYNAMIC)  # names read when asked (they follow the server)
