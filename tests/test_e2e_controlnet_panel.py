"""The ControlNet panel in a real browser at 1280x800: the weight / start / end labels on one line each, the model
dropdown showing a model's whole "name [hash]" title, enabled units marked on their tabs and counted in the
accordion's title (also while it is closed: a unit switched on before the page loaded or by pasted parameters), no
"Low VRAM" box."""
from __future__ import annotations

import json
import re
import shutil

import pytest
from PIL import Image, PngImagePlugin

from browser import browser, new_page, wait_for_ui  # noqa: F401 - fixtures
from conftest import install_model
from live_server import serve
from webui.models.tiny import write_controlnet

expect = pytest.importorskip("playwright.sync_api").expect

MODEL = "control_v11p_sd15s2_lineart_anime"  # one of the longest names of the ControlNet 1.1 models
# A unit switched on before the page is served (ui-config.json): the page's load event must count it.
PRESET = {"img2img/ControlNet Unit 1/Enable/value": True}

# How many lines a label's text takes: the distinct tops of its text's line boxes.
TEXT_LINES = """(element) => {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const tops = new Set();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.textContent.trim()) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const rect of range.getClientRects()) if (rect.width) tops.add(Math.round(rect.top));
  }
  return tops.size;
}"""


@pytest.fixture(scope="module")
def webui(tmp_path_factory, tiny_models):
    """The app over a data dir with the tiny SD1 checkpoint, a ControlNet with a long name, and a ui-config.json
    that switches img2img's unit 1 on."""
    data = tmp_path_factory.mktemp("e2e-controlnet")
    install_model(data, tiny_models["sd1"], "tiny-sd1.safetensors")
    write_controlnet(data / "models" / "ControlNet" / f"{MODEL}.safetensors", "sd1")
    (data / "ui-config.json").write_text(json.dumps(PRESET), encoding="utf-8")
    with serve(data) as server:
        yield server
    shutil.rmtree(data, ignore_errors=True)


def accordion_title(page, mode: str):
    """The accordion's title text (its header button holds the title, then the ▼ icon)."""
    return page.locator(f"#{mode}_controlnet > button.label-wrap > span").first


def test_the_panel_fits_and_shows_which_units_are_on(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    title = accordion_title(page, "txt2img")
    expect(title).to_have_text("ControlNet")  # nothing on
    title.click()
    p = "txt2img_controlnet_ControlNet-1"
    page.locator(f"#{p}_tab-button").click()
    expect(page.locator(f"#{p}_controlnet_enable_checkbox")).to_be_visible()

    # no control that does nothing: no "Low VRAM" box in any unit
    expect(page.get_by_text("Low VRAM")).to_have_count(0)
    expect(page.locator("[id$=_controlnet_low_vram_checkbox]")).to_have_count(0)

    # the three sliders' labels each on one line at 1280x800
    for suffix, label in (("control_weight", "Control Weight"), ("start_control_step", "Starting Control Step"),
                          ("ending_control_step", "Ending Control Step")):
        slider = page.locator(f"#{p}_controlnet_{suffix}_slider")
        expect(slider).to_be_visible()
        text = slider.get_by_text(label, exact=True).first
        assert text.evaluate(TEXT_LINES) == 1, f"{label!r} wraps: {text.bounding_box()}"

    # the model picked after 🔄 shows its whole title, hash included
    page.locator(f"#{p}_controlnet_refresh_models").click()
    expected = webui.services.controlnets.resolve(MODEL).title
    assert expected.endswith("]") and expected.startswith(f"{MODEL} [")
    dropdown = page.locator(f"#{p}_controlnet_model_dropdown input")
    dropdown.click()
    page.locator(f'#{p}_controlnet_model_dropdown li[role=option][aria-label="{expected}"]').click()
    expect(dropdown).to_have_value(expected)
    scroll, client = dropdown.evaluate("(input) => [input.scrollWidth, input.clientWidth]")
    assert scroll <= client, f"the model's title is cut: {scroll}px of text in a {client}px box"

    # enabling unit 1 marks its tab and the title counts it, also with the accordion closed
    page.locator(f"#{p}_controlnet_enable_checkbox input").check()
    expect(page.locator(f"#{p}_tab-button")).to_have_text("ControlNet Unit 1 ✓")
    expect(title).to_have_text("ControlNet - 1 unit")
    expect(page.locator("#txt2img_controlnet_ControlNet-0_tab-button")).to_have_text("ControlNet Unit 0")
    title.click()
    expect(page.locator(f"#{p}_controlnet_enable_checkbox")).to_be_hidden()
    expect(title).to_have_text("ControlNet - 1 unit")
    title.click()
    page.locator(f"#{p}_controlnet_enable_checkbox input").uncheck()
    expect(title).to_have_text("ControlNet")
    expect(page.locator(f"#{p}_tab-button")).to_have_text("ControlNet Unit 1")


def test_a_unit_on_before_the_page_loads_is_counted_in_the_closed_accordion(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#tab_img2img-button").click()
    title = accordion_title(page, "img2img")
    expect(title).to_be_visible()
    expect(title).to_have_text("ControlNet - 1 unit")
    expect(page.locator("#img2img_controlnet_ControlNet-1_controlnet_enable_checkbox")).to_be_hidden()  # closed
    title.click()
    expect(page.locator("#img2img_controlnet_ControlNet-1_tab-button")).to_have_text("ControlNet Unit 1 ✓")


def test_units_switched_on_by_a_paste_show_in_the_closed_accordion(webui, new_page, tmp_path):
    entry = ("Module: canny, Model: None, Weight: 0.5, Resize Mode: Crop and Resize, Processor Res: 512, "
             "Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, "
             "Control Mode: Balanced")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f'a lighthouse\nSteps: 3, Sampler: Euler, Seed: 5, Size: 64x64, ControlNet 0: '
                                f'"{entry}", ControlNet 2: "{entry}", Version: v1')
    Image.new("RGB", (64, 64), (90, 120, 200)).save(tmp_path / "pasted.png", pnginfo=info)

    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#tab_pnginfo-button").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(tmp_path / "pasted.png"))
    expect(page.locator("#pnginfo_generation_info textarea")).to_have_value(re.compile("ControlNet 2"))
    page.locator("#pnginfo_send_txt2img").click()
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a lighthouse")
    title = accordion_title(page, "txt2img")
    expect(title).to_have_text("ControlNet - 2 units")  # the accordion is still closed
    expect(page.locator("#txt2img_controlnet_ControlNet-0_controlnet_enable_checkbox")).to_be_hidden()
    title.click()
    for index, label in enumerate(("ControlNet Unit 0 ✓", "ControlNet Unit 1", "ControlNet Unit 2 ✓")):
        expect(page.locator(f"#txt2img_controlnet_ControlNet-{index}_tab-button")).to_have_text(label)
