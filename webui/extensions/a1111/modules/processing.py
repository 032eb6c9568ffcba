"""A1111's `modules.processing`: the `p` object scripts read and change, `process_images`, `Processed`.

`p` is a view of our GenerationRequest with A1111's attribute names. Changes a hook makes reach the engine:
the request's fields are read back from `p` after `setup`/`before_process`, the per-image lists
(`all_prompts`, `all_negative_prompts`, `all_seeds`, `all_subseeds`) after `process`, a batch's `prompts` after
`before_process_batch`, and `extra_generation_params` is the dict the engine writes into the infotext.
"""
from __future__ import annotations

import json
import random

from webui.extensions.a1111.runtime import RUNTIME

# A1111's attribute -> our request field, for the fields that are the same thing.
_SHARED_FIELDS = {
    "prompt": "prompt", "negative_prompt": "negative_prompt", "seed": "seed", "subseed": "subseed",
    "subseed_strength": "subseed_strength", "seed_resize_from_w": "seed_resize_from_w",
    "seed_resize_from_h": "seed_resize_from_h", "sampler_name": "sampler_name", "scheduler": "scheduler",
    "batch_size": "batch_size", "n_iter": "n_iter", "steps": "steps", "cfg_scale": "cfg_scale", "width": "width",
    "height": "height", "styles": "styles", "denoising_strength": "denoising_strength", "tiling": "tiling",
    "refiner_checkpoint": "refiner_checkpoint", "refiner_switch_at": "refiner_switch_at",
    "restore_faces": "restore_faces",  # None: the setting `face_restoration`, as A1111
}
_IMG2IMG_FIELDS = {
    "init_images": "init_images", "resize_mode": "resize_mode", "mask": "mask", "mask_blur_x": "mask_blur_x",
    "mask_blur_y": "mask_blur_y", "inpainting_fill": "inpainting_fill", "inpaint_full_res": "inpaint_full_res",
    "inpaint_full_res_padding": "inpaint_full_res_padding", "inpainting_mask_invert": "inpainting_mask_invert",
    "initial_noise_multiplier": "initial_noise_multiplier",
}

# Hires fix (txt2img): A1111's attributes, the same names on our request.
_HIRES_FIELDS = {name: name for name in (
    "enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name",
    "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt")}

_DEFAULTS = dict(
    sd_model=None, outpath_samples=None, outpath_grids=None, prompt="", styles=None, seed=-1, subseed=-1,
    subseed_strength=0.0, seed_resize_from_h=-1, seed_resize_from_w=-1, seed_enable_extras=True,
    sampler_name=None, scheduler=None, batch_size=1, n_iter=1, steps=50, cfg_scale=7.0, width=512, height=512,
    restore_faces=None, tiling=None, do_not_save_samples=False, do_not_save_grid=False,
    extra_generation_params=None, overlay_images=None, negative_prompt="", eta=None,
    do_not_reload_embeddings=False, denoising_strength=None, ddim_discretize=None, s_min_uncond=0.0, s_churn=0.0,
    s_tmax=None, s_tmin=0.0, s_noise=1.0, override_settings=None, override_settings_restore_afterwards=True,
    sampler_index=None, refiner_checkpoint=None, refiner_switch_at=None, disable_extra_networks=False,
    comments=None, script_args=None, scripts=None, script_name=None, is_api=False, user=None,
    enable_hr=False, hr_scale=2.0, hr_upscaler=None, hr_second_pass_steps=0, hr_resize_x=0, hr_resize_y=0,
    hr_checkpoint_name=None, hr_sampler_name=None, hr_scheduler=None, hr_prompt="", hr_negative_prompt="",
    firstpass_image=None,
)
_IMG2IMG_DEFAULTS = dict(
    init_images=None, resize_mode=0, denoising_strength=0.75, image_cfg_scale=None, mask=None, mask_blur_x=4,
    mask_blur_y=4, mask_blur=None, mask_round=True, inpainting_fill=0, inpaint_full_res=True,
    inpaint_full_res_padding=0, inpainting_mask_invert=0, initial_noise_multiplier=None, latent_mask=None,
    force_task_id=None, include_init_images=False,
)


class StableDiffusionProcessing:
    """A1111's `p`. Built by the server for every run that extensions hook (`from_request`), or by an extension
    itself (then run with `process_images(p)`)."""

    is_img2img = False

    def __init__(self, **kwargs):
        for key, value in {**_DEFAULTS, **self._own_defaults(), **kwargs}.items():
            setattr(self, key, value)
        if self.mask_blur_value() is not None and self.is_img2img:
            self.mask_blur_x = self.mask_blur_y = self.mask_blur
        self.styles = list(self.styles or [])
        self.extra_generation_params = {} if self.extra_generation_params is None else self.extra_generation_params
        self.override_settings = dict(self.override_settings or {})
        self.comments = dict(self.comments or {})
        self.all_prompts = self.all_negative_prompts = self.all_seeds = self.all_subseeds = None
        self.all_hr_prompts = self.all_hr_negative_prompts = None
        self.prompts = self.negative_prompts = self.seeds = self.subseeds = None
        self.iteration = 0
        self.batch_index = 0
        self.main_prompt = self.prompt
        self.main_negative_prompt = self.negative_prompt
        self.extra_result_images = []
        self.script_args_by_title: dict[str, list] = {}  # ours: each always-on script's values, lower-cased title
        self.request = None  # ours: the GenerationRequest this p stands for, once there is one

    def _own_defaults(self) -> dict:
        return {}

    def mask_blur_value(self):
        return getattr(self, "mask_blur", None)

    # --- A1111's conveniences ------------------------------------------------------------------------------------
    @property
    def sd_model_name(self):
        model = _current_model()
        return model.sd_checkpoint_info.name_for_extra if model is not None else None

    @property
    def sd_model_hash(self):
        model = _current_model()
        return model.sd_model_hash if model is not None else None

    def setup_prompts(self) -> None:
        """all_prompts / all_negative_prompts for every image (A1111 does this before `process`)."""
        total = self.batch_size * self.n_iter
        if not isinstance(self.prompt, list):
            self.all_prompts = [self.prompt] * total
        else:
            self.all_prompts = list(self.prompt)
        if not isinstance(self.negative_prompt, list):
            self.all_negative_prompts = [self.negative_prompt] * total
        else:
            self.all_negative_prompts = list(self.negative_prompt)
        self.main_prompt, self.main_negative_prompt = self.all_prompts[0], self.all_negative_prompts[0]

    # --- between p and our request ---------------------------------------------------------------------------------
    def to_request(self):
        """A GenerationRequest for this p (a fresh one, or the one it came from brought up to date)."""
        from webui.core.request import GenerationRequest
        request = self.request or GenerationRequest(mode="img2img" if self.is_img2img else "txt2img")
        self.write_to(request)
        self.request = request
        return request

    def write_to(self, request) -> None:
        """Copy A1111's fields a script may have changed onto `request`."""
        fields = {**_SHARED_FIELDS, **(_IMG2IMG_FIELDS if self.is_img2img else _HIRES_FIELDS)}
        for name, target in fields.items():
            value = getattr(self, name, None)
            if name == "sampler_name" and not value:
                value = self.sampler_index or request.sampler_name
            if name == "scheduler" and not value:
                value = request.scheduler
            if name == "denoising_strength" and value is None:
                continue
            if name in ("initial_noise_multiplier", "refiner_switch_at") and value is None:
                continue
            if name in ("prompt", "negative_prompt") and isinstance(value, list):
                value = value[0] if value else ""
            if name == "init_images":
                value = list(value or [])
            if name == "styles":
                value = list(value or [])
            if name == "tiling":
                value = bool(value)
            if name in ("seed_resize_from_w", "seed_resize_from_h"):
                value = max(0, int(value or 0))
            setattr(request, target, value)
        if self.override_settings:
            request.extra["override_settings"] = {**request.extra.get("override_settings", {}),
                                                  **self.override_settings}
        if self.script_args_by_title:
            request.script_args = {**request.script_args, **self.script_args_by_title}
        request.save_images = not self.do_not_save_samples
        request.do_not_save_grid = bool(self.do_not_save_grid)

    @classmethod
    def from_request(cls, request, runner=None) -> "StableDiffusionProcessing":
        kind = StableDiffusionProcessingImg2Img if request.mode == "img2img" else StableDiffusionProcessingTxt2Img
        p = kind()
        p.read_from(request)
        p.scripts = runner
        return p

    def read_from(self, request) -> None:
        """Take every field p shares with `request` from it (what `from_request` fills in), keeping whatever else is
        set on p: an extension's own attributes, `extra_generation_params` (X/Y/Z plot brings a cell's p up to date
        after the axes that change only the request)."""
        services = RUNTIME.services
        fields = {**_SHARED_FIELDS, **(_IMG2IMG_FIELDS if request.mode == "img2img" else _HIRES_FIELDS)}
        for name, source in fields.items():
            value = getattr(request, source)
            setattr(self, name, list(value) if isinstance(value, list) else value)
        if request.mode == "img2img":
            self.mask_blur = request.mask_blur_x if request.mask_blur_x == request.mask_blur_y else None
        self.do_not_save_samples = not request.save_images
        self.do_not_save_grid = request.do_not_save_grid
        self.override_settings = dict(request.extra.get("override_settings") or {})
        self.script_args_by_title = {key: list(value) for key, value in request.script_args.items()}
        self.request = request
        self.sd_model = _current_model()
        if services is not None:
            mode = request.mode
            from webui.engine.batch_grid import grids_dir
            from webui.engine.saving import samples_dir
            options = RUNTIME.options_in_force  # the job's override_settings included, inside a job
            self.outpath_samples = str(samples_dir(options, services.paths.outputs, mode))
            self.outpath_grids = str(grids_dir(options, services.paths.outputs, mode))
        self.main_prompt, self.main_negative_prompt = self.prompt, self.negative_prompt

    def close(self):
        pass


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    is_img2img = False


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    is_img2img = True

    @property
    def image_mask(self):
        """A1111 keeps the constructor's `mask` as `image_mask` and scripts set that (Ultimate SD upscale's
        tiles): the same mask here."""
        return self.mask

    @image_mask.setter
    def image_mask(self, value) -> None:
        self.mask = value

    @property
    def mask_blur(self):
        """A1111's `mask_blur`: both directions' blur when they agree (None otherwise); setting it sets both."""
        x, y = getattr(self, "mask_blur_x", None), getattr(self, "mask_blur_y", None)
        return x if x == y else None

    @mask_blur.setter
    def mask_blur(self, value) -> None:
        if value is not None:
            self.mask_blur_x = self.mask_blur_y = value

    def _own_defaults(self) -> dict:
        return dict(_IMG2IMG_DEFAULTS)


class Processed:
    """What a run made, in A1111's shape (what `process_images` and a selectable script's `run` return)."""

    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None, all_negative_prompts=None,
                 all_seeds=None, all_subseeds=None, index_of_first_image=0, infotexts=None, comments=""):
        self.images = list(images_list)
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.subseed = subseed
        self.subseed_strength = p.subseed_strength
        self.info = info
        self.comments = comments
        self.width, self.height = p.width, p.height
        self.sampler_name = p.sampler_name
        self.cfg_scale = p.cfg_scale
        self.steps = p.steps
        self.batch_size = p.batch_size
        self.denoising_strength = getattr(p, "denoising_strength", None)
        self.extra_generation_params = p.extra_generation_params
        self.styles = p.styles
        self.sd_model_name = p.sd_model_name
        self.sd_model_hash = p.sd_model_hash
        self.all_prompts = all_prompts or p.all_prompts or [p.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [p.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [subseed]
        self.index_of_first_image = index_of_first_image
        self.infotexts = infotexts or [info] * len(self.images)
        self.job_timestamp = ""
        self.warnings: list[str] = []
        self.result = None  # ours: the GenerationResult behind it, when the server made it

    def js(self) -> str:
        return json.dumps({
            "prompt": self.prompt, "all_prompts": self.all_prompts, "negative_prompt": self.negative_prompt,
            "all_negative_prompts": self.all_negative_prompts, "seed": self.seed, "all_seeds": self.all_seeds,
            "subseed": self.subseed, "all_subseeds": self.all_subseeds, "width": self.width, "height": self.height,
            "sampler_name": self.sampler_name, "cfg_scale": self.cfg_scale, "steps": self.steps,
            "batch_size": self.batch_size, "sd_model_name": self.sd_model_name, "sd_model_hash": self.sd_model_hash,
            "extra_generation_params": self.extra_generation_params, "index_of_first_image": self.index_of_first_image,
            "infotexts": self.infotexts, "styles": self.styles, "job_timestamp": self.job_timestamp,
        }, default=str)

    def infotext(self, p, index):
        return self.infotexts[index] if 0 <= index < len(self.infotexts) else ""


def get_fixed_seed(seed) -> int:
    """A seed as a number: -1, empty, None or text that is not a number become a random seed."""
    if isinstance(seed, str):
        try:
            seed = int(seed.strip())
        except ValueError:
            seed = -1
    if seed is None or seed == -1:
        return int(random.randrange(4294967294))
    return int(seed)


def fix_seed(p) -> None:
    """Replace -1 seeds with random ones (as A1111, before a script needs the real numbers)."""
    p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


def create_binary_mask(image, round=True):  # noqa: A002 - A1111's argument name
    """A mask ("L") from an image: its alpha channel when it has transparency, else its grey levels; with
    `round`, the alpha is cut to black/white at half (above 128 -> 255)."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        alpha = image.getchannel("A")
        return alpha.point(lambda value: 255 if value > 128 else 0) if round else alpha
    return image.convert("L")


# A1111 functions that work on its model objects (see webui/extensions/problems.py).
A1111_INTERNALS = {name: "LDM model internals" for name in (
    "decode_first_stage", "decode_latent_batch", "txt2img_image_conditioning", "img2img_image_conditioning",
    "images_tensor_to_samples", "samples_to_images_tensor")}


def __getattr__(name: str):
    if name in A1111_INTERNALS:
        from webui.extensions.problems import ModelInternalsError
        raise ModelInternalsError(f"modules.processing.{name}", A1111_INTERNALS[name])
    raise AttributeError(f"module 'modules.processing' has no attribute {name!r}")


MAX_NESTING = 8


def process_images(p) -> Processed:
    """Generate what `p` asks for, through the same engine (and extension hooks) as every other generation.
    Inside a running job (a selectable script's `run`) it runs on the spot; elsewhere it is queued and waited
    for."""
    from webui.extensions.a1111.script_hooks import P_KEY
    services = RUNTIME.require()
    if RUNTIME.nesting >= MAX_NESTING:
        raise RuntimeError(f"process_images nested {MAX_NESTING} deep: an extension keeps calling it from its own "
                           "hooks (guard the inner call, e.g. with a flag on p)")
    request = p.to_request()
    request.script_name, request.script_run_args = "", []  # the selected script's run() is what called us
    request.context[P_KEY] = p  # the hooks of this run see this very p
    control = RUNTIME.job_control
    if control is not None:
        with RUNTIME.nested():
            result = services.run_request(request, control)
    else:
        job = services.generate(request)
        job.wait()
        if job.exception is not None:
            raise job.exception
        if job.result is None:
            raise RuntimeError(f"the generation did not finish: {job.error or job.state}")
        result = job.result
    return processed_from_result(p, result)


def processed_from_result(p, result) -> Processed:
    processed = Processed(p, result.images, seed=result.seed, info=result.infotexts[0] if result.infotexts else "",
                          subseed=result.subseed, all_prompts=result.prompts,
                          all_negative_prompts=result.negative_prompts, all_seeds=result.seeds,
                          all_subseeds=result.subseeds, infotexts=result.infotexts,
                          index_of_first_image=result.index_of_first_image)
    processed.job_timestamp = result.job_timestamp
    processed.warnings = list(result.warnings)
    processed.result = result
    return processed


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0,
                    use_main_prompt=False, index=None, all_negative_prompts=None):
    """The infotext A1111 would write for image `index` of p (the main fields and p.extra_generation_params)."""
    from webui import __version__
    from webui.outputs.infotext import build_infotext
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    negatives = all_negative_prompts or p.all_negative_prompts or [p.negative_prompt]
    model = _current_model()
    params = {
        "Steps": p.steps, "Sampler": p.sampler_name, "Schedule type": p.scheduler, "CFG scale": p.cfg_scale,
        "Seed": all_seeds[index] if all_seeds else p.seed, "Size": f"{p.width}x{p.height}",
        "Model hash": model.sd_model_hash if model is not None else None,
        "Model": model.sd_checkpoint_info.name_for_extra if model is not None else None,
        "Denoising strength": (getattr(p, "denoising_strength", None)
                               if p.is_img2img or getattr(p, "enable_hr", False) else None),
        **p.extra_generation_params, "Version": f"v{__version__}",
    }
    prompt = p.main_prompt if use_main_prompt else all_prompts[index]
    negative = p.main_negative_prompt if use_main_prompt else negatives[min(index, len(negatives) - 1)]
    return build_infotext(prompt, negative, params)


def _current_model():
    if RUNTIME.services is None:
        return None
    from modules import shared
    return shared.sd_model
