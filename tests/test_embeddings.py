"""Textual-inversion embeddings: every file format, the folder database, model compatibility, hashes, previews."""
from __future__ import annotations

import base64
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

from ti_files import (a1111_document, picture, random_vectors, write_a1111_pt, write_diffusers_bin, write_emb_params,
                      write_old_a1111_pt, write_png_pixels, write_pt_with_object, write_png_text_chunk, write_sdxl)
from webui.models.devices import DevicePolicy
from webui.models.embedding_png import lcg_keystream
from webui.models.embeddings import HASH_KIND, EmbeddingDatabase
from webui.models.hashing import HashCache
from webui.models.loader import load_checkpoint

WIDTH = 64  # the tiny models' text encoders


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory):
    cache = tmp_path_factory.mktemp("tokenizer-cache")
    return {kind: load_checkpoint(tiny_models[kind], DevicePolicy.cpu(), cache,
                                  config_path=tiny_models[kind].with_suffix(".yaml"))
            for kind in ("sd1", "sdxl")}


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "embeddings"
    root.mkdir()
    return root


def make_db(root, cache=None):
    db = EmbeddingDatabase(root, cache or HashCache())
    db.refresh()
    return db


def test_every_format_loads_the_vectors_that_were_written(folder):
    written = {
        "a1111": random_vectors(3, WIDTH, 1),
        "emb-params": random_vectors(2, WIDTH, 2),
        "concept-one": random_vectors(1, WIDTH, 3)[0],
        "concept-two": random_vectors(2, WIDTH, 4),
        "png-chunk": random_vectors(2, WIDTH, 5),
        "png-pixels": random_vectors(4, WIDTH, 6),
        "old-torch": random_vectors(2, WIDTH, 35),
    }
    clip_l, clip_g = random_vectors(2, WIDTH, 7), random_vectors(2, WIDTH, 8)
    write_a1111_pt(folder / "a1111.pt", written["a1111"], step=1234, checkpoint="tiny-sd1", checkpoint_hash="beef")
    write_old_a1111_pt(folder / "old-torch.pt", written["old-torch"])
    write_emb_params(folder / "emb-params.safetensors", written["emb-params"])
    write_diffusers_bin(folder / "concept-one.bin", "<concept>", written["concept-one"])
    write_diffusers_bin(folder / "concept-two.bin", "<concept>", written["concept-two"])
    write_png_text_chunk(folder / "png-chunk.png", a1111_document(written["png-chunk"], "png-chunk", step=77))
    write_png_pixels(folder / "png-pixels.png", a1111_document(written["png-pixels"], "png-pixels", step=88))
    write_sdxl(folder / "xl.safetensors", clip_l, clip_g)

    db = make_db(folder)
    assert db.errors == {}
    found = db.all()
    assert sorted(found) == sorted([*written, "xl"])
    for name, vectors in written.items():
        expected = vectors if vectors.ndim == 2 else vectors[None]
        assert list(found[name].vectors) == ["*"], name
        assert torch.equal(found[name].vectors["*"], expected), name
        assert found[name].vector_count == expected.shape[0]
        assert found[name].shape == WIDTH
    assert torch.equal(found["xl"].vectors["clip_l"], clip_l) and torch.equal(found["xl"].vectors["clip_g"], clip_g)
    assert found["xl"].vector_count == 2 and found["xl"].shape == 2 * WIDTH
    assert (found["a1111"].step, found["a1111"].checkpoint, found["a1111"].checkpoint_hash) == (1234, "tiny-sd1",
                                                                                                  "beef")
    assert found["png-chunk"].step == 77 and found["png-pixels"].step == 88
    assert found["emb-params"].step is None and found["emb-params"].checkpoint is None
    assert found["a1111"].filename == "a1111.pt" and found["a1111"].path == folder / "a1111.pt"


def test_image_embedding_takes_the_name_stored_inside_and_is_its_own_preview(folder):
    vectors = random_vectors(2, WIDTH, 9)
    write_png_text_chunk(folder / "downloaded (1).png", a1111_document(vectors, "cool-style"))
    embedding = make_db(folder).all()["cool-style"]
    assert torch.equal(embedding.vectors["*"], vectors)
    assert embedding.preview == folder / "downloaded (1).png"


def test_pixel_form_survives_a_black_border_and_an_alpha_channel(folder, tmp_path):
    """A1111 crops black borders before reading; an RGBA copy of the image must read the same."""
    from PIL import Image

    vectors = random_vectors(3, WIDTH, 10)
    source = write_png_pixels(tmp_path / "src.png", a1111_document(vectors, "bordered"))
    inner = Image.open(source).convert("RGBA")
    framed = Image.new("RGBA", (inner.width + 10, inner.height + 6), (0, 0, 0, 255))
    framed.paste(inner, (4, 3))
    framed.save(folder / "bordered.png")
    assert torch.equal(make_db(folder).all()["bordered"].vectors["*"], vectors)


def test_keystream_matches_the_lcg_stepped_one_value_at_a_time():
    state, expected = 0, []
    for _ in range(5000):
        state = (1664525 * state + 1013904223) % 2 ** 32
        expected.append((state % 255) & 0x0F)
    assert lcg_keystream(5000).tolist() == expected
    assert lcg_keystream(0).size == 0


def test_subfolders_and_duplicate_names_first_wins(folder):
    first, second, third = (random_vectors(1, WIDTH, s) for s in (11, 12, 13))
    write_a1111_pt(folder / "dup.pt", first)
    write_emb_params(folder / "a" / "dup.safetensors", second)
    write_emb_params(folder / "a" / "deep" / "nested.safetensors", third)
    write_emb_params(folder / "b" / "dup.safetensors", third)
    db = make_db(folder)
    found = db.all()
    assert sorted(found) == ["dup", "nested"]
    assert torch.equal(found["dup"].vectors["*"], first)  # the folder's own files come before subfolders
    assert found["nested"].filename == "a/deep/nested.safetensors"
    assert set(db.errors) == {"a/dup.safetensors", "b/dup.safetensors"}
    assert "'dup' was loaded first from dup.pt" in db.errors["b/dup.safetensors"]


def test_refresh_sees_new_changed_and_removed_files_without_a_new_database(folder):
    write_emb_params(folder / "keep.safetensors", random_vectors(1, WIDTH, 14))
    write_emb_params(folder / "change.safetensors", random_vectors(1, WIDTH, 15))
    db = make_db(folder)
    keep, change = db.all()["keep"], db.all()["change"]

    db.refresh()  # nothing changed: same objects, nothing reread
    assert db.all()["keep"] is keep and db.all()["change"] is change

    added = random_vectors(2, WIDTH, 16)
    write_a1111_pt(folder / "sub" / "added.pt", added)
    updated = random_vectors(3, WIDTH, 17)
    write_emb_params(folder / "change.safetensors", updated)
    os.utime(folder / "change.safetensors", (1, 1))  # a different mtime even on coarse-clock file systems
    db.refresh()
    assert torch.equal(db.all()["added"].vectors["*"], added)
    assert torch.equal(db.all()["change"].vectors["*"], updated)
    assert db.all()["keep"] is keep  # unchanged files are not read again

    (folder / "keep.safetensors").unlink()
    shutil.rmtree(folder / "sub")
    db.refresh()
    assert sorted(db.all()) == ["change"]

    before = db.all()["change"]
    db.refresh(force=True)
    assert db.all()["change"] is not before and torch.equal(db.all()["change"].vectors["*"], updated)


def test_missing_folder_is_empty_and_appears_later(tmp_path):
    root = tmp_path / "not-yet"
    db = make_db(root)
    assert db.all() == {} and db.errors == {}
    write_emb_params(root / "late.safetensors", random_vectors(1, WIDTH, 18))
    db.refresh()
    assert list(db.all()) == ["late"]


def test_compatibility_with_sd1_and_sdxl(folder, models):
    single = random_vectors(2, WIDTH, 19)
    clip_l, clip_g = random_vectors(3, WIDTH, 20), random_vectors(3, WIDTH, 21)
    write_emb_params(folder / "single.safetensors", single)
    write_emb_params(folder / "narrow.safetensors", random_vectors(1, 32, 22))
    write_sdxl(folder / "xl.safetensors", clip_l, clip_g)
    write_sdxl(folder / "xl-narrow.safetensors", random_vectors(1, 32, 23), random_vectors(1, WIDTH, 24))
    db = make_db(folder)

    usable, skipped = db.for_model(models["sd1"])
    assert sorted(usable) == ["single"]
    assert skipped["narrow"] == "made for a text encoder of width 32; this checkpoint's is 64"
    assert "SDXL" in skipped["xl"] and "SDXL" in skipped["xl-narrow"]
    got = usable["single"].vectors_for(models["sd1"], 0)
    weight = models["sd1"].text_encoders[0].get_input_embeddings().weight
    assert torch.equal(got, single) and got.dtype == weight.dtype and got.device == weight.device

    usable, skipped = db.for_model(models["sdxl"])
    assert sorted(usable) == ["xl"]
    assert "clip_l and clip_g" in skipped["single"] and "clip_l and clip_g" in skipped["narrow"]
    assert skipped["xl-narrow"] == "its clip_l vectors have width 32; this checkpoint's clip_l text encoder is 64"
    assert torch.equal(usable["xl"].vectors_for(models["sdxl"], 0), clip_l)
    assert torch.equal(usable["xl"].vectors_for(models["sdxl"], 1), clip_g)
    with pytest.raises(ValueError, match="single: .*clip_l and clip_g"):
        db.all()["single"].vectors_for(models["sdxl"], 0)


def test_sdxl_file_with_unequal_vector_counts_is_an_error(folder):
    write_sdxl(folder / "uneven.safetensors", random_vectors(2, WIDTH, 25), random_vectors(3, WIDTH, 26))
    db = make_db(folder)
    assert db.all() == {}
    assert db.errors == {"uneven.safetensors": "clip_l has 2 vectors but clip_g 3"}


def test_bad_files_land_in_errors_and_never_raise(folder):
    (folder / "garbage.pt").write_bytes(b"definitely not a pickle" * 10)
    good = write_emb_params(folder / "cut.safetensors", random_vectors(4, WIDTH, 27))
    (folder / "cut.safetensors").write_bytes(good.read_bytes()[:-20])
    write_pt_with_object(folder / "objects.pt", random_vectors(1, WIDTH, 28))
    torch.save({"a": torch.zeros(2, WIDTH), "b": torch.zeros(2, WIDTH)}, folder / "two-terms.bin")
    torch.save({"string_to_param": {"*": torch.zeros(2, 3, 4)}}, folder / "cube.pt")
    write_png_text_chunk(folder / "broken-chunk.png", {"name": "x"})
    broken_json = base64.b64encode(b"{not json")
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", broken_json)
    picture().save(folder / "bad-json.png", "PNG", pnginfo=info)
    (folder / "not-an-image.png").write_bytes(b"\x89PNG but not really")
    (folder / "empty.pt").write_bytes(b"")  # skipped silently, as A1111 does (a file still being copied)
    write_emb_params(folder / "fine.safetensors", random_vectors(1, WIDTH, 29))

    db = make_db(folder)
    assert list(db.all()) == ["fine"]
    errors = db.errors
    assert sorted(errors) == sorted(["garbage.pt", "cut.safetensors", "objects.pt", "two-terms.bin", "cube.pt",
                                     "broken-chunk.png", "bad-json.png", "not-an-image.png"])
    assert errors["garbage.pt"].startswith("not a readable PyTorch file")
    assert errors["cut.safetensors"].startswith("corrupt or truncated safetensors file")
    assert errors["objects.pt"].startswith("contains Python objects besides tensors (it needs argparse.Namespace)")
    assert "arbitrary code" in errors["objects.pt"]
    assert errors["two-terms.bin"].startswith("holds 2 tensors")
    assert errors["cube.pt"] == "string_to_param has shape [2, 3, 4]; expected [vectors, width]"
    assert errors["broken-chunk.png"].startswith("not a textual-inversion embedding")
    assert errors["bad-json.png"].startswith("the embedded data is not valid JSON")
    assert errors["not-an-image.png"].startswith("not a readable image")


def test_plain_pictures_and_previews_are_not_embeddings(folder):
    write_a1111_pt(folder / "styled.pt", random_vectors(1, WIDTH, 30))
    picture().save(folder / "styled.png")  # its preview: no embedded data
    write_emb_params(folder / "other.safetensors", random_vectors(1, WIDTH, 31))
    write_png_text_chunk(folder / "other.preview.png", a1111_document(random_vectors(1, WIDTH, 32), "sneaky"))
    write_emb_params(folder / "bare.safetensors", random_vectors(1, WIDTH, 33))
    db = make_db(folder)
    assert sorted(db.all()) == ["bare", "other", "styled"] and db.errors == {}
    assert db.all()["styled"].preview == folder / "styled.png"
    assert db.all()["other"].preview == folder / "other.preview.png"
    assert db.all()["bare"].preview is None


def test_hash_is_the_file_sha256_and_is_cached(folder, tmp_path):
    path = write_a1111_pt(folder / "hashed.pt", random_vectors(2, WIDTH, 34))
    cache = HashCache(tmp_path / "cache.json")
    embedding = make_db(folder, cache).all()["hashed"]
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert embedding.sha256 == expected and embedding.shorthash == expected[:12]
    assert HashCache(tmp_path / "cache.json").get(path, HASH_KIND) == expected


def test_pixel_decoder_ignores_pictures_with_black_stripes(folder):
    from PIL import Image

    stripes = np.full((16, 30, 3), 200, dtype=np.uint8)
    stripes[:, 5] = 0
    stripes[:, 24] = 0  # equal blocks either side, so the decoder gets as far as inflating them
    Image.fromarray(stripes, "RGB").save(folder / "stripes.png")
    db = make_db(folder)
    assert db.all() == {} and db.errors == {}
