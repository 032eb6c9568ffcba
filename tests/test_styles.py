"""Prompt styles in A1111's styles.csv: reading, applying ({prompt} or appended), saving, and use in generation."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from webui.outputs.infotext import parse_infotext
from webui.prompts.styles import StyleDatabase, StyleError, merge_prompt

CSV = ('\ufeffname,prompt,negative_prompt\n'
       'Cinematic,"cinematic still of {prompt}, film grain","cartoon, drawing"\n'
       'Sharp,"sharp focus, 8k",blurry\n'
       'Quoted,"a ""quoted"" word",\n')


@pytest.fixture
def styles(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(CSV, encoding="utf-8")
    return StyleDatabase(path)


def test_reads_a1111_csv_with_bom(styles):
    assert styles.names() == ["Cinematic", "Sharp", "Quoted"]
    assert styles.get("Quoted").prompt == 'a "quoted" word'
    assert styles.get("Cinematic").negative_prompt == "cartoon, drawing"


@pytest.mark.parametrize("style,prompt,expected", [
    ("cinematic still of {prompt}, film grain", "a fox", "cinematic still of a fox, film grain"),
    ("sharp focus", "a fox", "a fox, sharp focus"),
    ("sharp focus", "", "sharp focus"),
    ("", "a fox", "a fox"),
    ("{prompt}", "", ""),
])
def test_merge_prompt(style, prompt, expected):
    assert merge_prompt(style, prompt) == expected


def test_apply_several_in_order(styles):
    prompt, negative = styles.apply("a fox", "ugly", ["Cinematic", "Sharp"])
    assert prompt == "cinematic still of a fox, film grain, sharp focus, 8k"
    assert negative == "ugly, cartoon, drawing, blurry"


def test_unknown_style_is_named(styles):
    with pytest.raises(StyleError, match="Unknown style 'Nope'.*Cinematic"):
        styles.apply("a", "", ["Nope"])


def test_save_round_trips_and_file_changes_are_seen(styles, tmp_path):
    styles.save("Mine", "oil painting of {prompt}", "photo, \"3d\"")
    again = StyleDatabase(tmp_path / "styles.csv")
    assert again.get("Mine").negative_prompt == 'photo, "3d"'
    assert again.names() == ["Cinematic", "Sharp", "Quoted", "Mine"]
    assert (tmp_path / "styles.csv").read_bytes().startswith(b"\xef\xbb\xbfname,prompt,negative_prompt")
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nOnly,x,y\n", encoding="utf-8")
    assert styles.names() == ["Only"]
    with pytest.raises(StyleError, match="needs a name"):
        styles.save("  ", "x", "y")
    styles.delete("Only")
    assert styles.names() == []


def test_missing_file_means_no_styles(tmp_path):
    assert StyleDatabase(tmp_path / "none.csv").names() == []


def test_styles_are_applied_to_generation_and_listed_by_the_api(make_services):
    from app import create_app
    from webui.settings.flags import parse_flags
    services = make_services("sd1")
    services.styles.save("Night", "{prompt} at night, stars", "daylight")
    app, _ = create_app(parse_flags(["--nowebui"]), services=services)
    client = TestClient(app)
    listed = client.get("/sdapi/v1/prompt-styles").json()
    assert listed == [{"name": "Night", "prompt": "{prompt} at night, stars", "negative_prompt": "daylight"}]
    body = {"prompt": "a lighthouse", "negative_prompt": "blurry", "styles": ["Night"], "steps": 2, "width": 64,
            "height": 64, "sampler_name": "Euler"}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    info = response.json()["info"]
    params = parse_infotext(__import__("json").loads(info)["infotexts"][0])
    assert params["Prompt"] == "a lighthouse at night, stars"
    assert params["Negative prompt"] == "blurry, daylight"
    bad = client.post("/sdapi/v1/txt2img", json={**body, "styles": ["Nope"]})
    assert bad.status_code == 400 and "Unknown style 'Nope'" in bad.json()["detail"]
