"""Command-line flags, named as A1111 names them where A1111 has them."""
from __future__ import annotations

import argparse
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The parser for `app.py` (and `launch.sh`, which passes its arguments on)."""
    p = argparse.ArgumentParser(prog="app.py", description="Stable Diffusion web UI")
    paths = p.add_argument_group("folders")
    paths.add_argument("--data-dir", default=None,
                       help="base folder for models/, embeddings/, outputs/ and settings (default: the project folder)")
    paths.add_argument("--ckpt-dir", default=None, help="checkpoint folder (default: DATA/models/Stable-diffusion)")
    paths.add_argument("--lora-dir", default=None, help="LoRA folder (default: DATA/models/Lora)")
    paths.add_argument("--vae-dir", default=None, help="VAE folder (default: DATA/models/VAE)")
    paths.add_argument("--embeddings-dir", default=None, help="textual inversion folder (default: DATA/embeddings)")
    paths.add_argument("--controlnet-dir", default=None, help="ControlNet folder (default: DATA/models/ControlNet)")
    paths.add_argument("--controlnet-annotator-models-path", default=None,
                       help="ControlNet preprocessor weights folder (default: DATA/models/annotators)")
    paths.add_argument("--extensions-dir", default=None, help="installed extensions (default: DATA/extensions)")
    paths.add_argument("--outdir", default=None, help="where images are saved (default: DATA/outputs)")

    server = p.add_argument_group("server")
    server.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    server.add_argument("--listen", action="store_true", help="bind 0.0.0.0 instead of 127.0.0.1")
    server.add_argument("--api", action="store_true", help="accepted for A1111 compatibility; the API is always on")
    server.add_argument("--nowebui", action="store_true", help="serve only the HTTP API, no web UI")
    server.add_argument("--gradio-auth", default=None, metavar="USER:PASS[,USER:PASS]",
                        help="protect the web UI with these logins")
    server.add_argument("--api-auth", default=None, metavar="USER:PASS[,USER:PASS]",
                        help="protect /sdapi, /controlnet and /queue with HTTP Basic auth")
    server.add_argument("--api-server-stop", action="store_true",
                        help="allow /sdapi/v1/server-stop, server-restart and server-kill (off: those routes are 404)")
    server.add_argument("--hide-ui-dir-config", action="store_true",
                        help="refuse server folder paths from users (img2img Batch from a folder, in the UI and API)")

    ext = p.add_argument_group("extensions")
    ext.add_argument("--enable-insecure-extension-access", action="store_true",
                     help="allow installing, updating and removing extensions from the UI even with --listen")
    ext.add_argument("--skip-install", action="store_true", help="do not run extensions' install.py at start-up")
    ext.add_argument("--disable-all-extensions", action="store_true", help="load no extension (they stay installed)")

    dev = p.add_argument_group("device and precision")
    dev.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                     help="where models run (auto: CUDA when available)")
    dev.add_argument("--precision", choices=["full", "half", "autocast"], default="autocast",
                     help="full = float32; half/autocast = float16 on CUDA (always float32 on the CPU)")
    dev.add_argument("--no-half", action="store_true", help="keep every model in float32")
    dev.add_argument("--no-half-vae", action="store_true", help="keep the VAE in float32")
    dev.add_argument("--xformers", action="store_true",
                     help="use xformers attention if installed (default: PyTorch SDPA)")
    dev.add_argument("--medvram", action="store_true", help="move whole models to the GPU only while they run")
    dev.add_argument("--lowvram", action="store_true", help="sequential CPU offload, layer by layer (slow)")

    pool = p.add_argument_group("several GPUs and machines (Ray)")
    pool.add_argument("--workers", type=_positive, default=None, metavar="N",
                      help="run generations on N workers, one per GPU (on the CPU without GPUs), on a local Ray "
                           "runtime; with --ray-address, at most N of the cluster's")
    pool.add_argument("--ray-address", default=None, metavar="ADDR",
                      help="join the Ray cluster at ADDR (host:port of `ray start --head`) and run generations on "
                           "a worker per GPU of its nodes")
    pool.add_argument("--worker-timeout", type=float, default=60.0, metavar="SECONDS",
                      help="a worker that does not answer for this long is replaced and its job moved (default 60)")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def parse_flags(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def parse_logins(spec: str | None) -> list[tuple[str, str]]:
    """`user:pass,user2:pass2` -> [(user, pass), ...]; raises ValueError on a malformed entry."""
    if not spec:
        return []
    logins = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user:
            raise ValueError(f"login {item!r} must be written user:password")
        logins.append((user, password))
    return logins
