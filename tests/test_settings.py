"""Flags, folders and persisted options."""
from __future__ import annotations

import json

import pytest
import torch

from webui.models.devices import DevicePolicy
from webui.settings.flags import parse_flags, parse_logins
from webui.settings.options import OptionError, Options, OptionsOverlay
from webui.settings.paths import PROJECT_DIR, Paths


def test_defaults_follow_a1111():
    flags = parse_flags([])
    assert (flags.port, flags.listen, flags.nowebui, flags.device) == (7860, False, False, "auto")
    paths = Paths.from_flags(flags)
    assert paths.checkpoints == PROJECT_DIR / "models" / "Stable-diffusion"
    assert paths.embeddings == PROJECT_DIR / "embeddings" and paths.lora == PROJECT_DIR / "models" / "Lora"


def test_folder_flags_override(tmp_path):
    flags = parse_flags(["--data-dir", str(tmp_path), "--ckpt-dir", str(tmp_path / "ckpts"),
                         "--lora-dir", str(tmp_path / "loras"), "--vae-dir", str(tmp_path / "vaes"),
                         "--embeddings-dir", str(tmp_path / "emb"), "--controlnet-dir", str(tmp_path / "cn")])
    paths = Paths.from_flags(flags)
    assert paths.checkpoints == tmp_path / "ckpts" and paths.lora == tmp_path / "loras"
    assert paths.vae == tmp_path / "vaes" and paths.embeddings == tmp_path / "emb"
    assert paths.controlnet == tmp_path / "cn" and paths.outputs == tmp_path / "outputs"
    assert paths.config_file == tmp_path / "config.json"


def test_unknown_flag_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_flags(["--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_logins():
    assert parse_logins("a:b, c:d:e") == [("a", "b"), ("c", "d:e")]
    assert parse_logins(None) == []
    with pytest.raises(ValueError, match="must be written user:password"):
        parse_logins("nopassword")


def test_options_persist_and_validate(tmp_path):
    path = tmp_path / "config.json"
    options = Options(path)
    options.update({"sd_checkpoints_limit": 3, "randn_source": "GPU", "some_extension_option": "kept"})
    reloaded = Options(path)
    assert reloaded.get("sd_checkpoints_limit") == 3 and reloaded.get("randn_source") == "GPU"
    assert json.loads(path.read_text())["some_extension_option"] == "kept"
    for bad in ({"sd_checkpoints_limit": "many"}, {"sd_checkpoints_limit": 0}, {"randn_source": "TPU"},
                {"samples_save": "yes"}):
        with pytest.raises(OptionError):
            options.update(bad)
    assert Options(path).get("sd_checkpoints_limit") == 3


def test_corrupt_config_falls_back_to_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    assert Options(path).get("sd_checkpoints_limit") == 1


def test_overlay_changes_one_request_only(tmp_path):
    options = Options(None)
    overlay = OptionsOverlay(options, {"CLIP_stop_at_last_layers": 2})
    assert overlay.get("CLIP_stop_at_last_layers") == 2 and options.get("CLIP_stop_at_last_layers") == 1
    with pytest.raises(OptionError):
        OptionsOverlay(options, {"CLIP_stop_at_last_layers": "x"})


def test_device_policy_on_the_cpu():
    policy = DevicePolicy.from_flags(parse_flags(["--device", "cpu", "--precision", "half", "--medvram"]))
    assert policy.device.type == "cpu" and policy.dtype == torch.float32 and policy.offload == "none"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="--device cuda"):
            DevicePolicy.from_flags(parse_flags(["--device", "cuda"]))
