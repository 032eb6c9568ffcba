"""X/Y/Z plot (A1111 1.10's scripts/xyz_grid.py) as users see it: the value syntax, grids whose cells are the same
pictures as the same settings generated alone, laid out and labelled as A1111 does, checkpoints loaded once each,
prompt search/replace, seeds, sub grids and sub images, the HTTP API with A1111's positional script_args, 4xx for bad
values before anything runs, Interrupt, the UI's controls, ControlNet axes and an axis an A1111 extension adds."""
from __future__ import annotations

import base64
import csv
import io
import json
from itertools import permutations
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from tests.conftest import install_model, max_pixel_difference
from webui.control.units import ControlUnit
from webui.core.errors import RequestError
from webui.core.request import GenerationRequest
from webui.core.run_control import RunControl
from webui.core.samplers import sampler_listing
from webui.engine.scripts import xyz_plot
from webui.engine.scripts.xyz_axes import builtin_axes
from webui.engine.scripts.xyz_plan import axes_for
from webui.engine.scripts.xyz_values import ValueSyntaxError, expand_floats, expand_ints, split_values
from webui.models.tiny import write_controlnet, write_single_file
from webui.outputs.infotext import parse_infotext
from webui.settings.flags import parse_flags

TITLE = "X/Y/Z plot"
BASE = dict(prompt="a red fox", negative_prompt="blurry", sampler_name="Euler", steps=3, width=64, height=64,
            seed=5, save_images=False)
# A1111 1.10's txt2img axis indexes (scripts/xyz_grid.py `axis_options` without the img2img-only entries)
SEED, STEPS, CFG, PROMPT_SR, SAMPLER, CHECKPOINT, NEGATIVE_GUIDANCE, FACE_RESTORE = 1, 4, 6, 7, 9, 11, 12, 33
A1111_TXT2IMG_AXES = 43  # Nothing ... Size
CONTROLNET_AXES = 11  # what sd-webui-controlnet adds ("[ControlNet] Enabled" ... "[ControlNet] Pre Threshold B")
STYLES = "name,prompt,negative_prompt\nFilm,\"{prompt}, film grain\",lowres\nNight,\"{prompt}, at night\",\n"


def xyz_args(x=("Nothing", ""), y=("Nothing", ""), z=("Nothing", ""), **flags) -> list:
    """A1111's 18 positional script_args: each axis as (type, "text") or (type, [dropdown values])."""
    args = []
    for kind, values in (x, y, z):
        args += [kind, "", list(values)] if isinstance(values, list) else [kind, values, []]
    defaults = dict(draw_legend=True, include_lone_images=False, include_sub_grids=False, no_fixed_seeds=False,
                    vary_seeds_x=False, vary_seeds_y=False, vary_seeds_z=False, margin_size=0, csv_mode=False)
    defaults.update(flags)
    return args + list(defaults.values())


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("xyz-data")
    install_model(data, tiny_models["sd1"], "tiny-a.safetensors")
    install_model(data, write_single_file(tmp_path_factory.mktemp("other") / "tiny-b.safetensors", "sd1", seed=7))
    write_controlnet(data / "models" / "ControlNet" / "control_tiny_canny.safetensors", "sd1", seed=1)
    (data / "styles.csv").write_text(STYLES, encoding="utf-8")
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        assert services.hasher.wait_idle(30)
        services.controlnets.refresh()
        yield SimpleNamespace(client=TestClient(app), services=services, data=data)
    finally:
        services.stop()


@pytest.fixture
def services(api):
    return api.services


def plot(services, args, **fields):
    job = services.generate(GenerationRequest(**{**BASE, **fields}, script_name=TITLE, script_run_args=list(args)))
    assert job.wait(300)
    assert job.error is None, job.error
    return job.result


def alone(services, **fields):
    """The same settings generated alone, without any script."""
    return services.engine.run(GenerationRequest(**{**BASE, **fields}))


# --- the value syntax ----------------------------------------------------------------------------------------------
def test_value_syntax_expands_ranges_as_a1111():
    def ints(text):
        return expand_ints(split_values(text), 1000)

    def floats(text):
        return expand_floats(split_values(text), 1000)

    assert ints("1-5") == list(range(1, 6))
    assert ints("1-5 (+2)") == list(range(1, 6, 2))
    assert ints("10-1 (-3)") == list(range(10, 0, -3))
    assert ints("1-10 [5]") == [int(v) for v in np.linspace(1, 10, 5)]
    assert ints("-2-2, 7, 12 - 14") == [-2, -1, 0, 1, 2, 7, 12, 13, 14]
    assert floats("1.5-3 (+0.25)") == np.arange(1.5, 3.25, 0.25).tolist()
    assert floats("0.5-1 [3]") == np.linspace(0.5, 1, 3).tolist()
    assert floats("0-1 (+0.1)") == np.round(np.linspace(0, 1, 11), 10).tolist()  # A1111's arange adds a 1.1
    assert floats("7, 7.5,") == [7.0, 7.5]  # a trailing comma is no value
    text = 'a fox, "red, blue", \'single\'\nsecond line'
    assert split_values(text) == [v.strip() for row in csv.reader(io.StringIO(text), skipinitialspace=True)
                                  for v in row]
    assert split_values("") == [] and split_values("  ") == []
    for bad, message in (("10-1", "gives no values"), ("abc", "not a whole number"), ("1-5 (+0)", "must not be 0"),
                         ("1-100000", "at most 1,000")):
        with pytest.raises(ValueSyntaxError, match=message.replace("(", r"\(")):
            ints(bad)
    with pytest.raises(ValueSyntaxError, match="not a number"):
        floats("1.5, x")
    with pytest.raises(ValueSyntaxError, match="not a finite number"):
        floats("nan")
    order = next(a for a in builtin_axes() if a.label == "Prompt order")
    assert order.parse("red, green, blue", None, False, 1000) == [list(p) for p in permutations(["red", "green",
                                                                                                  "blue"])]


def test_axis_lists_keep_a1111_indexes(services):
    ctx = services.script_context(None, services.options)
    txt2img, img2img = axes_for("txt2img", ctx), axes_for("img2img", ctx)
    assert [txt2img[i].label for i in (SEED, STEPS, CFG, PROMPT_SR, SAMPLER, CHECKPOINT, FACE_RESTORE)] == \
        ["Seed", "Steps", "CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name", "Face restore"]
    assert txt2img[A1111_TXT2IMG_AXES - 1].label == "Size"
    assert txt2img[A1111_TXT2IMG_AXES].label == "[ControlNet] Enabled"
    assert [a.label for a in txt2img[-2:]] == ["Eta noise seed delta", "Distilled CFG Scale"]
    assert [a.label for a in img2img[5:10]] == ["CFG Scale", "Image CFG Scale", "Prompt S/R", "Prompt order",
                                                 "Sampler"]
    assert "Hires steps" not in {a.label for a in img2img} and "Cond. Image Mask Weight" not in \
        {a.label for a in txt2img}


# --- grids ---------------------------------------------------------------------------------------------------------
def test_sampler_by_steps_grid_holds_the_pictures_made_alone(services):
    result = plot(services, xyz_args(("Sampler", ["Euler", "Euler a"]), ("Steps", "2,3"), include_lone_images=True))
    cells = [(sampler, steps) for steps in (2, 3) for sampler in ("Euler", "Euler a")]  # X across, then Y down
    made = [alone(services, sampler_name=sampler, steps=steps) for sampler, steps in cells]
    assert result.index_of_first_image == 1 and len(result.images) == 1 + len(cells)
    for index, single in enumerate(made):
        assert max_pixel_difference(result.images[1 + index], single.images[0]) == 0
        assert result.infotexts[1 + index] == single.infotexts[0]
    assert result.seeds == [5] * 4 and result.prompts == ["a red fox"] * 4
    assert len(result.infotexts) == len(result.images)
    # the layout: row labels three quarters of a cell wide on the left, column labels on top, cells in order
    grid = result.images[0]
    pad_left, pad_top = 64 * 3 // 4, grid.height - 2 * 64
    assert grid.width == pad_left + 2 * 64 and pad_top > 0
    for index, single in enumerate(made):
        x, y = pad_left + 64 * (index % 2), pad_top + 64 * (index // 2)
        assert max_pixel_difference(grid.crop((x, y, x + 64, y + 64)), single.images[0]) == 0
    # ...and labelled: the margins are the grid's background (white) but for dark text in the band above each
    # column and left of each row; the corner they share holds no label
    pixels = np.asarray(grid.convert("RGB")).astype(int)
    assert (pixels[:pad_top, :pad_left] == 255).all()
    bands = [pixels[:pad_top, pad_left + 64 * c:pad_left + 64 * (c + 1)] for c in range(2)] + \
        [pixels[pad_top + 64 * r:pad_top + 64 * (r + 1), :pad_left] for r in range(2)]
    for band in bands:
        ink = (band < 255).any(axis=2)
        assert 0 < ink.mean() < 0.5 and band.min() < 64  # some text, near black (A1111's active label colour)
        assert (band[ink].max(axis=1) - band[ink].min(axis=1) <= 2).all()  # grey shades only: no image there
    assert not np.array_equal(bands[0], bands[1]) and not np.array_equal(bands[2], bands[3])  # different labels
    assert (bands[1] < 255).any(axis=2).sum() > (bands[0] < 255).any(axis=2).sum()  # "Euler a" is longer
    params = parse_infotext(result.infotexts[0])
    assert (params["Script"], params["X Type"], params["X Values"], params["Y Type"], params["Y Values"]) == \
        (TITLE, "Sampler", "Euler,Euler a", "Steps", "2,3")
    assert (params["Steps"], params["Sampler"], params["Seed"]) == ("2", "Euler", "5")  # the first cell's
    assert "Z Type" not in params


def test_margins_and_no_legend(services):
    result = plot(services, xyz_args(("Steps", "2,3"), ("CFG Scale", "5, 9"), draw_legend=False, margin_size=6))
    grid = result.images[0]
    assert grid.size == (128, 128) and len(result.images) == 1  # no legend: no margins either (A1111's)
    result = plot(services, xyz_args(("Steps", "2,3"), ("CFG Scale", "5, 9"), margin_size=6))
    pad_left = 48
    assert result.images[0].width == pad_left + 128 + 6
    top = result.images[0].height - (128 + 6)
    cell = alone(services, steps=3, cfg_scale=9.0).images[0]
    x, y = pad_left + 64 + 6, top + 64 + 6
    assert max_pixel_difference(result.images[0].crop((x, y, x + 64, y + 64)), cell) == 0


def test_checkpoint_axis_loads_each_checkpoint_once(services):
    titles = sorted(info.title for info in services.models.checkpoints())
    loads = []
    services.models.on_loaded.append(lambda info, model: loads.append(info.name_for_extra))
    try:
        services.models.unload_all()
        result = plot(services, xyz_args(("Steps", "2,3"), ("Checkpoint name", titles), include_lone_images=True))
    finally:
        services.models.on_loaded.pop()
    assert sorted(loads) == ["tiny-a", "tiny-b"]  # checkpoints outermost: each loaded once (the cache holds one)
    models = [parse_infotext(text)["Model"] for text in result.infotexts[1:]]
    assert models == ["tiny-a", "tiny-a", "tiny-b", "tiny-b"]
    assert max_pixel_difference(result.images[3], alone(services, steps=2, checkpoint=titles[1]).images[0]) == 0


def test_prompt_search_replace_and_order(services):
    result = plot(services, xyz_args((PROMPT_SR, "red, blue, green"), include_lone_images=True),
                  negative_prompt="red blur")
    assert result.prompts == ["a red fox", "a blue fox", "a green fox"]
    assert result.negative_prompts == ["red blur", "blue blur", "green blur"]
    assert max_pixel_difference(result.images[2], alone(services, prompt="a blue fox",
                                                        negative_prompt="blue blur").images[0]) == 0
    result = plot(services, xyz_args(("Prompt order", "fox, red"), include_lone_images=True), prompt="a red fox")
    assert result.prompts == ["a fox red", "a red fox"]
    assert parse_infotext(result.infotexts[0])["X Values"] == "fox, red"


def test_styles_axis_applies_styles_per_cell(services):
    result = plot(services, xyz_args(("Styles", ["Film", "Night"]), include_lone_images=True))
    assert result.prompts == ["a red fox, film grain", "a red fox, at night"]
    assert result.negative_prompts == ["blurry, lowres", "blurry"]


def test_seeds_fixed_kept_random_and_varied(services):
    fixed = plot(services, xyz_args(("Steps", "2,3"), include_lone_images=True), seed=-1)
    assert fixed.seeds[0] == fixed.seeds[1] != -1
    kept = plot(services, xyz_args(("Steps", "2,3"), no_fixed_seeds=True, include_lone_images=True), seed=-1)
    assert kept.seeds[0] != kept.seeds[1]  # Keep -1 for seeds: each cell a random seed of its own
    axis = plot(services, xyz_args(("Seed", "-1, 7"), include_lone_images=True))
    assert axis.seeds[1] == 7 and axis.seeds[0] != -1
    params = parse_infotext(axis.infotexts[0])
    assert params["X Values"] == "-1, 7" and params["Fixed X Values"] == f"{axis.seeds[0]}, 7"
    varied = plot(services, xyz_args(("Steps", "2,3"), ("CFG Scale", "5,9"), vary_seeds_x=True, vary_seeds_y=True,
                                     include_lone_images=True))
    assert varied.seeds == [5, 6, 7, 8]


def test_every_cells_seed_and_prompt_without_sub_images(services):
    result = plot(services, xyz_args(("Steps", "2,3"), (PROMPT_SR, "red, blue"), vary_seeds_x=True))
    assert len(result.images) == len(result.infotexts) == 1 and result.index_of_first_image == 1  # the grid only
    assert result.seeds == [5, 6, 5, 6]  # in grid order: Vary seeds for X adds the column's number
    assert result.prompts == ["a red fox", "a red fox", "a blue fox", "a blue fox"]
    assert result.negative_prompts == ["blurry"] * 4 and len(result.subseeds) == 4
    assert parse_infotext(result.infotexts[0])["Seed"] == "5"


def test_script_grids_are_saved_where_batch_grids_are(services, tmp_path):
    from webui.engine.batch_grid import grids_dir
    from webui.engine.scripts.collect import Collector, save_script_grid
    from webui.settings.options import OptionsOverlay

    options = OptionsOverlay(services.options, {"outdir_grids": str(tmp_path / "grids"), "grid_save": True})
    ctx = services.script_context(None, options)
    assert ctx.grids_dir("img2img") == grids_dir(options, "unused", "img2img") == tmp_path / "grids"
    picture = Image.new("RGB", (8, 8), (10, 20, 30))
    path = save_script_grid(ctx, GenerationRequest(**{**BASE, "save_images": True}), Collector(), picture, seed=5,
                            prompt="a red fox", infotext="a red fox\nSteps: 3")
    assert path is not None and Path(path).parent.parent == tmp_path / "grids" and Path(path).is_file()
    with Image.open(path) as saved:
        assert saved.info["parameters"] == "a red fox\nSteps: 3" and saved.getpixel((4, 4)) == (10, 20, 30)
    not_saved = GenerationRequest(**BASE)  # save_images False: no file, no path
    assert save_script_grid(ctx, not_saved, Collector(), picture, seed=5, prompt="", infotext="") is None


def test_z_axis_sub_grids_sub_images_and_saved_grids(services, api):
    result = plot(services, xyz_args(("Steps", "2,3"), ("Nothing", ""), ("CFG Scale", "5,9"), include_sub_grids=True,
                                     include_lone_images=True), save_images=True)
    assert len(result.images) == 1 + 2 + 4 and result.index_of_first_image == 3
    assert len(result.seeds) == len(result.prompts) == 4 and len(result.infotexts) == 7
    whole, first, second = result.images[:3]
    assert whole.width == first.width + second.width and whole.height > first.height  # Z labels above
    main, sub = parse_infotext(result.infotexts[0]), parse_infotext(result.infotexts[2])
    assert (main["Z Type"], main["Z Values"], main["X Type"]) == ("CFG Scale", "5,9", "Steps")
    assert "Z Type" not in sub and sub["X Type"] == "Steps" and sub["CFG scale"] == "9"
    grids = [Path(p) for p in result.saved_paths[:3]]
    assert all(p.parent.parent == api.data / "outputs" / "txt2img-grids" for p in grids)
    assert [p.name.startswith("grid-") for p in grids] == [True] * 3
    with Image.open(grids[0]) as saved:
        assert saved.info["parameters"] == result.infotexts[0]
    assert len(result.saved_paths) == 3 + 4  # and every cell's picture


def test_img2img_denoising_axis(services):
    init = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    result = plot(services, xyz_args(("Denoising", "0.3, 0.6"), include_lone_images=True), mode="img2img",
                  init_images=[init])
    for index, strength in enumerate((0.3, 0.6)):
        single = alone(services, mode="img2img", init_images=[init], denoising_strength=strength)
        assert max_pixel_difference(result.images[1 + index], single.images[0]) == 0
    assert parse_infotext(result.infotexts[0])["X Type"] == "Denoising"


def test_controlnet_axes_change_every_unit(services):
    edges = np.zeros((64, 64, 3), np.uint8)
    edges[16:48, 16:48] = 255
    unit = dict(enabled=True, module="none", model="control_tiny_canny", image=Image.fromarray(edges))
    result = plot(services, xyz_args(("[ControlNet] Weight", "0.5, [1.5]"), ("[ControlNet] Guidance End (T)", "1, 0.5"),
                                     include_lone_images=True), controlnet_units=[ControlUnit(**unit)])
    for index, (weight, end) in enumerate([(0.5, 1.0), (1.5, 1.0), (0.5, 0.5), (1.5, 0.5)]):
        single = alone(services, controlnet_units=[ControlUnit(**unit, weight=weight, guidance_end=end)])
        assert max_pixel_difference(result.images[1 + index], single.images[0]) == 0
    with pytest.raises(RequestError, match="Unknown ControlNet model: nope"):
        services.generate(GenerationRequest(**BASE, controlnet_units=[ControlUnit(**unit)], script_name=TITLE,
                                            script_run_args=xyz_args(("[ControlNet] Model", "nope"))))


def test_refiner_axes(services):
    titles = sorted(info.title for info in services.models.checkpoints())
    result = plot(services, xyz_args(("Refiner checkpoint", ["None", titles[1]]), ("Refiner switch at", "0.5"),
                                     include_lone_images=True), steps=4, checkpoint=titles[0])
    plain = alone(services, steps=4, checkpoint=titles[0])
    refined = alone(services, steps=4, checkpoint=titles[0], refiner_checkpoint=titles[1], refiner_switch_at=0.5)
    assert max_pixel_difference(result.images[1], plain.images[0]) == 0
    assert max_pixel_difference(result.images[2], refined.images[0]) == 0
    assert max_pixel_difference(plain.images[0], refined.images[0]) > 0  # the refiner changed the picture
    assert result.infotexts[2] == refined.infotexts[0]


# --- Interrupt -----------------------------------------------------------------------------------------------------
def test_interrupt_keeps_the_finished_cells(services):
    control = RunControl()
    ctx = services.script_context(control, services.options)
    made, process = [], ctx.process

    def process_then_interrupt(request, inner_control):
        made.append(process(request, inner_control))
        control.interrupt()  # the user presses Interrupt while the first cell finishes
        return made[-1]

    ctx.process = process_then_interrupt
    request = GenerationRequest(**BASE).validate()
    args = xyz_plot.check(request, xyz_args(("Steps", "2,3"), ("CFG Scale", "5,9")), ctx)
    result = xyz_plot.SCRIPT.run(ctx, request, args)
    assert len(made) == 1 and result.interrupted
    assert any("Interrupted: 1 of 4 cells" in warning for warning in result.warnings)
    grid = result.images[0]
    left, top = 48, grid.height - 128
    first = alone(services, steps=2, cfg_scale=5.0).images[0]
    assert max_pixel_difference(grid.crop((left, top, left + 64, top + 64)), first) == 0
    for x, y in ((64, 0), (0, 64), (64, 64)):  # the cells never made are black, as A1111 leaves them
        assert not np.asarray(grid.crop((left + x, top + y, left + x + 64, top + y + 64))).any()


def test_skip_skips_the_current_cell_and_the_plot_goes_on(services):
    control = RunControl()
    ctx = services.script_context(control, services.options)
    made, process = [], ctx.process

    def process_with_skip(request, inner_control):
        if len(made) == 1:
            control.skip()  # pressed as the second cell starts
        made.append(process(request, inner_control))
        return made[-1]

    ctx.process = process_with_skip
    request = GenerationRequest(**BASE).validate()
    args = xyz_plot.check(request, xyz_args(("Steps", "2,3"), ("CFG Scale", "5,9"), include_lone_images=True), ctx)
    result = xyz_plot.SCRIPT.run(ctx, request, args)
    assert len(made) == 4 and not result.interrupted
    assert any("3 of 4 cells were finished" in warning for warning in result.warnings)
    assert len(result.images) == 1 + 3  # the grid, then the three cells made
    assert max_pixel_difference(result.images[3], alone(services, steps=3, cfg_scale=9.0).images[0]) == 0
    grid = result.images[0]
    left, top = 48, grid.height - 128
    assert not np.asarray(grid.crop((left + 64, top, left + 128, top + 64))).any()  # the skipped cell


# --- the HTTP API --------------------------------------------------------------------------------------------------
def test_api_script_args_as_a1111_positions(api):
    body = {**{k: v for k, v in BASE.items() if k != "save_images"}, "script_name": "X/Y/Z plot",
            "script_args": xyz_args((SAMPLER, ["Euler", "Euler a"]), (STEPS, "2,3"))}
    response = api.client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    info = json.loads(payload["info"])
    assert len(payload["images"]) == 1 and info["index_of_first_image"] == 1
    grid = Image.open(io.BytesIO(base64.b64decode(payload["images"][0])))
    assert grid.size[0] == 48 + 128 and grid.size[1] > 128
    assert "Script: X/Y/Z plot" in info["infotexts"][0] and "X Type: Sampler" in info["infotexts"][0]
    cell = alone(api.services, sampler_name="Euler a", steps=3).images[0]
    assert max_pixel_difference(grid.convert("RGB").crop((48 + 64, grid.size[1] - 64, 48 + 128, grid.size[1])),
                                cell) == 0
    # labels work as well as indexes, and what a client leaves off takes A1111's defaults
    short = {**body, "script_args": ["Steps", "2"]}
    payload = api.client.post("/sdapi/v1/txt2img", json=short).json()
    assert "X Type: Steps" in json.loads(payload["info"])["infotexts"][0]


def test_api_info_has_every_cells_seed(api):
    body = {**BASE, "script_name": TITLE, "script_args": xyz_args((STEPS, "2,3"), (CFG, "5,9"), vary_seeds_x=True,
                                                                     vary_seeds_y=True)}
    response = api.client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    info = json.loads(payload["info"])
    assert len(payload["images"]) == 1 and info["index_of_first_image"] == 1
    assert info["all_seeds"] == [5 + n for n in range(4)]  # Vary seeds for X and Y: 5 + x + 2 * y
    assert info["all_prompts"] == ["a red fox"] * 4 and len(info["all_subseeds"]) == 4
    assert info["seed"] == 5 and "Seed: 5," in info["infotexts"][0]


def test_face_restore_axis_values_are_checked_when_queued(api):
    """A Face restore value whose model file is missing gets a plain request's 422 before anything is queued."""
    before = len(api.services.queue.recent())
    default_model = api.services.options.get("face_restoration_model")
    for value, model in (("CodeFormer", "CodeFormer"), ("GFPGAN", "GFPGAN"), ("true", default_model)):
        plain = api.client.post("/sdapi/v1/txt2img", json={**BASE, "restore_faces": True,
                                                           "override_settings": {"face_restoration_model": model}})
        assert plain.status_code == 422, plain.text
        body = {**BASE, "script_name": TITLE, "script_args": xyz_args((FACE_RESTORE, f"false, {value}"))}
        response = api.client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert plain.json()["detail"] in detail and f"X value '{value}'" in detail
    assert len(api.services.queue.recent()) == before and not api.services.queue.pending()  # nothing queued


@pytest.mark.parametrize("args, status, message", [
    (xyz_args((SAMPLER, ["Euler", "Nope"])), 400, "Unknown sampler: Nope"),
    (xyz_args((STEPS, "2, abc")), 422, "'abc' is not a whole number"),
    (xyz_args((STEPS, "0, 2")), 422, "steps must be between 1 and 150"),
    (xyz_args((CHECKPOINT, "nope")), 400, "Unknown checkpoint: nope"),
    (xyz_args((PROMPT_SR, "purple, blue")), 400, "Prompt S/R did not find purple in prompt or negative prompt"),
    (xyz_args(("VAE", "nope")), 400, "Unknown VAE: nope"),
    (xyz_args((NEGATIVE_GUIDANCE, "0.5")), 400, "'Negative Guidance minimum sigma', which this server cannot plot"),
    (xyz_args((999, "1")), 422, "x_type must be an axis type's number from 0"),
    (xyz_args(("Steps", "1-40"), ("Seed", "1-40")), 422, "1,600 cells; at most 1,000"),
    (xyz_args(("Steps", "")), 422, "no values given"),
    (xyz_args(("Size", "64x64, big")), 400, "Invalid size 'big'"),
])
def test_bad_values_are_refused_before_anything_runs(api, args, status, message):
    before = len(api.services.queue.recent())
    response = api.client.post("/sdapi/v1/txt2img", json={**BASE, "script_name": "X/Y/Z plot", "script_args": args})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert "X/Y/Z plot" in response.json()["detail"]
    assert len(api.services.queue.recent()) == before and not api.services.queue.pending()  # nothing queued


# --- an A1111 extension's axis -------------------------------------------------------------------------------------
EXTENSION = '''
import modules.scripts as scripts

xyz_grid = next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")


def apply_tag(p, x, xs):
    p.xyz_test_tag = x


def confirm_even(p, xs):
    for x in xs:
        if x % 2:
            raise ValueError(f"{x} is odd")


xyz_grid.axis_options.extend([
    xyz_grid.AxisOption("[Test] Steps", int, xyz_grid.apply_field("steps")),
    xyz_grid.AxisOption("[Test] ENSD", int, xyz_grid.apply_override("eta_noise_seed_delta")),
    xyz_grid.AxisOptionTxt2Img("[Test] Tag", str, apply_tag, format_value=xyz_grid.format_value,
                               choices=lambda: ["alpha", "beta"]),
    xyz_grid.AxisOption("[Test] Even", int, xyz_grid.apply_field("steps"), confirm=confirm_even),
])


class TagScript(scripts.Script):
    def title(self):
        return "Test tag"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        if getattr(p, "xyz_test_tag", None):
            p.extra_generation_params["Test tag"] = p.xyz_test_tag
'''


def test_an_extensions_axis_is_listed_and_applied(tmp_path, tiny_models):
    from webui.extensions.a1111.runtime import RUNTIME
    from webui.extensions.host import parse_flags_with_extensions
    from webui.services import build_services
    from webui.ui.scripts import xyz_plot as xyz_ui

    data = tmp_path / "data"
    install_model(data, tiny_models["sd1"])
    (data / "extensions" / "xyz-test" / "scripts").mkdir(parents=True)
    (data / "extensions" / "xyz-test" / "scripts" / "axes.py").write_text(EXTENSION, encoding="utf-8")
    bound = RUNTIME.services, RUNTIME.host
    flags, host = parse_flags_with_extensions(["--data-dir", str(data)])
    services = build_services(flags, host)
    try:
        assert not services.extension_problems.all(), services.extension_problems.all()
        offered = xyz_ui.axis_labels("txt2img", services)
        assert offered[-6:] == ["[Test] Steps", "[Test] ENSD", "[Test] Tag", "[Test] Even", "Eta noise seed delta",
                                "Distilled CFG Scale"]
        assert "[Test] Tag" not in xyz_ui.axis_labels("img2img", services)  # AxisOptionTxt2Img
        assert xyz_ui.axis_choices("txt2img", services, "[Test] Tag") == ["alpha", "beta"]
        first = A1111_TXT2IMG_AXES + CONTROLNET_AXES  # appended after A1111's and ControlNet's, as in A1111
        result = plot(services, xyz_args((first, "2,3"), (first + 2, ["alpha", "beta"]), include_lone_images=True))
        texts = [parse_infotext(text) for text in result.infotexts[1:]]
        assert [(t["Steps"], t["Test tag"]) for t in texts] == [("2", "alpha"), ("3", "alpha"), ("2", "beta"),
                                                                ("3", "beta")]
        assert max_pixel_difference(result.images[2], alone(services, steps=3).images[0]) == 0
        # the server's axes applied after an extension's, and Vary seeds, reach the cells (A1111 applies X, Y, Z and
        # the seed shift to one p)
        later = plot(services, xyz_args((first + 2, ["alpha", "beta"]), ("Steps", "2,3"), vary_seeds_x=True,
                                        include_lone_images=True))
        texts = [parse_infotext(text) for text in later.infotexts[1:]]
        assert [(t["Test tag"], t["Steps"], t["Seed"]) for t in texts] == \
            [("alpha", "2", "5"), ("beta", "2", "6"), ("alpha", "3", "5"), ("beta", "3", "6")]
        assert later.seeds == [5, 6, 5, 6]
        assert max_pixel_difference(later.images[4], alone(services, steps=3, seed=6).images[0]) == 0
        # two extension axes: the second sees what the first set on the cell's p
        both = plot(services, xyz_args((first + 2, ["alpha"]), (first, "2"), include_lone_images=True))
        assert (parse_infotext(both.infotexts[1])["Test tag"], parse_infotext(both.infotexts[1])["Steps"]) == \
            ("alpha", "2")
        ensd = plot(services, xyz_args(("[Test] ENSD", "0, 31337"), include_lone_images=True), sampler_name="Euler a")
        assert "ENSD" not in parse_infotext(ensd.infotexts[1]) and parse_infotext(ensd.infotexts[2])["ENSD"] == "31337"
        assert max_pixel_difference(ensd.images[1], ensd.images[2]) > 0
        with pytest.raises(RequestError, match="3 is odd"):
            services.generate(GenerationRequest(**BASE, script_name=TITLE,
                                                script_run_args=xyz_args(("[Test] Even", "2, 3"))))
    finally:
        services.stop()
        RUNTIME.bind(*bound)


# --- the UI --------------------------------------------------------------------------------------------------------
def call_event(blocks, trigger, values_by_elem_id: dict, event: str = "click"):
    fn = next(fn for fn in blocks.fns.values() if any(t[0] == trigger._id and t[1] == event for t in fn.targets))
    args = [values_by_elem_id.get(getattr(c, "elem_id", None), c.value) for c in fn.inputs]
    result = fn.fn(*args)
    return list(result) if hasattr(result, "__next__") else result


def test_ui_generates_the_grid_and_fills_values(services):
    from webui.ui import generation
    from webui.ui.blocks import build_ui

    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    assert "X/Y/Z plot" in by_id["txt2img_script_list"].choices[-1]
    p = "script_txt2img_xyz_plot"
    for name in ("x_type", "x_values", "y_type", "y_values", "z_type", "z_values", "draw_legend",
                 "include_lone_images", "include_sub_grids", "no_fixed_seeds", "vary_seeds_x", "vary_seeds_y",
                 "vary_seeds_z", "margin_size", "csv_mode"):
        assert f"{p}_{name}" in by_id and f"script_img2img_xyz_plot_{name}" in by_id
    assert by_id[f"{p}_x_type"].value == "Seed" and by_id[f"{p}_draw_legend"].value is True
    given = {"txt2img_prompt": "a red fox", "txt2img_neg_prompt": "blurry", "txt2img_steps": 3, "txt2img_width": 64,
             "txt2img_height": 64, "txt2img_seed": 5, "txt2img_sampling": "Euler", "txt2img_script_list": TITLE,
             f"{p}_x_type": "Steps", f"{p}_x_values": "2,3"}
    outputs = call_event(blocks, by_id["txt2img_generate"], given)
    gallery = dict(zip(generation.OUTPUTS, outputs[-1]))["gallery"]
    assert len(gallery) == 1 and gallery[0].size[0] == 128 and gallery[0].size[1] > 64
    assert "X Type: Steps" in gallery[0].info["parameters"]
    cell = alone(services, steps=3).images[0]
    assert max_pixel_difference(gallery[0].convert("RGB").crop((64, gallery[0].height - 64, 128,
                                                               gallery[0].height)), cell) == 0
    state = dict(zip(generation.OUTPUTS, outputs[-1]))["state"]
    assert generation.reuse_seed(state) == 5  # ♻️ on the grid: its first cell's seed
    # a random seed, a Z axis of seeds and sub grids: ♻️ on each grid gives the seed of the first cell it shows
    z_given = {**given, "txt2img_seed": -1, f"{p}_z_type": "Seed", f"{p}_z_values": "11, 22",
               f"{p}_include_sub_grids": True}
    last = dict(zip(generation.OUTPUTS, call_event(blocks, by_id["txt2img_generate"], z_given)[-1]))
    assert len(last["gallery"]) == 3 and last["state"]["first"] == 3
    for selected, seed in ((0, 11), (1, 11), (2, 22)):
        state, _ = generation.select_image(last["state"], selected)
        assert generation.reuse_seed(state) == seed
        assert f"Seed: {seed}," in last["gallery"][selected].info["parameters"]
    fixed = dict(zip(generation.OUTPUTS, call_event(blocks, by_id["txt2img_generate"], {**given,
                                                                                        "txt2img_seed": -1})[-1]))
    drawn = parse_infotext(fixed["gallery"][0].info["parameters"])["Seed"]  # -1 made a real seed for every cell
    assert generation.reuse_seed(fixed["state"]) == int(drawn) != -1
    # choosing an axis with choices shows its dropdown (the typed values carried over) and 📒
    button, text, chosen = call_event(blocks, by_id[f"{p}_x_type"], {f"{p}_x_type": "Sampler",
                                                                     f"{p}_x_values": "Euler, Heun, Bogus"}, "change")
    assert button.visible and not text.visible and chosen.visible
    assert chosen.value == ["Euler", "Heun"]
    # 📒 fills every sampler (this tab's buttons: A1111 gives both tabs the same elem_id)
    fill = next(fn for fn in blocks.fns.values() if fn.inputs and getattr(fn.inputs[0], "elem_id", "") ==
                f"{p}_x_type" and any(getattr(blocks.blocks.get(t[0]), "elem_id", None) ==
                                      "xyz_grid_fill_x_tool_button" for t in fn.targets))
    names = [sampler["name"] for sampler in sampler_listing()]
    _, filled = fill.fn("Sampler", False)
    assert filled.value == names
    written, _ = fill.fn("Sampler", True)
    out = io.StringIO()
    csv.writer(out).writerow(names)
    assert written.value == out.getvalue().strip()
    # ⇅ X/Y swaps the two axes
    swap = next(blocks.blocks[t[0]] for fn in blocks.fns.values() for t in fn.targets  # .then() has no target
                if getattr(blocks.blocks.get(t[0]), "elem_id", None) == "xy_grid_swap_axes_button"
                and fn.inputs[0].elem_id == f"{p}_x_type")
    swapped = call_event(blocks, swap, {f"{p}_x_type": "Steps", f"{p}_x_values": "2,3", f"{p}_y_type": "CFG Scale",
                                        f"{p}_y_values": "5"})
    assert swapped == ("CFG Scale", "5", [], "Steps", "2,3", [])
