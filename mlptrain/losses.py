"""The loss registry (which loss fits which task, and the defaults: ``mlptrain.tasks``).

Every loss takes raw logits (the model's linear output) and the targets in the task's layout:
binary float [N, 1] of 0/1, multiclass long [N] of class indices, multilabel float [N, L] of 0/1,
regression float [N, D]. Under ``augment.mixup`` a batch's targets are mixtures: multiclass float
[N, K] class probabilities (cross_entropy, kl_div and mse take them; nll and hinge read indices, and
the plan refuses mixup with them), and binary/multilabel targets in [0, 1]. Folding the
sigmoid/softmax into the loss keeps it numerically stable (log-softmax instead of log(softmax)). ``mse`` on a classification task is the notes' squared
error of the output unit's probabilities against one-hot targets (it saturates where
cross-entropy does not: that is the point of running it).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from mlptrain.config import LossSpec
from mlptrain.tasks import class_weights, loss_name

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _one_hot(logits: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices as one-hot rows (class probabilities, mixup's, as they are), smoothed toward 1/K."""
    k = logits.shape[-1]
    target = y.to(logits.dtype) if y.is_floating_point() else F.one_hot(y, k).to(logits.dtype)
    return target * (1 - smoothing) + smoothing / k if smoothing else target


def bce(smoothing: float) -> LossFn:
    """Binary cross-entropy on logits; label smoothing moves each 0/1 target ε/2 toward the other class
    (the notes' noise at the output targets, for sigmoid units)."""
    if not smoothing:
        return F.binary_cross_entropy_with_logits
    return lambda z, y: F.binary_cross_entropy_with_logits(z, y * (1 - smoothing) + smoothing / 2)


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


def squared_error(task: str) -> LossFn:
    """Mean squared error of what the output unit gives: values for regression; for classification the
    sigmoid/softmax probabilities against 0/1 (one-hot) targets, averaged over rows and outputs."""
    if task == "multiclass":
        return lambda z, y: F.mse_loss(torch.softmax(z, dim=-1), _one_hot(z, y))
    if task in ("binary", "multilabel"):
        return lambda z, y: F.mse_loss(torch.sigmoid(z), y)
    return F.mse_loss


# name -> constructor(spec, task) -> loss_fn; the tasks each fits: tasks.LOSS_TASKS
LOSSES: dict[str, Callable[[LossSpec, str], LossFn]] = {
    "cross_entropy": lambda s, t: lambda z, y: F.cross_entropy(z, y, label_smoothing=s.label_smoothing),
    "nll": lambda s, t: lambda z, y: F.nll_loss(F.log_softmax(z, dim=-1), y),
    "kl_div": lambda s, t: lambda z, y: F.kl_div(F.log_softmax(z, dim=-1), _one_hot(z, y, s.label_smoothing), reduction="batchmean"),
    "bce": lambda s, t: bce(s.label_smoothing),
    "hinge": lambda s, t: lambda z, y: hinge(z, y, s.margin),
    "mse": lambda s, t: squared_error(t),
    "mae": lambda s, t: F.l1_loss,
    "huber": lambda s, t: lambda z, y: F.huber_loss(z, y, delta=s.delta),
    "smooth_l1": lambda s, t: lambda z, y: F.smooth_l1_loss(z, y, beta=s.delta),
    "log_cosh": lambda s, t: log_cosh,
}


def build_loss(
    spec: LossSpec, task: str, class_names: Optional[Sequence[str]] = None, class_counts: Optional[Sequence[int]] = None
) -> tuple[str, LossFn]:
    """The configured loss (or the task's default), refusing one that does not fit the task.

    ``class_names`` and ``class_counts`` (rows per class in the training split) serve ``loss.class_weight``.
    """
    name = loss_name(spec, task)
    make = LOSSES[name]
    weights = class_weights(spec, name, task, class_names, class_counts)
    if weights is None:
        return name, make(spec, task)
    return name, weighted_loss(name, torch.tensor(weights, dtype=torch.float32), spec)


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

    eps = spec.label_smoothing

    def weighted_bce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per_row = w(z)[y.long()]  # y is [N, 1] of 0/1: the weight of each row's class
        losses = F.binary_cross_entropy_with_logits(z, y * (1 - eps) + eps / 2, reduction="none")
        return (losses * per_row).sum() / per_row.sum()

    return weighted_bce


def output_unit(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Logits -> what a user reads: probabilities for classification, values for regression."""
    if task == "multiclass":
        return torch.softmax(logits, dim=-1)
    if task in ("binary", "multilabel"):
        return torch.sigmoid(logits)
    return logits
