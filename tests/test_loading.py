"""Every checkpoint format loads offline, is recognised from its tensors, and bad files get clear messages."""
from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from webui.models.architecture import CheckpointFormatError
from webui.models.devices import DevicePolicy
from webui.models.loader import load_checkpoint, read_state_dict
from webui.models.tiny import build_modules, write_single_file

CPU = DevicePolicy.cpu()


def _flat(module):
    return {k.removeprefix("text_model."): v for k, v in module.state_dict().items() if not k.endswith("position_ids")}


@pytest.mark.parametrize("kind, family, inpainting, prediction, encoders", [
    ("sd1", "sd1", False, "epsilon", 1),
    ("sd2-v", "sd2", False, "v_prediction", 1),
    ("sd1-inpaint", "sd1", True, "epsilon", 1),
    ("sdxl", "sdxl", False, "epsilon", 2),
])
def test_single_file_formats_load_and_are_detected(tiny_models, tmp_path, kind, family, inpainting, prediction,
                                                   encoders):
    path = tiny_models[kind]
    model = load_checkpoint(path, CPU, tmp_path, config_path=path.with_suffix(".yaml"))
    assert (model.family, model.inpainting, model.prediction_type) == (family, inpainting, prediction)
    assert len(model.text_encoders) == len(model.tokenizers) == encoders
    assert model.unet.config.in_channels == (9 if inpainting else 4)
    # every tensor equals what the tiny-model tool wrote (so the LDM -> diffusers conversion is exact)
    _, _, unet, vae, writers = build_modules(kind)
    for original, loaded in [(unet, model.unet), (vae, model.vae), *zip(writers, model.text_encoders)]:
        expected, got = _flat(original), _flat(loaded)
        assert set(got) <= set(expected)
        assert all(torch.equal(expected[k], got[k]) for k in got)
    if family == "sd2":  # SD2 reads the penultimate layer: the loader leaves out the last one
        assert model.text_encoders[0].config.num_hidden_layers == writers[0].config.num_hidden_layers - 1


def test_architecture_comes_from_tensors_not_the_file_name(tiny_models, tmp_path):
    renamed = tmp_path / "sdxl-looking-name-v1-5.safetensors"
    shutil.copy2(tiny_models["sd2-v"], renamed)
    model = load_checkpoint(renamed, CPU, tmp_path, config_path=tiny_models["sd2-v"].with_suffix(".yaml"))
    assert model.family == "sd2"


def test_diffusers_folder_loads_with_its_tokenizer(tiny_models, tmp_path):
    model = load_checkpoint(tiny_models["diffusers"], CPU, tmp_path)
    assert model.family == "sd1" and "diffusers folder" in model.label
    assert model.tokenizers[0]("a cat").input_ids == [49406, 320, 2368, 49407]


def test_ckpt_loads_through_the_weights_only_unpickler(tmp_path):
    path = write_single_file(tmp_path / "tiny.ckpt", "sd1", ckpt=True)
    model = load_checkpoint(path, CPU, tmp_path, config_path=path.with_suffix(".yaml"))
    assert model.family == "sd1"


class _Payload:
    def __reduce__(self):
        return (print, ("this would run code",))


@pytest.mark.parametrize("legacy", [False, True])
def test_ckpt_with_python_objects_is_refused(tmp_path, capsys, legacy):
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"x": torch.zeros(1)}, "payload": _Payload()}
    if legacy:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointFormatError, match=r"evil\.ckpt.*(refused|unsafe|arbitrary code)"):
        read_state_dict(path)
    assert "this would run code" not in capsys.readouterr().out


def test_truncated_safetensors_names_the_file(tiny_models, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny_models["sd1"].read_bytes()[:100_000])
    with pytest.raises(CheckpointFormatError, match=r"broken\.safetensors: corrupt or truncated"):
        load_checkpoint(broken, CPU, tmp_path)


def test_empty_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match="empty.safetensors: the file is empty"):
        load_checkpoint(empty, CPU, tmp_path)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a zip or pickle" * 100)
    with pytest.raises(CheckpointFormatError, match="garbage.ckpt"):
        load_checkpoint(garbage, CPU, tmp_path)


def test_lora_in_the_checkpoint_folder_is_explained(tmp_path):
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    with pytest.raises(CheckpointFormatError, match="style.safetensors: not a Stable Diffusion checkpoint.*LoRA"):
        load_checkpoint(lora, CPU, tmp_path)


def test_layout_that_does_not_match_its_config_is_reported(tiny_models, tmp_path):
    # the tiny tensors with the built-in (full-size) SD1 layout: shapes cannot fit
    copy = tmp_path / "no-sidecar.safetensors"
    shutil.copy2(tiny_models["sd1"], copy)
    with pytest.raises(CheckpointFormatError, match="no-sidecar.safetensors: the UNet tensors do not fit"):
        load_checkpoint(copy, CPU, tmp_path)


def test_bad_sidecar_yaml_is_reported(tiny_models, tmp_path):
    copy = tmp_path / "odd.safetensors"
    shutil.copy2(tiny_models["sd1"], copy)
    (tmp_path / "odd.yaml").write_text("model: {params: {}}\n")
    with pytest.raises(CheckpointFormatError, match="odd.yaml: not an LDM inference config"):
        load_checkpoint(copy, CPU, tmp_path, config_path=tmp_path / "odd.yaml")


def test_sd2_without_config_decides_v_prediction_by_test(tiny_models, tmp_path):
    """Without a yaml, SD2's prediction type is decided by A1111's UNet test; with one, the yaml decides."""
    from webui.models.architecture import detect_architecture
    state = read_state_dict(tiny_models["sd2-v"])
    arch = detect_architecture(state, "x.safetensors", None)
    assert arch.family == "sd2" and not arch.prediction_known
    arch = detect_architecture(state, "x.safetensors", tiny_models["sd2-v"].with_suffix(".yaml"))
    assert arch.prediction_known and arch.prediction_type == "v_prediction"


def test_derived_tokenizer_matches_open_clip(tmp_path):
    import open_clip

    from webui.models.tokenizer import clip_tokenizer
    tokenizer = clip_tokenizer(tmp_path)
    assert len(tokenizer) == 49408
    for text in ["a photo of a cat", "masterpiece, (best quality:1.2), café naïve 1girl <lora:x:0.5>", ""]:
        expected = [t for t in open_clip.tokenize([text])[0].tolist() if t != 0]
        assert tokenizer(text).input_ids == expected


def test_safetensors_reader_equals_the_library_and_keeps_no_tie_to_the_file(tiny_models, tmp_path):
    from safetensors.torch import load_file
    reference = load_file(str(tiny_models["sdxl"]))
    copy = tmp_path / "copy.safetensors"
    shutil.copy2(tiny_models["sdxl"], copy)
    ours = read_state_dict(copy)
    assert set(ours) == set(reference) and all(torch.equal(ours[k], reference[k]) for k in ours)
    mixed = {"bf16": torch.randn(3, 2).to(torch.bfloat16), "f16": torch.randn(5).half(), "i64": torch.arange(4),
             "scalar": torch.tensor(1.5), "empty": torch.zeros(0, 3)}
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    back = read_state_dict(tmp_path / "mixed.safetensors")
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in mixed.items())
    # a user copies another version over the loaded file: the loaded tensors must not change (nor crash)
    before = {k: v.clone() for k, v in list(ours.items())[:20]}
    with open(copy, "r+b") as fh:
        fh.truncate(1000)
    assert all(torch.equal(ours[k], v) for k, v in before.items())


def test_model_loaded_from_a_file_survives_the_file_being_overwritten(tiny_models, tmp_path):
    path = tmp_path / "m.safetensors"
    shutil.copy2(tiny_models["sd1"], path)
    model = load_checkpoint(path, CPU, tmp_path, config_path=tiny_models["sd1"].with_suffix(".yaml"))
    weight = next(model.unet.parameters()).clone()
    shutil.copyfile(tiny_models["sd1-inpaint"], path)  # rewrites the same inode in place
    path.write_bytes(b"")
    assert torch.equal(next(model.unet.parameters()), weight)
