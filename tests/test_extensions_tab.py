"""The Extensions tab without a browser: its Blocks, and its handlers against a real ExtensionManager over local
git repositories (installing, enabling, updating, uninstalling, the index, problems, refused access)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from tests.extension_repos import add_commit, make_extension_repo
from webui.extensions.manager import ExtensionManager
from webui.extensions.problems import ProblemLog
from webui.settings.flags import parse_flags
from webui.settings.options import Options
from webui.ui import extensions_tab as tab

ACCESS_MESSAGE = ("extension access disabled because of command line flags (--listen); "
                  "add --enable-insecure-extension-access to allow it")
SCRIPT = {"scripts/hello.py": "TITLE = 'hello'\n"}


def fake_services(tmp_path: Path, *flags: str) -> SimpleNamespace:
    parsed = parse_flags(list(flags))
    options = Options(tmp_path / "config.json")
    problems = ProblemLog()
    try:
        raise ValueError("wildcard file <missing>")
    except ValueError as exc:
        problems.report("sd-<b>wildcards</b>", "process hook of 'Wildcards'", exc)
    restarts = []
    return SimpleNamespace(extensions=ExtensionManager(tmp_path / "extensions", options, parsed), options=options,
                           flags=parsed, extension_problems=problems, restart=lambda: restarts.append(True),
                           restarts=restarts)


@pytest.fixture
def services(tmp_path) -> SimpleNamespace:
    return fake_services(tmp_path)


@pytest.fixture
def sources(tmp_path) -> Path:
    return tmp_path / "sources"


def build(services) -> dict:
    with gr.Blocks() as blocks:
        with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
            built = tab.build_extensions_tab(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    return {"tab": built, "ids": by_id, "blocks": blocks}


def no_warnings(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


def test_the_tab_has_a1111s_controls_and_lists_installed_extensions(services, sources):
    services.extensions.install(str(make_extension_repo(sources, "alpha", SCRIPT)))
    services.extensions.install(str(make_extension_repo(sources, "beta", SCRIPT)))
    services.extensions.set_disabled(["beta"])
    ids = build(services)["ids"]
    expected = {"tab_extensions", "extensions_installed_html", "extensions_enabled", "extensions_apply",
                "extensions_check", "extensions_update", "extensions_uninstall", "extensions_problems",
                "extensions_index_url", "extensions_load_index", "extensions_search", "extensions_available_html",
                "extensions_available_install", "install_url", "install_branch", "install_dirname", "install_button",
                "install_result"}
    assert expected <= set(ids), expected - set(ids)
    assert ids["install_url"].label == "URL for extension's git repository"
    assert ids["install_branch"].label == "Specific branch name"
    assert ids["install_dirname"].label == "Local directory name"
    assert [c[1] for c in ids["extensions_enabled"].choices] == ["alpha", "beta"]
    assert ids["extensions_enabled"].value == ["alpha"]
    assert ids["install_button"].interactive and "extensions_access_note" not in ids
    table = ids["extensions_installed_html"].value
    assert str(sources / "alpha") in table and "main" in table and ">disabled<" in table


def test_install_from_url_shows_install_py_output_and_how_to_load_it(services, sources, capsys):
    repo = make_extension_repo(sources, "greeter", {"install.py": "print('installed <the> deps')\n", **SCRIPT})
    output, table, enabled, chosen = no_warnings(lambda: tab.install_from_url(services, str(repo), "", "my-greeter"))
    folder = services.extensions.extensions_dir / "my-greeter"
    assert output == (f"installed <the> deps\n\nInstalled into {folder}. "
                      "Press \"Apply and restart UI\" (Installed tab) to load it.")
    assert "Installed my-greeter" in capsys.readouterr().out
    assert "my-greeter" in table and enabled.value == ["my-greeter"]
    assert [c[1] for c in chosen.choices] == ["my-greeter"]


def test_a_failed_install_is_a_notice_and_the_output_box_says_why(services, sources):
    repo = make_extension_repo(sources, "failing", {"install.py": "print('no GPU found')\nraise SystemExit(3)\n"})
    with pytest.warns(UserWarning, match="install.py of failing failed"):
        output, table, enabled, _ = tab.install_from_url(services, str(repo), "", "")
    assert "exit code 3" in output and "no GPU found" in output
    assert enabled.choices == [] and not (services.extensions.extensions_dir / "failing").exists()
    with pytest.warns(UserWarning, match="Enter the URL"):
        tab.install_from_url(services, "", "", "")


def test_apply_saves_disabled_extensions_and_restarts(services, sources):
    for name in ("one", "two", "three"):
        services.extensions.install(str(make_extension_repo(sources, name, SCRIPT)))
    table, restarting = tab.apply_and_restart(services, ["two"])
    assert restarting is True and services.restarts == [True]
    assert services.options.get("disabled_extensions") == ["one", "three"]
    assert Options(services.options._path).get("disabled_extensions") == ["one", "three"]  # written to config.json
    assert [e.enabled for e in services.extensions.list()] == [False, False, True]  # one, three, two
    assert table.count(">disabled<") == 2


def test_problems_show_the_extension_its_message_and_traceback_escaped(services):
    shown = tab.problems_html(services)
    assert "sd-&lt;b&gt;wildcards&lt;/b&gt;" in shown and "<b>wildcards" not in shown
    assert "process hook of &#x27;Wildcards&#x27;" in shown
    assert "ValueError: wildcard file &lt;missing&gt;" in shown
    assert "<details><summary>traceback</summary><pre>Traceback (most recent call last)" in shown
    assert tab.problems_html(SimpleNamespace(extension_problems=ProblemLog())).count("No extension reported") == 1


def test_check_update_and_uninstall_from_the_installed_tab(services, sources, capsys):
    repo = make_extension_repo(sources, "growing", SCRIPT)
    services.extensions.install(str(repo))
    assert "latest" in tab.check_for_updates(services)
    new = add_commit(repo, {"scripts/more.py": "MORE = 1\n"})
    assert "behind HEAD (update available)" in tab.check_for_updates(services)
    assert "Updates available: growing" in capsys.readouterr().out

    table = tab.update_extension(services, "growing")
    assert new in table and "behind HEAD" not in table
    assert "growing updated:" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="Choose an installed extension"):
        tab.update_extension(services, None)

    assert tab.uninstall_extension(services, "growing", False) == (gr.skip(),) * 3  # confirm() said no
    assert (services.extensions.extensions_dir / "growing").is_dir()
    table, enabled, chosen = tab.uninstall_extension(services, "growing", True)
    assert not (services.extensions.extensions_dir / "growing").exists()
    assert "No extensions installed" in table and chosen.choices == []
    with pytest.warns(UserWarning, match="'growing' is not an installed extension"):
        tab.uninstall_extension(services, "growing", True)


def test_refused_access_shows_a1111s_message_instead_of_acting(tmp_path, sources):
    services = fake_services(tmp_path, "--listen")
    built = build(services)["ids"]
    assert ACCESS_MESSAGE in built["extensions_access_note"].value
    for elem_id in ("install_button", "extensions_apply", "extensions_update", "extensions_uninstall",
                    "extensions_available_install"):
        assert built[elem_id].interactive is False

    repo = make_extension_repo(sources, "blocked", SCRIPT)
    with pytest.warns(UserWarning, match=r"extension access disabled because of command line flags \(--listen\)"):
        output, *_ = tab.install_from_url(services, str(repo), "", "")
    assert output == ACCESS_MESSAGE
    assert not (services.extensions.extensions_dir / "blocked").exists()
    with pytest.warns(UserWarning, match="extension access disabled"):
        assert tab.apply_and_restart(services, []) == (gr.skip(), False)
    assert services.restarts == [] and services.options.get("disabled_extensions") == []


def write_index(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "index.json"
    path.write_text(json.dumps({"tags": {"script": "Script", "ads": "Ads"}, "extensions": entries}))
    return path


def test_available_loads_an_index_marks_installed_and_installs_an_entry(services, sources, tmp_path):
    first = make_extension_repo(sources, "first-ext", SCRIPT)
    second = make_extension_repo(sources, "second-ext", SCRIPT)
    services.extensions.install(str(first))
    index_file = write_index(tmp_path, [
        {"name": "First", "url": str(first), "description": "already here", "tags": ["script"], "added": "2023-01-01"},
        {"name": "Second", "url": str(second), "description": "<img src=x onerror=alert(1)>", "tags": ["script"],
         "added": "2023-02-01", "stars": 7},
        {"name": "Spam", "url": "https://example.com/spam", "description": "buy", "tags": ["ads"], "added": "2023-03-01"},
    ])
    index, tags, html, picker = no_warnings(
        lambda: tab.load_available(services, str(index_file), "", ["ads"], "newest first"))
    assert [c[1] for c in tags.choices] == ["ads", "installed", "script"] and tags.value == ["ads"]
    assert "2 of 3 extensions shown" in html and "Spam" not in html
    assert "First</a>" not in html and "First <span class=\"installed-marker\">(installed)</span>" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    assert picker.choices == [("Second", str(second))]  # installed ones are not offered again
    assert html.index("Second") < html.index("First")  # newest first

    html, picker = tab.available_html(services, index, "already", ["ads"], "a-z")
    assert "1 of 3" in html and "First" in html and "Second" not in html

    output, html, picker, table, enabled, _ = tab.install_from_index(services, index, str(second), "", ["ads"],
                                                                     "newest first")
    assert output.startswith(f"Installed into {services.extensions.extensions_dir / 'second-ext'}")
    assert picker.choices == [] and html.count("(installed)") == 2
    assert enabled.value == ["first-ext", "second-ext"]


def test_available_offline_is_a_notice_not_a_crash(services, tmp_path):
    missing = tmp_path / "offline" / "index.json"
    with pytest.warns(UserWarning, match="Could not load the extension index"):
        index, tags, html, picker = tab.load_available(services, str(missing), "", [], "newest first")
    assert index is None and tags == gr.skip() and picker.choices == []
    assert f"Could not load the extension index from {missing}: no such file" in html
    assert "Install from URL tab" in html
    assert tab.available_html(services, None, "", [], "a-z")[0] == tab.NO_INDEX_HTML


def test_hand_copied_folders_are_listed_escaped(services):
    (services.extensions.extensions_dir / "hand<img src=x>made").mkdir(parents=True)
    table = tab.installed_html(services)
    assert "hand&lt;img src=x&gt;made" in table and "<img" not in table
    assert "not a git repository" in table and ">unknown<" in table
