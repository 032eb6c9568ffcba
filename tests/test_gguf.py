"""GGUF-quantised FLUX.1 / SD3 transformers (city96's `.gguf` files: the transformer alone, BFL / Stability names,
`general.architecture`), written here with the `gguf` package itself: its GGUFWriter and `gguf.quants.quantize`.

The reference for every comparison is the float32 diffusers model given the weights as `gguf.quants.dequantize`
(the library's own function) returns them: the loaded model must compute exactly that, while holding the weights
quantised (fewer bytes than float16)."""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import quants  # noqa: E402

from tests.conftest import pixels  # noqa: E402
from webui.models.architecture import CheckpointFormatError  # noqa: E402
from webui.models.flux import diffusers_to_bfl  # noqa: E402
from webui.models.gguf_files import read_gguf_file  # noqa: E402
from webui.models.tiny_flux import tiny_flux_modules, write_flux_parts  # noqa: E402
from webui.models.tiny_t5_tokenizer import write_tiny_t5_tokenizer  # noqa: E402
from webui.settings.flags import parse_flags  # noqa: E402

PROMPT = "a red fox in the snow"
SIZE = 64


def write_gguf(path: Path, state: dict[str, torch.Tensor], qtype, arch: str = "flux", raw: dict | None = None) -> None:
    """A GGUF file as city96's converter makes them: 2-D weights whose rows split into whole blocks quantised to
    `qtype` by gguf, the rest (biases, norms) float32; `raw`: {name: (blocks, type)} written as they are."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    writer = gguf.GGUFWriter(str(path), arch=arch)
    for name, tensor in state.items():
        if raw and name in raw:
            writer.add_tensor(name, raw[name][0], raw_dtype=raw[name][1])
            continue
        array = tensor.float().numpy()
        if array.ndim == 2 and array.shape[1] % block == 0:
            writer.add_tensor(name, quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def held_values(state: dict[str, torch.Tensor], qtype) -> dict[str, torch.Tensor]:
    """What a file written by `write_gguf` holds, by gguf's own quantize + dequantize, in diffusers' names: GGUF
    blocks run along rows, and the BFL names differ from diffusers' only by whole rows (fused q/k/v stacked, the
    final modulation's halves swapped), so each diffusers tensor's rows are quantised exactly as in the file."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    out = {}
    for name, tensor in state.items():
        array = tensor.float().numpy()
        if array.ndim == 2 and array.shape[1] % block == 0:
            array = quants.dequantize(quants.quantize(array, qtype), qtype)
        out[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return out


def _tiny(variant: str = "dev"):
    return tiny_flux_modules(0, variant)["transformer"]


def _reference(values: dict[str, torch.Tensor], variant: str = "dev"):
    """diffusers' FluxTransformer2DModel in float32 holding `values`."""
    reference = _tiny(variant)
    reference.load_state_dict(values)
    return reference.float()


def _inputs(transformer, dtype=torch.float32, seed: int = 1) -> dict:
    from webui.engine.transformer_call import image_ids
    g = torch.Generator().manual_seed(seed)
    config = transformer.config
    return dict(hidden_states=torch.randn(1, 16, config.in_channels, generator=g).to(dtype),
                encoder_hidden_states=torch.randn(1, 7, config.joint_attention_dim, generator=g).to(dtype),
                pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=g).to(dtype),
                timestep=torch.tensor([0.6], dtype=dtype),
                guidance=torch.tensor([3.5]) if config.guidance_embeds else None,
                img_ids=image_ids(8, 8, "cpu", dtype), txt_ids=torch.zeros(7, 3, dtype=dtype), return_dict=False)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q5_0, Q.Q4_0], ids=lambda q: q.name)
def test_quantised_flux_computes_the_dequantised_weights(tmp_path, qtype):
    tiny = _tiny()
    write_gguf(tmp_path / "flux1-dev-tiny.gguf", diffusers_to_bfl(tiny.state_dict()), qtype)
    family, parts = read_gguf_file(tmp_path / "flux1-dev-tiny.gguf", torch.float32)
    assert family == "flux" and parts.variant == "dev" and parts.layout == f"BFL, GGUF {qtype.name}"
    transformer = parts.transformer
    assert type(transformer.transformer_blocks[0].attn.to_q).__name__ == "QuantizedLinear"
    assert type(transformer.single_transformer_blocks[0].proj_mlp).__name__ == "QuantizedLinear"

    reference = _reference(held_values(tiny.state_dict(), qtype))
    with torch.no_grad():
        got = transformer(**_inputs(transformer))[0]
        expected = reference(**_inputs(reference))[0]
        original = tiny(**_inputs(tiny))[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)  # float rounding at most
    # ... and within quantisation error of the unquantised model (Q4_0: a 16-level grid per block of 32)
    error = ((got - original).norm() / original.norm()).item()
    assert 0 < error < {Q.Q8_0: 0.02, Q.Q5_0: 0.1, Q.Q4_0: 0.2}[qtype], error

    # memory: the quantised weights stay blocks of bytes, fewer than float16 would take
    quantised = [p for p in transformer.parameters() if getattr(p, "quant_type", None) == qtype]
    assert len(quantised) >= 20 and all(p.dtype == torch.uint8 for p in quantised)
    held_bytes = sum(p.numel() * p.element_size() for p in transformer.parameters())
    fp16_bytes = sum(p.numel() * 2 for p in reference.parameters())
    assert held_bytes < fp16_bytes * {Q.Q8_0: 0.6, Q.Q5_0: 0.45, Q.Q4_0: 0.4}[qtype], (held_bytes, fp16_bytes)
    assert parts.size_bytes == held_bytes


def _k_blocks(qtype, rows: int, columns: int, seed: int) -> np.ndarray:
    """Valid random K-quant blocks (gguf-py writes no K-quants): random bits, with the float16 super-block scales
    set to small finite values."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows * columns // block, size), dtype=np.uint8)
    scale = rng.uniform(0.0005, 0.002, size=(blocks.shape[0], 1)).astype(np.float16).view(np.uint8)
    if qtype == Q.Q6_K:  # ql, qh, int8 scales, then d
        blocks[:, -2:] = scale
    else:  # d, dmin first
        blocks[:, 0:2] = scale
        blocks[:, 2:4] = (rng.uniform(0.0005, 0.002, size=(blocks.shape[0], 1)).astype(np.float16).view(np.uint8))
    return blocks.reshape(rows, columns // block * size)


def test_k_quants_and_bfloat16_compute(tmp_path):
    """city96's Q4_K / Q5_K files: K-quants (blocks of 256) where the rows allow, other types elsewhere. Here the
    tiny model's 256-wide layers hold Q4_K, Q5_K and Q6_K blocks, the rest Q8_0; the model computed in bfloat16
    is within bfloat16 rounding of the float32 reference."""
    tiny = _tiny("schnell")
    bfl = diffusers_to_bfl(tiny.state_dict())
    k_layers = {"time_in.in_layer.weight": ("time_text_embed.timestep_embedder.linear_1.weight", Q.Q4_K),
                "double_blocks.0.img_mlp.2.weight": ("transformer_blocks.0.ff.net.2.weight", Q.Q5_K),
                "double_blocks.0.txt_mlp.2.weight": ("transformer_blocks.0.ff_context.net.2.weight", Q.Q6_K)}
    raw = {}
    values = held_values(tiny.state_dict(), Q.Q8_0)
    for index, (name, (diffusers_name, qtype)) in enumerate(k_layers.items()):
        rows, columns = bfl[name].shape
        blocks = _k_blocks(qtype, rows, columns, index)
        raw[name] = (blocks, qtype)
        values[diffusers_name] = torch.from_numpy(quants.dequantize(blocks, qtype).copy())
    write_gguf(tmp_path / "flux1-schnell-Q4_K_S.gguf", bfl, Q.Q8_0, raw=raw)
    _, parts = read_gguf_file(tmp_path / "flux1-schnell-Q4_K_S.gguf", torch.float32)
    assert parts.variant == "schnell" and parts.layout == "BFL, GGUF Q8_0+Q4_K+Q5_K+Q6_K"
    reference = _reference(values, "schnell")
    with torch.no_grad():
        torch.testing.assert_close(parts.transformer(**_inputs(parts.transformer))[0],
                                   reference(**_inputs(reference))[0], rtol=1e-5, atol=1e-6)
        _, half = read_gguf_file(tmp_path / "flux1-schnell-Q4_K_S.gguf", torch.bfloat16)
        got = half.transformer(**_inputs(half.transformer, torch.bfloat16))[0]
        expected = reference(**_inputs(reference))[0]
    assert got.dtype == torch.bfloat16
    assert ((got.float() - expected).norm() / expected.norm()).item() < 0.03


@pytest.mark.parametrize("variant", ["sd3-medium", "sd3.5-large"])
def test_quantised_sd3_computes_the_dequantised_weights(tmp_path, variant):
    """city96's SD3.5 GGUFs: Stability's MMDiT names without a prefix, `general.architecture` = "sd3"."""
    from webui.models.tiny_sd3 import diffusers_to_sai, tiny_sd3_modules

    tiny = tiny_sd3_modules(0, variant)["transformer"]
    write_gguf(tmp_path / "sd3-tiny-Q4_0.gguf", diffusers_to_sai(tiny.state_dict()), Q.Q4_0, arch="sd3")
    family, parts = read_gguf_file(tmp_path / "sd3-tiny-Q4_0.gguf", torch.float32)
    assert family == "sd3" and parts.variant == variant and parts.layout == "SAI, GGUF Q4_0"
    assert type(parts.transformer.transformer_blocks[0].attn.to_q).__name__ == "QuantizedLinear"
    reference = tiny_sd3_modules(0, variant)["transformer"]
    reference.load_state_dict(held_values(tiny.state_dict(), Q.Q4_0))
    g = torch.Generator().manual_seed(2)
    inputs = dict(hidden_states=torch.randn(1, 16, 8, 8, generator=g), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn(1, 5, reference.config.joint_attention_dim, generator=g),
                  pooled_projections=torch.randn(1, reference.config.pooled_projection_dim, generator=g),
                  return_dict=False)
    with torch.no_grad():
        torch.testing.assert_close(parts.transformer(**inputs)[0], reference(**inputs)[0], rtol=1e-5, atol=1e-6)


def test_foreign_and_broken_gguf_files_are_refused(tmp_path):
    # an LLM: metadata names its architecture, tensors in llama.cpp's names
    llama = tmp_path / "tinyllama-Q8_0.gguf"
    write_gguf(llama, {"token_embd.weight": torch.randn(64, 64), "blk.0.attn_q.weight": torch.randn(64, 64)},
               Q.Q8_0, arch="llama")
    with pytest.raises(CheckpointFormatError, match=r"tinyllama-Q8_0.gguf: a GGUF model of architecture 'llama'"):
        read_gguf_file(llama, torch.float32)
    # a family we know but do not run
    aura = tmp_path / "aura.gguf"
    write_gguf(aura, {"double_layers.0.attn.w1q.weight": torch.randn(64, 64)}, Q.Q8_0, arch="aura")
    with pytest.raises(CheckpointFormatError, match=r"architecture 'aura' \(AuraFlow\)"):
        read_gguf_file(aura, torch.float32)
    # metadata says flux, the tensors are no transformer
    odd = tmp_path / "odd.gguf"
    write_gguf(odd, {"something.weight": torch.randn(64, 64)}, Q.Q8_0)
    with pytest.raises(CheckpointFormatError, match=r"odd.gguf: no FLUX.1 or SD3 transformer tensors"):
        read_gguf_file(odd, torch.float32)
    # no GGUF at all, cut short, empty
    (tmp_path / "text.gguf").write_text("hello, not a model")
    with pytest.raises(CheckpointFormatError, match=r"text.gguf: not a readable GGUF file"):
        read_gguf_file(tmp_path / "text.gguf", torch.float32)
    whole = tmp_path / "whole.gguf"
    write_gguf(whole, diffusers_to_bfl(_tiny().state_dict()), Q.Q8_0)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with pytest.raises(CheckpointFormatError, match=r"cut.gguf: (not a readable|corrupt or truncated) GGUF"):
        read_gguf_file(cut, torch.float32)
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match="empty.gguf: the file is empty"):
        read_gguf_file(tmp_path / "empty.gguf", torch.float32)
    # an incomplete transformer
    partial = {k: v for k, v in diffusers_to_bfl(_tiny().state_dict()).items() if not k.startswith("final_layer")}
    write_gguf(tmp_path / "partial.gguf", partial, Q.Q8_0)
    with pytest.raises(CheckpointFormatError, match="partial.gguf: the Flux transformer"):
        read_gguf_file(tmp_path / "partial.gguf", torch.float32)


# --- through the server --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_app(tmp_path_factory):
    from app import create_app

    data = tmp_path_factory.mktemp("gguf-data")
    checkpoints = data / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    write_gguf(checkpoints / "flux1-dev-Q8_0.gguf", diffusers_to_bfl(_tiny().state_dict()), Q.Q8_0)
    parts = write_flux_parts(data / "models" / "text_encoder")
    (data / "models" / "VAE").mkdir(parents=True)
    shutil.move(parts["ae"], data / "models" / "VAE" / "ae.safetensors")
    parts["t5xxl_fp8_e4m3fn"].unlink()  # one file of each kind: taken without choosing it
    write_tiny_t5_tokenizer(data / "models" / "text_encoder" / "t5-tokenizer")
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui"]))
    services.hasher.wait_idle(30)
    yield TestClient(app), services
    services.stop()


def test_gguf_checkpoint_is_listed_and_generates_as_diffusers_does(gguf_app):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from webui.models.flux import scheduler_config

    client, services = gguf_app
    listed = client.get("/sdapi/v1/sd-models").json()
    assert any(m["model_name"] == "flux1-dev-Q8_0" and m["filename"].endswith(".gguf") for m in listed), listed
    body = {"prompt": PROMPT, "steps": 4, "sampler_name": "Euler", "scheduler": "Simple", "cfg_scale": 1,
            "distilled_cfg_scale": 3.5, "seed": 11, "width": SIZE, "height": SIZE,
            "override_settings": {"sd_model_checkpoint": "flux1-dev-Q8_0"}}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
    info = response.json()["info"]
    assert "Model: flux1-dev-Q8_0" in info and "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16" in info, info

    _, model = services.models.get("flux1-dev-Q8_0")
    assert "GGUF Q8_0" in model.label
    modules = tiny_flux_modules(0, "dev")
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**scheduler_config("dev")), vae=modules["vae"],
                        text_encoder=modules["clip"], tokenizer=model.tokenizers[0], text_encoder_2=modules["t5"],
                        tokenizer_2=model.tokenizers[1],
                        transformer=_reference(held_values(modules["transformer"].state_dict(), Q.Q8_0)))
    expected = pipe(PROMPT, num_inference_steps=4, guidance_scale=3.5, height=SIZE, width=SIZE,
                    generator=torch.Generator().manual_seed(11), max_sequence_length=512).images[0]
    difference = np.abs(pixels(image) - pixels(expected))
    assert difference.max() <= 1, difference.max()
    assert pixels(image).std() > 5


def test_a_gguf_is_refused_by_the_merger_with_a_clear_message(gguf_app):
    client, _ = gguf_app
    response = client.post("/sdapi/v1/merge-checkpoint", json={
        "primary_model_name": "flux1-dev-Q8_0", "secondary_model_name": "flux1-dev-Q8_0"})
    assert 400 <= response.status_code < 500, response.text
    assert "GGUF" in response.text
