"""Step parts: the pieces of one training step that a regularizer fills in.

A step runs its points in one fixed order (engine.Step)::

    batch (augment, mixup) → before forward (weight noise) → forward → task loss → objective
    (adversarial examples) + Σ penalties (l1/l2, activation L1) → backward → after backward → clip →
    optimizer step → after step (max-norm)

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
    soft_targets = False  # its batch's targets are mixtures (class probabilities): accuracy counts their argmax

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

    def skipped(self, model: nn.Module) -> None:
        """train.on_nan: skip_batch dropped this batch after its forward: undo what ``before_forward`` did."""

    def end(self, model: nn.Module) -> None:
        """Training is over (completed, stopped or interrupted): let go of what the part holds on the model."""


class Augment(Part):
    """Random flips, shifts and noise of each training batch (mlptrain.augment)."""

    name = "augment"

    def __init__(self, apply: augment.Augment):
        self.apply = apply

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(x, self.rng), y


class LabelNoise(Part):
    """A fraction of each batch's labels replaced by uniformly drawn classes (augment.label_noise)."""

    name = "label_noise"

    def __init__(self, fraction: float, n_classes: int):
        self.fraction, self.n_classes = fraction, n_classes

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, augment.label_noise(y, self.fraction, self.n_classes, self.rng)


class Mixup(Part):
    """Rows and targets of each batch mixed in pairs (augment.mixup); the loss takes the mixed targets:
    class probabilities [N, K] for multiclass, mixed 0/1 targets or values otherwise."""

    name = "mixup"
    soft_targets = True

    def __init__(self, alpha: float, n_classes: Optional[int]):
        self.alpha, self.n_classes = alpha, n_classes

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mixed_x, mixed_y, _, _ = augment.mixup(x, y, self.alpha, self.n_classes, self.rng)
        return mixed_x, mixed_y


def _classes(st: dict[str, Any]) -> int:
    return len(st["class_names"])


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
def linear_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight matrices the regularizers act on: every Linear layer's, hidden and output, in order."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


class WeightNoise(Part):
    """The notes' random perturbation of the weights: every weight matrix gets σ·N(0, 1), drawn from the
    part's own stream, for one step's forward and backward; the clean weights are copied back before
    clipping and the update, so the optimizer steps from them (bit for bit, not w + n - n)."""

    name = "weight_noise"

    def __init__(self, sigma: float):
        self.sigma = sigma
        self.clean: list[torch.Tensor] = []
        self.noise: list[torch.Tensor] = []

    @torch.no_grad()
    def before_forward(self, model: nn.Module) -> None:
        weights = linear_weights(model)
        if len(self.clean) != len(weights):  # buffers allocated once: no new tensors per step
            self.clean = [torch.empty_like(w) for w in weights]
            self.noise = [torch.empty_like(w) for w in weights]
        for w, clean, noise in zip(weights, self.clean, self.noise):
            clean.copy_(w)
            w.add_(noise.normal_(generator=self.rng), alpha=self.sigma)

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        for w, clean in zip(linear_weights(model), self.clean):
            w.copy_(clean)

    skipped = after_backward

    def unperturbed(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """``weights`` (the noisy ones, between before_forward and after_backward) as their clean values,
        with the gradient still flowing to the parameters: what a penalty on the weights must read."""
        if len(self.clean) != len(weights):
            return weights
        return [w - (w.detach() - clean) for w, clean in zip(weights, self.clean)]


class Penalty(Part):
    """λ₁ Σ|w| + (λ₂/2) Σ w² over the weight matrices (and the biases with include_bias), in the loss."""

    name = "penalty"

    def __init__(self, l1: float, l2: float, include_bias: bool):
        self.l1, self.l2, self.include_bias = l1, l2, include_bias
        # with weight_noise on, the objective is J(w + n) + Ω(w): the penalty reads the clean weights
        self.noise: Optional[WeightNoise] = None

    def penalty(self, model: nn.Module) -> Optional[torch.Tensor]:
        params = linear_weights(model)
        if self.noise is not None:
            params = self.noise.unperturbed(params)
        if self.include_bias:
            params += [m.bias for m in model.modules() if isinstance(m, nn.Linear) and m.bias is not None]
        terms = []  # (the spec switches this part on only with l1 or l2 above 0)
        if self.l1:
            terms.append(self.l1 * sum(p.abs().sum() for p in params))
        if self.l2:
            terms.append(self.l2 / 2 * sum(p.square().sum() for p in params))
        return sum(terms)


class ActivationL1(Part):
    """The notes' sparse representations: α × the batch's mean of Σ|h| over the hidden units, h the output of
    each activation module (act1, act2, ...) in the training forward. Forward hooks keep those outputs only
    in training mode with gradients on, so evaluation passes leave nothing; ``end`` removes the hooks."""

    name = "activation_l1"

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.seen: list[torch.Tensor] = []
        self.handles: list[Any] = []

    def _keep(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        if module.training and torch.is_grad_enabled():
            self.seen.append(output)

    def before_forward(self, model: nn.Module) -> None:
        self.seen = []
        if not self.handles:  # registered once: a torch.compile'd forward would recompile for hooks added each step
            self.handles = [m.register_forward_hook(self._keep) for name, m in model.named_children() if name.startswith("act")]

    def penalty(self, model: nn.Module) -> Optional[torch.Tensor]:
        seen, self.seen = self.seen, []
        if not seen:  # no hidden layer
            return None
        return sum(h.float().abs().sum() for h in seen) * (self.alpha / seen[0].shape[0])

    def end(self, model: nn.Module) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.seen = [], []


class MaxNorm(Part):
    """Norm penalties as constraints (projected gradient descent): after every step each unit's incoming
    weight vector, a row of a Linear weight, is scaled back onto the ball ‖w‖₂ ≤ c; rows inside it stay as they are."""

    name = "max_norm"

    def __init__(self, c: float):
        self.c = c

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for w in linear_weights(model):
            w.renorm_(2, 0, self.c)


@torch.no_grad()
def weight_stats(model: nn.Module) -> dict[str, float]:
    """What the regularizers act on, for TensorBoard: the fraction of first-layer weights with |w| < 1e-3
    (L1's sparsity) and the largest unit norm, the largest row norm of any Linear weight (max_norm's bound)."""
    weights = linear_weights(model)
    small = (weights[0].abs() < 1e-3).float().mean()
    largest = torch.stack([w.norm(dim=1).max() for w in weights]).max()
    return {"weights/small_fraction": float(small), "weights/max_unit_norm": float(largest)}


# part name (plan.PARTS) -> (spec, the data's preprocessing state, training device) -> the part
BUILDERS: dict[str, Callable[[Spec, dict[str, Any], torch.device], Part]] = {
    "augment": lambda spec, st, device: Augment(augment.build(spec.augment, st.get("image_shape"), st["scaler"], device)),
    "label_noise": lambda spec, st, device: LabelNoise(spec.augment.label_noise, _classes(st)),
    "mixup": lambda spec, st, device: Mixup(spec.augment.mixup, _classes(st) if st["task"] == "multiclass" else None),
    "adversarial": lambda spec, st, device: Adversarial(spec.adversarial, attacks.space(st, device)),
    "weight_noise": lambda spec, st, device: WeightNoise(spec.regularization.weight_noise),
    "penalty": lambda spec, st, device: Penalty(spec.regularization.l1, spec.regularization.l2, spec.regularization.include_bias),
    "activation_l1": lambda spec, st, device: ActivationL1(spec.regularization.activation_l1),
    "max_norm": lambda spec, st, device: MaxNorm(spec.regularization.max_norm),
}


def build(spec: Spec, names: list[str], data_state: dict[str, Any], device: torch.device) -> list[Part]:
    """The parts ``plan.active_parts`` named, in step order (a penalty told of the weight noise it must look past)."""
    parts = [BUILDERS[name](spec, data_state, device) for name in names]
    noise = next((p for p in parts if isinstance(p, WeightNoise)), None)
    for part in parts:
        if isinstance(part, Penalty):
            part.noise = noise
    return parts
