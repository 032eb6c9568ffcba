"""FLUX.1 prompt encoding: parity with diffusers' FluxPipeline.encode_prompt, Forge's T5 emphasis and BREAK,
truncation at the T5 limit, the token counter, and the conditioning machinery on fixed-length rows."""
from __future__ import annotations

import types

import pytest
import torch
from diffusers import FluxPipeline
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from webui.models.t5_tokenizer import t5_tokenizer
from webui.models.tiny_t5_tokenizer import TINY_IDS, write_tiny_t5_tokenizer
from webui.models.tokenizer import clip_tokenizer
from webui.prompts.attention import EmphasisError
from webui.prompts.conditioning import BatchConditioning, build_conditioning, count_tokens
from webui.prompts.flux_encoder import FluxPromptEncoder

T5_WIDTH, CLIP_WIDTH = 48, 32
PLAIN = ["a photo of a cat sitting", "", "Portrait of an old man, cinematic lighting, very detailed!",
         "zebra 42 xylophone (literal) [x]"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux_prompt")
    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=CLIP_WIDTH, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                        hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                                        pad_token_id=1)).eval()
    t5 = T5EncoderModel(T5Config(vocab_size=320, d_model=T5_WIDTH, d_kv=12, d_ff=64, num_layers=2, num_heads=4,
                                 feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0)).eval()
    write_tiny_t5_tokenizer(root / "t5")
    tokenizers = [clip_tokenizer(root / "cache"), t5_tokenizer([root / "t5"])]
    assert len(tokenizers[1]) == TINY_IDS <= t5.config.vocab_size
    pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=clip, tokenizer=tokenizers[0], text_encoder_2=t5,
                        tokenizer_2=tokenizers[1], transformer=None)
    return clip, t5, tokenizers, pipe


def _encoder(parts, t5_max_length=512, emphasis="Original"):
    clip, t5, tokenizers, _ = parts
    model = types.SimpleNamespace(text_encoders=[clip, t5], tokenizers=tokenizers, t5_max_length=t5_max_length)
    return FluxPromptEncoder(model, torch.device("cpu"), emphasis=emphasis)


def _t5_reference(parts, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return parts[1](torch.tensor([ids]))[0]


@pytest.mark.parametrize("length", [512, 256])
def test_plain_prompts_equal_flux_pipeline(parts, length):
    encoder = _encoder(parts, length)
    pipe = parts[3]
    for text in PLAIN[:3]:
        cond = encoder.encode(text, clip_skip=2)  # clip skip does not apply to Flux
        with torch.no_grad():
            embeds, pooled, _ = pipe.encode_prompt(text, None, device=torch.device("cpu"),
                                                   max_sequence_length=length)
        assert cond.embeds.shape == (1, length, T5_WIDTH) and cond.pooled.shape == (1, CLIP_WIDTH)
        assert torch.equal(cond.embeds, embeds), text
        assert torch.equal(cond.pooled, pooled), text
        assert cond.chunks == 1


def test_emphasis_weights_only_the_emphasised_rows(parts):
    _, _, (_, t5_tok), pipe = parts
    text, plain = "a photo of a (cat:1.5) sitting", "a photo of a cat sitting"
    with torch.no_grad():
        z = pipe._get_t5_prompt_embeds(plain, max_sequence_length=64, device=torch.device("cpu"))
        pooled = pipe._get_clip_prompt_embeds(plain, device=torch.device("cpu"))
    before = t5_tok("a photo of a ", add_special_tokens=False).input_ids
    cat = t5_tok("cat", add_special_tokens=False).input_ids
    weights = torch.ones(64)
    weights[len(before):len(before) + len(cat)] = 1.5

    no_norm = _encoder(parts, 64, "No norm").encode(text)
    changed = (no_norm.embeds != z).any(dim=-1)[0]
    assert changed.nonzero().flatten().tolist() == list(range(len(before), len(before) + len(cat)))
    assert torch.allclose(no_norm.embeds, z * weights[None, :, None])

    original = _encoder(parts, 64, "Original").encode(text)
    scaled = z * weights[None, :, None]
    assert torch.allclose(original.embeds, scaled * (z.mean() / scaled.mean()), rtol=1e-6, atol=1e-7)
    assert torch.allclose(original.embeds.mean(), z.mean(), rtol=1e-5)

    ignored = _encoder(parts, 64, "Ignore").encode(text)
    assert torch.equal(ignored.embeds, z)
    for cond in (no_norm, original, ignored):  # the pooled output reads the text without brackets, unweighted
        assert torch.equal(cond.pooled, pooled)


def test_break_closes_a_segment_with_eos(parts):
    _, _, (_, t5_tok), pipe = parts
    encoder = _encoder(parts, 32)
    first = t5_tok("a red cat", add_special_tokens=False).input_ids
    second = t5_tok("a blue dog", add_special_tokens=False).input_ids
    ids = first + [1] + second + [1]
    expected = _t5_reference(parts, ids + [0] * (32 - len(ids)))
    cond = encoder.encode("a red cat BREAK a blue dog")
    assert torch.equal(cond.embeds, expected)
    with torch.no_grad():
        assert torch.equal(cond.pooled, pipe._get_clip_prompt_embeds("a red cat", device=torch.device("cpu")))
    assert encoder.count_tokens("a red cat BREAK a blue dog") == len(ids) - 1
    trailing = encoder.encode("a red cat BREAK")  # a trailing BREAK adds nothing
    with torch.no_grad():
        plain = pipe._get_t5_prompt_embeds("a red cat", max_sequence_length=32, device=torch.device("cpu"))
    assert torch.equal(trailing.embeds, plain)


def test_long_prompts_are_truncated_at_the_limit(parts):
    _, _, (_, t5_tok), pipe = parts
    encoder = _encoder(parts, 16)
    text = ", ".join(["a beautiful detailed painting of a castle"] * 4)
    content = t5_tok(text, add_special_tokens=False).input_ids
    assert len(content) > 15
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt(text, None, device=torch.device("cpu"), max_sequence_length=16)
    cond = encoder.encode(text)
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
    assert torch.equal(cond.embeds, _t5_reference(parts, content[:15] + [1]))
    assert encoder.count_tokens(text) == len(content)
    assert count_tokens(encoder, text, steps=20) == (len(content), 15)
    assert count_tokens(_encoder(parts, 512), "a cat", steps=20) == (2, 511)


def test_token_counts_follow_the_t5_tokenizer(parts):
    t5_tok = parts[2][1]
    encoder = _encoder(parts)
    for text in PLAIN:
        if "(" in text:
            continue
        assert encoder.count_tokens(text) == len(t5_tok(text, add_special_tokens=False).input_ids)
    assert encoder.count_tokens("a (cat:1.2) [dog]") == len(t5_tok("a cat dog", add_special_tokens=False).input_ids)
    assert encoder.count_tokens("(cat:5000)") == len(t5_tok("cat", add_special_tokens=False).input_ids)
    with pytest.raises(EmphasisError):
        encoder.encode("(cat:5000)")


def test_schedules_and_and_keep_fixed_length_rows(parts):
    encoder = _encoder(parts, 32)
    first = build_conditioning(encoder, "a [cat:dog:2] AND a red hat :0.5", "blurry", steps=4, clip_skip=1)
    second = build_conditioning(encoder, "a very long prompt " * 20, "", steps=4, clip_skip=1)
    for step in range(4):
        uncond, conds = first.at_step(step)
        for cond in [uncond, *conds]:
            assert cond.embeds.shape == (1, 32, T5_WIDTH) and cond.pooled.shape == (1, CLIP_WIDTH)
        unconds, rows = BatchConditioning([first, second]).at_step(step)
        assert all(c.embeds.shape == (1, 32, T5_WIDTH) for c in [*unconds, *[c for row in rows for c in row]])
    expected_cat = encoder.encode("a cat")
    assert torch.equal(first.at_step(0)[1][0].embeds, expected_cat.embeds)
    assert torch.equal(first.at_step(3)[1][0].embeds, encoder.encode("a dog").embeds)
    assert first.weights == [1.0, 0.5]
    pair = encoder.encode_pair("a cat", "")
    assert torch.equal(pair[1].embeds, encoder.empty().embeds)
    assert encoder.info.embeddings == {}
