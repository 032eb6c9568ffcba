"""In the browser: the 🖌️ style editor (edit a style, save, it applies), and the extra networks panel's tools
(a subfolder button shows only its cards, an unreadable LoRA only says why, the 🔧 metadata editor's activation
text and weight are what a click inserts, the panel reopens on the card tab last used)."""
import csv
import json
import re

import torch
from playwright.sync_api import expect
from safetensors.torch import save_file

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures


def pick(page, elem_id: str, option: str) -> None:
    """Choose a dropdown entry as a user does: open it, click the entry."""
    dropdown = page.locator(f"#{elem_id}")
    dropdown.locator("input").click()
    dropdown.locator(f'li[role=option][aria-label="{option}"]').first.click()


def write_lora(path, metadata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": torch.randn(4, 8), "lora_unet_x.lora_up.weight": torch.randn(8, 4)},
              str(path), metadata=metadata)


def test_edit_a_style_save_it_and_it_applies(webui, new_page):
    styles = webui.data_dir / "styles.csv"
    with open(styles, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("name", "prompt", "negative_prompt"), ("e2e look", "vivid {prompt}", "")])
    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#txt2img_styles_edit_button").click()
    expect(page.locator("#txt2img_styles_dialog")).to_be_visible()
    pick(page, "txt2img_styles_edit_select", "e2e look")
    prompt = page.locator("#txt2img_edit_style_prompt textarea")
    expect(prompt).to_have_value("vivid {prompt}")
    prompt.fill("dreamy {prompt}, pastel")
    page.locator("#txt2img_edit_style_neg_prompt textarea").fill("harsh light")
    page.locator("#txt2img_edit_style_save").click()
    expect(page.get_by_text("Style 'e2e look' updated")).to_be_visible()
    with open(styles, encoding="utf-8-sig", newline="") as handle:
        assert list(csv.reader(handle))[1] == ["e2e look", "dreamy {prompt}, pastel", "harsh light"]

    page.locator("#txt2img_edit_style_close").click()
    expect(page.locator("#txt2img_styles_dialog")).to_be_hidden()
    page.locator("#txt2img_prompt textarea").fill("a lighthouse")
    pick(page, "txt2img_styles", "e2e look")
    page.locator("#txt2img_style_apply").click()
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("dreamy a lighthouse, pastel")
    expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("harsh light")


def test_folder_buttons_unreadable_files_and_the_metadata_editor(webui, new_page):
    lora = webui.data_dir / "models" / "Lora"
    write_lora(lora / "e2e_top.safetensors")
    write_lora(lora / "e2e_sub" / "e2e_inner.safetensors")
    (lora / "e2e_broken.safetensors").write_bytes((30).to_bytes(8, "little") + b"{" + b"\x00" * 29)
    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#txt2img_extra_networks").click()
    page.locator('#txt2img_extra_networks_tabs button[role="tab"]', has_text="Lora").click()
    cards = page.locator("#txt2img_lora_cards")
    top, inner = cards.locator('.card[data-name="e2e_top"]'), cards.locator('.card[data-name="e2e_inner"]')
    expect(top).to_be_visible()
    expect(inner).to_have_attribute("data-path", "e2e_sub/e2e_inner.safetensors")  # below the folder, no server path

    folder = cards.locator('.extra-network-dir[data-dir="e2e_sub"]')
    folder.click()
    expect(inner).to_be_visible()
    expect(top).to_be_hidden()
    expect(folder).to_have_attribute("aria-pressed", "true")
    folder.click()  # again: everything
    expect(top).to_be_visible()

    box = page.locator("#txt2img_prompt textarea")
    box.fill("castle")
    broken = cards.locator('.card[data-name="e2e_broken"]')
    expect(broken).to_have_class(re.compile(r"(^|\s)error(\s|$)"))
    broken.click()
    expect(cards.locator(".extra-network-notice")).to_contain_text("e2e_broken cannot be used")
    expect(box).to_have_value("castle")

    top.hover()
    top.locator(".edit-button").click()
    editor = page.locator("#txt2img_extra_edit_user_metadata")
    expect(editor).to_be_visible()
    editor.locator("#txt2img_extra_edit_user_metadata_activation_text textarea").fill("e2e trigger")
    weight = editor.locator("#txt2img_extra_edit_user_metadata_preferred_weight input[type=number]")
    weight.fill("0.6")
    weight.press("Enter")
    editor.locator("#txt2img_extra_edit_user_metadata_save").click()
    expect(editor).to_be_hidden()
    saved = json.loads((lora / "e2e_top.json").read_text(encoding="utf-8"))
    assert saved["activation text"] == "e2e trigger" and saved["preferred weight"] == 0.6
    box.click()
    box.press("End")
    cards.locator('.card[data-name="e2e_top"]').click()
    expect(box).to_have_value("castle <lora:e2e_top:0.6> e2e trigger")

    # a new page opens the panel on the card tab last used (remembered in the browser)
    again = new_page(webui.url, storage_state=page.context.storage_state())
    wait_for_ui(again)
    again.locator("#txt2img_extra_networks").click()
    expect(again.locator('#txt2img_extra_networks_tabs button[role="tab"]', has_text="Lora")) \
        .to_have_attribute("aria-selected", "true")
    expect(again.locator('#txt2img_lora_cards .card[data-name="e2e_top"]')).to_be_visible()
