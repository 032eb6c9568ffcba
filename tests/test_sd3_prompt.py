"""SD3 / SD3.5 prompt encoding: parity with diffusers' StableDiffusion3Pipeline.encode_prompt (with and without T5),
Forge's 75-token CLIP chunks for long prompts and BREAK, emphasis on CLIP and T5, clip skip, the token counter, and
the conditioning machinery (schedules, AND, batches) on rows with a T5 tail."""
from __future__ import annotations

import types

import pytest
import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from webui.models.t5_tokenizer import t5_tokenizer
from webui.models.tiny_t5_tokenizer import TINY_IDS, write_tiny_t5_tokenizer
from webui.models.tokenizer import clip_tokenizer
from webui.prompts.attention import EmphasisError
from webui.prompts.conditioning import BatchConditioning, build_conditioning, count_tokens
from webui.prompts.sd3_encoder import SD3PromptEncoder

L_WIDTH, G_WIDTH, T5_WIDTH = 32, 48, 128  # see /work/notes26/sd3_widths.md
POOLED = L_WIDTH + G_WIDTH
CPU = torch.device("cpu")
PLAIN = ["a photo of a cat sitting", "", "Portrait of an old man, cinematic lighting, very detailed!",
         "zebra 42 xylophone"]


def _clip(width: int, act: str) -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=width, hidden_act=act, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=1)).eval()


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3_prompt")
    torch.manual_seed(0)
    clip_l, clip_g = _clip(L_WIDTH, "quick_gelu"), _clip(G_WIDTH, "gelu")
    t5 = T5EncoderModel(T5Config(vocab_size=320, d_model=T5_WIDTH, d_kv=16, d_ff=64, num_layers=2, num_heads=4,
                                 feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0)).eval()
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=T5_WIDTH,
                                        caption_projection_dim=16, pooled_projection_dim=POOLED, out_channels=4,
                                        pos_embed_max_size=8).eval()
    write_tiny_t5_tokenizer(root / "t5")
    tokenizers = [clip_tokenizer(root / "cache"), clip_tokenizer(root / "cache", pad_token="!"),
                  t5_tokenizer([root / "t5"])]
    assert len(tokenizers[2]) == TINY_IDS <= t5.config.vocab_size
    assert tokenizers[1].pad_token_id == tokenizers[1].convert_tokens_to_ids("!") != tokenizers[0].pad_token_id

    def pipeline(with_t5: bool):
        return StableDiffusion3Pipeline(
            transformer=transformer, scheduler=None, vae=None, text_encoder=clip_l, tokenizer=tokenizers[0],
            text_encoder_2=clip_g, tokenizer_2=tokenizers[1], text_encoder_3=t5 if with_t5 else None,
            tokenizer_3=tokenizers[2] if with_t5 else None)

    return types.SimpleNamespace(clip_l=clip_l, clip_g=clip_g, t5=t5, tokenizers=tokenizers, pipe=pipeline(True),
                                 pipe_no_t5=pipeline(False))


def _encoder(parts, t5_max_length=256, emphasis="Original", with_t5=True, comma_backtrack=20):
    model = types.SimpleNamespace(
        text_encoders=[parts.clip_l, parts.clip_g, parts.t5 if with_t5 else None],
        tokenizers=[*parts.tokenizers[:2], parts.tokenizers[2] if with_t5 else None],
        t5_max_length=t5_max_length, joint_attention_dim=T5_WIDTH)
    return SD3PromptEncoder(model, CPU, emphasis=emphasis, comma_backtrack=comma_backtrack)


def _reference(pipe, text, length=256, clip_skip=None):
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(text, None, None, device=CPU, do_classifier_free_guidance=False,
                                                  clip_skip=clip_skip, max_sequence_length=length)
    return embeds, pooled


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def _framed(tokenizer, tokens: list[int]) -> torch.Tensor:
    ids = [tokenizer.bos_token_id] + tokens + [tokenizer.eos_token_id]
    return torch.tensor([ids + [tokenizer.pad_token_id] * (77 - len(ids))])


def _clip_chunk(parts, tokens: list[int]) -> torch.Tensor:
    """Both CLIPs' penultimate hidden states of one framed chunk, side by side: [1, 77, L + G]."""
    with torch.no_grad():
        hidden = [encoder(_framed(tok, tokens), output_hidden_states=True).hidden_states[-2]
                  for encoder, tok in ((parts.clip_l, parts.tokenizers[0]), (parts.clip_g, parts.tokenizers[1]))]
    return torch.cat(hidden, dim=-1)


def test_plain_prompts_equal_sd3_pipeline(parts):
    encoder = _encoder(parts)
    for text in PLAIN:
        embeds, pooled = _reference(parts.pipe, text)
        cond = encoder.encode(text)
        assert cond.embeds.shape == (1, 77 + 256, T5_WIDTH) and cond.pooled.shape == (1, POOLED)
        assert cond.chunks == 1 and cond.tail == 256
        assert torch.equal(cond.embeds, embeds), text
        assert torch.equal(cond.pooled, pooled), text
        assert torch.equal(cond.embeds[0, :77, POOLED:], torch.zeros(77, T5_WIDTH - POOLED))
    short = _encoder(parts, t5_max_length=77).encode(PLAIN[0])
    embeds, pooled = _reference(parts.pipe, PLAIN[0], length=77)
    assert torch.equal(short.embeds, embeds) and torch.equal(short.pooled, pooled)


def test_clip_skip_maps_onto_the_layers(parts):
    encoder = _encoder(parts)
    text = PLAIN[2]
    default, _ = _reference(parts.pipe, text)
    for skip in (1, 2):  # penultimate layer (diffusers' default; Forge's layer for clip skip 2)
        assert torch.equal(encoder.encode_batch([text], clip_skip=skip)[0].embeds, default)
    skipped, pooled = _reference(parts.pipe, text, clip_skip=1)  # diffusers: hidden_states[-3]
    cond = _encoder(parts).encode(text, clip_skip=3)
    assert torch.equal(cond.embeds, skipped) and torch.equal(cond.pooled, pooled)
    assert not torch.equal(skipped, default)


def test_without_t5_the_t5_part_is_zeros_as_diffusers(parts):
    encoder = _encoder(parts, with_t5=False)
    for text in PLAIN[:3]:
        embeds, pooled = _reference(parts.pipe_no_t5, text)
        cond = encoder.encode(text)
        assert cond.embeds.shape == (1, 77 + 256, T5_WIDTH)
        assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
        assert not cond.embeds[:, 256:].any()
    assert encoder.token_limit is None
    text = "a photo of a cat sitting"
    assert encoder.count_tokens(text) == len(_ids(parts.tokenizers[0], text))
    assert count_tokens(encoder, text, steps=20) == (len(_ids(parts.tokenizers[0], text)), 75)


def test_long_prompts_give_75_token_clip_chunks(parts):
    clip_tok, _, t5_tok = parts.tokenizers
    text = " ".join(["a beautiful detailed painting of an old castle on a mountain at night"] * 8)
    tokens = _ids(clip_tok, text)
    assert 75 < len(tokens) <= 150
    encoder = _encoder(parts)
    cond = encoder.encode(text)
    assert cond.chunks == 2 and cond.embeds.shape == (1, 2 * 77 + 256, T5_WIDTH)
    first, pooled = _reference(parts.pipe, text)  # diffusers truncates the CLIPs to the first 75 tokens
    assert torch.equal(cond.embeds[:, :77], first[:, :77]) and torch.equal(cond.pooled, pooled)
    assert torch.allclose(cond.embeds[:, 77:154, :POOLED], _clip_chunk(parts, tokens[75:]), atol=1e-6)
    assert not cond.embeds[:, 77:154, POOLED:].any()
    assert torch.equal(cond.embeds[:, 154:], first[:, 77:])  # T5 reads the whole prompt
    assert encoder.count_tokens(text) == len(_ids(t5_tok, text))
    no_t5 = _encoder(parts, with_t5=False)
    assert count_tokens(no_t5, text, steps=20) == (len(tokens), 150)


def test_comma_backtrack_moves_the_last_words_to_the_next_chunk(parts):
    clip_tok = parts.tokenizers[0]
    words = "a red hat " * 24  # 72 tokens
    text = words + ", a blue dog sitting in the garden"
    tokens = _ids(clip_tok, text)
    comma = tokens.index(clip_tok.convert_tokens_to_ids(",</w>"))
    assert comma == 72 and len(tokens) > 75
    cond = _encoder(parts, comma_backtrack=20).encode(text)
    assert torch.allclose(cond.embeds[:, :77, :POOLED], _clip_chunk(parts, tokens[:comma + 1]), atol=1e-6)
    assert torch.allclose(cond.embeds[:, 77:154, :POOLED], _clip_chunk(parts, tokens[comma + 1:]), atol=1e-6)
    plain = _encoder(parts, comma_backtrack=0).encode(text)
    assert torch.allclose(plain.embeds[:, 77:154, :POOLED], _clip_chunk(parts, tokens[75:]), atol=1e-6)


def test_t5_is_truncated_at_its_length(parts):
    t5_tok = parts.tokenizers[2]
    text = "a red cat sitting on the old house in the garden"
    content = _ids(t5_tok, text)
    assert len(content) > 7
    cond = _encoder(parts, t5_max_length=8).encode(text)
    embeds, pooled = _reference(parts.pipe, text, length=8)
    assert cond.embeds.shape == (1, 77 + 8, T5_WIDTH) and cond.tail == 8
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
    assert count_tokens(_encoder(parts, t5_max_length=8), text, steps=20) == (len(content), 7)
    assert count_tokens(_encoder(parts), text, steps=20) == (len(content), 255)


def test_emphasis_weights_only_the_emphasised_rows(parts):
    clip_tok, _, t5_tok = parts.tokenizers
    text, plain = "a photo of a (cat:1.5) sitting", "a photo of a cat sitting"
    z, pooled = _reference(parts.pipe, plain)
    clip_at = len(_ids(clip_tok, "a photo of a")) + 1  # after the start token
    t5_before, t5_cat = len(_ids(t5_tok, "a photo of a ")), len(_ids(t5_tok, "cat"))
    t5_rows = list(range(77 + t5_before, 77 + t5_before + t5_cat))
    weights = torch.ones(77 + 256)
    weights[clip_at] = 1.5
    weights[t5_rows] = 1.5
    scaled = z * weights[None, :, None]

    no_norm = _encoder(parts, emphasis="No norm").encode(text)
    changed = (no_norm.embeds != z).any(dim=-1)[0]
    assert changed.nonzero().flatten().tolist() == [clip_at, *t5_rows]
    assert torch.allclose(no_norm.embeds, scaled)

    original = _encoder(parts, emphasis="Original").encode(text)
    for block in ((slice(0, 77), slice(0, L_WIDTH)), (slice(0, 77), slice(L_WIDTH, POOLED)),
                  (slice(77, None), slice(None))):  # CLIP-L, CLIP-G, T5: each mean restored on its own
        expected = scaled[(0, *block)] * (z[(0, *block)].mean() / scaled[(0, *block)].mean())
        assert torch.allclose(original.embeds[(0, *block)], expected, rtol=1e-5, atol=1e-6)
    assert not original.embeds[0, :77, POOLED:].any()

    ignored = _encoder(parts, emphasis="Ignore").encode(text)
    assert torch.equal(ignored.embeds, z)
    for cond in (no_norm, original, ignored):  # pooled outputs read the text without brackets, unweighted
        assert torch.equal(cond.pooled, pooled)
    with pytest.raises(EmphasisError):
        _encoder(parts).encode("(cat:5000)")
    assert _encoder(parts).count_tokens("a (cat:1.2) [dog]") == len(_ids(t5_tok, "a cat dog"))


def test_break_starts_a_clip_chunk_and_ends_a_t5_segment(parts):
    _, _, t5_tok = parts.tokenizers
    cond = _encoder(parts, t5_max_length=32).encode("a red cat BREAK a blue dog")
    first, pooled = _reference(parts.pipe, "a red cat", length=32)
    second, _ = _reference(parts.pipe, "a blue dog", length=32)
    assert cond.chunks == 2 and cond.embeds.shape == (1, 2 * 77 + 32, T5_WIDTH)
    assert torch.equal(cond.embeds[:, :77], first[:, :77]) and torch.equal(cond.pooled, pooled)
    assert torch.equal(cond.embeds[:, 77:154], second[:, :77])
    ids = _ids(t5_tok, "a red cat") + [1] + _ids(t5_tok, "a blue dog") + [1]
    with torch.no_grad():
        t5 = parts.t5(torch.tensor([ids + [0] * (32 - len(ids))]))[0]
    assert torch.equal(cond.embeds[:, 154:], t5)


def test_schedules_and_and_batches_keep_the_t5_tail(parts):
    encoder = _encoder(parts, t5_max_length=16)
    long_negative = "blurry, " * 50  # 100 CLIP tokens: two chunks
    first = build_conditioning(encoder, "a [cat:dog:2] AND a red hat :0.5", long_negative, steps=4, clip_skip=1)
    second = build_conditioning(encoder, "a man", "", steps=4, clip_skip=1)
    empty, _ = _reference(parts.pipe, "", length=16)
    cat, _ = _reference(parts.pipe, "a cat", length=16)
    dog, _ = _reference(parts.pipe, "a dog", length=16)
    negative, _ = _reference(parts.pipe, long_negative, length=16)
    for step in range(4):
        uncond, conds = first.at_step(step)
        for cond in [uncond, *conds]:
            assert cond.embeds.shape == (1, 2 * 77 + 16, T5_WIDTH) and cond.pooled.shape == (1, POOLED)
            assert cond.tail == 16 and cond.chunks == 2
        animal = cat if step <= 2 else dog
        assert torch.allclose(conds[0].embeds[:, :77], animal[:, :77], atol=1e-6)  # its own chunk,
        assert torch.allclose(conds[0].embeds[:, 77:154], empty[:, :77], atol=1e-6)  # the empty chunk,
        assert torch.allclose(conds[0].embeds[:, 154:], animal[:, 77:], atol=1e-6)  # then its own T5 rows
        assert torch.equal(uncond.embeds[:, :77], negative[:, :77]) and torch.equal(uncond.embeds[:, 154:],
                                                                                     negative[:, 77:])
        unconds, rows = BatchConditioning([first, second]).at_step(step)
        for cond in [*unconds, *[c for row in rows for c in row]]:
            assert cond.embeds.shape == (1, 2 * 77 + 16, T5_WIDTH) and cond.tail == 16
        assert torch.equal(unconds[1].embeds[:, :77], empty[:, :77])
        assert torch.equal(unconds[1].embeds[:, 154:], empty[:, 77:])
    assert first.weights == [1.0, 0.5]
    cond, uncond = encoder.encode_pair(long_negative, "a cat")
    assert cond.embeds.shape == uncond.embeds.shape == (1, 2 * 77 + 16, T5_WIDTH)
    assert torch.equal(uncond.embeds[:, 154:], cat[:, 77:])
    assert encoder.info.embeddings == {}


def test_clip_g_reads_exclamation_marks_with_its_own_tokenizer(parts):
    """SD3's CLIP-G tokenizer pads with `!`, so a `!` in the text is its pad id there (diffusers and Forge
    tokenize each CLIP with its own tokenizer); the two CLIPs can then fill a different number of chunks."""
    clip_tok, g_tok, _ = parts.tokenizers
    text = "!" * 100
    l_tokens, g_tokens = _ids(clip_tok, text), _ids(g_tok, text)
    assert len(l_tokens) <= 75 < len(g_tokens)
    encoder = _encoder(parts)
    cond = encoder.encode(text)
    first, pooled = _reference(parts.pipe, text)
    assert cond.chunks == 2 and torch.equal(cond.embeds[:, :77], first[:, :77])
    assert torch.equal(cond.pooled, pooled) and torch.equal(cond.embeds[:, 154:], first[:, 77:])
    with torch.no_grad():
        g_second = parts.clip_g(_framed(g_tok, g_tokens[75:]), output_hidden_states=True).hidden_states[-2]
        l_empty = parts.clip_l(_framed(clip_tok, []), output_hidden_states=True).hidden_states[-2]
    assert torch.allclose(cond.embeds[:, 77:154, L_WIDTH:POOLED], g_second, atol=1e-6)
    assert torch.allclose(cond.embeds[:, 77:154, :L_WIDTH], l_empty, atol=1e-6)
    assert count_tokens(_encoder(parts, with_t5=False), text, steps=20) == (len(g_tokens), 150)
