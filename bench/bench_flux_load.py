"""FLUX.1 load cost on the CPU: a FLUX.1-dev-wide transformer file (random weights, BFL layout; fewer blocks than
the real 19 + 38 with --blocks, so it fits this machine) read by our loader, in bf16 and fp8, against a plain
safetensors read of the same file. Each measurement runs in a fresh process (peak RSS is the process's).

    python -m bench.bench_flux_load [--blocks 4 8] [--dir /tmp/flux-bench] [--cold]

Targets (issue 26): load time and peak RSS <= 1.3x the plain read, each; fp8 storage's RSS <= 0.55x bf16's.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
path, how = Path(sys.argv[1]), sys.argv[2]
import torch
from safetensors.torch import load_file
from webui.models.flux import read_flux_file
from webui.models.loader import read_state_dict
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if how == "plain":  # the tensors read into memory (load_file maps the file: touching every byte reads it)
    state = load_file(str(path))
    for tensor in state.values():
        tensor.reshape(-1).view(torch.uint8)[::4096].sum()  # one byte per page
    held = sum(t.numel() * t.element_size() for t in state.values())
else:
    parts = read_flux_file(read_state_dict(path), path.name, torch.bfloat16)
    held = sum(p.numel() * p.element_size() for p in parts.transformer.parameters())
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": (peak - base) / 1024, "held_mib": held / 2 ** 20}))
"""


def _drop_page_cache() -> bool:
    """Empty the kernel's page cache (root only), so each read comes from the disk."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def measure(path: Path, how: str, cold: bool) -> dict:
    if cold and not _drop_page_cache():
        raise SystemExit("--cold needs root (it writes /proc/sys/vm/drop_caches)")
    if not cold:
        with open(path, "rb") as handle:  # warm: the file in the page cache for both readers
            while handle.read(1 << 26):
                pass
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), how], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", nargs=2, type=int, default=(4, 8), metavar=("DOUBLE", "SINGLE"))
    parser.add_argument("--dir", default="/tmp/flux-bench")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each read (root)")
    args = parser.parse_args()
    import torch

    from webui.models.tiny_flux import write_full_transformer

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for label, dtype in (("bf16", torch.bfloat16), ("fp8", torch.float8_e4m3fn)):
        path = folder / f"flux-{label}-{args.blocks[0]}x{args.blocks[1]}.safetensors"
        if not path.exists():
            write_full_transformer(path, dtype, args.blocks[0], args.blocks[1])
        plain, ours = measure(path, "plain", args.cold), measure(path, "ours", args.cold)
        results[label] = (plain, ours)
        print(f"{label}: file {path.stat().st_size / 2 ** 30:.2f} GiB | plain read {plain['seconds']:.2f} s, "
              f"peak {plain['peak_mib']:.0f} MiB | ours {ours['seconds']:.2f} s, peak {ours['peak_mib']:.0f} MiB, "
              f"weights held {ours['held_mib']:.0f} MiB | time x{ours['seconds'] / plain['seconds']:.2f}, "
              f"peak x{ours['peak_mib'] / plain['peak_mib']:.2f}")
    bf16, fp8 = results["bf16"][1], results["fp8"][1]
    print(f"fp8 / bf16: peak RSS x{fp8['peak_mib'] / bf16['peak_mib']:.2f}, "
          f"weights held x{fp8['held_mib'] / bf16['held_mib']:.2f}")


if __name__ == "__main__":
    main()
