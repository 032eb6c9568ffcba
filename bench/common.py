"""Helpers shared by the benchmark scripts: model files, a data dir, services, and printing.

Benchmarks are not tests: they measure, print a table and PASS/MISS against a target, and exit 0.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("BENCH_CACHE", "/tmp/bench-models"))
FULL_BYTES = 4_300_000_000  # an SD1.5-size fp32 single file (UNet + VAE + CLIP-L), about 4.3 GB


def say(text: str = "") -> None:
    print(text, flush=True)


# --- model files ------------------------------------------------------------------------------------------------

def ensure_full_model(cache_dir: Path, seed: int = 0) -> Path:
    """The SD1.5-size checkpoint (random weights, no sidecar) in cache_dir, written once and reused."""
    from webui.models.tiny import write_single_file

    name = "full-sd1.safetensors" if seed == 0 else f"full-sd1-seed{seed}.safetensors"
    path = Path(cache_dir) / name
    if path.exists() and path.stat().st_size > FULL_BYTES * 0.9:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < FULL_BYTES * 1.2:
        sys.exit(f"not enough free disk in {path.parent} for {name}: {free / 2**30:.1f} GiB free, "
                 f"about {FULL_BYTES * 1.2 / 2**30:.1f} GiB needed")
    say(f"writing {path} (SD1.5 shapes, random weights, about 4.3 GB; once) ...")
    started = time.perf_counter()
    partial = path.with_name(f".partial-{os.getpid()}-{name}")
    try:
        write_single_file(partial, "sd1", full=True, seed=seed)
        os.replace(partial, path)  # a half-written file never takes the real name
    finally:
        partial.unlink(missing_ok=True)
    say(f"  written in {time.perf_counter() - started:.0f} s")
    return path


def ensure_tiny_model(cache_dir: Path, seed: int = 0) -> Path:
    """A tiny SD1 checkpoint (real A1111 single-file layout) with its .yaml sidecar."""
    from webui.models.tiny import write_single_file

    path = Path(cache_dir) / f"tiny-sd1-seed{seed}.safetensors"
    if not (path.exists() and path.with_suffix(".yaml").exists()):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_single_file(path, "sd1", full=False, seed=seed)
    return path


# --- a data dir and the services on it ---------------------------------------------------------------------------

def prepare_data_dir(cache_dir: Path, name: str, models: dict[str, Path]) -> Path:
    """A data dir (kept between runs, so hashes stay cached) whose checkpoint folder holds exactly `models`
    (checkpoint name -> file), as symlinks to the files (and their .yaml sidecars) in the cache."""
    data = Path(cache_dir) / f"data-{name}"
    checkpoints = data / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for entry in checkpoints.iterdir():
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
    for stem, source in models.items():
        (checkpoints / f"{stem}{source.suffix}").symlink_to(source.resolve())
        sidecar = source.with_suffix(".yaml")
        if sidecar.exists():
            (checkpoints / f"{stem}.yaml").symlink_to(sidecar.resolve())
    (data / "config.json").unlink(missing_ok=True)  # start from default options every run
    return data


def start_services(data_dir: Path):
    """build_services on the data dir (CPU), then wait until the background hasher is idle, so that hashing a
    new file never runs beside the timed work."""
    from webui.services import build_services
    from webui.settings.flags import parse_flags

    services = build_services(parse_flags(["--data-dir", str(data_dir), "--device", "cpu"]))
    started = time.perf_counter()
    services.hasher.wait_idle()
    waited = time.perf_counter() - started
    if waited > 0.5:
        say(f"(waited {waited:.1f} s for the background hasher to hash new files before timing)")
    return services


def warm_page_cache(path: Path) -> float:
    """Read a file once, untimed by the caller, so that timed reads come from the page cache."""
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.read(16 << 20):
            pass
    return time.perf_counter() - started


# --- numbers and printing ---------------------------------------------------------------------------------------

def median(values) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        say("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            say("  ".join("-" * w for w in widths))


def machine_note() -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
            f"load average {load:.2f} at start")
