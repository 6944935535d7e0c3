"""The training loop (engine.fit) and a whole run (pipeline.train): learning, early stopping,
determinism, batching, clipping, run-directory files, TensorBoard events and checkpoints."""

from __future__ import annotations

import functools

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from mlptrain import checkpoint, pipeline, runs
from mlptrain.config import ModelSpec, SchedulerSpec, spec_to_dict, validate_dict
from mlptrain.engine import Loop, Task, fit
from mlptrain.errors import CheckpointError, RunDirError
from mlptrain.model import build_model, count_parameters
from mlptrain.optim import LRSchedule
from mlptrain.state import HistoryTable, unpack_history

BINARY = Task("binary", 2)
XOR_X = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
XOR_Y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])


class RecordingSGD(torch.optim.SGD):
    """SGD that records, at every step, the global gradient norm it is about to apply."""

    def __init__(self, params, lr: float):
        super().__init__(params, lr=lr)
        self.norms: list[float] = []

    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return super().step(closure)


def loop(**kw: Any) -> Loop:
    base: dict[str, Any] = dict(
        epochs=10, batch_size=None, early_stopping=False, monitor="train/loss", mode="min", step_every=1,
        save_best=False, save_last=False,
    )
    base.update(kw)
    return Loop(**base)


def run_fit(model, train, val=None, *, opt=None, lr=0.1, loss=F.binary_cross_entropy_with_logits, task=BINARY,
            run=None, **kw):
    opt = opt if opt is not None else torch.optim.SGD(model.parameters(), lr=lr)
    lp = loop(**kw)
    schedule = LRSchedule(opt, SchedulerSpec(), lp.epochs, lp.mode)
    return fit(model, loss, opt, schedule, train, val, task, lp, run)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x) > 0).float() == y).float().mean())


def keras_early_stopping(values: list[float], mode: str, patience: int, min_delta: float) -> tuple[int, int]:
    """Reference: (best epoch, last epoch run) under Keras' EarlyStopping rules."""
    best = math.inf if mode == "min" else -math.inf
    best_epoch, wait = 0, 0
    for epoch, v in enumerate(values, start=1):
        if (v < best - min_delta) if mode == "min" else (v > best + min_delta):
            best, best_epoch, wait = v, epoch, 0
        else:
            wait += 1
            if wait >= max(1, patience):
                return best_epoch, epoch
    return best_epoch, len(values)


# ------------------------------------------------------------------------------------------
# Learning XOR


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("seed", [0, 1])
def test_one_hidden_layer_learns_xor(activation, seed):
    torch.manual_seed(seed)
    model = build_model(ModelSpec(hidden=[4], activation=activation), 2, 1)
    res = run_fit(model, (XOR_X, XOR_Y), opt=torch.optim.Adam(model.parameters(), lr=0.05), epochs=400)
    assert accuracy(model, XOR_X, XOR_Y) == 1.0
    assert res.history[-1]["train/loss"] < 0.1
    assert res.epochs_run == 400 and not res.stopped_early


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_model_cannot_exceed_three_quarters_on_xor(seed):
    torch.manual_seed(seed)
    model = build_model(ModelSpec(hidden=[]), 2, 1)
    res = run_fit(model, (XOR_X, XOR_Y), opt=torch.optim.Adam(model.parameters(), lr=0.05), epochs=300)
    assert max(h["train/accuracy"] for h in res.history) <= 0.75
    assert accuracy(model, XOR_X, XOR_Y) <= 0.75
    assert res.history[-1]["train/loss"] > 0.6  # stuck near log 2


def _spec(tmp_path: Path, **sections: Any):
    raw: dict[str, Any] = {
        "name": "t",
        "data": {"name": "moons", "n_samples": 120},
        "model": {"hidden": [8]},
        "train": {"epochs": 4, "batch_size": 32, "device": "cpu"},
        "logging": {"tensorboard": False, "progress": "none", "runs_dir": str(tmp_path / "runs")},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return validate_dict(raw)


def _train(spec, tmp_path: Path, name: str = "run") -> pipeline.FitOutcome:
    run_dir = pipeline.start_run(spec, None, tmp_path / name)
    return pipeline.train(spec, run_dir, "cpu")


def test_pipeline_learns_the_xor_set_and_a_linear_net_does_not(tmp_path):
    common = dict(
        data={"name": "xor", "n_samples": 200, "noise": 0.1},
        optimizer={"name": "adam", "lr": 0.05},
        train={"epochs": 150, "batch_size": "full", "early_stopping": {"enabled": False},
               "checkpoint": {"save_best": False, "save_last": False}},
    )
    deep = _train(_spec(tmp_path, model={"hidden": [4], "activation": "tanh"}, **common), tmp_path, "deep")
    assert deep.metrics["train"]["accuracy"] == 1.0
    assert deep.metrics["test"]["accuracy"] == 1.0
    flat = _train(_spec(tmp_path, model={"hidden": []}, **common), tmp_path, "flat")
    assert flat.metrics["train"]["accuracy"] <= 0.85
    assert flat.metrics["test"]["accuracy"] < 0.9


# ------------------------------------------------------------------------------------------
# Early stopping
#
# A one-weight logistic model z = w x on train {(+1, 1), (-1, 0)} (separable: w grows every epoch)
# and a validation set where p(y=1 | x=+1) = 3/4, so val loss falls until w = log 3 and rises after.

ES_TRAIN = (torch.tensor([[1.0], [-1.0]]), torch.tensor([[1.0], [0.0]]))
ES_VAL = (
    torch.tensor([[1.0]] * 4 + [[-1.0]] * 4),
    torch.tensor([[1.0], [1.0], [1.0], [0.0], [0.0], [0.0], [0.0], [1.0]]),
)


def one_weight_model() -> nn.Sequential:
    model = build_model(ModelSpec(hidden=[]), 1, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def val_loss(model: nn.Module) -> float:
    with torch.no_grad():
        return float(F.binary_cross_entropy_with_logits(model(ES_VAL[0]), ES_VAL[1]))


def test_val_loss_curve_has_an_interior_minimum():
    res = run_fit(one_weight_model(), ES_TRAIN, ES_VAL, lr=0.5, epochs=12, monitor="val/loss")
    losses = [h["val/loss"] for h in res.history]
    best = losses.index(min(losses))
    assert 0 < best < 8
    assert all(a > b for a, b in zip(losses[:best], losses[1 : best + 1]))  # falls ...
    assert all(a < b for a, b in zip(losses[best:], losses[best + 1 :]))  # ... then rises


@pytest.mark.parametrize("patience", [0, 1, 3])
def test_early_stopping_after_exactly_patience_bad_epochs(patience):
    res = run_fit(one_weight_model(), ES_TRAIN, ES_VAL, lr=0.5, epochs=50, monitor="val/loss",
                  early_stopping=True, patience=patience)
    losses = [h["val/loss"] for h in res.history]
    assert res.stopped_early
    assert res.epochs_run == len(res.history) < 50
    assert res.best_epoch > 1
    assert res.epochs_run == res.best_epoch + max(1, patience)
    assert res.best_value == min(losses) == losses[res.best_epoch - 1]
    assert (res.best_epoch, res.epochs_run) == keras_early_stopping(losses, "min", patience, 0.0)


def test_no_early_stopping_runs_every_epoch():
    res = run_fit(one_weight_model(), ES_TRAIN, ES_VAL, lr=0.5, epochs=20, monitor="val/loss",
                  early_stopping=False, patience=1)
    assert res.epochs_run == 20 and not res.stopped_early
    assert res.best_epoch < 20  # the best epoch is still tracked


def _fit_with_run(tmp_path: Path, restore: bool):
    run_dir = runs.create_run_dir(tmp_path, "es", tmp_path / f"run-{restore}")
    run = runs.Run(run_dir, False, checkpoint.write)
    model = one_weight_model()
    res = run_fit(model, ES_TRAIN, ES_VAL, lr=0.5, epochs=50, monitor="val/loss", early_stopping=True, patience=3,
                  restore_best_weights=restore, save_best=True, save_last=True, run=run)
    run.close()
    best = checkpoint.load(run_dir / "checkpoints" / "best.pt")
    last = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    return model, res, best, last


def test_restore_best_weights_ends_with_the_best_epoch(tmp_path):
    model, res, best, last = _fit_with_run(tmp_path, restore=True)
    assert res.best_epoch < res.epochs_run
    assert best["epoch"] == res.best_epoch and last["epoch"] == res.epochs_run
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model"][name])
    assert not torch.equal(model.state_dict()["output.weight"], last["model"]["output.weight"])
    assert val_loss(model) == pytest.approx(res.best_value, abs=1e-7)
    assert best["metrics"]["val/loss"] == res.best_value
    assert best["best"] == {"epoch": res.best_epoch, "value": res.best_value, "monitor": "val/loss", "mode": "min"}


def test_without_restore_the_last_weights_stay(tmp_path):
    model, res, best, last = _fit_with_run(tmp_path, restore=False)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, last["model"][name])
    assert val_loss(model) == pytest.approx(res.history[-1]["val/loss"], abs=1e-7)
    assert val_loss(model) > res.best_value + 1e-4
    # best.pt is still written at the best epoch
    assert best["epoch"] == res.best_epoch


def test_min_delta_counts_small_improvements_as_none():
    # tiny lr: the training loss improves every epoch, but by far less than 0.01
    kw = dict(lr=1e-3, epochs=15, monitor="train/loss", early_stopping=True, patience=4)
    steady = run_fit(one_weight_model(), ES_TRAIN, **kw)
    assert steady.epochs_run == 15 and steady.best_epoch == 15 and not steady.stopped_early
    coarse = run_fit(one_weight_model(), ES_TRAIN, min_delta=0.01, **kw)
    assert coarse.stopped_early
    assert coarse.best_epoch == 1 and coarse.epochs_run == 5


def test_min_delta_on_the_val_curve_matches_keras():
    plain = run_fit(one_weight_model(), ES_TRAIN, ES_VAL, lr=0.5, epochs=40, monitor="val/loss",
                    early_stopping=True, patience=2)
    res = run_fit(one_weight_model(), ES_TRAIN, ES_VAL, lr=0.5, epochs=40, monitor="val/loss",
                  early_stopping=True, patience=2, min_delta=0.01)
    losses = [h["val/loss"] for h in res.history]
    assert (res.best_epoch, res.epochs_run) == keras_early_stopping(losses, "min", 2, 0.01)
    assert res.best_epoch < plain.best_epoch


def test_mode_max_on_accuracy():
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 40)[:, None]
    y = (x > 0.3).float()
    model = build_model(ModelSpec(hidden=[]), 1, 1)
    res = run_fit(model, (x, y), (x, y), lr=0.5, epochs=300, monitor="val/accuracy", mode="max",
                  early_stopping=True, patience=5)
    accs = [h["val/accuracy"] for h in res.history]
    assert res.stopped_early
    assert res.best_value == max(accs)
    assert accs.index(max(accs)) + 1 == res.best_epoch  # the first epoch reaching the max; ties do not count
    assert res.best_epoch > 1 and len(set(accs[: res.best_epoch])) > 1  # it had to climb
    assert (res.best_epoch, res.epochs_run) == keras_early_stopping(accs, "max", 5, 0.0)
    assert accuracy(model, x, y) == res.best_value  # restored


# ------------------------------------------------------------------------------------------
# Determinism


def _metrics_csv(path: Path, timings: bool = False) -> list[dict[str, str]]:
    """metrics.csv rows; the wall-clock column is left out unless asked for (it differs run to run)."""
    with open(path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows if timings else [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]


def test_metrics_csv_times_every_epoch(tmp_path):
    spec = _spec(tmp_path, train={"epochs": 3, "batch_size": 16, "device": "cpu"},
                 logging={"tensorboard": True, "progress": "none", "histograms_every": 0})
    out = _train(spec, tmp_path)
    rows = _metrics_csv(out.run_dir, timings=True)
    assert len(rows) == 3 and all(float(r["epoch_seconds"]) > 0 for r in rows)
    assert sum(float(r["epoch_seconds"]) for r in rows) <= out.summary["train_seconds"] + out.summary["val_seconds"] + 1e-3
    assert "time/epoch_seconds" in _events(out.run_dir).Tags()["scalars"]


def test_same_seed_same_history_other_seed_differs(tmp_path):
    kw = dict(model={"hidden": [8], "dropout": 0.2}, train={"epochs": 3, "batch_size": 16, "device": "cpu"})
    a = _train(_spec(tmp_path, **kw), tmp_path, "a")
    b = _train(_spec(tmp_path, **kw), tmp_path, "b")
    assert _metrics_csv(a.run_dir) == _metrics_csv(b.run_dir)
    assert a.metrics == b.metrics
    c = _train(_spec(tmp_path, model=kw["model"], train={**kw["train"], "seed": 1}), tmp_path, "c")
    assert _metrics_csv(c.run_dir) != _metrics_csv(a.run_dir)
    assert c.metrics["test"]["loss"] != a.metrics["test"]["loss"]


def test_engine_same_seed_same_weights():
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    y = (x[:, :1] > 0).float()

    def once(seed: int):
        torch.manual_seed(0)
        model = build_model(ModelSpec(hidden=[5]), 3, 1)
        res = run_fit(model, (x, y), epochs=3, batch_size=4, seed=seed)
        return res.history, model.state_dict()

    h1, w1 = once(0)
    h2, w2 = once(0)
    h3, w3 = once(1)
    assert h1 == h2 and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert h1 != h3  # loop.seed drives the shuffling


# ------------------------------------------------------------------------------------------
# Batching


class BatchLog:
    """Records the first feature of every row each training forward pass sees."""

    def __init__(self, model: nn.Module):
        self.batches: list[list[float]] = []
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if module.training:
            self.batches.append(args[0][:, 0].tolist())


def _batch_run(n: int = 10, epochs: int = 2, hidden=(3,), norm: str = "none", **kw):
    x = torch.stack([torch.arange(n, dtype=torch.float32), torch.ones(n)], dim=1)
    y = (torch.arange(n) % 2).float()[:, None]
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=list(hidden), norm=norm), 2, 1)
    log = BatchLog(model)
    res = run_fit(model, (x, y), epochs=epochs, lr=0.01, **kw)
    return res, log.batches, model


def test_full_batch_is_one_step_per_epoch():
    res, batches, _ = _batch_run(epochs=3, batch_size=None)
    assert res.steps == 3
    assert [len(b) for b in batches] == [10, 10, 10]


def test_batch_size_one_is_n_steps_per_epoch():
    res, batches, _ = _batch_run(epochs=2, batch_size=1)
    assert res.steps == 20
    assert all(len(b) == 1 for b in batches)


def test_batch_larger_than_data_is_full_batch():
    res, batches, _ = _batch_run(epochs=2, batch_size=64)
    assert res.steps == 2 and [len(b) for b in batches] == [10, 10]


def test_drop_last_skips_the_short_batch():
    res, batches, _ = _batch_run(epochs=2, batch_size=3)
    assert res.steps == 8 and [len(b) for b in batches] == [3, 3, 3, 1] * 2
    res, batches, _ = _batch_run(epochs=2, batch_size=3, drop_last=True)
    assert res.steps == 6 and [len(b) for b in batches] == [3, 3, 3] * 2


def test_batchnorm_drops_a_tail_batch_of_one_row():
    res, batches, _ = _batch_run(epochs=1, batch_size=3, norm="batch")
    assert [len(b) for b in batches] == [3, 3, 3]
    res, batches, _ = _batch_run(n=11, epochs=1, batch_size=3, norm="batch")
    assert [len(b) for b in batches] == [3, 3, 3, 2]


def test_drop_last_with_a_batch_larger_than_the_split_is_a_data_error(tmp_path):
    from mlptrain.errors import DataError

    spec = _spec(tmp_path, train={"epochs": 1, "batch_size": 500, "drop_last": True, "device": "cpu"})
    with pytest.raises(DataError, match=r"batch_size 500.*only 84 rows"):
        _train(spec, tmp_path)
    # without drop_last such a batch is simply the whole split
    spec = _spec(tmp_path, train={"epochs": 2, "batch_size": 500, "device": "cpu"})
    assert _train(spec, tmp_path, "ok").summary["steps"] == 2


def test_shuffle_false_keeps_row_order_and_true_permutes():
    _, ordered, w_ordered = _batch_run(epochs=2, batch_size=4, shuffle=False)
    assert [v for b in ordered[:3] for v in b] == list(range(10))
    assert ordered[:3] == ordered[3:]
    _, shuffled, w_shuffled = _batch_run(epochs=2, batch_size=4, shuffle=True)
    epoch1 = [v for b in shuffled[:3] for v in b]
    epoch2 = [v for b in shuffled[3:] for v in b]
    assert sorted(epoch1) == list(range(10)) and epoch1 != list(range(10))
    assert epoch1 != epoch2  # a new permutation every epoch
    assert not torch.equal(w_ordered.state_dict()["output.weight"], w_shuffled.state_dict()["output.weight"])
    # without shuffling the loop seed has nothing to change
    _, ordered_other_seed, w_other = _batch_run(epochs=2, batch_size=4, shuffle=False, seed=7)
    assert ordered_other_seed == ordered
    assert all(torch.equal(w_ordered.state_dict()[k], w_other.state_dict()[k]) for k in w_other.state_dict())


def test_train_loss_is_the_row_weighted_mean_of_batch_losses():
    # with lr ~ 0 the weights do not move, so the epoch loss equals the loss over all rows
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))
    y = (x[:, :1] > 0).float()
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[3]), 2, 1)
    with torch.no_grad():
        full = float(F.binary_cross_entropy_with_logits(model(x), y))
    res = run_fit(model, (x, y), epochs=1, batch_size=4, lr=1e-12)
    assert res.history[0]["train/loss"] == pytest.approx(full, rel=1e-5)


# ------------------------------------------------------------------------------------------
# Gradient clipping


def _clip_run(grad_clip: Optional[float]):
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    y = 100.0 * torch.ones(16, 1)  # far targets: big gradients
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[4]), 3, 1)
    opt = RecordingSGD(model.parameters(), lr=1e-3)
    run_fit(model, (x, y), opt=opt, loss=F.mse_loss, task=Task("regression", 1), epochs=5, batch_size=4,
            grad_clip=grad_clip)
    return opt.norms, model


def test_grad_clip_bounds_the_global_gradient_norm():
    unclipped, _ = _clip_run(None)
    assert max(unclipped) > 10.0  # the setup does produce big gradients
    clipped, model = _clip_run(0.5)
    assert len(clipped) == 20
    assert max(clipped) <= 0.5 * (1 + 1e-5)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_grad_clip_bounds_the_sgd_step():
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    y = 1e4 * torch.ones(8, 1)
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[]), 2, 1)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    run_fit(model, (x, y), lr=0.1, loss=F.mse_loss, task=Task("regression", 1), epochs=1, grad_clip=1.0)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float(torch.linalg.vector_norm(after - before)) <= 0.1 * 1.0 + 1e-6


# ------------------------------------------------------------------------------------------
# A whole run: the run directory


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    spec = _spec(
        tmp,
        train={"epochs": 4, "batch_size": 32, "device": "cpu", "early_stopping": {"patience": 50}},
        logging={"tensorboard": True, "progress": "none", "histograms_every": 2, "step_every": 3},
    )
    outcome = _train(spec, tmp)
    return spec, outcome


def test_run_writes_config_yaml(full_run):
    spec, out = full_run
    stored = yaml.safe_load((out.run_dir / "config.yaml").read_text())
    assert stored == spec_to_dict(spec)
    assert validate_dict(stored) == spec


def test_run_writes_one_metrics_row_per_epoch(full_run):
    spec, out = full_run
    table = _metrics_csv(out.run_dir)
    assert [int(r["epoch"]) for r in table] == [1, 2, 3, 4]
    for col in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/f1", "lr"):
        assert all(math.isfinite(float(r[col])) for r in table), col
    assert all(float(r["lr"]) == pytest.approx(spec.optimizer.lr) for r in table)


def test_run_writes_summary_json(full_run):
    spec, out = full_run
    summary = json.loads((out.run_dir / "summary.json").read_text())
    assert summary == json.loads(json.dumps(out.summary))
    assert set(summary["metrics"]) == {"train", "val", "test"}
    for split in summary["metrics"].values():
        assert {"loss", "accuracy", "f1"} <= set(split)
    table = _metrics_csv(out.run_dir)
    val_losses = [float(r["val/loss"]) for r in table]
    assert summary["best_epoch"] == val_losses.index(min(val_losses)) + 1
    assert summary["best_value"] == pytest.approx(min(val_losses))
    assert summary["parameters"] == 2 * 8 + 8 + 8 + 1
    assert isinstance(summary["train_seconds"], float) and summary["train_seconds"] >= 0
    assert summary["epochs_run"] == 4 and summary["stopped_early"] is False
    n_train = 120 - 18 - 18
    assert summary["steps"] == 4 * math.ceil(n_train / 32)
    assert summary["monitor"] == "val/loss" and summary["mode"] == "min"
    # the final metrics are those of the best epoch's (restored) weights
    assert summary["metrics"]["val"]["loss"] == pytest.approx(summary["best_value"], abs=1e-6)
    assert summary["final_weights"] == "best"
    assert Path(summary["checkpoint"]) == out.run_dir / "checkpoints" / "best.pt"


def test_run_writes_best_and_last_checkpoints(full_run):
    spec, out = full_run
    summary = out.summary
    best = checkpoint.load(out.run_dir / "checkpoints" / "best.pt")
    last = checkpoint.load(out.run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 4 and best["epoch"] == summary["best_epoch"]
    assert best["metrics"]["val/loss"] == pytest.approx(summary["best_value"])
    for state in (best, last):
        assert state["format"] == checkpoint.FORMAT
        assert state["spec"] == spec_to_dict(spec)
        assert state["in_features"] == 2 and state["out_features"] == 1
        assert state["data_state"]["task"] == "binary"
        assert set(state["model"]) == {"hidden1.weight", "hidden1.bias", "output.weight", "output.bias"}
    # the stored weights reproduce the best epoch's validation loss
    result = pipeline.evaluate_checkpoint(out.run_dir / "checkpoints" / "best.pt", "val", device_name="cpu")
    assert result["metrics"]["loss"] == pytest.approx(summary["best_value"], abs=1e-6)


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_run_writes_tensorboard_scalars(full_run):
    spec, out = full_run
    acc = _events(out.run_dir)
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr", "step/train_loss"} <= tags
    table = _metrics_csv(out.run_dir)
    for tag in ("train/loss", "val/loss", "val/accuracy"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3, 4]
        assert [e.value for e in events] == pytest.approx([float(r[tag]) for r in table], rel=1e-6)
    steps = [e.step for e in acc.Scalars("step/train_loss")]
    per_epoch = out.summary["steps"] // 4
    expected = sorted({s for s in range(1, out.summary["steps"] + 1) if s % 3 == 0 or s % per_epoch == 0})
    assert steps == expected


def test_run_writes_histograms_every_n_epochs(full_run):
    _, out = full_run
    acc = _events(out.run_dir)
    tags = set(acc.Tags()["histograms"])
    assert {"weights/hidden1.weight", "weights/output.bias", "grads/hidden1.weight", "grads/output.weight"} <= tags
    assert [e.step for e in acc.Histograms("weights/hidden1.weight")] == [2, 4]


def test_no_checkpoints_no_histograms_when_switched_off(tmp_path):
    spec = _spec(
        tmp_path,
        train={"epochs": 2, "batch_size": 32, "device": "cpu",
               "checkpoint": {"save_best": False, "save_last": False}},
        logging={"tensorboard": True, "progress": "none", "histograms_every": 0},
    )
    out = _train(spec, tmp_path)
    assert list((out.run_dir / "checkpoints").iterdir()) == []
    acc = _events(out.run_dir)
    assert acc.Tags()["histograms"] == []
    assert "train/loss" in acc.Tags()["scalars"]
    assert len(_metrics_csv(out.run_dir)) == 2


def test_only_last_checkpoint(tmp_path):
    spec = _spec(tmp_path, train={"epochs": 2, "batch_size": 32, "device": "cpu", "checkpoint": {"save_best": False}})
    out = _train(spec, tmp_path)
    assert sorted(p.name for p in (out.run_dir / "checkpoints").iterdir()) == ["last.pt"]
    # best weights are restored; last.pt holds them only when the best epoch was the last one
    assert out.summary["final_weights"] == "best"
    if out.summary["best_epoch"] == out.summary["epochs_run"]:
        assert out.checkpoint == out.run_dir / "checkpoints" / "last.pt"
    else:
        assert out.checkpoint is None and out.summary["checkpoint"] is None


def test_no_tensorboard_writes_no_event_files(tmp_path):
    out = _train(_spec(tmp_path, train={"epochs": 1, "batch_size": 32, "device": "cpu"}), tmp_path)
    assert not list(out.run_dir.glob("events.out.tfevents.*"))
    assert (out.run_dir / "metrics.csv").is_file() and (out.run_dir / "summary.json").is_file()


def test_pipeline_early_stopping_on_val_accuracy(tmp_path):
    spec = _spec(
        tmp_path,
        optimizer={"name": "adam", "lr": 0.05},
        train={"epochs": 200, "batch_size": "full", "device": "cpu",
               "early_stopping": {"monitor": "val_accuracy", "patience": 3, "restore_best_weights": False}},
    )
    out = _train(spec, tmp_path)
    accs = [float(r["val/accuracy"]) for r in _metrics_csv(out.run_dir)]
    assert out.summary["monitor"] == "val/accuracy" and out.summary["mode"] == "max"
    assert out.summary["stopped_early"] and len(accs) < 200
    assert (out.summary["best_epoch"], out.summary["epochs_run"]) == keras_early_stopping(accs, "max", 3, 0.0)
    assert out.summary["final_weights"] == "last"
    assert out.metrics["val"]["accuracy"] == pytest.approx(accs[-1])


@pytest.mark.parametrize("dropped", [{"train": {"drop_last": True}}, {"model": {"hidden": [8], "norm": "batch"}, "train": {"batch_size": 83}}])
def test_a_per_step_schedule_spans_the_steps_the_engine_takes(tmp_path, dropped):
    """drop_last, or BatchNorm's dropped tail of one row: the schedule is as long as the steps run,
    so a cosine decays to its end; each row's lr is the one its epoch's last step used."""
    sections = {"scheduler": {"name": "cosine", "interval": "step"}, "optimizer": {"name": "sgd", "lr": 0.1},
                "data": {"name": "moons", "n_samples": 120, "split": {"val": 0.15, "test": 0.15, "seed": 0}}}
    for key, value in dropped.items():
        sections[key] = {**sections.get(key, {}), **value}
    spec = _spec(tmp_path, **sections)
    out = _train(spec, tmp_path)
    per_epoch = 84 // spec.train.batch_size
    assert out.summary["steps"] == 4 * per_epoch  # 84 training rows: the short (or one-row) tail batch dropped
    total = out.summary["steps"]
    used = [float(r["lr"]) for r in _metrics_csv(out.run_dir)]
    assert used == pytest.approx([0.1 * (1 + math.cos(math.pi * (e * per_epoch - 1) / total)) / 2 for e in range(1, 5)])


def test_a_huge_step_every_allocates_nothing_and_tensorboard_off_copies_no_histograms(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.Run, "log_histograms", lambda *a, **k: pytest.fail("histograms without TensorBoard"))
    spec = _spec(tmp_path, logging={"tensorboard": False, "progress": "none", "runs_dir": str(tmp_path / "runs"),
                                    "step_every": 10**12, "histograms_every": 1})
    out = _train(spec, tmp_path)
    assert out.summary["epochs_run"] == 4


def test_multilabel_on_a_built_in_binary_set_trains_one_sigmoid_output(tmp_path):
    out = _train(_spec(tmp_path, task="multilabel"), tmp_path)
    assert out.summary["task"] == "multilabel" and "hamming_loss" in out.metrics["test"]


# ------------------------------------------------------------------------------------------
# Checkpoints and run directories


def test_checkpoint_roundtrip(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"model": {"w": torch.arange(3.0)}, "epoch": 2, "names": ["a", "b"]})
    state = checkpoint.load(path)
    assert state["format"] == checkpoint.FORMAT and state["format_version"] == checkpoint.FORMAT_VERSION
    assert torch.equal(state["model"]["w"], torch.arange(3.0)) and state["names"] == ["a", "b"]
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_checkpoint_load_uses_weights_only(tmp_path, monkeypatch):
    seen = {}
    real = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    path = tmp_path / "c.pt"
    checkpoint.save(path, {"epoch": 1})
    monkeypatch.setattr(torch, "load", spy)
    checkpoint.load(path)
    assert seen.get("weights_only") is True


def test_checkpoint_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": 1, "obj": time.struct_time((2020, 1, 1, 0, 0, 0, 0, 1, 0))},
               path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*Python objects"):
        checkpoint.load(path)


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match=r"other\.pt.*not an mlptrain checkpoint"):
        checkpoint.load(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not an mlptrain checkpoint"):
        checkpoint.load(path)


def test_truncated_and_garbage_checkpoints_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    checkpoint.save(good, {"model": {"w": torch.randn(50, 50)}})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt.*not a readable"):
        checkpoint.load(cut)
    text = tmp_path / "text.pt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointError, match=r"text\.pt"):
        checkpoint.load(text)
    with pytest.raises(CheckpointError, match=r"missing\.pt.*not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_newer_checkpoint_format_is_refused(tmp_path):
    path = tmp_path / "new.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match="newer"):
        checkpoint.load(path)


def test_create_run_dir_refuses_a_non_empty_dir(tmp_path):
    target = tmp_path / "r"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(RunDirError, match="not empty"):
        runs.create_run_dir(tmp_path, "x", target)
    assert (target / "keep.txt").read_text() == "old"
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirError):
        runs.create_run_dir(tmp_path, "x", blocker)


def test_create_run_dir_accepts_an_empty_or_new_dir(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runs.create_run_dir(tmp_path, "x", empty) == empty
    assert (empty / "checkpoints").is_dir()
    new = runs.create_run_dir(tmp_path, "x", tmp_path / "a" / "b")
    assert new.is_dir() and (new / "checkpoints").is_dir()


def test_create_run_dir_never_reuses_a_timestamp(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "2024-01-02_03-04-05")
    existing = tmp_path / "exp" / "2024-01-02_03-04-05"
    existing.mkdir(parents=True)
    (existing / "metrics.csv").write_text("old")
    first = runs.create_run_dir(tmp_path, "exp")
    second = runs.create_run_dir(tmp_path, "exp")
    assert first.name == "2024-01-02_03-04-05_1" and second.name == "2024-01-02_03-04-05_2"
    assert first.parent == second.parent == tmp_path / "exp"
    assert (existing / "metrics.csv").read_text() == "old"
    assert sorted(p.name for p in existing.iterdir()) == ["metrics.csv"]


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "f.txt"
    runs.atomic_write_text(path, "one")
    runs.atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_count_parameters_matches_summary_formula():
    model = build_model(ModelSpec(hidden=[4]), 3, 2)
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2 + 2  # the notes' 26


def test_background_writer_keeps_the_newest_version_and_reports_failures(tmp_path):
    writer = runs.BackgroundWriter()
    target = tmp_path / "f.txt"
    for i in range(50):
        writer.submit(target, lambda f, i=i: f.write(f"version {i}".encode()))
    writer.flush()
    assert target.read_text() == "version 49"
    assert not [p for p in tmp_path.iterdir() if p.name != "f.txt"]  # no temporary files left behind
    writer.submit(tmp_path / "missing-dir" / "x.txt", lambda f: f.write(b"x"))
    with pytest.raises(RunDirError, match="missing-dir/x.txt: cannot be written"):
        writer.flush()
    writer.close()


def test_a_large_state_is_snapshotted_for_the_writer_even_when_inline(tmp_path, monkeypatch):
    run_dir = runs.create_run_dir(tmp_path, "big", tmp_path / "big")
    run = runs.Run(run_dir, False, checkpoint.write, serialize_inline=True)
    snapshots = []
    monkeypatch.setattr(runs, "snapshot", lambda v: snapshots.append(v) or v)
    monkeypatch.setattr(runs, "INLINE_MAX_BYTES", 100)
    run.save_checkpoint("last", {"model": {"w": torch.zeros(10)}, "epoch": 1})  # 40 bytes: in line
    assert snapshots == []
    run.save_checkpoint("last", {"model": {"w": torch.zeros(30)}, "epoch": 2})  # 120 bytes: the writer's
    run.close()
    assert len(snapshots) == 1 and checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] == 2
    assert runs.tensor_bytes({"a": [torch.zeros(3, dtype=torch.float64)], "b": (1, torch.zeros(2, dtype=torch.bool))}) == 26


@pytest.mark.parametrize("inline", [False, True])
def test_checkpoint_snapshot_does_not_follow_later_training(tmp_path, inline):
    run_dir = runs.create_run_dir(tmp_path, "snap", tmp_path / "snap")
    run = runs.Run(run_dir, False, checkpoint.write, serialize_inline=inline)
    w = torch.zeros(3)
    run.save_checkpoint("last", {"model": {"w": w}, "epoch": 1})
    w += 5  # training goes on before the writer thread gets to the file
    run.close()
    assert torch.equal(checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"]["w"], torch.zeros(3))


def _same(a, b, path="") -> None:
    """Equal checkpoint contents (tensors bit for bit; an OrderedDict equals a dict), timings aside."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            if k != "seconds":
                _same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b) and a.dtype == b.dtype, path
    else:
        assert a == b or (a != a and b != b), path


def test_checkpoints_serialized_in_line_or_on_the_writer_hold_the_same(tmp_path, monkeypatch):
    """fit serializes in line on the CPU, on the writer thread on a GPU: the files must hold the same."""
    loaded = {}
    for inline in (False, True):
        monkeypatch.setattr(runs.Run, "__init__", functools.partialmethod(_RUN_INIT, serialize_inline=inline))
        torch.manual_seed(0)
        run_dir = runs.create_run_dir(tmp_path, "x", tmp_path / f"inline-{inline}")
        run = runs.Run(run_dir, False, checkpoint.write)
        assert run.serialize_inline is inline
        run_fit(one_weight_model(), ES_TRAIN, ES_VAL, lr=0.5, epochs=5, monitor="val/loss", save_best=True, save_last=True, run=run)
        run.close()
        loaded[inline] = [checkpoint.load(run_dir / "checkpoints" / n) for n in ("best.pt", "last.pt")]
    _same(loaded[False], loaded[True])


_RUN_INIT = runs.Run.__init__


def test_background_writer_rests_after_a_write_but_flush_writes_the_newest_at_once(tmp_path):
    writer = runs.BackgroundWriter(duty=1e-6)  # any write is followed by a long rest
    target = tmp_path / "last.pt"
    writer.submit(target, lambda f: f.write(b"epoch 1"))
    deadline = time.time() + 10
    while not target.exists() and time.time() < deadline:
        time.sleep(0.01)
    assert target.read_bytes() == b"epoch 1"  # the first version goes out at once
    writer.submit(target, lambda f: f.write(b"epoch 2"))
    writer.submit(target, lambda f: f.write(b"epoch 3"))
    time.sleep(0.2)
    assert target.read_bytes() == b"epoch 1"  # resting: held back, and epoch 2 will never be written
    writer.flush()
    assert target.read_bytes() == b"epoch 3"  # flush (end of run, Ctrl-C) does not wait for the rest
    writer.close()


def test_background_writer_never_rests_on_or_skips_a_durable_version(tmp_path):
    """Epoch-end last.pt: written at once, even after a long rest began, and never replaced unwritten."""
    writer = runs.BackgroundWriter(duty=1e-6)
    target, other = tmp_path / "last.pt", tmp_path / "metrics.csv"
    writer.submit(other, lambda f: f.write(b"rows 1"))  # an ordinary write: a long rest follows it
    written: list[bytes] = []

    def slow(version: bytes):
        def payload(f):
            time.sleep(0.05)  # slower than the "epochs" below: submit must wait, not skip
            f.write(version)
            written.append(version)
        return payload

    for i in range(1, 6):
        writer.submit(target, slow(b"epoch %d" % i), durable=True)
        if i > 1:  # the previous epoch's last.pt is on disk before this one is queued
            assert target.read_bytes() == b"epoch %d" % (i - 1)
    writer.submit(other, lambda f: f.write(b"rows 5"))
    deadline = time.time() + 10  # no flush: the durable version goes out on its own
    while target.read_bytes() != b"epoch 5" and time.time() < deadline:
        time.sleep(0.01)
    assert target.read_bytes() == b"epoch 5" and written == [b"epoch %d" % i for i in range(1, 6)]
    assert other.read_bytes() == b"rows 1"  # ordinary versions still wait out the rest
    writer.close()
    assert other.read_bytes() == b"rows 5"


def test_last_pt_is_saved_after_every_epoch(tmp_path):
    run_dir = runs.create_run_dir(tmp_path, "every", tmp_path / "run")
    run = runs.Run(run_dir, False, checkpoint.write)
    saved: list[tuple[str, int]] = []
    original = run.save_checkpoint
    run.save_checkpoint = lambda name, state, **kw: (saved.append((name, state["epoch"])), original(name, state, **kw))[1]
    res = run_fit(one_weight_model(), ES_TRAIN, ES_VAL, lr=0.5, epochs=12, early_stopping=False, save_best=False,
                  save_last=True, run=run)
    run.close()
    assert [epoch for name, epoch in saved if name == "last"] == list(range(1, 13))
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] == res.epochs_run == 12


def test_training_freezes_start_up_objects_from_the_collector_and_releases_them_after(tmp_path, monkeypatch):
    import gc

    frozen_during: list[int] = []
    original = pipeline.fit

    def spy(*args, **kwargs):
        frozen_during.append(gc.get_freeze_count())
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "fit", spy)
    _train(_spec(tmp_path, train={"epochs": 1}), tmp_path)
    assert frozen_during[0] > 10_000  # torch's and pydantic's objects are not walked by collections in training
    assert gc.get_freeze_count() == 0


def test_history_is_packed_into_a_table_and_comes_back_the_same():
    """last.pt is written every epoch: its history must not pickle one object per value."""
    history = [{"epoch": e, "train/loss": 1.0 / e, "lr": 0.1, **({"train/skipped_batches": 2.0} if e == 2 else {})}
               for e in range(1, 1001)]
    history[5]["val/loss"] = float("nan")  # a NaN value is kept as such, a missing one stays missing
    packed = HistoryTable(history).packed()
    assert packed["values"].shape == (1000, 5) and packed["values"].dtype == torch.float64
    back = unpack_history(packed)
    assert back[:5] + back[6:] == history[:5] + history[6:] and isinstance(back[0]["epoch"], int)
    assert math.isnan(back[5]["val/loss"]) and "val/loss" not in back[4] and "train/skipped_batches" not in back[0]
    assert unpack_history(HistoryTable().packed()) == []


def test_metrics_csv_gains_a_column_that_appears_later_and_keeps_resumed_rows(tmp_path):
    run_dir = runs.create_run_dir(tmp_path, "csv", tmp_path / "run")
    run = runs.Run(run_dir, False, checkpoint.write, rows=[{"epoch": 1, "train/loss": 0.9}])
    run.log_epoch(2, {"train/loss": 0.8})
    run.log_epoch(3, {"train/loss": 0.7, "train/skipped_batches": 1.0}, seconds=0.5)
    run.log_epoch(4, {"train/loss": 0.6})
    run.close()
    assert (run_dir / "metrics.csv").read_text().splitlines() == [
        "epoch,train/loss,train/skipped_batches,epoch_seconds", "1,0.9,,", "2,0.8,,", "3,0.7,1.0,0.5", "4,0.6,,",
    ]
