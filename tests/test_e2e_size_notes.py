"""In the browser: a size typed into Width / Height that the page cannot use is corrected with a note saying so
(issue: "Width 7 becomes 64, 130 becomes 128, 99999 becomes 2048 without a word"), and the slider's limit is the
API's."""
from __future__ import annotations

import pytest

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures

expect = pytest.importorskip("playwright.sync_api").expect


def type_into(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


@pytest.mark.parametrize("typed, shown, note", [
    (7, "64", "Width 7 is below the minimum: set to 64"),
    (130, "128", "Width 130 was rounded down to 128 (image sides are multiples of 8)"),
    (99999, "4096", "Width 99999 is above the maximum: set to 4096"),
])
def test_a_corrected_width_is_told_under_the_slider(webui, new_page, typed, shown, note):
    page = new_page(webui.url)
    wait_for_ui(page)
    type_into(page, "txt2img_width", typed)
    expect(page.locator("#txt2img_width input[type=number]")).to_have_value(shown)
    expect(page.locator("#txt2img_width .slider-note")).to_have_text(note)
    expect(page.locator(".toast-body")).to_have_count(0)  # Gradio's own "Value ... is greater than ..." error
    type_into(page, "txt2img_width", 256)  # a usable value: the note goes
    expect(page.locator("#txt2img_width .slider-note")).to_have_count(0)


def test_height_in_img2img_and_the_limit_is_the_apis(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#tab_img2img-button, button[role=tab]:has-text('img2img')").first.click()
    type_into(page, "img2img_height", 77)
    expect(page.locator("#img2img_height input[type=number]")).to_have_value("72")
    expect(page.locator("#img2img_height .slider-note")).to_contain_text("Height 77 was rounded down to 72")
    assert page.locator("#txt2img_width input[type=number]").get_attribute("max") == "4096"
    assert page.locator("#img2img_height input[type=number]").get_attribute("max") == "4096"
