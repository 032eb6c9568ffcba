"""File and folder names from A1111's patterns (webui/outputs/filename_pattern.py) and where the engine saves with
them: tags to names, sanitising, traversal attempts stay inside the output folder, the defaults give the names
saved before the options existed (outdir/YYYY-MM-DD/NNNNN-SEED.png)."""
from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.core.request import GenerationRequest
from webui.outputs.filename_pattern import NameContext, apply_pattern, safe_stem, safe_subdir, sanitize_part
from webui.outputs.save import read_infotext, save_image

NOW = datetime(2024, 5, 6, 7, 8, 9)


class Opts(dict):
    def get(self, key, default=None):  # as Options: KeyError for a key it does not have
        if key not in self:
            raise KeyError(key)
        return self[key]


def ctx(**values) -> NameContext:
    base = dict(seed=1234, prompt="a red fox, (snow:1.2), night", negative_prompt="blurry", model_name="tiny-sd1",
                model_hash="abcdef0123", sampler="DPM++ 2M", scheduler="Karras", cfg=7.0, steps=20, width=512,
                height=768, clip_skip=2, denoising=0.75, now=NOW)
    base.update(values)
    return NameContext(**base)


def picture(seed: int = 0, size=(16, 8)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --- tags ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, expected", [
    ("[seed]", "1234"),
    ("[SEED]-[steps]-[cfg]", "1234-20-7.0"),  # tags are case-insensitive; numbers as A1111 writes them
    ("[prompt]", "a_red_fox,_(snow_1.2),_night"),
    ("[prompt_spaces]", "a red fox, (snow_1.2), night"),
    ("[prompt_words]", "a red fox snow 1 2 night"),
    ("[model_name]_[model_hash]", "tiny-sd1_abcdef0123"),
    ("[sampler] [scheduler]", "DPM++ 2M Karras"),
    ("[width]x[height]", "512x768"),
    ("[clip_skip]/[denoising]", "2/0.75"),
    ("[date]", "2024-05-06"),
    ("[datetime]", "20240506070809"),
    ("[datetime<%Y_%m>]", "2024_05"),
    ("[none]", ""),
    ("[unknown]-[seed]", "[unknown]-1234"),  # a tag A1111 does not know stays as written
    ("[prompt_hash]", hashlib.sha256(b"a red fox, (snow:1.2), night").hexdigest()[:8]),
    ("[prompt_hash<4>]", hashlib.sha256(b"a red fox, (snow:1.2), night").hexdigest()[:4]),
    ("[hasprompt<fox|nofox><cat|nocat>]", "foxnocat"),
    ("[styles]", "None"),
])
def test_tags(pattern, expected):
    assert apply_pattern(pattern, ctx()) == expected


def test_datetime_in_another_zone():
    aware = datetime(2024, 5, 6, 22, 30, tzinfo=timezone.utc)
    assert apply_pattern("[datetime<%Y-%m-%d %H><Asia/Tokyo>]", ctx(now=aware)) == "2024-05-07 07"
    assert apply_pattern("[datetime<%H><No/Such_Zone>]", ctx(now=aware)) == "22"  # unknown zone: server time


def test_batch_and_generation_numbers_skip_the_text_before_them_for_single_images():
    assert apply_pattern("[seed]-[batch_number]", ctx()) == "1234"
    assert apply_pattern("[seed]-[generation_number]", ctx()) == "1234"
    several = ctx(batch_size=4, n_iter=2, batch_index=2, iteration=1)
    assert apply_pattern("[seed]-[batch_number]-[generation_number]", several) == "1234-3-7"
    assert apply_pattern("x-[denoising]", ctx(denoising=None)) == ""


def test_prompt_words_limit_and_prompt_no_styles():
    assert apply_pattern("[prompt_words]", ctx(max_prompt_words=2)) == "a red"
    styled = ctx(prompt="a fox, masterpiece, best quality", styles=["Quality"],
                 style_prompts=["{prompt}, masterpiece, best quality"])
    assert apply_pattern("[prompt_no_styles]", styled) == "a fox"
    assert apply_pattern("[styles]", styled) == "Quality"


# --- sanitising ---------------------------------------------------------------------------------------------------
def test_sanitize_part_follows_a1111():
    assert sanitize_part('a b<c>:d"e/f\\g|h?i*j#k') == "a_b_c__d_e_f_g_h_i_j_k"
    assert sanitize_part("  lead and trail. . ", replace_spaces=False) == "lead and trail"
    assert len(sanitize_part("x" * 500)) == 128


@pytest.mark.parametrize("text", ["../../x", "..", "/etc/passwd", "C:\\Windows\\system32", "a/../../b",
                                  "\\\\server\\share", ".hidden", "x\x00y\n"])
def test_names_never_leave_the_folder(text):
    stem = safe_stem(text)
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".") and "\x00" not in stem
    sub = safe_subdir(text)
    assert not sub.is_absolute() and ".." not in sub.parts and "." not in sub.parts
    root = Path("/srv/outputs")
    assert os.path.normpath(root / sub).startswith(str(root))


def test_windows_reserved_names_and_length_cap():
    assert safe_stem("CON") == "_CON" and safe_stem("nul.txt") == "_nul.txt" and safe_stem("com1") == "_com1"
    assert safe_subdir("aux/LPT1") == Path("_aux") / "_LPT1"
    assert safe_stem("trailing dots...") == "trailing dots"
    long = safe_stem("é" * 300, limit=100)
    assert len(long.encode("utf-8")) <= 100 and long == "é" * 50
    assert all(len(part) <= 128 for part in safe_subdir("d" * 400).parts)


# --- saving -------------------------------------------------------------------------------------------------------
def test_defaults_give_todays_names(tmp_path):
    """No options (and A1111's defaults) give outdir/YYYY-MM-DD/NNNNN-SEED.png, numbered on from the folder."""
    first = save_image(picture(), tmp_path, 42, "a fox", now=NOW)
    assert first == tmp_path / "2024-05-06" / "00000-42.png"
    defaults = Opts(samples_filename_pattern="", directories_filename_pattern="[date]", save_to_dirs=True,
                    save_images_add_number=True, directories_max_prompt_words=8)
    second = save_image(picture(1), tmp_path, 43, "a fox", now=NOW, options=defaults)
    assert second == tmp_path / "2024-05-06" / "00001-43.png"
    with Image.open(second) as saved:
        assert read_infotext(saved) == "a fox"


def test_patterns_from_options(tmp_path):
    options = Opts(samples_filename_pattern="[model_name]-[seed]-[prompt_words]", directories_max_prompt_words=3,
                   directories_filename_pattern="[date]/[sampler]", save_to_dirs=True, save_images_add_number=True)
    path = save_image(picture(), tmp_path, 7, "", now=NOW, options=options, context=ctx())
    assert path == tmp_path / "2024-05-06" / "DPM++ 2M" / "00000-tiny-sd1-7-a red fox.png"

    flat = Opts(samples_filename_pattern="", save_to_dirs=False, save_images_add_number=True)
    path = save_image(picture(), tmp_path / "flat", 7, "", now=NOW, options=flat, context=ctx(prompt="a fox?"))
    assert path == tmp_path / "flat" / "00000-7-a fox_.png"  # A1111's default without folders: [seed]-[prompt_spaces]


def test_without_number_names_never_overwrite(tmp_path):
    options = Opts(samples_filename_pattern="[seed]", save_to_dirs=False, save_images_add_number=False)
    names = [save_image(picture(i), tmp_path, 9, "", options=options).name for i in range(3)]
    assert names == ["9.png", "9-1.png", "9-2.png"]
    none = Opts(samples_filename_pattern="[none]", save_to_dirs=False, save_images_add_number=False)
    assert save_image(picture(), tmp_path / "n", 9, "", options=none).name == "00000.png"  # empty: numbered
    assert save_image(picture(), tmp_path / "n", 9, "", options=none).name == "00001.png"


def test_traversal_in_prompt_and_pattern_stays_inside(tmp_path):
    outdir = tmp_path / "out"
    options = Opts(samples_filename_pattern="[prompt_spaces]/../[prompt]", directories_filename_pattern="../[prompt]",
                   save_to_dirs=True, save_images_add_number=True)
    path = save_image(picture(), outdir, 1, "", options=options, context=ctx(prompt="../../evil"))
    assert path.resolve().is_relative_to(outdir.resolve())
    assert path.exists() and not list(tmp_path.glob("evil*"))


def test_engine_saves_with_the_pattern(make_services):
    services = make_services("sd1")
    services.options.update({"samples_filename_pattern": "[seed]-[model_name]-[steps]-[prompt_words]",
                             "directories_filename_pattern": "[date]-[sampler]"}, save=False)
    request = GenerationRequest(prompt="a small fox", sampler_name="Euler", steps=2, width=64, height=64, seed=77,
                                save_images=True)
    result = services.engine.run(request)
    path = Path(result.saved_paths[0])
    today = datetime.now().strftime("%Y-%m-%d")
    assert path.parent.name == f"{today}-Euler"
    assert path.parent.parent == Path(services.engine.outputs_dir) / "txt2img-images"
    assert path.name == "00000-77-tiny-sd1-2-a small fox.png"


def test_seed_first_and_last_name_the_whole_batch(make_services):
    """[seed_first] / [seed_last] read the run's planned seeds (A1111's p.all_seeds), not the seeds saved so far, so
    every image of a batch names the same first and last seed and its own [seed]."""
    services = make_services("sd1")
    services.options.update({"samples_filename_pattern": "[seed_first]-[seed_last]-[seed]",
                             "save_to_dirs": False}, save=False)
    request = GenerationRequest(prompt="a small fox", sampler_name="Euler", steps=1, width=64, height=64, seed=500,
                                batch_size=2, save_images=True)
    result = services.engine.run(request)
    names = sorted(Path(path).name for path in result.saved_paths)
    assert names == ["00000-500-501-500.png", "00001-500-501-501.png"]  # seeds 500, 501: the batch's in order
