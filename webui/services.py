"""Build every service once, from the flags, and hand them to the UI and the API (no global state)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .control.preprocessors import PreprocessorRegistry
from .core.errors import RequestError, UserError
from .core.request import PROMPT_FIELDS, GenerationRequest, check_prompt_text
from .engine import scripts as builtin_scripts
from .engine.engine import Engine, GenerationResult, prompt_encoder
from .engine.extras import ExtrasRequest, ExtrasResult, run_extras
from .engine.preview import offered_methods
from .engine.refiner import resolve as resolve_refiner
from .extensions.host import ExtensionHost
from .extensions.manager import ExtensionGuardError, ExtensionManager
from .jobs.queue import Job, JobQueue
from .jobs.store import JobStore
from .models.controlnet_registry import ControlNetRegistry
from .models.devices import DevicePolicy
from .models.embeddings import EmbeddingDatabase
from .models.hashing import BackgroundHasher, HashCache
from .models.manager import ModelManager
from .models.merge import MergeResult, check_merge, run_merge
from .models.merge_request import MergeRequest
from .models.networks import LoraRegistry
from .models.preview_decoders import PreviewDecoders
from .models.registry import CheckpointRegistry
from .models.face_restorers import FaceRestorationError, FaceRestorers
from .models.flux_assembly import module_choices, separate_parts
from .models.upscalers import UpscalerRegistry
from .models.vae import VaeRegistry
from .prompts.conditioning import check_emphasis, count_tokens
from .prompts.encoder import PromptEncoder
from .prompts.extra_networks import extract_extra_networks
from .prompts.schedule import strip_comments
from .prompts.styles import StyleDatabase
from .settings.options import OptionError, Options, OptionsOverlay
from .settings.paths import Paths

log = logging.getLogger(__name__)

# Errors whose message is meant for the user: shown as is, no traceback (the one family of webui/core/errors.py).
USER_ERRORS = (UserError,)


@dataclass
class Services:
    flags: argparse.Namespace
    paths: Paths
    options: Options
    policy: DevicePolicy
    hashes: HashCache
    hasher: BackgroundHasher
    models: ModelManager
    engine: Engine
    queue: JobQueue
    styles: StyleDatabase
    controlnets: ControlNetRegistry
    preprocessors: PreprocessorRegistry
    extension_host: ExtensionHost = None  # the loaded extensions: hooks, scripts, callbacks, problems
    on_stop: list = field(default_factory=list)  # what stop() undoes first (the install guard's environment)
    extensions: object = None  # webui.extensions.manager.ExtensionManager: install, update, remove
    restarter: Callable[["Services"], None] | None = None  # how `restart` restarts (tests replace it)
    stopper: Callable[["Services", int], None] | None = None  # how `/server-stop` stops (tests replace it)
    upscalers: UpscalerRegistry | None = None  # image upscalers (built-ins and models/ESRGAN, ...): hires fix, extras
    face_restorers: FaceRestorers | None = None  # GFPGAN / CodeFormer / RestoreFormer and the face detector

    @property
    def extension_problems(self):
        return self.extension_host.problems

    def restart(self) -> None:
        """Restart the server process (the Extensions tab's "Apply and restart UI"): the queue stops first."""
        (self.restarter or _restart_process)(self)

    def run_request(self, request: GenerationRequest, control) -> GenerationResult:
        """Run a generation on this thread (the queue's worker, or a script's nested process_images): with the
        request's override_settings in force and, when it names one, an extension's selectable script."""
        overrides = self.options.validate(dict(request.extra.get("override_settings") or {}))
        checkpoint = overrides.pop("sd_model_checkpoint", None)
        if checkpoint and not request.checkpoint:
            request.checkpoint = checkpoint
        if "CLIP_stop_at_last_layers" in overrides and request.clip_skip is None:
            request.clip_skip = int(overrides["CLIP_stop_at_last_layers"])
        engine = self.engine
        if overrides:
            engine = engine.with_options(OptionsOverlay(self.options, overrides))
        builtin = builtin_scripts.find(request.mode, request.script_name)
        if builtin is not None:
            request.validate()
            result = builtin.run(self.script_context(control, engine.options), request,
                                 list(request.script_run_args))
        elif request.script_name:
            from .extensions.a1111.runtime import RUNTIME
            from .extensions.a1111.script_hooks import run_selectable
            request.validate()
            with RUNTIME.run_options(engine.options):  # shared.opts in the script's run() sees override_settings
                result = run_selectable(self.extension_host, request, control)
        else:
            result = engine.run(request, control)
        if request.extra.get("override_settings_restore_afterwards") is False:
            # A1111's `override_settings_restore_afterwards: false`: the job's overrides stay as the settings
            self.apply_settings({**overrides, **({"sd_model_checkpoint": checkpoint} if checkpoint else {})})
        return result

    def script_context(self, control, options) -> builtin_scripts.ScriptContext:
        """What a built-in script runs with: each of its inner generations is a plain one (no script) through
        `run_request`, so override settings (the job's and the script's own) apply as to any generation."""

        def process(request: GenerationRequest, inner_control) -> GenerationResult:
            return self.run_request(replace(request, script_name="", script_run_args=[]), inner_control)

        def apply_styles(request: GenerationRequest, names: list) -> None:
            request.prompt, request.negative_prompt = self.styles.apply(request.prompt, request.negative_prompt,
                                                                        list(names))

        return builtin_scripts.ScriptContext(process=process, control=control, options=options,
                                             outputs_dir=self.engine.outputs_dir, apply_styles=apply_styles,
                                             models=self.models, upscalers=self.upscalers,
                                             hooks=self.engine.hooks,
                                             extra={"styles": self.styles, "extension_host": self.extension_host,
                                                    "controlnets": self.controlnets,
                                                    "preprocessors": self.preprocessors},
                                             check_request=self._check_face_restoration)

    def infotext_setting(self, option: str, value):
        """An infotext's text for a setting (a `SETTING_KEYS` entry: "31337" for ENSD, a hash for Model hash) as
        the option's value, as an override of a generation takes it: a checkpoint's title, a VAE this server has,
        "True"/"False" as booleans, numbers as the option's type. Raises a UserError (OptionError, an unknown
        checkpoint or VAE) saying why when this server cannot use it."""
        spec = self.options.specs.get(option)
        if spec is None:
            raise OptionError(f"this server has no setting {option!r}")
        if option == "sd_model_checkpoint":
            return self.models.resolve(str(value)).title
        if option == "sd_vae":
            self.models.vaes.refresh()
            self.models.vaes.choose(str(value), None)  # an unknown VAE name fails here
        if spec.kind is bool and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"  # infotext writes booleans as A1111 does: True / False
        return self.options.validate({option: value})[option]

    def apply_settings(self, changes: dict) -> None:
        """Apply checked settings now (on the queue's worker: a `set_options` job, or a job keeping its overrides):
        the checkpoint first, so a failed load leaves the other settings as they were."""
        changes = dict(changes)
        checkpoint = changes.pop("sd_model_checkpoint", None)
        if self.queue.pool is not None:  # a pool: the default for new jobs, each worker loads what its jobs need
            if checkpoint:
                changes["sd_model_checkpoint"] = self.models.resolve(checkpoint).title
                if "forge_additional_modules" not in changes:  # its remembered parts come with it, as below
                    remembered = self._remembered_modules(checkpoint)
                    if remembered is not None:
                        changes["forge_additional_modules"] = remembered
            if changes:
                self.options.update(changes)
            if "forge_additional_modules" in changes:  # with the checkpoint chosen now, or the default one
                self._remember_modules(changes["forge_additional_modules"],
                                       changes.get("sd_model_checkpoint") or self.options.get("sd_model_checkpoint")
                                       or None)
            return
        if checkpoint:
            modules = changes.pop("forge_additional_modules", None)
            if modules is None:
                modules = self._remembered_modules(checkpoint)
            previous = self.options.get("forge_additional_modules")
            if modules is not None:  # the parts the load uses: given with the checkpoint, or its remembered ones
                self.options.update({"forge_additional_modules": modules})
            try:
                self.models.select(checkpoint)
            except UserError:
                self.options.update({"forge_additional_modules": previous})  # the previous model stays, and its parts
                raise
            if modules is not None:
                self._remember_modules(modules)
        if "sd_vae" in changes:  # loaded now: a file that does not load is refused and the VAE in use stays
            self.models.use_vae(changes["sd_vae"])
        if changes:
            self.options.update(changes)
        if "forge_additional_modules" in changes:
            self._remember_modules(changes["forge_additional_modules"])

    def _remembered_modules(self, checkpoint: str) -> list | None:
        """The "VAE / Text Encoder" choice last made with this checkpoint (Forge keeps it per checkpoint)."""
        try:
            name = self.models.resolve(checkpoint).name
        except UserError:
            return None
        remembered = dict(self.options.get("forge_modules_by_checkpoint") or {}).get(name)
        return list(remembered) if isinstance(remembered, (list, tuple)) else None

    def _remember_modules(self, modules, checkpoint: str | None = None) -> None:
        """Remember the choice with `checkpoint` (None: the loaded one)."""
        if checkpoint is not None:
            try:
                name = self.models.resolve(checkpoint).name
            except UserError:  # no such checkpoint (any more): nothing to remember it with
                return
        else:
            current = self.models.current
            if current is None:
                return
            name = current[0].name
        by_checkpoint = dict(self.options.get("forge_modules_by_checkpoint") or {})
        by_checkpoint[name] = list(modules or [])
        self.options.update({"forge_modules_by_checkpoint": by_checkpoint})

    def generate(self, request: GenerationRequest, task_id: str | None = None, source: str = "") -> Job:
        """Queue a generation (validated first, so bad input fails at once with a clear message). Chosen styles
        are applied into the prompts here, so the infotext shows what was really generated."""
        request.validate()
        builtin = builtin_scripts.find(request.mode, request.script_name)
        if builtin is not None:  # one of A1111's built-in scripts: its args padded and checked now
            request.script_name = builtin.title
            request.script_run_args = builtin_scripts.prepare_args(builtin, request, request.script_run_args,
                                                                   self.script_context(None, self.options))
        elif request.script_name and request.script_name not in self.extension_host.selectable_titles(request.mode):
            raise RequestError("script_name", f"Script '{request.script_name}' not found (the {request.mode} "
                               "scripts are: " + (", ".join(self.extension_host.selectable_titles(request.mode))
                                                  or "none") + ")")
        if request.styles:
            request.prompt, request.negative_prompt = self.styles.apply(request.prompt, request.negative_prompt,
                                                                        list(request.styles))
            # the styles' texts, for the [prompt_no_styles] tag of the file name pattern (engine/saving.py)
            request.context["style_prompts"] = [self.styles.get(name).prompt for name in request.styles]
            if request.enable_hr and (request.hr_prompt or request.hr_negative_prompt):  # as A1111: styled too
                hr_prompt, hr_negative = self.styles.apply(request.hr_prompt or "", request.hr_negative_prompt or "",
                                                           list(request.styles))
                request.hr_prompt = hr_prompt if request.hr_prompt else ""  # "" stays "the first pass's prompt"
                request.hr_negative_prompt = hr_negative if request.hr_negative_prompt else ""
            request.check_prompts()  # the styled prompts within the limits too
        self._check_emphasis(request)
        if request.refiner_checkpoint:  # an unknown refiner fails now, not in the queue (engine/refiner.py)
            resolve_refiner(self.models, request.refiner_checkpoint)
        overrides = request.extra.get("override_settings")
        if overrides:
            request.extra["override_settings"] = self.options.validate(overrides)
        self._check_face_restoration(request)
        return self.queue.submit("generate", request, task_id, source)

    def _check_face_restoration(self, request: GenerationRequest) -> None:
        """Restoring faces (the request's `restore_faces`, else the setting) without the model's file or the face
        detector is refused now, as a 422 saying which file to put where, not from the queue."""
        from .engine.face_restoration import model_in_use
        overrides = request.extra.get("override_settings") or {}
        name = model_in_use(request, OptionsOverlay(self.options, overrides) if overrides else self.options)
        if name is None:
            return
        try:
            if self.face_restorers is None:
                raise FaceRestorationError("Face restoration is not available on this server")
            self.face_restorers.check_ready(name)
        except FaceRestorationError as exc:
            raise RequestError("restore_faces", f"{exc} (or turn Restore faces off)") from None

    def _check_emphasis(self, request: GenerationRequest) -> None:
        """Emphasis out of range (3000 nested brackets) is refused now, as a 422 naming the prompt, rather than
        from the queue as black images."""
        comments = bool(self.options.get("enable_prompt_comments"))
        for name in PROMPT_FIELDS:
            text = getattr(request, name) or ""
            if not text:
                continue
            text, _ = extract_extra_networks(strip_comments(text) if comments else text)
            check_emphasis(text, name, request.steps, negative=name.endswith("negative_prompt"))

    def load_checkpoint(self, query: str, source: str = "") -> Job:
        """Queue a checkpoint switch: it runs between jobs, never during one."""
        self.models.resolve(query)  # unknown names fail now, not in the queue
        return self.queue.submit("load_checkpoint", query, source=source)

    def set_options(self, changes: dict, source: str = "") -> Job:
        """Queue a change of settings (`sd_model_checkpoint` among them loads that checkpoint): validated now, so
        bad values fail at once, applied between jobs, so a running generation never sees half of it."""
        changes = dict(changes)
        checkpoint = changes.pop("sd_model_checkpoint", None)
        checked = self.options.validate(changes)
        if checkpoint:
            checked["sd_model_checkpoint"] = self.models.resolve(str(checkpoint)).title
        if "sd_vae" in checked:
            self.models.vaes.refresh()
            self.models.vaes.choose(checked["sd_vae"], None)  # an unknown VAE name fails here
        return self.queue.submit("set_options", checked, source=source)

    def rerun(self, seq: int, source: str = "") -> Job:
        """Queue a job of the history again. A generation is re-run as it ran: with the seeds it got (a random seed
        is fixed to the one drawn), its styles already in its prompts, and its images saved."""
        record = self.queue.store.get_seq(seq) if self.queue.store is not None else None
        if record is None:
            raise RequestError("job", f"No job #{seq} in the history")
        if not record.payload_complete:
            raise RequestError("job", f"Job {record.id} cannot be re-run: part of its request (an extension's value) "
                                      "could not be stored")
        payload = self.queue.store.payload(seq)
        if record.kind != "generate" or not isinstance(payload, GenerationRequest):
            raise RequestError("job", f"Job {record.id} is a {record.kind} job: only generations can be re-run")
        payload.styles = []
        payload.save_images = True  # the history is where a re-run's images are seen (an API job may not have saved)
        seeds, subseeds = record.result.get("seeds") or [], record.result.get("subseeds") or []
        if payload.seed == -1 and seeds:
            payload.seed = int(seeds[0])
        if payload.subseed == -1 and subseeds and payload.subseed_strength > 0:
            payload.subseed = int(subseeds[0])
        return self.generate(payload, source=source)

    def extras(self, request: ExtrasRequest, source: str = "") -> Job:
        """Queue an Extras upscale (validated first: bad sizes or an unknown upscaler fail at once); it runs in the
        queue, so its GPU work is ordered with the generations."""
        self.upscalers.refresh()  # a model file dropped in since the last listing is usable at once
        request.validate(self.upscalers.names(), self.face_restorers)
        return self.queue.submit("extras", request, source=source)

    def merge(self, request: MergeRequest, source: str = "") -> Job:
        """Queue a Checkpoint Merger job, checked first (names, architectures, the output file: only the files'
        headers are read), so a merge that cannot run is refused at once."""
        request.validate()
        self.models.refresh()  # a checkpoint dropped in since the last listing can take part
        check_merge(request, self.models.registry, self.models.vaes)
        return self.queue.submit("merge", request, source=source)

    def token_count(self, text: str, steps: int = 20) -> tuple[int, int]:
        """(tokens, limit) for a prompt box: counted with the loaded checkpoint's tokenizer and embeddings (a
        plain CLIP tokenizer before any checkpoint is loaded)."""
        check_prompt_text("prompt", text)  # a pasted megabyte would hold the tokenizer for minutes
        current = self.models.current
        if self.options.get("enable_prompt_comments"):
            text = strip_comments(text)
        text, _ = extract_extra_networks(text)
        if current is None:
            return count_tokens(PromptEncoder(_TokenizerOnly(self.paths.cache_dir), self.policy.device), text, steps)
        model = current[1]
        encoder_class = prompt_encoder(model)  # FLUX.1: T5's tokens against its sequence length
        embeddings = {}
        if encoder_class is PromptEncoder:
            self.models.embeddings.refresh()  # as a generation does: new embedding files count at once
            embeddings, _ = self.models.embeddings.for_model(model)
        encoder = encoder_class(model, self.policy.device, embeddings,
                                comma_backtrack=int(self.options.get("comma_padding_backtrack")))
        return count_tokens(encoder, text, steps)

    def stop(self) -> None:
        for callback in self.on_stop:
            callback()
        self.on_stop.clear()
        worker_ended = self.queue.stop()
        if self.extension_host is not None:
            self.extension_host.shutdown()
        if self.queue.store is not None and worker_ended:  # a job still finishing records its images yet
            self.queue.store.close()


class _TokenizerOnly:
    """Stands in for a model when only tokenizing (the token counter before a checkpoint is loaded)."""

    def __init__(self, cache_dir):
        from .models.tokenizer import clip_tokenizer
        self.tokenizers = [clip_tokenizer(cache_dir)]


def pool_requested(flags) -> bool:
    """--workers N or --ray-address ADDR: generations run on a pool of workers (webui/pool_head.py)."""
    return bool(getattr(flags, "workers", None) or getattr(flags, "ray_address", None))


def _take_options(options: Options, values: dict) -> None:
    """A pool worker's settings: the head's, each one this worker accepts."""
    for key, value in values.items():
        if key not in options.specs:
            continue
        try:
            options.update({key: value}, save=False)
        except Exception as exc:  # noqa: BLE001 - a value this worker cannot take (a folder it lacks) keeps its own
            log.warning("setting %s=%r not taken from the head: %s", key, value, exc)


def _run_generation(services: "Services", job: Job) -> GenerationResult:
    from .extensions.a1111.runtime import RUNTIME
    with RUNTIME.in_job(job.control):  # an extension's nested process_images runs here, not through the queue
        return services.run_request(job.payload, job.control)


def _restart_process(services: "Services") -> None:
    """Replace this process with a fresh one started the same way, after a moment (so the answer to the click
    reaches the browser, which reconnects when the server is back)."""
    def later():
        time.sleep(1.0)
        services.stop()
        log.info("restarting: %s %s", sys.executable, " ".join(sys.argv))
        os.execv(sys.executable, [sys.executable, *sys.argv])

    threading.Thread(target=later, name="restart", daemon=True).start()


def _run_load(services: "Services", job: Job) -> str:
    if services.queue.pool is not None:  # the default for new jobs, not a load on every worker
        services.apply_settings({"sd_model_checkpoint": job.payload})
        return services.models.resolve(job.payload).title
    info, _ = services.models.select(job.payload)
    return info.title


def _run_extras(services: "Services", job: Job) -> ExtrasResult:
    host = services.extension_host  # its extensions' Extras operations (A1111's ScriptPostprocessing)
    return run_extras(job.payload, services.upscalers, services.options, services.paths.outputs, job.control,
                      face_restorers=services.face_restorers,
                      postprocessing=getattr(host, "postprocessing", None) if host is not None else None)


def _run_merge(services: "Services", job: Job) -> MergeResult:
    result = run_merge(job.payload, services.models.registry, services.models.vaes, job.control)
    services.models.forget(Path(result.path))  # a replaced checkpoint that was loaded is read again when next used
    return result


def _run_set_options(services: "Services", job: Job) -> dict:
    services.apply_settings(job.payload)
    return {"changed": sorted(job.payload)}


def _run_unload(services: "Services", job: Job) -> None:
    if services.queue.pool is not None:  # each worker frees its models between jobs
        services.queue.pool.request_unload()
        return
    services.models.unload_all()


def _run_reload(services: "Services", job: Job) -> str:
    """Load the selected checkpoint again from its file (A1111's reload-checkpoint)."""
    title = services.models.current_title() or services.options.get("sd_model_checkpoint") or None
    if services.queue.pool is not None:  # each worker reads its checkpoints again when next used
        services.queue.pool.request_unload()
        return services.models.resolve(title).title if title else ""
    services.models.unload_all()
    info, _ = services.models.select(title) if title else services.models.get(None)
    return info.title


def _guard_process(services: Services):
    """pip that an extension's scripts run (at import or later, not through install.py) meets the same constraints
    as its install.py: they go into this process's environment until the services stop. (The before/after check of
    install.py is not repeated here: it costs a second or two at every start.)"""
    import sys

    from .extensions.install_guard import ENV_MARKER, GuardedInstall
    try:
        guard = GuardedInstall(sys.executable)
    except Exception as exc:  # noqa: BLE001 - no guard for scripts' pip calls is no reason not to start
        services.extension_host.problems.report("", "install guard", exc)
        return None
    saved = {key: os.environ.get(key) for key in ("PIP_CONSTRAINT", ENV_MARKER)}
    env = guard.env(dict(os.environ))
    os.environ.update({key: env[key] for key in saved if key in env})

    def restore() -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        guard.close()

    services.on_stop.append(restore)
    return guard


def _load_extensions(services: Services) -> None:
    """install.py of every enabled extension (unless --skip-install, as A1111), then their scripts and hooks."""
    host = services.extension_host
    if not getattr(services.flags, "skip_install", False):
        for extension in host.enabled():
            if (extension.path / "install.py").is_file():
                try:
                    report = services.extensions.run_install(extension.name)
                except ExtensionGuardError as exc:  # refused by the install guard: left disabled, not loaded
                    extension.enabled = False
                    host.problems.report(extension.name, "install.py", exc)
                except Exception as exc:  # noqa: BLE001 - an extension's install never stops the start-up
                    host.problems.report(extension.name, "install.py", exc)
                else:
                    for notice in report.notices:  # an optional extra left out: the Extensions tab shows why
                        host.problems.report(extension.name, "install.py", UserWarning(notice))
    if host.enabled():
        _guard_process(services)
    host.load(services)
    if host.runners and any(r.scripts for r in host.runners.values()) or host.apis():
        from .ui.extension_scripts import record_defaults_offscreen
        record_defaults_offscreen(host)  # scripts' default args, for requests that leave them out
    services.engine.hooks = host.hooks
    if host.extensions:
        log.info("extensions: %s", ", ".join(e.name + ("" if e.enabled else " (disabled)") for e in host.extensions))


def build_services(flags: argparse.Namespace, host: ExtensionHost | None = None,
                   worker_options: dict | None = None) -> Services:
    """Every service, once. `host`: the extensions found (and preloaded) while parsing the flags
    (`webui.extensions.host.parse_flags_with_extensions`); None: found now, without preloads. `worker_options`: the
    head's settings, for a pool worker (`webui/worker_host.py`): its services keep no history, run no queue, write
    no settings and make no pool of their own."""
    worker = worker_options is not None
    paths = Paths.from_flags(flags)
    paths.ensure()
    options = Options(None if worker else paths.config_file,
                      hide_dirs=bool(getattr(flags, "hide_ui_dir_config", False)))
    if worker:
        _take_options(options, worker_options)
    elif not paths.config_file.exists():  # as A1111, config.json exists from the first start (extensions read or
        paths.config_file.write_text("{}\n", encoding="utf-8")  # serve it); settings are stored once changed
    if host is None:
        host = ExtensionHost(paths.extensions, options.get("disabled_extensions"),
                             disable_all=getattr(flags, "disable_all_extensions", False))
    policy = DevicePolicy.from_flags(flags)
    hashes = HashCache(paths.hash_cache_file)
    hasher = BackgroundHasher(hashes)
    registry = CheckpointRegistry([paths.checkpoints], hashes, hasher)
    registry.refresh()
    loras = LoraRegistry([paths.lora, paths.lycoris], hashes)
    embeddings = EmbeddingDatabase(paths.embeddings, hashes)
    vaes = VaeRegistry(paths.vae, hashes, checkpoint_roots=[paths.checkpoints])
    models = ModelManager(registry, policy, paths.cache_dir, options, loras=loras, embeddings=embeddings, vaes=vaes)
    models.separate_parts = lambda chosen=None: separate_parts(
        paths, options.get("forge_additional_modules") if chosen is None else chosen,
        int(options.get("gpu_weights_mb") or 0))
    options.add_option("forge_additional_modules", replace(
        options.specs["forge_additional_modules"], choices=lambda: module_choices((paths.vae, paths.text_encoder))))
    controlnets = ControlNetRegistry([paths.controlnet])
    controlnets.refresh()
    preprocessors = PreprocessorRegistry(paths.annotators, str(policy.device))
    upscalers = UpscalerRegistry(paths.upscaler_dirs, policy, options)
    upscalers.refresh()
    previews = PreviewDecoders(paths.preview_decoder_dirs, policy.device, policy.vae_dtype)
    options.add_option("show_progress_type", replace(options.specs["show_progress_type"],
                                                     offered=lambda: offered_methods(previews)))
    face_restorers = FaceRestorers(paths.face_restorer_root, policy.device)
    engine = Engine(models, options, paths.outputs, policy, controlnets=controlnets, preprocessors=preprocessors,
                    upscalers=upscalers, previews=previews, face_restorers=face_restorers)
    store = None if worker else JobStore(paths.jobs_db, keep=int(options.get("job_history_limit")))
    recovered = store.recover() if store is not None else 0
    if recovered:
        log.warning("%d job(s) were unfinished when the server last stopped: marked failed in the history", recovered)
    pool = None
    if not worker and pool_requested(flags):
        from .pool_head import build_pool
        pool = build_pool(flags, paths, options, registry)
    queue = JobQueue(user_errors=USER_ERRORS, store=store, pool=pool)
    services = Services(flags, paths, options, policy, hashes, hasher, models, engine, queue,
                        StyleDatabase(paths.styles_file), controlnets, preprocessors, extension_host=host,
                        extensions=ExtensionManager(paths.extensions, options, flags), upscalers=upscalers,
                        face_restorers=face_restorers)
    _load_extensions(services)
    queue.register("generate", lambda job: _run_generation(services, job))
    queue.register("load_checkpoint", lambda job: _run_load(services, job))
    queue.register("set_options", lambda job: _run_set_options(services, job))
    queue.register("extras", lambda job: _run_extras(services, job))
    queue.register("merge", lambda job: _run_merge(services, job))
    queue.register("unload_checkpoint", lambda job: _run_unload(services, job))
    queue.register("reload_checkpoint", lambda job: _run_reload(services, job))
    if pool is not None:
        from .pool_head import use_pool
        use_pool(services, pool)
    queue.start()  # (a worker's: for an extension that queues a generation from a thread of its own)
    log.info("device %s, dtype %s, attention %s; %d checkpoints in %s", policy.device, policy.dtype,
             policy.attention, len(registry.list()), paths.checkpoints)
    return services
