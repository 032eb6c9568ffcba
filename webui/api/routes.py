"""A1111-compatible HTTP routes (`/sdapi/v1/*`). They translate JSON to a GenerationRequest and back; the work
happens in the queue and the engine."""
from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core import samplers
from ..core.errors import RefusedError, RequestError, UserError
from ..core.request import FolderBatch, GenerationRequest, Outpaint
from ..engine.engine import GenerationResult
from ..engine.preview import preview_every, shared_preview
from ..outputs.infotext import parse_infotext
from ..outputs.save import decode_image_base64, encode_png_base64, read_infotext
from ..settings.options import OptionRestrictedError
from .controlnet import check_units_known, detected_maps, install_controlnet_routes, strip_unit_images, \
    units_from_alwayson
from .errors import ApiError, classify as _classify, error_body, run_job
from .extension_routes import install_extension_api_routes
from .extras_routes import install_extras_routes
from .infotext_fields import apply_infotext
from .library_routes import install_library_routes
from .limits import BodyLimit
from .merge_routes import install_merge_routes
from .models import (Img2ImgBody, ImagesResponse, PNGInfoBody, PNGInfoResponse, ProgressResponse, ProgressState,
                     SDModelItem, Txt2ImgBody)
from .queue_routes import install_queue_routes
from .scripts import apply_alwayson, apply_script
from .server_routes import install_server_routes

log = logging.getLogger(__name__)


def _auth_dependency(logins: list[tuple[str, str]]):
    if not logins:
        return []
    basic = HTTPBasic()

    def check(credentials: HTTPBasicCredentials = Depends(basic)) -> None:
        for user, password in logins:
            if secrets.compare_digest(credentials.username, user) and \
                    secrets.compare_digest(credentials.password, password):
                return
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return [Depends(check)]


def _request_from_body(body: Txt2ImgBody, mode: str, allow_folders: bool = True, host=None,
                       setting=None) -> GenerationRequest:
    """The GenerationRequest an API body asks for. `allow_folders` False (--hide-ui-dir-config) refuses the
    folder-batch fields with a 403."""
    body = apply_infotext(body, setting)
    request = GenerationRequest(
        mode=mode, prompt=body.prompt, negative_prompt=body.negative_prompt,
        sampler_name=body.sampler_name or body.sampler_index or "Euler", scheduler=body.scheduler or "Automatic",
        steps=body.steps, cfg_scale=body.cfg_scale, distilled_cfg_scale=body.distilled_cfg_scale, seed=body.seed,
        subseed=body.subseed,
        subseed_strength=body.subseed_strength, seed_resize_from_w=max(0, body.seed_resize_from_w),
        seed_resize_from_h=max(0, body.seed_resize_from_h), width=body.width, height=body.height,
        batch_size=body.batch_size, n_iter=body.n_iter, tiling=bool(body.tiling), eta=body.eta,
        restore_faces=body.restore_faces,
        s_churn=body.s_churn, s_tmin=body.s_tmin, s_tmax=body.s_tmax, s_noise=body.s_noise,
        save_images=body.save_images and not body.do_not_save_samples, styles=list(body.styles or []),
        do_not_save_grid=not body.save_images or body.do_not_save_grid,  # A1111: batch grids only with save_images
        extra={"override_settings": dict(body.override_settings or {}),
               "override_settings_restore_afterwards": body.override_settings_restore_afterwards},
    )
    request.refiner_checkpoint = body.refiner_checkpoint  # A1111's refiner fields, same names on the request
    if body.refiner_switch_at is not None:
        request.refiner_switch_at = body.refiner_switch_at
    if isinstance(body, Img2ImgBody):
        _apply_img2img_fields(body, request, allow_folders)
    elif body.enable_hr:  # hires fix: A1111's fields, same names on the request
        for name in ("enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
                     "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"):
            setattr(request, name, getattr(body, name))
        request.denoising_strength = 0.75 if body.denoising_strength is None else body.denoising_strength
    request.controlnet_units = units_from_alwayson(body.alwayson_scripts)
    apply_alwayson(body.alwayson_scripts, request, mode, host)
    apply_script(body.script_name, body.script_args, request, mode, host)
    return request


def _decode_field(name: str, data: str) -> Image.Image:
    try:
        return decode_image_base64(data)
    except ValueError as exc:
        raise RequestError(name.split("[")[0], f"{name}: {exc}") from None


def _apply_img2img_fields(body: Img2ImgBody, request: GenerationRequest, allow_folders: bool) -> None:
    """init images, mask and the inpaint fields with A1111's meanings; outpaint and the batch folders (ours)."""
    request.denoising_strength = 0.75 if body.denoising_strength is None else body.denoising_strength
    request.resize_mode = body.resize_mode
    request.init_images = [_decode_field(f"init_images[{index}]", data)
                           for index, data in enumerate(body.init_images or [])]
    request.mask = _decode_field("mask", body.mask) if body.mask else None
    if body.mask_blur is not None:  # A1111: `mask_blur` sets both directions
        request.mask_blur_x = request.mask_blur_y = body.mask_blur
    else:
        request.mask_blur_x, request.mask_blur_y = body.mask_blur_x, body.mask_blur_y
    request.inpainting_fill = body.inpainting_fill
    request.inpaint_full_res = body.inpaint_full_res
    request.inpaint_full_res_padding = body.inpaint_full_res_padding
    request.inpainting_mask_invert = body.inpainting_mask_invert
    request.initial_noise_multiplier = 1.0 if body.initial_noise_multiplier is None \
        else body.initial_noise_multiplier
    if body.outpaint is not None:
        request.outpaint = Outpaint(**body.outpaint.model_dump())
    request.folder_batch = _folder_batch(body, allow_folders)


_FOLDER_FIELDS = ("img2img_batch_input_dir", "img2img_batch_output_dir", "img2img_batch_inpaint_mask_dir")


def _folder_batch(body: Img2ImgBody, allow_folders: bool) -> FolderBatch | None:
    given = [name for name in _FOLDER_FIELDS if (getattr(body, name) or "").strip()]
    if not given:
        return None
    if not allow_folders:
        raise RefusedError(f"{', '.join(given)}: this server runs with --hide-ui-dir-config, which refuses "
                           "server folder paths (img2img batch from a folder)", kind="FolderBatchDisabled")
    if "img2img_batch_input_dir" not in given:
        raise RequestError("img2img_batch_input_dir", f"{', '.join(given)} need img2img_batch_input_dir, the "
                           "folder of images to process")
    return FolderBatch(input_dir=body.img2img_batch_input_dir, output_dir=body.img2img_batch_output_dir or "",
                       mask_dir=body.img2img_batch_inpaint_mask_dir or "")


def _uses_inpainting_conditioning(services, result: GenerationResult) -> bool:
    """A1111's `is_using_inpainting_conditioning`: the checkpoint that made the images is an inpainting one
    (9-channel UNet). Taken from the result when the engine says, else from the loaded model that made it."""
    said = getattr(result, "is_using_inpainting_conditioning", None)
    if said is not None:
        return bool(said)
    if "Conditional mask weight" in result.extra_params:  # the engine writes it for inpainting checkpoints only
        return True
    current = services.models.current
    if current is None:
        return False
    info, model = current
    return bool(model.inpainting) and (info.name_for_extra, info.shorthash) == (result.model_name, result.model_hash)


def _face_restoration(result: GenerationResult) -> str | None:
    """The face restorer the run used, as its images' infotext names it (None: faces were left alone)."""
    for text in result.infotexts[result.index_of_first_image:][:1]:
        return parse_infotext(text).get("Face restoration") or None
    return None


def _info_json(result: GenerationResult, request: GenerationRequest, inpainting_conditioning: bool = False) -> str:
    return json.dumps({
        "prompt": request.prompt, "all_prompts": result.prompts, "negative_prompt": request.negative_prompt,
        "all_negative_prompts": result.negative_prompts, "seed": result.seed, "all_seeds": result.seeds,
        "subseed": result.subseed, "all_subseeds": result.subseeds, "subseed_strength": request.subseed_strength,
        "width": request.width, "height": request.height, "sampler_name": request.sampler_name,
        "scheduler": request.scheduler, "cfg_scale": request.cfg_scale,
        "distilled_cfg_scale": request.distilled_cfg_scale, "steps": request.steps,
        "batch_size": request.batch_size, "restore_faces": _face_restoration(result) is not None,
        "face_restoration_model": _face_restoration(result),
        "sd_model_name": result.model_name, "sd_model_hash": result.model_hash,
        "sd_vae_name": result.extra_params.get("VAE"), "sd_vae_hash": result.extra_params.get("VAE hash"),
        "seed_resize_from_w": request.seed_resize_from_w or -1, "seed_resize_from_h": request.seed_resize_from_h or -1,
        "denoising_strength": request.denoising_strength if request.mode == "img2img" or request.enable_hr
        else None,
        "extra_generation_params": {k: v for k, v in result.extra_params.items() if v is not None},
        "index_of_first_image": result.index_of_first_image, "infotexts": result.infotexts,
        "styles": list(request.styles), "job_timestamp": result.job_timestamp, "clip_skip": request.clip_skip or 1,
        "is_using_inpainting_conditioning": inpainting_conditioning, "version": None, "warnings": result.warnings,
        "interrupted": result.interrupted, "saved_paths": result.saved_paths,
    })


def _refuse_locked_options(services, changes: dict | None, where: str = "") -> None:
    """A 403 naming the option when `changes` would change one --hide-ui-dir-config locks (an output folder, a
    file-name pattern, an option an extension marks restricted); checked before anything is queued."""
    try:
        services.options.check_unlocked(dict(changes or {}))
    except OptionRestrictedError as exc:
        raise ApiError(403, exc.kind, f"{where}: {exc}" if where else str(exc)) from None


def _infotext_setting(services, option: str, value: str):
    """An infotext value as the option's value; None when this server has no such option or the value does not
    fit it (a checkpoint it does not have, a VAE it does not know): A1111 leaves those out too."""
    if option not in services.options.specs:
        return None
    try:
        return services.infotext_setting(option, value)  # as the UI's Override settings take it
    except (ValueError, KeyError, UserError):
        return None


def _validation_problem(error: dict) -> str:
    """One pydantic error as "field: message"; a body that is not JSON says where it broke."""
    if error.get("type") == "json_invalid":
        position = error["loc"][1] if len(error["loc"]) > 1 else "?"
        return f"body: invalid JSON at character {position} ({error.get('ctx', {}).get('error', error['msg'])})"
    return f"{'.'.join(str(p) for p in error['loc'][1:]) or 'body'}: {error['msg']}"


def _unreadable_body(request: Request, exc: StarletteHTTPException) -> str | None:
    """What FastAPI's 400 "There was an error parsing the body" hides when `json.loads` refuses a body without a
    JSONDecodeError (bytes that are not UTF-8, a number over Python's 4300-digit limit, nesting past the recursion
    limit), said as malformed JSON is; None for any other HTTP error (a form's, say)."""
    cause, kind = exc.__cause__, request.headers.get("content-type", "")
    if exc.status_code != 400 or kind.startswith(("multipart/", "application/x-www-form-urlencoded")):
        return None
    if isinstance(cause, UnicodeDecodeError):
        return f"body: invalid JSON, not UTF-8 (byte 0x{cause.object[cause.start]:02x} at position {cause.start})"
    if isinstance(cause, RecursionError):
        return "body: invalid JSON, nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):  # int("9" * 5000)
        return f"body: invalid JSON, a number longer than {sys.get_int_max_str_digits()} digits"
    return None


def _progress_answer(answer: ProgressResponse) -> JSONResponse:
    """A1111's /progress shape; `workers` only with a pool (A1111 has no such key)."""
    from fastapi.encoders import jsonable_encoder
    return JSONResponse(jsonable_encoder(answer, exclude={"workers"} if answer.workers is None else None))


def _preview_base64(services, job) -> str | None:
    """The running job's live preview as base64 PNG (the one of its current N steps, shared with the other
    followers); None when live previews are off or the job has not sampled a step yet."""
    try:
        _, image = shared_preview(job.control, preview_every(services.options))
    except Exception:  # noqa: BLE001 - a preview is a nicety: never fail the progress poll for it
        log.exception("could not render a live preview")
        return None
    return encode_png_base64(image, None) if image is not None else None


def install_api(app: FastAPI, services, logins: list[tuple[str, str]] | None = None) -> None:
    auth = _auth_dependency(logins or [])
    router = APIRouter(prefix="/sdapi/v1", dependencies=auth, tags=["sdapi"])

    @app.exception_handler(UserError)
    async def _user_error(_: Request, exc: UserError):  # the one family: its status, kind and message
        return JSONResponse(status_code=exc.status, content=error_body(exc.kind, str(exc)))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):  # a bug of ours: still JSON in A1111's shape (and logged)
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content=error_body(type(exc).__name__, str(exc)))

    app.add_middleware(BodyLimit)  # 413 for bodies over MAX_BODY_BYTES, before they are read

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        problems = "; ".join(_validation_problem(e) for e in exc.errors())
        return JSONResponse(status_code=422, content=error_body("ValidationError", problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):  # FastAPI's own, but for undecodable JSON
        problem = _unreadable_body(request, exc)
        if problem is None:
            return await http_exception_handler(request, exc)
        return JSONResponse(status_code=422, content=error_body("ValidationError", problem))

    allow_folders = not getattr(services.flags, "hide_ui_dir_config", False)

    def generate(body: Txt2ImgBody, mode: str) -> dict:
        _refuse_locked_options(services, body.override_settings, "override_settings")
        try:
            request = _request_from_body(body, mode, allow_folders, services.extension_host,
                                         lambda option, value: _infotext_setting(services, option, value))
            check_units_known(request.controlnet_units, services)
        except (ValueError, KeyError) as exc:
            raise _classify(exc) from None
        job = run_job(lambda: services.generate(request, task_id=body.force_task_id, source="api"))
        result: GenerationResult = job.result
        params = body.model_dump()
        if not getattr(body, "include_init_images", False):  # A1111 leaves the (large) inputs out of the echo
            params.pop("init_images", None)
            params.pop("mask", None)
            strip_unit_images(params)
        images = [encode_png_base64(image, text) for image, text in zip(result.images, result.infotexts)]
        images += detected_maps(result, services, request.extra.get("override_settings"))
        return {"images": images if body.send_images else [], "parameters": params,
                "info": _info_json(result, request, _uses_inpainting_conditioning(services, result))}

    @router.post("/txt2img", response_model=ImagesResponse)
    def txt2img(body: Txt2ImgBody):
        return generate(body, "txt2img")

    @router.post("/img2img", response_model=ImagesResponse)
    def img2img(body: Img2ImgBody):
        return generate(body, "img2img")

    @router.get("/progress", response_model=ProgressResponse)
    def progress(skip_current_image: bool = False, job: str | None = None):
        """The running job's progress (in a pool: the job named, else the one that started first, and every
        worker's state in `workers`)."""
        pool = services.queue.pool
        workers = pool.status() if pool is not None else None
        wanted = services.queue.get(job) if job else None
        job = wanted if wanted is not None and wanted.state == "running" else services.queue.running
        if job is None:
            return _progress_answer(ProgressResponse(progress=0.0, eta_relative=0.0, state=ProgressState(),
                                                     textinfo=None, workers=workers))
        p = job.control.progress
        state = ProgressState(skipped=job.control.skip_requested, interrupted=job.control.interrupted, job=job.id,
                              job_count=p.job_count,
                              job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or 0)),
                              job_no=p.job_no,
                              sampling_step=p.sampling_step, sampling_steps=p.sampling_steps)
        return _progress_answer(ProgressResponse(
            progress=round(p.fraction, 4), eta_relative=round(p.eta_seconds, 2), state=state,
            current_image=None if skip_current_image else _preview_base64(services, job), textinfo=p.textinfo,
            workers=workers))

    @router.post("/interrupt")
    def interrupt():
        services.queue.interrupt()
        return {}

    @router.post("/skip")
    def skip():
        services.queue.skip()
        return {}

    @router.get("/samplers")
    def list_samplers():
        return samplers.sampler_listing()

    @router.get("/schedulers")
    def list_schedulers():
        return samplers.schedule_listing()

    @router.get("/sd-models", response_model=list[SDModelItem])
    def sd_models():
        from ..pool_head import pool_checkpoints
        runnable = pool_checkpoints(services)  # in a pool: what some worker has
        return [SDModelItem(title=c.title, model_name=c.model_name, hash=c.shorthash, sha256=c.sha256,
                            filename=str(c.path), config=str(c.config) if c.config else None)
                for c in services.models.checkpoints() if runnable is None or c.name in runnable]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints():
        services.models.refresh()
        if services.queue.pool is not None:
            services.queue.pool.refresh()
        return {}

    @router.get("/options")
    def get_options():
        values = services.options.as_dict()
        values["sd_model_checkpoint"] = services.models.current_title() or values.get("sd_model_checkpoint")
        return values

    @router.post("/options")
    def set_options(changes: dict[str, Any]):
        """Applied in the queue, between jobs (a checkpoint switch waits for the running generation)."""
        _refuse_locked_options(services, changes)
        run_job(lambda: services.set_options(changes, source="api"))
        return {}

    @router.post("/png-info", response_model=PNGInfoResponse)
    def png_info(body: PNGInfoBody):
        try:
            image = decode_image_base64(body.image)
        except ValueError as exc:
            raise ApiError(422, "InvalidImage", f"image: {exc}") from None
        text = read_infotext(image) or ""
        items = {k: v for k, v in image.info.items() if isinstance(v, (str, int, float))}
        return PNGInfoResponse(info=text, items=items, parameters=parse_infotext(text) if text else {})

    install_server_routes(router, services, getattr(services.flags, "api_server_stop", False))
    install_library_routes(router, services)
    install_extras_routes(router, services)
    install_merge_routes(router, services)
    install_extension_api_routes(router, services)
    app.include_router(router)
    install_controlnet_routes(app, services, auth)
    install_queue_routes(app, services, auth)
