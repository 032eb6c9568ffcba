"""Which model files a job uses, named by their sha256: the head lists them, a pool worker checks it has the very same
files before it runs the job (a job never runs on a substitute model).

The list covers the files a request names: its checkpoint (and the hires-fix and refiner checkpoints), the VAE
chosen, the LoRAs of its prompts' `<lora:...>` tags, the embeddings its prompts mention and its ControlNet units'
models. A script that switches models itself (X/Y/Z plot's checkpoint axis) loads them on the worker by name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .core.request import PROMPT_FIELDS, GenerationRequest
from .jobs.pool import WorkerRefused
from .prompts.extra_networks import extract_extra_networks

_NO_MODEL = {"", "none", "automatic", "use same checkpoint", "use same vae"}


@dataclass(frozen=True)
class ModelRef:
    kind: str  # checkpoint, vae, lora, embedding, controlnet
    name: str  # as the request names it
    sha256: str


def checkpoint_names(request: GenerationRequest) -> list[str]:
    names = [request.checkpoint or ""]
    names.append(request.hr_checkpoint_name or "")
    names.append(request.refiner_checkpoint or "")
    return [name for name in names if name.strip().lower() not in _NO_MODEL]


def lora_names(request: GenerationRequest) -> list[str]:
    found: list[str] = []
    for field in PROMPT_FIELDS:
        _, networks = extract_extra_networks(getattr(request, field) or "")
        for network in networks:
            if network.kind in ("lora", "lyco") and network.name:
                name = network.name
                if name not in found:
                    found.append(name)
    return found


def embedding_names(request: GenerationRequest, known: list[str]) -> list[str]:
    """The embeddings (of `known`) the request's prompts mention as words."""
    text = " ".join(getattr(request, field) or "" for field in PROMPT_FIELDS)
    return [name for name in known if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)]


def manifest(services, request: GenerationRequest, vae_setting: str | None) -> list[ModelRef]:
    """The head's list of the files `request` uses, with their sha256 (computed now when not known yet). The
    separate VAE / text encoder files of FLUX.1 / SD3 / Z-Image checkpoints are checked with the head as a worker
    loads them (webui/worker_host.py `_check_parts`): only the checkpoint's file tells whether it needs them."""
    refs: list[ModelRef] = []
    for name in checkpoint_names(request):
        info = services.models.resolve(name)
        refs.append(ModelRef("checkpoint", name, services.models.registry.ensure_hash(info)))
    if vae_setting and vae_setting.strip().lower() not in _NO_MODEL:
        vaes = services.models.vaes
        vaes.refresh()
        info = vaes.find(vae_setting)
        if info is not None:
            refs.append(ModelRef("vae", vae_setting, info.sha256))
    loras = services.models.loras
    if loras is not None:
        for name in lora_names(request):
            info = loras.find(name)
            if info is not None:  # an unknown LoRA is the engine's warning, on the worker as here
                refs.append(ModelRef("lora", name, info.sha256))
    embeddings = services.models.embeddings
    if embeddings is not None:
        known = embeddings.all()
        for name in embedding_names(request, list(known)):
            refs.append(ModelRef("embedding", name, known[name].sha256))
    for unit in request.controlnet_units or []:
        model = str(getattr(unit, "model", "") or "")
        if getattr(unit, "enabled", True) and model.strip().lower() not in _NO_MODEL:
            info = services.controlnets.resolve(model)
            refs.append(ModelRef("controlnet", model, services.hashes.get_or_compute(info.weights, "controlnet")))
    return refs


def verify(services, refs: list[ModelRef], worker: str) -> None:
    """On the worker: raise WorkerRefused naming the first file it lacks or holds in another version."""
    for ref in refs:
        try:
            sha = _local_sha256(services, ref)
        except Exception as exc:  # noqa: BLE001 - a missing file is this worker's refusal, not an error
            raise WorkerRefused(f"{worker} has no {ref.kind} {ref.name!r} ({exc})") from None
        if sha is None:
            raise WorkerRefused(f"{worker} has no {ref.kind} {ref.name!r}")
        if sha.lower() != ref.sha256.lower():
            raise WorkerRefused(f"{worker} has a different {ref.kind} under the name {ref.name!r} (sha256 "
                                f"{sha[:10]}, the head's is {ref.sha256[:10]})")


def _local_sha256(services, ref: ModelRef) -> str | None:
    """This worker's file of `ref`'s kind and name: its sha256 (None: no such file, after a fresh look)."""
    sha = _lookup(services, ref)
    if sha is None or sha.lower() != ref.sha256.lower():  # new or replaced since this worker last looked
        _REFRESH[ref.kind](services)
        sha = _lookup(services, ref)
    return sha


def _lookup(services, ref: ModelRef) -> str | None:
    from .models.registry import UnknownCheckpointError
    if ref.kind == "checkpoint":
        try:
            info = services.models.resolve(ref.name)
        except UnknownCheckpointError:
            return None
        return services.models.registry.ensure_hash(info)
    if ref.kind == "vae":
        info = services.models.vaes.find(ref.name)
        return info.sha256 if info is not None else None
    if ref.kind == "lora":
        info = services.models.loras.find(ref.name)
        return info.sha256 if info is not None else None
    if ref.kind == "embedding":
        embedding = services.models.embeddings.all().get(ref.name)
        return embedding.sha256 if embedding is not None else None
    if ref.kind == "controlnet":
        try:
            info = services.controlnets.resolve(ref.name)
        except LookupError:
            return None
        return services.hashes.get_or_compute(info.weights, "controlnet")
    return None


_REFRESH = {"checkpoint": lambda services: services.models.refresh(),
            "vae": lambda services: services.models.vaes.refresh(),
            "lora": lambda services: services.models.loras.refresh(),
            "embedding": lambda services: services.models.embeddings.refresh(),
            "controlnet": lambda services: services.controlnets.refresh()}

