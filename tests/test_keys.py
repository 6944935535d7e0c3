"""Every accepted config key changes what happens, and this file shows it for each one.

Project rule: "a config key that is accepted must change what happens, and a test must show that
it does." ``leaf_keys()`` walks the pydantic models of ``mlptrain.config`` (sections and the
per-activation fields of the ``model.activation`` union included) and ``KEY_CHANGES`` maps every
dotted key to one or more ``Case``s: two specs that differ in that key only, an observer that runs
something cheap (build the model, prepare the data, take a few optimizer steps, walk a schedule, or
train a tiny run into ``tmp_path``) and the parts of the observation that must differ.

``test_every_key_has_a_behaviour_test`` fails when a key is added without a case here, so a new
key cannot be dead. Parameters that apply to one choice only (``activation.slope`` to leaky_relu
and prelu, ``loss.delta`` to huber and smooth_l1, ...) are tested with each such choice set.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union, get_args

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from fakegraph import fake_cuda_graphs
from mlptrain import cli, pipeline
from mlptrain.backprop import Backprop
from mlptrain import data as datamod
from mlptrain.config import Spec, validate_dict
from mlptrain.errors import MlptrainError
from mlptrain.model import count_parameters
from mlptrain.optim import LRSchedule, build_optimizer
from mlptrain.tasks import monitor_key

# ------------------------------------------------------------------------------------------------
# The keys.


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``Union[A, list[A]]`` -> [A])."""
    args = get_args(annotation)
    if not args:
        return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []
    found: list[type[BaseModel]] = []
    for a in args:
        found += [m for m in _models_in(a) if m not in found]
    return found


def leaf_keys(model: type[BaseModel] = Spec, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the spec: sections are walked, values (lists, unions of scalars) are leaves."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        sub = _models_in(info.annotation)
        if sub:
            for m in sub:
                keys += [k for k in leaf_keys(m, f"{prefix}{name}.") if k not in keys]
        else:
            keys.append(f"{prefix}{name}")
    return keys


# ------------------------------------------------------------------------------------------------
# Building specs: a small base, a case's context, then the key under test.

_MISSING = object()

BASE: dict[str, Any] = {
    "name": "keys",
    "data": {"name": "xor", "n_samples": 100},
    "model": {"hidden": [4]},
    "optimizer": {"name": "adam", "lr": 0.05},
    "train": {"epochs": 2, "batch_size": 32, "device": "cpu"},
    "logging": {"tensorboard": False, "progress": "none", "runs_dir": "@runs"},
}


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):  # shorthand `loss: huber`
            child = {"name": child}
        node[part] = child = dict(child or {})
        node = child
    if value is _MISSING:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def _resolve(value: Any, files: Path) -> Any:
    """``"@name"`` names a file or directory under the shared data directory."""
    if isinstance(value, dict):
        return {k: _resolve(v, files) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("@"):
        return str(files / value[1:])
    return value


def make_spec(key: str, value: Any, context: dict[str, Any], files: Path) -> Spec:
    raw = copy.deepcopy(BASE)
    for k, v in {**context, key: value}.items():
        _set(raw, k, v)
    return validate_dict(_resolve(raw, files), f"spec for {key}")


# ------------------------------------------------------------------------------------------------
# Observers: spec, work directory -> a dict of plain values (lists, numbers, strings).


def _nested(t: torch.Tensor) -> list:
    return t.detach().cpu().double().tolist()


def _probe(in_features: int) -> torch.Tensor:
    return torch.linspace(-3.0, 3.0, 16 * in_features).reshape(16, in_features)


@torch.no_grad()
def observe_model(spec: Spec, work: Path) -> dict[str, Any]:
    """The built network: its layers, initial weights, and outputs on a fixed input in eval and train mode."""
    built = pipeline.build(spec)
    model = built.model
    x = _probe(built.prepared.in_features)
    model.eval()
    eval_out = model(x)
    model.train()
    torch.manual_seed(0)
    train_out = model(x)
    return {
        "structure": str(model),
        "parameters": count_parameters(model),
        "weights": {k: _nested(v) for k, v in model.state_dict().items()},
        "eval_output": _nested(eval_out),
        "train_output": _nested(train_out),
    }


def observe_data(spec: Spec, work: Path) -> dict[str, Any]:
    """The prepared splits: task, sizes, arrays, fitted preprocessing."""
    p = datamod.prepare(spec.data, spec.task)
    obs: dict[str, Any] = {
        "task": p.task,
        "in_features": p.in_features,
        "out_features": p.out_features,
        "sizes": {s: (0 if getattr(p, s) is None else len(getattr(p, s).x)) for s in ("train", "val", "test")},
        "scaler": p.state["scaler"],
    }
    for s in ("train", "val", "test"):
        split = getattr(p, s)
        obs[f"{s}_x"] = None if split is None else split.x.tolist()
        obs[f"{s}_y"] = None if split is None else split.y.tolist()
    return obs


def observe_loss(spec: Spec, work: Path) -> dict[str, Any]:
    """The built loss function on fixed logits and targets of the task's layout."""
    built = pipeline.build(spec)
    task, n = built.task.name, 12
    out = built.prepared.out_features
    if task == "multiclass":
        logits = torch.randn(n, out, generator=torch.Generator().manual_seed(0)) * 2.0
        y = torch.arange(n) % out
    elif task == "regression":
        logits = torch.linspace(-4.0, 4.0, n * out).reshape(n, out)
        y = torch.zeros(n, out)
    else:
        logits = torch.linspace(-3.0, 3.0, n * out).reshape(n, out)
        y = (torch.arange(n * out) % 2).float().reshape(n, out)
    return {"name": built.loss_name, "value": float(built.loss_fn(logits, y))}


def observe_optimizer(spec: Spec, work: Path) -> dict[str, Any]:
    """Weights after three full-batch steps of the configured optimizer."""
    built = pipeline.build(spec)
    model = built.model
    x, y = torch.from_numpy(built.prepared.train.x), torch.from_numpy(built.prepared.train.y)
    opt = build_optimizer(model.parameters(), spec.optimizer)
    for _ in range(3):
        loss = built.loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"weights": {k: _nested(v) for k, v in model.state_dict().items()}}


def observe_schedule(spec: Spec, work: Path) -> dict[str, Any]:
    """The lr over 12 intervals, as the engine drives it (a constant metric: a plateau from the start)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], spec.optimizer)
    sched = LRSchedule(opt, spec.scheduler, 12, "min")
    lrs = []
    for _ in range(12):
        lrs.append(sched.lr)
        sched.epoch_end(1.0)
        sched.step()
    return {"lrs": lrs}


def _scalar_events(run_dir: Path) -> tuple[dict[str, int], list[str]]:
    """{scalar tag: number of events} and the histogram tags of a run's TensorBoard files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    scalars: dict[str, int] = {}
    histograms: set[str] = set()
    for f in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:  # the loader migrates values to tensors tagged by plugin
                plugin = v.metadata.plugin_data.plugin_name
                if v.HasField("histo") or plugin == "histograms":
                    histograms.add(v.tag)
                elif v.HasField("simple_value") or plugin == "scalars":
                    scalars[v.tag] = scalars.get(v.tag, 0) + 1
    return scalars, sorted(histograms)


def observe_fit(spec: Spec, work: Path, progress: Any = None) -> dict[str, Any]:
    """Train a tiny run into ``work/run`` and read back what it left: summary, history, files, events."""
    run_dir = pipeline.start_run(spec, None, work / "run")
    outcome = pipeline.train(spec, run_dir, spec.train.device, progress)
    s = outcome.summary
    with open(run_dir / "metrics.csv", newline="") as f:
        history = list(csv.DictReader(f))
    scalars, histograms = _scalar_events(run_dir)
    obs = {k: s[k] for k in (
        "task", "loss", "device", "monitor", "mode", "best_epoch", "best_value", "epochs_run",
        "stopped_early", "steps", "parameters", "final_weights", "metrics",
    )}
    obs.update({
        "checkpoint": None if s["checkpoint"] is None else Path(s["checkpoint"]).name,
        "history": history,
        "lr": [float(r["lr"]) for r in history],
        "files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and "tfevents" not in p.name),
        "event_files": len(list(run_dir.glob("events.out.tfevents.*"))),
        "step_events": scalars.get("step/train_loss", 0),
        "histograms": histograms,
    })
    return obs


def observe_device(spec: Spec, work: Path) -> dict[str, Any]:
    """Where a run trains, or the refusal when the device is not there (tests hide any GPU)."""
    try:
        return {"device": observe_fit(spec, work)["device"]}
    except MlptrainError as exc:
        return {"device": f"refused: {exc}"}


def observe_data_or_error(spec: Spec, work: Path) -> dict[str, Any]:
    """The split sizes, or the refusal to prepare the data at all."""
    try:
        return {"outcome": observe_data(spec, work)["sizes"]}
    except MlptrainError as exc:
        return {"outcome": f"refused: {exc}"}


def observe_eval_batches(spec: Spec, work: Path) -> dict[str, Any]:
    """Row counts of every inference-mode forward pass of the network during a run."""
    sizes: list[int] = []

    def hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
        if isinstance(module, torch.nn.Sequential) and torch.is_inference_mode_enabled():
            sizes.append(int(args[0].shape[0]))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        observe_fit(spec, work)
    finally:
        handle.remove()
    return {"eval_batches": sizes}


def observe_precision(spec: Spec, work: Path) -> dict[str, Any]:
    """dtypes of the hidden layers' outputs in training steps (autocast changes them)."""
    dtypes: set[str] = set()

    def hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
        if isinstance(module, torch.nn.Linear) and torch.is_grad_enabled():
            dtypes.add(str(output.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        obs = observe_fit(spec, work)
    finally:
        handle.remove()
    return {"dtypes": sorted(dtypes), "metrics": obs["metrics"]}


def observe_compile(spec: Spec, work: Path) -> dict[str, Any]:
    """Whether the training forward went through torch.compile (faked: a real compile takes minutes here)."""
    calls: list[str] = []
    real = torch.compile

    def fake(model: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
        calls.append(type(model).__name__)
        return model

    torch.compile = fake  # type: ignore[assignment]
    try:
        observe_fit(spec, work)
    finally:
        torch.compile = real  # type: ignore[assignment]
    return {"compiled": calls}


def observe_backprop(spec: Spec, work: Path) -> dict[str, Any]:
    """How many training steps went through autograd's loss.backward() (manual backprop takes none)."""
    calls: list[int] = []
    real = torch.Tensor.backward

    def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        real(self, *args, **kwargs)

    torch.Tensor.backward = counted  # type: ignore[method-assign]
    try:
        obs = observe_fit(spec, work)
    finally:
        torch.Tensor.backward = real  # type: ignore[method-assign]
    return {"autograd_calls": len(calls), "metrics": obs["metrics"]}


def observe_cuda_graph(spec: Spec, work: Path) -> dict[str, Any]:
    """How the steps ran, with CUDA graphs faked on the CPU (tests/fakegraph.py): recordings made, summary's word."""
    with fake_cuda_graphs() as records:
        observe_fit(spec, work)
    return {"recordings": len(records), "cuda_graph": json.loads((work / "run" / "summary.json").read_text())["cuda_graph"]}


def observe_threads(spec: Spec, work: Path) -> dict[str, Any]:
    before = torch.get_num_threads()
    try:
        observe_fit(spec, work)
        return {"threads": torch.get_num_threads()}
    finally:
        torch.set_num_threads(before)


def observe_plateau(spec: Spec, work: Path) -> dict[str, Any]:
    """What reduce_on_plateau is fed each epoch and which direction counts as better."""
    fed: list[Optional[float]] = []
    modes: list[str] = []
    original_epoch_end, original_init = LRSchedule.epoch_end, LRSchedule.__init__

    def init(self, optimizer, sched_spec, horizon, mode):  # noqa: ANN001
        modes.append(mode)
        original_init(self, optimizer, sched_spec, horizon, mode)

    def epoch_end(self, metric):  # noqa: ANN001
        fed.append(metric)
        original_epoch_end(self, metric)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LRSchedule, "__init__", init)
        mp.setattr(LRSchedule, "epoch_end", epoch_end)
        obs = observe_fit(spec, work)
    return {"fed": fed, "plateau_mode": modes, "history": obs["history"]}


def observe_progress(spec: Spec, work: Path) -> dict[str, Any]:
    """What `mlptrain fit` prints while training, through the CLI's own progress factory."""
    progress = cli.make_progress(spec.logging.progress, monitor_key(spec.train.early_stopping.monitor))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            observe_fit(spec, work, progress)
        finally:
            if hasattr(progress, "close"):
                progress.close()
    return {"printed": buf.getvalue()}


def observe_last_saves(spec: Spec, work: Path) -> dict[str, Any]:
    """When last.pt is written: (completed epochs, batch within the next epoch or None at an epoch's end)."""
    from mlptrain import runs

    saves: list[tuple[int, Optional[int]]] = []
    original = runs.Run.save_checkpoint

    def spy(self, name, state, **kw):  # noqa: ANN001
        if name == "last":
            position = state["resume"]["position"]
            saves.append((state["epoch"], None if position is None else position["batch"]))
        return original(self, name, state, **kw)

    runs.Run.save_checkpoint = spy
    try:
        observe_fit(spec, work)
    finally:
        runs.Run.save_checkpoint = original
    return {"saves": saves}


def observe_nan(spec: Spec, work: Path) -> dict[str, Any]:
    """A run whose third training batch has a NaN loss: the refusal, or how many batches were skipped."""
    original = pipeline.build
    calls = [0]

    def build(*args, **kwargs):  # noqa: ANN002, ANN003
        built = original(*args, **kwargs)
        loss_fn = built.loss_fn

        def poisoned(logits, y):  # noqa: ANN001
            loss = loss_fn(logits, y)
            if torch.is_grad_enabled():
                calls[0] += 1
                if calls[0] == 3:
                    return loss * float("nan")
            return loss

        built.loss_fn = poisoned
        return built

    manual_loss = Backprop.loss

    def poisoned_manual(self, logits, y):  # noqa: ANN001
        loss = manual_loss(self, logits, y)
        calls[0] += 1
        return loss * float("nan") if calls[0] == 3 else loss

    pipeline.build = build
    Backprop.loss = poisoned_manual  # type: ignore[method-assign]
    try:
        return {"outcome": observe_fit(spec, work)["history"][0].get("train/skipped_batches")}
    except MlptrainError as exc:
        return {"outcome": f"refused: {exc}"}
    finally:
        pipeline.build = original
        Backprop.loss = manual_loss  # type: ignore[method-assign]


def observe_run_path(spec: Spec, work: Path) -> dict[str, Any]:
    """Where `mlptrain fit` (no --run-dir) creates the run directory."""
    path = pipeline.start_run(spec, None, None)
    return {"root": str(path.parent.parent), "name": path.parent.name}


def observe_download(spec: Spec, work: Path) -> dict[str, Any]:
    """An image set missing from a fresh data.root: its split sizes, or the refusal. The network is faked:
    torchvision's download writes a tiny set where torchvision puts it (root/MNIST/raw/)."""
    from imagefiles import write_mnist

    from mlptrain.data import images

    spec.data.root = str(work / "dl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "_reachable", lambda host, port, timeout: None)
        mp.setattr(images, "_fetch", lambda cls, data, root: write_mnist(root / "MNIST" / "raw", size=8))
        try:
            return {"outcome": observe_data(spec, work)["sizes"]}
        except MlptrainError as exc:
            return {"outcome": f"refused: {exc}"}


# ------------------------------------------------------------------------------------------------
# The table.


@dataclass
class Case:
    """Two specs that differ in one key only (``a`` vs ``b``), what to run, and what must differ."""

    a: Any
    b: Any
    observe: Callable[[Spec, Path], dict[str, Any]]
    differs: tuple[str, ...]
    context: dict[str, Any] = field(default_factory=dict)
    label: str = ""


def C(a: Any, b: Any, observe: Callable, differs: Union[str, tuple[str, ...]], label: str = "", **context: Any) -> Case:
    """``context`` keys are dotted paths written with ``__`` (``optimizer__name="sgd"``)."""
    ctx = {k.replace("__", "."): v for k, v in context.items()}
    return Case(a, b, observe, (differs,) if isinstance(differs, str) else differs, ctx, label)


M, D, L, O, S, F = observe_model, observe_data, observe_loss, observe_optimizer, observe_schedule, observe_fit
NO_ES = {"train__early_stopping__enabled": False}
TB = {"logging__tensorboard": True}
CSV = {"data__name": "csv", "data__target": "y"}
NO_ID = {"data__name": "csv", "data__path": "@tab.csv", "data__target": "y"}  # id, text, bool, codes, empty cells
TAB = {**NO_ID, "data__id": "id"}
IMPUTE = {**TAB, "data__missing": "impute_mean"}

KEY_CHANGES: dict[str, Union[Case, list[Case]]] = {
    "name": C("keys", "other", observe_run_path, "name"),
    # data ---------------------------------------------------------------------------------------
    "data.name": C("xor", "moons", D, "train_x"),
    "data.path": C("@a.csv", "@b.csv", D, ("train_x", "train_y"), **CSV),
    "data.train_path": C("@a.csv", "@b.csv", D, ("train_x", "train_y"), **CSV),
    "data.val_path": C(None, "@val.csv", D, ("sizes", "val_x"), **CSV, data__train_path="@a.csv"),
    "data.test_path": C(None, "@val.csv", D, ("sizes", "test_x"), **CSV, data__train_path="@a.csv"),
    "data.target": C("y", "z", D, "train_y", data__name="csv", data__path="@a.csv"),
    "data.positive_class": C(None, "0", D, "train_y", data__name="moons"),  # class 0's rows become the 1s
    "data.features": C(None, ["x0"], D, "in_features", **CSV, data__path="@a.csv"),
    "data.id": C(None, "id", D, "in_features", **NO_ID, data__missing="impute_mean"),
    "data.categorical": C(None, ["code"], D, ("in_features", "train_x"), **IMPUTE),
    "data.missing": [
        C("error", "drop", observe_data_or_error, "outcome", label="error", **TAB),
        C("drop", "impute_mean", D, "sizes", label="drop", **TAB),
        C("impute_mean", "impute_median", D, "train_x", label="median", **TAB),
        C("impute_mean", "impute_constant", D, "train_x", label="constant", **TAB, data__fill_value=100.0),
    ],
    "data.fill_value": C(0.0, 5.0, D, "train_x", **TAB, data__missing="impute_constant"),
    "data.n_samples": C(100, 60, D, "sizes"),
    "data.noise": [C(0.1, 0.3, D, "train_x", label=n, data__name=n) for n in ("xor", "moons", "circles", "spirals", "blobs")]
    + [C(0.1, 0.3, D, "train_y", label="sine", data__name="sine")],
    "data.n_classes": [C(3, 4, D, "out_features", label=n, data__name=n) for n in ("blobs", "spirals")],
    "data.n_features": C(2, 3, D, "in_features", data__name="blobs"),
    "data.seed": C(0, 1, D, "train_x"),
    "data.split.val": C(0.15, 0.3, D, "sizes"),
    "data.split.test": C(0.15, 0.3, D, "sizes"),
    "data.split.seed": C(0, 1, D, "val_x"),
    "data.split.stratify": C(True, False, D, "val_x"),
    "data.scale": [C("standard", "minmax", D, ("train_x", "scaler"), label="minmax"),
                   C("standard", "none", D, ("train_x", "scaler"), label="none")],
    "data.scale_target": C(True, False, D, "train_y", data__name="sine"),
    "data.root": C("@img_a", "@img_b", D, "train_x", data__name="mnist"),
    "data.download": C(False, True, observe_download, "outcome", data__name="mnist", data__root="@nowhere"),
    "data.subset": C("balanced", "digits", D, ("out_features", "train_x"), data__name="emnist", data__root="@emnist"),
    # augment ------------------------------------------------------------------------------------
    "augment.hflip": C(False, True, F, "metrics", data__name="mnist", data__root="@img_a"),
    "augment.shift": C(0, 2, F, "metrics", data__name="mnist", data__root="@img_a"),
    "augment.noise": C(0.0, 0.5, F, "metrics"),
    "augment.rotate": C(0.0, 30.0, F, "metrics", data__name="mnist", data__root="@img_a"),
    "augment.scale": C(None, [0.8, 1.2], F, "metrics", data__name="mnist", data__root="@img_a"),
    "augment.elastic.alpha": C(0.0, 8.0, F, "metrics", data__name="mnist", data__root="@img_a"),
    "augment.elastic.sigma": C(4.0, 1.0, F, "metrics", data__name="mnist", data__root="@img_a", augment__elastic__alpha=8.0),
    "augment.crop": C(0, 2, F, "metrics", data__name="mnist", data__root="@img_a"),
    "augment.label_noise": C(0.0, 0.3, F, "metrics"),
    "augment.mixup": C(0.0, 0.4, F, "metrics"),
    # adversarial --------------------------------------------------------------------------------
    "adversarial.method": [C(None, "fgsm", F, "metrics", label="on", adversarial__epsilon=0.3),
                           C("fgsm", "pgd", F, "metrics", label="pgd", adversarial__epsilon=0.3)],
    "adversarial.epsilon": C(0.1, 0.5, F, "metrics", adversarial__method="fgsm"),
    "adversarial.weight": C(0.5, 1.0, F, "metrics", adversarial__method="fgsm", adversarial__epsilon=0.3),
    "adversarial.steps": C(10, 2, F, "metrics", adversarial__method="pgd", adversarial__epsilon=0.3, adversarial__step_size=0.01),
    "adversarial.step_size": C(None, 0.01, F, "metrics", adversarial__method="pgd", adversarial__epsilon=0.3),
    "adversarial.random_start": C(True, False, F, "metrics", adversarial__method="pgd", adversarial__epsilon=0.3),
    # regularization -----------------------------------------------------------------------------
    "regularization.l1": C(0.0, 0.01, F, "metrics"),
    "regularization.l2": C(0.0, 0.5, F, "metrics"),
    "regularization.include_bias": C(False, True, F, "metrics", regularization__l2=0.5),
    "regularization.max_norm": C(None, 0.1, F, "metrics"),
    "regularization.activation_l1": C(0.0, 0.5, F, "metrics"),
    "regularization.weight_noise": C(0.0, 0.5, F, "metrics"),
    # model --------------------------------------------------------------------------------------
    "model.hidden": C([4], [4, 3], M, ("structure", "parameters")),
    "model.activation.name": C("relu", "tanh", M, "eval_output"),
    "model.activation.slope": [C(0.01, 0.5, M, "eval_output", label=n, model__activation__name=n)
                               for n in ("leaky_relu", "prelu")],
    "model.activation.alpha": C(1.0, 2.0, M, "eval_output", model__activation__name="elu"),
    "model.activation.beta": C(1.0, 3.0, M, "eval_output", model__activation__name="softplus"),
    "model.activation.k": C(2, 3, M, ("parameters", "eval_output"), model__activation__name="maxout"),
    "model.init.name": C("default", "xavier_uniform", M, "weights"),
    "model.init.std": C(0.01, 0.5, M, "weights", model__init__name="normal"),
    "model.init.a": C(0.05, 0.5, M, "weights", model__init__name="uniform"),
    "model.init.gain": [C(1.0, 2.0, M, "weights", label=n, model__init__name=n)
                        for n in ("xavier_uniform", "xavier_normal", "glorot_uniform", "glorot_normal", "orthogonal")],
    "model.init.bias": C(0.0, 0.5, M, "weights", model__init__name="xavier_uniform"),
    "model.input_dropout": C(0.0, 0.5, M, ("structure", "train_output")),
    "model.dropout": C(0.0, 0.5, M, ("structure", "train_output")),
    "model.norm": [C("none", n, M, ("structure", "eval_output"), label=n) for n in ("batch", "layer")],
    "task": C("auto", "multiclass", D, ("task", "out_features")),
    # loss ---------------------------------------------------------------------------------------
    "loss.name": C(None, "hinge", L, ("name", "value")),
    "loss.label_smoothing": [C(0.0, 0.3, L, "value", label=n, data__name="spirals", loss__name=n)
                             for n in ("cross_entropy", "kl_div")] + [C(0.0, 0.3, L, "value", label="bce", loss__name="bce")],
    "loss.delta": [C(1.0, 0.3, L, "value", label=n, data__name="sine", loss__name=n) for n in ("huber", "smooth_l1")],
    "loss.margin": [C(1.0, 2.0, L, "value", label="binary", loss__name="hinge"),
                    C(1.0, 2.0, L, "value", label="multiclass", data__name="spirals", loss__name="hinge")],
    "loss.class_weight": [
        C(None, "balanced", L, "value", label="balanced", **IMPUTE),
        C(None, {"1": 3.0}, L, "value", label="bce", **IMPUTE),
        C(None, {"0": 3.0}, L, "value", label="cross_entropy", data__name="spirals"),
        C(None, {"0": 3.0}, L, "value", label="nll", data__name="spirals", loss__name="nll"),
    ],
    # optimizer ----------------------------------------------------------------------------------
    "optimizer.name": C("adam", "sgd", O, "weights"),
    "optimizer.lr": [C(0.05, 0.01, O, "weights", label=n, optimizer__name=n)
                     for n in ("sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta")],
    "optimizer.weight_decay": [C(0.0, 0.5, O, "weights", label=n, optimizer__name=n)
                               for n in ("sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta")],
    "optimizer.momentum": [C(0.0, 0.9, O, "weights", label=n, optimizer__name=n) for n in ("sgd", "rmsprop")],
    "optimizer.nesterov": C(False, True, O, "weights", optimizer__name="sgd", optimizer__momentum=0.9),
    "optimizer.betas": [C([0.9, 0.999], [0.5, 0.9], O, "weights", label=n, optimizer__name=n) for n in ("adam", "adamw", "nadam")],
    "optimizer.eps": [C(None, 0.5, O, "weights", label=n, optimizer__name=n)
                      for n in ("adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta")],
    "optimizer.alpha": C(0.99, 0.5, O, "weights", optimizer__name="rmsprop"),
    "optimizer.rho": C(0.9, 0.5, O, "weights", optimizer__name="adadelta"),
    # scheduler ----------------------------------------------------------------------------------
    "scheduler.name": [C("none", n, S, "lrs", label=n, scheduler__milestones=[2, 5])
                       for n in ("step", "multistep", "exponential", "inverse_sqrt", "cosine", "reduce_on_plateau")],
    "scheduler.interval": C("epoch", "step", F, "lr", scheduler__name="exponential", scheduler__gamma=0.5, train__epochs=3),
    "scheduler.warmup": [C(0, 3, S, "lrs", label=n, scheduler__name=n) for n in ("none", "step", "cosine", "reduce_on_plateau")],
    "scheduler.step_size": C(10, 3, S, "lrs", scheduler__name="step"),
    "scheduler.milestones": C([30, 60], [2, 5], S, "lrs", scheduler__name="multistep"),
    "scheduler.gamma": [C(0.1, 0.5, S, "lrs", label=n, scheduler__name=n, scheduler__step_size=2, scheduler__milestones=[2])
                        for n in ("step", "multistep", "exponential")],
    "scheduler.t_max": C(None, 4, S, "lrs", scheduler__name="cosine"),
    "scheduler.min_lr": [C(0.0, 0.02, S, "lrs", label=n, scheduler__name=n, scheduler__patience=0)
                         for n in ("cosine", "reduce_on_plateau")],
    "scheduler.factor": C(0.1, 0.5, S, "lrs", scheduler__name="reduce_on_plateau", scheduler__patience=1),
    "scheduler.patience": C(5, 1, S, "lrs", scheduler__name="reduce_on_plateau"),
    "scheduler.monitor": [
        C(None, "train/loss", observe_plateau, "fed", label="metric", scheduler__name="reduce_on_plateau"),
        C(None, "val/accuracy", observe_plateau, ("fed", "plateau_mode"), label="mode", scheduler__name="reduce_on_plateau"),
    ],
    # train --------------------------------------------------------------------------------------
    "train.epochs": C(2, 3, F, ("epochs_run", "steps"), **NO_ES),
    "train.batch_size": [C(32, "full", F, "steps", label="full"), C(32, 1, F, "steps", label="1")],
    "train.eval_batch_size": C(4096, 8, observe_eval_batches, "eval_batches"),
    "train.shuffle": C(True, False, F, "metrics", train__batch_size=8),
    "train.drop_last": C(False, True, F, "steps"),
    "train.seed": C(0, 1, F, "metrics"),
    "train.device": C("cpu", "cuda", observe_device, "device"),
    "train.precision": C("32", "bf16-mixed", observe_precision, ("dtypes", "metrics")),
    "train.compile": C(False, True, observe_compile, "compiled"),
    "train.cuda_graph": C(True, False, observe_cuda_graph, ("recordings", "cuda_graph")),
    "train.threads": C(1, 2, observe_threads, "threads"),
    "train.backprop": [
        C("autograd", "manual", observe_backprop, "autograd_calls"),
        C("autograd", "auto", observe_backprop, "autograd_calls"),
    ],
    "train.grad_clip": C(None, 0.01, F, "metrics", optimizer__name="sgd", optimizer__lr=0.5),
    "train.early_stopping.enabled": C(True, False, F, ("epochs_run", "stopped_early"), train__epochs=4,
                                      train__early_stopping__patience=1, train__early_stopping__min_delta=100.0),
    "train.early_stopping.monitor": C("val/loss", "train/loss", F, ("monitor", "best_value"), **NO_ES),
    "train.early_stopping.mode": C("min", "max", F, ("mode", "best_epoch"), train__epochs=3, **NO_ES),
    "train.early_stopping.patience": C(1, 3, F, "epochs_run", train__epochs=5, train__early_stopping__min_delta=100.0),
    "train.early_stopping.min_delta": C(0.0, 100.0, F, ("epochs_run", "stopped_early"), train__epochs=4,
                                        train__early_stopping__patience=1, optimizer__lr=0.01),
    "train.early_stopping.restore_best_weights": C(True, False, F, ("final_weights", "metrics"), train__epochs=3,
                                                   train__early_stopping__mode="max", **NO_ES),
    "train.checkpoint.save_best": C(True, False, F, ("files", "checkpoint")),
    "train.checkpoint.save_last": C(True, False, F, "files", train__early_stopping__restore_best_weights=False),
    "train.checkpoint.every_steps": C(None, 2, observe_last_saves, "saves", train__batch_size=16, **NO_ES),
    "train.on_nan": C("stop", "skip_batch", observe_nan, "outcome", train__batch_size=16, **NO_ES),
    # logging ------------------------------------------------------------------------------------
    "logging.runs_dir": C("@runs", "@elsewhere", observe_run_path, "root"),
    "logging.tensorboard": C(False, True, F, "event_files"),
    "logging.step_every": C(10, 1, F, "step_events", train__batch_size=8, **TB),
    "logging.histograms_every": C(0, 1, F, "histograms", **TB),
    "logging.progress": [C("none", "plain", observe_progress, "printed", label="plain"),
                         C("none", "bar", observe_progress, "printed", label="bar")],
}


def _cases() -> list[tuple[str, Case]]:
    out = []
    for key, cases in KEY_CHANGES.items():
        for case in cases if isinstance(cases, list) else [cases]:
            out.append((key, case))
    return out


CASES = _cases()


def _id(key: str, case: Case) -> str:
    return f"{key}[{case.label}]" if case.label else key


# ------------------------------------------------------------------------------------------------
# Shared input files.


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small CSVs (two training files, one split file) with two candidate targets y and z."""
    root = tmp_path_factory.mktemp("key-data")
    for name, n, seed in (("a.csv", 60, 0), ("b.csv", 60, 1), ("val.csv", 10, 2)):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, 2))
        y = (x[:, 0] > 0).astype(int)
        z = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 1] > 1).astype(int)
        lines = ["x0,x1,y,z"] + [f"{a:.6f},{b:.6f},{c},{d}" for (a, b), c, d in zip(x, y, z)]
        (root / name).write_text("\n".join(lines) + "\n")
    # tab.csv: an id, a skewed numeric column and a text column with empty cells, a bool, integer codes;
    # y is imbalanced (about 1 in 4)
    rng = np.random.default_rng(3)
    lines = ["id,x0,color,flag,code,y"]
    for i in range(60):
        x0 = "" if i % 7 == 3 else f"{rng.exponential(2.0):.4f}"
        color = "" if i % 11 == 5 else ["red", "green", "blue"][int(rng.integers(0, 3))]
        lines.append(f"r{i},{x0},{color},{'true' if i % 2 else 'false'},{i % 3},{int(i % 4 == 0)}")
    (root / "tab.csv").write_text("\n".join(lines) + "\n")
    # tiny image sets in their real formats (tests/imagefiles.py): two MNISTs, two EMNIST subsets
    from imagefiles import write_emnist, write_mnist

    write_mnist(root / "img_a", size=8, seed=0)
    write_mnist(root / "img_b", size=8, seed=1)
    write_emnist(root / "emnist", "balanced", n_classes=47, n_train=94, n_test=47, size=8)
    write_emnist(root / "emnist", "digits", n_classes=10, size=8, seed=2)
    return root


# ------------------------------------------------------------------------------------------------
# The tests.


def test_every_key_has_a_behaviour_test():
    """A key accepted by the spec without a case here is a key nobody showed to do anything."""
    keys = leaf_keys()
    assert len(keys) == len(set(keys))
    missing = sorted(set(keys) - set(KEY_CHANGES))
    stale = sorted(set(KEY_CHANGES) - set(keys))
    assert not missing, f"config keys without a behaviour test in KEY_CHANGES: {missing}"
    assert not stale, f"KEY_CHANGES names keys the spec no longer has: {stale}"


def test_leaf_keys_walks_sections_and_the_activation_union():
    keys = leaf_keys()
    assert "optimizer.momentum" in keys and "train.early_stopping.patience" in keys and "data.split.seed" in keys
    assert {f"model.activation.{k}" for k in ("name", "slope", "alpha", "beta", "k")} <= set(keys)
    assert not any(k in keys for k in ("data", "model", "model.activation", "train.early_stopping", "data.split"))


@pytest.mark.parametrize("key, case", CASES, ids=[_id(k, c) for k, c in CASES])
def test_case_changes_only_its_key(key: str, case: Case, files: Path):
    """Each case is a fair one: both values validate, they differ, and the context leaves the key alone."""
    assert key not in case.context, f"{key}: the context sets the key under test"
    assert case.a != case.b
    a = make_spec(key, case.a, case.context, files)
    b = make_spec(key, case.b, case.context, files)
    assert a.model_dump() != b.model_dump()
    da, db = a.model_dump(), b.model_dump()

    def _drop(d: dict[str, Any]) -> dict[str, Any]:
        d = copy.deepcopy(d)
        _set(d, key, _MISSING)
        return d

    assert _drop(da) == _drop(db), f"{key}: the two specs differ elsewhere too"


@pytest.mark.parametrize("key, case", CASES, ids=[_id(k, c) for k, c in CASES])
def test_key_changes_what_happens(key: str, case: Case, files: Path, tmp_path: Path):
    obs = []
    for tag, value in (("a", case.a), ("b", case.b)):
        spec = make_spec(key, value, case.context, files)
        work = tmp_path / tag
        work.mkdir()
        obs.append(case.observe(spec, work))
    for part in case.differs:
        assert obs[0][part] != obs[1][part], (
            f"{_id(key, case)}: {key}={case.a!r} and {key}={case.b!r} give the same {part}: {obs[0][part]!r}"[:600]
        )


# ------------------------------------------------------------------------------------------------
# A few sharper checks where "differs" alone would not say enough.


def test_per_layer_activation_list_sets_each_layer(files: Path):
    spec = make_spec("model.activation", [{"name": "tanh"}, {"name": "leaky_relu", "slope": 0.3}], {"model.hidden": [4, 4]}, files)
    model = pipeline.build(spec).model
    assert isinstance(model.act1, torch.nn.Tanh)
    assert isinstance(model.act2, torch.nn.LeakyReLU) and model.act2.negative_slope == 0.3


def test_scheduler_monitor_feeds_the_plateau_its_own_metric(files: Path, tmp_path: Path):
    ctx = {"scheduler.name": "reduce_on_plateau", "train.epochs": 3}
    for metric, mode in (("train/loss", "min"), ("val/accuracy", "max")):
        spec = make_spec("scheduler.monitor", metric, ctx, files)
        work = tmp_path / metric.replace("/", "_")
        work.mkdir()
        obs = observe_plateau(spec, work)
        assert obs["fed"] == [float(r[metric]) for r in obs["history"]]
        assert obs["plateau_mode"] == [mode]
    # the default watches (and follows the direction of) the early-stopping metric
    spec = make_spec("scheduler.monitor", None, {**ctx, "train.early_stopping.mode": "max"}, files)
    (tmp_path / "default").mkdir()
    obs = observe_plateau(spec, tmp_path / "default")
    assert obs["fed"] == [float(r["val/loss"]) for r in obs["history"]] and obs["plateau_mode"] == ["max"]


def test_eval_batch_size_splits_evaluation(files: Path, tmp_path: Path):
    spec = make_spec("train.eval_batch_size", 8, {"train.epochs": 1}, files)
    obs = observe_eval_batches(spec, tmp_path)
    assert obs["eval_batches"] and max(obs["eval_batches"]) == 8


def test_early_stopping_patience_counts_epochs(files: Path, tmp_path: Path):
    # min_delta 100: only epoch 1 improves, so a run stops after `patience` bad epochs
    for patience in (1, 3):
        spec = make_spec("train.early_stopping.patience", patience, {"train.epochs": 6, "train.early_stopping.min_delta": 100.0}, files)
        (tmp_path / str(patience)).mkdir()
        obs = observe_fit(spec, tmp_path / str(patience))
        assert obs["epochs_run"] == 1 + patience and obs["stopped_early"]


def test_step_every_sets_the_number_of_step_events(files: Path, tmp_path: Path):
    # 70 training rows, batch 8: 9 steps an epoch; one event every N steps and one at each epoch's end
    counts = {}
    for every in (1, 4):
        spec = make_spec("logging.step_every", every, {"train.batch_size": 8, "train.epochs": 1, "logging.tensorboard": True}, files)
        (tmp_path / str(every)).mkdir()
        counts[every] = observe_fit(spec, tmp_path / str(every))["step_events"]
    assert counts == {1: 9, 4: 3}


def test_scheduler_interval_step_counts_optimizer_steps(files: Path, tmp_path: Path):
    # 70 training rows, batch 32: 3 steps an epoch; the lr is logged at each epoch's end
    ctx = {"scheduler.name": "exponential", "scheduler.gamma": 0.5, "train.epochs": 3, "train.early_stopping.enabled": False}
    lrs = {}
    for interval in ("epoch", "step"):
        spec = make_spec("scheduler.interval", interval, ctx, files)
        (tmp_path / interval).mkdir()
        lrs[interval] = observe_fit(spec, tmp_path / interval)["lr"]
    assert lrs["epoch"] == pytest.approx([0.05 * 0.5**e for e in range(3)])
    assert lrs["step"] == pytest.approx([0.05 * 0.5 ** (3 * e - 1) for e in range(1, 4)])  # the epoch's last step's
