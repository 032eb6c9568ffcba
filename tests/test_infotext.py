"""Tests for webui.outputs.infotext (A1111 infotext build/parse)."""

from __future__ import annotations

import random
import string
import time

import pytest

from webui.outputs.infotext import _RE_PARAM, PARSE_DEFAULTS, _find_params, build_infotext, parse_infotext

EXAMPLE_PARAMS = {
    "Steps": 20,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": 7,
    "Seed": 2899092436,
    "Size": "512x512",
    "Model hash": "eed0bdfc49",
    "Model": "epicPhotonism_v10",
    "Lora hashes": "goodhands: e7911d734eef",
    "Version": "v1.9.2",
}
EXAMPLE_PARAM_LINE = (
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 2899092436, "
    "Size: 512x512, Model hash: eed0bdfc49, Model: epicPhotonism_v10, "
    'Lora hashes: "goodhands: e7911d734eef", Version: v1.9.2'
)
EXAMPLE_TEXT = (
    "a photo of a cat, <lora:goodhands:1>\n"
    "Negative prompt: blurry, lowres\n" + EXAMPLE_PARAM_LINE
)


def param_keys(text: str) -> list[str]:
    """Keys of the parameter line (last line), in written order."""
    return [pair.split(":")[0] for pair in text.split("\n")[-1].split(", ")]


# --- build --------------------------------------------------------------------------


def test_build_example_exact():
    text = build_infotext("a photo of a cat, <lora:goodhands:1>", "blurry, lowres", EXAMPLE_PARAMS)
    assert text == EXAMPLE_TEXT


def test_build_orders_known_then_extra_then_version_user():
    params = {
        "User": "alice",
        "Zeta": "z",
        "Version": "v1",
        "Seed": 5,
        "Alpha": "a",
        "Steps": 10,
        "Tiling": "True",
        "Clip skip": 2,
    }
    text = build_infotext("p", "", params)
    assert param_keys(text) == ["Steps", "Seed", "Clip skip", "Tiling", "Zeta", "Alpha", "Version", "User"]


def test_build_without_negative_omits_line():
    text = build_infotext("p", "", {"Steps": 1})
    assert text == "p\nSteps: 1"
    assert "Negative prompt" not in text


def test_build_empty_prompt_keeps_empty_first_line():
    assert build_infotext("", "", {"Steps": 1, "Seed": 2}) == "\nSteps: 1, Seed: 2"


def test_build_no_params_has_no_parameter_line():
    assert build_infotext("p", "n", {}) == "p\nNegative prompt: n"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("a, b", '"a, b"'),
        ("a: b", '"a: b"'),
        ("a\nb", '"a\\nb"'),
        ('say "hi", ok', '"say \\"hi\\", ok"'),
        ("héllo, wörld ✓", '"héllo, wörld ✓"'),  # ensure_ascii=False
        ("plain", "plain"),
        ("héllo", "héllo"),
    ],
)
def test_build_quoting(value, written):
    assert build_infotext("p", "", {"Extra": value}) == f"p\nExtra: {written}"


def test_build_key_equal_to_value_written_alone():
    text = build_infotext("p", "", {"Steps": 4, "Tiling": "Tiling", "Hires": "x"})
    assert text.splitlines()[-1] == "Steps: 4, Tiling, Hires: x"


def test_build_none_omitted_and_scalars_str():
    params = {"Steps": 30, "Seed": None, "Denoising strength": 0.75, "Extra": True, "Off": False, "CFG scale": "7.0"}
    line = build_infotext("p", "", params).splitlines()[-1]
    assert line == "Steps: 30, CFG scale: 7.0, Denoising strength: 0.75, Extra: True, Off: False"


# --- parse --------------------------------------------------------------------------


def test_parse_example():
    res = parse_infotext(EXAMPLE_TEXT)
    assert res["Prompt"] == "a photo of a cat, <lora:goodhands:1>"
    assert res["Negative prompt"] == "blurry, lowres"
    assert res["Steps"] == "20"
    assert res["Sampler"] == "DPM++ 2M"
    assert res["Schedule type"] == "Karras"
    assert res["CFG scale"] == "7"
    assert res["Seed"] == "2899092436"
    assert res["Model hash"] == "eed0bdfc49"
    assert res["Model"] == "epicPhotonism_v10"
    assert res["Lora hashes"] == "goodhands: e7911d734eef"
    assert res["Version"] == "v1.9.2"
    assert list(res)[:3] == ["Prompt", "Negative prompt", "Steps"]


def test_parse_size_adds_parts():
    res = parse_infotext(EXAMPLE_TEXT)
    assert res["Size"] == "512x512"
    assert res["Size-1"] == "512"
    assert res["Size-2"] == "512"
    res = parse_infotext("p\nSteps: 1, Seed: 2, Hires resize: 1024x-768")
    assert (res["Hires resize-1"], res["Hires resize-2"]) == ("1024", "-768")


def test_parse_multiline_prompt_and_negative():
    text = "line one\nline two\nNegative prompt: neg one\nneg two\nSteps: 1, Seed: 2, Sampler: Euler"
    res = parse_infotext(text)
    assert res["Prompt"] == "line one\nline two"
    assert res["Negative prompt"] == "neg one\nneg two"
    assert res["Sampler"] == "Euler"


def test_parse_fewer_than_three_pairs_is_all_prompt():
    text = "a cat\nSteps: 20, Seed: 1"
    res = parse_infotext(text)
    assert res["Prompt"] == text
    assert res["Negative prompt"] == ""
    assert "Steps" not in res and "Seed" not in res


def test_parse_no_parameter_line_with_negative():
    res = parse_infotext("a cat\nNegative prompt: dog")
    assert res["Prompt"] == "a cat"
    assert res["Negative prompt"] == "dog"


def test_parse_defaults_filled_but_not_overriding():
    res = parse_infotext("p\nSteps: 1, Seed: 2, Clip skip: 2")
    for key, value in PARSE_DEFAULTS.items():
        if key != "Clip skip":
            assert res[key] == value
    assert res["Clip skip"] == "2"
    assert parse_infotext("just a prompt")["Schedule type"] == "Automatic"
    assert parse_infotext("")["RNG"] == "GPU"


def test_parse_bad_json_quote_kept_raw():
    res = parse_infotext('p\nSteps: 1, Seed: 2, Bad: "a\\q"')
    assert res["Bad"] == '"a\\q"'


def test_parse_trailing_newline_tolerated():
    res = parse_infotext(EXAMPLE_TEXT + "\n")
    assert res["Version"] == "v1.9.2"


# --- round trips and fuzzing -----------------------------------------------------------

KEY_CHARS = string.ascii_letters + string.digits + " -/"
TEXT_CHARS = string.printable + "äöüéß✓日本語🙂\"'\\,:\u00a0\u2028\x85"
RESERVED_KEYS = {"Prompt", "Negative prompt"}


def rand_text(rng: random.Random, max_len: int = 30) -> str:
    return "".join(rng.choice(TEXT_CHARS) for _ in range(rng.randint(0, max_len)))


def rand_key(rng: random.Random) -> str:
    while True:
        key = rng.choice(string.ascii_letters) + "".join(rng.choice(KEY_CHARS) for _ in range(rng.randint(1, 12)))
        key = key.rstrip()
        if len(key) >= 2 and key not in RESERVED_KEYS and not key.endswith(("-1", "-2")):
            return key


def rand_multiline(rng: random.Random) -> str:
    lines = [rand_text(rng) for _ in range(rng.randint(1, 3))]
    return "\n".join(line for line in lines if not line.startswith("Negative prompt:"))


@pytest.mark.parametrize("seed", range(300))
def test_round_trip_random(seed):
    rng = random.Random(seed)
    prompt = rand_multiline(rng)
    negative = rand_multiline(rng)
    params: dict[str, object] = {}
    while len(params) < rng.randint(3, 8):
        key = rand_key(rng)
        value = rng.choice([rand_text(rng), rng.randint(-10**10, 10**10), rng.random(), rng.random() < 0.5])
        if str(value) != key:
            params[key] = value

    res = parse_infotext(build_infotext(prompt, negative, params))

    assert res["Prompt"] == prompt
    assert res["Negative prompt"] == negative
    for key, value in params.items():
        assert res[key] == str(value), key


def test_round_trip_tricky_values():
    params = {
        "Steps": 20,
        "Quote": '"start',
        "Inner": 'a"b',
        "Spaces": "  padded  ",
        "Empty": "",
        "Json": '{"a": [1, 2]}',
        "Unicode": "日本語, 🙂",
        "Newline": "x\ny",
        "Backslash": "c:\\path\\",
    }
    res = parse_infotext(build_infotext("p\n\nq", "", params))
    assert res["Prompt"] == "p\n\nq"
    for key, value in params.items():
        assert res[key] == str(value)


def test_round_trip_empty_prompt_with_negative():
    res = parse_infotext(build_infotext("", " leading space", {"Steps": 1, "Seed": 2, "Sampler": "Euler a"}))
    assert res["Prompt"] == ""
    assert res["Negative prompt"] == " leading space"


@pytest.mark.parametrize("seed", range(200))
def test_parse_never_raises(seed):
    rng = random.Random(1000 + seed)
    pieces = ["Negative prompt:", "Steps: 1", ", ", ": ", '"', "\\", "\n", "x", "512x512", "Size-1", " "]
    text = "".join(
        rng.choice(pieces) if rng.random() < 0.5 else chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 60))
    )
    res = parse_infotext(text)
    assert isinstance(res["Prompt"], str) and isinstance(res["Negative prompt"], str)


@pytest.mark.parametrize("text", ["", "\n", "\n\n\n", ",,,", ":::", '"', 'a: ", b: ", c: "', "Negative prompt:"])
def test_parse_edge_inputs(text):
    assert "Prompt" in parse_infotext(text)


@pytest.mark.parametrize("seed", range(50))
def test_linear_param_scan_matches_regex_findall(seed):
    """The linear scanner must agree exactly with A1111's regex findall."""
    rng = random.Random(5000 + seed)
    alphabet = list('ab1_ -/:,"\\\t\n\ré') + ["Steps: ", ", ", ': "', '\\"', "日"]
    for _ in range(500):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert _find_params(line) == _RE_PARAM.findall(line), repr(line)


@pytest.mark.parametrize("line", ["a " * 100_000, "a-/" * 70_000, 'ab: "' * 40_000, "Steps: 1, " * 20_000])
def test_parse_long_lines_fast(line):
    """Long hostile lines (e.g. uploaded via the PNG-info API) parse in linear time."""
    start = time.perf_counter()
    parse_infotext("prompt\n" + line)
    assert time.perf_counter() - start < 2.0
