"""Tiny wheels written at test time (a wheel is a zip: the package's files plus `<name>-<version>.dist-info/`
with METADATA, WHEEL and RECORD), and a throwaway virtual environment that borrows this Python's pip, so that pip
runs in tests need no network and never touch the project's venv."""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, name: str, version: str, requires: list[str] = (), extras: list[str] = (),
               files: dict[str, str] | None = None) -> Path:
    """`folder/<name>-<version>-py3-none-any.whl`; `requires`: Requires-Dist lines (markers allowed), `files`:
    {path in site-packages: text} (default: a package `<name>` whose `VERSION` is the version)."""
    files = files if files is not None else {f"{name}/__init__.py": "from .core import VERSION\n",
                                             f"{name}/core.py": f"VERSION = {version!r}\n"}
    info = f"{name}-{version}.dist-info"
    metadata = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                          *[f"Provides-Extra: {extra}" for extra in extras],
                          *[f"Requires-Dist: {req}" for req in requires]]) + "\n"
    contents = {**files, f"{info}/METADATA": metadata,
                f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},{_digest(text.encode())},{len(text.encode())}\n" for path, text in contents.items())
    record += f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in {**contents, f"{info}/RECORD": record}.items():
            archive.writestr(path, text)
    return wheel


def make_venv(folder: Path) -> str:
    """A virtual environment without packages except pip (linked from this Python's); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    pip = importlib.metadata.distribution("pip")
    for top in {str(f).split("/")[0] for f in pip.files if not str(f).startswith("..")}:
        source = Path(pip.locate_file(top))
        if source.exists() and not (site / top).exists():
            (site / top).symlink_to(source, target_is_directory=source.is_dir())
    return str(python)


def offline_pip_env(wheels: Path) -> dict[str, str]:
    """pip settings that reach only `wheels` (no index, no configuration files)."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}


def installed(python: str) -> dict[str, str]:
    """{distribution name: version} installed for `python` (importlib.metadata in a fresh process)."""
    code = ("import json, importlib.metadata as m; "
            "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))")
    import json
    return json.loads(subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, check=True).stdout)
