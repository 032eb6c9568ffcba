"""A1111's `modules.sd_hijack`, only as far as it is a read: `model_hijack.embedding_db` (the embeddings
listing, modules/textual_inversion). The hijack itself (patching A1111's LDM model, its optimizations, its
CLIP wrappers) is A1111's model internals: anything else read here is reported as such."""
from __future__ import annotations

from webui.extensions.problems import ModelInternalsError

from .textual_inversion.textual_inversion import EmbeddingDatabase

_WHAT = "model hijacks (LDM model internals)"


class StableDiffusionModelHijack:
    """`model_hijack`: its `embedding_db`; the rest of A1111's hijack is internals."""

    def __init__(self):
        self.embedding_db = EmbeddingDatabase()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ModelInternalsError(f"modules.sd_hijack.model_hijack.{name}", _WHAT)


model_hijack = StableDiffusionModelHijack()


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ModelInternalsError(f"modules.sd_hijack.{name}", _WHAT)
