"""In the browser: a new page starts from the values last used in txt2img, and ui-config.json sets defaults."""
import json

from playwright.sync_api import expect

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_new_page_starts_from_the_last_used_values(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#txt2img_prompt textarea").fill("remember this lighthouse")
    set_number(page, "txt2img_steps", 3)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    page.locator("#txt2img_generate").click()
    expect(page.locator("#html_info_txt2img")).to_contain_text("remember this lighthouse")

    again = new_page(webui.url)
    wait_for_ui(again)
    expect(again.locator("#txt2img_prompt textarea")).to_have_value("remember this lighthouse")
    expect(again.locator("#txt2img_steps input[type=number]")).to_have_value("3")
    expect(again.locator("#txt2img_width input[type=number]")).to_have_value("64")
    remembered = json.loads((webui.data_dir / "ui-last-used.json").read_text())
    assert remembered["txt2img/Prompt"] == "remember this lighthouse" and remembered["txt2img/Sampling steps"] == 3
    assert not any(key.startswith("img2img/") for key in remembered)  # img2img's Generate was not pressed


def test_ui_config_defaults_reach_the_page(webui, new_page):
    config = json.loads((webui.data_dir / "ui-config.json").read_text())  # written at start-up, every key
    assert config["txt2img/Sampling steps/value"] == 20
    assert config["img2img/CFG Scale/maximum"] == 30.0
