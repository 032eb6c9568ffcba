"""Gradio 3 extensions in the real page (headless Chromium, one server): the fixture extensions of
`test_compat_gradio3.py` (images-browser's shape: a tab listing our outputs through a hidden button its page script
presses, `_js=` chained after the listing, `gr.Box`, "Send to img2img"; sd-webui-ar's shape: a ToolButton subclass
whose handler sets numbers)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from browser import browser, new_page, wait_for_ui  # noqa: F401 - fixtures
from live_server import serve
from test_compat_gradio3 import require_outdir_options, write_extensions
from tests.conftest import install_model

expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("e2e-gradio3")
    install_model(data, tiny_models["sd1"], "tiny-sd1.safetensors")
    write_extensions(data / "extensions")
    with serve(data) as live:
        yield live


def test_images_browser_like_tab_lists_our_outputs_and_sends_to_img2img(server, new_page):
    from webui.core.request import GenerationRequest
    require_outdir_options(server.services)
    result = server.services.engine.run(GenerationRequest(prompt="a listed fox", negative_prompt="", steps=2,
                                                          sampler_name="Euler", width=64, height=64, seed=33,
                                                          save_images=True))
    saved = [Path(p) for p in result.saved_paths if p.endswith(".png")]
    assert len(saved) == 1
    page = new_page(server.url)
    wait_for_ui(page)
    page.get_by_role("tab", name="Image Browser").click()
    # as images-browser's page script: press the hidden "Renew Page" button (kept in the page, not shown)
    renew = page.locator("#txt2img_ib_renew_page")
    expect(renew).to_be_attached()
    expect(renew).to_be_hidden()
    renew.dispatch_event("click")
    expect(page.locator("#txt2img_ib_gallery img")).to_have_count(1)
    src = page.locator("#txt2img_ib_gallery img").first.get_attribute("src")
    assert src and "file=" in src and saved[0].name in src
    # the `_js=` function chained after the listing ran in the page (its return filled the hidden textbox)
    folder = str(server.services.paths.outputs / "txt2img-images")
    expect(page.locator("#txt2img_ib_js_return textarea")).to_have_value(f"listed {folder}")
    # its set_index button (through `_js=`) shows the picture's infotext and the Send buttons' row (built hidden:
    # in the page, not shown); "Send to img2img" sends both
    panel = page.locator("#txt2img_ib_button_panel")
    expect(panel).to_be_attached()
    expect(panel).to_be_hidden()
    page.locator("#txt2img_ib_set_index").dispatch_event("click")
    expect(page.locator("#txt2img_ib_info textarea")).to_have_value(re.compile(r"^a listed fox\n"))
    expect(panel).to_be_visible()
    page.locator("#txt2img_ib_button_panel #img2img_tab").click()
    expect(page.locator("#tab_img2img")).to_be_visible()
    expect(page.locator("#img2img_prompt textarea")).to_have_value("a listed fox")
    expect(page.locator("#img2img_seed input")).to_have_value("33")
    expect(page.locator("#img2img_image img").first).to_be_visible()
    with Image.open(saved[0]) as picture:
        size = picture.size
    assert size == (64, 64)


def test_tool_button_subclass_sets_numbers(server, new_page):
    page = new_page(server.url)
    wait_for_ui(page)
    button = page.locator("#txt2img_ar_test_btn")
    expect(button).to_have_text("640x384")
    button.click()
    numbers = page.locator("#txt2img_container_ar_test input[type=number]")
    expect(numbers.nth(0)).to_have_value("640")
    expect(numbers.nth(1)).to_have_value("384")
