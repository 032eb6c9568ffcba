"""Walking the user's model folders: subfolders in name order, hidden entries skipped, symlinks followed but
never round a loop."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator


def walk_folder(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """(folder, subfolder names, file names) for `root` and everything below it, like `os.walk` (top-down, so a
    caller may prune the subfolder list in place). Nothing when `root` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        return
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield Path(dirpath), dirnames, sorted(f for f in filenames if not f.startswith("."))
