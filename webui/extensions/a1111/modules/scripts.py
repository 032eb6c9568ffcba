"""A1111's `modules.scripts`: the `Script` base class extensions subclass, and the runners of txt2img / img2img.

Script hooks are called by our engine's hook points (webui/extensions/a1111/script_hooks.py), in A1111's order:
setup, before_process, process, before_process_batch, process_batch, postprocess_batch, postprocess_image,
postprocess. A script whose `show()` returns `AlwaysVisible` runs on every generation with the values of its
`ui()` controls; one that returns True is offered in the Script dropdown and, when chosen, its `run()` replaces
the plain generation.
"""
from __future__ import annotations

import os
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

from webui.extensions.a1111.runtime import RUNTIME

AlwaysVisible = object()


@dataclass
class PostprocessImageArgs:
    image: Any  # PIL image; a script may replace it


@dataclass
class PostprocessBatchListArgs:
    images: list


class Script:
    """Subclass it in an extension's scripts/*.py (A1111's names and signatures)."""
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False
    sorting_priority = 0
    controls = None

    def title(self):
        raise NotImplementedError(f"{type(self).__name__} has no title()")

    def ui(self, is_img2img):
        """Create the Gradio controls; their values become the hooks' `*args`, in this order."""
        return []

    def show(self, is_img2img):
        """True: in the Script dropdown; AlwaysVisible: always on; False: not in this tab."""
        return True

    def run(self, p, *args):
        """A selectable script's work: return a `processing.Processed` (None: a plain process_images(p))."""
        return None

    def setup(self, p, *args): pass
    def before_process(self, p, *args): pass
    def process(self, p, *args): pass
    def before_process_batch(self, p, *args, **kwargs): pass
    def after_extra_networks_activate(self, p, *args, **kwargs): pass
    def process_before_every_sampling(self, p, *args, **kwargs): pass
    def process_batch(self, p, *args, **kwargs): pass
    def postprocess_batch(self, p, *args, **kwargs): pass
    def postprocess_batch_list(self, p, pp, *args, **kwargs): pass
    def postprocess_image(self, p, pp, *args): pass
    def postprocess_maskoverlay(self, p, ppmo, *args): pass
    def postprocess(self, p, processed, *args): pass
    def before_hr(self, p, *args): pass
    def before_component(self, component, **kwargs): pass
    def after_component(self, component, **kwargs): pass
    def on_before_component(self, callback, *, elem_id): self.on_before_component_elem_id = (elem_id, callback)
    def on_after_component(self, callback, *, elem_id): self.on_after_component_elem_id = (elem_id, callback)
    def describe(self): return ""

    def elem_id(self, item_id):
        """A1111's element id scheme: script_<tab>_<title>_<item_id>, lower-case, non-word characters dropped."""
        import re
        tab = "img2img" if self.is_img2img else "txt2img"
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}_{title}_{item_id}"


def basedir() -> str:
    """The folder of the extension whose script is being imported (the project folder otherwise)."""
    current = RUNTIME.current
    if current is not None:
        return str(current.basedir)
    from webui.settings.paths import PROJECT_DIR
    return str(PROJECT_DIR)


class ScriptRunner:
    """The scripts of one tab: instances, their order, and where their args sit in A1111's flat args list
    (index 0 is the selected script's number, 0 = None)."""

    def __init__(self, is_img2img: bool):
        self.is_img2img = is_img2img
        self.scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.extension_of: dict[int, str] = {}  # id(script) -> extension folder name
        self.defaults: dict[int, list] = {}  # id(script) -> its controls' default values

    @property
    def titles(self) -> list[str]:
        return [script.title() for script in self.selectable_scripts]

    @property
    def title_map(self) -> dict[str, Script]:
        return {script.title().lower(): script for script in self.scripts}

    def find_alwayson(self, title: str) -> Script | None:
        wanted = title.strip().lower()
        return next((s for s in self.alwayson_scripts if s.title().lower() == wanted), None)

    def find_selectable(self, title: str) -> Script | None:
        wanted = title.strip().lower()
        return next((s for s in self.selectable_scripts if s.title().lower() == wanted), None)

    def extension(self, script: Script) -> str:
        return self.extension_of.get(id(script), "")

    def layout_args(self) -> None:
        """Give every script its args_from/args_to in the flat list from the number of its controls' defaults."""
        position = 1
        for script in self.alwayson_scripts + self.selectable_scripts:
            count = len(self.defaults.get(id(script), []))
            script.args_from, script.args_to = position, position + count
            position += count

    def flat_args(self, given: dict[str, list], selected: Script | None = None, selected_args=None) -> list:
        """A1111's `p.script_args` for these per-script values (keyed by lower-cased title)."""
        self.layout_args()
        total = max([1] + [s.args_to for s in self.alwayson_scripts + self.selectable_scripts])
        flat: list = [None] * total
        flat[0] = self.selectable_scripts.index(selected) + 1 if selected in self.selectable_scripts else 0
        for script in self.alwayson_scripts + self.selectable_scripts:
            values = list(self.defaults.get(id(script), []))
            if script is selected and selected_args is not None:
                values = _merge(values, selected_args)
            elif script.title().lower() in given:
                values = _merge(values, given[script.title().lower()])
            flat[script.args_from:script.args_to] = values[:script.args_to - script.args_from]
        return flat

    def script_args_for(self, script: Script, request) -> list:
        """The `*args` a script's hooks get for this request: its values (UI or API), defaults filling the rest."""
        defaults = list(self.defaults.get(id(script), []))
        given = request.script_args.get(script.title().lower())
        return _merge(defaults, given) if given is not None else defaults


def _merge(defaults: list, given) -> list:
    """Given values in order, defaults for the ones left off the end (as A1111's API fills script args)."""
    given = list(given or [])
    return given + defaults[len(given):]


# The runners of the running server (A1111 extensions read these module attributes).
scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None
scripts_data: list = []  # ScriptClassData of every script class loaded (A1111's built-in xyz_grid.py first)
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])


def list_scripts(scriptdirname, extension, *, include_extensions=True):
    """`ScriptFile(basedir, filename, path)` for every `<extension folder>/<scriptdirname>/*<extension>` file of the
    enabled extensions, sorted by name within each (A1111's helper; this web UI has no script folder of its own)."""
    host = RUNTIME.host
    if host is None or not include_extensions:
        return []
    found = []
    for ext in host.enabled():
        folder = os.path.join(str(ext.path), scriptdirname)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.splitext(name)[1].lower() == extension.lower() and os.path.isfile(path):
                found.append(ScriptFile(str(ext.path), name, path))
    return found


def __getattr__(name: str):
    if name == "current_basedir":  # A1111's global: the folder of the extension whose script is importing
        return basedir()
    raise AttributeError(f"module 'modules.scripts' has no attribute {name!r}")


# A1111's modules.scripts imports these; extensions reach them through it (`scripts.script_callbacks.on_...`).
from . import errors, paths, script_callbacks, shared  # noqa: E402,F401
