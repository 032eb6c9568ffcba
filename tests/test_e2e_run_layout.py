"""In a real browser at 1280x800: nothing moves while txt2img runs (Interrupt and Skip side by side in Generate's own
space, the progress panel and live preview over the gallery), the elapsed time ticks while one step takes long, Send
to img2img never sends the live preview, the picture and its infotext are in view during and after a run
(screenshots in test-artifacts/e2e/), and a job's warnings stay under the gallery after their toast.

A step is held deterministically by a denoiser hook the test puts in front of the engine's (`StepGate`), so the
page can be looked at while one step "takes long"."""
from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from browser import ARTIFACTS, browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures
from test_e2e_txt2img import fetch_image, infotext, set_prompt, set_small_job, thumbnails, toasts, wait_until_idle
from webui.extensions.hooks import DispatchingHooks

expect = pytest.importorskip("playwright.sync_api").expect

JOB_MS = 60_000
HELD_STEP = 2  # the gate holds the model evaluation of this sampling step (0-based): two steps are done by then


class StepGate(DispatchingHooks):
    """The engine's hooks, with one model evaluation held until the test releases it (when armed)."""

    wants_denoiser = True

    def __init__(self, inner):
        self.inner = inner
        self.armed = False
        self.held = threading.Event()
        self.release = threading.Event()

    def dispatch(self, point: str, *args) -> None:
        if point == "denoiser" and self.armed and args[1].sampling_step >= HELD_STEP:
            self.armed = False
            self.held.set()
            self.release.wait(120)  # never forever, whatever the test does
        getattr(self.inner, point)(*args)

    def arm(self) -> None:
        self.held.clear()
        self.release.clear()
        self.armed = True


@pytest.fixture(scope="module")
def gate(webui):
    engine = webui.services.engine
    original = engine.hooks
    engine.hooks = StepGate(original)
    webui.services.options.update({"ui_remember_last_used": False, "show_progress_every_n_steps": 1}, save=False)
    yield engine.hooks
    engine.hooks.release.set()
    engine.hooks = original


def box(page, selector: str) -> dict:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, f"{selector} is not on the page"
    return found


def assert_in_view(page, selector: str, height: int = 800) -> None:
    found = box(page, selector)
    assert found["y"] >= 0 and found["y"] + found["height"] <= height, f"{selector} is not in view: {found}"


def shown_image(page):
    """The gallery's (first) picture."""
    return thumbnails(page).first.locator("img")


def elapsed_seconds(text: str) -> int:
    found = re.search(r"(?:(\d+)m )?(\d+)s elapsed", text)
    assert found, text
    return int(found.group(1) or 0) * 60 + int(found.group(2))


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_a_run_moves_nothing_ticks_and_sends_only_finished_images(webui, gate, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    set_prompt(page, "txt2img", "a lighthouse on a cliff")
    set_small_job(page, "txt2img", steps=3, seed=4321)
    page.locator("#txt2img_generate").click()
    expect(infotext(page)).to_contain_text("Seed: 4321", timeout=JOB_MS)
    wait_until_idle(page)
    expect(shown_image(page)).to_be_visible()
    first = fetch_image(page, shown_image(page).evaluate("img => img.src"))
    assert "Seed: 4321" in first.info["parameters"]
    idle = {name: box(page, selector) for name, selector in (
        ("generate", "#txt2img_generate"), ("gallery", "#txt2img_gallery"), ("info", "#html_info_txt2img"))}

    gate.arm()
    set_prompt(page, "txt2img", "a windmill in a tulip field")
    set_small_job(page, "txt2img", steps=6, seed=777)
    page.locator("#txt2img_generate").click()
    assert gate.held.wait(JOB_MS / 1000), "the run never reached the held step"
    expect(page.locator("#txt2img_live_preview img")).to_be_visible(timeout=JOB_MS)
    running = page.locator("#txt2img_progress .job-running")
    expect(running).to_contain_text(f"step {HELD_STEP}/6")

    # (a) Interrupt and Skip side by side in exactly Generate's space; the gallery and infotext did not move
    interrupt, skip = box(page, "#txt2img_interrupt"), box(page, "#txt2img_skip")
    expect(page.locator("#txt2img_generate")).to_be_hidden()
    generate = idle["generate"]
    for button in (interrupt, skip):
        assert abs(button["y"] - generate["y"]) <= 1 and abs(button["height"] - generate["height"]) <= 1, \
            (button, generate)
    assert interrupt["x"] + interrupt["width"] <= skip["x"], "Interrupt is left of Skip, in one row"
    assert abs(interrupt["x"] - generate["x"]) <= 1
    assert abs(skip["x"] + skip["width"] - (generate["x"] + generate["width"])) <= 1
    assert box(page, "#txt2img_gallery") == idle["gallery"]
    assert box(page, "#html_info_txt2img")["y"] == idle["info"]["y"]

    # (b) the elapsed time ticks while the same step runs
    before = running.inner_text()
    expect(running).not_to_have_text(before, timeout=10_000)
    after = running.inner_text()
    assert re.search(r"step \d+/\d+", before).group(0) == re.search(r"step \d+/\d+", after).group(0)
    assert elapsed_seconds(after) > elapsed_seconds(before), (before, after)

    # (d) during the run: the picture (the last result, the preview over it) and its infotext are in view
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "txt2img_during_run.png"))
    for selector in ("#txt2img_gallery .thumbnail-item img", "#txt2img_live_preview img",
                     "#html_info_txt2img .infotext"):
        assert_in_view(page, selector)
    assert "Seed: 4321" in infotext(page).inner_text()  # the shown picture's own parameters

    # (c) Send to img2img while the preview shows: the finished picture with its parameters, never the preview
    page.locator("#txt2img_send_to_img2img").click()
    expect(page.locator("#img2img_prompt textarea")).to_have_value("a lighthouse on a cliff")
    sent = page.locator("#img2img_image img")
    expect(sent).to_be_visible()
    assert np.array_equal(pixels(fetch_image(page, sent.evaluate("img => img.src"))), pixels(first))
    page.locator("#tab_txt2img-button").click()

    gate.release.set()
    expect(infotext(page)).to_contain_text("Seed: 777", timeout=JOB_MS)
    wait_until_idle(page)
    expect(page.locator("#txt2img_live_preview img")).to_have_count(0)
    expect(thumbnails(page)).to_have_count(1)
    expect(shown_image(page)).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "txt2img_after_run.png"))
    for selector in ("#txt2img_gallery .thumbnail-item img", "#html_info_txt2img .infotext"):
        assert_in_view(page, selector)
    assert box(page, "#txt2img_generate") == idle["generate"] and box(page, "#txt2img_gallery") == idle["gallery"]
    second = fetch_image(page, shown_image(page).evaluate("img => img.src"))

    # after the run, Send to img2img sends the new picture with its prompt
    page.locator("#txt2img_send_to_img2img").click()
    expect(page.locator("#img2img_prompt textarea")).to_have_value("a windmill in a tulip field")
    expect(page.locator("#img2img_seed input")).to_have_value("777")
    sent = page.locator("#img2img_image img")
    expect(sent).to_be_visible()
    assert np.array_equal(pixels(fetch_image(page, sent.evaluate("img => img.src"))), pixels(second))


def test_job_warnings_stay_under_the_gallery_after_the_toast(webui, gate, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    set_prompt(page, "txt2img", "a fox <lora:nothere:1>")
    set_small_job(page, "txt2img", steps=2, seed=5)
    page.locator("#txt2img_generate").click()
    warning = page.locator("#txt2img_warnings .job-warning")
    expect(warning).to_contain_text('LoRA "nothere" not found', timeout=JOB_MS)
    wait_until_idle(page)
    toast = toasts(page).filter(has_text='LoRA "nothere" not found')
    if toast.count():  # the user closes the toast (on a slow machine it may have timed out already)
        toast.locator(".toast-close").click()
    expect(toast).to_have_count(0)
    expect(warning).to_be_visible()
    assert box(page, "#txt2img_warnings")["y"] > box(page, "#txt2img_gallery")["y"]  # under the gallery

    set_prompt(page, "txt2img", "a fox")  # the next run has no warning: the old one goes
    page.locator("#txt2img_generate").click()
    expect(infotext(page)).to_contain_text(re.compile(r"^a fox\s"), timeout=JOB_MS)
    wait_until_idle(page)
    expect(page.locator("#txt2img_warnings .job-warning")).to_have_count(0)
