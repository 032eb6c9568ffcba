"""What live previews cost a sampling step: runs with previews off against runs with previews on and followed.

    cd /work/main && PYTHONPATH=. .venv/bin/python bench/bench_previews.py [--skip-full] [--size 256]
        [--steps-full 10] [--repeats-full 2] [--repeats-tiny 10] [--cache-dir /tmp/bench-models]

"Followed" is what the UI does while a tab's job runs: a second thread polls every 0.2 s
(`ui.progress.POLL_SECONDS`) with a `PreviewWatcher` and encodes each new preview as PNG, as Gradio does for the
gallery. Variants, alternated run by run after a warm-up of each (medians compared):

- off: `live_previews_enable` false, nobody renders anything;
- default: Approx cheap every 10 steps (the defaults), followed. Target: at most 5% slower per step than off;
- informational: Approx cheap every step, TAESD every 10 steps (a random TAESD decoder of the real size in
  models/VAE-taesd), Full every 10 steps (the VAE, decoded in the sampling loop).

Settings: (a) the tiny SD1 model, 64x64, 20 steps; (b) an SD1.5-size checkpoint with random weights at --size
(default 256x256 so that the CPU run stays within minutes), --steps-full steps.
"""
from __future__ import annotations

import argparse
import io
import threading
import time
from pathlib import Path

import torch

from bench.common import (DEFAULT_CACHE, ensure_full_model, ensure_tiny_model, machine_note, median,
                          prepare_data_dir, say, start_services, table, verdict)
from webui.core.run_control import RunControl
from webui.engine.preview import PreviewWatcher, preview_every
from webui.core.request import GenerationRequest
from webui.ui.progress import POLL_SECONDS

TARGET = 1.05
VARIANTS = {  # name -> options
    "off": {"live_previews_enable": False},
    "default": {"live_previews_enable": True, "show_progress_type": "Approx cheap", "show_progress_every_n_steps": 10},
    "cheap every step": {"live_previews_enable": True, "show_progress_type": "Approx cheap",
                         "show_progress_every_n_steps": 1},
    "TAESD every 10": {"live_previews_enable": True, "show_progress_type": "TAESD", "show_progress_every_n_steps": 10},
    "Full every 10": {"live_previews_enable": True, "show_progress_type": "Full", "show_progress_every_n_steps": 10},
}


def write_random_taesd(folder: Path) -> None:
    from webui.models.preview_decoders import taesd_decoder

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = taesd_decoder().state_dict()
    torch.save({f"{int(k.split('.')[1]) + 1}.{k.split('.', 2)[2]}": v for k, v in state.items()},
               folder / "taesd_decoder.pth")


def follow(control: RunControl, every: int, done: threading.Event, shown: list) -> None:
    """The UI's poller: a new preview every `every` steps, encoded as PNG."""
    watcher = PreviewWatcher(control, every)
    while not done.wait(POLL_SECONDS):
        image = watcher.poll()
        if image is not None:
            image.save(io.BytesIO(), format="PNG")
            shown.append(image.size)


def timed_run(services, request: GenerationRequest, options: dict) -> tuple[float, int]:
    """Seconds per step of one run under `options`, and how many previews the follower showed."""
    services.options.update(options, save=False)
    control, done, shown = RunControl(), threading.Event(), []
    every = preview_every(services.options)
    follower = threading.Thread(target=follow, args=(control, every, done, shown)) if every else None
    if follower is not None:
        follower.start()
    started = time.perf_counter()
    try:
        services.engine.run(request, control)
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        if follower is not None:
            follower.join()
    return elapsed / request.steps, len(shown)


def measure(services, label: str, request: GenerationRequest, repeats: int) -> list[list]:
    for options in VARIANTS.values():  # warm-up: caches, the TAESD decoder's load
        timed_run(services, request, options)
    times = {name: [] for name in VARIANTS}
    previews = {name: 0 for name in VARIANTS}
    for _ in range(repeats):
        for name, options in VARIANTS.items():
            seconds, shown = timed_run(services, request, options)
            times[name].append(seconds)
            previews[name] = shown
    base = median(times["off"])
    rows = []
    for name in VARIANTS:
        ratio = median(times[name]) / base
        target = verdict(ratio <= TARGET) if name == "default" else "(info)"
        rows.append([label, name, f"{median(times[name]) * 1000:.1f}", f"{ratio:.3f}", previews[name], target])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps-full", type=int, default=10)
    parser.add_argument("--repeats-full", type=int, default=2)
    parser.add_argument("--repeats-tiny", type=int, default=10)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    say(machine_note())
    rows = []
    settings = [("tiny 64x64", ensure_tiny_model(args.cache_dir), 64, 20, args.repeats_tiny)]
    if not args.skip_full:
        settings.append((f"SD1.5-size {args.size}x{args.size}", ensure_full_model(args.cache_dir), args.size,
                         args.steps_full, args.repeats_full))
    for label, model, size, steps, repeats in settings:
        data = prepare_data_dir(args.cache_dir, "previews-" + label.split()[0], {model.name: model})
        write_random_taesd(data / "models" / "VAE-taesd")
        services = start_services(data)
        try:
            request = GenerationRequest(prompt="a lighthouse at dusk", negative_prompt="blurry", steps=steps,
                                        width=size, height=size, seed=1234, sampler_name="Euler a",
                                        save_images=False)
            say(f"{label}: {steps} steps, {repeats} repeats of each variant ...")
            rows += measure(services, label, request, repeats)
        finally:
            services.stop()
    table(["setting", "previews", "ms/step", "vs off", "previews shown", "target <= 1.05 (default)"], rows)


if __name__ == "__main__":
    main()
