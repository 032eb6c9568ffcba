"""A1111's `/file=<path>` route (webui/extensions/file_route.py): what extensions' page scripts fetch (tagcomplete's
tag lists by absolute path, its `tmp/` note by a path relative to the program's folder), served only from enabled
extensions' folders, the outputs folders and the program's `tmp/`; never settings, hidden files, a `..` or a
symlink that leads out; behind the page's login. Small apps (the route alone, and the route behind the real login
gate), so no UI is built."""
from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from webui.extensions.file_route import install_file_route, program_dir
from webui.settings.flags import parse_flags
from webui.settings.paths import Paths
from webui.ui.login import UiLogin, UiLoginGate


@pytest.fixture
def served(tmp_path):
    """A data dir with an enabled and a disabled extension, outputs, settings; a client of the route."""
    data = tmp_path / "data"
    paths = Paths.from_flags(parse_flags(["--data-dir", str(data)]))
    enabled = paths.extensions / "tags-ext"
    disabled = paths.extensions / "off-ext"
    for folder in (enabled / "tags", enabled / ".git", disabled, paths.outputs / "txt2img-images"):
        folder.mkdir(parents=True)
    (enabled / "tags" / "danbooru.csv").write_text("1girl,0,6000000\n", encoding="utf-8")
    (enabled / ".git" / "config").write_text("[remote] url=https://token@example.com/x\n", encoding="utf-8")
    (disabled / "secret.txt").write_text("disabled extension", encoding="utf-8")
    (enabled / "setting.json").write_text('{"civitai_api_key": "s3cret"}', encoding="utf-8")
    (enabled / "wib.sqlite3").write_text("s3cret prompts", encoding="utf-8")
    (paths.outputs / "txt2img-images" / "00001.png").write_bytes(b"\x89PNG fake")
    paths.config_file.write_text('{"api_key": "s3cret"}', encoding="utf-8")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside", encoding="utf-8")
    os.symlink(outside, enabled / "tags" / "link.csv")
    extensions = [SimpleNamespace(name="tags-ext", path=enabled, enabled=True)]
    services = SimpleNamespace(paths=paths, options=SimpleNamespace(as_dict=lambda: {}),
                               extension_host=SimpleNamespace(enabled=lambda: extensions))
    app = FastAPI()
    install_file_route(app, services)
    return SimpleNamespace(client=TestClient(app), app=app, services=services, paths=paths, enabled=enabled,
                           disabled=disabled, outside=outside)


def test_serves_an_extensions_file_by_absolute_path(served):
    # tagcomplete: fetch(`file=${tagBasePath}/${tagFile}?${time}`), tagBasePath being its tags folder's posix path
    answer = served.client.get(f"/file={(served.enabled / 'tags' / 'danbooru.csv').as_posix()}?1700000000")
    assert answer.status_code == 200
    assert answer.text == "1girl,0,6000000\n"


def test_serves_outputs_and_the_program_tmp_folder(served):
    picture = served.paths.outputs / "txt2img-images" / "00001.png"
    assert served.client.get(f"/file={picture}").content == b"\x89PNG fake"
    name = f"page-api-test-{uuid.uuid4().hex}.txt"  # tagcomplete: file=tmp/tagAutocompletePath.txt
    note = program_dir() / "tmp" / name
    made_tmp = not note.parent.exists()
    note.parent.mkdir(exist_ok=True)
    try:
        note.write_text("/some/tags/folder", encoding="utf-8")
        answer = served.client.get(f"/file=tmp/{name}?123")
        assert (answer.status_code, answer.text) == (200, "/some/tags/folder")
        assert served.client.head(f"/file=tmp/{name}").status_code == 200
    finally:
        note.unlink()
        if made_tmp:
            note.parent.rmdir()


@pytest.mark.parametrize("which", ["config", "outside", "dotdot", "symlink", "disabled", "git", "folder",
                                   "ext-settings", "ext-database"])
def test_refuses_what_is_not_an_allowed_file(served, which):
    tags = served.enabled / "tags"
    path = {
        "config": str(served.paths.config_file),
        "outside": str(served.outside),
        "dotdot": f"{tags.as_posix()}/../../../config.json",
        "symlink": str(tags / "link.csv"),
        "disabled": str(served.disabled / "secret.txt"),
        "git": str(served.enabled / ".git" / "config"),
        "folder": str(tags),
        "ext-settings": str(served.enabled / "setting.json"),
        "ext-database": str(served.enabled / "wib.sqlite3"),
    }[which]
    answer = served.client.get(f"/file={path}")
    assert answer.status_code == 403
    assert "s3cret" not in answer.text and "outside" != answer.text and "token" not in answer.text


def test_missing_files_inside_allowed_folders_are_404(served):
    assert served.client.get(f"/file={served.enabled / 'tags' / 'nope.csv'}").status_code == 404
    assert served.client.get(f"/file={served.paths.outputs / 'nope.png'}").status_code == 404
    assert served.client.get("/file=/etc/passwd").status_code == 403  # outside: existence is not told
    assert served.client.get("/file=/no/such/file").status_code == 403


def test_the_route_needs_the_page_login(served):
    login = UiLogin([("user", "pass")])
    gated = FastAPI()
    open_routes = login.install_routes(gated)
    install_file_route(gated, served.services)
    gated.add_middleware(UiLoginGate, login=login, open_routes=open_routes)
    client = TestClient(gated)
    url = f"/file={(served.enabled / 'tags' / 'danbooru.csv').as_posix()}"
    assert client.get(url).status_code == 401
    assert client.post("/login", data={"username": "user", "password": "pass"}).status_code == 200
    assert client.get(url).text == "1girl,0,6000000\n"
    basic = "Basic " + base64.b64encode(b"user:wrong").decode()
    assert TestClient(gated).get(url, headers={"Authorization": basic}).status_code == 401



def test_the_real_app_keeps_the_route_behind_the_page_login_with_api_auth_too(tmp_path, tiny_models):
    """In the app as started: with --gradio-auth and --api-auth, `/file=` still needs the page's login."""
    from app import create_app
    from tests.conftest import install_model
    data = tmp_path / "data"
    install_model(data, tiny_models["sd1"])
    flags = parse_flags(["--data-dir", str(data), "--gradio-auth", "u:p", "--api-auth", "a:b"])
    app, services = create_app(flags)
    try:
        outputs = services.paths.outputs / "txt2img-images"
        outputs.mkdir(parents=True, exist_ok=True)
        (outputs / "x.png").write_bytes(b"\x89PNG fake")
        client = TestClient(app)
        answer = client.get(f"/file={outputs / 'x.png'}", follow_redirects=False)
        assert answer.status_code in (401, 302, 303, 307) and answer.content != b"\x89PNG fake"
        api_key = base64.b64encode(b"a:b").decode()
        answer = client.get(f"/file={outputs / 'x.png'}", headers={"Authorization": f"Basic {api_key}"},
                            follow_redirects=False)
        assert answer.content != b"\x89PNG fake"  # the API's login is not the page's
        assert client.post("/login", data={"username": "u", "password": "p"}).status_code == 200
        assert client.get(f"/file={outputs / 'x.png'}").content == b"\x89PNG fake"  # the page's login opens it
    finally:
        services.stop()
