"""The guard on extensions' installs (webui/extensions/install_guard.py) with the real pip, offline: tiny wheels
written here, installed into a throwaway venv (or refused before anything is installed into the project's venv),
and `import launch` from install.py through the ExtensionManager the services build."""
from __future__ import annotations

import html
import importlib.metadata
import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.extension_repos import make_extension_repo
from tests.wheel_files import installed, make_venv, make_wheel, offline_pip_env
from webui.extensions.manager import ExtensionGuardError, ExtensionManager
from webui.extensions.problems import ProblemLog
from webui.settings.flags import parse_flags
from webui.settings.options import Options
from webui.ui import extensions_tab as tab

PIP_RUN = "import subprocess, sys\n"


def pip_install(*requirements: str, check: str = "") -> str:
    """An install.py that runs pip itself, as adetailer's and sd-dynamic-prompts's do (optionally only when the
    module `check` is missing, as sd-dynamic-prompts checks its requirement's version first)."""
    call = f"subprocess.check_call([sys.executable, '-m', 'pip', 'install', *{list(requirements)!r}])\n"
    if check:
        return PIP_RUN + f"import importlib.util\nif importlib.util.find_spec({check!r}) is None:\n    {call}"
    return PIP_RUN + call


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "guardnum", "2.0")  # the web UI's locked package (numpy's part)
    make_wheel(folder, "guardnum", "1.5")
    make_wheel(folder, "fakepkg", "1.0")
    make_wheel(folder, "oldpipe", "1.0", ["guardnum<2"])  # mediapipe's part in adetailer's install
    make_wheel(folder, "fakepipe", "1.0", ["numpy<2"])  # the same against the project's real lock
    make_wheel(folder, "attnlib", "1.0")
    make_wheel(folder, "promptlib", "0.3", ["guardnum>=2", 'attnlib; extra == "attn"', 'guardnum<2; extra == "magic"'],
               extras=["attn", "magic"])  # dynamicprompts's shape: one optional extra conflicts
    make_wheel(folder, "clobber", "1.0", files={"guardnum/core.py": "VERSION = 'clobbered'\n"})
    return folder


@pytest.fixture
def venv(tmp_path, wheels, monkeypatch):
    """(python of a fresh venv holding guardnum 2.0, its lock file); pip reaches only `wheels`."""
    for key, value in offline_pip_env(wheels).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    python = make_venv(tmp_path / "venv")
    subprocess.run([python, "-m", "pip", "install", "-q", "guardnum==2.0"], check=True, timeout=120)
    lock = tmp_path / "requirements.lock"
    lock.write_text("guardnum==2.0 \\\n    --hash=sha256:0000\n    # via -r requirements.txt\n")
    return python, lock


def manager_for(tmp_path: Path, python: str, lock: Path) -> ExtensionManager:
    return ExtensionManager(tmp_path / "extensions", Options(tmp_path / "config.json"), parse_flags([]),
                            python=python, lock_files=[lock])


def guardnum(python: str) -> str:
    return subprocess.run([python, "-c", "import guardnum; print(guardnum.VERSION)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_launch_run_pip_installs_what_the_lock_allows(tmp_path, venv):
    python, lock = venv
    manager = manager_for(tmp_path, python, lock)
    install_py = ("import launch\n"
                  "if not launch.is_installed('fakepkg'):\n"
                  "    launch.run_pip('install fakepkg', 'fakepkg for the test')\n"
                  "print('skip_install:', launch.args.skip_install)\n")
    report = manager.install(str(make_extension_repo(tmp_path / "src", "uses-run-pip", {"install.py": install_py})))
    assert "Installing fakepkg for the test" in report.output and "skip_install: False" in report.output
    assert installed(python) == {"pip": importlib.metadata.version("pip"), "guardnum": "2.0", "fakepkg": "1.0"}
    assert manager.get("uses-run-pip").enabled and report.notices == ()


def tab_services(manager: ExtensionManager) -> SimpleNamespace:
    """What the Extensions tab's handlers use of the services."""
    return SimpleNamespace(extensions=manager, options=manager.options, flags=manager.flags,
                           extension_problems=ProblemLog())


def test_a_dependency_on_an_older_locked_package_is_refused_and_nothing_changes(tmp_path, venv):
    python, lock = venv
    services = tab_services(manager_for(tmp_path, python, lock))
    before = installed(python)
    repo = make_extension_repo(tmp_path / "src", "detailer", {"install.py": pip_install("oldpipe>=1.0"),
                                                             "scripts/detailer.py": "TITLE = 'd'\n"})
    message = ("detailer needs guardnum<2 (through oldpipe 1.0); the web UI needs guardnum 2.0: not installed, "
               "extension left disabled (it stays in the Installed tab, to update or uninstall).")
    with pytest.warns(UserWarning, match=re.escape(html.escape(message, quote=False))):  # a toast: text, escaped
        output, table, enabled, chosen = tab.install_from_url(services, str(repo), "", "")
    assert output == message
    assert installed(python) == before
    # kept on disk, disabled, to update or uninstall; listed with the problems
    assert enabled.choices == [("detailer", "detailer")] and enabled.value == []
    assert [c[1] for c in chosen.choices] == ["detailer"] and "<td>disabled</td>" in table
    assert services.options.get("disabled_extensions") == ["detailer"]
    assert html.escape(message, quote=False) in tab.problems_html(services)


def test_only_an_optional_extra_conflicts_so_it_installs_without_it(tmp_path, venv):
    python, lock = venv
    services = tab_services(manager_for(tmp_path, python, lock))
    repo = make_extension_repo(tmp_path / "src", "prompts",
                               {"install.py": pip_install("promptlib[attn,magic]>=0.3", check="promptlib")})
    notice = "prompts: installed without promptlib's 'magic' extra: it needs guardnum<2, the web UI has 2.0"
    with pytest.warns(UserWarning, match=re.escape(html.escape(notice, quote=False))):
        output, _table, enabled, _ = tab.install_from_url(services, str(repo), "", "")
    assert output.endswith(f"\n\n{notice}\nInstalled into {services.extensions.extensions_dir / 'prompts'}. "
                           "Press \"Apply and restart UI\" (Installed tab) to load it.")
    assert installed(python) == {"pip": importlib.metadata.version("pip"), "guardnum": "2.0", "promptlib": "0.3",
                                 "attnlib": "1.0"}
    assert enabled.value == ["prompts"]


def test_an_install_that_goes_around_pip_is_caught_and_repaired(tmp_path, venv):
    python, lock = venv
    manager = manager_for(tmp_path, python, lock)
    install_py = (PIP_RUN + "import os\n"
                  "env = {k: v for k, v in os.environ.items() if k != 'PIP_CONSTRAINT'}\n"
                  "subprocess.check_call([sys.executable, '-m', 'pip', 'install', 'guardnum==1.5'], env=env)\n"
                  "subprocess.check_call([sys.executable, '-m', 'pip', 'install', 'clobber'])\n")
    repo = make_extension_repo(tmp_path / "src", "sneaky", {"install.py": install_py})
    with pytest.raises(ExtensionGuardError) as refused:
        manager.install(str(repo))
    message = str(refused.value)
    assert message.startswith("sneaky's install.py changed the web UI's packages: guardnum changed from 2.0 to 1.5; "
                              "clobber 1.0 overwrote files of guardnum 2.0 (guardnum/core.py). They were put "
                              "back (")
    assert "The extension is left disabled." in message
    assert guardnum(python) == "2.0" and "clobber" not in installed(python)
    assert not manager.get("sneaky").enabled


def test_launch_imports_at_start_up_and_a_refused_extension_leaves_the_server_up(make_services, tmp_path, wheels,
                                                                                 monkeypatch):
    """The project's venv and real lock, through the manager the services build: nothing can be installed (pip
    reaches only the test's wheels, and the one needed conflicts with the lock)."""
    for key, value in offline_pip_env(wheels).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    data = tmp_path / "data0"
    marker = tmp_path / "launch-seen.txt"
    good = ("import json, os, launch\n"
            f"open({str(marker)!r}, 'w').write(json.dumps([launch.is_installed('numpy'), launch.args.skip_install, "
            "open(os.environ['PIP_CONSTRAINT'].split()[-1]).read()]))\n")
    make_extension_repo(data / "extensions", "needs-launch", {"install.py": good})
    make_extension_repo(data / "extensions", "detailer", {"install.py": pip_install("fakepipe>=1.0"),
                                                          "scripts/detailer.py": "raise SystemExit('loaded')\n"})
    ran = tmp_path / "script-pip.txt"  # pip run straight from a loaded script (not install.py, not launch)
    make_extension_repo(data / "extensions", "runs-pip", {"scripts/runs_pip.py": (
        "import subprocess, sys\n"
        "done = subprocess.run([sys.executable, '-m', 'pip', 'install', 'fakepipe'], capture_output=True, text=True)\n"
        f"open({str(ran)!r}, 'w').write(str(done.returncode) + done.stdout + done.stderr)\n")})
    before = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
    services = make_services()
    assert {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()} == before
    assert ran.read_text().startswith("1") and "numpy" in ran.read_text()  # refused by the same constraints

    numpy = importlib.metadata.version("numpy")
    seen, skip, constraints = json.loads(marker.read_text())
    assert seen is True and skip is False
    assert f"numpy=={numpy}\n" in constraints and f"torch=={importlib.metadata.version('torch')}\n" in constraints

    [problem] = services.extension_problems.for_extension("detailer")
    assert problem.where == "install.py" and problem.message == (
        f"ExtensionGuardError: detailer needs numpy<2 (through fakepipe 1.0); the web UI needs numpy {numpy}: not "
        "installed, extension left disabled (it stays in the Installed tab, to update or uninstall).")
    assert not services.extension_host.get("detailer").enabled and services.extension_host.get("needs-launch").enabled
    assert services.options.get("disabled_extensions") == ["detailer"]
    assert [e.name for e in services.extensions.list() if not e.enabled] == ["detailer"]
    assert not services.extension_problems.for_extension("needs-launch")
    services.stop()
    import os
    assert "PIP_CONSTRAINT" not in os.environ and "WEBUI_INSTALL_GUARD" not in os.environ


def test_launch_run_pip_from_a_loaded_script_is_guarded_too(wheels, monkeypatch):
    """An extension's script calling `launch.run_pip` in the server: the same constraints, a clear refusal."""
    for key, value in offline_pip_env(wheels).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    monkeypatch.delenv("WEBUI_INSTALL_GUARD", raising=False)
    from webui.extensions.a1111 import launch
    before = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
    with pytest.raises(RuntimeError) as refused:
        launch.run_pip("install fakepipe", "fakepipe")
    numpy = importlib.metadata.version("numpy")
    assert str(refused.value).startswith(f"Couldn't install fakepipe: it needs numpy<2 (through fakepipe 1.0); the "
                                         f"web UI needs numpy {numpy}\n")
    assert {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()} == before


def test_the_users_own_constraints_are_kept_in_one_file(tmp_path):
    """pip splits PIP_CONSTRAINT at whitespace: the guard passes one file, which includes the user's own."""
    import sys

    from webui.extensions.install_guard import GuardedInstall
    mine = tmp_path / "mine.txt"
    mine.write_text("six<99\n", encoding="utf-8")
    with GuardedInstall(sys.executable) as guard:
        env = guard.env({"PIP_CONSTRAINT": str(mine)})
        guard.env(dict(env))  # again, as launch.run_pip inside install.py: nothing doubled, no self-inclusion
        assert env["PIP_CONSTRAINT"] == str(guard.constraints)
        lines = guard.constraints.read_text(encoding="utf-8").splitlines()
        assert lines.count(f"-c {mine}") == 1 and not any(str(guard.constraints) in line for line in lines)
        assert any(line.startswith("numpy==") for line in lines)


def test_pips_no_version_report_of_an_extra_is_read_as_an_extra_conflict():
    """pip may say "Could not find a version that satisfies the requirement X (from Y[extras])" rather than
    "ResolutionImpossible": still an extra's conflict, installed without that extra at the requirement asked for."""
    from webui.extensions.install_guard import extras_only, fallback_requirements, parse_conflicts, summarize
    report = (
        "Collecting dynamicprompts[attentiongrabber,magicprompt]~=0.31.0\n"
        "ERROR: Could not find a version that satisfies the requirement transformers[torch]<5; extra == \"magicprompt\""
        " (from dynamicprompts[attentiongrabber,magicprompt]) (from versions: 4.57.6, 5.23.0)\n"
        "ERROR: No matching distribution found for transformers[torch]<5; extra == \"magicprompt\"\n")
    conflicts = parse_conflicts(report, {"transformers": "5.23.0"}, {})
    assert extras_only(conflicts)
    assert fallback_requirements(conflicts) == {"dynamicprompts[attentiongrabber]~=0.31.0": ("dynamicprompts",
                                                                                            ["magicprompt"])}
    assert summarize(conflicts) == ["needs transformers<5 (through dynamicprompts[attentiongrabber,magicprompt]'s "
                                    "'magicprompt' extra); the web UI needs transformers 5.23.0"]
