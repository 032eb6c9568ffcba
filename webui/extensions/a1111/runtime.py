"""The compat layer's binding to the running server: the one place where the `modules` shim finds our objects.

A1111 extensions expect module globals (`shared.opts`, `shared.state`, ...); those are views that read from the
`Runtime` bound here once the services are built (`bind`). Everything else in the server receives its objects
explicitly; only this shim looks them up.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Loading:
    extension: str  # folder name
    basedir: Path  # the extension's folder (what scripts.basedir() returns while it imports)
    script_path: Path | None = None


class Runtime:
    def __init__(self):
        self.services: Any = None  # webui.services.Services
        self.host: Any = None  # webui.extensions.host.ExtensionHost
        self._local = threading.local()

    def bind(self, services, host) -> None:
        self.services, self.host = services, host

    def require(self):
        if self.services is None:
            raise RuntimeError("the web UI is not running: A1111's modules are only usable from an extension loaded "
                               "by the server")
        return self.services

    # --- which extension is importing / calling ------------------------------------------------------------------
    @contextlib.contextmanager
    def loading(self, extension: str, basedir: Path, script_path: Path | None = None):
        previous = getattr(self._local, "loading", None)
        self._local.loading = Loading(extension, Path(basedir), script_path)
        try:
            yield
        finally:
            self._local.loading = previous

    @property
    def current(self) -> Loading | None:
        return getattr(self._local, "loading", None)

    def current_extension(self) -> str:
        current = self.current
        return current.extension if current else ""

    # --- the job being run on this thread (nested process_images runs in it, not through the queue) ---------------
    @contextlib.contextmanager
    def in_job(self, control):
        previous = getattr(self._local, "control", None)
        self._local.control = control
        try:
            yield
        finally:
            self._local.control = previous

    @contextlib.contextmanager
    def nested(self):
        """A process_images call inside a running job (counted, so endless recursion becomes an error)."""
        self._local.nesting = self.nesting + 1
        try:
            yield
        finally:
            self._local.nesting -= 1

    @property
    def nesting(self) -> int:
        return getattr(self._local, "nesting", 0)

    # --- the options of the run whose hooks run on this thread (its override_settings in force) -------------------
    @contextlib.contextmanager
    def run_options(self, options):
        """`shared.opts` reads `options` (a run's options, override_settings included) for the duration."""
        previous = getattr(self._local, "run_options", None)
        self._local.run_options = options
        try:
            yield
        finally:
            self._local.run_options = previous

    @property
    def options_in_force(self):
        """The options `shared.opts` reads on this thread: the running hook's run's, else the server's."""
        options = getattr(self._local, "run_options", None)
        return options if options is not None else self.require().options

    @property
    def job_control(self):
        """The RunControl of the job this thread is running, or None outside a job."""
        return getattr(self._local, "control", None)


RUNTIME = Runtime()


def lazy_attributes(module_globals: dict, table: dict):
    """PEP 562 `__getattr__` and `__dir__` for a shim module whose `table` entries (name -> function) are read when
    asked, so that they follow the running server (A1111's modules have plain globals there)."""
    module = module_globals["__name__"]

    def __getattr__(name: str):
        if name in table:
            return table[name]()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    def __dir__():
        return sorted([*module_globals, *table])

    return __getattr__, __dir__
