"""Requests that once got a 500 (or made the server wait) from Gradio's routes, the queue routes and FastAPI's body
parsing, over a real socket: each gets a 4xx in A1111's error shape, `{"error", "detail", ...}`, saying what was
wrong, and what is right still works.

- Gradio's events (`/gradio_api/queue/join`, `/gradio_api/run/...`) naming an `fn_index` the page does not have: 422;
  a known one, and one a session rendered itself (`gr.render`), still join.
- Gradio's upload with a `files` part that has no file name (a form field to the parser): 422, even after a good
  part, and Gradio keeps no half-written file; a body that is not the multipart it claims: 400; a named file: 200.
- A body claiming more than the limit on Gradio's routes: 413 before it is sent.
- `/queue/history/{seq}/rerun` past SQLite's integers: 404; `offset` out of range: 422 naming it; a huge `limit` is
  held to one page; a stored job holding a NaN (a settings change) still lists, the NaN as null.
- A JSON body that is not UTF-8, holds a 5000-digit number or nests past the recursion limit: 422 like malformed
  JSON (FastAPI says 400 "There was an error parsing the body"); other HTTP errors keep FastAPI's answer.
"""
from __future__ import annotations

import json
import socket
import time
import uuid

import gradio as gr
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from gradio import route_utils
from gradio.data_classes import PredictBody

from conftest import install_model
from live_server import serve
from webui.api.limits import MAX_BODY_BYTES
from webui.jobs.store import SQLITE_MAX_INT
from webui.models.tiny import write_single_file
from webui.ui.file_access import upload_folder
from webui.ui.gradio_guard import GradioGuard, event_ids

CLAIMED = MAX_BODY_BYTES + 88 * 2 ** 20  # what the oversized requests claim to send


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = write_single_file(tmp_path_factory.mktemp("guards-model") / "tiny-sd1.safetensors", "sd1")
    data = tmp_path_factory.mktemp("guards-data")
    install_model(data, checkpoint, "alpha-tiny.safetensors")
    with serve(data) as live:
        yield live


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30) as http:
        yield http


def refusal(response: httpx.Response, status: int, *words: str) -> str:
    """The detail of an A1111-shaped refusal with this status, holding these words (case-insensitive)."""
    assert response.status_code == status, f"{response.status_code} {response.text[:300]}"
    payload = response.json()
    assert {"error", "detail"} <= set(payload), payload
    detail = payload["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail, payload
    for word in words:
        assert word.lower() in detail.lower(), f"{word!r} not in {detail!r}"
    return detail


def join_body(fn_index, data=(), session: str | None = None) -> dict:
    return {"fn_index": fn_index, "data": list(data), "session_hash": session or uuid.uuid4().hex[:11],
            "trigger_id": None, "event_data": None}


def page_events(client, server) -> dict[str, int]:
    config = client.get(server.url + "/config").json()
    return {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}


def follow(client, server, session: str) -> dict:
    """The session's event stream up to its process_completed message."""
    with client.stream("GET", server.url + "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("msg") == "process_completed":
                    return event
    raise AssertionError("the event stream ended without process_completed")


# --- Gradio's events -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn_index", [99999, -1, 10 ** 30, "4242"], ids=["99999", "minus-1", "10^30", "a-string"])
def test_joining_an_unknown_fn_index_is_a_422_naming_it(server, client, fn_index):
    response = client.post(server.url + "/gradio_api/queue/join", json=join_body(fn_index))
    detail = refusal(response, 422, "fn_index", str(int(fn_index)), "no such event")
    assert response.json()["error"] == "UnknownEvent", detail


def test_a_direct_call_with_an_unknown_fn_index_is_a_422(server, client):
    response = client.post(server.url + "/gradio_api/run/predict", json={"fn_index": 99999, "data": []})
    refusal(response, 422, "fn_index 99999")


def test_a_known_fn_index_still_joins_and_runs(server, client):
    session = uuid.uuid4().hex[:11]
    fn_index = page_events(client, server)["read_parameters"]
    response = client.post(server.url + "/gradio_api/queue/join", json=join_body(fn_index, [None], session))
    assert response.status_code == 200 and response.json().get("event_id"), response.text
    assert follow(client, server, session)["success"] is True


def test_what_gradio_refuses_itself_keeps_its_answer(server, client):
    """Not a number, or no fn_index at all: Gradio's own 4xx, untouched."""
    assert client.post(server.url + "/gradio_api/queue/join", json=join_body("abc")).status_code == 422
    no_index = client.post(server.url + "/gradio_api/queue/join", json=join_body(None))
    assert no_index.status_code == 400 and "function index" in no_index.json()["detail"], no_index.text


# --- Gradio's upload -----------------------------------------------------------------------------------------------
def multipart(*parts: bytes, boundary: str = "guard-boundary") -> tuple[bytes, dict]:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def file_part(disposition: str, content: bytes) -> bytes:
    return f"Content-Disposition: form-data; {disposition}\r\nContent-Type: image/png\r\n\r\n".encode() + content


def half_written_uploads() -> set:
    """Gradio's temporary files of uploads in progress (named tmp*, directly in its upload folder)."""
    folder = upload_folder()
    return {path.name for path in folder.glob("tmp*") if path.is_file()} if folder.is_dir() else set()


@pytest.mark.parametrize("disposition", ['name="files"', 'name="files"; filename=""'],
                         ids=["no-filename", "empty-filename"])
def test_an_upload_without_a_file_name_is_a_422(server, client, disposition):
    body, headers = multipart(file_part(disposition, b"\x89PNG not really"))
    refusal(client.post(server.url + "/gradio_api/upload", content=body, headers=headers), 422, "file name", "files")


def test_httpx_empty_file_name_is_refused(server, client):
    """What the hostile module sends: httpx leaves `filename` out when it is empty."""
    response = client.post(server.url + "/gradio_api/upload", files={"files": ("", b"", "image/png")})
    refusal(response, 422, "file name")


def test_a_nameless_part_after_a_good_one_is_refused_and_nothing_is_left_half_written(server, client):
    before = half_written_uploads()
    body, headers = multipart(file_part('name="files"; filename="good.png"', b"\x00" * 300_000),
                              file_part('name="files"', b"nameless"))
    refusal(client.post(server.url + "/gradio_api/upload", content=body, headers=headers), 422, "file name")
    assert half_written_uploads() - before == set()


@pytest.mark.parametrize("content_type, words", [("multipart/form-data; boundary=x", ("multipart",)),
                                                 ("multipart/form-data", ("boundary",))],
                         ids=["not-multipart", "no-boundary"])
def test_a_body_that_is_not_the_multipart_it_claims_is_a_400(server, client, content_type, words):
    response = client.post(server.url + "/gradio_api/upload", content=b"just some bytes",
                           headers={"Content-Type": content_type})
    refusal(response, 400, *words)


def test_an_upload_with_a_file_name_still_works(server, client):
    body, headers = multipart(file_part('name="files"; filename="fine.png"', b"picture bytes"),
                              b'Content-Disposition: form-data; name="note"\r\n\r\nnot a file, not "files"')
    response = client.post(server.url + "/gradio_api/upload", content=body, headers=headers)
    assert response.status_code == 200, response.text
    [path] = response.json()
    assert path.endswith("fine.png")
    with open(path, "rb") as stored:
        assert stored.read() == b"picture bytes"


# --- the body limit on Gradio's routes -----------------------------------------------------------------------------
def claim_huge_body(server, path: str, content_type: str, start: bytes) -> tuple[int | None, bytes, float]:
    """Headers claiming CLAIMED bytes, then only `start`: (status, body, seconds) of the answer, or None."""
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {CLAIMED}\r\nConnection: close\r\n\r\n".encode() + start)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (socket.timeout, ConnectionError):
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else None
    return status, body, time.monotonic() - started


@pytest.mark.parametrize("path, content_type, start", [
    ("/gradio_api/upload", "multipart/form-data; boundary=x",
     b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n' + b"\x00" * 65536),
    ("/gradio_api/queue/join", "application/json", b'{"fn_index": 0, "data": ["' + b"a" * 65536),
], ids=["upload", "queue-join"])
def test_a_gradio_body_over_the_limit_is_a_413_before_it_is_sent(server, path, content_type, start):
    status, body, seconds = claim_huge_body(server, path, content_type, start)
    assert status == 413, (status, body[:300])
    assert seconds < 10
    payload = json.loads(body)
    assert payload["error"] == "RequestTooLarge" and "512 MB" in payload["detail"], payload


# --- the queue routes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seq", [10 ** 30, SQLITE_MAX_INT + 1, -(10 ** 30)], ids=["10^30", "2^63", "minus-10^30"])
def test_rerunning_a_seq_past_sqlite_integers_is_a_404(server, client, seq):
    refusal(client.post(f"{server.url}/queue/history/{seq}/rerun"), 404, str(seq))


@pytest.mark.parametrize("offset", [10 ** 30, SQLITE_MAX_INT + 1, -1], ids=["10^30", "2^63", "minus-1"])
def test_a_history_offset_out_of_range_is_a_422_naming_it(server, client, offset):
    refusal(client.get(server.url + "/queue/history", params={"offset": offset}), 422, "offset")


def test_a_huge_history_limit_is_held_to_one_page(server, client):
    for limit in (10 ** 9, 10 ** 30, -1):
        response = client.get(server.url + "/queue/history", params={"limit": limit, "offset": SQLITE_MAX_INT})
        assert response.status_code == 200, response.text
        assert response.json()["jobs"] == []
    page = client.get(server.url + "/queue/history", params={"limit": 10 ** 30})
    assert page.status_code == 200 and len(page.json()["jobs"]) <= 500, page.text[:300]


def test_a_stored_job_holding_a_nan_still_lists_with_null(server, client):
    """A settings change holding NaN and infinities (stored as it came): the history and the job render them as
    null, never a 500."""
    store = server.services.queue.store
    job_id = f"task(nan-{uuid.uuid4().hex[:6]})"
    seq = store.add(job_id, "set_options", {"inpainting_mask_weight": float("nan"), "eta_ddim": float("inf")},
                    source="api")
    store.finished(seq, "done", time.time(), result={"applied": float("-inf")})
    listed = client.get(server.url + "/queue/history", params={"kind": "set_options", "limit": 10 ** 9})
    assert listed.status_code == 200, listed.text[:300]
    [record] = [job for job in listed.json()["jobs"] if job["id"] == job_id]
    assert record["summary"] == {"inpainting_mask_weight": None, "eta_ddim": None}
    assert record["result"] == {"value": {"applied": None}}
    one = client.get(f"{server.url}/queue/jobs/{job_id}")
    assert one.status_code == 200 and one.json()["summary"]["inpainting_mask_weight"] is None, one.text[:300]


# --- JSON bodies Python will not decode ----------------------------------------------------------------------------
@pytest.mark.parametrize("body, words", [
    (b'{"prompt": "\xff\xfe\xfd"}', ("UTF-8", "0xff")),
    (b'{"prompt": "a fox", "steps": ' + b"9" * 5000 + b"}", ("number", "digits")),
    (b"[" * 100_000, ("nested",)),
], ids=["invalid-utf8", "5000-digit-number", "nested-100000-deep"])
def test_a_body_json_cannot_decode_is_a_422_like_malformed_json(server, client, body, words):
    response = client.post(server.api("txt2img"), content=body, headers={"Content-Type": "application/json"})
    refusal(response, 422, "body", "invalid JSON", *words)
    assert response.json()["error"] == "ValidationError"


def test_other_http_errors_keep_fastapis_answer(server, client):
    missing = client.get(server.url + "/queue/no-such-route")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}, missing.text


# --- the Gradio internal the event guard relies on -----------------------------------------------------------------
def test_event_ids_are_what_gradio_looks_up():
    """`gradio_guard.event_ids` against the installed Gradio: the page's events are /config's dependency ids, a
    session that rendered (`gr.render`) has more, `route_utils.get_fn` finds exactly those (KeyError for any
    other), and through the guard a session joins its own rendered events but not another session's."""
    with gr.Blocks() as demo:
        count = gr.Number(value=2, label="rows")
        show = gr.Button("show")

        @gr.render(inputs=count, triggers=[show.click])
        def rows(n):
            for i in range(int(n)):
                box = gr.Textbox(label=f"row {i}")
                gr.Button(f"go {i}").click(lambda: "clicked", None, box)

    outer = FastAPI()
    outer.add_middleware(GradioGuard, blocks=lambda: demo)
    app = gr.mount_gradio_app(outer, demo, path="/")
    with TestClient(app) as http:
        config = http.get("/config").json()
        page = {d["id"] for d in config["dependencies"]}
        assert event_ids(demo, None) == page
        session, other = uuid.uuid4().hex[:11], uuid.uuid4().hex[:11]
        render = next(d["id"] for d in config["dependencies"] if d["targets"][0][0] == show._id)
        joined = http.post("/gradio_api/queue/join", json={**join_body(render, [2], session), "trigger_id": show._id})
        assert joined.status_code == 200, joined.text
        with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            messages = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
        assert any(m.get("msg") == "process_completed" and m.get("success") for m in messages), messages
        rendered = event_ids(demo, session) - page
        assert len(rendered) == 2, event_ids(demo, session)
        for fn_index in event_ids(demo, session):
            assert route_utils.get_fn(demo, None, PredictBody(data=[], fn_index=fn_index,
                                                              session_hash=session))._id == fn_index
        unknown = max(event_ids(demo, session)) + 1
        with pytest.raises(KeyError):
            route_utils.get_fn(demo, None, PredictBody(data=[], fn_index=unknown, session_hash=session))
        refusal(http.post("/gradio_api/queue/join", json=join_body(min(rendered), [], other)), 422, "fn_index")
        assert other not in demo.state_holder, "the guard created a session"
        mine = http.post("/gradio_api/queue/join", json=join_body(min(rendered), [], session))
        assert mine.status_code == 200, mine.text
        with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            messages = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
        assert any(m.get("msg") == "process_completed" and m.get("success") for m in messages), messages
