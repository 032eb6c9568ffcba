"""Gradio 3.41 idioms that A1111 extensions still write, accepted by Gradio 6 (the web UI's Gradio).

This is the ONE place where the extension compatibility layer depends on Gradio's internals: `apply()` (called once
by `ExtensionHost.run_preloads` / `ExtensionHost.load`, before any extension's file is imported) adds what Gradio 3
had and Gradio 6 removed, and never changes what Gradio 6 already accepts, so the web UI's own code behaves as before:

- `_js=` on every event listener (`.click`, `.change`, `.then`, ...; also with `fn=None`) is Gradio 6's `js=`;
  `show_progress=True/False` is `"full"` / `"hidden"`; listener keywords Gradio 6 no longer has (`every=`,
  `status_tracker=`) are dropped with a log line.
- `gr.Box` is a `gr.Group` (a context manager like any layout).
- `.style(...)` on components and layouts maps what still exists (`height`, `container`, `equal_height`,
  `grid`/`columns`/`rows`/`object_fit`/`preview` for a Gallery, `size`, `full_width`) onto the block and ignores the
  rest; it returns the block, as Gradio 3's did.
- `gr.Dropdown.update(...)`, `gr.Textbox.update(...)`, `component.update(...)` (class or instance) return
  `gr.update(...)`.
- `visible=False` given to a component by an extension's code is Gradio 6's `visible="hidden"`: the component is in
  the page but not shown, as Gradio 3 did, so extensions' page scripts still find (and click) their hidden buttons
  and fields.
- A component an extension builds straight inside a `gr.Tabs` (Gradio 3 allowed it) is placed just before the tabs.
- Constructor keywords renamed or removed since Gradio 3 are translated: `source=` / `tool=` / `brush_radius=` /
  `shape=` on images (`sources=[...]`), `grid=` on a Gallery (`columns=`), `type="index"` where it still exists, ...;
  other keywords a component does not take are dropped (logged once) when the component is built by an extension's
  code; our own code still gets Gradio's TypeError.
- `gr.inputs.*` / `gr.outputs.*` (Gradio 2/3 aliases) are the current components.
- A component class defined outside Gradio (A1111's `ToolButton`, an extension's subclass of it) does not write a
  `.pyi` stub next to its source file (Gradio 6 would write one into the extension's git checkout).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import types
from pathlib import Path

import gradio as gr
import gradio.blocks as gradio_blocks
import gradio.component_meta as component_meta
import gradio.events as gradio_events
from gradio.blocks import Block, BlockContext
from gradio.components.base import Component

log = logging.getLogger("webui.extensions")

_applied = False
_GRADIO_DIR = Path(gr.__file__).resolve().parent
_WEBUI_DIR = Path(__file__).resolve().parents[2]  # the web UI's own package (webui/)
_SHIM_DIR = Path(__file__).resolve().parent  # webui/extensions/a1111: the modules extensions call
_DROPPED_LISTENER_KEYS = ("every", "status_tracker")
_warned: set[tuple[str, str]] = set()
_HIDABLE_LAYOUTS = ("Row", "Column", "Group", "Box", "Accordion")
LAYOUT_CLASS = "gradio3-layout"  # a layout an extension built hidden: its visibility is HIDDEN_CLASS
HIDDEN_CLASS = "gradio3-hidden"
CSS = f".{HIDDEN_CLASS} {{ display: none !important; }}\n"  # part of the page's CSS (webui.ui.blocks)
_STYLE_ATTRIBUTES = ("height", "container", "equal_height", "columns", "rows", "object_fit", "preview", "size",
                     "allow_preview", "show_label", "min_width", "scale")


def apply() -> None:
    """Install the translations (idempotent)."""
    global _applied
    if _applied:
        return
    _applied = True
    _patch_listeners()
    _patch_dependency()
    _patch_constructors()
    _patch_layout_updates()
    _skip_stub_files()
    _add_box()
    _add_style()
    _add_update()
    _add_input_output_aliases()


# --- event listeners -------------------------------------------------------------------------------------------

def translate_listener_kwargs(kwargs: dict) -> dict:
    """Gradio 3 listener keywords as Gradio 6 takes them (in place; also returned)."""
    if "_js" in kwargs:
        js = kwargs.pop("_js")
        if kwargs.get("js") is None:
            kwargs["js"] = js
    progress = kwargs.get("show_progress")
    if progress is True:
        kwargs["show_progress"] = "full"
    elif progress is False or progress is None and "show_progress" in kwargs:
        kwargs["show_progress"] = "hidden"
    for key in _DROPPED_LISTENER_KEYS:
        if key in kwargs:
            _warn_once("event listener", key)
            kwargs.pop(key)
    return kwargs


def _wrap_listener(listener):
    if getattr(listener, "_gradio3", False):
        return listener

    @functools.wraps(listener)
    def wrapper(*args, **kwargs):
        return listener(*args, **translate_listener_kwargs(kwargs))

    wrapper._gradio3 = True
    return wrapper


def _is_listener(value) -> bool:
    return isinstance(value, types.FunctionType) and value.__qualname__.endswith("_setup.<locals>.event_trigger")


def _all_subclasses(cls: type) -> list[type]:
    found, stack = [], [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


def _patch_listeners() -> None:
    for cls in [Block, *_all_subclasses(Block)]:
        for name, value in list(vars(cls).items()):
            if _is_listener(value):
                setattr(cls, name, _wrap_listener(value))
    original_setup = gradio_events.EventListener._setup  # listeners of component classes defined from now on

    @functools.wraps(original_setup)
    def setup(*args, **kwargs):
        return _wrap_listener(original_setup(*args, **kwargs))

    gradio_events.EventListener._setup = staticmethod(setup)
    original_on = gr.on

    @functools.wraps(original_on)
    def on(*args, **kwargs):
        return original_on(*args, **translate_listener_kwargs(kwargs))

    gr.on = on


def _patch_dependency() -> None:
    """`.then(...)` / `.success(...)` / `.failure(...)` on what a listener returns."""
    original_init = gradio_events.Dependency.__init__

    @functools.wraps(original_init)
    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        for name in ("then", "success", "failure"):
            chained = getattr(self, name, None)
            if callable(chained):
                setattr(self, name, _wrap_listener(chained))

    gradio_events.Dependency.__init__ = init


# --- constructors ----------------------------------------------------------------------------------------------

def _image_sources(kwargs: dict) -> None:
    source = kwargs.pop("source", None)
    tool = kwargs.pop("tool", None)
    for key in ("brush_radius", "brush_color", "mask_opacity", "shape", "invert_colors", "mirror_webcam"):
        kwargs.pop(key, None)
    if source is not None and "sources" not in kwargs:
        kwargs["sources"] = [{"canvas": "upload"}.get(source, source)]
    if tool in ("sketch", "editor", "color-sketch") and "sources" not in kwargs:
        kwargs["sources"] = ["upload"]


def _gallery_grid(kwargs: dict) -> None:
    grid = kwargs.pop("grid", None)
    if grid is not None and kwargs.get("columns") is None:
        kwargs["columns"] = _last(grid)


def _last(value):
    return value[-1] if isinstance(value, (list, tuple)) and value else value


_RENAMES = {"Image": _image_sources, "Gallery": _gallery_grid}


# The folders extensions live in (the extensions folder; ExtensionHost adds it): code there is an extension's.
EXTENSION_ROOTS: set[Path] = set()


def _called_from_extension() -> bool:
    """Whether the code that builds the component is an extension's: the nearest caller frame in an extension's
    folder or in A1111's `modules` package (built for extensions), before any frame of the web UI's own code.
    Gradio's, the standard library's and other packages' frames are looked through (Gradio rebuilds a component for
    an update from an asyncio task: no extension frame there, so our own updates are never translated)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.parent == _SHIM_DIR and path.name == Path(__file__).name:
            frame = frame.f_back
            continue
        if _SHIM_DIR in path.parents or _SHIM_DIR == path.parent:
            return True
        if any(root in path.parents for root in EXTENSION_ROOTS):
            return True
        if _WEBUI_DIR in path.parents:
            return False
        frame = frame.f_back
    return False


def _in_tabs() -> bool:
    """Whether the block being built goes straight into a gr.Tabs (whose every shown child Gradio 6 draws as a tab)."""
    from gradio.context import Context
    return isinstance(Context.block, gr.Tabs)


def _out_of_tabs(block) -> None:
    """A component built straight inside a gr.Tabs goes just before the tabs: Gradio 3 allowed it there, Gradio 6
    counts it among the tabs and then mislabels them."""
    tabs = block.parent
    holder = getattr(tabs, "parent", None)
    if not isinstance(tabs, gr.Tabs) or holder is None or block not in tabs.children or tabs not in holder.children:
        return
    tabs.children.remove(block)
    holder.children.insert(holder.children.index(tabs), block)
    block.parent = holder


def _wrap_init(cls: type) -> None:
    original = vars(cls).get("__init__")
    if original is None or getattr(original, "_gradio3", False):
        return
    rename = _RENAMES.get(cls.__name__)
    try:
        accepted = set(inspect.signature(original).parameters)
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(original).parameters.values())
    except (TypeError, ValueError):
        return
    visible = inspect.signature(original).parameters.get("visible")
    # components: Gradio 6's `visible="hidden"`; its layouts draw "hidden" as shown, and leave a hidden layout's
    # children out of the page: those get HIDDEN_CLASS instead
    hides = issubclass(cls, Component) and visible is not None and "hidden" in str(visible.annotation)
    layout = cls.__name__ in _HIDABLE_LAYOUTS and visible is not None

    @functools.wraps(original)
    def init(self, *args, **kwargs):
        if rename is not None:
            rename(kwargs)
        known: list[bool] = []

        def from_extension() -> bool:  # the stack is only walked when it matters
            if not known:
                known.append(_called_from_extension())
            return known[0]

        if kwargs.get("render") is False:  # Gradio rebuilding a component for an update: not an extension's call
            return original(self, *args, **kwargs)
        tabs = issubclass(cls, Component) and _in_tabs() and from_extension()
        if tabs and "container" in accepted:
            kwargs.setdefault("container", False)  # not wrapped in a Form (that would be another child of the tabs)
        if kwargs.get("visible") is False and (hides or layout) and not tabs and from_extension():
            # Gradio 3 kept hidden blocks in the page, where extensions' scripts find them
            if layout:  # shown to Gradio 6 (so its children are in the page), hidden by the page's CSS
                kwargs["visible"] = True
                kwargs["elem_classes"] = [*_class_list(kwargs.get("elem_classes")), LAYOUT_CLASS, HIDDEN_CLASS]
            else:
                kwargs["visible"] = "hidden"
        if not has_var_kw:
            unknown = [k for k in kwargs if k not in accepted]
            if unknown and from_extension():
                for key in unknown:
                    _warn_once(cls.__name__, key)
                    kwargs.pop(key)
        result = original(self, *args, **kwargs)
        if tabs:
            _out_of_tabs(self)
        return result

    init._gradio3 = True
    cls.__init__ = init


def _class_list(value) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def _patch_layout_updates() -> None:
    """`gr.update(visible=...)` of a layout an extension built hidden shows / hides it by HIDDEN_CLASS."""
    original = gradio_blocks.postprocess_update_dict

    @functools.wraps(original)
    def postprocess_update_dict(block, update_dict, postprocess=True):
        classes = _class_list(getattr(block, "elem_classes", None))
        if LAYOUT_CLASS in classes and "visible" in update_dict:
            shown = update_dict["visible"] not in (False, "hidden")
            classes = [c for c in classes if c != HIDDEN_CLASS] + ([] if shown else [HIDDEN_CLASS])
            block.visible, block.elem_classes = True, classes
            update_dict = {**update_dict, "visible": True, "elem_classes": classes}
        return original(block, update_dict, postprocess)

    gradio_blocks.postprocess_update_dict = postprocess_update_dict


def _patch_constructors() -> None:
    for cls in [*_all_subclasses(Component), *_all_subclasses(BlockContext)]:
        if cls.__module__.startswith("gradio."):
            _wrap_init(cls)


def _skip_stub_files() -> None:
    original = component_meta.create_or_modify_pyi

    @functools.wraps(original)
    def create_or_modify_pyi(component_class, class_name, events):
        try:
            source = Path(inspect.getfile(component_class)).resolve()
        except (OSError, TypeError):
            return None
        if _GRADIO_DIR not in source.parents:
            return None
        return original(component_class, class_name, events)

    component_meta.create_or_modify_pyi = create_or_modify_pyi


# --- gr.Box, .style(), .update() ------------------------------------------------------------------------------

def _add_box() -> None:
    if hasattr(gr, "Box"):
        return

    class Box(gr.Group):
        """Gradio 3's `gr.Box`: a bordered group (a `gr.Group` here)."""

        def get_block_name(self) -> str:
            return "group"

        def get_block_class(self) -> str:
            return "group"

        def get_config(self, cls=None):
            return super().get_config(cls or gr.Group)

    Box.__module__ = "gradio.layouts.group"
    gr.Box = Box
    gr.layouts.Box = Box


def style(self, **kwargs):
    """Gradio 3's `.style(...)`: what still exists is set on the block; the rest is ignored. Returns the block."""
    if "grid" in kwargs and kwargs.get("columns") is None:
        kwargs["columns"] = _last(kwargs.pop("grid"))
    full_width = kwargs.pop("full_width", None)
    if full_width is not None and hasattr(self, "scale") and isinstance(self, gr.Button):
        self.scale = 1 if full_width else 0
    for key, value in kwargs.items():
        if key in _STYLE_ATTRIBUTES and hasattr(self, key) and value is not None:
            if key == "size" and isinstance(self, gr.Button) and value not in ("sm", "md", "lg"):
                continue
            setattr(self, key, value)
    return self


def _update(*args, **kwargs):
    if args:  # Gradio 3 allowed the value positionally
        kwargs.setdefault("value", args[0])
    return gr.update(**kwargs)


class _UpdateMethod:
    """`Class.update(...)` and `instance.update(...)`: both `gr.update(...)`, as in Gradio 3."""

    def __get__(self, instance, owner):
        return _update


def _add_style() -> None:
    for cls in (Block,):
        if not hasattr(cls, "style"):
            cls.style = style


def _add_update() -> None:
    for cls in (Component, BlockContext):
        if "update" not in vars(cls):
            cls.update = _UpdateMethod()


def _add_input_output_aliases() -> None:
    if hasattr(gr, "inputs") and hasattr(gr, "outputs"):
        return
    names = ("Textbox", "Number", "Slider", "Checkbox", "CheckboxGroup", "Radio", "Dropdown", "Image", "Video",
             "Audio", "File", "Dataframe", "Timeseries", "State", "Label", "HTML", "JSON", "Gallery", "Chatbot",
             "Model3D", "Plot", "HighlightedText", "Code", "ColorPicker", "Markdown")
    aliases = {name: getattr(gr, name) for name in names if hasattr(gr, name)}
    aliases["Textbox"] = gr.Textbox
    aliases["Carousel"] = gr.Gallery
    aliases["Keyvalues"] = gr.JSON
    for module_name in ("inputs", "outputs"):
        if not hasattr(gr, module_name):
            module = types.ModuleType(f"gradio.{module_name}", f"Gradio 3's gr.{module_name}: the components.")
            module.__dict__.update(aliases)
            sys.modules[module.__name__] = module
            setattr(gr, module_name, module)


def _warn_once(where: str, key: str) -> None:
    if (where, key) not in _warned:
        _warned.add((where, key))
        log.info("Gradio 3 keyword %r of %s is not in Gradio 6: ignored", key, where)


@contextlib.contextmanager
def detached_blocks():
    """Blocks built in this block are built as if outside any page, although the page's Blocks is open: A1111 calls
    `on_ui_tabs` after building txt2img and img2img (whose components extensions' tabs use, e.g. Civitai Helper's
    prompt boxes), and each extension tab's Blocks is rendered into the page afterwards.
    GRADIO INTERNAL (gradio 6.x): the render context and `Context.root_block`."""
    from gradio.context import Context, get_render_context, set_render_context
    block, root = get_render_context(), Context.root_block
    set_render_context(None)
    Context.root_block = None
    try:
        yield
    finally:
        set_render_context(block)
        Context.root_block = root
