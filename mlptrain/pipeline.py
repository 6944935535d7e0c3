"""The one-way trip of a run: Spec -> Data -> Model + Loss + Optimizer -> Engine -> Run directory,
and back for eval/predict: Checkpoint -> Spec + Preprocessing + Model -> Data -> Metrics.

This is the only module that turns config values into built objects; the engine gets those
objects and the CLI gets plain results to print.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import random
import signal
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from mlptrain import attacks, augment, checkpoint, data as datamod, plan as plan_mod, regularizers
from mlptrain.backprop import Backprop
from mlptrain.config import Spec, dump_yaml, spec_to_dict, validate_dict
from mlptrain.engine import (
    FitResult, Interrupt, Loop, NonFiniteLoss, Progress, Task, epoch_steps, fit, mc_dropout_logits, model_device, predict_logits,
    resolve_precision, score, unscale,
)
from mlptrain.errors import (
    CheckpointError, CheckpointWarning, ConfigError, DataError, DataWarning, Interrupted, MlptrainError, RunDirError, TrainingError,
)
from mlptrain.losses import build_loss, output_unit
from mlptrain.metrics import confusion_matrix, predict_classes
from mlptrain.model import build_model, count_parameters
from mlptrain.optim import LRSchedule, build_optimizer
from mlptrain.state import run_over, unpack_history
from mlptrain.runs import (
    RESUMABLE, Classified, Run, create_run_dir, flatten, logged_steps, probe_writable, read_json, read_metrics, remove_partial_files,
)
from mlptrain.wording import plural


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available; an unavailable cuda is an error, not a silent fallback."""
    from mlptrain.config import check_device

    try:
        check_device(name)
    except ValueError as exc:
        raise ConfigError(f"--device: {exc}") from None
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MlptrainError(f"device '{name}': CUDA is not available here; use --device cpu (or auto)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise MlptrainError(f"device '{name}': only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)  # with its index, so it compares equal to a tensor's .device
    return torch.device(name)


def _augment_examples(run: Run, parts: list[Any], x: torch.Tensor, state: dict[str, Any], seed: int,
                      device: torch.device) -> None:
    """TensorBoard's picture of what `augment` does to the first training images (an image set's)."""
    part = next((p for p in parts if isinstance(p, regularizers.Augment)), None)
    if run.writer is None or part is None or "image_shape" not in state:
        return
    picture = augment.examples(part.apply, x[:8].to(device), state["image_shape"], state["scaler"], seed)
    run.log_image("augment/examples", picture)


def configure_torch(threads: Optional[int], device: torch.device) -> None:
    """Process-wide speed settings, made before the first parallel torch op of a run.

    Flushing denormals matters: Adam's running averages of always-zero gradients (dead ReLUs,
    always-black pixels) decay into denormal floats, which made CPU epochs ~50 % slower as training went on.
    """
    import os

    torch.set_flush_denormal(True)
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Built:
    """Everything a run needs, built from a spec and its data."""

    spec: Spec
    prepared: datamod.Prepared
    model: torch.nn.Sequential
    loss_name: str
    loss_fn: Any
    task: Task
    plan: Optional[plan_mod.Plan] = None  # the verdict of plan.check, for a spec about to train


def build(spec: Spec, state: Optional[dict[str, Any]] = None, prepared: Optional[datamod.Prepared] = None) -> Built:
    """Data, model and loss for a spec (``state``: preprocessing from a checkpoint; ``prepared``: data
    already at hand, or a checkpoint's preprocessing alone, so that no data file is read). A spec
    with no checkpoint behind it goes through plan.check first, as validate does."""
    if prepared is None:
        prepared = datamod.prepare(spec.data, spec.task, state)
    verdict = plan_mod.check(spec, prepared) if state is None else None
    task = prepared.task
    st = prepared.state
    loss_name, loss_fn = build_loss(spec.loss, task, st.get("class_names"), st.get("class_counts"))
    seed_everything(spec.train.seed)
    model = build_model(spec.model, prepared.in_features, prepared.out_features)
    n_classes = len(st["class_names"]) if task in ("binary", "multiclass") else prepared.out_features
    mean = torch.tensor(st["target_mean"], dtype=torch.float32) if st.get("target_mean") is not None else None
    std = torch.tensor(st["target_std"], dtype=torch.float32) if st.get("target_std") is not None else None
    return Built(spec, prepared, model, loss_name, loss_fn, Task(task, max(n_classes, 2), mean, std), verdict)


def _tensors(split: Optional[datamod.Split], device: torch.device) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    if split is None:
        return None
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    if device.type == "cuda" and not x.is_pinned() and device != x.device and _keep_on_host(split, device):
        return x.pin_memory(), y.pin_memory()  # streamed per batch by the engine
    return x.to(device), y.to(device)


def _keep_on_host(split: datamod.Split, device: torch.device) -> bool:
    """Data larger than half the device's free memory stays in pinned host memory."""
    free, _ = torch.cuda.mem_get_info(device)
    return split.x.nbytes + split.y.nbytes > free // 2


def maybe_compile(model: torch.nn.Module, enabled: bool, sample: torch.Tensor, notify: Callable[[str], None]) -> Any:
    """``torch.compile`` the training forward, falling back to eager with one line where it cannot."""
    if not enabled:
        return model
    try:
        compiled = torch.compile(model)
        with torch.no_grad():
            compiled(sample[:2].to(model_device(model)))  # compile now, so failures show here
        return compiled
    except Exception as exc:  # no compiler, unsupported platform, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        notify(f"warning: train.compile: torch.compile is unavailable here ({first}); training eagerly")
        return model


def manual_backprop(spec: Spec, built: Built, precision: str) -> tuple[Optional[Backprop], Optional[str]]:
    """``train.backprop`` resolved: the hand-written backward pass where it covers the setup, else None
    (autograd) and why (``plan.autograd_why``, for summary.json)."""
    blocker = plan_mod.manual_blocker(spec, built.loss_name, precision, built.plan.parts, built.task.name)
    if spec.train.backprop == "manual" and blocker is not None:
        raise ConfigError(f"train.backprop: manual does not cover {blocker}; set train.backprop: auto (or autograd)")
    why = plan_mod.autograd_why(spec, blocker)
    return (Backprop(built.model, built.loss_name, spec.loss) if why is None else None), why


def capturable(optimizer: torch.optim.Optimizer) -> bool:
    """The optimizer keeps its step counters on the device (``capturable``) or has none (SGD): a CUDA graph can step it."""
    return isinstance(optimizer, torch.optim.SGD) or all("capturable" in g for g in optimizer.param_groups)


@dataclass
class FitOutcome:
    run_dir: Path
    metrics: dict[str, dict[str, float]]  # split -> metric -> value
    summary: dict[str, Any]
    checkpoint: Optional[Path]  # None when train.checkpoint kept no file with the final weights


def _resumed_rows(run_path: Path, resume: dict[str, Any]) -> list[dict[str, Any]]:
    """metrics.csv's rows up to last.pt: the values from last.pt's history (metrics.csv is written
    lazily, so a killed run's file can be epochs behind its last.pt), each epoch's seconds from the file."""
    seconds = {int(r["epoch"]): r.get("epoch_seconds") for r in read_metrics(run_path)}
    rows = []
    for row in unpack_history(resume["resume"]["history"]):
        if seconds.get(row["epoch"]):
            row["epoch_seconds"] = float(seconds[row["epoch"]])
        rows.append(row)
    return rows


def _wall_before(resume: Optional[dict[str, Any]]) -> float:
    """The wall time of a resumed run's sessions so far, from its last.pt (one written before last.pt kept
    it: its epochs' seconds, the most that is known)."""
    if resume is None:
        return 0.0
    seconds = resume["resume"]["seconds"]
    return float(seconds.get("wall", seconds["train"] + seconds["val"]))


def run_base(spec: Spec, runs_root: Optional[Path], run_dir: Optional[Path]) -> Path:
    """The directory a new run goes into (``runs/<name>/``), or is (``--run-dir``)."""
    root = Path(runs_root) if runs_root is not None else Path(spec.logging.runs_dir)
    return Path(run_dir) if run_dir is not None else root / (spec.name or "run")


def start_run(spec: Spec, runs_root: Optional[Path], run_dir: Optional[Path], command: str = "mlptrain") -> Path:
    """Create the run directory first, so its path can be printed before anything slow happens
    (``command``: how the user runs mlptrain, for the command a refusal suggests)."""
    base = run_base(spec, runs_root, run_dir)
    return create_run_dir(base.parent, base.name, run_dir, command)


SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


@contextlib.contextmanager
def signals_stop(interrupt: Interrupt, run_path: Optional[Path] = None, command: str = "mlptrain") -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to save last.pt and return; a second one exits at once.

    Exiting at once is safe for the files: every one is written to a temporary name and renamed,
    so a run directory holds whole old files or whole new ones, never half of one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handle(signum: int, frame: Any) -> None:
        if interrupt.signal is not None:
            then = f" (go on with: {command} resume {run_path})" if run_path is not None else ""
            os.write(2, f"\n{SIGNAL_NAMES.get(signum, signum)} again: stopping now; last.pt keeps the last saved state{then}\n".encode())
            os._exit(128 + signum)
        interrupt.signal = signum

    previous = {s: signal.signal(s, handle) for s in SIGNAL_NAMES}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def train(
    spec: Spec, run_path: Path, device_name: str, progress: Optional[Progress] = None,
    notify: Callable[[str], None] = lambda message: None, resume: Optional[dict[str, Any]] = None, command: str = "mlptrain",
) -> FitOutcome:
    """Fit a spec into an existing, empty run directory, or go on from its ``last.pt`` (``resume``).

    ``notify`` receives warnings for the user. SIGINT/SIGTERM save last.pt and raise ``Interrupted``.
    ``command`` is how the user runs mlptrain (``python -m mlptrain``), for the commands messages suggest.
    """
    device = resolve_device(device_name)
    configure_torch(spec.train.threads, device)
    built = build(spec)
    prepared, model, task = built.prepared, built.model, built.task
    if resume is not None:
        _check_same_data(resume, prepared, run_path)
    names = prepared.state["class_names"]
    if resume is None and spec.task == "auto" and task.name == "multiclass" and len(names) > 10 and all(
        n.lstrip("-").isdigit() for n in names
    ):  # a guess worth saying: integer scores or counts read as classes
        notify(f"warning: data.target: {len(names)} integer values ({names[0]} to {names[-1]}) are taken for classes "
               "(task: auto); set task: regression if they are quantities")
    model.to(device)
    verdict = built.plan
    es = spec.train.early_stopping
    monitor, mode, plateau_monitor = verdict.monitor, verdict.mode, verdict.plateau_monitor
    optimizer = build_optimizer(model.parameters(), spec.optimizer, fused=device.type in ("cpu", "cuda"))
    per_step = plan_mod.schedule_per_step(spec)
    batch = None if spec.train.batch_size == "full" else int(spec.train.batch_size)
    n_train = len(prepared.train.x)
    steps = epoch_steps(n_train, batch, spec.train.drop_last, model)  # as many as the engine takes (drop_last, BatchNorm)
    schedule = LRSchedule(optimizer, spec.scheduler, spec.train.epochs * (steps if per_step else 1), verdict.plateau_mode)
    ckpt_spec = spec.train.checkpoint
    loop = Loop(
        epochs=spec.train.epochs, batch_size=batch, eval_batch_size=spec.train.eval_batch_size,
        shuffle=spec.train.shuffle, drop_last=spec.train.drop_last, seed=spec.train.seed,
        grad_clip=spec.train.grad_clip, monitor=monitor, mode=mode, early_stopping=es.enabled,
        patience=es.patience, min_delta=es.min_delta, restore_best_weights=es.restore_best_weights,
        save_best=ckpt_spec.save_best, save_last=ckpt_spec.save_last, checkpoint_every_steps=ckpt_spec.every_steps,
        step_every=spec.logging.step_every, histograms_every=spec.logging.histograms_every if spec.logging.tensorboard else 0,
        schedule_per_step=per_step, plateau_monitor=plateau_monitor, device=device,
        precision=resolve_precision(spec.train.precision, device),
        parts=regularizers.build(spec, verdict.parts, prepared.state, device), on_nan=spec.train.on_nan,
        weight_stats=spec.regularization.active,
    )

    manual, autograd_why = manual_backprop(spec, built, loop.precision)  # before the run directory gets its first file
    spec_dict = spec_to_dict(spec)
    inline = device.type == "cpu"  # see Run: serialize checkpoints in line when training uses the CPU cores
    if resume is None:
        run = Run(run_path, spec.logging.tensorboard, checkpoint.write, serialize_inline=inline, command=command)
    else:  # metrics.csv as far as last.pt goes; TensorBoard steps already on disk are not logged twice
        run = Run(run_path, spec.logging.tensorboard, checkpoint.write, _resumed_rows(run_path, resume), logged_steps(run_path),
                  serialize_inline=inline, command=command)
        run.mark_resumed()
    run.static = {
        "spec": spec_dict,
        "data_state": prepared.state,
        "class_names": list(prepared.state["class_names"]),
        "in_features": prepared.in_features,
        "out_features": prepared.out_features,
    }
    run.write_config(dump_yaml(spec_dict))
    run.start_clock(_wall_before(resume))
    try:
        train_t = _tensors(prepared.train, device)
        loop.host_batches = train_t[0].device != device
        _augment_examples(run, loop.parts, train_t[0], prepared.state, spec.train.seed, device)
        forward = maybe_compile(model, spec.train.compile, train_t[0], notify)
        loop.graph_off = plan_mod.graph_blocker(
            spec, verdict.parts, device=device.type, precision=loop.precision, host_resident=loop.host_batches,
            compiled=forward is not model, capturable=capturable(optimizer),
        )
        # The hundreds of thousands of objects torch, pydantic and rich leave behind would make every
        # full garbage collection during training walk them all: 0.1-0.2 s stalls, one every few
        # epochs (a 20-epoch digits run spent a third of its time there). Freezing them skips that.
        gc.freeze()
        try:
            with signals_stop(loop.interrupt, run_path, command):
                result = fit(
                    model, built.loss_fn, optimizer, schedule, train_t, _tensors(prepared.val, device),
                    task, loop, run, progress, forward, resume, manual,
                )
        except NonFiniteLoss as exc:
            run.flush()  # the last good last.pt on disk before the message points at it
            raise TrainingError(_diverged(exc, run.checkpoint_path("last"), loop)) from None
        finally:
            gc.unfreeze()
        if result.interrupted is not None:
            run.flush()
            raise Interrupted(_interrupted(result, run_path, loop, steps, command), result.interrupted)
        if result.skipped_batches:
            notify(f"warning: train.on_nan: skipped {plural(result.skipped_batches, 'batch', 'batches')} whose loss was NaN or infinite")
        metrics, classified = {}, {}
        for name, split in (("train", prepared.train), ("val", prepared.val), ("test", prepared.test)):
            t = train_t if name == "train" else _tensors(split, device)
            if t is not None:
                logits = predict_logits(model, t[0], loop.eval_batch_size, loop.precision)
                metrics[name] = score(logits, t[1], built.loss_fn, task)
                if name != "train" and spec.logging.tensorboard and task.name in ("binary", "multiclass"):
                    classified[name] = _classified(task, logits, t[1])
        # The checkpoint to point users at must hold exactly the weights the metrics were computed with.
        weights = "best" if (es.restore_best_weights and result.best_epoch) else "last"
        same_as_last = weights == "last" or result.best_epoch == result.epochs_run
        if weights == "best" and loop.save_best:
            ckpt: Optional[Path] = run.checkpoint_path("best")
        elif same_as_last and loop.save_last:
            ckpt = run.checkpoint_path("last")
        else:
            ckpt = None
        run.flush()  # checkpoints and metrics.csv on disk before summary.json says the run is complete
        if ckpt is not None and weights == "best" and not ckpt.is_file():  # removed while a stopped run waited
            row = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
            run.save_checkpoint("best", {
                "model": model.state_dict(), "epoch": result.best_epoch, "step": None,
                "metrics": {k: v for k, v in row.items() if k != "epoch"},
                "best": {"epoch": result.best_epoch, "value": result.best_value, "monitor": loop.monitor, "mode": loop.mode},
            }, durable=True)  # the model holds that epoch's weights: restore_best_weights put them back
            run.flush()
            notify(f"warning: {ckpt} was missing; written again from epoch {result.best_epoch}'s weights (the weights of the final metrics)")
        summary = {
            "status": "complete",
            "run_dir": str(run_path),
            "task": task.name,
            "loss": built.loss_name,
            "device": str(device),
            "precision": loop.precision,
            "backprop": "manual" if manual is not None else "autograd",
            "backprop_why": autograd_why,  # why autograd, as validate's step line says it (null: manual ran)
            "cuda_graph": result.cuda_graph,  # "on", or "off: why" (plan.graph_blocker)
            "monitor": monitor,
            "mode": mode,
            "best_epoch": result.best_epoch,
            "best_value": result.best_value,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "steps": result.steps,
            "skipped_batches": result.skipped_batches,
            "parameters": count_parameters(model),
            "train_seconds": round(result.train_seconds, 3),  # training epochs, without validation
            "val_seconds": round(result.val_seconds, 3),  # the per-epoch validation passes
            "warmup_seconds": round(result.warmup_seconds, 3),  # CUDA's one-time costs, before the training clock
            "wall_seconds": round(run.wall_seconds(), 3),  # every session of a resumed run
            "final_weights": weights,
            "checkpoint": str(ckpt) if ckpt else None,
            # eval warns when a checkpoint no longer matches what its run wrote
            "checkpoints": {
                name: {"path": str(p), "sha256": checkpoint.sha256(p), "format_version": checkpoint.FORMAT_VERSION}
                for name in ("best", "last") if (p := run.checkpoint_path(name)).is_file()
            },
            "metrics": metrics,
        }
        hp = {k: v for k, v in flatten(spec_dict).items() if not k.startswith("logging.")}
        run.log_final(hp, metrics, result.epochs_run, classified, list(names))  # before summary.json calls the run complete
        run.write_summary(summary)
    finally:
        run.close()
    return FitOutcome(run_path, metrics, summary, ckpt)


def _diverged(exc: NonFiniteLoss, last: Path, loop: Loop) -> str:
    kept = f"{last} keeps the last good state" if last.is_file() else "no checkpoint was saved before it"
    skipping = loop.on_nan == "skip_batch"
    how = "every batch of the epoch was skipped" if skipping else "stopped"
    helps = "train.grad_clip may help" if skipping else "train.grad_clip or train.on_nan: skip_batch may help"
    return (
        f"{exc}; {how} ({kept}). Likely causes: a learning rate too high (optimizer.lr), a loss that does not fit "
        f"the task (loss.name), or unscaled inputs (data.scale); {helps}"
    )


def _interrupted(result: FitResult, run_path: Path, loop: Loop, steps_per_epoch: int, command: str) -> str:
    name = SIGNAL_NAMES.get(result.interrupted, f"signal {result.interrupted}")
    at_end = result.steps == result.epochs_run * steps_per_epoch and not result.skipped_batches  # (as resume will say)
    epoch = f"the end of epoch {result.epochs_run}" if at_end else f"within epoch {result.epochs_run + 1}"
    where = f"interrupted by {name} after step {result.steps} ({epoch})"
    if not loop.save_last:
        return f"{where}; train.checkpoint.save_last is off, so there is nothing to resume from"
    return f"{where}; saved {run_path / 'checkpoints' / 'last.pt'}; resume with: {command} resume {run_path}"


def _check_same_data(state: dict[str, Any], prepared: datamod.Prepared, run_path: Path) -> None:
    """A resumed run must see the data it started with (same columns, classes and preprocessing)."""
    now = {"class_names": list(prepared.state["class_names"]), "in_features": prepared.in_features,
           "out_features": prepared.out_features}
    changes = [f"{key} was {state.get(key)}, is {value}" for key, value in now.items() if state.get(key) != value]
    was = state["data_state"].get("splits") or {}  # rows and CRC-32 of each split (checkpoints before it have none)
    splits = prepared.state["splits"] if was else {}
    changes += [c for c in (datamod.split_change(k, was.get(k), splits.get(k)) for k in dict.fromkeys([*was, *splits])) if c]
    if changes:
        raise DataError(
            f"{run_path}: the data changed since this run started ({changes[0]}); "
            "resume needs the same data: start a new run with mlptrain fit"
        )


def _warn_if_edited(path: Path, stored: dict[str, Any]) -> None:
    """config.yaml is what the run was started with, for the reader: a resume trains on last.pt's copy and
    writes the file again, so an edit there would vanish without a word."""
    import yaml

    try:
        on_disk = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        on_disk = None
    if json.loads(json.dumps(on_disk, default=str)) != json.loads(json.dumps(stored, default=str)):
        warnings.warn(CheckpointWarning(
            f"{path}: differs from the config the run was started with (edited, damaged or missing); a resumed run "
            f"trains on last.pt's copy and writes the file again: change {', '.join(RESUMABLE)} with --set"
        ), stacklevel=2)


def _no_last_pt(run_dir: Path, command: str) -> str:
    """Why a directory without checkpoints/last.pt cannot be resumed: a run that kept none, or no run at all
    (then the newest run below it, if any, is the likely meant one)."""
    if (run_dir / "config.yaml").is_file() or (run_dir / "checkpoints").is_dir():
        return (
            f"{run_dir}: no checkpoints/last.pt to resume from (train.checkpoint.save_last was off, or the run "
            f"stopped before its first epoch ended); start it again with {command} fit (a new --run-dir, or none)"
        )
    below = [p for pattern in ("*/checkpoints/last.pt", "*/*/checkpoints/last.pt") for p in run_dir.glob(pattern)]
    newest = max(below, key=lambda p: p.stat().st_mtime, default=None)
    example = f", e.g. {command} resume {newest.parent.parent}" if newest else " (runs/<name>/<time>)"
    return (
        f"{run_dir}: not an mlptrain run directory (it has no config.yaml or checkpoints/last.pt); "
        f"give the run directory `{command} fit` printed{example}"
    )


def _without_resume_state(last: Path, state: dict[str, Any], command: str) -> str:
    """Why a last.pt without resume state cannot be resumed: best.pt's kind of file (weights only) put in
    its place, or a last.pt of a format before resume existed."""
    if state.get("format_version", 1) >= 2 and "optimizer" not in state:
        config = last.parent.parent / "config.yaml"
        return (
            f"{last}: a best-weights checkpoint (like best.pt: the weights of epoch {state.get('epoch')}) without the "
            f"state resume needs (optimizer, counters, random streams); resume needs the last.pt its run wrote. "
            f"Score these weights with: {command} eval {last}; or train a new run: "
            f"{command} fit {config if config.is_file() else 'CONFIG'} --set KEY=VALUE"
        )
    return f"{last}: written by an older mlptrain, without the state resume needs; start the run again with {command} fit"


def load_resume(
    run_dir: Path, overrides: list[str], config: Optional[Path] = None, command: str = "mlptrain",
) -> tuple[Spec, dict[str, Any]]:
    """The spec and last.pt of a stopped run, after checking that there is something left to train
    (``command``: how the user runs mlptrain, for the commands the messages suggest)."""
    from mlptrain.config import apply_overrides, load_spec

    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.parent.name == "checkpoints":
        raise RunDirError(f"{run_dir}: a checkpoint, not a run directory; give its run's directory: {command} resume {run_dir.parent.parent}")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory; give the directory `{command} fit` printed")
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise RunDirError(_no_last_pt(run_dir, command))
    state = checkpoint.load(last, damaged_hint=f"this run cannot go on from it: start it again with {command} fit (best.pt, if whole, still serves eval and predict)")
    if "resume" not in state:
        raise CheckpointError(_without_resume_state(last, state, command))
    stored = state["spec"]
    _warn_if_edited(run_dir / "config.yaml", stored)
    if config is not None:
        spec = load_spec(config, overrides)
    else:
        spec = validate_dict(apply_overrides(copy.deepcopy(stored), overrides), f"{last} (stored config) with --set")
    before, after = flatten(stored), flatten(spec_to_dict(spec))
    changed = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k) and k not in RESUMABLE]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"{key}: the run was trained with {before.get(key)!r}, not {after.get(key)!r}; a resumed run keeps its "
            f"config except {', '.join(RESUMABLE)}: start a new run to change the rest"
        )
    done, bad = state["epoch"], state["resume"]["bad_epochs"]
    es = spec.train.early_stopping
    at_end = state["resume"]["position"] is None and read_json(run_dir / "summary.json") is not None  # else: finish it (a damaged summary is written again)
    partial = state["resume"]["position"] is not None  # stopped within epoch done + 1
    if not at_end and spec.train.epochs < done + partial:
        trained = plural(done, "epoch") + (f" and part of epoch {done + 1}" if partial else "")
        raise ConfigError(
            f"train.epochs={spec.train.epochs}: {run_dir} has already trained {trained}; give train.epochs >= "
            f"{done + partial} (or leave it out to finish the run's {stored['train']['epochs']})"
        )
    if at_end and run_over(done, bad, spec.train.epochs, es.enabled, es.patience):
        if done >= spec.train.epochs:
            raise RunDirError(
                f"{run_dir}: complete, {'its 1 epoch' if done == 1 else f'all {done} epochs'} ran; to train longer: "
                f"{command} resume {run_dir} --set train.epochs={done * 2}"
            )
        raise RunDirError(
            f"{run_dir}: stopped early at epoch {done} ({plural(bad, 'epoch')} without improvement); to go on: "
            f"{command} resume {run_dir} --set train.early_stopping.patience={bad + es.patience}"
        )
    return spec, state


def resume(
    run_dir: Path, spec: Spec, state: dict[str, Any], device_name: Optional[str] = None,
    progress: Optional[Progress] = None, notify: Callable[[str], None] = lambda message: None, command: str = "mlptrain",
) -> FitOutcome:
    """Go on training a stopped run in its own directory, from the very next step of its last.pt
    (``command``: how the user runs mlptrain, as ``train`` takes it)."""
    run_dir = Path(run_dir)
    probe_writable(run_dir, f"make it writable (or free space), or copy the run directory elsewhere and resume the copy: "
                            f"cp -r {run_dir} NEW_DIR && {command} resume NEW_DIR")
    remove_partial_files(run_dir)  # temporary files of writes a kill cut short (whole files are untouched)
    return train(spec, run_dir, device_name or spec.train.device, progress, notify, resume=state, command=command)


# ---------------------------------------------------------------------------------------------
# Back from a checkpoint.


@dataclass
class Restored:
    spec: Spec
    built: Built
    state: dict[str, Any]
    # DataWarnings from rebuilding the run's splits, held back: fit showed them; eval re-shows its split's
    data_warnings: list[DataWarning] = field(default_factory=list)
    precision: str = "32"  # train.precision as fit resolved it on this device, so eval prints fit's digits


def restore(path: Path, device_name: str = "auto", with_data: bool = True) -> tuple[Restored, torch.device]:
    """A checkpoint's spec, preprocessing and weights, without the original config file; with the
    run's own data splits rebuilt only if ``with_data`` (eval on a split of the run's data)."""
    state = checkpoint.load(path)
    _check_recorded_hash(Path(path))
    try:
        spec = validate_dict(state["spec"], f"{path} (stored config)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            alone = None if with_data else datamod.stored(state["data_state"], int(state["in_features"]))
            built = build(spec, state["data_state"], alone)
        held = [w.message for w in caught if isinstance(w.message, DataWarning)]
        for w in caught:
            if not isinstance(w.message, DataWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        built.model.load_state_dict(state["model"])
    except KeyError as exc:
        raise CheckpointError(
            f"{path}: checkpoint lacks '{exc.args[0]}'; it was not written by mlptrain fit: give best.pt or last.pt from a run's checkpoints/"
        ) from None
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the stored model ({str(exc).splitlines()[0][:160]}); the file was altered: "
            "use the checkpoint its run wrote"
        ) from None
    device = resolve_device(device_name)
    built.model.to(device)
    return Restored(spec, built, state, held, resolve_precision(spec.train.precision, device)), device


def _check_recorded_hash(path: Path) -> None:
    """Warn when a checkpoint differs from the one its run recorded in summary.json (changed or replaced since)."""
    summary = path.parent.parent / "summary.json"
    try:
        entry = json.loads(summary.read_text(encoding="utf-8"))["checkpoints"][path.stem]
        recorded = entry["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not in a run directory, or a run from before hashes were recorded
    if recorded != checkpoint.sha256(path):
        warnings.warn(CheckpointWarning(
            f"{path}: its SHA-256 differs from the one {summary} recorded: the file was changed or replaced after the run"
        ))


def _confusion(task: Task, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The confusion matrix of binary or multiclass logits (rows: true class), as eval prints it."""
    return confusion_matrix(predict_classes(task.name, logits).reshape(-1), y.reshape(-1), task.n_classes)


def class_probabilities(task: str, logits: torch.Tensor) -> np.ndarray:
    """Per-class probabilities, one column per class name (binary: 1 - p and p)."""
    probs = output_unit(task, logits).cpu().numpy()
    return np.concatenate([1 - probs, probs], axis=1) if task == "binary" else probs


def _classified(task: Task, logits: torch.Tensor, y: torch.Tensor) -> Classified:
    """One split's decisions for TensorBoard's confusion matrix and PR curves."""
    target = y.reshape(-1).long().cpu().numpy()
    return Classified(task.name, _confusion(task, logits, y).cpu().numpy(), target, class_probabilities(task.name, logits))


@dataclass(frozen=True)
class Attack:
    """What `eval --attack` asks: the method, the ε values (in the data's units, see mlptrain.attacks) and PGD's steps."""

    method: str  # fgsm | pgd
    epsilons: list[float]
    steps: int = 10


def _mc_passes(built: Built, path: Path, passes: Optional[int]) -> None:
    """MC dropout needs dropout: without it every pass is the plain forward pass."""
    if passes is not None and not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in built.model.modules()):
        raise ConfigError(f"--mc-dropout: the model of {path} has no dropout (model.dropout and model.input_dropout are 0), "
                          "so every pass would be the same; leave out --mc-dropout, or train with dropout")


def robustness(built: Built, x: torch.Tensor, y: torch.Tensor, attack: Attack, clean: dict[str, float], batch_size: int,
               seed: int, path: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Accuracy and loss on adversarial versions of the rows at each ε (the first row: ε = 0, the clean data)."""
    where = attacks.space(built.prepared.state, x.device, str(path))
    generator = torch.Generator(device=x.device).manual_seed(seed) if attack.method == "pgd" else None
    rows = [{"epsilon": 0.0, "accuracy": clean["accuracy"], "loss": clean["loss"]}]
    for eps in attack.epsilons:
        logits = attacks.adversarial_logits(built.model, built.loss_fn, x, y, attack.method, eps, where, batch_size,
                                            attack.steps, generator)
        scores = score(logits, y, built.loss_fn, built.task)
        rows.append({"epsilon": eps, "accuracy": scores["accuracy"], "loss": scores["loss"]})
    info: dict[str, Any] = {"method": attack.method, "units": where.units}
    if attack.method == "pgd":
        info.update(steps=attack.steps, step_size="2.5·ε/steps", random_start=True, seed=seed)
    return info, rows


def evaluate_checkpoint(
    path: Path, split: str = "test", data_path: Optional[Path] = None, device_name: str = "auto",
    attack: Optional[Attack] = None, mc_dropout: Optional[int] = None, seed: int = 0,
) -> dict[str, Any]:
    """Metrics of a checkpoint on one split of its own data, or on a new file with the same columns; with
    ``attack`` also on adversarial examples of those rows, with ``mc_dropout`` also averaged over that
    many dropout passes (beside the plain pass, the weight-scaling rule)."""
    restored, device = restore(path, device_name, with_data=data_path is None)
    built = restored.built
    if attack is not None and built.task.name not in ("binary", "multiclass"):
        raise ConfigError(f"--attack scores accuracy, so it needs a binary or multiclass model; {path} is {built.task.name}")
    _mc_passes(built, path, mc_dropout)
    if data_path is not None:
        x, y, _ = datamod.read_inputs(Path(data_path), restored.spec.data, built.prepared.state, need_target=True)
        source = str(data_path)
    else:
        chosen = getattr(built.prepared, split)
        if chosen is None:
            have = [k for k in ("train", "val", "test") if getattr(built.prepared, k) is not None]
            raise DataError(f"--split {split}: this run's data has no {split} split; give --split {' or '.join(have)}, or --data FILE")
        for w in restored.data_warnings:  # e.g. categories of this split unseen in training
            if w.split == split:
                warnings.warn(w, stacklevel=2)
        x, y, source = chosen.x, chosen.y, f"{split} split"
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    task = built.task
    logits = predict_logits(built.model, xt, restored.spec.train.eval_batch_size, restored.precision)  # one forward pass
    metrics = score(logits, yt, built.loss_fn, task)
    out: dict[str, Any] = {"checkpoint": str(path), "data": source, "rows": len(x), "task": task.name, "metrics": metrics}
    if task.name in ("binary", "multiclass"):
        cm = _confusion(task, logits, yt)
        out["class_names"] = built.prepared.state["class_names"]
        if task.name == "binary":  # the class whose probability the model outputs (the second of the sorted names)
            out["positive_class"] = out["class_names"][1]
        out["confusion_matrix"] = cm.cpu().tolist()
    batch_size = restored.spec.train.eval_batch_size
    if mc_dropout is not None:
        mc = mc_dropout_logits(built.model, xt, task.name, mc_dropout, batch_size, seed)
        out["mc_dropout"] = {"passes": mc_dropout, "seed": seed, "metrics": score(mc, yt, built.loss_fn, task)}
    if attack is not None:
        out["attack"], out["robustness"] = robustness(built, xt, yt, attack, metrics, batch_size, seed, path)
    return out


def predict_file(path: Path, input_path: Path, output: Path, device_name: str = "auto", mc_dropout: Optional[int] = None,
                 seed: int = 0) -> int:
    """Predictions for a CSV/NPZ input: class and per-class probabilities, or regression values; with
    ``mc_dropout`` those of the mean of that many dropout passes (seeded by ``seed``)."""
    restored, device = restore(path, device_name, with_data=False)
    built = restored.built
    _mc_passes(built, path, mc_dropout)
    state = built.prepared.state
    x, _, table = datamod.read_inputs(Path(input_path), restored.spec.data, state, need_target=False)
    task = built.task
    batch_size = restored.spec.train.eval_batch_size
    if mc_dropout is None:
        logits = predict_logits(built.model, torch.from_numpy(x), batch_size, restored.precision)
    else:
        logits = mc_dropout_logits(built.model, torch.from_numpy(x), task.name, mc_dropout, batch_size, seed)
    columns: dict[str, Any] = {}
    if task.name == "regression":
        values = unscale(task, logits)
        for i, name in enumerate(state["target_names"]):
            columns[f"pred_{name}" if name else f"pred_{i}"] = values[:, i].cpu().numpy()
    else:
        names = state["class_names"]
        if task.name == "multilabel":
            probs = output_unit(task.name, logits).cpu().numpy()
            for i, name in enumerate(names):
                columns[f"pred_{name}"] = (probs[:, i] > 0.5).astype(int)
            for i, name in enumerate(names):
                columns[f"prob_{name}"] = probs[:, i]
        else:
            probs = class_probabilities(task.name, logits)
            columns["prediction"] = np.asarray(names, dtype=object)[probs.argmax(axis=1)]
            for i, name in enumerate(names):
                columns[f"prob_{name}"] = probs[:, i]
    id_column = (state.get("tabular") or {}).get("id")
    if id_column and table.ids is not None:  # data.id: the first output column, as read
        columns = {id_column: table.ids, **_beside(id_column, columns, Path(input_path))}
    write_table(Path(output), columns)
    return len(x)


def _beside(id_column: str, columns: dict[str, Any], source: Path) -> dict[str, Any]:
    """The output columns, the one named like the id (``prediction``, ``prob_<class>``) renamed with a .1 (a
    repeated name's spelling in data.frame), so that neither the ids nor the predictions are lost."""
    if id_column not in columns:
        return columns
    n = 1
    while f"{id_column}.{n}" in columns:
        n += 1
    new = f"{id_column}.{n}"
    warnings.warn(DataWarning(
        f"{source}: the id column '{id_column}' (data.id) has the name of an output column; that output is written as '{new}'"
    ), stacklevel=3)
    return {(new if name == id_column else name): values for name, values in columns.items()}


def write_table(path: Path, columns: dict[str, Any]) -> None:
    """Predictions as CSV (default), Parquet or NPZ (by extension), written atomically. Numbers keep
    their full precision: the shortest text that reads back as the same float32 or float64."""
    import csv
    import io

    from mlptrain.runs import write_output

    if path.suffix.lower() == ".npz":
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v, dtype=str if np.asarray(v).dtype == object else None) for k, v in columns.items()})
        write_output(path, buf.getvalue())
        return
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.table({k: pa.array(list(v) if np.asarray(v).dtype == object else np.asarray(v)) for k, v in columns.items()}), buf)
        write_output(path, buf.getvalue())
        return

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, (float, np.floating)) and v != v):
            return ""
        if isinstance(v, (float, np.floating)):  # the shortest digits that read back as the same float32/64
            positional = v == 0 or 1e-4 <= abs(v) < 1e16
            return (np.format_float_positional if positional else np.format_float_scientific)(v, unique=True, trim="-")
        return str(v)

    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    out.writerow(list(columns))
    out.writerows([cell(v) for v in row] for row in zip(*columns.values()))
    write_output(path, text.getvalue().encode("utf-8"))
