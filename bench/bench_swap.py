"""Switching between two checkpoints held in the model cache (sd_checkpoints_limit = 2), against a cold load.

    cd /work/main && PYTHONPATH=. .venv/bin/python bench/bench_swap.py [--full] [--repeats 5]

Two checkpoints A and B in the data dir (tiny SD1 ones; with --full also two SD1.5-size ones, a second pass).
Select A, select B, then time switching back and forth while both are cached: directly with
`services.models.select(...)`, and through the job queue (`services.load_checkpoint(title).wait()`, what the UI
and `/sdapi/v1/options` do). Target: a cached switch under 0.3 s. Cold loads (cache emptied first) are timed too,
for comparison.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.common import (DEFAULT_CACHE, ensure_full_model, ensure_tiny_model, machine_note, median,
                          prepare_data_dir, say, start_services, table, verdict, warm_page_cache)

TARGET = 0.3


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def measure(label: str, cache_dir: Path, files: dict[str, Path], repeats: int) -> dict:
    for path in files.values():
        warm_page_cache(path)  # cold load here means "not in our cache", not "not in the OS page cache"
    services = start_services(prepare_data_dir(cache_dir, f"swap-{label}", files))
    try:
        services.options.update({"sd_checkpoints_limit": 2})
        a, b = list(files)
        manager = services.models

        cold = []
        for _ in range(repeats):
            manager.unload_all()
            seconds, _ = timed(lambda: manager.select(a))
            cold.append(seconds)
        manager.unload_all()
        _, (_, model_a) = timed(lambda: manager.select(a))
        _, (_, model_b) = timed(lambda: manager.select(b))  # both now cached, B current

        direct, reloads = [], 0
        for i in range(repeats):
            for name, expected in ((a, model_a), (b, model_b)):
                seconds, (_, model) = timed(lambda: manager.select(name))
                direct.append(seconds)
                reloads += model is not expected

        title_a, title_b = manager.resolve(a).title, manager.resolve(b).title
        queued, failed = [], []
        for i in range(repeats):
            for title, expected in ((title_a, model_a), (title_b, model_b)):
                def through_queue():
                    job = services.load_checkpoint(title)
                    job.wait()
                    return job
                seconds, job = timed(through_queue)
                queued.append(seconds)
                if job.state != "done":
                    failed.append(f"{job.state}: {job.error}")
                reloads += manager.current[1] is not expected
        return {"label": label, "cold": cold, "direct": direct, "queued": queued, "reloads": reloads,
                "failed": failed, "loaded": manager.loaded_titles(),
                "size_gb": model_a.size_bytes() / 1e9}
    finally:
        services.models.unload_all()
        services.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where model files are kept")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="also two SD1.5-size checkpoints (2 x 4.3 GB on disk)")
    args = parser.parse_args(argv)
    say(f"bench_swap: {machine_note()}")

    settings = {"tiny": {"tiny-a": ensure_tiny_model(args.cache_dir, 1),
                         "tiny-b": ensure_tiny_model(args.cache_dir, 2)}}
    if args.full:
        settings["SD1.5-size"] = {"full-a": ensure_full_model(args.cache_dir, 0),
                                  "full-b": ensure_full_model(args.cache_dir, 1)}
    results = []
    for label, files in settings.items():
        results.append(measure(label, args.cache_dir, files, args.repeats))
        say(f"  done: {label}")

    say()
    rows = []
    for r in results:
        rows.append([r["label"], f"{r['size_gb']:.2f}", f"{median(r['cold']):.3f}",
                     f"{median(r['direct']) * 1000:.1f}", f"{max(r['direct']) * 1000:.1f}",
                     f"{median(r['queued']) * 1000:.1f}", f"{max(r['queued']) * 1000:.1f}",
                     len(r["direct"]), r["reloads"]])
    table(["checkpoints", "GB each", "cold load s (median)", "select ms (median)", "select ms (max)",
           "queue ms (median)", "queue ms (max)", "switches", "reloaded"], rows)
    say()
    for r in results:
        worst = max(max(r["direct"]), max(r["queued"]))
        ok = worst < TARGET and not r["failed"] and r["reloads"] == 0
        say(f"cached switch ({r['label']}): select {median(r['direct']) * 1000:.1f} ms, through the queue "
            f"{median(r['queued']) * 1000:.1f} ms (slowest {worst * 1000:.1f} ms)  target < {TARGET * 1000:.0f} ms  "
            f"{verdict(ok)}  | cold load {median(r['cold']):.2f} s ({median(r['cold']) / median(r['direct']):.0f}x "
            f"the cached switch)")
        if r["failed"]:
            say(f"  queue jobs failed: {r['failed'][:3]}")
        if r["reloads"]:
            say(f"  {r['reloads']} switches did not return the cached model object (reloaded?)")
        say(f"  still cached at the end: {r['loaded']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
