"""A1111's `modules.shared_cmd_options`: `cmd_opts`, the server's command-line flags.

Extensions read many of A1111's flags; the ones we do not have answer with A1111's defaults (folder flags with
the server's folders) instead of crashing the extension. A name neither knows raises AttributeError.
"""
from __future__ import annotations

import functools
import os
from typing import Any

from webui.extensions.a1111.runtime import RUNTIME
from webui.settings.paths import PROJECT_DIR

# A1111 flags we do not have, and the value A1111 gives them when not passed.
A1111_FLAG_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys((
        "medvram_sdxl", "lowram", "share", "disable_extra_extensions", "freeze_settings", "disable_safe_unpickle",
        "opt_sdp_attention", "opt_sdp_no_mem_attention", "opt_split_attention", "opt_split_attention_v1",
        "opt_sub_quad_attention", "disable_opt_split_attention", "force_enable_xformers", "xformers_flash_attention",
        "opt_channelslast", "upcast_sampling", "disable_nan_check", "always_batch_cond_uncond", "api_log",
        "autolaunch", "no_gradio_queue", "gradio_debug", "skip_version_check", "skip_python_version_check",
        "skip_torch_cuda_test", "reinstall_xformers", "reinstall_torch", "update_check", "update_all_extensions",
        "test_server", "log_startup", "skip_prepare_environment", "do_not_download_clip", "no_download_sd_model",
        "allow_code", "administrator", "no_hashing", "use_textbox_seed", "disable_console_progressbars",
        "enable_console_prompts", "add_stop_route", "api_server_stop", "disable_model_loading_ram_optimization",
        "unload_gfpgan", "disable_tls_verify", "no_progressbar_hiding", "use_ipex", "use_cpu_for_interrogate",
    ), False),
    **dict.fromkeys((
        "ckpt", "vae_path", "models_dir", "server_name", "device_id", "gradio_auth_path", "cors_allow_origins",
        "cors_allow_origins_regex", "tls_keyfile", "tls_certfile", "theme", "subpath", "loglevel", "ngrok",
        "freeze_settings_in_sections", "freeze_specific_settings", "sub_quad_kv_chunk_size",
        "sub_quad_chunk_threshold", "config", "styles_file",
    ), None),
    "use_cpu": [],
    "gradio_allowed_path": [],
    "ngrok_region": "",
    "ngrok_options": {},
    "timeout_keep_alive": 30,
    "sub_quad_q_chunk_size": 1024,
    "max_batch_count": 16,
}

# Folder flags: the server's folder (from its Paths) or A1111's folder under the data / models folder.
_FROM_PATHS = {"data_dir": "data_dir", "ckpt_dir": "checkpoints", "lora_dir": "lora", "vae_dir": "vae",
               "embeddings_dir": "embeddings", "controlnet_dir": "controlnet",
               "controlnet_annotator_models_path": "annotators", "extensions_dir": "extensions", "outdir": "outputs"}
_UNDER_MODELS = {"hypernetwork_dir": "hypernetworks", "codeformer_models_path": "Codeformer",
                 "gfpgan_models_path": "GFPGAN", "esrgan_models_path": "ESRGAN",
                 "realesrgan_models_path": "RealESRGAN", "dat_models_path": "DAT", "swinir_models_path": "SwinIR",
                 "scunet_models_path": "ScuNET", "ldsr_models_path": "LDSR", "lyco_dir_backcompat": "LyCORIS"}
_UNDER_DATA = {"ui_config_file": "ui-config.json", "ui_settings_file": "config.json"}
_UNDER_PROJECT = {"textual_inversion_templates_dir": "textual_inversion_templates",
                  "localizations_dir": "localizations"}


@functools.lru_cache(maxsize=1)
def _default_flags():
    from webui.settings.flags import parse_flags
    return parse_flags([])


def _flags():
    services = RUNTIME.services
    return services.flags if services is not None else _default_flags()


def _folder(name: str) -> str | None:
    from . import paths_internal
    services = RUNTIME.services
    if name in _FROM_PATHS:
        if services is None:
            return None if name != "data_dir" else paths_internal.script_path
        return str(getattr(services.paths, _FROM_PATHS[name]))
    if name in _UNDER_MODELS:
        return os.path.join(paths_internal.models_path, _UNDER_MODELS[name])
    if name in _UNDER_DATA:
        return os.path.join(paths_internal.data_path, _UNDER_DATA[name])
    return str(PROJECT_DIR / _UNDER_PROJECT[name])


_FOLDERS = {*_FROM_PATHS, *_UNDER_MODELS, *_UNDER_DATA, *_UNDER_PROJECT}


class CommandLineFlags:
    """`shared.cmd_opts`: our flags first (folder flags left unset give the folder in use), then A1111's
    defaults for flags we do not have. Assigning sets the flag on the server's flags."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        flags = _flags()
        value = getattr(flags, name, None)
        if value is not None:
            return value
        if name in _FOLDERS:
            return _folder(name)
        if hasattr(flags, name):
            return value
        if name in A1111_FLAG_DEFAULTS:
            default = A1111_FLAG_DEFAULTS[name]
            return type(default)(default) if isinstance(default, (list, dict)) else default
        raise AttributeError(f"no command-line flag {name!r} (neither ours nor a known A1111 flag)")

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_flags(), name, value)

    def __repr__(self) -> str:
        return f"<modules.shared.cmd_opts {vars(_flags())!r}>"


cmd_opts = CommandLineFlags()
