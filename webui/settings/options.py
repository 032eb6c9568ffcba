"""Persisted user options (A1111's `config.json`), with typed defaults and validation."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import RefusedError, UserError

log = logging.getLogger(__name__)
_UNSET = object()


@dataclass(frozen=True)
class Option:
    default: Any
    label: str
    kind: type
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    section: tuple[str, str] | None = None  # (id, title) of the Settings section; None: "Other"
    info: str = ""  # a hint shown under the setting
    component: Any = None  # a Gradio component class for the Settings tab (extension options); None: by kind
    component_args: Any = None  # its keyword arguments, or a callable returning them
    restart: bool = False  # the change needs a restart of the UI to take effect
    offered: Any = None  # a callable: the choices available now (a subset of `choices`; others are refused)
    restricted: bool = False  # names a folder or file on the server: locked under --hide-ui-dir-config


_SAMPLER = ("sampler-params", "Sampler parameters")
_SAVING = ("saving-images", "Saving images/grids")
_PROMPT_EDITING = ("ui_prompt_editing", "Prompt editing")
_TO_DIRS = ("saving-to-dirs", "Saving to a directory")
_IMG2IMG = ("img2img", "img2img")
# Keys are A1111's option names, so `/sdapi/v1/options` clients keep working.
OPTIONS: dict[str, Option] = {
    "sd_model_checkpoint": Option("", "Stable Diffusion checkpoint", str),
    "sd_checkpoints_limit": Option(1, "Checkpoints to keep loaded (LRU cache)", int, minimum=1, maximum=10),
    "sd_checkpoint_cache_ram_gb": Option(16.0, "RAM budget for cached checkpoints (GiB)", float, minimum=0.0),
    "randn_source": Option("CPU", "Random number generator source", str, choices=("GPU", "CPU", "NV"),
                           info="CPU: the same pictures on every machine; GPU: the CUDA generator (CPU where there "
                                "is none); NV: NVIDIA's generator computed on the CPU, so pictures made on NVIDIA "
                                "GPUs (A1111's default) reproduce anywhere"),
    # A1111's "Sampler parameters" (same keys and defaults); infotext keys in brackets when not the default.
    "eta_ancestral": Option(1.0, "Eta for k-diffusion samplers [Eta]", float, minimum=0.0, maximum=10.0,
                            section=_SAMPLER, info="noise multiplier of the ancestral and SDE samplers"),
    "eta_ddim": Option(0.0, "Eta for DDIM [Eta DDIM]", float, minimum=0.0, maximum=10.0, section=_SAMPLER),
    "eta_noise_seed_delta": Option(0, "Eta noise seed delta [ENSD]", int, minimum=0, maximum=2 ** 32,
                                   section=_SAMPLER,
                                   info="the per-step noise comes from seed + this (31337 in NovelAI-style "
                                        "infotexts)"),
    "s_churn": Option(0.0, "Sigma churn [Sigma churn]", float, minimum=0.0, maximum=100.0, section=_SAMPLER),
    "s_tmin": Option(0.0, "Sigma tmin [Sigma tmin]", float, minimum=0.0, maximum=1000.0, section=_SAMPLER),
    "s_tmax": Option(0.0, "Sigma tmax (0 = no limit) [Sigma tmax]", float, minimum=0.0, maximum=1000.0,
                     section=_SAMPLER),
    "s_noise": Option(1.0, "Sigma noise [Sigma noise]", float, minimum=0.0, maximum=10.0, section=_SAMPLER),
    "sigma_min": Option(0.0, "Schedule min sigma (0 = the model's) [Schedule min sigma]", float, minimum=0.0,
                        section=_SAMPLER),
    "sigma_max": Option(0.0, "Schedule max sigma (0 = the model's) [Schedule max sigma]", float, minimum=0.0,
                        section=_SAMPLER),
    "rho": Option(0.0, "Schedule rho (0 = the schedule's) [Schedule rho]", float, minimum=0.0, section=_SAMPLER),
    "beta_dist_alpha": Option(0.6, "Beta schedule alpha [Beta schedule alpha]", float, minimum=0.01, maximum=1.0,
                              section=_SAMPLER),
    "beta_dist_beta": Option(0.6, "Beta schedule beta [Beta schedule beta]", float, minimum=0.01, maximum=1.0,
                             section=_SAMPLER),
    "always_discard_next_to_last_sigma": Option(False, "Always discard the next-to-last sigma "
                                                "[Discard penultimate sigma]", bool, section=_SAMPLER),
    "sgm_noise_multiplier": Option(False, "SGM noise multiplier: scale the initial noise as SGM does "
                                   "[SGM noise multiplier]", bool, section=_SAMPLER),
    "img2img_extra_noise": Option(0.0, "Extra noise multiplier for img2img and hires fix [Extra noise]", float,
                                  minimum=0.0, maximum=1.0, section=_SAMPLER,
                                  info="more noise on top of what the denoising strength adds: more detail"),
    "uni_pc_variant": Option("bh1", "UniPC variant", str, choices=("bh1", "bh2", "vary_coeff"), section=_SAMPLER),
    "uni_pc_skip_type": Option("time_uniform", "UniPC skip type", str,
                               choices=("time_uniform", "time_quadratic", "logSNR"), section=_SAMPLER),
    "uni_pc_order": Option(3, "UniPC order", int, minimum=1, maximum=50, section=_SAMPLER),
    "uni_pc_lower_order_final": Option(True, "UniPC lower order final", bool, section=_SAMPLER),
    "CLIP_stop_at_last_layers": Option(1, "Clip skip", int, minimum=1, maximum=12),
    # the refiner (webui/engine/refiner.py): A1111's keys and defaults; infotext keys in brackets
    "hires_fix_refiner_pass": Option("second pass", "Hires fix: which pass to enable refiner for [Hires refiner]", str,
                                     choices=("first pass", "second pass", "both passes"),
                                     section=("sd", "Stable Diffusion")),
    "refiner_switch_by_sample_steps": Option(False, "Switch to refiner by sampling steps instead of model timesteps. "
                                             "Old behavior for refiner. [Refiner switch by sampling steps]", bool,
                                             section=_SAMPLER),
    "sdxl_refiner_low_aesthetic_score": Option(2.5, "SDXL low aesthetic score", float, minimum=0.0, maximum=10.0,
                                               section=("sd", "Stable Diffusion"),
                                               info="used for refiner model negative prompt"),
    "sdxl_refiner_high_aesthetic_score": Option(6.0, "SDXL high aesthetic score", float, minimum=0.0, maximum=10.0,
                                                section=("sd", "Stable Diffusion"),
                                                info="used for refiner model prompt"),
    # Forge's "VAE / Text Encoder": separate files a FLUX.1 checkpoint takes its missing parts from (names inside
    # models/VAE or models/text_encoder; a change reloads such a checkpoint)
    "forge_additional_modules": Option([], "VAE / Text Encoder (FLUX.1 and SD3: separate VAE and text encoder files)",
                                       list, section=("sd_vae", "VAE")),
    # each checkpoint's last "VAE / Text Encoder" choice (checkpoint name -> names), restored when it is chosen
    "forge_modules_by_checkpoint": Option({}, "VAE / Text Encoder remembered per checkpoint", object),
    # Forge's "GPU Weights": the VRAM a FLUX.1 / SD3 checkpoint's weights may take; the rest is streamed from RAM
    # (webui/models/streaming.py). A change reloads such a checkpoint.
    "gpu_weights_mb": Option(0, "GPU Weights (MB) for FLUX.1 / SD3 (0: automatic, from the free VRAM)", int,
                             minimum=0, maximum=1048576, section=("sd_vae", "VAE")),
    "sd_vae": Option("Automatic", "SD VAE (Automatic, None or a file in models/VAE)", str),
    "emphasis": Option("Original", "Emphasis mode", str, choices=("Original", "No norm", "Ignore")),
    "enable_prompt_comments": Option(True, "Remove # comments from prompts", bool),
    "comma_padding_backtrack": Option(20, "Move a chunk cut back to the last comma within N tokens", int,
                                      minimum=0, maximum=74),
    "inpainting_mask_weight": Option(1.0, "Inpainting conditioning mask strength (inpainting checkpoints)", float,
                                     minimum=0.0, maximum=1.0),
    "vae_tiling_threshold": Option(1536, "Decode and encode in tiles images larger than this on a side "
                                   "(pixels; 0: never)", int, minimum=0, maximum=16384, section=("sd_vae", "VAE"),
                                   info="tiles keep the VAE's memory that of one tile (big images, hires fix)"),
    "vae_tile_size": Option(512, "VAE tile size (pixels)", int, minimum=64, maximum=4096, section=("sd_vae", "VAE")),
    "vae_tile_overlap": Option(64, "VAE tile overlap (pixels; blended, so no seams)", int, minimum=0, maximum=1024,
                               section=("sd_vae", "VAE")),
    "img2img_background_color": Option("#ffffff", "Colour behind transparent parts of init images", str),
    "img2img_color_correction": Option(False, "Apply color correction to img2img results to match original colors.",
                                       bool, section=_IMG2IMG,
                                       info="matches the result's colour histograms (LAB) to the init image's"),
    "control_net_unit_count": Option(3, "ControlNet units (tabs in txt2img and img2img; restart the UI)", int,
                                     minimum=1, maximum=10, restart=True),
    "control_net_no_detectmap": Option(False, "Do not append ControlNet detected maps to the output", bool),
    "disabled_extensions": Option([], "Disabled extensions (folder names)", list),
    "job_history_limit": Option(2000, "Jobs kept in the history (older ones are forgotten; their images stay)", int,
                                minimum=10, maximum=1000000, section=("jobs", "Queue and history")),
    "live_previews_enable": Option(True, "Show live previews of the image being generated", bool,
                                   section=("live_previews", "Live previews")),
    "show_progress_every_n_steps": Option(10, "Live preview every N sampling steps (0: off)", int, minimum=0,
                                          maximum=150, section=("live_previews", "Live previews")),
    "show_progress_grid": Option(True, "Live previews show the whole batch as a grid (else its first image)", bool,
                                 section=("live_previews", "Live previews")),
    "show_progress_type": Option("Approx cheap", "Live preview method", str,
                                 choices=("Approx cheap", "Approx NN", "TAESD", "Full"),
                                 section=("live_previews", "Live previews"),
                                 info="Approx cheap: no model, a small picture; Approx NN and TAESD: listed when "
                                      "their files are in models/VAE-approx or models/VAE-taesd; Full: the VAE, "
                                      "slowest"),
    # A1111's quicksettings: options shown beside the checkpoint and VAE pickers (webui/ui/quicksettings.py)
    "quicksettings_list": Option(["sd_model_checkpoint", "sd_vae"], "Quicksettings list", list,
                                 choices=lambda: tuple(OPTIONS), restart=True, section=("ui", "User interface"),
                                 info="setting entries that appear at the top of page rather than in settings tab "
                                      "(the checkpoint and SD VAE are always there)"),
    "ui_remember_last_used": Option(True, "A newly opened page starts from the values last used in txt2img, img2img "
                                    "and Extras", bool, section=("ui", "User interface"),
                                    info="defaults otherwise come from ui-config.json in the data dir"),
    # A1111's "Prompt editing" (the page script of webui/ui/prompt_tools_assets.py reads them at page load)
    "keyedit_precision_attention": Option(0.1, "Precision for (attention:1.1) when editing the prompt with "
                                          "Ctrl+up/down", float, minimum=0.01, maximum=0.2, section=_PROMPT_EDITING),
    "keyedit_precision_extra": Option(0.05, "Precision for <extra networks:0.9> when editing the prompt with "
                                      "Ctrl+up/down", float, minimum=0.01, maximum=0.2, section=_PROMPT_EDITING),
    "keyedit_delimiters": Option(r".,\/!?%^*;:{}=`~() ", "Word delimiters when editing the prompt with "
                                 "Ctrl+up/down", str, section=_PROMPT_EDITING),
    "keyedit_delimiters_whitespace": Option(["Tab", "Carriage Return", "Line Feed"],
                                            "Ctrl+up/down whitespace delimiters", list,
                                            choices=("Tab", "Carriage Return", "Line Feed"),
                                            section=_PROMPT_EDITING),
    "keyedit_move": Option(True, "Alt+left/right moves prompt elements", bool, section=_PROMPT_EDITING),
    "samples_save": Option(True, "Always save all generated images", bool),
    "samples_format": Option("png", "File format for images", str, choices=("png", "jpg", "webp")),
    # File and folder names (webui/outputs/filename_pattern.py): A1111's keys, labels and defaults
    "samples_filename_pattern": Option("", "Images filename pattern", str, section=_SAVING,
                                       info="tags such as [seed], [prompt_words], [model_name], [date], "
                                            "[datetime<%Y%m%d_%H%M%S>], [none]; empty: [seed] (see the README)"),
    "save_images_add_number": Option(True, "Add number to filename when saving", bool, section=_SAVING),
    "jpeg_quality": Option(80, "Quality for saved jpeg images", int, minimum=1, maximum=100, section=_SAVING,
                           info="also the quality of lossy webp"),
    "webp_lossless": Option(False, "Use lossless compression for webp images", bool, section=_SAVING),
    "export_for_4chan": Option(True, "Save copy of large images as JPG", bool, section=_SAVING,
                               info="if the file size is above the limit, or either width or height are above the "
                                    "limit"),
    "img_downscale_threshold": Option(4.0, "File size limit for the above option, MB", float, minimum=0.0,
                                      section=_SAVING),
    "target_side_length": Option(4000, "Width/height limit for the above option, in pixels", int, minimum=1,
                                 maximum=65500, section=_SAVING),
    "save_to_dirs": Option(True, "Save images to a subdirectory", bool, section=_TO_DIRS),
    "grid_save_to_dirs": Option(True, "Save grids to a subdirectory", bool, section=_TO_DIRS),
    "directories_filename_pattern": Option("[date]", "Directory name pattern", str, section=_TO_DIRS,
                                           info="the same tags as the file name; empty: [prompt_words]"),
    "directories_max_prompt_words": Option(8, "Max prompt words for [prompt_words] pattern", int, minimum=1,
                                           maximum=20, section=_TO_DIRS),
    "outdir_samples": Option("", "Output directory for images; if empty, defaults to three directories below", str),
    "outdir_txt2img_samples": Option("", "Output folder for txt2img (empty: outputs/txt2img-images)", str),
    "outdir_img2img_samples": Option("", "Output folder for img2img (empty: outputs/img2img-images)", str),
    "outdir_extras_samples": Option("", "Output folder for images from extras tab (empty: outputs/extras-images)",
                                    str),
    # the galleries' 💾 Save / 🗜️ Zip (webui/ui/gallery_actions.py); restricted: a folder on the server
    "outdir_save": Option("", "Directory for saving images using the Save button (empty: outputs/save)", str,
                          restart=True, info="the page offers the saved files for download from this folder "
                                             "after a restart"),
    # Grids (A1111's keys, labels and defaults; webui/outputs/grid.py, webui/engine/batch_grid.py)
    "grid_save": Option(True, "Always save all generated image grids", bool, section=_SAVING),
    "grid_format": Option("png", "File format for grids", str, choices=("png", "jpg", "webp"), section=_SAVING),
    "grid_extended_filename": Option(False, "Add extended info (seed, prompt) to filename when saving grid", bool,
                                     section=_SAVING),
    "grid_only_if_multiple": Option(True, "Do not save grids consisting of one picture", bool, section=_SAVING),
    "grid_prevent_empty_spots": Option(False, "Prevent empty spots in grid (when set to autodetect)", bool,
                                       section=_SAVING),
    "n_rows": Option(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size", int,
                     minimum=-1, maximum=16, section=_SAVING),
    "grid_text_active_color": Option("#000000", "Text color for image grids", str, section=_SAVING),
    "grid_text_inactive_color": Option("#999999", "Inactive text color for image grids", str, section=_SAVING),
    "grid_background_color": Option("#ffffff", "Background color for image grids", str, section=_SAVING),
    "outdir_grids": Option("", "Output directory for grids; if empty, defaults to two directories below", str),
    "outdir_txt2img_grids": Option("", "Output folder for txt2img grids (empty: outputs/txt2img-grids)", str),
    "outdir_img2img_grids": Option("", "Output folder for img2img grids (empty: outputs/img2img-grids)", str),
    # A1111's "Settings in UI": settings shown in the txt2img / img2img tabs (webui/ui/main_ui_options.py), e.g.
    # "face_restoration" for a Restore faces checkbox; their values run the tab's jobs as override settings.
    "extra_options_txt2img": Option([], "Settings for txt2img", list, choices=lambda: tuple(OPTIONS), restart=True,
                                    section=("settings_in_ui", "Settings in UI"),
                                    info="setting keys, e.g. face_restoration: shown in the txt2img tab"),
    "extra_options_img2img": Option([], "Settings for img2img", list, choices=lambda: tuple(OPTIONS), restart=True,
                                    section=("settings_in_ui", "Settings in UI"),
                                    info="setting keys, e.g. face_restoration: shown in the img2img tab"),
    "extra_options_cols": Option(1, "Number of columns for added settings", int, minimum=1, maximum=20,
                                 restart=True, section=("settings_in_ui", "Settings in UI")),
    "extra_options_accordion": Option(False, "Place added settings into an accordion", bool, restart=True,
                                      section=("settings_in_ui", "Settings in UI")),
    "return_grid": Option(True, "Show grid in gallery", bool, section=("ui_gallery", "Gallery")),
    "ESRGAN_tile": Option(192, "Tile size for ESRGAN upscalers. 0 = no tiling.", int, minimum=0, maximum=512,
                          section=("upscaling", "Upscaling")),
    "ESRGAN_tile_overlap": Option(8, "Tile overlap for ESRGAN upscalers.", int, minimum=0, maximum=48,
                                  section=("upscaling", "Upscaling")),
    # A1111's "Face restoration" section (webui/engine/face_restoration.py); infotext `Face restoration: <model>`
    "face_restoration": Option(False, "Restore faces", bool, section=("face-restoration", "Face restoration"),
                               info="will use a third-party model on generation result to reconstruct faces (its "
                                    "file and the face detector must be in models/: see the README)"),
    "face_restoration_model": Option("CodeFormer", "Face restoration model", str,
                                     choices=("CodeFormer", "GFPGAN", "RestoreFormer"),
                                     section=("face-restoration", "Face restoration")),
    "code_former_weight": Option(0.5, "CodeFormer weight", float, minimum=0.0, maximum=1.0,
                                 section=("face-restoration", "Face restoration"),
                                 info="0 = maximum effect; 1 = minimum effect"),
    "face_restoration_unload": Option(False, "Move face restoration model from VRAM into RAM after processing", bool,
                                      section=("face-restoration", "Face restoration")),
    # A1111's "Extra Networks" options (webui/ui/network_cards.py): the cards' default order, the Lora page filter
    "extra_networks_card_order_field": Option("Path", "Default order field for Extra Networks cards", str,
                                              choices=("Path", "Name", "Date Created", "Date Modified"),
                                              section=("extra_networks", "Extra Networks")),
    "extra_networks_card_order": Option("Ascending", "Default order for Extra Networks cards", str,
                                        choices=("Ascending", "Descending"),
                                        section=("extra_networks", "Extra Networks")),
    "lora_show_all": Option(False, "Always show all networks on the Lora page", bool,
                            section=("extra_networks", "Extra Networks"),
                            info="otherwise, those detected as for incompatible version of Stable Diffusion will be "
                                 "hidden"),
    "lora_hide_unknown_for_versions": Option([], "Hide networks of unknown versions for model versions", list,
                                             choices=("SD1", "SD2", "SDXL"),
                                             section=("extra_networks", "Extra Networks")),
}


# A1111's `restricted_opts`: options that name folders or file-name patterns on the server. Under
# --hide-ui-dir-config nobody but the admin (editing config.json) may change them, nor any `outdir_*` option, nor
# an option an extension marks (`component_args=shared.hide_dirs`, or its key added to `shared.restricted_opts`);
# they are locked whether this server declares them or not, so a client cannot store one for an extension to read.
RESTRICTED_OPTIONS = frozenset({
    "samples_filename_pattern", "directories_filename_pattern", "outdir_samples", "outdir_txt2img_samples",
    "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids", "outdir_txt2img_grids", "outdir_img2img_grids",
    "outdir_save", "outdir_init_images", "temp_dir", "clean_temp_dir_at_start",
})
RESTRICTED_PREFIXES = ("outdir_",)


class OptionError(UserError, ValueError):
    """A setting that does not exist or a value it does not take (HTTP 422)."""

    status = 422
    kind = "InvalidOption"


class OptionRestrictedError(OptionError, RefusedError):
    """A change of an option the server's flags lock (a folder option under --hide-ui-dir-config): HTTP 403."""

    status = 403
    kind = "OptionRestricted"


class Options:
    """Values of OPTIONS (and of the options extensions add), loaded from and saved to a JSON file. Unknown keys
    are kept as-is (an extension's option stays stored while the extension is disabled)."""

    def __init__(self, path: Path | None, hide_dirs: bool = False):
        self._path = path
        self._lock = threading.RLock()
        self.hide_dirs = hide_dirs  # --hide-ui-dir-config: restricted options cannot be changed (see `locked`)
        self.restricted: set[str] = set()  # keys extensions mark restricted (A1111's `shared.restricted_opts`)
        self.specs: dict[str, Option] = dict(OPTIONS)
        self._values: dict[str, Any] = {k: o.default for k, o in OPTIONS.items()}
        self._listeners: dict[str, list] = {}
        if path is not None and path.exists():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(stored, dict):
                    for key, value in stored.items():
                        try:
                            self._values[key] = self._check(key, value)
                        except OptionError as exc:
                            log.warning("ignoring stored option: %s", exc)
            except (OSError, ValueError) as exc:
                log.warning("could not read %s (%s); using defaults", path, exc)

    def add_option(self, key: str, option: Option) -> None:
        """Declare an option (an extension's): a stored value is kept when it passes the option's checks."""
        with self._lock:
            self.specs[key] = option
            stored = self._values.get(key, option.default)
            try:
                self._values[key] = self._check(key, stored)
            except OptionError as exc:
                log.warning("ignoring stored option: %s", exc)
                self._values[key] = option.default

    def default(self, key: str) -> Any:
        spec = self.specs.get(key)
        if spec is None:
            raise KeyError(key)
        return spec.default

    def on_change(self, key: str, listener) -> None:
        """Call `listener()` after `key` changes through `update` (A1111's `opts.onchange`)."""
        self._listeners.setdefault(key, []).append(listener)

    def _check(self, key: str, value: Any) -> Any:
        spec = self.specs.get(key)
        if spec is None:
            return value
        try:
            if spec.kind is object:  # an extension's option of no declared type: stored as given
                return value
            if spec.kind is list:
                if not isinstance(value, (list, tuple)):
                    raise TypeError
                value = list(value)
            elif spec.kind is bool:
                if not isinstance(value, bool):
                    raise TypeError
            elif spec.kind in (int, float):
                if isinstance(value, bool):
                    raise TypeError
                number = float(value)
                if number != number or number in (float("inf"), float("-inf")):  # NaN, Infinity: not a setting
                    raise ValueError
                if spec.kind is int and not number.is_integer():
                    raise TypeError
                value = spec.kind(number)
            else:
                value = spec.kind(value)
        except (TypeError, ValueError, OverflowError):
            raise OptionError(f"option {key!r} must be {spec.kind.__name__}, got {value!r}") from None
        if spec.choices and not callable(spec.choices):
            for item in value if spec.kind is list else [value]:  # a list option: each item is one of the choices
                if item not in spec.choices:
                    raise OptionError(f"option {key!r} must be one of {', '.join(map(str, spec.choices))}, "
                                      f"got {item!r}")
        if spec.offered is not None and value != self._values.get(key) and value not in spec.offered():
            raise OptionError(f"option {key!r}: {value!r} is not available now (available: "
                              f"{', '.join(map(str, spec.offered()))})")
        if spec.minimum is not None and value < spec.minimum:
            raise OptionError(f"option {key!r} must be at least {spec.minimum}, got {value!r}")
        if spec.maximum is not None and value > spec.maximum:
            raise OptionError(f"option {key!r} must be at most {spec.maximum}, got {value!r}")
        return value

    def get(self, key: str) -> Any:
        with self._lock:
            if key not in self._values:
                raise KeyError(key)
            return self._values[key]

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def is_restricted(self, key: str) -> bool:
        """Whether `key` names a folder or file on the server (A1111's restricted options, `outdir_*`, and the
        ones an extension marks)."""
        spec = self.specs.get(key)
        return key in RESTRICTED_OPTIONS or key.startswith(RESTRICTED_PREFIXES) or key in self.restricted \
            or (spec is not None and spec.restricted)

    def locked(self, key: str) -> bool:
        """Whether users are refused changes of `key`: a restricted option on a --hide-ui-dir-config server."""
        return self.hide_dirs and self.is_restricted(key)

    def check_unlocked(self, changes: dict[str, Any]) -> None:
        """Raise OptionRestrictedError naming the first change of a locked option (setting its current value is
        no change, and passes)."""
        if not self.hide_dirs:
            return
        with self._lock:
            for key, value in changes.items():
                if self.locked(key) and value != self._values.get(key, _UNSET):
                    raise OptionRestrictedError(
                        f"option {key!r} names a folder or file on the server and cannot be changed: this server "
                        "runs with --hide-ui-dir-config")

    def validate(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Checked copies of the values; raises OptionError naming the first bad one (OptionRestrictedError for
        a change of a locked option)."""
        self.check_unlocked(changes)
        return {key: self._check(key, value) for key, value in changes.items()}

    def update(self, changes: dict[str, Any], save: bool = True) -> None:
        checked = self.validate(changes)
        with self._lock:
            changed = [key for key, value in checked.items() if self._values.get(key) != value]
            self._values.update(checked)
            if save:
                self.save()
        for key in changed:
            for listener in self._listeners.get(key, []):
                try:
                    listener()
                except Exception:  # an extension's listener must not undo a saved change
                    log.exception("a listener of option %r failed", key)

    def save(self) -> None:
        if self._path is None:
            return
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".config.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._values, fh, indent=4, ensure_ascii=False)
            os.replace(tmp, self._path)


class OptionsOverlay:
    """Read-only view of Options with some values replaced (a request's `override_settings`)."""

    def __init__(self, base: Options, overrides: dict[str, Any]):
        self._base = base
        self._overrides = base.validate(overrides)

    def get(self, key: str) -> Any:
        if key in self._overrides:
            return self._overrides[key]
        return self._base.get(key)

    def __getitem__(self, key: str) -> Any:
        return self.get(key)
