"""A1111's `/file=<path>` route, as extensions' page scripts use it: `fetch("file=" + path)` for a file of their own
(tagcomplete's tag lists), `<img src="file=...">` for a saved picture.

A1111 serves it through Gradio 3, which hands out any file under the program's folder; here only these folders
are served: every enabled extension's own folder, the outputs folders (`file_access.served_folders`), and A1111's
`tmp/` folder under the program's folder (`modules.paths.script_path`), where extensions leave small files for their
page scripts (tagcomplete writes its tag folder's path there). A relative path is taken from the program's folder,
as A1111 (run from its folder) takes it.

The path is resolved with its symlinks before it is checked, so neither `..` nor a link leads out. Answers: the
file; 404 when an allowed path names nothing; 403 for a folder, a path outside the allowed folders, a hidden
name on the way (`.git`, `.env`), or a file `file_access.blocked_paths` lists (settings, history, ...) even where
an allowed folder holds it. The route sits behind the page's login (`--gradio-auth`, `ui.login.UiLoginGate`), and
exists only with the page (not with `--nowebui`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse

from ..settings.paths import PROJECT_DIR

ROUTE = "/file={path:path}"


def program_dir() -> Path:
    """A1111's `script_path` as extensions read it (`modules.paths_internal`, once one imported it; the project's
    folder before): relative `file=` paths start here, and its `tmp/` is served."""
    module = sys.modules.get("modules.paths_internal")
    return Path(getattr(module, "script_path", None) or PROJECT_DIR)


def _real(path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


# Files an extension keeps for itself, never served: databases, keys, and its settings (Civitai Helper keeps an API
# key in setting.json; images-browser its prompts and paths in wib.sqlite3).
PRIVATE_SUFFIXES = {".sqlite", ".sqlite3", ".db", ".pem", ".key", ".env", ".py", ".pyc"}


def _private_name(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith(".json") and lowered.startswith(("setting", "config", "secret", "credential", "token"))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def allowed_folders(services) -> list[Path]:
    """The folders `/file=` serves from, resolved."""
    from ..ui.file_access import served_folders
    folders = [program_dir() / "tmp", *served_folders(services)]
    host = getattr(services, "extension_host", None)
    if host is not None:
        folders += [extension.path for extension in host.enabled()]
    return list(dict.fromkeys(_real(folder) for folder in folders))


def resolve(services, raw: str) -> tuple[Path | None, int]:
    """(the file, 200) or (None, 403 / 404) for a `file=` path."""
    from ..ui.file_access import blocked_paths
    if not raw or "\x00" in raw:
        return None, 404
    given = Path(os.path.expanduser(raw))
    full = _real(given if given.is_absolute() else program_dir() / given)
    folders = allowed_folders(services)
    home = next((folder for folder in folders if _inside(full, folder)), None)
    if home is None:
        return None, 403
    if any(part.startswith(".") for part in full.relative_to(home).parts):
        return None, 403
    if full.suffix.lower() in PRIVATE_SUFFIXES or _private_name(full.name):
        return None, 403  # an extension's own data (a database of prompts, a settings file holding an API key)
    blocked = [_real(path) for path in blocked_paths(services)]
    if any(_inside(full, path) and not _inside(home, path) for path in blocked):  # not the extensions' folder
        return None, 403
    if full.is_dir():
        return None, 403
    if not full.is_file():
        return None, 404
    return full, 200


def install_file_route(app: FastAPI, services) -> None:
    """`GET` / `HEAD` `/file=<path>` on the app (before the UI's mount, which would take the path)."""

    def serve_file(path: str):
        found, status = resolve(services, path)
        if found is None:
            detail = "File not found" if status == 404 else "File not allowed"
            return JSONResponse({"detail": f"{detail}: {path}"}, status_code=status)
        return FileResponse(found, headers={"Cache-Control": "no-cache"})

    app.add_api_route(ROUTE, serve_file, methods=["GET", "HEAD"], include_in_schema=False)
