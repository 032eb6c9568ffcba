"""The txt2img tab in a real browser: Generate (button and Ctrl+Enter) with a live progress bar, Escape and
Interrupt (finished images of a batch are kept, shown and saved), PNG Info's "Send to txt2img", and LoRA cards of
the extra networks panel."""
from __future__ import annotations

import base64
import io
import re
import threading

import httpx
import pytest
from PIL import Image

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures
from lora_files import kohya_lora
from webui.extensions.hooks import DispatchingHooks
from webui.models.tiny import build_modules

expect = pytest.importorskip("playwright.sync_api").expect

SIZE = 64
JOB_MS = 30_000  # waits on a job (the first one of a server also loads the checkpoint)


@pytest.fixture(scope="module", autouse=True)
def pages_start_from_defaults(webui):
    """Each test's page starts from the UI's defaults, not from the values an earlier test's Generate left in
    `ui-last-used.json` (a batch count of 20, say); remembering is tested in test_e2e_last_used.py."""
    webui.services.options.update({"ui_remember_last_used": False}, save=False)


# --- driving the tab ------------------------------------------------------------------------------------------------

def set_slider(page, elem_id: str, value) -> None:
    """Type into a slider's number box (as a user does) and check the slider took the value."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")
    expect(page.locator(f"#{elem_id} input[type=range]")).to_have_value(str(value))


def set_seed(page, tab: str, seed: int) -> None:
    box = page.locator(f"#{tab}_seed input")
    box.fill(str(seed))
    box.press("Tab")


def set_prompt(page, tab: str, prompt: str) -> None:
    page.locator(f"#{tab}_prompt textarea").fill(prompt)


def set_small_job(page, tab: str, *, steps: int, batch_count: int = 1, seed: int = 1234) -> None:
    set_slider(page, f"{tab}_width", SIZE)
    set_slider(page, f"{tab}_height", SIZE)
    set_slider(page, f"{tab}_steps", steps)
    set_slider(page, f"{tab}_batch_count", batch_count)
    set_seed(page, tab, seed)


def wait_until_idle(page, tab: str = "txt2img") -> None:
    """Until the job has ended: Generate is back, Interrupt hidden."""
    expect(page.locator(f"#{tab}_generate")).to_be_visible(timeout=JOB_MS)
    expect(page.locator(f"#{tab}_interrupt")).to_be_hidden(timeout=JOB_MS)


def thumbnails(page, tab: str = "txt2img"):
    return page.locator(f"#{tab}_gallery .thumbnail-item")


def gallery_image(page, index: int = 0, tab: str = "txt2img") -> Image.Image:
    """The gallery's image number `index`, fetched from the URL the page shows it from."""
    source = thumbnails(page, tab).nth(index).locator("img")
    expect(source).to_be_visible()
    return fetch_image(page, source.evaluate("img => img.src"))


def fetch_image(page, url: str) -> Image.Image:
    response = page.request.get(url)
    assert response.ok, f"GET {url}: {response.status}"
    image = Image.open(io.BytesIO(response.body()))
    image.load()
    return image


def infotext(page, tab: str = "txt2img"):
    """The infotext under the gallery (its own block: not Gradio's status timer that may sit beside it)."""
    return page.locator(f"#html_info_{tab} .infotext").first


def toasts(page):
    return page.locator(".toast-body")


def record_progress(page, tab: str = "txt2img") -> None:
    """Record every state of the progress panel from now on (a MutationObserver), so no update is missed."""
    page.evaluate("""(tab) => {
        window.progressSeen = [];
        const panel = document.querySelector(`#${tab}_progress`);
        const note = () => {
            const bar = panel.querySelector('.progressbar .progress');
            const text = panel.querySelector('.progressbar .progress-text');
            if (bar) window.progressSeen.push({width: bar.style.width, text: text ? text.textContent : ''});
        };
        new MutationObserver(note).observe(panel, {childList: true, subtree: true, characterData: true,
                                                   attributes: true});
    }""", tab)


def percent(width: str) -> float:
    assert width.endswith("%"), width
    return float(width[:-1])


class StepStops(DispatchingHooks):
    """The engine's hooks, with the model evaluation of each step in `stops` (0-based) of batch number `batch`
    (1-based) held until the test calls `go_on()`: the page surely sees the job there, however fast the machine
    samples the other steps."""

    wants_denoiser = True

    def __init__(self, inner, stops: tuple[int, ...], batch: int = 1):
        self.inner = inner
        self.stops = list(stops)
        self.batch, self._batch, self._step = batch, 1, -1
        self.held = threading.Event()
        self.release = threading.Event()

    def dispatch(self, point: str, *args) -> None:
        if point == "denoiser":
            step = args[1].sampling_step
            if step < self._step:  # the steps started again: the next batch
                self._batch += 1
            self._step = step
            if self.stops and self._batch >= self.batch and step >= self.stops[0]:
                self.stops.pop(0)
                self.release.clear()
                self.held.set()
                self.release.wait(120)  # never forever, whatever the test does
        getattr(self.inner, point)(*args)

    def go_on(self) -> None:
        self.held.clear()
        self.release.set()


RUNNING_WIDTHS = """() => new Set(window.progressSeen.map(state => parseFloat(state.width))
                                  .filter(width => width > 0 && width < 100)).size"""


# --- txt2img ------------------------------------------------------------------------------------------------------

def test_generate_shows_progress_then_image_and_infotext(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    set_prompt(page, "txt2img", "a red fox in the snow")
    set_small_job(page, "txt2img", steps=60, seed=4321)
    record_progress(page)
    engine = webui.services.engine
    engine.hooks = stops = StepStops(engine.hooks, stops=(20, 40))  # the bar is seen at 1/3 and 2/3 at least
    try:
        page.locator("#txt2img_generate").click()
        expect(page.locator("#txt2img_interrupt")).to_be_visible()
        for stop in range(2):
            assert stops.held.wait(60), "the job never reached the held step"
            page.wait_for_function(f"({RUNNING_WIDTHS})() > {stop}")  # the bar shows this step's width
            stops.go_on()
    finally:
        stops.release.set()
        engine.hooks = stops.inner
    expect(infotext(page)).to_contain_text("Steps: 60", timeout=60_000)
    wait_until_idle(page)

    seen = page.evaluate("window.progressSeen")
    widths = [percent(state["width"]) for state in seen]
    running = sorted({w for w in widths if 0 < w < 100})
    assert len(running) >= 2, f"the bar should move through several values while sampling, saw {seen}"
    assert widths == sorted(widths), f"the bar should only advance, saw {widths}"
    texts = [state["text"] for state in seen if 0 < percent(state["width"]) < 100]
    assert all(re.fullmatch(r"\d+% ETA: (\d+s|\d+m \d+s|\d+h \d+m)", text) for text in texts), texts
    assert len({text.split("%")[0] for text in texts}) >= 2, texts

    info = infotext(page).inner_text()
    assert info.startswith("a red fox in the snow"), info
    for part in ("Steps: 60", "Seed: 4321", f"Size: {SIZE}x{SIZE}", "Sampler: "):
        assert part in info, f"{part!r} missing from the infotext {info!r}"
    expect(thumbnails(page)).to_have_count(1)
    image = gallery_image(page)
    assert image.size == (SIZE, SIZE)
    assert "Seed: 4321" in image.info.get("parameters", ""), "the served PNG carries its parameters"


def test_ctrl_enter_in_the_prompt_generates(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    set_prompt(page, "txt2img", "a lighthouse at dusk")
    set_small_job(page, "txt2img", steps=4, seed=77)
    page.locator("#txt2img_generate").click()
    expect(infotext(page)).to_contain_text("a lighthouse at dusk", timeout=JOB_MS)
    wait_until_idle(page)
    first = gallery_image(page)

    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("a windmill in a tulip field")
    prompt.press("Control+Enter")
    expect(infotext(page)).to_contain_text("a windmill in a tulip field", timeout=JOB_MS)
    wait_until_idle(page)
    expect(prompt).to_have_value("a windmill in a tulip field")  # Ctrl+Enter added no line break
    second = gallery_image(page)
    assert "Seed: 77" in infotext(page).inner_text()
    assert second.size == (SIZE, SIZE)
    assert second.tobytes() != first.tobytes(), "the new prompt made a new image"


def test_escape_interrupts_a_running_job(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    set_prompt(page, "txt2img", "a long walk")
    set_small_job(page, "txt2img", steps=150, batch_count=5)
    page.locator("#txt2img_generate").click()
    expect(page.locator("#txt2img_interrupt")).to_be_visible()
    expect(page.locator("#txt2img_progress .job-running")).to_contain_text("step", timeout=JOB_MS)
    page.keyboard.press("Escape")
    wait_until_idle(page)
    notice = toasts(page).filter(has_text="Interrupted:")
    expect(notice).to_have_count(1)
    finished = int(re.search(r"Interrupted: (\d+) of 5 images were finished", notice.inner_text()).group(1))
    assert finished < 5, "the job stopped early"
    expect(thumbnails(page)).to_have_count(finished + (1 if finished > 1 else 0))  # a grid of 2+ leads, as A1111
    assert webui.services.queue.running is None


def _saved_images(webui, folder: str = "txt2img-images") -> set:
    return set((webui.data_dir / "outputs" / folder).rglob("*.png"))


def test_interrupt_keeps_the_finished_images_of_a_batch(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    before, grids_before = _saved_images(webui), _saved_images(webui, "txt2img-grids")
    set_prompt(page, "txt2img", "a stack of pancakes")
    set_small_job(page, "txt2img", steps=40, batch_count=20, seed=500)  # long: it is interrupted
    engine = webui.services.engine
    engine.hooks = stops = StepStops(engine.hooks, stops=(1,), batch=3)  # held while the job surely runs
    try:
        page.locator("#txt2img_generate").click()
        assert stops.held.wait(60), "the job never reached the held step"
        # "Batch 3 of 20" (or later): at least two images are finished
        expect(page.locator("#txt2img_progress .job-running")).to_contain_text(
            re.compile(r"Batch ([3-9]|1[0-9]) of 20"), timeout=60_000)
        page.locator("#txt2img_interrupt").click()
    finally:
        stops.release.set()
        engine.hooks = stops.inner
    wait_until_idle(page)

    notice = toasts(page).filter(has_text="Interrupted:")
    expect(notice).to_have_count(1)
    finished = int(re.search(r"Interrupted: (\d+) of 20", notice.inner_text()).group(1))
    assert 2 <= finished < 20
    expect(thumbnails(page)).to_have_count(finished + (1 if finished > 1 else 0))  # a grid of 2+ leads, as A1111

    saved = sorted(_saved_images(webui) - before)
    assert len(saved) == finished, f"{finished} finished images, saved: {saved}"
    assert len(_saved_images(webui, "txt2img-grids") - grids_before) == 1  # and their grid, as A1111
    on_disk = {}
    for path in saved:
        with Image.open(path) as image:
            seed = int(re.search(r"Seed: (\d+)", image.info["parameters"]).group(1))
            on_disk[seed] = image.convert("RGB").tobytes()
    assert sorted(on_disk) == list(range(500, 500 + finished))

    first = 1 if finished > 1 else 0  # the grid leads
    for index in range(finished):
        thumbnails(page).nth(first + index).click()
        expect(infotext(page)).to_contain_text(f"Seed: {500 + index},")
        info = infotext(page).inner_text()
        assert info.startswith("a stack of pancakes") and f"Size: {SIZE}x{SIZE}" in info, info
        shown = gallery_image(page, first + index)
        assert shown.convert("RGB").tobytes() == on_disk[500 + index], f"image {index} differs from its file"


# --- PNG Info -----------------------------------------------------------------------------------------------------

def test_png_info_sends_the_parameters_to_txt2img(webui, new_page, tmp_path):
    made = httpx.post(webui.api("txt2img"), timeout=60, json={
        "prompt": "a teapot on a table", "negative_prompt": "blurry, dark", "seed": 98765, "steps": 7,
        "sampler_name": "Euler a", "width": 72, "height": 64, "cfg_scale": 5.5}).json()
    source = tmp_path / "made.png"
    source.write_bytes(base64.b64decode(made["images"][0]))
    with Image.open(source) as image:
        assert "Seed: 98765" in image.info["parameters"]

    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#tab_pnginfo-button").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(source))
    expect(page.locator("#html_info")).to_contain_text("a teapot on a table")
    expect(page.locator("#html_info")).to_contain_text("blurry, dark")
    expect(page.locator("#pnginfo_generation_info textarea")).to_have_value(re.compile("Seed: 98765"))

    page.locator("#pnginfo_send_txt2img").click()
    expect(page.locator("#tab_txt2img-button")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a teapot on a table")
    expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("blurry, dark")
    expect(page.locator("#txt2img_seed input")).to_have_value("98765")
    expect(page.locator("#txt2img_sampling input")).to_have_value("Euler a")
    expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("7")
    expect(page.locator("#txt2img_width input[type=number]")).to_have_value("72")
    expect(page.locator("#txt2img_height input[type=number]")).to_have_value("64")
    expect(page.locator("#txt2img_cfg_scale input[type=number]")).to_have_value("5.5")


# --- extra networks -----------------------------------------------------------------------------------------------

def test_lora_card_inserts_and_removes_its_tag(webui, new_page):
    page = new_page(webui.url)
    wait_for_ui(page)
    page.locator("#txt2img_extra_networks").click()
    page.locator("#txt2img_lora_tab-button").click()
    expect(page.locator("#txt2img_lora_cards")).to_contain_text("Nothing here")

    _, _, unet, _, encoders = build_modules("sd1")
    kohya_lora(unet, encoders, "sd1", output_name="tiny-ink").save(webui.data_dir / "models" / "Lora" /
                                                                   "tiny-ink.safetensors")
    page.locator("#txt2img_extra_refresh").click()
    card = page.locator('#txt2img_lora_cards .card[data-name="tiny-ink"]')
    expect(card).to_be_visible()

    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("an ink drawing of a cat")
    card.click()
    expect(prompt).to_have_value("an ink drawing of a cat <lora:tiny-ink:1>")
    card.click()
    expect(prompt).to_have_value("an ink drawing of a cat")
    card.click()
    expect(prompt).to_have_value("an ink drawing of a cat <lora:tiny-ink:1>")

    set_small_job(page, "txt2img", steps=3, seed=11)  # the inserted tag reaches the job
    page.locator("#txt2img_generate").click()
    expect(infotext(page)).to_contain_text("Lora hashes: \"tiny-ink:", timeout=JOB_MS)
    assert infotext(page).inner_text().startswith("an ink drawing of a cat <lora:tiny-ink:1>")
