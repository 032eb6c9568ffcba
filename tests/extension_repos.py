"""Local git repositories holding small extensions written for the tests (what `git clone` gets from GitHub)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

_IDENTITY = {"GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.invalid",
             "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.invalid"}
FIRST_COMMIT_TIME = 1_700_000_000  # 2023-11-14 22:13:20 UTC; each later commit is a minute after the last


def git(repo: Path, *args: str, when: int | None = None) -> str:
    """Run git in `repo` with a fixed identity and none of the user's git configuration."""
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0",
               **_IDENTITY)
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {done.stderr}")
    return done.stdout.strip()


def _write(repo: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def commit_time(repo: Path) -> int:
    """When HEAD was committed (seconds since the epoch)."""
    return int(git(repo, "log", "-1", "--format=%ct"))


def make_extension_repo(root: Path, name: str, files: dict[str, str], branch: str = "main") -> Path:
    """A repository `root/name` whose one commit on `branch` holds `files` ({relative path: text})."""
    repo = Path(root) / name
    repo.mkdir(parents=True)
    git(repo, "init", "--quiet", "--initial-branch", branch)
    _write(repo, files)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", f"{name}: first version", when=FIRST_COMMIT_TIME)
    return repo


def add_commit(repo: Path, files: dict[str, str], message: str = "next version") -> str:
    """Write `files` into the repository's checked-out branch and commit them; returns the new short hash."""
    _write(repo, files)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message, when=commit_time(repo) + 60)
    return git(repo, "rev-parse", "--short", "HEAD")


def add_branch(repo: Path, branch: str, files: dict[str, str]) -> str:
    """A new branch (from the current HEAD) with one more commit holding `files`; the repository goes back to
    the branch it was on. Returns the branch's short hash."""
    current = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    git(repo, "checkout", "--quiet", "-b", branch)
    commit = add_commit(repo, files, f"on {branch}")
    git(repo, "checkout", "--quiet", current)
    return commit
