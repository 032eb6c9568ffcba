"""The extra networks panel's tools, driven without a browser over real files: the SD1 / SDXL badges (LoRA metadata
and tensor shapes, embedding widths, checkpoint headers) and A1111's Lora page filter (`lora_show_all`,
`lora_hide_unknown_for_versions`), the subfolder buttons, the sort orders, unreadable files marked, and the 🔧
metadata editor writing A1111's `name.json` (and refusing anything that is not a listed file)."""
from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import gradio as gr
import pytest
import torch
from safetensors.torch import save_file

from ti_files import random_vectors, write_a1111_pt, write_sdxl
from webui.ui import extra_networks
from webui.ui.blocks import build_ui

KINDS = ("checkpoints", "textual_inversion", "lora")


def write_lora(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def plain_tensors() -> dict:
    return {"lora_unet_x.lora_down.weight": torch.randn(4, 8), "lora_unet_x.lora_up.weight": torch.randn(8, 4),
            "lora_unet_x.alpha": torch.tensor(4.0)}


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((40).to_bytes(8, "little") + b'{"broken": ' + b"\x00" * 40)
    return path


# LoRA file -> the family it is made for (None: nothing tells), as the test writes them
EXPECTED_LORA = {"by_metadata": "SD1", "xl_te2": "SDXL", "attn768": "SD1", "plain": None}


@pytest.fixture
def services(make_services):
    made = make_services("sd1")
    lora = made.paths.lora
    write_lora(lora / "by_metadata.safetensors", plain_tensors(), {"ss_base_model_version": "sd_v1"})
    # SDXL's second text encoder only exists in SDXL
    write_lora(lora / "xl" / "anime" / "xl_te2.safetensors",
               {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.randn(4, 1280),
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.randn(1280, 4)})
    # cross-attention keys / values reading SD1's 768-wide text
    write_lora(lora / "styles" / "attn768.safetensors",
               {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
                torch.randn(4, 768),
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
                torch.randn(640, 4)})
    write_lora(lora / "styles" / "plain.safetensors", plain_tensors())
    corrupt(lora / "broken.safetensors")
    (lora / "notes.txt").write_text("not a LoRA", encoding="utf-8")
    emb = made.paths.embeddings
    write_a1111_pt(emb / "sd1emb.pt", random_vectors(1, 768, 1))
    write_sdxl(emb / "xl" / "xlemb.safetensors", random_vectors(2, 768, 2), random_vectors(2, 1280, 3))
    write_a1111_pt(emb / "tinyemb.pt", random_vectors(1, 64, 4))
    corrupt(made.paths.checkpoints / "bad.safetensors")
    made.models.refresh()
    made.hasher.wait_idle(30)
    return made


class CardParser(HTMLParser):
    """Cards (attributes, badges, whether they have 🔧) and the toolbar's folder buttons, in document order."""

    def __init__(self):
        super().__init__()
        self.cards, self.dirs, self.badge, self.note = [], [], None, ""
        self.in_note = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "card" in classes:
            self.cards.append({**attrs, "classes": classes, "badges": [], "edit": False})
        elif "extra-network-dir" in classes:
            self.dirs.append(attrs["data-dir"])
        elif "card-badge" in classes and self.cards:
            self.badge = self.cards[-1]["badges"]
        elif "edit-button" in classes and self.cards:
            self.cards[-1]["edit"] = True
        elif "extra-network-hidden-note" in classes:
            self.in_note = True

    def handle_endtag(self, tag):
        self.badge, self.in_note = None, False

    def handle_data(self, data):
        if self.badge is not None:
            self.badge.append(data.strip())
        elif self.in_note:
            self.note += data


def parsed(html: str) -> CardParser:
    parser = CardParser()
    parser.feed(html)
    return parser


def render(services) -> dict[str, CardParser]:
    return dict(zip(KINDS, map(parsed, extra_networks.render_cards(services, "txt2img"))))


def by_name(parser: CardParser) -> dict[str, dict]:
    return {card["data-name"]: card for card in parser.cards}


def load_first_checkpoint(services):
    title = next(info.title for info in services.models.checkpoints() if info.path.name != "bad.safetensors")
    job = services.load_checkpoint(title)
    job.wait(120)
    assert job.finished_ok, job.error


# --- model families ----------------------------------------------------------------------------------------------
def test_badges_show_the_family_from_metadata_tensor_shapes_and_vector_widths(services):
    cards = render(services)
    lora = by_name(cards["lora"])
    for name, family in EXPECTED_LORA.items():
        assert lora[name]["data-version"] == (family or "Unknown"), name
        assert lora[name]["badges"] == ([family] if family else []), name
    embeddings = by_name(cards["textual_inversion"])
    assert embeddings["sd1emb"]["badges"] == ["SD1"] and embeddings["xlemb"]["badges"] == ["SDXL"]
    assert embeddings["tinyemb"]["badges"] == [] and embeddings["tinyemb"]["data-version"] == "Unknown"
    checkpoints = by_name(cards["checkpoints"])
    good = next(name for name in checkpoints if name != "bad")
    assert checkpoints[good]["badges"] == ["SD1"]  # from its header, not loaded


def test_with_a_checkpoint_loaded_loras_for_other_families_are_hidden_as_a1111(services):
    assert "xl_te2" in by_name(render(services)["lora"])  # nothing loaded: everything shows
    load_first_checkpoint(services)
    shown = render(services)["lora"]
    assert set(by_name(shown)) == {"by_metadata", "attn768", "plain", "broken"}
    assert "1 more" in shown.note
    services.options.update({"lora_hide_unknown_for_versions": ["SD1"]})
    assert set(by_name(render(services)["lora"])) == {"by_metadata", "attn768", "broken"}
    services.options.update({"lora_show_all": True})
    shown = render(services)["lora"]
    assert set(by_name(shown)) == {"by_metadata", "xl_te2", "attn768", "plain", "broken"} and shown.note == ""
    # the user's "sd version" in name.json wins over what the file says
    services.options.update({"lora_show_all": False, "lora_hide_unknown_for_versions": []})
    (services.paths.lora / "xl" / "anime" / "xl_te2.json").write_text(json.dumps({"sd version": "SD1"}))
    assert by_name(render(services)["lora"])["xl_te2"]["badges"] == ["SD1"]


# --- unreadable files --------------------------------------------------------------------------------------------
def test_a_file_that_cannot_be_read_is_marked_and_inserts_nothing(services):
    cards = render(services)
    broken = by_name(cards["lora"])["broken"]
    assert {"error", "disabled"} <= set(broken["classes"])
    assert "data-prompt" not in broken and not broken["edit"]
    assert "header" in broken["title"] and "broken" in broken["data-error"]
    assert broken["badges"] and broken["badges"][0].startswith("⚠")
    bad = by_name(cards["checkpoints"])["bad"]
    assert "error" in bad["classes"] and "data-checkpoint" not in bad and "header" in bad["title"]
    good = [card for name, card in by_name(cards["lora"]).items() if name != "broken"]
    assert all("error" not in card["classes"] and card["data-prompt"].startswith("<lora:") for card in good)


# --- folders and order -------------------------------------------------------------------------------------------
def folders_below(root: Path, suffixes: tuple[str, ...]) -> set[str]:
    """Each folder (and its parents) below `root` that holds a file with one of `suffixes`, walked here."""
    found = set()
    for folder, _, files in os.walk(root):
        relative = Path(folder).relative_to(root).as_posix()
        if relative != "." and any(f.endswith(suffixes) for f in files):
            parts = relative.split("/")
            found.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def test_a_button_per_subfolder_and_each_card_knows_its_folder(services):
    cards = render(services)
    lora_root = services.paths.lora
    assert cards["lora"].dirs == sorted(folders_below(lora_root, (".safetensors",)))  # xl, xl/anime, styles
    assert set(cards["lora"].dirs) == {"styles", "xl", "xl/anime"}
    for card in cards["lora"].cards:
        assert (lora_root / card["data-path"]).is_file()  # the path below the folder: no server path
        folder = PurePosixPath(card["data-path"]).parent.as_posix()
        assert card["data-dir"] == ("" if folder == "." else folder)
    assert cards["textual_inversion"].dirs == ["xl"]
    assert by_name(cards["textual_inversion"])["xlemb"]["data-dir"] == "xl"


@pytest.mark.parametrize("field, order", [("Name", "Ascending"), ("Name", "Descending"), ("Path", "Ascending"),
                                          ("Date Modified", "Ascending"), ("Date Created", "Descending")])
def test_cards_come_in_the_order_of_the_options(services, field, order):
    lora_root = services.paths.lora
    files = {name: path for name in EXPECTED_LORA for path in lora_root.rglob(f"{name}.safetensors")}
    files["broken"] = lora_root / "broken.safetensors"
    for offset, name in enumerate(["plain", "broken", "xl_te2", "by_metadata", "attn768"]):  # distinct mtimes
        os.utime(files[name], (1_700_000_000 + offset * 100, 1_700_000_000 + offset * 100))
    services.options.update({"extra_networks_card_order_field": field, "extra_networks_card_order": order})
    names = [card["data-name"] for card in render(services)["lora"].cards]
    stats = {name: os.stat(path) for name, path in files.items()}
    keys = {"Name": lambda n: n.lower(),
            "Path": lambda n: files[n].relative_to(lora_root).as_posix().lower(),
            "Date Modified": lambda n: stats[n].st_mtime,
            "Date Created": lambda n: (getattr(stats[n], "st_birthtime", None) or stats[n].st_ctime, n.lower())}
    assert names == sorted(files, key=keys[field], reverse=order == "Descending")
    html = extra_networks.render_cards(services, "txt2img")[2]
    assert f'id="txt2img_lora_extra_sort"' in html and f'<option value="{field}" selected>' in html
    assert f'id="txt2img_lora_extra_sort_dir"' in html and f'data-sortdir="{order}"' in html


# --- the metadata editor -----------------------------------------------------------------------------------------
def test_the_editor_writes_name_json_and_the_click_text_changes(services, capsys):
    path = services.paths.lora / "styles" / "plain.safetensors"
    sidecar = path.with_name("plain.json")
    sidecar.write_text(json.dumps({"negative text": "keep me", "preferred weight": 0.5}), encoding="utf-8")
    assert by_name(render(services)["lora"])["plain"]["data-prompt"] == "<lora:plain:0.5>"

    card = by_name(render(services)["lora"])["plain"]
    assert card["data-path"] == path.relative_to(services.paths.lora).as_posix() == "styles/plain.safetensors"
    opened = extra_networks.open_editor(services, f"lora\n{card['data-path']}")  # what the page's 🔧 sends
    group, title, description, version, activation, weight, notes, editing = opened
    assert group.visible is True and "plain" in title and weight.value == 0.5 and weight.visible is True
    assert activation.visible is True and version.value == "Unknown"
    assert editing == "lora\nstyles/plain.safetensors" and str(services.paths.data_dir) not in title

    result = extra_networks.save_metadata(services, "txt2img", editing, "Paper cut-outs", "SD1",
                                          "papercut, layered", 0.7, "trained on 40 images")
    assert result[0].visible is False and "Saved plain.json" in capsys.readouterr().out
    written = json.loads(sidecar.read_text(encoding="utf-8"))
    assert written == {"negative text": "keep me", "preferred weight": 0.7, "description": "Paper cut-outs",
                       "notes": "trained on 40 images", "sd version": "SD1", "activation text": "papercut, layered"}
    card = by_name(parsed(result[3]))["plain"]  # the re-rendered Lora tab
    assert card["data-prompt"] == "<lora:plain:0.7> papercut, layered"
    assert card["badges"] == ["SD1"]
    assert by_name(render(services)["lora"])["plain"]["data-prompt"] == "<lora:plain:0.7> papercut, layered"


def test_the_editor_of_an_embedding_or_checkpoint_writes_description_and_notes(services):
    path = services.paths.embeddings / "sd1emb.pt"
    assert by_name(render(services)["textual_inversion"])["sd1emb"]["data-path"] == "sd1emb.pt"
    opened = extra_networks.open_editor(services, "textual_inversion\nsd1emb.pt")
    _, _, _, version, activation, weight, _, editing = opened
    assert version.visible is False and activation.visible is False and weight.visible is False
    extra_networks.save_metadata(services, "txt2img", editing, "Soft light", "SDXL", "ignored", 1.5, "n")
    assert json.loads((path.with_suffix(".json")).read_text()) == {"description": "Soft light", "notes": "n"}
    card = by_name(render(services)["textual_inversion"])["sd1emb"]
    assert card["data-prompt"] == "sd1emb"


def json_files(root: Path) -> set[Path]:
    return set(root.rglob("*.json"))


@pytest.mark.parametrize("target", [
    "lora\n../../config.json",  # climbs out of the folder
    "lora\nstyles/../styles/plain.safetensors",  # a listed file, but not its exact path
    "lora\n../Lora/styles/plain.safetensors",
    "lora\n{lora}/styles/plain.safetensors",  # absolute: the page never sends one
    "lora\n/etc/passwd",
    "lora\nnotes.txt",  # in the folder, but no LoRA
    "lora\nstyles/missing.safetensors",
    "lora\nstyles\\plain.safetensors",
    "checkpoints\nstyles/plain.safetensors",  # a LoRA is no listed checkpoint
    "textual_inversion\nstyles/plain.safetensors",
    "secrets\nstyles/plain.safetensors",
    "lora\nstyles/plain.safetensors\x00.json",
    "lora\n",
    "",
])
def test_the_editor_touches_only_listed_files(services, target):
    target = target.format(lora=services.paths.lora)
    before = json_files(services.paths.data_dir)
    with pytest.warns(UserWarning, match="Not a listed file"):
        assert extra_networks.open_editor(services, target) == (gr.skip(),) * 8
    with pytest.warns(UserWarning, match="Not a listed file"):
        result = extra_networks.save_metadata(services, "txt2img", target, "d", "SD1", "a", 1.0, "n")
    assert result == (gr.skip(),) * 4
    assert json_files(services.paths.data_dir) == before


def without_thumbnail_urls(html: str) -> str:
    """The HTML less the cards' preview URLs (A1111's `/sd_extra_networks/thumb?filename=<server path>` route,
    whose contract is kept)."""
    return re.sub(r'<img class="preview" src="[^"]*"', "<img", html)


def test_the_cards_name_no_server_path(services):
    (services.paths.lora / "styles" / "plain.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a preview: one thumb URL
    data = os.path.abspath(services.paths.data_dir)
    pages = extra_networks.render_cards(services, "txt2img")
    assert 'src="./sd_extra_networks/thumb?filename=' in pages[2]
    for page in pages:
        rest = without_thumbnail_urls(page)
        assert data not in rest and quote(data, safe="") not in rest and "data-path" in rest
    lora = {card["data-path"] for card in parsed(pages[2]).cards}
    on_disk = {p.relative_to(services.paths.lora).as_posix() for p in services.paths.lora.rglob("*.safetensors")}
    assert lora == on_disk
    checkpoint = next(card for card in parsed(pages[0]).cards if "error" not in card["classes"])
    assert (services.paths.checkpoints / checkpoint["data-path"]).is_file()
    opened = extra_networks.open_editor(services, f"checkpoints\n{checkpoint['data-path']}")
    assert opened[0].visible is True and opened[-1] == f"checkpoints\n{checkpoint['data-path']}"


def test_the_editor_finds_a_lycoris_file_and_refuses_a_path_listed_twice(services):
    lyco = services.paths.lycoris
    write_lora(lyco / "lyco_only.safetensors", plain_tensors())
    write_lora(lyco / "styles" / "plain.safetensors", plain_tensors())  # also below models/Lora
    cards = by_name(render(services)["lora"])
    assert cards["lyco_only"]["data-path"] == "lyco_only.safetensors"
    editing = extra_networks.open_editor(services, "lora\nlyco_only.safetensors")[-1]
    extra_networks.save_metadata(services, "txt2img", editing, "from LyCORIS", "SD1", "", 0.0, "")
    assert json.loads((lyco / "lyco_only.json").read_text())["description"] == "from LyCORIS"
    before = json_files(services.paths.data_dir)
    with pytest.warns(UserWarning, match="More than one listed file is styles/plain.safetensors"):
        assert extra_networks.open_editor(services, "lora\nstyles/plain.safetensors") == (gr.skip(),) * 8
    assert json_files(services.paths.data_dir) == before


def test_an_empty_tab_names_its_folder_below_the_data_dir_under_hide_ui_dir_config(make_services):
    hidden = make_services(flags=["--hide-ui-dir-config"])
    page = extra_networks.render_cards(hidden, "txt2img")[2]
    assert "Nothing here" in page and "<li>models/Lora</li>" in page
    assert os.path.abspath(hidden.paths.data_dir) not in page
    shown = make_services()
    assert f"<li>{shown.paths.lora}</li>" in extra_networks.render_cards(shown, "txt2img")[2]


def test_the_panel_has_the_editor_and_its_hidden_opener(services):
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    for tab in ("txt2img", "img2img"):
        part = f"{tab}_extra_edit_user_metadata"
        assert by_id[part].visible is False
        assert [by_id[f"{part}_{name}"].label for name in ("description", "activation_text", "preferred_weight",
                                                            "notes")] == ["Description", "Activation text",
                                                                          "Preferred weight", "Notes"]
        opener = by_id[f"{part}_button"]
        fn = next(f for f in blocks.fns.values() if any(t[0] == opener._id for t in f.targets))
        assert f"webuiTakeEditTarget('{tab}'" in fn.js
        assert [c.elem_id for c in fn.inputs] == [f"{part}_target"]
