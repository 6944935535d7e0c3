"""The training loop and evaluation, readable top to bottom.

``fit`` takes built objects (model, loss function, optimizer, schedule, tensors) and never parses
config strings. Data lives on the training device as whole tensors; each epoch draws one
permutation from a seeded generator and slices batches by index (no DataLoader, no per-sample
Python). The loss is accumulated on the device and read only every ``step_every`` steps.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch
from torch import nn

from mlptrain.metrics import compute_metrics, metric_mode, predict_classes

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Progress(Protocol):
    """What the engine tells whoever shows progress (the CLI's bar or plain lines)."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, steps: int, loss: Optional[float]) -> None: ...
    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool) -> None: ...


class NoProgress:
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, steps: int, loss: Optional[float]) -> None: ...
    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool) -> None: ...


@dataclass
class Task:
    """What evaluation needs to know about the targets."""

    name: str  # binary | multiclass | regression | multilabel
    n_classes: int
    target_mean: Optional[torch.Tensor] = None  # regression targets were standardized with these
    target_std: Optional[torch.Tensor] = None


@dataclass
class Loop:
    """The engine's knobs, already resolved from the spec."""

    epochs: int
    batch_size: Optional[int]  # None: full batch
    eval_batch_size: int = 4096
    shuffle: bool = True
    drop_last: bool = False
    seed: int = 0
    grad_clip: Optional[float] = None
    monitor: str = "val/loss"
    mode: str = "min"
    early_stopping: bool = True
    patience: int = 10
    min_delta: float = 0.0
    restore_best_weights: bool = True
    save_best: bool = True
    save_last: bool = True
    step_every: int = 10
    histograms_every: int = 0
    schedule_per_step: bool = False
    plateau_monitor: Optional[str] = None  # metric fed to the schedule each epoch (reduce_on_plateau); None: monitor


@dataclass
class FitResult:
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Forward pass in eval mode over large batches."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else x[:0]
    model.train(was_training)
    return out


def unscale(task: Task, values: torch.Tensor) -> torch.Tensor:
    """Regression outputs/targets back to the data's own units."""
    if task.target_mean is None:
        return values
    return values * task.target_std.to(values.device) + task.target_mean.to(values.device)


def evaluate(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, task: Task, batch_size: int) -> dict[str, float]:
    """Loss and every metric of the task on one split (regression metrics in original units)."""
    logits = predict_logits(model, x, batch_size)
    with torch.inference_mode():
        loss = float(loss_fn(logits.float(), y))
        if task.name == "regression":
            logits, y = unscale(task, logits), unscale(task, y)
        return {"loss": loss, **compute_metrics(task.name, logits, y, task.n_classes)}


def _improved(value: float, best: float, mode: str, min_delta: float) -> bool:
    if math.isnan(value):
        return False
    return value < best - min_delta if mode == "min" else value > best + min_delta


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    train: tuple[torch.Tensor, torch.Tensor],
    val: Optional[tuple[torch.Tensor, torch.Tensor]],
    task: Task,
    loop: Loop,
    run: Any = None,
    progress: Optional[Progress] = None,
) -> FitResult:
    """Train with early stopping; ``run`` (a runs.Run) receives metrics, histograms and checkpoints."""
    progress = progress or NoProgress()
    x, y = train
    n = len(x)
    device = x.device
    bs = n if loop.batch_size is None else min(loop.batch_size, n)
    # BatchNorm cannot normalize a batch of one row in training mode: drop such a tail batch.
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    tail = n % bs
    drop_tail = loop.drop_last or (has_bn and tail == 1)
    steps_per_epoch = n // bs + (1 if tail and not drop_tail else 0)
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size {bs} with drop_last leaves no batch of the {n} training rows")
    generator = torch.Generator().manual_seed(loop.seed)
    classify = task.name in ("binary", "multiclass")

    best = math.inf if loop.mode == "min" else -math.inf
    best_epoch, bad_epochs, step = 0, 0, 0
    best_state: Optional[dict[str, torch.Tensor]] = None
    history: list[dict[str, float]] = []
    stopped = False
    start = time.perf_counter()
    model.train()
    epoch = 0
    for epoch in range(1, loop.epochs + 1):
        progress.start_epoch(epoch, loop.epochs, steps_per_epoch)
        order = torch.randperm(n, generator=generator) if loop.shuffle else torch.arange(n)
        order = order.to(device)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.float64)
        window = torch.zeros((), device=device, dtype=torch.float64)
        seen, window_steps = 0, 0
        for b in range(steps_per_epoch):
            idx = order[b * bs : (b + 1) * bs]
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if loop.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
            optimizer.step()
            if loop.schedule_per_step:
                schedule.step()
            step += 1
            detached = loss.detach()
            loss_sum += detached * len(idx)
            window += detached
            window_steps += 1
            seen += len(idx)
            if classify:
                correct += (predict_classes(task.name, logits.detach()).reshape(-1) == yb.reshape(-1).long()).sum()
            if step % loop.step_every == 0 or b == steps_per_epoch - 1:
                mean = float(window) / window_steps  # the one host sync every step_every steps
                if run is not None:
                    run.log_step(step, mean)
                progress.advance(window_steps, mean)
                window.zero_()
                window_steps = 0

        values: dict[str, float] = {"train/loss": float(loss_sum) / seen}
        if classify:
            values["train/accuracy"] = float(correct) / seen
        if val is not None and len(val[0]):
            values.update({f"val/{k}": v for k, v in evaluate(model, loss_fn, val[0], val[1], task, loop.eval_batch_size).items()})
        values["lr"] = float(optimizer.param_groups[0]["lr"])
        history.append({"epoch": epoch, **values})

        current = values[loop.monitor]
        improved = _improved(current, best, loop.mode, loop.min_delta)
        if improved:
            best, best_epoch, bad_epochs = current, epoch, 0
            if loop.restore_best_weights:
                best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        if run is not None:
            run.log_epoch(epoch, values)
            if loop.histograms_every and epoch % loop.histograms_every == 0:
                tensors = [(f"weights/{k}", p.detach().cpu()) for k, p in model.named_parameters()]
                tensors += [(f"grads/{k}", p.grad.detach().cpu()) for k, p in model.named_parameters() if p.grad is not None]
                run.log_histograms(epoch, tensors)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "epoch": epoch,
                "step": step,
                "metrics": values,
                "best": {"epoch": best_epoch, "value": best, "monitor": loop.monitor, "mode": loop.mode},
            }
            if improved and loop.save_best:
                run.save_checkpoint("best", state)
            if loop.save_last:
                run.save_checkpoint("last", state)
        progress.end_epoch(epoch, values, improved)

        schedule.epoch_end(values[loop.plateau_monitor] if loop.plateau_monitor else current)
        if not loop.schedule_per_step:
            schedule.step()
        if loop.early_stopping and bad_epochs >= max(1, loop.patience):
            stopped = True
            break

    seconds = time.perf_counter() - start
    if loop.restore_best_weights and best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch, best, epoch, stopped, seconds, step, history)


def default_mode(monitor: str, mode: str) -> str:
    """Resolve Keras' ``mode: auto`` from the metric's name."""
    return metric_mode(monitor) if mode == "auto" else mode
