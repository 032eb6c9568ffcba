"""Fixtures of the browser end-to-end tests (`tests/test_e2e_*.py` import them): the real app served on a free 127.0.0.1 port with tiny models, driven by Playwright in
Debian's headless Chromium (/usr/bin/chromium). A failing test leaves a screenshot of its page in
`test-artifacts/e2e/<test>.png`.

Without Chromium (or Playwright) the tests are skipped, except under CI (`CI=true`), where that is a failure:
`.ci/run` installs both.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import install_model
from live_server import serve

CHROMIUM = os.environ.get("WEBUI_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "e2e"
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 30_000  # any single wait; tiny models make every job take well under this


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"browser tests need {reason} under CI (.ci/run installs it)")
    pytest.skip(f"browser tests need {reason}")


@pytest.fixture(scope="module")
def browser():
    """Chromium, per test module: each module imports this fixture, which makes it a fixture of its own there, so a
    session scope would start a second Playwright beside the first, and Playwright's sync API allows one at a time."""
    if not Path(CHROMIUM).exists():
        _unavailable(f"Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package (requirements-test.txt)")
    from playwright.sync_api import expect
    expect.set_options(timeout=TIMEOUT_MS)  # expect()'s own 5 s default is short on a loaded 2-core machine
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def _screenshot_name(item) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid.split("::", 1)[-1])[:120] + ".png"


@pytest.fixture
def new_page(browser, request):
    """`new_page(url, **context_options)` opens a page (1280x800 unless `viewport` is given); every page the test
    opened is screenshotted into test-artifacts/e2e when the test fails, then closed."""
    contexts = []

    def open_page(url: str, **options):
        context = browser.new_context(**{"viewport": VIEWPORT, "accept_downloads": True, **options})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(url)
        contexts.append((context, page))
        return page

    yield open_page
    failed = any(getattr(getattr(request.node, f"report_{when}", None), "failed", False)
                 for when in ("setup", "call"))
    for number, (context, page) in enumerate(contexts):
        if failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            name = _screenshot_name(request.node)
            if number:
                name = name.replace(".png", f"-{number}.png")
            try:
                page.screenshot(path=str(ARTIFACTS / name), full_page=True)
            except Exception as exc:  # noqa: BLE001 - a page that crashed still closes
                print(f"could not screenshot {name}: {exc}")
        context.close()


def wait_for_ui(page) -> None:
    """Until Gradio has rendered the page and its load event has filled it (last used values, pickers): the page
    marks that with `data-webui-loaded` on <body>."""
    page.locator("#txt2img_prompt textarea").wait_for(state="visible")
    page.locator("body[data-webui-loaded]").wait_for(state="attached")


@pytest.fixture(scope="module")
def webui(tmp_path_factory, tiny_models):
    """The app with the UI, over a data dir holding one tiny SD1 checkpoint (and its inpainting twin) — shared by
    a module's tests; tests that need other files add them to `webui.data_dir` and press a refresh button."""
    data = tmp_path_factory.mktemp("e2e-data")
    install_model(data, tiny_models["sd1"], "tiny-sd1.safetensors")
    with serve(data) as server:
        yield server
    shutil.rmtree(data, ignore_errors=True)
