"""Step parts: the pieces of one training step that a regularizer fills in.

A step runs its points in one fixed order (engine.Step)::

    batch (augment, mixup) → before forward (weight noise) → forward → task loss → objective
    (adversarial examples) + Σ penalties → backward → after backward → clip → optimizer step →
    after step (constraints)

A part implements only the points it needs; the others do nothing. What a part needs of the step
(autograd, a random stream of its own, a CUDA graph's permission) is declared as data in
``plan.PARTS``, under the same name as its builder here, so that validate and the fast paths read
it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from mlptrain import attacks, augment
from mlptrain.config import AdversarialSpec, Spec


@dataclass(frozen=True)
class Net:
    """What a part that runs the network itself is handed: the module (to switch its train/eval mode), the
    training forward (the module or its torch.compile form) and the task loss."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Part:
    """One piece of the training step; every point is a no-op until a part fills it.

    ``rng`` is the part's own random stream on the training device, when ``plan.PARTS`` declares
    one (the engine seeds it and saves it in last.pt under the part's name)."""

    name = ""
    rng: Optional[torch.Generator] = None

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the step trains on (a changed copy; never the data in place)."""
        return x, y

    def before_forward(self, model: nn.Module) -> None:
        """Change the weights for this step's forward and backward (undo it in ``after_backward``)."""

    def objective(self, loss: torch.Tensor, x: torch.Tensor, y: torch.Tensor, net: Net) -> torch.Tensor:
        """The batch's task loss as the step minimizes it; a part may mix in the loss of forward passes of its
        own (adversarial training). Runs under the step's autocast; penalties are added after it. A part
        that fills it declares autograd (hand-written backprop differentiates the task loss only)."""
        return loss

    def penalty(self, model: nn.Module) -> Optional[torch.Tensor]:
        """A term added to the task loss and differentiated with it; None adds nothing."""
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Gradients are in ``.grad``; the optimizer has not stepped yet."""

    def after_step(self, model: nn.Module) -> None:
        """The optimizer has updated the weights (constraints project them here)."""


class Augment(Part):
    """Random flips, shifts and noise of each training batch (mlptrain.augment)."""

    name = "augment"

    def __init__(self, apply: augment.Augment):
        self.apply = apply

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(x, self.rng), y


class Adversarial(Part):
    """Goodfellow et al.'s adversarial objective, (1 − w)·J(x) + w·J(x + δ): δ crafted against the current
    weights in eval mode (mlptrain.attacks, as `eval --attack` crafts it), then the perturbed batch is one
    more training forward. train/loss logs this mixed objective; train/accuracy the clean batch's."""

    name = "adversarial"

    def __init__(self, spec: AdversarialSpec, where: attacks.Space):
        assert spec.method is not None and spec.epsilon is not None
        self.method, self.eps, self.weight, self.where = spec.method, spec.epsilon, spec.weight, where
        self.steps, self.step_size = spec.steps, spec.pgd_step_size()
        self.random_start = spec.method == "pgd" and spec.random_start

    def objective(self, loss: torch.Tensor, x: torch.Tensor, y: torch.Tensor, net: Net) -> torch.Tensor:
        with attacks.evaluating(net.model):
            adv = attacks.perturb(self.method, net.forward, net.loss_fn, x, y, self.eps, self.where, self.steps,
                                  self.step_size, self.rng if self.random_start else None)
        adv_loss = net.loss_fn(net.forward(adv).float(), y)
        return (1 - self.weight) * loss + self.weight * adv_loss


# part name (plan.PARTS) -> (spec, the data's preprocessing state, training device) -> the part
BUILDERS: dict[str, Callable[[Spec, dict[str, Any], torch.device], Part]] = {
    "augment": lambda spec, st, device: Augment(augment.build(spec.augment, st.get("image_shape"), st["scaler"], device)),
    "adversarial": lambda spec, st, device: Adversarial(spec.adversarial, attacks.space(st, device)),
}


def build(spec: Spec, names: list[str], data_state: dict[str, Any], device: torch.device) -> list[Part]:
    """The parts ``plan.active_parts`` named, in step order."""
    return [BUILDERS[name](spec, data_state, device) for name in names]
