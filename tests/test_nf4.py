"""bitsandbytes NF4 FLUX.1 checkpoints (Forge's flux1-dev-bnb-nf4 layout), written by bitsandbytes itself (in a
process of its own: tests/nf4_reference.py): the linear weights stay 4-bit in memory, the transformer computes what
diffusers' FluxTransformer2DModel does with bitsandbytes' own `dequantize_4bit` values (with and without double
quantisation), LoRAs apply at run time, the whole file (with its packed CLIP-L, T5 and AE) generates as diffusers'
FluxPipeline on those values, and FP4 files are refused by name."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.conftest import pixels
from webui.models.flux import bfl_to_diffusers, diffusers_to_bfl, read_flux_file
from webui.models.loader import read_state_dict
from webui.models.tiny_flux import flux_state, tiny_flux_modules
from webui.models.tiny_t5_tokenizer import write_tiny_t5_tokenizer
from webui.settings.flags import parse_flags

BLOCK = 64
PROMPT = "a red fox in the snow"
SIZE = 64
ASIDE = Path(sys.prefix) / "aside"  # bitsandbytes, installed beside the venv (requirements-test-aside.txt)

if not (ASIDE / "bitsandbytes").is_dir():
    if os.environ.get("CI"):
        raise RuntimeError(f"bitsandbytes is not in {ASIDE}: ./launch.sh --test installs it there")
    pytest.skip(f"bitsandbytes is not in {ASIDE} (./launch.sh --test installs it)", allow_module_level=True)


def quantise(state: dict[str, torch.Tensor], prefix: str = "", nested: bool = True, quant_type: str = "nf4"):
    """(a Forge NF4 file's tensors: every 2-D `.weight` under `prefix` whose rows are whole blocks quantised by
    bitsandbytes and saved as its Linear4bit saves them, the rest as they are; {key: the values bitsandbytes'
    dequantize_4bit gives back}), made by tests/nf4_reference.py in a process of its own."""
    with tempfile.TemporaryDirectory() as folder:
        source, target, values = (Path(folder) / name for name in ("in.safetensors", "out.safetensors",
                                                                   "values.safetensors"))
        save_file({k: v.contiguous() for k, v in state.items()}, str(source))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ASIDE), str(Path(__file__).parent.parent)]))
        subprocess.run([sys.executable, str(Path(__file__).parent / "nf4_reference.py"), str(source), str(target),
                        str(values), prefix, str(BLOCK), "1" if nested else "0", quant_type], env=env, check=True,
                       capture_output=True, timeout=300)
        return load_file(str(target)), load_file(str(values))


def _bfl_state():
    return diffusers_to_bfl(tiny_flux_modules(0, "dev")["transformer"].state_dict())


def _reference(values: dict[str, torch.Tensor]):
    """diffusers' FluxTransformer2DModel (float32) holding `values` (BFL names)."""
    reference = tiny_flux_modules(0, "dev")["transformer"]
    reference.load_state_dict(bfl_to_diffusers(values, "reference"))
    return reference


def _inputs(transformer) -> dict:
    from tests.test_gguf import _inputs as gguf_inputs
    return gguf_inputs(transformer)


@pytest.mark.parametrize("nested", [True, False], ids=["double-quantised", "plain"])
def test_nf4_transformer_computes_bitsandbytes_values(tmp_path, nested):
    bfl = _bfl_state()
    quantised, held = quantise(bfl, nested=nested)
    assert len(held) >= 15 and any(".qkv." in key for key in held)  # the fused layers too
    save_file(quantised, str(tmp_path / "flux1-dev-bnb-nf4.safetensors"))
    parts = read_flux_file(read_state_dict(tmp_path / "flux1-dev-bnb-nf4.safetensors"), "nf4", torch.float32)
    assert parts.layout == "BFL, NF4" and parts.variant == "dev"
    transformer = parts.transformer
    assert type(transformer.transformer_blocks[0].attn.to_q).__name__ == "NF4Linear"
    reference = _reference({**bfl, **held})
    with torch.no_grad():
        torch.testing.assert_close(transformer(**_inputs(transformer))[0], reference(**_inputs(reference))[0],
                                   rtol=1e-5, atol=1e-6)
        # each split part of a fused layer holds exactly bitsandbytes' values for its rows
        q = transformer.transformer_blocks[0].attn.to_q
        from webui.models.nf4 import dequantize
        assert torch.equal(dequantize(q.weight), held["double_blocks.0.img_attn.qkv.weight"][:q.out_features])
    quantised_bytes = sum(p.numel() for p in transformer.parameters() if getattr(p, "quant_type", None) == "nf4")
    fp16_bytes = sum(2 * v.numel() for v in held.values())
    assert quantised_bytes < 0.35 * fp16_bytes  # 4 bits a value plus the block scales


def test_a_lora_on_an_nf4_transformer_is_added_at_run_time(tmp_path):
    from tests.test_flux_lora import install, kohya_file, with_deltas
    from webui.models.networks import NetworkRequest, apply_networks

    bfl = _bfl_state()
    quantised, held = quantise(bfl)
    save_file(quantised, str(tmp_path / "nf4.safetensors"))
    transformer = read_flux_file(read_state_dict(tmp_path / "nf4.safetensors"), "nf4", torch.float32).transformer
    modules = tiny_flux_modules(0, "dev")
    model = SimpleNamespace(family="flux", unet=transformer, text_encoders=[modules["clip"], modules["t5"]])
    lora = kohya_file()
    info = install(tmp_path / "Lora", lora.state, "k")
    before = [p.detach().clone() for p in transformer.parameters()]
    with torch.no_grad():
        plain = transformer(**_inputs(transformer))[0]
    report = apply_networks(model, [NetworkRequest(info)])
    assert report.warnings == [] and report.applied
    expected = with_deltas(_reference({**bfl, **held}), lora.expected)
    with torch.no_grad():
        torch.testing.assert_close(transformer(**_inputs(transformer))[0], expected(**_inputs(expected))[0],
                                   rtol=1e-4, atol=1e-5)
    apply_networks(model, [])
    assert all(torch.equal(a, b) for a, b in zip(before, transformer.parameters()))
    with torch.no_grad():
        assert torch.equal(transformer(**_inputs(transformer))[0], plain)


def test_fp4_files_are_refused_by_name(tmp_path):
    quantised, _ = quantise(_bfl_state(), quant_type="fp4")
    save_file(quantised, str(tmp_path / "fp4.safetensors"))
    from webui.models.architecture import CheckpointFormatError
    with pytest.raises(CheckpointFormatError, match="FP4"):
        read_flux_file(read_state_dict(tmp_path / "fp4.safetensors"), "fp4.safetensors", torch.float32)


def test_a_broken_quantisation_state_is_refused(tmp_path):
    quantised, _ = quantise(_bfl_state())
    key = next(k for k in quantised if k.endswith(".quant_state.bitsandbytes__nf4"))
    info = json.loads(bytes(quantised[key].tolist()).decode())
    info["shape"] = [7, 9]
    quantised[key] = torch.tensor(list(json.dumps(info).encode()), dtype=torch.uint8)
    save_file(quantised, str(tmp_path / "bad.safetensors"))
    from webui.models.architecture import CheckpointFormatError
    with pytest.raises(CheckpointFormatError, match="bad.safetensors: the NF4 weight"):
        read_flux_file(read_state_dict(tmp_path / "bad.safetensors"), "bad.safetensors", torch.float32)


def test_forge_nf4_file_generates_as_diffusers_does(tmp_path):
    """Forge's flux1-dev-bnb-nf4 layout: the ComfyUI-packed file (transformer under `model.diffusion_model.`, CLIP-L,
    T5 and AE beside it) with the transformer's linear weights in NF4."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from app import create_app
    from webui.models.flux import scheduler_config

    modules = tiny_flux_modules(0, "dev")
    packed = flux_state(modules, "ComfyUI", ("vae", "clip", "t5"))
    quantised, held = quantise(packed, prefix="model.diffusion_model.")
    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in quantised.items()},
              str(data / "models" / "Stable-diffusion" / "flux1-dev-bnb-nf4-v2.safetensors"))
    write_tiny_t5_tokenizer(data / "models" / "text_encoder" / "t5-tokenizer")
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    try:
        client = TestClient(app)
        body = {"prompt": PROMPT, "steps": 3, "sampler_name": "Euler", "scheduler": "Simple", "cfg_scale": 1,
                "distilled_cfg_scale": 3.5, "seed": 11, "width": SIZE, "height": SIZE,
                "override_settings": {"sd_model_checkpoint": "flux1-dev-bnb-nf4-v2"}}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
        _, model = services.models.get("flux1-dev-bnb-nf4-v2")
        assert "NF4" in model.label
        values = {k[len("model.diffusion_model."):]: v for k, v in {**packed, **held}.items()
                  if k.startswith("model.diffusion_model.")}
        pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**scheduler_config("dev")),
                            vae=modules["vae"], text_encoder=modules["clip"], tokenizer=model.tokenizers[0],
                            text_encoder_2=modules["t5"], tokenizer_2=model.tokenizers[1],
                            transformer=_reference(values))
        expected = pipe(PROMPT, num_inference_steps=3, guidance_scale=3.5, height=SIZE, width=SIZE,
                        generator=torch.Generator().manual_seed(11), max_sequence_length=512).images[0]
        assert np.abs(pixels(image) - pixels(expected)).max() <= 1
        assert pixels(image).std() > 5
    finally:
        services.stop()



@pytest.mark.parametrize("damage, message", [
    (lambda s, k: s.pop(k + ".quant_map"), "cannot be read"),
    (lambda s, k: s.pop(k + ".absmax"), "cannot be read"),
    (lambda s, k: s.__setitem__(k + ".absmax", s[k + ".absmax"][:-1]), "scales"),
])
def test_a_damaged_nf4_weight_is_refused_naming_it(tmp_path, damage, message):
    from webui.models.architecture import CheckpointFormatError

    quantised, _ = quantise(_bfl_state(), nested=False)
    key = "double_blocks.0.img_attn.qkv.weight"
    damage(quantised, key)
    with pytest.raises(CheckpointFormatError, match=f"x.safetensors: .*({key}.*{message}|{message}.*{key})"):
        read_flux_file(quantised, "x.safetensors", torch.float32)


def test_an_nf4_text_encoder_is_refused_by_name():
    from webui.models.architecture import CheckpointFormatError

    modules = tiny_flux_modules(0, "dev")
    packed = flux_state(modules, "ComfyUI", ("vae", "clip", "t5"))
    quantised, _ = quantise(packed, prefix="text_encoders.t5xxl.")
    with pytest.raises(CheckpointFormatError, match="its T5 is NF4-quantised"):
        read_flux_file(quantised, "x.safetensors", torch.float32)
