"""The refiner (A1111 1.6+): a second checkpoint takes over sampling part-way through, as A1111's `apply_refiner`.

Before every model evaluation A1111 asks how much of the denoising is done: the training timestep of the noise
level being evaluated gives (999 - t) / 1000 (k-diffusion samplers and LCM: the index of the sampler's noise-table
entry nearest the sigma; DDIM, PLMS, UniPC: the timestep itself, truncated); with the setting
`refiner_switch_by_sample_steps`, the model evaluations so far over those the pass expects. Once that reaches
`refiner_switch_at`, the refiner replaces the checkpoint for the rest of the pass: its UNet, the same prompts through
its text encoders (and its LoRAs, embeddings and VAE choice), its parameterization; the sampler keeps its state, its
noise stream and x. The batch is then decoded with the refiner's VAE. A ratio never reaches 1, so a switch point of 1
never switches (and the refiner is not even loaded); nor does a refiner that is the checkpoint already sampling.

Hires fix (`hires_fix_refiner_pass`, A1111's default "second pass"): the refiner may take over in the first pass, the
second or both. After a first-pass switch the refiner stays for the hires pass unless a hires checkpoint is chosen.
Each batch starts again on the run's checkpoint, as A1111 reloads it per batch.

The refiner must share the checkpoint's latent space (SD1/SD2 with SD1/SD2, SDXL with SDXL): anything else is
refused (400) before sampling. Both models come from the model manager and are held for the run like a hires
checkpoint (the cache is trimmed afterwards); under --medvram the checkpoint's UNet leaves the GPU at the switch.
ControlNet guides the checkpoint only: it stops at the switch (A1111's extension does not reach the refiner).
Infotext: `Refiner: name [hash]`, `Refiner switch at: 0.8`, `Hires refiner` (when not "second pass"), written from
the first switch on, as A1111 adds them to the run's parameters then.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.errors import RequestError
from ..core.request import GenerationRequest
from ..models.families import FAMILIES
from ..models.registry import UnknownCheckpointError
from . import samplers
from .denoiser import LCMParameterization
from .sampling.sigmas import NoiseLevels

SECOND_PASS = "second pass"  # hires_fix_refiner_pass's default
PASSES = ("first pass", SECOND_PASS, "both passes")
TRAIN_STEPS = 1000  # A1111 computes the ratio against 1000 training timesteps for every checkpoint


def latent_space(model) -> tuple[str, int, int]:
    """What a latent means to a checkpoint: its VAE's family (SD1 and SD2 share one; SDXL's differs), its channels
    and its downscale factor."""
    family = FAMILIES.get(str(model.family))
    if family is not None and family.latent_channels != 4:  # the transformer families: their AE's shift and scale
        shift = getattr(model.vae.config, "shift_factor", None) or 0.0  # (FLUX.1 and Z-Image share one AE)
        space = f"{family.latent_channels}-channel AE (shift {shift:g}, scale {model.vae.config.scaling_factor:g})"
    else:
        space = "sdxl" if str(model.family).startswith("sdxl") else "sd"
    return space, int(model.vae.config.latent_channels), int(model.vae_scale_factor)


def short_title(info) -> str:
    """A1111's `short_title`: `name [shorthash]`, the name alone while the hash is unknown."""
    return f"{info.name_for_extra} [{info.shorthash}]" if info.shorthash else info.name_for_extra


@dataclass
class RefinerPlan:
    """A run's refiner, worked out once before sampling."""
    info: object  # CheckpointInfo
    model: object  # LoadedModel
    switch_at: float
    by_steps: bool  # refiner_switch_by_sample_steps
    passes: str  # hires_fix_refiner_pass
    hires: bool  # the request runs hires fix
    prompts: object = None  # the engine's prompt encoding with the refiner (engine._RunPrompts)
    params: dict = field(default_factory=dict)  # infotext keys, from the first switch on

    def allowed(self, second_pass: bool, pass_info) -> bool:
        """Whether this pass may switch (A1111's `hires_fix_refiner_pass` rule); never from the refiner itself."""
        if pass_info is not None and pass_info.path == self.info.path:
            return False
        if not self.hires:
            return True
        return self.passes == "both passes" or self.passes == (SECOND_PASS if second_pass else "first pass")

    def for_pass(self, second_pass: bool, pass_info, prompts: list[str], negatives: list[str],
                 **encoding) -> "RefinerPass | None":
        """The refiner's watch over one pass of a batch with these prompts (None when it may not switch there);
        `encoding`: the pass's prompt-editing steps (`steps`, `hires_base`), as the pass's own encoding."""
        if not self.allowed(second_pass, pass_info):
            return None
        prompts, negatives = list(prompts), list(negatives)
        return RefinerPass(self, lambda: self.prompts.for_batch(prompts, negatives, {}, **encoding)[0])

    def hires_plan(self, plan, current_model, request: GenerationRequest):
        """The hires pass's plan: after a first-pass switch the refiner stays loaded and samples it (with the hires
        prompts through its text encoders), unless a hires checkpoint is chosen (A1111 loads that one)."""
        if current_model is not self.model or request.hr_checkpoint_name:
            return plan
        return dataclasses.replace(plan, model=self.model, info=self.info, prompts=self.prompts)

    def record_switch(self) -> None:
        if self.hires and self.passes != SECOND_PASS:
            self.params["Hires refiner"] = self.passes
        self.params["Refiner"] = short_title(self.info)
        self.params["Refiner switch at"] = str(self.switch_at)  # A1111 writes the float as Python prints it


def resolve(models, name: str):
    """The refiner's CheckpointInfo; an unknown name is a RequestError (400) naming the field and the name."""
    try:
        return models.resolve(name)
    except UnknownCheckpointError as exc:
        raise RequestError("refiner_checkpoint", f"refiner checkpoint: {exc}", status=exc.status,
                           kind=exc.kind) from None


def prepare(request: GenerationRequest, model, info, models, options, control=None) -> RefinerPlan | None:
    """The request's refiner: resolved through the model manager (an unknown name is a 400 naming it), loaded and
    checked against the checkpoint's latent space. None when there is none, or when it can never take over (a
    switch point of 1, or the checkpoint itself), as A1111 then never switches."""
    name = request.refiner_checkpoint
    if not name:
        return None
    refiner_info = resolve(models, name)
    if float(request.refiner_switch_at) >= 1.0 or refiner_info.path == info.path:
        return None
    if control is not None and refiner_info.title not in models.loaded_titles():
        control.report(textinfo=f"Loading the refiner {refiner_info.name}")
    refiner_info, refiner = models.get(refiner_info.title)  # ModelLoadError (400) when it does not load
    for checkpoint in (model, refiner):
        if FAMILIES[checkpoint.family].network != "unet":
            models.trim()
            label = FAMILIES[checkpoint.family].label
            raise RequestError("refiner_checkpoint", f"the refiner does not work with {label} checkpoints yet: "
                               "leave Refiner off", status=400, kind="IncompatibleRefiner")
    wanted, got = latent_space(model), latent_space(refiner)
    if wanted != got:
        models.trim()  # not kept for a run that will not happen
        raise RequestError("refiner_checkpoint", f"refiner checkpoint {refiner_info.name} ({refiner.label}) cannot "
                           f"continue {info.name} ({model.label}): their latent spaces differ ({_space(got)} vs "
                           f"{_space(wanted)}); choose a refiner of the same family", status=400,
                           kind="IncompatibleRefiner")
    passes = str(options.get("hires_fix_refiner_pass") or SECOND_PASS)
    return RefinerPlan(refiner_info, refiner, float(request.refiner_switch_at),
                       bool(options.get("refiner_switch_by_sample_steps")),
                       passes if passes in PASSES else SECOND_PASS, bool(request.enable_hr))


def _space(space: tuple[str, int, int]) -> str:
    family, channels, factor = space
    label = {"sdxl": "SDXL", "sd": "SD1/SD2"}.get(family, family)
    return f"{label} latents, {channels} channels, 1/{factor} size"


@dataclass
class RefinerPass:
    """The refiner's watch over one sampling pass of one batch."""
    plan: RefinerPlan
    encode: Callable[[], object]  # the batch's prompts through the refiner (BatchConditioning), at the switch
    switched: bool = False

    @property
    def model(self):
        return self.plan.model

    def watch(self, denoiser, sampler, table, evaluations: int, take_over: Callable[[], None]):
        """The denoiser's `before_evaluation` for this pass: at the first evaluation whose completed ratio reaches
        the switch point, `take_over()` (the engine rebinds UNet, conditioning, ...) and the denoiser reads the
        refiner's output from then on. `table`: the noise table the sampler runs over; `evaluations`: the model
        evaluations the pass expects."""
        timestep_sampler = sampler.kind == samplers.TIMESTEP

        def check(sigma: torch.Tensor) -> None:
            if self.switched:
                return
            if self.plan.by_steps:
                self.plan.params["Refiner switch by sampling steps"] = True
                ratio = denoiser.evaluations / max(1, evaluations)
            else:
                ratio = (TRAIN_STEPS - 1 - self._timestep(sigma, table, timestep_sampler)) / TRAIN_STEPS
            if ratio < self.plan.switch_at:
                return
            take_over()
            denoiser.levels, denoiser.prediction = parameterization(sampler, self.model)
            self.switched = True
            self.plan.record_switch()

        return check

    @staticmethod
    def _timestep(sigma: torch.Tensor, table, timestep_sampler: bool) -> int:
        """A1111's timestep for the evaluation: a timestep sampler passes it (truncated); a sigma maps to the index
        of the nearest entry of the sampler's table."""
        highest = sigma.detach().reshape(-1).max().float().cpu()
        if timestep_sampler:
            return int(highest)
        return int(torch.argmin(torch.abs(table.sigmas.float() - highest)))


def parameterization(sampler, model):
    """(the denoiser's levels, its prediction type) for `model`: how its UNet's input and output are read."""
    levels = samplers.sampler_levels(sampler, NoiseLevels.from_config(dict(model.scheduler_config)))
    reader = LCMParameterization(levels) if sampler.kind == samplers.LCM else levels
    return reader, model.scheduler_config["prediction_type"]


def offload_idle(model, policy) -> None:
    """Under --medvram each module moves to the GPU when called and leaves when the next one of its own model runs:
    the checkpoint's UNet would stay beside the refiner's. Send the idle model's modules back to the CPU."""
    if policy.offload != "model" or policy.device.type == "cpu":
        return
    from accelerate.hooks import CpuOffload
    moved = False
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        if isinstance(hook, CpuOffload) and next(module.parameters()).device.type != "cpu":
            hook.init_hook(module)
            moved = True
    if moved and torch.cuda.is_available():
        torch.cuda.empty_cache()


def aesthetic_time_ids(options, width: int, height: int, negative_rows: int, rows: int) -> torch.Tensor:
    """The SDXL refiner's added time inputs per UNet row, as its conditioner builds them (A1111's): original size
    (height, width), crop (0, 0) and an aesthetic score, `sdxl_refiner_low_aesthetic_score` for the first
    `negative_rows` rows (the negative prompt's), `sdxl_refiner_high_aesthetic_score` for the others."""
    low = float(options.get("sdxl_refiner_low_aesthetic_score"))
    high = float(options.get("sdxl_refiner_high_aesthetic_score"))
    return torch.tensor([[height, width, 0, 0, low if row < negative_rows else high] for row in range(rows)],
                        dtype=torch.float32)
