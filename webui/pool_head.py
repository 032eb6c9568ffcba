"""The head's side of a pool of generation workers (--workers N, --ray-address ADDR).

The head keeps the queue, the history, the outputs folder and the event bus; generations go to the workers
(`webui/jobs/pool.py` dispatches, `webui/jobs/ray_pool.py` reaches them, `webui/worker_host.py` runs them). Here: how a
queued generation becomes a work item (the request record with its images as PNG bytes, the head's settings, its
model files by sha256, its seeds fixed, the batches a lost worker had finished), and how what the worker reports
comes back: progress and previews onto the job's control, each image written by the head (atomic, numbered in its
folder) and recorded in the history at once, and the result.

Settings that name a checkpoint (the UI's checkpoint menu, `/options`) become the default for new jobs rather than
a load on every worker; unloading asks each worker to free its models between jobs.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

from PIL import Image

from .core.errors import UserError
from .engine.preview import preview_every
from .engine.seeds import fix_seed
from .jobs.pool import WorkerPool, WorkerRefused
from .jobs.records import decode_payload, encode_payload
from .models.registry import UnknownCheckpointError
from .outputs import save as output_save
from .pool_models import manifest
from .worker_host import resumable

log = logging.getLogger(__name__)

_POOL_FLAGS = ("workers", "ray_address", "worker_timeout")
_NOT_FOR_WORKERS = ("gradio_auth", "api_auth")  # logins stay on the head (workers serve nothing)


def _absolute(key: str, value):
    """A folder flag as the head resolves it (a worker on another machine starts elsewhere)."""
    if isinstance(value, str) and value and (key.endswith("_dir") or key.endswith("_path") or key == "outdir"):
        return os.path.abspath(value)
    return value


def build_pool(flags, paths, options, registry) -> WorkerPool:
    """Reach Ray and make the pool (its workers start with the queue). Raises PoolStartError when Ray is missing or
    unreachable."""
    from .jobs import ray_pool
    cluster = ray_pool.connect(getattr(flags, "ray_address", None), getattr(flags, "workers", None))
    worker_flags = {key: _absolute(key, value) for key, value in vars(flags).items()
                    if key not in _POOL_FLAGS + _NOT_FOR_WORKERS
                    and isinstance(value, (str, int, float, bool, type(None)))}
    timeout = float(getattr(flags, "worker_timeout", None) or 60.0)

    def factory(index: int):
        return ray_pool.RayWorker.create(index, cluster, worker_flags, options.as_dict(), timeout,
                                         env=worker_environment(index), stopping=pool.stopping)

    pool = WorkerPool(factory, runner=None, size=cluster.size, key_of=lambda job: "")
    pool.cluster = cluster
    pool.on_stop = ray_pool.shutdown
    log.info("pool: %d worker(s) on Ray (%s), %s each", cluster.size, cluster.address,
             "1 GPU" if cluster.gpus_per_worker else "1 CPU")
    return pool


def worker_environment(index: int) -> dict:
    """Environment variables for worker `index` alone (none: each node's own, WEBUI_WORKER_FLAGS included). Tests
    give two local workers different model folders here, as two machines would have."""
    return {}


def use_pool(services, pool: WorkerPool) -> None:
    """Wire the pool to the services: how a job's checkpoint is known, how a job runs on a worker."""
    pool.key_of = lambda job: pin(services, job)
    pool.runner = lambda job, worker: run_on_worker(services, job, worker)


def requested_checkpoint(services, request) -> str | None:
    overrides = request.extra.get("override_settings") or {}
    return request.checkpoint or overrides.get("sd_model_checkpoint") or \
        services.options.get("sd_model_checkpoint") or None


def pin(services, job) -> str:
    """When a generation is queued: fix the checkpoint it runs on (the request's, its override, else the setting
    now, as one GPU would run it, whatever is chosen later) and its seeds; its affinity key (the checkpoint's
    name)."""
    request = job.payload
    query = requested_checkpoint(services, request)
    try:
        info = services.models.resolve(query) if query else (services.models.checkpoints() or [None])[0]
    except UnknownCheckpointError:
        info = None  # the job fails with that message when it goes to a worker (work_item)
    job.pinned.update(checkpoint=info.title if info is not None else query,
                      seed=fix_seed(request.seed), subseed=fix_seed(request.subseed))
    return info.name if info is not None else str(query or "")


def pool_checkpoints(services) -> set[str] | None:
    """Names of the checkpoints some live worker has (None: no pool)."""
    pool = services.queue.pool
    if pool is None:
        return None
    names: set[str] = set()
    for slot in pool.slots:
        worker = slot.worker
        names.update(getattr(worker, "checkpoints", []) if worker is not None else [])
    return names


def run_on_worker(services, job, worker):
    request = job.payload
    item, keep_overrides = work_item(services, job, request)
    result = worker.run(item, HeadSink(services, job))
    result.warnings.extend(note for note in job.notes if note not in result.warnings)
    if keep_overrides is not None:  # override_settings_restore_afterwards: false, applied here, on the head
        services.apply_settings(keep_overrides)
    return result


def work_item(services, job, request) -> tuple[dict, dict | None]:
    """What goes to the worker: the request (checkpoint and seeds fixed, so another worker makes the same
    pictures), the head's settings, the model files by sha256, the batches already finished; and the overrides to
    keep as settings afterwards (None: restored)."""
    pinned = job.pinned if job.pinned else {}
    if not pinned:  # (a job queued before the pool knew it: pinned now)
        pin(services, job)
        pinned = job.pinned
    if pinned.get("checkpoint"):
        services.models.resolve(pinned["checkpoint"])  # an unknown checkpoint fails the job with its message
    extra = dict(request.extra)
    overrides = dict(extra.get("override_settings") or {})
    keep = extra.get("override_settings_restore_afterwards") is False
    if keep:
        extra["override_settings_restore_afterwards"] = True
    copy_ = replace(request, extra=extra, checkpoint=pinned["checkpoint"] or request.checkpoint,
                    seed=pinned["seed"], subseed=pinned["subseed"], context={}, corrections=list(request.corrections))
    objects: list = []
    packed = encode_payload(copy_, objects)
    vae = overrides.get("sd_vae") or services.options.get("sd_vae")
    resume = None
    if job.batches and resumable(request):
        resume_objects: list = []
        resume_packed = encode_payload([entries for _, entries in sorted(job.batches, key=lambda b: b[0])],
                                       resume_objects)
        resume = {"json": resume_packed.json, "images": resume_packed.images, "objects": resume_objects}
    return ({"job_id": job.id,
            "request": {"json": packed.json, "images": packed.images, "objects": objects},
            "context": _plain(request.context),
            "options": services.options.as_dict(),
            "models": [asdict(ref) for ref in manifest(services, copy_, vae)],
            "resume": resume,
            "preview_every": preview_every(services.options)}, overrides if keep else None)


def _plain(context: dict) -> dict:
    """The request context's plain values (styles' prompts, job timestamp, user): extensions' objects stay here."""
    out = {}
    for key, value in (context or {}).items():
        if isinstance(value, (str, int, float, bool, type(None))) or (
                isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)):
            out[key] = copy.copy(value)
    return out


class _RemotePreview:
    """The job's previewer on the head: the worker renders (`in_loop`: the picture is made elsewhere, the head shows
    the last one it got). Followers asking for a preview call `watched()` (engine/preview.py shared_preview): the
    worker renders previews only while someone asked within the last `WANTED_SECONDS` (nobody watching costs it
    nothing)."""

    WANTED_SECONDS = 5.0
    in_loop = True

    def __init__(self):
        self.asked = float("-inf")

    def watched(self) -> None:
        self.asked = time.monotonic()

    def wanted(self) -> bool:
        return time.monotonic() - self.asked < self.WANTED_SECONDS


class HeadSink:
    """What the head does with a worker's reports of one job (`handle(event)`: see webui/worker_host.py)."""

    def __init__(self, services, job):
        self.services, self.job = services, job
        self.previews = _RemotePreview()
        job.control.previewer = self.previews

    def wants_preview(self) -> bool:
        """Whether the worker should send live previews now (someone on the head is looking)."""
        return self.previews.wanted()

    def handle(self, event):
        kind = event[0]
        control = self.job.control
        if kind == "progress":
            data = event[1]
            control.report(sampling_step=int(data.get("step", 0)), sampling_steps=int(data.get("steps", 0)),
                           job_no=int(data.get("job_no", 0)), job_count=int(data.get("job_count", 1)),
                           textinfo=str(data.get("textinfo", "")))
        elif kind == "preview":
            try:
                picture = Image.open(io.BytesIO(event[1]))
                picture.load()
            except Exception:  # noqa: BLE001 - a preview is a nicety
                return None
            control.publish_preview(picture)
        elif kind == "save":
            return ("answer", event[1], self.save(event[2]))
        elif kind == "module_hash":
            return ("answer", event[1], self.module_hash(event[2]))
        elif kind == "image":
            control.image_saved(event[1], event[2])
        elif kind == "batch":
            self.job.batches.append((int(event[1]), event[2] and decode_payload(
                event[2]["json"], event[2]["images"], event[2]["objects"])))
        elif kind == "result":
            packed = event[1]
            result = decode_payload(packed["json"], packed["images"], packed["objects"])
            return ("done", result)
        elif kind == "error":
            raise _rebuilt_error(event[1])
        elif kind == "refused":
            raise WorkerRefused(event[1])
        return None  # ("alive", seconds): the transport's concern

    def save(self, spec: dict) -> tuple[bool, str]:
        """Write an image the worker made, where the head's settings put it; (ok, path or why not)."""
        try:
            data = spec["data"]
            if spec["mode"] == "at":
                target = self._inside_outputs(Path(spec["path"]))
                _image_extension(target.suffix)
                path = output_save.write_at(lambda fp: fp.write(data), target)
            else:
                folder = self._inside_outputs(Path(spec["folder"]))
                ext = _image_extension(str(spec["ext"]))
                name = output_save.name_from_template(str(spec["template"]))
                for number in (0, 1, 12345):  # a name, never a path: nothing is written beside the folder
                    candidate = name(number)
                    if not candidate or candidate in (".", "..") or any(c in candidate for c in "/\\\0"):
                        raise ValueError(f"{candidate!r} is not a file name")
                path = output_save.write_numbered(lambda fp: fp.write(data), folder, ext,
                                                  output_save.numbering_function(spec["numbering"]), name)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, str(path)

    def module_hash(self, spec: dict) -> tuple[bool, str]:
        """The sha256 of the head's separate model file (a VAE or text encoder) a worker is about to use, or of the
        file a name chosen in VAE / Text Encoder means here (`chosen`); (False, why) when the head has no such
        file. `name` is a path inside models/VAE or models/text_encoder, checked as
        text (no absolute path, no `..`): a link inside those folders is the owner's choice, as on one server."""
        paths = self.services.paths
        if "chosen" in spec:  # a name as chosen in VAE / Text Encoder
            from .models.flux_assembly import resolve_module
            found = resolve_module(str(spec["chosen"]), (paths.vae, paths.text_encoder))
            if found is None:
                return False, f"no file {spec['chosen']!r} in models/VAE or models/text_encoder"
            try:
                return True, self.services.hashes.get_or_compute(found, "module")
            except (OSError, ValueError) as exc:
                return False, f"{type(exc).__name__}: {exc}"
        folder = {"VAE": paths.vae, "text_encoder": paths.text_encoder}.get(str(spec.get("folder")))
        name = str(spec.get("name") or "")
        parts = Path(name).parts
        if folder is None or not name or "\0" in name or "\\" in name or Path(name).is_absolute() \
                or ".." in parts or not name.endswith(".safetensors"):
            return False, f"not a model file name: {spec.get('folder')}/{name}"
        path = Path(folder) / name
        try:
            if not path.is_file():
                return False, f"no file {name} in {folder}"
            return True, self.services.hashes.get_or_compute(path, "module")
        except (OSError, ValueError) as exc:
            return False, f"{type(exc).__name__}: {exc}"

    def _inside_outputs(self, path: Path) -> Path:
        """`path` when it lies in the outputs folder or a folder the settings name for saving; else refused."""
        resolved = Path(os.path.realpath(path))
        roots = [self.services.paths.outputs] + [
            Path(value) for key, value in self.services.options.as_dict().items()
            if key.startswith("outdir_") and isinstance(value, str) and value]
        batch = getattr(self.job.payload, "folder_batch", None)
        if batch is not None and batch.output_dir:  # img2img batch from a folder: its output folder
            roots.append(Path(batch.output_dir))
        for root in roots:
            root = Path(os.path.realpath(root))
            if resolved == root or root in resolved.parents:
                return path
        raise ValueError(f"{path} is outside the output folders: not saved")


def _image_extension(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    if ext not in ("png", "jpg", "jpeg", "webp"):
        raise ValueError(f"not an image file type: {ext!r}")
    return ext


def _rebuilt_error(info: dict) -> BaseException:
    """The worker's error as the head's job fails with it: a user's error keeps its message and HTTP status."""
    message = str(info.get("message", ""))
    if info.get("user"):
        error = UserError(message, status=info.get("status"), kind=info.get("kind"))
        if info.get("field") is not None:
            error.field = info["field"]
        return error
    cls = type(str(info.get("type") or "Error"), (RuntimeError,), {})
    return cls(message)
