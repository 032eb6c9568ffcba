"""In the browser: live previews show over the gallery while a job samples (never in it), then the result. A step
is held by the test's denoiser hook (`StepGate`), so the job is surely still running while the page is looked at."""
import base64
import io

from PIL import Image
from playwright.sync_api import expect

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures
from test_e2e_run_layout import gate  # noqa: F401 - fixture
from test_e2e_txt2img import fetch_image, set_prompt, set_small_job, thumbnails, wait_until_idle


def test_gallery_shows_previews_while_sampling(webui, new_page, gate):
    webui.services.options.update({"show_progress_every_n_steps": 2, "ui_remember_last_used": False}, save=False)
    page = new_page(webui.url)
    wait_for_ui(page)
    set_prompt(page, "txt2img", "a foggy harbour")
    set_small_job(page, "txt2img", steps=20)
    gate.arm()
    page.locator("#txt2img_generate").click()
    try:
        assert gate.held.wait(60), "the job never reached the held step"
        expect(page.locator("#txt2img_interrupt")).to_be_visible()
        preview = page.locator("#txt2img_live_preview img")
        expect(preview).to_be_visible()
        source = preview.evaluate("img => img.src")
        assert source.startswith("data:image/png;base64,")
        shown = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert shown.size == (8, 8)  # Approx cheap: 1/8 of the 64x64 picture
        expect(thumbnails(page)).to_have_count(0)  # the gallery holds finished images only
    finally:
        gate.release.set()
    wait_until_idle(page)
    expect(preview).to_have_count(0)
    final = fetch_image(page, thumbnails(page).first.locator("img").evaluate("img => img.src"))
    assert final.size == (64, 64), "the result replaced the preview"
    assert "a foggy harbour" in final.info.get("parameters", "")
