"""Extensions' Extras operations (A1111's `ScriptPostprocessing` subclasses) found and made ready.

`collect_postprocessing` is called for every imported scripts/*.py module: as A1111's loader, every subclass the
module holds (defined there or imported) is registered once. `build_postprocessing` (after all modules loaded)
makes the runner (`modules.scripts.scripts_postproc`, with `modules.scripts.postprocessing_scripts_data`) that the
Extras tab, the Extras API and the engine use, and declares A1111's postprocessing options.
"""
from __future__ import annotations

import inspect
import sys

from webui.settings.options import Option

SECTION = ("postprocessing", "Postprocessing")


def collect_postprocessing(host, extension, module, path) -> None:
    """Record the ScriptPostprocessing subclasses `module` holds (a class seen before is not added again)."""
    from modules.scripts_postprocessing import ScriptPostprocessing
    found = getattr(host, "postprocessing_classes", None)
    if found is None:
        found = host.postprocessing_classes = []
    for value in list(vars(module).values()):
        if inspect.isclass(value) and issubclass(value, ScriptPostprocessing) and value is not ScriptPostprocessing \
                and all(value is not cls for _, cls, _ in found):
            found.append((extension, value, path))


def build_postprocessing(host):
    """One instance per class (a constructor that raises is reported and skipped); the runner published where
    A1111's modules have it; the postprocessing options declared. Returns the runner."""
    import modules.scripts as scripts
    from modules.scripts_postprocessing import ScriptPostprocessingRunner
    from .runtime import RUNTIME
    runner = ScriptPostprocessingRunner(host)
    runner.scripts = []
    data = []
    for extension, cls, path in getattr(host, "postprocessing_classes", []):
        try:
            with RUNTIME.loading(extension.name, extension.path, path):
                script = cls()
                script.filename = str(path)
            if not isinstance(script.name, str) or not script.name:
                raise TypeError(f"{cls.__name__}.name must be a non-empty string, got {script.name!r}")
        except Exception as exc:  # noqa: BLE001
            host.problems.report(extension.name, f"{cls.__name__} in {path.name}", exc)
            continue
        if script.name == "Simple Upscale":
            continue
        runner.scripts.append(script)
        runner.extension_of[id(script)] = extension.name
        data.append(scripts.ScriptClassData(cls, str(path), str(extension.path), sys.modules.get(cls.__module__)))
    scripts.postprocessing_scripts_data = data
    scripts.scripts_postproc = runner
    if host.services is not None:
        declare_options(host.services.options, runner)
        add_to_main_ui(host, runner, host.services.options.get("postprocessing_enable_in_main_ui"))
    return runner


def add_to_main_ui(host, runner, names) -> None:
    """A1111's `postprocessing_enable_in_main_ui`: each named operation also shows in txt2img and img2img as an
    always-on script (a new instance per tab) that runs its `process` on every generated image, its `pp.info`
    going into the image's infotext."""
    by_name = {str(s.name): s for s in runner.scripts or []}
    for mode, tab_runner in (getattr(host, "runners", None) or {}).items():
        for name in names or []:
            script = by_name.get(str(name))
            if script is None:
                continue
            extension = runner.extension_of.get(id(script), "")
            try:
                wrapper = _main_ui_class()(type(script)())
            except Exception as exc:  # noqa: BLE001
                host.problems.report(extension, f"{type(script).__name__} for the {mode} tab", exc)
                continue
            wrapper.filename = wrapper.script.filename = script.filename
            wrapper.is_txt2img, wrapper.is_img2img, wrapper.alwayson = mode == "txt2img", mode == "img2img", True
            tab_runner.alwayson_scripts.append(wrapper)
            tab_runner.scripts.append(wrapper)
            tab_runner.extension_of[id(wrapper)] = extension


_MAIN_UI_CLASS: list = []


def _main_ui_class():
    """The always-on Script that wraps an operation for the generation tabs (made once: modules.scripts must be
    importable, which it is only once the host has put the compat package on sys.path)."""
    if _MAIN_UI_CLASS:
        return _MAIN_UI_CLASS[0]
    from modules import scripts
    from modules.scripts_postprocessing import PostprocessedImage

    class PostprocessingInMainUI(scripts.Script):
        def __init__(self, script):
            self.script = script
            self.postprocessing_controls = None

        def title(self):
            return str(self.script.name)

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            made = self.script.ui()
            self.postprocessing_controls = made if isinstance(made, dict) else {}
            return list(self.postprocessing_controls.values())

        def postprocess_image(self, p, pp, *args):
            item = PostprocessedImage(pp.image)
            self.script.process(item, **dict(zip(self.postprocessing_controls or {}, args)))
            p.extra_generation_params.update(item.info)
            pp.image = item.image

    _MAIN_UI_CLASS.append(PostprocessingInMainUI)
    return PostprocessingInMainUI


def declare_options(options, runner) -> None:
    """A1111's Postprocessing settings (the choices follow the operations installed)."""
    from webui.engine.extras import operation_names

    def names():
        return tuple(operation_names(runner.names()))

    options.add_option("postprocessing_enable_in_main_ui", Option(
        [], "Enable postprocessing operations in txt2img and img2img tabs", list,
        choices=lambda: tuple(runner.names()), section=SECTION, restart=True,
        info="extensions' operations: shown in the generation tabs, run on every generated image"))
    options.add_option("postprocessing_disable_in_extras", Option(
        [], "Disable postprocessing operations in extras tab", list, choices=lambda: tuple(runner.names()),
        section=SECTION, restart=True, info="extensions' operations: their controls are hidden and they do not run"))
    options.add_option("postprocessing_operation_order", Option(
        [], "Postprocessing operation order", list, choices=names, section=SECTION, restart=True,
        info="the operations listed run (and show) first, in this order; the others by their own order"))
    options.add_option("postprocessing_existing_caption_action", Option(
        "Ignore", "Action for existing captions", str, choices=("Ignore", "Keep", "Prepend", "Append"),
        section=SECTION, info="when an operation writes a caption and the image already has a .txt caption"))
