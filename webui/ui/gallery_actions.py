"""The buttons under the txt2img / img2img gallery besides the Send buttons (A1111's elem_ids): 📂 open the output
folder (`{tab}_open_folder`), 💾 save the selected picture (`save_{tab}`), 🗜️ zip all pictures of the last run
(`save_zip_{tab}`), 📐 send the selected picture to Extras (`{tab}_send_to_extras`); the saved files are offered in
`download_files_{tab}` and a line in `html_log_{tab}` says where they went.

They act on the tab's finished results only: the tab's state lists the last finished run's infotexts
(`generation.new_state`), one per result in the gallery (grids first, ControlNet's detected maps after them). A live
preview never enters either: `generation.generate` shows it in its own element over the gallery (`{tab}_live_preview`)
and leaves the gallery and the state with the last finished run until the new run's images arrive, so pressing a
button mid-run acts on those, and a preview is never saved, zipped or sent.
"""
from __future__ import annotations

import html
import os
import platform
import subprocess
import threading
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr
from PIL import Image

from ..engine.saving import samples_dir
from ..outputs.infotext import parse_infotext
from ..outputs.filename_pattern import context_from_infotext
from ..outputs.save import next_image_number, save_image
from ..outputs.save_log import append_log, log_row, save_dir
from . import notices

FOLDER, SAVE, ZIP, EXTRAS = "📂", "💾", "🗜️", "📐"
NO_RESULT = "No finished image to {}: generate one first (a live preview is not a result)"
_zip_lock = threading.Lock()


@dataclass
class GalleryActions:
    open_folder: gr.Button
    save: gr.Button
    save_zip: gr.Button
    send_to_extras: gr.Button | None = None  # built after the Send buttons (`extras_button`)
    download_files: gr.File | None = None  # built under the infotext (`build_outputs`)
    html_log: gr.HTML | None = None


def folders_refused(flags) -> str:
    """Why this server never opens a folder on its machine ("" when it may): with --listen the browser may be on
    another machine; --hide-ui-dir-config keeps server folders out of the UI."""
    if getattr(flags, "hide_ui_dir_config", False):
        return "--hide-ui-dir-config"
    if getattr(flags, "listen", False):
        return "--listen"
    return ""


def build_buttons(tab: str, services=None) -> GalleryActions:
    """📂 💾 🗜️ (inside the current row, before the Send buttons). 📂 is hidden where folders are refused."""
    hidden = bool(folders_refused(getattr(services, "flags", None)))
    tool = {"elem_classes": "tool-button", "scale": 0, "min_width": 40, "size": "sm"}
    return GalleryActions(
        open_folder=gr.Button(FOLDER, elem_id=f"{tab}_open_folder", visible=not hidden, **tool),
        save=gr.Button(SAVE, elem_id=f"save_{tab}", **tool),
        save_zip=gr.Button(ZIP, elem_id=f"save_zip_{tab}", **tool))


def extras_button(actions: GalleryActions, tab: str) -> None:
    """📐 (inside the same row, after the Send buttons)."""
    actions.send_to_extras = gr.Button(EXTRAS, elem_id=f"{tab}_send_to_extras", elem_classes="tool-button", scale=0,
                                       min_width=40, size="sm")


def build_outputs(actions: GalleryActions, tab: str) -> None:
    """The saved files to download (hidden until something is saved) and the "Saved: …" line."""
    actions.download_files = gr.File(None, file_count="multiple", interactive=False, show_label=False,
                                     visible=False, elem_id=f"download_files_{tab}")
    actions.html_log = gr.HTML(elem_id=f"html_log_{tab}", elem_classes="html-log")


# --- the tab's finished results -------------------------------------------------------------------------------------

def _picture(item):
    """A gallery item (Gradio gives (image, caption) pairs) as its image."""
    return item[0] if isinstance(item, (tuple, list)) else item


def finished_results(state: dict | None, gallery) -> list[tuple[Image.Image, str]]:
    """(picture, infotext) of each result of the tab's last finished run, in the gallery's order; [] while there
    is none (nothing generated yet, or a gallery that does not hold the state's results)."""
    texts = list((state or {}).get("infotexts") or [])
    items = list(gallery or [])
    if not texts or len(items) < len(texts):
        return []
    return [(_picture(item), text) for item, text in zip(items, texts) if isinstance(_picture(item), Image.Image)]


def selected_result(state: dict | None, gallery, action: str) -> tuple[Image.Image, str] | None:
    """The selected finished result (picture, infotext); a notice and None when there is none, or when the
    selection is a ControlNet detected map."""
    results = finished_results(state, gallery)
    if not results:
        notices.warn(NO_RESULT.format(action))
        return None
    index = int((state or {}).get("selected") or 0)
    if index >= len(results):
        notices.warn(f"The selected picture is a ControlNet detected map: select a generated image to {action}")
        return None
    return results[max(0, index)]


def _seed(infotext: str) -> int:
    value = str(parse_infotext(infotext).get("Seed", "")).strip()
    return int(value) if value.lstrip("-").isdigit() else 0


class SaveButtonOptions:
    """The options as A1111's Save button names files (with its `use_save_to_dirs_for_ui` at its default, off):
    straight into the save folder, never a dated subfolder, the file named by
    `samples_filename_pattern` (else `[seed]`, or `[seed]-[prompt_spaces]` when `save_to_dirs` is off, as for
    generated images), numbered `NNNNN-` as they are."""

    def __init__(self, options):
        self._options = options

    def _get(self, key: str, default=None):
        try:
            value = self._options.get(key)
        except KeyError:
            return default
        return default if value is None else value

    def get(self, key: str):
        if key == "save_to_dirs":
            return False
        if key == "samples_filename_pattern":
            return self._get(key, "") or ("[seed]" if self._get("save_to_dirs", True) else "[seed]-[prompt_spaces]")
        return self._get(key)


def _extension(services) -> str:
    try:
        return str(services.options.get("samples_format") or "png")
    except KeyError:
        return "png"


def _save_pictures(services, results: list[tuple[Image.Image, str]]) -> tuple[Path, list[Path]]:
    """Write the pictures with their infotext into the save folder (named as A1111's Save button names them:
    `SaveButtonOptions`, the tags read from each picture's infotext) and log them in its `log.csv`."""
    folder = save_dir(services.options, services.paths.outputs)
    extension, options = _extension(services), SaveButtonOptions(services.options)
    saved = [save_image(picture, folder, _seed(text), text, extension=extension, options=options,
                        context=context_from_infotext(text))
             for picture, text in results]
    append_log(folder, [log_row(text, path.relative_to(folder).as_posix()) for path, (_, text) in zip(saved, results)])
    return folder, saved


def _where(services, folder: Path) -> str:
    """The save folder as messages name it: relative to the data folder when inside it; under
    --hide-ui-dir-config no server path beyond that."""
    try:
        return str(Path(os.path.abspath(folder)).relative_to(services.paths.data_dir))
    except ValueError:
        hidden = getattr(services.flags, "hide_ui_dir_config", False)
        return "the folder of the setting outdir_save" if hidden else str(folder)


def _offered(paths: list[Path], message: str) -> tuple:
    return gr.File(value=[str(path) for path in paths], visible=True), f'<p class="html-log">{html.escape(message)}</p>'


def save_selected(services, state: dict | None, gallery) -> tuple:
    """💾: the selected picture into the save folder with its infotext, a row in `log.csv`; (download, message)."""
    chosen = selected_result(state, gallery, "save")
    if chosen is None:
        return gr.skip(), gr.skip()
    try:
        folder, saved = _save_pictures(services, [chosen])
    except Exception as exc:  # noqa: BLE001 - a full disk or a bad folder is a notice
        notices.report(exc)
        return gr.skip(), gr.skip()
    return _offered(saved, f"Saved: {saved[0].name} (in {_where(services, folder)})")


def _write_zip(folder: Path, files: list[Path], name: Callable[[int], str]) -> Path:
    """A zip of `files` (by their names) in `folder`, written to a hidden file first and then numbered."""
    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:  # PNG / JPEG do not shrink
            for path in files:
                archive.write(path, arcname=path.relative_to(folder).as_posix())
        with _zip_lock:
            number = next_image_number(folder)
            while (folder / name(number)).exists():
                number += 1
            final = folder / name(number)
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def save_zip(services, state: dict | None, gallery) -> tuple:
    """🗜️: every picture of the last run saved (and logged) as 💾 saves one, and a zip of them kept beside them
    (`NNNNN-FIRSTSEED-LASTSEED.zip`); (download of the zip, message)."""
    results = finished_results(state, gallery)
    if not results:
        notices.warn(NO_RESULT.format("zip"))
        return gr.skip(), gr.skip()
    try:
        folder, saved = _save_pictures(services, results)
        seeds = [_seed(text) for _, text in results]
        archive = _write_zip(folder, saved, lambda number: f"{number:05d}-{seeds[0]}-{seeds[-1]}.zip")
    except Exception as exc:  # noqa: BLE001
        notices.report(exc)
        return gr.skip(), gr.skip()
    count = f"{len(saved)} image{'s' if len(saved) != 1 else ''}"
    return _offered([archive], f"Saved: {archive.name} ({count}, in {_where(services, folder)})")


# --- 📂 --------------------------------------------------------------------------------------------------------------

def system_opener(folder: Path) -> None:
    """Open `folder` in the file manager of the machine the server runs on."""
    path = os.path.normpath(folder)
    if platform.system() == "Windows":
        os.startfile(path)  # noqa: S606 - a folder the server chose, never a user's text
    elif platform.system() == "Darwin":
        subprocess.Popen(["open", path])  # noqa: S603,S607
    elif "microsoft-standard-WSL2" in platform.uname().release:
        subprocess.Popen(["wsl-open", path])  # noqa: S603,S607
    else:
        subprocess.Popen(["xdg-open", path])  # noqa: S603,S607


OPENER: Callable[[Path], None] = system_opener  # what 📂 calls (tests put a recorder here)


def output_folder(services, mode: str, state: dict | None) -> Path:
    """The folder 📂 opens: where the selected result was saved, when the tab knows it (`saved_paths` in its
    state), else the tab's outputs folder (`outdir_{mode}_samples`, else outputs/{mode}-images)."""
    state = state or {}
    paths = [Path(p) for p in state.get("saved_paths") or []]
    index = int(state.get("selected") or 0) - int(state.get("first") or 0)
    if paths:
        return (paths[index] if 0 <= index < len(paths) else paths[0]).parent
    return samples_dir(services.options, services.paths.outputs, mode)


def open_folder(services, mode: str, state: dict | None, opener: Callable[[Path], None] | None = None) -> None:
    """📂: open the output folder on the server's machine, only when the browser may be on it (no --listen, no
    --hide-ui-dir-config); a folder not made yet or a machine without a file manager is a notice."""
    refused = folders_refused(services.flags)
    if refused:
        notices.warn(f"Opening folders is off: this server runs with {refused} (the browser may be on another "
                     "machine)")
        return
    folder = output_folder(services, mode, state)
    if not folder.is_dir():
        notices.warn(f"The folder {folder} does not exist yet: it is made when the first image is saved")
        return
    try:
        (opener or OPENER)(folder)
    except Exception as exc:  # noqa: BLE001 - no xdg-open, no desktop: say so
        notices.warn(f"Could not open {folder}: {exc}")


# --- 📐 --------------------------------------------------------------------------------------------------------------

def send_to_extras(state: dict | None, gallery, receive: Callable[[Image.Image], tuple], width: int) -> tuple:
    """📐: the selected finished picture into Extras' single image (`receive(picture)` gives the Extras tab's
    updates, `extras_tab.receive_image`), then the switch to the Extras tab; `width` skips when there is none."""
    chosen = selected_result(state, gallery, "send")
    if chosen is None:
        return (gr.skip(),) * width
    return (*receive(chosen[0]), gr.Tabs(selected="extras"))


def wire(actions: GalleryActions, mode: str, state: gr.State, gallery: gr.Gallery, services) -> None:
    """📂 💾 🗜️ of one tab (📐 is wired with the Extras tab: `wire_send_to_extras`)."""
    quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}
    outputs = [actions.download_files, actions.html_log]
    actions.open_folder.click(lambda current: open_folder(services, mode, current), inputs=[state], **quiet)
    actions.save.click(lambda current, shown: save_selected(services, current, shown), inputs=[state, gallery],
                       outputs=outputs, **quiet)
    actions.save_zip.click(lambda current, shown: save_zip(services, current, shown), inputs=[state, gallery],
                           outputs=outputs, **quiet)


def wire_send_to_extras(tabs: gr.Tabs, sources: list, extras) -> None:
    """📐 under each gallery (`sources`: GenerationTabs with `actions`) into the Extras tab (`extras_tab.ExtrasTab`)."""
    from .extras_tab import receive_image
    outputs = [*extras.receive_outputs(), tabs]
    for source in sources:
        actions = getattr(source, "actions", None)
        if actions is None or actions.send_to_extras is None:
            continue
        actions.send_to_extras.click(
            lambda current, shown: send_to_extras(current, shown, receive_image, len(outputs)),
            inputs=[source.state, source.gallery], outputs=outputs, show_progress="hidden",
            api_visibility="undocumented")
