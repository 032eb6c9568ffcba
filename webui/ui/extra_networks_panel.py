"""Layout and wiring of the extra networks panel of a txt2img / img2img tab (A1111's elem_ids): opened by 🎴
(`{tab}_extra_networks`), it holds a search box, a refresh button and the Checkpoints / Textual Inversion / Lora
card tabs. Typing in the search box filters the cards in the page, and clicks on cards are handled there too, by
the page script (`prompt_assets`); opening and refreshing render the cards with the same filter."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from . import extra_networks
from .network_cards import KINDS


@dataclass
class ExtraNetworksPanel:
    tab: str
    panel: gr.Column
    search: gr.Textbox
    refresh: gr.Button
    checkpoints: gr.HTML
    textual_inversion: gr.HTML
    lora: gr.HTML
    opened: gr.State

    def cards(self) -> list[gr.HTML]:
        """The card containers in `KINDS` order (what `extra_networks.render_cards` returns)."""
        return [getattr(self, kind) for kind in KINDS]


def build_panel(tab: str) -> ExtraNetworksPanel:
    """The (closed) panel, laid out where it is called: under the prompts."""
    c = {}
    with gr.Column(visible=False, elem_id=f"{tab}_extra_tabs", elem_classes="extra-networks") as c["panel"]:
        with gr.Row(elem_classes="extra-networks-controls"):
            c["search"] = gr.Textbox(show_label=False, placeholder="Search...", elem_id=f"{tab}_extra_search",
                                     elem_classes="extra-search", container=False, scale=4, max_lines=1)
            c["refresh"] = gr.Button("🔄 Refresh", elem_id=f"{tab}_extra_refresh", scale=0, min_width=110,
                                     size="sm")
        with gr.Tabs(elem_id=f"{tab}_extra_networks_tabs"):
            for kind in KINDS:
                with gr.Tab(extra_networks.TAB_TITLES[kind], id=f"{tab}_{kind}", elem_id=f"{tab}_{kind}_tab"):
                    c[kind] = gr.HTML(elem_id=f"{tab}_{kind}_cards", elem_classes="extra-network-pane",
                                      padding=False)
    c["opened"] = gr.State(False)
    return ExtraNetworksPanel(tab=tab, **c)


def wire_panel(panel: ExtraNetworksPanel, toggle: gr.Button, services) -> None:
    tab = panel.tab

    def open_or_close(opened, search):
        return extra_networks.toggle_panel(services, tab, opened, search)

    def refresh(search):
        return extra_networks.refresh_networks(services, tab, search)

    toggle.click(open_or_close, inputs=[panel.opened, panel.search],
                 outputs=[panel.opened, panel.panel, *panel.cards()], show_progress="hidden",
                 api_visibility="undocumented")
    panel.refresh.click(refresh, inputs=[panel.search], outputs=panel.cards(), show_progress="minimal",
                        api_visibility="undocumented")
