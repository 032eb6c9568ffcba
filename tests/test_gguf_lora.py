"""LoRA on GGUF-quantised FLUX.1 checkpoints: the quantised weights are never written; each LoRA's change is added
to the layer's output at run time. The patched transformer computes what diffusers' FluxTransformer2DModel does
with the file's dequantised weights plus the LoRA's changes merged in (plain LoRA, LoHa, a full diff and a bias
change), multipliers re-weight it, removal gives the unpatched output bit for bit with the quantised bytes
untouched, and `<lora:...>` on a GGUF checkpoint works through the API."""
from __future__ import annotations

import base64
import io
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402

from tests.conftest import pixels  # noqa: E402
from tests.test_flux_lora import H, Builder, install, kohya_file, with_deltas  # noqa: E402
from tests.test_gguf import _inputs, _reference, held_values, write_gguf  # noqa: E402
from webui.models.flux import diffusers_to_bfl  # noqa: E402
from webui.models.gguf_files import read_gguf_file  # noqa: E402
from webui.models.networks import NetworkRequest, apply_networks  # noqa: E402
from webui.models.tiny_flux import tiny_flux_modules, write_flux_parts  # noqa: E402
from webui.models.tiny_t5_tokenizer import write_tiny_t5_tokenizer  # noqa: E402
from webui.settings.flags import parse_flags  # noqa: E402

PROMPT = "a red fox in the snow"
SIZE = 64
LOHA_TARGET = "transformer_blocks.0.ff.net.2"  # (H, 4H)
DIFF_TARGET = "transformer_blocks.0.ff.net.0.proj"  # (4H, H), with a bias


def mixed_file() -> Builder:
    """kohya's plain LoRA pairs (BFL names, fused qkv / linear1 split onto diffusers' layers) plus, in OneTrainer's
    names, a LoHa module and a full diff with a bias change: the kinds kept dense at run time."""
    b = kohya_file()
    assert LOHA_TARGET not in b.expected and DIFF_TARGET not in b.expected
    g = torch.Generator().manual_seed(12)
    key = "lora_transformer_" + LOHA_TARGET.replace(".", "_")
    w1a, w1b, w2a, w2b = (torch.randn(H, 2, generator=g) * 0.3, torch.randn(2, 4 * H, generator=g) * 0.3,
                          torch.randn(H, 2, generator=g) * 0.3, torch.randn(2, 4 * H, generator=g) * 0.3)
    b.state.update({key + ".hada_w1_a": w1a, key + ".hada_w1_b": w1b, key + ".hada_w2_a": w2a,
                    key + ".hada_w2_b": w2b, key + ".alpha": torch.tensor(1.0)})
    b.expected[LOHA_TARGET] = (w1a @ w1b) * (w2a @ w2b) * 0.5  # alpha 1 / rank 2
    key = "lora_transformer_" + DIFF_TARGET.replace(".", "_")
    diff, bias = torch.randn(4 * H, H, generator=g) * 0.05, torch.randn(4 * H, generator=g) * 0.05
    b.state.update({key + ".diff": diff, key + ".diff_b": bias})
    b.expected[DIFF_TARGET] = diff
    b.bias = {DIFF_TARGET: bias}
    return b


def with_changes(module, b: Builder, multiplier: float = 1.0):
    reference = with_deltas(module, b.expected, multiplier)
    with torch.no_grad():
        for name, change in b.bias.items():
            reference.get_submodule(name).bias.add_(change * multiplier)
    return reference


def _quantised_bytes(transformer) -> list[torch.Tensor]:
    return [p.as_tensor().clone() for p in transformer.parameters() if getattr(p, "quant_type", None) is not None]


def test_a_lora_on_a_gguf_transformer_is_added_at_run_time_and_removed_exactly(tmp_path):
    modules = tiny_flux_modules(0, "dev")
    tiny = modules["transformer"]
    write_gguf(tmp_path / "flux1-dev-Q8_0.gguf", diffusers_to_bfl(tiny.state_dict()), Q.Q8_0)
    _, parts = read_gguf_file(tmp_path / "flux1-dev-Q8_0.gguf", torch.float32)
    transformer = parts.transformer
    model = SimpleNamespace(family="flux", unet=transformer, text_encoders=[modules["clip"], modules["t5"]])
    dequantised = _reference(held_values(tiny.state_dict(), Q.Q8_0))
    b = mixed_file()
    info = install(tmp_path / "Lora", b.state, "mixed")
    with torch.no_grad():
        before = transformer(**_inputs(transformer))[0]
    stored = _quantised_bytes(transformer)

    report = apply_networks(model, [NetworkRequest(info, 1.0, 1.0)])
    assert report.warnings == [] and [item.name for item in report.applied] == ["mixed"]
    assert model.networks.patched == len(b.expected) + len(b.te)  # CLIP-L (not quantised) is patched as usual
    expected = with_changes(dequantised, b)
    with torch.no_grad():
        got = transformer(**_inputs(transformer))[0]
        torch.testing.assert_close(got, expected(**_inputs(expected))[0], rtol=1e-4, atol=1e-5)
    assert (got - before).abs().max() > 1e-2  # the LoRA changes the output
    # every layer it patches is quantised and was not written
    assert all(type(transformer.get_submodule(name)).__name__ == "QuantizedLinear" for name in b.expected)
    assert all(torch.equal(a, b_) for a, b_ in zip(stored, _quantised_bytes(transformer)))

    report = apply_networks(model, [NetworkRequest(info, 1.0, 0.5)])  # re-weighted
    half = with_changes(dequantised, b, 0.5)
    with torch.no_grad():
        torch.testing.assert_close(transformer(**_inputs(transformer))[0], half(**_inputs(half))[0],
                                   rtol=1e-4, atol=1e-5)

    apply_networks(model, [])
    assert model.networks.patched == 0
    with torch.no_grad():
        assert torch.equal(transformer(**_inputs(transformer))[0], before)
    assert all(not module._forward_hooks for module in transformer.modules())


@pytest.fixture(scope="module")
def gguf_lora_app(tmp_path_factory):
    from app import create_app

    data = tmp_path_factory.mktemp("gguf-lora-data")
    checkpoints = data / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    tiny = tiny_flux_modules(0, "dev")["transformer"]
    write_gguf(checkpoints / "flux1-dev-Q8_0.gguf", diffusers_to_bfl(tiny.state_dict()), Q.Q8_0)
    parts = write_flux_parts(data / "models" / "text_encoder")
    (data / "models" / "VAE").mkdir(parents=True)
    shutil.move(parts["ae"], data / "models" / "VAE" / "ae.safetensors")
    parts["t5xxl_fp8_e4m3fn"].unlink()
    write_tiny_t5_tokenizer(data / "models" / "text_encoder" / "t5-tokenizer")
    lora = kohya_file()
    for key in list(lora.state):  # a strong change, so the picture shows it
        if key.endswith(".lora_up.weight"):
            lora.state[key] = lora.state[key] * 20
    install(data / "models" / "Lora", lora.state, "fox-style")
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    yield TestClient(app), services
    services.stop()


def _generate(client, prompt: str) -> tuple[np.ndarray, str, list]:
    body = {"prompt": prompt, "steps": 3, "sampler_name": "Euler", "scheduler": "Simple", "cfg_scale": 1,
            "distilled_cfg_scale": 3.5, "seed": 5, "width": SIZE, "height": SIZE,
            "override_settings": {"sd_model_checkpoint": "flux1-dev-Q8_0"}}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
    info = json.loads(response.json()["info"])
    return pixels(image), info["infotexts"][0], info["warnings"]


def test_lora_tag_on_a_gguf_checkpoint(gguf_lora_app):
    client = gguf_lora_app[0]
    plain, _, _ = _generate(client, PROMPT)
    styled, info, warnings = _generate(client, PROMPT + " <lora:fox-style:1>")
    assert 'Lora hashes: "fox-style: ' in info and warnings == []
    assert np.abs(styled - plain).mean() > 1
    again, info, _ = _generate(client, PROMPT)
    assert np.array_equal(again, plain) and "Lora hashes" not in info  # removed exactly


def test_the_run_time_change_follows_the_layer_to_another_device(tmp_path):
    """A model moved after a LoRA was applied (the refiner's switch moves the idle checkpoint to the CPU, --medvram
    moves parts back and forth): the change's tensors move with it at the next call (to the meta device here, which
    this CPU-only machine also has). A streamed layer's change stays in CPU memory and is copied with each call."""
    from webui.models.networks.runtime_patches import RuntimePatch

    patch = RuntimePatch(pairs=[(torch.ones(2, 4), torch.ones(3, 2))], bias=torch.ones(3))
    out = patch.output(torch.ones(1, 4, device="meta"), torch.zeros(1, 3, device="meta"))
    assert out.device.type == "meta" and patch.pairs[0][0].device.type == "meta" and patch.bias.device.type == "meta"
    streamed = RuntimePatch(pairs=[(torch.ones(2, 4), torch.ones(3, 2))], bias=torch.ones(3), streamed=True)
    out = streamed.output(torch.ones(1, 4, device="meta"), torch.zeros(1, 3, device="meta"))
    assert out.device.type == "meta" and streamed.pairs[0][0].device.type == "cpu"
    assert torch.equal(RuntimePatch(pairs=[(torch.ones(2, 4), torch.ones(3, 2))]).output(
        torch.ones(1, 4), torch.zeros(1, 3)), torch.full((1, 3), 8.0))


def test_dense_kinds_keep_no_dense_copy_of_the_weight(tmp_path):
    """A LoHa / full diff on a quantised layer keeps only the file's factors; its change is rebuilt per call."""
    tiny = tiny_flux_modules(0, "dev")["transformer"]
    write_gguf(tmp_path / "q.gguf", diffusers_to_bfl(tiny.state_dict()), Q.Q8_0)
    _, parts = read_gguf_file(tmp_path / "q.gguf", torch.float32)
    model = SimpleNamespace(family="flux", unet=parts.transformer, text_encoders=[])
    b = mixed_file()
    for key in [k for k in b.state if k.startswith("lora_unet_") or k.startswith("lora_te1_")]:
        del b.state[key]  # the LoHa and the full diff only
    info = install(tmp_path / "Lora", b.state, "dense")
    apply_networks(model, [NetworkRequest(info)])
    for name in (LOHA_TARGET, DIFF_TARGET):
        patch = parts.transformer.get_submodule(name)._runtime_lora
        assert patch.pairs == [] and len(patch.others) == 1
        held = [v for v in vars(patch).values() if isinstance(v, torch.Tensor)]
        assert sum(t.numel() for t in held) <= patch.layer_shape[0]  # the bias change at most


def test_a_streamed_transformer_takes_linear_changes_at_run_time_and_refuses_others(tmp_path):
    """On a streamed transformer a LoRA's linear layers get run-time changes and a norm change is skipped with a
    warning; when the model is placed whole again, the next apply patches the weights themselves."""
    from webui.models.streaming import Placement

    modules = tiny_flux_modules(0, "dev")
    transformer = modules["transformer"]
    original = {k: v.clone() for k, v in transformer.state_dict().items()}
    model = SimpleNamespace(family="flux", unet=transformer, text_encoders=[], placement=Placement(True, True, 0, "t"))
    g = torch.Generator().manual_seed(2)
    state = {"lora_transformer_transformer_blocks_0_attn_to_q.lora_down.weight": torch.randn(4, H, generator=g),
             "lora_transformer_transformer_blocks_0_attn_to_q.lora_up.weight": torch.randn(H, 4, generator=g),
             "lora_transformer_transformer_blocks_0_attn_norm_q.w_norm": torch.randn(32, generator=g) * 0.1}
    info = install(tmp_path, state, "with-norm")
    report = apply_networks(model, [NetworkRequest(info)])
    assert len(report.warnings) == 1 and "not linear layers" in report.warnings[0]
    assert "streamed from RAM" in report.warnings[0]
    to_q = transformer.transformer_blocks[0].attn.to_q
    assert hasattr(to_q, "_runtime_lora")
    assert all(torch.equal(v, original[k]) for k, v in transformer.state_dict().items())  # nothing written

    model.placement = None  # placed whole: the weights themselves are patched
    report = apply_networks(model, [NetworkRequest(info)])
    assert report.warnings == [] and not hasattr(to_q, "_runtime_lora")
    assert not torch.equal(to_q.weight, original["transformer_blocks.0.attn.to_q.weight"])
    apply_networks(model, [])
    assert all(torch.equal(v, original[k]) for k, v in transformer.state_dict().items())
