"""A1111's `modules.script_callbacks`: extensions register functions the server calls at given moments.

Each `on_*` adds to the server's callback registry under the extension being loaded (a failing callback is
reported under that extension's name and skipped); their `name` argument is accepted for A1111 compatibility
(callbacks run in registration order). The parameter classes are what the callbacks receive.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from webui.extensions.a1111.runtime import RUNTIME


@dataclass
class ImageSaveParams:
    """`before_image_saved` may replace `image`, `filename` and the `pnginfo` texts ("parameters": infotext)."""
    image: Any  # PIL image
    p: Any  # the StableDiffusionProcessing, or None
    filename: str
    pnginfo: dict = field(default_factory=dict)


@dataclass
class CFGDenoiserParams:
    """Before a model evaluation: `x`, `text_cond` and `text_uncond` may be replaced."""
    x: Any
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    """After a model evaluation, before classifier-free guidance combines its halves."""
    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any


@dataclass
class AfterCFGCallbackParams:
    """After classifier-free guidance has combined the predictions."""
    x: Any
    sampling_step: int
    total_sampling_steps: int


def _registry():
    host = RUNTIME.host
    if host is None:
        raise RuntimeError("script_callbacks: the web UI is not running, so there is nothing to register with "
                           "(callbacks can be added by an extension loaded by the server)")
    return host.callbacks


def _add(event: str, callback: Callable) -> None:
    _registry().add(event, callback, RUNTIME.current_extension())


def on_app_started(callback: Callable, *, name: str | None = None) -> None:
    """`callback(demo, app)` once the UI is built and the FastAPI app exists (add HTTP routes here)."""
    _add("app_started", callback)


def on_model_loaded(callback: Callable, *, name: str | None = None) -> None:
    """`callback(sd_model)` after a checkpoint has loaded."""
    _add("model_loaded", callback)


def on_ui_tabs(callback: Callable, *, name: str | None = None) -> None:
    """`callback()` returns `[(blocks, title, elem_id), ...]`: tabs added to the UI."""
    _add("ui_tabs", callback)


def on_ui_settings(callback: Callable, *, name: str | None = None) -> None:
    """`callback()` adds options with `shared.opts.add_option` before the Settings tab is built."""
    _add("ui_settings", callback)


def on_before_component(callback: Callable, *, name: str | None = None) -> None:
    """`callback(component, **kwargs)` before each UI component with an elem_id is created."""
    _add("before_component", callback)


def on_after_component(callback: Callable, *, name: str | None = None) -> None:
    """`callback(component, **kwargs)` after each UI component with an elem_id is created."""
    _add("after_component", callback)


def on_before_image_saved(callback: Callable, *, name: str | None = None) -> None:
    """`callback(ImageSaveParams)` before an image is written; it may change the image, filename and texts."""
    _add("before_image_saved", callback)


def on_image_saved(callback: Callable, *, name: str | None = None) -> None:
    """`callback(ImageSaveParams)` after an image is written."""
    _add("image_saved", callback)


def on_infotext_pasted(callback: Callable, *, name: str | None = None) -> None:
    """`callback(infotext, params)` when infotext is pasted into the UI; it may change the parsed `params`."""
    _add("infotext_pasted", callback)


def on_script_unloaded(callback: Callable, *, name: str | None = None) -> None:
    """`callback()` when the server shuts down."""
    _add("script_unloaded", callback)


def on_cfg_denoiser(callback: Callable, *, name: str | None = None) -> None:
    """`callback(CFGDenoiserParams)` before every model evaluation while sampling."""
    _add("cfg_denoiser", callback)


def on_cfg_denoised(callback: Callable, *, name: str | None = None) -> None:
    """`callback(CFGDenoisedParams)` after every model evaluation while sampling."""
    _add("cfg_denoised", callback)


def on_before_ui(callback: Callable, *, name: str | None = None) -> None:
    """`callback()` before the UI is built."""
    _add("before_ui", callback)


def remove_current_script_callbacks() -> None:
    """Drop the callbacks the extension being loaded has registered (all of its scripts' callbacks); nothing
    outside an extension's loading."""
    registry = _registry()
    extension = RUNTIME.current_extension()
    if extension:
        registry.remove_extension(extension)


def remove_callbacks_for_function(callback_func: Callable) -> None:
    """Drop every registration of `callback_func`, whichever event it was added to."""
    _registry().remove_function(callback_func)
