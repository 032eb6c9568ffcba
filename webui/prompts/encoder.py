"""Turn prompt text into the UNet's conditioning, A1111's way.

A text (one entry of a prompt schedule, extra-network tags already removed) is parsed for emphasis and BREAK,
cut into 75-token chunks (`tokens.make_chunks`), and each chunk is framed with start/end tokens to 77 and
encoded; textual inversion vectors replace their placeholder tokens at the token-embedding layer. Emphasis
("Original"): each token's output is multiplied by its weight, then the chunk is rescaled so its mean is what it
was before. The texts of one schedule are encoded as one batch (chunk by chunk, shorter ones padded with empty
chunks), and the emphasis mean is taken over that batch, exactly as A1111 does.

Clip skip applies to SD1 (hidden state N layers from the end, then the final layer norm). SD2 always uses its
penultimate layer and SDXL its penultimate hidden states without the norm, ignoring clip skip, as A1111 does by
default. SDXL concatenates both encoders' outputs and takes the pooled embedding from the first chunk.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch

from .attention import check_weights, parse_attention
from .tokens import CHUNK, COMMA_BACKTRACK, EmbeddingLookup, TokenChunk, make_chunks

EMPHASIS_MODES = ("Original", "No norm", "Ignore")


@dataclass
class Conditioning:
    embeds: torch.Tensor  # [1, 77 * chunks, width]
    pooled: torch.Tensor | None = None  # SDXL: the second encoder's projected pooled output (first chunk)
    fixed_length: bool = False  # FLUX.1's T5 sequence: one whole unit, never padded with chunks
    tail: int = 0  # SD3: rows after the 77-token chunks (T5's sequence), kept last when padding

    @property
    def chunks(self) -> int:
        return 1 if self.fixed_length else (self.embeds.shape[1] - self.tail) // (CHUNK + 2)

    def padded(self, chunks: int, empty: "Conditioning") -> "Conditioning":
        """This conditioning with the empty prompt's chunk appended until it has `chunks` chunks (before the
        tail, if any)."""
        missing = chunks - self.chunks
        if missing <= 0 or self.fixed_length:
            return self
        filler = [empty.embeds[:, :CHUNK + 2]] * missing
        if not self.tail:
            return Conditioning(torch.cat([self.embeds, *filler], dim=1), self.pooled)
        head, tail = self.embeds[:, :-self.tail], self.embeds[:, -self.tail:]
        return Conditioning(torch.cat([head, *filler, tail], dim=1), self.pooled, tail=self.tail)


@dataclass
class EncodeInfo:
    """What encoding noticed: the embeddings that were used (for `TI hashes`)."""
    embeddings: dict = field(default_factory=dict)  # name -> Embedding


class EncoderBase:
    """What every prompt encoder offers on top of its `encode_batch(texts, clip_skip)`: one text's conditioning and
    the empty prompt's (computed once), and the settings every encoder keeps."""

    def __init__(self, model, device: torch.device, emphasis: str, comma_backtrack: int):
        self.model = model
        self.device = device
        self.emphasis = emphasis
        self.comma_backtrack = comma_backtrack
        self.info = EncodeInfo()
        self._empty: Conditioning | None = None

    def encode(self, text: str, clip_skip: int = 1) -> Conditioning:
        return self.encode_batch([text], clip_skip)[0]

    def empty(self, clip_skip: int = 1) -> Conditioning:
        """The empty prompt's conditioning: what shorter chunked conditionings are padded with (PromptConditioning
        keeps it; fixed-length ones are never padded with it)."""
        if self._empty is None:
            self._empty = self.encode("", clip_skip)
        return self._empty


class PromptEncoder(EncoderBase):
    """Encodes text with a loaded model's tokenizer(s) and text encoder(s)."""

    def __init__(self, model, device: torch.device, embeddings: dict | None = None, emphasis: str = "Original",
                 comma_backtrack: int = COMMA_BACKTRACK):
        super().__init__(model, device, emphasis, comma_backtrack)
        tokenizer = model.tokenizers[0]
        self._comma = tokenizer.convert_tokens_to_ids(",</w>")
        usable = {name: e for name, e in (embeddings or {}).items() if 0 < e.vector_count <= CHUNK}
        self._lookup = EmbeddingLookup(usable, self.tokenize)

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenizers[0](text, add_special_tokens=False, truncation=False).input_ids

    def chunks(self, text: str, check: bool = True) -> tuple[list[TokenChunk], int]:
        """The text's 75-token chunks and its token count; EmphasisError (a 422 about the prompt) for emphasis
        out of range unless `check` is off (the token counter)."""
        fragments = parse_attention(text)
        if check:
            check_weights(fragments)
        if self.emphasis == "Ignore":
            fragments = [(t, w if w == -1 else 1.0) for t, w in fragments]
        chunks, count, used = make_chunks(fragments, self.tokenize, self._comma, self._lookup, self.comma_backtrack)
        for embedding in used:
            self.info.embeddings[embedding.name] = embedding
        return chunks, count

    def count_tokens(self, text: str) -> int:
        return self.chunks(text, check=False)[1]

    # --- encoding ---------------------------------------------------------------------------------------------
    def _ids(self, tokenizer, chunks: list[TokenChunk]) -> torch.Tensor:
        rows = []
        for chunk in chunks:
            ids = [tokenizer.bos_token_id] + chunk.tokens + [tokenizer.eos_token_id]
            rows.append(ids + [tokenizer.pad_token_id] * (CHUNK + 2 - len(ids)))
        return torch.tensor(rows, device=self.device)

    def _hidden(self, index: int, encoder, ids: torch.Tensor, chunks: list[TokenChunk], clip_skip: int):
        """Hidden states [n, 77, width] (and SDXL's pooled output for the encoder with the projection)."""
        embedding_layer = encoder.get_input_embeddings()

        def place_vectors(module, args, output):
            for row, chunk in enumerate(chunks):
                for slot in chunk.embeddings:
                    vectors = slot.embedding.vectors_for(self.model, index).to(output.device, output.dtype)
                    start = slot.offset + 1
                    output[row, start:start + vectors.shape[0]] = vectors
            return output

        hook = embedding_layer.register_forward_hook(place_vectors) if any(c.embeddings for c in chunks) else None
        try:
            result = encoder(ids, output_hidden_states=True)
        finally:
            if hook is not None:
                hook.remove()
        pooled = None
        if self.model.family == "sdxl":  # penultimate hidden states, no final norm
            hidden = result.hidden_states[-2]
            pooled = getattr(result, "text_embeds", None)  # OpenCLIP G's (the second encoder; the refiner's only)
        elif self.model.family == "sd1" and clip_skip > 1:
            text_model = getattr(encoder, "text_model", encoder)
            hidden = text_model.final_layer_norm(result.hidden_states[-clip_skip])
        else:
            hidden = result.last_hidden_state
        return hidden, pooled

    def _emphasise(self, z: torch.Tensor, chunks: list[TokenChunk], counts: torch.Tensor) -> torch.Tensor:
        """`counts`: how many times each row stands in the batch A1111 would have encoded (repeated texts are
        encoded once here), so the batch mean is the same."""
        weights = [[1.0] + c.multipliers + [1.0] * (CHUNK + 1 - len(c.multipliers)) for c in chunks]
        if self.emphasis == "Ignore" or all(w == 1.0 for row in weights for w in row):
            return z
        multipliers = torch.tensor(weights, device=z.device, dtype=z.dtype).unsqueeze(-1)

        def batch_mean(t: torch.Tensor) -> torch.Tensor:
            if len(counts) == 1:
                return t.mean()
            row_means = t.mean(dim=(1, 2))
            return (row_means * counts.to(t.dtype)).sum() / counts.sum()

        before = batch_mean(z)
        z = z * multipliers
        if self.emphasis == "Original":
            z = z * (before / batch_mean(z))
        return z

    def _encode_chunk_batch(self, chunks: list[TokenChunk], clip_skip: int, counts: torch.Tensor):
        outputs, pooled = [], None
        for index, (tokenizer, encoder) in enumerate(zip(self.model.tokenizers, self.model.text_encoders)):
            hidden, chunk_pooled = self._hidden(index, encoder, self._ids(tokenizer, chunks), chunks, clip_skip)
            outputs.append(self._emphasise(hidden, chunks, counts))
            if chunk_pooled is not None:
                pooled = chunk_pooled
        return torch.cat(outputs, dim=-1), pooled

    @torch.no_grad()
    def encode_batch(self, texts: list[str], clip_skip: int = 1) -> list[Conditioning]:
        """Encode texts that belong together (the entries of one prompt's schedule) as A1111 does: chunk i of
        every text in one batch, shorter texts padded with empty chunks. Repeated texts are encoded once."""
        unique = list(dict.fromkeys(texts))
        counts = torch.tensor([texts.count(text) for text in unique])
        per_text = [self.chunks(text)[0] for text in unique]
        count = max(len(c) for c in per_text)
        parts, first_pooled = [], None
        for i in range(count):
            batch = [chunks[i] if i < len(chunks) else TokenChunk() for chunks in per_text]
            embeds, pooled = self._encode_chunk_batch(batch, clip_skip, counts)
            parts.append(embeds)
            if i == 0:
                first_pooled = pooled
        embeds = torch.cat(parts, dim=1)
        encoded = {text: Conditioning(embeds[j:j + 1], None if first_pooled is None else first_pooled[j:j + 1])
                   for j, text in enumerate(unique)}
        return [encoded[text] for text in texts]

    def encode_pair(self, prompt: str, negative: str, clip_skip: int = 1) -> tuple[Conditioning, Conditioning]:
        """Prompt and negative prompt, padded to the same number of chunks."""
        cond, uncond = self.encode(prompt, clip_skip), self.encode(negative, clip_skip)
        count = max(cond.chunks, uncond.chunks)
        empty = self.empty(clip_skip)
        return cond.padded(count, empty), uncond.padded(count, empty)


class SequenceEncoder(EncoderBase, abc.ABC):
    """Base of the transformer families' prompt encoders (FLUX.1's T5, Z-Image's Qwen3): each text is encoded alone
    by the subclass's `_encode_text` into one fixed-length Conditioning (never padded or joined in chunks), emphasis
    applied over the whole sequence. `embeddings` and `comma_backtrack` are accepted for PromptEncoder's interface
    and not used."""

    def __init__(self, model, device: torch.device, embeddings: dict | None = None, emphasis: str = "Original",
                 comma_backtrack: int = COMMA_BACKTRACK):
        super().__init__(model, device, emphasis, comma_backtrack)

    @abc.abstractmethod
    def _encode_text(self, text: str) -> Conditioning:
        """One text's conditioning (FluxPromptEncoder: T5 + CLIP-L pooled; ZImagePromptEncoder: Qwen3)."""

    def _emphasise(self, z: torch.Tensor, weights: list[float]) -> torch.Tensor:
        """The rows of `z` [1, n, width] multiplied by their `weights`; "Original" then rescales the whole sequence
        (padding rows included) to its mean before, "No norm" does not, "Ignore" drops the weights."""
        if self.emphasis == "Ignore" or all(w == 1.0 for w in weights):
            return z
        multipliers = torch.tensor(weights, device=z.device, dtype=z.dtype).reshape(1, -1, 1)
        before = z.mean()
        z = z * multipliers
        if self.emphasis == "Original":
            z = z * (before / z.mean())
        return z

    @torch.no_grad()
    def encode_batch(self, texts: list[str], clip_skip: int = 1) -> list[Conditioning]:
        """One conditioning per text (repeated texts encoded once), each text encoded alone, as Forge and the
        diffusers pipelines encode one prompt, so a text's result does not depend on the texts beside it. Clip skip
        does not apply."""
        encoded = {text: self._encode_text(text) for text in dict.fromkeys(texts)}
        return [encoded[text] for text in texts]

    def encode_pair(self, prompt: str, negative: str, clip_skip: int = 1) -> tuple[Conditioning, Conditioning]:
        """Prompt and negative prompt, each as it is (fixed-length rows are never padded to each other)."""
        return self.encode(prompt, clip_skip), self.encode(negative, clip_skip)
