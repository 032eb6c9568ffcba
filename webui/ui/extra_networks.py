"""Handlers of the extra networks panel (A1111's cards under the prompt): render the Checkpoints, Textual
Inversion and Lora tabs as HTML, open/close the panel, refresh the folders.

Clicks are handled in the page (see `prompt_assets`): a LoRA or embedding card inserts its `data-prompt` at the
cursor of the prompt box that last had focus, a checkpoint card asks for a queued switch to its `data-checkpoint`;
a card marked `error` (a file that cannot be read) only shows why. Above each tab's cards: a button per subfolder
and the sort order (A1111's `{tab}_{kind}_extra_sort` / `_extra_sort_dir`), applied in the page (`network_assets`)
from the cards' `data-dir` / `data-sort-*`; the server renders the default order from the options. The card's 🔧
opens the metadata editor (`open_editor` / `save_metadata`), which writes A1111's `name.json` beside the file.
"""
from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from . import network_metadata, notices
from .network_cards import (KINDS, LISTINGS, LORA, SORT_FIELDS, SORT_ORDERS, Card, find_card, folders, hidden_count,
                            sort_cards, subfolders)

log = logging.getLogger(__name__)

THUMB_ROUTE = "/sd_extra_networks/thumb"
TAB_TITLES = {"checkpoints": "Checkpoints", "textual_inversion": "Textual Inversion", "lora": "Lora"}


def thumb_url(card: Card) -> str:
    """The preview's URL (relative to the page, as A1111's); the mtime makes a changed image load anew."""
    try:
        mtime = int(card.preview.stat().st_mtime)
    except OSError:
        mtime = 0
    return f".{THUMB_ROUTE}?filename={quote(str(card.preview), safe='')}&mtime={mtime}"


def matches(card: Card, search: str) -> bool:
    words = (search or "").lower().split()
    return all(word in card.search_text for word in words)


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def card_html(card: Card, search: str = "") -> str:
    classes = (["card"] + (["disabled"] if card.disabled else []) + (["error"] if card.error else [])
               + ([] if matches(card, search) else ["hidden"]))
    attrs = {"class": " ".join(classes), "data-kind": card.kind, "data-name": card.name,
             "data-search": card.search_text, "data-path": card.relative, "data-dir": card.subfolder,
             "data-version": card.version, "data-sort-path": card.relative.lower(),
             "data-sort-name": card.name.lower(), "data-sort-date_created": f"{card.created:.3f}",
             "data-sort-date_modified": f"{card.modified:.3f}"}
    if card.disabled:
        attrs["title"] = card.disabled
    if card.error:
        attrs["data-error"] = f"{card.name} cannot be used: {card.error}"
    if card.prompt and not card.error:
        attrs["data-prompt"] = card.prompt
    if card.checkpoint and not card.error:
        attrs["data-checkpoint"] = card.checkpoint
    if card.prompt or card.checkpoint or card.error:
        attrs["tabindex"] = "0"
    head = " ".join(f'{key}="{esc(value)}"' for key, value in attrs.items())
    if card.preview is not None:
        image = f'<img class="preview" src="{esc(thumb_url(card))}" alt="" loading="lazy">'
    else:
        image = '<div class="preview no-preview"></div>'
    badges = []
    if card.error:
        badges.append(f'<span class="card-badge error-badge" title="{esc(card.error)}">⚠ unreadable</span>')
    elif card.family:
        badges.append(f'<span class="card-badge version-badge" title="Made for {esc(card.version)} models">'
                      f"{esc(card.version)}</span>")
    tools = "" if card.error else (
        '<button type="button" class="card-button edit-button" title="Edit metadata" '
        'aria-label="Edit metadata">🔧</button>')
    description = f'<span class="description">{esc(card.description)}</span>' if card.description else ""
    return (f'<div {head}>{image}<div class="card-badges">{"".join(badges)}</div>{tools}'
            f'<div class="actions"><span class="name">{esc(card.name)}</span>{description}</div></div>')


def toolbar_html(tab: str, kind: str, cards: list[Card], order: tuple[str, str]) -> str:
    """A button per subfolder (a click shows only that folder's cards, a second click all) and the sort order."""
    field, direction = order
    buttons = "".join(f'<button type="button" class="extra-network-dir" data-dir="{esc(folder)}" '
                      f'title="Show only {esc(folder)}">{esc(folder)}</button>' for folder in subfolders(cards))
    options = "".join(f'<option value="{esc(name)}"{" selected" if name == field else ""}>{esc(name)}</option>'
                      for name in SORT_FIELDS)
    arrow = "⬇" if direction == "Descending" else "⬆"
    return (f'<div class="extra-network-toolbar"><div class="extra-network-dirs" id="{esc(tab)}_{kind}_extra_dirs">'
            f'{buttons}</div><div class="extra-network-sort"><select id="{esc(tab)}_{kind}_extra_sort" '
            f'title="Sort by" aria-label="Sort by">{options}</select><button type="button" '
            f'id="{esc(tab)}_{kind}_extra_sort_dir" class="extra-network-sort-dir" data-sortdir="{esc(direction)}" '
            f'title="{esc(direction)}: click to reverse" aria-label="Sort direction: {esc(direction)}">{arrow}'
            f"</button></div></div>")


def cards_html(tab: str, kind: str, cards: list[Card], search: str = "", where=(),
               order: tuple[str, str] = ("Path", "Ascending"), hidden: int = 0) -> str:
    """One tab's cards in `order` (field, direction), under the folder buttons and sort controls; cards not
    matching `search` are rendered hidden (the page filters as the user types); `hidden` LoRAs left out by the
    version filter are counted in a note."""
    field, direction = order
    cards = sort_cards(cards, field, direction)
    body = "".join(card_html(card, search) for card in cards)
    if not cards:
        places = "".join(f"<li>{html.escape(str(folder))}</li>" for folder in where)
        body = (f'<div class="nocards">Nothing here. Add some content to the following directories:'
                f"<ul>{places}</ul></div>")
    note = (f'<div class="extra-network-hidden-note">{hidden} more for other model versions are hidden '
            f"(Settings: Always show all networks on the Lora page)</div>" if hidden else "")
    return (f'<div class="extra-network-view">{toolbar_html(tab, kind, cards, order) if cards else ""}'
            f'<div class="extra-network-notice" role="status" hidden></div>'
            f'<div class="extra-network-cards" data-tab="{esc(tab)}" data-kind="{kind}" '
            f'data-sort="{esc(field)}" data-sortdir="{esc(direction)}">{body}</div>{note}</div>')


def card_order(services) -> tuple[str, str]:
    """The default order from the options (A1111's keys), falling back to path, ascending."""
    field = services.options.get("extra_networks_card_order_field")
    direction = services.options.get("extra_networks_card_order")
    return (field if field in SORT_FIELDS else "Path", direction if direction in SORT_ORDERS else "Ascending")


def folder_shown(services, folder) -> str:
    """A folder as an empty tab names it: its full path, except under --hide-ui-dir-config, where server paths stay
    out of the page (relative to the data folder, else a description)."""
    if not getattr(services.flags, "hide_ui_dir_config", False):
        return str(folder)
    try:
        return Path(os.path.abspath(folder)).relative_to(os.path.abspath(services.paths.data_dir)).as_posix()
    except ValueError:
        return "the folder the server was started with"


def render_kind(services, tab: str, kind: str, search: str = "") -> str:
    hidden = 0
    try:
        cards = LISTINGS[kind](services)
        hidden = hidden_count(services, kind)
    except Exception as exc:  # noqa: BLE001 - a listing that fails shows as empty, with a notice
        notices.report(exc)
        cards = []
    where = [folder_shown(services, folder) for folder in folders(services, kind)]
    return cards_html(tab, kind, cards, search, where, card_order(services), hidden)


def render_cards(services, tab: str, search: str = "") -> tuple[str, str, str]:
    """The HTML of the Checkpoints, Textual Inversion and Lora tabs, in that order (see `KINDS`)."""
    return tuple(render_kind(services, tab, kind, search) for kind in KINDS)


def toggle_panel(services, tab: str, opened: bool, search: str = "") -> tuple:
    """🎴: (opened, panel, checkpoints, textual inversion, lora). Opening renders the cards anew."""
    opened = not opened
    if not opened:
        return (False, gr.Column(visible=False), gr.skip(), gr.skip(), gr.skip())
    return (True, gr.Column(visible=True), *render_cards(services, tab, search))


def refresh_networks(services, tab: str, search: str = "") -> tuple[str, str, str]:
    """🔄: rescan the checkpoint, LoRA and embedding folders, then render the cards."""
    steps = (("checkpoints", services.models.refresh), ("LoRAs", services.models.loras.refresh),
             ("embeddings", lambda: services.models.embeddings.refresh(force=True)))
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the other folders are still rescanned
            log.error("refreshing %s failed", what, exc_info=exc)
            notices.warn(f"Refreshing {what} failed: {exc}")
    return render_cards(services, tab, search)


# --- the card metadata editor (🔧) -----------------------------------------------------------------------------

def _target(value: str | None) -> tuple[str, str]:
    """(kind, path) from the editor's target, which the page sets to `kind` and the card's `data-path` (the file's
    path below its folder, never a server path) on one line each."""
    kind, _, path = (value or "").partition("\n")
    return kind.strip(), path.strip()


def open_editor(services, target: str | None) -> tuple:
    """🔧: (editor, title, description, sd version, activation text, preferred weight, notes, editing). The
    LoRA-only fields show for LoRAs; a target that is no listed file is a notice and nothing opens."""
    kind, path = _target(target)
    try:
        card = find_card(services, kind, path)
    except Exception as exc:  # noqa: BLE001 - a file not listed (anymore) is a notice
        notices.report(exc)
        return (gr.skip(),) * 8
    data = network_metadata.read_user_metadata(card.path)
    lora = kind == LORA
    version = data.get("sd version") if data.get("sd version") in network_metadata.VERSIONS else "Unknown"
    try:
        weight = float(data.get("preferred weight") or 0.0)
    except (TypeError, ValueError):
        weight = 0.0
    title = (f'<div class="extra-network-editor-title"><b>{esc(card.name)}</b> '
             f'<span class="path">{esc(card.relative or card.path.name)}</span>'
             f'{f" · {esc(card.version)}" if card.family else ""}</div>')
    return (gr.Column(visible=True), title, str(data.get("description") or ""),
            gr.Dropdown(choices=list(network_metadata.VERSIONS), value=version, visible=lora),
            gr.Textbox(value=str(data.get("activation text") or ""), visible=lora),
            gr.Slider(value=weight if weight == weight else 0.0, visible=lora), str(data.get("notes") or ""),
            f"{kind}\n{card.relative}")


def save_metadata(services, tab: str, editing: str | None, description: str, version: str, activation: str,
                  weight: float, notes: str, search: str = "") -> tuple:
    """Save: write name.json beside the edited file (only a listed file's), close the editor and render the
    cards anew (a LoRA's click then inserts the new activation text and weight). Returns (editor, *cards)."""
    kind, path = _target(editing)
    try:
        card = find_card(services, kind, path)
        values = {"description": description, "notes": notes}
        if kind == LORA:
            values.update({"sd version": version, "activation text": activation, "preferred weight": weight})
        network_metadata.write_user_metadata(card.path, values)
    except Exception as exc:  # noqa: BLE001 - refused or not writable: a notice, the editor stays open
        notices.report(exc)
        return (gr.skip(),) * (1 + len(KINDS))
    notices.info(f"Saved {network_metadata.metadata_path(card.path).name}")
    if kind == LORA:
        services.models.loras.refresh()
    return (gr.Column(visible=False), *render_cards(services, tab, search))
