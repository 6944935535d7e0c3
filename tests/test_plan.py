"""plan: one verdict for validate and fit, step parts declared as data and read by both fast paths,
and the step's points and epoch-end hooks as the engine runs them."""

from __future__ import annotations

from typing import Any, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlptrain import plan
from mlptrain.cli import main
from mlptrain.config import SchedulerSpec, validate_dict
from mlptrain.engine import Loop, Task, fit
from mlptrain.optim import LRSchedule
from mlptrain.regularizers import Part
from mlptrain.state import Stop

BAD_SPECS = {
    "rows before loss": "data: {name: moons}\nloss: mse\ntrain: {batch_size: 5000, drop_last: true, epochs: 1}\n",
    "loss before monitor": "data: {name: moons}\nloss: huber\ntrain: {early_stopping: {monitor: val/r2}}\n",
    "augment on tabular data": "data: {name: moons}\naugment: {hflip: true}\n",
    "manual backprop": "data: {name: moons}\nmodel: {norm: layer}\ntrain: {backprop: manual, epochs: 1}\n",
    "manual backprop of a penalty": "data: {name: moons}\nregularization: {l1: 0.01}\ntrain: {backprop: manual, epochs: 1}\n",
    "include_bias without a penalty": "data: {name: moons}\nregularization: {include_bias: true}\n",
    "label noise on regression": "data: {name: sine}\naugment: {label_noise: 0.1}\n",
    "mixup with hinge": "data: {name: moons}\nloss: hinge\naugment: {mixup: 0.4}\n",
    "mixup with class weights": "data: {name: moons}\nloss: {class_weight: balanced}\naugment: {mixup: 0.4}\n",
    "rotate on tabular data": "data: {name: moons}\naugment: {rotate: 10}\n",
}


@pytest.mark.parametrize("text", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_validate_and_fit_refuse_a_spec_with_the_same_line_and_exit_code(text, write_config, tmp_path, capsys):
    cfg = write_config(text)
    said = []
    for argv in (["validate", str(cfg)], ["fit", str(cfg), "--run-dir", str(tmp_path / "run")]):
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        said.append((code, err.split(" (nothing was written")[0]))
    assert said[0] == said[1] and said[0][0] != 0, said


def test_validate_names_the_parts_and_the_step_path(write_config, capsys):
    assert main(["validate", str(write_config("data: {name: moons}\naugment: {noise: 0.1}\ntrain: {cuda_graph: true}\n"))]) == 0
    assert "step: parts augment; backprop manual; cuda graph off: augment" in capsys.readouterr().out
    assert main(["validate", str(write_config("data: {name: moons}\nmodel: {norm: batch}\ntrain: {cuda_graph: true}\n"))]) == 0
    assert "step: parts none; backprop autograd (manual backprop does not cover the layer norm1 (BatchNorm1d)); cuda graph on CUDA" \
        in capsys.readouterr().out


def test_validate_names_the_augment_parts_in_step_order(write_config, capsys):
    cfg = write_config("data: {name: digits}\naugment: {mixup: 0.2, label_noise: 0.1, rotate: 10, elastic: {alpha: 2}}\n"
                       "train: {cuda_graph: true}\n")
    assert main(["validate", str(cfg)]) == 0
    assert "step: parts augment, label_noise, mixup; backprop manual; cuda graph off: augment" in capsys.readouterr().out
    assert main(["validate", str(write_config("data: {name: moons}\naugment: {label_noise: 0.1}\n"))]) == 0
    assert "step: parts label_noise; backprop manual" in capsys.readouterr().out


def test_a_part_declared_as_needing_autograd_or_no_graph_keeps_both_fast_paths_off(monkeypatch):
    """The fast paths read the declarations: a new part is one entry in plan.PARTS, not edits in their checks."""
    monkeypatch.setitem(plan.PARTS, "penalty", plan.PartInfo(plan.Needs(autograd=True, graph=False), lambda spec: True))
    spec = validate_dict({"data": {"name": "moons"}, "train": {"cuda_graph": True}})
    parts = plan.active_parts(spec)
    assert parts == ["penalty"]
    assert plan.manual_blocker(spec, "bce", "32", parts) == "penalty (it needs autograd)"
    assert plan.graph_blocker(spec, parts, device="cuda", precision="32") == "penalty"
    assert plan.manual_blocker(spec, "bce", "32", []) is None and plan.graph_blocker(spec, [], device="cuda", precision="32") is None


class Recorder(Part):
    """A part that fills every point: it records the order, and adds λ Σ w² as a penalty."""

    name = "recorder"

    def __init__(self, lam: float):
        self.lam, self.calls = lam, []

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append("batch")
        return x, y

    def before_forward(self, model: nn.Module) -> None:
        self.calls.append("before_forward")

    def penalty(self, model: nn.Module) -> Optional[torch.Tensor]:
        self.calls.append("penalty")
        return self.lam * sum((p ** 2).sum() for n, p in model.named_parameters() if n.endswith("weight"))

    def after_backward(self, model: nn.Module) -> None:
        self.calls.append("after_backward")

    def after_step(self, model: nn.Module) -> None:
        self.calls.append("after_step")


@pytest.fixture(autouse=True)
def declared(monkeypatch):
    """Recorder declared as parts are (a penalty: autograd), though no spec switches it on."""
    monkeypatch.setitem(plan.PARTS, "recorder", plan.PartInfo(plan.Needs(autograd=True), lambda spec: False))


def _fit(model: nn.Module, loss: Any, parts: list[Part], **kw: Any) -> Any:
    torch.manual_seed(0)
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64, 1)).float()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lp = Loop(**{"epochs": 3, "batch_size": 16, "early_stopping": False, "monitor": "train/loss", "mode": "min",
                 "save_best": False, "save_last": False, "parts": parts, **kw})
    return fit(model, loss, opt, LRSchedule(opt, SchedulerSpec(), lp.epochs, lp.mode), (x, y), None, Task("binary", 2), lp)


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def test_a_penalty_is_differentiated_with_the_loss_and_the_points_run_in_order():
    lam = 0.05
    part = Recorder(lam)
    with_part = _net()
    _fit(with_part, F.binary_cross_entropy_with_logits, [part])
    assert part.calls[:5] == ["batch", "before_forward", "penalty", "after_backward", "after_step"]
    assert len(part.calls) == 5 * 4 * 3  # every point of every step: 4 batches, 3 epochs

    def penalized(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # the same sum, written into the loss
        return F.binary_cross_entropy_with_logits(z, y) + lam * sum((p ** 2).sum() for n, p in by_hand.named_parameters() if n.endswith("weight"))

    by_hand = _net()
    _fit(by_hand, penalized, [])
    plain = _net()
    _fit(plain, F.binary_cross_entropy_with_logits, [])
    for a, b, c in zip(with_part.parameters(), by_hand.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)
    assert not all(torch.allclose(a, c) for a, c in zip(with_part.parameters(), plain.parameters()))


def test_an_epoch_end_hook_ends_the_run_with_its_own_stop_reason():
    seen = []

    def pruner(epoch: int, values: dict[str, float]) -> Optional[Stop]:
        seen.append(epoch)
        return Stop.PRUNED if epoch == 2 else None

    result = _fit(_net(), F.binary_cross_entropy_with_logits, [], epochs=10, epoch_end=[pruner])
    assert seen == [1, 2] and result.stop is Stop.PRUNED and result.epochs_run == 2 and not result.stopped_early
    full = _fit(_net(), F.binary_cross_entropy_with_logits, [], epochs=3)
    assert full.stop is Stop.COMPLETED and full.epochs_run == 3


def test_the_stop_reason_of_early_stopping():
    result = _fit(_net(), F.binary_cross_entropy_with_logits, [], epochs=50, early_stopping=True, patience=1, min_delta=10.0)
    assert result.stop is Stop.EARLY_STOPPED and result.stopped_early and result.epochs_run < 50


INERT = {
    "dropout without hidden layers": ("model: {hidden: [], dropout: 0.3}", "model.dropout = 0.3 changes nothing with model.hidden = []"),
    "activation without hidden layers": ("model: {hidden: [], activation: tanh}", "model.activation = 'tanh' changes nothing"),
    "norm without hidden layers": ("model: {hidden: [], norm: batch}", "model.norm = 'batch' changes nothing"),
    "drop_last with a full batch": ("train: {batch_size: full, drop_last: true}", "train.drop_last = true changes nothing with train.batch_size = 'full'"),
    "scale_target on classification": ("data: {name: moons, scale_target: false}", "data.scale_target = false changes nothing with task = 'binary'"),
    "stratify on regression": ("data: {name: sine, split: {stratify: false}}", "data.split.stratify = false changes nothing with task = 'regression'"),
}


@pytest.mark.parametrize("text, said", INERT.values(), ids=INERT.keys())
def test_keys_the_shape_or_the_task_leaves_unread_are_refused_by_validate_and_fit(text, said, write_config, tmp_path, capsys):
    cfg = write_config(("" if text.startswith("data:") else "data: {name: moons}\n") + text + "\ntrain: {epochs: 1}\n"
                       if "train:" not in text else "data: {name: moons}\n" + text + "\n")
    for argv in (["validate", str(cfg)], ["fit", str(cfg), "--run-dir", str(tmp_path / "run")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / "run").exists()


def test_the_same_keys_are_read_where_they_apply(write_config, capsys):
    for text in ("data: {name: moons}\nmodel: {hidden: [4], dropout: 0.3, norm: batch, activation: tanh}\n",
                 "data: {name: moons}\nmodel: {hidden: [], input_dropout: 0.2}\ntrain: {batch_size: 16, drop_last: true}\n",
                 "data: {name: sine, scale_target: false}\n", "data: {name: moons, split: {stratify: false}}\n"):
        assert main(["validate", str(write_config(text))]) == 0, capsys.readouterr().err


def test_a_set_that_removes_the_hidden_layers_makes_dropout_a_warning(write_config, capsys):
    cfg = write_config("data: {name: moons}\nmodel: {hidden: [8], dropout: 0.3}\n")
    assert main(["validate", str(cfg), "--set", "model.hidden=[]"]) == 0
    err = capsys.readouterr().err
    assert "model.dropout = 0.3 is ignored with model.hidden = [] from --set" in err
