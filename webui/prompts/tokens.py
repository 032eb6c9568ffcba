"""Weighted fragments to 75-token chunks, A1111's way.

Each chunk holds up to 75 token ids with one emphasis multiplier per token, and the places where a textual
inversion embedding's vectors replace placeholder tokens. `BREAK` closes the current chunk; a chunk that fills
up mid-phrase is cut after the last comma when that comma is within the last 20 tokens; an embedding is never
split across chunks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .attention import BREAK

CHUNK = 75
COMMA_BACKTRACK = 20


@dataclass
class EmbeddingSlot:
    offset: int  # position in the chunk's 75 tokens (the start token not counted)
    embedding: object  # models.embeddings.Embedding


@dataclass
class TokenChunk:
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    embeddings: list[EmbeddingSlot] = field(default_factory=list)


class EmbeddingLookup:
    """Finds textual inversion embeddings in a token stream by the token ids of their names."""

    def __init__(self, embeddings: dict, tokenize: Callable[[str], list[int]]):
        self._by_first: dict[int, list[tuple[list[int], object]]] = {}
        for name, embedding in embeddings.items():
            ids = tokenize(name)
            if ids:
                self._by_first.setdefault(ids[0], []).append((ids, embedding))
        for candidates in self._by_first.values():  # longest name first, so "cat-style" wins over "cat"
            candidates.sort(key=lambda item: -len(item[0]))

    def find(self, tokens: Sequence[int], position: int) -> tuple[object | None, int]:
        for ids, embedding in self._by_first.get(tokens[position], ()):
            if list(tokens[position:position + len(ids)]) == ids:
                return embedding, len(ids)
        return None, 0


NO_EMBEDDINGS = EmbeddingLookup({}, lambda name: [])


def make_chunks(fragments: Sequence[tuple[str, float]], tokenize: Callable[[str], list[int]], comma_id: int,
                lookup: EmbeddingLookup = NO_EMBEDDINGS,
                comma_backtrack: int = COMMA_BACKTRACK) -> tuple[list[TokenChunk], int, list]:
    """(chunks, token count, embeddings used). Token count is what the prompt box's counter shows: every chunk
    but the last counts as a full 75."""
    chunks: list[TokenChunk] = []
    chunk = TokenChunk()
    count = 0
    last_comma = -1
    used: list = []

    def close(is_last: bool = False) -> None:
        nonlocal chunk, count, last_comma
        count += len(chunk.tokens) if is_last else CHUNK
        chunks.append(chunk)
        chunk = TokenChunk()
        last_comma = -1

    for text, weight in fragments:
        if text == BREAK and weight == -1:
            close()
            continue
        tokens = tokenize(text)
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma_id:
                last_comma = len(chunk.tokens)
            elif (comma_backtrack and len(chunk.tokens) == CHUNK and last_comma != -1
                  and len(chunk.tokens) - last_comma <= comma_backtrack):
                cut = last_comma + 1
                moved = TokenChunk(chunk.tokens[cut:], chunk.multipliers[cut:],
                                   [EmbeddingSlot(s.offset - cut, s.embedding) for s in chunk.embeddings
                                    if s.offset >= cut])
                chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                chunk.embeddings = [s for s in chunk.embeddings if s.offset < cut]
                close()
                chunk = moved
            if len(chunk.tokens) == CHUNK:
                close()
            embedding, name_length = lookup.find(tokens, position)
            if embedding is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            vectors = embedding.vector_count
            if len(chunk.tokens) + vectors > CHUNK:
                close()
            chunk.embeddings.append(EmbeddingSlot(len(chunk.tokens), embedding))
            chunk.tokens += [0] * vectors
            chunk.multipliers += [weight] * vectors
            used.append(embedding)
            position += name_length
    if chunk.tokens or not chunks:
        close(is_last=True)
    return chunks, count, used
