"""Task -> output unit and default loss; the loss registry.

Every loss takes raw logits (the model's linear output) and the targets in the task's layout:
binary float [N, 1] of 0/1, multiclass long [N] of class indices, multilabel float [N, L] of 0/1,
regression float [N, D]. Folding the sigmoid/softmax into the loss keeps it numerically stable
(log-softmax instead of log(softmax)).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from mlptrain.config import LossSpec
from mlptrain.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The notes' table: task -> (output unit, default loss).
DEFAULT_LOSS = {"binary": "bce", "multiclass": "cross_entropy", "regression": "mse", "multilabel": "bce"}


def _one_hot(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    k = logits.shape[-1]
    target = F.one_hot(y, k).to(logits.dtype)
    return target * (1 - smoothing) + smoothing / k


def log_cosh(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean(log(cosh(pred - y))), written as x + softplus(-2x) - log 2 so large errors do not overflow."""
    x = pred - y
    return (x + F.softplus(-2.0 * x) - math.log(2.0)).mean()


def hinge(logits: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Binary: mean(max(0, margin - t z)) with t = ±1; multiclass: the multi-class margin loss."""
    if y.dtype == torch.long:
        return F.multi_margin_loss(logits, y, margin=margin)
    t = 2.0 * y - 1.0
    return torch.clamp(margin - t * logits, min=0.0).mean()


# name -> (constructor(spec) -> loss_fn, tasks it fits)
LOSSES: dict[str, tuple[Callable[[LossSpec], LossFn], tuple[str, ...]]] = {
    "cross_entropy": (lambda s: lambda z, y: F.cross_entropy(z, y, label_smoothing=s.label_smoothing), ("multiclass",)),
    "nll": (lambda s: lambda z, y: F.nll_loss(F.log_softmax(z, dim=-1), y), ("multiclass",)),
    "kl_div": (
        lambda s: lambda z, y: F.kl_div(F.log_softmax(z, dim=-1), _one_hot(z, y, s.label_smoothing), reduction="batchmean"),
        ("multiclass",),
    ),
    "bce": (lambda s: F.binary_cross_entropy_with_logits, ("binary", "multilabel")),
    "hinge": (lambda s: lambda z, y: hinge(z, y, s.margin), ("binary", "multiclass")),
    "mse": (lambda s: F.mse_loss, ("regression",)),
    "mae": (lambda s: F.l1_loss, ("regression",)),
    "huber": (lambda s: lambda z, y: F.huber_loss(z, y, delta=s.delta), ("regression",)),
    "smooth_l1": (lambda s: lambda z, y: F.smooth_l1_loss(z, y, beta=s.delta), ("regression",)),
    "log_cosh": (lambda s: log_cosh, ("regression",)),
}


def build_loss(
    spec: LossSpec, task: str, class_names: Optional[Sequence[str]] = None, class_counts: Optional[Sequence[int]] = None
) -> tuple[str, LossFn]:
    """The configured loss (or the task's default), refusing one that does not fit the task.

    ``class_names`` and ``class_counts`` (rows per class in the training split) serve ``loss.class_weight``.
    """
    name = spec.name or DEFAULT_LOSS[task]
    make, tasks = LOSSES[name]
    if task not in tasks:
        fits = [n for n, (_, t) in LOSSES.items() if task in t]
        raise ConfigError(
            f"loss.name = '{name}' does not fit task '{task}' (it fits {', '.join(tasks)}); "
            f"use one of: {', '.join(fits)}"
        )
    weights = class_weights(spec, name, task, class_names, class_counts)
    if weights is None:
        return name, make(spec)
    return name, weighted_loss(name, torch.tensor(weights, dtype=torch.float32), spec)


# Losses that take class weights, and the tasks where they do.
WEIGHTED = {"cross_entropy": ("multiclass",), "nll": ("multiclass",), "bce": ("binary",)}


def class_weights(
    spec: LossSpec, name: str, task: str, class_names: Optional[Sequence[str]], class_counts: Optional[Sequence[int]]
) -> Optional[list[float]]:
    """One weight per class from ``loss.class_weight`` (None when unset)."""
    cw = spec.class_weight
    if cw is None:
        return None
    if task not in ("binary", "multiclass"):
        raise ConfigError(f"loss.class_weight applies to classification; task '{task}' has no classes to weight: remove it")
    if task not in WEIGHTED.get(name, ()):
        raise ConfigError(
            f"loss.class_weight applies to cross_entropy, nll and bce (binary), not to loss '{name}' for task '{task}'"
        )
    names = [str(n) for n in (class_names or [])]
    if cw == "balanced":
        if class_counts is None or len(class_counts) != len(names):
            raise ConfigError("loss.class_weight 'balanced' needs the class counts of the training split")
        counts = [int(c) for c in class_counts]
        n, k = sum(counts), len(names)
        return [n / (k * max(c, 1)) for c in counts]  # scikit-learn's n_samples / (n_classes * count_c)
    unknown = [c for c in cw if c not in names]
    if unknown:
        listed = ", ".join(repr(c) for c in unknown)
        raise ConfigError(f"loss.class_weight names unknown classes ({listed}); the classes are: {', '.join(names)}")
    return [float(cw.get(c, 1.0)) for c in names]


def weighted_loss(name: str, weights: torch.Tensor, spec: LossSpec) -> LossFn:
    """The loss with per-class weights: Σ w_(y_i) ℓ_i / Σ w_(y_i) over the batch."""
    on_device: dict[torch.device, torch.Tensor] = {}

    def w(z: torch.Tensor) -> torch.Tensor:
        if z.device not in on_device:
            on_device[z.device] = weights.to(z.device)
        return on_device[z.device]

    if name == "cross_entropy":
        return lambda z, y: F.cross_entropy(z, y, weight=w(z), label_smoothing=spec.label_smoothing)
    if name == "nll":
        return lambda z, y: F.nll_loss(F.log_softmax(z, dim=-1), y, weight=w(z))

    def bce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per_row = w(z)[y.long()]  # y is [N, 1] of 0/1: the weight of each row's class
        losses = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        return (losses * per_row).sum() / per_row.sum()

    return bce


def output_unit(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Logits -> what a user reads: probabilities for classification, values for regression."""
    if task == "multiclass":
        return torch.softmax(logits, dim=-1)
    if task in ("binary", "multilabel"):
        return torch.sigmoid(logits)
    return logits
