"""A1111's page JavaScript API in the real page (webui/ui/a1111_page_api.py, webui/extensions/file_route.py), driven
by fixture extensions that use it exactly as two real ones do:

- `tacfix` as DominikDoom's tagcomplete: its Python writes its tags folder's path into the program's `tmp/` folder
  and adds options (`on_ui_settings`); its page script, from `onUiUpdate` once `opts` is filled, reads that note
  through `file=tmp/<note>`, then the tag list through `file=<tags folder>/<opts.tacfix_tagFile>`, finds the prompt
  box with Gradio 3's `#txt2img_prompt > label > textarea`, lists completions as the user types and puts the chosen
  one in with `updateInput`. It also records `onUiLoaded`, `onUiTabChange`, `onOptionsChanged`, `onAfterUiUpdate`
  and its DOMContentLoaded / load listeners; its style.css colours the prompt's caret.
- `arfix` as alemelis' sd-webui-ar: `ToolButton` subclasses (`__init__(self, ar, **kwargs)`) in
  `#txt2img_container_aspect_ratio` whose clicks set the width / height sliders it found with `after_component`, and
  a page script (`onUiUpdate`) that gives them tooltips by their `textContent`. A "read back" button shows what the
  server receives from prompt, width and height.
"""
from __future__ import annotations

import shutil
import textwrap
import uuid

import httpx
import pytest

from browser import browser, new_page, wait_for_ui  # noqa: F401 - fixtures
from conftest import install_model
from live_server import serve
from webui.extensions.file_route import program_dir

expect = pytest.importorskip("playwright.sync_api").expect

NOTE = f"tacfixPath-{uuid.uuid4().hex[:8]}.txt"
TAGS = "1girl,0,6000000\n1boy,0,1500000\nsolo,0,5000000\n"

TACFIX = {
    "scripts/tacfix.py": f'''
from pathlib import Path

from modules import script_callbacks, scripts, shared
from modules.paths import script_path

tags_folder = Path(scripts.basedir()).absolute() / "tags"  # the extension's own folder, as A1111 gives it
notes = Path(script_path).absolute() / "tmp"  # A1111's tmp/ in its program folder
notes.mkdir(exist_ok=True)
(notes / "{NOTE}").write_text(tags_folder.as_posix(), encoding="utf-8")


def on_ui_settings():
    section = ("tacfix", "Tag fixture")
    shared.opts.add_option("tacfix_tagFile", shared.OptionInfo("tags.csv", "Tag file", section=section))
    shared.opts.add_option("tacfix_maxResults", shared.OptionInfo(5, "Maximum results", section=section))


script_callbacks.on_ui_settings(on_ui_settings)
''',
    "tags/tags.csv": TAGS,
    "style.css": "#txt2img_prompt textarea { caret-color: rgb(1, 2, 3); }\n",
    "javascript/tacfix.js": '''
var TACFIX = {loaded: 0, tabChanges: [], optionsChanged: 0, afterUpdates: 0, domReady: false, windowLoaded: false,
              optsAtLoad: null, maxResults: null, tags: []};
var tacfixLoading = false;
var tacfixCfg = null;
document.addEventListener("DOMContentLoaded", () => { TACFIX.domReady = true; });
window.addEventListener("load", () => { TACFIX.windowLoaded = true; });
onUiLoaded(() => { TACFIX.loaded += 1; TACFIX.optsAtLoad = opts["tacfix_tagFile"]; });
onUiTabChange(() => { TACFIX.tabChanges.push(get_uiCurrentTab().textContent.trim()); });
onOptionsChanged(() => { TACFIX.optionsChanged += 1; TACFIX.maxResults = opts.tacfix_maxResults; });
onAfterUiUpdate(() => { TACFIX.afterUpdates += 1; });

async function tacfixRead(filePath) {
    let response = await fetch(`file=${filePath}?${new Date().getTime()}`);
    return response.status == 200 ? await response.text() : null;
}

onUiUpdate(async () => {
    if (tacfixLoading || tacfixCfg || Object.keys(opts).length === 0) return;
    tacfixLoading = true;
    const base = await tacfixRead(`tmp/NOTE`);
    tacfixCfg = {tagFile: opts["tacfix_tagFile"]};
    const lines = (await tacfixRead(`${base}/${tacfixCfg.tagFile}`)).split("\\n");
    TACFIX.tags = lines.filter(Boolean).map(l => l.split(","));
    const area = gradioApp().querySelector("#txt2img_prompt > label > textarea");
    const list = document.createElement("ul");
    list.className = "tacfix-results";
    area.parentNode.insertBefore(list, area.nextSibling);
    const lastWord = () => area.value.split(/[ ,]+/).pop();
    area.addEventListener("input", (e) => {
        if (!e.inputType) return;  // updateInput's own event
        const word = lastWord();
        list.replaceChildren(...TACFIX.tags.filter(t => word && t[0].startsWith(word)).slice(0, opts.tacfix_maxResults)
            .map(t => Object.assign(document.createElement("li"), {textContent: t[0]})));
    });
    area.addEventListener("keydown", (e) => {
        if (e.key !== "Tab" || !list.firstChild) return;
        e.preventDefault();
        area.value = area.value.slice(0, area.value.length - lastWord().length) + list.firstChild.textContent + ", ";
        list.replaceChildren();
        updateInput(area);
    });
    tacfixLoading = false;
});
'''.replace("NOTE", NOTE),
}

ARFIX = {
    "scripts/arfix.py": '''
import gradio as gr

import modules.scripts as scripts
from modules.ui_components import ToolButton


class ARButton(ToolButton):
    def __init__(self, ar=1.0, **kwargs):
        super().__init__(**kwargs)
        self.ar = ar

    def apply(self, w, h):  # the height stays, the width follows the ratio (wide ratios)
        return [round(h * self.ar), h] if self.ar >= 1 else [w, round(w / self.ar)]


class AspectRatioFixture(scripts.Script):
    def title(self):
        return "Aspect Ratio fixture"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        mode = "img" if is_img2img else "txt"
        with gr.Column(elem_id=f"{mode}2img_container_aspect_ratio"):
            with gr.Row(elem_id=f"{mode}2img_row_aspect_ratio"):
                buttons = [ARButton(ar=ar, value=label) for ar, label in ((1.0, "1:1"), (16 / 9, "16:9"))]
                resolution = [self.i2i_w, self.i2i_h] if is_img2img else [self.t2i_w, self.t2i_h]
                for b in buttons:
                    b.click(b.apply, inputs=resolution, outputs=resolution)
            if not is_img2img:
                read = gr.Button("read back", elem_id="arfix_read")
                seen = gr.Textbox(label="seen by the server", elem_id="arfix_seen")
                read.click(lambda p, w, h: f"{p}|{w}x{h}", inputs=[self.t2i_prompt, *resolution], outputs=[seen])
        return []

    def after_component(self, component, **kwargs):
        elem_id = kwargs.get("elem_id")
        if elem_id == "txt2img_width":
            self.t2i_w = component
        if elem_id == "txt2img_height":
            self.t2i_h = component
        if elem_id == "img2img_width":
            self.i2i_w = component
        if elem_id == "img2img_height":
            self.i2i_h = component
        if elem_id == "txt2img_prompt":
            self.t2i_prompt = component
''',
    "javascript/button_titles.js": '''
var arfixTips = {"16:9": "Set width based on 16:9 ratio to height"};
onUiUpdate(() => {
    for (const button of gradioApp().querySelectorAll("#txt2img_container_aspect_ratio button")) {
        if (arfixTips[button.textContent]) button.title = arfixTips[button.textContent];  // by its label, as Gradio 3
    }
});
''',
}


def _write(folder, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("page-api")
    install_model(data, tiny_models["sd1"], "tiny-sd1.safetensors")
    _write(data / "extensions" / "tacfix", TACFIX)
    _write(data / "extensions" / "arfix", ARFIX)
    (data / "config.json").write_text('{"quicksettings_list": ["sd_model_checkpoint", "tacfix_maxResults"]}',
                                      encoding="utf-8")
    try:
        with serve(data, "--skip-install") as live:
            yield live
    finally:
        note = program_dir() / "tmp" / NOTE  # where the fixture's Python wrote it (A1111's script_path/tmp)
        note.unlink(missing_ok=True)
        if note.parent.is_dir() and not any(note.parent.iterdir()):
            note.parent.rmdir()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def page(server, browser):  # noqa: F811 - the browser fixture
    """One page for the module's tests (they follow each other: load, type, switch tabs, change a setting)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.goto(server.url)
    wait_for_ui(page)
    page.problems = problems
    yield page
    context.close()


def test_scripts_load_with_opts_and_their_listeners_run(page):
    page.wait_for_function("TACFIX.loaded === 1 && TACFIX.domReady && TACFIX.windowLoaded")
    assert page.evaluate("TACFIX.optsAtLoad") == "tags.csv"  # opts were there before onUiLoaded
    assert page.evaluate("TACFIX.tabChanges") == ["txt2img"]
    page.wait_for_function("TACFIX.afterUpdates > 0")
    assert page.evaluate("getComputedStyle(document.querySelector('#txt2img_prompt textarea')).caretColor") \
        == "rgb(1, 2, 3)"  # the extension's style.css
    # the tag list came through /file= from the tags folder named in the tmp/ note
    page.wait_for_function("TACFIX.tags.length === 3")
    assert page.evaluate("TACFIX.tags.map(t => t[0])") == [line.split(",")[0] for line in TAGS.splitlines()]


def test_completion_in_the_prompt_box_reaches_the_server(page):
    page.wait_for_function("document.querySelector('.tacfix-results') !== null")
    box = page.locator("#txt2img_prompt textarea")
    box.click()
    box.press_sequentially("solo 1g", delay=30)
    expect(page.locator(".tacfix-results li")).to_have_text(["1girl"])
    box.press("Tab")
    expect(box).to_have_value("solo 1girl, ")
    page.locator("#arfix_read").click()
    expect(page.locator("#arfix_seen textarea")).to_have_value("solo 1girl, |512x512")


def test_aspect_ratio_buttons_set_the_sliders(page):
    button = page.locator("#txt2img_container_aspect_ratio button", has_text="16:9")
    expect(button).to_have_attribute("title", "Set width based on 16:9 ratio to height")
    button.click()
    expect(page.locator("#txt2img_width input[type=number]")).to_have_value(str(round(16 / 9 * 512)))
    expect(page.locator("#txt2img_height input[type=number]")).to_have_value("512")
    # a value set from JS with updateInput reaches the server too
    page.evaluate("() => { const i = document.querySelector('#txt2img_height input[type=number]');"
                  " i.value = 640; updateInput(i); }")
    expect(page.locator("#txt2img_height input[type=range]")).to_have_value("640")
    page.locator("#arfix_read").click()
    expect(page.locator("#arfix_seen textarea")).to_have_value(f"solo 1girl, |{round(16 / 9 * 512)}x640")


def test_tab_changes_and_img2img_elements_are_there(page):
    assert page.evaluate("!!gradioApp().querySelector('#img2img_prompt > label > textarea')")  # drawn up front
    page.locator("#tab_img2img-button").click()
    page.wait_for_function("TACFIX.tabChanges.length === 2")
    assert page.evaluate("TACFIX.tabChanges") == ["txt2img", "img2img"]
    assert page.evaluate("get_uiCurrentTabContent().id") == "tab_img2img"
    page.locator("#tab_txt2img-button").click()
    page.wait_for_function("TACFIX.tabChanges.length === 3")
    # A1111's container of the scripts' controls, where tagcomplete looks for third-party prompt boxes
    assert page.evaluate("!!gradioApp().querySelector('#txt2img_script_container #txt2img_container_aspect_ratio')")


def test_a_quicksetting_change_updates_opts(page, server):
    before = page.evaluate("TACFIX.optionsChanged")
    field = page.locator("#setting_tacfix_maxResults input")
    field.fill("2")
    field.press("Enter")
    page.wait_for_function("TACFIX.maxResults === 2")
    assert page.evaluate("TACFIX.optionsChanged") > before
    assert page.evaluate("opts.tacfix_maxResults") == server.services.options.get("tacfix_maxResults") == 2


def test_settings_apply_updates_opts(page, server):
    before = page.evaluate("TACFIX.optionsChanged")
    page.locator("#tab_settings-button").click()
    page.locator("#settings_tacfix").get_by_text("Tag fixture").first.click()  # A1111's settings_<section> id
    page.locator("#setting_tacfix_tagFile textarea").fill("other.csv")
    page.locator("#settings_submit").click()
    expect(page.locator("#settings_result textarea")).to_have_value("1 setting changed: tacfix_tagFile.")
    page.wait_for_function("opts.tacfix_tagFile === 'other.csv'")
    assert page.evaluate("TACFIX.optionsChanged") > before
    assert server.services.options.get("tacfix_tagFile") == "other.csv"
    page.locator("#tab_txt2img-button").click()


def test_file_route_in_the_app(page, server):
    assert page.problems == []  # no script failed so far (the refusal below logs its 403)
    config = (server.data_dir / "config.json").as_posix()
    assert page.evaluate(f"fetch('file={config}').then(r => r.status)") == 403
    tags = server.data_dir / "extensions" / "tacfix" / "tags" / "tags.csv"
    assert httpx.get(f"{server.url}/file={tags.as_posix()}").text == TAGS
    assert httpx.get(f"{server.url}/file={server.data_dir.as_posix()}/extensions/tacfix/../../config.json")\
        .status_code == 403
