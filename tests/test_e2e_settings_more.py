"""Quicksettings in a real browser: add Clip skip to the Settings tab's "Quicksettings list", Apply, rebuild the UI
(the server is started again on the same data dir, as "Reload UI" restarts it), and the Clip skip slider is in the
top row beside the checkpoint picker; changing it is saved at once and the next generation's infotext says
"Clip skip: 2"."""
from __future__ import annotations

import shutil
import time

import pytest

from browser import browser, new_page, wait_for_ui  # noqa: F401 - fixtures
from conftest import install_model
from live_server import serve

expect = pytest.importorskip("playwright.sync_api").expect

JOB_MS = 60_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("e2e-quicksettings")
    install_model(data, tiny_models["sd1"], "tiny-sd1.safetensors")
    yield data
    shutil.rmtree(data, ignore_errors=True)


def set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")
    expect(page.locator(f"#{elem_id} input[type=range]")).to_have_value(str(value))


def test_clip_skip_quicksetting_beside_the_checkpoint_picker(data_dir, new_page):
    with serve(data_dir) as server:
        page = new_page(server.url)
        wait_for_ui(page)
        assert page.locator("#quicksettings #setting_CLIP_stop_at_last_layers").count() == 0
        page.get_by_role("tab", name="Settings").click()
        page.locator("#settings_search textarea").fill("Quicksettings")
        picker = page.locator("#setting_quicksettings_list input")
        expect(picker).to_be_visible()
        picker.click()
        picker.fill("CLIP_stop_at_last_layers")
        picker.press("Enter")
        expect(page.locator("#setting_quicksettings_list")).to_contain_text("CLIP_stop_at_last_layers")
        picker.evaluate("input => input.blur()")  # closes the options list
        expect(page.locator("#setting_quicksettings_list [role=option]")).to_have_count(0)
        page.locator("#settings_submit").click()
        expect(page.locator("#settings_result textarea")).to_have_value(
            "1 setting changed: quicksettings_list. Restart the UI for quicksettings_list to take effect.")
        assert "CLIP_stop_at_last_layers" in server.services.options.get("quicksettings_list")
        page.goto("about:blank")  # the page's open connections end before the server stops

    with serve(data_dir) as server:  # the rebuilt UI
        page = new_page(server.url)
        wait_for_ui(page)
        slider = page.locator("#quicksettings #setting_CLIP_stop_at_last_layers")
        expect(slider).to_be_visible()
        checkpoint = page.locator("#quicksettings #setting_sd_model_checkpoint").bounding_box()
        box = slider.bounding_box()
        assert box["y"] < checkpoint["y"] + checkpoint["height"] and checkpoint["y"] < box["y"] + box["height"], \
            f"the slider {box} should be in the checkpoint picker's row {checkpoint}"
        assert page.locator("#tab_settings #setting_CLIP_stop_at_last_layers").count() == 0

        set_slider(page, "setting_CLIP_stop_at_last_layers", 2)
        deadline = time.monotonic() + 30  # the change event saves it through the queue
        while server.services.options.get("CLIP_stop_at_last_layers") != 2 and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert server.services.options.get("CLIP_stop_at_last_layers") == 2, "the quicksetting was not saved"

        set_slider(page, "txt2img_width", 64)
        set_slider(page, "txt2img_height", 64)
        set_slider(page, "txt2img_steps", 2)
        page.locator("#txt2img_prompt textarea").fill("a fox")
        page.locator("#txt2img_generate").click()
        expect(page.locator("#html_info_txt2img .infotext").first).to_contain_text("Clip skip: 2", timeout=JOB_MS)
