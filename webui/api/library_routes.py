"""Listings and refreshes of what sits beside the checkpoints, in A1111's shapes: LoRAs, textual inversion
embeddings, VAE files and prompt styles (`/sdapi/v1/loras`, `/embeddings`, `/sd-vae`, `/prompt-styles`, and
their `refresh-*` routes)."""
from __future__ import annotations

from fastapi import APIRouter


def _embedding_item(embedding) -> dict:
    return {"step": embedding.step, "sd_checkpoint": embedding.checkpoint_hash,
            "sd_checkpoint_name": embedding.checkpoint, "shape": embedding.shape, "vectors": embedding.vector_count}


def embeddings_listing(services) -> dict:
    """Embeddings usable with the loaded checkpoint, and the ones skipped (with why). Before any checkpoint is
    loaded every readable embedding counts as loaded."""
    database = services.models.embeddings
    database.refresh()
    current = services.models.current
    if current is None:
        usable, skipped = database.all(), {}
    else:
        usable, skipped = database.for_model(current[1])
    every = database.all()
    return {
        "loaded": {name: _embedding_item(e) for name, e in usable.items()},
        "skipped": {name: {**(_embedding_item(every[name]) if name in every else {}), "reason": reason}
                    for name, reason in skipped.items()},
        "errors": dict(database.errors),
    }


def install_library_routes(router: APIRouter, services) -> None:
    models = services.models

    @router.get("/loras")
    def loras():
        models.loras.refresh()
        return [{"name": info.name, "alias": info.alias, "path": str(info.path), "metadata": info.metadata}
                for info in models.loras.list()]

    @router.post("/refresh-loras")
    def refresh_loras():
        models.loras.refresh()
        return {}

    @router.get("/embeddings")
    def embeddings():
        return embeddings_listing(services)

    @router.post("/refresh-embeddings")
    def refresh_embeddings():
        models.embeddings.refresh(force=True)
        return {}

    @router.get("/sd-vae")
    def sd_vae():
        models.vaes.refresh()
        return [{"model_name": info.name, "filename": str(info.path)} for info in models.vaes.list()]

    @router.post("/refresh-vae")
    def refresh_vae():
        models.vaes.refresh()
        return {}

    @router.get("/prompt-styles")
    def prompt_styles():
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in services.styles.all()]
