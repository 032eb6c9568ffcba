"""The canny preprocessor on a 512x512 picture through `PreprocessorRegistry.run`: median milliseconds per map.

    cd /work/main && PYTHONPATH=. .venv/bin/python bench/bench_canny.py [--repeats 50] [--threads N]

Times the whole call a ControlNet unit makes (PIL picture in, RGB map out: conversion, thresholds, cv2.Canny, the
three-channel map) at the default Preprocessor Resolution (512) and thresholds (100/200), after one warm-up run.
For reference it also times bare `cv2.Canny` on the same pixels, and the registry on a 1024x1024 picture scaled
down to 512. Target: the 512x512 call under 20 ms.
"""
from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
from PIL import Image

from bench.common import machine_note, median, say, table, verdict
from webui.control.preprocessors import PreprocessorRegistry

TARGET_MS = 20.0


def picture(size: int, seed: int = 0) -> Image.Image:
    """Gradients, shapes and noise: enough edges for canny to do real work."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([x * 255 / size, y * 255 / size, (x + y) * 127 / size], axis=2)
    pixels = (pixels + rng.normal(0, 8, (size, size, 3))).clip(0, 255).astype(np.uint8)
    for _ in range(12):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.circle(pixels, centre, int(rng.integers(size // 20, size // 6)), colour, -1)
    return Image.fromarray(pixels)


def timed_ms(run, repeats: int) -> list[float]:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per row")
    parser.add_argument("--threads", type=int, default=0, help="OpenCV threads (0: OpenCV's default)")
    args = parser.parse_args(argv)
    if args.threads:
        cv2.setNumThreads(args.threads)
    say(f"bench_canny: {machine_note()}, OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads")

    registry = PreprocessorRegistry("/nonexistent-annotators")  # canny needs no weight files
    small, large = picture(512), picture(1024, seed=1)
    small_pixels = np.asarray(small)
    rows, main_ms = [], None
    for label, run in (
        ("registry.run canny, 512x512 picture", lambda: registry.run("canny", small)),
        ("bare cv2.Canny, same pixels", lambda: cv2.Canny(small_pixels, 100, 200)),
        ("registry.run canny, 1024x1024 -> 512", lambda: registry.run("canny", large)),
    ):
        times = timed_ms(run, args.repeats)
        ms = median(times)
        main_ms = ms if main_ms is None else main_ms
        rows.append([label, len(times), f"{ms:.2f}", f"{min(times):.2f}", f"{max(times):.2f}"])
    say()
    table(["setting", "n", "median ms", "min ms", "max ms"], rows)
    say()
    say(f"canny 512x512 through registry.run: {main_ms:.2f} ms (target under {TARGET_MS:.0f} ms) "
        f"{verdict(main_ms < TARGET_MS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
