"""The img2img tab's own inputs (A1111's layout and elem_ids): the image sub-tabs (img2img, Sketch, Inpaint,
Inpaint sketch, Inpaint upload, Batch), the inpaint options, and the Outpainting accordion.

Which sub-tab is shown is kept in a state value (`img2img_mode`, one of `canvas.IMG2IMG_MODES`), set when a sub-tab
is selected, so that Generate knows which picture (and mask) to use. `generation_tab.build_tab` places the parts;
`wire_inputs` connects them.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..core.request import INPAINT_AREAS, INPAINT_FILLS, MASK_MODES, OUTPAINT_FILLS
from .canvas import IMG2IMG_MODES, INPAINT_MODES
from .input_accordion import InputAccordion

# Sub-tab of each mode: (label, elem_id, which is also the tab's id within the sub-tabs).
SUB_TABS = {
    "img2img": ("img2img", "img2img_img2img_tab"),
    "sketch": ("Sketch", "img2img_img2img_sketch_tab"),
    "inpaint": ("Inpaint", "img2img_inpaint_tab"),
    "inpaint_sketch": ("Inpaint sketch", "img2img_inpaint_sketch_tab"),
    "inpaint_upload": ("Inpaint upload", "img2img_inpaint_upload_tab"),
    "batch": ("Batch", "img2img_batch_tab"),
}
assert tuple(SUB_TABS) == IMG2IMG_MODES

# The brush of the Inpaint mask: one colour (only where it is drawn matters), see-through so the picture shows.
MASK_BRUSH_COLOUR = ("#ffffff", 0.7)
SKETCH_COLOURS = ["#000000", "#ffffff", "#cc3232", "#e0a020", "#3cb44b", "#3264cc", "#a032cc"]
EDITOR_HEIGHT = 480
HIDDEN_DIRS_NOTE = ("Batch folders are disabled: this server was started with `--hide-ui-dir-config`, so the "
                    "web page cannot read or write folders on it.")
BATCH_NOTE = ("Process every image of a folder on the server. Masks (optional) are matched by file name, for the "
              "inpaint options below; leave the output folder empty to save into the usual img2img folder.")


@dataclass
class Img2ImgInputs:
    """The components whose values `generation.build_request` takes for img2img (named as `IMG2IMG_FIELDS`), and
    the layout pieces the handlers update."""
    img2img_mode: gr.State
    sub_tabs: gr.Tabs
    tabs: dict  # mode -> gr.Tab
    image: gr.Image
    sketch: gr.ImageEditor
    inpaint: gr.ImageEditor
    inpaint_sketch: gr.ImageEditor
    inpaint_base: gr.Image
    inpaint_mask: gr.Image
    batch_input_dir: gr.Textbox
    batch_output_dir: gr.Textbox
    batch_mask_dir: gr.Textbox
    resize_mode: gr.Radio
    inpaint_controls: gr.Group
    mask_blur: gr.Slider
    mask_mode: gr.Radio
    inpainting_fill: gr.Radio
    inpaint_area: gr.Radio
    inpaint_padding: gr.Slider
    denoising_strength: gr.Slider
    outpaint: gr.Accordion
    outpaint_enable: gr.Checkbox
    outpaint_left: gr.Slider
    outpaint_right: gr.Slider
    outpaint_up: gr.Slider
    outpaint_down: gr.Slider
    outpaint_fill: gr.Radio
    outpaint_overlap: gr.Slider

    def components(self, names) -> list:
        return [getattr(self, name) for name in names]

    def switch_outputs(self) -> list:
        """What `switch_to` updates: the sub-tabs, the mode state, the inpaint options' visibility."""
        return [self.sub_tabs, self.img2img_mode, self.inpaint_controls]


def shows_inpaint_options(mode: str, outpaint_enabled: bool = False) -> bool:
    """The inpaint options are shown where they act: the inpaint sub-tabs, Batch (its mask folder) and outpainting
    (whose new area is a mask)."""
    return mode in INPAINT_MODES or mode == "batch" or bool(outpaint_enabled)


def switch_to(mode: str, outpaint_enabled: bool = False) -> tuple:
    """Updates for `Img2ImgInputs.switch_outputs()` that show `mode`'s sub-tab (a programmatic tab change does
    not fire the tab's select event, so the mode state is set here too)."""
    return (gr.Tabs(selected=SUB_TABS[mode][1]), mode,
            gr.Group(visible=shows_inpaint_options(mode, outpaint_enabled)))


def _editor(label: str, elem_id: str, brush: gr.Brush) -> gr.ImageEditor:
    """A canvas over an uploaded picture: brush (size slider; colours as given), eraser, undo/redo and clear; no
    crop or extra layers, so the strokes always line up with the picture."""
    return gr.ImageEditor(label=label, elem_id=elem_id, type="pil", image_mode="RGBA", format="png",
                          sources=("upload", "clipboard"), brush=brush, eraser=gr.Eraser(), layers=False,
                          transforms=(), height=EDITOR_HEIGHT)


def _sketch_brush() -> gr.Brush:
    return gr.Brush(colors=SKETCH_COLOURS, default_color=SKETCH_COLOURS[0], color_mode="defaults")


def build_sources(hide_dirs: bool) -> dict:
    """The sub-tabs with their image inputs (and the mode state)."""
    parts: dict = {"img2img_mode": gr.State(IMG2IMG_MODES[0]), "tabs": {}}
    with gr.Tabs(elem_id="mode_img2img", selected=SUB_TABS["img2img"][1]) as parts["sub_tabs"]:
        for mode, (label, elem_id) in SUB_TABS.items():
            with gr.Tab(label, id=elem_id, elem_id=elem_id) as parts["tabs"][mode]:
                _build_source(mode, parts, hide_dirs)
    return parts


def _build_source(mode: str, parts: dict, hide_dirs: bool) -> None:
    if mode == "img2img":
        parts["image"] = gr.Image(label="Image for img2img", type="pil", format="png", elem_id="img2img_image",
                                  sources=["upload", "clipboard"], height=EDITOR_HEIGHT,
                                  buttons=["download", "fullscreen"])
    elif mode == "sketch":
        parts["sketch"] = _editor("Image for img2img (paint on it)", "img2img_sketch", _sketch_brush())
    elif mode == "inpaint":
        mask_brush = gr.Brush(colors=[MASK_BRUSH_COLOUR], default_color=MASK_BRUSH_COLOUR, color_mode="fixed")
        parts["inpaint"] = _editor("Image for inpainting with mask (paint over what to regenerate)", "img2maskimg",
                                   mask_brush)
    elif mode == "inpaint_sketch":
        parts["inpaint_sketch"] = _editor("Image for inpainting (the strokes paint and mask)", "inpaint_sketch",
                                          _sketch_brush())
    elif mode == "inpaint_upload":
        parts["inpaint_base"] = gr.Image(label="Image for img2img", type="pil", format="png",
                                         elem_id="img_inpaint_base", sources=["upload", "clipboard"], height=300,
                                         buttons=["download", "fullscreen"])
        parts["inpaint_mask"] = gr.Image(label="Mask (white = regenerate)", type="pil", format="png",
                                         image_mode=None, elem_id="img_inpaint_mask",
                                         sources=["upload", "clipboard"], height=300,
                                         buttons=["download", "fullscreen"])
    else:
        gr.Markdown(HIDDEN_DIRS_NOTE if hide_dirs else BATCH_NOTE, elem_id="img2img_batch_note")
        shown = not hide_dirs
        parts["batch_input_dir"] = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir",
                                              max_lines=1, visible=shown)
        parts["batch_output_dir"] = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir",
                                               max_lines=1, visible=shown)
        parts["batch_mask_dir"] = gr.Textbox(label="Inpaint batch mask directory (required for inpaint batch "
                                                   "processing only)", elem_id="img2img_batch_inpaint_mask_dir",
                                             max_lines=1, visible=shown)


def build_inpaint_controls() -> dict:
    """Mask blur, mask mode, masked content, inpaint area and its padding (A1111's names, ranges and UI defaults);
    hidden until an inpaint sub-tab is selected."""
    parts = {}
    with gr.Group(elem_id="inpaint_controls", visible=False) as parts["inpaint_controls"]:
        parts["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="img2img_mask_blur")
        parts["mask_mode"] = gr.Radio(list(MASK_MODES), value=MASK_MODES[0], label="Mask mode",
                                      elem_id="img2img_mask_mode")
        parts["inpainting_fill"] = gr.Radio(list(INPAINT_FILLS), value="original", label="Masked content",
                                            elem_id="img2img_inpainting_fill")
        with gr.Row():
            parts["inpaint_area"] = gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], label="Inpaint area",
                                             elem_id="img2img_inpaint_full_res")
            parts["inpaint_padding"] = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                 elem_id="img2img_inpaint_full_res_padding")
    return parts


def build_outpaint() -> dict:
    """The Outpainting accordion: extend the picture of whichever sub-tab by these many pixels per side."""
    parts = {}
    # the Enable checkbox in the header (input_accordion), so a restored or pasted outpainting shows when closed
    with InputAccordion("Outpainting", elem_id="img2img_outpaint", checkbox_elem_id="img2img_outpaint_enable",
                        checkbox_label="Enable: extend the canvas and inpaint the new area") as section:
        parts["outpaint"], parts["outpaint_enable"] = section.accordion, section.checkbox
        with gr.Row():
            for side in ("left", "right", "up", "down"):
                parts[f"outpaint_{side}"] = gr.Slider(0, 512, value=0, step=8, label=f"{side.capitalize()}, pixels",
                                                      elem_id=f"img2img_outpaint_{side}", min_width=120)
        with gr.Row():
            parts["outpaint_fill"] = gr.Radio(list(OUTPAINT_FILLS), value=OUTPAINT_FILLS[0], label="New area starts "
                                              "as", elem_id="img2img_outpaint_fill")
            parts["outpaint_overlap"] = gr.Slider(0, 64, value=8, step=1, label="Overlap into the picture, pixels",
                                                  elem_id="img2img_outpaint_overlap")
    return parts


def wire_inputs(inputs: Img2ImgInputs) -> None:
    """Selecting a sub-tab sets the mode (and shows the inpaint options where they act); so does outpainting."""
    def selected(mode: str):
        def select(outpaint_enabled):
            return switch_to(mode, outpaint_enabled)[1:]
        return select

    for mode, tab in inputs.tabs.items():
        tab.select(selected(mode), inputs=[inputs.outpaint_enable],
                   outputs=[inputs.img2img_mode, inputs.inpaint_controls], show_progress="hidden", queue=False,
                   api_visibility="undocumented")
    inputs.outpaint_enable.change(lambda mode, enabled: gr.Group(visible=shows_inpaint_options(mode, enabled)),
                                  inputs=[inputs.img2img_mode, inputs.outpaint_enable],
                                  outputs=[inputs.inpaint_controls], show_progress="hidden", queue=False,
                                  api_visibility="undocumented")
