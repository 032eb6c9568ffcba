"""Prompt text to Z-Image's conditioning: Qwen3's hidden states over the prompt's real tokens, one row per token.

`ZImagePromptEncoder` has `PromptEncoder`'s interface, so prompt editing, alternation, AND and the token counter work
on it unchanged. Each text becomes one `Conditioning` with `embeds` = `[1, L, width]`, L being that text's own token
count (template included), `pooled` None (Z-Image has no pooled input), marked fixed-length: rows of different L are
never padded or cut here; the network call pads a batch's captions itself, knowing each row's length.

Without emphasis or BREAK this is exactly diffusers' `ZImagePipeline.encode_prompt` for one prompt: the prompt is
rendered with the tokenizer's chat template as one user turn (`add_generation_prompt=True, enable_thinking=True`,
which for Qwen3 gives `<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n`), tokenized padded and
truncated to `text_max_length` (512), run through Qwen3 with the attention mask, and the second-to-last hidden
state (`hidden_states[-2]`, before the final norm) kept at the unmasked positions only.

Emphasis and BREAK. Forge Neo's Z-Image engine has no emphasis (it passes the prompt's brackets to Qwen3 as text and
notes `Emphasis: None`), so this follows our T5 path (FLUX.1 / SD3) instead:
- `(word:1.2)` etc. are parsed as in A1111 (`parse_attention`). The brackets are removed and the remaining text is
  rendered and tokenized whole, so a weighted prompt has the same tokens as the same prompt without brackets; each
  token takes the weight of the fragment holding its last character (` red` in `a (red:1.2)` weighs 1.2), template
  tokens weigh 1. "Original": the output rows are multiplied by their weights and the whole sequence rescaled so its
  mean is what it was before, per text; "No norm": multiplied only; "Ignore": weights dropped.
- BREAK splits the prompt into parts. Each part is rendered in the chat template and encoded alone (as A1111 encodes
  each 75-token chunk alone) and the rows are joined: the first part's template opening, every part's own tokens,
  the last part's template closing (the way Forge Neo derivatives join Qwen chunks). Empty parts (a leading,
  trailing or doubled BREAK) are dropped. The joined sequence is cut at `text_max_length` rows.
- Clip skip does not apply and is ignored; textual inversion embeddings are not used (`info.embeddings` stays empty).

`count_tokens` counts the prompt's own tokens (all parts, no template) and `token_limit` is `text_max_length` minus
the template's tokens (504 for Qwen3): a count above it means the prompt is truncated.
"""
from __future__ import annotations

import logging

import torch

from .attention import BREAK, BREAK_WEIGHT, check_weights, parse_attention
from .encoder import Conditioning, SequenceEncoder
from .tokens import COMMA_BACKTRACK

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 512  # ZImagePipeline's max_sequence_length
_SENTINEL = "\ue000zimage-prompt\ue001"  # a private-use marker that no template produces


class _Part:
    """One BREAK part tokenized in its chat template: ids, per-token weights and where its own tokens are."""

    def __init__(self, ids: list[int], weights: list[float], start: int, end: int):
        self.ids, self.weights, self.start, self.end = ids, weights, start, end


class ZImagePromptEncoder(SequenceEncoder):
    """Encodes text with a loaded Z-Image model's Qwen3 (`model.text_encoders = [Qwen3Model]`,
    `model.tokenizers = [Qwen2Tokenizer]`, `model.text_max_length`). `embeddings` and `comma_backtrack` are
    accepted for PromptEncoder's interface and not used."""

    def __init__(self, model, device: torch.device, embeddings: dict | None = None, emphasis: str = "Original",
                 comma_backtrack: int = COMMA_BACKTRACK):
        super().__init__(model, device, embeddings, emphasis, comma_backtrack)
        self.max_length = int(getattr(model, "text_max_length", None) or DEFAULT_MAX_LENGTH)
        self._frame: tuple[str, str] | None = None

    @property
    def tokenizer(self):
        return self.model.tokenizers[0]

    # --- template and tokens ------------------------------------------------------------------------------------
    def render(self, content: str) -> str:
        """`content` as ZImagePipeline renders a prompt: one user turn, the generation prompt, thinking enabled."""
        return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True, enable_thinking=True)

    def _template_frame(self) -> tuple[str, str]:
        """The rendered text before and after a prompt (the template inserts user content verbatim)."""
        if self._frame is None:
            before, found, after = self.render(_SENTINEL).partition(_SENTINEL)
            self._frame = (before, after) if found else ("", "")
        return self._frame

    @property
    def token_limit(self) -> int:
        """The prompt tokens that fit before the sequence (template included) is truncated."""
        return self.max_length - len(self._tokenize(self.render("")))

    def _tokenize(self, text: str, offsets: bool = False):
        encoded = self.tokenizer(text, truncation=False, return_offsets_mapping=offsets)
        return (encoded.input_ids, encoded.offset_mapping) if offsets else encoded.input_ids

    def _parts(self, text: str, check: bool) -> list[list[tuple[str, float]]]:
        """The text's (fragment, weight) pairs split at BREAK, empty parts dropped (at least one part kept)."""
        fragments = parse_attention(text)
        if check:
            check_weights(fragments)
        parts: list[list[tuple[str, float]]] = [[]]
        for fragment, weight in fragments:
            if (fragment, weight) == (BREAK, BREAK_WEIGHT):
                parts.append([])
            elif fragment:
                parts[-1].append((fragment, 1.0 if self.emphasis == "Ignore" else weight))
        return [part for part in parts if part] or [[]]

    def _tokenize_part(self, part: list[tuple[str, float]]) -> _Part:
        """One part rendered and tokenized whole; a token weighs what the fragment holding its last character
        weighs (template tokens 1)."""
        content = "".join(fragment for fragment, _ in part)
        rendered = self.render(content)
        ids, offsets = self._tokenize(rendered, offsets=True)
        char_weights = [w for fragment, w in part for _ in fragment]
        before, after = self._template_frame()
        if rendered != before + content + after:  # a template that rewrites the prompt: no per-token weights
            if any(w != 1.0 for w in char_weights):
                log.warning("the chat template changes the prompt text; emphasis is ignored for %r", content)
            begin = end_char = -1
            char_weights = []
        else:
            begin, end_char = len(before), len(before) + len(content)
        weights, start, end = [], len(ids), 0
        for index, (first, last) in enumerate(offsets):
            inside = first < end_char and last > begin
            if inside:
                start, end = min(start, index), index + 1
            char = min(last, end_char) - 1 - begin
            weights.append(char_weights[char] if inside and 0 <= char < len(char_weights) else 1.0)
        if start >= end:  # no prompt tokens: the template splits where the (empty) prompt would be
            start = end = len(self._tokenize(before)) if before else 0
        return _Part(ids, weights, start, end)

    def count_tokens(self, text: str) -> int:
        return sum(p.end - p.start for p in map(self._tokenize_part, self._parts(text, check=False)))

    # --- encoding ---------------------------------------------------------------------------------------------
    def _hidden(self, ids: list[int]) -> torch.Tensor:
        """Qwen3's second-to-last hidden states [n, width] over `ids` (at most `max_length`), computed as
        ZImagePipeline does: padded to `max_length` with the attention mask, then only the real rows kept."""
        ids = ids[:self.max_length]
        pad = self.max_length - len(ids)
        pad_id = self.tokenizer.pad_token_id
        side_left = getattr(self.tokenizer, "padding_side", "right") == "left"
        padded = [pad_id] * pad + ids if side_left else ids + [pad_id] * pad
        mask = [0] * pad + [1] * len(ids) if side_left else [1] * len(ids) + [0] * pad
        input_ids = torch.tensor([padded], device=self.device)
        attention = torch.tensor([mask], device=self.device).bool()
        hidden = self.model.text_encoders[0](input_ids=input_ids, attention_mask=attention,
                                             output_hidden_states=True).hidden_states[-2]
        return hidden[0][attention[0]]

    def _encode_text(self, text: str) -> Conditioning:
        parts = [self._tokenize_part(part) for part in self._parts(text, check=True)]
        rows, weights = [], []
        for index, part in enumerate(parts):
            first = 0 if index == 0 else part.start
            last = len(part.ids) if index == len(parts) - 1 else part.end
            hidden = self._hidden(part.ids)  # truncated: rows past max_length do not exist
            rows.append(hidden[first:last])
            weights += part.weights[first:last][:len(rows[-1])]
        z = torch.cat(rows)[:self.max_length].unsqueeze(0)
        return Conditioning(self._emphasise(z, weights[:z.shape[1]]), None, fixed_length=True)
