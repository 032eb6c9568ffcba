"""txt2img / img2img "Override settings" (A1111 1.10's): an infotext sent to a tab puts the settings it carries
(ENSD, Eta, RNG, ... `SETTING_KEYS`) that differ from the server's into a multiselect dropdown; Generate runs the job
with the selected ones, so the tab gives the picture the API's `infotext` field gives. Driven as the other UI tests
are: the handlers against real services with a tiny model, the Blocks' wiring, and the app served for Gradio's own
client and the API."""
from __future__ import annotations

import base64
import io
import socket
import threading
import time

import gradio as gr
import httpx
import pytest
from PIL import Image

from tests.conftest import install_model, max_pixel_difference
from webui.outputs.save import read_infotext
from webui.settings.flags import parse_flags
from webui.ui import generation, override_settings, pnginfo
from webui.ui.blocks import build_ui

# An A1111 infotext with settings that differ from this server's defaults (ENSD 0, Eta 1, RNG CPU) and one that
# does not (Clip skip 1). Euler a writes ENSD and Eta, and its step noise depends on all three.
INFOTEXT = ("a red fox in the snow\nNegative prompt: blurry\nSteps: 4, Sampler: Euler a, Schedule type: Karras, "
            "CFG scale: 6.5, Seed: 1234, Size: 64x72, Clip skip: 1, ENSD: 31337, Eta: 0.5, RNG: NV")
PASTED = ["RNG: NV", "ENSD: 31337", "Eta: 0.5"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_models):
    """The whole app (API and UI) served by uvicorn over a data dir with a tiny SD1 model: (url, services)."""
    import uvicorn

    from app import create_app

    data = tmp_path_factory.mktemp("override-data")
    install_model(data, tiny_models["sd1"])
    app, services = create_app(parse_flags(["--data-dir", str(data)]))
    services.hasher.wait_idle(30)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/", services
    finally:
        server.should_exit = True
        thread.join(15)
        services.stop()


@pytest.fixture
def services(served):
    return served[1]


def shown(update) -> dict:
    """What the user sees of a dropdown update: its choices, its selected values, whether it shows."""
    return {"choices": [choice[0] for choice in update.choices], "value": list(update.value),
            "visible": update.visible}


def sent_values(text: str) -> dict:
    """The txt2img tab's values after PNG Info's "Send to txt2img" (from a tab that had Euler / Automatic)."""
    return dict(zip(pnginfo.FIELDS, pnginfo.send_to("txt2img", text, "Euler", "Automatic")[:-1]))


def generate(services, values: dict, entries, mode="txt2img", **named) -> list[tuple]:
    shared = (values["prompt"], values["negative_prompt"], values["sampler"], values["scheduler"], values["steps"],
              values["width"], values["height"], 1, 1, values["cfg_scale"], values["seed"])
    return list(generation.generate(services, mode, None, *shared, override_settings=entries, **named))


def result(outputs: list[tuple]) -> dict:
    last = dict(zip(generation.OUTPUTS, outputs[-1]))
    assert last["gallery"] and not isinstance(last["gallery"], dict), "the job made no image"
    return last


def api_image(url: str, body: dict) -> tuple[Image.Image, str]:
    response = httpx.post(url + "sdapi/v1/txt2img", json=body, timeout=120)
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
    return image, read_infotext(image)


# --- the dropdown -------------------------------------------------------------------------------------------------
def test_each_tab_has_a_hidden_empty_override_settings_dropdown_the_send_buttons_fill(services):
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    for mode in ("txt2img", "img2img"):
        dropdown = by_id[f"{mode}_override_settings"]
        assert isinstance(dropdown, gr.Dropdown) and dropdown.multiselect
        assert dropdown.label == "Override settings" and dropdown.value == [] and dropdown.visible is False
    # every Send button that fills a tab from an infotext also fills its Override settings
    senders = {"txt2img_override_settings": {"pnginfo_send_txt2img", "history_send_txt2img"},
               "img2img_override_settings": {"pnginfo_send_img2img", "history_send_img2img",
                                             "txt2img_send_to_img2img", "txt2img_send_to_inpaint",
                                             "img2img_send_to_img2img", "img2img_send_to_inpaint"}}
    for target, buttons in senders.items():
        wired = {blocks.blocks[trigger].elem_id for dep in blocks.config["dependencies"]
                 if by_id[target]._id in dep["outputs"] for trigger, _ in dep["targets"]}
        assert buttons <= wired, buttons - wired
        # ... and Generate sends it with the tab's other values (just before the styles, the last input)
        generate_dep = next(dep for dep in blocks.config["dependencies"]
                            if dep.get("api_name") == target.split("_")[0])
        assert generate_dep["inputs"][-2:] == [by_id[target]._id, by_id[target.split("_")[0] + "_styles"]._id]


def test_sending_an_infotext_selects_the_settings_that_differ_from_the_servers(services):
    update = override_settings.pasted(services, INFOTEXT)
    assert shown(update) == {"choices": PASTED, "value": PASTED, "visible": True}  # Clip skip 1 is the server's
    # the fields the infotext fills are as before: sampler and schedule type included
    values = {name: value for name, value in sent_values(INFOTEXT).items() if value != gr.skip()}
    assert values == {"prompt": "a red fox in the snow", "negative_prompt": "blurry", "steps": 4,
                      "sampler": "Euler a", "scheduler": "Karras", "cfg_scale": 6.5, "seed": 1234, "width": 64,
                      "height": 72, "subseed_show": False, "tiling": False}  # no variation seed, no Tiling: off
    old_name = INFOTEXT.replace("Sampler: Euler a, Schedule type: Karras", "Sampler: DPM++ 2M Karras")
    assert (sent_values(old_name)["sampler"], sent_values(old_name)["scheduler"]) == ("DPM++ 2M", "Karras")
    assert shown(override_settings.pasted(services, old_name))["value"] == PASTED

    # settings equal to the server's are left out; with none left the dropdown empties and hides
    same = INFOTEXT.replace("ENSD: 31337, Eta: 0.5, RNG: NV", "ENSD: 0, Eta: 1.0, RNG: CPU, Eta DDIM: 0")
    assert shown(override_settings.pasted(services, same)) == {"choices": [], "value": [], "visible": False}
    # A1111's parse default: an infotext without RNG was made with GPU noise (this server's default is CPU)
    assert shown(override_settings.pasted(services, INFOTEXT.replace(", RNG: NV", "")))["value"] == \
        ["RNG: GPU", "ENSD: 31337", "Eta: 0.5"]
    # nothing sent (the Send handler says why): the dropdown stays as it is
    assert isinstance(override_settings.pasted(services, ""), dict)
    # booleans and the checkpoint's hash, as A1111 writes them
    checkpoint = services.models.checkpoints()[0]
    services.models.registry.ensure_hash(checkpoint)
    flags = INFOTEXT + ", Discard penultimate sigma: True, Model hash: " + services.models.resolve(
        checkpoint.title).shorthash
    assert shown(override_settings.pasted(services, flags))["value"] == PASTED + ["Discard penultimate sigma: True"]
    assert override_settings.to_overrides(services, ["Discard penultimate sigma: True", "Model hash: " +
                                                     services.models.resolve(checkpoint.title).shorthash]) == \
        {"always_discard_next_to_last_sigma": True, "sd_model_checkpoint": checkpoint.title}


def test_a_value_the_server_cannot_use_is_left_out_with_a_notice(services):
    with pytest.warns(UserWarning, match=r"Model hash: 0123456789 \(Unknown checkpoint.*ENSD: lots \(.*must be int"):
        update = override_settings.pasted(services, INFOTEXT.replace("31337", "lots") + ", Model hash: 0123456789")
    assert shown(update)["value"] == ["RNG: NV", "Eta: 0.5"]


# --- Generate -----------------------------------------------------------------------------------------------------
def test_generate_runs_with_the_selected_settings_and_gives_the_apis_picture(served):
    url, services = served
    values = sent_values(INFOTEXT)
    entries = shown(override_settings.pasted(services, INFOTEXT))["value"]
    last = result(generate(services, values, entries))
    image, infotext = last["gallery"][0], last["state"]["infotexts"][0]
    for written in ("Sampler: Euler a", "Schedule type: Karras", "ENSD: 31337", "Eta: 0.5", "RNG: NV"):
        assert written in infotext and written in last["infotext"]
    # the server's settings are untouched: the overrides were the job's
    assert (services.options.get("eta_noise_seed_delta"), services.options.get("eta_ancestral"),
            services.options.get("randn_source")) == (0, 1.0, "CPU")

    api, api_infotext = api_image(url, {"infotext": INFOTEXT})
    assert api_infotext == infotext
    assert max_pixel_difference(image, api) == 0, "the UI and the API made different pictures"

    # removing the entries (deselecting them) generates with the server's settings: another picture
    plain = result(generate(services, values, []))
    assert "ENSD" not in plain["state"]["infotexts"][0] and "RNG: CPU" in plain["state"]["infotexts"][0]
    assert max_pixel_difference(plain["gallery"][0], image) > 0
    only_ensd = result(generate(services, values, ["ENSD: 31337"]))
    text = only_ensd["state"]["infotexts"][0]
    assert "ENSD: 31337" in text and "Eta" not in text and "RNG: CPU" in text

    # the image made is sent on to img2img (a gallery's Send to img2img): its settings come along
    assert shown(override_settings.pasted(services, pnginfo.selected_infotext(last["state"])))["value"] == PASTED


def test_img2img_runs_with_the_selected_settings(services):
    values = sent_values(INFOTEXT)
    picture = Image.new("RGB", (64, 72), (120, 60, 30))
    own = {"img2img_mode": "img2img", "image": picture, "denoising_strength": 0.6, "resize_mode": 0}
    infotext = result(generate(services, values, PASTED, mode="img2img", img2img=own))["state"]["infotexts"][0]
    assert "ENSD: 31337" in infotext and "Eta: 0.5" in infotext and "RNG: NV" in infotext


@pytest.mark.parametrize("entries, message", [
    (["ENSD: lots"], r"Override settings: 'ENSD: lots' cannot be used \(option 'eta_noise_seed_delta' must be int"),
    (["Eta: 70"], r"'Eta: 70' cannot be used \(option 'eta_ancestral' must be at most 10.0"),
    (["Mystery: 3"], r"'Mystery: 3' is not a setting"),
    (["no colon"], r"'no colon' is not a setting"),
])
def test_an_entry_the_server_cannot_use_is_a_notice_and_nothing_is_queued(services, entries, message):
    pending = services.queue.pending()
    with pytest.warns(UserWarning, match=message):
        outputs = generate(services, sent_values(INFOTEXT), entries)
    assert len(outputs) == 1
    out = dict(zip(generation.OUTPUTS, outputs[0]))
    assert out["state"]["job_id"] is None and out["generate"].visible
    assert services.queue.pending() == pending


def test_gradio_clients_pass_override_settings_to_generate(served):
    from gradio_client import Client

    url, services = served
    values = sent_values(INFOTEXT)
    shared = [values[name] for name in ("prompt", "negative_prompt", "sampler", "scheduler", "steps", "width",
                                        "height")] + [1, 1, values["cfg_scale"], values["seed"]]
    client = Client(url, verbose=False)
    try:
        outputs = client.predict(*shared, override_settings=PASTED, api_name="/txt2img")
    finally:
        client.close()
    progress, gallery, infotext = outputs[:3]
    assert "Done" in progress and "ENSD: 31337" in infotext and "Eta: 0.5" in infotext and "RNG: NV" in infotext
    api, _ = api_image(url, {"infotext": INFOTEXT})
    assert max_pixel_difference(Image.open(gallery[0]["image"]).convert("RGB"), api.convert("RGB")) == 0
