"""Helpers the transformer families' tests share (FLUX.1, SD3, Z-Image: tests/test_*_files.py and
tests/test_*_generation.py): fixed-input forward passes of the parts they have in common, exact comparisons, the
"broken file is refused by name" check, and diffusers' img2img pipelines started from the posterior mean."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from webui.models.architecture import CheckpointFormatError
from webui.models.flux import T5_VOCAB


@torch.no_grad()
def t5_out(module) -> torch.Tensor:
    ids = torch.randint(0, T5_VOCAB, (1, 12), generator=torch.Generator().manual_seed(2))
    return module(ids).last_hidden_state.float()


@torch.no_grad()
def vae_out(module) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    return module.encode(image).latent_dist.mean, module.decode(torch.randn(1, 16, 4, 4, generator=g)).sample


def assert_same(a, b) -> None:
    """The same outputs (a tensor or a tuple of them), bit for bit and in the same dtype."""
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and torch.equal(x, y)


def rounded(module, dtype):
    """A copy of module whose weights went through `dtype` and back (the reference for a file stored in dtype)."""
    clone = copy.deepcopy(module)
    with torch.no_grad():
        for param in clone.parameters():
            param.copy_(param.to(dtype).to(param.dtype))
    return clone


def assert_refused(read, state: dict, message: str, drop: str | None = None, add: dict | None = None,
                   name: str = "x", dtype: torch.dtype | None = None) -> None:
    """`read(state, name[, dtype])` (a family's file reader), `drop` deleted from and `add` merged into a copy of
    `state`, raises CheckpointFormatError matching `message`."""
    bad = dict(state)
    if drop is not None:
        del bad[drop]
    bad.update(add or {})
    with pytest.raises(CheckpointFormatError, match=message):
        read(bad, name) if dtype is None else read(bad, name, dtype)


def random_image(seed: int, size: int) -> Image.Image:
    """A noise RGB picture (the img2img parity tests' init image)."""
    return Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype(np.uint8))


def encode_to_posterior_mean(pipe) -> None:
    """Make a diffusers pipeline's VAE encode to its posterior mean (as our img2img does) instead of a sample."""
    encode = pipe.vae.encode

    class PosteriorMean:
        def __init__(self, output):
            self.latent_dist = output.latent_dist
            self.latent_dist.sample = lambda generator=None: self.latent_dist.mode()

    pipe.vae.encode = lambda x, return_dict=True: PosteriorMean(encode(x))
