"""Optimizer and learning-rate schedule registries.

Schedules are closed-form factors f(t) of the base learning rate, so each one is a line, warmup
composes with all of them, and ``inverse_sqrt`` is literally the notes' η_t = η / √(t + 1).
``reduce_on_plateau`` reacts to a metric, so it wraps PyTorch's stateful scheduler instead.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional

import torch

from mlptrain.config import OptimizerSpec, SchedulerSpec


def _eps(s: OptimizerSpec) -> dict[str, float]:
    """``eps`` only when the config sets it, so each optimizer keeps its own default otherwise."""
    return {} if s.eps is None else {"eps": s.eps}


# name -> constructor(params, spec, **kw); kw is fused=True for the names in FUSED.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda p, s, **kw: torch.optim.SGD(
        p, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay, **kw
    ),
    "adam": lambda p, s, **kw: torch.optim.Adam(p, lr=s.lr, betas=s.betas, **_eps(s), weight_decay=s.weight_decay, **kw),
    "adamw": lambda p, s, **kw: torch.optim.AdamW(p, lr=s.lr, betas=s.betas, **_eps(s), weight_decay=s.weight_decay, **kw),
    "nadam": lambda p, s: torch.optim.NAdam(p, lr=s.lr, betas=s.betas, **_eps(s), weight_decay=s.weight_decay),
    "rmsprop": lambda p, s: torch.optim.RMSprop(
        p, lr=s.lr, alpha=s.alpha, **_eps(s), momentum=s.momentum, weight_decay=s.weight_decay
    ),
    "adagrad": lambda p, s, **kw: torch.optim.Adagrad(p, lr=s.lr, **_eps(s), weight_decay=s.weight_decay, **kw),
    "adadelta": lambda p, s: torch.optim.Adadelta(p, lr=s.lr, rho=s.rho, **_eps(s), weight_decay=s.weight_decay),
}


# Optimizers with a fused kernel (one kernel for all parameters instead of a loop of small ops).
FUSED = {"sgd", "adam", "adamw", "adagrad"}


def build_optimizer(params: Iterable[torch.nn.Parameter], spec: OptimizerSpec, fused: bool = False) -> torch.optim.Optimizer:
    """The configured optimizer; ``fused`` picks the fused kernel where PyTorch has one (same maths, fewer launches)."""
    if fused and spec.name in FUSED:
        return OPTIMIZERS[spec.name](params, spec, fused=True)
    return OPTIMIZERS[spec.name](params, spec)


# name -> factor(t, spec, horizon): the multiple of the base lr at interval t (counted after warmup).
SCHEDULES: dict[str, Callable[[int, SchedulerSpec, int], float]] = {
    "none": lambda t, s, h: 1.0,
    "step": lambda t, s, h: s.gamma ** (t // s.step_size),
    "multistep": lambda t, s, h: s.gamma ** sum(t >= m for m in s.milestones),
    "exponential": lambda t, s, h: s.gamma**t,
    "inverse_sqrt": lambda t, s, h: 1.0 / math.sqrt(t + 1),
    "cosine": lambda t, s, h: 0.5 * (1 + math.cos(math.pi * min(t, s.t_max or h) / (s.t_max or h))),
    "reduce_on_plateau": lambda t, s, h: 1.0,
}


class LRSchedule:
    """Sets the optimizer's lr every interval: warmup, then a closed-form decay or plateau reduction."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec: SchedulerSpec, horizon: int, mode: str):
        self.optimizer = optimizer
        self.spec = spec
        self.horizon = max(1, horizon - spec.warmup)
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.t = 0
        self.plateau: Optional[torch.optim.lr_scheduler.ReduceLROnPlateau] = None
        if spec.name == "reduce_on_plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=spec.factor, patience=spec.patience, min_lr=spec.min_lr
            )
        self._apply()

    def factor(self, t: int) -> float:
        """Multiple of the base lr at interval t (t counts from 0, warmup included)."""
        w = self.spec.warmup
        if t < w:
            return (t + 1) / (w + 1)
        return SCHEDULES[self.spec.name](t - w, self.spec, self.horizon)

    def _apply(self) -> None:
        if self.plateau is not None and self.t > self.spec.warmup:
            return  # the plateau scheduler owns the lr once warmup has handed it the base lr
        f = self.factor(self.t)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            lr = base * f
            if self.spec.name == "cosine":
                lr = self.spec.min_lr + (base - self.spec.min_lr) * f if self.t >= self.spec.warmup else lr
            group["lr"] = lr

    def step(self) -> None:
        """Advance one interval (an epoch or a step, as configured)."""
        self.t += 1
        self._apply()

    def epoch_end(self, metric: Optional[float]) -> None:
        """Called once per epoch with the monitored metric (for reduce_on_plateau)."""
        if self.plateau is not None and self.t >= self.spec.warmup and metric is not None:
            self.plateau.step(metric)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "plateau": self.plateau.state_dict() if self.plateau else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        if self.plateau is not None and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
        self._apply()
