"""What a run adds to the checkpoint: LoRAs named in the prompt, textual inversion embeddings, the VAE.

Called once per run, before sampling. LoRAs are patched into the loaded weights (the patch from the previous
run is replaced, never stacked; none named means the model is restored exactly). Problems with an add-on are
warnings in the result, never a failed generation: a missing LoRA, one made for another architecture, an
embedding that does not fit. Only a VAE the user chose by name that cannot be found or loaded stops the run,
since the images would not be what was asked for.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..models.networks import NetworkRequest, apply_networks
from ..models.families import FAMILIES
from ..models.vae import apply_vae
from ..prompts.extra_networks import ExtraNetworkCall, lora_multipliers

LORA_KINDS = ("lora", "lyco")
# The tag kinds extensions handle (A1111's `extra_networks.register_extra_network`, set by the compat package):
# they are cut from the prompt like ours, without the "not supported" warning.
_extension_kinds = [lambda: set()]


def set_extension_kinds(source) -> None:
    """`source()` -> the kinds extensions handle now."""
    _extension_kinds[0] = source


@dataclass
class RunNetworks:
    embeddings: dict = field(default_factory=dict)  # usable textual inversion embeddings, name -> Embedding
    params: dict = field(default_factory=dict)  # infotext additions ("VAE hash", "VAE", "Lora hashes")
    warnings: list[str] = field(default_factory=list)


def _infotext_name(name: str) -> str:
    """Names inside `Lora hashes` / `TI hashes` lose the characters that separate entries, as in A1111."""
    return name.replace(":", "").replace(",", "")


# checkpoint families LoRAs can be patched into
LORA_FAMILIES = ("sd1", "sd2", "sdxl", "flux", "flux-schnell", "flux-fill", "sd3", "zimage")


def _activate_loras(models, model, calls: list[ExtraNetworkCall], run: RunNetworks) -> None:
    wanted, hashes = [], []
    registry = models.loras
    registry.refresh()
    for call in calls:
        if call.kind not in LORA_KINDS:
            if call.kind not in _extension_kinds[0]():
                run.warnings.append(f"<{call.kind}:...> networks are not supported: skipped")
            continue
        name = call.positional[0] if call.positional else ""
        try:
            te, unet = lora_multipliers(call)
        except ValueError as exc:
            run.warnings.append(f"{exc}: skipped")
            continue
        info = registry.find(name) if name else None
        if info is None:
            run.warnings.append(f'LoRA "{name}" not found in {", ".join(map(str, registry.roots))}: skipped')
            continue
        if model.family not in LORA_FAMILIES:  # a family whose modules we cannot patch yet
            run.warnings.append(f'LoRA "{name}": LoRA for {FAMILIES[model.family].label} checkpoints is not '
                                f"supported yet: skipped")
            continue
        wanted.append(NetworkRequest(info, te, unet))
    if model.family not in LORA_FAMILIES:
        return
    report = apply_networks(model, wanted)
    run.warnings.extend(report.warnings)
    for info in report.applied:
        hashes.append(f"{_infotext_name(info.name)}: {info.shorthash}")
    if hashes:
        run.params["Lora hashes"] = ", ".join(hashes)


def _activate_vae(models, model, checkpoint_info, setting: str, run: RunNetworks) -> None:
    models.vaes.refresh()  # a folder walk: new files count without pressing refresh
    vae = models.vaes.choose(setting, checkpoint_info.path)  # a named VAE that is missing raises (user error)
    apply_vae(model, vae)
    if vae is not None:
        run.params["VAE hash"] = vae.shorthash
        run.params["VAE"] = vae.path.name  # A1111 writes the bare file name


def _mentioned(name: str, texts: list[str]) -> bool:
    pattern = re.compile(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])")
    return any(pattern.search(text) for text in texts)


def _embeddings(models, model, texts: list[str], run: RunNetworks) -> None:
    database = models.embeddings
    database.refresh()
    usable, skipped = database.for_model(model)
    run.embeddings = usable
    for name, reason in skipped.items():
        if _mentioned(name, texts):
            run.warnings.append(f'Embedding "{name}" skipped: {reason}')


def prepare_networks(models, model, checkpoint_info, calls: list[ExtraNetworkCall], vae_setting: str,
                     texts: list[str]) -> RunNetworks:
    run = RunNetworks()
    _activate_vae(models, model, checkpoint_info, vae_setting, run)
    _activate_loras(models, model, calls, run)
    if FAMILIES[model.family].prompts == "clip":  # the T5 families' encoders take no textual inversion
        _embeddings(models, model, texts, run)
    return run


def ti_hashes(used: dict) -> str | None:
    """`TI hashes` infotext value for the embeddings a run's prompts used."""
    if not used:
        return None
    return ", ".join(f"{_infotext_name(name)}: {embedding.shorthash}" for name, embedding in used.items())
