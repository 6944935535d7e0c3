"""Metrics against scikit-learn on random data, per task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from mlptrain.metrics import compute_metrics, confusion_matrix, predict_classes
from mlptrain.tasks import HIGHER_IS_BETTER, METRICS_BY_TASK, metric_mode


def _binary(seed: int, n: int = 200):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, generator=g)
    target = torch.randint(0, 2, (n, 1), generator=g).float()
    return logits, target


def _multiclass(seed: int, n: int = 300, k: int = 5):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), target] += 1.0  # better than chance, still plenty of errors
    return logits, target


@pytest.mark.parametrize("seed", range(4))
def test_binary_metrics_match_sklearn(seed):
    logits, target = _binary(seed)
    m = compute_metrics("binary", logits, target, 2)
    assert set(m) == set(METRICS_BY_TASK["binary"])
    assert all(isinstance(v, float) for v in m.values())
    y_true = target.reshape(-1).long().numpy()
    y_pred = (logits.reshape(-1) > 0).long().numpy()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["zero_one_loss"] == pytest.approx(skm.zero_one_loss(y_true, y_pred))
    assert m["zero_one_loss"] == pytest.approx(1 - m["accuracy"])
    # Macro averages over both classes.
    assert m["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


@pytest.mark.parametrize("seed", range(4))
def test_multiclass_metrics_match_sklearn(seed):
    logits, target = _multiclass(seed)
    m = compute_metrics("multiclass", logits, target, 5)
    assert set(m) == set(METRICS_BY_TASK["multiclass"])
    y_true, y_pred = target.numpy(), logits.argmax(1).numpy()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["zero_one_loss"] == pytest.approx(1 - m["accuracy"])
    assert m["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_multiclass_class_never_predicted_scores_zero_like_sklearn():
    # Class 3 is in the data but never predicted (it scores 0); class 4 neither present nor predicted
    # (left out of the average, as sklearn's default labels leave it out).
    target = torch.tensor([0, 1, 2, 3, 3, 0, 1, 2])
    pred = torch.tensor([0, 1, 2, 0, 1, 0, 2, 2])
    logits = torch.nn.functional.one_hot(pred, 5).float()
    m = compute_metrics("multiclass", logits, target, 5)
    y_true, y_pred = target.numpy(), pred.numpy()
    assert m["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["accuracy"] == pytest.approx(5 / 8)


def test_a_split_without_one_class_scores_perfect_predictions_as_perfect():
    target = torch.tensor([0, 0, 1, 1, 1])  # class 2 of 3 is in neither the labels nor the predictions
    m = compute_metrics("multiclass", torch.nn.functional.one_hot(target, 3).float(), target, 3)
    assert m["precision"] == m["recall"] == m["f1"] == 1.0


def test_perfect_predictions():
    target = torch.tensor([0, 1, 2, 1])
    m = compute_metrics("multiclass", torch.nn.functional.one_hot(target, 3).float(), target, 3)
    assert m == {"accuracy": 1.0, "zero_one_loss": 0.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_metrics_match_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 2, (150, 4), generator=g).float()
    logits = torch.randn(150, 4, generator=g) + (target - 0.5)
    m = compute_metrics("multilabel", logits, target, 4)
    assert set(m) == set(METRICS_BY_TASK["multilabel"])
    y_true, y_pred = target.long().numpy(), (logits > 0).long().numpy()
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(y_true, y_pred))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))  # subset accuracy
    assert m["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_metrics_match_sklearn(outputs):
    g = torch.Generator().manual_seed(outputs)
    target = torch.randn(100, outputs, generator=g) * torch.arange(1, outputs + 1) + 5
    pred = target + 0.5 * torch.randn(100, outputs, generator=g)
    m = compute_metrics("regression", pred, target, 0)
    assert set(m) == set(METRICS_BY_TASK["regression"])
    y, p = target.double().numpy(), pred.double().numpy()
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, p), rel=1e-9)
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), rel=1e-9)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-9)
    assert m["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-9)


def test_regression_r2_of_the_mean_is_zero_and_negative_when_worse():
    target = torch.tensor([[1.0], [2.0], [3.0], [6.0]])
    assert compute_metrics("regression", torch.full_like(target, 3.0), target, 0)["r2"] == pytest.approx(0.0)
    assert compute_metrics("regression", -target, target, 0)["r2"] < 0
    assert compute_metrics("regression", target.clone(), target, 0)["r2"] == pytest.approx(1.0)


@pytest.mark.parametrize("k", [2, 4, 7])
def test_confusion_matrix_matches_sklearn(k):
    g = torch.Generator().manual_seed(k)
    target = torch.randint(0, k, (500,), generator=g)
    pred = torch.randint(0, k, (500,), generator=g)
    cm = confusion_matrix(pred, target, k)
    assert cm.shape == (k, k)
    np.testing.assert_array_equal(cm.numpy(), skm.confusion_matrix(target.numpy(), pred.numpy(), labels=list(range(k))))
    assert cm.sum().item() == 500


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(torch.tensor([1, 1, 0]), torch.tensor([0, 0, 0]), 3)
    assert cm.tolist() == [[1, 2, 0], [0, 0, 0], [0, 0, 0]]


def test_predict_classes():
    z = torch.tensor([[0.3, -0.2], [-1.0, 2.0]])
    assert predict_classes("multiclass", z).tolist() == [0, 1]
    assert predict_classes("binary", torch.tensor([[0.1], [-0.1], [0.0]])).tolist() == [[1], [0], [0]]
    assert predict_classes("multilabel", z).tolist() == [[1, 0], [0, 1]]


def test_metric_mode():
    for name in ("accuracy", "precision", "recall", "f1", "r2"):
        assert metric_mode(name) == "max"
        assert metric_mode(f"val/{name}") == "max"
        assert metric_mode(f"train/{name}") == "max"
    for name in ("loss", "zero_one_loss", "hamming_loss", "mse", "rmse", "mae"):
        assert metric_mode(name) == "min"
        assert metric_mode(f"val/{name}") == "min"
    assert HIGHER_IS_BETTER == {"accuracy", "precision", "recall", "f1", "r2"}
    # Every metric a task logs has a direction.
    for names in METRICS_BY_TASK.values():
        for name in names:
            assert metric_mode(name) == ("max" if name in HIGHER_IS_BETTER else "min")
