"""A1111's `modules.postprocessing`: the Extras operation called from an extension (`run_postprocessing`, and
the old `run_extras` signature the API used), run by our Extras engine right here (in the calling job or
thread, not through the queue), with the extensions' operations. Returns A1111's (images, html info, '')."""
from __future__ import annotations

import html
import os

from PIL import Image

from webui.engine.extras import ExtrasRequest, load_folder_images, run_extras as _run_engine
from webui.extensions.a1111.runtime import RUNTIME


def run_postprocessing(extras_mode, image, image_folder, input_dir, output_dir, show_extras_results, *args,
                       save_output: bool = True):
    """`args`: the flat values of `modules.scripts.scripts_postproc.setup_ui()`'s controls (extensions' operations;
    our built-in upscale / face restoration take their values through `run_extras`)."""
    runner = _runner()
    script_args = {}
    if runner is not None and args:
        scripts = runner.scripts_in_preferred_order()
        script_args = {str(s.name): {key: value for key, value in zip(s.controls or {}, args[s.args_from:s.args_to])
                                     if value is not None} for s in scripts if s.controls is not None}
    return _run(ExtrasRequest(images=_images(extras_mode, image, image_folder, input_dir), script_args=script_args,
                              save=bool(save_output), output_dir=str(output_dir or "") if extras_mode == 2 else ""),
                extras_mode, show_extras_results)


def run_extras(extras_mode, resize_mode, image, image_folder, input_dir, output_dir, show_extras_results,
               gfpgan_visibility, codeformer_visibility, codeformer_weight, upscaling_resize, upscaling_resize_w,
               upscaling_resize_h, upscaling_crop, extras_upscaler_1, extras_upscaler_2, extras_upscaler_2_visibility,
               upscale_first: bool, save_output: bool = True):
    """A1111's old handler: upscalers by name (or index into the upscaler list, as very old callers pass)."""
    services = RUNTIME.require()
    names = services.upscalers.names()
    pick = (lambda v: names[v] if isinstance(v, int) and 0 <= v < len(names) else str(v or "None"))
    request = ExtrasRequest(
        images=_images(extras_mode, image, image_folder, input_dir), resize_mode=int(resize_mode),
        upscaling_resize=upscaling_resize, upscaling_resize_w=upscaling_resize_w,
        upscaling_resize_h=upscaling_resize_h, upscaling_crop=bool(upscaling_crop),
        upscaler_1=pick(extras_upscaler_1), upscaler_2=pick(extras_upscaler_2),
        extras_upscaler_2_visibility=extras_upscaler_2_visibility, upscale_first=bool(upscale_first),
        gfpgan_visibility=gfpgan_visibility, codeformer_visibility=codeformer_visibility,
        codeformer_weight=codeformer_weight, save=bool(save_output),
        output_dir=str(output_dir or "") if extras_mode == 2 else "")
    return _run(request, extras_mode, show_extras_results)


def _runner():
    host = RUNTIME.host
    return getattr(host, "postprocessing", None) if host is not None else None


def _images(extras_mode, image, image_folder, input_dir) -> list:
    if extras_mode == 1:
        result = []
        for item in image_folder or []:
            if isinstance(item, Image.Image):
                result.append((item, ""))
            else:
                path = getattr(item, "name", item)
                with Image.open(path) as opened:
                    opened.load()
                    result.append((opened.copy(), os.path.basename(getattr(item, "orig_name", "") or str(path))))
        return result
    if extras_mode == 2:
        return load_folder_images(input_dir)
    return [(image, "")] if image is not None else []


def _run(request: ExtrasRequest, extras_mode, show_extras_results):
    services = RUNTIME.require()
    request.validate(services.upscalers.names(), services.face_restorers)
    result = _run_engine(request, services.upscalers, services.options, services.paths.outputs,
                         RUNTIME.job_control, face_restorers=services.face_restorers, postprocessing=_runner())
    shown = list(result.images) if extras_mode != 2 or show_extras_results else []
    text = result.infos[-1] if result.infos else ""
    return shown, "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>", ""
