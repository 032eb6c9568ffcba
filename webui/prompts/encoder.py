"""Turn prompt text into the UNet's conditioning, A1111's way: 75-token chunks, each framed to 77, concatenated.

Prompt syntax (weights, editing, BREAK, AND) builds on this; here the text is taken as plain words.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK = 75
COMMA_BACKTRACK = 20


@dataclass
class Conditioning:
    embeds: torch.Tensor  # [1, 77 * chunks, width]
    pooled: torch.Tensor | None = None  # SDXL: the second encoder's projected pooled output (first chunk)


def split_chunks(tokens: list[int], comma_id: int | None) -> list[list[int]]:
    """Cut token ids into chunks of at most 75. A cut that lands mid-phrase moves back to just after the last
    comma when that comma is within the last 20 tokens (A1111's comma padding backtrack)."""
    chunks: list[list[int]] = []
    current: list[int] = []
    last_comma = -1
    for token in tokens:
        if len(current) == CHUNK:
            if last_comma >= 0 and len(current) - last_comma <= COMMA_BACKTRACK:
                carry = current[last_comma + 1:]
                current = current[:last_comma + 1]
            else:
                carry = []
            chunks.append(current)
            current = carry
            last_comma = -1
        current.append(token)
        if token == comma_id:
            last_comma = len(current) - 1
    if current or not chunks:
        chunks.append(current)
    return chunks


class PromptEncoder:
    """Encodes text with a loaded model's tokenizer(s) and text encoder(s)."""

    def __init__(self, model, device: torch.device):
        self.model = model
        self.device = device
        tokenizer = model.tokenizers[0]
        self._comma = tokenizer.convert_tokens_to_ids(",</w>")

    def _chunk_ids(self, text: str) -> list[list[int]]:
        ids = self.model.tokenizers[0](text, add_special_tokens=False, truncation=False).input_ids
        return split_chunks(ids, self._comma)

    def _frame(self, tokenizer, chunk: list[int]) -> torch.Tensor:
        ids = [tokenizer.bos_token_id] + chunk + [tokenizer.eos_token_id]
        ids += [tokenizer.pad_token_id] * (CHUNK + 2 - len(ids))
        return torch.tensor([ids], device=self.device)

    def _encode_chunk(self, chunk: list[int], clip_skip: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        model = self.model
        outputs, pooled = [], None
        for index, (tokenizer, encoder) in enumerate(zip(model.tokenizers, model.text_encoders)):
            ids = self._frame(tokenizer, chunk)
            result = encoder(ids, output_hidden_states=True)
            if model.family == "sdxl":  # penultimate layer (or further back with clip skip), no final norm
                hidden = result.hidden_states[-(clip_skip + 1)]
                if index == 1:
                    pooled = result.text_embeds
            elif clip_skip > 1:
                hidden = encoder.text_model.final_layer_norm(result.hidden_states[-clip_skip]) \
                    if hasattr(encoder, "text_model") else encoder.final_layer_norm(result.hidden_states[-clip_skip])
            else:
                hidden = result.last_hidden_state
            outputs.append(hidden)
        return torch.cat(outputs, dim=-1), pooled

    @torch.no_grad()
    def encode_pair(self, prompt: str, negative: str, clip_skip: int = 1) -> tuple[Conditioning, Conditioning]:
        """Prompt and negative prompt, padded to the same number of chunks."""
        chunks = [self._chunk_ids(prompt), self._chunk_ids(negative)]
        count = max(len(c) for c in chunks)
        results = []
        for chunk_list in chunks:
            chunk_list = chunk_list + [[] for _ in range(count - len(chunk_list))]
            parts, pooled = [], None
            for i, chunk in enumerate(chunk_list):
                embeds, chunk_pooled = self._encode_chunk(chunk, clip_skip)
                parts.append(embeds)
                if i == 0:
                    pooled = chunk_pooled
            results.append(Conditioning(torch.cat(parts, dim=1), pooled))
        return results[0], results[1]
