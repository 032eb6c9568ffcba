"""The prompt tools of the web UI, driven without a browser: the extra networks cards (checkpoints, textual
inversion, LoRA) and their preview route, token counters, styles and the SD VAE picker, against real services
over a data dir holding real files (a tiny checkpoint, kohya LoRAs, A1111 embeddings, PNG previews)."""
from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import gradio as gr
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save_file

from webui.models.tokenizer import clip_tokenizer
from webui.settings.flags import parse_flags
from webui.ui import extra_networks, generation, style_editor, styles, token_counter, vae
from webui.ui.blocks import build_ui
from webui.ui.thumbs import install_thumb_route

SMALL = ("a red fox", "blurry", "DPM++ 2M", "Automatic", 4, 64, 64, 1, 1, 7.0, 1234)


# --- files as users have them -----------------------------------------------------------------------------------
def write_png(path: Path, color=(200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 24), color).save(path)
    return path


def write_kohya_lora(path: Path, output_name: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"lora_unet_x.lora_down.weight": torch.randn(4, 8), "lora_unet_x.lora_up.weight": torch.randn(8, 4),
               "lora_unet_x.alpha": torch.tensor(4.0)}
    save_file(tensors, str(path), metadata={"ss_output_name": output_name} if output_name else None)
    return path


def write_embedding(path: Path, width: int, vectors: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"string_to_param": {"*": torch.randn(vectors, width)}, "name": path.stem}, path)
    return path


@pytest.fixture
def services(make_services):
    made = make_services("sd1")
    paths = made.paths
    write_kohya_lora(paths.lora / "watercolor.safetensors")
    write_png(paths.lora / "watercolor.png")
    (paths.lora / "watercolor.txt").write_text("Soft washes & paper <texture>", encoding="utf-8")
    write_kohya_lora(paths.lora / "styles" / "pixel_art.safetensors", output_name="pixelator")
    write_png(paths.lora / "styles" / "pixel_art.preview.png", (10, 200, 10))
    (paths.lora / "styles" / "pixel_art.json").write_text(
        json.dumps({"preferred weight": 0.8, "activation text": "pixel art, 8bit"}), encoding="utf-8")
    write_embedding(paths.embeddings / "easyneg.pt", 64, vectors=2)  # the tiny text encoder's width
    write_png(paths.embeddings / "easyneg.preview.png", (90, 90, 90))
    write_embedding(paths.embeddings / "bigstyle.pt", 768)  # made for a real SD1 model
    (paths.embeddings / "broken.pt").write_bytes(b"not a torch file")
    write_png(paths.checkpoints / "tiny-sd1.png", (40, 40, 200))
    (paths.checkpoints / "tiny-sd1.description.txt").write_text("A tiny random model", encoding="utf-8")
    return made


class CardParser(HTMLParser):
    """The cards of a rendered tab, as dicts: their attributes, name, description and preview src."""

    def __init__(self):
        super().__init__()
        self.cards, self.field, self.empty = [], None, ""
        self.in_empty = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "card" in classes:
            self.cards.append({**attrs, "classes": classes, "name": "", "description": "", "src": None})
        elif self.cards and tag == "img":
            self.cards[-1]["src"] = attrs["src"]
        elif self.cards and ("name" in classes or "description" in classes):
            self.field = "name" if "name" in classes else "description"
        elif "nocards" in classes:
            self.in_empty = True

    def handle_endtag(self, tag):
        self.field = None

    def handle_data(self, data):
        if self.field:
            self.cards[-1][self.field] += data
        elif self.in_empty:
            self.empty += data


def parse_cards(html: str) -> dict[str, dict]:
    parser = CardParser()
    parser.feed(html)
    return {card["data-name"]: card for card in parser.cards}


def render(services, search="") -> dict[str, dict[str, dict]]:
    html = extra_networks.render_cards(services, "txt2img", search)
    return {kind: parse_cards(part) for kind, part in zip(("checkpoints", "textual_inversion", "lora"), html)}


def thumb_path(src: str) -> str:
    url = urlparse(src)
    assert url.path == "./sd_extra_networks/thumb"
    return parse_qs(url.query)["filename"][0]


# --- cards -------------------------------------------------------------------------------------------------------
def test_cards_show_names_previews_descriptions_and_what_a_click_inserts(services):
    cards = render(services)
    paths = services.paths

    lora = cards["lora"]
    assert set(lora) == {"watercolor", "pixel_art"}
    assert lora["watercolor"]["data-prompt"] == "<lora:watercolor:1>"
    assert lora["watercolor"]["description"] == "Soft washes & paper <texture>"  # escaped in HTML, read back
    assert thumb_path(lora["watercolor"]["src"]) == str(paths.lora / "watercolor.png")
    # preferred weight and activation text from the user's name.json, as A1111 inserts them
    assert lora["pixel_art"]["data-prompt"] == "<lora:pixel_art:0.8> pixel art, 8bit"
    assert thumb_path(lora["pixel_art"]["src"]) == str(paths.lora / "styles" / "pixel_art.preview.png")
    assert "pixelator" in lora["pixel_art"]["data-search"]  # the alias is searchable

    embeddings = cards["textual_inversion"]
    assert embeddings["easyneg"]["data-prompt"] == "easyneg"
    assert thumb_path(embeddings["easyneg"]["src"]) == str(paths.embeddings / "easyneg.preview.png")
    assert embeddings["bigstyle"]["src"] is None and "disabled" not in embeddings["bigstyle"]["classes"]
    broken = embeddings["broken.pt"]  # listed so the user sees why it is missing, but not clickable
    assert "disabled" in broken["classes"] and "data-prompt" not in broken
    assert "not a readable PyTorch file" in broken["title"]

    checkpoint = cards["checkpoints"]["tiny-sd1"]
    assert checkpoint["data-checkpoint"] == services.models.checkpoints()[0].title
    assert checkpoint["description"] == "A tiny random model"
    assert thumb_path(checkpoint["src"]) == str(paths.checkpoints / "tiny-sd1.png")


def test_embeddings_the_loaded_checkpoint_cannot_use_are_greyed_with_the_reason(services):
    job = services.load_checkpoint(services.models.checkpoints()[0].title)
    job.wait(60)
    assert job.finished_ok, job.error
    embeddings = render(services)["textual_inversion"]
    assert "disabled" not in embeddings["easyneg"]["classes"]
    big = embeddings["bigstyle"]
    assert "disabled" in big["classes"] and "width 768" in big["title"] and "64" in big["title"]


def test_search_hides_cards_that_do_not_match(services):
    lora = render(services, search="PIXEL")["lora"]
    assert "hidden" not in lora["pixel_art"]["classes"] and "hidden" in lora["watercolor"]["classes"]
    by_alias = render(services, search="pixelator art")["lora"]
    assert "hidden" not in by_alias["pixel_art"]["classes"]


def test_an_empty_tab_says_which_folder_to_fill(make_services):
    services = make_services()
    parser = CardParser()
    parser.feed(extra_networks.render_cards(services, "img2img")[2])
    assert parser.cards == [] and "Nothing here" in parser.empty and str(services.paths.lora) in parser.empty


def test_the_panel_opens_with_fresh_cards_and_closes(services):
    opened, panel, *cards = extra_networks.toggle_panel(services, "txt2img", False, "")
    assert opened is True and panel.visible is True
    assert 'data-tab="txt2img"' in cards[2] and "watercolor" in parse_cards(cards[2])
    opened, panel, *cards = extra_networks.toggle_panel(services, "txt2img", True, "")
    assert opened is False and panel.visible is False
    assert all(card == gr.skip() for card in cards)


def test_refresh_finds_new_checkpoints_and_rereads_changed_embeddings(services, tiny_models):
    from conftest import install_model
    assert set(render(services)["checkpoints"]) == {"tiny-sd1"}
    install_model(services.paths.data_dir, tiny_models["sd1"], "second.safetensors")
    assert set(render(services)["checkpoints"]) == {"tiny-sd1"}  # opening the panel does not rescan checkpoints
    write_embedding(services.paths.embeddings / "fresh.pt", 64)
    cards = [parse_cards(part) for part in extra_networks.refresh_networks(services, "txt2img", "")]
    assert set(cards[0]) == {"tiny-sd1", "second"}
    assert "fresh" in cards[1]


# --- the preview route -------------------------------------------------------------------------------------------
def test_thumb_route_serves_listed_previews_and_nothing_else(services):
    app = FastAPI()
    install_thumb_route(app, services)
    client = TestClient(app)
    cards = render(services)
    for card in (cards["lora"]["watercolor"], cards["lora"]["pixel_art"], cards["textual_inversion"]["easyneg"],
                 cards["checkpoints"]["tiny-sd1"]):
        response = client.get(card["src"].lstrip("."))
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content == Path(thumb_path(card["src"])).read_bytes()

    lora = services.paths.lora
    stray = write_png(lora / "not-a-preview.png")  # an image beside the LoRAs that belongs to no listed file
    outside = write_png(services.paths.data_dir / "secret.png")
    refused = [str(stray), str(outside), str(lora / "watercolor.safetensors"), str(lora / "watercolor.txt"),
               f"{lora}/../secret.png", str(services.paths.config_file), "watercolor.png", "/etc/passwd", ""]
    for filename in refused:
        response = client.get("/sd_extra_networks/thumb", params={"filename": filename})
        assert response.status_code == 403, filename
        assert "listed" in response.json()["detail"]

    (lora / "watercolor.png").unlink()  # a listed item's preview that went away
    response = client.get("/sd_extra_networks/thumb", params={"filename": str(lora / "watercolor.png")})
    assert response.status_code == 404


def test_the_app_serves_thumbs_beside_the_ui(services):
    from app import create_app

    app, _ = create_app(parse_flags(["--data-dir", str(services.paths.data_dir)]), services)
    src = render(services)["lora"]["watercolor"]["src"]
    response = TestClient(app).get(src.lstrip("."))
    assert response.status_code == 200 and response.content == (services.paths.lora / "watercolor.png").read_bytes()


# --- token counters ----------------------------------------------------------------------------------------------
def test_token_counter_shows_tokens_and_the_chunk_limit(services):
    tokenizer = clip_tokenizer(services.paths.cache_dir)
    reference = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    short = "a red fox in the snow"
    assert token_counter.token_counter(services, short, 20) == f'<span class="token-count">{reference(short)}/75</span>'
    long = "cat, " * 40  # 80 tokens: a second chunk, not an error
    assert reference(long) == 80
    assert token_counter.token_counter(services, long, 20) == '<span class="token-count">80/150</span>'
    # extra-network tags take no tokens; nothing typed is 0/75
    assert token_counter.token_counter(services, f"{short} <lora:watercolor:1>", 20) == \
        token_counter.token_counter(services, short, 20)
    assert token_counter.token_counter(services, "", None) == '<span class="token-count">0/75</span>'


def test_token_counter_counts_embedding_vectors_once_a_checkpoint_is_loaded(services):
    services.load_checkpoint(services.models.checkpoints()[0].title).wait(60)
    assert token_counter.token_counter(services, "easyneg", 20) == '<span class="token-count">2/75</span>'


# --- styles ------------------------------------------------------------------------------------------------------
def read_styles_csv(services) -> dict[str, tuple[str, str]]:
    with open(services.paths.styles_file, encoding="utf-8-sig", newline="") as handle:
        return {row["name"]: (row["prompt"], row["negative_prompt"]) for row in csv.DictReader(handle)}


def test_styles_save_to_the_csv_and_apply_into_the_prompts(services, capsys):
    style_editor.save_style(services, " Cinema ", "{prompt}, film grain", "blurry, lowres")  # 🖌️'s Save
    assert "Style 'Cinema' saved" in capsys.readouterr().out
    assert read_styles_csv(services) == {"Cinema": ("{prompt}, film grain", "blurry, lowres")}
    style_editor.save_style(services, "Plain", "oil painting", "")
    assert [c[0] for c in styles.styles_dropdown(services).choices] == ["Cinema", "Plain"]

    prompt, negative, cleared = styles.apply_styles(services, "a cat", "ugly", ["Cinema", "Plain"])
    assert prompt == "a cat, film grain, oil painting" and negative == "ugly, blurry, lowres"
    assert cleared.value == []

    style_editor.save_style(services, "Plain", "watercolor", "")
    assert "Style 'Plain' updated" in capsys.readouterr().out
    assert read_styles_csv(services)["Plain"] == ("watercolor", "")


def test_style_errors_are_warnings(services):
    with pytest.warns(UserWarning, match="needs a name"):
        assert style_editor.save_style(services, "  ", "x", "y") == (gr.skip(), gr.skip())
    with pytest.warns(UserWarning, match="Unknown style 'Gone'"):
        assert styles.apply_styles(services, "a", "b", ["Gone"]) == (gr.skip(),) * 3
    with pytest.warns(UserWarning, match="Choose one or more styles"):
        styles.apply_styles(services, "a", "b", [])


def test_the_request_from_the_ui_carries_the_chosen_styles(services):
    services.styles.save("Cinema", "{prompt}, film grain", "lowres")
    request = generation.build_request("txt2img", *SMALL, styles=["Cinema"])
    assert request.styles == ["Cinema"] and request.prompt == "a red fox"
    outputs = list(generation.generate(services, "txt2img", None, *SMALL, styles=["Cinema"]))
    last = dict(zip(generation.OUTPUTS, outputs[-1]))
    assert "a red fox, film grain" in last["infotext"] and "Negative prompt: blurry, lowres" in last["infotext"]
    # the Generate button sends the picker as the last value
    blocks = build_ui(services)
    config = blocks.get_config_file()
    ids = {c["id"]: c["props"].get("elem_id") for c in config["components"]}
    generate = next(d for d in config["dependencies"] if d.get("api_name") == "txt2img")
    assert ids[generate["inputs"][-1]] == "txt2img_styles"


# --- SD VAE ------------------------------------------------------------------------------------------------------
def test_vae_picker_lists_files_and_saves_the_option(services, monkeypatch):
    from webui.models.ldm_export import vae_to_ldm
    from webui.models.tiny import build_modules

    (services.paths.vae / "broken.safetensors").write_bytes(b"x")  # listing does not open the file
    ldm = vae_to_ldm(build_modules("sd1", seed=4)[3])
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in ldm.items()},
              str(services.paths.vae / "kl-f8.safetensors"))
    assert vae.refresh_vaes(services).choices == [(c, c) for c in ("Automatic", "None", "broken.safetensors",
                                                                    "kl-f8.safetensors")]
    assert vae.change_vae(services, "kl-f8.safetensors").value == "kl-f8.safetensors"
    shown = []
    monkeypatch.setattr(vae.notices, "warn", shown.append)
    assert vae.change_vae(services, "broken.safetensors").value == "kl-f8.safetensors"  # choosing it loads it
    assert "broken.safetensors" in shown[-1] and services.options.get("sd_vae") == "kl-f8.safetensors"
    monkeypatch.undo()
    assert services.options.get("sd_vae") == "kl-f8.safetensors"
    assert json.loads(services.paths.config_file.read_text())["sd_vae"] == "kl-f8.safetensors"
    with pytest.warns(UserWarning, match="Unknown VAE 'gone.pt'"):
        assert vae.change_vae(services, "gone.pt").value == "kl-f8.safetensors"
    assert vae.change_vae(services, "None").value == "None" and services.options.get("sd_vae") == "None"


# --- the Blocks --------------------------------------------------------------------------------------------------
def test_build_ui_has_the_prompt_tools_with_a1111_elem_ids(services):
    (services.paths.vae / "kl-f8.safetensors").write_bytes(b"x")
    services.options.update({"sd_vae": "kl-f8.safetensors"})
    blocks = build_ui(services)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    expected = {"setting_sd_vae", "refresh_sd_vae", "change_checkpoint"}
    for tab in ("txt2img", "img2img"):
        expected |= {f"{tab}_{name}" for name in (
            "extra_networks", "extra_tabs", "extra_search", "extra_refresh", "checkpoints_cards",
            "textual_inversion_cards", "lora_cards", "token_counter", "negative_token_counter", "token_button",
            "negative_token_button", "styles", "style_apply", "styles_edit_button")}
    assert expected <= set(by_id), expected - set(by_id)
    assert by_id["setting_sd_vae"].value == "kl-f8.safetensors"
    assert [c[0] for c in by_id["setting_sd_vae"].choices] == ["Automatic", "None", "kl-f8.safetensors"]
    assert by_id["txt2img_extra_tabs"].visible is False
    assert by_id["txt2img_token_counter"].value == "<span class=\"token-count\">0/75</span>"
    assert by_id["img2img_styles"].multiselect is True
