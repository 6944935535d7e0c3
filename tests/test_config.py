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



@pytest.mark.parametrize("key", ["Data", "Optimizer", "A"])
def test_a_capitalized_key_is_an_unknown_key_not_a_crash(key):
    # the key path used to drop capitalized parts as pydantic union markers, then index an empty tuple
    with pytest.raises(ConfigError, match=rf"unknown key '{key}'"):
        validate_dict({"data": {"name": "moons"}, key: {}})
    with pytest.raises(ConfigError, match=r"unknown key 'model\.activation\.Slope'; did you mean 'slope'\?"):
        validate_dict({"data": {"name": "moons"}, "model": {"activation": {"name": "relu", "Slope": 1}}})


def test_union_branches_are_one_entry_per_key_and_name_the_key_not_the_branch():
    with pytest.raises(ConfigError) as exc:
        validate_dict({"data": {"name": "moons"}, "train": {"batch_size": "many"}})
    assert str(exc.value) == (
        "config: train.batch_size = 'many': Input should be a valid integer, unable to parse string as an integer, "
        "or Input should be 'full'"
    )
    with pytest.raises(ConfigError, match=r"^config: the top level: key None is not a name"):
        validate_dict({"data": {"name": "moons"}, None: 1})


def test_keys_and_values_with_line_breaks_are_escaped_so_the_error_stays_one_line():
    with pytest.raises(ConfigError) as exc:
        validate_dict({"data": {"name": "moons"}, "model": {"hid\nden": [4], "dropout": "a\x1eb" * 50}})
    message = str(exc.value)
    assert message == " ".join(message.splitlines()) and r"unknown key 'model.hid\nden'" in message
    assert "model.dropout = 'a\\x1eba" in message and "(302 characters)" in message
    with pytest.raises(ConfigError, match=r"^--set '\\n=1': empty key part in '\\n'"):
        apply_overrides({}, ["\n=1"])


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "{a: " * 2000 + "1" + "}" * 2000])
def test_deeply_nested_yaml_is_a_config_error_not_a_recursion_error(text, tmp_path):
    from mlptrain.config import read_yaml

    path = tmp_path / "deep.yaml"
    path.write_text("data: " + text + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: nested too deeply"):
        read_yaml(path)
    with pytest.raises(ConfigError, match=r"--set 'model\.hidden=[\[{].*: the value is nested too deeply"):
        apply_overrides({"data": {"name": "moons"}}, ["model.hidden=" + text])


@pytest.mark.parametrize("text, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf")])
@pytest.mark.parametrize("key", ["optimizer.lr", "data.noise", "model.init.bias", "data.fill_value", "train.grad_clip"])
def test_nan_and_infinite_numbers_are_refused_everywhere(key, text, shown):
    import re

    raw = apply_overrides({"data": {"name": "csv", "path": "d.csv", "target": "y"}}, [f"{key}={text}"])  # YAML floats
    with pytest.raises(ConfigError, match=re.escape(f"{key} = {shown}: Input should be a finite number")):
        validate_dict(raw)


@pytest.mark.parametrize("text", ["!!float", "!!int", "!!float ''"])
def test_a_tagged_value_pyyaml_cannot_build_is_one_config_error(text, tmp_path):
    """Found by the fuzzer: PyYAML raises IndexError/ValueError, not YAMLError, on an empty `!!float`."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{name: xor}}\ntrain: {{grad_clip: {text}}}\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_spec(cfg)
    with pytest.raises(ConfigError, match="data.fill_value"):  # as --set: the text itself, then refused as a number
        validate_dict(apply_overrides({"data": {"name": "xor"}}, [f"data.fill_value={text}"]))
