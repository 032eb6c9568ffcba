"""A1111 compatibility: script registration as A1111 does it (a Script class defined in a package and imported into
scripts/*.py, `scripts.xxx` subpackages) and the thin read views (`sd_models`, `hashes`, `extensions`,
`prompt_parser`, `sd_samplers`, `shared.prompt_styles`, `sd_hijack.model_hijack.embedding_db`, ...), with small
extensions that reproduce the real ones' use of the API (sd-dynamic-prompts, tagcomplete's Python part,
Civitai-Helper's imports, and extensions that hook A1111's model internals)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save_file

from tests.conftest import install_model
from tests.extension_repos import make_extension_repo

# --- sd-dynamic-prompts: its Script is defined in its package and imported into scripts/*.py ----------------------
DYNAMIC_PROMPTS = {
    "scripts/dynamic_prompting.py": '''# Automatic1111 entry point.

from fixture_dynprompts.dynamic_prompting import Script

__all__ = ["Script"]
''',
    # a second script file importing the same class: A1111 would list it twice; it is one script here
    "scripts/zz_reexport.py": "from fixture_dynprompts.dynamic_prompting import Script  # noqa: F401\n",
    "fixture_dynprompts/__init__.py": "",
    "fixture_dynprompts/settings.py": '''
from modules import shared


def on_ui_settings():
    section = "dynamicprompts", "Dynamic Prompts"
    shared.opts.add_option(
        key="dp_write_raw_template",
        info=shared.OptionInfo(False, label="Save template to metadata", section=section),
    )
''',
    "fixture_dynprompts/dynamic_prompting.py": '''
import re

import gradio as gr

import modules.scripts as scripts
from modules import script_callbacks
from modules.processing import fix_seed
from modules.shared import opts

from fixture_dynprompts.settings import on_ui_settings

script_callbacks.on_ui_settings(on_ui_settings)
VARIANT = re.compile(r"\\{([^{}]*)\\}")


def expand(template, index):
    """The index-th combination of the template's {a|b} variants (the last variant group varies fastest)."""
    groups = [m.group(1).split("|") for m in VARIANT.finditer(template)]
    picks = []
    for options in reversed(groups):
        picks.append(options[index % len(options)])
        index //= len(options)
    picks.reverse()
    return VARIANT.sub(lambda m: picks.pop(0), template)


class Script(scripts.Script):
    def title(self):
        return "Fixture Dynamic Prompts"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Group():
            is_enabled = gr.Checkbox(label="Dynamic Prompts enabled", value=True, elem_id="dynamic-prompts-enabled")
        return [is_enabled]

    def process(self, p, is_enabled):
        if not is_enabled:
            return p
        fix_seed(p)
        original_prompt = p.all_prompts[0] if p.all_prompts else p.prompt
        original_negative_prompt = p.all_negative_prompts[0] if p.all_negative_prompts else p.negative_prompt
        count = len(p.all_prompts)
        all_prompts = [expand(original_prompt, i) for i in range(count)]
        all_negative_prompts = [expand(original_negative_prompt, i) for i in range(count)]
        if opts.dp_write_raw_template:
            params = p.extra_generation_params
            if original_prompt:
                params["Template"] = original_prompt
            if original_negative_prompt:
                params["Negative Template"] = original_negative_prompt
        p.all_prompts = all_prompts
        p.all_negative_prompts = all_negative_prompts
''',
}

# --- tagcomplete's Python part: hashes, sd_models, extensions, prompt_styles, the embedding db; temp files ----------
TAGCOMPLETE = {
    "scripts/fixture_tac_paths.py": '''
from pathlib import Path

from modules import scripts, shared
from modules.paths import extensions_dir, script_path

FILE_DIR = Path(script_path).absolute()
EXT_PATH = Path(extensions_dir).absolute()
TAGS_PATH = Path(scripts.basedir()).joinpath("tags").absolute()
EMB_PATH = Path(shared.cmd_opts.embeddings_dir).absolute()
LORA_PATH = Path(shared.cmd_opts.lora_dir).absolute()
TEMP_PATH = TAGS_PATH.joinpath("temp").absolute()
TEMP_PATH.mkdir(parents=True, exist_ok=True)
''',
    "scripts/fixture_tac_helper.py": '''
from pathlib import Path

from modules import extensions, hashes, script_callbacks, sd_models, shared

try:
    from scripts.fixture_tac_paths import *
except ModuleNotFoundError:
    raise

try:
    from modules import sd_hijack
except (ImportError, ModuleNotFoundError):
    sd_hijack = None


def write_to_temp_file(name, data):
    with open(TEMP_PATH.joinpath(name), "w", encoding="utf-8") as f:
        f.write("\\n".join(data))


def get_embed_db():
    try:
        return sd_hijack.model_hijack.embedding_db
    except Exception:
        return None


load_textual_inversion_embeddings = get_embed_db().load_textual_inversion_embeddings


def get_embeddings(sd_model):
    embed_db = get_embed_db()
    results = []
    for key, emb in (embed_db.skipped_embeddings | embed_db.word_embeddings).items():
        used = key in embed_db.word_embeddings
        results.append(f"{Path(emb.filename).relative_to(EMB_PATH).as_posix()},{emb.shape},{used}")
    write_to_temp_file("emb.txt", sorted(results))


def write_temp_files():
    loras = []
    for path in sorted(LORA_PATH.rglob("*.safetensors")):
        name = path.relative_to(LORA_PATH).with_suffix("").as_posix()
        loras.append(f"{name},{hashes.sha256(str(path), f'lora/{name}', True)}")
    write_to_temp_file("lora.txt", loras)
    if shared.prompt_styles is not None:
        write_to_temp_file("styles.txt", sorted(shared.prompt_styles.styles.keys(), key=len, reverse=True))
    models = [f"{info.title},{info.filename},{hashes.sha256_from_cache(info.filename, f'checkpoint/{info.name}')}"
              for info in sd_models.checkpoints_list.values()]
    write_to_temp_file("models.txt", models)
    write_to_temp_file("extensions.txt", [f"{e.name},{e.path},{e.enabled}" for e in extensions.active()])


write_temp_files()
script_callbacks.on_model_loaded(get_embeddings)


def api_tac(_, app):
    @app.get("/fixturetac/v1/lora-cached-hash/{lora_name}")
    async def get_lora_cached_hash(lora_name: str):
        path = LORA_PATH / f"{lora_name}.safetensors"
        return hashes.sha256_from_cache(str(path), f"lora/{lora_name}", True)


script_callbacks.on_app_started(api_tac)
''',
}

# --- Civitai-Helper's imports: a subpackage of scripts/ imported as `scripts.xxx` -----------------------------------
SUBPACKAGE = {
    "scripts/fixture_ch_lib/__init__.py": "",
    "scripts/fixture_ch_lib/util.py": "import os\n\nFOLDER = os.path.basename(os.path.dirname(os.path.dirname("
                                      "os.path.dirname(os.path.abspath(__file__)))))\n",
    "scripts/civitai_helper.py": '''
import modules.scripts as scripts
from modules import script_callbacks

from scripts.fixture_ch_lib import util

FOUND = util.FOLDER


def on_app_started(_, app):
    @app.get("/fixture-civitai/folder")
    def folder():
        return {"folder": FOUND}


script_callbacks.on_app_started(on_app_started)


class OptsEcho(scripts.Script):
    """A selectable script whose run() reads opts (override_settings must be in force there too)."""

    def title(self):
        return "Fixture opts echo"

    def run(self, p, *args):
        from modules.shared import opts
        p.extra_generation_params["Echoed format"] = opts.samples_format
        return None
''',
}

# --- extensions that hook A1111's model internals (dynamic thresholding, anti-burn): a clear problem each ----------
KDIFFUSION_HOOK = {
    "scripts/dynamic_thresholding.py": '''
import gradio as gr
from modules import scripts, script_callbacks, sd_samplers
try:
    from modules.sd_samplers_kdiffusion import CFGDenoiserKDiffusion as cfgdenoisekdiff
except Exception:
    from modules.sd_samplers_kdiffusion import CFGDenoiser as cfgdenoisekdiff


class Script(scripts.Script):
    def title(self):
        return "Fixture thresholding"

    def show(self, is_img2img):
        return scripts.AlwaysVisible
''',
}
SAMPLERS_COMMON_HOOK = {
    "scripts/anti-burn.py": '''
from modules import scripts, script_callbacks, processing, devices, sd_samplers, sd_samplers_common


class AntiBurnExtension(scripts.Script):
    def title(self):
        return "Fixture anti burn"
''',
}
MODEL_READ_HOOK = {
    "scripts/cond_model.py": '''
from modules import scripts, shared


class CondModel(scripts.Script):
    def title(self):
        return "Fixture cond model"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        shared.sd_model.cond_stage_model.hijack()
''',
}

STYLES_CSV = "name,prompt,negative_prompt\nCinematic look,{prompt} cinematic,blurry\nInk,ink drawing,\n"


def _write_embedding(path, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"string_to_param": {"*": torch.randn(1, width)}, "name": path.stem}, path)



# --- StylePile / Ultimate SD upscale: Gradio 3 defaults a client leaving the args off must get -----------------------
GRADIO3_DEFAULTS = {
    "scripts/pile.py": '''
import gradio as gr

import modules.scripts as scripts
from modules.processing import process_images


class Pile(scripts.Script):
    def title(self):
        return "Defaults fixture"

    def ui(self, is_img2img):
        words = gr.Textbox(label="Extra words", lines=2)
        upscaler = gr.Radio(label="Upscaler", choices=["None", "Lanczos", "Nearest"], value="Lanczos", type="index")
        return [words, upscaler]

    def run(self, p, words, upscaler_index):
        lines = words.splitlines()  # StylePile's use: a Gradio 3 text box is "" when left empty
        p.extra_generation_params["Pile upscaler"] = ["None", "Lanczos", "Nearest"][upscaler_index]
        p.extra_generation_params["Pile lines"] = len(lines)
        return process_images(p)
''',
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    """One server (--nowebui) with every fixture extension installed as a git repository, a LoRA, two
    embeddings (one this checkpoint can use) and two styles."""
    from app import create_app
    from webui.extensions.a1111.runtime import RUNTIME
    from webui.extensions.host import parse_flags_with_extensions
    from webui.services import build_services

    data = tmp_path_factory.mktemp("compat-views") / "data"
    install_model(data, tiny_models["sd1"])
    extensions = data / "extensions"
    extensions.mkdir(parents=True)
    for name, files in (("sd-dynamic-prompts", DYNAMIC_PROMPTS), ("tagcomplete-fixture", TAGCOMPLETE),
                        ("civitai-helper-fixture", SUBPACKAGE), ("thresholding-fixture", KDIFFUSION_HOOK),
                        ("anti-burn-fixture", SAMPLERS_COMMON_HOOK), ("cond-model-fixture", MODEL_READ_HOOK),
                        ("defaults-fixture", GRADIO3_DEFAULTS)):
        make_extension_repo(extensions, name, files)
    lora = data / "models" / "Lora" / "mylora.safetensors"
    lora.parent.mkdir(parents=True)
    save_file({"lora_unet_x.lora_down.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, str(lora),
              metadata={"ss_output_name": "mylora"})
    _write_embedding(data / "embeddings" / "small.pt", 64)  # the tiny SD1's text encoder is 64 wide
    _write_embedding(data / "embeddings" / "sub" / "wide.pt", 768)
    (data / "styles.csv").write_text(STYLES_CSV, encoding="utf-8")
    flags, host = parse_flags_with_extensions(["--data-dir", str(data), "--nowebui", "--skip-install"])
    services = build_services(flags, host)
    services.hashes.get_or_compute(data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")  # known before
    app, services = create_app(flags, services)  # on_app_started, where tagcomplete lists the checkpoints' hashes
    with TestClient(app) as client:
        yield services, client, data
    services.stop()
    RUNTIME.bind(None, None)


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def _txt2img(client, **fields) -> dict:
    payload = {"steps": 2, "width": 64, "height": 64, "seed": 21, "sampler_name": "Euler", "cfg_scale": 5,
               "negative_prompt": "", **fields}
    response = client.post("/sdapi/v1/txt2img", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def test_script_from_a_package_is_registered_once_and_expands_variants(server):
    services, client, _ = server
    host = services.extension_host
    classes = [cls for ext, cls, _ in host.script_classes if ext.name == "sd-dynamic-prompts"]
    assert [cls.__module__ for cls in classes] == ["fixture_dynprompts.dynamic_prompting"]  # not twice
    assert host.alwayson_titles("txt2img")["fixture dynamic prompts"] == "Fixture Dynamic Prompts"

    made = _txt2img(client, prompt="a {red|blue} fox", negative_prompt="{ugly|bad}", batch_size=2)
    info = json.loads(made["info"])
    assert info["all_prompts"] == ["a red fox", "a blue fox"]
    assert info["all_negative_prompts"] == ["ugly", "bad"]
    assert "Template" not in info["infotexts"][0]  # the option is off by default
    assert info["infotexts"][1].startswith("a blue fox\nNegative prompt: bad\n")

    # independent reference: the expanded prompts typed in by hand, the extension switched off
    for index, (prompt, negative) in enumerate((("a red fox", "ugly"), ("a blue fox", "bad"))):
        plain = _txt2img(client, prompt=prompt, negative_prompt=negative, seed=21 + index,
                         alwayson_scripts={"Fixture Dynamic Prompts": {"args": [False]}})
        assert json.loads(plain["info"])["all_prompts"] == [prompt]
        assert np.abs(_decode(plain["images"][0]) - _decode(made["images"][index])).max() <= 1


def test_its_template_option_through_override_settings(server):
    services, client, _ = server
    made = _txt2img(client, prompt="a {red|blue} fox", negative_prompt="{ugly|bad}",
                    override_settings={"dp_write_raw_template": True})
    infotext = json.loads(made["info"])["infotexts"][0]
    assert infotext.startswith("a red fox\nNegative prompt: ugly\n")
    assert "Template: a {red|blue} fox, Negative Template: {ugly|bad}" in infotext
    from webui.outputs.infotext import parse_infotext
    parsed = parse_infotext(infotext)
    assert (parsed["Template"], parsed["Negative Template"]) == ("a {red|blue} fox", "{ugly|bad}")
    # the override lasted for that job only: the setting and the next job are as before
    assert client.get("/sdapi/v1/options").json()["dp_write_raw_template"] is False
    again = json.loads(_txt2img(client, prompt="a {red|blue} fox")["info"])["infotexts"][0]
    assert "Template" not in again


def test_tagcomplete_python_part_reads_our_models_styles_and_extensions(server):
    services, client, data = server
    temp = data / "extensions" / "tagcomplete-fixture" / "tags" / "temp"
    lora = data / "models" / "Lora" / "mylora.safetensors"
    raw = lora.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    addnet = hashlib.sha256(raw[8 + header:]).hexdigest()  # kohya's hash: what follows the JSON header
    assert (temp / "lora.txt").read_text(encoding="utf-8") == f"mylora,{addnet}"
    assert client.get("/fixturetac/v1/lora-cached-hash/mylora").json() == addnet  # now in our hash cache
    assert services.hashes.get(lora, "lora-addnet") == addnet  # the entry our LoRA listing uses
    assert (temp / "styles.txt").read_text(encoding="utf-8").splitlines() == ["Cinematic look", "Ink"]

    checkpoint = data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (temp / "models.txt").read_text(encoding="utf-8") == \
        f"tiny-sd1.safetensors [{sha[:10]}],{checkpoint},{sha}"
    active = dict(line.split(",", 1) for line in (temp / "extensions.txt").read_text().splitlines())
    assert active["tagcomplete-fixture"] == f"{data / 'extensions' / 'tagcomplete-fixture'},True"
    assert "anti-burn-fixture" in active  # listed although its scripts could not load

    # written by its on_model_loaded callback (the checkpoint was loaded for the generations above)
    assert services.models.current is not None
    assert (temp / "emb.txt").read_text(encoding="utf-8").splitlines() == ["small.pt,64,True",
                                                                          "sub/wide.pt,768,False"]


def test_scripts_subpackage_imports_and_a1111_read_views(server):
    services, client, data = server
    assert client.get("/fixture-civitai/folder").json() == {"folder": "civitai-helper-fixture"}
    echoed = _txt2img(client, prompt="a fox", script_name="Fixture opts echo",
                      override_settings={"samples_format": "jpg"})
    assert "Echoed format: jpg" in json.loads(echoed["info"])["infotexts"][0]
    assert client.get("/sdapi/v1/options").json()["samples_format"] == "png"
    import modules.script_callbacks
    import modules.scripts
    from modules import extensions, hashes, images, processing, prompt_parser, sd_models, sd_samplers, \
        sd_schedulers, shared
    assert modules.scripts.script_callbacks is modules.script_callbacks

    checkpoint = data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    raw = checkpoint.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    info = sd_models.checkpoints_list[f"tiny-sd1.safetensors [{sha[:10]}]"]
    assert (info.filename, info.sha256, info.model_name, info.name_for_extra) == \
        (str(checkpoint), sha, "tiny-sd1", "tiny-sd1")
    assert info.hash == sd_models.model_hash(str(checkpoint)) == \
        hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8]  # A1111's old hash
    assert sd_models.checkpoint_aliases["tiny-sd1"] is not None
    assert sd_models.get_closet_checkpoint_match("tiny-sd1").filename == str(checkpoint)
    assert sd_models.select_checkpoint().filename == str(checkpoint)
    assert hashes.sha256_from_cache(str(checkpoint), "checkpoint/tiny-sd1.safetensors") == sha
    assert hashes.calculate_sha256(str(checkpoint)) == sha

    ours = {e.name: e for e in extensions.active()}
    dyn = ours["sd-dynamic-prompts"]
    assert dyn.path == str(data / "extensions" / "sd-dynamic-prompts") and dyn.enabled and not dyn.is_builtin
    dyn.read_info_from_repo()
    head = subprocess.run(["git", "-C", dyn.path, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert dyn.commit_hash and head.startswith(dyn.commit_hash)
    assert [f.filename for f in dyn.list_files("scripts", ".py")] == ["dynamic_prompting.py", "zz_reexport.py"]

    listed = client.get("/sdapi/v1/samplers").json()
    assert [s.name for s in sd_samplers.all_samplers] == [s["name"] for s in listed]
    assert sd_samplers.samplers_map["k_euler_a"] == "Euler a"
    assert sd_samplers.find_sampler_config("DPM++ 2M").aliases == ["k_dpmpp_2m"]
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M Karras", "Automatic") == ("DPM++ 2M", "Automatic")
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M Karras", None, convert_automatic=False) == \
        ("DPM++ 2M", "Karras")
    assert [s.label for s in sd_schedulers.schedulers][:3] == ["Automatic", "Uniform", "Karras"]

    # A1111's documented results of its prompt functions
    assert prompt_parser.parse_prompt_attention("a (b:1.5) [c]") == \
        [["a ", 1.0], ["b", 1.5], [" ", 1.0], ["c", pytest.approx(1 / 1.1)]]
    assert prompt_parser.parse_prompt_attention("") == [["", 1.0]]
    assert prompt_parser.get_learned_conditioning_prompt_schedules(
        ["fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
         "[: in background:0.25] [shoddy:masterful:0.5]"], 100) == [[
            [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
            [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
            [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
            [75, "fantasy landscape with a lake and an oak in background masterful"],
            [100, "fantasy landscape with a lake and a christmas tree in background masterful"]]]
    indexes, flat, _ = prompt_parser.get_multicond_prompt_list(["a cat AND a dog:0.5"])
    assert indexes == [[(0, 1.0), (1, 0.5)]] and list(flat) == ["a cat", "a dog"]

    names = [u.name for u in shared.sd_upscalers]
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    small = Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    lanczos = shared.sd_upscalers[1]
    upscaled = lanczos.scaler.upscale(small, 2, lanczos.data_path)
    assert np.array_equal(np.asarray(upscaled), np.asarray(small.resize((16, 16), Image.Resampling.LANCZOS)))
    assert images.resize_image(0, small, 16, 16, upscaler_name="Nearest").size == (16, 16)

    rgba = Image.fromarray(np.dstack([np.zeros((4, 4, 3), np.uint8),
                                      np.array([[0, 100, 129, 255]] * 4, np.uint8)]), "RGBA")
    mask = np.asarray(processing.create_binary_mask(rgba))
    assert mask.tolist() == [[0, 0, 255, 255]] * 4
    assert processing.get_fixed_seed(7) == 7 and 0 <= processing.get_fixed_seed(-1) < 4294967294
    shared.total_tqdm.updateTotal(5)
    shared.total_tqdm.update()
    assert (shared.total_tqdm.total, shared.total_tqdm.done) == (5, 1)
    shared.total_tqdm.clear()


def test_model_internals_get_a_clear_problem_not_a_traceback(server):
    services, client, _ = server
    from webui.ui.extensions_tab import problems_html
    problems = {p.extension: p for p in services.extension_problems.all()}
    thresholding = problems["thresholding-fixture"]
    assert thresholding.message == ("Needs A1111's sampler internals (modules.sd_samplers_kdiffusion), which this "
                                    "web UI doesn't have: it runs its own engine, so this extension (or this part "
                                    "of it) cannot work here")
    assert thresholding.traceback == "" and thresholding.where == "loading scripts/dynamic_thresholding.py"
    assert "(modules.sd_samplers_common)" in problems["anti-burn-fixture"].message
    shown = problems_html(services)
    assert "modules.sd_samplers_kdiffusion), which this web UI doesn" in shown
    assert "Traceback" not in shown.split("cond-model-fixture")[0]  # no traceback for these (and none loaded yet)
    assert not [cls for ext, cls, _ in services.extension_host.script_classes
                if ext.name in ("thresholding-fixture", "anti-burn-fixture")]

    made = json.loads(_txt2img(client, prompt="a fox")["info"])  # the hook reaching into the model is skipped
    assert made["all_prompts"] == ["a fox"]
    cond = services.extension_problems.for_extension("cond-model-fixture")[-1]
    assert "(shared.sd_model.cond_stage_model), which this web UI doesn't have" in cond.message


def test_args_left_off_take_what_the_page_would_send(server):
    """A selectable script run through the API without args: a `type="index"` choice gives its index and an empty
    text box "" (as the page sends them), not Gradio 6's stored choice text and None."""
    _, client, _ = server
    made = _txt2img(client, prompt="a fox", script_name="Defaults fixture")
    infotext = json.loads(made["info"])["infotexts"][0]
    assert "Pile upscaler: Lanczos" in infotext and "Pile lines: 0" in infotext


def test_folder_options_read_the_folders_in_use(server, tmp_path):
    """images-browser lists `opts.outdir_*_samples`: A1111's are never empty, so the view gives the folder our
    saving uses; `outdir_samples` (A1111's one folder for every tab) moves where pictures are saved."""
    services, client, data = server
    from modules import shared
    assert shared.opts.outdir_txt2img_samples == str(data / "outputs" / "txt2img-images")
    assert shared.opts.outdir_save == str(data / "outputs" / "save")
    assert shared.opts.outdir_samples == "" and shared.opts.temp_dir == ""
    before = set((data / "outputs").rglob("*.png"))
    made = _txt2img(client, prompt="a fox", save_images=True, override_settings={"outdir_samples": str(tmp_path)})
    assert made["images"]
    saved = list(tmp_path.rglob("*.png"))
    assert len(saved) == 1 and set((data / "outputs").rglob("*.png")) == before
