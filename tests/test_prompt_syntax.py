"""A1111 prompt syntax as tables: emphasis/BREAK, editing/alternation schedules, AND, comments, extra-network tags.

Expected values marked "A1111" are the outputs A1111 documents for the same input (its doctests and wiki).
"""
from __future__ import annotations

import pytest

from webui.prompts.attention import BREAK, parse_attention
from webui.prompts.extra_networks import ExtraNetworkCall, extract_extra_networks, lora_multipliers
from webui.prompts.schedule import (
    ScheduledFragments, ScheduledText, parse_full, prompt_schedule, split_and, strip_comments, text_at_step,
)

R = 1.1            # one round bracket
S = 1 / 1.1        # one square bracket, multiplied in like A1111

# ---- parse_attention ------------------------------------------------------------------------------------------------

ATTENTION = [
    # A1111 doctests
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
    # weights, nesting
    ("((x))", [("x", 1.1 * 1.1)]),
    ("[x]", [("x", S)]),
    ("[[x]]", [("x", S * S)]),
    ("(x:1.3)", [("x", 1.3)]),
    ("(x: 1.3 )", [("x", 1.3)]),
    ("(x:-0.5)", [("x", -0.5)]),
    ("(x:+2)", [("x", 2.0)]),
    ("(x:.5)", [("x", 0.5)]),
    ("((x:2))", [("x", 2.0 * 1.1)]),
    ("(a (b) c)", [("a ", 1.1), ("b", 1.1 * 1.1), (" c", 1.1)]),
    ("[a (b)]", [("a ", S), ("b", 1.1 * S)]),
    ("(a [b:1.3) c", [("a ", 1.3), ("b", 1.3 * S), (" c", S)]),   # `:w)` closes the last `(`, as in A1111
    # colons and escapes
    ("a:b", [("a:b", 1.0)]),
    ("time 12:30", [("time 12:30", 1.0)]),
    ("(a:b)", [("a:b", 1.1)]),
    ("(a:1.2.3)", [("a:1.2.3", 1.1)]),                              # not a number: literal (A1111 raises)
    ("\\\\", [("\\", 1.0)]),
    ("\\(x:1.5\\)", [("(x:1.5)", 1.0)]),
    ("a\\b", [("a\\b", 1.0)]),                                      # lone backslash stays
    ("\\[x\\] (y)", [("[x] ", 1.0), ("y", 1.1)]),
    # unbalanced
    ("a) b] c", [("a) b] c", 1.0)]),
    ("x:1.5) y", [("x:1.5) y", 1.0)]),
    ("a [b (c", [("a ", 1.0), ("b ", S), ("c", 1.1 * S)]),
    ("(a [b) c]", [("a ", 1.1), ("b", 1.1 * S), (" c", S)]),
    # BREAK
    ("a BREAK b", [("a", 1.0), (BREAK, -1.0), ("b", 1.0)]),
    ("a, BREAK\nb", [("a,", 1.0), (BREAK, -1.0), ("b", 1.0)]),
    ("BREAK", [("", 1.0), (BREAK, -1.0), ("", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), (BREAK, -1.0), ("", 1.0), (BREAK, -1.0), ("b", 1.0)]),
    ("aBREAK b BREAKfast break", [("aBREAK b BREAKfast break", 1.0)]),
    ("(a) BREAK (b)", [("a", 1.1), ("", 1.0), (BREAK, -1.0), ("", 1.0), ("b", 1.1)]),
    ("(a BREAK b)", [("a", 1.1), (BREAK, -1.0), ("b", 1.1)]),       # the marker keeps -1 inside brackets
    # merging and empty
    ("(a)(b)[c][d]", [("ab", 1.1), ("cd", S)]),
    ("a (b:1) c", [("a b c", 1.0)]),
    ("", [("", 1.0)]),
    ("()", [("", 1.0)]),
    ("[]", [("", 1.0)]),
]


@pytest.mark.parametrize("text,expected", ATTENTION)
def test_parse_attention(text, expected):
    assert parse_attention(text) == expected


def test_weights_are_exactly_the_products():
    (_, weight), = parse_attention("(((x)))")
    assert weight == 1.0 * 1.1 * 1.1 * 1.1 == 1.3310000000000004
    (_, weight), = parse_attention("[[[x]]]")
    assert weight == 1.0 * S * S * S


# ---- prompt_schedule / text_at_step ---------------------------------------------------------------------------------

# A1111 doctests, 10 steps: the full (end_at_step, text) list
A1111_SCHEDULES = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(s, "a" if s % 2 else "(b:1.1)") for s in range(1, 11)]),
    ("[fe|]male", [(s, "female" if s % 2 else "male") for s in range(1, 11)]),
    ("[fe|||]male", [(s, "female" if s % 4 == 1 else "male") for s in range(1, 11)]),
]


@pytest.mark.parametrize("text,expected", A1111_SCHEDULES)
def test_schedule_matches_a1111(text, expected):
    assert prompt_schedule(text, 10) == [ScheduledText(step, value) for step, value in expected]


def test_schedule_from_a1111_wiki_example():
    text = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
            "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]")
    assert prompt_schedule(text, 100) == [
        ScheduledText(25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        ScheduledText(50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        ScheduledText(60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        ScheduledText(75, "fantasy landscape with a lake and an oak in background masterful"),
        ScheduledText(100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


# (prompt, steps, the text the sampler sees at each 0-based step index)
PER_STEP = [
    # editing, all three forms, step numbers and fractions; index i uses `from` while i <= when (A1111's off-by-one)
    ("[a:b:10]", 20, ["a"] * 11 + ["b"] * 9),
    ("[a:b:0.5]", 20, ["a"] * 11 + ["b"] * 9),
    ("[a:b:0.25]", 8, ["a"] * 3 + ["b"] * 5),
    ("x [b:3]", 6, ["x "] * 4 + ["x b"] * 2),
    ("x [a::3]", 6, ["x a"] * 4 + ["x "] * 2),
    ("[:b:2]", 4, [""] * 3 + ["b"]),
    ("[a:b: 2 ]", 4, ["a"] * 3 + ["b"]),
    ("[a:b:1]", 4, ["a", "a", "b", "b"]),
    ("[a:b:1.5]", 10, ["a", "a"] + ["b"] * 8),          # >= 1: a step number, int(1.5) = 1
    ("[a:b:0]", 4, ["b"] * 4),
    ("[a:b:0.1]", 5, ["b"] * 5),                         # int(0.5) = 0: never `from`
    ("[a:b:-3]", 3, ["b"] * 3),
    ("[a:b:25]", 20, ["a"] * 20),                        # capped at steps
    ("[a:b:1e999]", 4, ["a"] * 4),
    # nesting
    ("[a:[b:c:8]:4]", 10, ["a"] * 5 + ["b"] * 4 + ["c"]),
    ("[[a:b:2]:c:3]", 5, ["a"] * 3 + ["b"] + ["c"]),
    ("([a:b:3]:1.2)", 5, ["(a:1.2)"] * 4 + ["(b:1.2)"]),
    ("[(a:1.3):[b]:2]", 4, ["(a:1.3)"] * 3 + ["[b]"]),
    ("(([a:b:1]))", 3, ["((a))", "((a))", "((b))"]),
    # alternation: option (s - 1) % n at change point s; index i uses change point max(i, 1)
    ("[a|b]", 5, ["a", "a", "b", "a", "b"]),
    ("[a|b|c]", 6, ["a", "a", "b", "c", "a", "b"]),
    ("[fe|]male", 4, ["female", "female", "male", "female"]),
    ("[|x]y", 3, ["y", "y", "xy"]),
    ("[a|[b|c]]", 4, ["a", "a", "c", "a"]),              # the inner one switches on the same step count
    ("[a| (b:1.2) ]", 3, ["a", "a", " (b:1.2) "]),
    # alternation with editing
    ("[[a|b]:c:2]", 4, ["a", "a", "b", "c"]),
    ("[a:b:2] [x|y]", 4, ["a x", "a x", "a y", "b x"]),
    ("[x|[a:b:2]]", 4, ["x", "x", "a", "x"]),
    # not editing: literal, unchanged, never raises
    ("[a:b:c]", 3, ["[a:b:c]"] * 3),
    ("[a:b]", 3, ["[a:b]"] * 3),
    ("[a:b:c:2]", 3, ["[a:b:c:2]"] * 3),
    ("[a:b:2x]", 3, ["[a:b:2x]"] * 3),
    ("[x] (y:1.2) \\[a:b:1\\]", 3, ["[x] (y:1.2) \\[a:b:1\\]"] * 3),
    ("<lora:detail:0.5> [x]", 2, ["<lora:detail:0.5> [x]"] * 2),
    ("[a [b:c:1]", 3, ["[a b", "[a b", "[a c"]),         # unclosed outer bracket: literal; the inner edit works
    ("a] [b:c:1] (d", 3, ["a] b (d", "a] b (d", "a] c (d"]),
    ("(x [a:b:1] y:1.1)", 2, ["(x a y:1.1)", "(x a y:1.1)"]),
    ("[a|b:2]", 3, ["[a|b:2]"] * 3),                     # a `|` outside a valid alternation: whole prompt literal
    ("a | b [c:d:1]", 3, ["a | b [c:d:1]"] * 3),
    ("[a|b", 3, ["[a|b"] * 3),
    ("[a:b:1] c\\", 3, ["[a:b:1] c\\"] * 3),             # trailing backslash: whole prompt literal, like A1111
]


@pytest.mark.parametrize("text,steps,expected", PER_STEP)
def test_text_at_every_step(text, steps, expected):
    schedule = prompt_schedule(text, steps)
    assert [text_at_step(schedule, index) for index in range(steps)] == expected
    assert schedule[-1].end_at_step == steps


def test_change_points_are_when_values_and_steps():
    schedule = prompt_schedule("[a:b:3] [c:d:0.5] [e::1]", 10)
    assert [entry.end_at_step for entry in schedule] == [1, 3, 5, 10]
    assert [entry.text for entry in schedule] == ["a c e", "a c ", "b c ", "b d "]


def test_alternation_makes_every_step_a_change_point():
    schedule = prompt_schedule("[a|b] [x:y:2]", 4)
    assert schedule == [ScheduledText(1, "a x"), ScheduledText(2, "b x"), ScheduledText(3, "a y"),
                        ScheduledText(4, "b y")]


def test_text_at_step_past_the_end_falls_back_to_the_first_entry_like_a1111():
    schedule = prompt_schedule("[a:b:2]", 4)
    assert text_at_step(schedule, 3) == "b"
    assert text_at_step(schedule, 4) == "b"        # index == steps still matches the last entry
    assert text_at_step(schedule, 5) == "a"
    assert text_at_step(schedule, 100) == "a"
    assert text_at_step(schedule, -1) == "a"
    with pytest.raises(ValueError, match="empty"):
        text_at_step([], 0)


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        prompt_schedule("a", 0)


@pytest.mark.parametrize("text", [
    "[" * 300, "(" * 300 + "x", "]" * 50 + "[" * 50, "[" * 150 + "a:b:3" + "]" * 150, "\\", "|", "[|]" * 40,
    "[a:b:-1e999]", "[a:b:+.5e1]", "\n\\\n[a:b:1]",
])
def test_nothing_raises(text):
    schedule = prompt_schedule(text, 10)
    assert schedule[-1].end_at_step == 10
    for entry in schedule:
        assert isinstance(parse_attention(entry.text), list)


def test_too_deep_nesting_is_plain_text():
    text = "[" * 150 + "a:b:3" + "]" * 150
    assert prompt_schedule(text, 10) == [ScheduledText(10, text)]


def test_long_prompt_with_many_unclosed_brackets_stays_fast_and_literal():
    text = "a [b " * 90 + "[c:d:5]"
    schedule = prompt_schedule(text, 10)
    assert [entry.text for entry in schedule] == ["a [b " * 90 + "c", "a [b " * 90 + "d"]


# ---- split_and --------------------------------------------------------------------------------------------------------

SPLIT_AND = [
    ("a cat :1.2 AND a dog", [("a cat", 1.2), ("a dog", 1.0)]),
    ("a", [("a", 1.0)]),
    ("", [("", 1.0)]),
    ("a AND b:0.5 AND c : -1", [("a", 1.0), ("b", 0.5), ("c", -1.0)]),
    ("a :.5", [("a", 0.5)]),
    ("a : 2.", [("a", 2.0)]),
    ("a and b", [("a and b", 1.0)]),
    ("ANDROID AND BRANDY", [("ANDROID", 1.0), ("BRANDY", 1.0)]),
    ("a:1:2", [("a:1", 2.0)]),
    ("(x:1.2)", [("(x:1.2)", 1.0)]),
    ("a:1.5.2", [("a:1.5.2", 1.0)]),
    ("a AND", [("a", 1.0), ("", 1.0)]),
    ("  x  \n AND\ny :3\n", [("x", 1.0), ("y", 3.0)]),
    ("[cat AND dog:5]", [("[cat", 1.0), ("dog:5]", 1.0)]),  # AND splits first, even inside brackets (A1111 order)
]


@pytest.mark.parametrize("text,expected", SPLIT_AND)
def test_split_and(text, expected):
    assert split_and(text) == expected


# ---- strip_comments -------------------------------------------------------------------------------------------------

COMMENTS = [
    ("a # c", "a "),
    ("no comment", "no comment"),
    ("# only\nb", "b"),
    ("a\n# c\nb", "a\nb"),
    ("a\n   # indented\nb", "a\nb"),
    ("x #1\n#2\n#3\ny # 4", "x \ny "),
    ("a\n\nb", "a\n\nb"),
    ("(red:1.2) #ff0000 is red", "(red:1.2) "),
]


@pytest.mark.parametrize("text,expected", COMMENTS)
def test_strip_comments(text, expected):
    assert strip_comments(text) == expected


# ---- extra networks ------------------------------------------------------------------------------------------------

EXTRA_NETWORKS = [
    ("a <lora:foo:0.8> b", "a  b", [("lora", ("foo", "0.8"), {})]),
    ("<lora:foo:0.5:0.3>", "", [("lora", ("foo", "0.5", "0.3"), {})]),
    ("<lyco:bar:te=0.5:unet=0.2:dyn=8>, x", ", x", [("lyco", ("bar",), {"te": "0.5", "unet": "0.2", "dyn": "8"})]),
    ("<hypernet:h:0.6> and (x) <lora:y>", " and (x) ", [("hypernet", ("h", "0.6"), {}), ("lora", ("y",), {})]),
    ("<lora:a=b=c:1>", "", [("lora", ("a=b=c", "1"), {})]),
    ("<lora:my lora v2:0.7>", "", [("lora", ("my lora v2", "0.7"), {})]),
    ("(<lora:x:1>:1.2) [<lora:y:1>:z:3]", "(:1.2) [:z:3]",
     [("lora", ("x", "1"), {}), ("lora", ("y", "1"), {})]),
    ("plain <not a tag> <:x> <lora> a < b > c", "plain <not a tag> <:x> <lora> a < b > c", []),
]


@pytest.mark.parametrize("text,remaining,calls", EXTRA_NETWORKS)
def test_extract_extra_networks(text, remaining, calls):
    out_text, out_calls = extract_extra_networks(text)
    assert out_text == remaining
    assert [(call.kind, call.positional, call.named) for call in out_calls] == calls


def test_call_keeps_its_tag_and_name():
    _, (call,) = extract_extra_networks("x <lora:detail:0.4:unet=0.2> y")
    assert call == ExtraNetworkCall("lora", ("detail", "0.4"), {"unet": "0.2"}, "<lora:detail:0.4:unet=0.2>")
    assert call.name == "detail"
    assert hash(call) == hash(ExtraNetworkCall("lora", ("detail", "0.4"), {}, "<lora:detail:0.4:unet=0.2>"))


LORA_MULTIPLIERS = [
    ("<lora:x>", (1.0, 1.0)),
    ("<lora:x:0.5>", (0.5, 0.5)),
    ("<lora:x:0.5:0.2>", (0.5, 0.2)),
    ("<lora:x:1:2:8>", (1.0, 2.0)),
    ("<lora:x:te=0.3>", (0.3, 0.3)),
    ("<lora:x:1:unet=0>", (1.0, 0.0)),
    ("<lora:x:0.5:te=0.7>", (0.7, 0.7)),
    ("<lora:x:unet=0.4:te=0.9>", (0.9, 0.4)),
    ("<lora:x:-1>", (-1.0, -1.0)),
]


@pytest.mark.parametrize("tag,expected", LORA_MULTIPLIERS)
def test_lora_multipliers(tag, expected):
    _, (call,) = extract_extra_networks(tag)
    assert lora_multipliers(call) == expected


@pytest.mark.parametrize("tag,message", [
    ("<lora:x:abc>", "<lora:x:abc>: text-encoder weight 'abc' is not a number"),
    ("<lora:x:1:big>", "<lora:x:1:big>: UNet weight 'big' is not a number"),
    ("<lora:x:te=>", "<lora:x:te=>: text-encoder weight '' is not a number"),
    ("<lora:x:1:unet=0,5>", "<lora:x:1:unet=0,5>: UNet weight '0,5' is not a number"),
    ("<lora:x:nan>", "<lora:x:nan>: text-encoder weight 'nan' is not a finite number"),
])
def test_lora_multipliers_reject_bad_numbers_naming_the_tag(tag, message):
    _, (call,) = extract_extra_networks(tag)
    with pytest.raises(ValueError) as error:
        lora_multipliers(call)
    assert str(error.value) == message


def test_lora_multipliers_name_a_call_built_by_hand():
    call = ExtraNetworkCall("lora", ("x", "oops"), {"dyn": "4"})
    with pytest.raises(ValueError, match=r"^<lora:x:oops:dyn=4>: text-encoder weight 'oops'"):
        lora_multipliers(call)


# ---- the whole chain ------------------------------------------------------------------------------------------------

def test_parse_full_runs_the_chain_in_order():
    parsed = parse_full("a <lora:x:0.5> [cat:(dog:1.3):2] # cat first\nAND (b) BREAK c:0.7", 4)
    assert [(call.kind, call.positional) for call in parsed.extra_networks] == [("lora", ("x", "0.5"))]
    assert [(part.text, part.weight) for part in parsed.parts] == [("a  [cat:(dog:1.3):2]", 1.0),
                                                                   ("(b) BREAK c", 0.7)]
    first, second = parsed.parts
    assert [(entry.end_at_step, entry.text, entry.fragments) for entry in first.schedule] == [
        (2, "a  cat", [("a  cat", 1.0)]),
        (4, "a  (dog:1.3)", [("a  ", 1.0), ("dog", 1.3)]),
    ]
    assert [(entry.end_at_step, entry.fragments) for entry in second.schedule] == [
        (4, [("b", 1.1), ("", 1.0), (BREAK, -1.0), ("c", 1.0)]),
    ]


def test_parse_full_comment_hides_and_and_tags():
    parsed = parse_full("a photo\n# AND <lora:hidden:1>\n", 5)
    assert parsed.extra_networks == []
    assert [(part.text, part.weight) for part in parsed.parts] == [("a photo", 1.0)]
    assert parsed.parts[0].schedule == [ScheduledFragments(5, "a photo", [("a photo", 1.0)])]
