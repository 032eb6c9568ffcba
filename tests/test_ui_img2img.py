"""The img2img tab's canvas: what each sub-tab's editor or uploads become (init image and mask), the request its
Generate builds (inpaint options, outpainting, batch folders), pasting infotext back, the galleries' send buttons,
and the Blocks' sub-tabs and elem_ids. Editor values are shaped as Gradio 6's ImageEditor hands them over with
`type="pil"` (a dict of background, layers, composite; strokes on transparent RGBA layers)."""
from __future__ import annotations

import numpy as np
import gradio as gr
import pytest
from PIL import Image, ImageDraw

from tests.conftest import pixels
from webui.core.errors import RequestError
from webui.core.request import FolderBatch, Outpaint
from webui.outputs.save import read_infotext
from webui.ui import canvas, generation, img2img_inputs, pnginfo
from webui.ui.blocks import build_ui

# prompt, negative, sampler, schedule, steps, width, height, batch count, batch size, CFG, seed
SMALL = ("a red fox", "blurry", "Euler", "Automatic", 3, 64, 64, 1, 1, 7.0, 4321)
STROKE_COLOUR = (220, 30, 30)


def picture(size=(64, 64), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def layer(size, boxes, colour=STROKE_COLOUR, alpha=255) -> Image.Image:
    """A transparent RGBA layer with filled rectangles, as the canvas exports a layer with strokes."""
    drawn = Image.new("RGBA", size, (0, 0, 0, 0))
    for box in boxes:
        ImageDraw.Draw(drawn).rectangle(box, fill=(*colour, alpha))
    return drawn


def editor(background: Image.Image | None, layers=(), composite=True) -> dict:
    """An ImageEditor value: the RGBA background, the layers, and the composite the page computes."""
    value = {"background": None if background is None else background.convert("RGBA"), "layers": list(layers),
             "composite": None}
    if background is not None and composite:
        flat = background.convert("RGBA")
        for drawn in layers:
            flat.alpha_composite(drawn)
        value["composite"] = flat
    return value


def boxes_mask(size, boxes) -> np.ndarray:
    """The reference union: 255 inside any (inclusive) box."""
    mask = np.zeros((size[1], size[0]), np.uint8)
    for left, top, right, bottom in boxes:
        mask[top:bottom + 1, left:right + 1] = 255
    return mask


# --- canvas: what each sub-tab gives ------------------------------------------------------------------------------
def test_img2img_takes_the_upload_and_no_mask():
    image = picture()
    init, mask = canvas.init_and_mask("img2img", image=image)
    assert mask is None and init.mode == "RGB" and np.array_equal(pixels(init), pixels(image))


def test_sketch_is_the_picture_with_its_strokes_and_no_mask():
    image = picture()
    value = editor(image, [layer(image.size, [(10, 10, 20, 20)])])
    init, mask = canvas.init_and_mask("sketch", sketch=value)
    assert mask is None and init.mode == "RGB" and init.size == image.size
    got = pixels(init)
    assert (got[10:21, 10:21] == STROKE_COLOUR).all()
    outside = boxes_mask(image.size, [(10, 10, 20, 20)]) == 0
    assert np.array_equal(got[outside], pixels(image)[outside])
    # without a composite from the page, the layers are laid over the background here: the same picture
    again, _ = canvas.init_and_mask("sketch", sketch=editor(image, value["layers"], composite=False))
    assert np.array_equal(pixels(again), got)


def test_inpaint_mask_is_the_union_of_the_layers_alpha_and_the_picture_stays_as_uploaded():
    image = picture((80, 64))
    first, second = [(5, 5, 20, 15)], [(15, 10, 40, 30), (60, 50, 70, 60)]
    value = editor(image, [layer(image.size, first), layer(image.size, second, colour=(255, 255, 255), alpha=178)])
    init, mask = canvas.init_and_mask("inpaint", inpaint=value)
    assert np.array_equal(pixels(init), pixels(image))  # strokes never change the init image
    assert mask.mode == "L" and mask.size == image.size
    assert np.array_equal(np.asarray(mask), boxes_mask(image.size, first + second))  # see-through strokes count


def test_inpaint_accepts_numpy_values_and_scales_a_layer_of_another_size():
    image = picture((64, 64))
    half = np.asarray(layer((32, 32), [(0, 0, 15, 15)]))  # the top-left quarter, drawn at half size
    value = {"background": np.asarray(image.convert("RGBA")), "layers": [half], "composite": None}
    init, mask = canvas.init_and_mask("inpaint", inpaint=value)
    assert np.array_equal(pixels(init), pixels(image))
    assert np.array_equal(np.asarray(mask), boxes_mask((64, 64), [(0, 0, 31, 31)]))


def test_inpaint_sketch_paints_the_strokes_in_and_masks_them():
    image = picture()
    boxes = [(30, 30, 50, 40)]
    init, mask = canvas.init_and_mask("inpaint_sketch", inpaint_sketch=editor(image, [layer(image.size, boxes)]))
    assert (pixels(init)[30:41, 30:51] == STROKE_COLOUR).all()
    assert np.array_equal(np.asarray(mask), boxes_mask(image.size, boxes))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_inpaint_upload_passes_both_uploads_on(mode):
    image, upload = picture(), Image.fromarray(boxes_mask((32, 32), [(4, 4, 12, 12)])).convert(mode)
    init, mask = canvas.init_and_mask("inpaint_upload", inpaint_base=image, inpaint_mask=upload)
    assert np.array_equal(pixels(init), pixels(image))
    assert mask is upload  # mode and size are the engine's to normalise


@pytest.mark.parametrize("mode, values", [
    ("inpaint", {"inpaint": "editor"}),
    ("inpaint_sketch", {"inpaint_sketch": "editor"}),
    ("inpaint_upload", {"inpaint_mask": Image.new("RGB", (64, 64))}),  # all black
    ("inpaint_upload", {"inpaint_mask": Image.new("RGBA", (64, 64), (255, 255, 255, 0))}),  # all transparent
])
def test_an_empty_mask_is_an_error_unless_outpainting(mode, values):
    image = picture()
    values = {key: editor(image) if value == "editor" else value for key, value in values.items()}
    if mode == "inpaint_upload":
        values["inpaint_base"] = image
    with pytest.raises(RequestError, match="The mask is empty: paint over the part to regenerate"):
        canvas.init_and_mask(mode, **values)
    init, mask = canvas.init_and_mask(mode, **values, allow_empty_mask=True)
    assert mask is None and init.size == image.size


def test_inverting_a_mask_that_covers_everything_is_an_error():
    image = picture()
    everything = editor(image, [layer(image.size, [(0, 0, 63, 63)])])
    with pytest.raises(RequestError, match="Inpaint not masked"):
        canvas.init_and_mask("inpaint", inpaint=everything, invert=True)
    _, mask = canvas.init_and_mask("inpaint", inpaint=everything)
    assert np.asarray(mask).min() == 255


@pytest.mark.parametrize("mode, values, message", [
    ("img2img", {}, "No image in the img2img tab"),
    ("sketch", {"sketch": {"background": None, "layers": [], "composite": None}}, "No image in the Sketch tab"),
    ("inpaint", {"inpaint": None}, "No image in the Inpaint tab"),
    ("inpaint_sketch", {}, "No image in the Inpaint sketch tab"),
    ("inpaint_upload", {"inpaint_mask": Image.new("L", (8, 8), 255)}, "No image in the Inpaint upload tab"),
    ("inpaint_upload", {"inpaint_base": Image.new("RGB", (8, 8))}, "No mask in the Inpaint upload tab"),
])
def test_a_missing_image_names_the_sub_tab(mode, values, message):
    with pytest.raises(RequestError, match=message):
        canvas.init_and_mask(mode, **values)


# --- the request --------------------------------------------------------------------------------------------------
def own_values(mode="img2img", **values) -> dict:
    """img2img's own values as the page sends them, with the UI's defaults."""
    base = {"img2img_mode": mode, "denoising_strength": 0.6, "resize_mode": "Just resize", "mask_blur": 4,
            "mask_mode": "Inpaint masked", "inpainting_fill": "original", "inpaint_area": "Whole picture",
            "inpaint_padding": 32, "outpaint_enable": False, "outpaint_left": 0, "outpaint_right": 0,
            "outpaint_up": 0, "outpaint_down": 0, "outpaint_fill": "edge", "outpaint_overlap": 8,
            "batch_input_dir": "", "batch_output_dir": "", "batch_mask_dir": ""}
    base.update(values)
    assert set(base) <= set(generation.IMG2IMG_FIELDS)
    return base


def build(own: dict, **kwargs):
    return generation.build_request("img2img", *SMALL, img2img=own, **kwargs).validate()


def test_each_sub_tab_builds_its_request():
    image = picture()
    strokes = [layer(image.size, [(8, 8, 24, 24)])]
    expected_mask = boxes_mask(image.size, [(8, 8, 24, 24)])
    upload = Image.fromarray(expected_mask)
    cases = {
        "img2img": ({"image": image}, False),
        "sketch": ({"sketch": editor(image, strokes)}, False),
        "inpaint": ({"inpaint": editor(image, strokes)}, True),
        "inpaint_sketch": ({"inpaint_sketch": editor(image, strokes)}, True),
        "inpaint_upload": ({"inpaint_base": image, "inpaint_mask": upload}, True),
    }
    for mode, (sources, masked) in cases.items():
        # every sub-tab's picture is there at once, as in the page: only the selected one counts
        others = {"image": picture(seed=9)} if mode != "img2img" else {}
        request = build(own_values(mode, **others, **sources))
        assert request.mode == "img2img" and len(request.init_images) == 1 and request.folder_batch is None
        painted = mode in ("sketch", "inpaint_sketch")
        assert (pixels(request.init_images[0])[8:25, 8:25] == STROKE_COLOUR).all() == painted, mode
        assert np.array_equal(pixels(request.init_images[0])[30:], pixels(image)[30:]), mode
        assert (request.mask is not None) == masked, mode
        if masked:
            assert np.array_equal(np.asarray(request.mask.convert("L")), expected_mask), mode
        assert request.denoising_strength == 0.6


def test_inpaint_options_become_the_requests_fields():
    image = picture()
    own = own_values("inpaint", inpaint=editor(image, [layer(image.size, [(8, 8, 24, 24)])]), mask_blur=9,
                     mask_mode="Inpaint not masked", inpainting_fill="latent noise", inpaint_area="Only masked",
                     inpaint_padding=48, resize_mode="Crop and resize")
    request = build(own)
    assert (request.mask_blur_x, request.mask_blur_y) == (9, 9)
    assert request.inpainting_mask_invert == 1 and request.inpainting_fill == 2
    assert request.inpaint_full_res is True and request.inpaint_full_res_padding == 48 and request.resize_mode == 1
    defaults = build(own_values("inpaint", inpaint=own["inpaint"]))
    assert (defaults.inpainting_fill, defaults.inpaint_full_res, defaults.inpainting_mask_invert) == (1, False, 0)
    with pytest.raises(RequestError, match="unknown masked content"):
        build({**own, "inpainting_fill": "sawdust"})


def test_outpainting_extends_whichever_sub_tabs_picture():
    image = picture()
    sides = {"outpaint_enable": True, "outpaint_left": 64, "outpaint_down": 16, "outpaint_fill": "noise",
             "outpaint_overlap": 12}
    request = build(own_values("img2img", image=image, **sides))
    assert request.outpaint == Outpaint(left=64, right=0, up=0, down=16, fill="noise", overlap=12)
    assert request.mask is None
    # from Inpaint: with its mask, and with nothing drawn (the new area is the mask)
    drawn = build(own_values("inpaint", inpaint=editor(image, [layer(image.size, [(1, 1, 5, 5)])]), **sides))
    assert drawn.outpaint.left == 64 and np.asarray(drawn.mask).max() == 255
    undrawn = build(own_values("inpaint", inpaint=editor(image), **sides))
    assert undrawn.outpaint.left == 64 and undrawn.mask is None
    assert build(own_values("img2img", image=image, **{**sides, "outpaint_enable": False})).outpaint is None
    with pytest.raises(RequestError, match="extends no side"):
        build(own_values("img2img", image=image, outpaint_enable=True))


def test_batch_builds_a_folder_batch_without_init_images(tmp_path):
    source, masks = tmp_path / "in", tmp_path / "masks"
    source.mkdir(), masks.mkdir()
    picture().save(source / "a.png")
    own = own_values("batch", image=picture(), batch_input_dir=f" {source} ", batch_output_dir=str(tmp_path / "out"),
                     batch_mask_dir=str(masks))
    request = build(own)
    assert request.folder_batch == FolderBatch(str(source), str(tmp_path / "out"), str(masks))
    assert request.init_images == [] and request.mask is None
    with pytest.raises(RequestError, match="--hide-ui-dir-config"):
        build(own, allow_folders=False)
    with pytest.raises(RequestError, match="enter the input directory"):
        build({**own, "batch_input_dir": "  "})


def generate(services, own: dict) -> list[tuple]:
    return list(generation.generate(services, "img2img", None, *SMALL, img2img=own))


def record_jobs(services) -> list:
    """The requests the UI hands to the services from now on."""
    queued, original = [], services.generate

    def recording(request, *args, **kwargs):
        queued.append(request)
        return original(request, *args, **kwargs)

    services.generate = recording
    return queued


def test_an_empty_mask_queues_nothing_and_says_why(make_services):
    services = make_services("sd1")
    queued = record_jobs(services)
    with pytest.warns(UserWarning, match="The mask is empty: paint over the part to regenerate"):
        outputs = generate(services, own_values("inpaint", inpaint=editor(picture())))
    out = dict(zip(generation.OUTPUTS, outputs[-1]))
    assert len(outputs) == 1 and out["state"]["job_id"] is None and out["generate"].visible
    assert queued == [] and services.queue.pending() == []


def test_hidden_dir_config_refuses_folder_batches(make_services, tmp_path):
    services = make_services("sd1", flags=["--hide-ui-dir-config"])
    queued = record_jobs(services)
    (tmp_path / "in").mkdir()
    picture().save(tmp_path / "in" / "a.png")
    with pytest.warns(UserWarning, match="Batch folders are disabled"):
        outputs = generate(services, own_values("batch", batch_input_dir=str(tmp_path / "in")))
    assert len(outputs) == 1 and queued == []


def test_inpainting_through_the_handler_changes_only_the_drawn_region(make_services):
    services = make_services("sd1")
    image = picture()
    box = (8, 8, 23, 23)
    own = own_values("inpaint", inpaint=editor(image, [layer(image.size, [box], colour=(255, 255, 255))]),
                     denoising_strength=1.0, mask_blur=2, inpainting_fill="latent noise")
    last = dict(zip(generation.OUTPUTS, generate(services, own)[-1]))
    result = last["gallery"][0]
    assert result.size == (64, 64)
    difference = np.abs(pixels(result) - pixels(image)).max(axis=2)
    far = boxes_mask((64, 64), [(box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6)]) == 0
    assert difference[far].max() == 0  # outside the blurred mask: the input's pixels
    assert difference[10:22, 10:22].mean() > 10  # inside: regenerated
    assert "Mask blur: 2" in last["infotext"] and "Masked content: latent noise" in last["infotext"]

    outpainted = dict(zip(generation.OUTPUTS, generate(services, own_values(
        "img2img", image=image, outpaint_enable=True, outpaint_right=16))[-1]))
    assert outpainted["gallery"][0].size == (80, 64)
    assert "Outpaint: left 0 right 16 up 0 down 0" in outpainted["infotext"]


def test_a_folder_batch_runs_through_the_handler(make_services, tmp_path):
    services = make_services("sd1")
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for index in range(2):
        picture(seed=index).save(source / f"photo{index}.png")
    last = dict(zip(generation.OUTPUTS, generate(services, own_values(
        "batch", batch_input_dir=str(source), batch_output_dir=str(out)))[-1]))
    assert [image.size for image in last["gallery"]] == [(64, 64), (64, 64)]
    assert len(list(out.glob("*.png"))) == 2


# --- pasting infotext back ----------------------------------------------------------------------------------------
def sent_img2img(text: str, image=None) -> tuple[dict, dict, tuple, object]:
    sent = pnginfo.send_to("img2img", text, "Euler", "Automatic", image)
    fields = dict(zip(pnginfo.FIELDS, sent))
    rest = sent[len(pnginfo.FIELDS):]
    own = dict(zip(pnginfo.IMG2IMG_FIELDS, rest[1:]))
    return fields, own, rest[1 + len(pnginfo.IMG2IMG_FIELDS):-1], rest[0]


def test_pasting_inpaint_infotext_sets_the_img2img_controls():
    text = ("a fox\nNegative prompt: blurry\nSteps: 12, Sampler: Euler a, CFG scale: 5, Seed: 7, Size: 96x64, "
            "Denoising strength: 0.45, Mask blur: 9, Mask mode: Inpaint not masked, Masked content: latent nothing, "
            "Inpaint area: Only masked, Masked area padding: 64, Outpaint: left 64 right 0 up 8 down 0, "
            "Outpaint fill: noise, Outpaint overlap: 16")
    image = picture()
    fields, own, switch, sent_image = sent_img2img(text, image)
    assert (fields["prompt"], fields["steps"], fields["width"], fields["height"]) == ("a fox", 12, 96, 64)
    assert sent_image is image
    assert own == {"denoising_strength": 0.45, "mask_blur": 9, "mask_mode": "Inpaint not masked",
                   "inpainting_fill": "latent nothing", "inpaint_area": "Only masked", "inpaint_padding": 64,
                   "outpaint_enable": True, "outpaint_left": 64, "outpaint_right": 0, "outpaint_up": 8,
                   "outpaint_down": 0, "outpaint_fill": "noise", "outpaint_overlap": 16}
    tabs, mode, controls = switch
    assert tabs.selected == "img2img_img2img_tab" and mode == "img2img" and controls.visible  # outpainting is on


def test_pasting_infotext_without_inpaint_keys_takes_a1111s_defaults():
    fields, own, switch, _ = sent_img2img("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64")
    skipped = own.pop("denoising_strength")
    assert isinstance(skipped, dict) and skipped.get("__type__") == "update"  # the slider keeps its value
    assert own == {"mask_blur": 4, "mask_mode": "Inpaint masked", "inpainting_fill": "original",
                   "inpaint_area": "Whole picture", "inpaint_padding": 32, "outpaint_enable": False,
                   "outpaint_left": 0, "outpaint_right": 0, "outpaint_up": 0, "outpaint_down": 0,
                   "outpaint_fill": "edge", "outpaint_overlap": 8}
    assert switch[1] == "img2img" and not switch[2].visible
    assert pnginfo.img2img_values("x\nSteps: 2, Seed: 3, Mask blur x: 6, Mask blur y: 2")[1] == 6


def test_an_inpainted_images_infotext_round_trips_into_the_controls(make_services):
    services = make_services("sd1")
    image = picture()
    own = own_values("inpaint", inpaint=editor(image, [layer(image.size, [(20, 20, 40, 40)])]), mask_blur=6,
                     inpainting_fill="fill", inpaint_area="Only masked", inpaint_padding=16, denoising_strength=0.55)
    last = dict(zip(generation.OUTPUTS, generate(services, own)[-1]))
    text = read_infotext(last["gallery"][0])
    _, pasted, _, _ = sent_img2img(text)
    for name in ("mask_blur", "inpainting_fill", "inpaint_area", "inpaint_padding", "denoising_strength",
                 "mask_mode"):
        assert pasted[name] == own[name], name


# --- send buttons under the galleries -----------------------------------------------------------------------------
def test_send_to_inpaint_puts_the_selected_image_in_the_editor_with_its_settings():
    images = [picture(seed=1), picture(seed=2)]
    state = {"infotexts": ["one\nSteps: 5, Sampler: Euler, CFG scale: 4, Seed: 11, Size: 64x64",
                           "two\nNegative prompt: ugly\nSteps: 6, Sampler: DPM++ 2M, Schedule type: Karras, "
                           "CFG scale: 5.5, Seed: 12, Size: 72x64"], "selected": 1}
    gallery = [(image, None) for image in images]
    sent = pnginfo.send_from_gallery("inpaint", state, gallery, "Euler", "Automatic")
    fields = dict(zip(pnginfo.FIELDS, sent))
    assert fields == {"prompt": "two", "negative_prompt": "ugly", "steps": 6, "sampler": "DPM++ 2M",
                      "scheduler": "Karras", "cfg_scale": 5.5, "seed": 12, "width": 72, "height": 64,
                      "subseed_show": False, "subseed": gr.skip(), "subseed_strength": gr.skip(),
                      "seed_resize_from_w": gr.skip(), "seed_resize_from_h": gr.skip(), "tiling": False,
                      "distilled_cfg_scale": gr.skip()}
    image, sub_tabs, mode, controls, tabs = sent[len(pnginfo.FIELDS):]
    assert image is images[1]
    assert (sub_tabs.selected, mode, controls.visible, tabs.selected) == ("img2img_inpaint_tab", "inpaint", True,
                                                                          "img2img")
    sent = pnginfo.send_from_gallery("img2img", {**state, "selected": 0}, gallery, "Euler", "Automatic")
    image, sub_tabs, mode, controls, tabs = sent[len(pnginfo.FIELDS):]
    assert image is images[0] and sent[0] == "one" and sent[6] == 11
    assert (sub_tabs.selected, mode, controls.visible) == ("img2img_img2img_tab", "img2img", False)
    with pytest.warns(UserWarning, match="No image to send"):
        nothing = pnginfo.send_from_gallery("inpaint", None, None)
    assert len(nothing) == len(pnginfo.FIELDS) + 5 and all(value == gr.skip() for value in nothing)


def test_the_inpaint_options_show_where_they_act():
    for mode in canvas.IMG2IMG_MODES:
        shown = img2img_inputs.switch_to(mode)[2].visible
        assert shown == (mode in ("inpaint", "inpaint_sketch", "inpaint_upload", "batch")), mode
        assert img2img_inputs.switch_to(mode, outpaint_enabled=True)[2].visible


# --- the Blocks ---------------------------------------------------------------------------------------------------
def test_build_ui_has_the_sub_tabs_editors_and_controls(make_services):
    services = make_services("sd1")
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    expected = {"img2img_img2img_tab", "img2img_img2img_sketch_tab", "img2img_inpaint_tab",
                "img2img_inpaint_sketch_tab", "img2img_inpaint_upload_tab", "img2img_batch_tab", "img2img_image",
                "img2img_sketch", "img2maskimg", "inpaint_sketch", "img_inpaint_base", "img_inpaint_mask",
                "img2img_batch_input_dir", "img2img_batch_output_dir", "img2img_batch_inpaint_mask_dir",
                "img2img_mask_blur", "img2img_mask_mode", "img2img_inpainting_fill", "img2img_inpaint_full_res",
                "img2img_inpaint_full_res_padding", "img2img_outpaint_enable", "img2img_outpaint_left",
                "img2img_outpaint_right", "img2img_outpaint_up", "img2img_outpaint_down", "img2img_outpaint_fill",
                "img2img_outpaint_overlap", "txt2img_send_to_img2img", "txt2img_send_to_inpaint",
                "img2img_send_to_img2img", "img2img_send_to_inpaint", "img2img_denoising_strength", "resize_mode"}
    assert expected <= set(by_id), expected - set(by_id)
    assert (by_id["img2img_mask_blur"].value, by_id["img2img_mask_blur"].maximum) == (4, 64)
    assert by_id["img2img_inpainting_fill"].value == "original"
    assert by_id["img2img_inpaint_full_res"].value == "Whole picture"
    assert (by_id["img2img_inpaint_full_res_padding"].value, by_id["img2img_inpaint_full_res_padding"].maximum) \
        == (32, 256)
    assert (by_id["img2img_outpaint_left"].maximum, by_id["img2img_outpaint_left"].step) == (512, 8)
    mask_editor, sketch = by_id["img2maskimg"], by_id["inpaint_sketch"]
    assert mask_editor.brush.color_mode == "fixed" and len(mask_editor.brush.colors) == 1
    assert sketch.brush.color_mode == "defaults" and len(sketch.brush.colors) > 1
    for editor_block in (mask_editor, sketch, by_id["img2img_sketch"]):
        assert editor_block.eraser and editor_block.type == "pil" and editor_block.image_mode == "RGBA"
    assert by_id["img2img_batch_input_dir"].visible
    # each sub-tab's select sets the mode state
    mode_state = next(block for block in blocks.blocks.values() if isinstance(block, gr.State)
                      and block.value == "img2img")
    selects = {target[0] for dep in blocks.config["dependencies"] for target in dep["targets"]
               if target[1] == "select" and mode_state._id in dep["outputs"]}
    assert {by_id[f"img2img_{name}_tab"]._id for name in ("img2img", "img2img_sketch", "inpaint", "inpaint_sketch",
                                                           "inpaint_upload", "batch")} <= selects


def test_hide_ui_dir_config_hides_the_batch_folders(make_services):
    blocks = build_ui(make_services("sd1", flags=["--hide-ui-dir-config"]))
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    assert not by_id["img2img_batch_input_dir"].visible and not by_id["img2img_batch_output_dir"].visible
    assert "--hide-ui-dir-config" in by_id["img2img_batch_note"].value
