"""LoRA on Z-Image checkpoints: the formats people train them in (ai-toolkit / ComfyUI's `diffusion_model.` with
diffusers' module names, diffusers / PEFT `transformer.`, kohya-style `lora_unet_` on Z-Image's original module tree
with a fused qkv, the dotted `.lora.down.weight` spelling) patch the tiny transformer by exactly the changes the
test built each file from; diffusers' own `ZImagePipeline.load_lora_weights` + `fuse_lora` agrees for the formats it
reads; removal is bit for bit; the family is recognised (other families' LoRAs are skipped with a warning, both
ways); `<lora:...>` through the server gives diffusers' picture with the changes merged."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import pixels
from tests.test_flux_lora import assert_bit_exact, install, snapshot
from tests.transformer_checks import rounded
from webui.core.request import GenerationRequest
from webui.models.networks import NetworkRequest, apply_networks
from webui.models.tiny_zimage import DIM, tiny_zimage_modules, write_zimage_data, zimage_pipeline
from webui.settings.flags import parse_flags

RANK = 4
FF = 170  # the tiny transformer's feed-forward width


@torch.no_grad()
def transformer_out(module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    latents = [torch.randn(16, 1, 8, 8, generator=g)]
    captions = [torch.randn(5, module.config.cap_feat_dim, generator=g)]
    return module(latents, torch.tensor([0.4]), captions, return_dict=False)[0][0].float()


class Builder:
    """Random low-rank pairs; `expected` collects each diffusers module's weight change (alpha / rank included)."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}
        self.expected: dict[str, torch.Tensor] = {}

    def pair(self, key: str, rows: int, cols: int, down: str, up: str, alpha: float | None) -> torch.Tensor:
        a, b = torch.randn(RANK, cols, generator=self.g) * 0.3, torch.randn(rows, RANK, generator=self.g) * 0.3
        self.state[key + down], self.state[key + up] = a, b
        if alpha is not None:
            self.state[key + ".alpha"] = torch.tensor(alpha)
        return (alpha / RANK if alpha is not None else 1.0) * b @ a


# the modules each file touches (diffusers' names, rows, columns)
TOUCHED = (("layers.0.attention.to_q", DIM, DIM), ("layers.1.attention.to_v", DIM, DIM),
           ("layers.0.attention.to_out.0", DIM, DIM), ("layers.1.feed_forward.w1", FF, DIM),
           ("noise_refiner.0.feed_forward.w2", DIM, FF), ("context_refiner.0.attention.to_k", DIM, DIM),
           ("layers.0.adaLN_modulation.0", 4 * DIM, DIM))


def ai_toolkit_file() -> Builder:
    """ai-toolkit / ComfyUI: `diffusion_model.` + diffusers' module names, PEFT endings, no alpha."""
    b = Builder(3)
    for name, rows, cols in TOUCHED:
        b.expected[name] = b.pair("diffusion_model." + name, rows, cols, ".lora_A.weight", ".lora_B.weight", None)
    return b


def peft_file() -> Builder:
    """diffusers / PEFT: `transformer.` + diffusers' module names."""
    b = Builder(4)
    for name, rows, cols in TOUCHED:
        b.expected[name] = b.pair("transformer." + name, rows, cols, ".lora_A.weight", ".lora_B.weight", None)
    return b


def kohya_diffusers_names_file() -> Builder:
    """kohya-style `lora_unet_` with underscores over diffusers' module names, with alphas."""
    b = Builder(5)
    for name, rows, cols in TOUCHED:
        b.expected[name] = b.pair("lora_unet_" + name.replace(".", "_"), rows, cols, ".lora_down.weight",
                                  ".lora_up.weight", 2.0)
    return b


def original_names_file() -> Builder:
    """Z-Image's original module tree in kohya's spelling: a fused qkv (split by rows onto to_q / to_k / to_v,
    `lora_down` shared), `attention.out`, `x_embedder`, `final_layer`, with alphas."""
    b = Builder(6)
    delta = b.pair("lora_unet_layers_1_attention_qkv", 3 * DIM, DIM, ".lora_down.weight", ".lora_up.weight", 2.0)
    for index, name in enumerate(("to_q", "to_k", "to_v")):
        b.expected[f"layers.1.attention.{name}"] = delta[index * DIM:(index + 1) * DIM]
    b.expected["layers.0.attention.to_out.0"] = b.pair("lora_unet_layers_0_attention_out", DIM, DIM,
                                                       ".lora_down.weight", ".lora_up.weight", 2.0)
    b.expected["noise_refiner.0.feed_forward.w3"] = b.pair("lora_unet_noise_refiner_0_feed_forward_w3", FF, DIM,
                                                           ".lora_down.weight", ".lora_up.weight", 2.0)
    b.expected["all_x_embedder.2-1"] = b.pair("lora_unet_x_embedder", DIM, 64, ".lora_down.weight",
                                              ".lora_up.weight", 2.0)
    b.expected["all_final_layer.2-1.linear"] = b.pair("lora_unet_final_layer_linear", 64, DIM, ".lora_down.weight",
                                                      ".lora_up.weight", 2.0)
    return b


def comfy_original_dotted_file() -> Builder:
    """ComfyUI's spelling of the original tree: `diffusion_model.layers.0.attention.qkv.lora_A.weight`."""
    b = Builder(7)
    delta = b.pair("diffusion_model.context_refiner.0.attention.qkv", 3 * DIM, DIM, ".lora_A.weight",
                   ".lora_B.weight", None)
    for index, name in enumerate(("to_q", "to_k", "to_v")):
        b.expected[f"context_refiner.0.attention.{name}"] = delta[index * DIM:(index + 1) * DIM]
    b.expected["layers.1.attention.to_out.0"] = b.pair("diffusion_model.layers.1.attention.out", DIM, DIM,
                                                       ".lora_A.weight", ".lora_B.weight", None)
    return b


def comfy_embedder_and_final_layer_file() -> Builder:
    """Original names without any attention module: ComfyUI's spelling of `x_embedder` and `final_layer`."""
    b = Builder(8)
    b.expected["all_x_embedder.2-1"] = b.pair("diffusion_model.x_embedder", DIM, 64, ".lora_A.weight",
                                              ".lora_B.weight", None)
    b.expected["all_final_layer.2-1.adaLN_modulation.1"] = b.pair("diffusion_model.final_layer.adaLN_modulation.1",
                                                                  DIM, DIM, ".lora_A.weight", ".lora_B.weight", None)
    b.expected["layers.0.feed_forward.w2"] = b.pair("diffusion_model.layers.0.feed_forward.w2", DIM, FF,
                                                    ".lora_A.weight", ".lora_B.weight", None)
    return b


FORMATS = {"ai-toolkit": ai_toolkit_file, "peft": peft_file, "kohya": kohya_diffusers_names_file,
           "original": original_names_file, "comfy-original": comfy_original_dotted_file,
           "comfy-embedder": comfy_embedder_and_final_layer_file}


@pytest.fixture(scope="module")
def reference():
    modules = tiny_zimage_modules(0)
    modules["qwen3"] = rounded(modules["qwen3"], torch.bfloat16)  # as the server's qwen_3_4b.safetensors holds it
    return modules


def zimage_model(modules):
    return SimpleNamespace(family="zimage", unet=modules["transformer"], text_encoders=[modules["qwen3"]])


def with_deltas(module, deltas: dict[str, torch.Tensor], multiplier: float = 1.0):
    clone = copy.deepcopy(module)
    with torch.no_grad():
        for name, delta in deltas.items():
            weight = clone.get_submodule(name).weight
            weight.copy_(weight + multiplier * delta)
    return clone


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_patches_exactly_the_expected_changes_and_restores_bit_for_bit(reference, tmp_path, fmt):
    modules = {k: copy.deepcopy(v) for k, v in reference.items()}
    model = zimage_model(modules)
    b = FORMATS[fmt]()
    info = install(tmp_path, b.state, fmt)
    assert info.base_family == "zimage"
    before = snapshot(modules["transformer"])
    report = apply_networks(model, [NetworkRequest(info, 1.0, 1.0)])
    assert report.warnings == [] and [i.name for i in report.applied] == [fmt], report.warnings
    assert model.networks.patched == len(b.expected)
    for name, delta in b.expected.items():  # each layer itself, so a wrong split cannot hide
        torch.testing.assert_close(modules["transformer"].get_submodule(name).weight,
                                   reference["transformer"].get_submodule(name).weight + delta, rtol=1e-5,
                                   atol=1e-6, msg=name)
    torch.testing.assert_close(transformer_out(modules["transformer"]),
                               transformer_out(with_deltas(reference["transformer"], b.expected)), rtol=1e-4,
                               atol=1e-5)
    apply_networks(model, [NetworkRequest(info, 1.0, 0.5)])
    torch.testing.assert_close(transformer_out(modules["transformer"]),
                               transformer_out(with_deltas(reference["transformer"], b.expected, 0.5)), rtol=1e-4,
                               atol=1e-5)
    apply_networks(model, [])
    assert_bit_exact([modules["transformer"]], before)


def test_diffusers_own_fuse_lora_agrees(reference, tmp_path):
    """diffusers' ZImagePipeline.load_lora_weights + fuse_lora on the same tiny modules and files, for the formats
    its Z-Image converter reads. It splits a fused qkv only in the `.lora.down.weight` spelling, renames
    `attention.out` only with kohya's endings, and leaves the original `x_embedder` / `final_layer` names unmatched
    (we map them as its checkpoint converter lays those layers out): the test above checks those against the
    expected changes."""
    files = {"ai-toolkit": ai_toolkit_file(), "peft": peft_file(), "kohya": kohya_diffusers_names_file()}
    original = original_names_file()
    files["original-without-qkv"] = original
    for key in [k for k in original.state if "qkv" in k or "x_embedder" in k or "final_layer" in k]:
        del original.state[key]
    for fmt, b in files.items():
        ours = {k: copy.deepcopy(v) for k, v in reference.items()}
        info = install(tmp_path / fmt, b.state, fmt)
        report = apply_networks(zimage_model(ours), [NetworkRequest(info)])
        assert report.applied and not report.warnings, report.warnings
        theirs = {k: copy.deepcopy(v) for k, v in reference.items()}
        pipe = zimage_pipeline(theirs, None)
        pipe.load_lora_weights({k: v.clone() for k, v in b.state.items()}, adapter_name="x")
        pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
        pipe.unload_lora_weights()
        torch.testing.assert_close(transformer_out(ours["transformer"]), transformer_out(pipe.transformer),
                                   rtol=1e-4, atol=1e-5, msg=fmt)


def test_other_families_are_skipped_with_a_warning_both_ways(reference, tmp_path, tiny_models):
    from tests.test_flux_lora import kohya_file
    from webui.models import tiny_flux

    zimage = zimage_model({k: copy.deepcopy(v) for k, v in reference.items()})
    flux_lora = install(tmp_path / "flux", kohya_file().state, "flux-lora")
    assert flux_lora.base_family == "flux"
    report = apply_networks(zimage, [NetworkRequest(flux_lora)])
    assert not report.applied and "FLUX.1" in report.warnings[0] and "Z-Image" in report.warnings[0]

    zimage_lora = install(tmp_path / "z", ai_toolkit_file().state, "z-lora")
    flux = tiny_flux.tiny_flux_modules(0, "dev")
    model = SimpleNamespace(family="flux", unet=flux["transformer"], text_encoders=[flux["clip"], flux["t5"]])
    report = apply_networks(model, [NetworkRequest(zimage_lora)])
    assert not report.applied and "Z-Image" in report.warnings[0] and "FLUX.1" in report.warnings[0]


@pytest.fixture(scope="module")
def zimage_server(tmp_path_factory):
    from webui.services import build_services

    data = write_zimage_data(tmp_path_factory.mktemp("zimage-lora-data"))
    b = original_names_file()
    (data / "models" / "Lora").mkdir(parents=True)
    save_file(b.state, str(data / "models" / "Lora" / "z-style.safetensors"))
    services = build_services(parse_flags(["--data-dir", str(data)]))
    services.hasher.wait_idle(30)
    yield services, b
    services.stop()


def _request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, negative_prompt="", sampler_name="Euler", scheduler="Automatic", steps=3,
                             width=64, height=64, seed=9, cfg_scale=1.0, save_images=False,
                             checkpoint="z_image_turbo")


def test_lora_tag_in_a_zimage_generation(zimage_server, reference):
    services, b = zimage_server
    tagged = services.engine.run(_request("a cat on a red sofa <lora:z-style:0.7>"))
    assert tagged.warnings == [], tagged.warnings
    lora = services.models.loras.find("z-style")
    assert f'Lora hashes: "z-style: {lora.shorthash}"' in tagged.infotexts[0]
    _, model = services.models.get("z_image_turbo")
    modules = {k: copy.deepcopy(v) for k, v in reference.items()}
    modules["transformer"] = with_deltas(modules["transformer"], b.expected, 0.7)
    expected = zimage_pipeline(modules, model.tokenizers[0])(
        "a cat on a red sofa", num_inference_steps=3, guidance_scale=0.0, height=64, width=64,
        generator=torch.Generator().manual_seed(9)).images[0]
    assert np.abs(pixels(tagged.images[0]) - pixels(expected)).max() <= 1
    plain = services.engine.run(_request("a cat on a red sofa"))
    assert "Lora hashes" not in plain.infotexts[0]
    assert np.abs(pixels(plain.images[0]) - pixels(tagged.images[0])).max() > 3
    unpatched = zimage_pipeline({k: copy.deepcopy(v) for k, v in reference.items()}, model.tokenizers[0])(
        "a cat on a red sofa", num_inference_steps=3, guidance_scale=0.0, height=64, width=64,
        generator=torch.Generator().manual_seed(9)).images[0]
    assert np.abs(pixels(plain.images[0]) - pixels(unpatched)).max() <= 1


def test_qwen3_text_encoder_modules_are_patched_when_named_as_diffusers_or_kohya_name_them(reference, tmp_path):
    """A Z-Image LoRA's text-encoder part: diffusers' `text_encoder.layers.N...` and kohya's `lora_te_layers_N_...`
    reach the Qwen3 encoder's layers; a name with Qwen3ForCausalLM's `model.` level matches nothing and is reported."""
    modules = {k: copy.deepcopy(v) for k, v in reference.items()}
    model = zimage_model(modules)
    b = Builder(9)
    width = modules["qwen3"].config.hidden_size
    q_rows = modules["qwen3"].layers[0].self_attn.q_proj.weight.shape[0]
    te = {"layers.0.self_attn.q_proj": b.pair("text_encoder.layers.0.self_attn.q_proj", q_rows, width,
                                              ".lora_A.weight", ".lora_B.weight", None),
          "layers.0.mlp.up_proj": b.pair("lora_te_layers_0_mlp_up_proj", modules["qwen3"].config.intermediate_size,
                                         width, ".lora_down.weight", ".lora_up.weight", 2.0)}
    b.pair("text_encoder.model.layers.0.self_attn.k_proj", 8, width, ".lora_A.weight", ".lora_B.weight", None)
    b.expected["layers.0.attention.to_q"] = b.pair("diffusion_model.layers.0.attention.to_q", DIM, DIM,
                                                   ".lora_A.weight", ".lora_B.weight", None)
    info = install(tmp_path, b.state, "with-te")
    report = apply_networks(model, [NetworkRequest(info)])
    assert report.applied and len(report.warnings) == 1
    assert "text_encoder.model.layers.0.self_attn.k_proj" in report.warnings[0]
    for name, delta in te.items():
        torch.testing.assert_close(modules["qwen3"].get_submodule(name).weight,
                                   reference["qwen3"].get_submodule(name).weight + delta, rtol=1e-5, atol=1e-6)
