"""Prompt styles: A1111's `styles.csv` (name, prompt, negative_prompt; UTF-8, with or without BOM).

Applying a style puts the user's prompt where the style says `{prompt}`; a style without the placeholder is
appended after ", ". The file is re-read when it changes on disk and written atomically.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError

FIELDS = ("name", "prompt", "negative_prompt")


class StyleError(UserError, ValueError):
    """A style name that does not exist or cannot be saved; the message says which (HTTP 400)."""

    status = 400
    kind = "StyleError"


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompt(style_text: str, prompt: str) -> str:
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


class StyleDatabase:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._styles: dict[str, PromptStyle] = {}
        self._signature: tuple | None = None
        self._lock = threading.Lock()
        self.error: str | None = None

    def _read(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._styles, self._signature, self.error = {}, None, None
            return
        signature = (stat.st_mtime_ns, stat.st_size)
        if signature == self._signature:
            return
        styles: dict[str, PromptStyle] = {}
        try:
            with open(self.path, encoding="utf-8-sig", newline="") as handle:
                for row in csv.DictReader(handle, skipinitialspace=True):
                    name = (row.get("name") or "").strip()
                    if name:
                        styles[name] = PromptStyle(name, row.get("prompt") or "", row.get("negative_prompt") or "")
            self.error = None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            self.error = f"Could not read styles from {self.path}: {exc}"
            return
        self._styles, self._signature = styles, signature

    def all(self) -> list[PromptStyle]:
        with self._lock:
            self._read()
            return list(self._styles.values())

    def names(self) -> list[str]:
        return [style.name for style in self.all()]

    def get(self, name: str) -> PromptStyle:
        with self._lock:
            self._read()
            style = self._styles.get(name)
        if style is None:
            raise StyleError(f"Unknown style {name!r}. Known styles: {', '.join(self.names()) or 'none'}")
        return style

    def apply(self, prompt: str, negative: str, names: list[str]) -> tuple[str, str]:
        """The prompt and negative prompt with the named styles applied, in order."""
        for name in names:
            style = self.get(name)
            prompt = merge_prompt(style.prompt, prompt)
            negative = merge_prompt(style.negative_prompt, negative)
        return prompt, negative

    def save(self, name: str, prompt: str, negative_prompt: str) -> PromptStyle:
        """Add or replace a style and write the file."""
        name = (name or "").strip()
        if not name:
            raise StyleError("A style needs a name")
        style = PromptStyle(name, prompt or "", negative_prompt or "")
        with self._lock:
            self._read()
            self._styles[name] = style
            self._write()
        return style

    def delete(self, name: str) -> None:
        with self._lock:
            self._read()
            if self._styles.pop(name, None) is None:
                raise StyleError(f"Unknown style {name!r}")
            self._write()

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for style in self._styles.values():
            writer.writerow({"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".styles-", suffix=".csv")
        try:
            with os.fdopen(handle, "w", encoding="utf-8-sig", newline="") as out:
                out.write(buffer.getvalue())
            os.replace(temp, self.path)
        except OSError as exc:
            Path(temp).unlink(missing_ok=True)
            raise StyleError(f"Could not save styles to {self.path}: {exc}") from None
        stat = self.path.stat()
        self._signature = (stat.st_mtime_ns, stat.st_size)
