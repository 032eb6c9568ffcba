"""The buttons under the txt2img / img2img gallery (📂 💾 🗜️ 📐), PNG Info's Send to inpaint / extras and the
no-checkpoint notice, driven through the Blocks' own event functions as the page calls them."""
from __future__ import annotations

import base64
import csv
import io
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from conftest import install_model
from test_seed_extras_ui import event
from webui.outputs.save import read_infotext
from webui.services import build_services
from webui.settings.flags import parse_flags
from webui.ui import gallery_actions, generation
from webui.ui.blocks import build_ui

# prompt, negative, sampler, schedule, steps, width, height, batch count, batch size, CFG, seed
VALUES = ("a red fox", "blurry", "Euler", "Automatic", 3, 64, 64, 1, 2, 6.5, 4321)
# A1111 1.10's log.csv header (modules/ui_common.py save_files), written out here as the reference
A1111_HEADER = ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt",
                "sd_model_name", "sd_model_hash"]


def _ui(data: Path, *flags: str) -> SimpleNamespace:
    services = build_services(parse_flags(["--data-dir", str(data), *flags]))
    services.hasher.wait_idle(30)
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    return SimpleNamespace(services=services, blocks=blocks, by_id=by_id, data=data)


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("gallery-actions")
    install_model(data, tiny_models["sd1"])
    made = _ui(data)
    last = list(generation.generate(made.services, "txt2img", None, *VALUES))[-1]
    made.result = dict(zip(generation.OUTPUTS, last))
    yield made
    made.services.stop()


def gallery_value(images) -> list[tuple]:
    """The gallery as Gradio hands it to an event: (picture, caption) pairs, the pictures read back from PNG files
    (as Gradio's cache serves them)."""
    pairs = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        buffer.seek(0)
        pairs.append((Image.open(buffer), None))
    return pairs


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def selected(state: dict, index: int) -> dict:
    return generation.select_image(state, index)[0]


def offered(download) -> list[Path]:
    """The files a gr.File update offers for download (its value as given; Gradio copies them into its cache)."""
    assert download.visible
    assert [item["orig_name"] for item in download.value] == [Path(p).name for p in download.constructor_args["value"]]
    return [Path(path) for path in download.constructor_args["value"]]


def read_log(folder: Path) -> list[list[str]]:
    with open(folder / "log.csv", encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


def test_the_buttons_have_a1111_elem_ids(app):
    for tab in ("txt2img", "img2img"):
        for elem_id in (f"{tab}_open_folder", f"save_{tab}", f"save_zip_{tab}", f"{tab}_send_to_extras",
                        f"download_files_{tab}", f"html_log_{tab}"):
            assert elem_id in app.by_id, elem_id
        assert app.by_id[f"{tab}_open_folder"].visible is True  # served on 127.0.0.1 only: the button shows
        assert app.by_id[f"download_files_{tab}"].visible is False  # until something is saved
    for elem_id in ("pnginfo_send_inpaint", "pnginfo_send_extras"):
        assert elem_id in app.by_id


def test_save_writes_the_selected_image_with_its_infotext_and_a_log_row(app):
    folder = app.data / "outputs" / "save"
    state, images = app.result["state"], app.result["gallery"]
    assert len(images) == 3 and state["first"] == 1  # the batch grid, then the two pictures
    save = event(app, "save_txt2img").fn

    download, message = save(selected(state, 2), gallery_value(images))  # the second picture: seed 4322
    saved = offered(download)
    assert len(saved) == 1
    assert saved[0].parent == folder and saved[0].suffix == ".png"
    with Image.open(saved[0]) as picture:
        assert read_infotext(picture) == state["infotexts"][2]
        assert "Seed: 4322" in read_infotext(picture)
        assert (pixels(picture) == pixels(images[2])).all()
    assert "Saved:" in message and saved[0].name in message

    rows = read_log(folder)
    assert rows[0] == A1111_HEADER
    row = dict(zip(A1111_HEADER, rows[1]))
    model = app.services.models.checkpoints()[0]
    assert row == {"prompt": "a red fox", "seed": "4322", "width": "64", "height": "64", "sampler": "Euler",
                   "cfgs": "6.5", "steps": "3", "filename": saved[0].name, "negative_prompt": "blurry",
                   "sd_model_name": model.name_without_ext, "sd_model_hash": model.shorthash}

    # a second save appends a row under the same header, to a new file
    download, _ = save(selected(state, 1), gallery_value(images))
    second = offered(download)[0]
    assert second != saved[0] and second.parent == folder
    rows = read_log(folder)
    assert rows[0] == A1111_HEADER and len(rows) == 3
    assert rows[2][A1111_HEADER.index("seed")] == "4321"
    assert rows[2][A1111_HEADER.index("filename")] == second.name


def test_an_older_a1111_log_gets_the_new_columns(app, tmp_path):
    from webui.outputs.save_log import append_log
    old = tmp_path / "log.csv"
    with open(old, "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows([A1111_HEADER[:9], ["a cat", "1", "512", "512", "Euler", "7", "20", "x.png", ""]])
    append_log(tmp_path, [["a dog"] + [""] * 10])
    rows = read_log(tmp_path)
    assert rows[0] == A1111_HEADER
    assert rows[1] == ["a cat", "1", "512", "512", "Euler", "7", "20", "x.png", "", "", ""]
    assert rows[2][0] == "a dog" and len(rows) == 3


def test_zip_holds_every_picture_of_the_last_run(app):
    folder = app.data / "outputs" / "save"
    state, images = app.result["state"], app.result["gallery"]
    download, message = event(app, "save_zip_txt2img").fn(state, gallery_value(images))
    archive, = offered(download)
    assert archive.parent == folder and archive.suffix == ".zip" and archive.name in message
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        assert len(names) == 3 and all(name.endswith(".png") for name in names)
        for name, image, text in zip(names, images, state["infotexts"]):
            data = opened.read(name)
            assert data == (folder / name).read_bytes()  # the files kept beside the zip
            with Image.open(io.BytesIO(data)) as picture:
                assert (pixels(picture) == pixels(image)).all()
                assert read_infotext(picture) == text


def test_save_names_files_as_a1111s_save_button(app, tmp_path):
    """The samples name pattern names saved files, straight in the save folder (A1111's use_save_to_dirs_for_ui is
    off by default)."""
    options = app.services.options
    state, images = app.result["state"], app.result["gallery"]
    before = {key: options.get(key) for key in ("samples_filename_pattern", "outdir_save")}
    try:
        options.update({"samples_filename_pattern": "[seed]-[prompt_words]", "outdir_save": str(tmp_path / "mine")},
                       save=False)
        download, _ = event(app, "save_txt2img").fn(selected(state, 1), gallery_value(images))
        # A1111 keeps the spaces of [prompt_words]
        assert offered(download) == [tmp_path / "mine" / "00000-4321-a red fox.png"]
        assert read_log(tmp_path / "mine")[-1][A1111_HEADER.index("filename")] == "00000-4321-a red fox.png"
    finally:
        options.update(before, save=False)


def shown_preview(update: dict) -> Image.Image | None:
    """The picture a yield put in the live preview element over the gallery (`{tab}_live_preview`), if any."""
    value = update["live_preview"]
    match = re.search(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', value) if isinstance(value, str) else None
    return Image.open(io.BytesIO(base64.b64decode(match.group(1)))) if match else None


def test_a_live_preview_is_never_saved(app, tmp_path):
    """A second run with live previews: while it samples, the previews go to the live preview element, the gallery
    and the tab's state keep the first run's finished results, and 💾 pressed mid-run saves the first run's picture
    (its pixels and infotext), never the preview."""
    options = app.services.options
    first_state, first_gallery = app.result["state"], app.result["gallery"]
    before = {key: options.get(key) for key in ("show_progress_every_n_steps", "outdir_save")}
    values = ("a blue heron", "", "Euler", "Automatic", 60, 64, 64, 1, 1, 7.0, 99)
    try:
        options.update({"show_progress_every_n_steps": 1, "outdir_save": str(tmp_path / "save")}, save=False)
        stream = generation.generate(app.services, "txt2img", first_state, *values)
        updates, preview, saved = [], None, None
        for out in stream:
            update = dict(zip(generation.OUTPUTS, out))
            updates.append(update)
            shown = shown_preview(update)
            if shown is not None and saved is None:  # the page is showing a preview: press 💾 now, mid-run
                preview, mid_state = shown, update["state"]
                assert mid_state["job_id"] is not None  # the job is still running
                download, _ = event(app, "save_txt2img").fn(selected(mid_state, 1), gallery_value(first_gallery))
                saved = offered(download)
    finally:
        options.update(before, save=False)
    assert preview is not None, "no live preview was shown"
    assert preview.size == (8, 8)  # Approx cheap: 1/8 of the 64x64 picture
    *running, last = updates
    assert all(not isinstance(update["gallery"], list) for update in running)  # the gallery never got the preview
    assert len(last["gallery"]) == 1 and "Seed: 99" in last["gallery"][0].info["parameters"]  # then the result
    assert len(saved) == 1
    with Image.open(saved[0]) as picture:
        assert picture.size == (64, 64)
        assert (pixels(picture) == pixels(first_gallery[1])).all()  # the first run's first picture, seed 4321
        assert read_infotext(picture) == first_state["infotexts"][1] and "Seed: 4321" in read_infotext(picture)


def test_open_folder_opens_where_the_selected_picture_was_saved(app, monkeypatch):
    opened = []
    monkeypatch.setattr(gallery_actions, "OPENER", opened.append)
    state = selected(app.result["state"], 1)
    files = [path for path in (app.data / "outputs" / "txt2img-images").rglob("*.png")
             if read_infotext(Image.open(path)) == state["infotexts"][1]]
    assert len(files) == 1
    fn = event(app, "txt2img_open_folder").fn
    fn(state)
    assert opened == [files[0].parent]
    fn({**state, "saved_paths": []})  # nothing saved by this run: the tab's outputs folder
    assert opened[-1] == app.data / "outputs" / "txt2img-images"
    with pytest.warns(UserWarning, match="does not exist yet"):  # img2img has saved nothing yet
        event(app, "img2img_open_folder").fn(generation.new_state())
    assert len(opened) == 2


@pytest.mark.parametrize("flag", ["--listen", "--hide-ui-dir-config"])
def test_open_folder_is_refused_and_hidden(tmp_path, flag, monkeypatch):
    opened = []
    monkeypatch.setattr(gallery_actions, "OPENER", opened.append)
    services = build_services(parse_flags(["--data-dir", str(tmp_path), flag]))
    try:
        (tmp_path / "outputs" / "txt2img-images").mkdir(parents=True)
        with gr.Blocks():
            actions = gallery_actions.build_buttons("txt2img", services)
        assert actions.open_folder.visible is False
        with pytest.warns(UserWarning, match=f"Opening folders is off: this server runs with {flag}"):
            gallery_actions.open_folder(services, "txt2img", generation.new_state())
        assert opened == []
    finally:
        services.stop()


def test_send_to_extras_moves_the_selected_picture_and_selects_the_tab(app):
    state, images = app.result["state"], app.result["gallery"]
    fn = event(app, "txt2img_send_to_extras")
    outputs = [getattr(c, "elem_id", None) for c in fn.outputs]
    assert outputs[0] == "extras_image" and outputs[-1] == "tabs"
    picture, mode, sub_tab, tab = fn.fn(selected(state, 2), gallery_value(images))
    assert (pixels(picture) == pixels(images[2])).all()
    assert mode == 0 and sub_tab.selected == "single_image" and tab.selected == "extras"
    with pytest.warns(UserWarning, match="No finished image"):
        assert all(isinstance(v, dict) for v in fn.fn(generation.new_state(), None))


def test_pnginfo_sends_to_inpaint_and_extras(app):
    image = app.result["gallery"][1]
    text = app.result["state"]["infotexts"][1]
    fn = event(app, "pnginfo_send_inpaint", outputs="img2img_prompt")
    outputs = {getattr(c, "elem_id", None): value for c, value in
               zip(fn.outputs, fn.fn(text, "Euler", "Automatic", image))}
    assert outputs["img2img_prompt"] == "a red fox" and outputs["img2img_seed"] == 4321
    assert outputs["img2maskimg"] is image
    assert outputs["mode_img2img"].selected == "img2img_inpaint_tab" and outputs["tabs"].selected == "img2img"

    fn = event(app, "pnginfo_send_extras")
    picture, mode, sub_tab, tab = fn.fn(image)
    assert picture is image and mode == 0 and sub_tab.selected == "single_image" and tab.selected == "extras"


def test_no_checkpoint_notice_names_the_folder_and_goes_after_a_refresh(tmp_path, tiny_models):
    made = _ui(tmp_path)
    try:
        notice = made.by_id["no_checkpoint_notice"]
        assert notice.visible is True
        text = made.by_id["no_checkpoint_notice_text"].value
        assert str(tmp_path / "models" / "Stable-diffusion") in text
        install_model(tmp_path, tiny_models["sd1"])
        event(made, "no_checkpoint_refresh").fn()  # the rescan (the notice's check runs after it)
        box, _ = next(fn for fn in made.blocks.fns.values()
                      if notice._id in {c._id for c in fn.outputs}).fn()
        assert box.visible is False
    finally:
        made.services.stop()
