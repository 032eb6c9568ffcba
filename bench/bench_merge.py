"""Peak memory of the Checkpoint Merger against the size of one model.

    cd /work/main && PYTHONPATH=. .venv/bin/python bench/bench_merge.py [--size-mb 1024] [--full] [--no-reference]

Two SD1 checkpoints A and B in the real single-file layout: by default tiny ones (webui/models/tiny.py) grown to
`--size-mb` each with extra UNet tensors of 16 MiB (random fp32, merged like every other tensor), or with `--full`
two SD1.5-size files (random weights, 4.3 GB each). Each merge runs in a fresh subprocess (`run_merge`, as the
queue's "merge" job runs it) after the modules are imported; the child resets its peak RSS (`/proc/self/clear_refs`)
just before the merge and reads `VmHWM` after it, so the figure is what the merge itself added.

Variants: Weighted sum to .safetensors (the streaming writer), to .ckpt (torch.save needs the whole state dict),
from a .ckpt C with Add difference, and, for comparison, A1111's way (both files read whole, merged in place into
A's dict, written with `safetensors.torch.save_file`; `--no-reference` skips it).
Targets (increase of the peak RSS during the merge / one model's size): a .safetensors result at most 0.25, a .ckpt
result at most 1.25 (torch.save needs the whole state dict); with a .ckpt source, whose mapped pages count in the
RSS, at most 1.25, and at most 0.25 of anonymous memory (RssAnon, sampled every 10 ms).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_CACHE, ensure_full_model, machine_note, say, table, verdict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAD_SHAPE = (1024, 4096)  # 16 MiB of fp32, about the size of SD1.5's largest UNet tensors (13-26 MiB)
# (peak RSS increase, anonymous increase) at most, in models: a .ckpt result is one state dict for torch.save; a
# .ckpt source is mapped, so its pages count in the RSS (not in the anonymous memory)
TARGETS = {"safetensors": (0.25, 0.25), "ckpt": (1.25, 1.25), "add-difference": (1.25, 0.25)}


def _status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:")):
                name, amount, _ = line.split()
                values[name.rstrip(":")] = int(amount) * 1024
    return values


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux 4.0+)
        return True
    except OSError:
        return False


def child(variant: str, data: str) -> None:
    """One merge in this process; prints one JSON line."""
    import torch  # noqa: F401

    from webui.models.hashing import HashCache
    from webui.models.merge import run_merge
    from webui.models.merge_request import MergeRequest
    from webui.models.registry import CheckpointRegistry
    from webui.models.vae import VaeRegistry

    folder = Path(data) / "models" / "Stable-diffusion"
    hashes = HashCache(Path(data) / "cache.json")
    registry = CheckpointRegistry([folder], hashes)
    registry.refresh()
    vaes = VaeRegistry(Path(data) / "models" / "VAE", hashes, [folder])
    reset = _reset_peak()
    before = _status()
    anon_peak, running = [before["RssAnon"]], [True]

    def sample() -> None:  # RssAnon has no high-water mark: sampled every 10 ms
        while running[0]:
            anon_peak[0] = max(anon_peak[0], _status()["RssAnon"])
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    if variant == "a1111":
        _a1111_way(folder)
    else:
        fields = {"safetensors": dict(checkpoint_format="safetensors"), "ckpt": dict(checkpoint_format="ckpt"),
                  "add-difference": dict(interp_method="Add difference", tertiary_model_name="c")}[variant]
        request = MergeRequest("a", "b", custom_name=f"bench-{variant}", overwrite=True, **fields).validate()
        run_merge(request, registry, vaes)
    seconds = time.perf_counter() - started
    running[0] = False
    sampler.join()
    after = _status()
    print(json.dumps({"variant": variant, "seconds": seconds, "rss_before": before["VmRSS"],
                      "peak": after["VmHWM"], "anon_before": before["RssAnon"], "anon_peak": anon_peak[0],
                      "reset": reset}))


def _a1111_way(folder: Path) -> None:
    """Both state dicts read whole, A's tensors replaced by merged ones one by one, saved with save_file."""
    from safetensors.torch import save_file

    from webui.models.loader import read_state_dict

    b = read_state_dict(folder / "b.safetensors", private=True)
    a = read_state_dict(folder / "a.safetensors", private=True)
    for key in a:
        if "model" in key and key in b:
            a[key] = (1 - 0.3) * a[key] + 0.3 * b[key]
    del b
    save_file(a, str(folder / ".bench-a1111.safetensors"), metadata={"format": "pt"})
    (folder / ".bench-a1111.safetensors").unlink()


def run_child(variant: str, data: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", variant, "--data", str(data)], cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _padded(path: Path, seed: int, size_mb: int, ckpt: bool = False) -> Path:
    """A tiny SD1 checkpoint grown to about `size_mb` MiB with extra UNet tensors."""
    import torch
    from safetensors.torch import load_file, save_file

    from webui.models.tiny import write_single_file

    if path.exists():
        return path
    tiny = write_single_file(path.with_name(f".tiny-{path.stem}.safetensors"), "sd1", seed=seed)
    state = load_file(str(tiny))
    generator = torch.Generator().manual_seed(seed)
    per = PAD_SHAPE[0] * PAD_SHAPE[1] * 4
    count = max(0, (size_mb << 20) - sum(t.numel() * t.element_size() for t in state.values())) // per
    for index in range(count):
        state[f"model.diffusion_model.bench_pad.{index}.weight"] = torch.randn(PAD_SHAPE, generator=generator)
    partial = path.with_name(f".partial-{path.name}")
    if ckpt:
        torch.save({"state_dict": state}, partial)
    else:
        save_file(state, str(partial))
    partial.replace(path)
    tiny.unlink()
    return path


def prepare(cache: Path, size_mb: int, full: bool) -> tuple[Path, int]:
    """The data dir: a.safetensors, b.safetensors, c.ckpt (the hashes cached once, so children do not hash)."""
    from webui.models.hashing import HashCache

    label = "full" if full else f"{size_mb}mb"
    data = cache / f"data-merge-{label}"
    folder = data / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    if full:
        for name, seed in (("a", 0), ("b", 1)):
            link = folder / f"{name}.safetensors"
            if not link.exists():
                link.symlink_to(ensure_full_model(cache, seed=seed))
        if not (folder / "c.ckpt").exists():
            import torch
            from safetensors.torch import load_file
            torch.save({"state_dict": load_file(str(folder / "b.safetensors"))}, folder / "c.ckpt")
    else:
        _padded(folder / "a.safetensors", 1, size_mb)
        _padded(folder / "b.safetensors", 2, size_mb)
        _padded(folder / "c.ckpt", 3, size_mb, ckpt=True)
    hashes = HashCache(data / "cache.json")
    for name in ("a.safetensors", "b.safetensors", "c.ckpt"):
        hashes.get_or_compute(folder / name)
    return data, (folder / "a.safetensors").resolve().stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child")
    parser.add_argument("--data")
    parser.add_argument("--size-mb", type=int, default=1024, help="size of each padded tiny model (default 1024)")
    parser.add_argument("--full", action="store_true", help="two SD1.5-size checkpoints (4.3 GB each)")
    parser.add_argument("--no-reference", action="store_true", help="skip A1111's way (it holds about 3 models)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    say(machine_note())
    data, model_bytes = prepare(args.cache_dir, args.size_mb, args.full)
    say(f"one model: {model_bytes / 2**20:.0f} MiB ({'SD1.5-size' if args.full else 'tiny SD1 + 16 MiB tensors'})")
    variants = ["safetensors", "ckpt", "add-difference"] + ([] if args.no_reference else ["a1111"])
    rows, worst = [], {}
    for variant in variants:
        result = run_child(variant, data)
        grown = result["peak"] - result["rss_before"]
        ratio = grown / model_bytes
        anon = (result["anon_peak"] - result["anon_before"]) / model_bytes
        target = TARGETS.get(variant)
        if target is not None:
            worst[variant] = ratio <= target[0] and anon <= target[1]
        rows.append([variant, f"{result['seconds']:.1f}", f"{result['rss_before'] / 2**20:.0f}",
                     f"{result['peak'] / 2**20:.0f}", f"{grown / 2**20:.0f}", f"{ratio:.3f}", f"{anon:.3f}",
                     f"<= {target[0]} / {target[1]}: {verdict(worst[variant])}" if target else "(reference)"])
        if not result["reset"]:
            say("(could not reset the peak RSS: the figures include the child's start-up)")
    say()
    table(["variant", "seconds", "RSS before MiB", "peak MiB", "increase MiB", "increase / one model",
           "anonymous / one model", "target"], rows)
    say()
    say("increase / one model = peak RSS (VmHWM) increase during the merge / size of one source model;")
    say("anonymous = the same for RssAnon (sampled every 10 ms): without the pages of a mapped .ckpt source, which")
    say("are the file's own (clean page cache the kernel can drop), not memory the merge allocated")
    say(f"overall: {verdict(all(worst.values()))}")


if __name__ == "__main__":
    main()
