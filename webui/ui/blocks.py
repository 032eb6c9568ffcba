"""The web UI: `build_ui(services)` returns the Gradio Blocks that `app.py` mounts (with `CSS` and `JS`).

The UI holds no generation logic: it builds `GenerationRequest`s, hands them to the services' queue and renders
what comes back. Handlers live in small modules as plain functions of the services, so tests can call them.
"""
from __future__ import annotations

import gradio as gr

from . import checkpoints, extensions_tab, extras_tab, override_settings, pnginfo, settings_tab, styles, ui_config, vae
from . import hires_inputs, refiner_inputs
from . import tab_events
from . import checkpoint_notice, gallery_actions
from . import prompt_tools
from . import family_defaults
from . import defaults_page, quicksettings
from . import a1111_page_api
from .assets import CSS as PAGE_CSS, JS
from .extension_scripts import ComponentCallbacks
from ..extensions.a1111 import gradio3, paste_bridge

CSS = PAGE_CSS + extensions_tab.CSS + gradio3.CSS  # gradio3: layouts extensions built hidden
from .generation_tab import GenerationTab, build_tab, wire_tab
from . import history_tab
from . import merger_tab

__all__ = ["build_ui", "CSS", "JS"]


def _checkpoint_row(services) -> tuple[gr.Dropdown, gr.Dropdown, quicksettings.Quicksettings]:
    """The quicksettings row: checkpoint and SD VAE pickers, each with its refresh button, then the options
    `quicksettings_list` names (`quicksettings.py`: saved as they change). A checkpoint card of
    the extra networks panel presses the hidden `change_checkpoint` button (same queued switch as the picker)."""
    with gr.Row(elem_id="quicksettings"):
        dropdown = gr.Dropdown(checkpoints.checkpoint_titles(services), value=checkpoints.current_checkpoint(services),
                               label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint",
                               allow_custom_value=True, interactive=True, scale=0, min_width=360)
        refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", elem_classes="tool-button", scale=0,
                            min_width=40)
        vae_dropdown = gr.Dropdown(vae.vae_choices(services), value=vae.current_vae(services), label="SD VAE",
                                   elem_id="setting_sd_vae", allow_custom_value=True, interactive=True, scale=0,
                                   min_width=240)
        vae_refresh = gr.Button("🔄", elem_id="refresh_sd_vae", elem_classes="tool-button", scale=0, min_width=40)
        select = gr.Button(visible="hidden", elem_id="change_checkpoint")
        quick = quicksettings.build_quicksettings(services)
    notice = checkpoint_notice.build(services)  # "No checkpoint found …" under the row while there is none

    def change(event: gr.SelectData):  # select, not input: Gradio also sends input when the list closes
        return checkpoints.change_checkpoint(services, event.value)

    def change_vae(event: gr.SelectData):
        return vae.change_vae(services, event.value)

    # "full": the picker shows the load's progress bar and stage ("minimal" would show only a timer)
    dropdown.select(change, outputs=[dropdown], show_progress="full", api_visibility="undocumented")
    rescan = refresh.click(lambda: checkpoints.refresh_checkpoints(services), outputs=[dropdown],
                           show_progress="hidden", api_visibility="undocumented")
    checkpoint_notice.wire(notice, dropdown, rescan, services)
    refresh.click(lambda: vae.refresh_vaes(services), outputs=[vae_dropdown], show_progress="hidden",
                  api_visibility="undocumented")
    select.click(lambda title: checkpoints.change_checkpoint(services, title), inputs=[dropdown],
                 outputs=[dropdown], js="(current) => [webuiTakeCheckpoint(current)]", show_progress="full",
                 api_visibility="undocumented")
    vae_dropdown.select(change_vae, outputs=[vae_dropdown], show_progress="minimal", api_visibility="undocumented")
    vae_refresh.click(lambda: vae.refresh_vaes(services), outputs=[vae_dropdown], show_progress="hidden",
                      api_visibility="undocumented")
    return dropdown, vae_dropdown, quick


from . import style_editor  # noqa: E402 - the 🖌️ styles dialog (its wiring spans both tabs)


def _sender(mode: str, services=None, target: str = "img2img"):
    host = getattr(services, "extension_host", None)

    def pasted(text: str, params: dict) -> None:
        host.callbacks.call("infotext_pasted", text, params)

    def send(*values):
        return pnginfo.send_to(mode, *values, on_pasted=pasted if host is not None else None, target=target)
    return send


def _pnginfo_tab(tabs: gr.Tabs, txt2img: GenerationTab, img2img: GenerationTab, services,
                 extras: extras_tab.ExtrasTab | None = None) -> None:
    with gr.Row(equal_height=False):
        with gr.Column():
            image = gr.Image(label="Source", type="pil", image_mode=None, format="png", elem_id="pnginfo_image",
                             sources=["upload", "clipboard"], height=360, buttons=["download", "fullscreen"])
        with gr.Column():
            html_info = gr.HTML(elem_id="html_info")
            text = gr.Textbox(label="Parameters", lines=4, elem_id="pnginfo_generation_info",
                              placeholder="Drop an image, or paste generation parameters here")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_img2img")
                to_inpaint = gr.Button("Send to inpaint", elem_id="pnginfo_send_inpaint")
                to_extras = gr.Button("Send to extras", elem_id="pnginfo_send_extras", visible=extras is not None)
    image.change(pnginfo.read_parameters, inputs=[image], outputs=[html_info, text], show_progress="hidden",
                 api_visibility="undocumented")
    if extras is not None:  # the picture alone into Extras' single image
        to_extras.click(lambda picture: pnginfo.send_image_to_extras(picture, extras_tab.receive_image),
                        inputs=[image], outputs=[*extras.receive_outputs(), tabs], show_progress="hidden",
                        api_visibility="undocumented")
    for tab, button, target in ((txt2img, to_txt2img, "img2img"), (img2img, to_img2img, "img2img"),
                                (img2img, to_inpaint, "inpaint")):
        targets = [getattr(tab, name) for name in pnginfo.FIELDS]
        inputs = [text, tab.sampler, tab.scheduler]
        if tab.img2img:
            own = tab.img2img
            picture = own.inpaint if target == "inpaint" else own.image
            targets += [picture, *own.components(pnginfo.IMG2IMG_FIELDS), *own.switch_outputs()]
            inputs.append(image)
        sent = button.click(_sender(tab.mode, services, target), inputs=inputs,
                            outputs=[*targets, tabs], show_progress="hidden", api_visibility="undocumented")
        prompt_tools.recount_after(sent, [tab], services)  # the filled prompts' token counters
        if tab.controlnet:
            _wire_controlnet_paste(button, text, tab, services)
        if tab.hires:  # the same Send button fills txt2img's Hires. fix accordion from the `Hires …` keys
            button.click(lambda infotext: pnginfo.hires_values(services, infotext), inputs=[text],
                         outputs=tab.hires.components(), show_progress="hidden", api_visibility="undocumented")
        if tab.refiner:  # ... and the Refiner accordion from `Refiner` / `Refiner switch at`
            button.click(lambda infotext: refiner_inputs.pasted(services, infotext), inputs=[text],
                         outputs=tab.refiner.components(), show_progress="hidden", api_visibility="undocumented")
        _wire_override_paste(button, [text], lambda infotext: infotext, tab, services)


def _history_tab(history: gr.Tab, tabs: gr.Tabs, txt2img: GenerationTab, img2img: GenerationTab, services) -> None:
    """The History tab: live queue, past jobs, Re-run; its Send buttons fill txt2img / img2img from the selected
    image's infotext as PNG Info's do (img2img also gets the picture, and its ControlNet units the entries)."""
    view = history_tab.build_history_tab()
    history_tab.wire_history_tab(view, services, history, tabs)
    for tab, button in ((txt2img, view.send_txt2img), (img2img, view.send_img2img)):
        targets = [getattr(tab, name) for name in pnginfo.FIELDS]
        if tab.img2img:
            own = tab.img2img
            targets += [own.image, *own.components(pnginfo.IMG2IMG_FIELDS), *own.switch_outputs()]
        outputs = [*targets, tabs]

        def send(state, sampler, scheduler, mode=tab.mode, width=len(outputs)):
            values = history_tab.send_to(services, mode, state, sampler, scheduler, send=_sender(mode, services))
            return (gr.skip(),) * width if values is None else values

        sent = button.click(send, inputs=[view.state, tab.sampler, tab.scheduler], outputs=outputs,
                            show_progress="hidden", api_visibility="undocumented")
        prompt_tools.recount_after(sent, [tab], services)  # the filled prompts' token counters
        button.click(lambda: gr.Timer(active=False), outputs=[view.timer], show_progress="hidden",
                     api_visibility="undocumented")  # the tab switch is programmatic: no select event stops it
        if tab.controlnet:
            count = len(tab.controlnet.units)
            button.click(lambda state, count=count: pnginfo.controlnet_values(
                             services, history_tab.selected_infotext(state), count),
                         inputs=[view.state], outputs=tab.controlnet.paste_outputs(), show_progress="hidden",
                         api_visibility="undocumented")
        if tab.hires:  # as PNG Info's Send: the `Hires …` keys fill txt2img's Hires. fix accordion
            button.click(lambda state: pnginfo.hires_values(services, _history_text(state)),
                         inputs=[view.state], outputs=tab.hires.components(), show_progress="hidden",
                         api_visibility="undocumented")
        if tab.refiner:
            button.click(lambda state: refiner_inputs.pasted(services, _history_text(state)), inputs=[view.state],
                         outputs=tab.refiner.components(), show_progress="hidden", api_visibility="undocumented")
        _wire_override_paste(button, [view.state], _history_text, tab, services)


def _history_text(state) -> str:
    """The History tab's selected infotext, "" when no job is selected (its Send handler says so)."""
    return history_tab.selected_infotext(state) if (state or {}).get("seq") is not None else ""


def _wire_override_paste(button: gr.Button, inputs: list, infotext, tab: GenerationTab, services) -> None:
    """The same Send button fills the tab's Override settings with the settings the infotext carries that differ
    from the server's, and sets the settings shown in the tab (`infotext(*inputs)` reads the infotext sent)."""
    if tab.settings_in_ui is not None:  # and the settings shown in the tab, from the same infotext
        button.click(lambda *values: tab.settings_in_ui.pasted(services, infotext(*values)), inputs=inputs,
                     outputs=tab.settings_in_ui.components, show_progress="hidden", api_visibility="undocumented")
    if tab.override_settings is None:
        return
    button.click(lambda *values: override_settings.pasted(services, infotext(*values)), inputs=inputs,
                 outputs=[tab.override_settings], show_progress="hidden", api_visibility="undocumented")


def _wire_controlnet_paste(button: gr.Button, text: gr.Textbox, tab: GenerationTab, services) -> None:
    """The same Send button restores the tab's ControlNet units from the `ControlNet N` entries."""
    count = len(tab.controlnet.units)
    button.click(lambda infotext: pnginfo.controlnet_values(services, infotext, count), inputs=[text],
                 outputs=tab.controlnet.paste_outputs(), show_progress="hidden", api_visibility="undocumented")


def _wire_gallery_senders(tabs: gr.Tabs, sources: list[GenerationTab], img2img: GenerationTab,
                          services=None) -> None:
    """"Send to img2img" / "Send to inpaint" under each gallery: the selected image into that img2img sub-tab,
    with its prompts and settings, and its `ControlNet N` entries into img2img's units (as pasting the infotext
    would)."""
    own = img2img.img2img
    targets = [getattr(img2img, name) for name in pnginfo.FIELDS]

    def sender(target: str):
        def send(state, gallery, sampler, scheduler, outpaint_enabled):
            return pnginfo.send_from_gallery(target, state, gallery, sampler, scheduler, outpaint_enabled)
        return send

    for source in sources:
        for button, target, picture in ((source.send_to_img2img, "img2img", own.image),
                                        (source.send_to_inpaint, "inpaint", own.inpaint)):
            sent = button.click(sender(target), inputs=[source.state, source.gallery, img2img.sampler,
                                                        img2img.scheduler, own.outpaint_enable],
                                outputs=[*targets, picture, *own.switch_outputs(), tabs], show_progress="hidden",
                                api_visibility="undocumented")
            if services is not None:  # the filled prompts' token counters
                prompt_tools.recount_after(sent, [img2img], services)
            if img2img.controlnet and services is not None:
                count = len(img2img.controlnet.units)
                button.click(lambda state: pnginfo.controlnet_values(services, pnginfo.selected_infotext(state), count),
                             inputs=[source.state], outputs=img2img.controlnet.paste_outputs(),
                             show_progress="hidden", api_visibility="undocumented")
            if img2img.refiner and services is not None:  # the Refiner accordion from the image's infotext
                button.click(lambda state: refiner_inputs.pasted(services, pnginfo.selected_infotext(state)),
                             inputs=[source.state], outputs=img2img.refiner.components(), show_progress="hidden",
                             api_visibility="undocumented")
            if services is not None:  # the tab's last results' infotexts: none when the gallery is empty
                _wire_override_paste(button, [source.state], pnginfo.selected_infotext, img2img, services)


def _extension_tabs(services, announced: list) -> None:
    """Tabs extensions add: A1111's on_ui_tabs results (Blocks built beforehand, rendered here) and our API's
    `add_tab` (built in place). One that fails to build is reported and left out."""
    host = services.extension_host
    for extension_name, interface, title, elem_id in announced:
        try:
            with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                interface.render()
        except Exception as exc:  # noqa: BLE001
            host.problems.report(extension_name, f"rendering tab {title!r}", exc)
    for api in host.apis():
        for tab in api.tabs:
            try:
                with gr.Tab(tab.title, id=tab.elem_id, elem_id=tab.elem_id):
                    tab.build()
            except Exception as exc:  # noqa: BLE001
                host.problems.report(api.name, f"building tab {tab.title!r}", exc)


def _announced_tabs(host) -> list[tuple[str, gr.Blocks, str, str]]:
    """Call A1111's on_ui_tabs callbacks (each builds its own Blocks): (extension, blocks, title, elem_id)."""
    found = []
    for callback in host.callbacks.callbacks("ui_tabs"):
        try:
            made = callback.function() or []
            for interface, title, elem_id in made:
                if not isinstance(interface, gr.Blocks):
                    raise TypeError(f"on_ui_tabs must return (gr.Blocks, title, elem_id) tuples, got {interface!r}")
                found.append((callback.extension, interface, str(title), str(elem_id)))
        except Exception as exc:  # noqa: BLE001
            host.problems.report(callback.extension, "ui_tabs callback", exc)
    return found


def _other_checkpoint_pickers(services, *tabs: GenerationTab) -> list[merger_tab.OtherPicker]:
    """The tabs' Refiner and Hires checkpoint lists, each with its update: the Checkpoint Merger refreshes them."""
    pickers: list[merger_tab.OtherPicker] = []
    for tab in tabs:
        if tab.refiner is not None:
            pickers.append((tab.refiner.refiner_checkpoint,
                            lambda current: refiner_inputs.checkpoint_dropdown(services, current)))
        if tab.hires is not None:
            pickers.append((tab.hires.hr_checkpoint_name,
                            lambda current: hires_inputs.checkpoint_dropdown(services, current)))
    return pickers


def build_ui(services) -> gr.Blocks:
    host = services.extension_host
    host.callbacks.call("before_ui")
    host.callbacks.call("ui_settings")  # extensions add their options before the Settings tab lists them
    announcer = ComponentCallbacks(host)
    with announcer.installed():
        blocks = _build_blocks(services, announcer)
    return blocks


def _build_blocks(services, announcer: ComponentCallbacks) -> gr.Blocks:
    # delete_cache: the pictures Gradio served (results, live previews) leave its cache after a day
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False, delete_cache=(3600, 86400)) as blocks:
        dropdown, vae_dropdown, quick = _checkpoint_row(services)
        keyedit = prompt_tools.build_keyedit_holder()  # hidden: the keyedit_* settings for the page script
        settings_json = a1111_page_api.build()  # hidden: A1111's `opts` for extensions' page scripts
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"), announcer.tab("txt2img"):
                txt2img = build_tab("txt2img", services=services)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"), announcer.tab("img2img"):
                img2img = build_tab("img2img", hide_dirs=bool(getattr(services.flags, "hide_ui_dir_config", False)),
                                    services=services)
            # as A1111: extensions' on_ui_tabs run once txt2img and img2img exist (they may use their components),
            # each building its own Blocks, rendered below among the tabs
            paste_bridge.fill_paste_fields(txt2img, img2img)
            with gradio3.detached_blocks():
                announced = _announced_tabs(services.extension_host)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras = extras_tab.build_extras_tab(services)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                _pnginfo_tab(tabs, txt2img, img2img, services, extras)
            with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger"):
                merger_tab.build_merger_tab(services, dropdown, _other_checkpoint_pickers(services, txt2img, img2img))
            with gr.Tab(history_tab.HISTORY_TITLE, id=history_tab.HISTORY_ID, elem_id="tab_history") as history:
                _history_tab(history, tabs, txt2img, img2img, services)
            _extension_tabs(services, announced)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings = settings_tab.build_settings_tab(services)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                extensions_tab.build_extensions_tab(services)
        tab_events.render_buttons()  # the hidden buttons the page presses once a tab is shown / left
        for tab in (txt2img, img2img):
            wire_tab(tab, services)
        family_defaults.wire(services, dropdown, [txt2img, img2img])  # another model family: its usual values
        style_editor.wire_editors([txt2img.style_editor, img2img.style_editor], [txt2img, img2img], services)  # 🖌️
        _wire_gallery_senders(tabs, [txt2img, img2img], img2img, services)
        gallery_actions.wire_send_to_extras(tabs, [txt2img, img2img], extras)  # 📐 under the galleries
        paste_bridge.connect(tabs, txt2img, img2img, extras, services)  # A1111 extensions' "Send to" buttons

        inputs = ui_config.labelled_inputs(blocks)
        ui_config.apply_ui_config(services.paths.data_dir / "ui-config.json", inputs)
        defaults_page.wire(settings.defaults, services, inputs)  # Settings > Defaults: the page's values as defaults
        a1111_page_api.wire(settings_json, services, blocks, [settings.applied, *quick.saved])
        for tab in (txt2img, img2img):  # "Extra" ticked in ui-config.json: its seed extras shown from the start
            if tab.seed_extras is not None:
                tab.seed_extras.visible = bool(tab.subseed_show.value)
        restore, remembered = ui_config.wire_last_used(
            services, inputs, {"txt2img": txt2img.generate, "img2img": img2img.generate, "extras": extras.generate},
            notes={"txt2img": txt2img.restored_note, "img2img": img2img.restored_note})

        def on_load(request: gr.Request):
            pickers = styles.styles_dropdown(services)
            return (checkpoints.show_current(services), vae.show_current(services), pickers, pickers,
                    *settings_tab.current_values(services, settings),
                    *quicksettings.current_values(services, quick), *restore(request))

        # Until the load event has filled the page (last used values), the tabs take no clicks: what a user typed
        # first would be overwritten. Then `data-webui-loaded` on <body> lets them (and browser tests) go.
        loaded = blocks.load(on_load, outputs=[dropdown, vae_dropdown, txt2img.styles, img2img.styles,
                                               *settings.components, *quick.components, *remembered],
                             show_progress="hidden", api_visibility="undocumented")
        loaded.then(None, js="() => { document.body.dataset.webuiLoaded = '1'; }", api_visibility="undocumented")
        prompt_tools.recount_after(loaded, [txt2img, img2img], services)  # the restored prompts, tab shown or not
        blocks.load(lambda: prompt_tools.keyedit_options(services), outputs=[keyedit], show_progress="hidden",
                    queue=False, api_visibility="undocumented")  # Ctrl+Up / Ctrl+Down's settings for the page
    return blocks
