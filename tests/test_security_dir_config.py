"""Issue #19, part B: under `--hide-ui-dir-config` no user can point the server's output folders (or any other
path-valued option: A1111's restricted options, every `outdir_*`, an option an extension marks) somewhere else:
`POST /sdapi/v1/options`, a request's `override_settings` on txt2img and img2img, and the Settings tab all refuse
it (the API with a 403 naming the option), and nothing is written outside the outputs folder. Without the flag,
nothing changes: the same requests are accepted and the images land in the chosen folder."""
from __future__ import annotations

import base64
import io
import json
import types
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from conftest import install_model
from webui.extensions.a1111.runtime import RUNTIME
from webui.extensions.callbacks import CallbackRegistry
from webui.extensions.problems import ProblemLog
from webui.settings.flags import parse_flags
from webui.settings.options import Option, OptionError, OptionRestrictedError, Options
from webui.ui import extensions_tab
from webui.ui.settings_tab import apply_settings, build_settings_tab, current_values, search_settings

TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
OPTIONS = "/sdapi/v1/options"
SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "save_images": True}
FLAG = "--hide-ui-dir-config"


def png_base64(color=(120, 60, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def start(root: Path, tiny_models, *flags: str) -> SimpleNamespace:
    data = root / "data"
    install_model(data, tiny_models["sd1"])
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui", *flags]))
    assert services.hasher.wait_idle(30)
    return SimpleNamespace(client=TestClient(app), services=services, data=data, elsewhere=root / "elsewhere")


@pytest.fixture(scope="module")
def locked(tmp_path_factory, tiny_models):
    server = start(tmp_path_factory.mktemp("locked"), tiny_models, FLAG)
    yield server
    server.services.stop()


@pytest.fixture(scope="module")
def unlocked(tmp_path_factory, tiny_models):
    server = start(tmp_path_factory.mktemp("unlocked"), tiny_models)
    yield server
    server.services.stop()


def assert_refused(response, option: str) -> str:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "OptionRestricted"
    assert option in body["detail"] and FLAG in body["detail"]
    return body["detail"]


def stored_config(server) -> dict:
    path = server.services.paths.config_file
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


# --- POST /sdapi/v1/options -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples",
                                    "outdir_samples", "outdir_grids", "outdir_save", "directories_filename_pattern",
                                    "samples_filename_pattern", "temp_dir"])
def test_options_refuses_every_path_option_under_the_flag(locked, option):
    value = "../../../escape/[prompt]" if option.endswith("pattern") else str(locked.elsewhere)
    assert_refused(locked.client.post(OPTIONS, json={option: value}), option)
    assert locked.client.get(OPTIONS).json().get(option) in (None, "", "[date]")  # unchanged: none, or the default
    assert stored_config(locked).get(option) in (None, "")


def test_a_refused_change_applies_none_of_the_request(locked):
    response = locked.client.post(OPTIONS, json={"samples_format": "jpg",
                                                 "outdir_txt2img_samples": str(locked.elsewhere)})
    assert_refused(response, "outdir_txt2img_samples")
    assert locked.client.get(OPTIONS).json()["samples_format"] == "png"


def test_other_options_and_unchanged_folders_still_save_under_the_flag(locked):
    current = locked.client.get(OPTIONS).json()
    # a client that posts back every option it read (A1111's usual round trip) is not refused
    response = locked.client.post(OPTIONS, json={**current, "show_progress_every_n_steps": 5})
    assert response.status_code == 200, response.text
    assert locked.client.get(OPTIONS).json()["show_progress_every_n_steps"] == 5
    locked.client.post(OPTIONS, json={"show_progress_every_n_steps": current["show_progress_every_n_steps"]})


def test_options_accepts_the_folder_without_the_flag(unlocked):
    try:
        response = unlocked.client.post(OPTIONS, json={"outdir_txt2img_samples": str(unlocked.elsewhere)})
        assert response.status_code == 200, response.text
        assert unlocked.client.get(OPTIONS).json()["outdir_txt2img_samples"] == str(unlocked.elsewhere)
        assert stored_config(unlocked)["outdir_txt2img_samples"] == str(unlocked.elsewhere)
    finally:
        unlocked.client.post(OPTIONS, json={"outdir_txt2img_samples": ""})


# --- override_settings ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, option, extra", [
    (TXT2IMG, "outdir_txt2img_samples", {}),
    (IMG2IMG, "outdir_img2img_samples", {"init_images": [png_base64()], "denoising_strength": 0.5}),
    (TXT2IMG, "outdir_samples", {}),
])
def test_override_settings_cannot_move_the_output_folder(locked, path, option, extra):
    before = files_under(locked.data / "outputs")
    body = {**SMALL, **extra, "override_settings": {option: str(locked.elsewhere)}}
    detail = assert_refused(locked.client.post(path, json=body), option)
    assert "override_settings" in detail
    assert not locked.elsewhere.exists() and files_under(locked.data / "outputs") == before
    assert locked.client.get(OPTIONS).json().get(option) in (None, "")


def test_override_settings_still_work_for_other_options_under_the_flag(locked):
    body = {**SMALL, "override_settings": {"CLIP_stop_at_last_layers": 2,
                                           "outdir_txt2img_samples": ""}}  # the current value: no change
    response = locked.client.post(TXT2IMG, json=body)
    assert response.status_code == 200, response.text
    saved = [Path(p) for p in json.loads(response.json()["info"])["saved_paths"]]
    assert saved and all((locked.data / "outputs") in p.parents for p in saved)
    assert not locked.elsewhere.exists()


@pytest.mark.parametrize("path, option, extra", [
    (TXT2IMG, "outdir_txt2img_samples", {}),
    (IMG2IMG, "outdir_img2img_samples", {"init_images": [png_base64()], "denoising_strength": 0.5}),
])
def test_override_settings_move_the_output_folder_without_the_flag(unlocked, path, option, extra):
    target = unlocked.elsewhere / option
    response = unlocked.client.post(path, json={**SMALL, **extra, "override_settings": {option: str(target)}})
    assert response.status_code == 200, response.text
    assert len(files_under(target)) == 1  # behaviour unchanged: the image went where the request said
    assert unlocked.client.get(OPTIONS).json()[option] == ""  # for that request only


# --- the Settings tab -----------------------------------------------------------------------------------------------
def settings_tab(services):
    with gr.Blocks():
        return build_settings_tab(services)


def field_of(tab, key: str):
    index = next(i for i, f in enumerate(tab.fields) if f.key == key)
    return index, tab.fields[index], tab.components[index]


def test_settings_tab_hides_the_folders_and_refuses_a_forged_change(make_services, tmp_path):
    secret_folder = str(tmp_path / "the-admins-folder")
    data = tmp_path / "data0"  # make_services' first data dir: the admin set the folder in its config.json
    data.mkdir()
    (data / "config.json").write_text(json.dumps({"outdir_txt2img_samples": secret_folder}))
    services = make_services(flags=[FLAG])
    assert services.options.get("outdir_txt2img_samples") == secret_folder
    tab = settings_tab(services)
    index, setting, component = field_of(tab, "outdir_txt2img_samples")
    assert setting.locked and component.visible is False and component.interactive is False
    # the page never carries the path, neither when built nor when it loads the current values
    assert secret_folder not in str(component.value)
    assert secret_folder not in str(current_values(services, tab)[index])
    assert not field_of(tab, "samples_format")[1].locked
    values = [component.value for component in tab.components]
    assert apply_settings(services, tab.fields, *values) == "Nothing changed."
    values[index] = str(tmp_path / "elsewhere")  # what a hand-made request to the Apply handler could send
    with pytest.warns(UserWarning, match="outdir_txt2img_samples"):
        result = apply_settings(services, tab.fields, *values)
    assert "outdir_txt2img_samples" in result and FLAG in result
    assert services.options.get("outdir_txt2img_samples") == secret_folder
    search = search_settings(tab, "output folder")  # searching never reveals a hidden folder field
    assert search[index]["visible"] is False


def test_settings_tab_shows_and_applies_the_folders_without_the_flag(make_services, tmp_path):
    services = make_services()
    tab = settings_tab(services)
    index, setting, component = field_of(tab, "outdir_txt2img_samples")
    assert not setting.locked and component.visible is not False and component.interactive is not False
    values = [component.value for component in tab.components]
    values[index] = str(tmp_path / "elsewhere")
    assert apply_settings(services, tab.fields, *values) == "1 setting changed: outdir_txt2img_samples."
    assert services.options.get("outdir_txt2img_samples") == str(tmp_path / "elsewhere")


# --- options extensions mark, and the options object itself ----------------------------------------------------------
def test_an_option_an_extension_marks_with_hide_dirs_is_locked(compat_path):
    from modules.options import OptionInfo, option_from_info

    options = Options(None, hide_dirs=True)
    hidden = OptionInfo("", "My extension's output folder", component_args={"visible": False})  # shared.hide_dirs
    options.add_option("myext_outdir", option_from_info(hidden))
    options.add_option("myext_strength", option_from_info(OptionInfo(0.5, "Strength")))
    with pytest.raises(OptionRestrictedError, match="myext_outdir"):
        options.validate({"myext_outdir": "/tmp/elsewhere"})
    assert options.validate({"myext_strength": 0.7}) == {"myext_strength": 0.7}
    options.restricted.add("myext_model_dir")  # what `shared.restricted_opts.add(...)` does
    with pytest.raises(OptionRestrictedError, match="myext_model_dir"):
        options.validate({"myext_model_dir": "/tmp/elsewhere"})


def test_the_shim_exposes_restricted_opts(make_services, tmp_path, compat_path):
    services = make_services(flags=[FLAG])
    problems = ProblemLog()
    RUNTIME.bind(services, types.SimpleNamespace(callbacks=CallbackRegistry(problems), problems=problems))
    try:
        from modules import shared
        assert shared.restricted_opts is shared.opts.restricted_opts is services.options.restricted
        shared.restricted_opts.add("myext_dir")
        shared.opts.add_option("myext_dir", shared.OptionInfo("", "Folder", component_args=shared.hide_dirs))
        with pytest.raises(OptionError, match="--hide-ui-dir-config"):
            shared.opts.myext_dir = str(tmp_path)
        assert shared.opts.set("outdir_txt2img_samples", str(tmp_path), is_api=True) is False  # A1111: not set
        assert services.options.get("outdir_txt2img_samples") == ""  # unchanged: still the default folder,
        assert shared.opts.outdir_txt2img_samples == str(services.paths.outputs / "txt2img-images")  # named so
    finally:
        RUNTIME.bind(None, None)


def test_without_the_flag_nothing_is_locked():
    options = Options(None)
    assert options.is_restricted("outdir_txt2img_samples") and not options.locked("outdir_txt2img_samples")
    assert options.validate({"outdir_samples": "/x", "directories_filename_pattern": "[prompt]"}) == {
        "outdir_samples": "/x", "directories_filename_pattern": "[prompt]"}


def test_the_admins_config_file_still_loads_under_the_flag(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"outdir_txt2img_samples": str(tmp_path / "mine")}), encoding="utf-8")
    options = Options(config, hide_dirs=True)
    assert options.get("outdir_txt2img_samples") == str(tmp_path / "mine")
    options.update({"samples_format": "webp"})  # saving other options keeps the admin's folder
    assert json.loads(config.read_text(encoding="utf-8"))["outdir_txt2img_samples"] == str(tmp_path / "mine")


def test_the_restriction_is_a_403_user_error():
    error = OptionRestrictedError("x")
    assert isinstance(error, OptionError) and error.status == 403 and Option("", "", str).restricted is False


# --- the extension index address ------------------------------------------------------------------------------------
def test_the_index_address_is_fixed_under_the_flag(tmp_path):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"extensions": [{"name": "secret", "url": "https://example.invalid/x.git"}]}))
    services = SimpleNamespace(flags=parse_flags([FLAG]))
    with pytest.warns(UserWarning, match="--hide-ui-dir-config"):
        state, _, table, _ = extensions_tab.load_available(services, str(index), "", [], "newest first")
    assert state is None and "secret" not in table and FLAG in table


def test_the_index_address_can_be_a_local_file_without_the_flag(tmp_path, make_services):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"extensions": [{"name": "mine", "url": "https://example.invalid/mine.git"}]}))
    services = make_services()
    state, _, table, _ = extensions_tab.load_available(services, str(index), "", [], "newest first")
    assert state is not None and [e.name for e in state.entries] == ["mine"]
