"""Config validation: typos and bad values are one ConfigError naming the key path."""

from __future__ import annotations

import pytest

from mlptrain.config import apply_overrides, load_spec, validate_dict
from mlptrain.errors import ConfigError


def test_minimal_spec_gets_defaults(write_config):
    spec = load_spec(write_config("data: {name: moons}\n"))
    assert spec.model.hidden == [64]
    assert spec.optimizer.name == "adam"
    assert spec.name == "cfg"


def test_misspelled_section_suggests_the_right_key():
    with pytest.raises(ConfigError) as exc:
        validate_dict({"data": {"name": "moons"}, "optimzer": {"lr": 0.1}})
    assert "optimzer" in str(exc.value) and "did you mean 'optimizer'" in str(exc.value)


def test_bad_value_names_path_and_value():
    with pytest.raises(ConfigError) as exc:
        validate_dict({"data": {"name": "moons"}, "optimizer": {"lr": "fast"}})
    assert "optimizer.lr" in str(exc.value) and "'fast'" in str(exc.value)


def test_overrides_parse_yaml_values(write_config):
    spec = load_spec(write_config("data: {name: moons}\nloss: hinge\n"), ["model.hidden=[8, 8]", "loss.margin=2", "optimizer.lr=0.5"])
    assert spec.model.hidden == [8, 8]
    assert spec.loss.name == "hinge" and spec.loss.margin == 2.0
    assert spec.optimizer.lr == 0.5


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="train.epochs"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])
