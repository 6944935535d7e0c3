"""Adversarial examples: FGSM and PGD in the data's units, one module for training and eval.

The model sees preprocessed inputs, x = (raw − shift) / scale per column (data.apply_scaler), but ε
is meant in the data's own units: image pixels in [0, 1], other data in standard deviations of
each feature over the training rows. ``space`` turns the stored preprocessing into the model-input
size of one such unit per column and, for images, the bounds of a valid pixel. Because the scaling
is affine and increasing per column, "unscale, add ε·sign(g), clip to [0, 1], rescale" is the same
as adding ε·unit·sign(g) and clipping to the rescaled bounds, which is what these functions do
(the sign of the gradient is the same in both spaces).

Attacks run the model as given; callers put it in eval mode (``evaluating``), so that dropout draws
no masks and batch norm keeps its running statistics while an example is crafted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from math import prod
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from mlptrain.errors import CheckpointError

Forward = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PIXELS = "image pixels in [0, 1]"
STDS = "standard deviations of each feature"


@dataclass(frozen=True)
class Space:
    """Where an attack may move the model's inputs: ``unit`` [F] is one data unit of each column in model
    inputs (0: a column left alone); ``low``/``high`` [F] bound valid inputs (None: unbounded)."""

    unit: torch.Tensor
    low: Optional[torch.Tensor] = None
    high: Optional[torch.Tensor] = None
    units: str = STDS

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.low is None else torch.clamp(x, self.low, self.high)


def space(state: dict[str, Any], device: torch.device, source: str = "the data") -> Space:
    """The attack space of a run's stored preprocessing (``data_state``): pixels for image sets, standard
    deviations (``feature_std``) for everything else."""
    scaler = state["scaler"]
    scaled = scaler.get("kind", "none") != "none"
    shift = torch.tensor(scaler["shift"], dtype=torch.float32, device=device) if scaled else None
    scale = torch.tensor(scaler["scale"], dtype=torch.float32, device=device) if scaled else None
    if state.get("image_shape"):
        width = prod(state["image_shape"])
        if scale is None:
            ones = torch.ones(width, device=device)
            return Space(ones, torch.zeros(width, device=device), ones, PIXELS)
        return Space(1.0 / scale, -shift / scale, (1.0 - shift) / scale, PIXELS)
    if state.get("feature_std") is None:
        raise CheckpointError(
            f"{source}: the checkpoint holds no feature standard deviations (written before adversarial ε units were "
            "recorded); train it again with this mlptrain to attack it"
        )
    std = torch.tensor(state["feature_std"], dtype=torch.float32, device=device)
    return Space(std if scale is None else std / scale)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block (dropout off, batch norm on its running statistics), then as it was."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def input_gradient(forward: Forward, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇ₓJ of the batch's loss, without touching the parameters' ``.grad``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(forward(x).float(), y)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(forward: Forward, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, eps: float, where: Space) -> torch.Tensor:
    """Goodfellow et al.'s fast gradient sign method: x + ε·sign(∇ₓJ(θ, x, y)), clipped to valid inputs."""
    step = eps * where.unit * input_gradient(forward, loss_fn, x, y).sign()
    return where.clip(x.detach() + step)


def pgd(
    forward: Forward, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, eps: float, where: Space, steps: int,
    step_size: float, generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Madry et al.'s projected gradient descent on the loss, in the L∞ ball of radius ε around x (and inside
    valid inputs): ``steps`` sign-gradient steps of ``step_size``, each projected back. ``generator``:
    start from a uniform point of the ball drawn from it; None starts at x."""
    x = x.detach()
    radius = eps * where.unit
    low, high = x - radius, x + radius
    if where.low is not None:
        low, high = torch.maximum(low, where.low), torch.minimum(high, where.high)
    adv = x
    if generator is not None:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        adv = torch.clamp(x + (2 * noise - 1) * radius, low, high)
    for _ in range(steps):
        adv = torch.clamp(adv + step_size * where.unit * input_gradient(forward, loss_fn, adv, y).sign(), low, high)
    return adv


def perturb(
    method: str, forward: Forward, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, eps: float, where: Space,
    steps: int = 10, step_size: Optional[float] = None, generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The adversarial batch of ``method`` (fgsm | pgd); PGD's step size defaults to 2.5·ε/steps."""
    if method == "fgsm":
        return fgsm(forward, loss_fn, x, y, eps, where)
    return pgd(forward, loss_fn, x, y, eps, where, steps, step_size if step_size is not None else 2.5 * eps / steps, generator)


def adversarial_logits(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, method: str, eps: float, where: Space,
    batch_size: int, steps: int = 10, generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The model's logits on the adversarial version of every row (crafted a batch at a time, in eval mode)."""
    out = []
    with evaluating(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            adv = perturb(method, model, loss_fn, xb, yb, eps, where, steps, None, generator)
            with torch.no_grad():
                out.append(model(adv).float())
    return torch.cat(out) if out else torch.zeros(0, device=x.device)
