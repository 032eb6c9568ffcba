"""ZImagePromptEncoder against diffusers' ZImagePipeline.encode_prompt on a tiny random Qwen3Model and the tiny
Qwen tokenizer: plain prompts equal exactly; emphasis, BREAK and the token counter against references computed here
from the pipeline's own output and the tokenizer."""
from __future__ import annotations

import types

import pytest
import torch
from diffusers import ZImagePipeline
from transformers import Qwen3Config, Qwen3Model

from webui.prompts.attention import EmphasisError
from webui.prompts.conditioning import BatchConditioning, build_conditioning, count_tokens
from webui.prompts.zimage_encoder import ZImagePromptEncoder
from webui.models.qwen_tokenizer import qwen_tokenizer
from webui.models.tiny_qwen_tokenizer import TINY_QWEN_IDS, write_tiny_qwen_tokenizer

CPU = torch.device("cpu")
WIDTH = 64


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tokenizer = qwen_tokenizer([write_tiny_qwen_tokenizer(tmp_path_factory.mktemp("qwen"))])
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=TINY_QWEN_IDS + 11, hidden_size=WIDTH, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)
    qwen = Qwen3Model(config).eval()
    pipe = ZImagePipeline(scheduler=None, vae=None, text_encoder=qwen, tokenizer=tokenizer, transformer=None)
    return tokenizer, qwen, pipe


def make_encoder(parts, emphasis="Original", max_length=512):
    tokenizer, qwen, _ = parts
    model = types.SimpleNamespace(text_encoders=[qwen], tokenizers=[tokenizer], text_max_length=max_length)
    return ZImagePromptEncoder(model, CPU, emphasis=emphasis)


@torch.no_grad()
def reference(parts, prompts, max_length=512):
    """ZImagePipeline.encode_prompt's per-prompt embeddings (it rewrites the list it is given: pass a copy)."""
    embeds, negatives = parts[2].encode_prompt(list(prompts), device=CPU, do_classifier_free_guidance=True,
                                               max_sequence_length=max_length)
    return embeds, negatives


def test_plain_prompts_equal_the_pipeline_exactly(parts):
    prompts = ["a red hat, photo 1", "cat", "the old house by the river at night", "二 ünïcode  spaces"]
    expected, negatives = reference(parts, prompts)
    encoder = make_encoder(parts)
    got = encoder.encode_batch(prompts + ["cat"])
    for cond, want in zip(got, expected + [expected[1]]):
        assert cond.embeds.shape == (1, want.shape[0], WIDTH) and cond.pooled is None and cond.fixed_length
        assert torch.equal(cond.embeds[0], want)
    assert got[1] is got[4]  # a repeated text is encoded once
    assert torch.equal(encoder.empty().embeds[0], negatives[0])  # the pipeline's uncond: the empty prompt
    uncond, cond = encoder.encode_pair("", "cat")
    assert torch.equal(uncond.embeds[0], negatives[0]) and torch.equal(cond.embeds[0], expected[1])


def test_long_prompts_are_truncated_as_the_pipeline_does(parts):
    prompt = ", ".join(["a red hat"] * 12)
    (expected,), _ = reference(parts, [prompt], max_length=24)
    cond = make_encoder(parts, max_length=24).encode(prompt)
    assert expected.shape[0] == 24 and torch.equal(cond.embeds[0], expected)


def token_weights(parts, plain: str, weighted: dict[str, float]) -> torch.Tensor:
    """Per-row weights of `plain` rendered as the pipeline does: rows whose token text (stripped) is a key weigh
    its value."""
    tokenizer = parts[0]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": plain}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=True)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(rendered).input_ids)
    return torch.tensor([weighted.get(t.replace("Ġ", ""), 1.0) for t in tokens]).reshape(-1, 1)


def test_emphasis_weights_the_rows_of_the_same_tokens_and_restores_the_mean(parts):
    (plain,), _ = reference(parts, ["a red hat, photo"])
    weights = token_weights(parts, "a red hat, photo", {"red": 1.5, "photo": 0.8})
    text = "a (red:1.5) hat, [photo:0.8]".replace("[photo:0.8]", "(photo:0.8)")
    original = make_encoder(parts).encode(text).embeds[0]
    scaled = plain * weights
    assert torch.allclose(original, scaled * (plain.mean() / scaled.mean()), atol=1e-6)
    assert torch.allclose(make_encoder(parts, "No norm").encode(text).embeds[0], scaled, atol=1e-6)
    assert torch.equal(make_encoder(parts, "Ignore").encode(text).embeds[0], plain)
    with pytest.raises(EmphasisError):
        make_encoder(parts).encode("(" * 80 + "cat" + ")" * 80)


def test_break_joins_parts_encoded_alone(parts):
    tokenizer = parts[0]
    (first, second), _ = reference(parts, ["a red hat", "photo of a cat"])
    opening = len(tokenizer("<|im_start|>user\n").input_ids)
    closing = len(tokenizer("<|im_end|>\n<|im_start|>assistant\n").input_ids)
    expected = torch.cat([first[:-closing], second[opening:]])
    encoder = make_encoder(parts)
    assert torch.equal(encoder.encode("a red hat BREAK photo of a cat").embeds[0], expected)
    assert torch.equal(encoder.encode("BREAK a red hat BREAK BREAK photo of a cat BREAK").embeds[0], expected)
    assert encoder.count_tokens("a red hat BREAK photo of a cat") == expected.shape[0] - opening - closing


def test_token_counter_counts_prompt_tokens_against_the_room_left_by_the_template(parts):
    tokenizer = parts[0]
    encoder = make_encoder(parts)
    template = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=True)
    assert encoder.token_limit == 512 - len(tokenizer(template).input_ids)
    assert encoder.count_tokens("a red hat, photo 1") == len(tokenizer("a red hat, photo 1").input_ids)
    assert encoder.count_tokens("a (red:1.3) hat") == len(tokenizer("a red hat").input_ids)
    assert encoder.count_tokens("") == 0
    longest = "[a red hat:the old house by the river:3]"
    assert count_tokens(encoder, longest, 10) == (len(tokenizer("the old house by the river").input_ids),
                                                  encoder.token_limit)


def test_rows_keep_their_own_lengths_through_the_conditioning_layer(parts):
    encoder = make_encoder(parts)
    conditioning = build_conditioning(encoder, "a red hat AND photo of a cat", "", steps=4, clip_skip=1)
    batch = BatchConditioning([conditioning, build_conditioning(encoder, "cat", "", steps=4, clip_skip=1)])
    unconds, sub_prompts = batch.at_step(0)
    (expected_hat, expected_photo, expected_cat), (empty, *_) = reference(
        parts, ["a red hat", "photo of a cat", "cat"])
    assert [u.embeds.shape[1] for u in unconds] == [empty.shape[0]] * 2
    assert torch.equal(sub_prompts[0][0].embeds[0], expected_hat)
    assert torch.equal(sub_prompts[1][0].embeds[0], expected_photo)
    assert torch.equal(sub_prompts[0][1].embeds[0], expected_cat)  # never padded to the other image's length
    assert sub_prompts[1][1] is unconds[1]  # the second image has one sub-prompt: its uncond at weight 0
