"""The Qwen3 tokenizer Z-Image conditions on, loaded offline, and its explicit pinned download.

    .venv/bin/python -m webui.models.qwen_tokenizer download [--dir DIR] [--data-dir DIR]

Z-Image's text encoder is Qwen3-4B; diffusers' `ZImagePipeline` wraps each prompt in the tokenizer's chat template
(one user turn, `add_generation_prompt=True`, `enable_thinking=True`) before tokenizing it, so the tokenizer is
needed together with its `tokenizer_config.json`, where the chat template lives (or a `chat_template.jinja` beside
it). `qwen_tokenizer(folders)` loads the first folder holding `tokenizer.json` (or the older `vocab.json` +
`merges.txt` pair) with transformers' own `Qwen2Tokenizer.from_pretrained(folder, local_files_only=True)`, which
is what `ZImagePipeline.from_pretrained` does with a Z-Image diffusers folder's `tokenizer/` (so that folder works
too: put it first in `folders`). Tokenizers are cached per folder and file versions.

The `download` command is the explicit action that fetches Qwen/Qwen3-4B's `tokenizer.json` and
`tokenizer_config.json` at a pinned revision, checks each against a pinned size and sha256, shows a progress bar and
only then gives the files their names; nothing downloads on its own. Z-Image-Turbo's `tokenizer/` folder carries the
same `tokenizer.json` (same sha256) and a Qwen3 chat template that renders Z-Image's prompts identically. The default
folder is the data dir's `models/text_encoder/qwen3-tokenizer`.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .architecture import CheckpointFormatError
from .pinned_download import Progress, download_main, download_verified

log = logging.getLogger(__name__)

TOKENIZER_JSON = "tokenizer.json"
VOCAB_JSON = "vocab.json"
MERGES_TXT = "merges.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
DEFAULT_SUBDIR = Path("models") / "text_encoder" / "qwen3-tokenizer"


@dataclass(frozen=True)
class PinnedFile:
    name: str
    size: int
    sha256: str


# Qwen/Qwen3-4B at a pinned commit; revision, sizes and sha256 as published by projects pinning these exact files
# (the Git LFS oid/size of tokenizer.json, which Z-Image-Turbo's tokenizer/ shares; tokenizer_config.json's sha256
# pinned beside this revision).
SOURCE_REPO = "Qwen/Qwen3-4B"
SOURCE_REVISION = "1cfa9a7208912126459214e8b04321603b3df60c"
PINNED_FILES: tuple[PinnedFile, ...] = (
    PinnedFile(TOKENIZER_JSON, 11422654, "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"),
    PinnedFile(TOKENIZER_CONFIG, 9732, "d5d09f07b48c3086c508b30d1c9114bd1189145b74e982a265350c923acd8101"),
)

_lock = threading.Lock()


class QwenTokenizerDownloadError(RuntimeError):
    """The explicit download failed or did not verify; the message says what to do."""


def default_folder(data_dir: Path) -> Path:
    return Path(data_dir) / DEFAULT_SUBDIR


def source_url(name: str) -> str:
    return f"https://huggingface.co/{SOURCE_REPO}/resolve/{SOURCE_REVISION}/{name}"


def missing_message(folders: list[Path]) -> str:
    where = Path(folders[0]) if folders else Path("DATA") / DEFAULT_SUBDIR
    looked = ", ".join(str(f) for f in folders) or "(no folder given)"
    return (f"No Qwen3 tokenizer found (looked for {TOKENIZER_JSON}, or {VOCAB_JSON} + {MERGES_TXT}, with "
            f"{TOKENIZER_CONFIG} in {looked}). Z-Image needs Qwen3's tokenizer and its chat template in {where}: "
            f"run `python -m webui.models.qwen_tokenizer download --dir {where}` to fetch them (11 MB, checked "
            f"against pinned sha256 values), or copy the files of a Z-Image diffusers folder's tokenizer/ there")


def has_tokenizer_files(folder: Path) -> bool:
    folder = Path(folder)
    return (folder / TOKENIZER_JSON).is_file() or ((folder / VOCAB_JSON).is_file() and (folder / MERGES_TXT).is_file())


def find_tokenizer_folder(folders: list[Path]) -> Path | None:
    """The first folder holding the tokenizer's vocabulary (tokenizer.json, or vocab.json + merges.txt)."""
    for folder in folders:
        if has_tokenizer_files(Path(folder)):
            return Path(folder)
    return None


def qwen_tokenizer(folders: list[Path]):
    """Qwen3's tokenizer (a transformers `Qwen2Tokenizer`) from the first of `folders` holding its files; a
    CheckpointFormatError saying where to put them, and how to get them, when none does, when the chat template is
    missing or when the files are not a Qwen tokenizer."""
    folders = [Path(f) for f in folders]
    folder = find_tokenizer_folder(folders)
    if folder is None:
        raise CheckpointFormatError(missing_message(folders))
    if not (folder / TOKENIZER_CONFIG).is_file():
        raise CheckpointFormatError(
            f"{folder}: {TOKENIZER_CONFIG} is missing; Z-Image reads its prompts through the chat template kept "
            f"there. Copy it beside the tokenizer (a Z-Image diffusers folder's tokenizer/ has it) or run "
            f"`python -m webui.models.qwen_tokenizer download --dir {folder}`")
    versions = tuple((name, p.stat().st_size, p.stat().st_mtime_ns)
                     for name in (TOKENIZER_JSON, VOCAB_JSON, MERGES_TXT, TOKENIZER_CONFIG, CHAT_TEMPLATE_FILE)
                     if (p := folder / name).is_file())
    return _load(str(folder.resolve()), versions)


@lru_cache(maxsize=4)
def _load(folder: str, versions: tuple):
    """One tokenizer per folder and file versions (`versions` only keys the cache)."""
    with _lock:
        try:
            from transformers import Qwen2Tokenizer

            tokenizer = Qwen2Tokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as error:  # a damaged or foreign file: say which folder and why
            raise CheckpointFormatError(f"{folder}: not a usable Qwen3 tokenizer ({error}); replace its files with "
                                        f"Qwen3's (`python -m webui.models.qwen_tokenizer download --dir "
                                        f"{folder}`)") from None
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointFormatError(f"{folder}: {TOKENIZER_CONFIG} has no chat_template; Z-Image needs Qwen3's "
                                    f"(`python -m webui.models.qwen_tokenizer download --dir {folder}`)")
    return tokenizer


# --- the explicit download ---------------------------------------------------------------------------------------

def download_tokenizer(folder: Path, progress: Progress | None = None, timeout: float = 60.0) -> list[Path]:
    """Fetch the pinned files missing from `folder`. Each streams to a temporary name beside its target, must have
    its pinned size and sha256 (and parse as JSON) and only then takes its name; nothing is left behind otherwise.
    QwenTokenizerDownloadError says why it failed; files already verified and renamed stay."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for pinned in PINNED_FILES:
        target = folder / pinned.name
        if not target.is_file():
            _download_one(pinned, target, progress, timeout)
        done.append(target)
    return done


def _download_one(pinned: PinnedFile, target: Path, progress: Progress | None, timeout: float) -> None:
    if not (pinned.size > 0 and len(pinned.sha256) == 64):
        raise QwenTokenizerDownloadError(f"{pinned.name} has no trustworthy pinned checksum here, so it is not "
                                         f"downloaded; copy it from {SOURCE_REPO} into {target.parent} yourself")
    digest = download_verified(source_url(pinned.name), target, pinned.size, pinned.sha256, SOURCE_REPO,
                               lambda path: json.loads(path.read_text(encoding="utf-8")), (OSError, ValueError),
                               QwenTokenizerDownloadError, progress, timeout)
    log.info("downloaded %s into %s (sha256 %s)", pinned.name, target.parent, digest)


def main(argv: list[str] | None = None) -> int:
    def download(folder: Path, bars: Progress) -> Path:
        download_tokenizer(folder, progress=bars)
        return folder

    return download_main(argv, "Download the Qwen3 tokenizer Z-Image needs (Qwen/Qwen3-4B's tokenizer.json and "
                               "tokenizer_config.json, pinned and checksummed).", "Qwen3 tokenizer",
                         "fetch the tokenizer files into the tokenizer folder", DEFAULT_SUBDIR,
                         lambda folder: all((folder / pinned.name).is_file() for pinned in PINNED_FILES), download,
                         QwenTokenizerDownloadError)


if __name__ == "__main__":
    sys.exit(main())
