"""A1111's built-in scripts Prompt matrix, Prompts from file or textbox, Loopback and SD upscale, as users run them:
through the queue (`Services.generate`), the HTTP API (`script_name` + positional `script_args`) and the Script
dropdown of the Blocks page. Each script's pictures are compared with plain generations the test makes itself."""
from __future__ import annotations

import base64
import io
import json
import math
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from conftest import assert_same_picture, install_model, pixels
from webui.core.errors import RequestError
from webui.core.request import GenerationRequest
from webui.core.run_control import RunControl
from webui.engine import scripts as builtin_scripts
from webui.engine.scripts import tiles
from webui.outputs.infotext import parse_infotext
from webui.outputs.save import read_infotext
from webui.settings.flags import parse_flags
from webui.ui import generation
from webui.ui.blocks import build_ui
from webui.ui.scripts import prompts_from_file as prompts_ui

BASE = dict(sampler_name="Euler", steps=3, width=64, height=64, negative_prompt="blurry")


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("scripts-data")
    install_model(data, tiny_models["sd1"])
    made, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        assert services.hasher.wait_idle(30)
        services.styles.save("Night", "{prompt}, at night", "")
        yield SimpleNamespace(client=TestClient(made), services=services, data=data)
    finally:
        services.stop()


@pytest.fixture
def services(app):
    return app.services


def run_script(services, **fields):
    """Queue a request naming a built-in script and wait for its result."""
    job = services.generate(GenerationRequest(**{**BASE, "save_images": False, **fields}))
    job.wait()
    assert job.exception is None, job.error
    return job.result


def plain(services, **fields):
    """A plain generation (no script), straight on the engine: the reference pictures."""
    return services.engine.run(GenerationRequest(**{**BASE, "save_images": False, "do_not_save_grid": True,
                                                    **fields}))


def picture(width=64, height=64, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    return Image.fromarray(np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8))


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def has_text(region: Image.Image) -> bool:
    """Something drawn (labels) on the white grid background."""
    return bool((pixels(region.convert("L")) < 200).any())


# --- Prompt matrix ------------------------------------------------------------------------------------------------
def test_prompt_matrix_makes_every_combination_once_with_the_labelled_grid_first(services, app):
    grids = app.data / "outputs" / "txt2img-grids"
    before = set(grids.rglob("grid-*.png"))
    result = run_script(services, prompt="a fox | red | blue", seed=77, batch_size=3, save_images=True,
                        script_name="prompt matrix", script_run_args=[])
    expected = ["a fox ", "a fox , red", "a fox , blue", "a fox , red, blue"]  # A1111: part 0 kept as written
    assert result.prompts == expected and result.seeds == [77] * 4
    assert result.index_of_first_image == 1 and len(result.images) == 5 and len(result.infotexts) == 5
    for image, prompt in zip(result.images[1:], expected):  # each cell: that prompt generated alone
        assert_same_picture(image, plain(services, prompt=prompt, seed=77).images[0])

    grid = result.images[0]
    left, top = grid.width - 2 * 64, grid.height - 2 * 64  # 2 x 2 cells after the label margins
    assert left > 0 and top > 0
    assert has_text(grid.crop((left, 0, grid.width, top))) and has_text(grid.crop((0, top, left, grid.height)))
    for index, image in enumerate(result.images[1:]):
        col, row = index % 2, index // 2  # column: "red" on/off, row: "blue" on/off
        cell = grid.crop((left + 64 * col, top + 64 * row, left + 64 * (col + 1), top + 64 * (row + 1)))
        assert pixels(cell).tolist() == pixels(image).tolist()
    assert result.infotexts[0] == result.infotexts[1]
    saved = sorted(set(grids.rglob("grid-*.png")) - before)
    assert len(saved) == 1
    with Image.open(saved[0]) as saved_grid:
        assert read_infotext(saved_grid) == result.infotexts[0]


def test_prompt_matrix_on_the_negative_prompt_with_spaces_parts_first_and_new_seeds(services):
    result = run_script(services, prompt="a fox", negative_prompt="blurry|dark|noisy", seed=5,
                        script_name="Prompt matrix", script_run_args=[True, True, "negative", "space", 6])
    assert result.negative_prompts == ["blurry", "dark blurry", "noisy blurry", "dark noisy blurry"]
    assert result.prompts == ["a fox"] * 4 and result.seeds == [5, 6, 7, 8]
    assert_same_picture(result.images[4], plain(services, prompt="a fox", negative_prompt="dark noisy blurry",
                                                seed=8).images[0])
    grid = result.images[0]
    assert grid.width - (2 * 64 + 6) > 0 and grid.height - (2 * 64 + 6) > 0  # 6 px between the cells too
    assert parse_infotext(result.infotexts[3])["Negative prompt"] == "noisy blurry"


@pytest.mark.parametrize("args, message", [
    ([False, False, "sideways"], "prompt_type must be one of positive, negative"),
    ([False, False, "positive", "tab"], "variations_delimiter must be one of comma, space"),
    ([False, False, "positive", "comma", 501], "margin_size must be from 0 to 500"),
    ([False, False, "positive", "comma", 0, 1], "takes at most 5 script_args"),
])
def test_prompt_matrix_refuses_bad_args_before_queueing(services, args, message):
    with pytest.raises(RequestError, match=message) as caught:
        services.generate(GenerationRequest(**BASE, prompt="a | b", script_name="Prompt matrix",
                                            script_run_args=args))
    assert caught.value.status == 422


# --- Prompts from file or textbox ---------------------------------------------------------------------------------
LINES = "\n".join([
    "a red fox",
    "",
    '--prompt "a blue bird" --negative_prompt ugly --steps 2 --cfg_scale 5 --sampler_name "euler a" --seed 3 '
    "--batch_size 2",
    "--prompt a green frog --styles Night --subseed 7 --subseed_strength 0.5 --tiling true --sd_model tiny-sd1",
])


def test_prompts_from_file_runs_each_line_as_its_own_generation(services):
    result = run_script(services, prompt="painting", seed=100, script_name="Prompts from file or textbox",
                        script_run_args=[True, False, "start", LINES])
    expected = [  # the requests A1111 makes of those lines (prompts inserted at the start, seed +1 a line)
        dict(prompt="a red fox painting", seed=100),
        dict(prompt="a blue bird painting", negative_prompt="ugly blurry", steps=2, cfg_scale=5.0,
             sampler_name="Euler a", seed=3, batch_size=2),
        dict(prompt="a green frog painting, at night", seed=102, subseed=7, subseed_strength=0.5, tiling=True),
    ]
    references = [plain(services, **fields) for fields in expected]
    assert result.prompts == [r.prompts[0] for r in references for _ in r.images]
    assert result.prompts == ["a red fox painting", "a blue bird painting", "a blue bird painting",
                              "a green frog painting, at night"]
    assert result.seeds == [100, 3, 4, 102]
    made = [image for reference in references for image in reference.images]
    assert len(result.images) == 4 and result.index_of_first_image == 0
    for image, reference in zip(result.images, made):
        assert_same_picture(image, reference)
    second = parse_infotext(result.infotexts[1])
    assert (second["Steps"], second["CFG scale"], second["Sampler"]) == ("2", "5", "Euler a")
    third = parse_infotext(result.infotexts[3])
    assert third["Variation seed"] == "7" and third["Tiling"] == "True" and third["Model"] == "tiny-sd1"


def test_prompts_from_file_same_seed_for_all_lines_and_prompts_at_the_end(services):
    result = run_script(services, prompt="painting", seed=-1, script_name="Prompts from file or textbox",
                        script_run_args=[False, True, "end", "a fox\na cat"])
    assert result.prompts == ["painting a fox", "painting a cat"]
    assert result.seeds[0] == result.seeds[1] != -1
    assert_same_picture(result.images[1], plain(services, prompt="painting a cat", seed=result.seeds[0]).images[0])


@pytest.mark.parametrize("line, message", [
    ("--steps many", "line 2 .*--steps needs a whole number, got 'many'"),
    ("--foo 1", "line 2 .*unknown option --foo"),
    ("--steps", "line 2 .*option --steps has no value"),
    ("--tiling yes", "line 2 .*--tiling needs true or false"),
    ('--prompt "unclosed', "line 2 .*cannot be read as options"),
    ("--outpath_samples /tmp/elsewhere", "line 2 .*output folders are set in Settings"),
    ("--sampler_name Nope", "line 2 .*Unknown sampler 'Nope'"),
    ("--steps 500", "line 2 .*steps"),
    ("--restore_faces maybe", "line 2 .*--restore_faces needs true or false"),
    ("--sampler_index 99", "line 2 .*--sampler_index must be"),
])
def test_prompts_from_file_refuses_a_bad_line_naming_it(services, line, message):
    with pytest.raises(RequestError, match=message) as caught:
        services.generate(GenerationRequest(**BASE, prompt="x", script_name="Prompts from file or textbox",
                                            script_run_args=[False, False, "start", f"a fox\n{line}"]))
    assert caught.value.status == 422


def test_prompts_from_file_refuses_an_empty_list(services):
    with pytest.raises(RequestError, match="the list of prompt inputs is empty"):
        services.generate(GenerationRequest(**BASE, script_name="Prompts from file or textbox",
                                            script_run_args=[False, False, "start", " \n "]))


def test_prompts_from_file_upload_fills_the_textbox():
    _, update = prompts_ui.load_file("a fox \r\n  --steps 2\n".encode())
    assert update.value == "a fox\n--steps 2\n" and update.lines == 7
    assert prompts_ui.load_file(None) == (None, gr.skip())  # a cleared box changes nothing


def test_prompts_from_file_skip_ends_the_current_line_and_goes_on(services):
    request = GenerationRequest(**{**BASE, "prompt": "", "seed": 60, "steps": 6, "save_images": False,
                                   "script_name": "Prompts from file or textbox"})
    script = builtin_scripts.find("txt2img", "Prompts from file or textbox")
    request.validate()
    request.script_run_args = builtin_scripts.prepare_args(script, request, [False, False, "start", "a fox\na cat"])

    def skip_line_one(progress):
        if progress.job_no == 0 and progress.sampling_step == 2:
            control.skip()

    control = RunControl(on_progress=skip_line_one)
    result = services.run_request(request, control)
    assert result.prompts == ["a fox", "a cat"] and result.skipped_batches == 1 and not result.interrupted
    assert_same_picture(result.images[1], plain(services, prompt="a cat", seed=60, steps=6).images[0])
    assert pixels(result.images[0]).tolist() != pixels(plain(services, prompt="a fox", seed=60,
                                                               steps=6).images[0]).tolist()


def test_a_skip_pressed_between_inner_runs_does_not_end_the_next(services):
    from webui.engine.sub_run import SubRunControl
    control = RunControl()
    control.skip()  # pressed after the last inner run had finished sampling, before the next one began
    inner = SubRunControl(control, 0, 2, "line 2")
    result = services.engine.run(GenerationRequest(**{**BASE, "prompt": "a cat", "seed": 61, "save_images": False,
                                                      "do_not_save_grid": True}), inner)
    assert not inner.skipped and not result.interrupted and result.skipped_batches == 0
    assert len(result.images) == 1
    assert_same_picture(result.images[0], plain(services, prompt="a cat", seed=61).images[0])  # sampled to the end
    assert not control.skip_requested and not control.interrupted


# --- Loopback -----------------------------------------------------------------------------------------------------
def loopback(services, loops, final, curve, **fields):
    fields = {"mode": "img2img", "init_images": [picture()], "prompt": "a fox", "seed": 50,
              "denoising_strength": 0.6, "inpainting_fill": 1, **fields}
    return run_script(services, script_name="Loopback", script_run_args=[loops, final, curve, "None"], **fields)


def test_loopback_feeds_each_loop_the_last_picture_with_the_curves_strength(services):
    result = loopback(services, 3, 0.2, "Linear")
    assert result.index_of_first_image == 1 and len(result.images) == 4 and result.seeds == [50, 51, 52]
    strengths = [0.6, 0.6 + (0.2 - 0.6) * 0.5, 0.2]  # Linear: progress loop / (loops - 1)
    first = plain(services, mode="img2img", init_images=[picture()], prompt="a fox", seed=50,
                  denoising_strength=0.6).images[0]
    assert_same_picture(result.images[1], first)
    second = plain(services, mode="img2img", init_images=[result.images[1]], prompt="a fox", seed=51,
                   denoising_strength=strengths[1]).images[0]
    assert_same_picture(result.images[2], second)
    third = plain(services, mode="img2img", init_images=[result.images[2]], prompt="a fox", seed=52,
                  denoising_strength=strengths[2]).images[0]
    assert_same_picture(result.images[3], third)
    for text, strength in zip(result.infotexts[1:], strengths):
        params = parse_infotext(text)
        assert float(params["Denoising strength"]) == pytest.approx(strength)
        assert params["Final denoising strength"] == "0.2" and params["Denoising curve"] == "Linear"
    grid = result.images[0]  # the loops in one row
    assert grid.size == (3 * 64, 64)
    for index, image in enumerate(result.images[1:]):
        assert pixels(grid.crop((64 * index, 0, 64 * (index + 1), 64))).tolist() == pixels(image).tolist()


@pytest.mark.parametrize("curve, share", [("Aggressive", math.sin(math.pi / 4)), ("Lazy", 1 - math.cos(math.pi / 4))])
def test_loopback_curves(services, curve, share):
    result = loopback(services, 3, 0.2, curve)
    middle = float(parse_infotext(result.infotexts[2])["Denoising strength"])
    assert middle == pytest.approx(0.6 + (0.2 - 0.6) * share, abs=1e-5)


def test_loopback_with_batch_count_shows_each_batchs_last_loop(services):
    result = loopback(services, 2, 0.3, "Linear", n_iter=2, batch_size=4)  # batch size is 1, as A1111
    assert len(result.images) == 3 and result.index_of_first_image == 1
    assert result.seeds == [51, 53]  # seeds go on across batches; each batch starts again from the init image
    again = plain(services, mode="img2img", init_images=[picture()], prompt="a fox", seed=52,
                  denoising_strength=0.6).images[0]
    last = plain(services, mode="img2img", init_images=[again], prompt="a fox", seed=53,
                 denoising_strength=0.3).images[0]
    assert_same_picture(result.images[2], last, tolerance=2)


def test_loopback_interrupted_keeps_the_finished_loops(services):
    request = GenerationRequest(**BASE, mode="img2img", init_images=[picture()], prompt="a fox", seed=9,
                                script_name="Loopback", save_images=False)
    script = builtin_scripts.find("img2img", "Loopback")
    request.validate()
    request.script_run_args = builtin_scripts.prepare_args(script, request, [4, 0.2, "Linear", "None"])

    def stop_in_loop_two(progress):
        if progress.job_no == 1 and progress.sampling_step >= 1:
            control.interrupt()

    control = RunControl(on_progress=stop_in_loop_two)
    result = services.run_request(request, control)
    assert result.interrupted and result.seeds == [9] and len(result.images) == 1  # no grid of one picture


@pytest.mark.parametrize("interrogator", ["CLIP", "DeepBooru"])
def test_loopback_refuses_interrogators_it_does_not_have(services, interrogator):
    with pytest.raises(RequestError, match=f"append_interrogation '{interrogator}' needs an interrogator"):
        services.generate(GenerationRequest(**BASE, mode="img2img", init_images=[picture()],
                                            script_name="Loopback", script_run_args=[2, 0.5, "Linear", interrogator]))


# --- SD upscale ---------------------------------------------------------------------------------------------------
def blend_reference(tile_images: dict, width: int, height: int, size: int, overlap: int) -> np.ndarray:
    """A1111's combine_grid, written here with numpy: {(x, y): tile} blended with a ramp of floor(i * 255 / overlap)
    over each tile's first `overlap` columns, then each row's first `overlap` lines."""
    ramp = np.floor(np.arange(overlap) * 255 / overlap)
    rows = {}
    for (x, y), tile in sorted(tile_images.items(), key=lambda item: (item[0][1], item[0][0])):
        strip = rows.setdefault(y, np.zeros((size, width, 3)))
        tile = pixels(tile).astype(float)
        if x == 0:
            strip[:, :size] = tile
        else:
            strip[:, x:x + overlap] = (tile[:, :overlap] * ramp[None, :, None]
                                       + strip[:, x:x + overlap] * (255 - ramp[None, :, None])) / 255
            strip[:, x + overlap:x + size] = tile[:, overlap:]
    combined = np.zeros((height, width, 3))
    for y, strip in sorted(rows.items()):
        if y == 0:
            combined[:size] = strip
        else:
            combined[y:y + overlap] = (strip[:overlap] * ramp[:, None, None]
                                       + combined[y:y + overlap] * (255 - ramp[:, None, None])) / 255
            combined[y + overlap:y + size] = strip[overlap:]
    return combined


def test_tiles_blend_back_as_a1111_for_a_known_tile_set():
    source = Image.new("RGB", (112, 96))
    grid = tiles.split(source, 64, 64, 16)
    assert [(row.y, [t.x for t in row.tiles]) for row in grid.rows] == [(0, [0, 48]), (32, [0, 48])]
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 250)]
    known = {}
    for tile, colour in zip(grid.tiles(), colours):
        tile.image = Image.new("RGB", (64, 64), colour)
        known[(tile.x, next(r.y for r in grid.rows if tile in r.tiles))] = tile.image
    combined = pixels(tiles.combine(grid))
    assert combined.shape == (96, 112, 3)
    assert np.abs(combined - blend_reference(known, 112, 96, 64, 16)).max() <= 1


def test_sd_upscale_upscales_tiles_and_blends_them_back(services):
    source = picture(48, 40, seed=3)
    result = run_script(services, mode="img2img", init_images=[source], prompt="a fox", seed=20,
                        denoising_strength=0.4, batch_size=3, script_name="SD upscale",
                        script_run_args=[None, 16, 1, 2])  # index 1: Lanczos
    assert len(result.images) == 1 and result.images[0].size == (96, 80) and result.seeds == [20]
    upscaled = source.resize((96, 80), Image.LANCZOS)  # A1111: the scaled size in whole multiples of 8
    # tiles of 64 with 16 overlap: x at 0 and 32, y at 0 and 16; batches of 3: seeds 20, 21, 22, then 21
    spots, seeds = [(0, 0), (32, 0), (0, 16), (32, 16)], [20, 21, 22, 21]
    made = {}
    for (x, y), seed in zip(spots, seeds):
        tile = upscaled.crop((x, y, x + 64, y + 64))
        made[(x, y)] = plain(services, mode="img2img", init_images=[tile], prompt="a fox", seed=seed,
                             denoising_strength=0.4).images[0]
    expected = blend_reference(made, 96, 80, 64, 16)
    assert np.abs(pixels(result.images[0]) - expected).max() <= 2
    params = parse_infotext(result.infotexts[0])
    assert params["SD upscale overlap"] == "16" and params["SD upscale upscaler"] == "Lanczos"
    assert params["Size"] == "64x64"


def test_sd_upscale_batch_count_and_progress_over_all_tiles(services):
    request = GenerationRequest(**BASE, mode="img2img", init_images=[picture(48, 40)], prompt="a fox", seed=4,
                                n_iter=2, batch_size=2, script_name="SD upscale", save_images=False)
    script = builtin_scripts.find("img2img", "SD upscale")
    request.validate()
    request.script_run_args = builtin_scripts.prepare_args(script, request, [None, 16, "Nearest", 2])
    seen = []
    control = RunControl(on_progress=lambda p: seen.append((p.job_no, p.job_count)))
    result = services.run_request(request, control)
    assert len(result.images) == 2 and result.seeds == [4, 5]
    assert {count for _, count in seen} == {4}  # 2 pictures x 2 batches of 2 tiles: one bar for all
    assert sorted({job for job, _ in seen}) == [0, 1, 2, 3]
    assert parse_infotext(result.infotexts[1])["Seed"] == "5"


def test_sd_upscale_none_keeps_the_size_and_saves_only_the_picture(services, app):
    folder = app.data / "outputs" / "img2img-images"
    before = set(folder.rglob("*.png"))
    result = run_script(services, mode="img2img", init_images=[picture(80, 64)], prompt="a fox", seed=4,
                        save_images=True, script_name="SD upscale", script_run_args=[None, 0, "None", 3])
    assert result.images[0].size == (80, 64)  # two tiles (x 0 and 16), no overlap to blend
    saved = sorted(set(folder.rglob("*.png")) - before)
    assert [str(path) for path in saved] == result.saved_paths and len(saved) == 1
    with Image.open(saved[0]) as image:
        assert image.size == (80, 64) and read_infotext(image) == result.infotexts[0]


@pytest.mark.parametrize("args, message", [
    ([None, 64, 0, 2], "overlap \\(64px\\) must be smaller than the tile"),
    ([None, 16, 0, 9], "scale_factor must be from 1 to 4"),
    ([None, 16, True, 2], "upscaler_index must be an index"),
])
def test_sd_upscale_refuses_bad_args(services, args, message):
    with pytest.raises(RequestError, match=message):
        services.generate(GenerationRequest(**BASE, mode="img2img", init_images=[picture()], script_name="SD upscale",
                                            script_run_args=args))


# --- the HTTP API -------------------------------------------------------------------------------------------------
def test_api_lists_the_scripts_and_runs_prompt_matrix_with_the_grid_first(app):
    listed = app.client.get("/sdapi/v1/scripts").json()
    assert listed["txt2img"][:2] == ["Prompt matrix", "Prompts from file or textbox"]
    assert listed["img2img"][:4] == ["Loopback", "Prompt matrix", "Prompts from file or textbox", "SD upscale"]
    body = {"prompt": "a fox|red", "steps": 2, "width": 64, "height": 64, "seed": 12, "sampler_name": "Euler",
            "script_name": "Prompt matrix", "script_args": [False, False, "positive", "comma", 0]}
    answer = app.client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    info = json.loads(payload["info"])
    assert len(payload["images"]) == 3 and info["index_of_first_image"] == 1 and len(info["infotexts"]) == 3
    assert info["all_prompts"] == ["a fox", "a fox, red"]
    grid = decode(payload["images"][0])
    assert grid.width == 128 and grid.height > 64  # two cells side by side under a row of labels
    reference = plain(app.services, prompt="a fox, red", negative_prompt="", seed=12, steps=2)
    assert_same_picture(decode(payload["images"][2]).convert("RGB"), reference.images[0])


def test_api_img2img_scripts_take_a1111s_positional_args(app):
    body = {"init_images": [png(picture(48, 40))], "prompt": "a fox", "steps": 2, "width": 64, "height": 64,
            "seed": 3, "sampler_name": "Euler", "denoising_strength": 0.5,
            "script_name": "SD upscale", "script_args": [None, 16, 2, 2]}
    answer = app.client.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text
    assert decode(answer.json()["images"][0]).size == (96, 80)

    loop = {**body, "init_images": [png(picture())], "script_name": "loopback", "script_args": [2]}
    payload = app.client.post("/sdapi/v1/img2img", json=loop).json()  # left-off args: A1111's defaults
    info = json.loads(payload["info"])
    assert len(payload["images"]) == 3 and info["index_of_first_image"] == 1
    assert "Final denoising strength: 0.5" in info["infotexts"][1]


def test_api_refuses_bad_script_args_with_a_4xx(app):
    body = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "script_name": "Prompts from file or textbox",
            "script_args": [False, False, "start", "a fox\n--cfg_scale loud"]}
    answer = app.client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 422 and "line 2" in answer.json()["detail"]
    unknown = {**body, "script_args": [False, False, "start", "--prompt x --sd_model no-such-model"]}
    answer = app.client.post("/sdapi/v1/txt2img", json=unknown)
    assert 400 <= answer.status_code < 500 and "line 1" in answer.json()["detail"]
    loop = {**body, "init_images": [png(picture())], "script_name": "Loopback", "script_args": [2, 0.5, "Linear",
                                                                                               "CLIP"]}
    answer = app.client.post("/sdapi/v1/img2img", json=loop)
    assert answer.status_code == 422 and "CLIP" in answer.json()["detail"]
    wrong_tab = {**body, "script_name": "SD upscale", "script_args": []}
    assert app.client.post("/sdapi/v1/txt2img", json=wrong_tab).status_code in (400, 404, 422)


# --- the UI -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blocks(app):
    return build_ui(app.services)


def by_id(blocks) -> dict:
    return {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}


def click_generate(blocks, mode: str, values: dict) -> dict:
    """Generate as the page does: every input at its default but those given (by elem_id); the last update."""
    fn = next(f for f in blocks.fns.values() if f.api_name == mode)
    args = []
    for component in fn.inputs:
        value = values.get(component.elem_id, getattr(component, "value", None))
        if getattr(component, "type", None) == "index" and isinstance(value, str):
            value = component.choices.index(next(c for c in component.choices if c[0] == value))
        args.append(value)
    outputs = list(fn.fn(*args))
    return dict(zip(generation.OUTPUTS, outputs[-1]))


def test_the_script_dropdowns_list_a1111s_scripts_with_their_controls(blocks):
    ids = by_id(blocks)
    assert [c[0] for c in ids["txt2img_script_list"].choices][:3] == ["None", "Prompt matrix",
                                                                      "Prompts from file or textbox"]
    assert [c[0] for c in ids["img2img_script_list"].choices][:5] == ["None", "Loopback", "Prompt matrix",
                                                                      "Prompts from file or textbox", "SD upscale"]
    assert ids["script_txt2img_prompt_matrix_margin_size"].label == "Grid margins (px)"
    assert ids["script_img2img_prompts_from_file_or_textbox_prompt_txt"].label == "List of prompt inputs"
    assert ids["script_loopback_loops"].value == 4 and ids["script_sd_upscale_overlap"].value == 64
    assert [c[0] for c in ids["script_sd_upscale_upscaler_index"].choices][:3] == ["None", "Lanczos", "Nearest"]
    dropdown = ids["txt2img_script_list"]
    show = next(f for f in blocks.fns.values() if any(t[0] == dropdown._id for t in f.targets))
    updates = show.fn("Prompt matrix")
    groups = [ids["script_txt2img_prompt_matrix"], ids["script_txt2img_prompts_from_file_or_textbox"]]
    visible = {out._id: update.visible for out, update in zip(show.outputs, updates)}
    assert visible[groups[0]._id] is True and visible[groups[1]._id] is False


def test_generate_with_prompt_matrix_from_the_txt2img_tab(blocks, app):
    out = click_generate(blocks, "txt2img", {
        "txt2img_prompt": "a fox|red", "txt2img_neg_prompt": "", "txt2img_sampling": "Euler", "txt2img_steps": 2,
        "txt2img_width": 64, "txt2img_height": 64, "txt2img_seed": 31, "txt2img_script_list": "Prompt matrix",
        "script_txt2img_prompt_matrix_variations_delimiter": "space"})
    gallery = out["gallery"]
    assert len(gallery) == 3 and gallery[0].width == 128 and gallery[0].height > 64  # the grid, then both
    assert out["state"]["infotexts"][2].startswith("a fox red\n")
    reference = plain(app.services, prompt="a fox red", negative_prompt="", seed=31, steps=2).images[0]
    assert_same_picture(gallery[2].convert("RGB"), reference)


def test_generate_with_sd_upscale_and_loopback_from_the_img2img_tab(blocks):
    common = {"img2img_prompt": "a fox", "img2img_sampling": "Euler", "img2img_steps": 2, "img2img_width": 64,
              "img2img_height": 64, "img2img_seed": 8, "img2img_image": picture(48, 40)}
    out = click_generate(blocks, "img2img", {**common, "img2img_script_list": "SD upscale",
                                             "script_sd_upscale_overlap": 16,
                                             "script_sd_upscale_upscaler_index": "Lanczos"})
    assert [image.size for image in out["gallery"]] == [(96, 80)]
    out = click_generate(blocks, "img2img", {**common, "img2img_script_list": "Loopback",
                                             "script_loopback_loops": 2})
    assert len(out["gallery"]) == 3 and "Denoising curve: Linear" in out["state"]["infotexts"][1]
