"""What will run, decided from the spec and the data's facts alone (no torch): one verdict for
`validate` and `fit`.

``check`` runs the checks a spec must pass against its data, in one fixed order, so that both
commands refuse the same spec with the same message and exit code. The step's parts are declared
here as data (``PARTS``): what each needs (autograd, a random stream of its own, whether a CUDA
graph can hold it). The two fast paths, hand-written backprop and the CUDA-graph step, ask
``manual_blocker`` and ``graph_blocker``, which read those declarations: a part added to ``PARTS``
is seen by both, and neither keeps a list of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable, Optional

from mlptrain import tasks
from mlptrain.config import Spec, task_inert
from mlptrain.errors import ConfigError


@dataclass(frozen=True)
class Needs:
    """What a step part asks of the step; the fast paths step aside (and say why) where it asks too much."""

    autograd: bool = False  # its loss terms or batch changes are differentiated by autograd: no hand-written backprop
    stream: bool = False  # a random stream of its own, named after the part (saved in last.pt under that name)
    seed_offset: int = 0  # its stream is seeded train.seed + this, apart from the other streams
    graph: bool = True  # a CUDA graph can hold it: device work only, no stream of its own, nothing asked of the host
    ddp: bool = True  # safe when several processes train one model


@dataclass(frozen=True)
class PartInfo:
    needs: Needs
    active: Callable[[Spec], bool]  # whether a spec switches the part on


# name -> declaration, in the order one training step runs the parts (changes of the batch first).
# regularizers.BUILDERS builds each from the spec.
PARTS: dict[str, PartInfo] = {
    "augment": PartInfo(Needs(stream=True, seed_offset=7919, graph=False), lambda spec: spec.augment.active),
    # the targets' side of augmentation: after the inputs' changes, label noise before mixing
    "label_noise": PartInfo(Needs(stream=True, seed_offset=1299709, graph=False), lambda spec: spec.augment.label_noise > 0),
    "mixup": PartInfo(Needs(stream=True, seed_offset=15485863, graph=False), lambda spec: spec.augment.mixup > 0),
    # the hand-written backward pass reads layer.weight, which holds the noisy weights until after_backward
    "weight_noise": PartInfo(Needs(stream=True, seed_offset=104729, graph=False),
                             lambda spec: spec.regularization.weight_noise > 0),
    # FGSM never draws from its stream; PGD's random start does
    "adversarial": PartInfo(Needs(autograd=True, stream=True, seed_offset=155921, graph=False), lambda spec: spec.adversarial.active),
    "penalty": PartInfo(Needs(autograd=True), lambda spec: spec.regularization.penalized),  # l1, l2
    "activation_l1": PartInfo(Needs(autograd=True), lambda spec: spec.regularization.activation_l1 > 0),
    "max_norm": PartInfo(Needs(), lambda spec: spec.regularization.max_norm is not None),  # after the step: any path
}

# What backprop.Backprop differentiates by hand, by name (backprop.LOSS_GRADIENTS and
# backprop.DERIVATIVES; a test keeps the two the same).
MANUAL_LOSSES = ("cross_entropy", "bce", "mse")
MANUAL_NOT = {"prelu": "PReLU", "maxout": "Maxout"}  # activations without a written-out derivative


def active_parts(spec: Spec) -> list[str]:
    """The step parts a spec switches on, in step order."""
    return [name for name, part in PARTS.items() if part.active(spec)]


def schedule_per_step(spec: Spec) -> bool:
    """The learning rate changes every step (reduce_on_plateau watches epochs, whatever its interval)."""
    return spec.scheduler.interval == "step" and spec.scheduler.name != "reduce_on_plateau"


def manual_blocker(spec: Spec, loss: str, precision: str, parts: list[str], task: str = "regression") -> Optional[str]:
    """What keeps hand-written backprop from this setup (the first thing in the way), or None.

    ``precision`` as resolved for the device; ``auto`` (validate, which knows no device) is left to fit."""
    if spec.train.compile:
        return "train.compile (torch.compile traces autograd's graph)"
    if precision not in ("32", "auto"):
        return f"train.precision {precision} (autocast)"
    if loss not in MANUAL_LOSSES:
        return f"the loss '{loss}' (it covers {', '.join(MANUAL_LOSSES)})"
    if loss == "mse" and task != "regression":
        return f"the loss 'mse' on a {task} task's probabilities (it covers mse on values)"
    if spec.loss.class_weight is not None:
        return "loss.class_weight"
    if spec.model.hidden and spec.model.norm != "none":
        return f"the layer norm1 ({'BatchNorm1d' if spec.model.norm == 'batch' else 'LayerNorm'})"
    for i, act in enumerate(spec.model.activations()[: len(spec.model.hidden)], start=1):
        if act.name in MANUAL_NOT:
            return f"the layer act{i} ({MANUAL_NOT[act.name]})"
    return next((f"{name} (it needs autograd)" for name in parts if PARTS[name].needs.autograd), None)


def autograd_why(spec: Spec, blocker: Optional[str]) -> Optional[str]:
    """Why the gradients come from autograd (``blocker``: ``manual_blocker``'s answer), or None where
    hand-written backprop runs: validate's step line and summary.json's ``backprop_why`` say the same."""
    if spec.train.backprop == "autograd":
        return "train.backprop: autograd"
    return None if blocker is None else f"manual backprop does not cover {blocker}"


def graph_blocker(
    spec: Spec, parts: list[str], *, device: str, precision: str, host_resident: bool = False,
    compiled: bool = False, capturable: Optional[bool] = None,
) -> Optional[str]:
    """Why the training step cannot be one CUDA graph here, or None when it can.

    A graph replays device work only: whatever the step asks of the host (GradScaler's overflow
    check, a NaN test per batch, a fresh learning rate every step, a random stream of its own) rules
    it out. ``device``: the device type; ``compiled``: the training forward is torch.compile'd
    (graphs of its own); ``capturable``: the optimizer keeps its step counters on the device, or has
    none (None: not known yet, as in validate).
    """
    if not spec.train.cuda_graph:
        return "train.cuda_graph: false"
    if device != "cuda":
        return "not on CUDA"
    blockers = [
        (host_resident, "the training data stays in host memory"),
        (precision == "16-mixed", "train.precision: 16-mixed"),
        (spec.train.on_nan == "skip_batch", "train.on_nan: skip_batch"),
        *((not PARTS[name].needs.graph, name) for name in parts),
        (schedule_per_step(spec), "scheduler.interval: step"),
        (compiled, "train.compile"),
        (capturable is False, f"optimizer {spec.optimizer.name}"),
    ]
    return next((why for blocked, why in blockers if blocked), None)


@dataclass
class Plan:
    """What a spec will run on its data: the verdict of ``check``."""

    task: str
    loss: str
    class_weights: Optional[list[float]]
    monitor: str
    mode: str
    plateau_monitor: str
    plateau_mode: str
    in_features: int
    out_features: int
    parts: list[str] = field(default_factory=list)
    manual: Optional[str] = None  # why hand-written backprop cannot run (None: it can, precision permitting)


def check(spec: Spec, prepared: Any) -> Plan:
    """Every check of a spec against its prepared data (``data.Prepared``, with or without pixels), in
    the one order both `validate` and `fit` follow; the first that fails raises its ``MlptrainError``."""
    from mlptrain.summary import check_size

    st = prepared.state
    spec.augment.check_data(st.get("image_shape"), spec.data.name)
    spec.train.check_rows(len(prepared.train.y))
    inert = task_inert(spec, prepared.task)
    if inert:
        raise ConfigError("; ".join(inert))
    loss = tasks.loss_name(spec.loss, prepared.task)
    weights = tasks.class_weights(spec.loss, loss, prepared.task, st.get("class_names"), st.get("class_counts"))
    spec.augment.check_task(prepared.task, loss, weights is not None)
    parts = active_parts(spec)
    manual = manual_blocker(spec, loss, spec.train.precision, parts, prepared.task)
    if spec.train.backprop == "manual" and manual is not None:
        raise ConfigError(f"train.backprop: manual does not cover {manual}; set train.backprop: auto (or autograd)")
    monitor, mode, plateau, plateau_mode = tasks.monitors(spec, prepared.task, prepared.val is not None)
    in_features = prod(st["image_shape"]) if "image_shape" in st else prepared.in_features  # images read without pixels
    check_size(spec.model, in_features, prepared.out_features)
    return Plan(prepared.task, loss, weights, monitor, mode, plateau, plateau_mode, in_features, prepared.out_features,
                parts, manual)
