"""Through the real page in headless Chromium: inpainting with one brush stroke drawn with the mouse (pixels far
from the stroke come back exactly as uploaded, pixels under it are regenerated), and two ControlNet units in
txt2img (canny, a tiny ControlNet picked after 🔄, the 💥 preview, both units in the infotext)."""
from __future__ import annotations

import io
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from browser import TIMEOUT_MS, browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures
from webui.models.tiny import write_controlnet

expect = pytest.importorskip("playwright.sync_api").expect

TALL = {"width": 1280, "height": 1200}  # the inpaint canvas and the results fit on one screen
SIZE = 128  # the uploaded picture and the generation, in pixels
SEED = 4321
CANNY_MODEL = "control_v11p_sd15_canny"
CELL = 16  # the checkerboard's cell size


# --- pictures -----------------------------------------------------------------------------------------------------
def checkerboard(size: int = SIZE) -> Image.Image:
    """Saturated colour cells (every pixel far from grey, so the picture is easy to find on the screen)."""
    y, x = np.mgrid[:size, :size]
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[..., 0] = np.where((x // CELL) % 2 == 0, 220, 30)
    pixels[..., 1] = np.where((y // CELL) % 2 == 0, 200, 20)
    pixels[..., 2] = 120
    return Image.fromarray(pixels)


def shapes(seed: int, size: int = SIZE) -> Image.Image:
    """Bright shapes on dark noise: strong edges for canny, different for each seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    a, b = 10 + 8 * seed, 70 - 6 * seed
    pixels[a:a + 40, 15:60] = (230, 200, 40)
    pixels[b:b + 35, 60:110] = (20, 180, 240)
    cv2.circle(pixels, (90, 30 + 10 * seed), 14, (250, 250, 250), -1)
    return Image.fromarray(pixels)


def save(image: Image.Image, path) -> str:
    image.save(path)
    return str(path)


def as_array(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def fetch_image(page, img) -> np.ndarray:
    """The full picture behind an <img> (fetched as the browser would download it)."""
    src = img.get_attribute("src")
    response = page.request.get(src)
    assert response.ok, f"{src}: HTTP {response.status}"
    return as_array(response.body())


# --- page helpers -------------------------------------------------------------------------------------------------
def set_number(page, elem_id: str, value) -> None:
    """Type into a slider's or number's box and commit it (Enter), then check the page kept it."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))


def pick(page, elem_id: str, option: str, prefix: bool = False) -> str:
    """Choose an entry of a dropdown as a user does (open it, click the entry): the entry named `option`, or with
    `prefix` the first whose name starts with it. Returns the chosen entry's name."""
    dropdown = page.locator(f"#{elem_id}")
    dropdown.locator("input").click()
    entry = dropdown.locator(f'li[role=option][aria-label{"^" if prefix else ""}="{option}"]').first
    name = entry.get_attribute("aria-label")
    entry.click()
    expect(dropdown.locator("input")).to_have_value(name)
    return name


def screenshot(locator) -> np.ndarray:
    return as_array(locator.screenshot())


def settled_screenshot(what: str, locator, accept, timeout: float = TIMEOUT_MS / 1000) -> tuple:
    """(screenshot, accept's answer) once two screenshots in a row are the same and accept(screenshot) is not None:
    for what only shows in pixels (the editor draws on a <canvas>), with no DOM state to wait on."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        shot = screenshot(locator)
        if last is not None and np.array_equal(shot, last):
            answer = accept(shot)
            if answer is not None:
                return shot, answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        last = shot
        time.sleep(0.1)


# --- inpainting ---------------------------------------------------------------------------------------------------
def find_picture(shot: np.ndarray) -> tuple[int, int, float, float] | None:
    """(left, top, x scale, y scale) of the uploaded checkerboard in a screenshot of the editor's canvas: the rows
    and columns mostly made of saturated pixels (the toolbar's few coloured icons do not count)."""
    saturated = (shot.max(axis=2) - shot.min(axis=2)) > 60
    columns, rows = saturated.sum(axis=0), saturated.sum(axis=1)
    if columns.max() < 100:
        return None
    xs = np.nonzero(columns > columns.max() // 2)[0]
    ys = np.nonzero(rows > rows.max() // 2)[0]
    return int(xs[0]), int(ys[0]), (xs[-1] - xs[0] + 1) / SIZE, (ys[-1] - ys[0] + 1) / SIZE


def distance_to_segment(start, end, size: int = SIZE) -> np.ndarray:
    """Each pixel centre's distance (in image pixels) to the segment start-end."""
    y, x = np.mgrid[:size, :size] + 0.5
    (ax, ay), (bx, by) = start, end
    t = np.clip(((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    return np.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay)))


def test_a_brush_stroke_inpaints_only_around_the_stroke(webui, new_page, tmp_path):
    page = new_page(webui.url, viewport=TALL)
    wait_for_ui(page)
    page.locator("#tab_img2img-button").click()
    page.locator("#img2img_inpaint_tab-button").click()
    expect(page.locator("#img2img_mask_blur")).to_be_visible()  # the inpaint options come with the sub-tab
    page.locator("#img2img_prompt textarea").fill("a red apple")
    for elem_id, value in (("img2img_steps", 3), ("img2img_width", SIZE), ("img2img_height", SIZE),
                           ("img2img_mask_blur", 2)):
        set_number(page, elem_id, value)
    page.locator("#img2img_seed input").fill(str(SEED))

    source = checkerboard()
    editor = page.locator("#img2maskimg")
    editor.locator("input[type=file]").set_input_files(save(source, tmp_path / "source.png"))
    canvas = editor.locator("canvas").first
    before, (left, top, scale_x, scale_y) = settled_screenshot("the picture in the editor", canvas, find_picture)
    box = canvas.bounding_box()

    def on_page(x: float, y: float) -> tuple[float, float]:
        """Image coordinates -> where they are on the page."""
        return box["x"] + left + x * scale_x, box["y"] + top + y * scale_y

    # one horizontal stroke through the middle, in image coordinates
    start, end = (40.0, 64.0), (88.0, 64.0)
    page.mouse.move(*on_page(*start))
    page.mouse.down()
    for step in range(1, 13):
        page.mouse.move(*on_page(start[0] + (end[0] - start[0]) * step / 12, start[1]))
    page.mouse.up()
    page.mouse.move(1, 1)  # the brush's outline follows the mouse: take it off the canvas

    # the painted band as the user sees it, mapped back into image pixels
    width, height = int(round(SIZE * scale_x)), int(round(SIZE * scale_y))

    def stroke(shot):
        changed = np.abs(shot - before).max(axis=2)[top:top + height, left:left + width] > 10
        return changed if changed.sum() > 100 else None

    _, on_screen = settled_screenshot("the stroke on the canvas", canvas, stroke)
    rows, columns = np.nonzero(on_screen)
    radius = (rows.max() - rows.min() + 1) / scale_y / 2  # the brush's radius in image pixels (Gradio's "auto")
    assert 3 < radius < 40, radius
    # the band is where the mouse went: centred on the path, from its start to its end, one radius around
    assert abs((rows.min() + rows.max()) / 2 / scale_y - start[1]) < 2
    assert abs(columns.min() / scale_x - (start[0] - radius)) < 2.5
    assert abs(columns.max() / scale_x - (end[0] + radius)) < 2.5

    page.locator("#img2img_generate").click()
    info = page.locator("#html_info_img2img")
    expect(info).to_contain_text("Mask blur: 2")
    expect(info).to_contain_text(f"Seed: {SEED}")
    expect(info).to_contain_text("Steps: 3")
    result = fetch_image(page, page.locator("#img2img_gallery img").first)
    assert result.shape == (SIZE, SIZE, 3)

    distance = distance_to_segment(start, end)
    blur_reach = int(2.5 * 2 + 0.5)  # the mask blur's kernel reaches this far (sigma 2)
    diff = np.abs(result - np.asarray(source, dtype=np.int16)).max(axis=2)
    far = distance > radius + blur_reach + 2  # 2: the brush's soft edge and the screen-to-image rounding
    assert far.sum() > SIZE * SIZE // 3
    assert diff[far].max() == 0, "pixels far from the stroke changed"
    under = distance < radius - 3
    assert diff[under].mean() > 20, "the stroke's area was not regenerated"


# --- ControlNet ---------------------------------------------------------------------------------------------------
def test_two_controlnet_units_preview_canny_and_generate(webui, new_page, tmp_path):
    write_controlnet(webui.data_dir / "models" / "ControlNet" / f"{CANNY_MODEL}.safetensors", "sd1")
    page = new_page(webui.url, viewport=TALL)
    wait_for_ui(page)
    page.locator("#txt2img_prompt textarea").fill("a lighthouse")
    for elem_id, value in (("txt2img_steps", 3), ("txt2img_width", 64), ("txt2img_height", 64)):
        set_number(page, elem_id, value)
    page.locator("#txt2img_seed input").fill(str(SEED))
    page.locator("#txt2img_controlnet").get_by_text("ControlNet", exact=True).first.click()

    pictures, previews = {}, {}
    for index in (0, 1):
        p = f"txt2img_controlnet_ControlNet-{index}"
        page.locator(f"#{p}_tab-button").click()
        page.locator(f"#{p}_controlnet_enable_checkbox input").check()
        pictures[index] = shapes(index)
        page.locator(f"#{p}_input_image input[type=file]").set_input_files(
            save(pictures[index], tmp_path / f"control-{index}.png"))
        expect(page.locator(f"#{p}_input_image img")).to_be_visible()
        pick(page, f"{p}_controlnet_preprocessor_dropdown", "canny")
        expect(page.locator(f"#{p}_controlnet_threshold_A_slider input[type=number]")).to_have_value("100")
        set_number(page, f"{p}_controlnet_preprocessor_resolution_slider", SIZE)
        page.locator(f"#{p}_controlnet_refresh_models").click()
        model = pick(page, f"{p}_controlnet_model_dropdown", f"{CANNY_MODEL} [", prefix=True)
        assert model == webui.services.controlnets.resolve(CANNY_MODEL).title

        page.locator(f"#{p}_controlnet_trigger_preprocessor").click()
        detected = page.locator(f"#{p}_generated_image img")
        expect(detected).to_be_visible()
        shown = fetch_image(page, detected)
        assert shown.shape == (SIZE, SIZE, 3)
        assert set(np.unique(shown)) <= {0, 255}, "the canny map is not black and white"
        white = (shown[..., 0] == 255).mean()
        assert 0.01 < white < 0.25, f"the map should be mostly black with white edges ({white:.1%} white)"
        reference = cv2.Canny(np.asarray(pictures[index]), 100, 200)
        assert np.array_equal(shown[..., 0], reference)
        previews[index] = shown

    page.locator("#txt2img_generate").click()
    info = page.locator("#html_info_txt2img")
    expect(info).to_contain_text("ControlNet 0: ")
    text = info.inner_text()
    for index in (0, 1):
        assert f'ControlNet {index}: "Module: canny, Model: {CANNY_MODEL} [' in text
    assert "ControlNet 2" not in text  # the third unit stayed off
    gallery = page.locator("#txt2img_gallery img")
    expect(gallery).to_have_count(3)  # the picture, then each unit's detected map
    generated = fetch_image(page, gallery.nth(0))
    assert generated.shape == (64, 64, 3) and generated.std() > 1
    for index in (0, 1):  # what Generate detected is what the preview showed
        assert np.array_equal(fetch_image(page, gallery.nth(1 + index)), previews[index])
