"""A real server for client tests: the app from `create_app` served by uvicorn on a free 127.0.0.1 port (in a
thread, as `app.py` serves it), over a data dir the test filled with tiny models; stopped when the block ends.

    with serve(data_dir, "--nowebui") as server:
        requests.get(server.api("samplers"))
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

STARTUP_TIMEOUT = 60  # seconds; building the UI (no --nowebui) takes the longest


@dataclass
class LiveServer:
    host: str
    port: int
    data_dir: Path
    services: object  # webui.services.Services of the running app

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def api(self, route: str) -> str:
        """The full URL of an A1111 route: api("txt2img") -> http://127.0.0.1:PORT/sdapi/v1/txt2img."""
        return f"{self.url}/sdapi/v1/{route.lstrip('/')}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def serve(data_dir: Path, *flags: str) -> Iterator[LiveServer]:
    """Build the app over `data_dir` with these command-line flags, serve it until the block ends, then stop the
    server and the services (the queue's worker) and check the server thread really ended."""
    import uvicorn

    from app import create_app
    from webui.settings.flags import parse_flags

    app, services = create_app(parse_flags(["--data-dir", str(data_dir), *flags]))
    host, port = "127.0.0.1", free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, name=f"live-server-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server on port {port} stopped while starting (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {port} did not start in {STARTUP_TIMEOUT}s")
            time.sleep(0.05)
        services.hasher.wait_idle(30)  # checkpoint titles carry their hash once it is known
        yield LiveServer(host, port, Path(data_dir), services)
    finally:
        server.should_exit = True
        thread.join(15)
        services.stop()
    assert not thread.is_alive(), f"the server on port {port} did not stop"


def wait_for_sampling(server: LiveServer, auth: tuple[str, str] | None = None, timeout: float = 60) -> dict:
    """Poll GET /sdapi/v1/progress until a job is sampling (a step done); its progress answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = httpx.get(server.api("progress"), auth=auth, timeout=10).json()
        if progress["state"]["sampling_step"] > 0:
            return progress
        time.sleep(0.02)
    raise AssertionError(f"no job was sampling within {timeout}s")


def install_alpha_and_beta(data, tiny_models, tmp_path_factory) -> None:
    """Two tiny SD1 checkpoints with different weights (so different hashes and pictures): alpha, then beta."""
    from conftest import install_model
    from webui.models.tiny import write_single_file

    install_model(data, tiny_models["sd1"], "alpha-tiny.safetensors")
    beta = write_single_file(tmp_path_factory.mktemp("beta") / "beta-tiny.safetensors", "sd1", seed=7)
    install_model(data, beta)
