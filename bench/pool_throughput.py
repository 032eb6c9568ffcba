"""The worker pool on this machine: throughput of 2 workers against 1, and the head's cost per job.

1. Throughput: 32 txt2img jobs (tiny SD1 model, 64x64, `--steps`, Euler) queued at once on a pool of 1 worker and
   on a pool of 2 (a local Ray runtime, one CPU and one torch thread per worker); rounds alternate 1, 2, 2, 1, ...
   (each pool is started, warmed up, timed, stopped). Target: 2 workers >= 1.7x the jobs/s of 1.
   For scale, the same jobs on 1 and on 2 plain processes (no Ray, no head: each its own in-process server, one
   torch thread, the jobs split between them), alternating the same way: what this machine's two cores give two
   independent copies of the work (`--no-ceiling` leaves it out).
2. The head's overhead per job: a 1-step job, submitted and awaited one at a time, on the in-process worker (no
   Ray; one torch thread, as a worker has) and on a pool of 1 worker, alternating A, B, A, B in one run. The median
   wall time per job from submit to finished. Target: the pool's <= 1.05x the in-process one.

    PYTHONPATH=. .venv/bin/python bench/pool_throughput.py [--jobs 32] [--steps 4] [--rounds 2] [--overhead 30]
                                                           [--no-ceiling]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DEFAULT_CACHE, ensure_tiny_model, machine_note, median, prepare_data_dir, say,  # noqa: E402
                    table, verdict)


def _request(steps: int, seed: int):
    from webui.core.request import GenerationRequest
    return GenerationRequest(prompt=f"a lighthouse {seed}", steps=steps, width=64, height=64, seed=seed,
                             sampler_name="Euler", save_images=False)


def _pool(data: Path, workers: int):
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    services = build_services(parse_flags(["--data-dir", str(data), "--device", "cpu", "--workers", str(workers)]))
    services.hasher.wait_idle()
    while services.queue.pool.ready() < workers:
        time.sleep(0.2)
    for seed in range(2 * workers):  # each worker loads the checkpoint and warms up
        services.generate(_request(2, seed)).wait(300)
    return services


def _batch(services, jobs: int, steps: int) -> float:
    """Seconds for `jobs` jobs queued at once to finish."""
    started = time.perf_counter()
    queued = [services.generate(_request(steps, 1000 + i)) for i in range(jobs)]
    for job in queued:
        job.wait(600)
        assert job.state == "done", job.error
    return time.perf_counter() - started


def _plain_process(args) -> float:
    """In a process of its own: a server without a pool over `data`; the seconds its share of the jobs took once
    every process was warm (they start together at the barrier)."""
    data, jobs, steps, barrier = args
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    from common import start_services
    services = start_services(data)
    try:
        for seed in range(4):
            _one(services, seed, steps)
        barrier.wait()
        return _batch(services, jobs, steps)
    finally:
        services.stop()


def _plain(cache_dir: Path, model: Path, processes: int, jobs: int, steps: int) -> float:
    """jobs/s of `processes` plain processes sharing `jobs` jobs."""
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(processes)
        shares = [(prepare_data_dir(cache_dir, f"pool-plain{i}", {"tiny": model}), jobs // processes, steps, barrier)
                  for i in range(processes)]
        with context.Pool(processes) as workers:
            seconds = max(workers.map(_plain_process, shares))
    return jobs // processes * processes / seconds


def _one(services, seed: int, steps: int = 1) -> float:
    started = time.perf_counter()
    job = services.generate(_request(steps, seed))
    job.wait(120)
    assert job.state == "done", job.error
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--overhead", type=int, default=30, help="1-step jobs per side for the overhead figure")
    parser.add_argument("--no-ceiling", action="store_true", help="leave out the plain-process reference")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    torch.set_num_threads(1)  # the in-process worker as a pool worker runs: one thread
    say(f"pool throughput and head overhead; {machine_note()}")
    model = ensure_tiny_model(args.cache_dir)
    data = prepare_data_dir(args.cache_dir, "pool", {"tiny": model})

    # --- throughput: 1 worker vs 2 ------------------------------------------------------------------------------
    rates: dict[int, list[float]] = {1: [], 2: []}
    order = [1, 2, 2, 1] * ((args.rounds + 1) // 2)
    for workers in order[:2 * args.rounds]:
        services = _pool(data, workers)
        try:
            seconds = _batch(services, args.jobs, args.steps)
        finally:
            services.stop()
        rates[workers].append(args.jobs / seconds)
        say(f"  {workers} worker(s): {args.jobs} jobs in {seconds:.2f} s ({args.jobs / seconds:.2f} jobs/s)")
    one, two = median(rates[1]), median(rates[2])
    plain: dict[int, list[float]] = {1: [], 2: []}
    if not args.no_ceiling:
        for processes in order[:2 * args.rounds]:
            plain[processes].append(_plain(args.cache_dir, model, processes, args.jobs, args.steps))
            say(f"  {processes} plain process(es): {plain[processes][-1]:.2f} jobs/s")

    # --- overhead: in-process vs a pool of one, one 1-step job at a time -------------------------------------------
    from common import start_services
    local = start_services(prepare_data_dir(args.cache_dir, "pool-local", {"tiny": model}))
    pooled = _pool(data, 1)
    try:
        for services in (local, pooled):
            for seed in range(3):
                _one(services, seed)
        inproc, remote, inproc20, remote20 = [], [], [], []
        for i in range(args.overhead):
            inproc.append(_one(local, 100 + i))
            remote.append(_one(pooled, 100 + i))
        for i in range(max(3, args.overhead // 3)):  # for scale: the same on a 20-step job
            inproc20.append(_one(local, 200 + i, 20))
            remote20.append(_one(pooled, 200 + i, 20))
    finally:
        pooled.stop()
        local.stop()
    a, b = median(inproc), median(remote)
    a20, b20 = median(inproc20), median(remote20)

    say()
    table(["measure", "value", "target", "verdict"], [
        [f"jobs/s, 1 worker ({args.steps} steps, 64x64)", f"{one:.2f}", "", ""],
        [f"jobs/s, 2 workers ({args.steps} steps, 64x64)", f"{two:.2f}", "", ""],
        ["2 workers / 1 worker", f"{two / one:.2f}x", ">= 1.70x", verdict(two / one >= 1.7)],
    ] + ([
        ["reference: 2 plain processes / 1 (no Ray)", f"{median(plain[2]) / median(plain[1]):.2f}x", "", ""],
    ] if plain[1] else []) + [
        ["1-step job, in-process worker (median)", f"{a * 1000:.1f} ms", "", ""],
        ["1-step job, pool of 1 worker (median)", f"{b * 1000:.1f} ms", "", ""],
        ["head overhead per job", f"{(b / a - 1) * 100:+.1f}% ({(b - a) * 1000:+.1f} ms)", "<= +5%",
         verdict(b / a <= 1.05)],
        ["20-step job: in-process / pool of 1", f"{a20 * 1000:.0f} / {b20 * 1000:.0f} ms",
         f"{(b20 / a20 - 1) * 100:+.1f}%", ""],
    ])


if __name__ == "__main__":
    main()
