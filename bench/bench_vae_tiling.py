"""Peak memory of a VAE decode of a big image with and without tiling (webui/models/vae_tiling.py).

    PYTHONPATH=. .venv/bin/python bench/bench_vae_tiling.py [--size 2048] [--tile-size 512] [--overlap 64]

The VAE has SD1.5's shape (AutoencoderKL, block_out_channels 128/256/512/512, two ResNets per block, GroupNorm 32,
mid-block attention) with random weights, built in memory (no file, no download); the latents are 1x4x(size/8)^2.
On CUDA both variants run in this process, each measured as torch.cuda.max_memory_allocated() after a reset, above
what was allocated before the decode (model and latents). On the CPU each variant runs in its own subprocess and
reports its peak RSS (getrusage ru_maxrss) above its RSS after building the model, so one variant's memory never
hides the other's. Also printed: the time of each decode and how far the tiled picture is from the untiled one.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_note, say, table, verdict  # noqa: E402

TARGET_RATIO = 0.25  # tiled peak at most a quarter of untiled at 2048x2048
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def build(device: str, dtype_name: str):
    import torch
    from diffusers import AutoencoderKL
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()  # its note on casting a model built in code to float16
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD15_VAE).eval().to(device, getattr(torch, dtype_name))
    return vae


def latents_for(size: int, device: str, dtype_name: str):
    """Latents with image-like structure (bicubic-upsampled noise), already divided by the scaling factor."""
    import torch
    side = size // 8
    noise = torch.randn(1, 4, max(1, side // 8), max(1, side // 8), generator=torch.Generator().manual_seed(1))
    smooth = torch.nn.functional.interpolate(noise, size=(side, side), mode="bicubic")
    return smooth.to(device, getattr(torch, dtype_name))


def settings(tiled: bool, args):
    from webui.models.vae_tiling import TileSettings
    return TileSettings(threshold=1 if tiled else 0, tile_size=args.tile_size, overlap=args.overlap)


def decode(vae, latents, tiled: bool, args):
    import torch
    from webui.models import vae_tiling
    with torch.inference_mode():
        return vae_tiling.decode(vae, latents, settings(tiled, args))


def rss_bytes() -> int:
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> None:
    """One CPU variant in this fresh process: prints {"peak": bytes above the baseline, "seconds": ...} and saves
    the picture for the parent's comparison."""
    import torch
    torch.set_num_threads(args.threads or torch.get_num_threads())
    vae = build("cpu", args.dtype)
    latents = latents_for(args.size, "cpu", args.dtype)
    decode(vae, latents_for(64, "cpu", args.dtype), args.child == "tiled", args)  # warm-up, small
    baseline = rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    picture = decode(vae, latents, args.child == "tiled", args)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save(picture.float(), args.out)
    print(json.dumps({"peak": peak - baseline, "seconds": seconds, "baseline": baseline,
                      "peak_before": peak_before}))


def run_cpu(args) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for variant in ("untiled", "tiled"):
            out = Path(folder) / f"{variant}.pt"
            command = [sys.executable, __file__, "--child", variant, "--out", str(out), "--size", str(args.size),
                       "--tile-size", str(args.tile_size), "--overlap", str(args.overlap), "--dtype", args.dtype,
                       "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
            if done.returncode != 0:
                sys.exit(f"the {variant} child failed:\n{done.stderr[-3000:]}")
            results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
            import torch
            results[variant]["picture"] = torch.load(out)
    return results


def run_cuda(args) -> dict:
    import torch
    vae = build("cuda", args.dtype)
    latents = latents_for(args.size, "cuda", args.dtype)
    for variant in (False, True):  # warm-up (kernels, cuDNN), small
        decode(vae, latents_for(256, "cuda", args.dtype), variant, args)
    results = {}
    for variant in ("untiled", "tiled"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        started = time.perf_counter()
        picture = decode(vae, latents, variant == "tiled", args)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        results[variant] = {"peak": torch.cuda.max_memory_allocated() - baseline, "seconds": seconds,
                            "picture": picture.float().cpu()}
        del picture
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels (default 2048)")
    parser.add_argument("--tile-size", type=int, default=512, help="tile side in pixels (vae_tile_size)")
    parser.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (vae_tile_overlap)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                        help="auto: float16 on CUDA, float32 on the CPU")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--child", choices=("untiled", "tiled"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size % 8:
        sys.exit("--size must be a multiple of 8")
    import torch
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.dtype == "auto":
        args.dtype = "float16" if device == "cuda" else "float32"
    if args.child:
        child(args)
        return

    say(f"# VAE decode of {args.size}x{args.size} (latents 1x4x{args.size // 8}x{args.size // 8}), SD1.5 VAE shape, "
        f"random weights, {args.dtype} on {device}; tiles {args.tile_size} px, overlap {args.overlap} px")
    say(f"# {machine_note()}" + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""))
    results = run_cuda(args) if device == "cuda" else run_cpu(args)
    what = "max_memory_allocated above the model" if device == "cuda" else "peak RSS above the model"
    table(["variant", f"peak ({what})", "time"],
          [[name, f"{r['peak'] / 2**20:,.0f} MiB", f"{r['seconds']:.2f} s"] for name, r in results.items()])
    untiled, tiled = results["untiled"], results["tiled"]
    ratio = tiled["peak"] / untiled["peak"] if untiled["peak"] > 0 else float("nan")
    say(f"peak ratio tiled/untiled: {ratio:.3f} (target at most {TARGET_RATIO} at 2048x2048): "
        f"{verdict(ratio <= TARGET_RATIO)}")
    say(f"time ratio tiled/untiled: {tiled['seconds'] / untiled['seconds']:.2f}")
    a, b = tiled["picture"], untiled["picture"]
    difference = (a - b).abs()
    flat_a, flat_b = a.flatten() - a.mean(), b.flatten() - b.mean()
    corr = float(flat_a @ flat_b / (flat_a.norm() * flat_b.norm()))
    say(f"tiled vs untiled picture: mean |diff| {difference.mean():.4f}, max {difference.max():.3f}, "
        f"correlation {corr:.4f} (untiled std {b.std():.3f}; random weights: per-tile GroupNorm statistics and "
        "attention, see tests/test_vae_tiling.py)")
    if device == "cpu" and any(r.get("peak_before", 0) > r.get("baseline", 0) + r["peak"] for r in results.values()):
        say("note: building the model peaked above the decode in a child; its figure is a lower bound")


if __name__ == "__main__":
    main()
