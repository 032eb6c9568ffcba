"""Request and response bodies of the A1111-compatible API (field names and defaults as A1111's API)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    # unknown fields are ignored, as A1111's pydantic models do; NaN and Infinity (which Python's JSON reads) are
    # refused in every number field, used or not, with a 422 naming it
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class Txt2ImgBody(_Lenient):
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = "Euler"
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    distilled_cfg_scale: float = 3.5  # Forge's name: FLUX.1 dev's guidance embedding
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None  # A1111's sampler parameters; None: the setting (eta_ancestral / eta_ddim, s_*)
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    denoising_strength: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    send_images: bool = True
    save_images: bool = False
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list = Field(default_factory=list)
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None
    refiner_checkpoint: str | None = None  # A1111 1.6+'s refiner; None, "" or "None": no refiner
    refiner_switch_at: float | None = None  # None: 0.8 (the UI's default)
    # hires fix (txt2img only), A1111's fields and defaults (denoising_strength None: 0.75)
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None  # None: "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class OutpaintBody(_Lenient):
    """Our addition: extend the fitted init image by these many pixels (multiples of 8) and inpaint the new area."""
    left: int = 0
    right: int = 0
    up: int = 0
    down: int = 0
    fill: str = "edge"  # "edge" (stretch the border colours outwards) | "noise"
    overlap: int = 8  # how far the mask reaches back into the original, in pixels


class Img2ImgBody(Txt2ImgBody):
    init_images: list[str] | None = None
    resize_mode: int = 0
    denoising_strength: float | None = 0.75
    image_cfg_scale: float | None = None  # accepted for compatibility (instruct-pix2pix models only); unused
    # inpainting: A1111's API fields and defaults
    mask: str | None = None  # base64 image, white = inpaint
    mask_blur: int | None = None  # when given, sets both mask_blur_x and mask_blur_y
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = 0  # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpaint_full_res: bool = True  # "Only masked"
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0  # 1: inpaint what is not masked
    initial_noise_multiplier: float | None = None  # None: 1.0
    include_init_images: bool = False  # echo init_images and mask back in `parameters`
    # our additions
    outpaint: OutpaintBody | None = None
    img2img_batch_input_dir: str = ""  # img2img over every image of this server folder
    img2img_batch_output_dir: str = ""  # empty: the usual img2img output folder
    img2img_batch_inpaint_mask_dir: str = ""  # masks matched by file name (or one mask for all)


class ImagesResponse(BaseModel):
    images: list[str] | None = None
    parameters: dict[str, Any]
    info: str


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None
    # ours, with --workers / --ray-address: each worker's state, job, checkpoint and progress (A1111 clients ignore it)
    workers: list[dict] | None = None


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class PNGInfoBody(_Lenient):
    image: str


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]
