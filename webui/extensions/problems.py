"""What went wrong in an extension: recorded (with its name and traceback), logged, shown in the UI; never fatal."""
from __future__ import annotations

import logging
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

log = logging.getLogger("webui.extensions")


@dataclass(frozen=True)
class ExtensionProblem:
    extension: str  # the extension's folder name ("" when not known)
    where: str  # what it was doing: "loading scripts/foo.py", "process hook of 'Wildcards'", "install.py", ...
    message: str  # the exception's one-line summary
    traceback: str = ""
    when: float = field(default_factory=time.time)


# A1111's model internals: its LDM/SGM model code, the sampler classes that drive it, the hijacks that patch it. An
# extension that imports or hooks these cannot run here (our engine is not A1111's); it is reported with a clear
# sentence instead of a traceback. Names are module prefixes.
INTERNAL_MODULES = (
    "ldm", "sgm", "k_diffusion", "repositories", "modules.sd_hijack", "modules.sd_hijack_", "modules.sd_samplers_",
    "modules.sd_unet", "modules.sd_models_xl", "modules.sd_models_config", "modules.sd_disable_initialization",
    "modules.sd_vae_approx", "modules.sd_vae_taesd", "modules.lowvram", "modules.models", "modules.unipc",
    "modules.xlmr", "modules.sub_quadratic_attention", "modules.hypernetworks", "modules.sd_emphasis",
)
_CANNOT_IMPORT = re.compile(r"cannot import name '([^']+)' from '([^']+)'")


class ModelInternalsError(AttributeError):
    """Raised by the `modules` views for A1111 internals they do not have (`sd_samplers.create_sampler`,
    `shared.sd_model.model`, ...). An AttributeError, so that `hasattr` feature checks keep working."""

    def __init__(self, internal: str, what: str = "LDM model internals"):
        self.internal, self.what = internal, what
        super().__init__(internals_message(internal, what))


def internals_message(internal: str, what: str = "LDM model internals") -> str:
    return (f"needs A1111's {what} ({internal}), which this web UI doesn't have: it runs its own engine, so "
            "this extension (or this part of it) cannot work here")


def _is_internal_module(name: str) -> bool:
    """`prefix` itself or a module under it; a prefix ending in `_` is a family of names (sd_samplers_*)."""
    return any(name.startswith(prefix) if prefix.endswith("_") else name == prefix or name.startswith(prefix + ".")
               for prefix in INTERNAL_MODULES)


def explain_internals(exc: BaseException) -> str | None:
    """The clear sentence for an exception that comes from reaching A1111's model internals, else None.
    Follows the exception's causes (an extension may catch the first ImportError and try an older name)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ModelInternalsError):
            return str(exc)
        if isinstance(exc, ModuleNotFoundError) and exc.name and _is_internal_module(exc.name):
            return internals_message(exc.name, _what(exc.name))
        if isinstance(exc, ImportError) and not isinstance(exc, ModuleNotFoundError):
            match = _CANNOT_IMPORT.search(str(exc))
            if match:
                name, module = match.groups()
                if module == "modules" and _is_internal_module(f"modules.{name}"):
                    return internals_message(f"modules.{name}", _what(f"modules.{name}"))
                table = getattr(sys.modules.get(module), "A1111_INTERNALS", None) or {}
                if name in table:
                    return internals_message(f"{module}.{name}", table[name])
        exc = exc.__cause__ or exc.__context__
    return None


def _what(module: str) -> str:
    if module.startswith("modules.sd_samplers_") or module.split(".")[0] == "k_diffusion":
        return "sampler internals"
    if module.startswith("modules.sd_hijack"):
        return "model hijacks (LDM model internals)"
    return "LDM model internals"


class ProblemLog:
    """The problems of this run of the server, newest last (bounded)."""

    def __init__(self, limit: int = 200):
        self._items: list[ExtensionProblem] = []
        self._limit = limit
        self._lock = threading.Lock()

    def report(self, extension: str, where: str, exc: BaseException) -> ExtensionProblem:
        summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        internals = explain_internals(exc)
        if internals is not None:  # a known limit, not a bug: the sentence in the UI, the traceback in the console
            summary = internals[0].upper() + internals[1:]
        problem = ExtensionProblem(extension, where, summary, "" if internals else text)
        log.error("extension %s failed in %s: %s\n%s", extension or "?", where, summary, text)
        with self._lock:
            self._items.append(problem)
            del self._items[:-self._limit]
        return problem

    def all(self) -> list[ExtensionProblem]:
        with self._lock:
            return list(self._items)

    def for_extension(self, name: str) -> list[ExtensionProblem]:
        return [p for p in self.all() if p.extension == name]
