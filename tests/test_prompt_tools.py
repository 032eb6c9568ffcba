"""The prompt box's tools without a browser: ↙️'s choice of infotext (the prompt's, else the last generation's),
the values it fills (as PNG Info's Send), a dropped picture's infotext, ⇅, the keyedit settings (A1111's keys and
defaults) and the Blocks wiring. The page script's part is in tests/test_e2e_prompt_tools.py."""
from __future__ import annotations

import io
import json

import gradio as gr
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from webui.core.request import GenerationRequest
from webui.settings.options import OPTIONS
from webui.ui import prompt_tools
from webui.ui.blocks import build_ui
from webui.ui.generation_tab import build_tab

INFOTEXT = ("a lighthouse at dusk\nNegative prompt: fog\nSteps: 7, Sampler: Euler a, Schedule type: Karras, "
            "CFG scale: 5.5, Seed: 4242, Size: 192x320, Denoising strength: 0.4, Hires upscale: 1.5, "
            "Hires upscaler: Latent, Variation seed: 77, Variation seed strength: 0.3")


@pytest.fixture
def warnings(monkeypatch) -> list[str]:
    shown: list[str] = []
    monkeypatch.setattr(prompt_tools.notices, "warn", shown.append)
    return shown


@pytest.fixture
def services(make_services):
    return make_services("sd1")


def test_keyedit_settings_have_a1111s_keys_labels_and_defaults():
    expected = {"keyedit_precision_attention": 0.1, "keyedit_precision_extra": 0.05,
                "keyedit_delimiters": ".,\\/!?%^*;:{}=`~() ",
                "keyedit_delimiters_whitespace": ["Tab", "Carriage Return", "Line Feed"], "keyedit_move": True}
    for key, default in expected.items():
        assert OPTIONS[key].default == default
        assert OPTIONS[key].section == ("ui_prompt_editing", "Prompt editing")
    assert "Ctrl+up/down" in OPTIONS["keyedit_precision_attention"].label
    assert (OPTIONS["keyedit_precision_attention"].minimum, OPTIONS["keyedit_precision_attention"].maximum) == \
        (0.01, 0.2)


def test_keyedit_options_carry_the_current_values(services):
    services.options.update({"keyedit_precision_attention": 0.15, "keyedit_move": False}, save=False)
    shown = json.loads(prompt_tools.keyedit_options(services))
    assert shown["keyedit_precision_attention"] == 0.15 and shown["keyedit_move"] is False
    assert shown["keyedit_precision_extra"] == 0.05


def test_an_infotext_is_recognised_by_its_parameters_line():
    assert prompt_tools.holds_parameters(INFOTEXT)
    assert prompt_tools.holds_parameters("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64")
    assert not prompt_tools.holds_parameters("a cat, (masterpiece:1.2), steps")
    assert not prompt_tools.holds_parameters("a cat\nNegative prompt: dog")
    assert not prompt_tools.holds_parameters("")


def test_paste_reads_the_prompt_or_says_there_is_nothing(services, warnings):
    assert prompt_tools.infotext_to_paste(services, "txt2img", INFOTEXT) == INFOTEXT
    assert warnings == []
    assert prompt_tools.infotext_to_paste(services, "txt2img", "just a prompt, no settings") == ""
    assert "no generation parameters" in warnings[-1]
    assert prompt_tools.infotext_to_paste(services, "txt2img", "") == ""  # no generation yet
    assert "no last generation" in warnings[-1]


def generate(services, mode: str, prompt: str):
    request = GenerationRequest(mode=mode, prompt=prompt, sampler_name="Euler", steps=2, width=64, height=64,
                                seed=11, save_images=False)
    if mode == "img2img":
        request.init_images = [Image.new("RGB", (64, 64), (90, 120, 200))]
        request.denoising_strength = 0.5
    job = services.generate(request)
    assert job.wait(120) and job.finished_ok, job.error
    return job


def test_an_empty_prompt_reads_the_last_generation_of_the_tab(services, warnings, monkeypatch):
    first = generate(services, "txt2img", "an old lighthouse")
    # img2img has made nothing yet: the last generation of the other tab, as A1111's params.txt
    assert prompt_tools.infotext_to_paste(services, "img2img", "") == first.result.infotexts[0]
    assert first.result.infotexts[0].startswith("an old lighthouse\n")
    second = generate(services, "img2img", "a blue harbour")
    later = generate(services, "txt2img", "a red barn")
    assert prompt_tools.infotext_to_paste(services, "img2img", "") == second.result.infotexts[0]
    assert prompt_tools.infotext_to_paste(services, "txt2img", "") == later.result.infotexts[0]
    assert warnings == []

    monkeypatch.setattr(services.queue, "store", None)  # without a job history: the jobs the queue holds
    assert prompt_tools.infotext_to_paste(services, "img2img", "") == second.result.infotexts[0]
    assert prompt_tools.infotext_to_paste(services, "txt2img", "") == later.result.infotexts[0]

    monkeypatch.setattr(services.flags, "hide_ui_dir_config", True)  # as A1111: not on a shared server
    assert prompt_tools.infotext_to_paste(services, "txt2img", "") == ""
    assert "--hide-ui-dir-config" in warnings[-1]


def png(parameters: str | None) -> bytes:
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_a_dropped_picture_gives_its_infotext(warnings, tmp_path):
    assert prompt_tools.image_infotext(png(INFOTEXT)) == INFOTEXT
    path = tmp_path / "dropped.png"
    path.write_bytes(png(INFOTEXT))
    assert prompt_tools.image_infotext(str(path)) == INFOTEXT
    assert warnings == []
    assert prompt_tools.image_infotext(png(None)) == ""
    assert "No generation parameters" in warnings[-1]
    assert prompt_tools.image_infotext(b"this is not a picture") == ""
    assert "Not a picture" in warnings[-1]
    assert prompt_tools.image_infotext(None) == ""


def test_swap():
    assert prompt_tools.swap(320, 192) == (192, 320)


def pasted(tab, services, text: str) -> dict:
    targets = prompt_tools.PasteTargets(tab)
    values = targets.values(services, text, "DPM++ 2M", "Automatic")
    assert len(values) == len(targets.outputs())
    return {component.elem_id: value for component, value in zip(targets.outputs(), values)
            if not isinstance(value, dict)}  # gr.skip() is a dict: left as it is


def test_paste_fills_the_tab_as_png_infos_send(services):
    with gr.Blocks():
        txt2img = build_tab("txt2img", services=services)
        img2img = build_tab("img2img", services=services)
    filled = pasted(txt2img, services, INFOTEXT)
    assert filled["txt2img_prompt"] == "a lighthouse at dusk" and filled["txt2img_neg_prompt"] == "fog"
    assert (filled["txt2img_steps"], filled["txt2img_seed"], filled["txt2img_cfg_scale"]) == (7, 4242, 5.5)
    assert (filled["txt2img_width"], filled["txt2img_height"]) == (192, 320)
    assert (filled["txt2img_sampling"], filled["txt2img_scheduler"]) == ("Euler a", "Karras")
    assert filled["txt2img_subseed_show"] is True and filled["txt2img_subseed"] == 77
    assert filled["txt2img_enable_hr"] is True  # Hires. fix from the `Hires …` keys
    assert filled[txt2img.refiner.enable_refiner.elem_id] is False  # no `Refiner` key: off
    assert filled[txt2img.controlnet.units[0].enabled.elem_id] is False  # no `ControlNet 0` entry: off

    own = pasted(img2img, services, INFOTEXT)
    assert own["img2img_prompt"] == "a lighthouse at dusk" and own["img2img_denoising_strength"] == 0.4
    assert "img2img_image" not in own  # the picture and the sub-tab stay as they are

    assert all(isinstance(value, dict) for value in prompt_tools.PasteTargets(txt2img).values(services, "", None,
                                                                                             None))


def test_the_buttons_are_wired(services):
    blocks = build_ui(services)
    by_id = {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}
    for tab in ("txt2img", "img2img"):
        for name in ("paste", "clear_prompt", "res_switch_btn", "prompt_image"):
            assert f"{tab}_{name}" in by_id
        paste = [dep for dep in blocks.fns.values()
                 if any(target[0] == by_id[f"{tab}_paste"]._id for target in dep.targets)]
        assert paste, f"{tab}_paste has no handler"
        outputs = {block.elem_id for block in paste[0].outputs}
        assert {f"{tab}_prompt", f"{tab}_steps", f"{tab}_seed", f"{tab}_width", f"{tab}_override_settings"} <= \
            outputs
    assert "keyedit_options" in by_id
