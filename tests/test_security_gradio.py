"""Issue #19: the web UI reachable from a LAN (`--listen`) or through a tunnel, seen by an attacker.

1. No Gradio event reads a server file it was not sent: every event of the page whose inputs take a file or image
   (found from the page's own config, not listed here) is called through `queue/join` with a forged file naming a
   secret on the server; neither the event's messages nor `/gradio_api/file=` for any path they mention gives the
   secret back. Gradio serves the outputs folder, but never the settings, job history or models, even when the
   outputs folder is the data dir. Uploads (PNG Info, img2img) still work.
2. With `--gradio-auth`, nothing but the login form answers before a login (the API too, unless `--api-auth`
   guards it): the extra networks'
   previews, extensions' routes and Gradio's routes answer 401, the same for a file that exists and one that does
   not. After a login (session cookie or HTTP Basic) they work as before; the API keeps its own `--api-auth`.
3. The login page is only a form: no Gradio config, no API description, no checkpoint name.

Servers: one without logins, one with `--listen` whose outputs folder is the data dir, one with `--gradio-auth`;
each over a tiny SD1 checkpoint with a name found nowhere else, its preview, and a small extension with routes.
"""
from __future__ import annotations

import io
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image, PngImagePlugin

from browser import browser, new_page, wait_for_ui  # noqa: F401 - fixtures
from conftest import install_model
from live_server import LiveServer, serve

USER, PASSWORD = "carol", "hunter2"
CHECKPOINT = "zebra-quartz-31"  # a name nobody else uses: seen in a page, the page showed the checkpoint list
FILE_DATA = "gradio.FileData"

# An extension with a route of our API and one that an A1111 on_app_started callback adds.
EXTENSION = {
    "scripts/own_route.py": '''
def register(webui):
    webui.add_route("/guarded-ext/status", lambda: {"answer": "extension status"})
''',
    "scripts/a1111_route.py": '''
from modules import script_callbacks


def started(demo, app):
    @app.get("/guarded-ext/a1111")
    def a1111():
        return {"answer": "a1111 route"}


script_callbacks.on_app_started(started)
''',
}


def png_bytes(text: str | None = None, size=(64, 64), color=(200, 120, 40)) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


@dataclass
class Secrets:
    token: str  # what must never come back
    files: list[Path]  # files holding it: outside the data dir (text, PNG) and the data dir's config.json


@dataclass
class Target:
    kind: str
    server: LiveServer
    client: httpx.Client  # logged in where the server has logins
    secrets: Secrets

    @property
    def data(self) -> Path:
        return self.server.data_dir


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> Secrets:
    token = f"SECRET-{uuid.uuid4().hex}"  # fresh every run: copies an older, unfixed run left in Gradio's cache
    folder = tmp_path_factory.mktemp("attacker-wants")  # outside every data dir, in the temp dir Gradio trusts
    (folder / "secret.txt").write_text(f"api key: {token}\n")
    (folder / "secret.png").write_bytes(png_bytes(f"{token}\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64"))
    return Secrets(token, [folder / "secret.txt", folder / "secret.png"])


def make_data_dir(root: Path, tiny_models, secrets: Secrets) -> Path:
    data = root / "data"
    checkpoint = install_model(data, tiny_models["sd1"], f"{CHECKPOINT}.safetensors")
    checkpoint.with_suffix(".png").write_bytes(png_bytes(color=(10, 200, 10)))  # its card's preview
    (data / "config.json").write_text(json.dumps({"webui_test_api_key": secrets.token}))  # an extension's key
    for relative, text in EXTENSION.items():
        target = data / "extensions" / "guarded-ext" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return data


FLAGS = {"open": [], "listen": ["--listen", "--outdir", "{data}"], "auth": ["--gradio-auth", f"{USER}:{PASSWORD}"]}


@pytest.fixture(scope="module", params=list(FLAGS))
def target(request, tmp_path_factory, tiny_models, secrets):
    data = make_data_dir(tmp_path_factory.mktemp(f"security-{request.param}"), tiny_models, secrets)
    flags = [flag.replace("{data}", str(data)) for flag in FLAGS[request.param]]
    with serve(data, *flags) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        if request.param == "auth":
            assert client.post("/login", data={"username": USER, "password": PASSWORD}).json() == {"success": True}
        yield Target(request.param, server, client, Secrets(secrets.token, secrets.files + [data / "config.json"]))


def only(kind: str):
    """Run a test against that one of the `target` servers."""
    return pytest.mark.parametrize("target", [kind], indirect=True)


# --- Gradio's page config and events, as a browser (or an attacker) sees them ------------------------------------
def takes_files(component: dict) -> bool:
    """A component whose value (as its API schema says) holds files: Image, ImageEditor, Gallery, File, ..."""
    return FILE_DATA in json.dumps(component.get("api_info") or {})


def forged(schema: dict, defs: dict, path: str):
    """A value of this schema with a FileData naming `path` wherever it holds a file (Gradio's own shape)."""
    if "$ref" in schema:
        return forged(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, path)
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        return forged(options[0], defs, path) if options else None
    properties = schema.get("properties", {})
    if "path" in properties and "meta" in properties:
        return {"path": path, "meta": {"_type": FILE_DATA}, "orig_name": Path(path).name}
    if schema.get("type") == "object":
        return {key: forged(value, defs, path) for key, value in properties.items()}
    if schema.get("type") == "array":
        return [forged(schema["items"], defs, path)] if "items" in schema else []
    return schema.get("default")


def event_data(config: dict, event: dict, files: dict | None = None, values: dict | None = None) -> list:
    """The inputs a browser would send: each component's current value (None for a State); `files` maps a
    file-taking component's id to a path to forge, `values` an elem_id to a value."""
    components = {c["id"]: c for c in config["components"]}
    data = []
    for component_id in event["inputs"]:
        component = components[component_id]
        props = component.get("props", {})
        if files and component_id in files:
            schema = component["api_info"]
            data.append(forged(schema, schema.get("$defs", {}), files[component_id]))
        elif values and props.get("elem_id") in values:
            data.append(values[props["elem_id"]])
        else:
            data.append(None if component["type"] == "state" else props.get("value"))
    return data


def file_events(config: dict) -> list[tuple[dict, list[int]]]:
    """Every event with a Python function whose inputs take a file: (event, the ids of those inputs)."""
    taking = {c["id"] for c in config["components"] if takes_files(c)}
    return [(event, [i for i in event["inputs"] if i in taking]) for event in config["dependencies"]
            if event.get("backend_fn") and taking.intersection(event["inputs"])]


def run_event(client: httpx.Client, event: dict, data: list, timeout: float = 120) -> list[dict]:
    """Join the queue as the page does and read the session's messages until the event completes."""
    session = uuid.uuid4().hex
    trigger = event["targets"][0][0] if event.get("targets") else None
    joined = client.post("/gradio_api/queue/join", json={"fn_index": event["id"], "data": data, "event_data": None,
                                                         "session_hash": session, "trigger_id": trigger})
    if joined.status_code != 200:
        return [{"msg": "refused", "status": joined.status_code, "text": joined.text}]
    messages = []
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}, timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if messages[-1].get("msg") in ("process_completed", "unexpected_error", "close_stream"):
                    break
    return messages


def completed(messages: list[dict]) -> dict:
    done = [m for m in messages if m.get("msg") == "process_completed"]
    assert done, f"the event did not complete: {messages}"
    return done[-1]


def mentioned_paths(text: str) -> set[str]:
    """Absolute paths and /gradio_api/file= URLs an answer names (where a copy of a file would be)."""
    found = set(re.findall(r"file=(/[^\s'\"\\]+)", text))
    found |= {p.rstrip(".,;:)") for p in re.findall(r"(/[^\s'\"\\]+)", text) if Path(p.rstrip(".,;:)")).is_file()}
    return found


def assert_not_served(client: httpx.Client, paths, token: str) -> None:
    for path in paths:
        response = client.get(f"/gradio_api/file={path}")
        assert token.encode() not in response.content, f"/gradio_api/file={path} served the secret"


def config_of(target: Target) -> dict:
    config = target.client.get("/config")
    assert config.status_code == 200, config.text
    return config.json()


def by_elem_id(config: dict, elem_id: str) -> dict:
    return next(c for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)


# --- 1. files through Gradio ----------------------------------------------------------------------------------------
def test_no_event_reads_a_server_file_it_was_not_sent(target):
    config = config_of(target)
    events = file_events(config)
    pnginfo = by_elem_id(config, "pnginfo_image")["id"]
    img2img = by_elem_id(config, "img2img_image")["id"]
    assert any(pnginfo in ids for _, ids in events) and any(img2img in ids for _, ids in events)
    token, answers = target.secrets.token, []
    for event, file_inputs in events:
        for secret in target.secrets.files:
            messages = run_event(target.client, event, event_data(config, event, {i: str(secret) for i in file_inputs}))
            text = json.dumps(messages)
            assert token not in text, f"event {event['id']} ({event['api_name']}) answered the secret"
            result = completed(messages)
            assert result["success"] is False and str(secret) in result["output"]["error"], \
                f"event {event['id']} ({event['api_name']}) was not refused at its file input: {result}"
            answers.append(text)
    served = set().union(*map(mentioned_paths, answers)) | {str(p) for p in target.secrets.files}
    assert_not_served(target.client, served, token)


def test_gradio_serves_outputs_but_not_settings_history_or_models(target):
    output = target.server.services.paths.outputs / "txt2img-images" / "2024-01-01" / "00001-1.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(png_bytes("a saved picture\nSteps: 2, Seed: 1"))
    served = target.client.get(f"/gradio_api/file={output}")
    assert served.status_code == 200 and served.content == output.read_bytes()

    paths = target.server.services.paths
    refused = [paths.config_file, paths.jobs_db, paths.checkpoints / f"{CHECKPOINT}.safetensors",
               paths.checkpoints / f"{CHECKPOINT}.png", paths.extensions / "guarded-ext" / "scripts" / "own_route.py",
               *target.secrets.files]
    for path in refused:
        assert path.is_file(), path
        response = target.client.get(f"/gradio_api/file={path}")
        assert response.status_code == 403, f"{path}: {response.status_code}"
    if target.kind == "listen":  # the outputs folder is the data dir: the blocked list still keeps these out
        assert paths.outputs == target.data


def upload(client: httpx.Client, name: str, content: bytes) -> dict:
    response = client.post("/gradio_api/upload", files={"files": (name, content, "image/png")})
    assert response.status_code == 200, response.text
    (path,) = response.json()
    return {"path": path, "meta": {"_type": FILE_DATA}, "orig_name": name, "mime_type": "image/png"}


def test_uploaded_pictures_still_work(target):
    config = config_of(target)
    pnginfo = by_elem_id(config, "pnginfo_image")["id"]
    read = next(e for e, ids in file_events(config) if ids == [pnginfo] and e["inputs"] == [pnginfo]
                and [pnginfo, "change"] in e["targets"])
    picture = upload(target.client, "lighthouse.png",
                     png_bytes("a lighthouse at dusk\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 99, Size: 64x64"))
    result = completed(run_event(target.client, read, [picture]))
    assert result["success"] is True and "a lighthouse at dusk" in json.dumps(result["output"]), result

    img2img = next(e for e in config["dependencies"] if e.get("api_name") == "img2img")
    image = by_elem_id(config, "img2img_image")["id"]
    data = event_data(config, img2img, values={"img2img_prompt": "a red barn", "img2img_steps": 2,
                                               "img2img_width": 64, "img2img_height": 64})
    data[img2img["inputs"].index(image)] = upload(target.client, "barn.png", png_bytes())
    result = completed(run_event(target.client, img2img, data, timeout=300))
    assert result["success"] is True, result
    gallery = by_elem_id(config, "img2img_gallery")["id"]
    images = result["output"]["data"][img2img["outputs"].index(gallery)]
    made = target.client.get(images[0]["image"]["url"].split(target.server.url, 1)[-1])
    assert made.status_code == 200
    made_image = Image.open(io.BytesIO(made.content))
    assert made_image.size == (64, 64) and "a red barn" in made_image.info.get("parameters", "")


def test_gradio_checks_files_only_for_launched_blocks(monkeypatch, tmp_path, tiny_models, secrets):
    """The Gradio internal our fix relies on (`webui.ui.file_access.count_as_launched`): without it, a mounted page
    copies any file an event names into Gradio's cache and serves it (the attack of issue #19). If this test fails,
    Gradio changed: either it now checks mounted Blocks by itself (then the function can go) or the attack works
    another way (then the tests above fail too)."""
    import webui.ui.file_access as file_access
    monkeypatch.setattr(file_access, "count_as_launched", lambda blocks: None)
    data = make_data_dir(tmp_path, tiny_models, secrets)
    with serve(data) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        config = client.get("/config").json()
        pnginfo = by_elem_id(config, "pnginfo_image")["id"]
        read = next(e for e, ids in file_events(config) if e["inputs"] == [pnginfo])
        text = json.dumps(run_event(client, read, event_data(config, read, {pnginfo: str(secrets.files[0])})))
        leaked = [client.get(f"/gradio_api/file={path}").content for path in mentioned_paths(text)]
    assert any(secrets.token.encode() in content for content in leaked), "Gradio no longer copies unchecked files"


# --- 2. every route of the page behind the UI's login -----------------------------------------------------------
def gradio_get_routes() -> list[str]:
    """The GET routes Gradio itself adds (those without path parameters), from a page mounted the same way."""
    import gradio as gr
    from fastapi import FastAPI
    from starlette.routing import Mount

    with gr.Blocks() as empty:
        gr.Markdown("nothing")
    app = gr.mount_gradio_app(FastAPI(), empty, path="/")
    (mount,) = [r for r in app.routes if isinstance(r, Mount)]
    paths = {route.path for route in mount.routes if "GET" in (getattr(route, "methods", None) or ())}
    return sorted(p for p in paths if "{" not in p and p not in API_PATHS)


API_PATHS = {"/openapi.json", "/docs"}  # ours come first: the API's description, open (or not) as the API is


def assert_tells_nothing(response: httpx.Response) -> None:
    for leak in (CHECKPOINT, "txt2img_generate", "gradio_api_info", "gradio_config", "extension status",
                 "a1111 route"):
        assert leak not in response.text, f"{response.request.url} answered {leak!r} before a login"


@only("auth")
def test_before_a_login_only_the_login_form_answers(target):
    paths = target.server.services.paths
    preview = paths.checkpoints / f"{CHECKPOINT}.png"
    thumbs = [str(preview), str(paths.checkpoints / "no-such-model.png"), str(paths.config_file), "/etc/passwd"]
    with httpx.Client(base_url=target.server.url, timeout=60) as stranger:
        page = stranger.get("/")
        assert page.status_code == 200 and 'id="login_form"' in page.text
        assert_tells_nothing(page)
        answers = [stranger.get("/sd_extra_networks/thumb", params={"filename": name}) for name in thumbs]
        assert {(a.status_code, a.text) for a in answers} == {(401, answers[0].text)}  # existing or not: the same
        for path in ["/guarded-ext/status", "/guarded-ext/a1111", "/gradio_api/info?all_endpoints=true",
                     "/?page=", f"/gradio_api/file={preview}", *gradio_get_routes()]:
            response = stranger.get(path)
            login_form = response.status_code == 200 and 'id="login_form"' in response.text
            assert response.status_code == 401 or login_form or response.headers.get("location") == "./", \
                f"{path}: {response.status_code}"  # (/logout sends a stranger to the login form)
            assert_tells_nothing(response)
        joined = stranger.post("/gradio_api/queue/join", json={"fn_index": 0, "data": [], "session_hash": "x"})
        assert joined.status_code == 401
        upload = stranger.post("/gradio_api/upload", files={"files": ("a.png", png_bytes(), "image/png")})
        assert upload.status_code == 401
        assert stranger.post("/login", data={"username": USER, "password": "wrong"}).status_code == 400
        assert stranger.get("/config").status_code == 401

        # no --api-auth here: the always-on API takes the UI's login, so the flag opens nothing more than it says
        for path in ["/sdapi/v1/samplers", "/sdapi/v1/options", "/queue/history", "/controlnet/model_list",
                     "/docs", "/openapi.json"]:
            response = stranger.get(path)
            assert response.status_code == 401, f"{path}: {response.status_code}"
            assert_tells_nothing(response)
        made = stranger.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "steps": 1, "width": 64, "height": 64})
        assert made.status_code == 401
        # a wrong method on an API path does not slip through to the page either
        assert stranger.post("/sdapi/v1/samplers").status_code == 401
        basic = stranger.get("/sdapi/v1/samplers", auth=(USER, PASSWORD))  # scripts send the UI login
        assert basic.status_code == 200 and any(s["name"] == "Euler" for s in basic.json())


@only("auth")
def test_after_a_login_the_page_and_its_routes_answer(target):
    client, paths = target.client, target.server.services.paths
    page = client.get("/")
    assert page.status_code == 200 and CHECKPOINT in page.text and "txt2img_generate" in page.text
    preview = paths.checkpoints / f"{CHECKPOINT}.png"
    thumb = client.get("/sd_extra_networks/thumb", params={"filename": str(preview)})
    assert thumb.status_code == 200 and thumb.content == preview.read_bytes()
    other = client.get("/sd_extra_networks/thumb", params={"filename": str(paths.config_file)})
    assert other.status_code == 403  # logged in: the route's own answer
    assert client.get("/guarded-ext/status").json() == {"answer": "extension status"}
    assert client.get("/guarded-ext/a1111").json() == {"answer": "a1111 route"}
    assert CHECKPOINT in client.get("/gradio_api/info").text

    # Gradio's handlers know who is logged in: Generate remembers the prompt in that user's last-used file
    config = config_of(target)
    generate = by_elem_id(config, "txt2img_generate")["id"]
    remember = next(e for e in config["dependencies"] if [generate, "click"] in e["targets"] and e["queue"] is False)
    result = completed(run_event(client, remember, event_data(config, remember, values={"txt2img_prompt": "mine"})))
    assert result["success"] is True, result
    assert json.loads((target.data / f"ui-last-used-{USER}.json").read_text())["txt2img/Prompt"] == "mine"

    # HTTP Basic with a UI login works for scripts; a wrong one does not
    url = target.server.url
    assert httpx.get(f"{url}/guarded-ext/status", auth=(USER, PASSWORD)).status_code == 200
    assert httpx.get(f"{url}/sd_extra_networks/thumb", params={"filename": str(preview)},
                     auth=(USER, PASSWORD)).content == preview.read_bytes()
    assert httpx.get(f"{url}/guarded-ext/status", auth=(USER, "wrong")).status_code == 401

    # logging out ends the session
    with httpx.Client(base_url=url, timeout=60) as other_browser:
        assert other_browser.post("/login", data={"username": USER, "password": PASSWORD}).status_code == 200
        assert other_browser.get("/config").status_code == 200
        other_browser.get("/logout")
        assert other_browser.get("/config").status_code == 401
    assert client.get("/config").status_code == 200  # another session stays logged in


@only("auth")
def test_gradio_client_logs_in_and_uploads(target):
    from gradio_client import Client, handle_file

    picture = target.data / "client-upload.png"
    picture.write_bytes(png_bytes("a kite over the sea\nSteps: 3, Sampler: Euler, Seed: 5, Size: 64x64"))
    client = Client(target.server.url + "/", auth=(USER, PASSWORD), verbose=False)
    try:
        config = client.config
        pnginfo = by_elem_id(config, "pnginfo_image")["id"]
        read = next(e for e in config["dependencies"] if e["inputs"] == [pnginfo] and e.get("api_name"))
        answer = client.predict(handle_file(str(picture)), api_name=f"/{read['api_name']}")
    finally:
        client.close()
    assert "a kite over the sea" in json.dumps(answer)


@only("auth")
def test_a_browser_logs_in_then_reads_a_dropped_picture(target, new_page):
    from playwright.sync_api import expect

    picture = target.data / "dropped.png"
    picture.write_bytes(png_bytes("a tram in the rain\nSteps: 3, Sampler: Euler, Seed: 4242, Size: 64x64"))
    page = new_page(target.server.url)
    page.locator("#login_username").fill(USER)
    page.locator("#login_password").fill("wrong")
    page.locator("#login_submit").click()
    expect(page.locator("#login_error")).to_have_text("Incorrect username or password")
    page.locator("#login_password").fill(PASSWORD)
    page.locator("#login_submit").click()
    wait_for_ui(page)
    expect(page.locator("#setting_sd_model_checkpoint input")).to_have_value(re.compile(CHECKPOINT))
    page.locator("#tab_pnginfo-button").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(picture))
    expect(page.locator("#pnginfo_generation_info textarea")).to_have_value(re.compile("Seed: 4242"))
    expect(page.locator("#html_info")).to_contain_text("a tram in the rain")
