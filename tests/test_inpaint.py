"""Inpainting and outpainting: the mask's geometry in pixels, and what the engine makes of it with ordinary and
9-channel inpainting checkpoints (pixels outside the mask stay the input's, inside they are regenerated)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import install_model, pixels
from webui.engine.inpaint import (EmptyMaskError, blur_mask, crop_region, extend_canvas, fill_masked, match_aspect,
                                  normalise_mask, plan_mask)
from webui.core.errors import RequestError
from webui.core.request import GenerationRequest, Outpaint


def noise_image(width=64, height=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def box_mask(size, box, mode="L") -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask.convert(mode)


def far_from(size, box, margin) -> np.ndarray:
    """True for pixels more than `margin` away from the (inclusive) box."""
    keep = np.ones((size[1], size[0]), bool)
    left, top, right, bottom = box
    keep[max(top - margin, 0):bottom + margin + 1, max(left - margin, 0):right + margin + 1] = False
    return keep


def changed(a, b) -> np.ndarray:
    return np.abs(pixels(a) - pixels(b)).max(axis=2)


# --- the mask ----------------------------------------------------------------------------------------------------
def test_masks_of_every_mode_mean_white_is_inpaint():
    box = (10, 12, 30, 40)
    reference = np.asarray(box_mask((64, 64), box))
    for mode in ("L", "RGB", "1"):
        assert np.array_equal(np.asarray(normalise_mask(box_mask((64, 64), box, mode), (64, 64))), reference)
    painted = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # strokes on a transparent layer: the alpha is the mask
    ImageDraw.Draw(painted).rectangle(box, fill=(200, 30, 30, 255))
    assert np.array_equal(np.asarray(normalise_mask(painted, (64, 64))), reference)
    opaque = box_mask((64, 64), box, "RGB").convert("RGBA")  # an opaque RGBA upload: its brightness counts
    assert np.array_equal(np.asarray(normalise_mask(opaque, (64, 64))), reference)
    grey = Image.new("L", (8, 8), 100)
    assert normalise_mask(grey, (8, 8)).getextrema() == (0, 0)  # half-dark is not masked (threshold 128)


def test_a_mask_of_another_size_is_scaled_to_the_image():
    small = box_mask((32, 32), (8, 8, 15, 15))
    scaled = np.asarray(normalise_mask(small, (64, 64)))
    assert scaled.shape == (64, 64)
    assert scaled[20:28, 20:28].min() == 255 and scaled[:12].max() == 0 and scaled[36:].max() == 0


def test_blur_spreads_about_two_and_a_half_sigma_each_way():
    mask = box_mask((64, 64), (32, 0, 63, 63))
    blurred = np.asarray(blur_mask(mask, 4, 0), dtype=int)
    row = blurred[10]
    assert row[:32 - 11].max() == 0 and row[32 + 11:].min() == 255 and 0 < row[30] < row[33] < 255
    assert np.array_equal(np.asarray(blur_mask(mask, 0, 0)), np.asarray(mask))
    assert np.array_equal(np.asarray(blur_mask(mask, 0, 4)), np.asarray(mask))  # vertical blur of vertical edges


def test_crop_region_pads_the_bounding_box_and_stays_inside():
    mask = box_mask((100, 80), (10, 20, 29, 39))
    assert crop_region(mask, 0) == (10, 20, 30, 40)
    assert crop_region(mask, 16) == (0, 4, 46, 56)
    assert crop_region(Image.new("L", (10, 10)), 4) is None
    assert match_aspect((10, 20, 30, 40), 64, 32, 100, 80) == (0, 20, 40, 40)  # widened to 2:1, pushed inside
    assert match_aspect((80, 0, 100, 80), 64, 64, 100, 80) == (20, 0, 100, 80)  # at the right edge
    left, top, right, bottom = match_aspect((0, 0, 100, 10), 32, 64, 100, 80)  # taller than the image allows
    assert (top, bottom) == (0, 80) and right - left == 100


def test_fill_spreads_the_surrounding_colours_into_the_hole():
    image = Image.new("RGB", (64, 64), (220, 20, 20))
    ImageDraw.Draw(image).rectangle((32, 0, 63, 63), fill=(20, 20, 220))
    mask = box_mask((64, 64), (24, 16, 39, 47))
    filled = pixels(fill_masked(image, mask))
    keep = np.asarray(mask) == 0
    assert np.array_equal(filled[keep], pixels(image)[keep])  # unmasked pixels untouched
    assert filled[32, 25, 0] > filled[32, 25, 2] and filled[32, 38, 2] > filled[32, 38, 0]  # red left, blue right
    assert filled[16:48, 24:40].min() >= 15  # no black hole left


def test_only_masked_needs_something_masked():
    with pytest.raises(EmptyMaskError):
        plan_mask(Image.new("L", (64, 64)), (64, 64), 64, 64, 0, False, 4, 4, True, 32)
    with pytest.raises(EmptyMaskError, match="Inpaint not masked"):
        plan_mask(Image.new("L", (64, 64), 255), (64, 64), 64, 64, 0, True, 4, 4, False, 32)


def test_extend_canvas_grows_fills_and_masks_the_new_area_with_overlap():
    image = noise_image(32, 32)
    canvas, mask = extend_canvas(image, None, 16, 0, 8, 0, "edge", 4, seed=1)
    assert canvas.size == (48, 40) and mask.size == (48, 40)
    assert np.array_equal(pixels(canvas)[8:, 16:], pixels(image))
    m = np.asarray(mask)
    assert m[:, :20].min() == 255 and m[:12].min() == 255  # new area plus 4 px of overlap
    assert m[12:, 20:].max() == 0
    noisy, _ = extend_canvas(image, None, 16, 0, 8, 0, "noise", 4, seed=1)
    again, _ = extend_canvas(image, None, 16, 0, 8, 0, "noise", 4, seed=1)
    assert np.array_equal(pixels(noisy), pixels(again))  # seeded
    def roughness(array):
        return np.abs(np.diff(array, axis=1)).mean()
    assert roughness(pixels(noisy)[:8]) > 5 * roughness(pixels(canvas)[:8])  # noise vs smooth stretched edges
    user = box_mask((32, 32), (20, 20, 25, 25))
    _, joined = extend_canvas(image, user, 16, 0, 0, 0, "edge", 0, seed=1)
    assert np.asarray(joined)[10, 16 + 20] == 0 and np.asarray(joined)[20, 16 + 20] == 255  # shifted by 16


# --- the engine ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_models):
    """One service per kind: ordinary SD1, 9-channel SD1 inpainting, SDXL inpainting."""
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    made = {}
    for kind in ("sd1", "sd1-inpaint", "sdxl-inpaint"):
        data = tmp_path_factory.mktemp(kind)
        install_model(data, tiny_models[kind])
        made[kind] = build_services(parse_flags(["--data-dir", str(data)]))
    yield made
    for services in made.values():
        services.stop()


def inpaint(services, **fields):
    base = dict(mode="img2img", prompt="a cat", sampler_name="Euler", steps=4, width=64, height=64, seed=3,
                save_images=False, denoising_strength=0.9, do_not_save_grid=True)  # batch grids: test_grids.py
    base.update(fields)
    return services.engine.run(GenerationRequest(**base))


BOX = (20, 24, 39, 43)
BLUR_REACH = 11  # 2.5 x mask blur 4, rounded up


@pytest.mark.parametrize("kind", ["sd1", "sd1-inpaint"])
@pytest.mark.parametrize("only_masked", [False, True])
def test_pixels_outside_the_blurred_mask_are_the_input(engines, kind, only_masked):
    image = noise_image()
    result = inpaint(engines[kind], init_images=[image], mask=box_mask((64, 64), BOX), inpaint_full_res=only_masked,
                     inpaint_full_res_padding=8)
    out = result.images[0]
    assert out.size == (64, 64)
    diff = changed(out, image)
    assert diff[far_from((64, 64), BOX, BLUR_REACH)].max() == 0
    assert diff[26:42, 22:38].mean() > 20  # the masked part was regenerated


@pytest.mark.parametrize("kind", ["sd1", "sdxl-inpaint"])
def test_inpaint_not_masked_is_the_exact_inverse(engines, kind):
    image = noise_image(seed=4)
    box = (6, 8, 55, 53)
    result = inpaint(engines[kind], init_images=[image], mask=box_mask((64, 64), box), inpainting_mask_invert=1)
    diff = changed(result.images[0], image)
    inner = (box[0] + BLUR_REACH, box[1] + BLUR_REACH, box[2] - BLUR_REACH, box[3] - BLUR_REACH)
    assert diff[inner[1]:inner[3] + 1, inner[0]:inner[2] + 1].max() == 0
    assert diff[:, :3].mean() > 20 and diff[:, -4:].mean() > 20  # the unmasked border was regenerated
    assert "Mask mode: Inpaint not masked" in result.infotexts[0]


def test_only_masked_works_at_the_generation_size_and_pastes_back_at_the_input_size(engines):
    """A 160x96 input, a mask at its right edge, generation at 64x64: the crop is square, inside the image, and
    the result keeps the input's size with every pixel outside the crop untouched."""
    image = noise_image(160, 96, seed=5)
    box = (140, 30, 159, 50)
    result = inpaint(engines["sd1"], init_images=[image], mask=box_mask((160, 96), box), inpaint_full_res=True,
                     inpaint_full_res_padding=4, mask_blur_x=2, mask_blur_y=2)
    out = result.images[0]
    assert out.size == (160, 96)
    diff = changed(out, image)
    assert diff[far_from((160, 96), box, 6)].max() == 0
    assert diff[32:49, 142:158].mean() > 20
    text = result.infotexts[0]
    assert "Size: 64x64" in text and "Inpaint area: Only masked" in text and "Masked area padding: 4" in text
    assert "Mask blur: 2" in text


def test_each_masked_content_mode_starts_from_something_else(engines):
    image = noise_image(seed=6)
    mask = box_mask((64, 64), BOX)
    outputs, texts = [], []
    for fill in range(4):
        result = inpaint(engines["sd1"], init_images=[image], mask=mask, inpainting_fill=fill, denoising_strength=0.5)
        outputs.append(pixels(result.images[0]))
        texts.append(result.infotexts[0])
        assert changed(result.images[0], image)[far_from((64, 64), BOX, BLUR_REACH)].max() == 0
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(outputs[i] - outputs[j]).max() > 5, (i, j)
    assert "Masked content: fill" in texts[0] and "Masked content" not in texts[1]
    assert "Masked content: latent noise" in texts[2] and "Masked content: latent nothing" in texts[3]
    assert all("Mask blur: 4" in t and "Denoising strength: 0.5" in t for t in texts)


def test_inpainting_checkpoint_sees_the_mask_and_the_masked_image(engines):
    """The 9-channel UNet's extra input changes with the mask (so the model knows what to fill), and plain
    img2img with an inpainting checkpoint works too (a full mask, as A1111)."""
    services = engines["sd1-inpaint"]
    image = noise_image(seed=8)
    small = inpaint(services, init_images=[image], mask=box_mask((64, 64), (24, 24, 39, 39)), mask_blur_x=0,
                    mask_blur_y=0)
    large = inpaint(services, init_images=[image], mask=box_mask((64, 64), (8, 8, 55, 55)), mask_blur_x=0,
                    mask_blur_y=0)
    assert np.abs(pixels(small.images[0])[28:36, 28:36] - pixels(large.images[0])[28:36, 28:36]).max() > 10
    plain = inpaint(services, init_images=[image])
    assert plain.images[0].size == (64, 64) and "Conditional mask weight: 1" in plain.infotexts[0]
    assert "Mask blur" not in plain.infotexts[0]


def test_outpainting_grows_the_image_and_keeps_the_original(engines):
    image = noise_image(seed=9)
    for kind in ("sd1", "sd1-inpaint"):
        result = inpaint(engines[kind], init_images=[image], denoising_strength=1.0, inpainting_fill=1,
                         outpaint=Outpaint(left=16, right=0, up=8, down=24, fill="edge", overlap=8))
        out = result.images[0]
        assert out.size == (80, 96)
        region = pixels(out)[8:8 + 64, 16:16 + 64]
        untouched = np.s_[8 + BLUR_REACH:64 - 8 - BLUR_REACH, 8 + BLUR_REACH:]  # clear of the overlap and its blur
        assert np.array_equal(region[untouched], pixels(image)[untouched])
        text = result.infotexts[0]
        assert "Outpaint: left 16 right 0 up 8 down 24" in text and "Outpaint fill: edge" in text
        assert "Size: 64x64" in text
    noisy = inpaint(engines["sd1"], init_images=[image], outpaint=Outpaint(right=16, fill="noise"))
    assert noisy.images[0].size == (80, 64)


def test_outpainting_fits_the_image_first_and_keeps_a_drawn_mask(engines):
    image = noise_image(128, 128, seed=10)  # fitted to 64x64 first (just resize)
    mask = box_mask((128, 128), (0, 0, 31, 31))  # top-left quarter of the original, in its own pixels
    result = inpaint(engines["sd1"], init_images=[image], mask=mask, outpaint=Outpaint(right=16), mask_blur_x=0,
                     mask_blur_y=0)
    out = result.images[0]
    assert out.size == (80, 64)
    fitted = pixels(image.resize((64, 64), Image.Resampling.LANCZOS))
    assert np.array_equal(pixels(out)[20:, 20:48], fitted[20:, 20:48])  # neither masked nor near the new area
    assert np.abs(pixels(out)[:14, :14] - fitted[:14, :14]).mean() > 20  # the drawn mask was regenerated


def test_an_empty_mask_is_a_clear_error_not_a_full_regeneration(engines):
    with pytest.raises(RequestError, match="mask is empty"):
        inpaint(engines["sd1"], init_images=[noise_image()], mask=Image.new("L", (64, 64)))
    job = engines["sd1"].generate(GenerationRequest(mode="img2img", init_images=[noise_image()], steps=2, width=64,
                                                    height=64, mask=Image.new("RGB", (64, 64)), save_images=False))
    job.wait()
    assert job.state == "failed" and "mask is empty" in job.error


def test_batches_of_several_init_images_each_get_their_own_paste_back(engines):
    first, second = noise_image(seed=11), noise_image(seed=12)
    result = inpaint(engines["sd1"], init_images=[first, second], mask=box_mask((64, 64), BOX), batch_size=2)
    for out, source in zip(result.images, (first, second)):
        assert changed(out, source)[far_from((64, 64), BOX, BLUR_REACH)].max() == 0


def test_noise_multiplier_changes_the_start_and_is_written(engines):
    image = noise_image(seed=13)
    plain = inpaint(engines["sd1"], init_images=[image])
    quieter = inpaint(engines["sd1"], init_images=[image], initial_noise_multiplier=0.5)
    assert np.abs(pixels(plain.images[0]) - pixels(quieter.images[0])).max() > 10
    assert "Noise multiplier: 0.5" in quieter.infotexts[0] and "Noise multiplier" not in plain.infotexts[0]


def test_transparent_init_images_sit_on_the_background_colour(engines):
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    result = inpaint(engines["sd1"], init_images=[image], mask=box_mask((64, 64), BOX))
    far = pixels(result.images[0])[far_from((64, 64), BOX, BLUR_REACH)]
    assert far.min() == 255  # white (the default img2img background colour), not black
