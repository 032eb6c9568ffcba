"""The peripheral modules of the A1111 compatibility package (`modules.shared`, `script_callbacks`, `images`,
`ui_components`, `devices`, `paths`, `infotext_utils`, `errors`) and the top-level `launch`, against a real
server's services."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import types

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from webui.extensions.a1111 import COMPAT_PATH
from webui.extensions.a1111.runtime import RUNTIME
from webui.extensions.callbacks import EVENTS, CallbackRegistry
from webui.extensions.problems import ProblemLog
from webui.outputs.save import read_infotext
from webui.settings.options import OptionError
from webui.settings.paths import PROJECT_DIR

A1111_INFOTEXT = (
    "masterpiece, a fox in the snow, <lora:goodhands:0.8>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 2899092436, Size: 512x768, "
    "Model hash: eed0bdfc49, Model: epicPhotonism_v10, Lora hashes: \"goodhands: e7911d734eef\", Version: v1.9.2"
)


@pytest.fixture
def bound(make_services, compat_path):
    """A running server's services with a small extension host, bound where the shim looks."""
    services = make_services("sd1")
    problems = ProblemLog()
    host = types.SimpleNamespace(callbacks=CallbackRegistry(problems), problems=problems)
    RUNTIME.bind(services, host)
    yield services, host
    RUNTIME.bind(None, None)


def stored_config(services) -> dict:
    return json.loads(services.paths.config_file.read_text(encoding="utf-8"))


# --- shared.opts ----------------------------------------------------------------------------------------------

def test_opts_reads_writes_and_persists(bound):
    services, _ = bound
    from modules import shared
    opts = shared.opts
    assert opts.samples_format == "png" and opts.CLIP_stop_at_last_layers == 1
    opts.samples_format = "jpg"
    assert opts.samples_format == "jpg" and services.options.get("samples_format") == "jpg"
    assert stored_config(services)["samples_format"] == "jpg"
    with pytest.raises(OptionError, match="samples_format"):
        opts.samples_format = "gif"
    with pytest.raises(AttributeError, match="no_such_option"):
        opts.no_such_option  # noqa: B018
    assert getattr(opts, "no_such_option", "fallback") == "fallback" and not hasattr(opts, "no_such_option")

    assert opts.data.get("samples_format") == "jpg" and "samples_format" in opts.data
    assert opts.data["CLIP_stop_at_last_layers"] == 1 and opts.data.get("missing", 7) == 7
    opts.data["comma_padding_backtrack"] = 5  # in memory only, as A1111's opts.data
    assert opts.comma_padding_backtrack == 5 and stored_config(services)["comma_padding_backtrack"] == 20
    opts.save()
    assert stored_config(services)["comma_padding_backtrack"] == 5

    assert opts.set("samples_save", False) is True and stored_config(services)["samples_save"] is False
    assert opts.set("samples_save", False) is False  # unchanged
    assert opts.set("samples_save", "not a bool") is False and opts.samples_save is False
    assert opts.get_default("samples_format") == "png" and opts.get_default("no_such_option") is None
    assert opts.sd_model_checkpoint == ""  # nothing loaded yet: the option's value


def test_add_option_with_option_info(bound):
    services, _ = bound
    from modules import shared
    from modules.options import OptionInfo as OptionInfoFromOptions
    assert shared.OptionInfo is OptionInfoFromOptions
    services.options.update({"myext_mode": "slow"})  # stored from an earlier run
    info = shared.OptionInfo(0.5, "Strength of my effect", gr.Slider,
                             {"minimum": 0.0, "maximum": 1.0, "step": 0.05}).info("how strong").needs_restart()
    section = shared.options_section(("myext", "My extension"), {
        "myext_strength": info,
        "myext_mode": shared.OptionInfo("fast", "Mode", gr.Radio, {"choices": ["fast", "slow"]}),
        "myext_tags": shared.OptionInfo(["a"], "Tags", gr.Dropdown, {"choices": ["a", "b"], "multiselect": True}),
    })
    for key, option_info in section.items():
        shared.opts.add_option(key, option_info)

    spec = services.options.specs["myext_strength"]
    assert (spec.kind, spec.minimum, spec.maximum, spec.label) == (float, 0.0, 1.0, "Strength of my effect")
    assert spec.section == ("myext", "My extension") and spec.info == "how strong" and spec.restart is True
    assert spec.component is gr.Slider and "(requires restart)" in info.comment_after
    assert services.options.specs["myext_mode"].choices == ("fast", "slow")
    assert services.options.specs["myext_tags"].kind is list and services.options.specs["myext_tags"].choices == (
        "a", "b")

    assert shared.opts.myext_strength == 0.5 and shared.opts.get_default("myext_strength") == 0.5
    assert shared.opts.myext_mode == "slow"  # the stored value survives the declaration
    shared.opts.myext_strength = 0.75
    assert stored_config(services)["myext_strength"] == 0.75
    with pytest.raises(OptionError, match="at most 1.0"):
        shared.opts.myext_strength = 2.0
    with pytest.raises(OptionError, match="one of fast, slow"):
        shared.opts.myext_mode = "medium"
    shared.opts.myext_tags = ["b", "a"]
    with pytest.raises(OptionError, match="got 'c'"):
        shared.opts.myext_tags = ["a", "c"]
    assert shared.opts.data_labels["myext_strength"] is info
    assert shared.opts.data_labels["samples_format"].default == "png"


def test_onchange_listeners(bound):
    services, _ = bound
    from modules import shared
    calls = []
    shared.opts.onchange("samples_format", lambda: calls.append(shared.opts.samples_format))
    assert calls == ["png"]  # called once at registration
    shared.opts.samples_format = "webp"
    assert calls == ["png", "webp"]
    shared.opts.onchange("randn_source", lambda: calls.append("rng"), call=False)
    assert calls == ["png", "webp"]
    services.options.update({"randn_source": "GPU"})
    assert calls[-1] == "rng"

    declared = []
    shared.opts.add_option("myext_flag", shared.OptionInfo(False, "Flag", onchange=lambda: declared.append(1)))
    shared.opts.myext_flag = True
    assert declared == [1]


# --- shared.cmd_opts, paths, devices ---------------------------------------------------------------------------

def test_cmd_opts_falls_back_to_a1111_defaults(bound):
    services, _ = bound
    from modules import shared
    cmd_opts = shared.cmd_opts
    assert cmd_opts.no_half is False and cmd_opts.port == 7860 and cmd_opts.listen is False  # ours
    assert cmd_opts.medvram_sdxl is False and cmd_opts.disable_extra_extensions is False  # A1111's
    assert cmd_opts.use_cpu == [] and cmd_opts.server_name is None and cmd_opts.timeout_keep_alive == 30
    assert cmd_opts.data_dir == str(services.paths.data_dir)
    assert cmd_opts.lora_dir == str(services.paths.lora) and cmd_opts.ckpt_dir == str(services.paths.checkpoints)
    assert cmd_opts.embeddings_dir == str(services.paths.embeddings)
    assert cmd_opts.hypernetwork_dir == os.path.join(str(services.paths.data_dir), "models", "hypernetworks")
    assert cmd_opts.ui_settings_file == str(services.paths.config_file)
    with pytest.raises(AttributeError, match="no_such_flag"):
        cmd_opts.no_such_flag  # noqa: B018
    assert getattr(cmd_opts, "no_such_flag", 3) == 3
    cmd_opts.hide_ui_dir_config = True
    assert services.flags.hide_ui_dir_config is True and shared.hide_dirs == {"visible": False}
    assert [u.name for u in shared.sd_upscalers] == ["None", "Lanczos", "Nearest"]  # ours (no model files here)


def test_paths_follow_the_server(bound):
    services, _ = bound
    from modules import paths, paths_internal, shared
    data = str(services.paths.data_dir)
    assert paths.data_path == data == shared.data_path == paths_internal.data_path
    assert paths.models_path == os.path.join(data, "models") == shared.models_path
    assert paths.extensions_dir == str(services.paths.extensions)
    assert paths.script_path == str(PROJECT_DIR) == shared.script_path
    assert paths.extensions_builtin_dir == str(PROJECT_DIR / "extensions-builtin")
    RUNTIME.bind(None, None)
    assert paths.data_path == str(PROJECT_DIR) and paths.models_path == str(PROJECT_DIR / "models")
    assert shared.sd_model is None and shared.state.interrupted is False
    with pytest.raises(RuntimeError, match="not running"):
        shared.opts.samples_format  # noqa: B018


def test_devices_follow_the_policy(bound):
    services, _ = bound
    from modules import devices, shared
    assert devices.device == services.policy.device == shared.device == devices.get_device_for("interrogate")
    assert devices.dtype == services.policy.dtype and devices.dtype_vae == services.policy.vae_dtype
    assert devices.cpu == torch.device("cpu") and devices.has_mps() is False
    devices.torch_gc()
    a = torch.ones(2, 2, device=devices.device, dtype=torch.float32)
    with devices.autocast():  # the test server runs on the CPU in float32: no autocast
        assert (a @ a).dtype == torch.float32
    with devices.autocast(disable=True):
        assert (a @ a).dtype == torch.float32


# --- shared.state ----------------------------------------------------------------------------------------------

def test_state_reflects_and_stops_the_running_job(bound):
    services, _ = bound
    from modules import shared
    started, seen = threading.Event(), {}

    def slow_job(job):
        job.control.report(job_no=1, job_count=4, sampling_step=3, sampling_steps=20)
        started.set()
        for _ in range(500):
            if job.control.interrupted:
                seen["interrupted"] = True
                return "stopped"
            threading.Event().wait(0.01)
        return "ran out"

    assert shared.state.interrupted is False and shared.state.job_count == 0  # idle
    services.queue.register("slow", slow_job)
    job = services.queue.submit("slow", None)
    assert started.wait(10)
    state = shared.state
    assert (state.job_no, state.job_count, state.sampling_step, state.sampling_steps) == (1, 4, 3, 20)
    assert state.job == "slow" and state.interrupted is False and state.skipped is False
    assert state.dict()["sampling_steps"] == 20 and len(state.job_timestamp) == 14
    state.job_count = 7
    state.textinfo = "upscaling"
    state.current_image = "kept"
    assert job.control.progress.job_count == 7 and job.control.progress.textinfo == "upscaling"
    assert state.current_image == "kept"
    state.skip()
    assert state.skipped is True and job.control.skip_requested
    state.interrupt()
    assert job.wait(10) and job.result == "stopped" and seen == {"interrupted": True}
    assert shared.state.interrupted is False  # nothing runs any more
    with pytest.raises(AttributeError):
        shared.state.no_such_field  # noqa: B018


# --- shared.sd_model -------------------------------------------------------------------------------------------

def test_sd_model_view(bound):
    services, _ = bound
    from modules import shared
    assert shared.sd_model is None
    info, model = services.models.select("tiny-sd1.safetensors")
    view = shared.sd_model
    assert view is shared.sd_model  # the same object while the checkpoint stays loaded
    checkpoint = view.sd_checkpoint_info
    assert checkpoint.title == info.title and checkpoint.filename == str(info.path)
    assert checkpoint.name == "tiny-sd1.safetensors" and checkpoint.model_name == "tiny-sd1"
    assert checkpoint.name_for_extra == "tiny-sd1" and checkpoint.sha256 == info.sha256
    assert checkpoint.shorthash == info.sha256[:10] == view.sd_model_hash
    import hashlib  # A1111's `hash` is its old one: 8 hex digits of the sha256 of 64 KiB at 1 MiB
    assert checkpoint.hash == hashlib.sha256(info.path.read_bytes()[0x100000:0x110000]).hexdigest()[:8]
    assert view.sd_model_checkpoint == str(info.path)
    assert (view.is_sd1, view.is_sd2, view.is_sdxl, view.is_sd3) == (True, False, False, False)
    assert view.unet is model.unet and view.vae is model.vae and view.family == "sd1"
    with pytest.raises(AttributeError, match="read-only"):
        view.unet = None
    assert shared.opts.sd_model_checkpoint == info.title
    assert shared.sd_model_view(info, model) is view


# --- script_callbacks ------------------------------------------------------------------------------------------

def test_callbacks_register_under_the_loading_extension(bound, tmp_path):
    _, host = bound
    from modules import script_callbacks
    registrations = {
        "app_started": script_callbacks.on_app_started, "model_loaded": script_callbacks.on_model_loaded,
        "ui_tabs": script_callbacks.on_ui_tabs, "ui_settings": script_callbacks.on_ui_settings,
        "before_component": script_callbacks.on_before_component,
        "after_component": script_callbacks.on_after_component,
        "before_image_saved": script_callbacks.on_before_image_saved,
        "image_saved": script_callbacks.on_image_saved, "infotext_pasted": script_callbacks.on_infotext_pasted,
        "script_unloaded": script_callbacks.on_script_unloaded, "cfg_denoiser": script_callbacks.on_cfg_denoiser,
        "cfg_denoised": script_callbacks.on_cfg_denoised, "before_ui": script_callbacks.on_before_ui,
    }
    assert set(registrations) == set(EVENTS)

    def callback(*args, **kwargs):
        return "called"

    with RUNTIME.loading("myext", tmp_path):
        for register in registrations.values():
            register(callback, name="my callback")
    for event in EVENTS:
        [registered] = host.callbacks.callbacks(event)
        assert (registered.extension, registered.function) == ("myext", callback)
    assert host.callbacks.call("ui_tabs") == ["called"]

    def other():
        pass

    with RUNTIME.loading("otherext", tmp_path):
        script_callbacks.on_app_started(other)
        script_callbacks.on_ui_tabs(other)
        script_callbacks.remove_callbacks_for_function(other)
    assert [c.function for c in host.callbacks.callbacks("app_started")] == [callback]
    with RUNTIME.loading("myext", tmp_path):
        script_callbacks.remove_current_script_callbacks()
    assert not any(host.callbacks.has(event) for event in EVENTS)

    RUNTIME.bind(None, None)
    with pytest.raises(RuntimeError, match="not running"):
        script_callbacks.on_app_started(callback)


def test_parameter_classes_keep_a1111_fields(compat_path):
    from modules.script_callbacks import AfterCFGCallbackParams, CFGDenoisedParams, CFGDenoiserParams, \
        ImageSaveParams
    params = ImageSaveParams("image", None, "out.png", {"parameters": "text"})
    assert (params.image, params.p, params.filename, params.pnginfo) == ("image", None, "out.png",
                                                                         {"parameters": "text"})
    denoiser = CFGDenoiserParams("x", "cond", 1.5, 2, 20, "tc", "tu")
    assert (denoiser.sigma, denoiser.sampling_step, denoiser.total_sampling_steps, denoiser.denoiser) == (1.5, 2,
                                                                                                         20, None)
    assert CFGDenoisedParams("x", 1, 20, "inner").inner_model == "inner"
    assert AfterCFGCallbackParams("x", 1, 20).total_sampling_steps == 20


# --- images ----------------------------------------------------------------------------------------------------

def test_save_image_writes_infotext_and_calls_callbacks(bound, tmp_path):
    _, host = bound
    from modules import images
    image = Image.new("RGB", (16, 16), (200, 30, 40))
    seen = []

    def before(params):
        seen.append(("before", os.path.basename(params.filename), dict(params.pnginfo)))
        params.pnginfo["parameters"] += ", My extension: on"
        params.pnginfo["myext"] = "extra chunk"

    def after(params):
        seen.append(("after", params.filename))

    host.callbacks.add("before_image_saved", before, "myext")
    host.callbacks.add("image_saved", after, "myext")
    fullfn, txt = images.save_image(image, str(tmp_path / "out"), "", seed=42, prompt="a fox",
                                    extension="png", info=A1111_INFOTEXT)
    assert txt is None and os.path.basename(fullfn) == "00000-42.png"
    assert os.path.dirname(os.path.dirname(fullfn)) == str(tmp_path / "out")  # in a dated folder
    assert seen[0] == ("before", "00000-42.png", {"parameters": A1111_INFOTEXT}) and seen[1] == ("after", fullfn)
    with Image.open(fullfn) as saved:
        assert read_infotext(saved) == A1111_INFOTEXT + ", My extension: on"
        geninfo, items = images.read_info_from_image(saved)
        assert geninfo == A1111_INFOTEXT + ", My extension: on" and items == {"myext": "extra chunk"}
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(image))

    second, _ = images.save_image(image, str(tmp_path / "out"), "", seed=42, info="x")
    assert os.path.basename(second) == "00001-42.png"


def test_save_image_names_and_formats(bound, tmp_path):
    _, host = bound
    from modules import images
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    forced, _ = images.save_image(image, str(tmp_path), "", info="forced text", forced_filename="exact",
                                  extension="jpg")
    assert forced == str(tmp_path / "exact.jpg")
    with Image.open(forced) as saved:
        assert read_infotext(saved) == "forced text"
    flat, _ = images.save_image(image, str(tmp_path), "grid", seed=7, info="t", suffix="-x", save_to_dirs=False)
    assert flat == str(tmp_path / "grid-0000-7-x.png")
    (tmp_path / "flat" / "2031-05-06").mkdir(parents=True)  # a dated folder is not a numbered image
    numbered, _ = images.save_image(image, str(tmp_path / "flat"), "", seed=3, info="t", save_to_dirs=False)
    assert numbered == str(tmp_path / "flat" / "00000-3.png")

    def rename(params):
        params.filename = str(tmp_path / "renamed.webp")

    host.callbacks.add("before_image_saved", rename, "myext")
    renamed, _ = images.save_image(image, str(tmp_path), "", seed=1, info="webp text")
    assert renamed == str(tmp_path / "renamed.webp")
    with Image.open(renamed) as saved:
        assert saved.format == "WEBP" and read_infotext(saved) == "webp text"
    with pytest.raises(ValueError, match="gif"):
        images.save_image(image, str(tmp_path), "", extension="gif")


def test_resize_image_and_grid(compat_path):
    from modules import images
    wide = Image.new("RGB", (20, 10))
    wide.paste((255, 0, 0), (0, 0, 5, 10))
    wide.paste((0, 255, 0), (5, 0, 15, 10))
    wide.paste((0, 0, 255), (15, 0, 20, 10))
    cropped = images.resize_image(1, wide, 10, 10)  # crop and resize: the middle square
    assert np.array_equal(np.asarray(cropped), np.asarray(wide.crop((5, 0, 15, 10))))
    stretched = images.resize_image(0, wide, 10, 10)
    # PIL's own Lanczos resize of the same picture: deterministic integer output
    assert np.array_equal(np.asarray(stretched), np.asarray(wide.resize((10, 10), Image.Resampling.LANCZOS)))
    filled = images.resize_image(2, wide, 20, 20)  # fit, then the edge rows stretched into the bands
    assert filled.size == (20, 20) and filled.getpixel((10, 0)) == (0, 255, 0)

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    grid = images.image_grid([Image.new("RGB", (4, 3), c) for c in colours])
    assert grid.size == (8, 6)
    assert [grid.getpixel(xy) for xy in ((0, 0), (4, 0), (0, 3), (4, 3))] == colours
    row = images.image_grid([Image.new("RGB", (4, 3), c) for c in colours[:3]], rows=1)
    assert row.size == (12, 3) and row.getpixel((8, 0)) == colours[2]


# --- ui_components ---------------------------------------------------------------------------------------------

def inside(component, layout) -> bool:
    """Whether `component` sits (at any depth) in `layout` (a layout object, or a layout class)."""
    parent = component.parent
    while parent is not None:
        if parent is layout or (isinstance(layout, type) and isinstance(parent, layout)):
            return True
        parent = parent.parent
    return False


def test_ui_components_build_in_blocks(compat_path):
    from modules.ui_components import DropdownEditable, DropdownMulti, FormColumn, FormGroup, FormHTML, FormRow, \
        InputAccordion, ToolButton
    with gr.Blocks() as demo:
        with InputAccordion(True, label="My extension", elem_id="myext") as enabled:
            strength = gr.Slider(0, 1, value=0.5, label="Strength")
        with FormRow():
            button = ToolButton("🔄", elem_id="myext_refresh")
        with FormColumn(), FormGroup():
            multi = DropdownMulti(choices=["a", "b"], value=["a"], label="Tags")
            editable = DropdownEditable(choices=["x"], value="x", label="Pick")
            html = FormHTML("<b>hi</b>")
        plain = InputAccordion(False, label="Off by default")
        enabled.change(lambda on, s: s if on else 0, inputs=[enabled, strength], outputs=[strength])

    assert isinstance(enabled, gr.Checkbox) and enabled.value is True and enabled.elem_id == "myext-checkbox"
    assert isinstance(enabled.accordion, gr.Accordion) and enabled.accordion.label == "My extension"
    assert enabled.accordion.open is False
    assert inside(strength, enabled.accordion) and not inside(enabled, enabled.accordion)
    # the checkbox is built just before the accordion (a closed accordion's children are not rendered) and the
    # page script moves it into the accordion's header, which its class names
    assert {"input-accordion-checkbox", "input-accordion-for-myext"} <= set(enabled.elem_classes)
    assert "input-accordion" in enabled.accordion.elem_classes
    assert not inside(button, enabled.accordion)
    assert isinstance(button, gr.Button) and "tool-button" in button.elem_classes
    assert (button.scale, button.min_width) == (0, 40) and isinstance(button.parent, gr.Row)
    assert inside(multi, enabled.accordion) is False and inside(html, gr.Group)
    assert multi.multiselect is True and editable.allow_custom_value is True and isinstance(html, gr.HTML)
    assert plain.value is False and isinstance(plain.checkbox, gr.Checkbox)
    config = demo.get_config_file()
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"myext", "myext-checkbox", "myext_refresh"} <= ids


# --- infotext_utils --------------------------------------------------------------------------------------------

def test_parse_generation_parameters(bound):
    from modules import generation_parameters_copypaste, infotext_utils
    assert generation_parameters_copypaste.parse_generation_parameters is infotext_utils.parse_generation_parameters
    params = infotext_utils.parse_generation_parameters(A1111_INFOTEXT)
    assert params["Prompt"] == "masterpiece, a fox in the snow, <lora:goodhands:0.8>"
    assert params["Negative prompt"] == "blurry, lowres"
    assert (params["Steps"], params["Sampler"], params["Schedule type"], params["CFG scale"]) == (
        "20", "DPM++ 2M", "Karras", "7")
    assert (params["Size-1"], params["Size-2"]) == ("512", "768") and "Size" not in params
    assert params["Lora hashes"] == "goodhands: e7911d734eef" and params["Version"] == "v1.9.2"
    assert params["Clip skip"] == "1" and params["RNG"] == "GPU" and params["Hires resize-1"] == 0
    assert params["Hires sampler"] == "Use same sampler" and params["VAE Decoder"] == "Full"
    skipped = infotext_utils.parse_generation_parameters(A1111_INFOTEXT, skip_fields=["Seed", "Model hash"])
    assert "Seed" not in skipped and "Model hash" not in skipped and skipped["Steps"] == "20"

    assert infotext_utils.quote("plain") == "plain" and infotext_utils.quote("a, b") == '"a, b"'
    for text in ("a: b", "x,y", "line\nbreak", "plain"):
        assert infotext_utils.unquote(infotext_utils.quote(text)) == text
    assert ("Clip skip", "CLIP_stop_at_last_layers") in infotext_utils.infotext_to_setting_name_mapping
    overrides = infotext_utils.create_override_settings_dict(["Clip skip: 2", "Steps: 20", "RNG: CPU"])
    assert overrides == {"CLIP_stop_at_last_layers": 2, "randn_source": "CPU"}


def test_override_settings_include_extension_options(bound):
    from modules import infotext_utils, shared
    shared.opts.add_option("myext_level", shared.OptionInfo(3, "Level", infotext="My level"))
    assert infotext_utils.create_override_settings_dict(["My level: 5"]) == {"myext_level": 5}


# --- errors ----------------------------------------------------------------------------------------------------

def test_errors_are_recorded_under_the_extension(bound, tmp_path):
    _, host = bound
    from modules import errors
    with RUNTIME.loading("myext", tmp_path):
        try:
            raise ValueError("the model file is broken")
        except ValueError as exc:
            errors.report("loading my model", exc_info=True)
            errors.display(exc, "running my hook")
        errors.print_error_explanation("  Install the model first.\n  Then restart.  ")
        errors.run(lambda: 1 / 0, "dividing")
    problems = host.problems.for_extension("myext")
    assert [(p.where, p.message) for p in problems] == [
        ("loading my model", "ValueError: the model file is broken"),
        ("running my hook", "ValueError: the model file is broken"),
        ("explanation", "ExtensionReport: Install the model first.\nThen restart."),
        ("dividing", "ZeroDivisionError: division by zero"),
    ]
    assert "ValueError" in problems[0].traceback


# --- launch ----------------------------------------------------------------------------------------------------

def test_launch_helpers(compat_path):
    import launch
    from modules import launch_utils
    assert launch_utils.is_installed is launch.is_installed and launch.python == sys.executable
    assert launch.is_installed("PIL") and launch.is_installed("Pillow")
    assert not launch.is_installed("no_such_pkg_xyz")
    assert launch.args.port == 7860 and launch.args.skip_install is False
    with pytest.raises(RuntimeError, match="no such option: --no-such-flag-xyz"):
        launch.run_pip("install --no-such-flag-xyz")
    assert launch.run(f'"{sys.executable}" -c "print(6 * 7)"').strip() == "42"
    with pytest.raises(RuntimeError, match="(?s)could not do it.*Error code: 3"):
        launch.run([sys.executable, "-c", "import sys; sys.exit(3)"], errdesc="could not do it")
    assert len(launch.commit_hash()) == 40 or launch.commit_hash() == "<none>"


def test_launch_in_an_install_subprocess():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_DIR), str(COMPAT_PATH)])}
    code = "import launch; print(launch.is_installed('PIL'), launch.is_installed('no_such_pkg_xyz'))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            cwd=str(PROJECT_DIR / "tests"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]
