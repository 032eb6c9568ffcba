"""The explicit, pinned download of a tokenizer file (`t5_tokenizer`, `qwen_tokenizer`) and its console command.

A file streams to a hidden temporary name beside its target (`.NAME.partial`), must have its pinned size and
sha256 and pass the caller's own check (it parses as what it should be), and only then takes its real name; nothing
is left behind otherwise. Failures raise the caller's error class with a message saying what to do. Only an explicit
user action (the `download` command) calls this; tests and start-up never do.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Callable

Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes in all or 0)


def fetch(url: str, partial: Path, name: str, progress: Progress | None, timeout: float,
          error: type[Exception]) -> tuple[str, int]:
    """Stream `url` into `partial`, reporting `progress(name, done, total)`; (sha256 hex digest, bytes written).
    `error` (naming the URL) when the connection or the file fails."""
    import urllib.error
    import urllib.request

    digest = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            if progress:
                progress(name, 0, total)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(name, done, total)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        raise error(f"could not download {name} from {url} ({exc}); check the connection, or put the file in "
                    f"{partial.parent} yourself") from exc
    return digest.hexdigest(), done


def download_verified(url: str, target: Path, size: int, sha256: str, source_repo: str,
                      check: Callable[[Path], object], check_errors: tuple[type[Exception], ...],
                      error: type[Exception], progress: Progress | None = None, timeout: float = 60.0) -> str:
    """Download `url` to `target` (its folder must exist) through `.NAME.partial`: it takes its name only when it has
    `size` bytes and `sha256` and `check(partial)` raises none of `check_errors`. Returns the sha256; `error` says
    why nothing was saved otherwise (`source_repo`: where a user can get a copy to trust)."""
    name = target.name
    partial = target.parent / f".{name}.partial"
    try:
        digest, got = fetch(url, partial, name, progress, timeout, error)
        if got != size or digest != sha256:
            raise error(f"downloaded {name} does not match its checksum ({got} bytes, sha256 {digest}; expected "
                        f"{size} bytes, sha256 {sha256}); nothing was saved. Try again; if it keeps differing, put "
                        f"a copy you trust of {source_repo}'s {name} in {target.parent} yourself")
        try:
            check(partial)
        except check_errors as exc:
            raise error(f"downloaded {name} is not usable ({exc}); nothing was saved") from None
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return digest


def download_main(argv: list[str] | None, description: str, what: str, fetch_help: str, default_subdir: Path,
                  present: Callable[[Path], bool], download: Callable[[Path, Progress], object],
                  error: type[Exception]) -> int:
    """The `download [--dir DIR] [--data-dir DIR]` command: `download(folder, progress)` into the folder (default:
    the data dir's `default_subdir`) unless `present(folder)`, with progress bars; 1 and the message on `error`.
    `what` names the result in the lines printed ("spiece.model", "Qwen3 tokenizer")."""
    from ..console_progress import DownloadBars
    from ..settings.flags import parse_flags
    from ..settings.paths import Paths

    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    command = sub.add_parser("download", help=fetch_help)
    command.add_argument("--dir", type=Path, default=None,
                         help=f"tokenizer folder (default: the data dir's {default_subdir.as_posix()})")
    command.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    folder = args.dir or Path(
        Paths.from_flags(parse_flags(["--data-dir", args.data_dir] if args.data_dir else [])).data_dir) / default_subdir
    if present(folder):
        print(f"{what}: already in {folder}")
        return 0
    bars = DownloadBars()
    try:
        result = download(folder, bars)
    except error as exc:
        bars.close()
        print(exc, file=sys.stderr)
        return 1
    bars.close()
    print(f"{what}: ready ({result})")
    return 0
