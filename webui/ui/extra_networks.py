"""Handlers of the extra networks panel (A1111's cards under the prompt): render the Checkpoints, Textual
Inversion and Lora tabs as HTML, open/close the panel, refresh the folders.

Clicks are handled in the page (see `prompt_assets`): a LoRA or embedding card inserts its `data-prompt` at the
cursor of the prompt box that last had focus, a checkpoint card asks for a queued switch to its `data-checkpoint`.
"""
from __future__ import annotations

import html
import logging
from urllib.parse import quote

import gradio as gr

from . import notices
from .network_cards import KINDS, LISTINGS, Card, folders

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


def card_html(card: Card, search: str = "") -> str:
    esc = lambda value: html.escape(str(value), quote=True)  # noqa: E731
    classes = ["card"] + (["disabled"] if card.disabled else []) + ([] if matches(card, search) else ["hidden"])
    attrs = {"class": " ".join(classes), "data-kind": card.kind, "data-name": card.name,
             "data-search": card.search_text}
    if card.disabled:
        attrs["title"] = card.disabled
    if card.prompt:
        attrs["data-prompt"] = card.prompt
    if card.checkpoint:
        attrs["data-checkpoint"] = card.checkpoint
    if card.prompt or card.checkpoint:
        attrs["tabindex"] = "0"
    head = " ".join(f'{key}="{esc(value)}"' for key, value in attrs.items())
    if card.preview is not None:
        image = f'<img class="preview" src="{esc(thumb_url(card))}" alt="" loading="lazy">'
    else:
        image = '<div class="preview no-preview"></div>'
    description = f'<span class="description">{esc(card.description)}</span>' if card.description else ""
    return (f'<div {head}>{image}<div class="actions"><span class="name">{esc(card.name)}</span>'
            f"{description}</div></div>")


def cards_html(tab: str, kind: str, cards: list[Card], search: str = "", where=()) -> str:
    """One tab's cards; cards not matching `search` are rendered hidden (the page filters as the user types)."""
    body = "".join(card_html(card, search) for card in cards)
    if not cards:
        places = "".join(f"<li>{html.escape(str(folder))}</li>" for folder in where)
        body = (f'<div class="nocards">Nothing here. Add some content to the following directories:'
                f"<ul>{places}</ul></div>")
    return f'<div class="extra-network-cards" data-tab="{html.escape(tab)}" data-kind="{kind}">{body}</div>'


def render_kind(services, tab: str, kind: str, search: str = "") -> str:
    try:
        cards = LISTINGS[kind](services)
    except Exception as exc:  # noqa: BLE001 - a listing that fails shows as empty, with a notice
        notices.report(exc)
        cards = []
    return cards_html(tab, kind, cards, search, folders(services, kind))


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
