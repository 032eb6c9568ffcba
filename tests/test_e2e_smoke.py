"""The page loads in headless Chromium."""
from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures


def test_page_loads(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    assert page.locator("#txt2img_generate").is_visible()
