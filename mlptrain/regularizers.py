"""Step parts: the pieces of one training step that a regularizer fills in.

A step runs its points in one fixed order (engine.Step)::

    batch (augment, mixup, adversarial) → before forward (weight noise) → forward → task loss +
    Σ penalties → backward → after backward → clip → optimizer step → after step (constraints)

A part implements only the points it needs; the others do nothing. What a part needs of the step
(autograd, a random stream of its own, a CUDA graph's permission) is declared as data in
``plan.PARTS``, under the same name as its builder here, so that validate and the fast paths read
it without torch.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from mlptrain import augment
from mlptrain.config import Spec


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


# part name (plan.PARTS) -> (spec, the data's preprocessing state, training device) -> the part
BUILDERS: dict[str, Callable[[Spec, dict[str, Any], torch.device], Part]] = {
    "augment": lambda spec, st, device: Augment(augment.build(spec.augment, st.get("image_shape"), st["scaler"], device)),
}


def build(spec: Spec, names: list[str], data_state: dict[str, Any], device: torch.device) -> list[Part]:
    """The parts ``plan.active_parts`` named, in step order."""
    return [BUILDERS[name](spec, data_state, device) for name in names]
