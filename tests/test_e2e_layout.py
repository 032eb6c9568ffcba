"""The page's layout and theme in a real browser: no tab is wider than the window (desktop and tablet sizes, with
the txt2img panels open), and the browser's dark / light preference picks Gradio's dark / light theme."""
from __future__ import annotations

import re

import pytest

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures

expect = pytest.importorskip("playwright.sync_api").expect

# tab elem_id suffix -> an element that shows the tab's content has been rendered
TABS = {"txt2img": "#txt2img_prompt", "img2img": "#img2img_prompt", "extras": "#extras_generate",
        "pnginfo": "#pnginfo_image", "settings": "#settings_submit", "extensions": "#tabs_extensions"}
VIEWPORTS = [{"width": 1280, "height": 800}, {"width": 768, "height": 1024}, {"width": 1024, "height": 768}]

# What sticks out past the right edge of the window. `.gradio-container` clips horizontally (overflow-x: hidden),
# so `scrollWidth` alone would not see a too-wide row: every visible element is measured too. An element inside a
# box of its own that scrolls or clips (a table in a scrolling wrapper) and that box fits, does not count.
OVERFLOW_PROBE = """() => {
  const limit = document.documentElement.clientWidth;
  const pageLevel = new Set([document.documentElement, document.body, document.querySelector('gradio-app'),
                             document.querySelector('.gradio-container'), document.querySelector('.main')]);
  const contained = (element) => {
    for (let up = element.parentElement; up && !pageLevel.has(up); up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== 'visible' && up.getBoundingClientRect().right <= limit + 1) return true;
    }
    return false;
  };
  const describe = (element) => {
    const box = element.getBoundingClientRect();
    const classes = [...element.classList].filter((name) => !name.startsWith('svelte-')).join('.');
    return `${element.tagName.toLowerCase()}${element.id ? '#' + element.id : ''}${classes ? '.' + classes : ''}`
      + ` (right edge ${Math.round(box.right)}px, ${Math.round(box.width)}px wide)`;
  };
  const outside = [];
  for (const element of document.querySelectorAll('body *')) {
    const box = element.getBoundingClientRect();
    if (!box.width || box.right <= limit + 1 || !element.checkVisibility({visibilityProperty: true})) continue;
    if (element.parentElement && outside.includes(element.parentElement)) continue;  // the outermost only
    if (!contained(element)) outside.push(element);
  }
  return {scrollWidth: document.documentElement.scrollWidth, clientWidth: limit,
          outside: outside.slice(0, 10).map(describe)};
}"""


def overflow(page) -> dict:
    return page.evaluate(OVERFLOW_PROBE)


def assert_fits(page, where: str) -> None:
    found = overflow(page)
    assert found["scrollWidth"] <= found["clientWidth"], f"{where}: the page scrolls sideways: {found}"
    assert not found["outside"], f"{where}: wider than the window: {found['outside']}"


def open_tab(page, tab: str) -> None:
    page.locator(f"#tab_{tab}-button").click()
    expect(page.locator(f"#tab_{tab}-button")).to_have_attribute("aria-selected", "true")
    expect(page.locator(TABS[tab]).first).to_be_visible()
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")  # laid out


# --- layout -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda v: f"{v['width']}x{v['height']}")
def test_no_tab_scrolls_sideways(webui, new_page, viewport):
    page = new_page(webui.url, viewport=viewport)
    wait_for_ui(page)
    # txt2img with its panels open: extra networks cards, Hires. fix, ControlNet
    page.locator("#txt2img_extra_networks").click()
    expect(page.locator("#txt2img_extra_tabs")).to_be_visible()
    for accordion in ("#txt2img_hr", "#txt2img_controlnet"):
        page.locator(f"{accordion} button").first.click()
    expect(page.locator("#txt2img_hr_upscaler")).to_be_visible()
    expect(page.locator("#txt2img_controlnet_ControlNet-0_controlnet_enable_checkbox")).to_be_visible()
    assert_fits(page, f"txt2img at {viewport}")
    for tab in TABS:
        open_tab(page, tab)
        assert_fits(page, f"{tab} at {viewport}")


def test_the_overflow_probe_sees_a_too_wide_row(webui, new_page):
    """The check above is not blind: a row wider than the window (clipped by Gradio's container, so the page
    itself does not scroll) is found and named."""
    page = new_page(webui.url, viewport=VIEWPORTS[1])
    wait_for_ui(page)
    assert_fits(page, "txt2img")
    page.evaluate("""() => {
        const row = document.createElement('div');
        row.id = 'too_wide_row';
        row.style.width = '1500px';
        row.style.height = '10px';
        document.querySelector('#txt2img_settings').appendChild(row);
    }""")
    found = overflow(page)
    assert any(entry.startswith("div#too_wide_row") for entry in found["outside"]), found


# --- theme --------------------------------------------------------------------------------------------------------

def _rgb(css: str) -> tuple[int, int, int]:
    values = re.findall(r"[\d.]+", css)
    assert len(values) >= 3, css
    return tuple(round(float(v)) for v in values[:3])


def _luminance(css: str) -> float:
    """Relative luminance (0 black .. 1 white) of a CSS rgb()/rgba() colour."""
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(v) for v in _rgb(css))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


THEME_PROBE = """() => {
  const style = (selector) => getComputedStyle(document.querySelector(selector));
  return {dark: document.body.classList.contains('dark'),
          page: style('body').backgroundColor,
          block: style('#txt2img_prompt').backgroundColor,
          text: style('#txt2img_prompt textarea').color,
          counter: style('#txt2img_token_counter .token-count').backgroundColor};
}"""


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_the_browser_colour_scheme_picks_the_theme(webui, new_page, scheme):
    page = new_page(webui.url, color_scheme=scheme)
    wait_for_ui(page)
    expect(page.locator("#txt2img_token_counter .token-count")).to_be_visible()
    seen = page.evaluate(THEME_PROBE)
    dark = scheme == "dark"
    assert seen["dark"] is dark, seen
    backgrounds = {name: _luminance(seen[name]) for name in ("page", "block", "counter")}
    text = _luminance(seen["text"])
    if dark:
        assert all(value < 0.1 for value in backgrounds.values()), seen
        assert text > 0.6, f"the prompt's text should be light on the dark theme: {seen}"
    else:
        assert all(value > 0.8 for value in backgrounds.values()), seen
        assert text < 0.1, f"the prompt's text should be dark on the light theme: {seen}"
