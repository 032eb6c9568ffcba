"""The Save button's folder (`outdir_save`, default outputs/save) and its `log.csv`: one row per saved picture, with
A1111's columns, so a spreadsheet or script that reads A1111's log reads ours.

A log written by an older A1111 (fewer columns) gets the current header and its rows padded, as A1111 does, so the
file stays one table."""
from __future__ import annotations

import csv
import threading
from pathlib import Path

from .infotext import parse_infotext

LOG_NAME = "log.csv"
# A1111 1.10's header, in its order ("cfgs" is its name for the CFG scale)
LOG_FIELDS = ("prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt",
              "sd_model_name", "sd_model_hash")

_log_lock = threading.Lock()  # two tabs saving at once append whole rows, one after the other


def save_dir(options, outputs_dir: str | Path) -> Path:
    """Where the Save and Zip buttons write: the `outdir_save` setting, else outputs/save."""
    try:
        folder = options.get("outdir_save")
    except KeyError:  # options without the key (a bare Options of a test): the default
        folder = ""
    return Path(folder) if folder else Path(outputs_dir) / "save"


def log_row(infotext: str, filename: str) -> list[str]:
    """The log's row for a picture saved as `filename` (relative to the save folder), from its infotext."""
    params = parse_infotext(infotext or "")
    values = {"prompt": params.get("Prompt", ""), "seed": params.get("Seed", ""), "width": params.get("Size-1", ""),
              "height": params.get("Size-2", ""), "sampler": params.get("Sampler", ""),
              "cfgs": params.get("CFG scale", ""), "steps": params.get("Steps", ""), "filename": filename,
              "negative_prompt": params.get("Negative prompt", ""), "sd_model_name": params.get("Model", ""),
              "sd_model_hash": params.get("Model hash", "")}
    if not (infotext or "").strip():  # a picture without parameters: only its file name is known
        values = {key: (filename if key == "filename" else "") for key in LOG_FIELDS}
    return ["" if values[key] is None else str(values[key]) for key in LOG_FIELDS]


def _upgrade(path: Path) -> None:
    """Give a log with an older (shorter) header the current one, padding its rows with empty cells."""
    with open(path, encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    if not rows or len(rows[0]) >= len(LOG_FIELDS):
        return
    rows[0] = list(LOG_FIELDS)
    rows[1:] = [row + [""] * (len(LOG_FIELDS) - len(row)) for row in rows[1:]]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(rows)
    tmp.replace(path)


def append_log(folder: str | Path, rows: list[list[str]]) -> Path:
    """Append `rows` (from `log_row`) to `folder/log.csv`, writing the header first into a new or empty file."""
    path = Path(folder) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with _log_lock:
        if path.exists() and path.stat().st_size:
            _upgrade(path)
        with open(path, "a", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            if file.tell() == 0:
                writer.writerow(LOG_FIELDS)
            writer.writerows(rows)
    return path
