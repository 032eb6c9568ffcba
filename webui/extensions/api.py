"""Our own extension API: what an extension's `scripts/*.py` gets when it defines `register(webui)`.

    def register(webui):
        @webui.process
        def shout(run):
            run.all_prompts = [p.upper() for p in run.all_prompts]

Hooks receive the `webui.extensions.hooks.ProcessingRun` (and an event where noted); UI additions are built
when the UI is; settings become options like ours (config.json, the Settings tab, `/sdapi/v1/options`).
See docs/extensions.md for the whole API and a complete example.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from ..settings.options import Option

HOOK_POINTS = ("before_process", "process", "before_batch", "process_batch", "after_batch", "image",
               "before_save", "saved", "denoiser", "after_process")


@dataclass
class Section:
    """Controls of an extension inside the txt2img / img2img tabs (an accordion). `build(mode)` creates the
    Gradio components and returns those whose values the hooks receive (`webui.args(run)`), in order; the API
    passes the same values as `alwayson_scripts: {"<title>": {"args": [...]}}`."""
    extension: str
    title: str
    build: Callable[[str], list]
    modes: tuple[str, ...] = ("txt2img", "img2img")
    open: bool = False

    @property
    def key(self) -> str:
        return self.title.lower()


@dataclass
class Tab:
    extension: str
    title: str
    build: Callable[[], None]
    elem_id: str


@dataclass
class Route:
    path: str
    endpoint: Callable
    methods: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSummary:
    title: str  # "name.safetensors [hash]"
    name: str
    hash: str | None
    sha256: str | None
    family: str  # "sd1" | "sd2" | "sdxl"
    path: str


class ExtensionAPI:
    """One per extension; everything it adds is recorded under its name."""

    def __init__(self, extension, host, services):
        self.name: str = extension.name
        self.base_dir = extension.path
        self.log = logging.getLogger(f"extensions.{extension.name}")
        self._host, self._services = host, services
        self.hooks: dict[str, list[Callable]] = {point: [] for point in HOOK_POINTS}
        self.sections: list[Section] = []
        self.tabs: list[Tab] = []
        self.routes: list[Route] = []
        self.app_started: list[Callable] = []

    # --- hooks ---------------------------------------------------------------------------------------------------
    def on(self, point: str, function: Callable) -> Callable:
        if point not in self.hooks:
            raise ValueError(f"unknown hook {point!r} (one of: {', '.join(HOOK_POINTS)})")
        self.hooks[point].append(function)
        return function

    def before_process(self, function): return self.on("before_process", function)
    def process(self, function): return self.on("process", function)
    def before_batch(self, function): return self.on("before_batch", function)
    def process_batch(self, function): return self.on("process_batch", function)
    def after_batch(self, function): return self.on("after_batch", function)
    def on_image(self, function): return self.on("image", function)
    def before_save(self, function): return self.on("before_save", function)
    def on_image_saved(self, function): return self.on("saved", function)
    def on_denoiser(self, function): return self.on("denoiser", function)
    def after_process(self, function): return self.on("after_process", function)

    def args(self, run, title: str | None = None) -> list:
        """The values of this extension's section (`title`: which one, when it has several) for this run: from
        the UI's controls or the API's alwayson_scripts; the controls' defaults when the request gave none."""
        sections = [s for s in self.sections if title is None or s.title.lower() == title.lower()]
        if not sections:
            raise ValueError(f"extension {self.name} has no section {title!r}" if title else
                             f"extension {self.name} has no section")
        section = sections[0]
        given = run.request.script_args.get(section.key)
        if given is None:
            return list(self._host.section_defaults(section, run.request.mode))
        return list(given)

    # --- UI and API ----------------------------------------------------------------------------------------------
    def add_section(self, title: str, build: Callable[[str], list], modes=("txt2img", "img2img"),
                    open: bool = False) -> Section:
        section = Section(self.name, title, build, tuple(modes), open)
        self.sections.append(section)
        return section

    def add_tab(self, title: str, build: Callable[[], None], elem_id: str | None = None) -> Tab:
        tab = Tab(self.name, title, build, elem_id or f"tab_{self.name}_{len(self.tabs)}")
        self.tabs.append(tab)
        return tab

    def add_setting(self, key: str, default: Any, label: str, *, choices=None, minimum=None, maximum=None,
                    info: str = "", section: str | None = None, kind: type | None = None) -> None:
        """An option of this extension: shown in Settings (in `section`, default: the extension's name), stored in
        config.json, readable with `webui.setting(key)` and over `/sdapi/v1/options`."""
        kind = kind or (type(default) if isinstance(default, (bool, int, float, str, list)) else object)
        title = section or self.name
        self._services.options.add_option(key, Option(default, label, kind, tuple(choices) if choices else None,
                                                      minimum, maximum, section=(title.lower(), title), info=info))

    def add_route(self, path: str, endpoint: Callable, methods=("GET",), **kwargs) -> None:
        """An HTTP route on the server's FastAPI app (added after the built-in ones)."""
        self.routes.append(Route(path, endpoint, tuple(methods), kwargs))

    def on_app_started(self, function: Callable) -> Callable:
        """`function(app)` once the FastAPI app (with the UI mounted) is ready."""
        self.app_started.append(function)
        return function

    # --- reading the server's state ------------------------------------------------------------------------------
    def setting(self, key: str) -> Any:
        return self._services.options.get(key)

    @property
    def settings(self) -> dict:
        return self._services.options.as_dict()

    def current_model(self) -> ModelSummary | None:
        current = self._services.models.current
        if current is None:
            return None
        info, model = current
        return ModelSummary(info.title, info.name, info.shorthash, info.sha256, model.family, str(info.path))

    @property
    def flags(self):
        return self._services.flags
