"""A1111's routes about the server itself: `cmd-flags`, `memory`, `hypernetworks` (none: not supported),
`unload-checkpoint` / `reload-checkpoint` (queued, so they never pull a model from under a running job), and with
`--api-server-stop` only: `server-stop`, `server-restart`, `server-kill`."""
from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import torch
from fastapi import APIRouter

from .errors import run_job

_SECRET_FLAGS = ("api_auth", "gradio_auth")


def cmd_flags(flags) -> dict:
    """The parsed command line; logins are masked (the answer may be logged or shown by a client)."""
    values = dict(vars(flags))
    for name in _SECRET_FLAGS:
        if values.get(name):
            values[name] = "***"
    return values


def memory_report() -> dict:
    """A1111's `/memory` shape: RAM from psutil, CUDA from torch when there is a GPU."""
    ram = psutil.virtual_memory()
    process = psutil.Process()
    report = {"ram": {"free": ram.available, "used": process.memory_info().rss, "total": ram.total}}
    if not torch.cuda.is_available():
        report["cuda"] = {"error": "no CUDA device"}
        return report
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()
    report["cuda"] = {
        "system": {"free": free, "used": total - free, "total": total},
        "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
        "allocated": {"current": stats.get("allocated_bytes.all.current", 0),
                      "peak": stats.get("allocated_bytes.all.peak", 0)},
        "reserved": {"current": stats.get("reserved_bytes.all.current", 0),
                     "peak": stats.get("reserved_bytes.all.peak", 0)},
        "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0),
                     "peak": stats.get("inactive_split_bytes.all.peak", 0)},
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
    }
    return report


def _stop_process(services, code: int) -> None:
    """Stop the server after the answer has gone out: the queue first (the running job is interrupted, its finished
    images kept), then uvicorn by SIGINT, as Ctrl+C would."""
    def later():
        time.sleep(0.5)
        services.stop()
        os.kill(os.getpid(), signal.SIGINT if code == 0 else signal.SIGKILL)

    threading.Thread(target=later, name="server-stop", daemon=True).start()


def install_server_routes(router: APIRouter, services, allow_stop: bool) -> None:
    @router.get("/cmd-flags")
    def flags():
        return cmd_flags(services.flags)

    @router.get("/memory")
    def memory():
        return memory_report()

    @router.get("/hypernetworks")
    def hypernetworks():
        return []

    @router.post("/unload-checkpoint")
    def unload_checkpoint():
        run_job(lambda: services.queue.submit("unload_checkpoint", None, source="api"))
        return {}

    @router.post("/reload-checkpoint")
    def reload_checkpoint():
        run_job(lambda: services.queue.submit("reload_checkpoint", None, source="api"))
        return {}

    if not allow_stop:
        return

    @router.post("/server-stop")
    def server_stop():
        (services.stopper or _stop_process)(services, 0)
        return {"message": "Stopping the server."}

    @router.post("/server-kill")
    def server_kill():
        (services.stopper or _stop_process)(services, 1)
        return {"message": "Killing the server."}

    @router.post("/server-restart")
    def server_restart():
        services.restart()
        return {"message": "Restarting the server."}
