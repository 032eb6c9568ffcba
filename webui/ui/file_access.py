"""Which files on the server Gradio may hand out (`/gradio_api/file=`, its cache) and the switch that makes it check.

Gradio copies the files an event's inputs and outputs name into its cache and serves them from there. Its check
(`gradio.processing_utils._check_allowed`) accepts as *inputs* only files a user uploaded (Gradio's upload folder)
and as *outputs* only files in `allowed_paths`, the working directory or the system's temp directory, never one in
`blocked_paths`. Gradio runs that check only once its Blocks "has launched", which `launch()` records and
`mount_gradio_app` does not: `count_as_launched` records it for our mounted page, or an event input naming
`/etc/passwd` is copied into the cache and served (issue #19).

What the page needs from disk: Gradio's upload folder (allowed by Gradio itself) and the outputs folders (our
galleries send pictures, which Gradio writes into its cache; A1111 extensions may show saved files by path). The
extra networks' previews go through `/sd_extra_networks/thumb`, not Gradio. Blocked, even inside an allowed folder:
the settings, job history, hash cache, styles, ui-config and last-used files, and the model and extension folders.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .ui_config import LastUsed

OUTPUT_OPTIONS = ("outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples",
                  "outdir_save")  # outdir_save: the galleries' Save / Zip downloads


def count_as_launched(blocks) -> None:
    """Make Gradio's own file checks run for a Blocks served through `gr.mount_gradio_app`.

    GRADIO INTERNAL (gradio 6.x): `_check_allowed` returns without checking while `blocks.has_launched` is false,
    and only `Blocks.launch()` sets it (Gradio's reload mode sets it the same way, `utils.SourceFileReloader
    .swap_blocks`). `tests/test_security_gradio.py::test_gradio_checks_files_only_for_launched_blocks` fails if
    Gradio stops reading this attribute; the attack tests there fail if the check stops running."""
    blocks.has_launched = True


def _resolved(path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def served_folders(services) -> list[Path]:
    """The outputs folder and the per-tab output folders the options name (relative ones from the working
    directory, as the engine saves them)."""
    folders = [_resolved(services.paths.outputs)]
    options = services.options.as_dict()
    for key in OUTPUT_OPTIONS:
        value = options.get(key)
        if value:
            folders.append(_resolved(value))
    return list(dict.fromkeys(folders))


def upload_folder() -> Path:
    """Gradio's upload / cache folder as its documented `GRADIO_TEMP_DIR` setting makes it."""
    return _resolved(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def blocked_paths(services, logins: list[tuple[str, str]] | None = None) -> list[Path]:
    """Data-dir files and model / extension folders that are never served, even from an allowed folder. A folder
    that holds a served folder (outputs inside the models folder, say) is left out so that outputs still work."""
    paths = services.paths
    data = _resolved(paths.data_dir)
    last_used = LastUsed(data)
    files = [paths.config_file, paths.hash_cache_file, paths.styles_file, data / "ui-config.json",
             last_used.path(None), *(last_used.path(user) for user, _ in logins or [])]
    files += [paths.jobs_db.with_name(paths.jobs_db.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    folders = [data / "models", paths.checkpoints, paths.lora, paths.lycoris, paths.vae, paths.embeddings,
               paths.controlnet, paths.annotators, *paths.upscaler_dirs.values(), *paths.preview_decoder_dirs,
               paths.extensions, paths.cache_dir]
    keep = [*served_folders(services), upload_folder()]
    blocked = [_resolved(f) for f in files]
    blocked += [folder for folder in map(_resolved, folders) if not any(_inside(k, folder) for k in keep)]
    return list(dict.fromkeys(blocked))


def mount_arguments(services, logins: list[tuple[str, str]] | None = None) -> dict:
    """`allowed_paths` / `blocked_paths` for `gr.mount_gradio_app` (absolute paths, as Gradio wants them)."""
    return {"allowed_paths": [str(p) for p in served_folders(services)],
            "blocked_paths": [str(p) for p in blocked_paths(services, logins)]}
