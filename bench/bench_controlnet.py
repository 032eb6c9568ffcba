"""The per-step cost of ControlNet units, against no ControlNet.

    cd /work/main && PYTHONPATH=. .venv/bin/python bench/bench_controlnet.py [--skip-full] [--full-size 512]
        [--repeats-tiny 5] [--repeats-full 2] [--device cpu|cuda] [--cache-dir /tmp/bench-models]

(a) Tiny: whole engine runs of the tiny SD1 model (64x64, 20 Euler steps, batch 1, CFG) with 0, 1, 2 and 3 tiny
    ControlNet units (preprocessor "none", so only the ControlNets' own work is timed), alternating the settings
    run after run; the per-step time is the run's median / steps.
(b) SD1.5 shapes (random weights, built in memory): one model evaluation as the sampling loop makes it (a CFG
    batch of 2 at 512x512 = 64x64 latents) with 0, 1 and 2 full-size ControlNets' residuals, through the same
    `ControlPlan.residuals` the engine calls. No target: the figures say what a unit costs (a ControlNet is
    about the size of the UNet's encoder half, so expect roughly +40-50% per unit).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_CACHE, ensure_tiny_model, machine_note, median, prepare_data_dir, say, \
    start_services, table
from webui.control.runner import ControlPlan, PreparedUnit, residual_scales
from webui.control.units import ControlUnit
from webui.core.request import GenerationRequest


def tiny(cache_dir: Path, repeats: int) -> None:
    from webui.models.tiny import write_controlnet
    checkpoint = ensure_tiny_model(cache_dir)
    data = prepare_data_dir(cache_dir, "controlnet", {"tiny": checkpoint})
    for index in range(3):
        path = data / "models" / "ControlNet" / f"control_tiny_{index}.safetensors"
        if not path.exists():
            write_controlnet(path, "sd1", seed=index)
    services = start_services(data)
    services.controlnets.refresh()
    control = np.zeros((64, 64, 3), np.uint8)
    control[16:48, 16:48] = 255
    from PIL import Image
    picture = Image.fromarray(control)
    steps = 20

    def run(units: int) -> float:
        request = GenerationRequest(prompt="a lighthouse", sampler_name="Euler", steps=steps, width=64, height=64,
                                    seed=1, save_images=False, controlnet_units=[
                                        ControlUnit(enabled=True, module="none", model=f"control_tiny_{i}",
                                                    image=picture, weight=0.6) for i in range(units)])
        started = time.perf_counter()
        services.engine.run(request)
        return time.perf_counter() - started

    counts = [0, 1, 2, 3]
    for count in counts:  # warm-up: loads the ControlNets into the cache
        run(count)
    times = {count: [] for count in counts}
    for _ in range(repeats):
        for count in counts:
            times[count].append(run(count))
    base = median(times[0]) / steps
    rows = []
    for count in counts:
        per_step = median(times[count]) / steps
        rows.append([count, f"{per_step * 1000:.1f}", f"{per_step / base:.2f}",
                     f"{(per_step - base) / max(count, 1) * 1000:.1f}" if count else "-"])
    say("\n(a) tiny SD1, 64x64, 20 steps, batch 1 + CFG: engine run per step")
    table(["units", "ms/step", "vs none", "ms per extra unit"], rows)
    services.stop()


def full(size: int, repeats: int, device: str) -> None:
    from diffusers import ControlNetModel, UNet2DConditionModel
    from webui.models.architecture import Architecture, builtin_ldm_config, unet_config
    dtype = torch.float16 if device == "cuda" else torch.float32
    arch = Architecture("sd1", False, "epsilon", True, builtin_ldm_config("sd1", False, False))
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(unet_config(arch)).eval().to(device, dtype)
    nets = [ControlNetModel.from_unet(unet).eval().to(device, dtype) for _ in range(2)]

    class Loaded:  # what the runner reads of a loaded ControlNet
        def __init__(self, model):
            self.model = model

    latent = size // 8
    sample = torch.randn(2, 4, latent, latent, device=device, dtype=dtype)
    embeds = torch.randn(2, 77, 768, device=device, dtype=dtype)
    cond = torch.rand(1, 3, size, size, device=device, dtype=dtype)
    t = torch.tensor(500, device=device)
    unit = ControlUnit(enabled=True, weight=0.6)

    def step(units: int) -> float:
        plan = ControlPlan([PreparedUnit(i, unit, Loaded(nets[i]), [cond], residual_scales(0.6, 13, "Balanced"),
                                         False) for i in range(units)])
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.no_grad():
            residuals = plan.residuals(0.0, sample, t, embeds, None, [0], batch=1, do_cfg=True)
            unet(sample, t, encoder_hidden_states=embeds, return_dict=False, **residuals)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    counts = [0, 1, 2]
    for count in counts:
        step(count)
    times = {count: [] for count in counts}
    for _ in range(repeats):
        for count in counts:
            times[count].append(step(count))
    base = median(times[0])
    rows = [[count, f"{median(times[count]):.3f}", f"{median(times[count]) / base:.2f}",
             f"{(median(times[count]) - base) / max(count, 1):.3f}" if count else "-"] for count in counts]
    say(f"\n(b) SD1.5 shapes, {size}x{size}, CFG batch of 2, {device} {str(dtype).replace('torch.', '')}: "
        "one model evaluation")
    table(["units", "s/step", "vs none", "s per extra unit"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--full-size", type=int, default=512)
    parser.add_argument("--repeats-tiny", type=int, default=5)
    parser.add_argument("--repeats-full", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    say(machine_note())
    tiny(args.cache_dir, args.repeats_tiny)
    if not args.skip_full:
        full(args.full_size, args.repeats_full, args.device)


if __name__ == "__main__":
    main()
