"""The generation engine: a validated request in, images with infotext out.

It knows nothing of Gradio or HTTP. It asks the model manager for weights, encodes prompts, draws per-image
noise, runs A1111's sampler (webui/engine/sampling, around the UNet through denoiser.py; reporting every step and
obeying Interrupt/Skip), decodes, writes infotext and saves.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from PIL import Image

from .. import __version__
from ..core.errors import RequestError, UserError
from ..core.request import GenerationRequest
from ..core.run_control import RunControl
from ..control.runner import ControlPlan, prepare_control
from ..models import vae_tiling
from ..models.vae_tiling import from_model_latents, to_model_latents
from ..models.controlnet import ControlNetCache
from ..outputs.infotext import build_infotext
from ..extensions.hooks import DenoiserEvent, ImageEvent, ProcessingHooks, ProcessingRun
from ..prompts.conditioning import BatchConditioning, PromptConditioning, build_conditioning
from ..prompts.encoder import PromptEncoder
from ..prompts.extra_networks import extract_extra_networks
from ..prompts.schedule import strip_comments
from . import hires as hires_fix
from . import images as imaging
from . import preview
from . import refiner as refiner_fix
from . import face_restoration
from . import samplers
from .batch_grid import add_batch_grid
from .img2img import Img2ImgSetup, blank_inpaint_input, prepare_img2img
from .networks import prepare_networks, ti_hashes
from .saving import save_generated
from . import color_correction
from .scripts.image_lists import apply_image_lists
from .denoiser import Denoiser, Interrupted, LCMParameterization, UNetCall
from .sampling.noise import BatchNoise
from .sampling.flow import FlowLevels, euler_ancestral_flow, shift_for
from .sampling.sigmas import NoiseLevels
from .transformer_call import network_call
from ..models.families import FAMILIES, FLOW_SAMPLERS
from .seeds import fix_seed
from .tiling import circular_padding

log = logging.getLogger(__name__)

_LAST = ("Lora hashes", "TI hashes")  # extra infotext keys A1111 writes after those of img2img, hires fix, ...


def model_noise_levels(model, width: int = 1024, height: int = 1024):
    """The checkpoint's noise levels: A1111's (from its beta schedule), or a flow family's at the image's shift."""
    family = FAMILIES[model.family]
    if family.sampling == "flow":
        return FlowLevels(shift_for(family.shift, width, height), own=family.own_schedule)
    return NoiseLevels.from_config(dict(model.scheduler_config))


def _is_controlnet_key(key: str) -> bool:  # "ControlNet N" entries follow the hashes, as A1111's extension adds them
    return key.startswith("ControlNet ")


class NaNOutputError(UserError, RuntimeError):
    """The model produced NaNs that no retry could fix; the message says what to try (HTTP 400, as a checkpoint or
    VAE that does not load: the same request fails the same way with this model)."""

    status = 400
    kind = "NaNOutput"


@dataclass
class GenerationResult:
    images: list = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    saved_paths: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    skipped_batches: int = 0
    seed: int = 0
    subseed: int = 0
    model_name: str = ""
    model_hash: str | None = None
    job_timestamp: str = ""
    elapsed: float = 0.0
    extra_params: dict = field(default_factory=dict)  # infotext additions: VAE, Lora hashes, TI hashes
    control_maps: list = field(default_factory=list)  # ControlNet units' detected maps (PIL), in unit order
    # How many images at the front are grids (A1111's index_of_first_image): their seeds / subseeds / prompts
    # lists do not hold entries for them; `infotexts` does (one per image). A script's pictures shown only within
    # its grid still have their entries (X/Y/Z plot without Include Sub Images: one per cell, no image after the
    # grids), so ♻️ and API clients get them.
    index_of_first_image: int = 0


class Engine:
    def __init__(self, models, options, outputs_dir: Path, policy, controlnets=None, preprocessors=None, hooks=None,
                 upscalers=None, previews=None, face_restorers=None):
        self.models = models
        self.face_restorers = face_restorers  # webui.models.face_restorers.FaceRestorers: "Restore faces"
        self.previews = previews  # webui.models.preview_decoders.PreviewDecoders: Approx NN / TAESD live previews
        self.upscalers = upscalers  # webui.models.upscalers.UpscalerRegistry: hires fix's image upscalers
        self.controlnets = controlnets  # webui.models.controlnet_registry.ControlNetRegistry
        self.preprocessors = preprocessors  # webui.control.preprocessors.PreprocessorRegistry
        self.controlnet_cache = ControlNetCache(policy)
        self.options = options
        self.outputs_dir = Path(outputs_dir)
        self.policy = policy
        self.hooks = hooks or ProcessingHooks()  # extensions (webui.extensions.hooks); none: does nothing

    def with_options(self, options) -> "Engine":
        """The same engine (models, caches, registries) reading other options: a job's override_settings."""
        clone = copy.copy(self)
        clone.options = options
        return clone

    # --- entry point -------------------------------------------------------------------------------------------
    def run(self, request: GenerationRequest, control: RunControl | None = None) -> GenerationResult:
        control = control or RunControl()
        request.validate()
        if request.folder_batch is not None:
            from .batch import run_folder_batch  # here: batch.py builds on this module
            return run_folder_batch(self, request, control)
        started = time.perf_counter()
        run = ProcessingRun(request=request, control=control, options=self.options, state=dict(request.context))
        self.hooks.before_process(run)  # may change the request (A1111's before_process)
        request.validate()
        info, model = self.models.get(request.checkpoint, self._modules_choice())
        total = request.batch_size * request.n_iter
        seed, subseed = fix_seed(request.seed), fix_seed(request.subseed)
        variation = request.subseed_strength > 0
        result = GenerationResult(seed=seed, subseed=subseed, model_name=info.name_for_extra,
                                  model_hash=info.shorthash, job_timestamp=datetime.now().strftime("%Y%m%d%H%M%S"))
        run.all_prompts, run.all_negative_prompts = [request.prompt] * total, [request.negative_prompt] * total
        run.all_seeds = [seed if variation else seed + i for i in range(total)]
        run.all_subseeds = [subseed + i if variation else subseed for i in range(total)]
        apply_image_lists(run)  # a built-in script's per-image prompts / seeds and infotext entries (prompt matrix)
        run.model_info, run.model, run.result = info, model, result
        self.hooks.process(run)  # may rewrite the per-image prompts and seeds, and settings (A1111's process)
        _restore_shape(run, request, total)
        _fit_lists(run, total)
        if FAMILIES[model.family].own_schedule == "Simple":  # FLUX.1's own schedule is the one Forge calls Simple
            request.scheduler = "Simple" if request.scheduler == "Uniform" else request.scheduler  # (after the
            if request.hr_scheduler == "Uniform":  # extensions' hooks, which write their copy of it back)
                request.hr_scheduler = "Simple"
        sampler, schedule = samplers.resolve(request.sampler_name, request.scheduler,
                                             flow=FAMILIES[model.family].own_schedule == "Simple")
        clip_skip = request.clip_skip or int(self.options.get("CLIP_stop_at_last_layers"))
        passes = 2 if request.enable_hr else 1  # hires fix: each batch's second pass counts as a job, as A1111
        control.report(job_count=request.n_iter * passes, job_no=0, sampling_step=0,
                       sampling_steps=self._steps_to_run(request), started=time.monotonic(), textinfo="Encoding prompt")
        setup = (prepare_img2img(request, seed, str(self.options.get("img2img_background_color")))
                 if request.mode == "img2img" else None)
        prompts = _RunPrompts(self, model, info, clip_skip, self._schedule_steps(request, sampler), result)
        hires = self._plan_hires(request, schedule, model, info, prompts) if request.enable_hr else None
        refiner = self._plan_refiner(request, model, info, prompts, control)
        self._check_passes(request, sampler, schedule, model, hires)  # a pass A1111 cannot run: refused before any
        faces = self._face_restorer(request)  # "Restore faces": a missing model is refused before sampling
        base_params = dict(setup.params) if setup is not None else {}
        if model.inpainting:
            base_params["Conditional mask weight"] = f"{float(self.options.get('inpainting_mask_weight')):g}"
        width, height = (setup.width, setup.height) if setup is not None else (request.width, request.height)
        if any(unit.enabled for unit in request.controlnet_units):
            control.report(textinfo="ControlNet: preprocessing and loading models")
        control_plan = prepare_control(request, self.controlnets, self.controlnet_cache, self.preprocessors,
                                       model.unet, width, height, setup, result.warnings, model.family)
        if control_plan is not None:
            result.control_maps = list(control_plan.maps)
            control_plan.to(self.policy.device)
            base_params.update(control_plan.params)
        with self._autocast(model), self._controlnets_on_device(control_plan), \
                circular_padding(model.unet, model.vae, enabled=request.tiling):
            sampler_params: dict = {}  # the sampler's infotext keys (Eta, Sigma churn, ...): every image's, and info's
            resumed = list(request.context.get("resumed_batches") or [])  # a pool job re-run on another worker
            for batch in range(request.n_iter):
                if control.interrupted:
                    result.interrupted = True
                    break
                if batch < len(resumed):  # finished (and saved) by the worker that died: kept, not made again
                    _restore_batch(result, resumed[batch])
                    continue
                control.take_skip()  # a Skip pressed after the last batch had finished sampling is spent (A1111)
                items = run.batch_range(batch)
                run.batch_number = batch
                run.prompts = run.all_prompts[items.start:items.stop]
                run.negative_prompts = run.all_negative_prompts[items.start:items.stop]
                run.seeds = run.all_seeds[items.start:items.stop]
                run.subseeds = run.all_subseeds[items.start:items.stop]
                batch_lists = (list(run.prompts), list(run.negative_prompts), list(run.seeds), list(run.subseeds))
                self.hooks.before_batch(run)  # may change this batch's prompts
                _keep_batch_shape(run, batch_lists)
                control.report(job_no=batch * passes, sampling_step=0, sampling_steps=self._steps_to_run(request),
                               textinfo=f"Batch {batch + 1} of {request.n_iter}")
                conditioning, params = prompts.for_batch(run.prompts, run.negative_prompts, base_params)
                self.hooks.process_batch(run)
                first_refiner = refiner.for_pass(False, info, run.prompts, run.negative_prompts) \
                    if refiner is not None else None
                latents = self._sample(model, request, sampler, schedule, conditioning, run.seeds, run.subseeds,
                                       control, setup, items.start, control_plan, run,
                                       fill_seeds=run.all_seeds[:request.batch_size], infotext=sampler_params,
                                       refiner=first_refiner)
                params.update({key: value for key, value in sampler_params.items() if key not in params})
                stopped = control.interrupted or control.skip_requested
                decoder = first_refiner.model if first_refiner is not None and first_refiner.switched else model
                if latents is not None and hires is not None and not stopped:
                    control.report(job_no=batch * passes + 1, sampling_step=0,
                                   sampling_steps=hires.request.steps_to_run, textinfo="Hires fix")
                    hires_latents, hires_model = self._hires_pass(hires, decoder, latents, run, control, result,
                                                                  refiner)
                    if hires_latents is not None:
                        latents, decoder = hires_latents, hires_model
                if refiner is not None:  # from the first switch on, as A1111 keeps them in the run's parameters
                    params.update(refiner.params)
                if control.take_skip():
                    result.skipped_batches += 1
                if latents is None:  # stopped before the model was evaluated: nothing to show
                    if control.interrupted:
                        result.interrupted = True
                        break
                    continue
                pictures = self._decode(decoder, latents, result)
                if faces is not None:  # as A1111: after decoding, before the inpaint paste-back and the hooks
                    pictures = face_restoration.restore_batch(pictures, self.face_restorers, faces, self.options,
                                                              control)
                if setup is not None and self.options.get("img2img_color_correction"):  # A1111's order: before
                    pictures = [color_correction.correct(picture, setup.sources[setup.source_index(items.start + i)])
                                for i, picture in enumerate(pictures)]  # the paste-back, after face restoration
                if setup is not None:
                    pictures = [setup.paste_back(picture, items.start + i) for i, picture in enumerate(pictures)]
                decoded = list(pictures)
                self.hooks.after_batch(run, pictures)
                if len(pictures) != len(decoded) or not all(isinstance(p, Image.Image) for p in pictures):
                    run.warnings.append("An extension's after_batch hook changed the batch's images into something "
                                        "else: the decoded images were kept")
                    pictures = decoded
                marks = _result_marks(result)
                for i, picture in enumerate(pictures):
                    event = ImageEvent(picture, items.start + i, batch, i, run.seeds[i], run.prompts[i],
                                       run.negative_prompts[i])
                    self.hooks.image(run, event)
                    if not isinstance(event.image, Image.Image):
                        run.warnings.append(f"An extension's image hook returned {type(event.image).__name__}, "
                                            "not an image: the decoded image was kept")
                        event.image = picture
                    image_params = {**hires.image_params(event.prompt, event.negative_prompt), **params} \
                        if hires else params
                    self._finish_image(result, request, info, event, sampler.name, schedule, clip_skip,
                                       run.subseeds[i], variation, image_params, run)
                control.batch_finished(batch, _batch_entries(result, marks))
                if control.interrupted:  # the interrupted batch was decoded and saved like a finished one
                    result.interrupted = True
                    break
            result.extra_params = {**(hires.params if hires else {}), **prompts.params(base_params),
                                   **sampler_params, **(refiner.params if refiner else {}), **run.extra_params}
        if (hires is not None and hires.model is not model) or refiner is not None:
            self.models.trim()  # borrowed hires / refiner checkpoints leave the cache if it is over its limit
        result.warnings.extend(note for note in request.corrections if note not in result.warnings)
        family = FAMILIES[model.family]
        if family.distilled_guidance and request.cfg_scale > 1:
            result.warnings.append(f"{family.label} is guidance-distilled: CFG scale {request.cfg_scale:g} runs the "
                                   "negative prompt at twice the cost per step; FLUX.1 dev expects CFG scale 1 and "
                                   "Distilled CFG Scale for guidance")
        result.warnings.extend(model.warnings)
        result.warnings.extend(run.warnings)
        if result.interrupted:
            result.warnings.append(f"Interrupted: {len(result.images)} of {total} images were finished")
        add_batch_grid(result, request, self.options, self.outputs_dir)  # before the extensions' postprocess
        self.hooks.after_process(run)
        result.elapsed = time.perf_counter() - started
        return result

    def _modules_choice(self) -> list | None:
        """The "VAE / Text Encoder" files in force for this run (a job's override_settings may name its own)."""
        try:
            return list(self.options.get("forge_additional_modules") or [])
        except KeyError:  # options of a test or an extension's engine without the setting
            return None

    def _face_restorer(self, request: GenerationRequest) -> str | None:
        """The face restorer this run uses (None: faces are left alone), checked to be there with the detector."""
        name = face_restoration.model_in_use(request, self.options)
        if name is not None:
            if self.face_restorers is None:
                raise face_restoration.FaceRestorationError("Face restoration is not available in this engine")
            self.face_restorers.check_ready(name)
        return name

    def _plan_hires(self, request: GenerationRequest, schedule: str, model, info,
                    prompts: "_RunPrompts") -> hires_fix.HiresPlan:
        """The run's hires fix (see hires.prepare); prompt encoding is shared when the checkpoint is the same."""
        plan = hires_fix.prepare(request, schedule, model, info, self.models, self.upscalers)
        plan.prompts = prompts if plan.model is model else _RunPrompts(self, plan.model, plan.info, prompts.clip_skip,
                                                                       prompts.steps, prompts.result)
        plan.first_pass_steps = prompts.steps  # prompt editing in the hires pass counts from the first pass's start
        if any(unit.enabled for unit in request.controlnet_units):
            prompts.result.warnings.append("ControlNet guides the first pass only: the hires fix pass runs without it")
        return plan

    def _plan_refiner(self, request: GenerationRequest, model, info, prompts: "_RunPrompts",
                      control: RunControl) -> refiner_fix.RefinerPlan | None:
        """The run's refiner (see refiner.prepare), with its own prompt encoding."""
        plan = refiner_fix.prepare(request, model, info, self.models, self.options, control)
        if plan is not None:
            plan.prompts = _RunPrompts(self, plan.model, plan.info, prompts.clip_skip, prompts.steps, prompts.result)
            if any(unit.enabled for unit in request.controlnet_units):
                prompts.result.warnings.append("ControlNet guides the checkpoint only: it stops where the refiner "
                                               "takes over")
        return plan

    def _check_passes(self, request: GenerationRequest, sampler, schedule: str, model, hires) -> None:
        """Plan each pass once up front, so that one that cannot run (UniPC with fewer steps than its order, DPM
        fast / adaptive img2img of one step) is a RequestError before anything is sampled, not after a first pass."""
        passes = [(model, request, sampler, schedule)]
        if hires is not None:
            passes.append((hires.model, hires.request, hires.sampler, hires.schedule))
        for pass_model, pass_request, pass_sampler, pass_schedule in passes:
            img2img = pass_request.mode == "img2img" or isinstance(pass_request, hires_fix.SecondPassRequest)
            _check_family(pass_model, pass_request, pass_sampler)
            levels = samplers.sampler_levels(pass_sampler, model_noise_levels(pass_model))
            samplers.plan_pass(pass_sampler, pass_schedule, pass_request.steps, levels, self.options,
                               pass_model.family, eta=pass_request.eta,
                               img2img=self._img2img_steps(pass_request) if img2img else None)

    def _hires_pass(self, plan: hires_fix.HiresPlan, model, latents: torch.Tensor, run: ProcessingRun,
                    control: RunControl, result: GenerationResult, refiner: refiner_fix.RefinerPlan | None = None):
        """One batch's second pass: upscale (the latents, or the decoded pictures through the image upscaler),
        then img2img at the hires size with the batch's seeds. `model`: the one that ended the first pass (the
        refiner after a switch, which then samples this pass too unless a hires checkpoint is chosen).
        (latents, the model that made them), or (None, None) when interrupted while upscaling."""
        if refiner is not None:
            plan = refiner.hires_plan(plan, model, run.request)
        if plan.latent_mode is not None:
            start = hires_fix.latent_start(latents, plan)
        else:
            start = hires_fix.upscale_pictures(self._decode(model, latents, result), plan, self.upscalers, control)
            if start is None:  # interrupted while upscaling
                return None, None
            control.report(sampling_step=0, sampling_steps=plan.request.steps_to_run, textinfo="Hires fix")
        prompts, negatives = plan.prompts_for(run.prompts, run.negative_prompts)
        conditioning, _ = plan.prompts.for_batch(prompts, negatives, {}, steps=plan.prompt_steps,
                                                 hires_base=plan.first_pass_steps)
        watch = refiner.for_pass(True, plan.info, prompts, negatives, steps=plan.prompt_steps,
                                 hires_base=plan.first_pass_steps) if refiner is not None else None
        latents = self._sample(plan.model, plan.request, plan.sampler, plan.schedule, conditioning, run.seeds,
                               run.subseeds, control, start, 0, None, run, refiner=watch)
        return latents, (watch.model if watch is not None and watch.switched else plan.model)

    def _schedule_steps(self, request: GenerationRequest, sampler) -> int:
        """Steps that prompt editing counts: A1111 counts model evaluations, so second-order samplers (two
        evaluations a step) count double."""
        return request.steps * (2 if sampler.second_order else 1)

    # --- pieces ------------------------------------------------------------------------------------------------
    @classmethod
    def _steps_to_run(cls, request: GenerationRequest) -> int:
        """The sampling steps the progress bar counts (A1111's sampling_steps)."""
        if isinstance(request, hires_fix.SecondPassRequest):
            return request.steps_to_run
        if request.mode == "img2img":
            return cls._img2img_steps(request)[1] + 1
        return request.steps

    @contextlib.contextmanager
    def _controlnets_on_device(self, plan: ControlPlan | None):
        """Under --medvram/--lowvram the run's ControlNets come to the GPU for the run only, then back to RAM."""
        offloaded = plan is not None and self.policy.offload != "none" and self.policy.device.type != "cpu"
        if offloaded:
            for net in plan.nets():
                net.to(self.policy.device)
        try:
            yield
        finally:
            if offloaded:
                for net in plan.nets():
                    net.to("cpu")

    def _autocast(self, model=None):
        if self.policy.autocast and self.policy.device.type == "cuda":
            family = model.family if model is not None else ""
            return torch.autocast("cuda", dtype=self.policy.dtype_for(family))
        return contextlib.nullcontext()

    def _sample(self, model, request: GenerationRequest, sampler, schedule: str, conditioning: BatchConditioning,
                seeds: list[int], subseeds: list[int], control: RunControl, setup: Img2ImgSetup | None = None,
                first_item: int = 0, control_plan: ControlPlan | None = None, run: ProcessingRun | None = None,
                fill_seeds: list[int] | None = None, infotext: dict | None = None,
                refiner: refiner_fix.RefinerPass | None = None):
        """One batch from noise (or the init images) to latents, as A1111 1.10 samples it. Interrupt or Skip stops
        the sampler: the batch then ends at its last denoised latents (None if the model was not evaluated yet).
        `first_item` is the index of the batch's first image in the whole run (which init image it starts from);
        `fill_seeds` the seeds whose noise fills "latent noise" inpainting (A1111: the run's first batch's);
        `infotext` receives the sampler's keys (Eta, Sigma churn, Schedule rho, ...); `refiner` may take over
        part-way (refiner.py)."""
        device = self.policy.device
        batch = len(seeds)
        items = list(range(first_item, first_item + batch))
        scale = model.vae_scale_factor
        width, height = (setup.width, setup.height) if setup is not None else (request.width, request.height)
        family = FAMILIES[model.family]
        flow = family.sampling == "flow"
        shape = (family.latent_channels, height // scale, width // scale)
        base_levels = model_noise_levels(model, width, height)
        levels = samplers.sampler_levels(sampler, base_levels)
        source = str(self.options.get("randn_source"))
        noise = BatchNoise(shape, seeds, subseeds, request.subseed_strength,
                           (request.seed_resize_from_w, request.seed_resize_from_h), source, device,
                           ensd=int(self.options.get("eta_noise_seed_delta") or 0), vae_scale=scale)
        plan = samplers.plan_pass(sampler, schedule, request.steps, levels, self.options, model.family,
                                  eta=request.eta, s_values=request.sampler_values(),
                                  img2img=self._img2img_steps(request) if setup is not None else None)
        if infotext is not None:
            infotext.update({key: value for key, value in plan.params.items() if key not in infotext})

        mask = init = None  # mask: 1 where the latents are regenerated (inpainting)
        x = noise.next()
        if setup is not None:
            init = self._init_latents(model, setup, items)
            x = x * request.initial_noise_multiplier
            if setup.masked:
                mask = setup.latent_masks(items, shape[1:], device, torch.float32)
                if request.inpainting_fill == 2:  # latent noise: fresh noise from the run's first seeds
                    fill = BatchNoise(shape, fill_seeds or seeds, source=source, device=device).next()
                    init = init * (1 - mask) + fill * mask
                elif request.inpainting_fill == 3:  # latent nothing
                    init = init * (1 - mask)
            extra = float(self.options.get("img2img_extra_noise") or 0)  # A1111's "Extra noise" (img2img, hires)
            if flow:  # rectified flow: the init latents and the noise mixed at the first sigma
                start = base_levels.noised(init, x, plan.sigmas[0])
                if extra > 0:
                    start = start + x * extra * plan.sigmas[0]
            elif plan.img2img_alpha is not None:
                alpha = base_levels.alphas_cumprod[plan.img2img_alpha]
                start = init * torch.sqrt(alpha) + x * torch.sqrt(1 - alpha)
                if extra > 0:
                    start = start + x * extra * torch.sqrt(alpha)
            else:
                start = init + x * plan.start_scale
                if extra > 0:
                    start = start + x * extra
            if extra > 0 and infotext is not None:
                infotext.setdefault("Extra noise", extra)
        else:
            start = x if sampler.kind == samplers.TIMESTEP else x * plan.start_scale

        # A1111 always runs the unconditional rows; at CFG 1 they change nothing, except for DDIM CFG++ (which
        # steps along them)
        do_cfg = request.cfg_scale != 1.0 or conditioning.composable or sampler.name == "DDIM CFG++"
        copies = (1 if do_cfg else 0) + conditioning.part_count  # uncond, then each AND sub-prompt
        extra_channels = self._extra_channels(model, setup, items, width, height, copies)
        inputs = _StepInputs(self, model, conditioning, do_cfg, (width, height))
        expected = max(1, plan.steps_shown * (2 if sampler.second_order else 1))
        sources = [setup.source_index(item) if setup is not None else 0 for item in items]
        hook = run is not None and self.hooks.wants_denoiser
        unet_dtype = model.network_dtype  # read once: the property walks every parameter of the UNet
        network = network_call(family, model.unet, request.distilled_cfg_scale)
        factors: dict[float, list[torch.Tensor]] = {}  # AND: per scale, each sub-prompt's weight x scale per image

        def guidance(scale: float) -> list[torch.Tensor] | None:
            if not conditioning.composable:
                return None
            if scale not in factors:  # made once per batch (per scale: DDIM CFG++ multiplies it), not per step
                factors[scale] = [torch.tensor([w * scale for w in weights], device=device).view(-1, 1, 1, 1)
                                  for weights in conditioning.weights()]
            return factors[scale]

        def unet(x_rows, c_in, t, index, hook_t):
            embeds, added = inputs.at(index)
            if hook:
                x_rows, embeds = self._denoiser_hook(run, x_rows, extra_channels, hook_t, index, expected, embeds,
                                                     batch if do_cfg else 0)
            model_input = (x_rows * c_in).to(unet_dtype)
            residuals = {}
            if control_plan is not None:
                residuals = control_plan.residuals(index / expected, model_input, t, embeds, added, sources, batch,
                                                   do_cfg)
            if extra_channels is not None:
                model_input = torch.cat([model_input, extra_channels], dim=1)
            if network is not None:
                return network(model_input, t, embeds, added["pooled"], residuals), x_rows
            output = model.unet(model_input, t, encoder_hidden_states=embeds, added_cond_kwargs=added,
                                return_dict=False, **residuals)[0]
            return output, x_rows

        def combine(rows, multiplier):
            scale = request.cfg_scale * multiplier
            return self._combine(rows, scale, guidance(scale), do_cfg, batch)

        parameterization = LCMParameterization(levels) if sampler.kind == samplers.LCM else levels
        denoiser = Denoiser(UNetCall(unet, copies, combine, batch, do_cfg), parameterization,
                            base_levels.alphas_cumprod, base_levels.prediction, control, mask=mask, init_latent=init)
        previewer = control.previewer = self._previewer(model)
        control.preview = None  # a new batch never shows the last one's picture

        if refiner is not None:
            def take_over() -> None:  # the refiner samples from this evaluation on; the sampler and x carry on
                nonlocal model, inputs, extra_channels, unet_dtype, control_plan, previewer
                refiner_fix.offload_idle(model, self.policy)
                model = refiner.model
                inputs = _StepInputs(self, model, refiner.encode(), do_cfg, (width, height))
                extra_channels = self._extra_channels(model, setup, items, width, height, copies)
                unet_dtype, control_plan = model.network_dtype, None
                previewer = control.previewer = self._previewer(model)

            denoiser.before_evaluation = refiner.watch(denoiser, sampler, levels, expected, take_over)

        def on_step(info: dict) -> None:
            denoised = info.get("denoised")
            if denoised is not None:
                control.publish_latents(denoised, model.family)  # before the report: a follower finds them
            step = min(int(info.get("i", 0)) + 1, plan.steps_shown)
            if denoised is not None and previewer.in_loop and previewer.due(step):
                control.publish_preview(previewer.render(denoised, model.family))
            control.report(sampling_step=step)

        control.report(sampling_step=0, sampling_steps=plan.steps_shown)
        try:
            latents = self._run_sampler(sampler, plan, denoiser, start, noise, base_levels, seeds, on_step)
        except Interrupted:
            latents = denoiser.last
            if latents is None:
                return None
        if mask is not None:
            latents = latents * mask + init * (1 - mask)
        return latents

    @staticmethod
    def _run_sampler(sampler, plan, denoiser: Denoiser, start: torch.Tensor, noise: BatchNoise, levels, seeds,
                     on_step):
        function, kwargs = sampler.function, dict(plan.kwargs)
        if sampler.kind == samplers.TIMESTEP:
            if "noise" in inspect.signature(function).parameters:
                kwargs["noise"] = lambda x: noise.next()
            return function(denoiser.eps_model(), start, plan.timesteps, alphas_cumprod=levels.alphas_cumprod,
                            callback=on_step, **kwargs)
        noise_sampler = samplers.brownian_noise(plan, start, seeds, noise.source) if sampler.brownian \
            else noise.sampler
        if levels.prediction == "flow" and sampler.name == "Euler a":  # its rectified-flow form
            function = euler_ancestral_flow
        if "sigma_min" in kwargs:  # DPM fast / adaptive
            return function(denoiser, start, noise_sampler=noise_sampler, callback=on_step, **kwargs)
        return function(denoiser, start, plan.sigmas, noise_sampler=noise_sampler, callback=on_step, **kwargs)

    def _denoiser_hook(self, run: ProcessingRun, model_input, image_cond, t, index: int, evaluations: int,
                       embeds, uncond_rows: int):
        """Extensions' cfg_denoiser: they may replace the UNet input and the text conditioning."""
        event = DenoiserEvent(model_input, image_cond, t, index, evaluations, embeds[uncond_rows:].clone(),
                              embeds[:uncond_rows].clone() if uncond_rows else None)  # copies: the cache stays
        self.hooks.denoiser(run, event)
        text = event.text_cond if event.text_uncond is None else torch.cat([event.text_uncond, event.text_cond])
        if event.x.shape != model_input.shape or text.shape[0] != embeds.shape[0]:
            run.warnings.append("A cfg_denoiser callback changed the batch's shape: its changes were ignored")
            return model_input, embeds
        return event.x, text

    @staticmethod
    def _combine(prediction: torch.Tensor, cfg_scale: float, factors: list[torch.Tensor] | None, do_cfg: bool,
                 batch: int) -> torch.Tensor:
        """Classifier-free guidance as A1111's CFGDenoiser: uncond + (cond - uncond) x scale; with AND, composable
        diffusion: each sub-prompt adds (cond_i - uncond) x `factors[i]` (each image's weight x the scale)."""
        if not do_cfg:
            return prediction
        uncond, *conds = prediction.split(batch)
        if factors is None:
            return uncond + (conds[0] - uncond) * cfg_scale
        combined = uncond.clone()
        for factor, cond in zip(factors, conds):
            combined += (cond - uncond) * factor
        return combined

    @staticmethod
    def _img2img_steps(request: GenerationRequest) -> tuple[int, int]:
        """(steps of the whole schedule, t_enc) as A1111's setup_img2img_steps: img2img runs t_enc + 1 steps of
        `steps`; a hires pass exactly its steps, the tail of int(steps / denoising)."""
        if isinstance(request, hires_fix.SecondPassRequest):
            return request.steps, max(request.steps_to_run - 1, 0)
        return request.steps, int(min(request.denoising_strength, 0.999) * request.steps)

    def _vae_encode(self, model, pixels: torch.Tensor) -> torch.distributions.Distribution:
        vae = model.vae
        return vae_tiling.encode(vae, pixels.to(self.policy.device, vae.dtype),
                                 vae_tiling.TileSettings.from_options(self.options))

    def _init_latents(self, model, setup: Img2ImgSetup, items: list[int]) -> torch.Tensor:
        """The init images' latents (float32). The VAE posterior's mean: A1111 samples it from torch's unseeded
        global generator, which no one can reproduce; its spread is ~1e-4 for real VAEs, so the mean is the same
        picture, and it keeps every image's own noise for sampling."""
        if isinstance(setup, hires_fix.LatentStart):  # hires fix from upscaled latents: nothing to encode
            return setup.latents.to(self.policy.device, torch.float32)
        latents = [self._vae_encode(model, imaging.to_tensor([setup.sources[setup.source_index(item)]])).mode()
                   for item in items]
        return to_model_latents(model.vae, torch.cat(latents)).to(torch.float32)

    def _extra_channels(self, model, setup: Img2ImgSetup | None, items: list[int], width: int, height: int,
                        copies: int) -> torch.Tensor | None:
        """An inpainting checkpoint's extra network input for the batch's rows (SD's 9-channel UNets, FLUX.1 Fill; None
        for other checkpoints). txt2img: one grey conditioning for all; img2img: each image's own (cached)."""
        if not model.inpainting:
            return None
        per_image = ([self._inpaint_channels(model, setup, item, width, height) for item in items]
                     if setup is not None else [self._inpaint_channels(model, None, 0, width, height)] * len(items))
        return torch.cat(per_image).repeat(copies, 1, 1, 1).to(model.network_dtype)

    def _inpaint_channels(self, model, setup: Img2ImgSetup | None, item: int, width: int, height: int):
        """The extra network input of an inpainting checkpoint (SD's 9-channel UNets, FLUX.1 Fill) for one image:
        a mask and masked-image latents, in the family's layout. txt2img: a full mask over a neutral grey image
        (A1111's conditioning)."""
        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return to_model_latents(model.vae, self._vae_encode(model, pixels).mode())

        weight, layout = float(self.options.get("inpainting_mask_weight")), FAMILIES[model.family].inpaint_input
        if setup is not None:
            return setup.conditioning(item, encode, weight, layout)
        return blank_inpaint_input(width, height, encode, weight, layout)

    def _ensd(self, request: GenerationRequest, sampler_name: str) -> int | None:
        """A1111 writes ENSD for the samplers that draw from the image generators, when their eta is not 0."""
        ensd = int(self.options.get("eta_noise_seed_delta") or 0)
        sampler = samplers.SAMPLERS_BY_NAME.get(sampler_name)
        if not ensd or sampler is None or not sampler.uses_ensd:
            return None
        eta = request.eta if request.eta is not None else float(self.options.get("eta_ancestral"))
        return ensd if eta != 0 else None

    def _previewer(self, model) -> preview.Previewer:
        """How this run's live previews are rendered (`show_progress_type`; an unknown name: cheap)."""
        try:
            method = preview.method_name(self.options.get("show_progress_type"))
        except ValueError:
            method = preview.CHEAP
        def full(latents):  # the run's VAE, without the float32 retry: a NaN preview gives cheap ones instead
            return self._decode(model, latents, GenerationResult(), retry_nan=False)
        return preview.Previewer(method, preview.preview_every(self.options), self.previews,
                                 full if method == preview.FULL else None,
                                 whole_batch=bool(self.options.get("show_progress_grid")))

    @torch.no_grad()
    def _decode(self, model, latents: torch.Tensor, result: GenerationResult, retry_nan: bool = True):
        """Latents to pictures. A half-precision VAE that overflows into NaNs is run again in float32 (the
        result says so); if float32 gives NaNs too (or `retry_nan` is off), NaNOutputError with a clear message."""
        vae, tiles = model.vae, vae_tiling.TileSettings.from_options(self.options)
        decoded = vae_tiling.decode(vae, from_model_latents(vae, latents.to(vae.dtype)), tiles)
        if torch.isnan(decoded).any():
            if not retry_nan:
                raise NaNOutputError(f"the VAE produced NaNs in {vae.dtype}")
            if vae.dtype == torch.float32:
                raise NaNOutputError("The VAE produced NaNs (black images) even in full precision: the checkpoint "
                                     "or VAE file is probably broken")
            original = vae.dtype
            try:
                vae.to(torch.float32)
                with torch.autocast(latents.device.type, enabled=False):
                    decoded = vae_tiling.decode(vae, from_model_latents(vae, latents.float()), tiles)
            finally:
                vae.to(original)
            result.warnings.append("The VAE produced NaNs in half precision: decoded again in full precision "
                                   "(start with --no-half-vae to always decode in full precision)")
        return imaging.to_pil(decoded)

    def _finish_image(self, result: GenerationResult, request: GenerationRequest, info, image: ImageEvent,
                      sampler_name, schedule, clip_skip, subseed, variation, extra_params: dict,
                      run: ProcessingRun) -> None:
        seed = image.seed
        family = FAMILIES[run.model.family]
        params = {
            "Steps": request.steps, "Sampler": sampler_name, "Schedule type": schedule,
            "CFG scale": f"{request.cfg_scale:g}",
            "Distilled CFG Scale": f"{request.distilled_cfg_scale:g}" if family.distilled_guidance else None,
            "Seed": seed, "Size": f"{request.width}x{request.height}",
            "Face restoration": face_restoration.model_in_use(request, self.options),
            "Model hash": info.shorthash, "Model": info.name_for_extra,
            "VAE hash": extra_params.get("VAE hash"), "VAE": extra_params.get("VAE"),
            "Variation seed": subseed if variation else None,
            "Variation seed strength": f"{request.subseed_strength:g}" if variation else None,
            "Seed resize from": (f"{request.seed_resize_from_w}x{request.seed_resize_from_h}"
                                 if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0 else None),
            "Denoising strength": (f"{request.denoising_strength:g}" if request.mode == "img2img" or request.enable_hr
                                   else None),
            "Clip skip": clip_skip if clip_skip > 1 and family.clip_skip else None,
            "ENSD": self._ensd(request, sampler_name),
            "RNG": self.options.get("randn_source") if self.options.get("randn_source") != "GPU" else None,
            "Tiling": "True" if request.tiling else None,
            "Emphasis": self.options.get("emphasis") if self.options.get("emphasis") != "Original" else None,
        }
        params.update({key: value for key, value in extra_params.items()
                       if key not in params and key not in _LAST and not _is_controlnet_key(key)})
        params.update({key: extra_params.get(key) for key in _LAST})
        params.update({key: value for key, value in extra_params.items() if _is_controlnet_key(key)})
        params.update({key: value for key, value in run.extra_params.items() if key not in params})  # extensions'
        params["Version"] = f"v{__version__}"
        for number, part in enumerate(getattr(run.model, "part_names", ()), start=1):  # Forge's separate files
            params[f"Module {number}"] = part
        infotext = build_infotext(image.prompt, image.negative_prompt, params)
        picture = image.image
        result.images.append(picture)
        result.seeds.append(seed)
        result.subseeds.append(subseed)
        result.prompts.append(image.prompt)
        result.negative_prompts.append(image.negative_prompt)
        result.infotexts.append(infotext)
        save_generated(picture, seed, infotext, request=request, options=self.options, outputs_dir=self.outputs_dir,
                       hooks=self.hooks, run=run, result=result, index=image.index, all_seeds=run.all_seeds)


_BATCH_LISTS = ("images", "seeds", "subseeds", "prompts", "negative_prompts", "infotexts", "saved_paths")


def _check_family(model, request: GenerationRequest, sampler) -> None:
    """What a flow-family checkpoint cannot take: samplers built for A1111's noise schedule, and (FLUX.1's 2x2
    patches of 8x downscaled latents) sizes that are not multiples of 16 pixels."""
    family = FAMILIES[model.family]
    if family.sampling != "flow":
        return
    if sampler.name not in FLOW_SAMPLERS:
        raise samplers.SamplerError(f"{sampler.name} does not sample {family.label} checkpoints (rectified flow); "
                                    f"choose one of: {', '.join(FLOW_SAMPLERS)}")
    step = family.size_multiple
    for name in ("width", "height"):
        value = int(getattr(request, name, 0))
        if value % step:
            low, high = value // step * step, value // step * step + step
            raise RequestError(name, f"{family.label} makes images in multiples of {step} pixels: {name} {value} "
                                     f"is not one (use {low or step} or {high})")
    outpaint = getattr(request, "outpaint", None)
    if getattr(request, "mode", "") == "img2img" and outpaint is not None and outpaint.active:
        grown = {"width": int(request.width) + outpaint.left + outpaint.right,
                 "height": int(request.height) + outpaint.up + outpaint.down}
        for name, value in grown.items():
            if value % step:
                raise RequestError("outpaint", f"{family.label} makes images in multiples of {step} pixels: "
                                               f"outpainting makes the {name} {value}; extend the sides by "
                                               f"multiples of {step} pixels")


def _result_marks(result: GenerationResult) -> dict[str, int]:
    return {name: len(getattr(result, name)) for name in _BATCH_LISTS}


def _batch_entries(result: GenerationResult, marks: dict[str, int]) -> dict[str, list]:
    """What one batch added to the result: its images, seeds, prompts, infotexts and saved files (a pool worker
    sends them to the head as the batch ends, so a job moved to another worker keeps them)."""
    return {name: list(getattr(result, name)[marks[name]:]) for name in _BATCH_LISTS}


def _restore_batch(result: GenerationResult, entries: dict[str, list]) -> None:
    """A batch another worker finished (`_batch_entries`), put into this run's result as if made here."""
    for name in _BATCH_LISTS:
        getattr(result, name).extend(entries.get(name) or [])


def _restore_shape(run: ProcessingRun, request: GenerationRequest, total: int) -> None:
    """Settings a process hook changed are taken (validated); the batch's shape cannot change any more."""
    size, count = request.batch_size, request.n_iter
    try:
        request.validate()
    except ValueError as exc:
        run.warnings.append(f"An extension set an invalid value ({exc}): ignored")
        request.batch_size, request.n_iter = size, count
    if (request.batch_size, request.n_iter) != (size, count):
        run.warnings.append("An extension changed the batch size or count after the run started: ignored")
        request.batch_size, request.n_iter = size, count


def _keep_batch_shape(run: ProcessingRun, before: tuple[list, list, list, list]) -> None:
    """A before_batch hook may change the batch's prompts, not how many images it has."""
    names = ("prompts", "negative_prompts", "seeds", "subseeds")
    for name, previous in zip(names, before):
        values = getattr(run, name)
        if not isinstance(values, list) or len(values) != len(previous):
            run.warnings.append(f"An extension left the batch's {name} with the wrong length: kept the previous")
            setattr(run, name, previous)
    try:
        run.prompts = [str(p) for p in run.prompts]
        run.negative_prompts = [str(p) for p in run.negative_prompts]
        run.seeds, run.subseeds = [int(s) for s in run.seeds], [int(s) for s in run.subseeds]
    except (TypeError, ValueError):
        run.warnings.append("An extension put values of the wrong type in the batch: kept the previous")
        run.prompts, run.negative_prompts, run.seeds, run.subseeds = (list(v) for v in before)


def _fit_lists(run: ProcessingRun, total: int) -> None:
    """An extension that left a per-image list shorter or longer than the run has images: repeated (or cut) to
    fit, with a warning, rather than failing the run."""
    for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        values = list(getattr(run, name) or [])
        if len(values) == total:
            continue
        run.warnings.append(f"An extension left {name} with {len(values)} entries for {total} images: "
                            + ("cut to fit" if len(values) > total else "repeated to fit"))
        if not values:
            values = {"all_prompts": [run.request.prompt], "all_negative_prompts": [run.request.negative_prompt],
                      "all_seeds": [fix_seed(run.request.seed)], "all_subseeds": [fix_seed(run.request.subseed)]}[name]
        setattr(run, name, [values[i % len(values)] for i in range(total)])
    run.all_prompts = ["" if p is None else str(p) for p in run.all_prompts]
    run.all_negative_prompts = ["" if p is None else str(p) for p in run.all_negative_prompts]
    for name, fallback in (("all_seeds", fix_seed(run.request.seed)), ("all_subseeds", fix_seed(run.request.subseed))):
        values = []
        for value in getattr(run, name):
            try:
                values.append(int(value))
            except (TypeError, ValueError):
                run.warnings.append(f"An extension put {value!r} in {name}: replaced by {fallback}")
                values.append(fallback)
        setattr(run, name, values)


def prompt_encoder(model) -> type:
    """The prompt encoder class for the model's family: A1111's CLIP chunks, or FLUX.1's CLIP-L + T5."""
    kind = FAMILIES[model.family].prompts
    if kind == "flux":
        from ..prompts.flux_encoder import FluxPromptEncoder
        return FluxPromptEncoder
    if kind == "sd3":
        from ..prompts.sd3_encoder import SD3PromptEncoder
        return SD3PromptEncoder
    if kind == "zimage":
        from ..prompts.zimage_encoder import ZImagePromptEncoder
        return ZImagePromptEncoder
    return PromptEncoder


class _RunPrompts:
    """A run's prompt work, batch by batch. Extra-network tags come from the batch's first prompt and negative
    prompt (as A1111 does) and are applied again only when they differ from the previous batch's; each distinct
    (prompt, negative prompt) pair is encoded once per run."""

    def __init__(self, engine: Engine, model, info, clip_skip: int, steps: int, result: GenerationResult):
        self.engine, self.model, self.info = engine, model, info
        self.clip_skip, self.steps, self.result = clip_skip, steps, result
        self._applied = None
        self._network_params: dict = {}
        self._encoder: PromptEncoder | None = None
        self._encoded: dict[tuple[str, str, str], PromptConditioning] = {}

    def _clean(self, text: str) -> tuple[str, list]:
        if self.engine.options.get("enable_prompt_comments"):
            text = strip_comments(text)
        return extract_extra_networks(text)

    def for_batch(self, prompts: list[str], negatives: list[str], base_params: dict, steps: int | None = None,
                  hires_base: int | None = None):
        """(BatchConditioning, infotext additions) for a batch with these per-image prompts; `steps`: the model
        evaluations prompt editing counts, if not the run's; `hires_base`: the first pass's, in a hires pass."""
        cleaned = [(self._clean(p), self._clean(n)) for p, n in zip(prompts, negatives)]
        (_, calls), (_, negative_calls) = cleaned[0]
        key = repr(calls + negative_calls)
        if key != self._applied:
            texts = [text for pair in cleaned for text, _ in pair]
            networks = prepare_networks(self.engine.models, self.model, self.info, calls + negative_calls,
                                        self.engine.options.get("sd_vae"), texts)
            self.result.warnings.extend(w for w in networks.warnings if w not in self.result.warnings)
            self._network_params, self._applied = dict(networks.params), key
            if self._encoder is None:
                options = self.engine.options
                self._encoder = prompt_encoder(self.model)(self.model, self.engine.policy.device,
                                                           networks.embeddings, options.get("emphasis"),
                                                           int(options.get("comma_padding_backtrack")))
        items = []
        steps = steps or self.steps
        for (prompt, _), (negative, _) in cleaned:
            key = (self._applied, prompt, negative, steps, hires_base)  # LoRAs change the text encoder: tags in key
            if key not in self._encoded:
                self._encoded[key] = build_conditioning(self._encoder, prompt, negative, steps, self.clip_skip,
                                                        hires_base)
            items.append(self._encoded[key])
        return BatchConditioning(items), self.params(base_params)

    def params(self, base_params: dict) -> dict:
        params = {**self._network_params, **base_params}
        params["TI hashes"] = ti_hashes(self._encoder.info.embeddings) if self._encoder is not None else None
        return params


class _StepInputs:
    """The UNet's text inputs at each step: [uncond rows, sub-prompt 1 rows, ...], one row per image of the batch,
    rebuilt only when prompt editing or alternation changes the schedule entry in force."""

    def __init__(self, engine: Engine, model, conditioning: BatchConditioning, do_cfg: bool, size: tuple[int, int]):
        self.model, self.conditioning = model, conditioning
        self.width, self.height = size
        self.do_cfg = do_cfg
        self.device = engine.policy.device
        self.options = engine.options
        self._key, self._value = None, None

    def at(self, step: int):
        key = self.conditioning.key(step)
        if key != self._key:
            self._key, self._value = key, self._build(step)
        return self._value

    def _build(self, step: int):
        dtype = self.model.network_dtype
        unconds, parts = self.conditioning.at_step(step)
        rows = [c for row in ([unconds] if self.do_cfg else []) + parts for c in row]
        if FAMILIES[self.model.family].prompts == "zimage":  # captions at their own lengths (zimage_call.py)
            from .zimage_call import stack_captions
            embeds, lengths = stack_captions([c.embeds.to(self.device, dtype) for c in rows])
            return embeds, {"pooled": lengths.to(self.device)}
        embeds = torch.cat([c.embeds.to(self.device, dtype) for c in rows])
        if FAMILIES[self.model.family].pooled_input:  # a transformer's text sequence and pooled embedding
            return embeds, {"pooled": torch.cat([c.pooled.to(self.device, dtype) for c in rows])}
        if self.model.family != "sdxl":
            return embeds, None
        pooled = torch.cat([c.pooled.to(self.device, dtype) for c in rows])
        if getattr(self.model, "sdxl_refiner", False):  # sizes, crop and an aesthetic score per row (refiner.py)
            time_ids = refiner_fix.aesthetic_time_ids(self.options, self.width, self.height,
                                                      len(unconds) if self.do_cfg else 0, len(rows))
            return embeds, {"text_embeds": pooled, "time_ids": time_ids.to(self.device, dtype)}
        time_ids = torch.tensor([[self.height, self.width, 0, 0, self.height, self.width]],
                                dtype=dtype, device=self.device).repeat(len(rows), 1)
        return embeds, {"text_embeds": pooled, "time_ids": time_ids}
