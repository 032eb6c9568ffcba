"""A1111's "NV" random source: the normal noise NVIDIA GPUs give torch.randn, computed on the CPU with numpy.

With "Random number generator source: NV" A1111 1.10 draws every noise tensor from its own CPU imitation of the
Philox4x32-10 generator behind torch's CUDA randn, so an image made that way reproduces on any machine, GPU or not.
This module produces the same numbers as that imitation:

- Seed -> key: the seed as an unsigned 64-bit number, low 32 bits first (key = (seed & 0xffffffff, seed >> 32)).
- Counter of element i of a call (flat, C order): (offset, 0, i, 0). Each randn call uses one offset and then
  advances it by one, whatever the tensor's size: the first call of a generator uses offset 0, the next 1, ...
- Philox4x32-10: ten rounds of the Philox 4x32 round, the key bumped by the Weyl constants between rounds.
- Only the first two of the four 32-bit outputs are used: Box-Muller's first (sine) value from them.
  u = x * 2^-32 + 2^-33 and v = y * 2^-32 * 2pi + half that, with curand's float32 constants for 2^-32 and
  2^-32 * 2pi, but (as A1111's numpy code does) in float64 arithmetic: sqrt(-2 ln u) * sin v, then rounded to
  float32. The result is what the GPU gives up to the last bits of float32 rounding.
"""
from __future__ import annotations

import math

import numpy as np

_MASK32 = 0xFFFFFFFF
# Philox4x32 multipliers and Weyl key increments (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011).
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)

# curand's Box-Muller scales (CURAND_2POW32_INV and CURAND_2POW32_INV_2PI) as float32 values, used in float64.
_SCALE_U = float(np.float32(2.3283064e-10))
_SCALE_V = float(np.float32(2.3283064e-10 * 6.2831855))


def _mulhilo(a: np.ndarray, multiplier: int) -> tuple[np.ndarray, np.ndarray]:
    """High and low 32-bit halves of the 64-bit products a * multiplier (a: uint32)."""
    product = a.astype(np.uint64) * np.uint64(multiplier)
    return (product >> np.uint64(32)).astype(np.uint32), product.astype(np.uint32)


def philox4x32(counter, key, rounds: int = 10) -> np.ndarray:
    """Philox4x32-`rounds` of each counter under one key.

    counter: four uint32 words (each a number or an array, broadcast together); key: two 32-bit words.
    Returns the four output words, a uint32 array [4, ...].
    """
    c0, c1, c2, c3 = np.broadcast_arrays(*(np.asarray(word, dtype=np.uint32) for word in counter))
    k0, k1 = int(key[0]) & _MASK32, int(key[1]) & _MASK32
    for done in range(rounds):
        if done:
            k0, k1 = (k0 + _WEYL[0]) & _MASK32, (k1 + _WEYL[1]) & _MASK32
        hi0, lo0 = _mulhilo(c0, _MULTIPLIERS[0])
        hi1, lo1 = _mulhilo(c2, _MULTIPLIERS[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint32(k0), lo1, hi0 ^ c3 ^ np.uint32(k1), lo0
    return np.stack([c0, c1, c2, c3])


def _box_muller_sine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Box-Muller's first normal from two uint32 words (never 0: u and v sit in the middle of their 2^-32 cells)."""
    u = x.astype(np.float64) * _SCALE_U + _SCALE_U / 2
    v = y.astype(np.float64) * _SCALE_V + _SCALE_V / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


class PhiloxGenerator:
    """A1111's NV generator for one seed: successive `randn` calls continue its stream (one offset per call)."""

    def __init__(self, seed: int):
        self.seed = int(seed) % (1 << 64)  # as an unsigned 64-bit number (a negative seed wraps around)
        self.offset = 0

    @property
    def key(self) -> tuple[int, int]:
        return self.seed & _MASK32, self.seed >> 32

    def randn(self, shape) -> np.ndarray:
        """Standard normal float32 values of `shape` (an int or a sequence of ints); advances the offset by one."""
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        count = math.prod(shape)
        if count > 1 << 32:
            raise ValueError(f"at most 2**32 values per call, asked for {count}")
        if self.offset > _MASK32:
            raise ValueError("this generator's offset has passed 2**32 - 1")
        index = np.arange(count, dtype=np.uint64).astype(np.uint32)
        words = philox4x32((self.offset, 0, index, 0), self.key)
        self.offset += 1
        return _box_muller_sine(words[0], words[1]).reshape(shape)
