"""Extension folders on disk: list them with their git state, install from a git URL or a local repository
(clone, then the extension's `install.py`), check for updates, fast-forward, uninstall, enable / disable.

Git runs as a subprocess (`git -C folder ...`), never through a library, always with a timeout and without
prompting for a password. Installing, updating and uninstalling follow A1111's rule: refused when the server
listens on a non-local address, unless `--enable-insecure-extension-access` is given.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..core.errors import UserError
from .a1111 import COMPAT_PATH
from .install_guard import LOCK_FILES, GuardedInstall, Verdict, extras_only, fallback_requirements, summarize

log = logging.getLogger(__name__)

# what a long operation is doing, for whoever shows it (the Extensions tab's progress): (text, fraction done 0..1)
OnStep = Callable[[str, float], None]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMP_PREFIX = ".tmp-"  # clones in progress: hidden, so never listed as an extension
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "")
_NAME = re.compile(r"\w[\w.\- +()\[\]]*")
_TAIL_CHARS = 2000


class ExtensionError(UserError):
    """A failure whose message is meant for the user (HTTP 400)."""

    kind = "ExtensionError"


class ExtensionInstallError(ExtensionError):
    """Cloning, or the extension's install.py, failed."""

    kind = "ExtensionInstallError"


class ExtensionGuardError(ExtensionInstallError):
    """The install guard stopped install.py: what the extension needs conflicts with the web UI's packages (or it
    changed them anyway). The extension stays on disk, disabled, so the user can see, update or remove it."""

    kind = "ExtensionInstallRefused"

    def __init__(self, message: str, extension: str):
        super().__init__(message)
        self.extension = extension


class ExtensionAccessError(ExtensionError):
    """Installing / updating / uninstalling is not allowed with these command-line flags (HTTP 403)."""

    status = 403
    kind = "ExtensionAccessDenied"


@dataclass(frozen=True)
class InstalledExtension:
    name: str  # the folder's name
    path: Path
    enabled: bool
    remote: str = ""  # origin's URL ("" when not a git repository or no origin)
    branch: str = ""
    commit: str = ""  # short hash of HEAD
    commit_date: str = ""  # HEAD's commit date, local time, "YYYY-MM-DD HH:MM:SS"
    version_status: str = "unknown"  # "unknown" | "latest" | "behind" | "error: ..." (from the last check)
    is_git: bool = False


@dataclass(frozen=True)
class InstallReport:
    name: str
    path: Path
    output: str  # install.py's stdout and stderr ("" when the extension has none)
    notices: tuple[str, ...] = ()  # what the install guard changed (an optional extra left out), for the user


def normalize_remote(url: str) -> str:
    """A repository's URL as compared for "already installed": no trailing `/` or `.git`, case-insensitive."""
    url = (url or "").strip().rstrip("/\\")
    if url.lower().endswith(".git"):
        url = url[:-4]
    return url.rstrip("/\\").lower()


def name_from_url(url: str) -> str:
    """The folder name A1111 picks: the URL's last segment without `.git`."""
    url = url.strip().rstrip("/\\")
    last = re.split(r"[/\\:]", url)[-1]
    return last[:-4] if last.lower().endswith(".git") else last


def _possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _tail(text: str, limit: int = _TAIL_CHARS) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _step(on_step: OnStep | None, text: str, fraction: float) -> None:
    """Tell the console (log) and the caller what is starting; a failing caller never stops the operation."""
    log.info("%s", text)
    if on_step is not None:
        try:
            on_step(text, fraction)
        except Exception:  # noqa: BLE001
            log.exception("an extension progress listener failed")


def _remove_tree(path: Path) -> None:
    """rmtree that also removes read-only files (git's objects)."""
    def retry_writable(func, target, _info):
        os.chmod(target, stat.S_IWRITE | stat.S_IREAD)
        func(target)

    if path.exists():
        shutil.rmtree(path, onerror=retry_writable)


class ExtensionManager:
    def __init__(self, extensions_dir: Path, options, flags, python: str = sys.executable,
                 install_timeout: float = 300.0, git_timeout: float = 300.0,
                 import_paths: Sequence[Path] = (PROJECT_ROOT, COMPAT_PATH),
                 lock_files: Sequence[Path] = LOCK_FILES):
        """`import_paths`: folders put first on install.py's PYTHONPATH (the project root and the A1111
        compatibility folder, so that `import launch` works), then the extension's own folder. `lock_files`: the
        web UI's locks, whose installed versions install.py runs constrained to (install_guard.py)."""
        self.extensions_dir = Path(extensions_dir)
        self.import_paths = [Path(p) for p in import_paths]
        self.lock_files = [Path(p) for p in lock_files]
        self.options = options
        self.flags = flags
        self.python = python
        self.install_timeout = install_timeout
        self.git_timeout = git_timeout  # clone and fetch; local queries get a shorter one
        self._status: dict[str, str] = {}
        self._lock = threading.Lock()

    # --- access ----------------------------------------------------------------------------------------------
    def _public_flag(self) -> str:
        """The flag that makes the server reachable from other machines ("" when it is local only)."""
        if getattr(self.flags, "listen", False):
            return "--listen"
        if getattr(self.flags, "share", False):
            return "--share"
        server_name = getattr(self.flags, "server_name", None)
        if server_name and str(server_name).strip().lower() not in LOCAL_HOSTS:
            return "--server-name"
        return ""

    def access_allowed(self) -> bool:
        if getattr(self.flags, "enable_insecure_extension_access", False):
            return True
        return not self._public_flag()

    def access_message(self) -> str:
        """A1111's refusal, or "" when extension access is allowed."""
        if self.access_allowed():
            return ""
        return (f"extension access disabled because of command line flags ({self._public_flag()}); "
                "add --enable-insecure-extension-access to allow it")

    def check_access(self) -> None:
        message = self.access_message()
        if message:
            raise ExtensionAccessError(message)

    # --- git -------------------------------------------------------------------------------------------------
    def _git(self, args: list[str], cwd: Path | None = None, timeout: float = 30.0,
             what: str = "") -> subprocess.CompletedProcess:
        """Run git (never prompting for a password); a missing git or a timeout is an ExtensionError."""
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        command = ["git", *(["-C", str(cwd)] if cwd is not None else []), *args]
        try:
            return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  encoding="utf-8", errors="replace", timeout=timeout, env=env)
        except FileNotFoundError:
            raise ExtensionError("git is not installed (or not on PATH); it is needed to install and update "
                                 "extensions") from None
        except subprocess.TimeoutExpired:
            raise ExtensionError(f"git {what or args[0]} timed out after {timeout:g} s") from None

    def _git_out(self, path: Path, *args: str) -> str:
        """git's stdout, stripped; "" when the command fails."""
        done = self._git(list(args), cwd=path)
        return done.stdout.strip() if done.returncode == 0 else ""

    @staticmethod
    def _is_git(path: Path) -> bool:
        return (path / ".git").exists()  # the folder's own repository, not a parent's (DATA may be a checkout)

    # --- listing ---------------------------------------------------------------------------------------------
    def _folders(self) -> list[Path]:
        if not self.extensions_dir.is_dir():
            return []
        return sorted((p for p in self.extensions_dir.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and p.name != "__pycache__"),
                      key=lambda p: p.name.lower())

    def names(self) -> list[str]:
        return [p.name for p in self._folders()]

    def _describe(self, path: Path, disabled: set[str]) -> InstalledExtension:
        enabled = path.name not in disabled
        status = self._status.get(path.name, "unknown")
        if not self._is_git(path):
            return InstalledExtension(path.name, path, enabled, version_status=status)
        remote = self._git_out(path, "config", "--get", "remote.origin.url")
        branch = self._git_out(path, "rev-parse", "--abbrev-ref", "HEAD")
        commit, _, stamp = self._git_out(path, "log", "-1", "--format=%h %ct").partition(" ")
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(stamp))) if stamp.isdigit() else ""
        return InstalledExtension(path.name, path, enabled, remote, "" if branch == "HEAD" else branch, commit,
                                  date, status, True)

    def list(self) -> list[InstalledExtension]:
        disabled = set(self.options.get("disabled_extensions") or [])
        return [self._describe(path, disabled) for path in self._folders()]

    def get(self, name: str) -> InstalledExtension:
        path = self._installed_path(name)
        return self._describe(path, set(self.options.get("disabled_extensions") or []))

    def _installed_path(self, name: str) -> Path:
        """The folder of an installed extension; anything else (traversal, hidden, missing) is an error."""
        name = (name or "").strip() if isinstance(name, str) else ""
        if not name:
            raise ExtensionError("Choose an installed extension")
        root = self.extensions_dir.resolve()
        path = Path(os.path.abspath(root / name))  # ".." collapsed, symlinks kept (a linked extension is listed)
        if (path.parent != root or name.startswith(".") or "/" in name or "\\" in name
                or name not in self.names()):
            raise ExtensionError(f"{name!r} is not an installed extension (in {self.extensions_dir})")
        return path

    # --- install ---------------------------------------------------------------------------------------------
    def _validate_new_name(self, name: str) -> None:
        where = f"in {self.extensions_dir}"
        if not name:
            raise ExtensionError("Cannot tell the folder name from the URL; enter a local directory name")
        if "/" in name or "\\" in name or ".." in name or name.startswith("."):
            raise ExtensionError(f"Invalid extension folder name {name!r}: no '/', '\\', '..' or leading '.'")
        if len(name) > 100 or not _NAME.fullmatch(name) or name.endswith((" ", ".")):
            raise ExtensionError(f"Invalid extension folder name {name!r}: use letters, digits, '-', '_', '.' "
                                 "and spaces")
        if (self.extensions_dir / name).exists() or name.lower() in (n.lower() for n in self.names()):
            raise ExtensionError(f"Extension folder already exists: {name} {where}")

    def remotes(self) -> dict[str, str]:
        """{folder name: origin URL} of the installed git extensions that have an origin."""
        found = {}
        for path in self._folders():
            remote = self._git_out(path, "config", "--get", "remote.origin.url") if self._is_git(path) else ""
            if remote:
                found[path.name] = remote
        return found

    def _check_not_installed(self, url: str) -> None:
        wanted = normalize_remote(url)
        for name, remote in self.remotes().items():
            if normalize_remote(remote) == wanted:
                raise ExtensionError(f"Extension with this URL is already installed: {name} ({remote})")

    @staticmethod
    def _source(url: str) -> str:
        """A local path becomes absolute (git clones it as a repository); URLs stay as given."""
        if "://" in url or re.match(r"^[\w.-]+@[\w.-]+:", url):
            return url
        local = Path(url).expanduser()
        return str(local.resolve()) if local.exists() else url

    def install(self, url: str, branch: str = "", dirname: str = "", on_step: OnStep | None = None) -> InstallReport:
        """Clone `url` (a git URL or a local repository) into the extensions folder and run its install.py. On
        any failure nothing is left behind and ExtensionInstallError says what went wrong, except when the install
        guard refuses what install.py needs (ExtensionGuardError): the extension then stays, disabled.
        `on_step(text, fraction)` hears each stage as it starts (cloning, install.py)."""
        self.check_access()
        url, branch, dirname = (url or "").strip(), (branch or "").strip(), (dirname or "").strip()
        if not url:
            raise ExtensionError("Enter the URL of the extension's git repository (or a local path)")
        if url.startswith("-") or branch.startswith("-"):
            raise ExtensionError(f"Invalid URL or branch name: {url!r} {branch!r}")
        name = dirname or name_from_url(url)
        with self._lock:
            self._validate_new_name(name)
            source = self._source(url)
            self._check_not_installed(source)
            self.extensions_dir.mkdir(parents=True, exist_ok=True)
            target = self.extensions_dir / name
            temp = self.extensions_dir / f"{TEMP_PREFIX}{name}-{secrets.token_hex(4)}"
            try:
                _step(on_step, f"Cloning {url}" + (f" (branch {branch})" if branch else "") + f" into {name}", 0.05)
                args = ["clone", "--quiet", *(["--branch", branch] if branch else []), "--", source, str(temp)]
                done = self._git(args, timeout=self.git_timeout, what="clone")
                if done.returncode != 0:
                    raise ExtensionInstallError(f"git clone of {url} failed:\n{_tail(done.stderr or done.stdout)}")
                if target.exists():
                    raise ExtensionInstallError(f"Extension folder already exists: {target}")
                os.rename(temp, target)
            except ExtensionError as exc:
                _remove_tree(temp)
                if isinstance(exc, ExtensionInstallError):
                    raise
                raise ExtensionInstallError(f"Installing {name} failed: {exc}") from None
            except OSError as exc:
                _remove_tree(temp)
                raise ExtensionInstallError(f"Installing {name} failed: could not write {target}: {exc}") from None
            try:
                if (target / "install.py").is_file():
                    _step(on_step, f"Running install.py of {name}", 0.5)
                output, notices = self._run_install(target)
            except ExtensionGuardError:
                self._status.pop(name, None)
                self.disable(name)
                raise
            except ExtensionError:
                _remove_tree(target)
                raise
            self._status.pop(name, None)
            disabled = list(self.options.get("disabled_extensions") or [])
            if name in disabled:
                self.options.update({"disabled_extensions": [n for n in disabled if n != name]})
        return InstallReport(name, target, output, tuple(notices))

    def run_install_script(self, name: str) -> str:
        """Run an installed extension's install.py (at start-up, A1111's behaviour); "" when it has none. An
        ExtensionGuardError leaves the extension disabled (the caller stops loading it)."""
        return self.run_install(name).output

    def run_install(self, name: str) -> InstallReport:
        """run_install_script, with the guard's notices."""
        path = self._installed_path(name)
        try:
            output, notices = self._run_install(path)
        except ExtensionGuardError:
            self.disable(path.name)
            raise
        return InstallReport(path.name, path, output, tuple(notices))

    def disable(self, name: str) -> None:
        """Add `name` to `disabled_extensions` (kept on disk; the Installed tab shows it unticked)."""
        disabled = list(self.options.get("disabled_extensions") or [])
        if name not in disabled:
            self.options.update({"disabled_extensions": sorted([*disabled, name])})

    def _run_install(self, path: Path) -> tuple[str, list[str]]:
        """install.py under the install guard: (its output, notices). Raises ExtensionGuardError when the guard
        refused what it needs or it changed the web UI's packages, ExtensionInstallError when it failed."""
        if not (path / "install.py").is_file():
            return "", []
        try:
            guard = GuardedInstall(self.python, self.lock_files)
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            raise ExtensionInstallError(f"install.py of {path.name} was not run: could not read the installed "
                                        f"packages to guard them: {exc}") from None
        with guard:
            code, output = self._exec_install(path, guard)
            try:
                verdict = guard.check(output)
                notices: list[str] = []
                if verdict.conflicts and not verdict.changes and extras_only(verdict.conflicts):
                    code, output, verdict, notices = self._install_without_extras(path, guard, verdict, output)
            except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                raise ExtensionInstallError(f"install.py of {path.name}: the install guard could not check what it "
                                            f"did: {exc}; its output:\n{_tail(output)}") from None
            if verdict.changes:
                try:
                    repaired, commands = guard.repair(verdict.changes, timeout=self.install_timeout)
                except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                    repaired, commands = False, f"(the repair failed: {exc})"
                what = "; ".join(change.describe() for change in verdict.changes)
                fix = (f"They were put back ({commands})." if repaired else
                       f"Put them back with the web UI stopped: {commands}")
                raise ExtensionGuardError(f"{path.name}'s install.py changed the web UI's packages: {what}. {fix} "
                                          f"The extension is left disabled.\ninstall.py's output:\n{_tail(output)}",
                                          path.name)
            if verdict.conflicts:
                raise ExtensionGuardError(f"{path.name} " + "; it ".join(summarize(verdict.conflicts)) +
                                          ": not installed, extension left disabled (it stays in the Installed "
                                          "tab, to update or uninstall).", path.name)
        if code != 0:
            raise ExtensionInstallError(f"install.py of {path.name} failed (exit code {code}); "
                                        f"its output:\n{_tail(output)}")
        return output, notices

    def _install_without_extras(self, path: Path, guard: GuardedInstall, verdict: Verdict,
                                output: str) -> tuple[int, str, Verdict, list[str]]:
        """Only optional extras conflict: install the requirements without those extras (same constraints), then
        install.py once more. Returns what the second run gave (the first verdict when the fallback failed)."""
        wanted = fallback_requirements(verdict.conflicts)
        done = guard.pip("install", *wanted, timeout=self.install_timeout)
        output += f"\n[install guard] pip install {' '.join(wanted)}\n{_tail(done.stdout + done.stderr, 600)}"
        if done.returncode != 0:
            return 1, output, verdict, []
        guard.pip_log.unlink(missing_ok=True)  # the second run's report only
        code, again = self._exec_install(path, guard)
        second = guard.check(again)
        notices = []
        for requirer, dropped in wanted.values():
            for extra in dropped:
                reasons = [c for c in verdict.conflicts if c.requirer == requirer and c.extra == extra]
                because = "; ".join(dict.fromkeys(f"it needs {c.wanted}, the web UI has {c.web_ui_version}"
                                                  for c in reasons))
                notices.append(f"{path.name}: installed without {_possessive(requirer)} '{extra}' extra: {because}")
        return code, output + "\n" + again, second, notices if not second.conflicts and code == 0 else []

    def _exec_install(self, path: Path, guard: GuardedInstall) -> tuple[int, str]:
        """Run install.py (in its folder, with `launch` importable and the guard's constraints): (exit code,
        output). A time-out stops it and whatever it started."""
        script = path / "install.py"
        env = guard.env(dict(os.environ))
        env["PYTHONPATH"] = os.pathsep.join([*map(str, self.import_paths), str(path),
                                             *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        session = {"start_new_session": True} if os.name == "posix" else {}
        try:
            process = subprocess.Popen([self.python, str(script)], cwd=path, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **session)
        except OSError as exc:
            raise ExtensionInstallError(f"Could not run install.py of {path.name} with {self.python}: {exc}") from None
        try:
            raw, _ = process.communicate(timeout=self.install_timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            raw, _ = process.communicate()
            output = raw.decode("utf-8", "replace")
            raise ExtensionInstallError(f"install.py of {path.name} timed out after {self.install_timeout:g} s; "
                                        f"its output:\n{_tail(output)}") from None
        return process.returncode, raw.decode("utf-8", "replace")

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        """Stop install.py and whatever it started (pip)."""
        try:
            if os.name == "posix":
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        except (ProcessLookupError, PermissionError):
            process.kill()

    # --- updates ---------------------------------------------------------------------------------------------
    def _fetch(self, path: Path) -> None:
        done = self._git(["fetch", "--quiet"], cwd=path, timeout=self.git_timeout, what="fetch")
        if done.returncode != 0:
            raise ExtensionError(f"git fetch failed: {_tail(done.stderr, 300)}")

    def _behind_count(self, path: Path) -> int:
        done = self._git(["rev-list", "--count", "HEAD..@{u}"], cwd=path)
        if done.returncode != 0:
            raise ExtensionError(f"no upstream branch to compare with ({_tail(done.stderr, 200)})")
        return int(done.stdout.strip() or 0)

    def check_updates(self, names: list[str] | None = None, on_step: OnStep | None = None) -> dict[str, str]:
        """Fetch each extension and compare HEAD with its upstream: {name: "latest" | "behind" | "unknown" |
        "error: ..."}. The results show in `list()`. `on_step(text, fraction)` hears each extension's turn."""
        folders = self._folders() if names is None else [self._installed_path(n) for n in names]
        results: dict[str, str] = {}
        with self._lock:
            for number, path in enumerate(folders):
                _step(on_step, f"Checking {path.name} for updates ({number + 1} of {len(folders)})",
                      number / len(folders))
                if not self._is_git(path):
                    results[path.name] = "unknown"
                    continue
                try:
                    self._fetch(path)
                    results[path.name] = "behind" if self._behind_count(path) > 0 else "latest"
                except ExtensionError as exc:
                    results[path.name] = f"error: {exc}"
            self._status.update(results)
        return results

    def update(self, name: str, on_step: OnStep | None = None) -> str:
        """Fetch and fast-forward to the upstream branch; the message names the old and new commit. `on_step(text,
        fraction)` hears each stage as it starts (fetching, fast-forwarding)."""
        self.check_access()
        with self._lock:
            path = self._installed_path(name)
            if not self._is_git(path):
                raise ExtensionError(f"{name} is not a git repository, so it cannot be updated")
            try:
                _step(on_step, f"Fetching {name}", 0.05)
                self._fetch(path)
                behind = self._behind_count(path)
            except ExtensionError as exc:
                raise ExtensionError(f"Could not update {name}: {exc}") from None
            old = self._git_out(path, "rev-parse", "--short", "HEAD")
            if behind == 0:
                self._status[name] = "latest"
                return f"{name} is already up to date ({old})"
            _step(on_step, f"Updating {name}: {behind} new commit{'s' if behind != 1 else ''}", 0.7)
            done = self._git(["merge", "--ff-only", "@{u}"], cwd=path, timeout=self.git_timeout, what="merge")
            if done.returncode != 0:
                self._status[name] = "error: cannot fast-forward"
                raise ExtensionError(f"Could not update {name}: it cannot be fast-forwarded (local changes or "
                                     f"local commits in {path}):\n{_tail(done.stderr or done.stdout, 800)}")
            new = self._git_out(path, "rev-parse", "--short", "HEAD")
            self._status[name] = "latest"
        return f"{name} updated: {old} → {new}. Press \"Apply and restart UI\" to load the new version."

    # --- uninstall, enable / disable -------------------------------------------------------------------------
    def uninstall(self, name: str) -> None:
        self.check_access()
        with self._lock:
            path = self._installed_path(name)
            try:
                if path.is_symlink():
                    path.unlink()  # a linked extension: remove the link, not the folder it points to
                else:
                    _remove_tree(path)
            except OSError as exc:
                raise ExtensionError(f"Could not remove {path}: {exc}") from None
            self._status.pop(path.name, None)
            disabled = list(self.options.get("disabled_extensions") or [])
            if path.name in disabled:
                self.options.update({"disabled_extensions": [n for n in disabled if n != path.name]})

    def set_disabled(self, disabled: list[str]) -> list[str]:
        """Store `disabled_extensions` (installed folder names only, sorted); returns what was stored."""
        installed = set(self.names())
        names = sorted({n for n in disabled or [] if n in installed})
        self.options.update({"disabled_extensions": names})
        return names
