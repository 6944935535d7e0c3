"""What a task implies, as plain tables: its default loss, the losses that fit it, the metrics it logs.

Kept free of torch so that ``mlptrain validate`` can check a spec against its data in a blink;
``losses``, ``metrics`` and ``pipeline`` build the tensors from these same tables.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from mlptrain.config import LossSpec, RegularizationSpec, Spec, unused_keys
from mlptrain.errors import ConfigError

# The notes' table: task -> default loss (the output unit follows from the task: sigmoid, softmax, linear).
DEFAULT_LOSS = {"binary": "bce", "multiclass": "cross_entropy", "regression": "mse", "multilabel": "bce"}

# loss -> the tasks it fits (losses.LOSSES builds each one)
LOSS_TASKS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("multiclass",),
    "nll": ("multiclass",),
    "kl_div": ("multiclass",),
    "bce": ("binary", "multilabel"),
    "hinge": ("binary", "multiclass"),
    "mse": ("regression", "binary", "multiclass", "multilabel"),  # classification: on the probabilities (losses.squared_error)
    "mae": ("regression",),
    "huber": ("regression",),
    "smooth_l1": ("regression",),
    "log_cosh": ("regression",),
}

# Losses that take class weights, and the tasks where they do.
WEIGHTED = {"cross_entropy": ("multiclass",), "nll": ("multiclass",), "bce": ("binary",)}

METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "zero_one_loss", "precision", "recall", "f1"),
    "multiclass": ("accuracy", "zero_one_loss", "precision", "recall", "f1"),
    "multilabel": ("accuracy", "hamming_loss", "precision", "recall", "f1"),
    "regression": ("mse", "rmse", "mae", "r2"),
}
HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "r2"}
# How good a model of the task is, at a glance: shown in every epoch's progress beside the loss and the
# monitored metric, as Keras shows its compiled metrics. RMSE is in the target's own units.
MAIN_METRIC = {"binary": "accuracy", "multiclass": "accuracy", "multilabel": "accuracy", "regression": "rmse"}


def loss_name(spec: LossSpec, task: str) -> str:
    """The configured loss (or the task's default), refusing one that does not fit the task."""
    name = spec.name or DEFAULT_LOSS[task]
    tasks = LOSS_TASKS[name]
    if task not in tasks:
        fits = [n for n, t in LOSS_TASKS.items() if task in t]
        # A regression loss on class labels is allowed only when the user says the labels are values.
        numbers = (
            "; or, if the labels are numbers to fit as values, say so with task: regression"
            if tasks == ("regression",) and task in ("binary", "multiclass") else ""
        )
        raise ConfigError(
            f"loss.name = '{name}' does not fit task '{task}' (it fits {', '.join(tasks)}); "
            f"use one of: {', '.join(fits)}{numbers}"
        )
    problems = unused_keys(spec, "loss", name)  # a default loss is known only with the task
    if problems:
        raise ConfigError("; ".join(problems))
    return name


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


def logged_names(task: str, has_val: bool, reg: Optional[RegularizationSpec] = None) -> list[str]:
    """Every metric name a run logs per epoch (what `monitor` may name), in metrics.csv's order; ``reg``
    adds what the regularizers log (the loss's two halves, the weights' statistics)."""
    names = ["train/loss"]
    if reg is not None and reg.adds_loss_terms:
        names += ["train/data_loss", "train/penalty"]
    names += ["train/accuracy"] if task in ("binary", "multiclass") else []
    if has_val:
        names += ["val/loss"] + [f"val/{m}" for m in METRICS_BY_TASK[task]]
    names.append("lr")
    if reg is not None and reg.active:
        names += ["weights/small_fraction", "weights/max_unit_norm"]
    return names


def main_metric(logged: Iterable[str]) -> Optional[str]:
    """The task's main validation metric among the names an epoch logged (None without a val split): the
    names tell the task apart, so progress needs no task before the data is read."""
    names = set(logged)
    return next((f"val/{m}" for m in dict.fromkeys(MAIN_METRIC.values()) if f"val/{m}" in names), None)


def monitor_key(name: str) -> str:
    """Keras spells metrics val_loss; mlptrain logs val/loss. Accept both."""
    return name.replace("_", "/", 1) if name.startswith(("val_", "train_")) else name


def metric_mode(name: str) -> str:
    """'max' when higher is better for metric ``name`` (e.g. 'val/accuracy'), else 'min'."""
    return "max" if name.split("/")[-1] in HIGHER_IS_BETTER else "min"


def _monitor(name: str, task: str, has_val: bool, key: str, reg: RegularizationSpec) -> str:
    name = monitor_key(name)
    valid = logged_names(task, has_val, reg)
    if name not in valid:
        hint = " (the data has no validation split: set data.split.val > 0)" if name.startswith("val/") and not has_val else ""
        raise ConfigError(f"{key} = '{name}' is not a logged metric{hint}; choose one of: {', '.join(valid)}")
    return name


def monitors(spec: Spec, task: str, has_val: bool) -> tuple[str, str, str, str]:
    """(monitor, mode, plateau monitor, plateau mode): what early stopping and reduce_on_plateau watch.

    reduce_on_plateau may watch its own metric (``scheduler.monitor``); its direction is then read
    from that metric's name.
    """
    es = spec.train.early_stopping
    monitor = _monitor(es.monitor, task, has_val, "train.early_stopping.monitor", spec.regularization)
    mode = metric_mode(monitor) if es.mode == "auto" else es.mode
    sched = spec.scheduler
    if not sched.monitor:
        return monitor, mode, monitor, mode
    plateau = _monitor(sched.monitor, task, has_val, "scheduler.monitor", spec.regularization)
    return monitor, mode, plateau, mode if plateau == monitor else metric_mode(plateau)
