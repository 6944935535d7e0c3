"""What `mlptrain validate` shows, computed from the spec and its data without importing torch.

``validate`` must answer at once, and importing torch alone takes seconds, so the layers, shapes
and parameter counts are derived here from the same rules ``model.build_model`` follows; a test
builds the real model for many specs and checks both agree row by row. The data goes through
the same ``data.prepare`` as ``fit`` (image sets without their pixels), and the loss and monitors
through the same checks (``mlptrain.tasks``).
"""

from __future__ import annotations

import os
from math import prod
from typing import Any, Optional

from mlptrain import tasks
from mlptrain.config import ActivationSpec, ModelSpec, Spec
from mlptrain.errors import ConfigError

# What ``model.ACTIVATIONS`` builds, as ``model.describe_layer`` prints it.
_ACTIVATION_TEXT = {
    "sigmoid": lambda a, w: "Sigmoid()",
    "tanh": lambda a, w: "Tanh()",
    "hardtanh": lambda a, w: "Hardtanh()",
    "softsign": lambda a, w: "Softsign()",
    "relu": lambda a, w: "ReLU()",
    "leaky_relu": lambda a, w: f"LeakyReLU(slope={a.slope})",
    "prelu": lambda a, w: f"PReLU({w})",
    "abs": lambda a, w: "Abs()",
    "elu": lambda a, w: f"ELU(alpha={a.alpha})",
    "softplus": lambda a, w: f"Softplus(beta={a.beta})",
    "gelu": lambda a, w: "GELU()",
    "silu": lambda a, w: "SiLU()",
    "maxout": lambda a, w: f"Maxout(k={a.k})",
    "identity": lambda a, w: "Identity()",
}


def _row(name: str, layer: str, width: int, weights: dict[str, list[int]]) -> dict[str, object]:
    params = 0
    for shape in weights.values():
        n = 1
        for d in shape:
            n *= d
        params += n
    return {"name": name, "layer": layer, "output": [None, width], "weights": weights, "params": params}


def _activation_weights(act: ActivationSpec, width: int) -> dict[str, list[int]]:
    return {"weight": [width]} if act.name == "prelu" else {}


def layer_table(spec: ModelSpec, in_features: int, out_features: int) -> list[dict[str, object]]:
    """One row per layer of ``build_model(spec, in_features, out_features)``: name, module, output shape, weights."""
    rows: list[dict[str, object]] = []
    if spec.input_dropout > 0:
        rows.append(_row("input_dropout", f"Dropout(p={spec.input_dropout})", in_features, {}))
    width = in_features
    for i, (units, act) in enumerate(zip(spec.hidden, spec.activations()), start=1):
        wide = units * (act.k if act.name == "maxout" else 1)
        rows.append(_row(f"hidden{i}", f"Linear({width}→{wide})", wide, {"weight": [wide, width], "bias": [wide]}))
        if spec.norm == "batch":
            rows.append(_row(f"norm{i}", f"BatchNorm1d({wide})", wide, {"weight": [wide], "bias": [wide]}))
        elif spec.norm == "layer":
            rows.append(_row(f"norm{i}", f"LayerNorm({wide})", wide, {"weight": [wide], "bias": [wide]}))
        rows.append(_row(f"act{i}", _ACTIVATION_TEXT[act.name](act, wide), units, _activation_weights(act, wide)))
        if spec.dropout > 0:
            rows.append(_row(f"dropout{i}", f"Dropout(p={spec.dropout})", units, {}))
        width = units
    rows.append(_row("output", f"Linear({width}→{out_features})", out_features,
                     {"weight": [out_features, width], "bias": [out_features]}))
    return rows


def count(rows: list[dict[str, object]]) -> int:
    """Learnable parameters of a layer table."""
    return sum(int(r["params"]) for r in rows)  # type: ignore[call-overload]


def check_size(spec: ModelSpec, in_features: int, out_features: int) -> None:
    """Refuse a network whose weights, gradients and two optimizer moments (16 bytes a parameter)
    exceed this machine's memory: one line, instead of an allocator's traceback mid-build."""
    params = count(layer_table(spec, in_features, out_features))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if params * 16 > memory:
        raise ConfigError(
            f"model.hidden {spec.hidden}: {params:,} parameters need {params * 16 / 2**30:,.0f} GiB for weights, gradients "
            f"and the optimizer's state; this machine has {memory / 2**30:,.0f} GiB: make the layers narrower"
        )


MANUAL_LOSSES = ("cross_entropy", "bce", "mse")  # backprop.LOSS_GRADIENTS (a test keeps the two the same)
MANUAL_NOT = {"prelu": "PReLU", "maxout": "Maxout"}  # activations without a written-out derivative (backprop.DERIVATIVES)


def manual_blocker(spec: Spec, loss: str) -> Optional[str]:
    """What keeps ``train.backprop: manual`` from this spec, read off the spec alone (validate does not
    build the model): the words backprop.unsupported uses, so validate refuses what fit refuses.
    precision auto is left to fit, which knows the device."""
    if spec.train.compile:
        return "train.compile (torch.compile traces autograd's graph)"
    if spec.train.precision not in ("32", "auto"):
        return f"train.precision {spec.train.precision} (autocast)"
    if loss not in MANUAL_LOSSES:
        return f"the loss '{loss}' (it covers {', '.join(MANUAL_LOSSES)})"
    if spec.loss.class_weight is not None:
        return "loss.class_weight"
    if spec.model.hidden and spec.model.norm != "none":
        return f"the layer norm1 ({'BatchNorm1d' if spec.model.norm == 'batch' else 'LayerNorm'})"
    for i, act in enumerate(spec.model.activations()[: len(spec.model.hidden)], start=1):
        if act.name in MANUAL_NOT:
            return f"the layer act{i} ({MANUAL_NOT[act.name]})"
    return None


def describe(spec: Spec) -> dict[str, Any]:
    """The task, loss, split sizes, columns, layer table and monitored metric of a spec; errors as fit would raise them."""
    from mlptrain import data

    p = data.prepare(spec.data, spec.task, pixels=False)
    st = p.state
    spec.augment.check_data(st.get("image_shape"), spec.data.name)
    spec.train.check_rows(len(p.train.y))
    loss = tasks.loss_name(spec.loss, p.task)
    tasks.class_weights(spec.loss, loss, p.task, st.get("class_names"), st.get("class_counts"))
    why = manual_blocker(spec, loss) if spec.train.backprop == "manual" else None
    if why is not None:
        raise ConfigError(f"train.backprop: manual does not cover {why}; set train.backprop: auto (or autograd)")
    has_val = p.val is not None
    monitor = tasks.monitors(spec, p.task, has_val)[0]
    in_features = prod(st["image_shape"]) if "image_shape" in st else p.in_features  # images: read without pixels
    check_size(spec.model, in_features, p.out_features)
    layers = layer_table(spec.model, in_features, p.out_features)
    return {
        "task": p.task,
        "loss": loss,
        "in_features": in_features,
        "out_features": p.out_features,
        "rows": {k: (0 if getattr(p, k) is None else len(getattr(p, k).y)) for k in ("train", "val", "test")},
        "layers": layers,
        "parameters": count(layers),
        "metrics": tasks.logged_names(p.task, has_val),
        "monitor": monitor,
        "columns": p.columns,  # csv/parquet: [{column, role, dtype, kind, missing}]; None for other data
    }
