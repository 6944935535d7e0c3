"""Adversarial examples (mlptrain.attacks), adversarial training (the `adversarial` step part),
`eval --attack` and MC dropout (`eval/predict --mc-dropout`).

The tool's FGSM is checked against a hand computation on logistic regression, where the input
gradient is written out: ∇ₓJ ∝ w·(σ(z) − y) per row (softmax: Wᵀ(p − onehot(y))).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imagefiles import write_idx, write_mnist
from mlptrain import attacks, checkpoint, pipeline
from mlptrain.cli import main
from mlptrain.config import load_spec, read_yaml, validate_dict
from mlptrain.data.sources import bundled
from mlptrain.errors import CheckpointError
from test_resume import _interrupted, _resume, _run, assert_same_run

from conftest import CONFIGS

QUIET = {"tensorboard": False, "progress": "none"}
LOGISTIC = {
    "data": {"name": "breast_cancer", "split": {"val": 0.2, "test": 0.2, "seed": 0}},
    "model": {"hidden": []},
    "optimizer": {"name": "adam", "lr": 0.05},
    "train": {"epochs": 5, "batch_size": 64, "early_stopping": {"enabled": False}},
    "logging": QUIET,
}
BLOBS = {"name": "blobs", "n_samples": 300, "n_classes": 3, "n_features": 4, "noise": 1.5, "seed": 2}
DROPOUT_NET = {
    "data": BLOBS,
    "model": {"hidden": [32, 32], "dropout": 0.3},
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 6, "batch_size": 32, "seed": 4, "early_stopping": {"enabled": False}},
    "logging": {**QUIET, "step_every": 3},
}


def _with(raw: dict[str, Any], **sections: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for key, value in sections.items():
        out[key] = {**out.get(key, {}), **value}
    return out


def _checkpoint(raw: dict[str, Any], tmp_path: Path, name: str) -> Path:
    return _run(raw, tmp_path, name).run_dir / "checkpoints" / "last.pt"


def _eval_json(argv: list[str], capsys: Any) -> dict[str, Any]:
    assert main(["eval", *argv, "--json", "--device", "cpu"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _refused(argv: list[str], capsys: Any) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return code, err


# ------------------------------------------------------------------------------------------------
# The attack maths against hand computations.


def _logistic_by_hand(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FGSM's sign of ∇ₓ BCE(σ(x·w + b), y) per row, and the perturbed rows x + step·sign."""
    z = x.astype(np.float64) @ w.astype(np.float64) + b
    sign = np.sign(w[None, :] * (1 / (1 + np.exp(-z)) - y)[:, None])
    return sign, (x + (step * sign).astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("scale", ["standard", "minmax"])
def test_fgsm_equals_the_hand_computation_on_logistic_regression(scale, tmp_path, capsys):
    """Standardized features: ε standard deviations are ε model units; min-max scaled ones: ε·std/range."""
    raw = _with(LOGISTIC, data={"scale": scale})
    path = _checkpoint(raw, tmp_path, "run")
    restored, _ = pipeline.restore(path, "cpu")
    built = restored.built
    test, train = built.prepared.test, built.prepared.train
    w = built.model.output.weight.detach().numpy()[0]
    b = float(built.model.output.bias.detach()[0])
    y = test.y.reshape(-1).astype(np.float64)
    eps = 0.3
    unit = np.ones(train.x.shape[1]) if scale == "standard" else train.x.astype(np.float64).std(axis=0)
    sign, by_hand = _logistic_by_hand(test.x, y, w, b, eps * unit)
    assert (sign != 0).all()
    where = attacks.space(built.prepared.state, torch.device("cpu"))
    tool = attacks.fgsm(built.model, built.loss_fn, torch.from_numpy(test.x), torch.from_numpy(test.y), eps, where).numpy()
    if scale == "standard":
        np.testing.assert_array_equal(tool, by_hand)  # exactly: δ = ε·sign(w·(σ(z) − y))
    else:
        np.testing.assert_allclose(tool, by_hand, rtol=0, atol=1e-6)


def test_one_hot_columns_are_not_perturbed(tmp_path):
    """A tabular model's categorical and bool columns keep their 0/1 values; numeric ones move by ε std devs."""
    rng = np.random.default_rng(0)
    n = 120
    lines = ["a,b,colour,flag,y"] + [
        f"{rng.normal(5, 2):.3f},{rng.normal(0, 10):.3f},{rng.choice(['red', 'blue', 'green'])},{rng.choice(['true', 'false'])},{i % 2}"
        for i in range(n)
    ]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    raw = _with(LOGISTIC, data={"name": "csv", "path": str(tmp_path / "t.csv"), "target": "y", "split": {"val": 0.2, "test": 0.2}})
    restored, _ = pipeline.restore(_checkpoint(raw, tmp_path, "run"), "cpu")
    built = restored.built
    names = built.prepared.state["tabular"]["encoded_names"]
    x, y = torch.from_numpy(built.prepared.test.x), torch.from_numpy(built.prepared.test.y)
    moved = (attacks.fgsm(built.model, built.loss_fn, x, y, 0.5, attacks.space(built.prepared.state, x.device)) - x).abs()
    for j, name in enumerate(names):
        if name in ("a", "b"):
            torch.testing.assert_close(moved[:, j], torch.full_like(moved[:, j], 0.5))  # standardized: 0.5 std devs
        else:
            assert (moved[:, j] == 0).all(), name


def _images(tmp_path: Path, scale: str) -> tuple[Any, torch.Tensor, torch.Tensor]:
    write_mnist(tmp_path / "img", n_train=60, n_test=30, size=8)
    spec = validate_dict({"data": {"name": "mnist", "root": str(tmp_path / "img"), "scale": scale}, "model": {"hidden": []}})
    built = pipeline.build(spec)
    return built, torch.from_numpy(built.prepared.test.x), torch.from_numpy(built.prepared.test.y)


@pytest.mark.parametrize("scale", ["standard", "none"])
def test_fgsm_on_images_moves_pixels_by_epsilon_and_clips_them_to_0_1(scale, tmp_path):
    """Unscaled to pixels, the adversarial image is clip(pixels + ε·sign(Wᵀ(p − onehot(y))), 0, 1)."""
    built, x, y = _images(tmp_path, scale)
    state = built.prepared.state
    shift, step = (np.asarray(state["scaler"]["shift"]), np.asarray(state["scaler"]["scale"])) if scale != "none" else (0.0, 1.0)
    pixels = x.numpy().astype(np.float64) * step + shift
    w, b = built.model.output.weight.detach().double().numpy(), built.model.output.bias.detach().double().numpy()
    z = x.numpy().astype(np.float64) @ w.T + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    sign = np.sign((p - np.eye(10)[y.numpy()]) @ w)  # the pixel gradient has the model input's sign (scale > 0)
    eps = 0.2
    by_hand = np.clip(pixels + eps * sign, 0, 1)
    adv = attacks.fgsm(built.model, built.loss_fn, x, y, eps, attacks.space(state, x.device)).numpy().astype(np.float64)
    np.testing.assert_allclose(adv * step + shift, by_hand, rtol=0, atol=1e-5)
    assert ((pixels + eps * sign > 1) | (pixels + eps * sign < 0)).any()  # the clipping was needed


def test_pgd_stays_in_the_epsilon_ball_and_does_at_least_the_damage_of_fgsm(tmp_path, capsys):
    built, x, y = _images(tmp_path, "standard")
    where = attacks.space(built.prepared.state, x.device)
    torch.manual_seed(0)
    eps = 0.1
    adv = attacks.pgd(built.model, built.loss_fn, x, y, eps, where, 10, 0.025, torch.Generator().manual_seed(0))
    assert ((adv - x).abs() <= eps * where.unit * (1 + 1e-6)).all()
    assert (adv >= where.low).all() and (adv <= where.high).all() and not torch.equal(adv, x)


def test_a_checkpoint_without_feature_std_is_refused_for_attacks(tmp_path):
    state = {"scaler": {"kind": "standard", "shift": [0.0], "scale": [1.0]}}
    with pytest.raises(CheckpointError, match="train it again"):
        attacks.space(state, torch.device("cpu"), "old.pt")


# ------------------------------------------------------------------------------------------------
# Adversarial training.


def test_adversarial_training_changes_the_weights(tmp_path):
    plain = _run(DROPOUT_NET, tmp_path, "plain")
    adv = _run(_with(DROPOUT_NET, adversarial={"method": "fgsm", "epsilon": 0.3}), tmp_path, "adv")
    a = checkpoint.load(plain.run_dir / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(adv.run_dir / "checkpoints" / "last.pt")["model"]
    assert not any(torch.equal(a[k], b[k]) for k in a)
    assert adv.summary["backprop"] == "autograd" and plain.summary["backprop"] == "manual"  # auto steps aside, and says so


def test_the_step_minimizes_and_logs_what_the_objective_point_returns():
    """A part's objective is the loss differentiated and logged as train/loss: here one with the clean
    loss's gradient whose value is 10, so the weights are plain training's and every epoch logs 10."""
    from mlptrain.config import SchedulerSpec
    from mlptrain.engine import Loop, Task, fit
    from mlptrain.optim import LRSchedule
    from mlptrain.regularizers import Part

    class Ten(Part):
        name = "augment"  # (a declared name: the loop asks plan.PARTS about it)

        def objective(self, loss: torch.Tensor, x: torch.Tensor, y: torch.Tensor, net: Any) -> torch.Tensor:
            return loss - loss.detach() + 10.0

    def trained(parts: list[Part]) -> tuple[torch.nn.Module, Any]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        x, y = torch.randn(64, 3), torch.randint(0, 2, (64, 1)).float()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loop = Loop(epochs=2, batch_size=16, early_stopping=False, restore_best_weights=False, monitor="train/loss", save_best=False,
                    save_last=False, parts=parts)
        result = fit(model, torch.nn.functional.binary_cross_entropy_with_logits, opt,
                     LRSchedule(opt, SchedulerSpec(), 2, "min"), (x, y), None, Task("binary", 2), loop)
        return model, result

    (a, plain), (b, ten) = trained([]), trained([Ten()])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert [row["train/loss"] for row in ten.history] == [10.0, 10.0]
    assert [row["train/accuracy"] for row in ten.history] == [row["train/accuracy"] for row in plain.history]


def test_the_objective_mixes_clean_and_adversarial_losses_by_weight():
    from mlptrain.config import AdversarialSpec
    from mlptrain.regularizers import Adversarial, Net

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    loss_fn = torch.nn.functional.cross_entropy
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    where = attacks.Space(torch.ones(3))
    part = Adversarial(AdversarialSpec(method="fgsm", epsilon=0.2, weight=0.3), where)
    clean = loss_fn(model(x), y)
    mixed = part.objective(clean, x, y, Net(model, model, loss_fn))
    expected = 0.7 * clean + 0.3 * loss_fn(model(attacks.fgsm(model, loss_fn, x, y, 0.2, where)), y)
    torch.testing.assert_close(mixed, expected)


@pytest.mark.parametrize("method", [{"method": "pgd", "epsilon": 0.3, "steps": 3}, {"method": "fgsm", "epsilon": 0.3}],
                         ids=["pgd-random-start", "fgsm"])
def test_adversarial_training_resumes_bit_identically(method, tmp_path):
    raw = _with(DROPOUT_NET, adversarial=method)
    whole = _run(raw, tmp_path, "whole")
    path = _interrupted(raw, tmp_path, "stopped", 13)
    assert_same_run(whole.run_dir, path, whole, _resume(path))
