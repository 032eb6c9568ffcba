"""Extensions end to end: installed from local git repositories through the manager the Extensions tab uses,
loaded at start-up, hooking real generations on a tiny checkpoint."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app import create_app
from tests.conftest import assert_same_picture, install_model
from tests.extension_repos import make_extension_repo
from tests.extension_sources import BROKEN_HOOK, CALLBACKS, NESTED, FAILING_INSTALL, OWN_API, ROUTE_AND_FLAG, SELECTABLE, WILDCARDS
from webui.core.request import GenerationRequest
from webui.engine import scripts as builtin_scripts
from webui.extensions.host import parse_flags_with_extensions
from webui.extensions.manager import ExtensionAccessError, ExtensionInstallError
from webui.outputs.infotext import parse_infotext
from webui.services import build_services
from webui.settings.flags import parse_flags


@pytest.fixture
def data_dir(tmp_path, tiny_models):
    data = tmp_path / "data"
    install_model(data, tiny_models["sd1"])
    return data


@pytest.fixture
def started(data_dir):
    """started(*extra_flags) -> services over data_dir, stopped at the end (a "restart" is another call)."""
    made = []

    def start(*extra: str):
        flags, host = parse_flags_with_extensions(["--data-dir", str(data_dir), *extra])
        services = build_services(flags, host)
        made.append(services)
        return services

    yield start
    for services in made:
        services.stop()
    from webui.extensions.a1111.runtime import RUNTIME
    RUNTIME.bind(None, None)


def install(services, tmp_path, name: str, files: dict[str, str]) -> str:
    repo = make_extension_repo(tmp_path / "repos", name, files)
    return services.extensions.install(str(repo)).name


def request(**fields) -> GenerationRequest:
    base = dict(prompt="a __color__ fox", negative_prompt="", sampler_name="Euler", steps=2, width=64, height=64,
                seed=11, save_images=False, do_not_save_grid=True)  # the batch grid: tests/test_grids.py
    base.update(fields)
    return GenerationRequest(**base)


def run(services, req: GenerationRequest):
    job = services.generate(req)
    assert job.wait(120)
    assert job.error is None, job.error
    return job.result


def test_a1111_wildcards_extension_rewrites_prompts_and_infotext(started, tmp_path):
    services = started()
    assert install(services, tmp_path, "sd-test-wildcards", WILDCARDS) == "sd-test-wildcards"
    services.stop()
    services = started()  # "Apply and restart UI"
    assert not services.extension_problems.all(), services.extension_problems.all()
    result = run(services, request(batch_size=2, n_iter=2))
    assert result.prompts == ["a red fox", "a green fox", "a blue fox", "a red fox"]
    for index, text in enumerate(result.infotexts):
        params = parse_infotext(text)
        assert params["Prompt"] == result.prompts[index]
        assert params["Wildcard prompt"] == "a __color__ fox"
        assert params["Wildcards dir"] == "sd-test-wildcards"  # scripts.basedir() while importing
        assert params["Seed"] == str(11 + index)
    # the image of "a green fox" is what the plain engine makes for that prompt and seed (alone vs image 1 of a
    # batch of 2: float summation may differ, so within the parity tolerance)
    plain = services.engine.run(request(prompt="a green fox", seed=12))
    assert_same_picture(plain.images[0], result.images[1])


def test_wildcards_off_through_api_alwayson_scripts(started, tmp_path):
    services = started()
    install(services, tmp_path, "sd-test-wildcards", WILDCARDS)
    services.stop()
    app, services = create_app(parse_flags(["--data-dir", str(services.paths.data_dir), "--nowebui"]),
                               started())
    with TestClient(app) as client:
        off = client.post("/sdapi/v1/txt2img", json={
            "prompt": "a __color__ fox", "steps": 2, "width": 64, "height": 64, "seed": 3,
            "alwayson_scripts": {"TEST WILDCARDS": {"args": [False]}}})
        assert off.status_code == 200, off.text
        assert json.loads(off.json()["info"])["all_prompts"] == ["a __color__ fox"]
        on = client.post("/sdapi/v1/txt2img", json={"prompt": "a __color__ fox", "steps": 2, "width": 64,
                                                      "height": 64, "seed": 3})  # defaults: the checkbox's True
        info = json.loads(on.json()["info"])
        assert info["all_prompts"] == ["a red fox"]
        assert info["extra_generation_params"]["Wildcard prompt"] == "a __color__ fox"
        unknown = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                                           "alwayson_scripts": {"no such script": {"args": []}}})
        assert unknown.status_code == 422
        assert "no such script" in unknown.json()["detail"]
        assert client.get("/sdapi/v1/scripts").json()["txt2img"] == builtin_scripts.titles("txt2img")  # A1111's own
        listed = client.get("/sdapi/v1/extensions").json()
        assert [e["name"] for e in listed] == ["sd-test-wildcards"] and listed[0]["enabled"]


def test_our_api_extension_section_setting_route_and_image_hook(started, tmp_path):
    services = started()
    install(services, tmp_path, "shout", OWN_API)
    services.stop()
    app, services = create_app(parse_flags(["--data-dir", str(services.paths.data_dir), "--nowebui"]), started())
    assert services.options.get("shout_suffix") == "loudly"
    quiet = run(services, request(prompt="a fox"))
    assert quiet.prompts == ["a fox"] and "Shout" not in parse_infotext(quiet.infotexts[0])
    loud = run(services, request(prompt="a fox", script_args={"shout": [True]}))
    assert loud.prompts == ["a fox, loudly"]
    assert parse_infotext(loud.infotexts[0])["Shout"] == "loudly"
    assert loud.images[0].getpixel((0, 0)) == (255, 0, 0)
    with TestClient(app) as client:
        client.post("/sdapi/v1/options", json={"shout_suffix": "at once"})
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "steps": 2, "width": 64, "height": 64,
                                                         "alwayson_scripts": {"Shout": {"args": [True]}}})
        assert json.loads(answer.json()["info"])["all_prompts"] == ["a fox, at once"]
        assert client.get("/shout/model").json() == {"model": "tiny-sd1.safetensors", "extension": "shout"}


def test_a_hook_that_raises_is_reported_and_generation_goes_on(started, tmp_path):
    services = started()
    install(services, tmp_path, "broken-ext", BROKEN_HOOK)
    services.stop()
    services = started()
    result = run(services, request(prompt="a fox"))
    assert len(result.images) == 1
    assert parse_infotext(result.infotexts[0])["Broken survived"] == "yes"  # its other hook still ran
    assert any("broken-ext" in w and "process" in w for w in result.warnings)
    problems = services.extension_problems.for_extension("broken-ext")
    assert problems and "broke on purpose" in problems[0].message and "Traceback" in problems[0].traceback


def test_failing_install_leaves_nothing_and_says_why(started, tmp_path):
    services = started()
    with pytest.raises(ExtensionInstallError) as failure:
        install(services, tmp_path, "bad-install", FAILING_INSTALL)
    assert "pip could not install foo" in str(failure.value)
    assert not (services.paths.extensions / "bad-install").exists()
    assert [p.name for p in services.paths.extensions.iterdir()] == []


def test_install_refused_when_listening_publicly(started, tmp_path):
    services = started("--listen")
    with pytest.raises(ExtensionAccessError, match="--enable-insecure-extension-access"):
        install(services, tmp_path, "shout", OWN_API)
    services = started("--listen", "--enable-insecure-extension-access")
    assert install(services, tmp_path / "again", "shout", OWN_API) == "shout"


def test_preload_flag_and_app_started_route(started, tmp_path, data_dir):
    services = started()
    install(services, tmp_path, "route-ext", ROUTE_AND_FLAG)
    services.stop()
    flags, host = parse_flags_with_extensions(["--data-dir", str(data_dir), "--nowebui", "--route-greeting", "hi"])
    assert flags.route_greeting == "hi"
    app, services = create_app(flags, build_services(flags, host))
    try:
        with TestClient(app) as client:
            assert client.get("/route-ext/greet").json() == {"greeting": "hi", "ui": False}
    finally:
        services.stop()


def test_selectable_script_runs_nested_process_images(started, tmp_path):
    services = started()
    install(services, tmp_path, "twice", SELECTABLE)
    services.stop()
    app, services = create_app(parse_flags(["--data-dir", str(services.paths.data_dir), "--nowebui"]), started())
    with TestClient(app) as client:
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "steps": 2, "width": 64, "height": 64,
                                                         "seed": 40, "script_name": "run twice",
                                                         "script_args": [7]})
        assert answer.status_code == 200, answer.text
        info = json.loads(answer.json()["info"])
        assert info["all_seeds"] == [40, 47]
        assert [parse_infotext(t)["Seed"] for t in info["infotexts"]] == ["40", "47"]
        assert len(answer.json()["images"]) == 2
        assert client.get("/sdapi/v1/scripts").json()["txt2img"] == builtin_scripts.titles("txt2img") + ["Run twice"]
        missing = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "script_name": "nope"})
        assert missing.status_code == 422 and "nope" in missing.json()["detail"]


def test_disabled_extension_is_not_loaded(started, tmp_path):
    services = started()
    install(services, tmp_path, "sd-test-wildcards", WILDCARDS)
    services.options.update({"disabled_extensions": ["sd-test-wildcards"]})
    services.stop()
    services = started()
    assert services.extension_host.runners["txt2img"].alwayson_scripts == []
    assert run(services, request()).prompts == ["a __color__ fox"]


def test_denoiser_model_loaded_and_infotext_pasted_callbacks(started, tmp_path):
    from webui.ui.blocks import _sender
    services = started()
    install(services, tmp_path, "callbacks-ext", CALLBACKS)
    services.stop()
    services = started()
    calls = services.extension_host.get("callbacks-ext").modules[0].CALLS
    result = run(services, request(prompt="a fox", batch_size=2, steps=3))
    assert calls["denoiser"] == 3 and calls["total"] == 3  # Euler: one evaluation per step
    assert calls["cond_rows"] == 2  # the conditional rows of a batch of 2
    assert calls["loaded"] == [services.models.current_title()]
    values = _sender("txt2img", services)(result.infotexts[0], "Euler", "Automatic")
    assert values[2] == 9  # Steps, as the callback amended it


def test_hook_settings_and_nested_process_images_inside_a_normal_job(started, tmp_path):
    services = started()
    install(services, tmp_path, "nested", NESTED)
    services.stop()
    services = started()
    result = run(services, request(prompt="a fox", steps=2, cfg_scale=7))  # would hang if it went to the queue
    params = parse_infotext(result.infotexts[0])
    assert (params["Steps"], params["CFG scale"]) == ("3", "5")  # set by the script in process()
    assert (params["Inner seed"], params["Inner images"]) == ("1", "1")
    assert not services.extension_problems.all()


# An A1111 script whose postprocess rearranges the finished pictures (the batch grid is already in front): drops the
# grid, or puts a cover picture before it, or claims more grids than there are pictures (as MODE says).
REARRANGE = {
    "scripts/rearrange.py": '''
from PIL import Image

import modules.scripts as scripts

MODE = ""


class Rearrange(scripts.Script):
    def title(self):
        return "Rearrange"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def postprocess(self, p, processed, *args):
        if MODE == "drop":
            first = processed.index_of_first_image
            del processed.images[:first]
            del processed.infotexts[:first]
            processed.index_of_first_image = 0
        elif MODE == "cover":
            processed.images.insert(0, Image.new("RGB", (64, 64), (0, 0, 255)))
            processed.infotexts.insert(0, "cover")
            processed.index_of_first_image += 1
        elif MODE == "claim":
            processed.index_of_first_image = 99
''',
}


def test_postprocess_moving_the_grid_moves_index_of_first_image(started, tmp_path):
    services = started()
    install(services, tmp_path, "rearrange", REARRANGE)
    services.stop()
    services = started()
    module = services.extension_host.get("rearrange").modules[0]
    plain = run(services, request(prompt="a fox", batch_size=2))  # no grid: the two pictures alone
    assert plain.index_of_first_image == 0 and len(plain.images) == 2

    def pictures(result):
        return result.images[result.index_of_first_image:]

    module.MODE = "drop"
    dropped = run(services, request(prompt="a fox", batch_size=2, do_not_save_grid=False))
    assert len(dropped.images) == 2 and dropped.index_of_first_image == 0
    module.MODE = "cover"
    covered = run(services, request(prompt="a fox", batch_size=2, do_not_save_grid=False))
    assert len(covered.images) == 4 and covered.index_of_first_image == 2
    assert covered.images[0].getpixel((0, 0)) == (0, 0, 255) and covered.infotexts[0] == "cover"
    assert covered.images[1].size == (128, 64)  # the batch grid, after the cover
    for result in (dropped, covered):
        assert len(pictures(result)) == 2 and len(result.seeds) == 2
        for made, reference in zip(pictures(result), plain.images):
            assert made.size == (64, 64)
            assert_same_picture(made, reference)
    module.MODE = "claim"
    claimed = run(services, request(prompt="a fox", batch_size=2, do_not_save_grid=False))
    assert len(claimed.images) == 3 and claimed.index_of_first_image == 3  # no more than there are pictures


# An A1111 extension that marks the infotext of every picture about to be saved and records each one saved.
SAVE_CALLBACKS = {
    "scripts/saves.py": '''
from modules import script_callbacks

SAVED = []


def before(params):
    params.pnginfo["parameters"] = params.pnginfo["parameters"] + ", Marked: yes"


def saved(params):
    SAVED.append((params.filename, params.image.size, params.p.prompt, params.pnginfo["parameters"]))


script_callbacks.on_before_image_saved(before)
script_callbacks.on_image_saved(saved)
''',
}


def test_sd_upscale_pictures_go_through_the_save_callbacks(started, tmp_path):
    from PIL import Image
    from webui.outputs.save import read_infotext
    services = started()
    install(services, tmp_path, "saves", SAVE_CALLBACKS)
    services.stop()
    services = started()
    recorded = services.extension_host.get("saves").modules[0].SAVED
    init = Image.new("RGB", (80, 64), (200, 120, 40))
    result = run(services, request(prompt="a fox", mode="img2img", init_images=[init], denoising_strength=0.3,
                                   save_images=True, script_name="SD upscale", script_run_args=[None, 0, "None", 1]))
    assert len(result.images) == 1 and result.images[0].size == (80, 64)  # two 64x64 tiles, one saved picture
    assert len(result.saved_paths) == 1 and result.saved_paths[0].endswith(".png")
    with Image.open(result.saved_paths[0]) as saved:
        text = read_infotext(saved)
    assert text == result.infotexts[0] + ", Marked: yes"  # before_image_saved changed what was written
    assert parse_infotext(text)["SD upscale upscaler"] == "None"
    assert recorded == [(result.saved_paths[0], (80, 64), "a fox", text)]  # image_saved saw the file, once
