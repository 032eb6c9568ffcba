"""Seeds as A1111 picks them. The noise drawn from them is `sampling/noise.py`."""
from __future__ import annotations

import random

MAX_SEED = 4294967294


def fix_seed(seed: int | None) -> int:
    """-1 (or None) means a random seed, as A1111."""
    if seed is None or int(seed) == -1:
        return random.randrange(MAX_SEED)
    return int(seed)
