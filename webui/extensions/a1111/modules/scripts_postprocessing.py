"""A1111's `modules.scripts_postprocessing`: the `ScriptPostprocessing` base class of Extras-tab operations that
extensions subclass in their scripts/*.py, `PostprocessedImage` (the image an operation works on), and the runner.

A subclass sets `name` and `order`, builds its controls in `ui()` (a dict: argument name -> component) and gets
their values as keyword arguments in `process(pp, **args)` (and `process_firstpass`, called for every operation
before any `process`). It changes `pp.image`, adds infotext keys to `pp.info`, more results to `pp.extra_images`,
a caption to `pp.caption`. Our Extras engine (webui/engine/extras.py) runs them among its built-in Upscale,
GFPGAN and CodeFormer by A1111's order; the runner of the running server is `modules.scripts.scripts_postproc`
(set up by webui/extensions/a1111/postprocessing_hooks.py).
"""
from __future__ import annotations

import contextlib
import os

import gradio as gr

from webui.core.errors import RequestError
from webui.engine.extras import (ExtrasItem, ExtrasOperation, ExtrasSharedInfo, order_of,  # noqa: F401
                                 preferred_order)
from webui.extensions.a1111.runtime import RUNTIME

PostprocessedImageSharedInfo = ExtrasSharedInfo
PostprocessedImage = ExtrasItem  # one class: the engine's items are what extensions get and may create


class ScriptPostprocessing:
    """Subclass it for an Extras operation (A1111's names and signatures)."""
    filename = None
    controls = None
    args_from = None
    args_to = None
    order = 1000  # operations run and show in this order (after the names the operation order option lists)
    name = None  # the operation's title; also its key in the API's `alwayson_scripts`
    group = None  # the layout block holding its controls

    def ui(self):
        """Create the controls; return {argument name: component}: their values become process()'s arguments."""
        return None

    def process(self, pp: PostprocessedImage, **args):
        """Change `pp` (its image, info, extra_images, caption) with the controls' values as `args`."""
        return None

    def process_firstpass(self, pp: PostprocessedImage, **args):
        """Called for every operation before any process(): look at the image, set fields for the others."""
        return None

    def image_changed(self):
        return None


def wrap_call(func, filename, funcname, *args, default=None, **kwargs):
    """Call `func`; an error is reported (under the extension calling) and `default` returned, as A1111's."""
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        from modules import errors
        errors.display(exc, f"calling {filename}/{funcname}")
    return default


class ScriptPostprocessingRunner:
    """The postprocessing operations of the running server: one instance of each extension's class (A1111's
    runner API: `scripts_in_preferred_order`, `setup_ui`, `run`, `create_args_for_run`), plus what our Extras tab
    and API use: each operation's controls and default values, args from names, and the engine's operations."""

    def __init__(self, host=None):
        self.host = host
        self.scripts: list[ScriptPostprocessing] | None = None
        self.ui_created = False
        self.extension_of: dict[int, str] = {}  # id(script) -> extension folder name
        self.defaults: dict[int, dict] = {}  # id(script) -> {argument name: the control's default value}

    # --- A1111's runner API --------------------------------------------------------------------------------------
    def initialize_scripts(self, scripts_data) -> None:
        self.scripts = []
        for data in scripts_data:
            script = data.script_class()
            script.filename = data.path
            if script.name == "Simple Upscale":
                continue
            self.scripts.append(script)

    def scripts_in_preferred_order(self) -> list[ScriptPostprocessing]:
        """Without the ones `postprocessing_disable_in_extras` lists; in A1111's order (our built-in operations
        take part in the order, see webui/engine/extras.py)."""
        if self.scripts is None:
            import modules.scripts
            self.initialize_scripts(getattr(modules.scripts, "postprocessing_scripts_data", []))
        disabled = set(self._option("postprocessing_disable_in_extras") or [])
        scripts = [s for s in self.scripts if s.name not in disabled]
        order = [ExtrasOperation(str(s.name), order_of(s.order), lambda item: None) for s in scripts]
        position = {id(operation): index for index, operation in enumerate(order)}
        return [scripts[position[id(operation)]] for operation in preferred_order(order, _Options(self))]

    def create_script_ui(self, script: ScriptPostprocessing, inputs: list) -> None:
        """Build the script's controls (in the current layout) and append them to `inputs`."""
        script.args_from = script.args_to = len(inputs)
        with self._calling(script):
            made = wrap_call(script.ui, script.filename, "ui")
        controls = {str(key): component for key, component in (made or {}).items()
                    if isinstance(component, gr.components.Component)} if isinstance(made, dict) else {}
        if made is not None and not isinstance(made, dict):
            self._report(script, "ui", TypeError(f"ui() must return a dict of controls, got {type(made).__name__}"))
        for component in controls.values():
            component.custom_script_source = os.path.basename(str(script.filename or ""))
        script.controls = controls
        self.defaults[id(script)] = {key: getattr(c, "value", None) for key, c in controls.items()}
        inputs += list(controls.values())
        script.args_to = len(inputs)

    def setup_ui(self) -> list:
        inputs: list = []
        for script in self.scripts_in_preferred_order():
            with gr.Group() as group:
                self.create_script_ui(script, inputs)
            script.group = group
        self.ui_created = True
        return inputs

    def run(self, pp: PostprocessedImage, args) -> None:
        """A1111's run over flat `args` (the values of setup_ui()'s inputs): every operation on `pp`."""
        from webui.engine.extras import _process_image
        warnings: list[str] = []
        named = {s.name: {key: value for key, value in zip(s.controls or {}, list(args)[s.args_from:s.args_to])}
                 for s in self.scripts_in_preferred_order()}
        items = _process_image(pp.image, self.operations(named, warnings))
        pp.image, pp.info, pp.extra_images = items[0].image, items[0].info, items[1:]

    def create_args_for_run(self, scripts_args: dict) -> list:
        """Flat args from {script name: {argument name: value}} (None for the ones left out, as A1111)."""
        self.ensure_ui()
        scripts = self.scripts_in_preferred_order()
        args: list = [None] * max([s.args_to or 0 for s in scripts] + [0])
        for script in scripts:
            given = scripts_args.get(script.name)
            if given is not None:
                for index, key in enumerate(script.controls or {}):
                    args[script.args_from + index] = given.get(key)
        return args

    def image_changed(self) -> None:
        for script in self.scripts_in_preferred_order():
            with self._calling(script):
                wrap_call(script.image_changed, script.filename, "image_changed")

    # --- what our Extras tab, API and engine use -----------------------------------------------------------------
    def ensure_ui(self) -> None:
        """Controls (and so their defaults) for every operation: built offscreen when no Extras tab was built
        (--nowebui, or the API used first)."""
        if all(s.controls is not None for s in self.scripts_in_preferred_order()):
            return
        with gr.Blocks(analytics_enabled=False):
            self.setup_ui()

    def names(self) -> list[str]:
        return [str(s.name) for s in self.scripts or []]

    def args_from_values(self, scripts: list[ScriptPostprocessing], values: list) -> dict:
        """{name: {argument: value}} for the values of the scripts' controls, in the order they were built."""
        values, named = list(values), {}
        for script in scripts:
            count = len(script.controls or {})
            own, values = values[:count], values[count:]
            named[str(script.name)] = dict(zip(script.controls or {}, own))
        return named

    def resolve_args(self, given, field: str = "alwayson_scripts") -> dict:
        """An API request's values: {name (any case): {"args": [...]} or {argument: value}}, checked against the
        operations here (RequestError naming the field); names are the scripts' own afterwards."""
        self.ensure_ui()  # the defaults of the values left out, before the job is queued
        if given is None:
            return {}
        if not isinstance(given, dict):
            raise RequestError(field, f"{field} must be an object: operation name -> its arguments")
        by_name = {str(s.name).lower(): s for s in self.scripts_in_preferred_order()}
        resolved = {}
        for name, values in given.items():
            script = by_name.get(str(name).strip().lower())
            if script is None:
                raise RequestError(field, f"{field}: no postprocessing operation named {name!r}; available: "
                                          f"{', '.join(s.name for s in by_name.values()) or 'none'}")
            keys = list(script.controls or {})
            if isinstance(values, dict) and set(values) == {"args"} and isinstance(values["args"], list):
                values = dict(zip(keys, values["args"]))
            if not isinstance(values, dict):
                raise RequestError(field, f"{field}[{name!r}] must be an object ({{\"args\": [...]}} or "
                                          f"argument name -> value)")
            unknown = [key for key in values if key not in keys]
            if unknown:
                raise RequestError(field, f"{field}[{name!r}]: unknown argument {unknown[0]!r}; its arguments "
                                          f"are: {', '.join(keys)}")
            resolved[str(script.name)] = dict(values)
        return resolved

    def operations(self, script_args: dict, warnings: list) -> list[ExtrasOperation]:
        """The engine's operations: each script with its controls' defaults overridden by `script_args[name]`;
        one that raises is reported under its extension, noted in `warnings`, and skipped for that image."""
        result = []
        self.ensure_ui()  # normally done: the Extras tab, or the API request, built the controls
        for script in self.scripts_in_preferred_order():
            args = {**self.defaults.get(id(script), {}), **(script_args.get(str(script.name)) or {})}
            result.append(ExtrasOperation(
                str(script.name), order_of(script.order),
                lambda item, s=script, a=args: self._call(s, "process", item, a, warnings),
                lambda item, s=script, a=args: self._call(s, "process_firstpass", item, a, warnings)))
        return result

    # --- plumbing ------------------------------------------------------------------------------------------------
    def _call(self, script, method: str, item, args: dict, warnings: list) -> None:
        before = item.image
        try:
            with self._calling(script):
                getattr(script, method)(item, **args)
            if item.image is not before and not _is_image(item.image):
                raise TypeError(f"{method}() left {type(item.image).__name__} in pp.image, not an image")
        except Exception as exc:  # noqa: BLE001 - an extension's failure never fails the job
            item.image = before
            self._report(script, method, exc)
            extension = self.extension_of.get(id(script), "")
            note = f"Extension {extension}: operation '{script.name}' failed in {method} ({type(exc).__name__}: " \
                   f"{exc}) and was skipped"
            if note not in warnings:
                warnings.append(note)

    @contextlib.contextmanager
    def _calling(self, script):
        extension = self.host.get(self.extension_of.get(id(script), "")) if self.host is not None else None
        with RUNTIME.loading(extension.name, extension.path) if extension is not None else contextlib.nullcontext():
            yield

    def _report(self, script, method: str, exc: Exception) -> None:
        if self.host is not None:
            self.host.problems.report(self.extension_of.get(id(script), ""), f"{method} of operation "
                                                                              f"'{script.name}'", exc)

    def _option(self, key: str):
        services = getattr(self.host, "services", None) or RUNTIME.services
        try:
            return services.options.get(key) if services is not None else None
        except KeyError:
            return None


class _Options:
    def __init__(self, runner):
        self.runner = runner

    def get(self, key):
        return self.runner._option(key)


def _is_image(value) -> bool:
    from PIL import Image
    return isinstance(value, Image.Image)
