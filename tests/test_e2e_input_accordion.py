"""Through the real page in headless Chromium: the enable checkboxes of Hires. fix and Outpainting sit in their
accordions' headers (ticked there, the closed accordion's feature is in the job); a new page that restores them
shows them ticked and says so in the "Restored last used values" note, whose Undo puts the defaults back."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures

expect = pytest.importorskip("playwright.sync_api").expect

SIZE = 64


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))


def header_checkbox(page, accordion: str, checkbox: str):
    """The enable checkbox as the page shows it: inside the accordion's header button."""
    return page.locator(f"#{accordion} > button.label-wrap #{checkbox} input[type=checkbox]")


def content(page, accordion: str):
    return page.locator(f"#{accordion} > [data-testid=accordion-content]")


def test_hires_fix_ticked_in_the_closed_header_then_restored_and_undone(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    box = header_checkbox(page, "txt2img_hr", "txt2img_enable_hr")
    expect(box).to_be_visible()
    expect(box).not_to_be_checked()
    expect(content(page, "txt2img_hr")).to_be_hidden()  # closed
    expect(page.locator("#txt2img_restored_note")).to_be_hidden()  # nothing was restored

    page.locator("#txt2img_prompt textarea").fill("a lighthouse at dusk")
    for elem_id, value in (("txt2img_steps", 2), ("txt2img_width", SIZE), ("txt2img_height", SIZE)):
        set_number(page, elem_id, value)
    box.click()  # in the header of the closed accordion
    expect(box).to_be_checked()
    expect(page.locator("#txt2img_hr_upscaler")).to_be_visible()  # ticking opened it
    page.locator("#txt2img_generate").click()
    info = page.locator("#html_info_txt2img")
    expect(info).to_contain_text("Hires upscale: 2")  # the job had hires fix
    expect(info).to_contain_text(f"Size: {SIZE}x{SIZE}")

    again = new_page(webui.url)
    wait_for_ui(again)
    restored = header_checkbox(again, "txt2img_hr", "txt2img_enable_hr")
    expect(restored).to_be_visible()
    expect(restored).to_be_checked()
    note = again.locator("#txt2img_restored_note")
    expect(note).to_be_visible()
    expect(note).to_contain_text("Restored last used values")
    expect(note).to_contain_text("Hires. fix on")
    expect(again.locator("#txt2img_prompt textarea")).to_have_value("a lighthouse at dusk")

    again.locator("#txt2img_restored_undo").click()
    expect(restored).not_to_be_checked()
    expect(note).to_be_hidden()
    config = json.loads((webui.data_dir / "ui-config.json").read_text())  # the defaults Undo goes back to
    expect(again.locator("#txt2img_steps input[type=number]")).to_have_value(
        str(config["txt2img/Sampling steps/value"]))
    expect(again.locator("#txt2img_prompt textarea")).to_have_value(config["txt2img/Prompt/value"])


def test_outpainting_ticked_in_the_closed_header_then_restored_and_dismissed(webui, new_page, tmp_path):
    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#tab_img2img-button").click()
    box = header_checkbox(page, "img2img_outpaint", "img2img_outpaint_enable")
    expect(box).to_be_visible()
    expect(box).not_to_be_checked()
    expect(content(page, "img2img_outpaint")).to_be_hidden()

    picture = tmp_path / "source.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), (200, 60, 30), dtype=np.uint8)).save(picture)
    page.locator("#img2img_image input[type=file]").set_input_files(str(picture))
    page.locator("#img2img_prompt textarea").fill("a wider view")
    for elem_id, value in (("img2img_steps", 2), ("img2img_width", SIZE), ("img2img_height", SIZE)):
        set_number(page, elem_id, value)
    box.click()
    expect(box).to_be_checked()
    set_number(page, "img2img_outpaint_right", 32)  # visible: ticking opened the accordion
    page.locator("#img2img_generate").click()
    info = page.locator("#html_info_img2img")
    expect(info).to_contain_text("Outpaint: left 0 right 32 up 0 down 0")

    again = new_page(webui.url)
    wait_for_ui(again)
    again.locator("#tab_img2img-button").click()
    restored = header_checkbox(again, "img2img_outpaint", "img2img_outpaint_enable")
    expect(restored).to_be_visible()
    expect(restored).to_be_checked()
    note = again.locator("#img2img_restored_note")
    expect(note).to_contain_text("Outpainting on")
    again.locator("#img2img_restored_dismiss").click()
    expect(note).to_be_hidden()
    expect(restored).to_be_checked()  # dismissing keeps the restored values
