"""ControlNet units in generation: control-mode math per residual, parity with diffusers' multi-ControlNet pipeline,
start/end, batches, img2img and inpainting, SDXL, infotext, and bad input never crashing a run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionControlNetPipeline
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from PIL import Image

from tests.conftest import install_model, pixels
from webui.control.runner import ControlPlan, PreparedUnit, prepare_control, residual_scales
from webui.control.units import ControlUnit, parse_unit_infotext
from webui.core.errors import RequestError
from webui.core.request import GenerationRequest
from webui.models.tiny import write_controlnet


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_models):
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    data = tmp_path_factory.mktemp("cn-engine")
    for kind in ("sd1", "sd1-inpaint", "sdxl"):
        install_model(data, tiny_models[kind])
    folder = data / "models" / "ControlNet"
    write_controlnet(folder / "control_tiny_canny.safetensors", "sd1", seed=1)
    write_controlnet(folder / "control_tiny_depth.safetensors", "sd1", seed=2)
    write_controlnet(folder / "controlnet_xl_tiny_canny.safetensors", "sdxl", seed=3)
    built = build_services(parse_flags(["--data-dir", str(data)]))
    built.controlnets.refresh()
    yield built
    built.stop()


def _picture(seed: int, size=(64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _edges(size=64) -> Image.Image:
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[16:48, 16:48] = 255
    canvas[24:40, 24:40] = 40
    return Image.fromarray(canvas)


def _run(services, checkpoint="tiny-sd1.safetensors", units=(), **fields):
    base = dict(prompt="a fox", negative_prompt="blurry", sampler_name="Euler", steps=4, width=64, height=64, seed=5,
                save_images=False, checkpoint=checkpoint, controlnet_units=list(units),
                do_not_save_grid=True)  # the batch grid: tests/test_grids.py
    base.update(fields)
    return services.engine.run(GenerationRequest(**base))


def _unit(model="control_tiny_canny", module="canny", image=None, **fields) -> ControlUnit:
    return ControlUnit(enabled=True, module=module, model=model, image=image or _edges(), **fields)


# --- control-mode math ---------------------------------------------------------------------------------------------

def _net(services, name):
    return services.engine.controlnet_cache.get(services.controlnets.resolve(name))


def _inputs(batch=1, copies=2):
    torch.manual_seed(0)
    return torch.randn(batch * copies, 4, 8, 8), torch.randn(batch * copies, 3, 64), torch.rand(1, 3, 64, 64)


@pytest.mark.parametrize("mode", ["Balanced", "My prompt is more important", "ControlNet is more important"])
def test_residual_per_block_follows_the_control_mode(services, mode):
    net = _net(services, "control_tiny_canny")
    sample, embeds, cond = _inputs()
    weight = 0.7
    unit = _unit(weight=weight, control_mode=mode).validate(0)
    count = len(net.model.controlnet_down_blocks) + 1
    plan = ControlPlan([PreparedUnit(0, unit, net, [cond], residual_scales(weight, count, mode),
                                     mode == "ControlNet is more important")])
    got = plan.residuals(0.0, sample, torch.tensor(500), embeds, None, [0], batch=1, do_cfg=True)
    with torch.no_grad():
        downs, mid = net.model(sample, torch.tensor(500), embeds, cond.repeat(2, 1, 1, 1), return_dict=False)
    raw = [*downs, mid]
    ours = [*got["down_block_additional_residuals"], got["mid_block_additional_residual"]]
    assert len(ours) == len(raw) == count == 5  # the tiny net: 4 skips + middle (SD1.5's: 12 + middle)
    for i, (residual, reference) in enumerate(zip(ours, raw)):
        # A1111: 13 soft weights weight x 0.825^(12-i); a net with fewer residuals takes the first ones
        expected_scale = weight if mode == "Balanced" else weight * 0.825 ** (12 - i)
        if mode == "ControlNet is more important":
            assert torch.count_nonzero(residual[:1]) == 0  # the unconditional half gets nothing
            # the conditional half alone through the net: same numbers (the net sees only those rows)
            with torch.no_grad():
                alone = net.model(sample[1:], torch.tensor(500), embeds[1:], cond, return_dict=False)
            assert torch.allclose(residual[1:], [*alone[0], alone[1]][i] * expected_scale, atol=1e-5)
        else:
            assert torch.allclose(residual, reference * expected_scale, atol=1e-5)


def test_soft_weights_on_the_full_size_block_counts():
    scales = residual_scales(0.6, 13, "My prompt is more important")  # SD1.x / SD2.x: 12 skips + middle
    assert scales[12] == pytest.approx(0.6) and scales[0] == pytest.approx(0.6 * 0.825 ** 12)
    assert scales == residual_scales(0.6, 13, "ControlNet is more important")
    assert residual_scales(0.6, 13, "Balanced") == [0.6] * 13
    sdxl = residual_scales(0.6, 10, "My prompt is more important")  # SDXL: 9 skips + middle, A1111's first 10
    assert sdxl == pytest.approx(scales[:10]) and sdxl[9] == pytest.approx(0.6 * 0.825 ** 3)


def test_start_and_end_switch_the_unit_off_at_the_right_steps(services, monkeypatch):
    net = _net(services, "control_tiny_canny").model
    fractions = []
    real_forward = net.forward

    def counting(*args, **kwargs):
        fractions.append(len(fractions))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(net, "forward", counting)
    steps = []
    import webui.control.runner as runner
    real_residuals = runner.ControlPlan.residuals

    def spy(self, fraction, *args, **kwargs):
        out = real_residuals(self, fraction, *args, **kwargs)
        steps.append((round(fraction, 3), bool(out)))
        return out

    monkeypatch.setattr(runner.ControlPlan, "residuals", spy)
    _run(services, units=[_unit(guidance_start=0.2, guidance_end=0.5)], steps=10)
    assert [active for _, active in steps] == [False, False, True, True, True, True, False, False, False, False]
    assert len(fractions) == 4


def test_balanced_two_units_equal_diffusers_multi_controlnet(services):
    maps = [_edges(), _picture(3)]
    units = [ControlUnit(enabled=True, module="none", model="control_tiny_canny", image=maps[0], weight=0.6,
                         resize_mode="Just Resize"),
             ControlUnit(enabled=True, module="none", model="control_tiny_depth", image=maps[1], weight=0.4,
                         resize_mode="Just Resize")]
    ours = _run(services, units=units, steps=6, cfg_scale=6.0, batch_size=2, seed=42)
    _, model = services.models.get("tiny-sd1.safetensors")
    nets = MultiControlNetModel([_net(services, "control_tiny_canny").model, _net(services, "control_tiny_depth").model])
    scheduler = EulerDiscreteScheduler.from_config(model.scheduler_config, timestep_spacing="linspace")
    pipe = StableDiffusionControlNetPipeline(vae=model.vae, text_encoder=model.text_encoders[0],
                                             tokenizer=model.tokenizers[0], unet=model.unet, controlnet=nets,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe("a fox", negative_prompt="blurry", image=maps, num_inference_steps=6, guidance_scale=6.0,
                  width=64, height=64, num_images_per_prompt=2, controlnet_conditioning_scale=[0.6, 0.4],
                  generator=[torch.Generator().manual_seed(42 + i) for i in range(2)]).images
    for a, b in zip(ours.images, theirs):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1
    plain = _run(services, steps=6, cfg_scale=6.0, batch_size=2, seed=42)
    assert np.abs(pixels(plain.images[0]) - pixels(ours.images[0])).mean() > 1  # the units really acted


# --- generation ----------------------------------------------------------------------------------------------------

def test_disabled_and_zero_weight_units_cost_nothing(services):
    plain = _run(services)
    disabled = _run(services, units=[ControlUnit(enabled=False, module="canny", model="control_tiny_canny"),
                                     ControlUnit(enabled=False, weight=9, control_mode="Loud")])  # never read
    zero = _run(services, units=[_unit(weight=0.0)])
    # off and zero-weight units are never run: the same computation as `plain`, bit-identical
    assert np.array_equal(pixels(plain.images[0]), pixels(disabled.images[0]))
    assert np.array_equal(pixels(plain.images[0]), pixels(zero.images[0]))
    assert "ControlNet" not in disabled.infotexts[0]


def test_infotext_entry_and_detected_map(services):
    result = _run(services, units=[_unit(), ControlUnit(), _unit(model="control_tiny_depth", weight=0.5,
                                                                 control_mode=1, guidance_end=0.8)])
    info = result.infotexts[0]
    canny = services.controlnets.resolve("control_tiny_canny").title
    assert (f'ControlNet 0: "Module: canny, Model: {canny}, Weight: 1.0, Resize Mode: Crop and Resize, '
            'Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, '
            'Pixel Perfect: False, Control Mode: Balanced"') in info
    assert "ControlNet 1:" not in info and "ControlNet 2: " in info
    assert info.index("ControlNet 0") > info.index("Model:")
    entry = info.split('ControlNet 2: "')[1].split('"')[0]
    restored = parse_unit_infotext(entry)
    assert restored["weight"] == 0.5 and restored["control_mode"] == "My prompt is more important"
    assert restored["guidance_end"] == 0.8 and restored["model"].startswith("control_tiny_depth [")
    assert len(result.control_maps) == 2
    canny_map = np.asarray(result.control_maps[0])
    assert set(np.unique(canny_map)) <= {0, 255} and canny_map.max() == 255


def test_batch_images_equal_single_runs(services):
    unit = _unit()
    batch = _run(services, units=[unit], batch_size=2, seed=100)
    second = _run(services, units=[_unit()], seed=101)
    assert np.abs(pixels(batch.images[1]) - pixels(second.images[0])).max() <= 1


def test_pixel_perfect_sets_the_processor_resolution(services):
    result = _run(services, units=[_unit(image=_edges(256), pixel_perfect=True)], width=64, height=64)
    assert "Processor Res: 64," in result.infotexts[0] and "Pixel Perfect: True" in result.infotexts[0]
    assert result.control_maps[0].size == (64, 64)


@pytest.mark.parametrize("checkpoint", ["tiny-sd1.safetensors", "tiny-sd1-inpaint.safetensors"])
def test_img2img_and_inpainting_use_the_init_image(services, checkpoint):
    init = _edges()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    common = dict(mode="img2img", init_images=[init], mask=mask, denoising_strength=0.8, checkpoint=checkpoint)
    plain = _run(services, **common)
    controlled = _run(services, units=[ControlUnit(enabled=True, module="canny", model="control_tiny_canny")],
                      **common)
    assert "ControlNet 0:" in controlled.infotexts[0] and controlled.control_maps
    diff = np.abs(pixels(plain.images[0]) - pixels(controlled.images[0])).mean(axis=2)
    assert diff[10:38, 10:38].mean() > 1  # the masked part changed under the unit
    assert diff[50:, 50:].max() == 0  # outside the mask the original is pasted back as before


def test_sdxl_checkpoint_with_sdxl_controlnet(services):
    plain = _run(services, checkpoint="tiny-sdxl.safetensors")
    controlled = _run(services, checkpoint="tiny-sdxl.safetensors", units=[_unit(model="controlnet_xl_tiny_canny")])
    assert "ControlNet 0:" in controlled.infotexts[0]
    assert np.abs(pixels(plain.images[0]) - pixels(controlled.images[0])).mean() > 1


# --- bad input -----------------------------------------------------------------------------------------------------

def test_wrong_architecture_skips_the_unit_with_a_warning(services):
    plain = _run(services)
    result = _run(services, units=[_unit(model="controlnet_xl_tiny_canny")])
    assert any("ControlNet unit 0 skipped" in w and "is an SDXL ControlNet and the checkpoint is SD1.x" in w
               for w in result.warnings), result.warnings
    assert np.array_equal(pixels(plain.images[0]), pixels(result.images[0]))  # skipped: the same computation
    assert "ControlNet 0" not in result.infotexts[0]


def test_unit_without_model_is_skipped_with_a_warning(services):
    result = _run(services, units=[_unit(model="None")])
    assert any("ControlNet unit 0 is enabled but has no model" in w for w in result.warnings)


@pytest.mark.parametrize("unit,message", [
    (ControlUnit(enabled=True, module="canny", model="control_tiny_canny"), "unit 0 is enabled but has no image"),
    (ControlUnit(enabled=True, module="no_such_module", model="control_tiny_canny", image=Image.new("RGB", (8, 8))),
     "unknown ControlNet preprocessor 'no_such_module'"),
    (ControlUnit(enabled=True, module="canny", model="missing_model", image=Image.new("RGB", (8, 8))),
     "Unknown ControlNet model 'missing_model'"),
    (ControlUnit(enabled=True, guidance_start=0.8, guidance_end=0.2, image=Image.new("RGB", (8, 8))),
     "guidance_start .* is after guidance_end"),
    (ControlUnit(enabled=True, control_mode="Loud", image=Image.new("RGB", (8, 8))), "control_mode must be one of"),
    (ControlUnit(enabled=True, weight=5, image=Image.new("RGB", (8, 8))), "weight must be between 0 and 2"),
])
def test_bad_units_are_request_errors_naming_the_unit(services, unit, message):
    with pytest.raises(RequestError, match=message) as caught:
        _run(services, units=[unit])
    assert "ControlNet unit 0" in str(caught.value)


def test_legacy_integer_modes_are_accepted():
    unit = ControlUnit(enabled=True, control_mode=2, resize_mode=0).validate(0)
    assert unit.control_mode == "ControlNet is more important" and unit.resize_mode == "Just Resize"


def test_prepare_control_without_enabled_units_is_none(services):
    request = GenerationRequest(controlnet_units=[ControlUnit()]).validate()
    assert prepare_control(request, services.controlnets, services.engine.controlnet_cache, services.preprocessors,
                           None, 64, 64) is None


def test_inpaint_unit_uses_the_request_mask(services):
    from webui.engine.img2img import prepare_img2img
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    unit = ControlUnit(enabled=True, module="inpaint_only", model="control_tiny_canny")
    request = GenerationRequest(mode="img2img", init_images=[_picture(1)], mask=mask, width=64, height=64,
                                mask_blur_x=0, mask_blur_y=0, controlnet_units=[unit]).validate()
    setup = prepare_img2img(request, 5, "#ffffff")
    _, model = services.models.get("tiny-sd1.safetensors")
    plan = prepare_control(request, services.controlnets, services.engine.controlnet_cache, services.preprocessors,
                           model.unet, 64, 64, setup)
    cond = plan.units[0].conds[0][0]
    assert torch.all(cond[:, 8:40, 8:40] == -1)  # to be filled: -1, as inpaint ControlNets read it
    expected = torch.from_numpy(np.asarray(setup.sources[0], np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(cond[:, 44:, 44:], expected[:, 44:, 44:], atol=1e-6)
    result = _run(services, mode="img2img", init_images=[_picture(1)], mask=mask, units=[unit],
                  checkpoint="tiny-sd1-inpaint.safetensors")
    assert 'Module: inpaint_only' in result.infotexts[0]
    with pytest.raises(Exception, match="ControlNet unit 0: .*needs a mask"):
        _run(services, units=[ControlUnit(enabled=True, module="inpaint_only", model="control_tiny_canny",
                                          image=_picture(1))])


def test_resize_and_fill_pads_with_the_border_colour_not_smeared_lines():
    from webui.control.runner import fit_map
    detected = np.zeros((64, 32, 3), np.float32)
    detected[30, :] = 1.0  # a line that touches both side borders
    fitted = fit_map(detected, 64, 32, "Resize and Fill")  # fits as 16 wide x 32 tall, bands left and right
    assert fitted.shape == (32, 64, 3)
    assert fitted[:, :24].max() == 0 and fitted[:, 40:].max() == 0  # the bands stay the border's colour (black)
    assert fitted[:, 24:40].max() >= 0.4  # the line is there inside (area-averaged at half size)
    cropped = fit_map(detected, 64, 32, "Crop and Resize")
    assert cropped.shape == (32, 64, 3) and cropped[:, :, 0].max() >= 0.4  # covers: the middle rows, line included
    stretched = fit_map(detected, 64, 32, "Just Resize")
    assert stretched.shape == (32, 64, 3) and stretched[15, :].min() > 0.3  # the line spans the whole width


def test_only_masked_crops_the_units_own_image_to_the_generated_region(services):
    from webui.engine.img2img import prepare_img2img
    init = _picture(2, (128, 128))
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (80, 80, 112, 112))
    own = Image.new("RGB", (256, 256), (0, 0, 0))
    own.paste((255, 255, 255), (160, 160, 224, 224))  # white exactly where the mask is, at twice the size
    unit = ControlUnit(enabled=True, module="none", model="control_tiny_canny", image=own, resize_mode="Just Resize")
    request = GenerationRequest(mode="img2img", init_images=[init], mask=mask, width=64, height=64,
                                inpaint_full_res=True, inpaint_full_res_padding=0, mask_blur_x=0, mask_blur_y=0,
                                controlnet_units=[unit]).validate()
    setup = prepare_img2img(request, 5, "#ffffff")
    _, model = services.models.get("tiny-sd1.safetensors")
    plan = prepare_control(request, services.controlnets, services.engine.controlnet_cache, services.preprocessors,
                           model.unet, 64, 64, setup)
    cond = plan.units[0].conds[0][0]
    assert cond.shape == (3, 64, 64)
    assert cond.mean() > 0.9  # the crop is the white square: the map covers what is generated, not the whole image
