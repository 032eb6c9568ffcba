"""Where our engine's hook points meet A1111's scripts and callbacks.

`build_runners` instantiates every Script class found for txt2img and img2img (A1111 makes one instance per
tab) and sorts them into always-on and selectable. `A1111Hooks` is the engine's hook consumer: at each point it
keeps a `p` (A1111's processing object) in step with the run and calls the always-on scripts' methods with their
args, then reads back what they changed. `run_selectable` runs a chosen script's `run(p, *args)` in place of a
plain generation. A script that raises is reported under its extension and skipped for that call.
"""
from __future__ import annotations

import contextlib
import sys

import numpy as np
import torch
from PIL import Image

from ..hooks import ProcessingHooks
from .runtime import RUNTIME

P_KEY = "a1111_p"  # where a run keeps its p (ProcessingRun.state / GenerationRequest.context)
NETWORKS_KEY = "a1111_extra_network_data"  # the tags activated (modules.extra_networks), deactivated at the end


def build_runners(host) -> dict:
    import modules.scripts as scripts
    runners = {"txt2img": scripts.ScriptRunner(False), "img2img": scripts.ScriptRunner(True)}
    for extension, cls, path in host.script_classes:
        for mode, runner in runners.items():
            where = f"{cls.__name__} in {path.name} ({mode})"
            try:
                with RUNTIME.loading(extension.name, extension.path, path):
                    script = cls()
                    script.filename = str(path)
                    script.is_txt2img, script.is_img2img = mode == "txt2img", mode == "img2img"
                    shown = script.show(runner.is_img2img)
                    title = script.title()
                if not isinstance(title, str) or not title:
                    raise TypeError(f"title() must return a non-empty string, got {title!r}")
            except Exception as exc:  # noqa: BLE001
                host.problems.report(extension.name, where, exc)
                continue
            if shown is scripts.AlwaysVisible:
                script.alwayson = True
                runner.alwayson_scripts.append(script)
            elif shown:
                runner.selectable_scripts.append(script)
            else:
                continue
            runner.scripts.append(script)
            runner.extension_of[id(script)] = extension.name
    for runner in runners.values():
        runner.alwayson_scripts.sort(key=lambda s: getattr(s, "sorting_priority", 0) or 0)
    scripts.scripts_txt2img, scripts.scripts_img2img = runners["txt2img"], runners["img2img"]
    scripts.scripts_data = [*getattr(host, "builtin_scripts_data", []),  # xyz_grid.py (xyz_bridge.py)
                            *(scripts.ScriptClassData(cls, str(path), str(ext.path), sys.modules.get(cls.__module__))
                              for ext, cls, path in host.script_classes)]
    return runners


class A1111Hooks(ProcessingHooks):
    name = "A1111 scripts"

    def __init__(self, host):
        self.host = host

    # --- plumbing ------------------------------------------------------------------------------------------------
    def _runner(self, run):
        return self.host.runners.get(run.request.mode)

    def _p(self, run):
        from modules.processing import StableDiffusionProcessing
        p = run.state.get(P_KEY)
        if p is None:
            p = StableDiffusionProcessing.from_request(run.request, self._runner(run))
            run.state[P_KEY] = p
        p.request = run.request
        if p.scripts is None:
            p.scripts = self._runner(run)
        if p.extra_generation_params is not run.extra_params:  # one dict: what scripts add reaches the infotext
            run.extra_params.update(p.extra_generation_params)
            p.extra_generation_params = run.extra_params
        return p

    def _each(self, run, method: str, call) -> None:
        runner = self._runner(run)
        if runner is None:
            return
        for script in list(runner.alwayson_scripts):
            if getattr(type(script), method, None) is getattr(_base(), method, None):
                continue  # not overridden: nothing to do
            args = runner.script_args_for(script, run.request)
            extension = self.host.get(runner.extension(script))
            try:
                with RUNTIME.loading(extension.name, extension.path) if extension else contextlib.nullcontext():
                    call(getattr(script, method), args)
            except Exception as exc:  # noqa: BLE001
                name = runner.extension(script)
                self.host.problems.report(name, f"{method} of script '{script.title()}'", exc)
                run.warnings.append(f"Extension {name}: script '{script.title()}' failed in {method} "
                                    f"({type(exc).__name__}: {exc}) and was skipped")

    @property
    def wants_denoiser(self) -> bool:  # type: ignore[override]
        return self.host.callbacks.has("cfg_denoiser")

    # --- the hook points -----------------------------------------------------------------------------------------
    def before_process(self, run) -> None:
        p = self._p(run)
        self._each(run, "setup", lambda f, args: f(p, *args))
        self._each(run, "before_process", lambda f, args: f(p, *args))
        p.write_to(run.request)

    def process(self, run) -> None:
        p = self._p(run)
        p.all_prompts, p.all_negative_prompts = list(run.all_prompts), list(run.all_negative_prompts)
        p.all_seeds, p.all_subseeds = list(run.all_seeds), list(run.all_subseeds)
        p.all_hr_prompts, p.all_hr_negative_prompts = list(run.all_prompts), list(run.all_negative_prompts)
        p.seed, p.subseed = run.all_seeds[0] if run.all_seeds else p.seed, run.all_subseeds[0] if run.all_subseeds \
            else p.subseed
        p.main_prompt, p.main_negative_prompt = p.all_prompts[0], p.all_negative_prompts[0]
        self._each(run, "process", lambda f, args: f(p, *args))
        run.all_prompts, run.all_negative_prompts = list(p.all_prompts or []), list(p.all_negative_prompts or [])
        run.all_seeds, run.all_subseeds = list(p.all_seeds or []), list(p.all_subseeds or [])
        seed, subseed = run.request.seed, run.request.subseed
        p.write_to(run.request)  # steps, CFG, sampler, ... a script set in process() are used too
        run.request.seed, run.request.subseed = seed, subseed  # the per-image seeds are all_seeds now

    def before_batch(self, run) -> None:
        p = self._p(run)
        p.iteration = run.batch_number
        p.prompts, p.negative_prompts = run.prompts, run.negative_prompts
        p.seeds, p.subseeds = run.seeds, run.subseeds
        self._each(run, "before_process_batch",
                   lambda f, args: f(p, *args, batch_number=run.batch_number, prompts=p.prompts, seeds=p.seeds,
                                     subseeds=p.subseeds))
        run.prompts, run.negative_prompts = list(p.prompts), list(p.negative_prompts)
        run.seeds, run.subseeds = list(p.seeds), list(p.subseeds)
        _activate_extra_networks(run, p)

    def process_batch(self, run) -> None:
        p = self._p(run)
        self._each(run, "process_batch",
                   lambda f, args: f(p, *args, batch_number=run.batch_number, prompts=p.prompts, seeds=p.seeds,
                                     subseeds=p.subseeds))

    def after_batch(self, run, images: list) -> None:
        from modules.scripts import PostprocessBatchListArgs
        p = self._p(run)
        if _overridden(self._runner(run), "postprocess_batch"):
            tensor = _to_tensor(images)
            original = tensor.clone()
            self._each(run, "postprocess_batch",
                       lambda f, args: f(p, *args, images=tensor, batch_number=run.batch_number))
            if not torch.equal(tensor, original):  # a script drew on the batch in place
                images[:] = _to_pil(tensor)
        if _overridden(self._runner(run), "postprocess_batch_list"):
            pp = PostprocessBatchListArgs(list(images))
            self._each(run, "postprocess_batch_list",
                       lambda f, args: f(p, pp, *args, batch_number=run.batch_number))
            if len(pp.images) == len(images):
                images[:] = [i if isinstance(i, Image.Image) else _to_pil(i.unsqueeze(0))[0] for i in pp.images]

    def image(self, run, event) -> None:
        from modules.scripts import PostprocessImageArgs
        p = self._p(run)
        p.batch_index = event.batch_index
        pp = PostprocessImageArgs(event.image)
        self._each(run, "postprocess_image", lambda f, args: f(p, pp, *args))
        if isinstance(pp.image, Image.Image):
            event.image = pp.image

    def before_save(self, run, event) -> None:
        if not self.host.callbacks.has("before_image_saved"):
            return
        from modules.script_callbacks import ImageSaveParams
        params = ImageSaveParams(event.image, self._p(run), event.folder, {"parameters": event.infotext})
        self.host.callbacks.call("before_image_saved", params)
        event.image = params.image
        event.infotext = str(params.pnginfo.get("parameters", event.infotext))
        run.state["a1111_save_params"] = params

    def saved(self, run, event) -> None:
        if not self.host.callbacks.has("image_saved"):
            return
        from modules.script_callbacks import ImageSaveParams
        params = ImageSaveParams(event.image, self._p(run), event.path, {"parameters": event.infotext})
        self.host.callbacks.call("image_saved", params)

    def denoiser(self, run, event) -> None:
        from modules.script_callbacks import CFGDenoiserParams
        params = CFGDenoiserParams(event.x, event.image_cond, event.timestep, event.sampling_step,
                                   event.total_sampling_steps, event.text_cond, event.text_uncond)
        self.host.callbacks.call("cfg_denoiser", params)
        event.x, event.text_cond, event.text_uncond = params.x, params.text_cond, params.text_uncond

    def after_process(self, run) -> None:
        from modules.processing import processed_from_result
        p = self._p(run)
        _deactivate_extra_networks(run, p)
        if not _overridden(self._runner(run), "postprocess"):
            return
        processed = processed_from_result(p, run.result)
        before = list(processed.images)
        self._each(run, "postprocess", lambda f, args: f(p, processed, *args))
        result = run.result
        if processed.images != before:  # a script added (or replaced) output images
            infotexts = list(processed.infotexts)
            result.images = list(processed.images)
            result.infotexts = (infotexts + [""] * len(result.images))[:len(result.images)]
        # the batch grid is already in front: a script that removed it, or put pictures before it, says so here
        try:
            first = int(processed.index_of_first_image or 0)
        except (TypeError, ValueError):
            first = result.index_of_first_image
        result.index_of_first_image = min(len(result.images), max(0, first))


def _activate_extra_networks(run, p) -> None:
    """A1111's `extra_networks.activate` before the batch is sampled, for the network kinds extensions registered:
    the batch's first prompt's tags (the encoder cuts every tag out of what the model sees)."""
    from modules import extra_networks
    if not extra_networks.extra_network_registry or getattr(p, "disable_extra_networks", False):
        return
    cleaned, data = extra_networks.parse_prompts(list(run.prompts))
    p.prompts = cleaned  # as A1111's p.parse_extra_network_prompts (run.prompts keep them: our LoRAs are read there)
    p.extra_network_data = data
    run.state[NETWORKS_KEY] = data
    extra_networks.activate(p, data)


def _deactivate_extra_networks(run, p) -> None:
    """A1111's `extra_networks.deactivate` after the last batch (when the prompt had tags), before postprocess."""
    data = run.state.pop(NETWORKS_KEY, None)
    if data:
        from modules import extra_networks
        extra_networks.deactivate(p, data)


def run_selectable(host, request, control):
    """Run the extension script `request.script_name` (its `run(p, *args)`) for this job; one that returns None
    gets the plain generation of its p. Returns our GenerationResult."""
    from modules.processing import StableDiffusionProcessing
    runner = host.runners.get(request.mode)
    script = runner.find_selectable(request.script_name) if runner else None
    if script is None:
        raise LookupError(request.script_name)
    defaults = runner.defaults.get(id(script), [])
    args = list(request.script_run_args) + list(defaults[len(request.script_run_args):])
    p = StableDiffusionProcessing.from_request(request, runner)
    p.script_args = runner.flat_args(request.script_args, script, args)
    extension = host.get(runner.extension(script))
    with RUNTIME.in_job(control), RUNTIME.loading(extension.name if extension else "",
                                                  extension.path if extension else host.root):
        try:
            processed = script.run(p, *args)
        except Exception as exc:
            host.problems.report(runner.extension(script), f"run() of script '{script.title()}'", exc)
            raise
        if processed is None:
            from modules.processing import process_images
            processed = process_images(p)
    return _result_from_processed(processed, p)


def _result_from_processed(processed, p):
    from webui.engine.engine import GenerationResult
    base = processed.result
    result = GenerationResult() if base is None else base
    result.images = list(processed.images)
    count = len(result.images)
    result.infotexts = (list(processed.infotexts) + [processed.info] * count)[:count]
    first = result.index_of_first_image = min(count, max(0, int(getattr(processed, "index_of_first_image", 0) or 0)))
    count -= first  # the per-image lists have no entries for the grids in front (A1111's index_of_first_image)
    result.seeds = (list(processed.all_seeds) * count)[:count] if processed.all_seeds else [processed.seed] * count
    result.prompts = (list(processed.all_prompts) * count)[:count]
    result.negative_prompts = (list(processed.all_negative_prompts) * count)[:count]
    result.subseeds = (list(processed.all_subseeds) * count)[:count] if processed.all_subseeds else [0] * count
    result.seed = processed.seed if isinstance(processed.seed, int) else (result.seeds or [0])[0]
    if base is None:
        result.warnings = list(processed.warnings)
    return result


def _base():
    from modules.scripts import Script
    return Script


def _overridden(runner, method: str) -> bool:
    if runner is None:
        return False
    base = getattr(_base(), method, None)
    return any(getattr(type(s), method, None) is not base for s in runner.alwayson_scripts)


def _to_tensor(images: list) -> torch.Tensor:
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _to_pil(tensor: torch.Tensor) -> list:
    array = (255.0 * tensor.clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()).astype(np.uint8)  # A1111 truncates
    return [Image.fromarray(a) for a in array]
