"""A1111's `modules.extensions`: the installed extensions as A1111 lists them (`extensions`, `active()`, the
`Extension` class with `name`, `path`, `enabled`, `is_builtin`, `canonical_name`, git facts, `list_files`), a
view of this run's extension host; the git facts are read when first asked (as A1111's `read_info_from_repo`)."""
from __future__ import annotations

import os
import time

from webui.extensions.a1111.runtime import RUNTIME, lazy_attributes

from .paths_internal import extensions_builtin_dir, script_path  # noqa: F401 - A1111 exports them here


class ExtensionMetadata:
    """A1111 reads an extension's metadata.ini (script order requirements); ours loads scripts in folder
    order, so there are none to report."""

    def __init__(self, path, canonical_name):
        self.path, self.canonical_name = path, canonical_name

    def get_script_requirements(self, field, section, extra_section=None) -> list:
        return []


class Extension:
    """One installed extension. `enabled` is whether this run loaded it (A1111's reading at start-up)."""

    def __init__(self, name, path, enabled=True, is_builtin=False, metadata=None):
        self.name = name
        self.canonical_name = str(name).lower()
        self.path = str(path)
        self.enabled = enabled
        self.is_builtin = is_builtin
        self.metadata = metadata or ExtensionMetadata(self.path, self.canonical_name)
        self.status = ""
        self.can_update = False
        self.commit_hash = ""
        self.commit_date = None
        self.version = ""
        self.branch = None
        self.remote = None
        self.have_info_from_repo = False

    def read_info_from_repo(self) -> None:
        """Fill `remote`, `branch`, `commit_hash`, `commit_date`, `version` from the folder's git repository."""
        if self.have_info_from_repo:
            return
        self.have_info_from_repo = True
        services = RUNTIME.services
        manager = getattr(services, "extensions", None) if services is not None else None
        if manager is None:
            return
        try:
            info = manager.get(self.name)
        except Exception:  # noqa: BLE001 - not a folder of the extensions directory (a test's, a removed one)
            return
        self.remote = info.remote or None
        self.branch = info.branch or None
        self.commit_hash = info.commit
        self.version = info.commit[:8]
        self.status = info.version_status
        self.can_update = info.version_status == "behind"
        if info.commit_date:
            self.commit_date = int(time.mktime(time.strptime(info.commit_date, "%Y-%m-%d %H:%M:%S")))

    def list_files(self, subdir: str, extension: str) -> list:
        """The files of `subdir` with that extension (".py"), as A1111's ScriptFile(basedir, filename, path)."""
        from .scripts import ScriptFile
        folder = os.path.join(self.path, subdir)
        if not os.path.isdir(folder):
            return []
        return [ScriptFile(self.path, name, os.path.join(folder, name)) for name in sorted(os.listdir(folder))
                if os.path.splitext(name)[1].lower() == extension and os.path.isfile(os.path.join(folder, name))]

    def check_updates(self) -> None:
        services = RUNTIME.require()
        services.extensions.check_updates([self.name])
        self.have_info_from_repo = False
        self.read_info_from_repo()

    def __repr__(self) -> str:
        return f"<Extension {self.name} {'enabled' if self.enabled else 'disabled'}>"


# One view per host extension, so that `extensions.extensions[0] is extensions.extensions[0]`.
_views: dict[tuple[int, str], Extension] = {}


def _list() -> list[Extension]:
    host = RUNTIME.host
    if host is None:
        return []
    listed = []
    for ext in host.extensions:
        key = (id(host), ext.name)
        view = _views.get(key)
        if view is None:
            view = _views[key] = Extension(ext.name, ext.path, enabled=ext.enabled)
        view.enabled = ext.enabled
        listed.append(view)
    return listed


def active() -> list[Extension]:
    """The extensions this run loaded."""
    return [e for e in _list() if e.enabled]


def list_extensions() -> None:
    """A1111 rescans the folder; the list here always follows this run's extension host."""


def find_extension(name: str) -> Extension | None:
    return next((e for e in _list() if e.name == name or e.canonical_name == str(name).lower()), None)


def _extensions_dir() -> str:
    from . import paths_internal
    return paths_internal.extensions_dir


__getattr__, __dir__ = lazy_attributes(globals(), {"extensions": _list, "extensions_dir": _extensions_dir})
