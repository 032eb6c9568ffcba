"""Logins over a real socket. `--api-auth alice:secret,bob:pw` guards /sdapi/v1 and /controlnet with HTTP Basic
(401 without or with wrong credentials; either user gets in, `webuiapi`'s `set_auth` included). `--gradio-auth`
guards the web UI; the API, which is always on here (A1111 needs `--api`), takes the UI's logins too unless
`--api-auth` gives it its own.

Two servers: one API-only with --api-auth, one with the UI and --gradio-auth; each over a tiny SD1 checkpoint.
"""
from __future__ import annotations

import httpx
import pytest
import webuiapi

from conftest import install_model
from live_server import serve

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}
USERS = [("alice", "secret"), ("bob", "pw")]
WRONG = [None, ("alice", "pw"), ("bob", "secret"), ("mallory", "secret"), ("alice", ""), ("", "")]
GUARDED = ["/sdapi/v1/samplers", "/sdapi/v1/sd-models", "/sdapi/v1/options", "/sdapi/v1/progress",
           "/controlnet/version", "/controlnet/model_list", "/controlnet/module_list"]


@pytest.fixture(scope="module")
def api_auth_server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("api-auth-data")
    install_model(data, tiny_models["sd1"], "alpha-tiny.safetensors")
    with serve(data, "--nowebui", "--api-auth", "alice:secret, bob:pw") as live:
        yield live


@pytest.fixture(scope="module")
def gradio_auth_server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("gradio-auth-data")
    install_model(data, tiny_models["sd1"], "alpha-tiny.safetensors")
    with serve(data, "--gradio-auth", "carol:hunter2") as live:
        yield live


# --- --api-auth ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("credentials", WRONG, ids=lambda c: "none" if c is None else f"{c[0] or '-'}:{c[1] or '-'}")
def test_missing_or_wrong_credentials_get_401(api_auth_server, credentials):
    for path in GUARDED:
        response = httpx.get(api_auth_server.url + path, auth=credentials, timeout=30)
        assert response.status_code == 401, f"{path} with {credentials}: {response.status_code} {response.text}"
        assert response.headers.get("www-authenticate", "").lower().startswith("basic")
    refused = httpx.post(api_auth_server.api("txt2img"), json=SMALL, auth=credentials, timeout=30)
    assert refused.status_code == 401 and "images" not in refused.text


@pytest.mark.parametrize("credentials", USERS, ids=lambda c: c[0])
def test_each_user_gets_in(api_auth_server, credentials):
    for path in GUARDED:
        response = httpx.get(api_auth_server.url + path, auth=credentials, timeout=30)
        assert response.status_code == 200, f"{path} as {credentials[0]}: {response.status_code} {response.text}"
    assert any(s["name"] == "Euler" for s in httpx.get(api_auth_server.api("samplers"), auth=credentials,
                                                        timeout=30).json())
    made = httpx.post(api_auth_server.api("txt2img"), json={**SMALL, "prompt": f"for {credentials[0]}"},
                      auth=credentials, timeout=60)
    assert made.status_code == 200, made.text
    assert len(made.json()["images"]) == 1


def test_webuiapi_with_set_auth(api_auth_server):
    api = webuiapi.WebUIApi(host=api_auth_server.host, port=api_auth_server.port, sampler="Euler", steps=2)
    with pytest.raises(RuntimeError) as refused:  # webuiapi raises RuntimeError(status, text) on a non-200
        api.txt2img(prompt="no login", width=64, height=64)
    assert refused.value.args[0] == 401

    api.set_auth("alice", "secret")
    result = api.txt2img(prompt="with login", seed=21, width=64, height=64)
    assert len(result.images) == 1 and result.info["seed"] == 21
    assert "Euler" in api.util_get_sampler_names()

    bob = webuiapi.WebUIApi(host=api_auth_server.host, port=api_auth_server.port, username="bob", password="pw")
    assert bob.util_get_current_model().startswith("alpha-tiny")


# --- --gradio-auth -------------------------------------------------------------------------------------------------
def test_gradio_auth_guards_the_ui_and_the_api_without_its_own_auth(gradio_auth_server):
    url = gradio_auth_server.url
    with httpx.Client(base_url=url, timeout=60) as browser:
        page = browser.get("/")
        # Gradio answers a login form, not the UI: no components of ours until someone logs in
        assert page.status_code in (200, 401) or page.is_redirect
        assert "txt2img_generate" not in page.text
        assert browser.get("/config").status_code == 401

        assert browser.post("/login", data={"username": "carol", "password": "wrong"}).status_code >= 400
        assert browser.get("/config").status_code == 401
        login = browser.post("/login", data={"username": "carol", "password": "hunter2"})
        assert login.status_code == 200 and login.json() == {"success": True}
        config = browser.get("/config")
        assert config.status_code == 200 and "txt2img_generate" in config.text
        assert "txt2img_generate" in browser.get("/").text  # now the page is the UI

    # No --api-auth: the always-on API is not left open; the UI's login works as HTTP Basic (webuiapi's set_auth)
    assert httpx.get(gradio_auth_server.api("samplers"), timeout=30).status_code == 401
    assert httpx.post(gradio_auth_server.api("txt2img"), json=SMALL, timeout=60).status_code == 401
    samplers = httpx.get(gradio_auth_server.api("samplers"), auth=("carol", "hunter2"), timeout=30)
    assert samplers.status_code == 200 and any(s["name"] == "Euler" for s in samplers.json())
    api = webuiapi.WebUIApi(host="127.0.0.1", port=int(url.rsplit(":", 1)[1].strip("/")))
    api.set_auth("carol", "hunter2")
    assert api.txt2img(prompt="through webuiapi", steps=2, width=64, height=64, seed=3).image.size == (64, 64)
    made = httpx.post(gradio_auth_server.api("txt2img"), json={**SMALL, "prompt": "open api"},
                      auth=("carol", "hunter2"), timeout=60)
    assert made.status_code == 200 and len(made.json()["images"]) == 1


def test_with_both_logins_each_guards_its_own_side(tmp_path, tiny_models):
    install_model(tmp_path, tiny_models["sd1"], "alpha-tiny.safetensors")
    with serve(tmp_path, "--gradio-auth", "carol:hunter2", "--api-auth", "alice:secret") as live:
        assert httpx.get(live.api("samplers"), timeout=30).status_code == 401
        assert httpx.get(live.api("samplers"), auth=("carol", "hunter2"), timeout=30).status_code == 401
        assert httpx.get(live.api("samplers"), auth=("alice", "secret"), timeout=30).status_code == 200
        with httpx.Client(base_url=live.url, timeout=60) as browser:
            assert "txt2img_generate" not in browser.get("/").text
            assert browser.get("/config", auth=("alice", "secret")).status_code == 401  # the API login is not the UI's
            assert browser.post("/login", data={"username": "carol", "password": "hunter2"}).status_code == 200
            assert "txt2img_generate" in browser.get("/").text
