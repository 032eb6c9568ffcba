"""Through the real page in headless Chromium: install an extension from a git repository ("Install from URL"),
then "Apply and restart UI" and see the extension's tab and its section in txt2img once the page comes back.

The restart is the real one: the server runs as its own process (`python app.py`), which "Apply and restart UI"
replaces with a fresh one on the same port, so no state of the restarted app reaches the other tests.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from browser import browser, new_page, wait_for_ui  # noqa: F401 - fixtures
from extension_repos import make_extension_repo
from live_server import free_port
from webui.models.tiny import write_single_file

expect = pytest.importorskip("playwright.sync_api").expect

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 180  # seconds for a whole start of the app in a new process (imports, models, the UI)
EXTENSION = "sd-webui-hello-e2e"
GREETING = "Hello from an installed extension"
SECTION = "Hello section"
CHECKBOX = "Say hello loudly"

# An A1111 extension: a tab (`on_ui_tabs`) with a greeting, and an always-on script whose section in the
# generation tabs has a labelled checkbox.
HELLO = {
    "scripts/hello.py": f'''
import gradio as gr

import modules.scripts as scripts
from modules import script_callbacks


def hello_tab():
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Textbox(value="{GREETING}", label="Greeting", elem_id="hello_e2e_greeting")
    return [(tab, "Hello", "hello_e2e")]


script_callbacks.on_ui_tabs(hello_tab)


class HelloSection(scripts.Script):
    def title(self):
        return "{SECTION}"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("{SECTION}", open=True):
            loud = gr.Checkbox(False, label="{CHECKBOX}", elem_id=self.elem_id("loud"))
        return [loud]
''',
}


class AppProcess:
    """`python app.py --data-dir DATA --port PORT` in its own process (the way users start it), logging to a file."""

    def __init__(self, data_dir: Path, log_path: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "app.py", "--data-dir", str(data_dir),
                                             "--port", str(self.port)], cwd=ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the app exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the app did not answer on {self.url} within {STARTUP_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        """End the process this test started (after a restart it is the same process id: exec replaces it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def app(tmp_path):
    """The app over a data dir with one tiny checkpoint, in its own process; ended when the test ends."""
    data = tmp_path / "data"
    write_single_file(data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors", "sd1")
    started = AppProcess(data, tmp_path / "app.log")
    try:
        started.wait_until_up()
        yield started
    finally:
        started.stop()


def test_install_from_url_then_apply_and_restart_shows_the_extensions_ui(app, new_page, tmp_path):
    repo = make_extension_repo(tmp_path / "repos", EXTENSION, HELLO)
    page = new_page(app.url)
    wait_for_ui(page)
    assert page.locator("#tab_hello_e2e-button").count() == 0
    assert page.get_by_label(CHECKBOX).count() == 0

    page.locator("#tab_extensions-button").click()
    page.locator("#extensions_install_tab-button").click()
    page.locator("#install_url textarea, #install_url input").first.fill(str(repo))
    page.locator("#install_button").click()
    expect(page.locator(".toast-body", has_text=f"Installed {EXTENSION}")).to_be_visible()
    result = page.locator("#install_result textarea")
    expect(result).to_have_value(f"Installed into {app.data_dir / 'extensions' / EXTENSION}. Press \"Apply and "
                                 "restart UI\" (Installed tab) to load it.")

    page.locator("#extensions_installed_tab-button").click()
    expect(page.locator("#extensions_installed_html")).to_contain_text(EXTENSION)
    expect(page.locator("#extensions_enabled").get_by_label(EXTENSION)).to_be_checked()

    page.evaluate("window.beforeRestart = true")  # gone once the page has reloaded
    page.locator("#extensions_apply").click()
    expect(page.locator(".toast-body", has_text="Restarting the UI")).to_be_visible()
    page.wait_for_function("() => window.beforeRestart === undefined && "
                           "document.querySelector('#txt2img_prompt textarea') !== null",
                           timeout=STARTUP_TIMEOUT * 1000)
    wait_for_ui(page)

    # the extension's section in txt2img, and its tab
    expect(page.locator("#tab_txt2img").get_by_text(SECTION, exact=True)).to_be_visible()
    expect(page.locator("#tab_txt2img").get_by_label(CHECKBOX)).not_to_be_checked()
    page.locator("#tab_hello_e2e-button").click()
    expect(page.locator("#hello_e2e_greeting textarea, #hello_e2e_greeting input").first).to_have_value(GREETING)
    assert app.process.poll() is None, "the restarted app is not running"
