"""Prompt text to FLUX.1's conditioning: T5-XXL's token sequence and CLIP-L's pooled output.

`FluxPromptEncoder` has `PromptEncoder`'s interface, so prompt editing, alternation, AND and the token counter work
on it unchanged. Each text becomes one `Conditioning` with `embeds` = T5's last hidden state `[1, t5_max_length,
width]` and `pooled` = CLIP-L's pooler output `[1, width]`, marked fixed-length (never padded or joined in chunks).

Without emphasis or BREAK this is exactly diffusers' `FluxPipeline.encode_prompt`: T5 reads the prompt tokenized
to `t5_max_length` (512 for dev, 256 for schnell; longer prompts truncated, `</s>` last, `<pad>` after) with no
attention mask, CLIP-L reads it padded / truncated to 77 tokens.

Emphasis and BREAK follow Forge's T5 engine (backend/text_processing/t5_engine.py with emphasis.py, and Flux's
pooled output from its classic engine's first chunk):
- `(word:1.2)` etc. are parsed as in A1111 (`parse_attention`); each fragment is tokenized on its own and its tokens
  carry its weight, `</s>` and `<pad>` weigh 1. There is no 75-token chunking on the T5 side.
- "Original": T5's output rows are multiplied by their weights and the whole sequence (padding rows included) is
  rescaled so its mean is what it was before, per text (Forge encodes each text alone); "No norm": multiplied only;
  "Ignore": weights dropped. CLIP-L's pooled output is never weighted (only its hidden states would be, which
  Flux does not use), but it reads the text with the emphasis brackets removed, as Forge does.
- BREAK ends a segment with `</s>`, as Forge ends a T5 chunk (a trailing BREAK adds nothing, a leading one an
  `</s>`). Forge then encodes every chunk as a separate batch row and its prompt parser keeps only row i for text
  i, so every segment after the first is dropped there; here all segments stay in the one sequence
  (`seg1 </s> seg2 </s> <pad>...`), truncated at the limit. CLIP-L's pooled output comes from the first segment
  only (Forge's first chunk), truncated at 75 tokens as diffusers does (no comma backtrack).
- Clip skip does not apply to Flux and is ignored; textual inversion embeddings are not used (Flux has none in
  A1111/Forge's format for T5), so `info.embeddings` stays empty.

`count_tokens` counts the T5 tokens before the final `</s>` (BREAK's `</s>` included) and `token_limit` is
`t5_max_length - 1`: a count above the limit means the prompt is truncated (Forge shows `count/255`).
"""
from __future__ import annotations

import torch

from .attention import BREAK, BREAK_WEIGHT, check_weights, parse_attention
from .encoder import Conditioning, SequenceEncoder
from .tokens import CHUNK, COMMA_BACKTRACK, TokenChunk

CLIP_LENGTH = CHUNK + 2  # 77: start, 75 tokens, end (padded)


class FluxPromptEncoder(SequenceEncoder):
    """Encodes text with a loaded FLUX.1 model's CLIP-L and T5 (`model.text_encoders`, `model.tokenizers`, both in
    that order, and `model.t5_max_length`). `embeddings` and `comma_backtrack` are accepted for PromptEncoder's
    interface and not used."""

    def __init__(self, model, device: torch.device, embeddings: dict | None = None, emphasis: str = "Original",
                 comma_backtrack: int = COMMA_BACKTRACK):
        super().__init__(model, device, embeddings, emphasis, comma_backtrack)
        self.max_length = int(getattr(model, "t5_max_length", 512))

    @property
    def token_limit(self) -> int:
        """The T5 tokens a prompt may have before it is truncated (the sequence ends with `</s>`)."""
        return self.max_length - 1

    # --- tokens -----------------------------------------------------------------------------------------------
    def _segments(self, text: str, check: bool) -> list[list[tuple[str, float]]]:
        """The text's (fragment, weight) pairs, split at BREAK; EmphasisError unless `check` is off."""
        fragments = parse_attention(text)
        if check:
            check_weights(fragments)
        segments: list[list[tuple[str, float]]] = [[]]
        for fragment, weight in fragments:
            if (fragment, weight) == (BREAK, BREAK_WEIGHT):
                segments.append([])
            else:
                segments[-1].append((fragment, 1.0 if self.emphasis == "Ignore" else weight))
        return segments

    @staticmethod
    def _tokenize(tokenizer, text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False, truncation=False).input_ids if text else []

    def _t5_content(self, segments) -> tuple[list[int], list[float]]:
        """T5 token ids and weights before the final `</s>`: segments joined by `</s>`, untruncated."""
        tokenizer = self.model.tokenizers[1]
        tokens: list[int] = []
        weights: list[float] = []
        per_segment = []
        for segment in segments:
            ids, mults = [], []
            for fragment, weight in segment:
                fragment_ids = self._tokenize(tokenizer, fragment)
                ids += fragment_ids
                mults += [weight] * len(fragment_ids)
            per_segment.append((ids, mults))
        if len(per_segment) > 1 and not per_segment[-1][0]:  # a trailing BREAK starts no chunk (as Forge)
            per_segment.pop()
        for index, (ids, mults) in enumerate(per_segment):
            if index:
                tokens.append(tokenizer.eos_token_id)
                weights.append(1.0)
            tokens += ids
            weights += mults
        return tokens, weights

    def chunks(self, text: str, check: bool = True) -> tuple[list[TokenChunk], int]:
        """The text's T5 tokens as one chunk (no 75-token chunking) and their count; EmphasisError for emphasis out
        of range unless `check` is off (the token counter)."""
        tokens, weights = self._t5_content(self._segments(text, check))
        return [TokenChunk(tokens, weights)], len(tokens)

    def count_tokens(self, text: str) -> int:
        return self.chunks(text, check=False)[1]

    def _t5_ids(self, tokens: list[int], weights: list[float]) -> tuple[list[int], list[float]]:
        """Truncated to the limit, `</s>` appended and padded to `max_length`, as the tokenizer's
        `padding="max_length", truncation=True` does."""
        tokenizer = self.model.tokenizers[1]
        tokens, weights = tokens[:self.token_limit], weights[:self.token_limit]
        pad = self.max_length - len(tokens) - 1
        return tokens + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad, weights + [1.0] * (pad + 1)

    def _clip_ids(self, segments) -> list[int]:
        """CLIP-L's 77 ids: the first segment's tokens (brackets parsed out) truncated to 75, framed and padded."""
        tokenizer = self.model.tokenizers[0]
        tokens = [t for fragment, _ in segments[0] for t in self._tokenize(tokenizer, fragment)][:CHUNK]
        ids = [tokenizer.bos_token_id] + tokens + [tokenizer.eos_token_id]
        return ids + [tokenizer.pad_token_id] * (CLIP_LENGTH - len(ids))

    # --- encoding ---------------------------------------------------------------------------------------------
    def _encode_text(self, text: str) -> Conditioning:
        clip, t5 = self.model.text_encoders[0], self.model.text_encoders[1]
        segments = self._segments(text, check=True)
        t5_ids, weights = self._t5_ids(*self._t5_content(segments))
        hidden = t5(torch.tensor([t5_ids], device=self.device), output_hidden_states=False)[0]
        pooled = clip(torch.tensor([self._clip_ids(segments)], device=self.device),
                      output_hidden_states=False).pooler_output
        return Conditioning(self._emphasise(hidden, weights), pooled, fixed_length=True)
