"""A1111's `launch` module, for extensions' `install.py` (run in a subprocess with the server's Python, not bound
to a running server): `is_installed`, `run_pip`, `run`, `args` (the default flags) and friends."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys

from webui.settings.flags import parse_flags
from webui.settings.paths import PROJECT_DIR

__all__ = ["args", "python", "git", "index_url", "dir_repos", "is_installed", "run", "run_pip", "commit_hash",
           "git_tag"]

args = parse_flags([])
python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = str(PROJECT_DIR / "repositories")


def is_installed(package: str) -> bool:
    """True when `package` can be imported (a module name) or is an installed distribution (a pip name)."""
    try:
        if importlib.util.find_spec(package) is not None:
            return True
    except (ImportError, ValueError):
        pass
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def run(command, desc: str | None = None, errdesc: str | None = None, custom_env: dict | None = None,
        live: bool = False) -> str:
    """Run `command` (a shell string, or an argument list); return its output. On failure raise RuntimeError
    with `errdesc`, the command, its exit code and its output. `live` lets the output through instead."""
    if desc:
        print(desc, flush=True)
    env = os.environ.copy() if custom_env is None else custom_env
    shell = isinstance(command, str)
    result = subprocess.run(command, shell=shell, env=env, text=True, encoding="utf-8", errors="replace",
                            stdout=None if live else subprocess.PIPE, stderr=None if live else subprocess.PIPE)
    if result.returncode != 0:
        shown = command if shell else shlex.join(str(c) for c in command)
        lines = [errdesc or "Error running command.", f"Command: {shown}", f"Error code: {result.returncode}"]
        if result.stdout:
            lines.append(f"stdout: {result.stdout.strip()}")
        if result.stderr:
            lines.append(f"stderr: {result.stderr.strip()}")
        raise RuntimeError("\n".join(lines))
    return result.stdout or ""


def run_pip(command: str, desc: str | None = None, live: bool = False) -> str:
    """`python -m pip <command> --prefer-binary` with the server's Python (and `--index-url` from $INDEX_URL)."""
    argv = [python, "-m", "pip", *shlex.split(command), "--prefer-binary"]
    if index_url:
        argv += ["--index-url", index_url]
    return run(argv, desc=f"Installing {desc}" if desc else None,
               errdesc=f"Couldn't install {desc}" if desc else f"pip {command} failed", live=live)


def _git_output(*git_args: str) -> str | None:
    try:
        result = subprocess.run([git, "-C", str(PROJECT_DIR), *git_args], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def commit_hash() -> str:
    """The web UI's git commit, or "<none>"."""
    return _git_output("rev-parse", "HEAD") or "<none>"


def git_tag() -> str:
    """The web UI's version tag (`git describe --tags`), or "<none>"."""
    return _git_output("describe", "--tags") or "<none>"
