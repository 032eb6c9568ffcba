"""The Settings tab: built from a real `Options` on a config.json (ours and extensions' options), its Apply,
reload and search handlers called directly, and Apply once through Gradio's own event processing."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import gradio as gr
import pytest
from gradio.state_holder import SessionState

from webui.settings.options import OPTIONS, Option, Options
from webui.ui import settings_tab
from webui.ui.settings_tab import HIDDEN_KEYS, JSON, LIST, apply_settings, build_settings_tab, current_values

MY_EXT = ("my_ext", "My Extension")


class Catalogue:
    """A choices function whose list changes (an extension listing models on disk)."""

    def __init__(self):
        self.names = ["alpha", "beta"]

    def __call__(self):
        return list(self.names)


def broken_args():
    return {"minimum": 1, "maximum": 10, "no_such_argument": True}


class AppliedJob:
    """What `services.set_options` gives once the queue has applied the change (the queue itself is tested in
    tests/test_queue_api.py): here the change is applied at once."""

    def __init__(self, options, changes: dict):
        options.update(changes)
        self.finished_ok, self.state, self.error = True, "done", None

    def wait(self, timeout=None) -> bool:
        return True


def fake_services(options, **more) -> SimpleNamespace:
    return SimpleNamespace(options=options, set_options=lambda changes, source="": AppliedJob(options, changes),
                           **more)


@pytest.fixture
def services(tmp_path):
    options = Options(tmp_path / "config.json")
    catalogue = Catalogue()
    options.add_option("my_ext_flag", Option(False, "My flag", bool, section=MY_EXT))
    options.add_option("my_ext_mode", Option("a", "Mode", str, section=MY_EXT, component=gr.Radio,
                                             component_args={"choices": ["a", "b"]}))
    options.add_option("my_ext_broken", Option(2, "Broken slider", int, minimum=1, maximum=10, section=MY_EXT,
                                               component=gr.Slider, component_args=broken_args))
    options.add_option("my_ext_model", Option("alpha", "Model", str, choices=catalogue, section=MY_EXT,
                                              info="from the models folder"))
    options.add_option("my_ext_tags", Option(["a"], "Tags", list, choices=("a", "b", "c"), section=MY_EXT))
    options.add_option("my_ext_data", Option({"k": 1}, "Data", object, section=MY_EXT))
    options.add_option("loose_option", Option(0.5, "Loose", float))
    return fake_services(options, catalogue=catalogue, config=tmp_path / "config.json")


@pytest.fixture
def tab(services):
    with gr.Blocks() as blocks:
        built = build_settings_tab(services)
    built.blocks = blocks
    return built


def values_of(tab, services, **changes) -> list:
    """What the page would send: the current values, with some components changed."""
    values = current_values(services, tab)
    keys = [f.key for f in tab.fields]
    for key, value in changes.items():
        values[keys.index(key)] = value
    return [v["value"] if isinstance(v, dict) else v for v in values]


def stored(services) -> dict:
    return json.loads(services.config.read_text()) if services.config.exists() else {}


def by_key(tab) -> dict:
    return {f.key: c for f, c in zip(tab.fields, tab.components)}


# --- building -------------------------------------------------------------------------------------------------------
def test_every_shown_option_has_its_a1111_elem_id_and_the_excluded_ones_none(services, tab):
    ids = {b.elem_id for b in tab.blocks.blocks.values() if getattr(b, "elem_id", None)}
    shown = [key for key in services.options.specs if key not in HIDDEN_KEYS]
    assert {f"setting_{key}" for key in shown} <= ids
    assert not {f"setting_{key}" for key in HIDDEN_KEYS} & ids
    assert [f.key for f in tab.fields] == [key for s in tab.sections for key in s.keys]
    assert sorted(f.key for f in tab.fields) == sorted(shown)
    assert {"settings_search", "settings_submit", "settings_result"} <= ids
    assert all(c.elem_id == f"setting_{f.key}" for f, c in zip(tab.fields, tab.components))
    config_ids = {c["props"].get("elem_id") for c in tab.blocks.get_config_file()["components"]}
    assert {f"setting_{key}" for key in shown} <= config_ids


def test_sections_follow_a1111_and_extensions_get_their_own(tab):
    titles = [s.title for s in tab.sections]
    assert titles == ["Saving images/grids", "Stable Diffusion", "ControlNet", "Extra Networks", "Face restoration",
                      "Gallery", "img2img", "Live previews", "My Extension", "Prompt editing", "Queue and history",
                      "Sampler parameters", "Saving to a directory", "Settings in UI", "Upscaling", "User interface",
                      "VAE", "Other"]
    keys = {s.title: s.keys for s in tab.sections}
    assert {"samples_save", "samples_format", "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples",
            "outdir_extras_samples", "grid_save", "grid_format", "grid_extended_filename", "grid_only_if_multiple",
            "grid_prevent_empty_spots", "n_rows", "grid_text_active_color", "grid_text_inactive_color",
            "grid_background_color", "outdir_grids", "outdir_txt2img_grids", "outdir_img2img_grids",
            "samples_filename_pattern", "save_images_add_number", "jpeg_quality", "webp_lossless", "export_for_4chan",
            "img_downscale_threshold", "target_side_length", "outdir_save"} == set(keys["Saving images/grids"])
    assert set(keys["Saving to a directory"]) == {"save_to_dirs", "grid_save_to_dirs", "directories_filename_pattern",
                                                  "directories_max_prompt_words"}
    assert keys["Gallery"] == ("return_grid",)
    assert {"CLIP_stop_at_last_layers", "emphasis", "sd_checkpoints_limit", "randn_source"} <= \
        set(keys["Stable Diffusion"])
    assert set(keys["ControlNet"]) == {"control_net_unit_count", "control_net_no_detectmap"}
    assert keys["My Extension"][0] == "my_ext_flag" and "my_ext_tags" in keys["My Extension"]
    assert keys["Other"] == ("loose_option",)
    accordion_labels = [a.label for a in tab.accordions]
    assert accordion_labels == titles and tab.accordions[0].open and not tab.accordions[1].open


def test_components_follow_the_options_kind_or_the_class_asked_for(services, tab):
    c = by_key(tab)
    assert isinstance(c["my_ext_flag"], gr.Checkbox) and c["my_ext_flag"].label == "My flag"
    assert isinstance(c["my_ext_mode"], gr.Radio) and [ch[1] for ch in c["my_ext_mode"].choices] == ["a", "b"]
    assert isinstance(c["CLIP_stop_at_last_layers"], gr.Slider)
    assert (c["CLIP_stop_at_last_layers"].minimum, c["CLIP_stop_at_last_layers"].maximum,
            c["CLIP_stop_at_last_layers"].step) == (1, 12, 1)
    assert isinstance(c["inpainting_mask_weight"], gr.Slider) and c["inpainting_mask_weight"].step == 0.01
    assert isinstance(c["sd_checkpoint_cache_ram_gb"], gr.Number)  # a minimum but no maximum
    assert isinstance(c["emphasis"], gr.Dropdown)
    assert [ch[1] for ch in c["emphasis"].choices] == ["Original", "No norm", "Ignore"]
    assert isinstance(c["outdir_txt2img_samples"], gr.Textbox)
    assert isinstance(c["img2img_background_color"], gr.ColorPicker)
    model = c["my_ext_model"]
    assert isinstance(model, gr.Dropdown) and [ch[1] for ch in model.choices] == ["alpha", "beta"]
    assert model.info == "from the models folder"
    tags = c["my_ext_tags"]
    assert isinstance(tags, gr.Dropdown) and tags.multiselect and tags.value == ["a"]
    data = c["my_ext_data"]
    assert isinstance(data, gr.Textbox) and json.loads(data.value) == {"k": 1}
    encodings = {f.key: f.encoding for f in tab.fields}
    assert encodings["my_ext_data"] == JSON and encodings["my_ext_tags"] == LIST
    assert c["control_net_unit_count"].label.startswith("ControlNet units")  # says "restart" already, once
    assert c["control_net_unit_count"].label.lower().count("restart") == 1


def test_a_component_that_cannot_be_built_falls_back_with_a_warning(services, tab):
    broken = by_key(tab)["my_ext_broken"]
    assert isinstance(broken, gr.Slider) and (broken.minimum, broken.maximum, broken.value) == (1, 10, 2)
    assert len(tab.warnings) == 1 and "my_ext_broken" in tab.warnings[0] and "Slider" in tab.warnings[0]
    # the failed attempt left nothing behind: one component with that id, and the warning is shown in the tab
    ids = [b.elem_id for b in tab.blocks.blocks.values() if getattr(b, "elem_id", None)]
    assert ids.count("setting_my_ext_broken") == 1 and "settings_warnings" in ids


def test_restart_options_say_so_in_their_label(tmp_path):
    options = Options(tmp_path / "config.json")
    options.add_option("my_ext_backend", Option("x", "Backend", str, restart=True, section=MY_EXT))
    with gr.Blocks():
        built = build_settings_tab(SimpleNamespace(options=options))
    assert by_key(built)["my_ext_backend"].label == "Backend (requires restart)"


# --- apply ----------------------------------------------------------------------------------------------------------
def test_apply_saves_the_changed_values_and_names_them(services, tab):
    values = values_of(tab, services, samples_format="webp", my_ext_flag=True)
    message = apply_settings(services, tab.fields, *values)
    assert message == "2 settings changed: samples_format, my_ext_flag."
    saved = stored(services)
    assert saved["samples_format"] == "webp" and saved["my_ext_flag"] is True
    assert Options(services.config).get("samples_format") == "webp"
    assert apply_settings(services, tab.fields, *values) == "Nothing changed."


def test_nothing_changed_saves_nothing(services, tab):
    assert apply_settings(services, tab.fields, *values_of(tab, services)) == "Nothing changed."
    assert not services.config.exists()


def test_an_invalid_value_is_named_and_nothing_is_saved(services, tab):
    values = values_of(tab, services, samples_format="jpg", CLIP_stop_at_last_layers=40)
    message = apply_settings(services, tab.fields, *values)
    assert message == "option 'CLIP_stop_at_last_layers' must be at most 12, got 40"
    assert not services.config.exists()
    assert services.options.get("samples_format") == "png" and services.options.get("CLIP_stop_at_last_layers") == 1
    bad_json = values_of(tab, services, my_ext_data="{not json")
    assert "setting 'Data': not valid JSON" in apply_settings(services, tab.fields, *bad_json)
    bad_tag = values_of(tab, services, my_ext_tags=["a", "zzz"])
    assert apply_settings(services, tab.fields, *bad_tag) == "option 'my_ext_tags' must be one of a, b, c, got 'zzz'"
    assert not services.config.exists()


def test_values_gradio_sends_in_another_type_are_converted(services, tab):
    values = values_of(tab, services, CLIP_stop_at_last_layers=3.0, sd_checkpoint_cache_ram_gb=8,
                       my_ext_data='{"k": 2, "more": [1, 2]}', my_ext_tags=["b", "c"])
    message = apply_settings(services, tab.fields, *values)
    assert message.startswith("4 settings changed: ")
    saved = stored(services)
    assert saved["CLIP_stop_at_last_layers"] == 3 and type(saved["CLIP_stop_at_last_layers"]) is int
    assert saved["sd_checkpoint_cache_ram_gb"] == 8.0 and type(saved["sd_checkpoint_cache_ram_gb"]) is float
    assert saved["my_ext_data"] == {"k": 2, "more": [1, 2]} and saved["my_ext_tags"] == ["b", "c"]
    with pytest.raises(ValueError, match="expected"):
        apply_settings(services, tab.fields, *values[:-1])


def test_a_change_that_needs_a_restart_says_so(services, tab):
    message = apply_settings(services, tab.fields, *values_of(tab, services, control_net_unit_count=5.0))
    assert message == "1 setting changed: control_net_unit_count. Restart the UI for control_net_unit_count to " \
                      "take effect."
    assert stored(services)["control_net_unit_count"] == 5


def test_apply_through_gradios_event_processing(services, tab):
    """The wired button: Gradio preprocesses the raw values (a Slider's number, a Dropdown's list) first."""
    blocks = tab.blocks
    function = next(fn for fn in blocks.fns.values() if fn.outputs == [tab.result])
    assert function.inputs == tab.components
    raw = values_of(tab, services, CLIP_stop_at_last_layers=4.0, my_ext_tags=["c"], samples_save=False)
    answer = asyncio.run(blocks.process_api(block_fn=function, inputs=raw, state=SessionState(blocks)))
    assert answer["data"] == ["3 settings changed: samples_save, CLIP_stop_at_last_layers, my_ext_tags."]
    saved = stored(services)
    assert (saved["CLIP_stop_at_last_layers"], saved["my_ext_tags"], saved["samples_save"]) == (4, ["c"], False)


# --- reload and search ----------------------------------------------------------------------------------------------
def test_current_values_show_changes_made_elsewhere_and_fresh_choices(services, tab):
    services.options.update({"emphasis": "Ignore", "my_ext_data": [1, "two"], "my_ext_tags": ["c"]})
    services.catalogue.names = ["gamma"]
    shown = dict(zip((f.key for f in tab.fields), current_values(services, tab)))
    assert shown["emphasis"] == "Ignore" and shown["my_ext_tags"] == ["c"]
    assert json.loads(shown["my_ext_data"]) == [1, "two"]
    assert shown["my_ext_model"]["choices"] == ["gamma", "alpha"] and shown["my_ext_model"]["value"] == "alpha"
    assert len(shown) == len(tab.components)


def test_search_shows_matching_settings_and_their_sections(tab):
    updates = settings_tab.search_settings(tab, "  CLIP ")
    assert len(updates) == len(tab.components) + len(tab.accordions)
    shown = [f.key for f, u in zip(tab.fields, updates) if u["visible"]]
    assert shown == ["CLIP_stop_at_last_layers"]
    sections = updates[len(tab.fields):]
    assert [u["visible"] for u in sections] == [t == "Stable Diffusion" for t in (s.title for s in tab.sections)]
    assert sections[1]["open"] is True
    by_label = settings_tab.search_settings(tab, "my flag")
    assert [f.key for f, u in zip(tab.fields, by_label) if u["visible"]] == ["my_ext_flag"]
    everything = settings_tab.search_settings(tab, "")
    assert all(u["visible"] for u in everything) and "open" not in everything[-1]


def test_every_builtin_option_has_a_section_of_ours(tmp_path):
    options = Options(tmp_path / "config.json")
    with gr.Blocks():
        built = build_settings_tab(SimpleNamespace(options=options))
    assert [s.title for s in built.sections] == ["Saving images/grids", "Stable Diffusion", "ControlNet",
                                                 "Extra Networks", "Face restoration", "Gallery", "img2img",
                                                 "Live previews", "Prompt editing", "Queue and history",
                                                 "Sampler parameters", "Saving to a directory", "Settings in UI",
                                                 "Upscaling", "User interface", "VAE"]
    assert sorted(f.key for f in built.fields) == sorted(set(OPTIONS) - HIDDEN_KEYS)
    assert built.warnings == []


def test_a_choices_function_that_fails_leaves_the_value_editable_as_text(tmp_path):
    def no_models():
        raise OSError("models folder is unreadable")

    options = Options(tmp_path / "config.json")
    options.add_option("my_ext_model", Option("alpha", "Model", str, choices=no_models, section=MY_EXT))
    services = fake_services(options, config=tmp_path / "config.json")
    with gr.Blocks():
        built = build_settings_tab(services)
    model = by_key(built)["my_ext_model"]
    assert isinstance(model, gr.Textbox) and model.value == "alpha"
    assert len(built.warnings) == 1 and "models folder is unreadable" in built.warnings[0]
    assert current_values(services, built)[[f.key for f in built.fields].index("my_ext_model")] == "alpha"
    values = values_of(built, services, my_ext_model="beta")
    assert apply_settings(services, built.fields, *values) == "1 setting changed: my_ext_model."
    assert stored(services)["my_ext_model"] == "beta"


def test_apply_is_queued_behind_the_running_job(make_services):
    """With the real services the change goes through the queue: it waits for the running job, so a generation
    never sees a setting change half-way."""
    import threading

    services = make_services("sd1")
    with gr.Blocks():
        built = build_settings_tab(services)
    entered, release = threading.Event(), threading.Event()
    services.queue.register("test_hold", lambda job: (entered.set(), release.wait(30)))
    holder = services.queue.submit("test_hold", None)
    assert entered.wait(30)
    outcome = {}
    values = values_of(built, services, CLIP_stop_at_last_layers=3)
    applying = threading.Thread(target=lambda: outcome.setdefault("message", apply_settings(services, built.fields,
                                                                                            *values)))
    applying.start()
    applying.join(0.5)
    assert applying.is_alive() and services.options.get("CLIP_stop_at_last_layers") == 1
    release.set()
    applying.join(30)
    assert holder.finished_ok and outcome["message"] == "1 setting changed: CLIP_stop_at_last_layers."
    assert services.options.get("CLIP_stop_at_last_layers") == 3
