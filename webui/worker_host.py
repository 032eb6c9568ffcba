"""One pool worker: a thin host around the engine, in its own process (a Ray actor, `webui/jobs/ray_pool.py`).

It builds the same services as the server from the same flags and model folders (the head's settings come with each
job), minus the queue, the history and the UI: the engine, the model manager and its caches, and the enabled
extensions' scripts and hooks (their install.py ran on the head). It runs one job at a time on a thread of its own;
the head follows it by polling `poll()`, which hands over what happened since: progress, a preview picture at the
configured interval, each image to save (`route_writes`: the head writes and numbers the file, and answers with its
path), each finished batch and, last, the result or the error. Interrupt and Skip arrive through `command()`.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from .core.errors import UserError
from .core.run_control import RunControl
from .jobs.pool import WorkerRefused
from .jobs.records import decode_payload, encode_payload
from .outputs import save as output_save

log = logging.getLogger(__name__)

SAVE_TIMEOUT = 300.0  # seconds a saved image waits for the head's answer
_PROGRESS = ("progress", None)  # in the event queue: "there is a newer progress report" (see poll)
PROGRESS_EVERY = 0.2  # seconds progress may wait for a poll to end (the page asks for progress every 0.2 s)


class WorkerHost:
    def __init__(self, flags: dict, options: dict, name: str):
        from .services import build_services
        self.name = name
        namespace = argparse.Namespace(**{**flags, **node_flags()})
        namespace.skip_install = True  # install.py ran on the head (and on a shared folder, once is enough)
        self.services = build_services(namespace, worker_options=options)
        self._events: queue.Queue = queue.Queue()
        self._answers: dict[str, list] = {}
        self._job_id: str | None = None
        self._control: RunControl | None = None
        self._busy = False  # a job is running on the job thread (set by _start, cleared when it has told its end)
        self._idle = threading.Event()
        self._idle.set()
        self._jobs: queue.Queue = queue.Queue()
        # One job thread for the worker's life, as the server's queue has: a fresh thread per job costs each job
        # milliseconds of per-thread warm-up in torch and the allocator (measured: 3-8 ms on a 25 ms job).
        self._thread = threading.Thread(target=self._serve, name=f"pool-jobs-{name}", daemon=True)
        self._thread.start()
        self._preview_every = 0
        self._preview_marker = None
        self._lock = threading.Lock()
        self._early: dict[str, set] = {}  # commands for a job that has not started here yet
        self._last_batch = 0  # the running job's last batch (no "batch" event for it)
        self._resumable = False  # whether its finished batches are worth sending (see `resumable`)
        self._progress: dict | None = None  # the latest progress report not yet polled
        self._activity = time.monotonic()  # when the running job last reported anything
        output_save.route_writes(self)  # every image this process saves goes to the head
        self._plain_separate_parts = self.services.models.separate_parts
        self.services.models.separate_parts = self._separate_parts  # each separate file checked with the head

    # --- what the head asks -----------------------------------------------------------------------------------
    def describe(self) -> dict:
        policy = self.services.policy
        device = str(policy.device)
        if device.startswith("cuda"):
            try:
                import torch
                device = f"{device} ({torch.cuda.get_device_name(policy.device)})"
            except Exception:  # noqa: BLE001 - a name is a nicety
                pass
        return {"name": self.name, "node": socket.gethostname(), "pid": os.getpid(), "device": device}

    def catalog(self) -> dict:
        """The checkpoints this worker can load (names in its folder)."""
        self.services.models.refresh()
        return {"checkpoints": [info.name for info in self.services.models.checkpoints()]}

    def holds(self) -> list[str]:
        """Checkpoints loaded, the current one first (affinity keys: their names)."""
        return [info.name for info in self.services.models.held()]

    def start(self, item: dict, timeout: float = 0.5) -> list:
        """Start the job; what it reported within `timeout` seconds (as `poll`)."""
        self._start(item)
        return self.poll(timeout)

    def _start(self, item: dict) -> None:
        if not self._idle.wait(5.0):  # it has told its outcome; it may be a moment from its end
            control = self._control
            if control is not None:  # the head gave up on it: stop it first
                control.interrupt()
            self._idle.wait(60.0)
        with self._lock:
            if self._busy:
                raise RuntimeError(f"{self.name} is still running job {self._job_id}")
            self._events = queue.Queue()
            self._progress = None  # (a job the head gave up on may have left its report)
            self._activity = time.monotonic()
            self._job_id, self._control = item["job_id"], RunControl()
            for command in sorted(self._early.pop(item["job_id"], set())):
                getattr(self._control, command)()  # Interrupt / Skip pressed before it started here
            self._early.clear()
            self._preview_every, self._preview_marker = int(item.get("preview_every") or 0), None
            self._busy = True
            self._idle.clear()
            self._jobs.put((item, self._control))

    def _serve(self) -> None:
        while True:
            item, control = self._jobs.get()
            try:
                self._run(item, control)
            except BaseException as exc:  # noqa: BLE001 - (an extension's SystemExit): the job ends, the thread stays
                log.exception("job %s ended abnormally", item.get("job_id"))
                self._events.put(("error", _describe_error(exc), []))
            finally:
                with self._lock:
                    self._busy = False
                    self._idle.set()

    def poll(self, timeout: float = 0.5, previews: bool = False) -> list:
        """What happened since the last poll. Returns at once with anything but progress (an image to save, a saved
        image, a finished batch, the job's end); progress alone is held for up to `PROGRESS_EVERY` seconds, so a
        short job's whole story is one answer and a long job costs a few round trips a second, not one per step;
        with nothing at all, after `timeout` seconds. `previews`: someone is watching, so a live preview is made
        when one is due."""
        events = []
        deadline = time.monotonic() + timeout
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                event = self._events.get(timeout=wait)
            except queue.Empty:
                break
            events.append(event)
            if event is not _PROGRESS:
                break
            deadline = min(deadline, time.monotonic() + PROGRESS_EVERY)
        while True:  # and whatever else is there already
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        if any(event[0] == "progress" for event in events):  # the marker: the latest progress, once
            with self._lock:
                latest, self._progress = self._progress, None
            events = [event for event in events if event[0] != "progress" or event is _PROGRESS]
            events = [("progress", latest) if event is _PROGRESS else event for event in events
                      if event is not _PROGRESS or latest is not None]
        if not events and self._busy:
            loading = self.services.models.loading is not None  # a checkpoint load reports nothing meanwhile
            events.append(("alive", 0.0 if loading else time.monotonic() - self._activity))
        preview = self._preview() if previews else None
        if preview is not None:
            events.insert(0, preview)  # before a result, never after
        return events

    def answer(self, request_id: str, value) -> None:
        waiter = self._answers.get(request_id)
        if waiter is not None:
            waiter.append(value)
            waiter[0].set()

    def command(self, job_id: str, command: str) -> None:
        with self._lock:
            control = self._control if job_id == self._job_id else None
            if control is None:  # sent before the job started here: applied when it does
                self._early = {job_id: self._early.get(job_id, set()) | {command}}
                return
        if command == "interrupt":
            control.interrupt()
        elif command == "skip":
            control.skip()

    def unload(self) -> None:
        self.services.models.unload_all()

    # --- the job ----------------------------------------------------------------------------------------------
    def _run(self, item: dict, control: RunControl) -> None:
        from .extensions.a1111.runtime import RUNTIME
        from .pool_models import ModelRef, verify
        control.on_event = self._on_event
        try:
            verify(self.services, [ModelRef(**ref) for ref in item.get("models") or []], self.name)
            self._apply_options(item.get("options") or {})
            encoded = item["request"]
            request = decode_payload(encoded["json"], encoded["images"], encoded["objects"])
            request.context.update(item.get("context") or {})
            self._last_batch = max(0, int(request.n_iter or 1) - 1)
            self._resumable = resumable(request)
            resume = item.get("resume")
            if resume:
                request.context["resumed_batches"] = decode_payload(resume["json"], resume["images"],
                                                                    resume["objects"])
            with RUNTIME.in_job(control):
                result = self.services.run_request(request, control)
            objects: list = []
            packed = encode_payload(result, objects)
            outcome = ("result", {"json": packed.json, "images": packed.images, "objects": objects}, self.holds())
        except WorkerRefused as exc:
            outcome = ("refused", str(exc))
        except Exception as exc:  # noqa: BLE001 - told to the head, which fails the job with it
            if not isinstance(exc, UserError):
                log.exception("job %s failed", item.get("job_id"))
            outcome = ("error", _describe_error(exc), self.holds())
        control.release()
        self._events.put(outcome)  # the last thing the job does: the head may start the next one

    def _apply_options(self, values: dict) -> None:
        """The head's settings for this job (its override_settings come inside the request)."""
        options = self.services.options
        current = options.as_dict()
        changes = {key: value for key, value in values.items()
                   if key in options.specs and current.get(key) != value}
        for key, value in changes.items():
            try:
                options.update({key: value}, save=False)
            except Exception as exc:  # noqa: BLE001 - a value this worker cannot take keeps its own
                log.warning("%s: setting %s=%r not applied here: %s", self.name, key, value, exc)

    def _on_event(self, kind: str, data: dict) -> None:
        self._activity = time.monotonic()
        if kind == "progress":  # coalesced: the poll takes the latest (a step's report, not every one)
            with self._lock:
                first, self._progress = self._progress is None, data["progress"].as_dict()
            if first:
                self._events.put(_PROGRESS)
        elif kind == "image":
            self._events.put(("image", data["path"], data.get("infotext", "")))
        elif kind == "batch":
            if not self._resumable or data["batch"] >= self._last_batch:  # the last one: the result follows at
                return  # once, with the same images; a script's or folder batch's inner runs are not resumed
            objects: list = []
            packed = encode_payload(data["entries"], objects)
            self._events.put(("batch", data["batch"], {"json": packed.json, "images": packed.images,
                                                        "objects": objects}))

    def _preview(self):
        """A new live preview of the running job (rendered here, as a JPEG), once per preview interval."""
        control, every = self._control, self._preview_every
        if control is None or every <= 0 or control.progress.sampling_step <= 0:
            return None
        from .engine.preview import shared_preview
        try:
            marker, image = shared_preview(control, every)
        except Exception:  # noqa: BLE001 - a preview is a nicety
            return None
        if image is None or marker == self._preview_marker:
            return None
        self._preview_marker = marker
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
        return ("preview", buffer.getvalue())

    # --- saving through the head (webui.outputs.save.route_writes) --------------------------------------------
    def write_numbered(self, data: bytes, folder: Path, ext: str, numbering, template: str) -> Path:
        return self._save({"mode": "numbered", "data": data, "folder": str(folder), "ext": ext,
                           "numbering": numbering, "template": template})

    def write_at(self, data: bytes, path: Path) -> Path:
        return self._save({"mode": "at", "data": data, "path": str(path)})

    def _save(self, spec: dict) -> Path:
        if threading.current_thread() is not self._thread:
            return _write_here(spec)  # not the job's thread (an extension's own thread): written on this machine
        ok, value = self._ask("save", spec)
        if not ok:
            raise OSError(value)
        return Path(value)

    def _ask(self, kind: str, spec: dict):
        """Ask the head (from the job's thread) and wait for its answer: (ok, value)."""
        request_id = uuid.uuid4().hex
        waiter: list = [threading.Event()]
        self._answers[request_id] = waiter
        try:
            self._events.put((kind, request_id, spec))
            if not waiter[0].wait(SAVE_TIMEOUT):
                raise OSError(f"the head did not answer within {SAVE_TIMEOUT:.0f} s ({kind})")
        finally:
            self._answers.pop(request_id, None)
        return waiter[1]

    # --- separate model files (FLUX.1 / SD3 / Z-Image's VAE and text encoders) ---------------------------------
    def _separate_parts(self, chosen=None):
        parts = self._plain_separate_parts(chosen)
        return replace(parts, check=lambda files, absent: self._check_parts(files, absent, parts.unknown))

    def _check_parts(self, files: dict, absent: set, unknown: tuple) -> None:
        """Called as a checkpoint that needs separate files (FLUX.1 / SD3 / Z-Image) loads, with the files this
        worker found ({kind: path}) and the required kinds it found none for. Each file must be the head's file of
        that name, byte for byte (by sha256), and every file chosen in VAE / Text Encoder must be here: else this
        worker refuses the job and another one runs it (a job never runs on a substitute)."""
        if threading.current_thread() is not self._thread:
            return  # a load outside a job (none in a pool): nothing to compare with
        from .models.flux_assembly import PART_LABELS
        for name in unknown:  # chosen, but no file here: a refusal when the head has it (else a warning, as there)
            ok, _ = self._ask("module_hash", {"chosen": name})
            if ok:
                raise WorkerRefused(f"{self.name} has no {name} (chosen in VAE / Text Encoder) in its models/VAE "
                                    "or models/text_encoder")
        if absent:
            raise WorkerRefused(f"{self.name} has no {', '.join(PART_LABELS[kind] for kind in sorted(absent))} "
                                "for this checkpoint")
        for path in files.values():
            folder_name, name = self._part_name(Path(path))
            mine = self.services.hashes.get_or_compute(path, "module")
            ok, theirs = self._ask("module_hash", {"folder": folder_name, "name": name})
            if not ok:
                raise WorkerRefused(f"{self.name} would use {folder_name}/{name}, which the server does not have "
                                    f"({theirs})")
            if str(theirs).lower() != mine.lower():
                raise WorkerRefused(f"{self.name} has a different {folder_name}/{name} (sha256 {mine[:10]}, the "
                                    f"server's is {str(theirs)[:10]})")

    def _part_name(self, path: Path) -> tuple[str, str]:
        """(folder, name inside it) of a separate file: as found in the folder (a link inside it keeps its own
        name, wherever it points), else as resolved."""
        paths = self.services.paths
        folders = (("VAE", paths.vae), ("text_encoder", paths.text_encoder))
        for resolve in (os.path.abspath, os.path.realpath):
            for folder_name, folder in folders:
                target, root = Path(resolve(path)), Path(resolve(folder))
                if target.is_relative_to(root):
                    return folder_name, target.relative_to(root).as_posix()
        raise WorkerRefused(f"{self.name}: {path} is in neither models/VAE nor models/text_encoder")


def resumable(request) -> bool:
    """Whether a job moved to another worker can skip the batches its lost worker finished: a plain generation
    (a script's or a folder batch's inner runs number their batches afresh; such a job starts over)."""
    return not request.script_name and getattr(request, "folder_batch", None) is None


# What WEBUI_WORKER_FLAGS may set for one machine's workers: where its model files are, and how its GPUs run them
# (the outputs, settings and data folder are the head's).
NODE_FLAGS = frozenset({"ckpt_dir", "lora_dir", "vae_dir", "embeddings_dir", "controlnet_dir",
                        "controlnet_annotator_models_path", "extensions_dir", "device", "precision", "no_half",
                        "no_half_vae", "xformers", "medvram", "lowvram"})


def node_flags() -> dict:
    """This machine's own folders: the flags in WEBUI_WORKER_FLAGS (set where `ray start` runs, e.g.
    `WEBUI_WORKER_FLAGS="--ckpt-dir /mnt/ssd/checkpoints"`) replace the head's for this node's workers."""
    import shlex

    from .settings.flags import build_parser
    text = os.environ.get("WEBUI_WORKER_FLAGS", "").strip()
    if not text:
        return {}
    parser = build_parser()
    given = vars(parser.parse_args(shlex.split(text)))
    defaults = vars(parser.parse_args([]))
    changed = {key: value for key, value in given.items() if value != defaults.get(key)}
    refused = sorted(key for key in changed if key not in NODE_FLAGS)
    if refused:
        raise ValueError(f"WEBUI_WORKER_FLAGS may set model folders and device flags only, not "
                         f"{', '.join('--' + key.replace('_', '-') for key in refused)}")
    return changed


def _write_here(spec: dict) -> Path:
    data = spec["data"]
    if spec["mode"] == "at":
        return output_save.write_at(lambda fp: fp.write(data), spec["path"])
    return output_save.write_numbered(lambda fp: fp.write(data), spec["folder"], spec["ext"],
                                      output_save.numbering_function(spec["numbering"]),
                                      output_save.name_from_template(spec["template"]))


def _describe_error(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc), "user": isinstance(exc, UserError),
            "status": getattr(exc, "status", None), "kind": getattr(exc, "kind", None),
            "field": getattr(exc, "field", None), "time": time.time()}
