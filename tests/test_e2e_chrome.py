"""The page's chrome in a real browser: every icon button has a tooltip and an accessible name (the styles picker
too), Gradio's own footer and the galleries' Share button are gone, and tabs that fetch their data on showing
(History) fill in after the switch."""
from __future__ import annotations

import re

import pytest

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures

expect = pytest.importorskip("playwright.sync_api").expect

JOB_MS = 60_000  # the first job of a server also loads the checkpoint

# Visible buttons whose text is one icon (an emoji or a symbol: no letter, no digit), with what a user's
# browser and screen reader get from them. Generic, so buttons added later are covered too.
ICON_BUTTONS_JS = r"""
() => [...document.querySelectorAll('button')]
  .filter((b) => b.offsetParent !== null && b.getBoundingClientRect().width > 0)
  .map((b) => ({id: b.id, text: b.textContent.replace(/\ufe0f/g, '').trim(), title: b.title,
                aria: b.getAttribute('aria-label') || ''}))
  .filter((b) => b.text !== '' && [...b.text].length <= 2 && !/[\p{L}\p{N}]/u.test(b.text))
"""


def icon_buttons(page) -> list[dict]:
    """The visible icon buttons, once the page script has labelled the ones just drawn (it works per frame)."""
    try:
        page.wait_for_function(f"() => ({ICON_BUTTONS_JS})().every((b) => b.title && b.aria)", timeout=5_000,
                               polling=100)
    except Exception:  # noqa: BLE001 - the assertion below names the buttons left without
        pass
    return page.evaluate(ICON_BUTTONS_JS)


def test_every_icon_button_has_a_tooltip_and_an_accessible_name(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    seen = {}
    for tab in ("txt2img", "img2img", "extras", "modelmerger"):
        page.locator(f"#tab_{tab}-button").click()
        expect(page.locator(f"#tab_{tab}")).to_be_visible()
        buttons = icon_buttons(page)
        unlabelled = [b for b in buttons if not (b["title"].strip() and b["aria"].strip())]
        assert not unlabelled, f"{tab}: icon buttons without a title or aria-label: {unlabelled}"
        seen[tab] = {b["text"] for b in buttons}
    # the tool buttons a user meets first are among them (the probe really saw the icon buttons)
    assert {"🔄", "🎴", "📋", "💾", "🎲", "♻"} <= seen["txt2img"], seen["txt2img"]
    assert "🔄" in seen["extras"] and "🔄" in seen["modelmerger"]

    # a button drawn later (ControlNet's 💥 and 🔄 inside its accordion, mounted when opened) is labelled too
    page.locator("#tab_txt2img-button").click()
    accordion = page.locator("#txt2img_controlnet")
    if accordion.count():
        accordion.locator(".label-wrap").first.click()
        trigger = page.locator("#txt2img_controlnet_ControlNet-0_controlnet_trigger_preprocessor")
        expect(trigger).to_be_visible()
        expect(trigger).to_have_attribute("title", re.compile(r"\w"))
        expect(trigger).to_have_attribute("aria-label", re.compile(r"\w"))

    # the styles picker says what it is: a placeholder and an accessible name
    styles = page.locator("#txt2img_styles input")
    expect(styles).to_have_attribute("placeholder", "Styles")
    expect(page.get_by_role("listbox", name="Styles").or_(page.get_by_label("Styles", exact=True)).first) \
        .to_be_visible()


def test_no_gradio_footer_and_no_share_button(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    for text in ("Use via API", "Built with Gradio"):
        expect(page.get_by_text(text)).to_have_count(0)
    expect(page.locator("footer")).to_have_count(0)

    # a finished image in the gallery: its own buttons (download, fullscreen) show, Share does not
    page.locator("#txt2img_prompt textarea").fill("a lighthouse")
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 1)):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Tab")
    page.locator("#txt2img_generate").click()
    expect(page.locator("#txt2img_gallery img").first).to_be_visible(timeout=JOB_MS)
    gallery = page.locator("#txt2img_gallery")
    expect(gallery.locator("button[aria-label]").locator("visible=true")).not_to_have_count(0)  # its toolbar
    expect(page.locator("button[aria-label='Share'], button[title='Share']").locator("visible=true")) \
        .to_have_count(0)


def test_history_fills_in_after_the_switch_and_follows_new_jobs(webui, new_page):
    """History reads its lists once it is shown (the page presses a hidden button after the switch); its timer
    then shows a job queued through the API while the tab is open."""
    import httpx

    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#tab_history-button").click()
    expect(page.locator("#history_page")).to_contain_text("Page 1 of")
    answer = httpx.post(webui.api("txt2img"), json={"prompt": "a chrome teapot", "steps": 1, "width": 64,
                                                    "height": 64}, timeout=JOB_MS / 1000)
    assert answer.status_code == 200
    expect(page.locator("#history_table")).to_contain_text("a chrome teapot", timeout=JOB_MS)
