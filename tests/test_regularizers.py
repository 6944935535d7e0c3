"""regularization: each knob shown by its effect on what it targets (the weights of useless inputs, the
norms of the units, the hidden activations, the trajectory) against the same run without it, and the
step's other paths with the parts in: hand-written backprop, CUDA graphs (faked), resume."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fakegraph import fake_cuda_graphs
from mlptrain import checkpoint, pipeline, runs, tasks
from mlptrain.cli import main
from mlptrain.backprop import Backprop
from mlptrain.config import SchedulerSpec, validate_dict
from mlptrain.engine import Loop, Task, fit
from mlptrain.optim import LRSchedule
from mlptrain.regularizers import ActivationL1, WeightNoise, build
from mlptrain.state import Sums
from test_resume import _interrupted, _resume, _run, assert_same_run

# 300 blobs less 15 % validation and 15 % test: 210 training rows, 7 batches of 32 an epoch
BASE: dict[str, Any] = {
    "data": {"name": "blobs", "n_samples": 300, "n_classes": 3, "n_features": 4, "noise": 1.5, "seed": 2},
    "model": {"hidden": [32, 32]},
    "optimizer": {"name": "adam", "lr": 0.02},
    "train": {"epochs": 4, "batch_size": 32, "seed": 3, "early_stopping": {"enabled": False}},
    "logging": {"progress": "none", "tensorboard": False},
}


def _with(raw: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``raw`` with dotted keys written with ``__`` set: ``_with(BASE, regularization__l1=0.01)``."""
    out = copy.deepcopy(raw)
    for key, value in changes.items():
        *sections, leaf = key.split("__")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[leaf] = value
    return out


def _weights(outcome: pipeline.FitOutcome, name: str = "last") -> dict[str, torch.Tensor]:
    return checkpoint.load(outcome.run_dir / "checkpoints" / f"{name}.pt")["model"]


def _unit_norms(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """The norm of every unit's incoming weight vector: each row of every Linear weight."""
    return torch.cat([w.norm(dim=1) for k, w in weights.items() if k.endswith(".weight")])


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> pipeline.FitOutcome:
    """BASE without any regularization: what each part is compared against."""
    return _run(BASE, tmp_path_factory.mktemp("plain"), "plain")


# ------------------------------------------------------------------------------------------------
# Each knob's effect.


def test_l1_drives_the_first_layer_weights_of_irrelevant_inputs_to_zero(tmp_path):
    """Two informative columns and ten of noise: L1 leaves the noise columns' weights near 0, as the notes'
    "acts as feature selector" says; without it they stay of the size the data gradient gives them."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 12))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    header = ",".join([f"x{i}" for i in range(12)] + ["y"])
    (tmp_path / "d.csv").write_text("\n".join([header] + [",".join(f"{v:.5f}" for v in r) + f",{t}" for r, t in zip(x, y)]) + "\n")
    raw = {"data": {"name": "csv", "path": str(tmp_path / "d.csv"), "target": "y"}, "model": {"hidden": [16]},
           "optimizer": {"name": "adam", "lr": 0.01}, "scheduler": {"name": "cosine"},
           "train": {"epochs": 15, "batch_size": 32, "early_stopping": {"enabled": False}},
           "logging": {"progress": "none", "tensorboard": False}}
    without = _run(raw, tmp_path, "plain")
    with_l1 = _run(_with(raw, regularization__l1=0.01), tmp_path, "l1")
    w0, w1 = _weights(without)["hidden1.weight"], _weights(with_l1)["hidden1.weight"]
    near_zero = lambda w: float((w[:, 2:].abs() < 1e-3).float().mean())  # noqa: E731 - the noise columns' weights
    assert near_zero(w1) > 0.6 and near_zero(w0) < 0.05, (near_zero(w1), near_zero(w0))
    assert with_l1.metrics["test"]["accuracy"] >= 0.9  # the informative inputs keep their weights
    last = runs.read_metrics(with_l1.run_dir)[-1]  # what TensorBoard shows: the whole first layer, every epoch
    assert float(last["weights/small_fraction"]) == pytest.approx(float((w1.abs() < 1e-3).float().mean()))
    assert "weights/small_fraction" not in runs.read_metrics(without.run_dir)[-1]  # no regularization key: not logged


def test_max_norm_keeps_every_unit_within_c(tmp_path, plain):
    c = 0.5
    assert _unit_norms(_weights(plain)).max() > c  # without the constraint some units grow past c
    bounded = _run(_with(BASE, regularization__max_norm=c), tmp_path, "bounded")
    for name in ("best", "last"):
        assert _unit_norms(_weights(bounded, name)).max() <= c + 1e-6, name
    logged = [float(r["weights/max_unit_norm"]) for r in runs.read_metrics(bounded.run_dir)]
    assert len(logged) == 4 and max(logged) <= c + 1e-6
    assert bounded.summary["backprop"] == "manual"  # a constraint after the step needs no autograd


def _zero_fraction(outcome: pipeline.FitOutcome) -> float:
    """The fraction of the ReLU units' outputs that are 0 on the training rows, for the run's final weights."""
    state = checkpoint.load(outcome.run_dir / "checkpoints" / "last.pt")
    built = pipeline.build(validate_dict(state["spec"]))
    model = built.model
    model.load_state_dict(state["model"])
    model.eval()
    x = torch.from_numpy(built.prepared.train.x)
    with torch.no_grad():
        h1 = model[:2](x)  # hidden1, act1
        h2 = model[2:4](h1)  # hidden2, act2
    return float(torch.cat([h1.flatten(), h2.flatten()]).eq(0).float().mean())


def test_activation_l1_silences_more_hidden_units(tmp_path, plain):
    sparse = _run(_with(BASE, regularization__activation_l1=0.05), tmp_path, "sparse")
    before, after = _zero_fraction(plain), _zero_fraction(sparse)
    assert after > before + 0.2, (before, after)
    rows = runs.read_metrics(sparse.run_dir)
    assert all(float(r["train/penalty"]) > 0 for r in rows)


def test_l2_with_the_biases_is_sgds_weight_decay_and_without_them_spares_the_biases(tmp_path):
    """(λ/2) Σ w² has the gradient λw that SGD's weight_decay λ adds: on plain SGD the two train alike."""
    sgd = _with(BASE, optimizer={"name": "sgd", "lr": 0.1})
    decay = _run(_with(sgd, optimizer__weight_decay=0.05), tmp_path, "decay")
    l2_all = _run(_with(sgd, regularization__l2=0.05, regularization__include_bias=True), tmp_path, "l2_all")
    l2 = _run(_with(sgd, regularization__l2=0.05), tmp_path, "l2")
    wd, wa, w2 = _weights(decay), _weights(l2_all), _weights(l2)
    for k in wd:
        torch.testing.assert_close(wa[k], wd[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(w2["output.bias"], wd["output.bias"], atol=1e-4)  # l2 alone leaves the biases undecayed
    # train/loss is the data loss plus the penalty; the data loss is what weight decay's run reports as its loss
    rows, plain_rows = runs.read_metrics(l2_all.run_dir), runs.read_metrics(decay.run_dir)
    for row, other in zip(rows, plain_rows):
        loss, data, penalty = (float(row[k]) for k in ("train/loss", "train/data_loss", "train/penalty"))
        assert loss == pytest.approx(data + penalty) and penalty > 0
        assert data == pytest.approx(float(other["train/loss"]), rel=1e-4)
    assert "train/penalty" not in plain_rows[0]


@pytest.mark.parametrize("path", ["autograd", "manual", "skipped batch"])
def test_weight_noise_is_taken_off_before_the_update(path):
    """With a learning rate of almost 0 the weights end where they started, whatever the noise (σ = 1) was
    on the way: the optimizer stepped from the clean weights, under either backprop, and a batch that
    train.on_nan: skip_batch drops leaves no noise behind either."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    start = copy.deepcopy(model.state_dict())
    seen: list[torch.Tensor] = []  # the first layer's weights as each step's forward and backward saw them

    class Seen(WeightNoise):
        def before_forward(self, model: nn.Module) -> None:
            super().before_forward(model)
            seen.append(model[0].weight.detach().clone())

    def loss_fn(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.binary_cross_entropy_with_logits(z, y)
        return loss * float("nan") if path == "skipped batch" and torch.is_grad_enabled() and len(seen) % 2 else loss

    x, y = torch.randn(64, 3), torch.randint(0, 2, (64, 1)).float()
    opt = torch.optim.SGD(model.parameters(), lr=1e-12)
    loop = Loop(epochs=2, batch_size=16, early_stopping=False, monitor="train/loss", save_best=False, save_last=False,
                parts=[Seen(1.0)], on_nan="skip_batch" if path == "skipped batch" else "stop")
    manual = Backprop(model, "bce", validate_dict({"data": {"name": "xor"}}).loss) if path == "manual" else None
    result = fit(model, loss_fn, opt, LRSchedule(opt, SchedulerSpec(), 2, "min"), (x, y), None, Task("binary", 2), loop, manual=manual)
    assert len(seen) == 8 and all((w - start["0.weight"]).abs().max() > 0.1 for w in seen)  # each forward saw noise
    assert result.skipped_batches == (4 if path == "skipped batch" else 0)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, start[k], rtol=0, atol=1e-9)


def test_under_weight_noise_the_penalty_reads_the_clean_weights():
    """J(w + n) + Ω(w): the data loss sees the noisy weights, the penalty (its value and its gradient) the clean ones."""
    spec = validate_dict({"data": {"name": "moons"}, "regularization": {"l1": 0.01, "l2": 0.1, "weight_noise": 0.5}})
    parts = build(spec, ["weight_noise", "penalty"], {}, torch.device("cpu"))
    noise, penalty = parts
    assert penalty.noise is noise
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    clean = [m.weight.detach().clone() for m in (model[0], model[2])]
    noise.rng = torch.Generator().manual_seed(5)
    noise.before_forward(model)
    assert (model[0].weight - clean[0]).abs().max() > 0.1  # the forward would see noise
    term = penalty.penalty(model)
    term.backward()
    expected = sum(0.01 * w.abs().sum() + 0.05 * w.square().sum() for w in clean)
    torch.testing.assert_close(term.detach(), expected)
    for m, w in zip((model[0], model[2]), clean):
        torch.testing.assert_close(m.weight.grad, 0.01 * w.sign() + 0.1 * w)


def test_activation_hooks_keep_only_training_forwards_and_are_gone_after_fit():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("hidden1", nn.Linear(3, 8))
    model.add_module("act1", nn.ReLU())
    model.add_module("output", nn.Linear(8, 1))
    part = ActivationL1(0.1)
    part.before_forward(model)
    model.eval()
    model(torch.randn(4, 3))
    assert part.seen == []  # an evaluation pass leaves nothing for the penalty
    model.train()
    model(torch.randn(4, 3))
    assert len(part.seen) == 1
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32, 1)).float()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = Loop(epochs=1, batch_size=16, early_stopping=False, monitor="train/loss", save_best=False, save_last=False, parts=[part])
    fit(model, nn.functional.binary_cross_entropy_with_logits, opt, LRSchedule(opt, SchedulerSpec(), 1, "min"),
        (x, y), None, Task("binary", 2), loop)
    assert not any(m._forward_hooks for m in model.modules())


# ------------------------------------------------------------------------------------------------
# The step's paths with the parts in.


@pytest.mark.parametrize("key, value, backprop", [
    ("weight_noise", 0.05, "manual"), ("max_norm", 0.5, "manual"), ("l1", 0.001, "autograd"), ("activation_l1", 0.01, "autograd"),
])
def test_each_part_trains_under_backprop_auto_as_under_autograd(key, value, backprop, tmp_path, plain):
    """Weight noise and max-norm run with the hand-written backward pass (which reads the noisy weights
    in layer.weight, as autograd does); a loss term needs autograd, and auto says so in summary.json."""
    raw = _with(BASE, **{f"regularization__{key}": value})
    auto = _run(raw, tmp_path, "auto")
    grad = _run(_with(raw, train__backprop="autograd"), tmp_path, "autograd")
    assert auto.summary["backprop"] == backprop and grad.summary["backprop"] == "autograd"
    assert grad.summary["backprop_why"] == "train.backprop: autograd"
    wa, wg, wp = _weights(auto), _weights(grad), _weights(plain)
    if backprop == "manual":
        assert auto.summary["backprop_why"] is None
        for k in wg:
            torch.testing.assert_close(wa[k], wg[k], rtol=1e-4, atol=1e-5)
    else:
        part = "penalty" if key == "l1" else key
        assert auto.summary["backprop_why"] == f"manual backprop does not cover {part} (it needs autograd)"
        assert all(torch.equal(wa[k], wg[k]) for k in wg)
    assert not all(torch.allclose(wa[k], wp[k], atol=1e-4) for k in wp)  # and the part changed the trajectory


ALL_PARTS = _with(BASE, model__hidden=[16, 16], optimizer__lr=0.01, train__epochs=3, logging__step_every=3, logging__tensorboard=True,
                  regularization={"l1": 0.001, "l2": 0.001, "activation_l1": 0.001, "max_norm": 1.0, "weight_noise": 0.05})


@pytest.mark.parametrize("stop", [10, 14], ids=["mid-epoch", "at-an-epoch-end"])
def test_a_run_with_every_part_stopped_and_resumed_is_bit_identical(stop, tmp_path):
    """The weight noise's stream (and the epoch's penalty sum, mid-epoch) come back from last.pt."""
    whole = _run(ALL_PARTS, tmp_path, "whole")
    path = _interrupted(ALL_PARTS, tmp_path, "stopped", stop)
    state = checkpoint.load(path / "checkpoints" / "last.pt")
    assert "weight_noise" in state["resume"]["rng"]["generators"]
    resumed = _resume(path)
    assert_same_run(whole.run_dir, path, whole, resumed)


def test_a_last_pt_from_before_the_penalty_sum_resumes_with_none():
    sums = Sums(torch.device("cpu"), 4)
    sums.penalty.fill_(3.0)
    old = sums.state_dict(0.0)
    del old["penalty"]
    sums.load_state_dict(old)
    assert float(sums.penalty) == 0.0


def test_penalties_and_max_norm_run_inside_the_cuda_graph_and_weight_noise_steps_it_aside(tmp_path):
    raw = _with(BASE, train__cuda_graph=True, regularization={"l1": 0.001, "activation_l1": 0.01, "max_norm": 0.5})
    eager = _run(raw, tmp_path, "eager")
    with fake_cuda_graphs() as records:
        graphed = _run(raw, tmp_path, "graphed")
    assert graphed.summary["cuda_graph"] == "on" and records
    we, wg = _weights(eager), _weights(graphed)
    assert all(torch.allclose(we[k], wg[k], atol=1e-6) for k in we)
    pe, pg = (float(runs.read_metrics(o.run_dir)[-1]["train/penalty"]) for o in (eager, graphed))
    assert pg == pytest.approx(pe, rel=1e-5)  # the graph added into the epoch's penalty sum too
    with fake_cuda_graphs():
        noisy = _run(_with(raw, regularization__weight_noise=0.05), tmp_path, "noisy")
    assert noisy.summary["cuda_graph"] == "off: weight_noise"


def test_what_the_regularizers_log_is_what_validate_lists_and_early_stopping_may_watch(tmp_path, write_config, capsys):
    """train/data_loss, train/penalty and the weights' statistics are metrics like the others: listed by
    validate in metrics.csv's order, and a monitor may name them."""
    raw = _with(BASE, regularization__l2=0.01, regularization__max_norm=2.0,
                train__early_stopping={"monitor": "train/data_loss", "patience": 50})
    outcome = _run(raw, tmp_path, "watched")
    columns = list(runs.read_metrics(outcome.run_dir)[0])
    listed = tasks.logged_names("multiclass", True, validate_dict(raw).regularization)
    assert listed == [c for c in columns if c in listed] and {"train/data_loss", "weights/max_unit_norm"} <= set(listed)
    assert set(columns) - set(listed) == {"epoch", "epoch_seconds"}, set(columns) - set(listed)
    assert "train/penalty" not in tasks.logged_names("multiclass", True, validate_dict(_with(BASE, regularization__max_norm=2.0)).regularization)
    assert main(["validate", str(write_config("data: {name: moons}\nregularization: {activation_l1: 0.01}\n"
                                              "train: {early_stopping: {monitor: train/penalty}}\n"))]) == 0
    assert "train/penalty" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# validate.


def test_validate_names_the_parts_in_step_order_and_the_backprop_they_leave(write_config, capsys):
    cfg = write_config("data: {name: moons}\ntrain: {cuda_graph: true}\n"
                       "regularization: {max_norm: 3, weight_noise: 0.1, l2: 0.01, activation_l1: 0.001}\n")
    assert main(["validate", str(cfg)]) == 0
    assert ("step: parts weight_noise, penalty, activation_l1, max_norm; backprop autograd (manual backprop does not "
            "cover penalty (it needs autograd)); cuda graph off: weight_noise") in capsys.readouterr().out
    assert main(["validate", str(write_config("data: {name: moons}\ntrain: {cuda_graph: true}\nregularization: {max_norm: 3}\n"))]) == 0
    assert "step: parts max_norm; backprop manual; cuda graph on CUDA" in capsys.readouterr().out


def test_include_bias_without_a_penalty_is_refused_in_one_line(write_config, capsys):
    cfg = write_config("data: {name: moons}\nregularization: {include_bias: true, max_norm: 3}\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("regularization.include_bias = true changes nothing with regularization.l1 and l2 = 0 "
                              "(it adds the biases to their penalties): remove it, or set regularization.l1 or l2") in err[0], err
    penalized = write_config("data: {name: moons}\nregularization: {include_bias: true, l1: 0.01}\n")
    assert main(["validate", str(penalized)]) == 0
    capsys.readouterr()
    # the run without the penalty, for comparison, is one --set away: a warning, not a refusal
    assert main(["validate", str(penalized), "--set", "regularization.l1=0"]) == 0
    assert "regularization.include_bias = true is ignored with regularization.l1 and l2 = 0 from --set" in capsys.readouterr().err


def test_activation_l1_without_hidden_layers_is_refused_as_a_key_that_changes_nothing(write_config, capsys):
    cfg = write_config("data: {name: moons}\nmodel: {hidden: []}\nregularization: {activation_l1: 0.01}\n")
    assert main(["validate", str(cfg)]) == 2
    assert ("regularization.activation_l1 = 0.01 changes nothing with model.hidden = [] (only hidden layers read it): "
            "remove it, or give model.hidden some layers") in capsys.readouterr().err


def test_a_regularization_key_misspelt_is_refused_naming_the_one_meant(write_config, capsys):
    assert main(["validate", str(write_config("data: {name: moons}\nregularization: {max_nrom: 3}\n"))]) == 2
    assert "unknown key 'regularization.max_nrom'; did you mean 'max_norm'?" in capsys.readouterr().err
