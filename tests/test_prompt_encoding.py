"""Prompt text to conditioning tensors, checked against the algorithm computed by hand from the text encoder:
emphasis, chunks, BREAK, comma backtrack, clip skip, SDXL's pooled output, embeddings, schedules and AND."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from webui.models.devices import DevicePolicy
from webui.models.loader import load_checkpoint
from webui.prompts.conditioning import build_conditioning, count_tokens
from webui.prompts.encoder import PromptEncoder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory):
    cache = tmp_path_factory.mktemp("encoding-cache")
    return {kind: load_checkpoint(tiny_models[kind], DevicePolicy.cpu(), cache, tiny_models[kind].with_suffix(".yaml"))
            for kind in ("sd1", "sd2-v", "sdxl")}


def ids_of(model, text: str) -> list[int]:
    return model.tokenizers[0](text, add_special_tokens=False).input_ids


def frame(tokenizer, tokens: list[int]) -> torch.Tensor:
    ids = [49406] + tokens + [49407]
    return torch.tensor([ids + [tokenizer.pad_token_id] * (77 - len(ids))])


def reference(model, pieces: list[tuple[str, float]], hidden=lambda out: out.last_hidden_state) -> torch.Tensor:
    """One chunk, emphasis 'Original', computed directly: z *= weights; z *= mean_before / mean_after."""
    tokens, weights = [], []
    for text, weight in pieces:
        ids = ids_of(model, text)
        tokens += ids
        weights += [weight] * len(ids)
    outputs = []
    for tokenizer, encoder in zip(model.tokenizers, model.text_encoders):
        with torch.no_grad():
            z = hidden(encoder(frame(tokenizer, tokens), output_hidden_states=True))
        w = torch.tensor([1.0] + weights + [1.0] * (76 - len(weights))).reshape(1, 77, 1)
        before = z.mean()
        z = z * w
        outputs.append(z * (before / z.mean()))
    return torch.cat(outputs, dim=-1)


@pytest.mark.parametrize("kind", ["sd1", "sd2-v"])
def test_emphasis_matches_the_algorithm(models, kind):
    model = models[kind]
    ours = PromptEncoder(model, CPU).encode("a (red:1.5) fox, [snow], ((night))").embeds
    expected = reference(model, [("a", 1.0), ("red", 1.5), ("fox,", 1.0), ("snow", 1 / 1.1), (",", 1.0),
                                 ("night", 1.1 * 1.1)])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_sdxl_emphasis_per_encoder_and_penultimate_layer(models):
    model = models["sdxl"]
    ours = PromptEncoder(model, CPU).encode("(castle:0.7) on a hill").embeds
    expected = reference(model, [("castle", 0.7), ("on a hill", 1.0)], hidden=lambda out: out.hidden_states[-2])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_no_norm_and_ignore_modes(models):
    model = models["sd1"]
    plain = PromptEncoder(model, CPU).encode("a fox").embeds
    ignored = PromptEncoder(model, CPU, emphasis="Ignore").encode("a (fox:1.8)").embeds
    assert torch.equal(plain, ignored)
    no_norm = PromptEncoder(model, CPU, emphasis="No norm").encode("a (fox:2)").embeds
    with torch.no_grad():
        z = model.text_encoders[0](frame(model.tokenizers[0], ids_of(model, "a fox"))).last_hidden_state
    z[:, 2] *= 2
    torch.testing.assert_close(no_norm, z, rtol=0, atol=1e-6)


def test_plain_prompt_is_the_bare_encoder_output(models):
    model = models["sd1"]
    with torch.no_grad():
        bare = model.text_encoders[0](frame(model.tokenizers[0], ids_of(model, "a fox"))).last_hidden_state
    assert torch.equal(PromptEncoder(model, CPU).encode("a fox").embeds, bare)


def test_clip_skip_takes_an_earlier_layer_then_the_final_norm(models):
    model = models["sd1"]
    encoder = model.text_encoders[0]
    with torch.no_grad():
        out = encoder(frame(model.tokenizers[0], ids_of(model, "a fox")), output_hidden_states=True)
        expected = encoder.final_layer_norm(out.hidden_states[-2])
    torch.testing.assert_close(PromptEncoder(model, CPU).encode("a fox", clip_skip=2).embeds, expected,
                               rtol=0, atol=0)


@pytest.mark.parametrize("prompt,chunks", [
    ("a fox", 1),
    (" ".join(["fox"] * 75), 1),
    (" ".join(["fox"] * 76), 2),
    (" ".join(["fox"] * 160), 3),
    ("a fox BREAK a hen", 2),
    ("BREAK", 1),  # A1111: a chunk closed by BREAK, nothing after it
    ("a fox BREAK", 1),
    ("a BREAK b BREAK c", 3),
])
def test_chunk_counts(models, prompt, chunks):
    cond = PromptEncoder(models["sd1"], CPU).encode(prompt)
    assert cond.embeds.shape == (1, 77 * chunks, 64)


def test_break_encodes_each_part_as_its_own_chunk(models):
    model = models["sd1"]
    encoder = PromptEncoder(model, CPU)
    both = encoder.encode("a red fox BREAK snowy night").embeds
    assert torch.equal(both[:, :77], encoder.encode("a red fox").embeds)
    assert torch.equal(both[:, 77:], encoder.encode("snowy night").embeds)


def test_prompt_and_negative_are_padded_with_the_empty_prompt(models):
    encoder = PromptEncoder(models["sd1"], CPU)
    cond, uncond = encoder.encode_pair(" ".join(["fox"] * 100), "blurry")
    assert cond.embeds.shape == uncond.embeds.shape == (1, 154, 64)
    assert torch.equal(uncond.embeds[:, :77], encoder.encode("blurry").embeds)
    assert torch.equal(uncond.embeds[:, 77:], encoder.encode("").embeds)


def test_sdxl_pooled_output_comes_from_the_first_chunk(models):
    model = models["sdxl"]
    encoder = PromptEncoder(model, CPU)
    long = encoder.encode("a castle on a hill BREAK " + " ".join(["tower"] * 80))
    first = encoder.encode("a castle on a hill")
    assert long.embeds.shape[1] == 77 * 3
    assert torch.equal(long.pooled, first.pooled)
    with torch.no_grad():
        direct = model.text_encoders[1](frame(model.tokenizers[1], ids_of(model, "a castle on a hill"))).text_embeds
    torch.testing.assert_close(first.pooled, direct, rtol=0, atol=0)


@dataclass
class FakeEmbedding:
    name: str
    vectors: torch.Tensor
    shorthash: str = "0123456789ab"

    @property
    def vector_count(self) -> int:
        return self.vectors.shape[0]

    def vectors_for(self, model, index: int) -> torch.Tensor:
        return self.vectors


def test_embedding_vectors_replace_their_name(models):
    """Reference: put the vectors into spare vocabulary rows and encode those token ids."""
    model = models["sd1"]
    vectors = torch.randn(3, 64)
    embedding = FakeEmbedding("mystyle", vectors)
    encoder = PromptEncoder(model, CPU, {"mystyle": embedding})
    ours = encoder.encode("a fox, mystyle").embeds
    assert encoder.info.embeddings == {"mystyle": embedding}

    text_encoder = model.text_encoders[0]
    table = text_encoder.get_input_embeddings().weight
    spare = [49400, 49401, 49402]
    saved = table[spare].clone()
    try:
        with torch.no_grad():
            table[spare] = vectors
            expected = text_encoder(frame(model.tokenizers[0], ids_of(model, "a fox,") + spare)).last_hidden_state
    finally:
        with torch.no_grad():
            table[spare] = saved
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert count_tokens(encoder, "a fox, mystyle", 20) == (6, 75)  # the name counts as its 3 vectors


def test_an_embedding_is_never_split_across_chunks(models):
    encoder = PromptEncoder(models["sd1"], CPU, {"wide": FakeEmbedding("wide", torch.randn(8, 64))})
    chunks, _ = encoder.chunks(" ".join(["fox"] * 70) + " wide")
    assert [len(c.tokens) for c in chunks] == [70, 8]
    assert chunks[1].embeddings[0].offset == 0


def test_token_counter(models):
    encoder = PromptEncoder(models["sd1"], CPU)
    assert count_tokens(encoder, "a red fox", 20) == (3, 75)
    assert count_tokens(encoder, " ".join(["fox"] * 80), 20) == (80, 150)
    assert count_tokens(encoder, "a BREAK b", 20) == (76, 150)
    assert count_tokens(encoder, "[short:" + " ".join(["long"] * 90) + ":5]", 20) == (90, 150)
    assert count_tokens(encoder, "", 20) == (0, 75)


# --- schedules and AND ---------------------------------------------------------------------------------------------

def test_prompt_editing_switches_at_the_right_step(models):
    encoder = PromptEncoder(models["sd1"], CPU)
    conditioning = build_conditioning(encoder, "a [fox:hen:0.5] in snow", "blurry", 10, 1)
    fox, hen = (c.embeds for c in encoder.encode_batch(["a fox in snow", "a hen in snow"]))
    used = [conditioning.at_step(step)[1][0].embeds for step in range(10)]
    # A1111: the entry ending at step 5 is in force for step indices 0..5
    assert all(torch.equal(used[i], fox) for i in range(6))
    assert all(torch.equal(used[i], hen) for i in range(6, 10))
    torch.testing.assert_close(fox, encoder.encode("a fox in snow").embeds, rtol=0, atol=1e-5)
    assert torch.equal(conditioning.at_step(3)[0].embeds, encoder.encode("blurry").embeds)


def test_alternation_switches_every_step(models):
    encoder = PromptEncoder(models["sd1"], CPU)
    conditioning = build_conditioning(encoder, "[cat|dog] portrait", "", 6, 1)
    cat, dog = encoder.encode_batch(["cat portrait", "dog portrait"])
    seen = ["cat" if torch.equal(conditioning.at_step(i)[1][0].embeds, cat.embeds) else
            "dog" if torch.equal(conditioning.at_step(i)[1][0].embeds, dog.embeds) else "?" for i in range(6)]
    assert seen == ["cat", "cat", "dog", "cat", "dog", "cat"]


def test_scheduled_texts_share_the_emphasis_batch_as_in_a1111(models):
    """A1111 encodes the texts of one schedule as a batch; the emphasis mean is taken over that batch (repeated
    texts count as often as they appear)."""
    model = models["sd1"]
    encoder = PromptEncoder(model, CPU)
    conditioning = build_conditioning(encoder, "[(fox:1.4)|hen|hen]", "", 3, 1)
    with torch.no_grad():
        z = torch.cat([model.text_encoders[0](frame(model.tokenizers[0], ids_of(model, t))).last_hidden_state
                       for t in ("fox", "hen", "hen")])
    weights = torch.ones(3, 77, 1)
    weights[0, 1] = 1.4
    expected = z * weights * (z.mean() / (z * weights).mean())
    torch.testing.assert_close(conditioning.at_step(0)[1][0].embeds, expected[:1], rtol=0, atol=1e-6)
    torch.testing.assert_close(conditioning.at_step(2)[1][0].embeds, expected[1:2], rtol=0, atol=1e-6)


def test_and_gives_weighted_sub_prompts(models):
    encoder = PromptEncoder(models["sd1"], CPU)
    conditioning = build_conditioning(encoder, "a fox :1.2 AND " + " ".join(["snow"] * 80), "", 4, 1)
    assert conditioning.weights == [1.2, 1.0] and conditioning.composable
    uncond, conds = conditioning.at_step(0)
    assert uncond.embeds.shape == conds[0].embeds.shape == conds[1].embeds.shape == (1, 154, 64)
    assert torch.equal(conds[0].embeds[:, :77], encoder.encode("a fox").embeds)
    plain = build_conditioning(encoder, "a fox", "", 4, 1)
    assert not plain.composable
