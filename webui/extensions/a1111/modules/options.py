"""A1111's `modules.options`: `OptionInfo` (how an extension declares a setting), `OptionHTML`,
`options_section`, and `Options`, the class of `shared.opts`: a view onto the server's persisted options.

`opts.samples_format` reads an option, `opts.samples_format = "jpg"` validates, sets and saves it (config.json),
`opts.add_option(key, OptionInfo(...))` declares an extension's option for the Settings tab.
"""
from __future__ import annotations

import html
import json
import os
import weakref
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from webui.extensions.a1111.runtime import RUNTIME
from webui.settings.options import Option, OptionError


class OptionInfo:
    """An option as A1111 extensions declare it. The chaining helpers (`info`, `html`, `link`, `js`,
    `needs_restart`, `needs_reload_ui`) add to the HTML shown around the setting and return the same object."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False,
                 category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.comment_before = comment_before  # HTML shown after the label
        self.comment_after = comment_after  # HTML shown after the control
        self.infotext = infotext  # the infotext key this option is written under, if any
        self.restrict_api = restrict_api  # not settable through the HTTP API
        self.do_not_save = False
        self.hints: list[str] = []  # the plain texts given to .info(), our Settings tab's hint line
        self.restart = False  # .needs_restart() / .needs_reload_ui() was called

    def link(self, label: str, url: str) -> "OptionInfo":
        self.comment_before += f"[<a href='{html.escape(url, quote=True)}' target='_blank'>{html.escape(label)}</a>]"
        return self

    def js(self, label: str, js_func: str) -> "OptionInfo":
        self.comment_before += f"[<a onclick='{html.escape(js_func, quote=True)}(); return false'>" \
                               f"{html.escape(label)}</a>]"
        return self

    def info(self, info: str) -> "OptionInfo":
        self.hints.append(str(info))
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html_text: str) -> "OptionInfo":
        self.comment_after += html_text
        return self

    def needs_restart(self) -> "OptionInfo":
        self.restart = True
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self) -> "OptionInfo":
        self.restart = True
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self

    def __repr__(self) -> str:
        return f"OptionInfo(default={self.default!r}, label={self.label!r}, section={self.section!r})"


class OptionHTML(OptionInfo):
    """A block of explanatory HTML in the Settings tab (its text is its value)."""

    def __init__(self, text: str):
        super().__init__(str(text).strip(), label="", component=_settings_html)
        self.do_not_save = True


def _settings_html(**kwargs):
    import gradio as gr
    return gr.HTML(elem_classes="settings-info", **kwargs)


def options_section(section_identifier: tuple, options_dict: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    """Put every option of `options_dict` in the Settings section `(id, title)` (or `(id, title, category)`)."""
    section = tuple(section_identifier)
    for info in options_dict.values():
        info.section = section[:2]
        if len(section) > 2:
            info.category_id = section[2]
    return options_dict


# --- OptionInfo <-> our Option ----------------------------------------------------------------------------------

def _kind_of(default: Any, component_args: Any) -> type:
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        step = component_args.get("step") if isinstance(component_args, dict) else None
        if isinstance(step, float) and not step.is_integer():  # an int default on a fractional slider
            return float
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, str):
        return str
    if isinstance(default, (list, tuple)):
        return list
    return object


def _choices(kind: type, default: Any, args: Any) -> tuple | None:
    """A fixed list of allowed values (for a list option: of its items), when the component offers exactly that
    and the default keeps to them."""
    if kind is object or not isinstance(args, dict):
        return None
    raw = args.get("choices")
    if not isinstance(raw, (list, tuple)) or not raw or args.get("allow_custom_value"):
        return None
    values = tuple(c[1] if isinstance(c, tuple) and len(c) == 2 else c for c in raw)  # (label, value) pairs
    if not all(isinstance(v, (str, int, float)) for v in values):
        return None
    if not all(item in values for item in (default if kind is list else [default])):
        return None
    return values


def _bound(kind: type, default: Any, args: Any, name: str) -> float | None:
    if kind not in (int, float) or not isinstance(args, dict):
        return None
    value = args.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if (name == "minimum" and default < value) or (name == "maximum" and default > value):
        return None  # a default outside its own slider: do not enforce a range the extension does not respect
    return value


def _hides_dirs(component_args: Any) -> bool:
    """Whether an extension marked its option as a server path the way A1111's do: `component_args=shared.hide_dirs`
    (`{"visible": False}` under --hide-ui-dir-config); as in A1111, any argument dict that hides the component."""
    return isinstance(component_args, dict) and component_args.get("visible", True) is False


def option_from_info(info: OptionInfo) -> Option:
    """Our `Option` for an extension's `OptionInfo` (type from the default, choices and range from the
    component's arguments)."""
    kind = _kind_of(info.default, info.component_args)
    section = tuple(info.section[:2]) if isinstance(info.section, (tuple, list)) and len(info.section) >= 2 \
        and info.section[0] is not None else None
    return Option(info.default, str(info.label or ""), kind,
                  choices=_choices(kind, info.default, info.component_args),
                  minimum=_bound(kind, info.default, info.component_args, "minimum"),
                  maximum=_bound(kind, info.default, info.component_args, "maximum"),
                  section=section, info=" ".join(info.hints), component=info.component,
                  component_args=info.component_args, restart=info.restart,
                  restricted=_hides_dirs(info.component_args))


def info_from_option(option: Option) -> OptionInfo:
    """An `OptionInfo` describing one of our own options (what `opts.data_labels` shows for them)."""
    args = option.component_args
    if args is None and option.choices and not callable(option.choices):
        args = {"choices": list(option.choices)}
    info = OptionInfo(option.default, option.label, option.component, args, section=option.section)
    if option.info:
        info.info(option.info)
    if option.restart:
        info.needs_restart()
    return info


# The OptionInfo objects extensions registered, per server options object (the settings of one running server).
_REGISTERED: "weakref.WeakKeyDictionary[Any, dict[str, OptionInfo]]" = weakref.WeakKeyDictionary()


def registered_infos(server_options) -> dict[str, OptionInfo]:
    return _REGISTERED.setdefault(server_options, {})


# --- shared.opts --------------------------------------------------------------------------------------------------

def _server_options():
    return RUNTIME.require().options


def _options_in_force():
    """What reads see: inside a run's hooks its options (the request's override_settings applied), else the
    server's (see RunScopedHooks in webui/extensions/host.py)."""
    return RUNTIME.options_in_force


def _check_storable(key: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise OptionError(f"option {key!r}: {type(value).__name__} values cannot be stored in config.json") from None


class OptionsData(Mapping):
    """`opts.data`: the live values by key. `data[key] = value` sets (validated) without saving, as in A1111;
    `opts.save()` writes them."""

    def __getitem__(self, key: str) -> Any:
        return _options_in_force().get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_server_options().as_dict())

    def __len__(self) -> int:
        return len(_server_options().as_dict())

    def __setitem__(self, key: str, value: Any) -> None:
        _check_storable(key, value)
        _server_options().update({key: value}, save=False)

    def copy(self) -> dict[str, Any]:
        return _server_options().as_dict()

    def __repr__(self) -> str:
        return repr(_server_options().as_dict())


class OptionsLabels(Mapping):
    """`opts.data_labels`: an `OptionInfo` for every declared option (ours described, extensions' as given)."""

    def __getitem__(self, key: str) -> OptionInfo:
        server = _server_options()
        registered = registered_infos(server)
        if key in registered:
            return registered[key]
        return info_from_option(server.specs[key])

    def __iter__(self) -> Iterator[str]:
        return iter(list(_server_options().specs))

    def __len__(self) -> int:
        return len(_server_options().specs)


# A1111's folder options are never empty there (their defaults are outputs/txt2img-images and so on); ours are empty
# for "the default folder". Extensions that list or open those folders (images-browser) read the folder in use.
_DEFAULT_FOLDERS = {"outdir_txt2img_samples": "txt2img-images", "outdir_img2img_samples": "img2img-images",
                    "outdir_extras_samples": "extras-images", "outdir_txt2img_grids": "txt2img-grids",
                    "outdir_img2img_grids": "img2img-grids", "outdir_save": "save"}

# A1111 options this web UI has no use for, answered with A1111's default so that extensions reading them work.
A1111_ONLY = {"temp_dir": "", "clean_temp_dir_at_start": False}


def _default_folder(key: str) -> str:
    services = RUNTIME.services
    if services is None:
        return ""
    return str(services.paths.outputs / _DEFAULT_FOLDERS[key])


class Options:
    """`shared.opts`. Unknown keys raise AttributeError, as A1111's do."""

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        server = _options_in_force()
        if key == "sd_model_checkpoint":
            title = RUNTIME.services.models.current_title()
            if title:
                return title
        try:
            value = server.get(key)
        except KeyError:
            if key in A1111_ONLY:
                return A1111_ONLY[key]
            raise AttributeError(f"'Options' object has no attribute {key!r}") from None
        if key in _DEFAULT_FOLDERS and not value:
            return _default_folder(key)
        return value

    def __setattr__(self, key: str, value: Any) -> None:
        """`opts.key = value`: validated, set and saved to config.json (OptionError when the value is wrong)."""
        _check_storable(key, value)
        _server_options().update({key: value})

    @property
    def data(self) -> OptionsData:
        return OptionsData()

    @property
    def data_labels(self) -> OptionsLabels:
        return OptionsLabels()

    @property
    def restricted_opts(self) -> set[str]:
        """A1111's `opts.restricted_opts` (also `shared.restricted_opts`): keys locked under
        --hide-ui-dir-config. Our own (A1111's list and every `outdir_*`) are always locked; a key an extension
        adds here is locked too."""
        return _server_options().restricted

    def add_option(self, key: str, info: OptionInfo) -> None:
        """Declare an extension's option; its stored value (config.json) is kept when valid. Our own options keep
        their definition (an extension cannot change their type)."""
        server = _server_options()
        if not isinstance(info, OptionInfo):
            raise TypeError(f"add_option({key!r}, ...) needs an OptionInfo, got {type(info).__name__}")
        if key not in _builtin_keys():
            registered_infos(server)[key] = info
            server.add_option(key, option_from_info(info))
        if callable(info.onchange):
            server.on_change(key, info.onchange)

    def onchange(self, key: str, func: Callable[[], Any], call: bool = True) -> None:
        """Call `func()` after `key` changes (and once now, unless `call` is False)."""
        _server_options().on_change(key, func)
        if call:
            func()

    def get_default(self, key: str) -> Any:
        try:
            return _server_options().default(key)
        except KeyError:
            return None

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Set and save `key`; True if its value changed, False if it was the same or not allowed (invalid value,
        an API write to an option that restricts the API). Listeners always run on a change."""
        server = _server_options()
        info = registered_infos(server).get(key)
        if info is not None and (info.do_not_save or (is_api and info.restrict_api)):
            return False
        try:
            _check_storable(key, value)
            checked = server.validate({key: value})[key]
        except OptionError:
            return False
        try:
            if server.get(key) == checked:
                return False
        except KeyError:
            pass
        server.update({key: checked})
        return True

    def save(self, filename: str | None = None) -> None:
        """Write the options to config.json (or to `filename`, as JSON)."""
        server = _server_options()
        if filename is None or os.path.abspath(filename) == str(RUNTIME.services.paths.config_file):
            server.save()
            return
        with open(filename, "w", encoding="utf-8") as fh:
            json.dump(server.as_dict(), fh, indent=4, ensure_ascii=False)

    def cast_value(self, key: str, value: Any) -> Any:
        """`value` (often text from an infotext) converted to the type of `key`'s default."""
        if value is None:
            return None
        default = self.get_default(key)
        if default is None:
            return value
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).strip().lower() not in ("false", "0", "")
        if isinstance(default, (int, float)) and isinstance(value, str):
            number = float(value)
            return int(number) if isinstance(default, int) and number.is_integer() else number
        return type(default)(value) if not isinstance(default, (list, tuple, dict)) else value

    def dumpjson(self) -> str:
        return json.dumps(_server_options().as_dict(), ensure_ascii=False)

    def __repr__(self) -> str:
        return "<modules.shared.opts>" if RUNTIME.services is None else f"<modules.shared.opts {self.data!r}>"


def _builtin_keys() -> set[str]:
    from webui.settings.options import OPTIONS
    return set(OPTIONS)
