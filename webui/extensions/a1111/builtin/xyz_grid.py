"""A1111's `scripts/xyz_grid.py` as A1111 extensions reach it: the module of the `modules.scripts.scripts_data` entry
whose script class's module is "xyz_grid.py". Extensions append `AxisOption(...)` (or `AxisOptionTxt2Img` /
`AxisOptionImg2Img`) to `axis_options`, usually with the helpers below (`apply_field`, `apply_override`,
`boolean_choice`, `format_value`, ...).

This module holds A1111's names only; the X/Y/Z plot itself is the server's (webui/engine/scripts/xyz_plot.py), which
lists the axes registered here after its own and applies one to a cell through A1111's `p`
(webui/extensions/a1111/xyz_bridge.py). It is loaded afresh for every extension host (under the module name
"xyz_grid.py", as A1111 names script modules), so one server's axes never leak into another's.
"""
import csv
import os
from collections import namedtuple
from io import StringIO
from itertools import chain

import modules.scripts as scripts

from webui.engine.scripts.xyz_axes import PERMUTATIONS, builtin_axes, file_name, joined, nothing, plain
from webui.engine.scripts.xyz_controlnet import controlnet_axes

fill_values_symbol = "\U0001f4d2"  # 📒
AxisInfo = namedtuple("AxisInfo", ["axis", "values"])


# --- applying a value to p (A1111's helpers) ------------------------------------------------------------------------
def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)
    return fun


def apply_override(field, boolean: bool = False):
    def fun(p, x, xs):
        if boolean:
            x = str(x).lower() == "true"
        p.override_settings[field] = x
    return fun


def apply_prompt(p, x, xs):
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise RuntimeError(f"Prompt S/R did not find {xs[0]} in prompt or negative prompt.")
    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)


def apply_order(p, x, xs):
    rest, parts = p.prompt, []
    for _, token in sorted((rest.find(token), token) for token in x):
        at = rest.find(token)
        parts.append(rest[:at])
        rest = rest[at + len(token):]
    p.prompt = "".join(part + token for part, token in zip(parts, x)) + rest


def _services():
    from webui.extensions.a1111.runtime import RUNTIME
    return RUNTIME.require()


def confirm_samplers(p, xs):
    from webui.core.samplers import SamplerError, resolve_name
    for x in xs:
        try:
            resolve_name(str(x))
        except SamplerError:
            raise RuntimeError(f"Unknown sampler: {x}") from None


def _checkpoint(name):
    try:
        return _services().models.resolve(str(name))
    except KeyError:
        return None


def apply_checkpoint(p, x, xs):
    info = _checkpoint(x)
    if info is None:
        raise RuntimeError(f"Unknown checkpoint: {x}")
    p.override_settings["sd_model_checkpoint"] = info.title


def confirm_checkpoints(p, xs):
    for x in xs:
        if _checkpoint(x) is None:
            raise RuntimeError(f"Unknown checkpoint: {x}")


def confirm_checkpoints_or_none(p, xs):
    for x in xs:
        if x not in (None, "", "None", "none") and _checkpoint(x) is None:
            raise RuntimeError(f"Unknown checkpoint: {x}")


def confirm_range(min_val, max_val, axis_label):
    def confirm_range_fun(p, xs):
        for x in xs:
            if not (max_val >= x >= min_val):
                raise ValueError(f'{axis_label} value "{x}" out of range [{min_val}, {max_val}]')
    return confirm_range_fun


def apply_size(p, x, xs):
    width, _, height = str(x).partition("x")
    p.width, p.height = int(width.strip()), int(height.strip())


def find_vae(name):
    name = str(name).strip()
    if name.lower() in ("auto", "automatic"):
        return "Automatic"
    if name.lower() == "none":
        return "None"
    found = _services().models.vaes.find(name)
    return found.name if found is not None else "Automatic"


def apply_vae(p, x, xs):
    p.override_settings["sd_vae"] = find_vae(x)


def apply_styles(p, x, _):
    p.styles.extend(name.strip() for name in str(x).split(","))


def apply_uni_pc_order(p, x, xs):
    p.override_settings["uni_pc_order"] = min(x, p.steps - 1)


def apply_face_restore(p, opt, x):
    opt = str(opt).lower()
    p.restore_faces = opt in ("codeformer", "gfpgan", "true", "yes", "y", "1")
    if opt in ("codeformer", "gfpgan"):
        p.face_restoration_model = "CodeFormer" if opt == "codeformer" else "GFPGAN"


def boolean_choice(reverse: bool = False):
    def choice():
        return ["False", "True"] if reverse else ["True", "False"]
    return choice


# --- legend texts --------------------------------------------------------------------------------------------------
def format_value_add_label(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return x


def format_value_join_list(p, opt, x):
    return ", ".join(x)


def do_nothing(p, x, xs):
    pass


def format_nothing(p, opt, x):
    return ""


def format_remove_path(p, opt, x):
    return os.path.basename(x)


def str_permutations(x):
    """The `type` of an axis whose values are every order of the listed ones (Prompt order)."""
    return x


def list_to_csv_string(data_list):
    with StringIO() as out:
        csv.writer(out).writerow(data_list)
        return out.getvalue().strip()


def csv_string_to_list_strip(data_str):
    return list(map(str.strip, chain.from_iterable(csv.reader(StringIO(data_str), skipinitialspace=True))))


# --- axes ------------------------------------------------------------------------------------------------------------
class AxisOption:
    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None,
                 prepare=None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


# How A1111's own axes change p (for an extension that calls one); the server's plot applies its own to requests.
_APPLY = {
    "Nothing": do_nothing, "Seed": apply_field("seed"), "Var. seed": apply_field("subseed"),
    "Var. strength": apply_field("subseed_strength"), "Steps": apply_field("steps"),
    "Hires steps": apply_field("hr_second_pass_steps"), "CFG Scale": apply_field("cfg_scale"),
    "Image CFG Scale": apply_field("image_cfg_scale"), "Prompt S/R": apply_prompt, "Prompt order": apply_order,
    "Sampler": apply_field("sampler_name"), "Hires sampler": apply_field("hr_sampler_name"),
    "Checkpoint name": apply_checkpoint, "Negative Guidance minimum sigma": apply_field("s_min_uncond"),
    "Sigma Churn": apply_field("s_churn"), "Sigma min": apply_field("s_tmin"), "Sigma max": apply_field("s_tmax"),
    "Sigma noise": apply_field("s_noise"), "Schedule type": apply_field("scheduler"),
    "Schedule min sigma": apply_override("sigma_min"), "Schedule max sigma": apply_override("sigma_max"),
    "Schedule rho": apply_override("rho"), "Skip Early CFG": apply_override("skip_early_cond"),
    "Beta schedule alpha": apply_override("beta_dist_alpha"), "Beta schedule beta": apply_override("beta_dist_beta"),
    "Eta": apply_field("eta"), "Clip skip": apply_override("CLIP_stop_at_last_layers"),
    "Denoising": apply_field("denoising_strength"), "Initial noise multiplier": apply_field("initial_noise_multiplier"),
    "Extra noise": apply_override("img2img_extra_noise"), "Hires upscaler": apply_field("hr_upscaler"),
    "Cond. Image Mask Weight": apply_field("inpainting_mask_weight"), "VAE": apply_vae, "Styles": apply_styles,
    "UniPC Order": apply_uni_pc_order, "Face restore": apply_face_restore,
    "Token merging ratio": apply_override("token_merging_ratio"),
    "Token merging ratio high-res": apply_override("token_merging_ratio_hr"),
    "Always discard next-to-last sigma": apply_override("always_discard_next_to_last_sigma", boolean=True),
    "SGM noise multiplier": apply_override("sgm_noise_multiplier", boolean=True),
    "Refiner checkpoint": apply_field("refiner_checkpoint"), "Refiner switch at": apply_field("refiner_switch_at"),
    "RNG source": apply_override("randn_source"), "FP8 mode": apply_override("fp8_storage"), "Size": apply_size,
}
_CONTROLNET_FIELDS = {"processor_res": "pres", "threshold_a": "pthr_a", "threshold_b": "pthr_b"}
_FORMATS = {plain: format_value, nothing: format_nothing, joined: format_value_join_list, file_name: format_remove_path}


def _choices(axis):
    if axis.choices is None:
        return None

    def choices():
        return axis.offers(_services().script_context(None, _services().options))
    return choices


def _option(axis):
    """A1111's AxisOption for one of the server's axes, marked as such (`_webui_axis`)."""
    kind = {"txt2img": AxisOptionTxt2Img, "img2img": AxisOptionImg2Img}.get(axis.modes[0]) \
        if len(axis.modes) == 1 else AxisOption
    attribute = getattr(axis, "attribute", "")
    if attribute:  # a ControlNet axis: sd-webui-controlnet's p attributes
        apply, value_type = apply_field("control_net_" + _CONTROLNET_FIELDS.get(attribute, attribute)), str
    else:
        apply = _APPLY.get(axis.label, do_nothing)
        value_type = str_permutations if axis.kind == PERMUTATIONS else axis.kind
    option = kind(axis.label, value_type, apply, format_value=_FORMATS.get(axis.format, format_value_add_label),
                  cost=axis.cost, choices=_choices(axis))
    option._webui_axis = axis
    return option


axis_options = [_option(axis) for axis in builtin_axes() + controlnet_axes()]


class Script(scripts.Script):
    """A1111's X/Y/Z plot script class (what extensions look for in `scripts_data`); the server runs its own."""

    def title(self):
        return "X/Y/Z plot"

    def show(self, is_img2img):
        return False
