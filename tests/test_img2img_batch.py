"""img2img over a folder (A1111's Batch tab) as the user sees it: one output per input named after it, with
infotext, masks matched by name (or one mask for all), broken files reported and skipped, progress over the whole
folder, Interrupt keeping what was saved, Skip dropping one file."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import pixels
from webui.engine import batch as folder_batch
from webui.core.run_control import RunControl
from webui.core.request import FolderBatch, GenerationRequest
from webui.outputs.save import read_infotext

SIZE = 64
NAMES = ("a.png", "b.png", "c.jpg")


def picture(seed: int) -> Image.Image:
    """A smooth, distinct 64x64 picture (smooth so JPEG keeps it close)."""
    x = np.linspace(0, 1, SIZE)[None, :] * np.ones((SIZE, 1))
    y = x.T
    channels = [np.sin((x * (seed + 1) + y * (3 - seed)) * np.pi) * 0.5 + 0.5, x, y]
    return Image.fromarray((np.stack(channels, axis=-1) * 255).astype(np.uint8), "RGB")


def half_mask(side: str) -> Image.Image:
    """White (inpaint) over one half of the picture."""
    array = np.zeros((SIZE, SIZE), dtype=np.uint8)
    {"left": array[:, :SIZE // 2], "right": array[:, SIZE // 2:], "top": array[:SIZE // 2, :],
     "bottom": array[SIZE // 2:, :]}[side][...] = 255
    return Image.fromarray(array, "L")


# the kept half of each mask: pixels there are the input's exactly (mask blur 0)
KEPT = {"left": np.s_[:, SIZE // 2:], "right": np.s_[:, :SIZE // 2], "top": np.s_[SIZE // 2:, :],
        "bottom": np.s_[:SIZE // 2, :]}
REGENERATED = {"left": KEPT["right"], "right": KEPT["left"], "top": KEPT["bottom"], "bottom": KEPT["top"]}


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    """input/ with a.png, b.png, c.jpg and a broken d.png; masks/ with a matching mask for each good image."""
    made = {name: tmp_path / name for name in ("input", "output", "masks")}
    for folder in made.values():
        folder.mkdir()
    for index, name in enumerate(NAMES):
        picture(index).save(made["input"] / name)
    (made["input"] / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n these bytes are no picture")
    (made["input"] / "notes.txt").write_text("not an image, not even looked at")
    for name, side in zip(NAMES, ("left", "right", "top")):
        half_mask(side).save(made["masks"] / f"{Path(name).stem}.png")
    return made


def batch_request(folders, output: bool = True, masks: bool = True, **fields) -> GenerationRequest:
    base = dict(mode="img2img", prompt="a harbour", sampler_name="Euler", steps=3, width=SIZE, height=SIZE, seed=3,
                denoising_strength=0.75, mask_blur_x=0, mask_blur_y=0, inpainting_fill=1, inpaint_full_res=False,
                folder_batch=FolderBatch(str(folders["input"]), str(folders["output"]) if output else "",
                                         str(folders["masks"]) if masks else ""))
    base.update(fields)
    return GenerationRequest(**base)


def read_input(folders, name: str) -> np.ndarray:
    with Image.open(folders["input"] / name) as image:
        return pixels(image.convert("RGB"))


def read_output(path) -> tuple[np.ndarray, str]:
    with Image.open(path) as image:
        return pixels(image.convert("RGB")), read_infotext(image)


# --- outputs, masks, broken files -------------------------------------------------------------------------------
def test_outputs_are_named_after_inputs_with_infotext_and_their_own_masks(make_services, folders):
    services = make_services("sd1")
    result = services.engine.run(batch_request(folders))
    out = folders["output"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert result.saved_paths == [str(out / "a.png"), str(out / "b.png"), str(out / "c.png")]
    assert len(result.images) == len(result.infotexts) == 3 and result.seeds == [3, 3, 3]
    assert not result.interrupted
    broken = [w for w in result.warnings if "d.png" in w]
    assert len(broken) == 1 and "cannot be read" in broken[0]
    assert not any("notes.txt" in w for w in result.warnings)

    for index, (name, side) in enumerate(zip(NAMES, ("left", "right", "top"))):
        saved, infotext = read_output(out / f"{Path(name).stem}.png")
        assert infotext == result.infotexts[index]
        assert infotext.startswith("a harbour\n")
        assert "Seed: 3," in infotext and "Denoising strength: 0.75" in infotext and "Mask blur: 0" in infotext
        assert np.array_equal(saved, pixels(result.images[index]))
        source = read_input(folders, name)
        # each file was inpainted with the mask of its own name: the other half is the input, pixel for pixel
        assert np.array_equal(saved[KEPT[side]], source[KEPT[side]]), name
        assert np.abs(saved[REGENERATED[side]] - source[REGENERATED[side]]).max() > 8, name


def test_a_single_mask_is_used_for_every_file(make_services, folders, tmp_path):
    services = make_services("sd1")
    single = tmp_path / "one-mask"
    single.mkdir()
    half_mask("bottom").save(single / "whatever-name.png")
    request = batch_request(folders)
    request.folder_batch.mask_dir = str(single)
    result = services.engine.run(request)
    assert len(result.saved_paths) == 3
    assert not any("No mask" in w for w in result.warnings)
    for name in NAMES:
        saved, _ = read_output(folders["output"] / f"{Path(name).stem}.png")
        source = read_input(folders, name)
        assert np.array_equal(saved[KEPT["bottom"]], source[KEPT["bottom"]]), name
        assert not np.array_equal(saved[REGENERATED["bottom"]], source[REGENERATED["bottom"]]), name


def test_missing_broken_and_empty_masks(make_services, folders):
    """No mask for a file: the request's own mask; a mask file that cannot be read, or that masks nothing: that
    file is skipped with a warning naming it, and the others are made."""
    services = make_services("sd1")
    masks = folders["masks"]
    (masks / "b.png").write_bytes(b"not a picture either")
    (masks / "c.png").unlink()
    Image.new("L", (SIZE, SIZE), 0).save(masks / "e.png")
    picture(4).save(folders["input"] / "e.png")
    result = services.engine.run(batch_request(folders, mask=half_mask("right")))
    assert sorted(p.name for p in folders["output"].iterdir()) == ["a.png", "c.png"]
    assert any("b.png" in w and str(masks / "b.png") in w and "cannot be read" in w for w in result.warnings)
    assert any("c.jpg" in w and "request's mask" in w for w in result.warnings)
    assert any(w.startswith("Skipped e.png") and "empty" in w for w in result.warnings)
    saved, _ = read_output(folders["output"] / "c.png")
    source = read_input(folders, "c.jpg")
    assert np.array_equal(saved[KEPT["right"]], source[KEPT["right"]])


def test_several_images_per_file_and_no_overwriting(make_services, folders):
    services = make_services("sd1")
    (folders["output"] / "a-1.png").write_bytes(b"the user's own file")
    result = services.engine.run(batch_request(folders, masks=False, batch_size=2))
    names = sorted(p.name for p in folders["output"].iterdir())
    assert names == ["a-1.png", "a-1_1.png", "a-2.png", "b-1.png", "b-2.png", "c-1.png", "c-2.png"]
    assert (folders["output"] / "a-1.png").read_bytes() == b"the user's own file"
    assert result.seeds == [3, 4] * 3
    assert len(result.saved_paths) == 6


def test_without_output_folder_images_go_to_the_img2img_folder(make_services, folders):
    services = make_services("sd1")
    result = services.engine.run(batch_request(folders, output=False))
    day = services.paths.outputs / "img2img-images" / date.today().strftime("%Y-%m-%d")
    assert sorted(Path(p).parent for p in result.saved_paths) == [day] * 3
    assert [Path(p).name for p in result.saved_paths] == ["00000-3.png", "00001-3.png", "00002-3.png"]
    assert list(folders["output"].iterdir()) == []
    for path, infotext in zip(result.saved_paths, result.infotexts):
        assert read_output(path)[1] == infotext

    unsaved = services.engine.run(batch_request(folders, output=False, save_images=False))
    assert unsaved.saved_paths == [] and len(unsaved.images) == 3


def test_images_kept_in_memory_are_capped(make_services, folders, monkeypatch):
    services = make_services("sd1")
    monkeypatch.setattr(folder_batch, "MAX_IMAGES_KEPT", 2)
    result = services.engine.run(batch_request(folders))
    assert len(result.images) == 2 and len(result.saved_paths) == 3 and len(result.infotexts) == 3
    assert any("made 3 images" in w and "saved_paths" in w for w in result.warnings)


# --- progress, Interrupt, Skip ----------------------------------------------------------------------------------
def test_progress_runs_over_the_whole_folder(make_services, folders):
    services = make_services("sd1")
    seen = []
    control = RunControl(on_progress=lambda p: seen.append((p.job_no, p.job_count, p.sampling_step, p.fraction,
                                                            p.textinfo)))
    services.engine.run(batch_request(folders, n_iter=2), control)
    assert {count for _, count, *_ in seen} == {8}  # 4 image files (one broken) x batch count 2
    fractions = [fraction for *_, fraction, _ in seen]
    assert all(later >= earlier for earlier, later in zip(fractions, fractions[1:])), fractions
    assert max(job for job, *_ in seen) == 5  # c.jpg's second batch: files a, b, c at jobs 0-1, 2-3, 4-5
    assert any(text.startswith("b.png (2 of 4)") for *_, text in seen)


def test_interrupt_keeps_what_was_saved(make_services, folders):
    services = make_services("sd1")

    def interrupt_during_b(progress):
        if progress.job_no == 1 and progress.sampling_step >= 1:
            control.interrupt()

    control = RunControl(on_progress=interrupt_during_b)
    result = services.engine.run(batch_request(folders), control)
    assert result.interrupted
    # as A1111: the file being sampled is decoded where it got to and saved, then the batch stops
    assert sorted(p.name for p in folders["output"].iterdir()) == ["a.png", "b.png"]
    assert result.saved_paths == [str(folders["output"] / n) for n in ("a.png", "b.png")] and len(result.images) == 2
    assert any(w.startswith("Interrupted: 1 of 4 files") for w in result.warnings)


def test_skip_ends_only_the_current_file_early(make_services, folders):
    services = make_services("sd1")
    pressed = []

    def skip_during_b(progress):
        if progress.job_no == 1 and progress.sampling_step >= 1 and not pressed:
            pressed.append(True)
            control.skip()

    control = RunControl(on_progress=skip_during_b)
    result = services.engine.run(batch_request(folders), control)
    assert not result.interrupted
    assert sorted(p.name for p in folders["output"].iterdir()) == ["a.png", "b.png", "c.png"]
    assert any(w == "b.png: Skip was pressed; its picture stops where sampling had got" for w in result.warnings)
    assert not any(w.startswith("Interrupted") for w in result.warnings)
