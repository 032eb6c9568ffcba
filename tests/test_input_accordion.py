"""Enable checkboxes in the accordions' headers (Hires. fix, Refiner, Outpainting, extensions' sections) and the
"Restored last used values" note: what the page's load event restores and names, and what Undo puts back."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from tests.conftest import install_model
from tests.extension_repos import make_extension_repo
from tests.extension_sources import OWN_API, WILDCARDS
from webui.extensions.host import parse_flags_with_extensions
from webui.services import build_services
from webui.ui import input_accordion, ui_config
from webui.ui.blocks import build_ui

HIRES = "txt2img/Enable: generate small, upscale, then refine at the larger size"
OUTPAINT = "img2img/Enable: extend the canvas and inpaint the new area"
SKIP = gr.skip()


def by_id(blocks) -> dict:
    return {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}


def event(blocks, target, name: str, output=None):
    """The function of `target`'s `name` event (the one that sets `output`, when given)."""
    return next(fn for fn in blocks.fns.values() if (target._id, name) in map(tuple, fn.targets)
                and (output is None or output in fn.outputs))


def page_load(blocks, note_row):
    """The page's load event: no inputs, sets the notes and the checkpoint picker (Undo and ✕ set only a tab's)."""
    picker = by_id(blocks)["setting_sd_model_checkpoint"]
    return next(fn for fn in blocks.fns.values() if note_row in fn.outputs and picker in fn.outputs
                and not fn.inputs)


def loaded(blocks, ids, user=None) -> dict:
    """What the page's load event sets, by elem_id (the notes' state by `{tab}_restored_keys`)."""
    load = page_load(blocks, ids["txt2img_restored_note"])
    values = load.fn(SimpleNamespace(username=user))
    assert len(values) == len(load.outputs)
    return {_name(component): value for component, value in zip(load.outputs, values)}


def _name(component) -> str:
    if isinstance(component, gr.State):
        return f"state-{component._id}"
    return component.elem_id or f"id-{component._id}"


def prop(update, name: str):
    """A property an update sets (Gradio gives updates as the component, or as a dict)."""
    return update[name] if isinstance(update, dict) else getattr(update, name)


def header_link(checkbox) -> str | None:
    """The accordion elem_id a header checkbox names (its `input-accordion-for-` class)."""
    return next((name[len(input_accordion.FOR_PREFIX):] for name in input_accordion.classes_of(checkbox)
                 if name.startswith(input_accordion.FOR_PREFIX)), None)


def outside_before(checkbox, accordion) -> bool:
    """The checkbox is rendered while the accordion is closed: in a holder row just before it, not inside it."""
    holder = checkbox.parent
    while holder is not None and input_accordion.HOLDER_CLASS not in (holder.elem_classes or []):
        holder = holder.parent  # Gradio may wrap the checkbox in a Form
    parent = accordion.parent
    return (holder is not None and holder.parent is parent
            and parent.children.index(holder) == parent.children.index(accordion) - 1)


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_models):
    """The UI over a data dir with an A1111 extension (an accordion with an "Enable wildcards" checkbox, on by
    default) and one of our API (a section whose first control is "Shout", off by default)."""
    root = tmp_path_factory.mktemp("input-accordion")
    data = root / "data"
    install_model(data, tiny_models["sd1"])
    flags, host = parse_flags_with_extensions(["--data-dir", str(data), "--skip-install"])
    installer = build_services(flags, host)
    for name, files in (("sd-test-wildcards", WILDCARDS), ("shout", OWN_API)):
        installer.extensions.install(str(make_extension_repo(root / "repos", name, files)))
    installer.stop()
    flags, host = parse_flags_with_extensions(["--data-dir", str(data)])
    services = build_services(flags, host)
    blocks = build_ui(services)
    yield SimpleNamespace(services=services, blocks=blocks, ids=by_id(blocks),
                          store=ui_config.LastUsed(services.paths.data_dir))
    services.stop()
    from webui.extensions.a1111.runtime import RUNTIME
    RUNTIME.bind(None, None)


@pytest.fixture
def store(page):
    """The last used values file, emptied before each test."""
    page.store.path().unlink(missing_ok=True)
    page.services.options.update({"ui_remember_last_used": True}, save=False)
    return page.store


def test_enable_checkboxes_sit_in_their_accordions_headers(page):
    ids = page.ids
    expected = {  # checkbox -> (accordion, feature named in the note)
        "txt2img_enable_hr": ("txt2img_hr", "Hires. fix"),
        "script_txt2img_refiner_enable-checkbox": ("script_txt2img_refiner_enable", "Refiner"),
        "script_img2img_refiner_enable-checkbox": ("script_img2img_refiner_enable", "Refiner"),
        "img2img_outpaint_enable": ("img2img_outpaint", "Outpainting"),
        "txt2img_shout_enabled": (None, "Shout"),  # our API's section: its first control, a checkbox
        "script_txt2img_test_wildcards_enabled": (None, "Test wildcards"),  # an A1111 script's own accordion
    }
    for checkbox_id, (accordion_id, feature) in expected.items():
        checkbox = ids[checkbox_id]
        assert isinstance(checkbox, gr.Checkbox) and input_accordion.CHECKBOX_CLASS in checkbox.elem_classes
        linked = header_link(checkbox)
        assert linked == (accordion_id or linked) and linked in ids, checkbox_id
        accordion = ids[linked]
        assert isinstance(accordion, gr.Accordion) and input_accordion.ACCORDION_CLASS in accordion.elem_classes
        assert accordion.open is False and outside_before(checkbox, accordion), checkbox_id
        assert input_accordion.feature_name(checkbox) == feature
        opened = event(page.blocks, checkbox, "change", accordion)  # ticking opens the accordion
        assert prop(opened.fn(True), "open") is True and opened.fn(False) == SKIP
    assert ids["txt2img_shout_shout"].label == "Shout"  # the section's accordion keeps its elem_id and title
    # the ui-config keys (labels) did not change
    inputs = ui_config.labelled_inputs(page.blocks)
    assert inputs[HIRES] is ids["txt2img_enable_hr"] and inputs[OUTPAINT] is ids["img2img_outpaint_enable"]
    assert inputs["txt2img/Refiner"] is ids["script_txt2img_refiner_enable-checkbox"]


def test_a_restore_that_switches_features_on_says_so_and_undo_puts_the_defaults_back(page, store):
    ids = page.ids
    store.remember({HIRES: True, "txt2img/Sampling steps": 3, "txt2img/Prompt": "a harbour",
                    "txt2img/Shout": True, "txt2img/Enable wildcards": True,  # on by default: not news
                    OUTPAINT: True, "img2img/Right, pixels": 64})
    shown = loaded(page.blocks, ids)
    assert shown["txt2img_enable_hr"] is True and shown["txt2img_steps"] == 3
    assert shown["img2img_outpaint_enable"] is True and shown["img2img_outpaint_right"] == 64
    assert prop(shown["txt2img_restored_note"], "visible") is True
    assert prop(shown["img2img_restored_note"], "visible") is True
    assert shown["txt2img_restored_note_text"].endswith("Hires. fix, Shout on</span>")
    assert "Restored last used values" in shown["txt2img_restored_note_text"]
    assert "Outpainting on" in shown["img2img_restored_note_text"]
    assert "wildcards" not in shown["txt2img_restored_note_text"]

    note_keys = ids["txt2img_restored_note"]  # the State after the row and the text: the restored keys
    load = page_load(page.blocks, note_keys)
    state = load.outputs[load.outputs.index(note_keys) + 2]
    restored = shown[_name(state)]
    assert set(restored) == {HIRES, "txt2img/Sampling steps", "txt2img/Prompt", "txt2img/Shout"}

    undo = event(page.blocks, ids["txt2img_restored_undo"], "click")
    assert undo.inputs == [state]
    values = dict(zip(map(_name, undo.outputs), undo.fn(restored)))
    assert values["txt2img_enable_hr"] is False and values["txt2img_shout_enabled"] is False
    assert values["txt2img_steps"] == ids["txt2img_steps"].value == 20  # the page's (ui-config's) defaults
    assert values["txt2img_prompt"] == ""
    assert values["txt2img_cfg_scale"] == SKIP  # not restored: left as the user has it
    assert prop(values["txt2img_restored_note"], "visible") is False and values[_name(state)] == []
    assert not any(name.startswith("img2img") for name in values)  # the other tab keeps its restore

    dismiss = event(page.blocks, ids["img2img_restored_dismiss"], "click")
    row, _, keys = dismiss.fn()
    assert prop(row, "visible") is False and keys == []


def test_no_note_when_nothing_differs_from_the_defaults_or_the_option_is_off(page, store):
    ids = page.ids
    shown = loaded(page.blocks, ids)  # nothing remembered yet
    assert prop(shown["txt2img_restored_note"], "visible") is False
    store.remember({"txt2img/Sampling steps": 20, HIRES: False})  # the defaults
    shown = loaded(page.blocks, ids)
    assert prop(shown["txt2img_restored_note"], "visible") is False and shown["txt2img_steps"] == 20
    store.remember({"txt2img/Sampling steps": 5})
    assert loaded(page.blocks, ids)["txt2img_restored_note_text"].endswith("values</b></span>")  # no feature
    page.services.options.update({"ui_remember_last_used": False}, save=False)
    shown = loaded(page.blocks, ids)  # nothing restored, the note left as it is (hidden)
    assert shown["txt2img_steps"] == SKIP and shown["txt2img_prompt"] == SKIP
    assert shown["txt2img_restored_note"] == SKIP and shown["txt2img_restored_note_text"] == SKIP


def test_restore_computations():
    flag, other, steps = gr.Checkbox(render=False), gr.Checkbox(render=False), gr.Slider(render=False)
    input_accordion.mark_feature(flag, "Hires. fix")
    remembered = {"txt2img/Hires": flag, "txt2img/Tiling": other, "txt2img/Steps": steps, "img2img/Hires": flag}
    defaults = {"txt2img/Hires": False, "txt2img/Tiling": False, "txt2img/Steps": 20, "img2img/Hires": True}
    values = [True, True, 20, True]
    changed = ui_config.restored_changes(remembered, values, defaults)
    assert changed == {"txt2img": ["txt2img/Hires", "txt2img/Tiling"]}  # img2img's was on by default
    by_key = dict(zip(remembered, values))
    assert ui_config.switched_on(remembered, changed["txt2img"], by_key, defaults) == ["Hires. fix"]
    assert ui_config.switched_on(remembered, ["img2img/Hires"], by_key, defaults) == []
    assert ui_config.restored_changes(remembered, [SKIP, False, 21, SKIP], defaults) == {
        "txt2img": ["txt2img/Steps"]}
    assert ui_config.undo_values(remembered, "txt2img", ["txt2img/Steps"], defaults) == [SKIP, SKIP, 20]
