"""Finding the installed extensions and loading the enabled ones, each in isolation.

Start-up order (see `app.main`): `ExtensionHost.discover` reads the extensions folder, `run_preloads` lets each
enabled extension's `preload.py` add command-line flags, the services are built, then `load` imports every
`scripts/*.py` (the extension's folder first on `sys.path`, A1111's `modules` package importable), collecting
A1111 `Script` classes and our own `register(webui)` entry points. Whatever raises is reported under the
extension's name (console, and the Extensions tab) and that part is skipped; the server always starts.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .a1111 import COMPAT_PATH, gradio3
from .a1111.runtime import RUNTIME
from .callbacks import CallbackRegistry
from .hooks import DispatchingHooks, HookChain, ProcessingHooks
from .problems import ProblemLog

log = logging.getLogger("webui.extensions")


@dataclass
class Extension:
    name: str  # the folder's name
    path: Path
    enabled: bool = True
    modules: list = field(default_factory=list)  # imported scripts/*.py modules
    api: object = None  # its webui.extensions.api.ExtensionAPI once loaded

    @property
    def script_files(self) -> list[Path]:
        folder = self.path / "scripts"
        return sorted(p for p in folder.glob("*.py") if p.is_file()) if folder.is_dir() else []

    @property
    def javascript(self) -> list[Path]:
        folder = self.path / "javascript"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix in (".js", ".mjs") and p.is_file())

    @property
    def stylesheet(self) -> Path | None:
        css = self.path / "style.css"
        return css if css.is_file() else None

    @property
    def preload_file(self) -> Path | None:
        preload = self.path / "preload.py"
        return preload if preload.is_file() else None


def _module_name(extension: str, path: Path) -> str:
    return "webui_extension_" + re.sub(r"\W", "_", f"{extension}_{path.stem}")


@contextlib.contextmanager
def _import_path(*folders: Path):
    """`folders` first on sys.path for the duration (A1111 puts the extension's folder first while it imports)."""
    added = [str(f) for f in folders]
    for folder in reversed(added):
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        for folder in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def ensure_compat_importable() -> None:
    """A1111's `modules` package and `launch` importable (extensions import them at any time, not only while
    loading), after our own folders so that they never shadow anything of ours."""
    if str(COMPAT_PATH) not in sys.path:
        sys.path.append(str(COMPAT_PATH))
    gradio3.apply()  # Gradio 3 idioms (`_js=`, gr.Box, .style(), X.update(...)) before any extension imports


class ExtensionHost:
    def __init__(self, root: Path, disabled: Sequence[str] = (), disable_all: bool = False,
                 problems: ProblemLog | None = None):
        self.root = Path(root)
        gradio3.EXTENSION_ROOTS.update({self.root.absolute(), self.root.resolve()})  # code under it: extensions'
        self.problems = problems or ProblemLog()
        self.callbacks = CallbackRegistry(self.problems)
        self.disable_all = disable_all
        self.extensions = self.discover(self.root, set(disabled), disable_all)
        self.script_classes: list[tuple[Extension, type, Path]] = []  # A1111 Script subclasses found
        self.runners: dict[str, object] = {}  # "txt2img"/"img2img" -> modules.scripts.ScriptRunner
        self.xyz_grid = None  # A1111's xyz_grid.py module, which extensions add X/Y/Z plot axes to (xyz_bridge.py)
        self.builtin_scripts_data: list = []  # its modules.scripts.scripts_data entry
        self.postprocessing_classes: list = []  # (extension, ScriptPostprocessing subclass, path) found
        self.postprocessing = None  # their ScriptPostprocessingRunner once loaded (the Extras tab, API, engine)
        self.services = None
        self._hooks: ProcessingHooks | None = None
        self._section_defaults: dict[tuple[str, str, str], list] = {}  # (extension, title, mode) -> values

    # --- discovery ---------------------------------------------------------------------------------------------
    @staticmethod
    def discover(root: Path, disabled: set[str], disable_all: bool = False) -> list[Extension]:
        if not root.is_dir():
            return []
        found = [Extension(p.name, p, enabled=not disable_all and p.name not in disabled)
                 for p in sorted(root.iterdir(), key=lambda p: p.name.lower())
                 if p.is_dir() and not p.name.startswith(".")]
        return found

    def enabled(self) -> list[Extension]:
        return [e for e in self.extensions if e.enabled]

    def get(self, name: str) -> Extension | None:
        return next((e for e in self.extensions if e.name == name), None)

    # --- preload.py: before the flags are parsed ---------------------------------------------------------------
    def run_preloads(self, parser: argparse.ArgumentParser) -> None:
        ensure_compat_importable()
        for extension in self.enabled():
            preload = extension.preload_file
            if preload is None:
                continue
            try:
                with _import_path(extension.path), RUNTIME.loading(extension.name, extension.path, preload):
                    module = _import_file(_module_name(extension.name, preload), preload)
                    if hasattr(module, "preload"):
                        module.preload(parser)
            except Exception as exc:  # noqa: BLE001 - a broken preload.py never stops the server
                self.problems.report(extension.name, "preload.py", exc)
            except SystemExit as exc:
                self.problems.report(extension.name, "preload.py", RuntimeError(f"called exit({exc.code})"))

    # --- scripts: once the services exist ------------------------------------------------------------------------
    def load(self, services) -> None:
        """Import every enabled extension's scripts, then set up the A1111 script runners and our API hooks."""
        from .api import ExtensionAPI
        from .a1111.script_hooks import A1111Hooks, build_runners
        self.services = services
        ensure_compat_importable()
        RUNTIME.bind(services, self)
        from .a1111.xyz_bridge import load_xyz_grid
        load_xyz_grid(self)  # A1111's xyz_grid.py in scripts_data before any extension's scripts import
        import modules.extra_networks
        modules.extra_networks.initialize()  # network kinds are registered again by the scripts loaded now
        for extension in self.enabled():
            extension.api = ExtensionAPI(extension, self, services)
            for path in extension.script_files:
                self._load_script_file(extension, path)
        self.runners = build_runners(self)
        # A1111 declares extensions' options (on_ui_settings) at start-up, UI or not: the API and the first
        # generation read them (the UI's build calls the callbacks again, as A1111's Reload UI does).
        self.callbacks.call("ui_settings")
        from .a1111.postprocessing_hooks import build_postprocessing
        self.postprocessing = build_postprocessing(self)  # Extras operations: modules.scripts.scripts_postproc
        self._hooks = RunScopedHooks([ApiHooks(self), A1111Hooks(self)], self.problems)
        services.models.on_loaded.append(self._model_loaded)

    def _load_script_file(self, extension: Extension, path: Path) -> None:
        from modules.scripts import Script
        from .a1111.postprocessing_hooks import collect_postprocessing
        where = f"loading {path.relative_to(extension.path)}"
        try:
            with _import_path(extension.path), RUNTIME.loading(extension.name, extension.path, path):
                module = _import_file(_module_name(extension.name, path), path)
                extension.modules.append(module)
                self._register_script_classes(extension, module, path, Script)
                collect_postprocessing(self, extension, module, path)  # Extras operations (postprocessing_hooks)
                register = getattr(module, "register", None)
                if callable(register):
                    register(extension.api)
        except Exception as exc:  # noqa: BLE001
            self.problems.report(extension.name, where, exc)
        except SystemExit as exc:
            self.problems.report(extension.name, where, RuntimeError(f"called exit({exc.code})"))

    def _register_script_classes(self, extension: Extension, module, path: Path, base: type) -> None:
        """Every `Script` subclass the module holds, as A1111 registers them: defined in the file or imported
        into it (sd-dynamic-prompts defines its class in its package and imports it into scripts/*.py). Our own
        classes of the `modules` package (the base `Script`, ...) are not scripts; a class already registered by
        an earlier file (two files importing the same class) is registered once (A1111 would make it twice)."""
        known = {cls for _, cls, _ in self.script_classes}
        for value in list(vars(module).values()):
            if not inspect.isclass(value) or not issubclass(value, base) or value in known:
                continue
            if value.__module__ == "modules" or value.__module__.startswith("modules."):
                continue
            known.add(value)
            self.script_classes.append((extension, value, path))

    def _model_loaded(self, info, model) -> None:
        if self.callbacks.has("model_loaded"):
            from modules import shared
            self.callbacks.call("model_loaded", shared.sd_model_view(info, model))

    # --- what the rest of the server asks ------------------------------------------------------------------------
    @property
    def hooks(self) -> ProcessingHooks:
        return self._hooks or ProcessingHooks()

    def record_section_defaults(self, section, mode: str, values: list) -> None:
        self._section_defaults[(section.extension, section.key, mode)] = list(values)

    def section_defaults(self, section, mode: str) -> list:
        """The default values of a section's controls (known once its UI was built, offscreen with --nowebui)."""
        return list(self._section_defaults.get((section.extension, section.key, mode), []))

    def alwayson_titles(self, mode: str) -> dict[str, str]:
        """Lower-cased title -> title of every always-on script and section of this tab (API alwayson_scripts)."""
        titles = {}
        runner = self.runners.get(mode)
        for script in (runner.alwayson_scripts if runner else []):
            titles[script.title().lower()] = script.title()
        for api in self.apis():
            for section in api.sections:
                if mode in section.modes:
                    titles[section.key] = section.title
        return titles

    def selectable_titles(self, mode: str) -> list[str]:
        runner = self.runners.get(mode)
        return [script.title() for script in runner.selectable_scripts] if runner else []

    def apis(self) -> list:
        return [e.api for e in self.enabled() if e.api is not None]

    def javascript_files(self) -> list[tuple[Extension, Path]]:
        return [(e, js) for e in self.enabled() for js in e.javascript]

    def stylesheets(self) -> list[tuple[Extension, Path]]:
        return [(e, e.stylesheet) for e in self.enabled() if e.stylesheet is not None]

    def shutdown(self) -> None:
        self.callbacks.call("script_unloaded")


class RunScopedHooks(HookChain):
    """The hook chain, with `shared.opts` reading the run's options (its override_settings) while each hook of
    it runs, as A1111 applies override_settings to opts for the duration of a job."""

    def dispatch(self, point: str, *args) -> None:
        options = getattr(args[0], "options", None) if args else None
        if options is None:
            super().dispatch(point, *args)
            return
        with RUNTIME.run_options(options):
            super().dispatch(point, *args)


class ApiHooks(DispatchingHooks):
    """Our own extension API's hooks (`webui.before_process(...)` and the like), in extension order."""

    name = "extensions"

    def __init__(self, host: ExtensionHost):
        self.host = host

    def dispatch(self, point: str, *args) -> None:
        for api in self.host.apis():
            for function in api.hooks.get(point, []):
                try:
                    function(*args)
                except Exception as exc:  # noqa: BLE001
                    self.host.problems.report(api.name, f"{point} hook {getattr(function, '__name__', '')}", exc)
                    run = args[0]
                    run.warnings.append(f"Extension {api.name}: its {point} hook failed ({type(exc).__name__}: "
                                        f"{exc}) and was skipped")

    @property
    def wants_denoiser(self) -> bool:  # type: ignore[override]
        return any(api.hooks.get("denoiser") for api in self.host.apis())


def _import_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def read_disabled(config_file: Path) -> list[str]:
    """`disabled_extensions` from config.json, before the options object exists (preload runs before that)."""
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
        value = data.get("disabled_extensions", []) if isinstance(data, dict) else []
        return [str(v) for v in value] if isinstance(value, list) else []
    except (OSError, ValueError):
        return []


def parse_flags_with_extensions(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, ExtensionHost]:
    """The flags, with the flags enabled extensions add in their preload.py, and the host that found them."""
    from ..settings.flags import build_parser
    from ..settings.paths import Paths
    argv = list(sys.argv[1:] if argv is None else argv)
    preliminary, _ = build_parser().parse_known_args(argv)
    paths = Paths.from_flags(preliminary)
    host = ExtensionHost(paths.extensions, read_disabled(paths.config_file),
                         disable_all=preliminary.disable_all_extensions)
    parser = build_parser()
    host.run_preloads(parser)
    return parser.parse_args(argv), host
