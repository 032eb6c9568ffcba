"""ControlNet in the HTTP API, as A1111's ControlNet extension serves it: units from a generation body's
`alwayson_scripts`, the detected maps appended to the response, and the `/controlnet/*` routes (version, model and
module lists, control types, settings, detect)."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from fastapi import APIRouter, FastAPI
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from ..control.preprocessors import UnknownPreprocessorError
from ..control.types import CONTROL_TYPES, models_for_type
from ..control.units import NO_MODEL, ControlUnit, processor_values
from ..core.errors import RequestError
from ..models.controlnet_registry import UnknownControlNetError
from ..outputs.save import decode_image_base64, encode_png_base64

ALWAYSON_KEY = "controlnet"  # matched case-insensitively ("ControlNet" too)
API_VERSION = 2  # what A1111's extension answers on /controlnet/version; clients only compare it
IMAGE_KEYS = ("image", "input_image", "mask")  # left out of the `parameters` echo, like init_images
# Unit fields a client sets directly (the images are decoded separately).
_PLAIN_FIELDS = tuple(f.name for f in fields(ControlUnit) if f.name not in ("image", "mask"))
_LEGACY_NAMES = {"lowvram": "low_vram"}  # A1111's 1.0 API spelling


# --- units from alwayson_scripts -----------------------------------------------------------------------------------
def _controlnet_entry(alwayson_scripts: dict[str, Any] | None) -> tuple[str, Any] | None:
    for key, value in (alwayson_scripts or {}).items():
        if str(key).strip().lower() == ALWAYSON_KEY:
            return key, value
    return None


def units_from_alwayson(alwayson_scripts: dict[str, Any] | None) -> list[ControlUnit]:
    """The ControlNet units of `alwayson_scripts` (`{"controlnet": {"args": [unit, ...]}}`), decoded and validated;
    none when the key is absent. Bad values raise RequestError naming the unit and field."""
    entry = _controlnet_entry(alwayson_scripts)
    if entry is None:
        return []
    key, value = entry
    args = (value.get("args") or []) if isinstance(value, dict) else None
    if not isinstance(args, list):
        raise RequestError("alwayson_scripts", f"alwayson_scripts.{key} must be {{\"args\": [unit, ...]}}, "
                           f"got {type(value).__name__}")
    return [unit_from_json(index, data) for index, data in enumerate(args)]


def unit_from_json(index: int, data: Any) -> ControlUnit:
    """One unit object (A1111's field names; unknown keys ignored) as a validated ControlUnit."""
    if not isinstance(data, dict):
        raise RequestError(f"controlnet_units[{index}]",
                           f"ControlNet unit {index}: must be an object of unit fields, got {type(data).__name__}")
    data = {_LEGACY_NAMES.get(key, key): value for key, value in data.items()}
    values = {name: data[name] for name in _PLAIN_FIELDS if data.get(name) is not None}
    unit = ControlUnit(**values)
    image_field = "image" if data.get("image") not in (None, "", {}) else "input_image"
    given = data.get(image_field)
    if isinstance(given, dict):  # A1111's {"image": b64, "mask": b64}
        unit.image = _decode(index, f"{image_field}.image", given.get("image"))
        unit.mask = _decode(index, f"{image_field}.mask", given.get("mask"))
    elif given is not None and not isinstance(given, str):
        raise RequestError(f"controlnet_units[{index}].{image_field}",
                           f"ControlNet unit {index}: {image_field} must be a base64 image or "
                           f"{{\"image\": ..., \"mask\": ...}}, got {type(given).__name__}")
    else:
        unit.image = _decode(index, image_field, given)
    if data.get("mask") not in (None, ""):
        unit.mask = _decode(index, "mask", data["mask"])
    if str(unit.model or "").strip().lower() == NO_MODEL.lower():
        unit.model = NO_MODEL
    if "enabled" not in data:  # the extension's units default to enabled, and clients such as webuiapi never send
        unit.enabled = unit.model != NO_MODEL  # the key; a unit naming no model could not act anyway
    return unit.validate(index)


def _decode(index: int, field_name: str, data: Any) -> Image.Image | None:
    if data in (None, ""):
        return None
    try:
        return decode_image_base64(data)
    except ValueError as exc:
        raise RequestError(f"controlnet_units[{index}].{field_name.split('.')[0]}",
                           f"ControlNet unit {index}: {field_name}: {exc}") from None


def check_units_known(units: list[ControlUnit], services) -> None:
    """Refuse (RequestError, an HTTP 422) an enabled unit whose module or model is not installed, so the client
    hears it now rather than from a failed job. Model "None" passes: the engine skips that unit with a warning."""
    for index, unit in enumerate(units):
        if not unit.enabled:
            continue
        try:
            services.preprocessors.get(unit.module)
        except UnknownPreprocessorError as exc:
            raise RequestError(f"controlnet_units[{index}].module", f"ControlNet unit {index}: unknown "
                               f"preprocessor (module) {unit.module!r}; known: {', '.join(exc.known)}") from None
        if unit.model != NO_MODEL:
            _resolve_model(index, unit.model, services.controlnets)


def _resolve_model(index: int, model: str, registry):
    try:
        return registry.resolve(model)
    except UnknownControlNetError:
        registry.refresh()  # a file added since the last listing
    try:
        return registry.resolve(model)
    except UnknownControlNetError as exc:
        known = ", ".join(exc.available) or "none (put ControlNet models in models/ControlNet)"
        raise RequestError(f"controlnet_units[{index}].model", f"ControlNet unit {index}: unknown ControlNet "
                           f"model {model!r}; available: {known}") from None


# --- responses -----------------------------------------------------------------------------------------------------
def detected_maps(result, services, overrides: dict[str, Any] | None = None) -> list[str]:
    """The detected maps to append to `images` (base64 PNG): the result's maps unless the option
    `control_net_no_detectmap` (or a request's override of it) says not to."""
    overrides = overrides or {}
    skip = overrides["control_net_no_detectmap"] if "control_net_no_detectmap" in overrides \
        else services.options.get("control_net_no_detectmap")
    if skip:
        return []
    return [encode_png_base64(image, None) for image in getattr(result, "control_maps", None) or []]


def strip_unit_images(params: dict[str, Any]) -> None:
    """Leave the units' base64 images out of a `parameters` echo (in place), as init_images are."""
    entry = _controlnet_entry(params.get("alwayson_scripts"))
    if entry is None or not isinstance(entry[1], dict) or not isinstance(entry[1].get("args"), list):
        return
    key, value = entry
    units = [{k: v for k, v in unit.items() if k not in IMAGE_KEYS} if isinstance(unit, dict) else unit
             for unit in value["args"]]
    params["alwayson_scripts"] = {**params["alwayson_scripts"], key: {**value, "args": units}}


# --- /controlnet routes --------------------------------------------------------------------------------------------
class DetectBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_masks: list[str] | None = None
    controlnet_processor_res: float = -1  # -1: the module's default (A1111's route defaults to 512)
    controlnet_threshold_a: float = -1  # -1: the module's default (A1111's route defaults to 64)
    controlnet_threshold_b: float = -1
    low_vram: bool = False  # accepted; preprocessors always run the same way


def module_detail(services) -> dict[str, dict[str, Any]]:
    """A1111's module_detail: per module, whether it needs no model and its sliders (resolution, thresholds)."""
    return {entry.name: {"model_free": entry.model_free,
                         "sliders": [slider.as_api() if slider is not None else None for slider in entry.sliders()]}
            for entry in services.preprocessors.catalogue()}


def control_types(services) -> dict[str, dict[str, Any]]:
    """A1111's control_types: per type, its modules and models and the ones picked by default."""
    titles = services.controlnets.titles()
    listing = {}
    for entry in CONTROL_TYPES:
        modules = services.preprocessors.for_type(entry.name)
        models = models_for_type(entry.name, titles)
        default_module = entry.default_module if entry.default_module in modules else \
            (modules[1] if len(modules) > 1 else modules[0])
        default_model = models[1] if entry.name != "All" and len(models) > 1 else NO_MODEL
        listing[entry.name] = {"module_list": modules, "model_list": models, "default_option": default_module,
                               "default_model": default_model}
    return listing


def run_detect(body: DetectBody, services) -> list[str]:
    """The maps of `body.controlnet_input_images` (base64 PNG). Raises RequestError for bad input (the processor
    resolution and thresholds as a unit's: -1 or 64..4096, finite) and the preprocessor errors for modules that
    cannot run."""
    services.preprocessors.get(body.controlnet_module)  # unknown modules fail before any decoding

    def fail(name: str, message: str):
        raise RequestError(name, message)

    res, threshold_a, threshold_b = processor_values(body.controlnet_processor_res, body.controlnet_threshold_a,
                                                     body.controlnet_threshold_b, fail, prefix="controlnet_")
    if not body.controlnet_input_images:
        raise RequestError("controlnet_input_images", "controlnet_input_images: give at least one base64 image")
    masks = list(body.controlnet_masks or [])
    if masks and len(masks) != len(body.controlnet_input_images):
        raise RequestError("controlnet_masks", f"controlnet_masks: give one mask per input image "
                           f"({len(body.controlnet_input_images)}), got {len(masks)}")
    maps = []
    for index, data in enumerate(body.controlnet_input_images):
        image = _decode_detect("controlnet_input_images", index, data)
        mask = _decode_detect("controlnet_masks", index, masks[index]) if masks and masks[index] else None
        result = services.preprocessors.run(body.controlnet_module, image, res, threshold_a, threshold_b, mask=mask)
        maps.append(encode_png_base64(result, None))
    return maps


def _decode_detect(field_name: str, index: int, data: str) -> Image.Image:
    try:
        return decode_image_base64(data)
    except ValueError as exc:
        raise RequestError(field_name, f"{field_name}[{index}]: {exc}") from None


def install_controlnet_routes(app: FastAPI, services, dependencies: list) -> None:
    """Mount `/controlnet/*` on `app`, behind the same `dependencies` (the --api-auth check) as /sdapi."""

    router = APIRouter(prefix="/controlnet", dependencies=dependencies, tags=["controlnet"])

    @router.get("/version")
    def version():
        return {"version": API_VERSION}

    @router.get("/model_list")
    def model_list(update: bool = True):
        if update:
            services.controlnets.refresh()
        return {"model_list": services.controlnets.titles()}

    @router.get("/module_list")
    def module_list(alias_names: bool = False):
        # Our module names are the ones A1111 shows (its "alias names"), so both forms list the same names; the
        # units and /detect accept A1111's internal keys too.
        return {"module_list": services.preprocessors.names(), "module_detail": module_detail(services)}

    @router.get("/control_types")
    def list_control_types():
        return {"control_types": control_types(services)}

    @router.get("/settings")
    def settings():
        return {"control_net_unit_count": int(services.options.get("control_net_unit_count"))}

    @router.post("/detect")
    def detect(body: DetectBody):  # a sync route: FastAPI runs it on its threadpool, off the event loop
        # unknown modules, bad values and images, preprocessors that cannot run: user errors, 422s
        return {"images": run_detect(body, services), "info": "Success"}

    app.include_router(router)
