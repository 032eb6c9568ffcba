"""The refiner (A1111 1.6+) as users see it: the pictures equal A1111's switch computed independently (k-diffusion's own
samplers through tests/a1111_reference.py, the checkpoint's CFG until the completed ratio reaches "Switch at", then
the refiner's, with the prompts through the refiner's text encoder and its VAE decoding), and a manual base-then-
refiner continuation; switch at 1 / no refiner / the checkpoint itself as its own refiner give today's picture bit
for bit; the infotext keys; hires fix's passes; Interrupt, Skip and previews across the switch; unknown and
incompatible refiners; the HTTP API; the UI accordion, its values in the request and pasting infotext into it.

Two calm tiny SD1 checkpoints with different weights (UNet, text encoder and VAE all differ) are the checkpoint and
the refiner; a tiny SDXL one is the incompatible refiner."""
from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import replace

import gradio as gr
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import CALM_UNET_SCALE, install_model, pixels
from tests.a1111_reference import (CFG, SAMPLERS, A1111Reference, ImageNoise, Job, TimestepsDenoiser,
                                   _patched_randomness, a1111_timesteps, ddim_sample, image_from_seed, sampler_sigmas)
from webui.core.errors import RequestError
from webui.core.request import GenerationRequest
from webui.core.run_control import RunControl
from webui.models.tiny import write_single_file
from webui.outputs.infotext import parse_infotext

TOLERANCE = 1  # 1/255, as tests/test_a1111_parity.py: float summation order differs between implementations
NUDGE = 1e-6
PROMPT, NEGATIVE = "a red fox in the snow", "blurry"
BASE = dict(prompt=PROMPT, negative_prompt=NEGATIVE, sampler_name="Euler", steps=10, width=64, height=64, seed=1234,
            batch_size=2, cfg_scale=7.0, save_images=False)


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_calm_sd1, tiny_models):
    """The calm tiny SD1 "tiny-base" (selected), another calm SD1 "tiny-refiner" (other seed: every module differs)
    and a tiny SDXL "tiny-xl"."""
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    data = tmp_path_factory.mktemp("refiner-data")
    install_model(data, tiny_calm_sd1, "tiny-base.safetensors")
    refiner = write_single_file(tmp_path_factory.mktemp("refiner") / "tiny-refiner.safetensors", "sd1", seed=7,
                                unet_weight_scale=CALM_UNET_SCALE)
    install_model(data, refiner)
    install_model(data, tiny_models["sdxl"], "tiny-xl.safetensors")
    install_model(data, tiny_models["sd2-v"], "tiny-v.safetensors")
    for source, name in ((tiny_calm_sd1, "tiny-base-copy"), (tiny_models["sd2-v"], "tiny-v-copy"),
                         (tiny_models["sdxl"], "tiny-xl-copy")):
        install_copy(data, source, name)
    install_model(data, write_single_file(tmp_path_factory.mktemp("xl-refiner") / "tiny-xl-refiner.safetensors",
                                          "sdxl-refiner", seed=11))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny runs on a shared machine (see test_a1111_parity.one_thread)
    made = build_services(parse_flags(["--data-dir", str(data), "--nowebui"]))
    made.hasher.wait_idle(30)
    made.models.select("tiny-base")
    yield made
    made.stop()
    torch.set_num_threads(threads)


def install_copy(data, source, name: str) -> None:
    """The same weights in another file, with another hash (a note in the header), as a user's duplicate."""
    from safetensors.torch import load_file, save_file
    folder = data / "models" / "Stable-diffusion"
    save_file(load_file(str(source)), str(folder / f"{name}.safetensors"), metadata={"note": name})
    shutil.copy2(source.with_suffix(".yaml"), folder / f"{name}.yaml")


def run(services, control: RunControl | None = None, **fields):
    return services.engine.run(GenerationRequest(**{**BASE, **fields}), control)


def pictures(result) -> list:
    """The result's images without the batch grid in front (A1111's return_grid)."""
    return result.images[result.index_of_first_image:]


def max_difference(ours, theirs) -> int:
    assert len(ours) == len(theirs)
    return max(int(np.abs(pixels(a) - pixels(b)).max()) for a, b in zip(ours, theirs))


# --- the independent reference: A1111's apply_refiner around k-diffusion's samplers ------------------------------
class Switching:
    """A1111's CFGDenoiser with apply_refiner, written from its behaviour: before each model evaluation, the timestep
    of the evaluation (a timestep sampler's own, truncated; else the index of the denoiser's table sigma nearest the
    largest sigma of the batch) gives completed = (999 - t) / 1000; from the first evaluation where that reaches
    `switch_at`, the refiner's CFG (its UNet, its conditioning) answers."""

    def __init__(self, base, refiner, switch_at: float, table: torch.Tensor | None):
        self.base, self.refiner, self.switch_at, self.table = base, refiner, switch_at, table
        self.evaluations, self.switched_at = 0, None

    def __call__(self, x, sigma, **kwargs):
        if self.switched_at is None:
            if self.table is None:
                t = int(torch.max(sigma))
            else:
                t = int(torch.argmin(torch.abs(self.table - torch.max(sigma))))
            if (999 - t) / 1000 >= self.switch_at:
                self.switched_at = self.evaluations
        self.evaluations += 1
        model = self.base if self.switched_at is None else self.refiner
        return model(x, sigma, **kwargs)

    def __getattr__(self, name):  # DDIM CFG++'s switches, on whichever CFG answers
        return getattr(self.refiner if self.switched_at is not None else self.base, name)


@pytest.fixture(scope="module")
def references(services):
    _, base = services.models.get("tiny-base")
    _, refiner = services.models.get("tiny-refiner")
    services.models.trim()
    return (A1111Reference(base.unet, base.vae, base.text_encoders[0], base.tokenizers[0]),
            A1111Reference(refiner.unet, refiner.vae, refiner.text_encoders[0], refiner.tokenizers[0]))


def reference_run(references, job: Job, switch_at: float):
    """(pictures, the evaluation at which the refiner took over) for A1111's refiner run of `job`."""
    base, refiner = references
    sampler = SAMPLERS[job.sampler]
    sampling = base.sampling
    cfgs = []
    for side in (base, refiner):  # each model gets the prompts through its own text encoder
        inner = TimestepsDenoiser(side.model) if sampler.kind == "timesteps" else side.denoiser
        cfgs.append(CFG(inner, side.encode(job.prompt), side.encode(job.negative_prompt), job.cfg_scale))
    noise = ImageNoise(job, (4, job.height // 8, job.width // 8))
    first = noise.next()
    with torch.no_grad(), _patched_randomness(sampling, noise):
        if sampler.kind == "timesteps":
            model = Switching(*cfgs, switch_at, None)
            latents = ddim_sample(sampling, model, base.model.alphas_cumprod, first,
                                  a1111_timesteps(job.steps, job.options), 0.0)
        else:
            model = Switching(*cfgs, switch_at, base.denoiser.sigmas)
            sigmas = sampler_sigmas(sampler, job.schedule, job.steps, base.denoiser, job.options, sampling)
            if job.init_image is None:
                x = first * sigmas[0]
            else:
                t_enc = int(min(job.denoising_strength, 0.999) * job.steps)
                sigmas = sigmas[job.steps - t_enc - 1:]
                x = base.encode_image(job.init_image, job.batch_size) + first * sigmas[0]
            function = getattr(sampling, sampler.function)
            kwargs = {"eta": 1.0} if "ancestral" in sampler.function else {}
            latents = function(model, x, sigmas, disable=True, **kwargs)
    decoder = refiner if model.switched_at is not None else base
    return decoder.decode(latents), model.switched_at


def reference_floor(references, job: Job, switch_at: float, pictures) -> int:
    """How far the reference's own pictures move when the initial noise is nudged by 1e-6: below this a difference
    says nothing (see tests/test_a1111_parity.py)."""
    nudged, _ = reference_run(references, replace(job, noise_nudge=NUDGE), switch_at)
    return max_difference(nudged, pictures)


INIT = image_from_seed(3, (64, 64))
CFG_SCALE = 12.0  # the prompts weigh more: the refiner's own conditioning of them shows in the pictures


# sampler, schedule, steps, switch at, img2img denoising (None: txt2img), the evaluation of the switch worked out by
# hand from A1111's rule (Euler's schedule: t = linspace(999, 0, steps); DDIM's: 901, 801, ... ; img2img's tail)
CASES = [
    ("Euler", "Automatic", 10, 0.5, None, 5),  # t = 999 - 111 i: 1 - t/1000 >= 0.5 first at i = 5 (t = 444)
    ("Euler", "Automatic", 10, 0.2, None, 2),  # early: the refiner's conditioning of the prompts makes the picture
    ("Euler a", "Automatic", 8, 0.6, None, 5),  # ancestral: the noise stream goes on across the switch
    ("DPM++ 2M", "Karras", 8, 0.8, None, None),  # a multistep sampler keeps its history across the switch
    ("DDIM", "Automatic", 10, 0.5, None, 5),  # t = 901, 801, ..., 401 is the first with 1 - t/1000 >= 0.5
    ("Euler", "Automatic", 10, 0.7, 0.6, 4),  # img2img: t = 666, 555, 444, 333, 222 (the 5th) reaches 0.7
]


@pytest.mark.parametrize("sampler, schedule, steps, switch_at, denoising, switch", CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[3]}-{'img2img' if c[4] else 'txt2img'}" for c in CASES])
def test_a_refiner_run_equals_a1111s_switch(services, references, sampler, schedule, steps, switch_at, denoising,
                                            switch):
    job = Job(prompt=PROMPT, negative_prompt=NEGATIVE, sampler=sampler, schedule=schedule, steps=steps, seed=1234,
              batch_size=2, init_image=INIT if denoising else None, denoising_strength=denoising or 0.5,
              cfg_scale=CFG_SCALE)
    theirs, switched_at = reference_run(references, job, switch_at)
    assert switched_at is not None and (switch is None or switched_at == switch)
    fields = dict(sampler_name=sampler, scheduler=schedule, steps=steps, refiner_checkpoint="tiny-refiner",
                  refiner_switch_at=switch_at, cfg_scale=CFG_SCALE)
    if denoising:
        fields.update(mode="img2img", init_images=[INIT], denoising_strength=denoising)
    ours = pictures(run(services, **fields))
    floor = reference_floor(references, job, switch_at, theirs)
    assert floor <= TOLERANCE, f"the reference moves by {floor}/255 under a {NUDGE} nudge: nothing to compare"
    delta = max_difference(ours, theirs)
    assert delta <= TOLERANCE, f"the refiner run differs from A1111's by up to {delta}/255"
    # the switch matters: neither checkpoint alone makes this picture
    plain = pictures(run(services, **{k: v for k, v in fields.items() if not k.startswith("refiner")}))
    refined_only = pictures(run(services, **{k: v for k, v in fields.items() if not k.startswith("refiner")},
                                checkpoint="tiny-refiner"))
    assert max_difference(ours, plain) > 4 and max_difference(ours, refined_only) > 4


@pytest.mark.parametrize("denoising", [None, 0.6])
def test_a_refiner_run_equals_a_manual_base_then_refiner_continuation(services, references, denoising):
    """Euler is memoryless: the switch at evaluation k is the checkpoint sampling sigmas[:k + 1], then the refiner
    sampling sigmas[k:] from where it left off (its own conditioning), decoded by the refiner."""
    base, refiner = references
    job = Job(prompt=PROMPT, negative_prompt=NEGATIVE, sampler="Euler", steps=10, seed=1234, batch_size=2,
              init_image=INIT if denoising else None, denoising_strength=denoising or 0.5)
    switch_at, k = (0.5, 5) if denoising is None else (0.7, 4)
    sampling = base.sampling
    sigmas = base.denoiser.get_sigmas(job.steps)
    noise = ImageNoise(job, (4, 8, 8)).next()
    if denoising is None:
        x = noise * sigmas[0]
    else:
        sigmas = sigmas[job.steps - int(denoising * job.steps) - 1:]
        x = base.encode_image(INIT, 2) + noise * sigmas[0]
    with torch.no_grad():
        for side, part in ((base, sigmas[:k + 1]), (refiner, sigmas[k:])):
            cfg = CFG(side.denoiser, side.encode(PROMPT), side.encode(NEGATIVE), 7.0)
            x = sampling.sample_euler(cfg, x, part, disable=True)
    fields = dict(refiner_checkpoint="tiny-refiner", refiner_switch_at=switch_at)
    if denoising:
        fields.update(mode="img2img", init_images=[INIT], denoising_strength=denoising)
    assert max_difference(pictures(run(services, **fields)), refiner.decode(x)) <= TOLERANCE


def test_switch_at_one_no_refiner_and_the_checkpoint_itself_give_todays_picture(services):
    before = services.models.loaded_titles()
    plain = run(services)
    for fields in (dict(refiner_checkpoint="tiny-refiner", refiner_switch_at=1.0),
                   dict(refiner_checkpoint=None, refiner_switch_at=0.3), dict(refiner_checkpoint="None"),
                   dict(refiner_checkpoint="tiny-base", refiner_switch_at=0.2)):  # A1111: never switches to itself
        result = run(services, **fields)
        assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(pictures(result), pictures(plain))), fields
        assert result.infotexts == plain.infotexts and "Refiner" not in result.extra_params
    assert services.models.loaded_titles() == before  # a refiner that can never take over is not even loaded


@pytest.mark.parametrize("checkpoint, refiner, sampler", [
    ("tiny-base", "tiny-base-copy", "DPM++ 2M"), ("tiny-v", "tiny-v-copy", "Euler a"),
    ("tiny-xl", "tiny-xl-copy", "DDIM"), ("tiny-xl", "tiny-xl-copy", "LCM")])
def test_a_refiner_with_the_same_weights_continues_the_picture_unchanged(services, checkpoint, refiner, sampler):
    """Another file holding the same weights takes over (it is another checkpoint to A1111 too): every part of the
    switch - the conditioning encoded again, the sampler's state and noise carried on, the v-prediction or SDXL
    inputs, the decoding - must leave the picture as the checkpoint alone makes it."""
    fields = dict(checkpoint=checkpoint, sampler_name=sampler, steps=8)
    plain = run(services, **fields)
    switched = run(services, **fields, refiner_checkpoint=refiner, refiner_switch_at=0.4)
    services.models.trim()
    assert f"Refiner: {refiner} [" in switched.infotexts[0]
    assert max_difference(pictures(switched), pictures(plain)) <= TOLERANCE


def test_an_sd2_refiner_continues_an_sd1_picture(services):
    """SD1 and SD2 share the VAE's latent space; the v-prediction refiner's output is read as v after the switch."""
    plain = run(services, batch_size=1)
    switched = run(services, batch_size=1, refiner_checkpoint="tiny-v", refiner_switch_at=0.5)
    services.models.trim()
    assert "Refiner: tiny-v [" in switched.infotexts[0]
    values = pixels(switched.images[0])
    assert values.std() > 5 and max_difference(switched.images, plain.images) > 4


# --- SDXL's refiner checkpoint ------------------------------------------------------------------------------------
def test_sdxl_refiner_checkpoints_load_and_refine_sdxl_pictures(services):
    """A1111's SDXL refiner layout (OpenCLIP G alone under conditioner.embedders.0, a UNet taking sizes, crop and an
    aesthetic score): it loads, refines an SDXL picture, and its negative prompt's rows get the low aesthetic score
    (sdxl_refiner_low_aesthetic_score), the prompt's the high one."""
    services.options.update({"sd_checkpoints_limit": 4}, save=False)  # the hooked refiner stays in the cache
    info, refiner = services.models.get("tiny-xl-refiner")
    assert refiner.label.startswith("SDXL refiner") and len(refiner.text_encoders) == 1
    seen = []
    handle = refiner.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["time_ids"].tolist()), with_kwargs=True)
    try:
        plain = run(services, checkpoint="tiny-xl", batch_size=1)
        refined = run(services, checkpoint="tiny-xl", batch_size=1, refiner_checkpoint="tiny-xl-refiner",
                      refiner_switch_at=0.5)
        services.options.update({"sdxl_refiner_high_aesthetic_score": 9.0}, save=False)
        other_score = run(services, checkpoint="tiny-xl", batch_size=1, refiner_checkpoint="tiny-xl-refiner",
                          refiner_switch_at=0.5)
    finally:
        handle.remove()
        services.options.update({"sdxl_refiner_high_aesthetic_score": 6.0, "sd_checkpoints_limit": 1}, save=False)
        services.models.trim()
    assert f"Refiner: tiny-xl-refiner [{info.shorthash}]" in refined.infotexts[0]
    assert seen[0] == [[64.0, 64.0, 0.0, 0.0, 2.5], [64.0, 64.0, 0.0, 0.0, 6.0]]  # uncond row, then cond row
    assert len(seen) == 2 * 5  # the refiner took the last 5 of the 10 evaluations of each refined run
    assert max_difference(refined.images, plain.images) > 4
    assert max_difference(other_score.images, refined.images) > 0  # the aesthetic score reaches the picture
    assert pixels(refined.images[0]).std() > 5
    with pytest.raises(RequestError, match="latent spaces differ"):  # SD1 pictures cannot go to it
        run(services, refiner_checkpoint="tiny-xl-refiner")
    services.models.trim()


def test_infotext_keys_and_the_cache_after_the_run(services):
    result = run(services, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5, batch_size=1, n_iter=2)
    info = services.models.resolve("tiny-refiner")
    for text in result.infotexts:
        assert f"Refiner: tiny-refiner [{info.shorthash}], Refiner switch at: 0.5, Version:" in text
        params = parse_infotext(text)
        assert params["Model"] == "tiny-base" and "Hires refiner" not in params
    assert result.extra_params["Refiner"] == f"tiny-refiner [{info.shorthash}]"
    # the borrowed refiner left the cache (1 checkpoint kept); the selected one stayed
    assert services.models.loaded_titles() == [services.models.resolve("tiny-base").title]
    assert services.models.current_title() == services.models.resolve("tiny-base").title


def refiner_calls(services, **fields):
    """(result, how many times the refiner's UNet ran) for a run with these fields."""
    seen = []
    _, refiner = services.models.get("tiny-refiner")  # the run takes it from the cache
    handle = refiner.unet.register_forward_pre_hook(lambda module, args: seen.append(1))
    try:
        return run(services, **fields), len(seen)
    finally:
        handle.remove()
        services.models.trim()


def test_switching_by_sampling_steps_and_its_infotext(services):
    """`refiner_switch_by_sample_steps`: the evaluations so far over the pass's. Euler, 10 steps, switch at 0.55: by
    steps i / 10 >= 0.55 first at i = 6; by timesteps (999 - t) / 1000 = 0.111 i >= 0.55 first at i = 5."""
    fields = dict(refiner_checkpoint="tiny-refiner", refiner_switch_at=0.55, batch_size=1)
    services.options.update({"refiner_switch_by_sample_steps": True}, save=False)
    try:
        by_steps, calls_by_steps = refiner_calls(services, **fields)
    finally:
        services.options.update({"refiner_switch_by_sample_steps": False}, save=False)
    by_timesteps, calls_by_timesteps = refiner_calls(services, **fields)
    assert (calls_by_steps, calls_by_timesteps) == (10 - 6, 10 - 5)
    assert parse_infotext(by_steps.infotexts[0])["Refiner switch by sampling steps"] == "True"
    assert "Refiner switch by sampling steps" not in parse_infotext(by_timesteps.infotexts[0])


# --- hires fix ------------------------------------------------------------------------------------------------------
def unet_calls(services, names=("tiny-base", "tiny-refiner")):
    """Records (checkpoint, latent height) of every UNet call while installed."""
    calls, handles = [], []
    for name in names:
        _, model = services.models.get(name)
        handles.append(model.unet.register_forward_pre_hook(
            lambda module, args, name=name: calls.append((name, int(args[0].shape[-2])))))
    return calls, handles


@pytest.mark.parametrize("passes, hr_checkpoint, expected, key", [
    # the default: the first pass is the checkpoint's; the second switches where its ratio reaches 0.8
    ("second pass", None, [("tiny-base", 8)] * 10 + [("tiny-base", 12)] * 6 + [("tiny-refiner", 12)] * 4, None),
    # the first pass switches at 0.8 (t = 111 is the 9th step); the refiner stays for the whole hires pass
    ("first pass", None, [("tiny-base", 8)] * 8 + [("tiny-refiner", 8)] * 2 + [("tiny-refiner", 12)] * 10,
     "first pass"),
    # both passes, a hires checkpoint (the base itself): loaded for the second pass, which switches again
    ("both passes", "tiny-base", [("tiny-base", 8)] * 8 + [("tiny-refiner", 8)] * 2 + [("tiny-base", 12)] * 6
     + [("tiny-refiner", 12)] * 4, "both passes"),
])
def test_hires_fix_uses_the_refiner_in_the_passes_a1111_does(services, passes, hr_checkpoint, expected, key):
    """Second pass: hires steps 10 at denoising 0.5 run the tail of a 20-step schedule (t = 999 - 52.6 i for
    i = 10..19): 0.8 is first reached at i = 16, the second pass's 7th evaluation."""
    services.options.update({"hires_fix_refiner_pass": passes}, save=False)
    calls, handles = unet_calls(services)
    try:
        result = run(services, batch_size=1, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                     denoising_strength=0.5, hr_checkpoint_name=hr_checkpoint, refiner_checkpoint="tiny-refiner",
                     refiner_switch_at=0.8)
    finally:
        for handle in handles:
            handle.remove()
        services.options.update({"hires_fix_refiner_pass": "second pass"}, save=False)
        services.models.trim()
    assert calls == expected
    params = parse_infotext(result.infotexts[0])
    assert params["Refiner switch at"] == "0.8" and params.get("Hires refiner") == key
    assert result.images[0].size == (96, 96)


# --- Interrupt, Skip, progress and previews across the switch -------------------------------------------------------
def test_progress_previews_and_skip_go_on_across_the_switch(services):
    services.options.update({"show_progress_type": "Full", "show_progress_every_n_steps": 1}, save=False)
    try:
        steps, previews = [], []
        control = RunControl()

        def on_progress(progress):
            if progress.job_no == 0 and progress.sampling_step:
                steps.append(progress.sampling_step)
                if control.preview is not None and (not previews or previews[-1] is not control.preview):
                    previews.append(control.preview)
                if progress.sampling_step == 7:  # the refiner took over at evaluation 5: skip in its part
                    control.skip()
        control._on_progress = on_progress
        result = run(services, control, batch_size=1, n_iter=2, refiner_checkpoint="tiny-refiner",
                     refiner_switch_at=0.5)
    finally:
        services.options.update({"show_progress_type": "Approx cheap", "show_progress_every_n_steps": 10},
                                save=False)
    assert steps[:7] == [1, 2, 3, 4, 5, 6, 7]  # one count across the switch, no restart
    assert len(previews) >= 7  # a "Full" preview (the refiner's VAE after the switch) at every step
    assert result.skipped_batches == 1 and result.seeds == [1234, 1235] and not result.interrupted
    whole = run(services, batch_size=1, seed=1234, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5)
    alone = run(services, batch_size=1, seed=1235, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5)
    assert not np.array_equal(pixels(pictures(result)[0]), pixels(whole.images[0]))  # ended early, still decoded
    assert "Refiner: tiny-refiner" in result.infotexts[0]
    assert np.array_equal(pixels(pictures(result)[1]), pixels(alone.images[0]))  # the next batch from its start


def test_interrupt_after_the_switch_keeps_the_batch(services):
    control = RunControl()

    def on_progress(progress):
        if progress.sampling_step == 8:
            control.interrupt()
    control._on_progress = on_progress
    result = run(services, control, n_iter=2, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5)
    assert result.interrupted and len(pictures(result)) == 2 and result.seeds == [1234, 1235]
    assert "Refiner switch at: 0.5" in result.infotexts[0]


# --- refused refiners -----------------------------------------------------------------------------------------------
def test_an_unknown_refiner_is_a_400_naming_it(services):
    with pytest.raises(RequestError, match="refiner checkpoint: Unknown checkpoint 'nope'") as caught:
        run(services, refiner_checkpoint="nope")
    assert caught.value.field == "refiner_checkpoint" and caught.value.status == 400


def test_a_refiner_of_another_latent_space_is_refused_before_sampling(services):
    reports = []
    with pytest.raises(RequestError, match="tiny-xl.* cannot continue .*latent spaces differ") as caught:
        run(services, RunControl(on_progress=lambda p: reports.append(p.sampling_step)),
            refiner_checkpoint="tiny-xl")
    assert caught.value.field == "refiner_checkpoint" and caught.value.status == 400
    assert caught.value.kind == "IncompatibleRefiner"
    assert not any(reports)  # no step was sampled
    assert services.models.loaded_titles() == [services.models.resolve("tiny-base").title]  # not kept loaded


@pytest.mark.parametrize("value", [0, -0.5, 1.5, "soon", float("nan")])
def test_a_switch_point_outside_0_to_1_is_a_422(value):
    with pytest.raises(RequestError, match="refiner_switch_at must be more than 0 and at most 1|must be a number") \
            as caught:
        GenerationRequest(refiner_checkpoint="x", refiner_switch_at=value).validate()
    assert caught.value.field == "refiner_switch_at" and caught.value.status == 422


# --- the HTTP API ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(services):
    from app import create_app
    app, _ = create_app(services.flags, services)  # the fixture's flags have --nowebui
    return TestClient(app)


def test_api_fields_round_trip(services, client):
    body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "width": 64, "height": 64, "steps": 10, "seed": 1234,
            "sampler_name": "Euler", "refiner_checkpoint": "tiny-refiner", "refiner_switch_at": 0.5}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["parameters"]["refiner_checkpoint"] == "tiny-refiner" and data["parameters"]["refiner_switch_at"] == 0.5
    info = json.loads(data["info"])
    shorthash = services.models.resolve("tiny-refiner").shorthash
    assert info["extra_generation_params"]["Refiner"] == f"tiny-refiner [{shorthash}]"
    assert info["extra_generation_params"]["Refiner switch at"] == "0.5"
    image = Image.open(io.BytesIO(base64.b64decode(data["images"][0])))
    engine = run(services, batch_size=1, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5)
    assert np.array_equal(pixels(image.convert("RGB")), pixels(engine.images[0]))
    # A1111's `infotext` field brings the refiner back: the same picture
    again = client.post("/sdapi/v1/txt2img", json={"infotext": info["infotexts"][0]})
    assert again.status_code == 200, again.text
    again_info = json.loads(again.json()["info"])
    assert again_info["infotexts"][0] == info["infotexts"][0]
    # img2img takes the same fields
    init = base64.b64encode(_png(INIT)).decode()
    img2img = client.post("/sdapi/v1/img2img", json={**body, "init_images": [init], "denoising_strength": 0.6})
    assert img2img.status_code == 200 and "Refiner: tiny-refiner" in json.loads(img2img.json()["info"])["infotexts"][0]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("fields, status, kind, detail", [
    ({"refiner_checkpoint": "nope"}, 400, "UnknownCheckpoint", "refiner checkpoint: Unknown checkpoint 'nope'"),
    ({"refiner_checkpoint": "tiny-xl"}, 400, "IncompatibleRefiner", "latent spaces differ"),
    ({"refiner_checkpoint": "tiny-refiner", "refiner_switch_at": 0}, 422, "InvalidRequest", "refiner_switch_at"),
])
def test_api_refuses_bad_refiners(services, client, fields, status, kind, detail):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "width": 64, "height": 64, "steps": 2,
                                                      **fields})
    services.models.trim()
    assert response.status_code == status, response.text
    assert response.json()["error"] == kind and detail in response.json()["detail"]


# --- the UI ---------------------------------------------------------------------------------------------------------
def refiner_ids(tab: str) -> set[str]:
    return {f"script_{tab}_refiner_{item}" for item in ("enable", "enable-checkbox", "checkpoint",
                                                         "checkpoint_refresh", "switch_at")}


@pytest.fixture(scope="module")
def blocks(services):
    from webui.ui.blocks import build_ui
    return build_ui(services)


def by_elem_id(blocks) -> dict:
    return {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}


def test_the_refiner_accordion_has_a1111s_controls_in_both_tabs(services, blocks):
    found = by_elem_id(blocks)
    for tab in ("txt2img", "img2img"):
        assert refiner_ids(tab) <= set(found), refiner_ids(tab) - set(found)
        accordion, checkbox = found[f"script_{tab}_refiner_enable"], found[f"script_{tab}_refiner_enable-checkbox"]
        assert accordion.label == "Refiner" and not accordion.open and checkbox.value is False
        slider = found[f"script_{tab}_refiner_switch_at"]
        assert (slider.value, slider.minimum, slider.maximum, slider.step) == (0.8, 0.01, 1.0, 0.01)
        dropdown = found[f"script_{tab}_refiner_checkpoint"]
        titles = [choice[0] for choice in dropdown.choices]
        assert dropdown.value == "" and titles[0] == ""
        assert set(titles[1:]) == {info.title for info in services.models.checkpoints()}


def generate_function(blocks, mode: str):
    return next(fn for fn in blocks.fns.values() if fn.api_name == mode)


def call_generate(blocks, mode: str, values_by_id: dict):
    """Generate as Gradio calls it: every input's value (its default unless given by elem_id), in the wiring's
    order; the last update's outputs."""
    fn = generate_function(blocks, mode)
    values = [values_by_id.get(getattr(c, "elem_id", None), c.value) for c in fn.inputs]
    return list(fn.fn(*values))[-1]


def test_the_accordion_values_reach_the_request_through_generate(services, blocks):
    shorthash = services.models.resolve("tiny-refiner").shorthash
    common = {"txt2img_prompt": PROMPT, "txt2img_neg_prompt": NEGATIVE, "txt2img_sampling": "Euler",
              "txt2img_steps": 10, "txt2img_width": 64, "txt2img_height": 64, "txt2img_seed": 1234,
              "script_txt2img_refiner_checkpoint": services.models.resolve("tiny-refiner").title,
              "script_txt2img_refiner_switch_at": 0.5}
    on = call_generate(blocks, "txt2img", {**common, "script_txt2img_refiner_enable-checkbox": True})
    infotext = on[generate_outputs_index("infotext")]
    assert f"Refiner: tiny-refiner [{shorthash}], Refiner switch at: 0.5" in infotext
    off = call_generate(blocks, "txt2img", common)  # a checkpoint chosen but the accordion not enabled: none
    assert "Refiner" not in off[generate_outputs_index("infotext")]
    engine = run(services, batch_size=1, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5)
    gallery = on[generate_outputs_index("gallery")]
    assert np.array_equal(pixels(gallery[0]), pixels(engine.images[0]))


def generate_outputs_index(name: str) -> int:
    from webui.ui import generation
    return generation.OUTPUTS.index(name)


def test_build_request_and_the_gradio_api_signature():
    from webui.ui import generation, refiner_inputs
    values = dict(zip(refiner_inputs.REFINER_FIELDS, (True, "tiny-refiner.safetensors [abc]", 0.55)))
    request = generation.build_request("img2img", PROMPT, "", "Euler", "Automatic", 4, 64, 64, 1, 1, 7.0, 5,
                                       img2img={"image": INIT}, refiner=values)
    assert (request.refiner_checkpoint, request.refiner_switch_at) == ("tiny-refiner.safetensors [abc]", 0.55)
    for off in ({**values, "enable_refiner": False}, {**values, "refiner_checkpoint": ""}, None):
        request = generation.build_request("txt2img", PROMPT, "", "Euler", "Automatic", 4, 64, 64, 1, 1, 7.0, 5,
                                           refiner=off)
        assert request.refiner_checkpoint is None


def test_gradio_api_callers_may_leave_the_refiner_out(blocks):
    import inspect
    parameters = inspect.signature(generate_function(blocks, "txt2img").fn).parameters
    for name in ("enable_refiner", "refiner_checkpoint", "refiner_switch_at"):
        assert parameters[name].default is None


def paste_function(blocks, button_id: str, first_output_id: str):
    found = by_elem_id(blocks)
    button, target = found[button_id], found[first_output_id]
    return next(fn for fn in blocks.fns.values() if any(t[0] == button._id for t in fn.targets)
                and fn.outputs and fn.outputs[0] is target)


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_pasting_infotext_restores_the_accordion(services, blocks, tab):
    from webui.ui import refiner_inputs
    made = run(services, batch_size=1, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.45)
    paste = paste_function(blocks, f"pnginfo_send_{tab}", f"script_{tab}_refiner_enable-checkbox")
    values = paste.fn(made.infotexts[0])
    title = services.models.resolve("tiny-refiner").title
    assert values == (True, title, 0.45)
    # the pasted values make the same picture again
    request = refiner_inputs.apply_refiner(GenerationRequest(**{**BASE, "batch_size": 1}),
                                           dict(zip(refiner_inputs.REFINER_FIELDS, values)))
    again = services.engine.run(request)
    assert np.array_equal(pixels(again.images[0]), pixels(made.images[0]))
    # an infotext without a refiner turns it off and leaves the rest; no text changes nothing
    assert paste.fn(run(services, batch_size=1).infotexts[0]) == (False, gr.skip(), gr.skip())
    assert paste.fn("") == (gr.skip(),) * 3
    # the galleries' "Send to img2img" restores img2img's accordion from the selected image's infotext
    send = paste_function(blocks, f"{tab}_send_to_img2img", "script_img2img_refiner_enable-checkbox")
    assert send.fn({"infotexts": [made.infotexts[0]], "selected": 0}) == (True, title, 0.45)


def test_pasting_a_refiner_this_server_lacks_leaves_the_choice(services):
    from webui.ui import refiner_inputs
    params = {"Refiner": "somewhere-else [0123456789]", "Refiner switch at": "0.6"}
    assert refiner_inputs.paste_values(services, params) == (True, gr.skip(), 0.6)
