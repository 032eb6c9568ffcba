"""X/Y/Z plot's controls (A1111 1.10's labels, defaults, elem_ids `script_{tab}_xyz_plot_*` and helpers).

Each axis row: its type, its values as text, and for axes with choices (samplers, checkpoints, VAEs, ...) a
multiselect dropdown shown instead of the text (unless "Use text inputs instead of dropdowns") with 📒, which fills
in every choice. The swap buttons exchange two axes. The type dropdowns hold labels (the engine takes a label or an
index: `xyz_plan.resolve_type`); only the axes this server can plot are offered.
"""
from __future__ import annotations

import gradio as gr

from ...engine.scripts.xyz_plan import MAX_MARGIN, axes_for
from ...engine.scripts.xyz_values import join_values, split_values

FILL = "\U0001f4d2"  # 📒


def _context(services):
    return services.script_context(None, services.options) if services is not None else None


def axis_labels(mode: str, services=None) -> list[str]:
    """The axis types offered in `mode`'s tab, in A1111's order (the ones this server lacks left out)."""
    ctx = _context(services)
    labels = []
    for axis in axes_for(mode, ctx):
        if not axis.unavailable(ctx) and axis.label not in labels:
            labels.append(axis.label)
    return labels


def _axis(mode: str, services, label):
    ctx = _context(services)
    for axis in axes_for(mode, ctx):
        if axis.label == label:
            return axis, ctx
    return None, ctx


def axis_choices(mode: str, services, label) -> list[str] | None:
    """The values the axis `label` offers (None: it takes typed values)."""
    axis, ctx = _axis(mode, services, label)
    return axis.offers(ctx) if axis is not None else None


def select_axis(mode: str, services, label, text, chosen, csv_mode) -> tuple:
    """A new axis type: 📒 and the dropdown for axes with choices (the text box with text inputs), the values kept
    where the other control can show them."""
    choices = axis_choices(mode, services, label)
    if choices is None:
        return gr.Button(visible=False), gr.Textbox(value=text, visible=True), \
            gr.Dropdown(choices=[], value=[], visible=False, multiselect=True)
    chosen = list(chosen or [])
    if csv_mode:
        if chosen:
            text, chosen = join_values([value for value in chosen if value in choices]), []
    elif text:
        chosen, text = [value for value in split_values(text) if value in choices], ""
    chosen = [value for value in chosen if value in choices]
    return gr.Button(visible=True), gr.Textbox(value=text, visible=bool(csv_mode)), \
        gr.Dropdown(choices=choices, value=chosen, visible=not csv_mode, multiselect=True)


def fill(mode: str, services, label, csv_mode) -> tuple:
    """📒: every choice of the axis, into the text box (text inputs) or the dropdown."""
    choices = axis_choices(mode, services, label)
    if not choices:
        return gr.skip(), gr.skip()
    if csv_mode:
        return gr.Textbox(value=join_values(choices)), gr.skip()
    return gr.skip(), gr.Dropdown(choices=choices, value=list(choices), multiselect=True)


def swap(type_a, text_a, chosen_a, type_b, text_b, chosen_b) -> tuple:
    return type_b, text_b, chosen_b, type_a, text_a, chosen_a


def build(mode: str, services=None) -> list:
    prefix = f"script_{mode}_xyz_plot"
    labels = axis_labels(mode, services)
    rows = {}
    with gr.Row():
        with gr.Column(scale=19):
            for letter, default in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
                with gr.Row():
                    kind = gr.Dropdown(labels, value=default, label=f"{letter.upper()} type",
                                       elem_id=f"{prefix}_{letter}_type")
                    text = gr.Textbox(label=f"{letter.upper()} values", lines=1, elem_id=f"{prefix}_{letter}_values")
                    chosen = gr.Dropdown([], value=[], label=f"{letter.upper()} values", visible=False,
                                         multiselect=True, interactive=True,
                                         elem_id=f"{prefix}_{letter}_values_dropdown")
                    button = gr.Button(FILL, elem_id=f"xyz_grid_fill_{letter}_tool_button", visible=False,
                                       elem_classes="tool-button", scale=0, min_width=40)
                rows[letter] = (kind, text, chosen, button)
    with gr.Row(variant="compact", elem_id="axis_options"):
        with gr.Column():
            draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=f"{prefix}_draw_legend")
            no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False, elem_id=f"{prefix}_no_fixed_seeds")
            with gr.Row():
                vary = [gr.Checkbox(label=f"Vary seeds for {letter.upper()}", value=False, min_width=80,
                                    elem_id=f"{prefix}_vary_seeds_{letter}",
                                    info=f"Use different seeds for images along {letter.upper()} axis.")
                        for letter in "xyz"]
        with gr.Column():
            include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                              elem_id=f"{prefix}_include_lone_images")
            include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                            elem_id=f"{prefix}_include_sub_grids")
            csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                   elem_id=f"{prefix}_csv_mode")
        with gr.Column():
            margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=MAX_MARGIN, value=0, step=2,
                                    elem_id=f"{prefix}_margin_size")
    with gr.Row(variant="compact", elem_id="swap_axes"):
        swaps = {pair: gr.Button(value=f"Swap {pair[0].upper()}/{pair[1].upper()} axes",
                                 elem_id=f"{pair}_grid_swap_axes_button") for pair in ("xy", "yz", "xz")}
    _wire(mode, services, rows, swaps, csv_mode)
    controls = [c for letter in "xyz" for c in rows[letter][:3]]
    return controls + [draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, *vary, margin_size,
                       csv_mode]


def _wire(mode: str, services, rows: dict, swaps: dict, csv_mode) -> None:
    hidden = {"show_progress": "hidden", "api_visibility": "undocumented"}
    for letter, (kind, text, chosen, button) in rows.items():
        kind.change(lambda label, t, c, csv: select_axis(mode, services, label, t, c, csv),
                    inputs=[kind, text, chosen, csv_mode], outputs=[button, text, chosen], **hidden)
        button.click(lambda label, csv: fill(mode, services, label, csv), inputs=[kind, csv_mode],
                     outputs=[text, chosen], **hidden)
    for pair, button in swaps.items():
        both = [*rows[pair[0]][:3], *rows[pair[1]][:3]]
        button.click(swap, inputs=both, outputs=both, **hidden)

    def change_mode(csv, *values):
        out = []
        for letter, index in zip("xyz", range(0, 9, 3)):
            out += select_axis(mode, services, *values[index:index + 3], csv)
        return tuple(out)

    inputs = [c for letter in "xyz" for c in rows[letter][:3]]
    outputs = [c for letter in "xyz" for c in (rows[letter][3], rows[letter][1], rows[letter][2])]
    csv_mode.change(change_mode, inputs=[csv_mode, *inputs], outputs=outputs, **hidden)
