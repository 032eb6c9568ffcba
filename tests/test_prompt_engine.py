"""The prompt language inside a generation: editing and alternation reach the UNet at the right step, AND is
composable diffusion, comments and extra-network tags are handled, and the infotext keeps the prompt as typed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import PARITY_TOLERANCE, max_pixel_difference, pixels, quick_run as run
from webui.prompts.encoder import PromptEncoder


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_models):
    from tests.conftest import install_model
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    data = tmp_path_factory.mktemp("prompt-engine")
    install_model(data, tiny_models["sd1"])
    services = build_services(parse_flags(["--data-dir", str(data)]))
    services.models.select("tiny-sd1")
    yield services
    services.stop()


class UNetInputs:
    """Records the text conditioning the UNet receives at each call."""

    def __init__(self, unet):
        self.calls: list[torch.Tensor] = []
        self._handle = unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append(kwargs["encoder_hidden_states"].detach().clone())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def encodings(services, *texts):
    _, model = services.models.get()
    return [c.embeds for c in PromptEncoder(model, torch.device("cpu")).encode_batch(list(texts))]


def which(call_half: torch.Tensor, candidates: dict) -> str:
    for name, embeds in candidates.items():
        if torch.allclose(call_half, embeds, atol=1e-5, rtol=0):
            return name
    return "?"


def test_prompt_editing_changes_the_conditioning_at_the_step(services):
    fox, hen = encodings(services, "a fox", "a hen")
    _, model = services.models.get()
    with UNetInputs(model.unet) as spy:
        run(services, prompt="a [fox:hen:2]", steps=5)
    assert len(spy.calls) == 5
    seen = [which(call[1:2], {"fox": fox, "hen": hen}) for call in spy.calls]  # row 0 is the negative prompt
    assert seen == ["fox", "fox", "fox", "hen", "hen"]


def test_alternation_in_the_sampling_loop(services):
    cat, dog = encodings(services, "a cat", "a dog")
    _, model = services.models.get()
    with UNetInputs(model.unet) as spy:
        run(services, prompt="a [cat|dog]", steps=5)
    assert [which(c[1:2], {"cat": cat, "dog": dog}) for c in spy.calls] == ["cat", "cat", "dog", "cat", "dog"]


def test_second_order_samplers_count_model_evaluations(services):
    """Heun evaluates twice a step (diffusers: 2 x steps - 1 calls); A1111 counts evaluations, so [a:b:0.5]
    over 3 steps switches after evaluation index int(0.5 x 6) = 3."""
    fox, hen = encodings(services, "a fox", "a hen")
    _, model = services.models.get()
    with UNetInputs(model.unet) as spy:
        run(services, prompt="a [fox:hen:0.5]", steps=3, sampler_name="Heun")
    assert [which(c[1:2], {"fox": fox, "hen": hen}) for c in spy.calls] == ["fox"] * 4 + ["hen"]


def test_and_sends_every_sub_prompt_and_combines_them(services):
    _, model = services.models.get()
    with UNetInputs(model.unet) as spy:
        split = run(services, prompt="a fox :0.5 AND a fox :0.5")
    assert spy.calls[0].shape[0] == 3  # negative, then the two sub-prompts
    plain = run(services, prompt="a fox")
    assert np.abs(pixels(split.images[0]) - pixels(plain.images[0])).max() <= 1  # 0.5 + 0.5 of one prompt
    other = run(services, prompt="a fox AND a snowy mountain :0.8")
    # three UNet rows against two: more than float rounding must differ
    assert max_pixel_difference(other.images[0], plain.images[0]) > PARITY_TOLERANCE
    assert other.infotexts[0].startswith("a fox AND a snowy mountain :0.8\n")


def test_a_single_weighted_prompt_scales_the_guidance(services):
    weighted = run(services, prompt="a fox :2", cfg_scale=3)
    doubled = run(services, prompt="a fox", cfg_scale=6)
    assert np.abs(pixels(weighted.images[0]) - pixels(doubled.images[0])).max() <= 1


def test_comments_are_removed_unless_switched_off(services):
    plain = run(services, prompt="a fox")
    commented = run(services, prompt="a fox\n# a note to myself\n")
    # the comment is cut before encoding: the same computation in the same process, bit-identical
    assert np.array_equal(pixels(plain.images[0]), pixels(commented.images[0]))
    assert commented.infotexts[0].startswith("a fox\n# a note to myself")  # the prompt as typed
    services.options.update({"enable_prompt_comments": False}, save=False)
    try:
        literal = run(services, prompt="a fox\n# a note to myself\n")
    finally:
        services.options.update({"enable_prompt_comments": True}, save=False)
    assert not np.array_equal(pixels(plain.images[0]), pixels(literal.images[0]))


def test_unknown_networks_warn_and_the_image_is_made(services):
    plain = run(services, prompt="a fox")
    result = run(services, prompt="a fox <lora:not-there:0.8> <hypernet:old:1>")
    # the tags are cut before encoding and nothing is patched: the same computation, bit-identical
    assert np.array_equal(pixels(plain.images[0]), pixels(result.images[0]))
    assert any('LoRA "not-there" not found' in w for w in result.warnings)
    assert any("<hypernet:...> networks are not supported" in w for w in result.warnings)
    assert "Lora hashes" not in result.infotexts[0]
    assert result.infotexts[0].startswith("a fox <lora:not-there:0.8> <hypernet:old:1>\n")


def test_a_bad_lora_weight_is_a_warning(services):
    result = run(services, prompt="a fox <lora:whatever:lots>")
    assert result.images and any("lots" in w for w in result.warnings)
