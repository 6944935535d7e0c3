"""The network: ``build_model(spec, in_features, out_features)`` and its two registries.

An MLP is a stack of blocks ``Linear -> [norm] -> activation -> [dropout]`` followed by a linear
output layer that emits logits; the output unit (sigmoid, softmax, identity) belongs to the task
and is applied by the loss and by ``predict``, which keeps training numerically stable.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from mlptrain.config import ActivationSpec, InitSpec, ModelSpec


class Abs(nn.Module):
    """g(z) = |z|: the generalized ReLU with alpha = -1 (absolute value rectification)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.abs()


class Maxout(nn.Module):
    """g(z) = max over k pieces: the preceding linear layer emits k values per unit."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.unflatten(-1, (-1, self.k)).amax(dim=-1)

    def extra_repr(self) -> str:
        return f"k={self.k}"


# name -> constructor(spec, width); width is the number of units the activation sees.
ACTIVATIONS: dict[str, Callable[[ActivationSpec, int], nn.Module]] = {
    "sigmoid": lambda s, w: nn.Sigmoid(),
    "tanh": lambda s, w: nn.Tanh(),
    "hardtanh": lambda s, w: nn.Hardtanh(),
    "softsign": lambda s, w: nn.Softsign(),
    "relu": lambda s, w: nn.ReLU(),
    "leaky_relu": lambda s, w: nn.LeakyReLU(s.slope),
    "prelu": lambda s, w: nn.PReLU(num_parameters=w, init=s.slope),
    "abs": lambda s, w: Abs(),
    "elu": lambda s, w: nn.ELU(alpha=s.alpha),
    "softplus": lambda s, w: nn.Softplus(beta=s.beta),
    "gelu": lambda s, w: nn.GELU(),
    "silu": lambda s, w: nn.SiLU(),
    "maxout": lambda s, w: Maxout(s.k),
    "identity": lambda s, w: nn.Identity(),
}


def _he(fn: Callable, nonlinearity: str = "relu") -> Callable[[torch.Tensor, InitSpec], None]:
    return lambda w, s: fn(w, nonlinearity=nonlinearity)


# name -> function(weight, spec) that fills the weight in place.
INITS: dict[str, Callable[[torch.Tensor, InitSpec], None]] = {
    "default": lambda w, s: None,
    "xavier_uniform": lambda w, s: nn.init.xavier_uniform_(w, gain=s.gain),
    "xavier_normal": lambda w, s: nn.init.xavier_normal_(w, gain=s.gain),
    "glorot_uniform": lambda w, s: nn.init.xavier_uniform_(w, gain=s.gain),
    "glorot_normal": lambda w, s: nn.init.xavier_normal_(w, gain=s.gain),
    "kaiming_uniform": _he(nn.init.kaiming_uniform_),
    "kaiming_normal": _he(nn.init.kaiming_normal_),
    "he_uniform": _he(nn.init.kaiming_uniform_),
    "he_normal": _he(nn.init.kaiming_normal_),
    "normal": lambda w, s: nn.init.normal_(w, mean=0.0, std=s.std),
    "uniform": lambda w, s: nn.init.uniform_(w, -s.a, s.a),
    "orthogonal": lambda w, s: nn.init.orthogonal_(w, gain=s.gain),
}

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm1d,
    "layer": nn.LayerNorm,
}


def init_linear(layer: nn.Linear, spec: InitSpec) -> None:
    """Apply the configured init to one linear layer (``default`` keeps PyTorch's own)."""
    if spec.name == "default":
        return
    INITS[spec.name](layer.weight.data, spec)
    if layer.bias is not None:
        nn.init.constant_(layer.bias.data, spec.bias)


def build_model(spec: ModelSpec, in_features: int, out_features: int) -> nn.Sequential:
    """The MLP as a flat ``nn.Sequential`` whose layer names read like the spec."""
    layers: list[tuple[str, nn.Module]] = []
    if spec.input_dropout > 0:
        layers.append(("input_dropout", nn.Dropout(spec.input_dropout)))
    width = in_features
    for i, (units, act) in enumerate(zip(spec.hidden, spec.activations()), start=1):
        pieces = act.k if act.name == "maxout" else 1
        linear = nn.Linear(width, units * pieces)
        init_linear(linear, spec.init)
        layers.append((f"hidden{i}", linear))
        if spec.norm != "none":
            layers.append((f"norm{i}", NORMS[spec.norm](units * pieces)))
        layers.append((f"act{i}", ACTIVATIONS[act.name](act, units * pieces)))
        if spec.dropout > 0:
            layers.append((f"dropout{i}", nn.Dropout(spec.dropout)))
        width = units
    output = nn.Linear(width, out_features)
    init_linear(output, spec.init)
    layers.append(("output", output))
    return nn.Sequential(OrderedDict(layers))


def count_parameters(model: nn.Module) -> int:
    """Number of learnable scalars (the notes count 26 for a 3-4-2 net)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# The one setting worth showing per module type (torch's own extra_repr changes between versions).
_SHOWN: dict[type, Callable[[nn.Module], str]] = {
    nn.Linear: lambda m: f"{m.in_features}→{m.out_features}",
    nn.BatchNorm1d: lambda m: str(m.num_features),
    nn.LayerNorm: lambda m: str(m.normalized_shape[0]),
    nn.Dropout: lambda m: f"p={m.p}",
    nn.LeakyReLU: lambda m: f"slope={m.negative_slope}",
    nn.PReLU: lambda m: str(m.num_parameters),
    nn.ELU: lambda m: f"alpha={m.alpha}",
    nn.Softplus: lambda m: f"beta={m.beta}",
    Maxout: lambda m: f"k={m.k}",
}


def describe_layer(layer: nn.Module) -> str:
    """Short module text for summaries: Linear(3→4), LeakyReLU(slope=0.1), Tanh()."""
    shown = _SHOWN.get(type(layer))
    return f"{type(layer).__name__}({shown(layer) if shown else ''})"


def summarize(model: nn.Sequential, in_features: int) -> list[dict[str, object]]:
    """One row per layer: name, what it is, the output shape for one row, learnable parameters."""
    rows: list[dict[str, object]] = []
    was_training = model.training
    model.eval()
    x = torch.zeros(2, in_features)
    with torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            params = {k: list(p.shape) for k, p in layer.named_parameters()}
            rows.append({
                "name": name,
                "layer": describe_layer(layer),
                "output": [None, *x.shape[1:]],
                "weights": params,
                "params": sum(math.prod(s) for s in params.values()),
            })
    model.train(was_training)
    return rows
