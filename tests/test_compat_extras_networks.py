"""A1111's Extras operations (`modules.scripts_postprocessing`) and extension network types (`modules.extra_networks`)
from an extension written as the real ones are: one that reproduces stable-diffusion-webui-rembg's Extras script
(its imports, `ui()` returning a dict of controls inside an InputAccordion, `process(pp, **args)` replacing the
image and setting `pp.info`), with a stand-in `rembg` module in the extension's folder, run from the Extras tab's
handler and the API; and a `<mytype:...>` network type registered in `on_before_ui`, as A1111's Lora does."""
from __future__ import annotations

import base64
import io
import json
import sys
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from tests.conftest import install_model, max_pixel_difference
from webui.core.request import GenerationRequest
from webui.extensions.host import parse_flags_with_extensions
from webui.outputs.save import encode_png_base64, read_infotext
from webui.ui import extras_tab

STAND_IN_REMBG = '''
"""A stand-in for the rembg package: alpha = 255 - red (or that mask alone)."""
from PIL import Image
calls = []


def new_session(model):
    return {"model": model}


def remove(image, session=None, only_mask=False, alpha_matting=False, alpha_matting_foreground_threshold=240,
           alpha_matting_background_threshold=10, alpha_matting_erode_size=10):
    calls.append({"model": session["model"], "only_mask": only_mask, "alpha_matting": alpha_matting,
                  "erode": alpha_matting_erode_size})
    rgb = image.convert("RGB")
    mask = rgb.getchannel("R").point(lambda v: 255 - v)
    if only_mask:
        return mask
    rgb.putalpha(mask)
    return rgb
'''

REMBG_LIKE = '''
from modules import scripts_postprocessing, ui_components
import gradio as gr

from modules.ui_components import FormRow
from modules.paths_internal import models_path
import rembg
import os

MODEL_NAMES = ["None", "u2net", "u2netp", "silueta"]


class RemoveBackgroundOperation(scripts_postprocessing.ScriptPostprocessing):
    name = "Rembg"
    order = 20000
    model = None

    def ui(self):
        with ui_components.InputAccordion(False, label="Remove background") as enable:
            with gr.Row():
                model = gr.Dropdown(label="Remove background", choices=MODEL_NAMES, value="None")
                return_mask = gr.Checkbox(label="Return mask", value=False)
                alpha_matting = gr.Checkbox(label="Alpha matting", value=False)
            with gr.Row(visible=False) as matting_row:
                erode = gr.Slider(label="Erode size", minimum=0, maximum=40, step=1, value=10)
                foreground = gr.Slider(label="Foreground threshold", minimum=0, maximum=255, step=1, value=240)
                background = gr.Slider(label="Background threshold", minimum=0, maximum=255, step=1, value=10)
            alpha_matting.change(fn=lambda x: gr.update(visible=x), inputs=[alpha_matting], outputs=[matting_row])
        return {"enable": enable, "model": model, "return_mask": return_mask, "alpha_matting": alpha_matting,
                "alpha_matting_foreground_threshold": foreground, "alpha_matting_background_threshold": background,
                "alpha_matting_erode_size": erode}

    def process(self, pp: scripts_postprocessing.PostprocessedImage, enable, model, return_mask, alpha_matting,
                alpha_matting_foreground_threshold, alpha_matting_background_threshold, alpha_matting_erode_size):
        if not enable or not model or model == "None":
            return
        if "U2NET_HOME" not in os.environ:
            os.environ["U2NET_HOME"] = os.path.join(models_path, "u2net")
        pp.image = rembg.remove(pp.image, session=rembg.new_session(model), only_mask=return_mask,
                                alpha_matting=alpha_matting,
                                alpha_matting_foreground_threshold=alpha_matting_foreground_threshold,
                                alpha_matting_background_threshold=alpha_matting_background_threshold,
                                alpha_matting_erode_size=alpha_matting_erode_size)
        pp.info["Rembg"] = model
'''

# An operation before the upscale (order 500) that notes the size it saw and adds a mirrored copy; and one that
# fails, which must only be reported.
PROBE = '''
from PIL import ImageOps
import gradio as gr
from modules import scripts_postprocessing


class Probe(scripts_postprocessing.ScriptPostprocessing):
    name = "Probe"
    order = 500

    def ui(self):
        return {"mirror": gr.Checkbox(False, label="Add a mirrored copy", elem_id="probe_mirror")}

    def process_firstpass(self, pp, mirror):
        pp.shared.target_width = pp.image.width

    def process(self, pp, mirror):
        pp.info["Probe saw"] = f"{pp.image.width}x{pp.image.height} of {pp.shared.target_width}"
        if mirror:
            pp.extra_images.append(pp.create_copy(ImageOps.mirror(pp.image), nametags=["mirrored"]))


class Broken(scripts_postprocessing.ScriptPostprocessing):
    name = "Broken"
    order = 30000

    def ui(self):
        return {"on": gr.Checkbox(False, label="Break")}

    def process(self, pp, on):
        if on:
            raise RuntimeError("this operation is broken")
'''

MY_NETWORK = '''
from modules import extra_networks, script_callbacks

CALLS = []


class MyNetwork(extra_networks.ExtraNetwork):
    def __init__(self):
        super().__init__("mytype")

    def activate(self, p, params_list):
        CALLS.append(("activate", [(list(x.positional), dict(x.named)) for x in params_list], list(p.prompts)))
        if params_list:
            p.extra_generation_params["MyNet"] = ", ".join(":".join(x.items) for x in params_list)

    def deactivate(self, p):
        CALLS.append(("deactivate",))


def before_ui():
    extra_networks.register_extra_network(MyNetwork())


script_callbacks.on_before_ui(before_ui)
'''

EXTENSION = {"rembg.py": STAND_IN_REMBG, "scripts/postprocessing_rembg.py": REMBG_LIKE,
             "scripts/postprocessing_probe.py": PROBE, "scripts/mynet.py": MY_NETWORK}
SOURCE_INFOTEXT = "a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 24x16"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("compat-extras")
    install_model(data, tiny_models["sd1"])
    for relative, text in EXTENSION.items():
        target = data / "extensions" / "sd-test-rembg" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    (data / "config.json").write_text(json.dumps({"postprocessing_enable_in_main_ui": ["Rembg"]}), encoding="utf-8")
    flags, host = parse_flags_with_extensions(["--data-dir", str(data)])
    from webui.services import build_services
    services = build_services(flags, host)
    app, _ = create_app(flags, services)  # the UI too: on_before_ui registers the network type
    try:
        yield SimpleNamespace(client=TestClient(app), services=services, data=data)
    finally:
        services.stop()
        from webui.extensions.a1111.runtime import RUNTIME
        RUNTIME.bind(None, None)
        sys.modules.pop("rembg", None)


def picture(infotext: str | None = SOURCE_INFOTEXT) -> Image.Image:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8))
    if infotext is not None:
        image = Image.open(io.BytesIO(base64.b64decode(encode_png_base64(image, infotext))))
        image.load()
    return image


def removed(image: Image.Image) -> np.ndarray:
    """The stand-in's result computed here: RGB with alpha 255 - R."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.dstack([rgb, 255 - rgb[..., 0]])


def nearest_2x(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).repeat(2, axis=0).repeat(2, axis=1)


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def test_found_published_and_declared(server):
    import modules.scripts
    host = server.services.extension_host
    assert server.services.extension_problems.for_extension("sd-test-rembg") == []
    runner = modules.scripts.scripts_postproc
    assert runner is host.postprocessing
    assert [s.name for s in runner.scripts_in_preferred_order()] == ["Probe", "Rembg", "Broken"]
    assert [d.script_class.__name__ for d in modules.scripts.postprocessing_scripts_data] == \
        ["Probe", "Broken", "RemoveBackgroundOperation"]
    options = server.services.options
    assert options.get("postprocessing_operation_order") == []
    assert set(options.specs["postprocessing_operation_order"].choices()) == \
        {"Upscale", "GFPGAN", "CodeFormer", "Probe", "Rembg", "Broken"}


def test_tab_lays_out_in_a1111_order_and_its_handler_runs_the_operation(server):
    services = server.services
    with gr.Blocks() as demo:
        tab = extras_tab.build_extras_tab(services)
    assert [s.name for s in tab.scripts] == ["Probe", "Rembg", "Broken"]
    rembg_controls = tab.scripts[1].controls
    assert list(rembg_controls) == ["enable", "model", "return_mask", "alpha_matting",
                                    "alpha_matting_foreground_threshold", "alpha_matting_background_threshold",
                                    "alpha_matting_erode_size"]
    assert tab.script_controls[1:8] == list(rembg_controls.values())
    # the layout: Probe (500) before the Upscale controls (1000), Rembg (20000) after CodeFormer's (3000)
    column = tab.upscaler_1.parent
    while column is not None and not isinstance(column, gr.Column):
        column = column.parent
    def position(block) -> int:  # of the column's child holding `block`
        while block.parent is not column:
            block = block.parent
        return column.children.index(block)

    assert position(tab.scripts[0].group) < position(tab.upscaler_1) < position(tab.codeformer_weight) \
        < position(tab.scripts[1].group) < position(tab.scripts[2].group)

    values = [getattr(c, "value", None) for c in tab.inputs()]
    own = len(values) - len(tab.script_controls)
    base = dict(zip(["source_mode", "image", "files", "input_dir", "output_dir", "show_results", "resize_mode",
                     "upscaling_resize", "width", "height", "crop", "upscaler_1", "upscaler_2", "visibility",
                     "gfpgan_visibility", "codeformer_visibility", "codeformer_weight"], values[:own]))
    base.update(source_mode=extras_tab.SINGLE, image=picture(), upscaling_resize=2, upscaler_1="Nearest",
                upscaler_2="None", visibility=0.0)
    script_values = values[own:]
    script_values[1:3] = [True, "u2net"]  # Rembg: enable, model
    script_values[0] = True  # Probe: add a mirrored copy
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    generate = next(fn.fn for fn in fns if fn.name == "generate")
    updates = list(generate({"job_id": None}, *base.values(), *script_values))
    gallery, html_info = updates[-1][2], updates[-1][3]
    assert len(gallery) == 2
    source = picture()
    expected = removed(Image.fromarray(nearest_2x(source)))
    assert max_pixel_difference(gallery[0], expected) == 0
    mirrored = removed(Image.fromarray(nearest_2x(Image.fromarray(np.asarray(source)[:, ::-1]))))
    assert max_pixel_difference(gallery[1], mirrored) == 0
    assert "Rembg: u2net" in html_info
    saved = sorted(server.services.paths.outputs.rglob("*.png"))
    assert len(saved) == 2
    with Image.open(saved[0]) as first:
        assert max_pixel_difference(first, expected) == 0
        assert read_infotext(first) == SOURCE_INFOTEXT + ", Probe saw: 24x16 of 24, Postprocess upscale by: 2, " \
                                                         "Postprocess upscaler: Nearest, Rembg: u2net"


def api_extras(server, **body):
    response = server.client.post("/sdapi/v1/extra-single-image",
                                  json={"image": encode_png_base64(picture(), SOURCE_INFOTEXT), **body})
    return response


def test_api_takes_the_operations_args_and_keeps_a1111s_order(server):
    response = api_extras(server, upscaler_1="Nearest", upscaling_resize=2,
                          alwayson_scripts={"rembg": {"args": [True, "silueta", True]}})
    assert response.status_code == 200, response.text
    image = decode(response.json()["image"])
    mask = 255 - nearest_2x(picture())[..., 0]  # return_mask: the mask alone, of the upscaled image
    assert max_pixel_difference(image.convert("L"), mask) == 0
    assert read_infotext(image) == SOURCE_INFOTEXT + ", Probe saw: 24x16 of 24, Postprocess upscale by: 2, " \
                                                     "Postprocess upscaler: Nearest, Rembg: silueta"
    rembg = sys.modules["rembg"]
    assert rembg.calls[-1] == {"model": "silueta", "only_mask": True, "alpha_matting": False, "erode": 10}

    # by argument name; the order option puts Rembg before the upscale: the mask of the source, upscaled
    server.services.options.update({"postprocessing_operation_order": ["Rembg", "Upscale"]}, save=False)
    try:
        response = api_extras(server, upscaler_1="Nearest", upscaling_resize=2,
                              alwayson_scripts={"Rembg": {"enable": True, "model": "u2net", "return_mask": True}})
    finally:
        server.services.options.update({"postprocessing_operation_order": []}, save=False)
    image = decode(response.json()["image"])
    source_mask = Image.fromarray(255 - np.asarray(picture())[..., 0])
    assert max_pixel_difference(image.convert("L"), nearest_2x(source_mask)[..., 0]) == 0
    assert read_infotext(image).endswith("Rembg: u2net, Postprocess upscale by: 2, Postprocess upscaler: Nearest, "
                                         "Probe saw: 48x32 of 24")

    left_out = api_extras(server, upscaler_1="Nearest", upscaling_resize=2)  # defaults: Rembg not enabled
    assert decode(left_out.json()["image"]).mode == "RGB"

    batch = server.client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": encode_png_base64(picture(), None), "name": "a.png"}] * 2, "upscaler_1": "None",
        "alwayson_scripts": {"Rembg": {"args": [True, "u2net"]}}})
    assert batch.status_code == 200, batch.text
    for data in batch.json()["images"]:
        assert max_pixel_difference(decode(data), removed(picture())) == 0


def test_api_bad_operation_args_are_422s_and_a_failing_operation_is_reported(server):
    unknown = api_extras(server, alwayson_scripts={"Nope": {"args": []}})
    assert unknown.status_code == 422 and "no postprocessing operation named 'Nope'" in unknown.text
    bad_key = api_extras(server, alwayson_scripts={"Rembg": {"colour": 1}})
    assert bad_key.status_code == 422 and "unknown argument 'colour'" in bad_key.text
    broken = api_extras(server, upscaler_1="Nearest", alwayson_scripts={"Broken": {"on": True}})
    assert broken.status_code == 200, broken.text
    assert max_pixel_difference(decode(broken.json()["image"]), nearest_2x(picture())) == 0
    problems = server.services.extension_problems.for_extension("sd-test-rembg")
    assert any("Broken" in p.where and "this operation is broken" in p.message for p in problems), problems


def test_registered_network_type_is_activated_deactivated_and_cut_from_the_prompt(server):
    services = server.services
    network = sys.modules["webui_extension_sd_test_rembg_mynet"]
    network.CALLS.clear()
    base = dict(negative_prompt="", sampler_name="Euler", steps=2, width=64, height=64, seed=7, save_images=False,
                do_not_save_grid=True, batch_size=1, n_iter=2)
    job = services.generate(GenerationRequest(prompt="a fox <mytype:foo:0.5:te=2> in snow", **base))
    assert job.wait(120) and job.error is None, job.error
    tagged = job.result
    assert network.CALLS == [("activate", [(["foo", "0.5"], {"te": "2"})], ["a fox  in snow"]),
                             ("activate", [(["foo", "0.5"], {"te": "2"})], ["a fox  in snow"]),
                             ("deactivate",)]
    assert not any("mytype" in warning for warning in tagged.warnings), tagged.warnings
    job = services.generate(GenerationRequest(prompt="a fox  in snow", **base))
    assert job.wait(120) and job.error is None
    plain = job.result
    for with_tag, without in zip(tagged.images, plain.images):
        assert max_pixel_difference(with_tag, without) == 0  # the model saw the same prompt
    first_line, _, params = tagged.infotexts[0].partition("\n")
    assert first_line == "a fox <mytype:foo:0.5:te=2> in snow"
    assert 'MyNet: "foo:0.5:te=2"' in params
    # a kind nobody registered keeps the engine's warning
    job = services.generate(GenerationRequest(prompt="a fox <othertype:bar>", **{**base, "n_iter": 1}))
    assert job.wait(120) and any("<othertype:...> networks are not supported" in w for w in job.result.warnings)


def test_operation_enabled_in_main_ui_runs_on_generated_images(server):
    base = dict(prompt="a fox", negative_prompt="", sampler_name="Euler", steps=2, width=64, height=64, seed=9,
                save_images=False, do_not_save_grid=True)
    plain = server.services.generate(GenerationRequest(**base))
    removed_bg = server.services.generate(GenerationRequest(**base, script_args={"rembg": [True, "u2net"]}))
    assert plain.wait(120) and removed_bg.wait(120) and removed_bg.error is None, removed_bg.error
    image = removed_bg.result.images[0]
    assert image.mode == "RGBA" and max_pixel_difference(image, removed(plain.result.images[0])) == 0
    assert "Rembg: u2net" in removed_bg.result.infotexts[0] and "Rembg" not in plain.result.infotexts[0]


def test_modules_extras_run_pnginfo_and_postprocessing_run_extras(server):
    from modules import extras, postprocessing
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a <b> fox\nSteps: 3")
    info.add_text("extras", "Postprocess upscaler: Nearest")
    buffer = io.BytesIO()
    picture(None).save(buffer, format="PNG", pnginfo=info)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        _, geninfo, html_text = extras.run_pnginfo(image)
    assert geninfo == "a <b> fox\nSteps: 3"
    assert html_text == ("<div>\n<p><b>parameters</b></p>\n<p>a &lt;b&gt; fox<br>\nSteps: 3</p>\n</div>\n"
                         "<div>\n<p><b>extras</b></p>\n<p>Postprocess upscaler: Nearest</p>\n</div>\n")
    assert extras.run_pnginfo(None) == ("", "", "")
    images, html_info, _ = postprocessing.run_extras(0, 0, picture(), None, "", "", True, 0, 0, 0, 2, 512, 512, True,
                                                     "Nearest", "None", 0, False, save_output=False)
    assert len(images) == 1 and max_pixel_difference(images[0], nearest_2x(picture())) == 0
    assert "Postprocess upscaler: Nearest" in html_info
