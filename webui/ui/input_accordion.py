"""Accordions whose enable checkbox sits in their header (A1111 1.10's InputAccordion pattern), so a feature that is
switched on shows it while the accordion is closed.

The checkbox stays an ordinary `gr.Checkbox`, built just before the accordion: its value, label, elem_id,
ui-config key, last used value and Gradio API parameter are those of any other input. The page script
(`input_accordion_assets.SCRIPT`) moves its element into the accordion's header button; it finds the checkbox by
its classes `input-accordion-checkbox` and `input-accordion-for-<the accordion's elem_id>`. Ticking the checkbox
opens the accordion; opening the accordion does not tick it.

The checkbox also carries the feature's name (`feature_name`), which the last used values' note lists when a
restore switches it on (`ui_config`).
"""
from __future__ import annotations

import gradio as gr

ACCORDION_CLASS = "input-accordion"
CHECKBOX_CLASS = "input-accordion-checkbox"
HOLDER_CLASS = "input-accordion-holder"  # the row the checkbox is built in (empty once the script moved it)
FOR_PREFIX = "input-accordion-for-"  # + the accordion's elem_id: the checkbox's class naming its accordion
FEATURE_ATTRIBUTE = "webui_feature"  # set on a checkbox that switches a feature on: the feature's name
_counter = 0


def classes_of(component) -> list[str]:
    """A component's elem_classes as a list."""
    return _classes(component.elem_classes)


def _classes(value) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def mark_feature(checkbox: gr.Checkbox, name: str) -> None:
    """Record that ticking `checkbox` switches on the feature `name` (listed when last used values tick it)."""
    setattr(checkbox, FEATURE_ATTRIBUTE, str(name))


def feature_name(component) -> str | None:
    """The feature a checkbox switches on, when it is one (see `mark_feature`)."""
    return getattr(component, FEATURE_ATTRIBUTE, None) if isinstance(component, gr.Checkbox) else None


def _open_when_ticked(enabled):
    return gr.Accordion(open=True) if enabled else gr.skip()


def wire_open(accordion: gr.Accordion, checkbox: gr.Checkbox) -> None:
    """Ticking the checkbox (by hand, a paste or restored last used values) opens the accordion."""
    if gr.context.Context.root_block is None:  # built outside a page (a test's bare component): no events
        return
    checkbox.change(_open_when_ticked, inputs=[checkbox], outputs=[accordion], show_progress="hidden",
                    queue=False, api_visibility="undocumented")


def adopt(accordion: gr.Accordion, checkbox: gr.Checkbox, feature: str | None = None) -> bool:
    """Make a checkbox an extension built inside `accordion` (its section's enable flag) the accordion's header
    checkbox: it moves into a holder row just before the accordion (as `InputAccordion` builds it), since a closed
    accordion's children are not rendered. Call it after the accordion's block has closed, inside the page's
    Blocks. False (nothing changed) when that cannot be done."""
    parent, old = accordion.parent, checkbox.parent
    if parent is None or old is None or gr.context.Context.root_block is None or accordion not in parent.children:
        return False
    if not accordion.elem_id:
        accordion.elem_id = _new_id()
    holder = gr.Row(elem_classes=[HOLDER_CLASS], visible=accordion.visible)  # made where the build is now ...
    holder.parent.children.remove(holder)  # ... and moved before the accordion
    parent.children.insert(parent.children.index(accordion), holder)
    holder.parent = parent
    old.children.remove(checkbox)
    holder.children.append(checkbox)
    checkbox.parent = holder
    accordion.elem_classes = [ACCORDION_CLASS, *[c for c in _classes(accordion.elem_classes) if c != ACCORDION_CLASS]]
    checkbox.elem_classes = [CHECKBOX_CLASS, f"{FOR_PREFIX}{accordion.elem_id}", *_classes(checkbox.elem_classes)]
    mark_feature(checkbox, feature or accordion.label or checkbox.label or "")
    wire_open(accordion, checkbox)
    return True


def _new_id() -> str:
    global _counter
    _counter += 1
    return f"input-accordion-{_counter}"


class InputAccordion:
    """`with InputAccordion("Hires. fix", elem_id="txt2img_hr", checkbox_elem_id="txt2img_enable_hr") as section:`
    builds the accordion with its header checkbox; the components made inside the block go into the accordion.
    `section.accordion` is the gr.Accordion, `section.checkbox` the gr.Checkbox.

    Gradio renders a closed accordion's children only when it is first opened, so the checkbox is built just
    before the accordion, in a row of its own (`section.holder`), and the page script moves it into the header.

    `checkbox_label` is the checkbox's label (its ui-config key; read by screen readers, hidden in the header,
    where the accordion's title says what it switches); `checkbox_elem_id` defaults to A1111's
    `{elem_id}-checkbox`; `feature` (default: the title) names it in the restored values' note. Other keyword
    arguments go to gr.Accordion (`open` defaults to False). Without an elem_id the accordion gets
    `input-accordion-N`, as A1111's.
    """

    def __init__(self, label: str, value: bool = False, *, elem_id: str | None = None,
                 checkbox_label: str = "Enable", checkbox_elem_id: str | None = None, feature: str | None = None,
                 checkbox_kwargs: dict | None = None, **accordion_kwargs):
        elem_id = elem_id or _new_id()
        accordion_kwargs.setdefault("open", False)
        classes = [ACCORDION_CLASS, *_classes(accordion_kwargs.pop("elem_classes", None))]
        visible = accordion_kwargs.get("visible", True)
        with gr.Row(elem_classes=[HOLDER_CLASS], visible=visible) as self.holder:
            self.checkbox = gr.Checkbox(bool(value), label=checkbox_label, elem_id=checkbox_elem_id or
                                        f"{elem_id}-checkbox", elem_classes=[CHECKBOX_CLASS, f"{FOR_PREFIX}{elem_id}"],
                                        **(checkbox_kwargs or {}))
        self.accordion = gr.Accordion(label, elem_id=elem_id, elem_classes=classes, **accordion_kwargs)
        mark_feature(self.checkbox, feature or label)
        wire_open(self.accordion, self.checkbox)

    def __enter__(self) -> "InputAccordion":
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.accordion.__exit__(*exc)
