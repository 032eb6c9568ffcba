"""Console progress bars (tqdm on stderr): loading a checkpoint, hashing a big file, downloads and a job's "Total
progress". Bars are hidden when stderr is no terminal (pytest captures it), so each test forces them on with
WEBUI_CONSOLE_PROGRESS=1, or checks that they stay quiet without it."""
from __future__ import annotations

import hashlib
import json
import threading
from types import SimpleNamespace

import pytest
from safetensors import safe_open

from webui.console_progress import ENV_VAR, bars_disabled
from webui.console_progress import DownloadBars
from webui.core.request import GenerationRequest
from webui.jobs.console import TotalProgressBar
from webui.jobs.queue import JobQueue
from webui.models import hashing
from webui.models.architecture import CheckpointFormatError
from webui.models.devices import DevicePolicy
from webui.models.load_progress import SINGLE_FILE_STAGES
from webui.models.loader import load_checkpoint
from webui.models.networks.files import addnet_sha256


@pytest.fixture
def bars_on(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1")


def screen(text: str) -> str:
    """What a terminal ends up showing, line by line: each carriage return starts a redraw."""
    return text.replace("\r", "\n")


def test_bars_follow_the_terminal_unless_the_variable_says_otherwise(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert bars_disabled() is None  # tqdm: shown on a terminal only
    for value, disabled in (("1", False), ("on", False), ("0", True), ("false", True), ("", None)):
        monkeypatch.setenv(ENV_VAR, value)
        assert bars_disabled() is disabled


# --- loading a checkpoint -----------------------------------------------------------------------------------------
def test_loading_a_checkpoint_shows_a_bar_and_reports_each_stage(tiny_models, tmp_path, capfd, bars_on):
    path = tiny_models["sd1"]
    seen = []
    load_checkpoint(path, DevicePolicy.cpu(), tmp_path / "cache", path.with_suffix(".yaml"), on_progress=seen.append)
    err = screen(capfd.readouterr().err)
    assert f"Loading {path.name}:   0%" in err and f"Loading {path.name}: 100%" in err
    assert err.rstrip().endswith("done]")  # the stages between are drawn at most every 0.1 s

    fractions = [status.fraction for status in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert {status.name for status in seen} == {path.name} and seen[-1].stage == "done"
    stages = list(dict.fromkeys(status.stage for status in seen))
    assert stages == ["starting", "reading the file", "converting the tensors", "building the UNet",
                      "building the VAE", "building the text encoders", "loading the tokenizers",
                      "placing the weights", "done"]  # sd1 knows its prediction type: no v-prediction test
    with safe_open(str(path), "pt") as tensors:
        count = len(list(tensors.keys()))
    reading = [s for s in seen if s.stage == "reading the file"]
    assert len(reading) == count + 1  # the stage's start, then one report per tensor read
    read_share = SINGLE_FILE_STAGES[0][2] / sum(weight for _, _, weight in SINGLE_FILE_STAGES)
    assert reading[-1].fraction == pytest.approx(read_share)
    assert seen[-1].describe() == f"Loading {path.name} … 100% (done)"


def test_an_sd2_checkpoint_of_unknown_prediction_is_tested_in_its_own_stage(tiny_models, tmp_path,
                                                                                         capfd, bars_on):
    source = tiny_models["sd2-v"]
    bare = tmp_path / "no-prediction.safetensors"
    bare.write_bytes(source.read_bytes())
    config = source.with_suffix(".yaml").read_text()  # the tiny sizes, without `parameterization: v`
    assert "parameterization: v" in config
    bare.with_suffix(".yaml").write_text(config.replace("parameterization: v", ""))
    seen = []
    load_checkpoint(bare, DevicePolicy.cpu(), tmp_path / "cache", bare.with_suffix(".yaml"), on_progress=seen.append)
    assert "testing for v-prediction" in [status.stage for status in seen]
    assert f"Loading {bare.name}: 100%" in screen(capfd.readouterr().err)


def test_a_diffusers_folder_shows_its_components_loading(tiny_models, tmp_path, capfd, bars_on):
    seen = []
    load_checkpoint(tiny_models["diffusers"], DevicePolicy.cpu(), tmp_path / "cache", on_progress=seen.append)
    stages = list(dict.fromkeys(status.stage for status in seen))
    assert stages == ["starting", "reading the UNet", "reading the VAE", "reading the text encoders",
                      "loading the tokenizers", "placing the weights", "done"]
    assert f"Loading {tiny_models['diffusers'].name}: 100%" in screen(capfd.readouterr().err)


def test_a_broken_checkpoint_ends_its_bar_where_it_stopped(tmp_path, capfd, bars_on):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    seen = []
    with pytest.raises(CheckpointFormatError, match="broken.safetensors"):
        load_checkpoint(broken, DevicePolicy.cpu(), tmp_path / "cache", on_progress=seen.append)
    err = screen(capfd.readouterr().err)
    assert "Loading broken.safetensors:   0%" in err and "100%" not in err
    assert err.endswith("\n")  # the bar was closed: what is printed next starts on its own line
    assert seen[-1].stage == "reading the file" and seen[-1].fraction == 0.0


def test_a_failing_listener_never_breaks_the_load(tiny_models, tmp_path, caplog):
    path = tiny_models["sd1"]

    def broken(_status):
        raise RuntimeError("listener bug")

    model = load_checkpoint(path, DevicePolicy.cpu(), tmp_path / "cache", path.with_suffix(".yaml"),
                            on_progress=broken)
    assert model.family == "sd1" and "listener bug" in caplog.text


def test_without_a_terminal_loading_prints_no_bar(tiny_models, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = tiny_models["sd1"]
    load_checkpoint(path, DevicePolicy.cpu(), tmp_path / "cache", path.with_suffix(".yaml"))
    assert "Loading" not in capfd.readouterr().err


# --- hashing ------------------------------------------------------------------------------------------------------
def test_hashing_a_big_file_shows_a_byte_bar_and_small_files_stay_quiet(tmp_path, capfd, bars_on, monkeypatch):
    data = bytes(range(256)) * 4096 * 3  # 3 MiB
    path = tmp_path / "model.ckpt"
    path.write_bytes(data)
    assert hashing.sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert "Calculating sha256" not in capfd.readouterr().err  # below HASH_BAR_MIN_BYTES

    monkeypatch.setattr(hashing, "HASH_BAR_MIN_BYTES", 1 << 20)
    assert hashing.sha256_file(path) == hashlib.sha256(data).hexdigest()
    err = screen(capfd.readouterr().err)
    assert "Calculating sha256 for model.ckpt: 100%" in err and "3.00M/3.00M" in err


def test_a_lora_hash_counts_the_bytes_after_the_header(tmp_path, capfd, bars_on, monkeypatch):
    header = json.dumps({"w": {"dtype": "U8", "shape": [2 << 20], "data_offsets": [0, 2 << 20]}}).encode()
    payload = bytes(range(256)) * 8192  # 2 MiB
    path = tmp_path / "style.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + payload)
    monkeypatch.setattr(hashing, "HASH_BAR_MIN_BYTES", 1 << 20)
    assert addnet_sha256(path) == hashlib.sha256(payload).hexdigest()
    assert "Calculating sha256 for style.safetensors: 100%" in screen(capfd.readouterr().err)


# --- downloads ----------------------------------------------------------------------------------------------------
def test_download_bars_count_bytes_and_close(capfd, bars_on):
    bars = DownloadBars()
    for done in (0, 1 << 20, 2 << 20):
        bars("mlsd_large_512_fp32.pth", done, 2 << 20)
    bars("cut_short.pth", 0, 0)  # no Content-Length: a counting bar, closed by close()
    bars("cut_short.pth", 512 << 10, 0)
    bars.close()
    err = screen(capfd.readouterr().err)
    assert "Downloading mlsd_large_512_fp32.pth: 100%" in err and "2.00M/2.00M" in err
    assert "Downloading cut_short.pth: 512k" in err


# --- a job's Total progress ---------------------------------------------------------------------------------------
def test_total_progress_counts_every_pass_of_every_batch():
    bar = TotalProgressBar()
    shown = []
    for batch in range(2):  # batch count 2, 4 steps, each batch with a 2-step hires fix pass
        for step in range(5):
            bar.update(step, 4, batch * 2, 4)
            shown.append(bar.counts)
        for step in range(3):
            bar.update(step, 2, batch * 2 + 1, 4)
            shown.append(bar.counts)
    bar.close()
    done = [d for d, _ in shown]
    assert done == sorted(done) and shown[-1] == (12, 12)
    assert shown[1] == (1, 16)  # before the hires pass is seen, every pass is estimated at 4 steps
    assert shown[5] == (4, 10)  # the hires pass starts: its 2 steps, and the 2 passes left estimated at 2 each
    assert shown[8] == (6, 14)  # the next batch's first pass: its 4 steps and one more pass of 4 estimated


def run_steps_job(batches: int, steps: int, result):
    """A job through a real queue that reports `batches` x `steps` sampling steps, then returns `result`."""
    queue = JobQueue()

    def runner(job):
        for batch in range(batches):
            for step in range(steps):
                job.control.report(job_no=batch, job_count=batches, sampling_step=step + 1, sampling_steps=steps)
        return result

    queue.register("steps", runner)
    queue.start()
    try:
        return queue.run("steps", None, timeout=30)
    finally:
        queue.stop()


def test_a_job_prints_total_progress_through_the_queue(capfd, bars_on):
    job = run_steps_job(2, 4, "ok")
    assert job.result == "ok"
    err = screen(capfd.readouterr().err)
    assert "Total progress: 100%" in err and "8/8" in err
    assert err.endswith("\n")  # closed when the job finished


def test_a_real_generation_shows_total_progress(make_services, capfd, bars_on):
    services = make_services("sd1")
    request = GenerationRequest(prompt="a fox", sampler_name="Euler", steps=3, width=64, height=64, seed=5,
                                n_iter=2, save_images=False)
    job = services.generate(request)
    assert job.wait(120) and job.finished_ok, job.error
    err = screen(capfd.readouterr().err)
    assert "Total progress: 100%" in err and "6/6" in err


def test_an_interrupted_job_leaves_its_bar_where_it_stopped(capfd, bars_on):
    queue = JobQueue()
    reached = threading.Event()

    def runner(job):
        job.control.report(job_no=0, job_count=1, sampling_step=1, sampling_steps=10)
        reached.set()
        while not job.control.interrupted:
            job.control.report(sampling_step=1)
        return SimpleNamespace(interrupted=True)

    queue.register("steps", runner)
    queue.start()
    try:
        job = queue.submit("steps", None)
        assert reached.wait(30)
        queue.interrupt()
        assert job.wait(30)
    finally:
        queue.stop()
    err = screen(capfd.readouterr().err)
    assert "Total progress:  10%" in err and "1/10" in err and "100%" not in err


def test_a_console_that_cannot_be_written_loses_the_bar_not_the_job(monkeypatch, bars_on):
    import io
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr("sys.stderr", closed)
    job = run_steps_job(1, 3, "finished")
    assert job.finished_ok and job.result == "finished" and job.error is None
