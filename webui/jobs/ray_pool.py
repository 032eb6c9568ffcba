"""The pool's workers as Ray actors (the one module that imports Ray; imported only with --workers / --ray-address).

`connect()` starts a local Ray runtime (--workers N) or joins a cluster (--ray-address ADDR) and says how many
workers to keep and what each needs (a GPU, or a CPU core on a machine without GPUs). Each worker is an actor
hosting `webui.worker_host.WorkerHost` in its own process; `RayWorker` is the head's handle: it starts a job, then
polls the actor for what happened (progress, previews, images to save, batches, the result), relaying each to the
head's sink. A poll that gets no answer within the timeout, or an actor that died, is `WorkerLost`.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .pool import WorkerLost

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]  # where `webui` is importable from (the same path on every node)
POLL_SECONDS = 0.5
START_TIMEOUT = 900.0  # a worker builds its services (imports, extensions) before its first answer


class PoolStartError(RuntimeError):
    """Ray missing or unreachable, or no room for the workers asked for: the server does not start."""


@dataclass
class Cluster:
    size: int
    gpus_per_worker: float
    cpus_per_worker: float
    address: str
    env: dict = None  # the environment every worker gets (PYTHONPATH)


def connect(address: str | None, workers: int | None) -> Cluster:
    if not address:
        _loopback_only()
    try:
        import ray
    except ImportError:
        raise PoolStartError("--workers / --ray-address need Ray, which is not installed: start with ./launch.sh "
                             "(it installs requirements-ray.lock when given these flags)") from None
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}}
    if address:
        _probe(address)
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, logging_level=logging.WARNING)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError, ... all say one thing
            raise PoolStartError(f"Could not reach the Ray cluster at {address}: {exc}") from None
    else:
        import torch
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        count = int(workers or 1)
        if gpus and count > gpus:
            raise PoolStartError(f"--workers {count}: this machine has {gpus} GPU(s), one per worker")
        ray.init(num_cpus=max(count, os.cpu_count() or 1), num_gpus=gpus, include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=True, logging_level=logging.WARNING,
                 _node_ip_address="127.0.0.1")
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        size = min(int(workers), gpus) if workers else gpus
        return Cluster(size, 1.0, 1.0, address or "local", runtime_env["env_vars"])
    if address and not workers:
        raise PoolStartError(f"The Ray cluster at {address} has no GPUs: give --workers N for N CPU workers")
    return Cluster(int(workers or 1), 0.0, 1.0, address or "local", runtime_env["env_vars"])


def _loopback_only() -> None:
    """A local runtime (--workers without --ray-address) serves only this machine: Ray's own services (GCS, raylet,
    workers) listen on 127.0.0.1, never on the network, whatever --listen says. Ray's switch for that is its
    one-machine mode (the one it uses on macOS and Windows): an environment variable its processes read at start,
    and the constant it sets in an already imported Ray. (Ray internals: tests/test_pool_ray.py checks that no new
    socket listens beyond the loopback interface.)"""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import sys
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def _probe(address: str, timeout: float = 5.0) -> None:
    """Refuse at once an address nothing answers at (Ray itself would retry for minutes)."""
    import socket
    target = address.split("://", 1)[-1]
    if target in ("auto", "local"):
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise PoolStartError(f"--ray-address {address!r}: give host:port (the address `ray start --head` prints)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise PoolStartError(f"Could not reach the Ray cluster at {address}: {exc}") from None


def shutdown() -> None:
    import ray
    if ray.is_initialized():
        ray.shutdown()


class _WorkerActor:
    """Lives in the worker's process: the WorkerHost and its methods, for the head to call."""

    def __init__(self, flags: dict, options: dict, name: str):
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s")
        from webui.worker_host import WorkerHost
        self.host = WorkerHost(flags, options, name)

    def describe(self) -> dict:
        return {**self.host.describe(), **self.host.catalog()}

    def holds(self) -> list:
        return self.host.holds()

    def start(self, item: dict, timeout: float) -> list:
        return self.host.start(item, timeout)

    def poll(self, timeout: float, previews: bool = False) -> list:
        return self.host.poll(timeout, previews=previews)

    def answer(self, request_id: str, value) -> None:
        self.host.answer(request_id, value)

    def command(self, job_id: str, command: str) -> None:
        self.host.command(job_id, command)

    def unload(self) -> None:
        self.host.unload()

    def pid(self) -> int:
        return os.getpid()


class RayWorker:
    """The head's handle of one worker actor."""

    def __init__(self, actor, index: int, timeout: float, stopping=lambda: False):
        import ray
        self._ray, self.actor, self.id, self.timeout = ray, actor, str(index), float(timeout)
        self.hang_after = 10 * self.timeout  # a job silent this long (no step, no load, no image) is stuck
        ready = actor.describe.remote()
        started = time.monotonic()
        while not ray.wait([ready], timeout=0.5)[0]:  # the worker builds its services: seconds, a minute
            if stopping():
                raise WorkerLost(f"worker {self.id}: the server is shutting down")
            if time.monotonic() - started > START_TIMEOUT:
                raise WorkerLost(f"worker {self.id} did not start within {START_TIMEOUT:.0f} s")
        self.info = self._call(ready, self.timeout)
        self.checkpoints = list(self.info.pop("checkpoints", []))
        self._holds: tuple[str, ...] = ()

    @classmethod
    def create(cls, index: int, cluster: Cluster, flags: dict, options: dict, timeout: float,
               env: dict | None = None, stopping=lambda: False) -> "RayWorker":
        """`env`: environment variables for this worker's process only (with the job's PYTHONPATH); `stopping()`:
        give up (the server is shutting down)."""
        import ray
        if not ray.is_initialized() or stopping():  # (a remote call would start a new Ray runtime by itself)
            raise WorkerLost(f"worker {index}: Ray is shut down")
        extra = {"runtime_env": {"env_vars": {**cluster.env, **env}}} if env else {}
        remote = ray.remote(_WorkerActor).options(
            num_gpus=cluster.gpus_per_worker, num_cpus=cluster.cpus_per_worker, max_concurrency=4, max_restarts=0,
            **extra)
        actor = remote.remote(flags, options, f"worker {index}")
        try:
            return cls(actor, index, timeout, stopping)
        except BaseException:
            ray.kill(actor, no_restart=True)
            raise

    # --- the Worker protocol (webui/jobs/pool.py) -------------------------------------------------------------
    def run(self, item: dict, sink):
        events = self._call(self.actor.start.remote(item, POLL_SECONDS), self.timeout + POLL_SECONDS)
        while True:
            for event in events:
                if event[0] in ("result", "error"):
                    self._holds = tuple(event[2])  # what it holds after the job (affinity)
                elif event[0] == "alive" and event[1] > self.hang_after:  # answers, but its job is stuck
                    raise WorkerLost(f"worker {self.id}: its job made no progress for {event[1]:.0f} s")
                outcome = sink.handle(event)
                if outcome is None:
                    continue
                if outcome[0] == "answer":
                    self.actor.answer.remote(outcome[1], outcome[2])
                elif outcome[0] == "done":
                    return outcome[1]
            events = self._call(self.actor.poll.remote(POLL_SECONDS, sink.wants_preview()),
                                self.timeout + POLL_SECONDS)

    def command(self, job_id: str, command: str) -> None:
        if self._ray.is_initialized():  # (after the shutdown a remote call would start a new Ray runtime)
            self.actor.command.remote(job_id, command)

    def holds(self) -> tuple[str, ...]:
        return self._holds

    def refresh(self) -> None:
        info = self._call(self.actor.describe.remote(), self.timeout)
        self.checkpoints = list(info.pop("checkpoints", []))

    def describe(self) -> dict:
        return dict(self.info)

    def unload(self) -> None:
        self._call(self.actor.unload.remote(), self.timeout)
        self._holds = ()

    def kill(self) -> None:
        if self._ray.is_initialized():
            self._ray.kill(self.actor, no_restart=True)

    def pid(self) -> int:
        return int(self._call(self.actor.pid.remote(), self.timeout))

    def _call(self, ref, timeout: float):
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(ref, timeout=timeout)
        except exceptions.GetTimeoutError:
            raise WorkerLost(f"worker {self.id} did not answer for {timeout:.0f} s") from None
        except exceptions.RayTaskError as exc:  # a method raised: a bug of ours, told as it is
            raise RuntimeError(str(exc.cause if getattr(exc, "cause", None) else exc)) from None
        except exceptions.RayError as exc:  # the actor died (its process, its node), or cannot be reached
            raise WorkerLost(f"worker {self.id}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
