"""Fitting a parsed LoRA file to a loaded model: which file module patches which model module, and the warnings
(another architecture, keys that match nothing, shapes that differ, tensors we cannot apply)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .deltas import delta_size
from .family import LABELS, lora_family
from .formats import NetworkModule, ParsedNetwork
from .keys import ModuleTable, Target
from .runtime_patches import is_quantized_layer


@dataclass
class Fit:
    """The pairs to apply, warnings naming the LoRA, or the reason the whole LoRA is skipped."""

    pairs: list[tuple[Target, NetworkModule]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None


def _shape_problem(module: NetworkModule, target: Target) -> str | None:
    weight = target.module.weight
    shape = torch.Size(weight.quant_shape) if is_quantized_layer(target.module) else weight.shape  # GGUF: logical
    out, numel = delta_size(module)
    if out != shape[0] or numel != shape.numel():
        return (f"{module.key}: {out}x{numel // max(out, 1)} in the LoRA, "
                f"{'x'.join(str(s) for s in shape)} in the model")
    for role in ("diff_b", "b_norm"):
        if role in module.tensors:
            bias = getattr(target.module, "bias", None)
            if bias is None or module.tensors[role].numel() != bias.numel():
                return f"{module.key}: a bias change for a module without that bias"
    dora = module.dora_scale
    channels = shape[0] if module.dora_per_output or len(shape) < 2 else shape[1]
    if dora is not None and dora.numel() != channels:
        return f"{module.key}: DoRA magnitudes of shape {list(dora.shape)} for a weight {list(shape)}"
    return None


def _model_label(family: str) -> str:
    return LABELS.get(family, family)


def fit_network(name: str, parsed: ParsedNetwork, table: ModuleTable, model_family: str) -> Fit:
    model = _model_label(model_family)
    allowed = {parsed.family} if parsed.family else set(parsed.families)
    if lora_family(model_family) not in allowed:
        trained_for = " or ".join(LABELS[f] for f in sorted(allowed))
        return Fit(skipped=f'LoRA "{name}" does not fit this checkpoint '
                           f'({trained_for} LoRA on an {model} model): skipped')
    fit = Fit()
    unmatched, misfits = [], []
    for key, module in parsed.modules.items():
        target = table.resolve(key)
        if target is None:
            unmatched.append(key)
            continue
        problem = _shape_problem(module, target)
        if problem:
            misfits.append(problem)
        else:
            fit.pairs.append((target, module))
    total = len(parsed.modules)
    unmatched.sort()
    misfits.sort()
    if not fit.pairs:
        if total == 0:
            example = f", e.g. {parsed.not_understood[0]}" if parsed.not_understood else ""
            reason = f"no LoRA weights recognised in {parsed.path.name}{example}"
        elif not misfits:
            reason = f"none of its {total} keys matches a module of this {model} model, e.g. {unmatched[0]}"
        elif not unmatched:
            reason = f"its weights have other shapes than this {model} model's, e.g. {misfits[0]}"
        else:
            reason = (f"{len(unmatched)} of its {total} keys match no module of this {model} model and the other "
                      f"{len(misfits)} have other shapes, e.g. {misfits[0]}")
        fit.skipped = f'LoRA "{name}" does not fit this checkpoint ({reason}): skipped'
        return fit
    if unmatched:
        fit.warnings.append(f'LoRA "{name}": {len(unmatched)} of {total} keys match no module of this {model} model '
                            f'and were skipped (e.g. {unmatched[0]})')
    if misfits:
        fit.warnings.append(f'LoRA "{name}": {len(misfits)} of {total} keys have shapes that do not fit this {model} '
                            f'model and were skipped (e.g. {misfits[0]})')
    if parsed.not_understood:
        count = len(parsed.not_understood)
        what = ("1 tensor of a kind we cannot apply was" if count == 1
                else f"{count} tensors of a kind we cannot apply were")
        fit.warnings.append(f'LoRA "{name}": {what} ignored (e.g. {parsed.not_understood[0]})')
    return fit
