"""A1111's `modules.textual_inversion.textual_inversion`: the embeddings listing extensions read, a view of our
embedding database (webui/models/embeddings.py). `EmbeddingDatabase.word_embeddings` holds the embeddings the
loaded checkpoint can use, `skipped_embeddings` the others (all of them in `word_embeddings` while no checkpoint
is loaded); each an `Embedding` with A1111's names (`name`, `filename`, `shape`, `vectors`, `step`,
`sd_checkpoint`, `sd_checkpoint_name`, `hash`, `shorthash`, `vec`). Training is not offered here."""
from __future__ import annotations

from webui.extensions.a1111.runtime import RUNTIME
from webui.extensions.problems import ModelInternalsError

A1111_INTERNALS = {name: "textual inversion training internals" for name in (
    "train_embedding", "create_embedding", "write_loss", "validate_train_inputs", "save_embedding")}


class Embedding:
    """One embedding file, with A1111's attribute names over ours."""

    def __init__(self, ours):
        self._ours = ours
        self.name = ours.name
        self.filename = str(ours.path)  # absolute, as A1111's
        self.step = ours.step
        self.sd_checkpoint = ours.checkpoint_hash
        self.sd_checkpoint_name = ours.checkpoint
        self.optimizer_state_dict = None

    @property
    def shape(self) -> int:
        return self._ours.shape

    @property
    def vectors(self) -> int:
        return self._ours.vector_count

    @property
    def vec(self):
        """The vectors: one tensor [n, width], or {"clip_l", "clip_g"} for SDXL (as A1111)."""
        vectors = self._ours.vectors
        return dict(vectors) if self._ours.is_sdxl else next(iter(vectors.values()))

    @property
    def hash(self) -> str:
        return self._ours.sha256

    @property
    def shorthash(self) -> str:
        return self._ours.shorthash

    def __repr__(self) -> str:
        return f"<Embedding {self.name}>"


class EmbeddingDatabase:
    """`model_hijack.embedding_db`: read from our database each time (it rescans the folder when files change)."""

    def _ours(self):
        return RUNTIME.require().models.embeddings

    def _split(self) -> tuple[dict, dict]:
        database = self._ours()
        database.refresh()
        current = RUNTIME.require().models.current
        if current is None:
            return {name: Embedding(e) for name, e in database.all().items()}, {}
        usable, skipped = database.for_model(current[1])
        every = database.all()
        return ({name: Embedding(e) for name, e in usable.items()},
                {name: Embedding(every[name]) for name in skipped if name in every})

    @property
    def word_embeddings(self) -> dict[str, Embedding]:
        return self._split()[0]

    @property
    def skipped_embeddings(self) -> dict[str, Embedding]:
        return self._split()[1]

    @property
    def embedding_dirs(self) -> dict:
        return {str(self._ours().root): None}

    @property
    def expected_shape(self) -> int:
        usable = self.word_embeddings
        return next(iter(usable.values())).shape if usable else -1

    def load_textual_inversion_embeddings(self, force_reload: bool = False) -> None:
        """Rescan the embeddings folder (every file again when `force_reload`)."""
        self._ours().refresh(force=bool(force_reload))

    def find_embedding_at_position(self, tokens, offset):
        raise ModelInternalsError("modules.textual_inversion...EmbeddingDatabase.find_embedding_at_position",
                                  "prompt encoding internals")


def __getattr__(name: str):
    if name in A1111_INTERNALS:
        raise ModelInternalsError(f"modules.textual_inversion.textual_inversion.{name}", A1111_INTERNALS[name])
    raise AttributeError(f"module 'modules.textual_inversion.textual_inversion' has no attribute {name!r}")
