"""Prompt text to SD3 / SD3.5's conditioning: CLIP-L and CLIP-G hidden states beside each other, then T5-XXL's
sequence, and both CLIPs' projected pooled outputs.

`SD3PromptEncoder` has `PromptEncoder`'s interface, so prompt editing, alternation, AND and the token counter work
on it unchanged. Each text becomes one `Conditioning`: `embeds` = `[1, 77 * chunks + t5_max_length, width]` (the
CLIP chunks, CLIP-L's and CLIP-G's channels side by side and zero-padded to T5's width, followed by T5's sequence),
`pooled` = `[1, proj_L + proj_G]` and `tail` = `t5_max_length`, so padding to more chunks puts the empty prompt's
CLIP chunk before the T5 rows.

Without emphasis, BREAK or more than 75 CLIP tokens this is exactly diffusers' `StableDiffusion3Pipeline.
encode_prompt`: each CLIP reads the prompt framed and padded to 77 (CLIP-L pads with `<|endoftext|>`, CLIP-G's
tokenizer with `!`) and gives its penultimate hidden states and projected pooled output; T5 reads it tokenized to
`t5_max_length` (256 by default; longer prompts truncated, `</s>` last) with no attention mask. Without a T5 encoder
(`text_encoders[2] is None`, SD3 run without T5) the T5 part is zeros of `t5_max_length` rows, as diffusers does
and as Forge does when T5 is disabled; the width is then `model.joint_attention_dim` (the transformer's).

Longer prompts, emphasis, BREAK and clip skip follow Forge's SD3 engine (backend/diffusion_engine/sd35.py with
backend/text_processing/classic_engine.py, t5_engine.py and emphasis.py):
- CLIP-L and CLIP-G each go through A1111's 75-token chunk machinery (`PromptEncoder`: BREAK, comma backtrack,
  chunks concatenated on the token axis, shorter texts of a batch padded with empty chunks, the pooled outputs
  from the first chunk). Emphasis multiplies each encoder's rows by their weights; "Original" restores the mean
  of each encoder's output over the batch of texts encoded together, separately for L and G, as A1111 does.
- T5 has no chunks: emphasis and BREAK as `FluxPromptEncoder` (per-token weights, "Original" restores the mean of
  the whole sequence per text; BREAK ends a segment with `</s>`). Forge lets T5's sequence grow past 256 tokens
  for long prompts and turns a BREAK into extra T5 batch rows (which its SD3 engine cannot concatenate with the
  CLIP rows); here T5 is truncated at `t5_max_length` as diffusers does, so every text has the same T5 length
  and cond / uncond rows batch together.
- Clip skip: Forge takes `hidden_states[-max(clip_skip, 1)]` of both CLIPs without the final norm, so its default
  (1) is the last layer; diffusers' (and A1111 1.10's SD3) reference is the penultimate layer. Here clip skip N
  takes `hidden_states[-max(N, 2)]`: 1 and 2 are the penultimate layer (diffusers' default), N > 2 is Forge's
  layer for N (= diffusers' `clip_skip=N - 2`). The pooled outputs always come from the final layer.
- CLIP-L's pooled output is projected (diffusers; Forge passes it unprojected, since its engine projects only
  encoders not named `clip_l`).
- Textual inversion embeddings are not used (`info.embeddings` stays empty). An empty negative prompt is encoded
  like any text (diffusers); Forge zeroes it, which is the caller's choice to make, not the encoder's.

`count_tokens` counts T5's tokens (as Forge's SD3 counter) with `token_limit` = `t5_max_length - 1` when there is
a T5 encoder; without one, the CLIP tokens against 75-token chunks (`token_limit` is None).
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from itertools import zip_longest

import torch

from .encoder import Conditioning, PromptEncoder
from .flux_encoder import FluxPromptEncoder
from .tokens import COMMA_BACKTRACK, TokenChunk

DEFAULT_T5_LENGTH = 256  # diffusers' max_sequence_length for SD3
DEFAULT_JOINT_WIDTH = 4096  # SD3's joint_attention_dim (T5-XXL's width)


@dataclass
class PairedChunk(TokenChunk):
    """A CLIP-L chunk carrying CLIP-G's chunk at the same index. The two tokenizers differ where a prompt holds
    `!`: CLIP-G's pads with `!`, so (as in diffusers and Forge) a `!` in the text becomes its pad id there."""
    g: TokenChunk = field(default_factory=TokenChunk)


class SD3PromptEncoder(PromptEncoder):
    """Encodes text with a loaded SD3 model's encoders: `model.text_encoders = [clip_l, clip_g, t5 or None]`
    (CLIPTextModelWithProjection x2, T5EncoderModel), `model.tokenizers` in the same order (the T5 one may be None
    without T5), `model.t5_max_length` and, for the zero T5 part without T5, `model.joint_attention_dim`.
    `embeddings` is accepted for PromptEncoder's interface and not used."""

    def __init__(self, model, device: torch.device, embeddings: dict | None = None, emphasis: str = "Original",
                 comma_backtrack: int = COMMA_BACKTRACK):
        super().__init__(model, device, None, emphasis, comma_backtrack)
        self._g_chunker = PromptEncoder(types.SimpleNamespace(tokenizers=[model.tokenizers[1]]), device, None,
                                        emphasis, comma_backtrack)
        self.max_length = int(getattr(model, "t5_max_length", None) or DEFAULT_T5_LENGTH)
        t5 = model.text_encoders[2] if len(model.text_encoders) > 2 else None
        t5_tokenizer = model.tokenizers[2] if len(model.tokenizers) > 2 else None
        self._t5_model = t5 if t5_tokenizer is not None else None
        # T5's token side (BREAK segments, weights, truncation, emphasis) is FLUX.1's: reuse it on SD3's T5.
        self._t5 = None if self._t5_model is None else FluxPromptEncoder(
            types.SimpleNamespace(tokenizers=[model.tokenizers[0], t5_tokenizer], text_encoders=[None, t5],
                                  t5_max_length=self.max_length), device, emphasis=emphasis)

    @property
    def token_limit(self) -> int | None:
        """T5's tokens before truncation (the counter shows `n/255`); None without T5 (75-token chunks)."""
        return None if self._t5 is None else self._t5.token_limit

    def count_tokens(self, text: str) -> int:
        if self._t5 is None:
            return super().count_tokens(text)
        return self._t5.count_tokens(text)

    # --- CLIP-L and CLIP-G -------------------------------------------------------------------------------------
    def chunks(self, text: str, check: bool = True) -> tuple[list[TokenChunk], int]:
        """CLIP-L's 75-token chunks, each with CLIP-G's as `g` (a text whose `!`s give the two a different chunk
        count is padded with empty chunks), and the larger of the two token counts."""
        chunks_l, count_l = super().chunks(text, check)
        chunks_g, count_g = self._g_chunker.chunks(text, check=False)
        return [PairedChunk(c.tokens, c.multipliers, c.embeddings, g)
                for c, g in zip_longest(chunks_l, chunks_g, fillvalue=TokenChunk())], max(count_l, count_g)

    def _hidden(self, index: int, encoder, ids: torch.Tensor, chunks: list[TokenChunk], clip_skip: int):
        """Hidden states [n, 77, width] `max(clip_skip, 2)` layers from the end (no final norm) and the
        projected pooled output [n, proj]."""
        result = encoder(ids, output_hidden_states=True)
        layer = min(max(int(clip_skip or 1), 2), len(result.hidden_states))
        return result.hidden_states[-layer], result.text_embeds

    def _encode_chunk_batch(self, chunks: list[TokenChunk], clip_skip: int, counts: torch.Tensor):
        """One chunk of every text through both CLIPs: [n, 77, width_L + width_G] (each encoder's emphasis
        normalised on its own, as Forge's two engines) and [n, proj_L + proj_G]."""
        outputs, pooled = [], []
        for index in (0, 1):
            tokenizer, encoder = self.model.tokenizers[index], self.model.text_encoders[index]
            if index:
                chunks = [getattr(chunk, "g", chunk) for chunk in chunks]  # an empty filler chunk has no `g`
            hidden, chunk_pooled = self._hidden(index, encoder, self._ids(tokenizer, chunks), chunks, clip_skip)
            outputs.append(self._emphasise(hidden, chunks, counts))
            pooled.append(chunk_pooled)
        return torch.cat(outputs, dim=-1), torch.cat(pooled, dim=-1)

    # --- T5 ----------------------------------------------------------------------------------------------------
    def _joint_width(self) -> int:
        if self._t5_model is not None:
            return int(self._t5_model.config.d_model)
        return int(getattr(self.model, "joint_attention_dim", None) or DEFAULT_JOINT_WIDTH)

    def _t5_sequence(self, text: str, like: torch.Tensor) -> torch.Tensor:
        """T5's [1, t5_max_length, width] for `text`, emphasis applied; zeros (of `like`'s dtype) without T5."""
        if self._t5 is None:
            return torch.zeros((1, self.max_length, self._joint_width()), device=like.device, dtype=like.dtype)
        segments = self._t5._segments(text, check=True)
        ids, weights = self._t5._t5_ids(*self._t5._t5_content(segments))
        hidden = self._t5_model(torch.tensor([ids], device=self.device))[0]
        return self._t5._emphasise(hidden, weights)

    # --- encoding ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_batch(self, texts: list[str], clip_skip: int = 1) -> list[Conditioning]:
        """The CLIP part of the texts encoded together as A1111 does (chunk by chunk, the emphasis mean over the
        batch), T5's part of each text alone (as Forge's T5 engine); repeated texts are encoded once."""
        clip = dict(zip(texts, super().encode_batch(texts, clip_skip)))
        width = self._joint_width()
        encoded = {}
        for text, cond in clip.items():
            if cond.embeds.shape[-1] > width:
                raise ValueError(f"SD3 text encoders do not fit: CLIP-L + CLIP-G width {cond.embeds.shape[-1]} "
                                 f"is wider than T5's / the transformer's {width}")
            t5 = self._t5_sequence(text, cond.embeds)
            lg = torch.nn.functional.pad(cond.embeds, (0, width - cond.embeds.shape[-1]))
            encoded[text] = Conditioning(torch.cat([lg, t5], dim=1), cond.pooled, tail=t5.shape[1])
        return [encoded[text] for text in texts]
