"""Download ControlNet preprocessor weights (the explicit action; nothing downloads on its own).

    .venv/bin/python -m webui.control.download MODULE [MODULE ...] [--dir models/annotators]

Fetches the files each module needs from lllyasviel/Annotators into the annotators folder (default: the data dir's
`models/annotators`, or --controlnet-annotator-models-path), with a progress bar per file; every file is checked
against the sha256 pinned in `annotator_sha256.py` and by loading it before it takes its name (a file with no
pinned sha256 is not downloaded). Files already there are kept.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..console_progress import DownloadBars
from .annotators import AnnotatorError, download_annotators, module_files
from .preprocessors import PreprocessorRegistry, UnknownPreprocessorError


def main(argv: list[str] | None = None) -> int:
    from ..settings.flags import parse_flags
    from ..settings.paths import Paths

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="+", help="preprocessor names, e.g. depth_midas openpose_full")
    parser.add_argument("--dir", type=Path, default=None, help="annotators folder (default: the data dir's)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    folder = args.dir or Paths.from_flags(parse_flags(["--data-dir", args.data_dir] if args.data_dir else [])) \
        .annotators
    registry = PreprocessorRegistry(folder)
    status = 0
    for module in args.modules:
        try:
            name = registry.get(module).name
        except UnknownPreprocessorError as error:
            print(error, file=sys.stderr)
            status = 2
            continue
        if not module_files(name):
            print(f"{name}: needs no weight files")
            continue
        bars = DownloadBars()
        try:
            paths = download_annotators(name, folder, progress=bars)
        except AnnotatorError as error:
            bars.close()
            print(f"{name}: {error}", file=sys.stderr)
            status = 1
            continue
        bars.close()
        print(f"{name}: ready ({', '.join(p.name for p in paths)} in {folder})")
    return status


if __name__ == "__main__":
    sys.exit(main())
