"""Several clients on one server at once, over real sockets: every request gets its own answer (its prompt, its
seed, its picture), and a checkpoint switch sent while a job runs waits for that job and applies to the jobs after.

One server (--nowebui) over a data dir with two tiny SD1 checkpoints, `alpha-tiny` (selected first) and
`beta-tiny` (other weights); images are 64x64 with 2 steps. The order of jobs is read from `GET /queue`.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from live_server import install_alpha_and_beta, serve, wait_for_sampling

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}
CLIENTS, REQUESTS = 3, 5
TIMEOUT = 180


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("concurrency-data")
    install_alpha_and_beta(data, tiny_models, tmp_path_factory)
    with serve(data, "--nowebui") as live:
        yield live


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def model_titles(server) -> dict[str, str]:
    return {m["model_name"]: m["title"] for m in httpx.get(server.api("sd-models"), timeout=30).json()}


def in_background(target, *args) -> tuple[threading.Thread, dict]:
    """Run target(*args) on a thread; the returned dict gets "value" (or "error") and "at" (when it ended)."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = target(*args)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_three_clients_with_five_requests_each_get_their_own_results(server):
    barrier = threading.Barrier(CLIENTS * REQUESTS)
    answers: dict[tuple[int, int], httpx.Response] = {}
    failures: list[str] = []

    def send(client: httpx.Client, c: int, r: int) -> None:
        body = {**SMALL, "prompt": f"client{c} request{r}", "seed": 1000 * c + r}
        try:
            barrier.wait(30)  # all 15 go out together
            answers[c, r] = client.post(server.api("txt2img"), json=body)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            failures.append(f"client{c} request{r}: {type(exc).__name__}: {exc}")

    clients = [httpx.Client(timeout=TIMEOUT) for _ in range(CLIENTS)]
    try:
        threads = [threading.Thread(target=send, args=(clients[c], c, r), daemon=True)
                   for c in range(CLIENTS) for r in range(REQUESTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
    finally:
        for client in clients:
            client.close()
    assert not failures, failures
    assert len(answers) == CLIENTS * REQUESTS

    images = {}
    for (c, r), response in sorted(answers.items()):
        prompt, seed = f"client{c} request{r}", 1000 * c + r
        assert response.status_code == 200, f"{prompt}: {response.status_code} {response.text}"
        payload = response.json()
        info = json.loads(payload["info"])
        assert info["prompt"] == prompt and info["all_prompts"] == [prompt]
        assert info["seed"] == seed and info["all_seeds"] == [seed]
        assert payload["parameters"]["prompt"] == prompt and payload["parameters"]["seed"] == seed
        [infotext] = info["infotexts"]
        assert infotext.startswith(prompt + "\n") and f"Seed: {seed}," in infotext
        [data] = payload["images"]
        image = decode(data)
        assert image.info["parameters"] == infotext  # the picture carries its own request's infotext
        images[c, r] = pixels(image)
    distinct = {array.tobytes() for array in images.values()}
    assert len(distinct) == CLIENTS * REQUESTS  # fifteen seeds, fifteen pictures

    # the same request alone gives the same picture: nothing of the other jobs leaked into it
    alone = httpx.post(server.api("txt2img"), json={**SMALL, "prompt": "client1 request2", "seed": 1002},
                       timeout=TIMEOUT)
    assert alone.status_code == 200, alone.text
    # the same server process runs every job, one image at a time on one worker: bit-identical, so any leak shows
    assert np.array_equal(pixels(decode(alone.json()["images"][0])), images[1, 2])


def test_checkpoint_switch_waits_for_the_running_job(server):
    titles = model_titles(server)
    old, new = titles["alpha-tiny"], titles["beta-tiny"]
    assert httpx.post(server.api("options"), json={"sd_model_checkpoint": old}, timeout=TIMEOUT).status_code == 200

    def txt2img(task_id: str, steps: int) -> httpx.Response:
        return httpx.post(server.api("txt2img"), json={**SMALL, "prompt": task_id, "seed": 3, "steps": steps,
                                                       "force_task_id": task_id}, timeout=TIMEOUT)

    def switch() -> httpx.Response:
        return httpx.post(server.api("options"), json={"sd_model_checkpoint": new}, timeout=TIMEOUT)

    def job(job_id: str) -> dict:
        response = httpx.get(f"{server.url}/queue/jobs/{job_id}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    try:
        running, running_out = in_background(txt2img, "running-job", 120)
        wait_for_sampling(server)
        switching, switch_out = in_background(switch)
        # GET /queue shows the switch waiting behind the running job before the next job is sent
        deadline = time.monotonic() + 30
        while True:
            queue = httpx.get(f"{server.url}/queue", timeout=30).json()
            waiting = [j for j in queue["queued"] if j["kind"] != "generate"]
            if waiting:
                break
            assert time.monotonic() < deadline, f"the checkpoint switch never reached the queue: {queue}"
            assert "at" not in switch_out, f"the switch did not wait for the running job: {switch_out}"
            time.sleep(0.01)
        assert queue["running"] is not None and queue["running"]["id"] == "running-job", \
            "the running job ended before the switch was queued: give it more steps"
        [switch_job] = waiting
        assert switch_job["position"] == 1
        after, after_out = in_background(txt2img, "after-switch", 2)
        for thread in (running, switching, after):
            thread.join(TIMEOUT)
        for name, outcome in (("running", running_out), ("switch", switch_out), ("after", after_out)):
            assert "error" not in outcome, f"{name}: {outcome['error']}"
            assert outcome["value"].status_code == 200, f"{name}: {outcome['value'].text}"

        # in that order, one after the other: the running job, the switch, the job sent after it
        first, then, last = job("running-job"), job(switch_job["id"]), job("after-switch")
        assert first["state"] == then["state"] == last["state"] == "done"
        assert first["finished"] <= then["started"] and then["finished"] <= last["started"]
        running_info = json.loads(running_out["value"].json()["info"])
        assert "Steps: 120," in running_info["infotexts"][0]  # it ran to the end
        assert "Model: alpha-tiny," in running_info["infotexts"][0] and running_info["sd_model_name"] == "alpha-tiny"
        after_info = json.loads(after_out["value"].json()["info"])
        assert "Model: beta-tiny," in after_info["infotexts"][0] and after_info["sd_model_name"] == "beta-tiny"
        assert httpx.get(server.api("options"), timeout=30).json()["sd_model_checkpoint"] == new
    finally:
        httpx.post(server.api("options"), json={"sd_model_checkpoint": old}, timeout=TIMEOUT)
