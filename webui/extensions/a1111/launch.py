"""A1111's `launch` module, for extensions' `install.py` (run in a subprocess with the server's Python, not bound
to a running server): `is_installed`, `run_pip`, `run`, `args` (the default flags) and friends. `run_pip` runs
under the install guard (webui/extensions/install_guard.py): the web UI's locked packages are pip constraints."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys

from webui.extensions.install_guard import ENV_MARKER, GuardedInstall, explain_pip_failure
from webui.settings.flags import parse_flags
from webui.settings.paths import PROJECT_DIR

__all__ = ["args", "python", "git", "index_url", "dir_repos", "is_installed", "run", "run_pip", "commit_hash",
           "git_tag", "repo_dir", "check_run_python", "git_clone", "requirements_met"]

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


def run_pip(command: str, desc: str | None = None, live: bool = False) -> str | None:
    """`python -m pip <command> --prefer-binary` with the server's Python (and `--index-url` from $INDEX_URL),
    constrained to the web UI's locked packages: a conflict raises RuntimeError naming the package and both
    versions. Nothing is run with --skip-install (A1111's behaviour)."""
    if getattr(args, "skip_install", False):
        return None
    argv = [python, "-m", "pip", *shlex.split(command), "--prefer-binary"]
    if index_url:
        argv += ["--index-url", index_url]
    errdesc = f"Couldn't install {desc}" if desc else f"pip {command} failed"
    if os.environ.get(ENV_MARKER):  # in install.py under the guard: the constraints are in the environment
        return _guarded_pip(argv, desc, errdesc, live, os.environ.copy())
    with GuardedInstall(python) as guard:  # called elsewhere (an extension's script): constrain it here
        return _guarded_pip(argv, desc, errdesc, live, guard.env(os.environ.copy()))


def _guarded_pip(argv: list[str], desc: str | None, errdesc: str, live: bool, env: dict) -> str:
    try:
        return run(argv, desc=f"Installing {desc}" if desc else None, errdesc=errdesc, custom_env=env, live=live)
    except RuntimeError as exc:
        reason = explain_pip_failure(str(exc), python)
        if reason:
            raise RuntimeError(f"{errdesc}: {reason}\n{exc}") from None
        raise


def repo_dir(name: str) -> str:
    return os.path.join(dir_repos, name)


def check_run_python(code: str) -> bool:
    """True when `python -c code` exits 0."""
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:  # noqa: A002 - A1111's name
    """Clone `url` into `dir` (kept when it exists), then check out `commithash` when given."""
    if not os.path.exists(dir):
        run([git, "clone", url, dir], f"Cloning {name} into {dir}...", f"Couldn't clone {name}")
    elif commithash is None:
        return
    elif run([git, "-C", dir, "rev-parse", "HEAD"], None, f"Couldn't determine {name}'s hash").strip() != commithash:
        run([git, "-C", dir, "fetch"], f"Fetching updates for {name}...", f"Couldn't fetch {name}")
    if commithash is not None:
        run([git, "-C", dir, "checkout", commithash], None, f"Couldn't checkout {name}'s hash: {commithash}")


def requirements_met(requirements_file: str) -> bool:
    """True when every `name==version` / `name>=version` line of the file is installed at that version or above
    (A1111's quick check before `pip install -r`); other lines are not checked."""
    import re
    with open(requirements_file, encoding="utf8") as file:
        for line in file:
            line = line.split("#", 1)[0].strip()
            match = re.fullmatch(r"([\w.-]+)\s*(==|>=)\s*([\w.]+)", line)
            if not match:
                continue
            name, op, wanted = match.groups()
            try:
                have = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return False
            key = [int(p) if p.isdigit() else 0 for p in re.split(r"[.]", have)]
            want = [int(p) if p.isdigit() else 0 for p in re.split(r"[.]", wanted)]
            if (op == "==" and have != wanted) or (op == ">=" and key < want):
                return False
    return True


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
