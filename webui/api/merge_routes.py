"""`POST /sdapi/v1/merge-checkpoint` (ours; A1111 has the Checkpoint Merger only in its UI): the tab's fields by
A1111's `run_modelmerger` parameter names, plus `overwrite`. The merge is a queued "merge" job; the answer comes
when the file is written: its name, title, path, sha256, copied config and the recipe written into it."""
from __future__ import annotations

from typing import Union

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from ..models.merge_request import MergeRequest
from .errors import run_job


class MergeBody(BaseModel):
    """Defaults as the tab's."""
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    primary_model_name: str = ""
    secondary_model_name: str = ""
    tertiary_model_name: str = ""
    interp_method: str = "Weighted sum"
    multiplier: float = 0.3
    save_as_half: bool = False
    custom_name: str = ""
    checkpoint_format: str = "safetensors"
    config_source: Union[int, str] = 0  # 0 "A, B or C", 1 "B", 2 "C", 3 "Don't" (or the label)
    bake_in_vae: str = "None"
    discard_weights: str = ""
    save_metadata: bool = True
    add_merge_recipe: bool = True
    copy_metadata_fields: bool = True
    metadata_json: Union[str, dict] = "{}"
    overwrite: bool = False


class MergeResponse(BaseModel):
    name: str
    title: str
    filename: str
    sha256: str
    config: str | None = None
    recipe: dict | None = None
    message: str


def install_merge_routes(router: APIRouter, services) -> None:
    @router.post("/merge-checkpoint", response_model=MergeResponse)
    def merge_checkpoint(body: MergeBody):
        request = MergeRequest(**body.model_dump())
        job = run_job(lambda: services.merge(request, source="api"))
        return job.result.as_dict()
