"""Config validation: typos and bad values are one ConfigError naming the key path."""

from __future__ import annotations

import re

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


def test_set_section_to_a_name_switches_the_name_and_keeps_what_it_still_reads(write_config):
    path = write_config("data: {name: moons}\noptimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.001}\n"
                        "model: {activation: {name: leaky_relu, slope: 0.2}}\n")
    spec = load_spec(path, ["optimizer=adamw", "model.activation=elu"])
    assert spec.optimizer.name == "adamw" and spec.optimizer.lr == 0.05 and spec.optimizer.weight_decay == 0.001
    assert spec.model.activation.name == "elu"
    assert load_spec(path, ["optimizer=rmsprop"]).optimizer.momentum == 0.9  # rmsprop reads momentum too
    whole = load_spec(path, ["optimizer={name: adamw}"]).optimizer  # a mapping replaces the section
    assert whole.name == "adamw" and whole.lr == 0.001 and whole.weight_decay != 0.001


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


@pytest.mark.parametrize("yaml_text, message", [
    ("optimizer: {name: adam, momentum: 0.9}", "optimizer.momentum = 0.9 changes nothing with optimizer.name 'adam' (only sgd, rmsprop read it)"),
    ("optimizer: {name: sgd, betas: [0.8, 0.9]}", "optimizer.betas = (0.8, 0.9) changes nothing with optimizer.name 'sgd'"),
    ("optimizer: {name: sgd, eps: 1.0e-6}", "optimizer.eps = 1e-06 changes nothing with optimizer.name 'sgd'"),
    ("optimizer: {name: adam, alpha: 0.5}", "optimizer.alpha = 0.5 changes nothing"),
    ("optimizer: {name: adam, rho: 0.5}", "optimizer.rho = 0.5 changes nothing"),
    ("scheduler: {name: step, min_lr: 0.001}", "scheduler.min_lr = 0.001 changes nothing with scheduler.name 'step' (only cosine, reduce_on_plateau"),
    ("scheduler: {name: none, gamma: 0.5}", "scheduler.gamma = 0.5 changes nothing with scheduler.name 'none'"),
    ("scheduler: {name: exponential, t_max: 5}", "scheduler.t_max = 5 changes nothing"),
    ("scheduler: {name: cosine, monitor: train/loss}", "scheduler.monitor = 'train/loss' changes nothing"),
    ("scheduler: {name: step, milestones: [3]}", "scheduler.milestones = [3] changes nothing"),
    ("scheduler: {name: multistep, step_size: 3}", "scheduler.step_size = 3 changes nothing"),
    ("scheduler: {name: cosine, factor: 0.5, patience: 2}", "scheduler.factor = 0.5 changes nothing"),
    ("model: {activation: {name: relu, slope: 0.2}}", "model.activation.slope = 0.2 changes nothing with model.activation.name 'relu' (only leaky_relu, prelu read it)"),
    ("model: {hidden: [4, 4], activation: [relu, {name: tanh, alpha: 2}]}", "model.activation[1].alpha = 2.0 changes nothing with model.activation[1].name 'tanh'"),
    ("model: {activation: {name: elu, k: 3}}", "model.activation.k = 3 changes nothing"),
    ("model: {activation: {name: relu, beta: 2}}", "model.activation.beta = 2.0 changes nothing"),
    ("model: {init: {name: xavier_uniform, std: 0.5}}", "model.init.std = 0.5 changes nothing with model.init.name 'xavier_uniform' (only normal reads it)"),
    ("model: {init: {name: normal, a: 0.5}}", "model.init.a = 0.5 changes nothing"),
    ("model: {init: {name: kaiming_uniform, gain: 2}}", "model.init.gain = 2.0 changes nothing"),
    ("model: {init: {bias: 0.1}}", "model.init.bias = 0.1 changes nothing with model.init.name 'default'"),
    ("loss: {name: bce, delta: 2}", "loss.delta = 2.0 changes nothing with loss.name 'bce' (only huber, smooth_l1 read it)"),
    ("loss: {name: mse, margin: 2}", "loss.margin = 2.0 changes nothing"),
    ("loss: {name: nll, label_smoothing: 0.1}", "loss.label_smoothing = 0.1 changes nothing with loss.name 'nll'"),
    ("data: {name: digits, n_samples: 50}", "data.n_samples = 50 changes nothing with data.name 'digits' (only xor, moons"),
    ("data: {name: iris, noise: 0.5}", "data.noise = 0.5 changes nothing"),
    ("data: {name: moons, n_classes: 4}", "data.n_classes = 4 changes nothing with data.name 'moons' (only blobs, spirals read it)"),
    ("data: {name: spirals, n_features: 4}", "data.n_features = 4 changes nothing"),
    ("data: {name: wine, seed: 3}", "data.seed = 3 changes nothing"),
    ("train: {early_stopping: {enabled: false, patience: 3}}", "train.early_stopping.patience = 3 changes nothing with "
     "train.early_stopping.enabled: false (only enabled: true reads it): remove it, or set train.early_stopping.enabled: true"),
    ("logging: {tensorboard: false, histograms_every: 5}", "logging.histograms_every = 5 changes nothing with "
     "logging.tensorboard: false (only tensorboard: true reads it)"),
])
def test_a_key_its_choice_does_not_read_is_refused_naming_what_reads_it(write_config, yaml_text, message):
    text = yaml_text if yaml_text.startswith("data:") else "data: {name: moons}\n" + yaml_text
    with pytest.raises(ConfigError) as exc:
        load_spec(write_config(text + "\n"))
    assert message in str(exc.value)
    assert re.search(r"\(only [^()]+ (reads|read) it\): remove it, or (pick one of those|set [\w.\[\]]+: \w+)$", str(exc.value))


def test_fill_value_needs_impute_constant(write_config, tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n1,0\n2,1\n")
    base = f"data: {{name: csv, path: {tmp_path / 't.csv'}, target: y, fill_value: 5"
    with pytest.raises(ConfigError, match=r"data.fill_value = 5.0 changes nothing with data.missing 'impute_median' \(only impute_constant"):
        load_spec(write_config(base + ", missing: impute_median}\n"))
    assert load_spec(write_config(base + ", missing: impute_constant}\n")).data.fill_value == 5.0


def test_keys_at_their_defaults_or_read_by_the_choice_pass(write_config):
    # a resolved config.yaml lists every key at its value: the defaults of unread keys must pass
    spec = load_spec(write_config(
        "data: {name: blobs, n_classes: 4, n_features: 3, noise: 0.2}\n"
        "optimizer: {name: adam, momentum: 0.0, betas: [0.8, 0.99], eps: 1.0e-7}\n"
        "scheduler: {name: cosine, t_max: 5, min_lr: 0.0001, gamma: 0.1}\n"
        "model: {activation: {name: leaky_relu, slope: 0.2}, init: {name: normal, std: 0.1, bias: 0.1}}\n"
        "loss: {name: huber, delta: 2}\n"
    ))
    assert spec.optimizer.betas == (0.8, 0.99) and spec.loss.delta == 2.0
    assert load_spec(write_config("data: {name: moons}\noptimizer: {name: rmsprop, momentum: 0.9, alpha: 0.9, eps: 1.0e-6}\n"))


def test_a_key_a_set_made_inert_is_one_warning_but_a_key_a_file_or_set_writes_in_vain_is_refused(write_config):
    """A switch on top of a file (``--set optimizer.name=sgd`` under its adam betas) warns; a --set or a
    file that writes a key its own choice does not read is a mistake in what was written. (This test
    asserted a refusal for the switch before: the switch is now a warning.)"""
    import warnings

    path = write_config("data: {name: moons}\noptimizer: {name: adam, betas: [0.8, 0.99]}\n"
                        "train: {early_stopping: {patience: 4}}\nlogging: {histograms_every: 5}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = load_spec(path, ["optimizer.name=sgd", "train.early_stopping.enabled=false", "logging.tensorboard=false"])
    assert spec.optimizer.name == "sgd" and not spec.train.early_stopping.enabled and not spec.logging.tensorboard
    assert [str(w.message) for w in caught] == [f"{path}: {m}" for m in (
        "optimizer.betas = (0.8, 0.99) is ignored with optimizer.name 'sgd' from --set (only adam, adamw, nadam read it)",
        "train.early_stopping.patience = 4 is ignored with train.early_stopping.enabled: false from --set (only enabled: true reads it)",
        "logging.histograms_every = 5 is ignored with logging.tensorboard: false from --set (only tensorboard: true reads it)",
    )]
    with pytest.raises(ConfigError, match=r"optimizer.momentum = 0.9 changes nothing with optimizer.name 'adam'"):
        load_spec(path, ["optimizer.momentum=0.9"])  # the --set writes the inert key itself
    with pytest.raises(ConfigError, match=r"optimizer.betas = \(0.5, 0.5\) changes nothing with optimizer.name 'sgd'"):
        load_spec(path, ["optimizer={name: sgd, betas: [0.5, 0.5]}"])  # the --set writes both
    contradicts = write_config("data: {name: moons}\ntrain: {early_stopping: {enabled: false, patience: 4}}\n", "self.yaml")
    with pytest.raises(ConfigError, match=r"train.early_stopping.patience = 4 changes nothing"):
        load_spec(contradicts, ["train.early_stopping.enabled=false"])  # the file contradicted itself already
    never = write_config("data: {name: moons}\nlogging: {tensorboard: false, histograms_every: 0}\n", "never.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 means never: it agrees with tensorboard off, in a file or by --set
        assert load_spec(never).logging.histograms_every == 0
        assert load_spec(write_config("data: {name: moons}\nlogging: {histograms_every: 0}\n", "n2.yaml"), ["logging.tensorboard=false"])


def test_yes_no_on_off_are_strings_as_in_yaml_1_2_and_boolean_keys_still_take_them(write_config, tmp_path, capsys):
    """YAML 1.1 read yes/no/on/off as booleans: a class `yes` became True ("unknown classes ('True')"),
    a column named `on` or `yes` a bool that no column matched. Only true/false are booleans now."""
    from mlptrain.cli import main

    rows = "".join(f"{i / 10},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(200))
    (tmp_path / "f.csv").write_text("x,yes,on\n" + rows)
    cfg = write_config(f"data: {{name: csv, path: {tmp_path / 'f.csv'}, target: on, categorical: [yes]}}\n"
                       "loss: {class_weight: {yes: 2.0, no: 1}}\ntrain: {shuffle: no, drop_last: On}\n")
    spec = load_spec(cfg)
    assert spec.data.target == "on" and spec.data.categorical == ["yes"] and spec.loss.class_weight == {"yes": 2.0, "no": 1.0}
    assert spec.train.shuffle is False and spec.train.drop_last is True  # boolean keys read yes/no/on/off as before
    assert main(["validate", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"│ yes +│ feature +│ \w+ +│ categorical", printed), printed
    assert main(["validate", str(cfg), "--set", "data.target=on", "--set", "data.categorical=[yes]"]) == 0
    assert load_spec(cfg, ["train.shuffle=off", "loss.class_weight={on: 3}"]).loss.class_weight == {"on": 3.0}
    assert load_spec(cfg, ["train.shuffle=TRUE"]).train.shuffle is True
    with pytest.raises(ConfigError, match=r"train.shuffle = 'maybe'"):
        load_spec(cfg, ["train.shuffle=maybe"])


def test_set_addresses_list_items_by_index(write_config):
    path = write_config("data: {name: moons}\nmodel:\n  hidden: [64, 64]\n  activation: [relu, {name: leaky_relu, slope: 0.1}]\n")
    spec = load_spec(path, ["model.hidden.0=512", "model.activation.1.slope=0.2", "model.activation.0=elu"])
    assert spec.model.hidden == [512, 64]
    assert [(a.name, a.slope) for a in spec.model.activation] == [("elu", 0.01), ("leaky_relu", 0.2)]
    # a list the file leaves out starts from its default: hidden [64], betas (0.9, 0.999)
    spec = load_spec(write_config("data: {name: moons}\n", "bare.yaml"), ["model.hidden.0=8", "optimizer.betas.1=0.99"])
    assert spec.model.hidden == [8] and spec.optimizer.betas == (0.9, 0.99)
    with pytest.raises(ConfigError, match=r"^--set 'model.hidden.2=8': 'model.hidden' has 2 items \(indexes 0 to 1\): there "
                                          r"is no item 2; set the whole list instead: --set model.hidden=\[...\]$"):
        load_spec(path, ["model.hidden.2=8"])
    with pytest.raises(ConfigError, match=r"'model.activation' has 2 items .*no item 7"):
        load_spec(path, ["model.activation.7.slope=0.2"])
    with pytest.raises(ConfigError, match=r"'model.hidden' is a list of 2 items; name an item by its index, model.hidden.0 "
                                          r"to model.hidden.1, not '-1'"):
        load_spec(path, ["model.hidden.-1=8"])
