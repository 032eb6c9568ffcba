"""What the extra networks panel lists: one `Card` per checkpoint, textual-inversion embedding and LoRA, with its
preview image, description and the text a click puts into the prompt. Also finds whether a file is the preview of
a listed item (the thumbnail route serves nothing else).

Sidecars, as A1111 reads them: `<name>.png` / `<name>.preview.png` (or .jpg/.jpeg/.webp) previews, `<name>.txt` /
`<name>.description.txt` descriptions, and `<name>.json` user metadata (`activation text`, `preferred weight`,
`description` (which wins over the .txt), `sd version`; see `network_metadata`). A sidecar that cannot be read is
skipped (and logged); it never breaks the listing.

Each card also carries its subfolder (the panel's folder buttons), its relative path and file times (the sort
orders, A1111's `extra_networks_card_order_field` / `extra_networks_card_order`), its model family (the SD1 / SD2 /
SDXL badge) and, for a file that cannot be read, why (`error`: marked, never inserted). With a checkpoint loaded,
LoRAs for another family are left out unless `lora_show_all` (and those of unknown family when the loaded
family is in `lora_hide_unknown_for_versions`), as A1111's Lora page does.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from . import network_metadata
from .network_metadata import embedding_family, lora_family, version_label

log = logging.getLogger(__name__)

CHECKPOINTS, TEXTUAL_INVERSION, LORA = "checkpoints", "textual_inversion", "lora"
KINDS = (CHECKPOINTS, TEXTUAL_INVERSION, LORA)
PREVIEW_SUFFIXES = tuple(f"{middle}{ext}" for middle in ("", ".preview") for ext in (".png", ".jpg", ".jpeg", ".webp"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")  # what the thumbnail route may serve
DESCRIPTION_LIMIT = 2000  # characters of a description file shown on a card
SORT_FIELDS = ("Path", "Name", "Date Created", "Date Modified")  # A1111's extra_networks_card_order_field
SORT_ORDERS = ("Ascending", "Descending")  # A1111's extra_networks_card_order


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
    error: str = ""  # why the file cannot be read: marked, and a click inserts nothing
    family: str | None = None  # "sd1" | "sd2" | "sdxl" | None (unknown)
    relative: str = ""  # the path below its folder (posix, with extension): the Path order
    created: float = 0.0  # file times: the date orders
    modified: float = 0.0

    @property
    def search_text(self) -> str:
        return " ".join(part for part in (self.name, self.search_terms) if part).lower()

    @property
    def subfolder(self) -> str:
        """The folder below the networks' folder the file is in ("" at the top), posix style."""
        parent = PurePosixPath(self.relative).parent.as_posix()
        return "" if parent == "." else parent

    @property
    def version(self) -> str:
        return version_label(self.family)


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


SORT_KEYS: dict[str, Callable[[Card], tuple]] = {
    "Path": lambda card: (card.relative.lower(), card.name.lower()),
    "Name": lambda card: (card.name.lower(), card.relative.lower()),
    "Date Created": lambda card: (card.created, card.name.lower()),
    "Date Modified": lambda card: (card.modified, card.name.lower()),
}


def sort_cards(cards: list[Card], field: str = "Path", order: str = "Ascending") -> list[Card]:
    """The cards in one of A1111's orders (an unknown field sorts by path)."""
    return sorted(cards, key=SORT_KEYS.get(field, SORT_KEYS["Path"]), reverse=order == "Descending")


def subfolders(cards: list[Card]) -> list[str]:
    """Every folder below the networks' folder that holds (directly or deeper) a listed file, sorted."""
    found = set()
    for card in cards:
        parts = card.subfolder.split("/") if card.subfolder else []
        found.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return sorted(found, key=str.lower)


def in_subfolder(card: Card, folder: str) -> bool:
    return not folder or card.subfolder == folder or card.subfolder.startswith(folder + "/")


def _times(path: Path) -> tuple[float, float]:
    try:
        stat = path.stat()
    except OSError:
        return 0.0, 0.0
    created = getattr(stat, "st_birthtime", None) or stat.st_ctime
    return float(created), float(stat.st_mtime)


def _user_description(path: Path, fallback: str) -> str:
    """name.json's "description" when the user wrote one (A1111: it wins over the .txt), else `fallback`."""
    described = network_metadata.read_user_metadata(path).get("description")
    return shorten(described.strip()) if isinstance(described, str) and described.strip() else fallback


def loaded_family(services) -> str | None:
    current = services.models.current
    return getattr(current[1], "family", None) if current is not None else None


def hidden_for_version(services, family: str | None, model_family: str | None) -> bool:
    """A1111's Lora page filter: with a checkpoint loaded and `lora_show_all` off, a LoRA for another family is
    left out, and one of unknown family when the loaded family is in `lora_hide_unknown_for_versions`."""
    if model_family is None or services.options.get("lora_show_all"):
        return False
    if family is None:
        return version_label(model_family) in (services.options.get("lora_hide_unknown_for_versions") or [])
    from ..models.networks.family import lora_family as takes  # FLUX.1 schnell takes FLUX.1 LoRAs
    return family != takes(model_family)


def checkpoint_cards(services) -> list[Card]:
    """Every checkpoint; the family is the loaded model's, or what its safetensors header shows; a file whose
    header cannot be read (or holds no checkpoint) is marked with the reason."""
    current = services.models.current
    cards = []
    for info in services.models.checkpoints():
        if current is not None and current[0].path == info.path:
            family, error = getattr(current[1], "family", None), ""
        else:
            family, error = network_metadata.checkpoint_facts(info.path)
        created, modified = _times(info.path)
        cards.append(Card(CHECKPOINTS, info.name_for_extra, info.path, preview_beside(info.path),
                          _user_description(info.path, description_beside(info.path)),
                          checkpoint="" if error else info.title, search_terms=info.title,
                          disabled=f"Cannot be read: {error}" if error else "", error=error, family=family,
                          relative=Path(info.name).as_posix(), created=created, modified=modified))
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
        created, modified = _times(embedding.path)
        cards.append(Card(TEXTUAL_INVERSION, name, embedding.path, embedding.preview,
                          _user_description(embedding.path, description_beside(embedding.path)), prompt=name,
                          disabled=f"Not usable with the loaded checkpoint: {reason}" if reason else "",
                          search_terms=embedding.filename, family=embedding_family(embedding),
                          relative=embedding.filename, created=created, modified=modified))
    for filename, reason in database.errors.items():
        path = database.root / filename
        created, modified = _times(path)
        cards.append(Card(TEXTUAL_INVERSION, filename, path, disabled=f"Cannot be used: {reason}",
                          search_terms=filename, error=reason, relative=Path(filename).as_posix(),
                          created=created, modified=modified))
    return _sort(cards)


def lora_cards(services) -> list[Card]:
    """Every LoRA (the folders are rescanned: unchanged files are not read again); a file whose header cannot be
    read is greyed with the reason."""
    registry = services.models.loras
    registry.refresh()
    model_family = loaded_family(services)
    cards = []
    for info in registry.list():
        metadata = info.user_metadata or {}
        family = lora_family(info)
        if not info.error and hidden_for_version(services, family, model_family):
            continue
        described = metadata.get("description")
        description = (described.strip() if isinstance(described, str) else "") or (info.description or "").strip()
        alias = info.alias if info.alias and info.alias != info.name else ""
        suffix = info.path.suffix
        created, modified = _times(info.path)
        cards.append(Card(LORA, info.name, info.path, info.preview, shorten(description),
                          prompt="" if info.error else lora_prompt(info.name, metadata),
                          search_terms=f"{info.relative_name} {alias}",
                          disabled=f"Cannot be read: {info.error}" if info.error else "", error=info.error or "",
                          family=family, relative=info.relative_name + suffix, created=created,
                          modified=info.mtime or modified))
    return _sort(cards)


def hidden_count(services, kind: str) -> int:
    """How many LoRAs the version filter leaves out now (0 for other kinds)."""
    if kind != LORA:
        return 0
    model_family = loaded_family(services)
    return sum(1 for info in services.models.loras.list()
               if not info.error and hidden_for_version(services, lora_family(info), model_family))


LISTINGS: dict[str, Callable[[object], list[Card]]] = {
    CHECKPOINTS: checkpoint_cards, TEXTUAL_INVERSION: embedding_cards, LORA: lora_cards}


def find_card(services, kind: str, relative: str) -> Card:
    """The listed card of `kind` whose path below its folder is exactly `relative` (the page's `data-path`, so no
    server path is in the page), for requests that name a file from the page; anything else (an absolute path,
    `..`, a file not listed, another kind) is refused, so nothing outside the listed files is touched."""
    if (kind not in LISTINGS or not relative or "\x00" in relative or os.path.isabs(relative)
            or PurePosixPath(relative).is_absolute() or ".." in relative.replace("\\", "/").split("/")):
        raise network_metadata.MetadataError("Not a listed file")
    listing = LISTINGS[kind](services)
    if kind == LORA:  # the version filter may leave the file out of the cards; it is still listed
        listing = listing + [Card(LORA, info.name, info.path, relative=info.relative_name + info.path.suffix)
                             for info in services.models.loras.list()]
    found = {os.path.normpath(str(card.path)): card for card in reversed(listing) if card.relative == relative}
    if len(found) > 1:  # the same path below models/Lora and models/LyCORIS
        raise network_metadata.MetadataError(f"More than one listed file is {relative} (one in each LoRA folder); "
                                             "rename one to edit it")
    if not found:
        raise network_metadata.MetadataError("Not a listed file")
    return next(iter(found.values()))


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
