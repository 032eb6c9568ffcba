"""A1111's `modules.textual_inversion` package: the embeddings listing (`textual_inversion.py`)."""
