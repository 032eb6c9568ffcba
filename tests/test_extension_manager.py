"""Installing, listing, updating and removing extensions from local git repositories, and the extension index."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from tests.extension_repos import FIRST_COMMIT_TIME, add_branch, add_commit, git, make_extension_repo
from webui.extensions.index import ExtensionIndexError, filter_entries, load_index
from webui.extensions.manager import (ExtensionAccessError, ExtensionError, ExtensionInstallError,
                                      ExtensionManager, PROJECT_ROOT)
from webui.settings.flags import parse_flags
from webui.settings.options import Options

ACCESS_MESSAGE = ("extension access disabled because of command line flags (--listen); "
                  "add --enable-insecure-extension-access to allow it")
SCRIPT = {"scripts/hello.py": "TITLE = 'hello'\n"}


@pytest.fixture
def sources(tmp_path) -> Path:
    return tmp_path / "sources"


@pytest.fixture
def manager(tmp_path) -> ExtensionManager:
    return make_manager(tmp_path)


def make_manager(tmp_path: Path, *flags: str, **kwargs) -> ExtensionManager:
    return ExtensionManager(tmp_path / "extensions", Options(tmp_path / "config.json"), parse_flags(list(flags)),
                            **kwargs)


def local_time(stamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def leftovers(manager: ExtensionManager) -> list[str]:
    folder = manager.extensions_dir
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- install and list ---------------------------------------------------------------------------------------------
def test_install_from_a_local_repository_lists_its_git_state(manager, sources):
    repo = make_extension_repo(sources, "sd-webui-hello.git", SCRIPT)
    report = manager.install(str(repo))
    assert report.name == "sd-webui-hello" and report.output == ""
    assert (manager.extensions_dir / "sd-webui-hello" / "scripts" / "hello.py").read_text() == "TITLE = 'hello'\n"

    [ext] = manager.list()
    assert ext.name == "sd-webui-hello" and ext.path == manager.extensions_dir / "sd-webui-hello"
    assert ext.enabled and ext.is_git and ext.version_status == "unknown"
    assert ext.remote == str(repo.resolve())
    assert ext.branch == "main"
    assert ext.commit == git(repo, "rev-parse", "--short", "HEAD")
    assert ext.commit_date == local_time(FIRST_COMMIT_TIME)
    assert leftovers(manager) == ["sd-webui-hello"]  # no temporary clone left


def test_install_a_branch_into_a_folder_of_my_choice(manager, sources):
    repo = make_extension_repo(sources, "tools", SCRIPT)
    dev_commit = add_branch(repo, "dev", {"dev.txt": "only on dev\n"})
    report = manager.install(str(repo), branch="dev", dirname="my tools")
    assert report.path == manager.extensions_dir / "my tools"
    assert (report.path / "dev.txt").read_text() == "only on dev\n"
    [ext] = manager.list()
    assert (ext.name, ext.branch, ext.commit) == ("my tools", "dev", dev_commit)


def test_a_folder_that_is_not_a_repository_still_lists(manager, tmp_path):
    (manager.extensions_dir / "copied-by-hand" / "scripts").mkdir(parents=True)
    (manager.extensions_dir / ".hidden").mkdir()
    (manager.extensions_dir / ".tmp-half-abc").mkdir()
    (manager.extensions_dir / "readme.txt").write_text("not a folder")
    [ext] = manager.list()
    assert (ext.name, ext.is_git, ext.remote, ext.commit, ext.branch) == ("copied-by-hand", False, "", "", "")
    assert manager.check_updates() == {"copied-by-hand": "unknown"}


def test_installing_enables_a_previously_disabled_name(manager, sources):
    manager.options.update({"disabled_extensions": ["hello"]})
    manager.install(str(make_extension_repo(sources, "hello", SCRIPT)))
    assert manager.options.get("disabled_extensions") == []
    assert manager.list()[0].enabled


# --- install.py ---------------------------------------------------------------------------------------------------
def test_install_script_runs_in_the_extension_folder_with_the_project_importable(manager, sources):
    install_py = ("import os, sys\n"
                  "import webui.extensions.problems  # the project is importable (as `launch` is for A1111's)\n"
                  "print('installing from', os.getcwd())\n"
                  "open('marker.txt', 'w').write(sys.executable + '\\n' + os.environ['PYTHONPATH'])\n")
    report = manager.install(str(make_extension_repo(sources, "with-install", {"install.py": install_py})))
    folder = manager.extensions_dir / "with-install"
    assert report.output.strip() == f"installing from {folder.resolve()}"
    python, pythonpath = (folder / "marker.txt").read_text().split("\n", 1)
    assert python == sys.executable
    assert str(PROJECT_ROOT) in pythonpath.split(os.pathsep) and str(folder) in pythonpath.split(os.pathsep)
    (folder / "marker.txt").unlink()
    assert manager.run_install_script("with-install").startswith("installing from")
    assert (folder / "marker.txt").exists()


def test_a_failing_install_script_removes_the_folder_and_shows_its_output(manager, sources):
    install_py = "print('need package xyz, cannot continue')\nraise SystemExit(1)\n"
    repo = make_extension_repo(sources, "broken", {"install.py": install_py})
    with pytest.raises(ExtensionInstallError) as caught:
        manager.install(str(repo))
    message = str(caught.value)
    assert "install.py of broken failed (exit code 1)" in message
    assert "need package xyz, cannot continue" in message
    assert leftovers(manager) == []


def test_a_hanging_install_script_is_stopped_and_removed(tmp_path, sources):
    manager = make_manager(tmp_path, install_timeout=1.0)
    install_py = "import time\nprint('waiting forever', flush=True)\ntime.sleep(120)\n"
    repo = make_extension_repo(sources, "hangs", {"install.py": install_py})
    started = time.monotonic()
    with pytest.raises(ExtensionInstallError, match="timed out after 1 s") as caught:
        manager.install(str(repo))
    assert time.monotonic() - started < 30
    assert "waiting forever" in str(caught.value)
    assert leftovers(manager) == []


# --- refusals -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dirname, message", [
    ("../x", "Invalid extension folder name '../x'"),
    ("a/b", "Invalid extension folder name 'a/b'"),
    ("a\\b", "Invalid extension folder name"),
    (".hidden", "Invalid extension folder name '.hidden'"),
    ("bad;name", "Invalid extension folder name 'bad;name'"),
])
def test_bad_folder_names_are_refused(manager, sources, dirname, message):
    repo = make_extension_repo(sources, "good", SCRIPT)
    with pytest.raises(ExtensionError, match=re.escape(message)):
        manager.install(str(repo), dirname=dirname)
    assert leftovers(manager) == []
    assert not (manager.extensions_dir.parent / "x").exists()


def test_an_existing_folder_or_the_same_repository_twice_is_refused(manager, sources):
    repo = make_extension_repo(sources, "twice", SCRIPT)
    manager.install(str(repo))
    with pytest.raises(ExtensionError, match="Extension folder already exists: twice"):
        manager.install(str(repo))
    with pytest.raises(ExtensionError, match="Extension with this URL is already installed: twice"):
        manager.install(str(repo) + "/", dirname="twice-again")
    other = make_extension_repo(sources, "other", SCRIPT)
    (manager.extensions_dir / "other").mkdir()
    with pytest.raises(ExtensionError, match="Extension folder already exists: other"):
        manager.install(str(other))
    assert leftovers(manager) == ["other", "twice"]


def test_cloning_a_missing_repository_fails_clearly_and_leaves_nothing(manager, tmp_path):
    missing = tmp_path / "no-such-repo"
    with pytest.raises(ExtensionInstallError) as caught:
        manager.install(str(missing))
    message = str(caught.value)
    assert f"git clone of {missing} failed" in message
    assert "does not exist" in message or "not appear to be a git repository" in message
    assert leftovers(manager) == []
    with pytest.raises(ExtensionError, match="Enter the URL"):
        manager.install("  ")
    with pytest.raises(ExtensionError, match="Invalid URL"):
        manager.install("--upload-pack=touch /tmp/pwned")


def test_a_missing_branch_fails_clearly(manager, sources):
    repo = make_extension_repo(sources, "branchless", SCRIPT)
    with pytest.raises(ExtensionInstallError, match="git clone of .* failed:\n.*Remote branch nope not found"):
        manager.install(str(repo), branch="nope")
    assert leftovers(manager) == []


# --- updates ------------------------------------------------------------------------------------------------------
def test_check_for_updates_then_fast_forward(manager, sources):
    repo = make_extension_repo(sources, "evolving", SCRIPT)
    manager.install(str(repo))
    old = manager.list()[0].commit
    assert manager.check_updates() == {"evolving": "latest"}
    assert manager.list()[0].version_status == "latest"

    new = add_commit(repo, {"scripts/new.py": "NEW = True\n"})
    assert manager.check_updates(["evolving"]) == {"evolving": "behind"}
    assert manager.list()[0].version_status == "behind"

    message = manager.update("evolving")
    assert message.startswith(f"evolving updated: {old} → {new}")
    ext = manager.list()[0]
    assert (ext.commit, ext.version_status) == (new, "latest")
    assert ext.commit_date == local_time(FIRST_COMMIT_TIME + 60)
    assert (ext.path / "scripts" / "new.py").read_text() == "NEW = True\n"
    assert manager.update("evolving") == f"evolving is already up to date ({new})"


def test_update_refuses_to_overwrite_local_changes(manager, sources):
    repo = make_extension_repo(sources, "edited", SCRIPT)
    manager.install(str(repo))
    add_commit(repo, {"scripts/hello.py": "TITLE = 'upstream'\n"})
    (manager.extensions_dir / "edited" / "scripts" / "hello.py").write_text("TITLE = 'mine'\n")
    with pytest.raises(ExtensionError, match="Could not update edited: it cannot be fast-forwarded") as caught:
        manager.update("edited")
    assert "hello.py" in str(caught.value)
    assert (manager.extensions_dir / "edited" / "scripts" / "hello.py").read_text() == "TITLE = 'mine'\n"


def test_check_reports_a_fetch_error_per_extension(manager, sources):
    repo = make_extension_repo(sources, "vanishing", SCRIPT)
    manager.install(str(repo))
    git(manager.extensions_dir / "vanishing", "remote", "set-url", "origin", str(sources / "gone"))
    [status] = manager.check_updates().values()
    assert status.startswith("error: git fetch failed")
    with pytest.raises(ExtensionError, match="Could not update vanishing: git fetch failed"):
        manager.update("vanishing")


# --- uninstall, enable / disable -----------------------------------------------------------------------------------
def test_uninstall_removes_the_folder_and_its_disabled_entry(manager, sources):
    manager.install(str(make_extension_repo(sources, "goner", SCRIPT)))
    manager.install(str(make_extension_repo(sources, "keeper", SCRIPT)))
    assert manager.set_disabled(["goner", "not-installed", "keeper"]) == ["goner", "keeper"]
    assert Options(manager.options._path).get("disabled_extensions") == ["goner", "keeper"]  # saved
    assert [e.enabled for e in manager.list()] == [False, False]

    manager.uninstall("goner")
    assert leftovers(manager) == ["keeper"]
    assert manager.options.get("disabled_extensions") == ["keeper"]


@pytest.mark.parametrize("name", ["../extensions", "..", ".", "", "keeper/scripts", "/etc", "missing", ".tmp-x"])
def test_uninstall_refuses_anything_but_an_installed_folder(manager, sources, name):
    manager.install(str(make_extension_repo(sources, "keeper", SCRIPT)))
    (manager.extensions_dir / ".tmp-x").mkdir()
    with pytest.raises(ExtensionError, match="not an installed extension|Choose an installed extension"):
        manager.uninstall(name)
    assert leftovers(manager) == [".tmp-x", "keeper"]
    assert (manager.extensions_dir / "keeper" / "scripts" / "hello.py").exists()


# --- access -------------------------------------------------------------------------------------------------------
def test_listening_publicly_refuses_install_update_and_uninstall(tmp_path, sources):
    repo = make_extension_repo(sources, "guarded", SCRIPT)
    open_manager = make_manager(tmp_path)
    open_manager.install(str(repo))

    public = make_manager(tmp_path, "--listen")
    assert not public.access_allowed() and public.access_message() == ACCESS_MESSAGE
    for action in (lambda: public.install(str(repo), dirname="guarded-2"), lambda: public.update("guarded"),
                   lambda: public.uninstall("guarded")):
        with pytest.raises(ExtensionAccessError) as caught:
            action()
        assert str(caught.value) == ACCESS_MESSAGE
    assert leftovers(public) == ["guarded"]

    allowed = make_manager(tmp_path, "--listen", "--enable-insecure-extension-access")
    assert allowed.access_allowed() and allowed.access_message() == ""
    allowed.install(str(make_extension_repo(sources, "second", SCRIPT)))
    assert allowed.update("guarded").startswith("guarded is already up to date")
    allowed.uninstall("guarded")
    assert leftovers(allowed) == ["second"]


def test_server_name_and_share_count_as_public(tmp_path):
    from types import SimpleNamespace
    opts = Options(None)
    assert ExtensionManager(tmp_path, opts, SimpleNamespace(server_name="127.0.0.1")).access_allowed()
    assert ExtensionManager(tmp_path, opts, SimpleNamespace(server_name="localhost")).access_allowed()
    refused = ExtensionManager(tmp_path, opts, SimpleNamespace(server_name="0.0.0.0"))
    assert "(--server-name)" in refused.access_message()
    assert "(--share)" in ExtensionManager(tmp_path, opts, SimpleNamespace(share=True)).access_message()


# --- the index ----------------------------------------------------------------------------------------------------
INDEX = {
    "tags": {"script": "Script", "ads": "Ads", "localization": "Localization", "prompting": "Prompting"},
    "extensions": [
        {"name": "Wildcards", "url": "https://github.com/AUTOMATIC1111/stable-diffusion-webui-wildcards.git",
         "description": "Replaces __name__ with a random line from name.txt", "tags": ["script", "prompting"],
         "added": "2022-11-11", "created_at": "2022-10-15T11:00:00Z", "stars": 450},
        {"name": "Dynamic Prompts", "url": "https://github.com/adieyal/sd-dynamic-prompts",
         "description": "A templating language for prompts", "tags": ["prompting"],
         "added": "2022-11-01", "created_at": "2022-10-08T09:00:00Z", "stars": 1900},
        {"name": "Chinese translation", "url": "https://github.com/example/zh-localization",
         "description": "UI in Chinese", "tags": ["localization"], "added": "2023-01-05",
         "created_at": "2022-12-01T00:00:00Z", "stars": 20},
        {"name": "no url"},
    ],
}


def write_index(tmp_path: Path) -> Path:
    path = tmp_path / "index.json"
    path.write_text(json.dumps(INDEX), encoding="utf-8")
    return path


def test_index_loads_from_a_local_file_and_a_file_url(tmp_path):
    path = write_index(tmp_path)
    index = load_index(str(path))
    assert [e.name for e in index.entries] == ["Wildcards", "Dynamic Prompts", "Chinese translation"]
    assert index.tags["prompting"] == "Prompting"
    wildcards = index.entries[0]
    assert (wildcards.tags, wildcards.added, wildcards.stars) == (("script", "prompting"), "2022-11-11", 450)
    assert [e.name for e in load_index(path.as_uri()).entries] == [e.name for e in index.entries]


def test_index_search_tags_sorting_and_installed_marker(tmp_path):
    index = load_index(str(write_index(tmp_path)))
    installed = {"https://github.com/AUTOMATIC1111/stable-diffusion-webui-wildcards/"}

    shown = filter_entries(index, "", ["localization"], installed, "newest first")
    assert [(e.name, e.installed) for e in shown] == [("Wildcards", True), ("Dynamic Prompts", False)]
    assert [e.name for e in filter_entries(index, "", [], installed, "stars")] == \
        ["Dynamic Prompts", "Wildcards", "Chinese translation"]
    assert [e.name for e in filter_entries(index, "", [], installed, "a-z")] == \
        ["Chinese translation", "Dynamic Prompts", "Wildcards"]
    assert [e.name for e in filter_entries(index, "", [], installed, "oldest first")] == \
        ["Dynamic Prompts", "Wildcards", "Chinese translation"]
    assert [e.name for e in filter_entries(index, "", ["installed"], installed, "a-z")] == \
        ["Chinese translation", "Dynamic Prompts"]
    assert [e.name for e in filter_entries(index, "RANDOM line", [], (), "a-z")] == ["Wildcards"]
    assert [e.name for e in filter_entries(index, "prompting", ["script"], (), "a-z")] == ["Dynamic Prompts"]


@pytest.mark.parametrize("content, reason", [(None, "no such file"), ("{not json", "not valid JSON"),
                                             ('{"extensions": 3}', 'not an extension index (no "extensions" list)')])
def test_a_missing_or_broken_index_is_a_clear_error(tmp_path, content, reason):
    path = tmp_path / "index.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ExtensionIndexError) as caught:
        load_index(str(path))
    message = str(caught.value)
    assert message.startswith(f"Could not load the extension index from {path}: {reason}")
    assert message.endswith("Without internet, install from a URL or a local path (Install from URL tab).")


def test_an_unreachable_index_url_is_a_clear_error():
    with pytest.raises(ExtensionIndexError, match=r"Could not load the extension index from "
                                                  r"http://127\.0\.0\.1:9/index\.json: .*Without internet"):
        load_index("http://127.0.0.1:9/index.json", timeout=5)
