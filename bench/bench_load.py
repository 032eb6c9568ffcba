"""Loading an SD1.5-size single-file checkpoint with our loader vs a plain `safetensors.torch.load_file`.

    cd /work/main && PYTHONPATH=. .venv/bin/python bench/bench_load.py [--repeats 3] [--cache-dir /tmp/bench-models]

Each load runs in a fresh subprocess, so that peak memory figures do not mix; runs alternate loader, load_file,
loader, ... after one untimed read of the file has put it in the page cache. Both children import the same modules
(our loader, hence diffusers and transformers) before timing, so they start from the same memory baseline.
Measured in the child: wall time of the load call, and peak RSS (getrusage ru_maxrss) of the whole process.
Targets: load_checkpoint / load_file at most 1.3x in time, and at most 1.3x in peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.3
# load_checkpoint: the CPU path (weights copied into process memory, so the file may change under a loaded model);
# load_checkpoint_mapped: the GPU path's reading (tensors map the file until they are copied to VRAM).
MODES = ("load_checkpoint", "load_checkpoint_mapped", "load_file")
LOADERS = ("load_checkpoint", "load_checkpoint_mapped")


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(mode: str, path: str, cache_dir: str) -> None:
    """Runs in the subprocess: one load, one JSON line on stdout."""
    import resource

    import torch  # noqa: F401
    from safetensors.torch import load_file

    from webui.models.devices import DevicePolicy
    from webui.models.loader import load_checkpoint
    from webui.models.tokenizer import _load as tokenizer_cache
    from webui.models.tokenizer import clip_tokenizer

    before = _rss()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    if mode in LOADERS:
        loaded = load_checkpoint(Path(path), DevicePolicy.cpu(), Path(cache_dir),
                                 private=mode == "load_checkpoint")
        count = sum(p.numel() for m in loaded.modules() for p in m.parameters())
    else:
        loaded = load_file(path)
        count = sum(t.numel() for t in loaded.values())
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    after = _rss()
    # safetensors maps the file: tensors are read on first use. Touch one value in every page of every weight,
    # as the first generation would, and measure that too.
    tensors = ([t for m in loaded.modules() for t in [*m.parameters(), *m.buffers()]]
               if mode in LOADERS else list(loaded.values()))
    t = time.perf_counter()
    for tensor in tensors:
        flat = tensor.detach().reshape(-1)
        flat[::max(1, 4096 // flat.element_size())].sum()
    touch = time.perf_counter() - t
    peak_touched = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokenizer = 0.0
    if mode in LOADERS:  # how much of the load was building the CLIP tokenizer (cached per process)
        tokenizer_cache.cache_clear()
        t = time.perf_counter()
        clip_tokenizer(Path(cache_dir))
        tokenizer = time.perf_counter() - t
    print(json.dumps({"mode": mode, "seconds": elapsed, "peak": peak, "peak_before": peak_before,
                      "rss_before": before, "rss_after": after, "elements": count, "tokenizer": tokenizer,
                      "touch": touch, "peak_touched": peak_touched}))


def run_child(mode: str, path: Path, cache_dir: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", mode, str(path), str(cache_dir)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs of fresh processes")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the model file is kept")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    from bench.common import (DEFAULT_CACHE, ensure_full_model, machine_note, median, say, table, verdict,
                              warm_page_cache)
    from webui.models.tokenizer import ensure_vocabulary

    cache_dir = args.cache_dir or DEFAULT_CACHE
    say(f"bench_load: {machine_note()}")
    path = ensure_full_model(cache_dir)
    tokenizer_dir = cache_dir / "cache"
    ensure_vocabulary(tokenizer_dir)  # the derived vocabulary files exist before any timed load
    say(f"file: {path} ({path.stat().st_size / 1e9:.2f} GB)")
    say(f"untimed read to warm the page cache: {warm_page_cache(path):.1f} s")

    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for i in range(args.repeats):
        for mode in MODES:  # alternating: load_checkpoint, load_file, load_checkpoint, ...
            result = run_child(mode, path, tokenizer_dir)
            runs[mode].append(result)
            say(f"  run {i + 1}: {mode:15s} {result['seconds']:6.2f} s  peak RSS {result['peak'] / 2**30:5.2f} GiB"
                f"   + touching every weight {result['touch']:5.2f} s, "
                f"peak RSS then {result['peak_touched'] / 2**30:5.2f} GiB")

    say()
    gib = 2 ** 30
    rows = []
    for mode in MODES:
        r = runs[mode]
        rows.append([mode, len(r), f"{median([x['seconds'] for x in r]):.2f}",
                     f"{min(x['seconds'] for x in r):.2f}-{max(x['seconds'] for x in r):.2f}",
                     f"{median([x['peak'] for x in r]) / gib:.2f}",
                     f"{median([x['rss_before'] for x in r]) / gib:.2f}",
                     f"{median([x['peak'] - x['rss_before'] for x in r]) / gib:.2f}",
                     f"{median([x['rss_after'] for x in r]) / gib:.2f}",
                     f"{median([x['seconds'] + x['touch'] for x in r]):.2f}",
                     f"{median([x['peak_touched'] for x in r]) / gib:.2f}",
                     f"{r[0]['elements'] / 1e6:.1f}M"])
    table(["load", "n", "seconds (median)", "range", "peak RSS GiB", "RSS before GiB", "peak - before GiB",
           "RSS after GiB", "+touch seconds", "+touch peak RSS GiB", "elements"], rows)
    say()
    def ratios(mode: str, label: str, plus_touch_baseline: bool) -> None:
        """Time and peak RSS of `mode` against load_file (alone, or followed by reading every weight once)."""
        base = runs["load_file"]
        ours = runs[mode]
        base_s = median([x["seconds"] + (x["touch"] if plus_touch_baseline else 0) for x in base])
        base_m = median([x["peak_touched" if plus_touch_baseline else "peak"] for x in base])
        t_ratio = median([x["seconds"] for x in ours]) / base_s
        m_ratio = median([x["peak"] for x in ours]) / base_m
        against = "load_file + reading every weight" if plus_touch_baseline else "load_file"
        say(f"{label}: time ratio vs {against}: {t_ratio:.3f}  target <= {TARGET}  {verdict(t_ratio <= TARGET)};"
            f"  peak RSS ratio: {m_ratio:.3f}  target <= {TARGET}  {verdict(m_ratio <= TARGET)}")

    tokenizer = median([x["tokenizer"] for x in runs["load_checkpoint"]])
    ratios("load_checkpoint_mapped", "GPU path (mapped, copied to VRAM next)", False)
    ratios("load_checkpoint", "CPU path (private copy)", True)
    say(f"(each load includes building the CLIP tokenizer, once per process: {tokenizer:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
