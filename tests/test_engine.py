"""Engine behaviour users rely on: seeds, samplers, schedules, model families, saving, infotext, interrupt."""
from __future__ import annotations

import shutil
from datetime import date

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import PARITY_TOLERANCE, max_pixel_difference
from webui.engine import samplers
from webui.core.run_control import RunControl
from webui.engine.images import fit
from webui.core.errors import RequestError
from webui.core.request import GenerationRequest
from webui.engine.sampling.noise import BatchNoise
from webui.models.manager import ModelLoadError
from webui.outputs.infotext import parse_infotext
from webui.outputs.save import read_infotext
from webui.prompts.tokens import make_chunks


def req(**kw) -> GenerationRequest:
    base = dict(prompt="a lighthouse at dusk", negative_prompt="ugly", sampler_name="Euler a", steps=4,
                width=64, height=64, seed=10, save_images=False, do_not_save_grid=True)  # grids: test_grids.py
    base.update(kw)
    return GenerationRequest(**base)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_models):
    from tests.conftest import install_model
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    data = tmp_path_factory.mktemp("engine")
    for kind in ("sd1", "sd2-v", "sd1-inpaint", "sdxl"):
        install_model(data, tiny_models[kind])
    services = build_services(parse_flags(["--data-dir", str(data)]))
    services.options.update({"sd_checkpoints_limit": 4})
    services.models.select("tiny-sd1")
    yield services
    services.stop()


def run(services, **kw):
    return services.engine.run(req(**kw))


# --- seeds ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2S a"])
def test_image_in_a_batch_is_reproducible_alone(services, sampler):
    batch = run(services, seed=100, batch_size=3, sampler_name=sampler)
    assert batch.seeds == [100, 101, 102]
    alone = run(services, seed=102, sampler_name=sampler)
    # batched and single matrix products round differently in the last bit: allow 1/255
    assert np.abs(pixels(batch.images[2]) - pixels(alone.images[0])).max() <= 1
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))


def test_random_seed_is_reported_and_reproduces(services):
    first = run(services, seed=-1)
    assert 0 <= first.seed < 2 ** 32 and f"Seed: {first.seed}," in first.infotexts[0]
    again = run(services, seed=first.seed)
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))


def test_variation_seed(services):
    plain = run(services, sampler_name="Euler", seed=5)
    none = run(services, sampler_name="Euler", seed=5, subseed=9, subseed_strength=0.0)
    assert np.array_equal(pixels(plain.images[0]), pixels(none.images[0]))  # strength 0: no slerp, the same run
    varied = run(services, sampler_name="Euler", seed=5, subseed=9, subseed_strength=0.4, batch_size=2)
    assert varied.seeds == [5, 5] and varied.subseeds == [9, 10]
    assert "Variation seed: 9, Variation seed strength: 0.4" in varied.infotexts[0]
    # a batch of 2 against one image alone: more than float rounding must differ
    assert max_pixel_difference(varied.images[0], plain.images[0]) > PARITY_TOLERANCE
    # strength 1 is the subseed's noise: with a deterministic sampler that is the subseed's image
    full = run(services, sampler_name="Euler", seed=5, subseed=9, subseed_strength=1.0)
    other = run(services, sampler_name="Euler", seed=9)
    assert np.abs(pixels(full.images[0]) - pixels(other.images[0])).max() <= 1


def test_seed_resize_keeps_the_noise_in_the_centre():
    small = BatchNoise((4, 8, 8), [3]).next()
    big = BatchNoise((4, 12, 16), [3], resize_from=(64, 64)).next()
    assert torch.equal(big[0, :, 2:10, 4:12], small[0])
    cut = BatchNoise((4, 6, 8), [3], resize_from=(64, 64)).next()  # smaller than the size it was found at
    assert torch.equal(cut[0], small[0, :, 1:7, 0:8])


# --- samplers and schedules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", [s.name for s in samplers.SAMPLERS])
def test_every_sampler_makes_an_image(services, sampler):
    result = run(services, sampler_name=sampler, steps=3)
    image = pixels(result.images[0])
    assert image.shape == (64, 64, 3) and image.std() > 1
    expected_schedule = samplers.SAMPLERS_BY_NAME[sampler].default_schedule
    assert f"Sampler: {sampler}, Schedule type: {expected_schedule}," in result.infotexts[0]


@pytest.mark.parametrize("schedule", ["Uniform", "Karras", "Exponential", "SGM Uniform"])
def test_schedule_types_change_the_steps(services, schedule):
    result = run(services, sampler_name="DPM++ 2M", scheduler=schedule, steps=5)
    assert f"Schedule type: {schedule}," in result.infotexts[0]


def test_sampler_names_as_a1111_writes_them():
    assert samplers.resolve("DPM++ 2M Karras", None)[0].name == "DPM++ 2M"
    assert samplers.resolve("DPM++ 2M Karras", "Automatic")[1] == "Karras"
    assert samplers.resolve("DPM++ 2M", "Automatic")[1] == "Karras"
    assert samplers.resolve("DPM++ 2M SDE", "automatic")[1] == "Exponential"
    assert samplers.resolve("k_euler_a", "sgm_uniform") == (samplers.SAMPLERS_BY_NAME["Euler a"], "SGM Uniform")
    with pytest.raises(samplers.SamplerError, match="Unknown sampler 'Eulerish'. Available: DPM"):
        samplers.resolve("Eulerish")
    assert samplers.resolve("Euler a", "Karras")[1] == "Karras"
    # A1111 accepts every schedule type with every sampler; the timestep samplers run their own timesteps
    assert samplers.resolve("DDIM", "Karras") == (samplers.SAMPLERS_BY_NAME["DDIM"], "Karras")
    assert samplers.resolve("Euler Align Your Steps", None)[1] == "Align Your Steps"
    assert samplers.resolve("DPM++ 2M", "kl_optimal")[1] == "KL Optimal"
    with pytest.raises(samplers.SamplerError, match="Unknown schedule type 'Karas'"):
        samplers.resolve("Euler", "Karas")


def test_every_schedule_type_is_accepted_and_written(services):
    for schedule in samplers.SCHEDULE_NAMES[1:]:
        result = run(services, sampler_name="Euler", scheduler=schedule, steps=3)
        assert f"Sampler: Euler, Schedule type: {schedule}," in result.infotexts[0]


# --- model families ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny-sd2-v", "tiny-sdxl", "tiny-sd1-inpaint"])
def test_each_family_does_txt2img_and_img2img(services, name):
    text = run(services, checkpoint=name, width=64, height=80)
    assert text.images[0].size == (64, 80) and pixels(text.images[0]).std() > 1
    assert f"Model: {name}," in text.infotexts[0]
    image = run(services, checkpoint=name, mode="img2img", init_images=[text.images[0]], denoising_strength=0.5,
                width=64, height=64)
    assert image.images[0].size == (64, 64)
    assert "Denoising strength: 0.5," in image.infotexts[0]


def test_img2img_at_zero_denoising_runs_one_step_at_the_smallest_sigma(services):
    """A1111 runs t_enc + 1 = 1 step at denoising 0: from the init latents plus noise at the schedule's smallest
    sigma. With Euler that step lands on the model's x0 prediction there: nearer the VAE round trip than a 0.5
    denoise."""
    from webui.engine.images import to_pil, to_tensor
    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    result = run(services, mode="img2img", init_images=[source], denoising_strength=0.0, seed=10)
    _, model = services.models.get()
    with torch.no_grad():
        expected = to_pil(model.vae.decode(model.vae.encode(to_tensor([source])).latent_dist.mode()).sample)[0]
    half = run(services, mode="img2img", init_images=[source], denoising_strength=0.5, seed=10)
    moved = np.abs(pixels(result.images[0]) - pixels(expected)).mean()
    assert 0 < moved < np.abs(pixels(half.images[0]) - pixels(expected)).mean()
    assert "Denoising strength: 0," in result.infotexts[0]


# --- requests ---------------------------------------------------------------------------------------------------

def test_sizes_round_down_to_multiples_of_8(services):
    result = run(services, width=70, height=71)
    assert result.images[0].size == (64, 64) and "Size: 64x64," in result.infotexts[0]


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps must be between 1 and 150"), ("steps", 151, "steps must be between 1 and 150"),
    ("cfg_scale", 0.5, "cfg_scale must be between 1 and 30"), ("cfg_scale", 31, "cfg_scale must be between"),
    ("sampler_name", "nope", "Unknown sampler 'nope'"), ("width", "wide", "width must be a number"),
])
def test_invalid_requests_are_explained(field, value, message):
    with pytest.raises(RequestError, match=message):
        req(**{field: value}).validate()


def test_img2img_needs_an_image():
    with pytest.raises(RequestError, match="img2img needs an init image"):
        req(mode="img2img").validate()


def test_long_prompts_are_encoded_in_chunks(services):
    long_prompt = ", ".join(f"detail number {i}" for i in range(60))  # far beyond 75 tokens
    result = run(services, prompt=long_prompt)
    assert pixels(result.images[0]).std() > 1
    short = run(services, prompt="detail number 0")
    assert not np.array_equal(pixels(result.images[0]), pixels(short.images[0]))


def _split(tokens: list[int], comma: int) -> list[list[int]]:
    chunks, _, _ = make_chunks([("text", 1.0)], lambda text: tokens if text else [], comma)
    return [c.tokens for c in chunks]


def test_chunks_break_after_a_recent_comma():
    comma = 267
    tokens = list(range(1, 71)) + [comma] + list(range(100, 110))  # comma at position 70 of 81
    chunks = _split(tokens, comma)
    assert chunks[0][-1] == comma and len(chunks[0]) == 71 and chunks[1] == list(range(100, 110))
    far = list(range(1, 40)) + [comma] + list(range(100, 150))  # the comma is 35 tokens before the cut: no move
    assert [len(c) for c in _split(far, comma)] == [75, 15]
    no_comma = _split(list(range(1, 200)), comma)
    assert [len(c) for c in no_comma] == [75, 75, 49]
    assert _split([], comma) == [[]]


def test_clip_skip_changes_the_result_and_is_written(services):
    one = run(services, clip_skip=1)
    two = run(services, clip_skip=2)
    assert "Clip skip" not in one.infotexts[0] and "Clip skip: 2," in two.infotexts[0]
    assert not np.array_equal(pixels(one.images[0]), pixels(two.images[0]))


def test_cfg_scale_one_skips_the_negative_prompt(services):
    a = run(services, cfg_scale=1, negative_prompt="one thing")
    b = run(services, cfg_scale=1, negative_prompt="something else entirely")
    # at CFG 1 the negative prompt is never sampled: the same computation, same batch size and process
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))


# --- outputs ----------------------------------------------------------------------------------------------------

def test_saved_images_carry_their_infotext(services):
    result = run(services, save_images=True, batch_size=2, seed=321)
    folder = services.paths.outputs / "txt2img-images" / date.today().isoformat()
    names = sorted(p.name for p in folder.glob("*.png"))
    assert names[-2:] == [f"{int(names[-2][:5]):05d}-321.png", f"{int(names[-2][:5]) + 1:05d}-322.png"]
    with Image.open(result.saved_paths[0]) as saved:
        assert read_infotext(saved) == result.infotexts[0]
        assert np.array_equal(pixels(saved.convert("RGB")), pixels(result.images[0]))
    parsed = parse_infotext(result.infotexts[0])
    assert parsed["Prompt"] == "a lighthouse at dusk" and parsed["Negative prompt"] == "ugly"
    assert (parsed["Steps"], parsed["Sampler"], parsed["Seed"], parsed["Size-1"]) == ("4", "Euler a", "321", "64")
    info, _ = services.models.get()
    assert parsed["Model hash"] == info.sha256[:10] and parsed["Model"] == "tiny-sd1"


# --- interrupt and skip -----------------------------------------------------------------------------------------

def _control_that(action: str, at_batch: int, at_step: int) -> RunControl:
    def watch(progress):
        if progress.job_no == at_batch and progress.sampling_step == at_step:
            getattr(control, action)()
    control = RunControl(on_progress=watch)
    return control


def test_interrupt_keeps_the_batch_being_sampled_then_stops(services):
    """As A1111: the interrupted batch is decoded at its last denoised latents and kept like a finished one."""
    full = services.engine.run(req(n_iter=2, batch_size=2, steps=4))
    control = _control_that("interrupt", at_batch=1, at_step=2)
    result = services.engine.run(req(n_iter=3, batch_size=2, steps=4), control)
    assert result.interrupted and len(result.images) == 4 and result.seeds == [10, 11, 12, 13]
    assert "Interrupted" in result.warnings[-1]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(result.images[:2], full.images[:2]))
    stopped = pixels(result.images[2])
    assert stopped.std() > 1 and max_pixel_difference(result.images[2], full.images[2]) > PARITY_TOLERANCE
    assert "Seed: 12," in result.infotexts[2] and control.progress.textinfo  # the stopped batch has its infotext


def test_skip_keeps_the_current_batch_as_it_is_and_goes_on(services):
    full = services.engine.run(req(n_iter=3, steps=4))
    control = _control_that("skip", at_batch=0, at_step=2)
    result = services.engine.run(req(n_iter=3, steps=4), control)
    assert not result.interrupted and result.skipped_batches == 1 and result.seeds == [10, 11, 12]
    assert max_pixel_difference(result.images[0], full.images[0]) > PARITY_TOLERANCE  # ended early
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(result.images[1:], full.images[1:]))


def test_interrupt_before_the_first_step_keeps_nothing_of_that_batch(services):
    control = RunControl()
    control.interrupt()
    result = services.engine.run(req(n_iter=2), control)
    assert result.interrupted and result.images == []


# --- checkpoints ------------------------------------------------------------------------------------------------

def test_swap_and_swap_back(services):
    before = run(services, seed=3)
    services.models.select("tiny-sdxl")
    assert "Model: tiny-sdxl," in run(services, seed=3).infotexts[0]
    services.models.select("tiny-sd1.safetensors")
    after = run(services, seed=3)
    # the same weights, request and batch size in the same process: bit-identical
    assert np.array_equal(pixels(before.images[0]), pixels(after.images[0]))


def test_swap_back_after_eviction_reloads_the_same_model(services):
    services.options.update({"sd_checkpoints_limit": 1})
    try:
        before = run(services, seed=4)
        services.models.select("tiny-sd2-v")
        assert len(services.models.loaded_titles()) == 1
        services.models.select("tiny-sd1")
        after = run(services, seed=4)
        # reloaded from the same file; same request, batch size and process: bit-identical
        assert np.array_equal(pixels(before.images[0]), pixels(after.images[0]))
    finally:
        services.options.update({"sd_checkpoints_limit": 4})


def test_broken_checkpoint_leaves_the_previous_one_active(services):
    folder = services.paths.checkpoints
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}")
    services.models.refresh()
    with pytest.raises(ModelLoadError, match="broken.safetensors: corrupt or truncated"):
        services.models.select("broken")
    assert services.models.current_title().startswith("tiny-sd1.safetensors")
    assert pixels(run(services).images[0]).std() > 1
    (folder / "broken.safetensors").unlink()
    services.models.refresh()


def test_a_remembered_checkpoint_that_is_gone_falls_back_to_the_first(make_services):
    services = make_services("sd1")
    services.options.update({"sd_model_checkpoint": "deleted-long-ago.safetensors [0123456789]"})
    result = services.engine.run(req())
    assert "Model: tiny-sd1," in result.infotexts[0]


def test_no_checkpoint_at_all_is_explained(make_services):
    services = make_services()
    with pytest.raises(ModelLoadError, match="No checkpoint found. Put a .safetensors"):
        services.engine.run(req())


# --- A1111's sampler rules the engine enforces --------------------------------------------------------------------

def test_a_pass_a1111_cannot_run_is_refused_before_anything_is_sampled(services):
    from webui.core.errors import RequestError
    control = RunControl()
    with pytest.raises(RequestError, match="UniPC of order 3 needs at least 3 steps"):  # the hires pass: 2 steps
        services.engine.run(req(sampler_name="UniPC", steps=6, enable_hr=True, hr_second_pass_steps=2,
                                denoising_strength=0.5), control)
    assert control.progress.sampling_step == 0
    source = Image.new("RGB", (64, 64), (120, 90, 60))
    with pytest.raises(RequestError, match="DPM fast needs at least 2 img2img steps"):  # t_enc 0: one step
        run(services, mode="img2img", init_images=[source], sampler_name="DPM fast", denoising_strength=0.1)


def test_ddim_cfgpp_uses_the_negative_prompt_even_at_cfg_1(services):
    """CFG++ steps along the unconditional prediction, so A1111 runs it whatever the CFG scale."""
    with_negative = run(services, sampler_name="DDIM CFG++", cfg_scale=1, negative_prompt="ugly")
    other_negative = run(services, sampler_name="DDIM CFG++", cfg_scale=1, negative_prompt="a red sky at noon")
    assert max_pixel_difference(with_negative.images[0], other_negative.images[0]) > PARITY_TOLERANCE


def test_a_skip_pressed_after_sampling_does_not_cost_the_next_batch(services):
    """As A1111, a Skip that arrives after a batch finished sampling (while it decodes) is spent by the next batch's
    start, not by cutting that batch short."""
    import copy
    full = services.engine.run(req(n_iter=2, steps=4))
    engine = copy.copy(services.engine)
    control = RunControl()

    def decode(*args, **kwargs):
        control.skip()
        return services.engine._decode(*args, **kwargs)
    engine._decode = decode
    result = engine.run(req(n_iter=2, steps=4), control)
    assert len(result.images) == 2
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(result.images, full.images))


def test_sampler_settings_reach_the_infotext_and_the_info(services):
    result = run(services, sampler_name="Euler a", eta=0.5)
    assert "Eta: 0.5," in result.infotexts[0] and result.extra_params["Eta"] == 0.5
    churned = run(services, sampler_name="Euler", s_churn=1.0)
    assert "Sigma churn: 1.0," in churned.infotexts[0]
    assert max_pixel_difference(churned.images[0], run(services, sampler_name="Euler").images[0]) > 0


def test_img2img_extra_noise_adds_noise_and_says_so(make_services):
    """A1111's img2img_extra_noise: the first draw again x the multiplier on top of the start (written as Extra
    noise); 0 (the default) leaves the picture as it was."""
    services = make_services("sd1")
    source = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    plain = run(services, mode="img2img", init_images=[source], denoising_strength=0.5)
    services.options.update({"img2img_extra_noise": 0.3})
    noisy = run(services, mode="img2img", init_images=[source], denoising_strength=0.5)
    assert "Extra noise: 0.3," in noisy.infotexts[0] and "Extra noise" not in plain.infotexts[0]
    assert max_pixel_difference(noisy.images[0], plain.images[0]) > PARITY_TOLERANCE
