"""Shared fixtures: tiny random models in the real file formats, written once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from webui.models.tiny import KINDS, write_diffusers_folder, write_single_file
from webui.settings.flags import parse_flags


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{"sd1" | "sd2-v" | "sd1-inpaint" | "sdxl": path of the .safetensors (with .yaml beside), "diffusers": folder}."""
    root = tmp_path_factory.mktemp("tiny-models")
    paths = {kind: write_single_file(root / f"tiny-{kind}.safetensors", kind) for kind in KINDS}
    paths["diffusers"] = write_diffusers_folder(root / "tiny-diffusers", root / ".cache")
    return paths


# The UNet weight scale of the calm tiny SD1 checkpoint (`tiny_calm_sd1`). At 64x64, 4-6 steps, a 1e-6 nudge of the
# initial noise moves its pictures by at most ~0.03/255 before rounding (all A1111 samplers, txt2img and img2img;
# DPM adaptive is the most sensitive), while prompt, seed, sampler, schedule, CFG scale and eta still move them by
# 6/255 and more. (At scale 1 DPM adaptive's img2img moved by 0.9/255; lower scales flatten the prompt's effect.)
CALM_UNET_SCALE = 0.7


@pytest.fixture(scope="session")
def tiny_calm_sd1(tmp_path_factory) -> Path:
    """A tiny SD1 checkpoint (.safetensors + .yaml) whose UNet is calm (`CALM_UNET_SCALE`): the model for exact
    parity tests against reference implementations (tests/test_a1111_parity.py), where float rounding must not move
    the pictures by a visible step."""
    root = tmp_path_factory.mktemp("tiny-calm")
    return write_single_file(root / "tiny-calm-sd1.safetensors", "sd1", unet_weight_scale=CALM_UNET_SCALE)


def install_model(data_dir: Path, source: Path, name: str | None = None) -> Path:
    """Copy a tiny model (and its .yaml sidecar) into data_dir's checkpoint folder."""
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
        if source.with_suffix(".yaml").exists():
            shutil.copy2(source.with_suffix(".yaml"), target.with_suffix(".yaml"))
    return target


@pytest.fixture
def make_services(tmp_path, tiny_models):
    """make_services("sd1", "sdxl", flags=[...]) -> Services over a fresh data dir holding those models."""
    from webui.services import build_services

    made = []

    def factory(*kinds: str, flags: list[str] | None = None):
        data = tmp_path / f"data{len(made)}"
        for kind in kinds:
            install_model(data, tiny_models[kind])
        services = build_services(parse_flags(["--data-dir", str(data), *(flags or [])]))
        services.hasher.wait_idle(30)
        made.append(services)
        return services

    yield factory
    for services in made:
        services.stop()


@pytest.fixture
def compat_path():
    """A1111's `modules` package importable by its own name, as extensions import it (for the test's duration)."""
    import sys

    from webui.extensions.a1111 import COMPAT_PATH

    added = str(COMPAT_PATH) not in sys.path
    if added:
        sys.path.append(str(COMPAT_PATH))
    yield
    if added:
        sys.path.remove(str(COMPAT_PATH))


def quick_run(services, **fields):
    """Run a small txt2img job straight on the engine (64x64, 3 Euler steps, fixed seed, not saved)."""
    from webui.core.request import GenerationRequest
    base = dict(prompt="a fox", negative_prompt="blurry", sampler_name="Euler", steps=3, width=64, height=64,
                seed=5, save_images=False)
    base.update(fields)
    return services.engine.run(GenerationRequest(**base))


def pixels(image):
    """An image as int16 pixels, for exact comparisons and differences."""
    import numpy as np
    return np.asarray(image, dtype=np.int16)


# Float results are not bit-identical across batch sizes, thread counts, devices or processes on every CPU (the
# matrix kernels block and sum differently), so comparisons across such runs allow this much, in 1/255 steps.
PARITY_TOLERANCE = 1


def max_pixel_difference(a, b) -> int:
    """The largest per-channel difference between two images (or arrays) of the same shape, in 1/255 steps."""
    import numpy as np
    a, b = pixels(a), pixels(b)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return int(np.abs(a - b).max()) if a.size else 0


def assert_same_picture(a, b, tolerance: int = PARITY_TOLERANCE) -> None:
    """The two images agree within the suite's parity tolerance (for runs that may differ in float summation)."""
    difference = max_pixel_difference(a, b)
    assert difference <= tolerance, f"pictures differ by up to {difference}/255 (allowed: {tolerance}/255)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the test item (the browser tests screenshot their pages on failure)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)
