"""Where a transformer family's parts live on a GPU with less free memory than the model (Forge's "GPU Weights").

FLUX.1 dev in bf16 is 24 GB of transformer and 9.5 GB of T5-XXL: most cards hold neither whole. When a FLUX.1 /
SD3 checkpoint is placed on the GPU (without --medvram / --lowvram, which keep their own meaning), the free memory
less a reserve for the activations (or the "GPU Weights (MB)" setting when it is not 0) is the budget for weights:

- everything fits: all parts on the GPU, as for SD checkpoints;
- the transformer and VAE fit but not the text encoders too: the text encoders stay in RAM and are streamed to the
  GPU layer by layer while a prompt is encoded (accelerate's hooks), so they hold no VRAM between encodings;
- the transformer does not fit: its weights stay in RAM and are streamed to the GPU block by block at every step
  (diffusers' group offloading, with a CUDA stream so the next block's copy overlaps the current block's work);
  the text encoders are streamed as above.

`plan_placement` is the decision (pure, tested with numbers); `apply_placement` carries it out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ACTIVATION_RESERVE = 3 * 2 ** 30  # what sampling a 1024x1024 FLUX.1 image needs beside the weights (bf16)


@dataclass(frozen=True)
class Placement:
    stream_transformer: bool
    stream_text_encoders: bool
    budget: int  # bytes of weights the GPU may hold
    reason: str


def module_bytes(module) -> int:
    if module is None:
        return 0
    return sum(p.numel() * p.element_size() for p in module.parameters())


def plan_placement(transformer: int, text_encoders: int, vae: int, free: int, gpu_weights_mb: int = 0,
                   reserve: int = ACTIVATION_RESERVE) -> Placement:
    """The placement for parts of these sizes (bytes) with `free` bytes free on the GPU; `gpu_weights_mb` > 0
    sets the weight budget instead of the free memory less the reserve."""
    budget = gpu_weights_mb * 2 ** 20 if gpu_weights_mb > 0 else max(0, free - reserve)
    mib = 2 ** 20
    if transformer + text_encoders + vae <= budget:
        return Placement(False, False, budget, "all parts fit on the GPU")
    if transformer + vae <= budget:
        return Placement(False, True, budget, f"text encoders ({text_encoders // mib} MiB) streamed while "
                                               f"encoding: {budget // mib} MiB for weights")
    return Placement(True, True, budget, f"transformer ({transformer // mib} MiB) streamed block by block: "
                                         f"{budget // mib} MiB for weights")


def placement_for(model, policy, gpu_weights_mb: int = 0, free: int | None = None) -> Placement:
    """The placement of a transformer-family model under the policy: --lowvram streams everything, --medvram
    at least the text encoders, otherwise the budget decides."""
    if policy.offload == "sequential":
        return Placement(True, True, 0, "--lowvram: every part streamed")
    plan = plan_placement(module_bytes(model.unet), sum(module_bytes(e) for e in model.text_encoders),
                          module_bytes(model.vae), free_memory(policy.device) if free is None else free,
                          gpu_weights_mb)
    if policy.offload == "model" and not plan.stream_text_encoders:
        return Placement(plan.stream_transformer, True, plan.budget, "--medvram: text encoders streamed")
    return plan


def free_memory(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def apply_placement(model, device: torch.device, placement: Placement) -> None:
    """Put `model`'s modules where `placement` says (the VAE always on the device)."""
    from accelerate import cpu_offload

    model.vae.to(device)
    encoders = [encoder for encoder in model.text_encoders if encoder is not None]
    for encoder in encoders:
        if placement.stream_text_encoders:
            cpu_offload(encoder, execution_device=device)
        else:
            encoder.to(device)
    if placement.stream_transformer:
        from diffusers.hooks import apply_group_offloading

        apply_group_offloading(model.unet, onload_device=device, offload_device=torch.device("cpu"),
                               offload_type="block_level", num_blocks_per_group=1,
                               use_stream=device.type == "cuda", low_cpu_mem_usage=True)
    else:
        model.unet.to(device)
