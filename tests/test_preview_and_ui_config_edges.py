"""Edge cases of live previews and of ui-config.json / last used values, each once a bug found in review: a Full
preview that fails, second-order samplers, finished jobs holding memory, /progress and "every N steps", posting
the stored method back, `visible` and flags, A1111's keys, a broken ui-config.json, ControlNet units."""
from __future__ import annotations

import gc
import json
import weakref

import pytest
import torch

from conftest import quick_run
from webui.core.run_control import RunControl
from webui.core.request import GenerationRequest
from webui.settings.options import OptionError
from webui.ui import ui_config
from webui.ui.blocks import build_ui


def _request(**fields) -> GenerationRequest:
    base = dict(prompt="a fox", negative_prompt="blurry", sampler_name="Euler", steps=4, width=64, height=64,
                seed=5, save_images=False)
    base.update(fields)
    return GenerationRequest(**base)


def _counting_vae(model, fail_first: bool = False) -> list:
    """Count (and optionally fail the first of) the VAE decodes of `model`; returns the call log."""
    real = model.vae.decode
    calls = []

    def decode(*args, **kwargs):
        calls.append(args[0].shape)
        if fail_first and len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated: the live preview's decode)")
        return real(*args, **kwargs)

    model.vae.decode = decode
    return calls


# --- live previews ----------------------------------------------------------------------------------------------
def test_a_full_preview_that_fails_does_not_fail_the_run(make_services):
    """engine.py:345-346 / preview.py Previewer.render: the Full preview decodes in the sampling loop with no guard,
    so an out-of-memory (or NaNOutputError from `_decode`) in a preview fails the whole job."""
    services = make_services("sd1")
    quick_run(services)  # loads the model
    _, model = services.models.current
    services.options.update({"show_progress_type": "Full", "show_progress_every_n_steps": 1}, save=False)
    _counting_vae(model, fail_first=True)
    try:
        result = quick_run(services)
    finally:
        del model.vae.decode
    assert len(result.images) == 1


def test_full_previews_decode_once_per_due_step_with_second_order_samplers(make_services):
    """engine.py:343-346: `due(shown_step)` is asked at every model evaluation; a second-order sampler (Heun,
    DPM2, ...) has about two evaluations per shown step, so the VAE decodes the same preview step twice."""
    services = make_services("sd1")
    quick_run(services)
    _, model = services.models.current
    services.options.update({"show_progress_type": "Full", "show_progress_every_n_steps": 2}, save=False)
    calls = _counting_vae(model)
    try:
        services.engine.run(_request(sampler_name="Heun", steps=4))
    finally:
        del model.vae.decode
    assert len(calls) == 2 + 1  # previews at steps 2 and 4, then the image


def test_a_finished_job_does_not_keep_its_model_alive(make_services):
    """control.py / engine.py:323: `control.previewer` (whose Full decoder closes over the LoadedModel) and
    `control.latents` / `control.preview` stay on the Job, and the queue keeps 200 finished jobs: a model the
    cache evicted stays in (V)RAM while such a job is in the history."""
    services = make_services("sd1")
    services.options.update({"show_progress_type": "Full", "show_progress_every_n_steps": 1}, save=False)
    job = services.generate(_request(), source="test")
    assert job.wait(120) and job.finished_ok, job.error
    info, model = services.models.current
    alive = weakref.ref(model)
    with services.models._lock:  # what the cache does when it evicts the model (another checkpoint loaded)
        services.models._loaded.clear()
        services.models._current = None
    del model, info
    gc.collect()
    assert alive() is None, "the finished job still holds the model"


def test_a_finished_job_drops_its_latents(make_services):
    """control.py:80: the last step's latents (on the GPU in real use) stay referenced by every finished job the
    queue remembers (200 by default)."""
    services = make_services("sd1")
    job = services.generate(_request(), source="test")
    assert job.wait(120) and job.finished_ok, job.error
    assert job.control.latents is None


def test_progress_endpoint_shows_no_preview_when_every_n_steps_is_off(make_services):
    """api/routes.py:190-200: /sdapi/v1/progress renders a preview on every poll, ignoring
    show_progress_every_n_steps (0: off in our option; the UI and /queue/events honour it via preview_every)."""
    from webui.api.routes import _preview_base64

    services = make_services("sd1")
    services.options.update({"show_progress_every_n_steps": 0}, save=False)

    class Job:
        control = RunControl()

    Job.control.publish_latents(torch.randn(1, 4, 8, 8), "sd1")
    Job.control.report(sampling_step=1)
    assert _preview_base64(services, Job) is None


def test_the_stored_preview_method_can_be_posted_back(tmp_path, make_services):
    """services.py:297 + options.py:159: a config.json with A1111's default method ("Approx NN") loads fine (the
    offered check is attached after loading), but posting the current value back (the usual GET /options, change
    one key, POST everything) is refused while models/VAE-approx has no file."""
    services = make_services("sd1")
    config = services.paths.data_dir / "config.json"
    services.stop()
    data = json.loads(config.read_text()) if config.exists() else {}
    data["show_progress_type"] = "Approx NN"
    config.write_text(json.dumps(data))
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    again = build_services(parse_flags(["--data-dir", str(services.paths.data_dir)]))
    try:
        current = again.options.get("show_progress_type")
        assert current == "Approx NN"
        try:
            again.options.validate({"show_progress_type": current})
        except OptionError as exc:
            pytest.fail(f"the unchanged stored value is refused: {exc}")
    finally:
        again.stop()


# --- ui-config.json ---------------------------------------------------------------------------------------------
def _prop(blocks, elem_id: str, name: str):
    for component in blocks.config["components"]:
        if component.get("props", {}).get("elem_id") == elem_id:
            return component["props"].get(name)
    raise KeyError(elem_id)


def test_ui_config_visible_does_not_override_hide_ui_dir_config(make_services):
    """ui_config.py:128-150: `visible` is written and applied for every input, also those hidden or shown by a
    flag or option at build time. After one start without --hide-ui-dir-config, ui-config.json holds
    `img2img/Batch/Input directory/visible: true`, and a later start WITH the flag shows the folder fields again.
    (A1111 only records `visible` of components that are visible when built.)"""
    services = make_services("sd1")
    build_ui(services)  # writes ui-config.json with every key
    data_dir = services.paths.data_dir
    written = json.loads((data_dir / "ui-config.json").read_text())
    assert written["img2img/Input directory/visible"] is True
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    hidden = build_services(parse_flags(["--data-dir", str(data_dir), "--hide-ui-dir-config"]))
    try:
        blocks = build_ui(hidden)
        assert _prop(blocks, "img2img_batch_input_dir", "visible") is False
    finally:
        hidden.stop()


def test_ui_config_visible_written_while_hidden_does_not_hide_forever(make_services):
    """The other way round: a start with --hide-ui-dir-config writes `visible: false`, and the fields stay hidden
    after the flag is dropped."""
    services = make_services("sd1", flags=["--hide-ui-dir-config"])
    build_ui(services)
    data_dir = services.paths.data_dir
    written = json.loads((data_dir / "ui-config.json").read_text())
    assert written.get("img2img/Input directory/visible", False) is False
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    shown = build_services(parse_flags(["--data-dir", str(data_dir)]))
    try:
        blocks = build_ui(shown)
        assert _prop(blocks, "img2img_batch_input_dir", "visible") is not False
    finally:
        shown.stop()


def test_ui_config_keys_match_a1111_for_sub_tab_inputs(make_services):
    """ui_config.py:33-51: keys include the labels of the sub-tabs (`img2img/Batch/Input directory`), while
    A1111's keys are only the top tab and the label (`img2img/Input directory/value`): an A1111 ui-config.json's
    values for those inputs are silently ignored."""
    services = make_services("sd1")
    inputs = ui_config.labelled_inputs(build_ui(services))
    assert "img2img/Input directory" in inputs


def test_a_ui_config_with_a_syntax_error_is_not_overwritten(make_services):
    """ui_config.py:100-112 + 150-155: an unreadable ui-config.json (a trailing comma after a hand edit) is read as
    {} and then rewritten with the page's defaults, so every customisation in it is lost. (A1111 does not write
    the defaults back when the file exists but could not be read.)"""
    services = make_services("sd1")
    path = services.paths.data_dir / "ui-config.json"
    hand_edited = '{\n    "txt2img/Sampling steps/value": 35,\n    "txt2img/Width/value": 768,\n}\n'
    path.write_text(hand_edited)
    build_ui(services)
    assert path.read_text() == hand_edited


def test_a_new_page_does_not_restore_an_enabled_controlnet_unit_without_its_image(make_services):
    """ui_config.py:196-215: every labelled txt2img/img2img input is remembered, ControlNet units' Enable
    included, but not their images (not a remembered kind). A new page then starts with the unit enabled and no
    image, and its first Generate fails: "ControlNet unit 0 is enabled but has no image"."""
    services = make_services("sd1")
    inputs = ui_config.labelled_inputs(build_ui(services))
    import gradio as gr
    with gr.Blocks():
        restore, outputs = ui_config.wire_last_used(services, inputs, {"txt2img": gr.Button()})
    key = next(k for k, c in inputs.items() if c.elem_id == "txt2img_controlnet_ControlNet-0_controlnet_enable_checkbox")
    ui_config.LastUsed(services.paths.data_dir).remember({key: True})
    restored = dict(zip([k for k in inputs if inputs[k] in outputs], restore()))
    assert restored.get(key) is not True, "the unit comes back enabled, its image does not"


def test_last_used_values_are_kept_per_user(make_services):
    services = make_services("sd1")
    store = ui_config.LastUsed(services.paths.data_dir)
    store.remember({"txt2img/Prompt": "alice's secret"}, "alice")
    store.remember({"txt2img/Prompt": "bob's idea"}, "bob/../x")
    store.remember({"txt2img/Prompt": "nobody's"})
    import gradio as gr
    box = gr.Textbox(label="Prompt", render=False)
    assert store.values_for({"txt2img/Prompt": box}, "alice") == ["alice's secret"]
    assert store.values_for({"txt2img/Prompt": box}, "bob/../x") == ["bob's idea"]
    assert store.values_for({"txt2img/Prompt": box}) == ["nobody's"]
    assert sorted(p.name for p in services.paths.data_dir.glob("ui-last-used*.json")) == [
        "ui-last-used-alice.json", "ui-last-used-bob_.._x.json", "ui-last-used.json"]
