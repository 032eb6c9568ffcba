"""The prompt box's tools in a real browser: Ctrl+Up / Ctrl+Down emphasis (with the keyedit settings), ⇅, 🗑️,
↙️ on an infotext typed into the prompt, a PNG dropped on the prompt box, and img2img's token counter after a
reload that restores its last used prompt."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures

expect = pytest.importorskip("playwright.sync_api").expect

INFOTEXT = ("a lighthouse at dusk, dramatic sky\nNegative prompt: fog, blurry\n"
            "Steps: 7, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5.5, Seed: 4242, Size: 192x320")


def prompt(page, tab: str = "txt2img"):
    return page.locator(f"#{tab}_prompt textarea")


def number(page, elem_id: str):
    return page.locator(f"#{elem_id} input[type=number]")


def select(page, text: str, start: int, end: int | None = None) -> None:
    """Type `text` into txt2img's prompt and put the selection (or the caret) at start..end."""
    box = prompt(page)
    box.fill(text)
    box.evaluate("(area, [start, end]) => { area.focus(); area.setSelectionRange(start, end); }",
                 [start, start if end is None else end])


def counted(webui, text: str) -> str:
    """What a counter shows for `text`: the server's count, so the test sees which text the page counted."""
    count, limit = webui.services.token_count(text, 20)
    return f"{count}/{limit}"


def open_page(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    return page


def test_ctrl_up_and_down_change_the_emphasis(webui, new_page):
    page = open_page(webui, new_page)
    box = prompt(page)
    select(page, "a castle on a hill", 2, 8)  # "castle" selected
    box.press("Control+ArrowUp")
    expect(box).to_have_value("a (castle:1.1) on a hill")
    box.press("Control+ArrowUp")
    expect(box).to_have_value("a (castle:1.2) on a hill")
    box.press("Control+ArrowDown")
    box.press("Control+ArrowDown")
    expect(box).to_have_value("a castle on a hill")  # at 1.0 the parentheses go
    box.press("Control+ArrowDown")
    expect(box).to_have_value("a (castle:0.9) on a hill")

    select(page, "a castle on a hill", 16)  # the caret in "hill", nothing selected: the word
    box.press("Control+ArrowUp")
    expect(box).to_have_value("a castle on a (hill:1.1)")

    select(page, "a fox <lora:tiny:0.8>, snow", 10)  # the caret inside a LoRA tag: its weight by 0.05
    box.press("Control+ArrowUp")
    expect(box).to_have_value("a fox <lora:tiny:0.85>, snow")
    box.press("Control+ArrowDown")
    box.press("Control+ArrowDown")
    expect(box).to_have_value("a fox <lora:tiny:0.75>, snow")

    select(page, "red, green, blue", 6)  # Alt+Right moves the comma-separated item at the caret
    box.press("Alt+ArrowRight")
    expect(box).to_have_value("red, blue, green")

    # Gradio took the edited text (the page's input event): ↙️ sees it as the prompt, which holds no parameters
    page.locator("#txt2img_paste").click()
    expect(page.locator(".toast-body", has_text="holds no generation parameters")).to_be_visible()


def test_the_precision_settings_reach_the_page(webui, new_page):
    webui.services.options.update({"keyedit_precision_attention": 0.15, "keyedit_precision_extra": 0.2},
                                  save=False)
    try:
        page = open_page(webui, new_page)
        box = prompt(page)
        holder = page.locator("#keyedit_options textarea")
        expect(holder).not_to_have_value("")  # filled by the load event
        assert json.loads(holder.input_value())["keyedit_precision_attention"] == 0.15
        select(page, "a castle", 2, 8)
        box.press("Control+ArrowUp")
        expect(box).to_have_value("a (castle:1.15)")
        select(page, "<lora:tiny:1>", 3)
        box.press("Control+ArrowDown")
        expect(box).to_have_value("<lora:tiny:0.8>")
    finally:
        webui.services.options.update({"keyedit_precision_attention": 0.1, "keyedit_precision_extra": 0.05},
                                      save=False)


def test_swap_and_clear(webui, new_page):
    page = open_page(webui, new_page)
    for elem_id, value in (("txt2img_width", 320), ("txt2img_height", 192)):
        number(page, elem_id).fill(str(value))
        number(page, elem_id).press("Tab")
    page.locator("#txt2img_res_switch_btn").click()
    expect(number(page, "txt2img_width")).to_have_value("192")
    expect(number(page, "txt2img_height")).to_have_value("320")

    prompt(page).fill("a castle")
    page.locator("#txt2img_neg_prompt textarea").fill("fog")
    expect(page.locator("#txt2img_token_counter")).to_have_text(counted(webui, "a castle"))
    page.once("dialog", lambda dialog: dialog.dismiss())  # asked first: No keeps the prompts
    page.locator("#txt2img_clear_prompt").click()
    expect(prompt(page)).to_have_value("a castle")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#txt2img_clear_prompt").click()
    expect(prompt(page)).to_have_value("")
    expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("")
    expect(page.locator("#txt2img_token_counter")).to_have_text("0/75")
    expect(page.locator("#txt2img_negative_token_counter")).to_have_text("0/75")


def expect_pasted(page, tab: str = "txt2img") -> None:
    expect(prompt(page, tab)).to_have_value("a lighthouse at dusk, dramatic sky")
    expect(page.locator(f"#{tab}_neg_prompt textarea")).to_have_value("fog, blurry")
    expect(number(page, f"{tab}_steps")).to_have_value("7")
    expect(page.locator(f"#{tab}_seed input")).to_have_value("4242")
    expect(number(page, f"{tab}_width")).to_have_value("192")
    expect(number(page, f"{tab}_height")).to_have_value("320")
    expect(page.locator(f"#{tab}_sampling input")).to_have_value("Euler a")
    expect(page.locator(f"#{tab}_cfg_scale input[type=number]")).to_have_value("5.5")


def png_bytes(parameters: str | None) -> bytes:
    image = Image.new("RGB", (8, 8), (200, 30, 30))
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


DROP = """([data, name, selector]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type: 'image/png' }));
  const area = document.querySelector(selector);
  area.dispatchEvent(new DragEvent('dragover', { bubbles: true, cancelable: true, dataTransfer: transfer }));
  return area.dispatchEvent(new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: transfer }));
}"""


def drop(page, data: bytes, tab: str = "txt2img") -> bool:
    return page.evaluate(DROP, [base64.b64encode(data).decode(), "dropped.png", f"#{tab}_prompt textarea"])


def test_paste_and_a_dropped_png_fill_the_fields(webui, new_page):
    page = open_page(webui, new_page)
    prompt(page).fill(INFOTEXT)
    page.locator("#txt2img_paste").click()
    expect_pasted(page)
    # the counter counts the prompt that is left, not the infotext that was typed
    assert counted(webui, "a lighthouse at dusk, dramatic sky") != counted(webui, INFOTEXT)
    expect(page.locator("#txt2img_token_counter")).to_have_text(counted(webui, "a lighthouse at dusk, dramatic sky"))

    prompt(page).fill("will be replaced")
    for elem_id in ("txt2img_steps", "txt2img_width"):
        number(page, elem_id).fill("64")
        number(page, elem_id).press("Tab")
    expect(number(page, "txt2img_steps")).to_have_value("64")
    expect(page.locator("#txt2img_token_counter")).to_have_text(counted(webui, "will be replaced"))
    assert drop(page, png_bytes(INFOTEXT)) is False  # the page took the drop (no text inserted)
    expect_pasted(page)
    expect(page.locator("#txt2img_token_counter")).to_have_text(counted(webui, "a lighthouse at dusk, dramatic sky"))

    drop(page, png_bytes(None))  # no parameters: a notice, nothing changes
    expect(page.locator(".toast-body", has_text="No generation parameters found")).to_be_visible()
    expect(prompt(page)).to_have_value("a lighthouse at dusk, dramatic sky")


def test_img2img_counts_its_restored_prompt(webui, new_page):
    restored = "a red fox sleeping in the snow, watercolor"
    (webui.data_dir / "ui-last-used.json").write_text(json.dumps({"img2img/Prompt": restored,
                                                                  "img2img/Negative prompt": "lowres"}))
    try:
        page = open_page(webui, new_page)
        page.locator("#tab_img2img-button").click()
        expect(prompt(page, "img2img")).to_have_value(restored)
        counter = page.locator("#img2img_token_counter")
        expect(counter).to_have_text(counted(webui, restored))
        expect(page.locator("#img2img_negative_token_counter")).to_have_text(counted(webui, "lowres"))
        assert counted(webui, restored) != "0/75"

        # PNG Info's Send to img2img fills the prompt of a tab that is not shown: counted too
        page.locator("#tab_pnginfo-button").click()
        page.locator("#pnginfo_image input[type=file]").set_input_files(
            files=[{"name": "sent.png", "mimeType": "image/png", "buffer": png_bytes(INFOTEXT)}])
        expect(page.locator("#pnginfo_generation_info textarea")).to_have_value(INFOTEXT)
        page.locator("#pnginfo_send_img2img").click()
        expect(prompt(page, "img2img")).to_have_value("a lighthouse at dusk, dramatic sky")
        expect(counter).to_have_text(counted(webui, "a lighthouse at dusk, dramatic sky"))
        expect(page.locator("#img2img_negative_token_counter")).to_have_text(counted(webui, "fog, blurry"))
    finally:
        (webui.data_dir / "ui-last-used.json").unlink()
