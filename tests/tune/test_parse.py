"""One rule set for every `--set KEY=VALUE` (probe, tune, pretrain, tune --space choices)."""

from __future__ import annotations

import pytest

from probekit.cli._parse import parse_set, split_set
from probekit.errors import ConfigError
from probekit.tune.space import parse_space_override, resolve_space


@pytest.mark.parametrize(("text", "like", "value"), [
    ("3", None, 3), ("3.5", None, 3.5), ("True", None, True), ("null", None, None), ("mean", None, "mean"),
    ("mean,max", None, ("mean", "max")), ("[1, 2.5, true]", None, (1, 2.5, True)),
    ("yes", False, True), ("off", True, False), ("2e3", 2000, 2000), ("1", 0.5, 1.0), ("none", 3, None),
    ("0.9,0.99", (0.9, 0.999), (0.9, 0.99)), ("[0.8, 0.9]", (0.9, 0.999), (0.8, 0.9)), ("3", "x", "3"),
])
def test_values(text, like, value):
    got = parse_set(text, like)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("text", "like", "says"), [
    ("abc", 1e-3, "not a number"), ("1.5", 2000, "not an integer"), ("maybe", True, "not a boolean"),
])
def test_values_that_do_not_fit_are_named(text, like, says):
    with pytest.raises(ConfigError, match=f"--set lr={text}: {says}"):
        parse_set(text, like, name="lr")


def test_split_set():
    assert split_set(" steps = 20 ") == ("steps", "20")
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        split_set("steps")
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        split_set("=3")


def test_space_choices_follow_the_same_rules_and_the_parameter_type():
    assert parse_space_override("pooling=mean,max")[1].choices == ("mean", "max")
    assert parse_space_override("batch_size=32,64", 48)[1].choices == (32, 64)
    space = resolve_space({}, {"lr": "0.001"})
    assert space["lr"].choices == (0.001,)
    with pytest.raises(ConfigError, match="--space lr=abc: not a number"):
        resolve_space({}, {"lr": "abc"})
    with pytest.raises(ConfigError, match="'abc' is not a number"):
        resolve_space({}, {"lr": parse_space_override("lr=abc")[1]})
