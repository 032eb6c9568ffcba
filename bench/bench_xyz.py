"""What an X/Y/Z plot costs per cell on top of the same plain generations run one by one.

    cd /work/main && PYTHONPATH=. .venv/bin/python bench/bench_xyz.py [--full] [--size 64] [--steps 8]
        [--repeats 5] [--cache-dir /tmp/bench-models]

Three ways to make the same 3 x 3 cells (Steps x CFG Scale, one image each, nothing saved), alternated repeat by
repeat after a warm-up of each (medians compared):

- plot: one txt2img job with script "X/Y/Z plot" (labelled grid drawn, cells kept as sub images);
- queued: nine plain txt2img jobs queued one after another (what a user does by hand);
- engine: nine `services.engine.run` calls (the bare generations, no queue).

Target: the plot's time per cell at most 5% above the bare generations' (`engine`). Both wall-clock time and the
process's CPU time are measured; on a shared machine the CPU time is the steadier figure (other processes' load
stretches wall-clock time unevenly). Settings: the tiny SD1 model at --size (default 64x64); with --full an
SD1.5-size checkpoint with random weights at 256x256 (slow on a CPU). --device cuda runs on the GPU.
"""
from __future__ import annotations

import argparse
import time

from bench.common import (DEFAULT_CACHE, ensure_full_model, ensure_tiny_model, machine_note, median,
                          prepare_data_dir, say, start_services, table, verdict)
from webui.core.request import GenerationRequest

TARGET = 1.05
STEPS_VALUES = (2, 3, 4)  # added to --steps - 3
CFG_VALUES = (5.0, 7.0, 9.0)


def base(size: int, steps: int) -> dict:
    return dict(prompt="a red fox in the snow", negative_prompt="blurry", sampler_name="Euler", steps=steps,
                width=size, height=size, seed=11, save_images=False)


def cells(steps: int) -> list[tuple[int, float]]:
    offset = steps - 3
    return [(s + offset, cfg) for cfg in CFG_VALUES for s in STEPS_VALUES]


def start_on(data_dir, device: str):
    """`common.start_services` on `device` (cpu, or cuda for the GPU)."""
    if device == "cpu":
        return start_services(data_dir)
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    services = build_services(parse_flags(["--data-dir", str(data_dir), "--device", device]))
    services.hasher.wait_idle()
    return services


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def run_plot(services, size: int, steps: int) -> tuple[float, float]:
    steps_text = ", ".join(str(s) for s in sorted({s for s, _ in cells(steps)}))
    args = ["Steps", steps_text, [], "CFG Scale", ", ".join(str(c) for c in CFG_VALUES), [], "Nothing", "", [],
            True, True, False, False, False, False, False, 0, False]
    started = clocks()
    job = services.generate(GenerationRequest(**base(size, steps), script_name="X/Y/Z plot",
                                              script_run_args=args))
    job.wait()
    assert job.error is None, job.error
    assert len(job.result.images) == 1 + len(cells(steps))
    return since(started)


def run_queued(services, size: int, steps: int) -> tuple[float, float]:
    started = clocks()
    for cell_steps, cfg in cells(steps):
        job = services.generate(GenerationRequest(**{**base(size, steps), "steps": cell_steps, "cfg_scale": cfg}))
        job.wait()
        assert job.error is None, job.error
    return since(started)


def run_engine(services, size: int, steps: int) -> tuple[float, float]:
    started = clocks()
    for cell_steps, cfg in cells(steps):
        services.engine.run(GenerationRequest(**{**base(size, steps), "steps": cell_steps, "cfg_scale": cfg}))
    return since(started)


def measure(name: str, model, size: int, steps: int, repeats: int, cache_dir, device: str) -> list:
    services = start_on(prepare_data_dir(cache_dir, f"xyz-{name}", {"model": model}), device)
    try:
        ways = {"plot": run_plot, "queued": run_queued, "engine": run_engine}
        for way in ways.values():  # warm-up: the model loaded, kernels and fonts ready
            way(services, size, steps)
        times = {key: [] for key in ways}
        for _ in range(repeats):
            for key, way in ways.items():
                times[key].append(way(services, size, steps))
    finally:
        services.stop()
    count = len(cells(steps))
    rows = []
    for column, clock in ((0, "wall"), (1, "cpu")):
        per_cell = {key: median([v[column] for v in values]) / count for key, values in times.items()}
        ratio = per_cell["plot"] / per_cell["engine"]
        rows.append([name, f"{size}x{size}", clock, count, f"{per_cell['engine'] * 1000:.1f}",
                     f"{per_cell['queued'] * 1000:.1f}", f"{per_cell['plot'] * 1000:.1f}",
                     f"{per_cell['plot'] / per_cell['queued']:.3f}", f"{ratio:.3f}", verdict(ratio <= TARGET)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also an SD1.5-size checkpoint at 256x256")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--device", default="cpu")
    options = parser.parse_args()
    say(machine_note())
    rows = measure("tiny", ensure_tiny_model(options.cache_dir), options.size, options.steps, options.repeats,
                   options.cache_dir, options.device)
    if options.full:
        rows += measure("full", ensure_full_model(options.cache_dir), 256, 4, max(1, options.repeats // 2),
                        options.cache_dir, options.device)
    table(["model", "size", "clock", "cells", "engine ms/cell", "queued ms/cell", "plot ms/cell", "plot/queued",
           "plot/engine", f"<= {TARGET}"], rows)


if __name__ == "__main__":
    main()
