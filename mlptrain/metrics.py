"""Metric functions on tensors, per task (their names per task: ``tasks.METRICS_BY_TASK``)."""

from __future__ import annotations

import torch

def predict_classes(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Class decisions: argmax for multiclass, logit > 0 (probability > 0.5) for binary/multilabel."""
    if task == "multiclass":
        return logits.argmax(dim=-1)
    return (logits > 0).long()


def dominant_class(task: str, y: torch.Tensor) -> torch.Tensor:
    """The class a mixed target (mixup's) leans to: the argmax of multiclass class probabilities, a binary
    target rounded; that is the label of the row that had the larger share λ. Hard labels stay as they are."""
    if not y.is_floating_point() or task not in ("binary", "multiclass"):
        return y
    return y.argmax(dim=-1) if task == "multiclass" else (y > 0.5).to(y.dtype)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """k x k counts, rows = true class, columns = predicted class."""
    idx = target.long().reshape(-1) * k + pred.long().reshape(-1)
    return torch.bincount(idx, minlength=k * k).reshape(k, k)


def _macro(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, only_present: bool) -> dict[str, torch.Tensor]:
    """Macro precision/recall/F1, as sklearn's ``average="macro"``: a class with no predictions (or no
    members) scores 0. ``only_present`` (single-label tasks): average over the classes among the labels
    or the predictions only, as sklearn does; a class absent from both would count as a 0."""
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-300), torch.zeros_like(tp))
    weight = ((tp + fp + fn) > 0).double() if only_present else torch.ones_like(tp)
    n = weight.sum().clamp(min=1)
    return {"precision": (precision * weight).sum() / n, "recall": (recall * weight).sum() / n, "f1": (f1 * weight).sum() / n}


def compute_metrics(task: str, logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> dict[str, float]:
    """All metrics of the task, as Python floats (read once, at the end of an evaluation)."""
    if task == "regression":
        err = logits.double() - target.double()
        mse = (err**2).mean()
        centered = ((target.double() - target.double().mean(dim=0)) ** 2).sum(dim=0)
        r2 = 1 - (err**2).sum(dim=0) / centered.clamp(min=1e-300)
        out = {"mse": mse, "rmse": mse.sqrt(), "mae": err.abs().mean(), "r2": r2.mean()}
    elif task == "multilabel":
        pred = predict_classes(task, logits)
        t = target.long()
        tp = ((pred == 1) & (t == 1)).sum(dim=0)
        fp = ((pred == 1) & (t == 0)).sum(dim=0)
        fn = ((pred == 0) & (t == 1)).sum(dim=0)
        out = {
            "accuracy": (pred == t).all(dim=1).double().mean(),
            "hamming_loss": (pred != t).double().mean(),
            **_macro(tp, fp, fn, only_present=False),
        }
    else:
        pred = predict_classes(task, logits).reshape(-1)
        cm = confusion_matrix(pred, target.reshape(-1), n_classes)
        tp = cm.diag()
        acc = tp.sum().double() / cm.sum().clamp(min=1)
        out = {"accuracy": acc, "zero_one_loss": 1 - acc, **_macro(tp, cm.sum(0) - tp, cm.sum(1) - tp, only_present=True)}
    return {k: float(v) for k, v in out.items()}
