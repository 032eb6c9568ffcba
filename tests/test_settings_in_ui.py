"""A1111's "Settings in UI" (`extra_options_txt2img` / `extra_options_img2img`): the settings named there appear in
the tab, a generation runs with their values as override settings (under the Override settings dropdown's), and
sending an infotext sets them. Checked against the HTTP API's pictures for the same override settings."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from app import create_app
from conftest import assert_same_picture, install_model
from test_seed_extras_ui import api_picture as seed_extras_api_picture, call, page_values
from webui.settings.flags import parse_flags
from webui.ui import generation
from webui.ui.blocks import build_ui

SHOWN = ["face_restoration", "eta_noise_seed_delta", "outdir_samples", "no_such_setting", "eta_noise_seed_delta"]


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("settings-in-ui")
    install_model(data, tiny_models["sd1"])
    made, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    services.options.update({"extra_options_txt2img": SHOWN, "extra_options_cols": 2})
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    yield SimpleNamespace(client=TestClient(made), services=services, blocks=blocks, by_id=by_id, data=data)
    services.stop()


def api_picture(app, **fields):
    return seed_extras_api_picture(app, sampler_name="Euler a", **fields)


def generate(app, **values) -> dict:
    outputs = call(app, "txt2img_generate", {**page_values("txt2img", sampling="Euler a"), **values})
    return dict(zip(generation.OUTPUTS, outputs[-1]))


def test_the_named_settings_appear_in_the_tab_and_nothing_else(app):
    restore = app.by_id["txt2img_setting_face_restoration"]
    assert isinstance(restore, gr.Checkbox) and restore.label == "Restore faces" and restore.value is False
    assert app.by_id["txt2img_setting_eta_noise_seed_delta"].value == 0
    assert isinstance(app.by_id["extra_options_txt2img"], gr.Group)
    assert "txt2img_setting_outdir_samples" not in app.by_id  # a server folder is never put in the page
    assert "txt2img_setting_no_such_setting" not in app.by_id
    assert not any(elem_id.startswith("img2img_setting_") for elem_id in app.by_id)  # img2img names none
    # two settings, two columns: one row
    rows = [block for block in app.blocks.blocks.values() if isinstance(block, gr.Row)
            and app.by_id["txt2img_setting_face_restoration"] in _descendants(block)]
    assert rows and app.by_id["txt2img_setting_eta_noise_seed_delta"] in _descendants(rows[-1])


def _descendants(block) -> list:
    found = []
    for child in getattr(block, "children", []):
        found += [child, *_descendants(child)]
    return found


def test_a_generation_runs_with_the_shown_settings_as_the_apis_override_settings(app):
    shown = generate(app, txt2img_setting_eta_noise_seed_delta=31337)
    expected, info = api_picture(app, override_settings={"eta_noise_seed_delta": 31337})
    assert "ENSD: 31337" in info["infotexts"][0] and "ENSD: 31337" in shown["infotext"]
    picture = shown["gallery"][0][0] if isinstance(shown["gallery"][0], tuple) else shown["gallery"][0]
    assert_same_picture(picture, expected)
    plain, _ = api_picture(app)
    assert plain.tobytes() != expected.tobytes()  # ENSD changes an ancestral sampler's picture
    assert app.services.options.get("eta_noise_seed_delta") == 0  # the server's setting is left as it was


def test_the_override_settings_dropdown_wins_over_a_shown_setting(app):
    shown = generate(app, txt2img_setting_eta_noise_seed_delta=31337, txt2img_override_settings=["ENSD: 7"])
    assert "ENSD: 7" in shown["infotext"]


def test_a_bad_value_is_a_notice_and_nothing_is_queued(app, monkeypatch):
    notices = []
    monkeypatch.setattr(generation.notices, "report", lambda exc: notices.append(str(exc)))
    before = len(app.services.queue.recent())
    generate(app, txt2img_setting_eta_noise_seed_delta="many")
    assert notices and "eta_noise_seed_delta" in notices[0]
    assert len(app.services.queue.recent()) == before


def test_sending_an_infotext_sets_the_shown_settings(app):
    text = "a cat\nSteps: 3, Sampler: Euler a, CFG scale: 6, Seed: 5, Size: 64x64, ENSD: 1234, " \
           "Face restoration: CodeFormer"
    send = app.by_id["pnginfo_send_txt2img"]
    targets = [app.by_id["txt2img_setting_face_restoration"]._id, app.by_id["txt2img_setting_eta_noise_seed_delta"]._id]
    fn = next(fn for fn in app.blocks.fns.values() if any(t[0] == send._id for t in fn.targets)
              and [c._id for c in fn.outputs] == targets)
    assert list(fn.fn(text)) == [True, 1234]
    without = "a cat\nSteps: 3, Sampler: Euler a, CFG scale: 6, Seed: 5, Size: 64x64"
    values = list(fn.fn(without))
    assert values[0] is False and values[1] == gr.skip()  # no ENSD in the infotext: the field stays as it is
