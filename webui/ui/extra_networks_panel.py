"""Layout and wiring of the extra networks panel of a txt2img / img2img tab (A1111's elem_ids): opened by 🎴
(`{tab}_extra_networks`), it holds a search box, a refresh button and the Checkpoints / Textual Inversion / Lora
card tabs. Typing in the search box filters the cards in the page, and clicks on cards are handled there too, by
the page script (`prompt_assets`); opening and refreshing render the cards with the same filter. The folder
buttons, the sort order and the tab last opened (remembered in the browser) are the page's too (`network_assets`).

The metadata editor (`{tab}_extra_edit_user_metadata`, opened by a card's 🔧): the page puts the card's kind and
path below its folder into the hidden `..._target` box and presses the hidden `..._button`; Save writes name.json
and re-renders."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from . import extra_networks, network_metadata
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
    editor: gr.Column | None = None  # the card metadata editor and its fields (A1111's user metadata)
    edit_title: gr.HTML | None = None
    edit_description: gr.Textbox | None = None
    edit_sd_version: gr.Dropdown | None = None
    edit_activation: gr.Textbox | None = None
    edit_weight: gr.Slider | None = None
    edit_notes: gr.Textbox | None = None
    edit_save: gr.Button | None = None
    edit_cancel: gr.Button | None = None
    edit_target: gr.Textbox | None = None  # set by the page: "kind\nrelative path" of the card whose 🔧 was clicked
    edit_open: gr.Button | None = None
    editing: gr.State | None = None  # the validated target the editor shows

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
        _build_editor(c, tab)
    c["opened"] = gr.State(False)
    return ExtraNetworksPanel(tab=tab, **c)


def _build_editor(c: dict, tab: str) -> None:
    """The (hidden) metadata editor under the cards, with A1111's labels."""
    part = f"{tab}_extra_edit_user_metadata"
    with gr.Column(visible=False, elem_id=part, elem_classes="extra-network-editor", variant="panel") as c["editor"]:
        c["edit_title"] = gr.HTML(elem_id=f"{part}_title", padding=False)
        c["edit_description"] = gr.Textbox(label="Description", lines=2, elem_id=f"{part}_description")
        with gr.Row():
            c["edit_sd_version"] = gr.Dropdown(list(network_metadata.VERSIONS), value="Unknown",
                                               label="Stable Diffusion version", elem_id=f"{part}_sd_version",
                                               scale=1)
            c["edit_weight"] = gr.Slider(0.0, 2.0, value=0.0, step=0.01, label="Preferred weight",
                                         elem_id=f"{part}_preferred_weight", scale=2,
                                         info="0: the default (1)")
        c["edit_activation"] = gr.Textbox(label="Activation text", lines=2, elem_id=f"{part}_activation_text",
                                          info="added to the prompt after the LoRA when its card is clicked")
        c["edit_notes"] = gr.Textbox(label="Notes", lines=3, elem_id=f"{part}_notes")
        with gr.Row():
            c["edit_save"] = gr.Button("Save", variant="primary", elem_id=f"{part}_save", size="sm")
            c["edit_cancel"] = gr.Button("Cancel", elem_id=f"{part}_cancel", size="sm")
    c["edit_target"] = gr.Textbox(visible="hidden", elem_id=f"{part}_target")
    c["edit_open"] = gr.Button(visible="hidden", elem_id=f"{part}_button")
    c["editing"] = gr.State("")


def wire_panel(panel: ExtraNetworksPanel, toggle: gr.Button, services) -> None:
    tab = panel.tab

    def open_or_close(opened, search):
        return extra_networks.toggle_panel(services, tab, opened, search)

    def refresh(search):
        return extra_networks.refresh_networks(services, tab, search)

    toggle.click(open_or_close, inputs=[panel.opened, panel.search],
                 outputs=[panel.opened, panel.panel, *panel.cards()], show_progress="hidden",
                 api_visibility="undocumented").then(
        None, js=f"() => {{ webuiRestoreExtraTab('{tab}'); }}", api_visibility="undocumented")
    panel.refresh.click(refresh, inputs=[panel.search], outputs=panel.cards(), show_progress="minimal",
                        api_visibility="undocumented")
    _wire_editor(panel, services)


def _wire_editor(panel: ExtraNetworksPanel, services) -> None:
    tab = panel.tab
    fields = [panel.edit_description, panel.edit_sd_version, panel.edit_activation, panel.edit_weight,
              panel.edit_notes]

    def open_editor(target):
        return extra_networks.open_editor(services, target)

    def save(editing, *values_and_search):
        *values, search = values_and_search
        return extra_networks.save_metadata(services, tab, editing, *values, search)

    panel.edit_open.click(open_editor, inputs=[panel.edit_target],
                          outputs=[panel.editor, panel.edit_title, *fields, panel.editing],
                          js=f"(target) => [webuiTakeEditTarget('{tab}', target)]", show_progress="hidden",
                          api_visibility="undocumented")
    panel.edit_save.click(save, inputs=[panel.editing, *fields, panel.search], outputs=[panel.editor, *panel.cards()],
                          show_progress="hidden", api_visibility="undocumented")
    panel.edit_cancel.click(lambda: gr.Column(visible=False), outputs=[panel.editor], show_progress="hidden",
                            queue=False, api_visibility="undocumented")
