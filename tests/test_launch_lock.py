"""launch.sh installs exactly the lock, brings an existing venv to a changed lock, and refuses a file whose hash
differs. Runs the real script over a copy of it, with tiny hand-made wheels and no index (nothing is downloaded)."""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel whose module `name` has VERSION = version."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            data = text.encode()
            archive.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{member},sha256={digest},{len(data)}")
        archive.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    return path


def _lock_line(wheel: Path, name: str, version: str) -> str:
    return f"{name}=={version} \\\n    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of launch.sh beside a stand-in app.py, a venv made beforehand, and an offline wheel folder."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copy2(ROOT / "launch.sh", root / "launch.sh")
    (root / "app.py").write_text("import sys\nprint('app started with', sys.argv[1:])\n")
    subprocess.run([sys.executable, "-m", "venv", str(root / ".venv")], check=True)
    wheels = root / "wheels"
    wheels.mkdir()
    built = {(name, version): _wheel(wheels, name, version)
             for name, version in [("lockpkg_a", "1.0"), ("lockpkg_a", "2.0"), ("lockpkg_b", "1.0"),
                                   ("lockpkg_c", "1.0")]}
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CONFIG_FILE": os.devnull,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    return root, built, env


def _launch(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "launch.sh"), *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def _installed(root: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m; print('\\n'.join(f\"{d.metadata['Name']}={d.version}\" "
            "for d in m.distributions() if d.metadata['Name'].startswith('lockpkg')))")
    out = subprocess.run([str(root / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split("=") for line in out.split())


def test_a_venv_follows_the_lock_through_an_upgrade(checkout):
    root, built, env = checkout
    lock = root / "requirements.lock"
    lock.write_text("# first lock\n" + _lock_line(built["lockpkg_a", "1.0"], "lockpkg_a", "1.0")
                    + _lock_line(built["lockpkg_b", "1.0"], "lockpkg_b", "1.0"))
    first = _launch(root, env, "--port", "1")
    assert first.returncode == 0, first.stderr
    assert "Installing the app dependencies from requirements.lock" in first.stdout
    assert "app started with ['--port', '1']" in first.stdout
    assert _installed(root) == {"lockpkg_a": "1.0", "lockpkg_b": "1.0"}

    # A package that an extension's install.py added is not the lock's business.
    subprocess.run([str(root / ".venv" / "bin" / "python"), "-m", "pip", "install", "-q", "lockpkg_c==1.0"],
                   env=env, check=True)
    again = _launch(root, env)
    assert again.returncode == 0 and "dependency" not in again.stdout  # unchanged lock: nothing to do

    # The next version of the repository moves lockpkg_a to 2.0 and drops lockpkg_b.
    lock.write_text("# second lock\n" + _lock_line(built["lockpkg_a", "2.0"], "lockpkg_a", "2.0"))
    upgraded = _launch(root, env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "The app dependency lock changed: bringing .venv to it" in upgraded.stdout
    assert "Removing what the new lock no longer lists: lockpkg-b" in upgraded.stdout
    assert _installed(root) == {"lockpkg_a": "2.0", "lockpkg_c": "1.0"}
    assert "app started" in upgraded.stdout


def test_a_file_whose_hash_differs_is_refused_and_the_app_does_not_start(checkout):
    root, built, env = checkout
    wrong = "0" * 64
    (root / "requirements.lock").write_text(f"lockpkg_b==1.0 \\\n    --hash=sha256:{wrong}\n")
    refused = _launch(root, env)
    assert refused.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in refused.stderr
    assert "app started" not in refused.stdout


def test_the_repository_locks_pin_every_package_with_hashes():
    """Each lock line is `name==version` followed by at least one sha256; torch stays at the tested build."""
    for name in ("requirements.lock", "requirements-test.lock", "requirements-cuda.lock"):
        text = (ROOT / name).read_text()
        entries = [block for block in text.split("\n") if block[:1].isalnum()]
        assert entries, name
        for entry in entries:
            assert "==" in entry and entry.rstrip().endswith("\\"), f"{name}: {entry!r} is not pinned with hashes"
    app_lock = (ROOT / "requirements.lock").read_text()
    assert "\ntorch==2.14.1 " in app_lock and "\ntorchvision==0.29.1 " in app_lock
