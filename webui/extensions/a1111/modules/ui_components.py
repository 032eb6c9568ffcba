"""A1111's `modules.ui_components`: the small Gradio building blocks extensions use in their `ui()`.

They are classes, subclasses of Gradio's own components (as A1111's are of Gradio 3's), so extensions can subclass
them (`class ResButton(ToolButton): def __init__(self, res, **kwargs): super().__init__(**kwargs)`). The page
draws each as the Gradio component it derives from (`get_block_name`), and its settings are that component's
(`get_config`), whatever signature a subclass's `__init__` has. `InputAccordion` is an accordion with an "enabled"
checkbox at its top:

    with InputAccordion(False, label="My extension") as enabled:   # enabled: a gr.Checkbox
        strength = gr.Slider(...)
"""
from __future__ import annotations

import gradio as gr

from webui.extensions.a1111 import gradio3
from webui.ui import input_accordion as _accordion

gradio3.apply()  # before the classes below exist: Gradio would write a .pyi stub next to this file


class FormComponent:
    """Marks A1111's components that fit inside Gradio forms (kept for extensions that test for it)."""

    webui_do_not_create_gradio_pyi_thank_you = True


class _Drawn:
    """A subclass of a Gradio component drawn and configured as that component (`_gradio` names it)."""

    _gradio: type = gr.Button

    def get_block_name(self) -> str:
        return self._gradio.__name__.lower()

    def get_block_class(self) -> str:
        return self._gradio.__name__.lower()

    def get_config(self, *args, **kwargs):
        # Gradio reads a block's settings by its class's __init__ signature, which a subclass may have narrowed
        from gradio.blocks import Block
        return {**Block.get_config(self, self._gradio), **super().get_config(*args, **kwargs)}


def _classes(value) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


class ToolButton(_Drawn, gr.Button, FormComponent):
    """A small square icon button (classes `tool-button` and A1111's `tool`)."""

    _gradio = gr.Button

    def __init__(self, value="", *args, elem_classes=None, **kwargs):
        kwargs.setdefault("scale", 0)
        kwargs.setdefault("min_width", 40)
        super().__init__(value, *args, elem_classes=["tool-button", "tool", *_classes(elem_classes)], **kwargs)


class ResizeHandleRow(_Drawn, gr.Row):
    """A row whose columns the user can resize (class `resize-handle-row`)."""

    _gradio = gr.Row
    webui_do_not_create_gradio_pyi_thank_you = True

    def __init__(self, **kwargs):
        kwargs["elem_classes"] = [*_classes(kwargs.get("elem_classes")), "resize-handle-row"]
        super().__init__(**kwargs)


class FormRow(_Drawn, gr.Row, FormComponent):
    _gradio = gr.Row


class FormColumn(_Drawn, gr.Column, FormComponent):
    _gradio = gr.Column


class FormGroup(_Drawn, gr.Group, FormComponent):
    _gradio = gr.Group


class FormHTML(_Drawn, gr.HTML, FormComponent):
    _gradio = gr.HTML


class FormColorPicker(_Drawn, gr.ColorPicker, FormComponent):
    _gradio = gr.ColorPicker


class DropdownMulti(_Drawn, gr.Dropdown, FormComponent):
    """A dropdown where several choices can be picked (its value is a list)."""

    _gradio = gr.Dropdown

    def __init__(self, **kwargs):
        kwargs["multiselect"] = True
        super().__init__(**kwargs)


class DropdownEditable(_Drawn, gr.Dropdown, FormComponent):
    """A dropdown that also accepts a typed value."""

    _gradio = gr.Dropdown

    def __init__(self, **kwargs):
        kwargs["allow_custom_value"] = True
        super().__init__(**kwargs)


class InputAccordion(_Drawn, gr.Checkbox):
    """An accordion whose value is a bool: `with InputAccordion(value, label=...) as enabled:` opens the accordion
    for the components that follow and gives `enabled`, the checkbox itself (an input like any other).

    `.accordion` is the gr.Accordion. Keyword arguments are the accordion's (`label`, `open`, `elem_id`,
    `visible`, ...); `checkbox_label` names the checkbox ("Enable" by default); the checkbox's elem_id is the
    accordion's plus "-checkbox", as in A1111. The checkbox is built just before the accordion and the page shows it
    in the accordion's header (`webui.ui.input_accordion`); ticking it opens the accordion. `extra()` is a column
    for more controls, as A1111's.
    """

    _gradio = gr.Checkbox

    def __init__(self, value=None, *, checkbox_label: str = "Enable", setup: bool = True, **kwargs):
        if not setup or kwargs.get("render") is False:  # Gradio rebuilding the checkbox to apply an update
            super().__init__(value=value, **{k: v for k, v in kwargs.items() if k != "open"})
            return
        self.accordion_id = kwargs.pop("elem_id", None) or _accordion._new_id()
        label = kwargs.pop("label", None) or "Accordion"
        visible = kwargs.get("visible", True)
        classes = _classes(kwargs.pop("elem_classes", None))
        kwargs.setdefault("open", False)  # ticking the checkbox opens it
        with gr.Row(elem_classes=[_accordion.HOLDER_CLASS], visible=visible) as self.holder:
            super().__init__(value=bool(value), label=checkbox_label, elem_id=f"{self.accordion_id}-checkbox",
                             elem_classes=[_accordion.CHECKBOX_CLASS, f"{_accordion.FOR_PREFIX}{self.accordion_id}"],
                             visible=visible)
        self.accordion = gr.Accordion(label, elem_id=self.accordion_id,
                                      elem_classes=[_accordion.ACCORDION_CLASS, *classes], **kwargs)
        _accordion.mark_feature(self, label)
        _accordion.wire_open(self.accordion, self)

    @property
    def checkbox(self) -> gr.Checkbox:
        return self

    def extra(self) -> gr.Column:
        return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self) -> "InputAccordion":
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.accordion.__exit__(*exc)


InputAccordionImpl = InputAccordion  # A1111's name of the class (its InputAccordion is a function making one)
