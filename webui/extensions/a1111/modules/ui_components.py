"""A1111's `modules.ui_components`: the small Gradio building blocks extensions use in their `ui()`.

They return plain Gradio components (made in whatever Blocks context is open), so they work as event inputs and
script arguments like any other. `InputAccordion` is an accordion with an "enabled" checkbox at its top:

    with InputAccordion(False, label="My extension") as enabled:   # enabled: a gr.Checkbox
        strength = gr.Slider(...)
"""
from __future__ import annotations

import gradio as gr


def ToolButton(value="", **kwargs) -> gr.Button:
    """A small square icon button."""
    classes = kwargs.pop("elem_classes", None) or []
    classes = [classes] if isinstance(classes, str) else list(classes)
    kwargs.setdefault("scale", 0)
    kwargs.setdefault("min_width", 40)
    return gr.Button(value, elem_classes=["tool-button", *classes], **kwargs)


def FormRow(**kwargs) -> gr.Row:
    return gr.Row(**kwargs)


def FormColumn(**kwargs) -> gr.Column:
    return gr.Column(**kwargs)


def FormGroup(**kwargs) -> gr.Group:
    return gr.Group(**kwargs)


def FormHTML(value="", **kwargs) -> gr.HTML:
    return gr.HTML(value, **kwargs)


def DropdownMulti(**kwargs) -> gr.Dropdown:
    """A dropdown where several choices can be picked (its value is a list)."""
    return gr.Dropdown(multiselect=True, **kwargs)


def DropdownEditable(**kwargs) -> gr.Dropdown:
    """A dropdown that also accepts a typed value."""
    return gr.Dropdown(allow_custom_value=True, **kwargs)


class InputAccordion:
    """An accordion whose value is a bool: `with InputAccordion(value, label=...) as enabled:` opens the accordion
    for the components that follow and gives `enabled`, the checkbox shown at its top (an input like any other).

    `.accordion` is the gr.Accordion, `.checkbox` the gr.Checkbox (which also carries `.accordion`). Keyword
    arguments go to the accordion (`label`, `open`, `elem_id`, `visible`, ...); `checkbox_label` names the
    checkbox ("Enable" by default); the checkbox's elem_id is the accordion's plus "-checkbox", as in A1111.
    The page shows the checkbox in the accordion's header (`webui.ui.input_accordion`).
    """

    def __init__(self, value: bool = False, *, checkbox_label: str = "Enable", **kwargs):
        # the web UI's own input accordion: the checkbox sits in the accordion's header, visible while it is
        # closed, and ticking it opens the accordion (as in A1111)
        from webui.ui.input_accordion import InputAccordion as _WebuiInputAccordion

        label = kwargs.pop("label", None) or ""
        built = _WebuiInputAccordion(label, bool(value), checkbox_label=checkbox_label, **kwargs)
        self.accordion, self.checkbox = built.accordion, built.checkbox
        self.checkbox.accordion = self.accordion

    def __enter__(self) -> gr.Checkbox:
        self.accordion.__enter__()
        return self.checkbox

    def __exit__(self, *exc) -> None:
        self.accordion.__exit__(*exc)

    def __getattr__(self, name: str):
        """Anything else (`.change(...)`, `.value`, `.elem_id`) is the checkbox's."""
        if name.startswith("__") or name in ("accordion", "checkbox"):
            raise AttributeError(name)
        return getattr(self.checkbox, name)
