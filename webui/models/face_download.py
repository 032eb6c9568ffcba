"""Download face restoration files (the explicit action; nothing downloads on its own).

    .venv/bin/python -m webui.models.face_download detector gfpgan [codeformer restoreformer detector-mobilenet]
        [--data-dir DIR]

Fetches each named file from its official release into A1111's folder under the data dir's `models/` (the detector
and GFPGAN into models/GFPGAN, CodeFormer into models/Codeformer, RestoreFormer into models/RestoreFormer), with a
progress bar; every file must match the sha256 pinned in `face_sha256.py` and load as its network before it takes
its name (a file with no pinned sha256 is not downloaded). Files already there are kept.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from ..console_progress import DownloadBars
from .face_restorers import KINDS, FaceRestorationError, RestorerFile, load_detector, load_restorer
from .face_sha256 import FACE_FILES, FaceFile

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes in all or 0)


def download_face_file(key: str, models_dir: Path, progress: Progress | None = None, timeout: float = 60.0) -> Path:
    """Fetch FACE_FILES[key] into its folder under `models_dir` unless it is there. The download streams to a
    temporary name beside its target, must match the pinned sha256 and load, and only then takes its name.
    FaceRestorationError (saying which file and why) when it is refused, fails or does not verify."""
    if key not in FACE_FILES:
        raise FaceRestorationError(f"Unknown face restoration file {key!r}; choose from {', '.join(FACE_FILES)}")
    entry = FACE_FILES[key]
    folder = Path(models_dir) / entry.folder
    target = folder / entry.file_name
    if target.is_file():
        return target
    if not entry.sha256:
        raise FaceRestorationError(f"{entry.file_name} cannot be downloaded: this version has no sha256 pinned for it "
                                   f"to check the download against. Get it from {entry.url} yourself and put it in "
                                   f"{folder}")
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{entry.file_name}.partial"
    try:
        digest = _fetch(entry, partial, progress, timeout)
        if digest != entry.sha256.lower():
            raise FaceRestorationError(f"downloaded {entry.file_name} does not match its checksum (sha256 {digest}, "
                                       f"expected {entry.sha256.lower()}); nothing was saved. Try again; if it keeps "
                                       f"differing, put a file you trust in {folder} yourself")
        _check_loadable(entry, partial)
        partial.replace(target)
        log.info("downloaded %s into %s (sha256 %s)", entry.file_name, folder, digest)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _fetch(entry: FaceFile, partial: Path, progress: Progress | None, timeout: float) -> str:
    import urllib.error
    import urllib.request

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(entry.url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            if progress:
                progress(entry.file_name, 0, total)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(entry.file_name, done, total)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as error:
        raise FaceRestorationError(f"could not download {entry.file_name} from {entry.url} ({error}); check the "
                                   f"connection, or put the file in {partial.parent} yourself") from error
    return digest.hexdigest()


def _check_loadable(entry: FaceFile, path: Path) -> None:
    """Build the network the file is for from it, so a truncated or wrong file is refused before it is kept."""
    import torch

    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        trial = Path(scratch) / entry.file_name  # the real name: the loaders read the suffix
        try:
            trial.hardlink_to(path)
        except OSError:
            shutil.copy2(path, trial)
        try:
            if entry.role == "detector":
                load_detector(trial, torch.device("cpu"))
            else:
                load_restorer(RestorerFile(next(k for k in KINDS if k.name == entry.role), trial))
        except FaceRestorationError as error:
            raise FaceRestorationError(f"downloaded {entry.file_name} is not a usable {entry.role} file ({error}); "
                                       "nothing was saved") from None


def main(argv: list[str] | None = None) -> int:
    from ..settings.flags import parse_flags
    from ..settings.paths import Paths

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help=f"what to fetch: {', '.join(FACE_FILES)}")
    parser.add_argument("--data-dir", default=None, help="the data dir whose models/ folder receives the files")
    args = parser.parse_args(argv)
    models_dir = Paths.from_flags(parse_flags(["--data-dir", args.data_dir] if args.data_dir else [])) \
        .face_restorer_root
    status = 0
    for key in args.files:
        key = key.strip().lower()
        if key not in FACE_FILES:
            print(f"unknown file {key!r}; choose from {', '.join(FACE_FILES)}", file=sys.stderr)
            status = 2
            continue
        bars = DownloadBars()
        try:
            path = download_face_file(key, models_dir, progress=bars)
        except FaceRestorationError as error:
            print(f"{key}: {error}", file=sys.stderr)
            status = 1
            continue
        finally:
            bars.close()
        print(f"{key}: ready ({path}; licence: {FACE_FILES[key].licence})")
    return status


if __name__ == "__main__":
    sys.exit(main())
