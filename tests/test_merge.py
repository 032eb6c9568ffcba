"""The Checkpoint Merger: tensors of merged files against the formulas computed here from the source files (read
with safetensors' and torch's own loaders), A1111's recipe metadata, the refusals (another architecture, an existing
file, a name leaving the checkpoint folder), the merged model loading and listed, the tab's handlers and Blocks, and
`POST /sdapi/v1/merge-checkpoint`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from app import create_app
from webui.core.errors import ConflictError, RequestError
from webui.core.run_control import RunControl
from webui.models.ldm_export import vae_to_ldm
from webui.models.merge import MergeInterrupted, run_merge
from webui.models.merge_request import MergeRequest
from webui.models.registry import UnknownCheckpointError
from webui.models.tiny import build_modules, write_single_file
from webui.settings.flags import parse_flags
from webui.ui import merger_tab
from webui.ui.blocks import build_ui

AUTH = ("merger", "secret")
MERGE = "/sdapi/v1/merge-checkpoint"
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models):
    """A data dir with SD1 checkpoints a, b (safetensors), c (.ckpt), an SD1 inpainting model, an SDXL one, and two
    VAE files in models/VAE (LDM layout, diffusers layout); the app (API behind --api-auth) and its services."""
    data = tmp_path_factory.mktemp("merge-data")
    folder = data / "models" / "Stable-diffusion"
    write_single_file(folder / "a.safetensors", "sd1", seed=1)
    write_single_file(folder / "b.safetensors", "sd1", seed=2)
    write_single_file(folder / "c.ckpt", "sd1", seed=3, ckpt=True)
    write_single_file(folder / "inpaint.safetensors", "sd1-inpaint", seed=4)
    write_single_file(folder / "xl.safetensors", "sdxl", seed=5)
    pix2pix = load_file(str(write_single_file(tmp_path_factory.mktemp("p2p") / "p.safetensors", "sd1", seed=6)))
    conv = pix2pix[CONV_IN]  # instruct-pix2pix: the UNet also takes the image's latent (8 input channels)
    pix2pix[CONV_IN] = torch.cat([conv, torch.randn(conv.shape, generator=torch.Generator().manual_seed(6))], 1)
    save_file(pix2pix, str(folder / "pix2pix.safetensors"))
    vae_folder = data / "models" / "VAE"
    vae_folder.mkdir(parents=True)
    ldm_vae = {k.removeprefix("first_stage_model."): v.contiguous()
               for k, v in vae_to_ldm(build_modules("sd1", seed=9)[3]).items()}
    save_file(ldm_vae, str(vae_folder / "ldm-vae.safetensors"))
    diffusers_vae = build_modules("sd1", seed=10)[3]
    save_file({k: v.contiguous() for k, v in diffusers_vae.state_dict().items()},
              str(vae_folder / "diffusers-vae.safetensors"))
    app, services = create_app(parse_flags(["--data-dir", str(data), "--nowebui", "--api-auth", ":".join(AUTH)]))
    try:
        assert services.hasher.wait_idle(30)
        client = TestClient(app)
        client.auth = AUTH
        yield SimpleNamespace(services=services, client=client, folder=folder, vae_folder=vae_folder,
                              diffusers_vae=diffusers_vae.state_dict())
    finally:
        services.stop()


def merge(env, **fields):
    """Queue a merge through the services, as the tab and the API do, and wait for it."""
    job = env.services.merge(MergeRequest(**fields), source="test")
    job.wait(120)
    assert job.state == "done", job.error
    return job.result


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def legacy_hash(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def ckpt_state(path: Path) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=True)
    return data.get("state_dict", data)


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# --- the tensors -----------------------------------------------------------------------------------------------
def test_weighted_sum_default_name_tensors_recipe_and_listing(env):
    folder = env.folder
    result = merge(env, primary_model_name="a.safetensors", secondary_model_name="b", multiplier=0.3,
                   metadata_json='{"author": "tester", "steps": 12}')
    path = folder / "0.7(a) + 0.3(b).safetensors"  # A1111's default name
    assert result.path == str(path) and path.is_file()
    a, b, merged = load_file(folder / "a.safetensors"), load_file(folder / "b.safetensors"), load_file(path)
    assert set(merged) == set(a)
    for key, value in a.items():
        assert torch.equal(merged[key], (1 - 0.3) * value + 0.3 * b[key]), key
    # the config beside A is copied ("A, B or C"), so the tiny model's shapes load
    assert path.with_suffix(".yaml").read_bytes() == (folder / "a.yaml").read_bytes()

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "pt" and metadata["author"] == "tester" and metadata["steps"] == "12"
    recipe = json.loads(metadata["sd_merge_recipe"])
    assert recipe == {
        "type": "webui", "primary_model_hash": sha256_of(folder / "a.safetensors"),
        "secondary_model_hash": sha256_of(folder / "b.safetensors"), "tertiary_model_hash": None,
        "interp_method": "Weighted sum", "multiplier": 0.3, "save_as_half": False, "custom_name": "",
        "config_source": 0, "bake_in_vae": "None", "discard_weights": "", "is_inpainting": False,
        "is_instruct_pix2pix": False}
    models = json.loads(metadata["sd_merge_models"])
    assert models == {sha256_of(folder / name): {"name": name, "legacy_hash": legacy_hash(folder / name),
                                                 "sd_merge_recipe": None}
                      for name in ("a.safetensors", "b.safetensors")}
    assert result.recipe == recipe

    # listed with its hash (computed while writing, and right), and it loads
    digest = sha256_of(path)
    assert result.sha256 == digest
    titles = [c.title for c in env.services.models.checkpoints()]
    assert f"0.7(a) + 0.3(b).safetensors [{digest[:10]}]" in titles
    info, model = env.services.models.get(result.title)
    assert info.path == path and model.family == "sd1"
    # the merged weights are what the model holds: its UNet input conv is the merged tensor
    assert torch.equal(model.unet.conv_in.weight.float(), merged["model.diffusion_model.input_blocks.0.0.weight"])


def test_add_difference_ckpt_float16_with_ckpt_source(env):
    folder = env.folder
    result = merge(env, primary_model_name="a", secondary_model_name="b", tertiary_model_name="c.ckpt",
                   interp_method="Add difference", multiplier=0.45, checkpoint_format="ckpt", save_as_half=True)
    path = folder / "a + 0.45(b - c).ckpt"
    assert Path(result.path) == path
    loaded = torch.load(path, map_location="cpu", weights_only=True)  # a plain dict of tensors
    assert isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values())
    a, b, c = load_file(folder / "a.safetensors"), load_file(folder / "b.safetensors"), ckpt_state(folder / "c.ckpt")
    assert set(loaded) == set(a)
    for key, value in a.items():
        expected = (value + 0.45 * (b[key] - c[key])).half()
        assert loaded[key].dtype == torch.float16 and torch.equal(loaded[key], expected), key
    assert result.sha256 == sha256_of(path)
    assert result.recipe is None  # no metadata in a .ckpt


def test_no_interpolation_bakes_vae_discards_and_halves(env):
    folder = env.folder
    result = merge(env, primary_model_name="a", secondary_model_name="b", interp_method="No interpolation",
                   bake_in_vae="ldm-vae.safetensors", discard_weights=r"^cond_stage_model\..*\.layers\.1\.",
                   save_as_half=True, custom_name="a-baked")
    path = folder / "a-baked.safetensors"
    assert Path(result.path) == path
    a, vae, merged = load_file(folder / "a.safetensors"), load_file(env.vae_folder / "ldm-vae.safetensors"), \
        load_file(path)
    discarded = {k for k in a if k.startswith("cond_stage_model.") and ".layers.1." in k}
    assert discarded and set(merged) == set(a) - discarded
    vae_keys = {k for k in a if k.startswith("first_stage_model.")}
    assert {k.removeprefix("first_stage_model.") for k in vae_keys} == set(vae)
    for key in merged:
        source = vae[key.removeprefix("first_stage_model.")] if key in vae_keys else a[key]
        assert torch.equal(merged[key], source.half()), key
    with safe_open(str(path), "pt") as f:
        recipe = json.loads(f.metadata()["sd_merge_recipe"])
    assert recipe["bake_in_vae"] == "ldm-vae.safetensors" and recipe["secondary_model_hash"] is None
    assert recipe["discard_weights"] == r"^cond_stage_model\..*\.layers\.1\." and recipe["save_as_half"] is True


def test_bake_diffusers_layout_vae_loads_as_that_vae(env):
    result = merge(env, primary_model_name="b", interp_method="No interpolation",
                   bake_in_vae="diffusers-vae", custom_name="b-diffusers-vae")
    _, model = env.services.models.get(result.title)
    live = model.vae.state_dict()
    assert set(live) == set(env.diffusers_vae)
    for key, value in env.diffusers_vae.items():
        assert torch.equal(live[key].float(), value.float()), key


def test_inpainting_a_takes_b_in_its_first_four_channels(env):
    folder = env.folder
    result = merge(env, primary_model_name="inpaint", secondary_model_name="b", multiplier=0.25,
                   custom_name="inpaint-mix")
    path = folder / "inpaint-mix.inpainting.safetensors"  # A1111 marks the name
    assert Path(result.path) == path
    a, b, merged = load_file(folder / "inpaint.safetensors"), load_file(folder / "b.safetensors"), load_file(path)
    conv = CONV_IN
    assert merged[conv].shape[1] == 9
    assert torch.equal(merged[conv][:, :4], 0.75 * a[conv][:, :4] + 0.25 * b[conv])
    assert torch.equal(merged[conv][:, 4:], a[conv][:, 4:])
    for key in a.keys() - {conv}:
        assert torch.equal(merged[key], 0.75 * a[key] + 0.25 * b[key]), key
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["sd_merge_recipe"])["is_inpainting"] is True
    assert env.services.models.get(result.title)[1].inpainting

    result = merge(env, primary_model_name="pix2pix", secondary_model_name="b", tertiary_model_name="c",
                   interp_method="Add difference", multiplier=0.5, custom_name="p2p-mix")
    path = folder / "p2p-mix.instruct-pix2pix.safetensors"
    assert Path(result.path) == path
    a, c, merged = load_file(folder / "pix2pix.safetensors"), ckpt_state(folder / "c.ckpt"), load_file(path)
    assert torch.equal(merged[conv][:, :4], a[conv][:, :4] + 0.5 * (b[conv] - c[conv]))
    assert torch.equal(merged[conv][:, 4:], a[conv][:, 4:])
    assert result.recipe["is_instruct_pix2pix"] is True and result.recipe["is_inpainting"] is False


def test_progress_counts_tensors_and_interrupt_saves_nothing(env):
    services, folder = env.services, env.folder
    seen = []
    control = RunControl(on_progress=lambda p: seen.append((p.textinfo, p.sampling_step, p.sampling_steps)))
    request = MergeRequest("a", "b", custom_name="progress-check", save_metadata=False).validate()
    run_merge(request, services.models.registry, services.models.vaes, control)
    total = len(load_file(folder / "a.safetensors"))
    steps = [entry for entry in seen if entry[0].startswith("Merging")]
    assert steps == [(f"Merging A and B: tensor {n} of {total}", n, total) for n in range(1, total + 1)]
    assert seen[-1][0] == "Checkpoint saved"
    with safe_open(str(folder / "progress-check.safetensors"), "pt") as f:
        assert f.metadata() is None  # "Save metadata" off: no metadata at all

    before = files_in(folder)
    stopped = RunControl()
    stopped.interrupt()
    with pytest.raises(MergeInterrupted):
        run_merge(MergeRequest("a", "b", custom_name="stopped").validate(), services.models.registry,
                  services.models.vaes, stopped)
    assert files_in(folder) == before  # no result, no half-written file, no config


# --- refusals --------------------------------------------------------------------------------------------------
def test_refusals_before_any_work(env):
    services, folder = env.services, env.folder
    before = files_in(folder)
    with pytest.raises(RequestError, match=r"SD1\.x .* SDXL: checkpoints of different architectures"):
        services.merge(MergeRequest("a", "xl"))
    with pytest.raises(RequestError, match="A must be the inpainting model"):
        services.merge(MergeRequest("a", "inpaint"))
    with pytest.raises(RequestError, match="A must be the instruct-pix2pix model"):
        services.merge(MergeRequest("b", "pix2pix"))
    with pytest.raises(RequestError, match=r"0\.0\.weight is \[32, 8, 3, 3\] in A and \[32, 9, 3, 3\] in B"):
        services.merge(MergeRequest("pix2pix", "inpaint"))
    with pytest.raises(RequestError, match="requires a secondary model"):
        services.merge(MergeRequest("a", ""))
    with pytest.raises(RequestError, match=r"Add difference\) requires a tertiary model"):
        services.merge(MergeRequest("a", "b", interp_method="Add difference"))
    with pytest.raises(UnknownCheckpointError):
        services.merge(MergeRequest("a", "no-such-model"))
    with pytest.raises(RequestError, match="not a valid regular expression"):
        services.merge(MergeRequest("a", "b", discard_weights="(unclosed"))
    with pytest.raises(RequestError, match="nothing would be left"):
        services.merge(MergeRequest("a", "b", discard_weights="."))
    with pytest.raises(RequestError, match="between 0 and 1"):
        services.merge(MergeRequest("a", "b", multiplier=1.5))
    for name in ("../escaped", "/tmp/escaped", "sub/../../escaped", ".hidden", "x.vae"):
        with pytest.raises(RequestError) as caught:
            services.merge(MergeRequest("a", "b", custom_name=name))
        assert caught.value.field == "custom_name" and repr(name) in str(caught.value)
    assert files_in(folder) == before
    assert not (folder.parent / "escaped.safetensors").exists() and not Path("/tmp/escaped.safetensors").exists()


def test_existing_file_is_kept_unless_overwrite(env):
    folder = env.folder
    first = merge(env, primary_model_name="a", secondary_model_name="b", multiplier=0.5, custom_name="keep-me")
    path = Path(first.path)
    original = path.read_bytes()
    with pytest.raises(ConflictError, match="keep-me.safetensors and keep-me.yaml already exist") as caught:
        env.services.merge(MergeRequest("a", "b", multiplier=0.9, custom_name="keep-me"))
    assert caught.value.status == 409
    assert path.read_bytes() == original
    # a subfolder inside the checkpoint folder is fine; overwriting needs the explicit choice
    second = merge(env, primary_model_name="a", secondary_model_name="b", multiplier=0.9, custom_name="keep-me",
                   overwrite=True)
    assert second.path == first.path and path.read_bytes() != original
    a, b = load_file(folder / "a.safetensors"), load_file(folder / "b.safetensors")
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(load_file(path)[key], (1 - 0.9) * a[key] + 0.9 * b[key])
    assert second.title.endswith(f"[{sha256_of(path)[:10]}]")
    nested = merge(env, primary_model_name="a", secondary_model_name="b", custom_name="mixes/nested")
    assert Path(nested.path) == folder / "mixes" / "nested.safetensors" and nested.name == "mixes/nested.safetensors"


def test_overwrite_without_a_config_removes_the_old_one(env):
    path = Path(merge(env, primary_model_name="a", secondary_model_name="b", custom_name="cfg-gone").path)
    assert path.with_suffix(".yaml").is_file()
    merge(env, primary_model_name="a", secondary_model_name="b", multiplier=0.8, custom_name="cfg-gone",
          config_source=3, overwrite=True)  # "Don't" copy: the old model's config must not pair with new weights
    assert path.is_file() and not path.with_suffix(".yaml").exists()
    info = env.services.models.registry.resolve(path.name)
    assert info.path == path and info.config is None


def test_failed_model_rename_leaves_the_old_pair_alone(env, monkeypatch):
    import webui.models.merge as merge_module
    path = Path(merge(env, primary_model_name="a", secondary_model_name="b", custom_name="pair").path)
    path.with_suffix(".yaml").write_text("# the old model's own config\n")
    old_model, real_replace = path.read_bytes(), os.replace

    def replace(src, dst):
        if Path(dst) == path:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(merge_module.os, "replace", replace)
    services = env.services
    with pytest.raises(merge_module.MergeWriteError, match="No space left") as caught:
        run_merge(MergeRequest("a", "b", multiplier=0.9, custom_name="pair", overwrite=True),
                  services.models.registry, services.models.vaes)
    assert caught.value.status == 507
    assert path.read_bytes() == old_model
    assert path.with_suffix(".yaml").read_text() == "# the old model's own config\n"
    assert sorted(p.name for p in path.parent.glob(".pair*")) == []  # no partial files left


# --- the tab ---------------------------------------------------------------------------------------------------
TAB_IDS = {"tab_modelmerger", "modelmerger_interp_description", "modelmerger_primary_model_name",
           "modelmerger_secondary_model_name", "modelmerger_tertiary_model_name", "refresh_checkpoint_A",
           "refresh_checkpoint_B", "refresh_checkpoint_C", "modelmerger_custom_name", "modelmerger_interp_amount",
           "modelmerger_interp_method", "modelmerger_checkpoint_format", "modelmerger_save_as_half",
           "modelmerger_config_method", "modelmerger_bake_in_vae", "modelmerger_refresh_bake_in_vae",
           "modelmerger_discard_weights", "modelmerger_save_metadata", "modelmerger_add_recipe",
           "modelmerger_copy_metadata", "modelmerger_merge", "modelmerger_result", "modelmerger_overwrite"}


def test_tab_in_blocks_with_a1111_elem_ids(env):
    blocks = build_ui(env.services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    assert TAB_IDS <= set(by_id), TAB_IDS - set(by_id)
    assert by_id["tab_modelmerger"].label == "Checkpoint Merger"
    assert by_id["modelmerger_interp_amount"].value == 0.3
    assert by_id["modelmerger_interp_method"].value == "Weighted sum"
    assert by_id["modelmerger_checkpoint_format"].value == "safetensors"
    assert by_id["modelmerger_overwrite"].value is False
    assert "ldm-vae.safetensors" in [c[0] for c in by_id["modelmerger_bake_in_vae"].choices]


def tab_values(**changes) -> list:
    values = dict(primary="a", secondary="b", tertiary=None, interp_method="Weighted sum", multiplier=0.3,
                  save_as_half=False, custom_name="", checkpoint_format="safetensors", config_source=0,
                  bake_in_vae="None", discard_weights="", save_metadata=True, add_merge_recipe=True,
                  copy_metadata_fields=True, metadata_json="{}", overwrite=False)
    values.update(changes)
    return list(values.values())


def test_tab_merge_shows_progress_result_and_refreshes_the_lists(env):
    services = env.services
    updates = list(merger_tab.merge(services, *tab_values(custom_name="from-the-tab", multiplier=0.6)))
    final = updates[-1]
    path = env.folder / "from-the-tab.safetensors"
    assert f"Checkpoint saved to {path}" in final[0] and "sd_merge_recipe" in final[0]
    title = f"from-the-tab.safetensors [{sha256_of(path)[:10]}]"
    for picker in final[1:]:  # A, B, C and the quicksettings picker all list the new model
        assert title in [choice[0] for choice in picker.choices]
    assert final[1].value.startswith("a.safetensors [")
    assert any("job-" in update[0] for update in updates[:-1])  # the progress panel came first

    refused = list(merger_tab.merge(services, *tab_values(custom_name="from-the-tab")))
    assert len(refused) == 1 and "already exist" in refused[0][0] and "from-the-tab.safetensors" in refused[0][0]
    assert all(update == gr.skip() for update in refused[0][1:])  # the pickers are left as they are

    metadata = json.loads(merger_tab.show_metadata(services, title, None, None))
    assert metadata["sd_merge_recipe"]["multiplier"] == 0.6 and metadata["format"] == "pt"
    assert "Needs A, B and C" in merger_tab.describe("Add difference")


def test_merge_in_the_blocks_refreshes_the_refiner_and_hires_checkpoint_lists(env):
    services = env.services
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    button = by_id["modelmerger_merge"]._id
    fn = next(f for f in blocks.fns.values() if (button, "click") in f.targets)
    chosen = env.services.models.registry.resolve("b").title  # what the txt2img Refiner has chosen
    currents = {"script_txt2img_refiner_checkpoint": chosen, "script_img2img_refiner_checkpoint": "",
                "hr_checkpoint": "Use same checkpoint"}
    extra = [currents[component.elem_id] for component in fn.inputs[len(tab_values()):]]
    updates = list(fn.fn(*tab_values(custom_name="for-every-list", multiplier=0.4), *extra))
    path = env.folder / "for-every-list.safetensors"
    title = f"for-every-list.safetensors [{sha256_of(path)[:10]}]"
    final = {component.elem_id: update for component, update in zip(fn.outputs, updates[-1])}
    assert set(currents) <= set(final), set(currents) - set(final)
    for elem_id, kept in currents.items():  # each lists the new model, its choice kept, its own first entry
        assert title in [choice[0] for choice in final[elem_id].choices], elem_id
        assert final[elem_id].value == kept
    assert [c[0] for c in final["hr_checkpoint"].choices][0] == "Use same checkpoint"
    assert [c[1] for c in final["script_img2img_refiner_checkpoint"].choices][0] == ""  # no refiner
    assert all(update[-1] == gr.skip() for update in updates[:-1])  # while the merge runs they are left alone


# --- the API ---------------------------------------------------------------------------------------------------
def test_api_merge_route(env):
    client, folder = env.client, env.folder
    body = {"primary_model_name": "a", "secondary_model_name": "b", "multiplier": 0.2, "custom_name": "api-mix"}
    assert client.post(MERGE, json=body, auth=None).status_code == 401  # behind --api-auth as every route
    response = client.post(MERGE, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    path = folder / "api-mix.safetensors"
    assert answer["filename"] == str(path) and answer["name"] == "api-mix.safetensors"
    assert answer["sha256"] == sha256_of(path) and answer["title"].endswith(f"[{answer['sha256'][:10]}]")
    assert answer["config"] == str(path.with_suffix(".yaml")) and answer["recipe"]["multiplier"] == 0.2
    a, b = load_file(folder / "a.safetensors"), load_file(folder / "b.safetensors")
    key = "first_stage_model.decoder.conv_out.weight"
    assert torch.equal(load_file(path)[key], 0.8 * a[key] + 0.2 * b[key])
    listed = client.get("/sdapi/v1/sd-models").json()
    assert any(item["title"] == answer["title"] and item["filename"] == str(path) for item in listed)

    def refused(changes: dict, status: int, text: str):
        reply = client.post(MERGE, json={**body, **changes})
        assert reply.status_code == status, reply.text
        assert text in reply.json()["detail"], reply.json()

    refused({}, 409, "api-mix.safetensors")
    refused({"custom_name": "../../outside"}, 422, "inside the checkpoint folder")
    refused({"secondary_model_name": "xl"}, 422, "different architectures")
    refused({"secondary_model_name": "missing"}, 400, "Unknown checkpoint 'missing'")
    refused({"interp_method": "Average"}, 422, "interp_method")
    refused({"bake_in_vae": "no-such-vae"}, 400, "no-such-vae")
    refused({"custom_name": "api-mix2", "metadata_json": "[1, 2]"}, 422, "JSON object")
    assert not (folder.parent.parent / "outside.safetensors").exists()
    overwritten = client.post(MERGE, json={**body, "multiplier": 0.7, "overwrite": True})
    assert overwritten.status_code == 200 and overwritten.json()["sha256"] == sha256_of(path) != answer["sha256"]
    assert os.path.exists(path)
