"""Long operations in the UI show progress while they run and end in a notice: switching the checkpoint from the
quicksettings picker (waiting behind a job, then each stage of the load) and installing, updating and checking
extensions. Handlers are called directly with a recorder in place of Gradio's progress; one test serves a page
and reads the progress Gradio itself sends to the browser."""
from __future__ import annotations

import threading
import time

import gradio as gr
import pytest

from tests.extension_repos import add_commit, make_extension_repo
from tests.test_extensions_tab import SCRIPT, fake_services
from webui.models import loader
from webui.models.load_progress import SINGLE_FILE_STAGES
from webui.ui import checkpoints
from webui.ui import extensions_tab as tab


class Recorder:
    """Stands in for gr.Progress: remembers each (fraction, text); `when` runs an action once a text shows up."""

    def __init__(self):
        self.calls: list[tuple[float, str]] = []
        self._actions: list[tuple[str, threading.Event]] = []

    def when(self, text: str, event: threading.Event) -> None:
        self._actions.append((text, event))

    def __call__(self, fraction, desc=None, **_):
        self.calls.append((fraction, desc))
        for text, event in self._actions:
            if text in (desc or ""):
                event.set()

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.calls]


def stage_start(key: str) -> int:
    """Where a stage of a single-file load begins, in percent (from the stage table)."""
    total = sum(weight for _, _, weight in SINGLE_FILE_STAGES)
    before = 0
    for name, _, weight in SINGLE_FILE_STAGES:
        if name == key:
            return round(before * 100 / total)
        before += weight
    raise KeyError(key)


# --- the checkpoint picker ----------------------------------------------------------------------------------------
def test_switching_checkpoints_shows_the_queue_then_each_stage_of_the_load(make_services, monkeypatch, capsys):
    services = make_services("sd1", "sd2-v")
    titles = {c.name: c.title for c in services.models.checkpoints()}
    first, second = titles["tiny-sd1.safetensors"], titles["tiny-sd2-v.safetensors"]
    assert checkpoints.change_checkpoint(services, first).value == first
    monkeypatch.setattr(checkpoints, "POLL_SECONDS", 0.02)

    # a job holds the worker until the picker has shown that it waits; the load then holds in the conversion
    # stage until the picker has shown that stage, so every state is seen whatever the machine's speed
    queue_seen, convert_seen = threading.Event(), threading.Event()
    services.queue.register("hold", lambda job: queue_seen.wait(30))
    convert = loader.convert_ldm_unet_checkpoint

    def held_convert(*args, **kwargs):
        convert_seen.wait(30)
        return convert(*args, **kwargs)

    monkeypatch.setattr(loader, "convert_ldm_unet_checkpoint", held_convert)
    services.queue.submit("hold", None)
    progress = Recorder()
    progress.when("Waiting for 1 job to finish", queue_seen)
    progress.when("converting the tensors", convert_seen)
    capsys.readouterr()

    update = checkpoints.change_checkpoint(services, second, progress)
    assert update.value == second == services.models.current_title()
    assert queue_seen.is_set() and convert_seen.is_set()
    assert progress.texts[0] == f"Waiting for 1 job to finish before loading {second}"
    converting = f"Loading tiny-sd2-v.safetensors … {stage_start('convert')}% (converting the tensors)"
    assert converting in progress.texts
    fractions = [fraction for fraction, _ in progress.calls]
    assert fractions == sorted(fractions) and all(0.0 <= f <= 1.0 for f in fractions)
    assert services.models.loading is None  # nothing is loading any more
    assert f"Loaded checkpoint {second}" in capsys.readouterr().out  # the notice (gr.Info outside a page prints)


def test_a_failed_switch_is_a_notice_naming_the_file_and_the_previous_model_stays(make_services, capsys):
    services = make_services("sd1")
    first = services.models.checkpoints()[0].title
    assert checkpoints.change_checkpoint(services, first).value == first
    broken = services.paths.checkpoints / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    services.models.refresh()
    capsys.readouterr()
    progress = Recorder()
    with pytest.warns(UserWarning, match="broken.safetensors: corrupt or truncated safetensors file"):
        update = checkpoints.change_checkpoint(services, "broken.safetensors", progress)
    assert update.value == first == services.models.current_title()
    assert services.models.loading is None
    assert "Loaded" not in capsys.readouterr().out


# --- extensions ---------------------------------------------------------------------------------------------------
def test_installing_an_extension_shows_cloning_then_install_py(tmp_path):
    services = fake_services(tmp_path)
    repo = make_extension_repo(tmp_path / "sources", "greeter", {"install.py": "print('deps ok')\n", **SCRIPT})
    progress = Recorder()
    output, *_ = tab.install_from_url(services, str(repo), "", "", progress)
    assert output.startswith("deps ok")
    assert progress.texts == [f"Cloning {repo} into greeter …", "Running install.py of greeter …"]
    assert [fraction for fraction, _ in progress.calls] == [0.05, 0.5]


def test_a_failing_install_py_is_a_notice_after_its_progress(tmp_path):
    services = fake_services(tmp_path)
    repo = make_extension_repo(tmp_path / "sources", "failing", {"install.py": "raise SystemExit(3)\n"})
    progress = Recorder()
    with pytest.warns(UserWarning, match="install.py of failing failed \\(exit code 3\\)"):
        tab.install_from_url(services, str(repo), "", "", progress)
    assert progress.texts == [f"Cloning {repo} into failing …", "Running install.py of failing …"]


def test_an_extension_without_install_py_only_clones(tmp_path):
    services = fake_services(tmp_path)
    repo = make_extension_repo(tmp_path / "sources", "plain", SCRIPT)
    progress = Recorder()
    tab.install_from_url(services, str(repo), "main", "", progress)
    assert progress.texts == [f"Cloning {repo} (branch main) into plain …"]


def test_checking_and_updating_show_each_step(tmp_path, capsys):
    services = fake_services(tmp_path)
    sources = tmp_path / "sources"
    for name in ("alpha", "beta"):
        services.extensions.install(str(make_extension_repo(sources, name, SCRIPT)))
    add_commit(sources / "beta", {"scripts/more.py": "MORE = 1\n"})
    add_commit(sources / "beta", {"scripts/most.py": "MOST = 1\n"})

    progress = Recorder()
    assert "behind HEAD (update available)" in tab.check_for_updates(services, progress)
    assert progress.calls == [(0.0, "Checking alpha for updates (1 of 2) …"),
                              (0.5, "Checking beta for updates (2 of 2) …")]

    progress = Recorder()
    tab.update_extension(services, "beta", progress)
    assert progress.texts == ["Fetching beta …", "Updating beta: 2 new commits …"]
    assert "beta updated:" in capsys.readouterr().out

    progress = Recorder()
    with pytest.warns(UserWarning, match="'gamma' is not an installed extension"):
        tab.update_extension(services, "gamma", progress)
    assert progress.calls == []


# --- in a served page: Gradio sends the handler's progress to the browser -----------------------------------------
def test_a_served_install_sends_its_progress_to_the_page(tmp_path):
    from gradio_client import Client

    services = fake_services(tmp_path)
    slow = "import time\nprint('building')\ntime.sleep(1.5)\n"
    repo = make_extension_repo(tmp_path / "sources", "slow", {"install.py": slow, **SCRIPT})
    with gr.Blocks() as demo:  # wired as the tab wires it: a lambda, no gr.Progress parameter
        url = gr.Textbox(str(repo))
        result = gr.Textbox()
        button = gr.Button("Install")
        button.click(lambda value: tab.install_from_url(services, value, "", "")[0], inputs=[url],
                     outputs=[result], show_progress="full", api_name="install")
    demo.queue()
    _, local_url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(local_url, verbose=False)
        try:
            job = client.submit(str(repo), api_name="/install")
            seen = set()
            deadline = time.monotonic() + 60
            while not job.done() and time.monotonic() < deadline:
                status = job.status()
                for unit in status.progress_data or []:
                    seen.add(unit.desc)
                time.sleep(0.05)
            output = job.result(timeout=60)
        finally:
            client.close()
    finally:
        demo.close()
    assert output.startswith("building")
    assert "Running install.py of slow …" in seen


def test_checkpoint_picker_shows_the_full_progress_in_the_page(tmp_path):
    """Gradio shows a progress bar and its description only with show_progress="full" ("minimal" is a timer)."""
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    from webui.ui.blocks import build_ui

    services = build_services(parse_flags(["--data-dir", str(tmp_path)]))
    try:
        blocks = build_ui(services)
        ids = {c.get("props", {}).get("elem_id"): c["id"] for c in blocks.config["components"]}
        loads = [d for d in blocks.config["dependencies"]  # the picker's own choice, and a checkpoint card's
                 if (ids["setting_sd_model_checkpoint"], "select") in map(tuple, d["targets"])
                 or (ids["change_checkpoint"], "click") in map(tuple, d["targets"])]
        assert len(loads) == 2 and all(d["show_progress"] == "full" for d in loads)
    finally:
        services.stop()
