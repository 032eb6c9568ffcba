"""A1111's Extras and upscaler routes: `extra-single-image`, `extra-batch-images` (queued as "extras" jobs, so their
GPU work is ordered with the generations), and the listings `upscalers`, `latent-upscale-modes`,
`realesrgan-models` and `face-restorers` (the face restoration models installed)."""
from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from ..core.errors import RequestError
from ..engine.extras import ExtrasRequest
from ..engine.hires import LATENT_UPSCALE_MODES
from ..outputs.save import decode_image_base64, encode_png_base64
from .errors import ApiError, run_job


class ExtrasBody(BaseModel):
    """A1111's ExtrasBaseRequest fields and defaults."""
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)  # NaN / Infinity: a 422 naming the field
    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False
    # not in A1111 1.10 (its API gives extensions' Extras operations no values): the values of their controls,
    # {operation name: {"args": [...]} or {argument name: value}}; left out: the controls' defaults
    alwayson_scripts: dict | None = None


class ExtrasSingleBody(ExtrasBody):
    image: str = ""


class FileData(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchBody(ExtrasBody):
    imageList: list[FileData] = []  # noqa: N815 - A1111's wire name


def _decode(data: str, field: str):
    if not data:
        raise RequestError(field, f"{field}: no image given")
    try:
        return decode_image_base64(data)
    except ValueError as exc:
        raise RequestError(field, f"{field}: {exc}") from None


def _request(body: ExtrasBody, images: list, services=None) -> ExtrasRequest:
    fields = body.model_dump(exclude={"image", "imageList", "show_extras_results", "alwayson_scripts"})
    host = getattr(services, "extension_host", None)
    runner = getattr(host, "postprocessing", None)
    if runner is not None:
        script_args = runner.resolve_args(body.alwayson_scripts)
    elif body.alwayson_scripts:
        raise RequestError("alwayson_scripts", "alwayson_scripts: no extension adds Extras operations here")
    else:
        script_args = {}
    return ExtrasRequest(images=images, save=False, script_args=script_args,
                         **fields)  # A1111's API does not save extras results


def install_extras_routes(router: APIRouter, services) -> None:
    def run(request: ExtrasRequest):
        return run_job(lambda: services.extras(request, source="api")).result

    @router.post("/extra-single-image")
    def extra_single_image(body: ExtrasSingleBody):
        try:
            request = _request(body, [(_decode(body.image, "image"), "image")], services)
        except RequestError as exc:
            raise ApiError(422, "InvalidImage" if exc.field != "alwayson_scripts" else exc.kind, str(exc)) from None
        result = run(request)
        image = encode_png_base64(result.images[0], result.infotexts[0]) if result.images else None
        return {"html_info": result.html_info, "image": image}

    @router.post("/extra-batch-images")
    def extra_batch_images(body: ExtrasBatchBody):
        try:
            images = [(_decode(item.data, f"imageList[{index}].data"), item.name or f"image-{index}")
                      for index, item in enumerate(body.imageList)]
            request = _request(body, images, services)
        except RequestError as exc:
            raise ApiError(422, "InvalidImage" if exc.field != "alwayson_scripts" else exc.kind, str(exc)) from None
        result = run(request)
        return {"html_info": result.html_info,
                "images": [encode_png_base64(image, text) for image, text in zip(result.images, result.infotexts)]}

    @router.get("/upscalers")
    def upscalers():
        services.upscalers.refresh()
        return [{"name": info.name, "model_name": info.model_name,
                 "model_path": str(info.path) if info.path is not None else None, "model_url": None,
                 "scale": info.scale} for info in services.upscalers.list()]

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes():
        return [{"name": name} for name in LATENT_UPSCALE_MODES]

    @router.get("/realesrgan-models")
    def realesrgan_models():
        services.upscalers.refresh()
        return [{"name": info.name, "path": str(info.path), "scale": info.scale}
                for info in services.upscalers.list() if info.kind == "RealESRGAN"]

    @router.get("/face-restorers")
    def face_restorers():
        """A1111's shape; only the restorers whose model file is installed (A1111 lists the ones it could
        download), `cmd_dir` their folder."""
        if services.face_restorers is None:
            return []
        return [{"name": file.name, "cmd_dir": str(file.path.parent)} for file in services.face_restorers.installed()]
