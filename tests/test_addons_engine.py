"""Embeddings and VAE files inside a generation: what the image and the infotext show."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from tests.test_vae import other_vae, write_ldm_vae
from tests.ti_files import random_vectors, write_a1111_pt
from webui.engine.engine import NaNOutputError
from tests.conftest import pixels, quick_run as run
from webui.models.vae import UnknownVaeError
from webui.outputs.infotext import parse_infotext


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sd1(make_services):
    services = make_services("sd1")
    services.models.select("tiny-sd1")
    return services


def test_an_embedding_of_a_words_vector_draws_that_word(sd1):
    """An embedding holding the token vector of "fox" gives the image of the word "fox"; it is found without a
    restart and named with its hash in the infotext."""
    _, model = sd1.models.get()
    fox = model.tokenizers[0]("fox", add_special_tokens=False).input_ids[0]
    vectors = model.text_encoders[0].get_input_embeddings().weight[fox:fox + 1].detach().clone()
    path = write_a1111_pt(sd1.paths.embeddings / "sly-animal.pt", vectors)
    with_word = run(sd1, prompt="a fox in snow")
    with_embedding = run(sd1, prompt="a sly-animal in snow")
    # the embedding's vector is the word's own, same batch size and process: bit-identical
    assert np.array_equal(pixels(with_word.images[0]), pixels(with_embedding.images[0]))
    params = parse_infotext(with_embedding.infotexts[0])
    assert params["TI hashes"] == f"sly-animal: {sha(path)[:12]}"
    assert "TI hashes" not in with_word.infotexts[0]


def test_an_embedding_in_the_negative_prompt(sd1):
    write_a1111_pt(sd1.paths.embeddings / "badthing.pt", random_vectors(2, 64, 3))
    plain = run(sd1, negative_prompt="blurry")
    negative = run(sd1, negative_prompt="blurry, badthing")
    assert not np.array_equal(pixels(plain.images[0]), pixels(negative.images[0]))
    assert "TI hashes: \"badthing: " in negative.infotexts[0]


def test_an_embedding_that_does_not_fit_is_skipped_with_a_warning(sd1):
    write_a1111_pt(sd1.paths.embeddings / "narrow.pt", random_vectors(1, 32, 1))
    result = run(sd1, prompt="a narrow fox")
    assert result.images
    assert any('Embedding "narrow" skipped' in w and "32" in w for w in result.warnings)


def test_a_vae_file_changes_the_decode_and_none_restores_it(sd1):
    path = write_ldm_vae(sd1.paths.vae / "sharp.vae.safetensors", other_vae(seed=42))
    own = run(sd1)
    sd1.options.update({"sd_vae": "sharp.vae.safetensors"}, save=False)
    swapped = run(sd1)
    params = parse_infotext(swapped.infotexts[0])
    assert params["VAE hash"] == sha(path)[:10] and params["VAE"] == "sharp.vae.safetensors"
    assert not np.array_equal(pixels(own.images[0]), pixels(swapped.images[0]))
    sd1.options.update({"sd_vae": "None"}, save=False)
    again = run(sd1)
    # the checkpoint's own VAE again, same request, batch size and process: bit-identical
    assert np.array_equal(pixels(own.images[0]), pixels(again.images[0]))
    assert "VAE hash" not in again.infotexts[0]


def test_automatic_picks_the_vae_named_like_the_checkpoint(sd1):
    write_ldm_vae(sd1.paths.checkpoints / "tiny-sd1.vae.safetensors", other_vae(seed=5))
    result = run(sd1)
    assert parse_infotext(result.infotexts[0])["VAE"] == "tiny-sd1.vae.safetensors"


def test_an_unknown_vae_name_is_an_error_naming_the_choices(sd1):
    write_ldm_vae(sd1.paths.vae / "real.safetensors", other_vae(seed=6))
    sd1.options.update({"sd_vae": "missing.safetensors"}, save=False)
    with pytest.raises(UnknownVaeError, match="missing.safetensors.*real.safetensors"):
        run(sd1)


def test_half_precision_nans_are_decoded_again_in_full_precision(sd1):
    _, model = sd1.models.get()
    reference = run(sd1)
    vae = model.vae
    original = {k: v.clone() for k, v in vae.state_dict().items()}
    with torch.no_grad():
        vae.post_quant_conv.weight.mul_(3e4)  # overflows float16 (max 65504), fine in float32
    try:
        full = run(sd1)
        vae.to(torch.float16)
        retried = run(sd1)
        assert vae.dtype == torch.float16
    finally:
        vae.to(torch.float32)
        vae.load_state_dict(original)
    assert any("NaNs in half precision" in w for w in retried.warnings)
    assert np.abs(pixels(retried.images[0]) - pixels(full.images[0])).max() <= 1
    assert not np.array_equal(pixels(full.images[0]), pixels(reference.images[0]))


def test_nans_in_full_precision_are_a_clear_error(sd1):
    _, model = sd1.models.get()
    weight = model.vae.post_quant_conv.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.fill_(float("nan"))
    try:
        with pytest.raises(NaNOutputError, match="even in full precision"):
            run(sd1)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
