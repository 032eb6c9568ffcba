"""The T5 tokenizer FLUX.1 conditions on, built offline and without the `sentencepiece` package.

    .venv/bin/python -m webui.models.t5_tokenizer download [--dir DIR] [--data-dir DIR]

FLUX.1 (like google/t5-v1_1-xxl) ships its T5 vocabulary as a SentencePiece model, `spiece.model` (FLUX.1's
`tokenizer_2/` folder adds a `tokenizer.json` converted from it). `t5_tokenizer(folders)` loads the first folder
holding either file:

- `tokenizer.json` (with its optional `tokenizer_config.json` / `special_tokens_map.json`): transformers'
  `T5Tokenizer.from_pretrained` reads it directly, offline.
- `spiece.model` alone: transformers' own loader for it needs the sentencepiece package only to parse the file,
  which is a protobuf message whose schema transformers ships (`utils.sentencepiece_model_pb2_new`). We parse it
  with that schema and build the tokenizer from the same pieces, scores and normaliser table in the same way
  transformers 5 does (pieces, then the 100 `<extra_id_N>` sentinels from 32099 down to 32000, `</s>` appended,
  `<pad>` = 0), so the ids are those of `T5TokenizerFast.from_pretrained("google/t5-v1_1-xxl")` and of diffusers'
  FluxPipeline.

Tokenizers are cached per file and its version (size and modification time).

The `download` command is the explicit action that fetches google/t5-v1_1-xxl's `spiece.model` at a pinned revision,
checks it against a pinned sha256 and its size, shows a progress bar and only then gives it its name; nothing
downloads on its own. The default folder is the data dir's `models/text_encoder/t5-tokenizer`.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from functools import lru_cache
from pathlib import Path

from .architecture import CheckpointFormatError
from .pinned_download import Progress, download_main, download_verified

log = logging.getLogger(__name__)

SPIECE = "spiece.model"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
DEFAULT_SUBDIR = Path("models") / "text_encoder" / "t5-tokenizer"
EXTRA_IDS = 100  # T5's sentinel tokens <extra_id_0..99>

# google/t5-v1_1-xxl's spiece.model, pinned: FLUX.1's tokenizer_2/spiece.model is the same file.
SOURCE_REPO = "google/t5-v1_1-xxl"
SOURCE_REVISION = "3db67ab1af984cf10548a73467f0e5bca2aaaeb2"
SOURCE_URL = f"https://huggingface.co/{SOURCE_REPO}/resolve/{SOURCE_REVISION}/{SPIECE}"
SOURCE_SIZE = 791656
SOURCE_SHA256 = "d60acb128cf7b7f2536e8f38a5b18a05535c9e14c7a355904270e15b0945ea86"

_PIECE_CONTROL, _PIECE_USER_DEFINED = 3, 4  # SentencePiece piece types that become added (special) tokens
_lock = threading.Lock()


class T5TokenizerDownloadError(RuntimeError):
    """The explicit download failed or did not verify; the message says what to do."""


def default_folder(data_dir: Path) -> Path:
    return Path(data_dir) / DEFAULT_SUBDIR


def missing_message(folders: list[Path]) -> str:
    where = Path(folders[0]) if folders else Path("DATA") / DEFAULT_SUBDIR
    looked = ", ".join(str(f) for f in folders) or "(no folder given)"
    return (f"No T5 tokenizer found (looked for {SPIECE} or {TOKENIZER_JSON} in {looked}). FLUX.1 needs "
            f"google/t5-v1_1-xxl's {SPIECE} (or the files of FLUX.1's tokenizer_2/ folder) in {where}: run "
            f"`python -m webui.models.t5_tokenizer download --dir {where}` to fetch it (791 KB, checked against "
            f"a pinned sha256), or copy the file there yourself")


def find_tokenizer_file(folders: list[Path]) -> Path | None:
    """The tokenizer file of the first folder holding one (tokenizer.json preferred, as transformers does)."""
    for folder in folders:
        for name in (TOKENIZER_JSON, SPIECE):
            path = Path(folder) / name
            if path.is_file():
                return path
    return None


def t5_tokenizer(folders: list[Path]):
    """The T5 tokenizer (a transformers PreTrainedTokenizerBase) from the first of `folders` holding `spiece.model`
    or `tokenizer.json`; CheckpointFormatError saying where to put the file, and how to get it, when none does or
    the file is not a T5 tokenizer."""
    path = find_tokenizer_file([Path(f) for f in folders])
    if path is None:
        raise CheckpointFormatError(missing_message([Path(f) for f in folders]))
    stat = path.stat()
    config = path.parent / TOKENIZER_CONFIG
    config_version = (config.stat().st_size, config.stat().st_mtime_ns) if config.is_file() else None
    return _load(str(path.resolve()), stat.st_size, stat.st_mtime_ns, config_version)


@lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int, config_version):
    """One tokenizer per file version (the arguments after `path` only key the cache)."""
    file = Path(path)
    with _lock:
        try:
            if file.name == TOKENIZER_JSON:
                from transformers import T5Tokenizer

                return T5Tokenizer.from_pretrained(str(file.parent), local_files_only=True)
            return _from_spiece(file)
        except CheckpointFormatError:
            raise
        except Exception as error:  # a damaged or foreign file: say which and why
            raise CheckpointFormatError(f"{file}: not a usable T5 tokenizer file ({error}); replace it with "
                                        f"google/t5-v1_1-xxl's {SPIECE} (`python -m webui.models.t5_tokenizer "
                                        f"download --dir {file.parent}`)") from None


def read_spiece(path: Path):
    """The SentencePiece ModelProto in `path`, parsed with the schema transformers ships (protobuf only)."""
    from google.protobuf.message import DecodeError
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf()
    model = proto.ModelProto()
    try:
        model.ParseFromString(Path(path).read_bytes())
    except DecodeError as error:
        raise CheckpointFormatError(f"{path}: not a SentencePiece model ({error})") from None
    if not model.pieces:
        raise CheckpointFormatError(f"{path}: a SentencePiece model without pieces")
    if model.trainer_spec.model_type != 1:  # 1 = UNIGRAM, what every T5 vocabulary is
        raise CheckpointFormatError(f"{path}: not a Unigram SentencePiece model (T5's kind)")
    return model


def _from_spiece(path: Path):
    """Build what T5Tokenizer.from_pretrained builds from a spiece.model: the pieces and their scores, then the
    sentinels in reverse, the model's normalisation table, and its control / user-defined pieces as added tokens."""
    from tokenizers import AddedToken
    from transformers import T5Tokenizer

    model = read_spiece(path)
    options = _config_options(path.parent)
    extra_ids = int(options.pop("extra_ids", EXTRA_IDS))
    vocab = [(piece.piece, piece.score) for piece in model.pieces]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]
    added = [AddedToken(p.piece, normalized=False, special=p.type == _PIECE_CONTROL)
             for p in model.pieces if p.type in (_PIECE_CONTROL, _PIECE_USER_DEFINED)]
    charsmap = model.normalizer_spec.precompiled_charsmap or None
    return T5Tokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap, unk_id=model.trainer_spec.unk_id,
                       extra_ids=extra_ids, additional_special_tokens=added, vocab_file=str(path),
                       name_or_path=str(path.parent), **options)


def _config_options(folder: Path) -> dict:
    """The tokenizer_config.json settings that change behaviour (the special tokens, sentinel count and maximum
    length); the rest (class names, file names, chat templates) do not apply here."""
    path = folder / TOKENIZER_CONFIG
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointFormatError(f"{path}: unreadable ({error})") from None
    wanted = ("eos_token", "unk_token", "pad_token", "extra_ids", "model_max_length")
    return {k: (v["content"] if isinstance(v, dict) and "content" in v else v)
            for k, v in config.items() if k in wanted and v is not None}


# --- the explicit download ---------------------------------------------------------------------------------------

def download_spiece(folder: Path, progress: Progress | None = None, timeout: float = 60.0) -> Path:
    """Fetch google/t5-v1_1-xxl's spiece.model (pinned revision) into `folder` unless it is there. It streams to a
    temporary name beside its target, must have the pinned size and sha256 and parse as a SentencePiece model, and
    only then takes its name; nothing is left behind otherwise. T5TokenizerDownloadError says why it failed."""
    folder = Path(folder)
    target = folder / SPIECE
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    digest = download_verified(SOURCE_URL, target, SOURCE_SIZE, SOURCE_SHA256, SOURCE_REPO, read_spiece,
                               (CheckpointFormatError,), T5TokenizerDownloadError, progress, timeout)
    log.info("downloaded %s into %s (sha256 %s)", SPIECE, folder, digest)
    return target


def main(argv: list[str] | None = None) -> int:
    return download_main(argv, "Download the T5 tokenizer FLUX.1 needs (google/t5-v1_1-xxl's spiece.model, pinned "
                               "and checksummed).", SPIECE, f"fetch {SPIECE} into the tokenizer folder",
                         DEFAULT_SUBDIR, lambda folder: (folder / SPIECE).is_file(),
                         lambda folder, bars: download_spiece(folder, progress=bars), T5TokenizerDownloadError)


if __name__ == "__main__":
    sys.exit(main())
