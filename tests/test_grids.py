"""Grids as A1111 1.10 makes them: the layout and row count, labelled grids (X/Y/Z plot, Prompt matrix), grid files,
and the batch grid a run of several images shows first and saves (engine and HTTP API)."""
from __future__ import annotations

import base64
import io
import json
import math
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from conftest import install_model, pixels
from webui.core.request import GenerationRequest
from webui.outputs.grid import (GridAnnotation, draw_grid_annotations, draw_prompt_matrix, grid_rows, image_grid,
                                save_grid)
from webui.outputs.save import read_infotext
from webui.settings.flags import parse_flags
from webui.settings.options import OptionsOverlay

TODAY = datetime(2024, 5, 6, 7, 8, 9)


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    """A picture of random pixels: any misplaced pixel shows."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def reference_grid(images: list[Image.Image], cols: int, rows: int, background: tuple) -> Image.Image:
    """The grid as A1111 1.10 lays it out, assembled here cell by cell: cells the size of the largest image,
    row-major, each image centred in its cell."""
    cell_w, cell_h = max(i.width for i in images), max(i.height for i in images)
    grid = Image.new("RGB", (cols * cell_w, rows * cell_h), background)
    for index, image in enumerate(images):
        row, col = divmod(index, cols)
        grid.paste(image, (col * cell_w + (cell_w - image.width) // 2, row * cell_h + (cell_h - image.height) // 2))
    return grid


class Opts(dict):
    def get(self, key, default=None):  # as Options: KeyError for what it does not have
        if key not in self:
            raise KeyError(key)
        return self[key]


# --- rows and layout ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count, batch_size, options, rows", [
    (4, 4, {"n_rows": -1}, 2),  # automatic: round(sqrt(4))
    (5, 5, {"n_rows": -1}, 2),  # round(2.24)
    (3, 3, {"n_rows": -1}, 2),  # round(1.73): one empty spot
    (7, 1, {"n_rows": -1}, 3),  # round(2.65)
    (5, 5, {"n_rows": -1, "grid_prevent_empty_spots": True}, 1),  # 2 does not divide 5
    (6, 6, {"n_rows": -1, "grid_prevent_empty_spots": True}, 2),
    (8, 8, {"n_rows": -1, "grid_prevent_empty_spots": True}, 2),  # floor(sqrt(8)) = 2 divides 8
    (4, 2, {"n_rows": 0}, 2),  # the batch size
    (6, 3, {"n_rows": 0}, 3),
    (6, 3, {"n_rows": 1}, 1),
    (3, 3, {"n_rows": 16}, 3),  # never more rows than images
    (4, 4, None, 2),  # no options: A1111's defaults (automatic)
])
def test_grid_rows_follow_a1111s_rule(count, batch_size, options, rows):
    assert grid_rows(count, batch_size, Opts(options) if options is not None else None) == rows


def test_image_grid_places_images_as_a1111_with_the_background_colour():
    images = [noise((40, 30), 1), noise((32, 24), 2), noise((40, 30), 3), noise((20, 30), 4), noise((40, 10), 5)]
    made = image_grid(images, 2, options=Opts(grid_background_color="#203040"))
    expected = reference_grid(images, cols=3, rows=2, background=(0x20, 0x30, 0x40))
    assert made.size == (120, 60)
    assert np.array_equal(pixels(made), pixels(expected))
    # an explicit colour wins; the default is white
    assert image_grid(images[:2], 1, background=(9, 8, 7)).getpixel((44, 1)) == (9, 8, 7)
    assert image_grid([images[1], images[0]], 1).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError):
        image_grid([], 1)


# --- labels -------------------------------------------------------------------------------------------------------
COLOURS = Opts(grid_text_active_color="#ff0000", grid_text_inactive_color="#0000ff",
               grid_background_color="#ffffff")


def reds(region: np.ndarray) -> int:
    """Pixels of the active text colour (red, antialiased against white keeps red at 255)."""
    return int(((region[..., 0] > 200) & (region[..., 2] < 120)).sum())


def blues(region: np.ndarray) -> int:
    return int(((region[..., 2] > 200) & (region[..., 0] < 120)).sum())


def test_annotations_surround_the_untouched_cells():
    cells = [noise((96, 80), seed) for seed in range(6)]
    grid = reference_grid(cells, cols=3, rows=2, background=(0, 0, 0))
    hor = [[GridAnnotation("steps 10")], [GridAnnotation("steps 20")], [GridAnnotation("a very long label that "
                                                                                      "wraps over lines")]]
    ver = [[GridAnnotation("cfg 5")], [GridAnnotation("cfg 7", is_active=False)]]
    margin = 6
    labelled = draw_grid_annotations(grid, 96, 80, hor, ver, margin=margin, options=COLOURS)

    pad_left = 96 * 3 // 4  # A1111: three quarters of a cell for the row labels
    pad_top = labelled.height - grid.height - margin
    assert labelled.width == grid.width + pad_left + 2 * margin and pad_top > 0
    out = pixels(labelled)
    for index, cell in enumerate(cells):
        row, col = divmod(index, 3)
        x, y = pad_left + col * (96 + margin), pad_top + row * (80 + margin)
        assert np.array_equal(out[y:y + 80, x:x + 96], pixels(cell)), f"cell {index} moved or was drawn over"
    # the margin between cells is background, the labels are drawn in their colours
    assert (out[pad_top:, pad_left + 96:pad_left + 96 + margin] == 255).all()
    for col in range(3):
        column = out[:pad_top, pad_left + col * (96 + margin):pad_left + col * (96 + margin) + 96]
        assert reds(column) > 20 and blues(column) == 0
    first_row = out[pad_top:pad_top + 80, :pad_left]
    second_row = out[pad_top + 80 + margin:, :pad_left]
    assert reds(first_row) > 20 and blues(first_row) == 0
    assert blues(second_row) > 20 and reds(second_row) == 0  # inactive: the inactive colour, struck through
    # the wrapped long label needs more lines: the header is taller than one line of the short ones
    short = draw_grid_annotations(grid, 96, 80, [[GridAnnotation("a")]] * 3, [[]] * 2, options=COLOURS)
    assert short.width == grid.width and short.height < labelled.height - margin
    assert hor[2][0].text.startswith("a very long")  # the caller's labels are left as they were
    with pytest.raises(ValueError, match="column labels"):
        draw_grid_annotations(grid, 96, 80, hor[:2], ver)


def test_prompt_matrix_labels_parts_active_by_bit():
    cells = [noise((64, 64), seed) for seed in range(8)]
    grid = reference_grid(cells, cols=4, rows=2, background=(0, 0, 0))
    labelled = draw_prompt_matrix(grid, 64, 64, ["a castle", "at night", "in snow", "oil painting"],
                                  options=COLOURS)
    pad_left = 64 * 3 // 4
    pad_top = labelled.height - grid.height
    out = pixels(labelled)
    header = [out[:pad_top, pad_left + c * 64:pad_left + (c + 1) * 64] for c in range(4)]
    # columns: parts 1 and 2 ("at night", "in snow"), active where column index has the bit
    assert blues(header[0]) > 0 and reds(header[0]) == 0
    assert reds(header[3]) > 0 and blues(header[3]) == 0
    assert reds(header[1]) > 0 and blues(header[1]) > 0
    rows = [out[pad_top + r * 64:pad_top + (r + 1) * 64, :pad_left] for r in range(2)]
    assert blues(rows[0]) > 0 and reds(rows[0]) == 0 and reds(rows[1]) > 0 and blues(rows[1]) == 0
    for index, cell in enumerate(cells):
        row, col = divmod(index, 4)
        y, x = pad_top + row * 64, pad_left + col * 64
        assert np.array_equal(out[y:y + 64, x:x + 64], pixels(cell))


# --- files --------------------------------------------------------------------------------------------------------
def test_save_grid_names_formats_and_infotext(tmp_path):
    grid = noise((64, 32), 9)
    text = "a fox\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, Seed: 42, Size: 32x32"
    options = Opts(grid_format="png", grid_extended_filename=False)
    first = save_grid(grid, tmp_path, seed=42, prompt="a fox", infotext=text, options=options, now=TODAY)
    second = save_grid(grid, tmp_path, seed=42, prompt="a fox", infotext=text, options=options, now=TODAY)
    assert first == tmp_path / "2024-05-06" / "grid-0000.png" and second.name == "grid-0001.png"
    with Image.open(first) as saved:
        assert read_infotext(saved) == text and np.array_equal(pixels(saved.convert("RGB")), pixels(grid))
    (first.parent / "grid-0007-5.png").write_bytes(b"")  # numbering continues after the highest grid number
    jpeg = save_grid(grid, tmp_path, seed=42, prompt="a fox", infotext=text, now=TODAY,
                     options=Opts(grid_format="jpg", grid_extended_filename=True))
    assert jpeg.name == "grid-0008-42.jpg"
    with Image.open(jpeg) as saved:
        assert saved.format == "JPEG" and read_infotext(saved) == text
    undated = save_grid(grid, tmp_path, seed=7, prompt='a "fox": here?', infotext=text, now=TODAY,
                        options=Opts(grid_format="webp", grid_extended_filename=True, save_to_dirs=False))
    assert undated.name == "grid-0009-7-a _fox__ here_.webp"
    assert not list(tmp_path.rglob("*.tmp"))  # written through a temporary file, which is gone


# --- the batch grid of a run --------------------------------------------------------------------------------------
def run_with(services, options: dict | None = None, **fields):
    base = dict(prompt="a fox", negative_prompt="blurry", sampler_name="Euler", steps=3, width=64, height=64,
                seed=5, save_images=False)
    engine = services.engine.with_options(OptionsOverlay(services.options, options)) if options \
        else services.engine
    return engine.run(GenerationRequest(**{**base, **fields}))


@pytest.fixture(scope="module")
def sd1_services(tmp_path_factory, tiny_models):
    from webui.services import build_services
    data = tmp_path_factory.mktemp("grid-data")
    install_model(data, tiny_models["sd1"])
    services = build_services(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    yield services
    services.stop()


def test_a_batch_shows_and_saves_its_grid_first(sd1_services):
    services = sd1_services
    result = run_with(services, batch_size=4)
    assert len(result.images) == 5 and result.index_of_first_image == 1
    assert len(result.seeds) == 4 and result.seeds == [5, 6, 7, 8]
    cells = result.images[1:]
    assert np.array_equal(pixels(result.images[0]), pixels(reference_grid(cells, 2, 2, (255, 255, 255))))
    assert result.infotexts[0] == result.infotexts[1] and "Seed: 5" in result.infotexts[0]
    assert len(result.infotexts) == 5
    # saved (grid_save is on by default) to outputs/txt2img-grids/<date>/grid-0000.png with the infotext
    saved = sorted((services.paths.outputs / "txt2img-grids").rglob("grid-*.png"))
    assert [p.name for p in saved] == ["grid-0000.png"]
    with Image.open(saved[0]) as grid_file:
        assert read_infotext(grid_file) == result.infotexts[0]
        assert np.array_equal(pixels(grid_file.convert("RGB")), pixels(result.images[0]))
    assert not (services.paths.outputs / "txt2img-images").exists()  # the images themselves were not saved


def test_grid_options_are_respected(sd1_services, tmp_path):
    services = sd1_services
    hidden = run_with(services, {"return_grid": False, "grid_save": False}, batch_size=2)
    assert len(hidden.images) == 2 and hidden.index_of_first_image == 0

    single = run_with(services, {"grid_save": False}, batch_size=1)
    assert len(single.images) == 1 and single.index_of_first_image == 0  # grid_only_if_multiple
    lone = run_with(services, {"grid_save": False, "grid_only_if_multiple": False}, batch_size=1)
    assert len(lone.images) == 2 and lone.index_of_first_image == 1
    assert np.array_equal(pixels(lone.images[0]), pixels(lone.images[1]))

    folder = tmp_path / "my-grids"
    wide = run_with(services, {"n_rows": 1, "outdir_txt2img_grids": str(folder), "grid_format": "jpg",
                               "grid_extended_filename": True}, batch_size=2, n_iter=2, seed=11)
    assert wide.images[0].size == (256, 64)  # one row of four
    assert np.array_equal(pixels(wide.images[0]), pixels(reference_grid(wide.images[1:], 4, 1, (255, 255, 255))))
    saved = list(folder.rglob("grid-*"))
    assert [p.name for p in saved] == ["grid-0000-11.jpg"]

    by_batch = run_with(services, {"n_rows": 0, "grid_save": False}, batch_size=3, seed=2)
    assert by_batch.images[0].size == (64, 192)  # as many rows as the batch size: one column of three

    none = run_with(services, {"grid_save": True, "outdir_txt2img_grids": str(folder)}, batch_size=2,
                    do_not_save_grid=True)
    assert len(none.images) == 2 and len(list(folder.rglob("grid-*"))) == 1


def test_an_extensions_varied_prompts_give_the_grid_the_main_prompt(sd1_services):
    from webui.engine.batch_grid import main_infotext
    result = SimpleNamespace(index_of_first_image=0, prompts=["a fox, red", "a fox, blue"],
                             negative_prompts=["", ""], infotexts=["a fox, red\nSteps: 3, Seed: 5",
                                                                   "a fox, blue\nSteps: 3, Seed: 6"])
    request = GenerationRequest(prompt="a fox", negative_prompt="blurry")
    assert main_infotext(result, request) == "a fox\nNegative prompt: blurry\nSteps: 3, Seed: 5"


# --- the HTTP API -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("grid-api")
    install_model(data, tiny_models["sd1"])
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    yield SimpleNamespace(client=TestClient(app), services=services, data=data)
    services.stop()


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def test_api_returns_and_saves_a_grid_only_with_save_images(api):
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "seed": 3, "batch_size": 2, "n_iter": 2}
    plain = api.client.post("/sdapi/v1/txt2img", json=body)
    assert plain.status_code == 200, plain.text
    payload = plain.json()
    info = json.loads(payload["info"])
    assert len(payload["images"]) == 4 and info["index_of_first_image"] == 0
    assert not (api.services.paths.outputs / "txt2img-grids").exists()

    saved = api.client.post("/sdapi/v1/txt2img", json={**body, "save_images": True})
    assert saved.status_code == 200, saved.text
    payload = saved.json()
    info = json.loads(payload["info"])
    images = [decode(data) for data in payload["images"]]
    assert len(images) == 5 and info["index_of_first_image"] == 1
    assert len(info["all_seeds"]) == 4 and len(info["infotexts"]) == 5
    cols = math.ceil(4 / grid_rows(4, 2, None))
    assert np.array_equal(pixels(images[0].convert("RGB")),
                          pixels(reference_grid([i.convert("RGB") for i in images[1:]], cols, 2, (255, 255, 255))))
    assert read_infotext(images[0]) == info["infotexts"][0]
    grids = list((api.services.paths.outputs / "txt2img-grids").rglob("grid-*.png"))
    assert len(grids) == 1
    # the same pictures as without the grid
    assert all(np.array_equal(pixels(a.convert("RGB")), pixels(decode(b).convert("RGB")))
               for a, b in zip(images[1:], plain.json()["images"]))
