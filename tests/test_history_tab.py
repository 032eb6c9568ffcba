"""The History tab against real services with the tiny model: the live queue, the table of past jobs (states,
prompts, newest first, paging, kind filter), a selected job's images / infotexts / error, Re-run, Send to
txt2img / img2img (also through the Blocks' own wiring) and cancelling a queued job."""
from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from tests.conftest import pixels
from webui.core.request import GenerationRequest
from webui.outputs.save import read_infotext
from webui.ui import history_tab, pnginfo
from webui.ui.blocks import build_ui


def request(prompt: str, seed: int = 11, **fields) -> GenerationRequest:
    values = dict(prompt=prompt, negative_prompt="blurry", steps=2, width=64, height=64, sampler_name="Euler",
                  seed=seed, save_images=True)
    values.update(fields)
    return GenerationRequest(**values)


def run(services, prompt: str, seed: int = 11, **fields):
    job = services.generate(request(prompt, seed, **fields), source="ui")
    assert job.wait(60), "the job did not finish"
    return job


def rows(table) -> list[dict]:
    return table.to_dict("records")


@pytest.fixture
def services(make_services):
    return make_services("sd1")


# --- the table ----------------------------------------------------------------------------------------------------
def test_table_lists_jobs_newest_first_with_their_details_and_pages(services):
    fox = run(services, "a red fox", seed=21)
    bird = run(services, "a blue bird " * 10, seed=22)
    failed = run(services, "a cat", checkpoint="nope")
    assert (fox.state, bird.state, failed.state) == ("done", "done", "failed")
    services.load_checkpoint(services.models.checkpoints()[0].title, source="api").wait(30)

    state, table, label = history_tab.history_table(services, None)
    listed = rows(table)
    assert label == "Page 1 of 1 · 3 generations"
    assert [row["State"] for row in listed] == ["failed", "done", "done"]  # newest first, generations only
    assert listed[0]["Prompt"] == "a cat" and listed[2]["Prompt"] == "a red fox"
    assert listed[1]["Prompt"].startswith("a blue bird a blue bird") and listed[1]["Prompt"].endswith("…")
    assert len(listed[1]["Prompt"]) == 60
    fox_row = listed[2]
    assert (fox_row["Source"], fox_row["Mode"], fox_row["Size"], fox_row["Steps"], fox_row["Seed"],
            fox_row["Images"], fox_row["Error"]) == ("ui", "txt2img", "64x64", "2", "21", 1, "")
    assert listed[0]["Images"] == 0 and "Unknown checkpoint 'nope'" in listed[0]["Error"]
    assert state["seqs"] == [row["#"] for row in listed] == [failed.seq, bird.seq, fox.seq]

    state, table, label = history_tab.change_kind(services, state, "All")  # other kinds too
    listed = rows(table)
    assert label == "Page 1 of 1 · 4 jobs"
    assert (listed[0]["Mode"], listed[0]["Source"], listed[0]["State"]) == ("load_checkpoint", "api", "done")
    assert listed[0]["Prompt"] == services.models.checkpoints()[0].title

    for number in range(20):  # failed generations are instant: enough of them for a second page
        run(services, f"prompt {number}", checkpoint="nope")
    state, table, label = history_tab.change_kind(services, state, "Generations")
    assert label == "Page 1 of 2 · 23 generations" and len(table) == 20
    assert rows(table)[0]["Prompt"] == "prompt 19"
    state, table, label = history_tab.change_page(services, state, +1)
    assert label == "Page 2 of 2 · 23 generations"
    assert [row["Prompt"] for row in rows(table)] == ["a cat", rows(table)[1]["Prompt"], "a red fox"]
    assert state["seqs"] == [failed.seq, bird.seq, fox.seq]
    state, table, label = history_tab.change_page(services, state, +1)  # past the end: stays on the last page
    assert state["page"] == 1 and len(table) == 3
    state, table, label = history_tab.change_page(services, state, -1)
    state, table, label = history_tab.change_page(services, state, -1)
    assert state["page"] == 0 and label.startswith("Page 1 of 2")


# --- a selected job -----------------------------------------------------------------------------------------------
def test_selecting_a_job_shows_its_images_and_infotexts_and_missing_files(services):
    job = run(services, "a lighthouse", seed=40, batch_size=2)
    paths = [Path(p) for p in job.outputs]
    assert len(paths) == 2 and all(p.is_file() for p in paths)

    state, _, _ = history_tab.history_table(services, None)
    state, gallery, infotext, details = history_tab.select_job(services, state, state["seqs"][0])
    assert len(gallery) == 2
    for shown, path in zip(gallery, paths):
        assert np.array_equal(pixels(shown), pixels(Image.open(path)))
        assert shown.info["parameters"] == read_infotext(Image.open(path))
    assert "a lighthouse" in infotext and "Seed: 40" in infotext
    assert job.id in details and "done" in details and "Error" not in details
    state, infotext = history_tab.select_image(state, 1)
    assert "Seed: 41" in infotext and history_tab.selected_infotext(state).endswith(
        read_infotext(Image.open(paths[1])).split("\n")[-1])

    paths[0].unlink()  # moved away since: listed as missing, the other still shown
    state, gallery, infotext, details = history_tab.select_job(services, state, job.seq)
    assert len(gallery) == 1 and np.array_equal(pixels(gallery[0]), pixels(Image.open(paths[1])))
    assert "Missing" in details and str(paths[0]) in details
    assert "Seed: 41" in infotext


def test_a_failed_job_shows_its_error(services):
    job = run(services, "a cat", checkpoint="nope")
    state, gallery, infotext, details = history_tab.select_job(services, None, job.seq)
    assert gallery == [] and infotext == ""
    assert "failed" in details and "Error: Unknown checkpoint &#x27;nope&#x27;" in details
    assert state["seq"] == job.seq
    with pytest.warns(UserWarning, match="no generation parameters"):
        assert history_tab.send_to(services, "txt2img", state, "Euler", "Automatic") is None
    with pytest.warns(UserWarning, match="Select a job"):
        history_tab.rerun(services, history_tab.new_state())


def test_rerun_queues_the_job_again_with_the_same_seed_and_pixels(services, capsys):
    original = run(services, "a castle", seed=-1)  # a random seed: the re-run uses the one it got
    seed = original.result.seeds[0]
    state, _, _ = history_tab.history_table(services, None)
    state, _, _, _ = history_tab.select_job(services, state, original.seq)

    state, _, _, table, _ = history_tab.rerun(services, state)
    assert "Queued again as" in capsys.readouterr().out
    newest = rows(table)[0]  # the table is refreshed with it
    assert newest["#"] > original.seq and newest["Prompt"] == "a castle" and newest["Source"] == "ui"
    again = services.queue.get(services.queue.store.get_seq(newest["#"]).id)
    assert again is not None and again.id != original.id and again.source == "ui"
    assert again.wait(60) and again.state == "done"
    assert again.result.seeds == [seed]
    # the same request, batch size and process (the queue's one worker): bit-identical
    assert np.array_equal(pixels(again.result.images[0]), pixels(Image.open(original.outputs[0])))
    assert np.array_equal(pixels(Image.open(again.outputs[0])), pixels(Image.open(original.outputs[0])))
    listed = rows(history_tab.history_table(services, state)[1])
    assert [row["Seed"] for row in listed] == [str(seed), str(seed)] and listed[0]["#"] == again.seq


# --- sending ------------------------------------------------------------------------------------------------------
def test_send_to_txt2img_and_img2img_fill_the_tabs_from_the_selected_image(services):
    job = run(services, "a windmill", seed=77, batch_size=2, cfg_scale=5.0)
    state, _, _, _ = history_tab.select_job(services, None, job.seq)
    state, _ = history_tab.select_image(state, 1)

    values = history_tab.send_to(services, "txt2img", state, "DPM++ 2M", "Automatic")
    sent = dict(zip(pnginfo.FIELDS, values))
    assert (sent["prompt"], sent["negative_prompt"], sent["steps"], sent["sampler"], sent["cfg_scale"],
            sent["seed"], sent["width"], sent["height"]) == ("a windmill", "blurry", 2, "Euler", 5.0, 78, 64, 64)
    assert values[-1].selected == "txt2img"

    values = history_tab.send_to(services, "img2img", state, "DPM++ 2M", "Automatic")
    assert dict(zip(pnginfo.FIELDS, values))["seed"] == 78
    picture = values[len(pnginfo.FIELDS)]  # then img2img's image input
    assert np.array_equal(pixels(picture), pixels(Image.open(job.outputs[1])))
    assert values[-1].selected == "img2img"


def test_the_blocks_have_the_history_tab_after_png_info_and_send_through_their_wiring(services):
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    expected = {"tab_history", "history_queue", "history_cancel_job", "history_cancel", "history_refresh",
                "history_kind", "history_prev", "history_page", "history_next", "history_table", "history_gallery",
                "history_details", "html_info_history", "history_rerun", "history_send_txt2img",
                "history_send_img2img"}
    assert expected <= set(by_id), expected - set(by_id)
    assert by_id["history_table"].interactive is False
    top_tabs = [b for b in sorted(blocks.blocks.values(), key=lambda b: b._id)
                if isinstance(b, gr.Tab) and getattr(b.parent, "elem_id", None) == "tabs"]
    labels = [tab.label for tab in top_tabs]
    # A1111's tabs in its order (PNG Info, then Checkpoint Merger), then ours
    assert labels.index("History") == labels.index("Checkpoint Merger") + 1 == labels.index("PNG Info") + 2

    job = run(services, "a harbour", seed=5)
    state, _, _, _ = history_tab.select_job(services, None, job.seq)
    button = by_id["history_send_txt2img"]
    send = next(fn for fn in blocks.fns.values() if any(t[0] == button._id for t in fn.targets)
                and by_id["txt2img_prompt"] in fn.outputs)
    values = send.fn(state, "DPM++ 2M", "Automatic")
    assert len(values) == len(send.outputs)
    filled = {component.elem_id: value for component, value in zip(send.outputs, values)}
    assert (filled["txt2img_prompt"], filled["txt2img_seed"], filled["txt2img_steps"], filled["txt2img_width"],
            filled["txt2img_sampling"]) == ("a harbour", 5, 2, 64, "Euler")
    with pytest.warns(UserWarning, match="Select a job"):  # nothing selected: nothing changes
        assert all(value == gr.skip() for value in send.fn(history_tab.new_state(), "Euler", "Automatic"))

    table = by_id["history_table"]  # a click on a row selects that job (its "#" cell names it)
    select = next(fn for fn in blocks.fns.values() if (table._id, "select") in map(tuple, fn.targets))
    state, _, _ = history_tab.history_table(services, None)
    row = history_tab.table_row(services.queue.store.get_seq(job.seq))
    state, gallery, infotext, _ = select.fn(state, gr.SelectData(table, {"index": [0, 5], "value": row[5],
                                                                         "row_value": row}))
    assert state["seq"] == job.seq and len(gallery) == 1 and "a harbour" in infotext

    # the page presses tab_shown_history once the tab is shown: the lists are read and the refresh timer starts;
    # tab_left_history once another tab replaced it: the timer stops
    shown, left = by_id["tab_shown_history"], by_id["tab_left_history"]
    opened = next(fn for fn in blocks.fns.values() if (shown._id, "click") in map(tuple, fn.targets))
    *refreshed, timer = opened.fn(history_tab.new_state(), None)
    assert timer.active is True and refreshed[0]["seqs"][0] == job.seq
    closed = next(fn for fn in blocks.fns.values() if (left._id, "click") in map(tuple, fn.targets))
    assert [type(output) for output in closed.outputs] == [gr.Timer] and closed.fn().active is False


# --- the live queue -----------------------------------------------------------------------------------------------
def test_the_queue_panel_lists_jobs_and_a_queued_one_can_be_cancelled(services):
    gate, holding = threading.Event(), threading.Event()

    def hold(job):  # keeps the worker busy, as a long generation would
        holding.set()
        gate.wait(30)
        return "held"

    services.queue.register("hold", hold)
    blocker = services.queue.submit("hold", "a long job", source="api")
    try:
        assert holding.wait(10)
        first = services.generate(request("a first fox", 1), source="ui")
        second = services.generate(request("a second fox", 2), source="ui")
        state, panel, dropdown, table, _ = history_tab.refresh(services, None)
        assert f"Running {blocker.id}" in panel and "a long job" in panel
        assert f"1. {first.id}" in panel and f"2. {second.id}" in panel and "a second fox" in panel
        assert [value for _, value in dropdown.choices] == [first.id, second.id]
        assert [row["State"] for row in rows(table)] == ["queued", "queued"]
        assert history_tab.tick(services, state)[2:] == (gr.skip(),) * 3  # nothing changed: no table sent

        state, panel, dropdown, table, _ = history_tab.cancel_job(services, second.id, state)
        assert second.state == "cancelled" and first.state == "queued"
        assert [value for _, value in dropdown.choices] == [first.id] and second.id not in panel
        assert [row["State"] for row in rows(table)] == ["cancelled", "queued"]
        with pytest.warns(UserWarning, match="already finished"):
            history_tab.cancel_job(services, second.id, state)
    finally:
        gate.set()
    assert first.wait(60) and first.state == "done"
    blocker.wait(10)
    state, panel, dropdown, table, _ = history_tab.tick(services, state)  # the queue moved: the table follows
    assert "Nothing is running" in panel and dropdown.choices == []
    listed = rows(table)
    assert [(row["Prompt"], row["State"]) for row in listed] == [("a second fox", "cancelled"),
                                                                  ("a first fox", "done")]
    assert listed[0]["Error"] == "cancelled before it started"
