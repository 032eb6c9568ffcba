"""What the extra networks panel lists: one `Card` per checkpoint, textual-inversion embedding and LoRA, with its
preview image, description and the text a click puts into the prompt. Also finds whether a file is the preview of
a listed item (the thumbnail route serves nothing else).

Sidecars, as A1111 reads them: `<name>.png` / `<name>.preview.png` (or .jpg/.jpeg/.webp) previews, `<name>.txt` /
`<name>.description.txt` descriptions, and `<name>.json` user metadata (`activation text`, `preferred weight`;
read by the LoRA registry). A sidecar that cannot be read is skipped (and logged); it never breaks the listing.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

CHECKPOINTS, TEXTUAL_INVERSION, LORA = "checkpoints", "textual_inversion", "lora"
KINDS = (CHECKPOINTS, TEXTUAL_INVERSION, LORA)
PREVIEW_SUFFIXES = tuple(f"{middle}{ext}" for middle in ("", ".preview") for ext in (".png", ".jpg", ".jpeg", ".webp"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")  # what the thumbnail route may serve
DESCRIPTION_LIMIT = 2000  # characters of a description file shown on a card


@dataclass(frozen=True)
class Card:
    kind: str  # one of KINDS
    name: str  # shown on the card and searched
    path: Path  # the model file (or diffusers folder)
    preview: Path | None = None
    description: str = ""
    prompt: str = ""  # what a click inserts (LoRA, embedding)
    checkpoint: str = ""  # what a click selects (checkpoint title)
    disabled: str = ""  # why it cannot be used now (greyed, shown as a tooltip)
    search_terms: str = ""  # extra words the search matches besides the name

    @property
    def search_text(self) -> str:
        return " ".join(part for part in (self.name, self.search_terms) if part).lower()


def _base(path: Path) -> Path:
    """The model path without its extension (a diffusers folder stays as it is)."""
    return path if path.is_dir() else path.with_suffix("")


def preview_beside(path: Path) -> Path | None:
    """`<stem>.png`, `<stem>.preview.png` (.jpg/.jpeg/.webp too) next to a model file, the first that exists."""
    base = _base(path)
    for suffix in PREVIEW_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def description_beside(path: Path) -> str:
    """The text of `<stem>.txt` or `<stem>.description.txt`, shortened for a card; "" when there is none."""
    base = _base(path)
    for suffix in (".txt", ".description.txt"):
        candidate = base.with_name(base.name + suffix)
        if not candidate.is_file():
            continue
        try:
            with open(candidate, encoding="utf-8", errors="replace") as handle:
                text = handle.read(DESCRIPTION_LIMIT + 1).strip()
        except OSError as exc:
            log.warning("could not read description %s: %s", candidate, exc)
            continue
        return shorten(text)
    return ""


def shorten(text: str) -> str:
    return text if len(text) <= DESCRIPTION_LIMIT else text[:DESCRIPTION_LIMIT].rstrip() + "…"


def _weight_text(value) -> str:
    """A1111's preferred weight, or 1 when it is unset (0) or not a number."""
    try:
        weight = float(value)
    except (TypeError, ValueError):
        weight = 0.0
    if weight == 0.0 or weight != weight:  # unset, or NaN
        weight = 1.0
    return f"{weight:g}"


def lora_prompt(name: str, metadata: dict) -> str:
    """`<lora:NAME:weight>`, with the user's `activation text` after it, as an A1111 card click inserts."""
    tag = f"<lora:{name}:{_weight_text(metadata.get('preferred weight'))}>"
    activation = metadata.get("activation text")
    if isinstance(activation, str) and activation.strip():
        return f"{tag} {activation.strip()}"
    return tag


def _sort(cards: list[Card]) -> list[Card]:
    return sorted(cards, key=lambda card: card.name.lower())


def checkpoint_cards(services) -> list[Card]:
    cards = []
    for info in services.models.checkpoints():
        cards.append(Card(CHECKPOINTS, info.name_for_extra, info.path, preview_beside(info.path),
                          description_beside(info.path), checkpoint=info.title, search_terms=info.title))
    return _sort(cards)


def embedding_cards(services) -> list[Card]:
    """Every embedding; those the loaded checkpoint cannot use are greyed with the reason, files that could not
    be read are listed too (greyed, not clickable)."""
    database = services.models.embeddings
    database.refresh()  # cheap when nothing changed; the database is empty until its first refresh
    every = database.all()
    current = services.models.current
    skipped = database.for_model(current[1])[1] if current is not None else {}
    cards = []
    for name, embedding in every.items():
        reason = skipped.get(name, "")
        cards.append(Card(TEXTUAL_INVERSION, name, embedding.path, embedding.preview,
                          description_beside(embedding.path), prompt=name,
                          disabled=f"Not usable with the loaded checkpoint: {reason}" if reason else "",
                          search_terms=embedding.filename))
    for filename, reason in database.errors.items():
        path = database.root / filename
        cards.append(Card(TEXTUAL_INVERSION, filename, path, disabled=f"Cannot be used: {reason}",
                          search_terms=filename))
    return _sort(cards)


def lora_cards(services) -> list[Card]:
    """Every LoRA (the folders are rescanned: unchanged files are not read again); a file whose header cannot be
    read is greyed with the reason."""
    registry = services.models.loras
    registry.refresh()
    cards = []
    for info in registry.list():
        metadata = info.user_metadata or {}
        description = (info.description or "").strip() or str(metadata.get("description") or "").strip()
        alias = info.alias if info.alias and info.alias != info.name else ""
        cards.append(Card(LORA, info.name, info.path, info.preview, shorten(description),
                          prompt=lora_prompt(info.name, metadata), search_terms=f"{info.relative_name} {alias}",
                          disabled=f"Cannot be used: {info.error}" if info.error else ""))
    return _sort(cards)


LISTINGS: dict[str, Callable[[object], list[Card]]] = {
    CHECKPOINTS: checkpoint_cards, TEXTUAL_INVERSION: embedding_cards, LORA: lora_cards}


def folders(services, kind: str) -> list[Path]:
    """Where the files of `kind` are looked for (shown when a tab is empty)."""
    paths = services.paths
    return {CHECKPOINTS: [paths.checkpoints], TEXTUAL_INVERSION: [paths.embeddings],
            LORA: [paths.lora]}[kind]


# --- previews the thumbnail route may serve --------------------------------------------------------------------

def _listed(services) -> Iterator[tuple[Path, Callable[[], Path | None]]]:
    """(model path, its preview) of everything listed, without touching the disk until a preview is asked for."""
    models = services.models
    for info in models.checkpoints():
        yield info.path, (lambda path=info.path: preview_beside(path))
    if models.loras is not None:
        for info in models.loras.list():
            yield info.path, (lambda info=info: info.preview)
    if models.embeddings is not None:
        for embedding in models.embeddings.all().values():
            yield embedding.path, (lambda embedding=embedding: embedding.preview)


def _bases(requested: str) -> set[str]:
    """The model paths (without extension) a preview file at `requested` could belong to."""
    stem = os.path.splitext(requested)[0]
    bases = {requested, stem}
    if stem.endswith(".preview"):
        bases.add(stem[:-len(".preview")])
    return bases


def listed_preview(services, filename: str) -> tuple[Path | None, bool]:
    """(the preview file, True) when `filename` is the preview of a listed checkpoint, embedding or LoRA;
    (None, True) when it names the spot of a listed item's preview but no such file is there now;
    (None, False) for anything else. Paths compare as absolute, normalised strings (so `..` cannot escape)."""
    if not filename or "\x00" in filename or not os.path.isabs(filename):
        return None, False
    requested = os.path.normpath(filename)
    if not requested.lower().endswith(IMAGE_SUFFIXES):
        return None, False
    bases = _bases(requested)
    candidates = [preview for path, preview in _listed(services)
                  if os.path.normpath(str(path)) in bases or os.path.normpath(str(path.with_suffix(""))) in bases]
    if not candidates:
        return None, False
    for preview in candidates:
        found = preview()
        if found is not None and os.path.normpath(str(found)) == requested and found.is_file():
            return found, True
    return None, True
