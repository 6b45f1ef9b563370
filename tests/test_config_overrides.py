"""`--set key=value` parsing (cppo.config.parse_override): dotted keys, quoted key parts for names that
contain a dot (the paper's `1.7b` scales), and one clear error per malformed override."""

from __future__ import annotations

import pytest

from cppo.config import ConfigError, apply_overrides, parse_override


@pytest.mark.parametrize("item, parts, value", [
    ("rl.lr=3e-4", ["rl", "lr"], 3e-4),
    ("rl.steps=5", ["rl", "steps"], 5),
    ('scales."1.7b".rl.steps=5', ["scales", "1.7b", "rl", "steps"], 5),
    ("scales.'1.7b-base'.hub=Qwen/Qwen3-1.7B-Base", ["scales", "1.7b-base", "hub"], "Qwen/Qwen3-1.7B-Base"),
    ('scales."a=b"=1', ["scales", "a=b"], 1),           # `=` inside quotes is part of the name
    ('"rl".lr=0.5', ["rl", "lr"], 0.5),                  # quoting a plain part changes nothing
    ('methods.cppo.note="x.y"', ["methods", "cppo", "note"], "x.y"),  # quotes in the value are YAML's
    ("rl.grad_clip=", ["rl", "grad_clip"], None),
])
def test_parse_override(item, parts, value):
    assert parse_override(item) == (parts, value)


def test_quoted_scale_reaches_the_dotted_scale():
    raw = {"scales": {"1.7b": {"rl": {"steps": 1120}}, "8b-base": {"rl": {"steps": 490}}}}
    out = apply_overrides(raw, ['scales."1.7b".rl.steps=5'])
    assert out["scales"]["1.7b"]["rl"]["steps"] == 5 and out["scales"]["8b-base"]["rl"]["steps"] == 490
    # unquoted, the dot splits the name: a new, wrong key path (the reason quoting exists)
    assert apply_overrides(raw, ["scales.1.7b.rl.steps=5"])["scales"]["1"]["7b"]["rl"]["steps"] == 5


@pytest.mark.parametrize("item, message", [
    ('scales."1.7b.rl.steps=5', r"^--set .*: unterminated quote \" in the key$"),
    ("scales.'1.7b.rl.steps=5", r"^--set .*: unterminated quote ' in the key$"),
    ('scales."1.7b"rl=5', r"quoted key part must be followed by '\.' or '='"),
    ('scales.a"b".rl=5', r"a quote may only enclose a whole key part"),
    ("rl..lr=1", r"^--set: bad key 'rl\.\.lr' \(empty part\)$"),
    ('scales."".rl=1', r"bad key .*\(empty part\)"),
    ("rl.lr", r"^--set expects key=value, got 'rl\.lr'$"),
])
def test_malformed_override_is_one_clear_error(item, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_override(item)
    assert "\n" not in str(info.value)
