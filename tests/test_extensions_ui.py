"""Extensions in the web UI: their controls in the generation tabs, tabs and settings they add, component
callbacks with A1111's elem_ids, and their page assets."""
from __future__ import annotations

import sys

import gradio as gr
import pytest

from app import blocks_assets
from tests.conftest import install_model
from tests.extension_repos import make_extension_repo
from tests.extension_sources import OWN_API, SELECTABLE, UI_HOOKS, WILDCARDS
from webui.extensions.host import parse_flags_with_extensions
from webui.outputs.infotext import parse_infotext
from webui.services import build_services
from webui.ui import generation
from webui.ui.blocks import build_ui


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("ext-ui")
    data = root / "data"
    install_model(data, tiny_models["sd1"])
    flags, host = parse_flags_with_extensions(["--data-dir", str(data), "--skip-install"])
    installer = build_services(flags, host)
    for name, files in (("sd-test-wildcards", WILDCARDS), ("shout", OWN_API), ("twice", SELECTABLE),
                        ("ui-hooks", UI_HOOKS)):
        installer.extensions.install(str(make_extension_repo(root / "repos", name, files)))
    installer.stop()
    flags, host = parse_flags_with_extensions(["--data-dir", str(data)])
    services = build_services(flags, host)
    yield services
    services.stop()
    from webui.extensions.a1111.runtime import RUNTIME
    RUNTIME.bind(None, None)


@pytest.fixture(scope="module")
def blocks(services):
    return build_ui(services)


def ids(blocks) -> dict:
    return {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}


def test_extension_controls_tabs_and_settings_are_in_the_page(services, blocks):
    by_id = ids(blocks)
    assert not services.extension_problems.all(), services.extension_problems.all()
    for mode in ("txt2img", "img2img"):
        assert by_id[f"script_{mode}_test_wildcards_enabled"].value is True  # Script.elem_id()'s scheme
        assert isinstance(by_id[f"{mode}_shout_enabled"], gr.Checkbox)
        choices = [choice[0] for choice in by_id[f"{mode}_script_list"].choices]
        assert choices[-1] == "Run twice"  # after A1111's own scripts
        assert choices.index("Prompt matrix") < choices.index("Run twice")
    assert by_id["ui_hooks_text"].value == "from an extension" and "tab_ui_hooks" in by_id
    assert isinstance(by_id["setting_ui_hooks_level"], gr.Slider) and by_id["setting_ui_hooks_level"].value == 3
    assert "setting_shout_suffix" in by_id  # our API's add_setting
    assert {"tab_settings", "tab_extensions", "extensions_apply", "install_url"} <= set(by_id)


def test_component_callbacks_see_a1111_elem_ids(services, blocks):
    seen = set(next(m for m in services.extension_host.get("ui-hooks").modules).SEEN)
    assert {"txt2img_prompt", "txt2img_neg_prompt", "txt2img_width", "txt2img_height", "txt2img_generate",
            "img2img_prompt", "img2img_image"} <= seen
    assert "ui_hooks_button" in ids(blocks)  # made by a script's after_component


def test_extension_css_and_javascript_reach_the_page(services):
    assets = blocks_assets(services.extension_host)
    assert "#test-wildcards-marker" in assets["css"]
    assert "window.testWildcardsLoaded = true;" in assets["head"]
    assert 'data-extension-file="sd-test-wildcards/javascript/wildcards.js"' in assets["head"]


def test_generate_from_the_tab_passes_script_values(services, blocks):
    panel_values = {"script_args": {"test wildcards": [False], "shout": [True]}, "script_name": "",
                    "script_run_args": []}
    outputs = list(generation.generate(services, "txt2img", None, "a __color__ fox", "", "Euler", "Automatic", 2, 64,
                                       64, 1, 1, 7.0, 21, scripts=panel_values))
    state = outputs[-1][0]
    params = parse_infotext(state["infotexts"][0])
    assert params["Prompt"] == "a __color__ fox, loudly" and params["Shout"] == "loudly"
    assert "Wildcard prompt" not in params

    chosen = {"script_args": {}, "script_name": "Run twice", "script_run_args": [1]}
    outputs = list(generation.generate(services, "txt2img", None, "a fox", "", "Euler", "Automatic", 2, 64, 64, 1, 1,
                                       7.0, 30, scripts=chosen))
    assert outputs[-1][0]["seeds"] == [30, 31]


def test_script_panel_splits_values_in_input_order(services, blocks):
    from webui.ui.extension_scripts import build_scripts
    with gr.Blocks():
        panel = build_scripts("txt2img", services.extension_host)
    inputs = panel.request_inputs()
    assert inputs[0] is panel.dropdown
    values = ["Run twice"] + [f"v{i}" for i in range(len(inputs) - 1)]
    split = panel.values(values)
    assert split["script_name"] == "Run twice" and split["script_run_args"] == [values[-1]]
    assert set(split["script_args"]) == {"besides the prompt", "test wildcards", "shout"}
    assert sys.modules["modules.scripts"].scripts_txt2img is services.extension_host.runners["txt2img"]
