"""Real community extensions, unchanged, loaded together as a user would have them.

These tests need local git copies of the extensions (CI has no GitHub): point `WEBUI_REAL_EXTENSIONS` at a folder
holding them (each a clone named as A1111's index names its folder), e.g.

    WEBUI_REAL_EXTENSIONS=~/ext-copies .venv/bin/python -m pytest tests/test_real_extensions.py -rA

Without it the module is skipped; the behaviour each extension relies on is tested in CI by small fixtures that
reproduce its use of the API (tests/test_compat_*.py, tests/test_e2e_compat_*.py). Each extension is copied into
a fresh extensions folder and loaded with `--skip-install`, then used: its scripts run on a tiny checkpoint, its
tabs and controls are in the page, its routes answer. With `WEBUI_REAL_EXTENSIONS_INSTALL=1` the start-up runs
their install.py through the install guard (pip installs into the running environment: use a throwaway one, e.g.
a venv whose site-packages has a .pth line naming the web UI's).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import install_model

SOURCE = Path(os.environ.get("WEBUI_REAL_EXTENSIONS", "")).expanduser()
pytestmark = pytest.mark.skipif(not os.environ.get("WEBUI_REAL_EXTENSIONS") or not SOURCE.is_dir(),
                                reason="WEBUI_REAL_EXTENSIONS does not name a folder of extension clones")

# folder name -> (kind, what it needs beyond the web UI). Kinds: processing (hooks generation), ui (adds controls,
# tabs or page scripts), internals (patches A1111's LDM model / samplers: expected to be refused clearly).
EXTENSIONS = {
    "stable-diffusion-webui-wildcards": "processing",
    "sd-dynamic-prompts": "processing",
    "StyleSelectorXL": "processing",
    "StylePile": "processing",
    "seed_travel": "processing",
    "ultimate-upscale-for-automatic1111": "processing",
    "stable-diffusion-webui-anti-burn": "internals",
    "adetailer": "processing",
    "sd-webui-ar": "ui",
    "sd-webui-aspect-ratio-helper": "ui",
    "a1111-sd-webui-tagcomplete": "ui",
    "stable-diffusion-webui-images-browser": "ui",
    "Config-Presets": "ui",
    "stable-diffusion-webui-state": "ui",
    "sd-extension-system-info": "ui",
    "Stable-Diffusion-Webui-Civitai-Helper": "ui",
    "sd-webui-tunnels": "ui",
    "stable-diffusion-webui-rembg": "processing",
    "sd-dynamic-thresholding": "internals",
    "sd-webui-vectorscope-cc": "internals",
    "sd_save_intermediate_images": "internals",
}
PRESENT = [name for name in EXTENSIONS if (SOURCE / name).is_dir()] if SOURCE.is_dir() else []
NEEDS_PACKAGE = {"sd-dynamic-prompts": "dynamicprompts", "adetailer": "ultralytics", "seed_travel": "matplotlib",
                 "sd_save_intermediate_images": "picologging", "sd-webui-tunnels": "pycloudflared",
                 "stable-diffusion-webui-rembg": "rembg"}


@pytest.fixture(scope="module")
def webui(tmp_path_factory, tiny_models):
    """One server with every present extension installed, as a user who installed them all would have it."""
    from fastapi.testclient import TestClient

    from app import create_app
    from webui.extensions.host import parse_flags_with_extensions
    from webui.services import build_services

    data = tmp_path_factory.mktemp("real-ext-data")
    install_model(data, tiny_models["sd1"])
    folder = data / "extensions"
    folder.mkdir(parents=True, exist_ok=True)
    for name in PRESENT:  # copies of the working trees (a clone may lack files its mirror left out)
        shutil.copytree(SOURCE / name, folder / name, ignore=shutil.ignore_patterns(".git"))
    wildcards = folder / "stable-diffusion-webui-wildcards" / "wildcards"
    if wildcards.parent.is_dir():
        wildcards.mkdir(exist_ok=True)
        (wildcards / "testcolor.txt").write_text("crimson\n", encoding="utf-8")
    skip = [] if os.environ.get("WEBUI_REAL_EXTENSIONS_INSTALL") else ["--skip-install"]
    flags, host = parse_flags_with_extensions(["--data-dir", str(data), *skip])
    services = build_services(flags, host)
    app, _ = create_app(flags, services)
    with TestClient(app) as client:
        yield services, data, client
    services.stop()
    from webui.extensions.a1111.runtime import RUNTIME
    RUNTIME.bind(None, None)


def problems_of(services, name: str) -> list[str]:
    """What went wrong for `name` (the install guard's notices, e.g. an optional extra left out, are not problems)."""
    return [f"{p.where}: {p.message}" for p in services.extension_problems.all()
            if p.extension == name and not p.message.startswith("UserWarning")]


def generate(services, **fields):
    from webui.core.request import GenerationRequest
    base = dict(prompt="a fox", negative_prompt="", sampler_name="Euler", steps=2, width=64, height=64, seed=5,
                save_images=False, do_not_save_grid=True)
    base.update(fields)
    job = services.generate(GenerationRequest(**base))
    assert job.wait(300)
    assert job.error is None, job.error
    return job.result


def need(name: str) -> None:
    if name not in PRESENT:
        pytest.skip(f"{name} is not in {SOURCE}")
    package = NEEDS_PACKAGE.get(name)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{name} needs the Python package {package}, which is not installed here")


@pytest.mark.parametrize("name", [n for n, kind in EXTENSIONS.items() if kind != "internals"])
def test_loads_without_problems(webui, name):
    need(name)
    services, _, _ = webui
    assert problems_of(services, name) == []


@pytest.mark.parametrize("name", [n for n, kind in EXTENSIONS.items() if kind == "internals"])
def test_model_internals_are_refused_clearly(webui, name):
    need(name)
    services, _, _ = webui
    found = problems_of(services, name)
    assert found and all("internals" in text for text in found), found


def test_plain_generation_with_every_extension_installed(webui):
    services, _, _ = webui
    result = generate(services, batch_size=2)
    assert len(result.images) == 2
    assert not [w for w in result.warnings if "Extension" in w], result.warnings


def test_wildcards(webui):
    need("stable-diffusion-webui-wildcards")
    services, _, _ = webui
    result = generate(services, prompt="a __testcolor__ fox")
    assert result.prompts == ["a crimson fox"]
    assert "Wildcard prompt: \"a __testcolor__ fox\"" in result.infotexts[0] or \
        "Wildcard prompt: a __testcolor__ fox" in result.infotexts[0]


def test_dynamic_prompts(webui):
    need("sd-dynamic-prompts")
    from webui.outputs.infotext import parse_infotext
    services, _, _ = webui
    result = generate(services, prompt="a {red|blue} fox", batch_size=2, seed=3,
                      extra={"override_settings": {"dp_write_raw_template": True}})
    assert set(result.prompts) <= {"a red fox", "a blue fox"}
    params = parse_infotext(result.infotexts[0])
    assert params["Template"] == "a {red|blue} fox"


def test_style_selector_xl(webui):
    need("StyleSelectorXL")
    services, _, _ = webui
    runner = services.extension_host.runners["txt2img"]
    script = runner.find_alwayson("Style Selector for SDXL 1.0")
    assert script is not None
    result = generate(services, prompt="a fox",
                      script_args={"style selector for sdxl 1.0": [True, False, False, False, "base"]})
    assert "Style Selector Style: base" in result.infotexts[0]


@pytest.mark.parametrize("name,title", [("seed_travel", "Seed travel"), ("StylePile", "StylePile")])
def test_selectable_scripts_are_offered(webui, name, title):
    need(name)
    services, _, _ = webui
    assert title in services.extension_host.selectable_titles("txt2img")


def test_ultimate_upscale_runs_on_img2img(webui):
    need("ultimate-upscale-for-automatic1111")
    services, _, _ = webui
    assert "Ultimate SD upscale" in services.extension_host.selectable_titles("img2img")
    source = Image.new("RGB", (64, 64), (120, 80, 40))
    result = generate(services, mode="img2img", init_images=[source], denoising_strength=0.3,
                      script_name="Ultimate SD upscale")
    assert result.images and result.images[0].size[0] >= 64


@pytest.mark.parametrize("name,tab_label", [("stable-diffusion-webui-images-browser", "Image Browser"),
                                            ("sd-extension-system-info", "System Info"),
                                            ("Stable-Diffusion-Webui-Civitai-Helper", "Civitai Helper")])
def test_extension_tabs_are_in_the_page(webui, name, tab_label):
    need(name)
    _, _, client = webui
    config = client.get("/config").json()
    labels = [c.get("props", {}).get("label") for c in config["components"] if c.get("type") == "tabitem"]
    assert tab_label in labels, labels


def test_tagcomplete_tag_files_are_served(webui):
    need("a1111-sd-webui-tagcomplete")
    _, data, client = webui
    tags = data / "extensions" / "a1111-sd-webui-tagcomplete" / "tags" / "danbooru.csv"
    response = client.get(f"/file={tags}")
    assert response.status_code == 200 and response.text.count("\n") > 1000


def test_tunnels_adds_its_flags():
    need("sd-webui-tunnels")
    from webui.extensions.host import parse_flags_with_extensions
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        ext = Path(tmp) / "extensions"
        ext.mkdir()
        shutil.copytree(SOURCE / "sd-webui-tunnels", ext / "sd-webui-tunnels", ignore=shutil.ignore_patterns(".git"))
        flags, host = parse_flags_with_extensions(["--data-dir", tmp, "--cloudflared"])
        assert flags.cloudflared is True
        assert not host.problems.all()
