"""In a real browser: the buttons under the txt2img gallery (💾 Save offers the saved file, 📐 sends the picture to
Extras), PNG Info's "Send to inpaint", and the notice a server without any checkpoint shows at once."""
from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from browser import TIMEOUT_MS, browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures
from test_e2e_txt2img import fetch_image
from conftest import install_model
from live_server import serve

expect = pytest.importorskip("playwright.sync_api").expect

JOB_MS = 30_000  # waits on a job (the first one of a server also loads the checkpoint)


@pytest.fixture(scope="module", autouse=True)
def pages_start_from_defaults(webui):
    webui.services.options.update({"ui_remember_last_used": False}, save=False)


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def canvas_shows_picture(locator, timeout: float = TIMEOUT_MS / 1000) -> int:
    """How many strongly coloured pixels the editor's canvas shows, once there are many (it draws on a <canvas>:
    there is no DOM state to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        shot = np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), dtype=np.int16)
        count = int(((shot.max(axis=2) - shot.min(axis=2)) > 60).sum())
        if count > 2000:
            return count
        if time.monotonic() > deadline:
            raise AssertionError(f"the editor shows no picture ({count} coloured pixels)")
        time.sleep(0.1)


def test_gallery_buttons_and_png_info_sends(webui, new_page, tmp_path):
    """💾 offers the saved file and logs it, 📐 moves the picture to Extras; then PNG Info's Send to inpaint (one
    page: each page load is seconds on a busy machine)."""
    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#txt2img_prompt textarea").fill("a green kite")
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
        set_number(page, elem_id, value)
    page.locator("#txt2img_seed input").fill("2468")
    for elem_id, value in (("txt2img_width", "64"), ("txt2img_height", "64"), ("txt2img_steps", "2")):
        expect(page.locator(f"#{elem_id} input[type=range]")).to_have_value(value)  # the sliders took the values
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a green kite")
    page.locator("#txt2img_generate").click()
    expect(page.locator("#html_info_txt2img")).to_contain_text("Seed: 2468", timeout=JOB_MS)
    expect(page.locator("#txt2img_generate")).to_be_visible(timeout=JOB_MS)
    shown = page.locator("#txt2img_gallery img").first
    expect(shown).to_be_visible()
    picture = fetch_image(page, shown.evaluate("img => img.src"))

    page.locator("#save_txt2img").click()
    log = page.locator("#html_log_txt2img")
    expect(log).to_contain_text("Saved:")
    name = log.inner_text().split("Saved:", 1)[1].split()[0]
    saved = webui.data_dir / "outputs" / "save" / name
    assert saved.is_file(), saved
    assert (rgb(Image.open(saved)) == rgb(picture)).all()
    link = page.locator("#download_files_txt2img a[href]").first
    expect(link).to_have_attribute("href", re.compile(re.escape(name) + "$"))
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_bytes() == saved.read_bytes()
    rows = (webui.data_dir / "outputs" / "save" / "log.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("prompt,seed,width,height,sampler,cfgs,steps,filename,negative_prompt")
    assert rows[-1].startswith("a green kite,2468,64,64,") and name in rows[-1]

    page.locator("#txt2img_send_to_extras").click()
    expect(page.locator("#tab_extras-button")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#extras_single_tab-button")).to_have_attribute("aria-selected", "true")
    received = page.locator("#extras_image img").first
    expect(received).to_be_visible()
    assert (rgb(fetch_image(page, received.evaluate("img => img.src"))) == rgb(picture)).all()

    # PNG Info: Send to inpaint puts the picture into the Inpaint editor and the parameters into img2img
    y, x = np.mgrid[:64, :64]
    cells = np.zeros((64, 64, 3), dtype=np.uint8)
    cells[..., 0] = np.where((x // 8) % 2 == 0, 230, 20)
    cells[..., 1] = np.where((y // 8) % 2 == 0, 210, 10)
    source = tmp_path / "made.png"
    info = PngInfo()
    info.add_text("parameters", "a blue door\nNegative prompt: rust\nSteps: 5, Sampler: Euler, CFG scale: 6, "
                                "Seed: 777, Size: 64x64")
    Image.fromarray(cells).save(source, pnginfo=info)

    page.locator("#tab_pnginfo-button").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(source))
    expect(page.locator("#pnginfo_generation_info textarea")).to_have_value(
        "a blue door\nNegative prompt: rust\nSteps: 5, Sampler: Euler, CFG scale: 6, Seed: 777, Size: 64x64")
    page.locator("#pnginfo_send_inpaint").click()
    expect(page.locator("#tab_img2img-button")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#img2img_inpaint_tab-button")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#img2img_prompt textarea")).to_have_value("a blue door")
    expect(page.locator("#img2img_neg_prompt textarea")).to_have_value("rust")
    expect(page.locator("#img2img_seed input")).to_have_value("777")
    canvas_shows_picture(page.locator("#img2maskimg canvas").first)


def test_no_checkpoint_notice_until_a_refresh_finds_one(tmp_path, new_page, tiny_models):
    data = tmp_path / "empty"
    with serve(data) as server:
        page = new_page(server.url)
        wait_for_ui(page)
        notice = page.locator("#no_checkpoint_notice")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text(str(data / "models" / "Stable-diffusion"))
        install_model(data, tiny_models["sd1"], "tiny-sd1.safetensors")
        page.locator("#refresh_sd_model_checkpoint").click()
        expect(notice).to_be_hidden()
        expect(page.locator("#setting_sd_model_checkpoint input")).to_have_value(re.compile(r"^tiny-sd1"))
    shutil.rmtree(data, ignore_errors=True)
