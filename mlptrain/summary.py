"""What `mlptrain validate` shows, computed from the spec and its data without importing torch.

``validate`` must answer at once, and importing torch alone takes seconds, so the layers, shapes
and parameter counts are derived here from the same rules ``model.build_model`` follows; a test
builds the real model for many specs and checks both agree row by row. The data goes through
the same ``data.prepare`` as ``fit`` (image sets without their pixels), and the loss and monitors
through the same checks (``mlptrain.tasks``).
"""

from __future__ import annotations

import os
from typing import Any

from mlptrain import plan, tasks
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


def describe(spec: Spec) -> dict[str, Any]:
    """The task, loss, split sizes, columns, layer table and monitored metric of a spec; errors as fit would raise them."""
    from mlptrain import data

    p = data.prepare(spec.data, spec.task, pixels=False)
    verdict = plan.check(spec, p)  # the checks fit makes, in fit's order
    layers = layer_table(spec.model, verdict.in_features, p.out_features)
    return {
        "task": p.task,
        "positive_class": p.state["class_names"][1] if p.task == "binary" else None,  # the class the output is the probability of
        "loss": verdict.loss,
        "in_features": verdict.in_features,
        "out_features": p.out_features,
        "rows": {k: (0 if getattr(p, k) is None else len(getattr(p, k).y)) for k in ("train", "val", "test")},
        "layers": layers,
        "parameters": count(layers),
        "metrics": tasks.logged_names(p.task, p.val is not None, spec.regularization),
        "monitor": verdict.monitor,
        "columns": p.columns,  # csv/parquet: [{column, role, dtype, kind, missing}]; None for other data
        "step": step_path(spec, verdict),
    }


def step_path(spec: Spec, verdict: plan.Plan) -> dict[str, Any]:
    """Which step runs, as validate can tell without the device: the parts in step order, how the
    gradients are computed, and whether the step is one CUDA graph (on CUDA; never on the CPU)."""
    why = plan.autograd_why(spec, verdict.manual)
    if why is not None:
        backprop = f"autograd ({why})"
    else:
        backprop = "manual" + (" (autograd where precision auto resolves to bf16-mixed)" if spec.train.precision == "auto" else "")
    graph = plan.graph_blocker(spec, verdict.parts, device="cuda", precision=spec.train.precision)
    return {"parts": verdict.parts, "backprop": backprop, "cuda_graph": "on CUDA" if graph is None else f"off: {graph}"}
