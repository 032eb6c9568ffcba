"""Small extensions written for the tests, as {relative path: text} to put in a git repository."""
from __future__ import annotations

# An A1111 extension (wildcards, as the popular ones do it): `__color__` in the prompt becomes a line of
# wildcards/color.txt, a different one per image; the original prompt goes into the infotext.
WILDCARDS = {
    "scripts/wildcards.py": '''
import os

import gradio as gr

import modules.scripts as scripts
from modules import shared
from modules.processing import fix_seed

WILDCARD_DIR = os.path.join(scripts.basedir(), "wildcards")


class WildcardsScript(scripts.Script):
    def title(self):
        return "Test wildcards"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Test wildcards", open=False):
            enabled = gr.Checkbox(value=True, label="Enable wildcards", elem_id=self.elem_id("enabled"))
        return [enabled]

    def process(self, p, enabled):
        if not enabled:
            return
        with open(os.path.join(WILDCARD_DIR, "color.txt"), encoding="utf-8") as fh:
            colors = [line.strip() for line in fh if line.strip()]
        original = p.all_prompts[0]
        p.all_prompts = [prompt.replace("__color__", colors[i % len(colors)]) for i, prompt in enumerate(p.all_prompts)]
        p.extra_generation_params["Wildcard prompt"] = original
        p.extra_generation_params["Wildcards dir"] = os.path.basename(scripts.basedir())
''',
    "wildcards/color.txt": "red\ngreen\nblue\n",
    "style.css": "#test-wildcards-marker { color: rgb(1, 2, 3); }\n",
    "javascript/wildcards.js": "window.testWildcardsLoaded = true;\n",
}

# Our own API: a section with a checkbox; its process hook appends text when ticked; a setting; a route.
OWN_API = {
    "scripts/shout.py": '''
import gradio as gr


def register(webui):
    webui.add_setting("shout_suffix", "loudly", "Text the Shout extension appends")

    def build(mode):
        return [gr.Checkbox(value=False, label="Shout", elem_id=f"{mode}_shout_enabled")]

    webui.add_section("Shout", build)

    @webui.process
    def shout(run):
        (enabled,) = webui.args(run)
        if enabled:
            suffix = webui.setting("shout_suffix")
            run.all_prompts = [f"{p}, {suffix}" for p in run.all_prompts]
            run.extra_params["Shout"] = suffix

    @webui.on_image
    def mark(run, event):
        if webui.args(run)[0]:  # a red dot in the corner of every image, after decoding
            event.image = event.image.copy()
            event.image.putpixel((0, 0), (255, 0, 0))

    def model():
        current = webui.current_model()
        return {"model": current.name if current else None, "extension": webui.name}

    webui.add_route("/shout/model", model)
''',
}

# An A1111 extension whose process() raises, and whose postprocess_image works (it must still run).
BROKEN_HOOK = {
    "scripts/broken.py": '''
import modules.scripts as scripts


class Broken(scripts.Script):
    def title(self):
        return "Broken hook"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        raise ValueError("the broken extension broke on purpose")

    def postprocess_image(self, p, pp, *args):
        p.extra_generation_params["Broken survived"] = "yes"
''',
}

# on_app_started adds a route; preload adds a flag the script reads through shared.cmd_opts.
ROUTE_AND_FLAG = {
    "preload.py": '''
def preload(parser):
    parser.add_argument("--route-greeting", default="hello", help="what /route-ext/greet answers")
''',
    "scripts/route.py": '''
from modules import script_callbacks, shared


def started(demo, app):
    @app.get("/route-ext/greet")
    def greet():
        return {"greeting": shared.cmd_opts.route_greeting, "ui": demo is not None}


script_callbacks.on_app_started(started)
''',
}

# A selectable script: its run() makes two images by calling process_images twice with different seeds.
SELECTABLE = {
    "scripts/twice.py": '''
import copy

import gradio as gr

import modules.scripts as scripts
from modules.processing import Processed, process_images


class Twice(scripts.Script):
    def title(self):
        return "Run twice"

    def ui(self, is_img2img):
        return [gr.Number(value=100, label="Second seed offset", precision=0)]

    def run(self, p, offset):
        first = process_images(p)
        second_p = copy.copy(p)
        second_p.seed = first.seed + int(offset)
        second = process_images(second_p)
        return Processed(p, first.images + second.images, first.seed, first.info,
                         all_seeds=first.all_seeds + second.all_seeds, infotexts=first.infotexts + second.infotexts)
''',
}

FAILING_INSTALL = {
    "install.py": "import sys\nprint('installing the failing extension')\nsys.exit('pip could not install foo')\n",
    "scripts/nothing.py": "",
}

# A1111 UI hooks: an on_ui_tabs tab, on_ui_settings option, component callbacks recording the elem_ids it saw,
# and a script whose after_component puts a button right after the txt2img prompt.
UI_HOOKS = {
    "scripts/ui_hooks.py": '''
import gradio as gr

import modules.scripts as scripts
from modules import script_callbacks, shared

SEEN = []


def tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Textbox(value="from an extension", elem_id="ui_hooks_text")
    return [(tab, "UI hooks", "ui_hooks")]


def settings():
    shared.opts.add_option("ui_hooks_level", shared.OptionInfo(3, "UI hooks level", gr.Slider,
                                                               {"minimum": 1, "maximum": 5, "step": 1},
                                                               section=("ui_hooks", "UI hooks")).info("a level"))


def seen(component, **kwargs):
    if kwargs.get("elem_id"):
        SEEN.append(kwargs["elem_id"])


script_callbacks.on_ui_tabs(tabs)
script_callbacks.on_ui_settings(settings)
script_callbacks.on_after_component(seen)


class Besides(scripts.Script):
    def title(self):
        return "Besides the prompt"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_component(self, component, **kwargs):
        if kwargs.get("elem_id") == "txt2img_prompt":
            self.extra = gr.Button("extension button", elem_id="ui_hooks_button")
''',
}

# Callbacks around the generation: cfg_denoiser (counts evaluations, can read the text conditioning),
# model_loaded, infotext_pasted (turns a pasted "Steps" into 9).
CALLBACKS = {
    "scripts/callbacks.py": '''
from modules import script_callbacks

CALLS = {"denoiser": 0, "total": None, "cond_rows": None, "loaded": []}


def denoiser(params):
    CALLS["denoiser"] += 1
    CALLS["total"] = params.total_sampling_steps
    CALLS["cond_rows"] = params.text_cond.shape[0]


def loaded(sd_model):
    CALLS["loaded"].append(sd_model.sd_checkpoint_info.title)


def pasted(infotext, params):
    params["Steps"] = "9"


script_callbacks.on_cfg_denoiser(denoiser)
script_callbacks.on_model_loaded(loaded)
script_callbacks.on_infotext_pasted(pasted)
''',
}

# An always-on script that changes settings in process() and makes an image of its own inside a normal job
# (as face detailers do), guarding the inner call so it does not recurse.
NESTED = {
    "scripts/nested.py": '''
import modules.scripts as scripts
from modules.processing import StableDiffusionProcessingTxt2Img, process_images


class Nested(scripts.Script):
    def title(self):
        return "Nested"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        if getattr(p, "inner", False):
            return
        p.steps, p.cfg_scale = 3, 5.0
        inner = StableDiffusionProcessingTxt2Img(prompt="inner", steps=1, width=64, height=64, seed=1,
                                                 sampler_name="Euler", do_not_save_samples=True)
        inner.inner = True
        made = process_images(inner)
        p.extra_generation_params["Inner seed"] = made.seed
        p.extra_generation_params["Inner images"] = len(made.images)
''',
}
