"""The training loop and evaluation, readable top to bottom.

``fit`` takes built objects (model, loss function, optimizer, schedule, tensors) and never parses
config strings. Data lives on the training device as whole tensors; each epoch draws one
permutation from a seeded generator and slices batches by index (no DataLoader, no per-sample
Python). Data too large for the device stays in (pinned) host memory and each batch is copied
with ``non_blocking=True``. The loss is accumulated on the device and read only every
``step_every`` steps; mixed precision is ``torch.autocast`` around forward and loss.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import numpy as np
import torch
from torch import nn

from mlptrain.backprop import Backprop
from mlptrain.metrics import compute_metrics, predict_classes

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Progress(Protocol):
    """What the engine tells whoever shows progress (the CLI's bar or plain lines)."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, steps: int, loss: Optional[float]) -> None: ...
    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool) -> None: ...


class NoProgress:
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, steps: int, loss: Optional[float]) -> None: ...
    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool) -> None: ...


@dataclass
class Task:
    """What evaluation needs to know about the targets."""

    name: str  # binary | multiclass | regression | multilabel
    n_classes: int
    target_mean: Optional[torch.Tensor] = None  # regression targets were standardized with these
    target_std: Optional[torch.Tensor] = None


class Interrupt:
    """Set by a signal handler (SIGINT, SIGTERM); the loop looks at it after every step, saves and returns."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None


@dataclass
class Loop:
    """The engine's knobs, already resolved from the spec."""

    epochs: int
    batch_size: Optional[int]  # None: full batch
    eval_batch_size: int = 4096
    shuffle: bool = True
    drop_last: bool = False
    seed: int = 0
    grad_clip: Optional[float] = None
    monitor: str = "val/loss"
    mode: str = "min"
    early_stopping: bool = True
    patience: int = 10
    min_delta: float = 0.0
    restore_best_weights: bool = True
    save_best: bool = True
    save_last: bool = True
    step_every: int = 10
    histograms_every: int = 0
    schedule_per_step: bool = False
    plateau_monitor: Optional[str] = None  # metric fed to the schedule each epoch (reduce_on_plateau); None: monitor
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed
    device: Optional[torch.device] = None  # where to train; default where the data is
    host_batches: bool = False  # data stays where it is (pinned host memory); each batch is copied to ``device``
    augment: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None  # random changes to each training batch
    on_nan: str = "stop"  # stop | skip_batch
    checkpoint_every_steps: Optional[int] = None  # also write last.pt every N steps (mid-epoch position included)
    cuda_graph: bool = False  # on CUDA, replay each full batch's step as one CUDA graph where graph_blocker allows
    interrupt: Interrupt = field(default_factory=lambda: Interrupt())


@dataclass
class FitResult:
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool
    train_seconds: float  # the epochs' wall time less the validation passes (those are val_seconds)
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    val_seconds: float = 0.0
    interrupted: Optional[int] = None  # the signal that stopped training (last.pt holds the position)
    skipped_batches: int = 0  # train.on_nan: skip_batch
    cuda_graph: str = "off: not on CUDA"  # "on", or "off: why" (summary.json)
    warmup_seconds: float = 0.0  # CUDA's one-time start-up costs, paid before the training clock (warm_up)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for forward + loss; ``32`` is plain float32.

    Without autocast's cache of cast weights: each weight of an MLP is cast once per forward anyway,
    and a CUDA graph must not capture a cache that is emptied when the context exits."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware: an Ampere or newer GPU, or a CPU with
    AVX512-BF16 or AMX (there bf16-mixed halved a [1024, 1024] MLP's step; elsewhere it is emulated
    and slower than float32)."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_capability(device) >= (8, 0)
        if device.type == "cpu":
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # an older torch without the probes: assume not
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16-mixed where the device does bfloat16 natively, else 32; other values as given."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if native_bf16(device) else "32"


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, precision: str = "32") -> torch.Tensor:
    """Forward pass in eval mode over large batches, as float32 logits on the model's device."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    out: Optional[torch.Tensor] = None
    with autocast(device, precision):
        for i in range(0, len(x), batch_size):
            logits = model(x[i : i + batch_size].to(device, non_blocking=True)).float()
            if out is None:
                out = torch.empty((len(x), *logits.shape[1:]), device=device)
            # into one preallocated tensor: a list of small outputs kept alive between the large
            # freed activations fragments the heap (+300 MB RSS on 51000 Fashion-MNIST rows)
            out[i : i + len(logits)] = logits
    model.train(was_training)
    return out if out is not None else torch.zeros(0, device=device)


def unscale(task: Task, values: torch.Tensor) -> torch.Tensor:
    """Regression outputs/targets back to the data's own units."""
    if task.target_mean is None:
        return values
    return values * task.target_std.to(values.device) + task.target_mean.to(values.device)


def evaluate(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, task: Task, batch_size: int, precision: str = "32"
) -> dict[str, float]:
    """Loss and every metric of the task on one split (regression metrics in original units)."""
    return score(predict_logits(model, x, batch_size, precision), y, loss_fn, task)


def score(logits: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, task: Task) -> dict[str, float]:
    """Loss and metrics of logits already computed (eval reuses them for the confusion matrix)."""
    y = y.to(logits.device)
    with torch.inference_mode():
        loss = float(loss_fn(logits, y))
        if task.name == "regression":
            logits, y = unscale(task, logits), unscale(task, y)
        return {"loss": loss, **compute_metrics(task.name, logits, y, task.n_classes)}


class HostBatches:
    """Batches of host-resident data copied to the device through two pinned buffers.

    Rows are gathered into a pinned buffer and copied with ``non_blocking=True``, so the copy of
    the next batch overlaps the current step's compute; an event per buffer keeps the host from
    refilling a buffer whose copy has not finished.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int):
        self.device = device
        pin = device.type == "cuda"
        self.slots = [
            (
                torch.empty((batch_size, *x.shape[1:]), dtype=x.dtype, pin_memory=pin),
                torch.empty((batch_size, *y.shape[1:]), dtype=y.dtype, pin_memory=pin),
                torch.cuda.Event() if pin else None,
            )
            for _ in range(2)
        ]
        self.k = 0

    def get(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bx, by, done = self.slots[self.k % 2]
        self.k += 1
        if done is not None:
            done.synchronize()
        m = len(idx)
        torch.index_select(x, 0, idx, out=bx[:m])
        torch.index_select(y, 0, idx, out=by[:m])
        xb, yb = bx[:m].to(self.device, non_blocking=True), by[:m].to(self.device, non_blocking=True)
        if done is not None:
            done.record()
        return xb, yb


def graph_blocker(loop: Loop, device: torch.device, optimizer: torch.optim.Optimizer, compiled: bool = False) -> Optional[str]:
    """Why the training step cannot be one CUDA graph here, or None when it can.

    A graph replays device work only: whatever the step asks of the host (GradScaler's overflow
    check, a NaN test per batch, a fresh learning rate every step, a random stream of its own) rules
    it out. Optimizers qualify when they keep their step counters on the device (``capturable``) or
    have none (SGD). ``compiled``: the training forward is torch.compile'd (graphs of its own).
    """
    if not loop.cuda_graph:
        return "train.cuda_graph: false"
    if device.type != "cuda":
        return "not on CUDA"
    capturable = isinstance(optimizer, torch.optim.SGD) or all("capturable" in g for g in optimizer.param_groups)
    blockers = [
        (loop.host_batches, "the training data stays in host memory"),
        (loop.precision == "16-mixed", "train.precision: 16-mixed"),
        (loop.on_nan == "skip_batch", "train.on_nan: skip_batch"),
        (loop.augment is not None, "augment"),
        (loop.schedule_per_step, "scheduler.interval: step"),
        (compiled, "train.compile"),
        (not capturable, f"optimizer {type(optimizer).__name__.lower()}"),
    ]
    return next((why for blocked, why in blockers if blocked), None)


class GraphedStep:
    """The training step of a full batch as one CUDA graph, replayed once per batch.

    A small MLP's step is dozens of tiny kernels, and launching them from Python costs more than
    running them (an H200 ran a [1024, 1024] step in a fraction of its launch time). Recorded once,
    the whole step (gathering the batch, forward, loss, backward, optimizer, the epoch's sums) is one
    launch. Everything the graph touches stays at one address: the epoch's order and the position in
    it live in device tensors that the graph itself advances. The first ``WARMUP`` steps run
    normally on a side stream (they create the optimizer's state; PyTorch asks for that before a
    capture); a change of learning rate (an epoch-wise schedule) records the graph again.
    """

    WARMUP = 3

    def __init__(self, learn: Callable[[torch.Tensor, torch.Tensor, int], Optional[torch.Tensor]],
                 x: torch.Tensor, y: torch.Tensor, bs: int, optimizer: torch.optim.Optimizer, window: torch.Tensor):
        self.learn, self.x, self.y, self.bs, self.optimizer, self.window = learn, x, y, bs, optimizer, window
        device = x.device
        self.order = torch.zeros(len(x), dtype=torch.long, device=device)
        self.cursor = torch.zeros((), dtype=torch.long, device=device)  # first row of the next batch in ``order``
        self.offsets = torch.arange(bs, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # where the next loss goes in ``window``
        self.replay: Optional[Callable[[], None]] = None
        self.lrs: list[Any] = []
        self.warm = 0
        self.captures = 0
        self.failed: Optional[str] = None

    def start(self, order: torch.Tensor, batch: int, slot: int) -> None:
        """An epoch's order, from its ``batch``-th batch on (a resumed run starts mid-epoch)."""
        self.order.copy_(order)
        self.cursor.fill_(batch * self.bs)
        self.slot.fill_(slot)

    def _body(self) -> None:
        idx = self.order.index_select(0, self.cursor + self.offsets)
        self.cursor.add_(self.bs)
        loss = self.learn(self.x.index_select(0, idx), self.y.index_select(0, idx), self.bs)
        assert loss is not None  # graph_blocker keeps skip_batch out
        self.window.index_copy_(0, self.slot, loss.view(1).to(self.window.dtype))
        self.slot.add_(1)

    def step(self) -> bool:
        """One full batch's step; False when the graph cannot be recorded (the caller steps eagerly)."""
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        if self.replay is not None and lrs == self.lrs:
            self.replay()
            return True
        if self.failed is not None:
            return False
        if self.warm < self.WARMUP:
            self.warm_step(self._body)
            self.warm += 1
            return True
        self.replay = None  # the old graph (and its memory) goes before the new one is recorded
        self.optimizer.zero_grad(set_to_none=True)  # the graph's gradients live in its own memory
        try:
            self.replay = self.record(self._body)
        except RuntimeError as exc:  # an op that needs the host: train on without the graph
            self.failed = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.lrs = lrs
        self.captures += 1
        self.replay()  # recording ran nothing: now the step itself
        return True

    @staticmethod
    def warm_step(body: Callable[[], None]) -> None:
        """A step before recording, on a side stream as PyTorch's CUDA graph notes ask."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            body()
        torch.cuda.current_stream().wait_stream(side)

    @staticmethod
    def record(body: Callable[[], None]) -> Callable[[], None]:
        """``body`` recorded (not run) as a CUDA graph; the function that replays it. Only this thread's
        calls are checked while it records: the checkpoint and TensorBoard writers work on the side."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            body()
        return graph.replay

    def eager_step_done(self) -> None:
        """A batch stepped outside the graph (an epoch's shorter last batch) took a window slot."""
        self.slot.add_(1)

    def window_read(self) -> None:
        self.slot.zero_()


def set_capturable(optimizer: torch.optim.Optimizer, on: bool, device: torch.device) -> None:
    """Step counters on the device (``capturable``), so that a CUDA graph can advance them, or not.

    Set either way: last.pt keeps the flag, and the non-fused optimizers refuse it on the CPU
    (a run trained with graphs on a GPU and resumed on a CPU)."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = on
    if on:
        for state in optimizer.state.values():  # a resumed optimizer's counters may still be on the host
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=device, dtype=torch.float32)


def warm_up(model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
            bs: int, precision: str, device: torch.device) -> float:
    """Two throwaway steps of a copy of the model and optimizer; the seconds they took.

    On CUDA the one-time costs (cuBLAS handles, each kernel loaded at its first launch) took
    0.26-0.32 s of the first epoch on an H200, a third of it: paid here, before the training clock
    starts, they no longer read as training time. The model, its optimizer and the random stream
    are untouched; a warm-up that fails (it is only an optimization) costs nothing but its time.
    """
    t0 = time.perf_counter()
    cuda = device.type == "cuda"
    rng = torch.cuda.get_rng_state(device) if cuda else torch.get_rng_state()
    try:
        twin = copy.deepcopy(model)
        settings = {k: v for k, v in optimizer.param_groups[0].items() if k in optimizer.defaults}
        twin_opt = type(optimizer)(twin.parameters(), **{**optimizer.defaults, **settings})
        xb, yb = x[:bs].to(device), y[:bs].to(device)
        for _ in range(2):
            with autocast(device, precision):
                loss = loss_fn(twin(xb).float(), yb)
            twin_opt.zero_grad(set_to_none=True)
            loss.backward()
            twin_opt.step()
        if cuda:
            torch.cuda.synchronize(device)
    except Exception:  # noqa: BLE001 - training itself will meet (and report) whatever went wrong here
        pass
    finally:
        if cuda:
            torch.cuda.set_rng_state(rng, device)
        else:
            torch.set_rng_state(rng)
    return time.perf_counter() - t0


def _improved(value: float, best: float, mode: str, min_delta: float) -> bool:
    if math.isnan(value):
        return False
    return value < best - min_delta if mode == "min" else value > best + min_delta


def run_over(epoch: int, bad_epochs: int, epochs: int, early_stopping: bool, patience: int) -> bool:
    """Whether training ends after ``epoch``: the last epoch, or patience used up (Keras's rule).

    The loop asks it after every epoch; ``mlptrain resume`` asks it of a stopped run's last.pt.
    """
    return epoch >= epochs or (early_stopping and bad_epochs >= max(1, patience))


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite (``train.on_nan: stop``, or every batch of an epoch skipped)."""

    def __init__(self, epoch: int, step: int, value: float):
        super().__init__(f"epoch {epoch}, step {step}: training loss is {value}")
        self.epoch, self.step, self.value = epoch, step, value


def window_mean(losses: torch.Tensor, n: int, epoch: int, step: int) -> float:
    """Mean of the last ``n`` step losses (ending at ``step``); NonFiniteLoss names the first bad step."""
    window = losses[:n]
    total = float(window.sum())
    if not math.isfinite(total):
        bad = int(torch.isfinite(window).logical_not().nonzero()[0])
        raise NonFiniteLoss(epoch, step - n + 1 + bad, float(window[bad]))
    return total / n


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random stream a run draws from (python, numpy, torch CPU and CUDA, the loop's own generators).

    The Mersenne Twister words of python's and numpy's states are kept as tensors: a checkpoint
    pickles each Python int as its own object, which made saving last.pt several times slower.
    """
    version, words, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {**np_state, "state": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                                        "pos": int(np_state["state"]["pos"])}},
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


class HistoryTable:
    """The per-epoch values as one float64 table (and which were present), grown in place.

    last.pt is written every epoch. Pickled value by value, a 1,000-epoch history made a checkpoint
    20,000 objects; rebuilt from the row dicts each epoch, packing cost O(epochs) (4 ms at epoch 1,000).
    Appending a row here costs O(columns).
    """

    def __init__(self, rows: list[dict[str, float]] = ()) -> None:
        self.columns: list[str] = []
        self.index: dict[str, int] = {}
        self.values = np.zeros((8, 0), dtype=np.float64)
        self.present = np.zeros((8, 0), dtype=bool)
        self.n = 0
        for row in rows:
            self.append(row)

    def append(self, row: dict[str, float]) -> None:
        new = [k for k in row if k not in self.index]
        if new:  # a column that appears later (train/skipped_batches): widen, earlier rows lack it
            self.index.update((k, len(self.columns) + i) for i, k in enumerate(new))
            self.columns += new
            self.values = np.pad(self.values, ((0, 0), (0, len(new))))
            self.present = np.pad(self.present, ((0, 0), (0, len(new))))
        if self.n == len(self.values):
            self.values = np.concatenate([self.values, np.zeros_like(self.values)])
            self.present = np.concatenate([self.present, np.zeros_like(self.present)])
        for k, v in row.items():
            j = self.index[k]
            self.values[self.n, j], self.present[self.n, j] = float(v), True
        self.n += 1

    def packed(self) -> dict[str, Any]:
        """As last.pt stores it: the column names and two tensors viewing the rows so far (a checkpoint copies them)."""
        return {
            "columns": list(self.columns),
            "values": torch.from_numpy(self.values[: self.n]),
            "present": torch.from_numpy(self.present[: self.n]),
        }


def unpack_history(packed: dict[str, Any]) -> list[dict[str, float]]:
    columns = packed["columns"]
    return [
        {c: (int(v) if c == "epoch" else v) for c, v, here in zip(columns, values, present) if here}
        for values, present in zip(packed["values"].tolist(), packed["present"].tolist())
    ]


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["words"].tolist()), py["gauss"]))
    np_state = state["numpy"]
    key = np_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state({**np_state, "state": {"key": key, "pos": np_state["state"]["pos"]}})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])


def epoch_steps(n: int, batch_size: Optional[int], drop_last: bool, model: nn.Module) -> int:
    """Optimizer steps in an epoch of ``n`` rows (the length of a per-step schedule is built from it).
    BatchNorm cannot normalize a batch of one row in training mode: such a tail batch is dropped."""
    bs = n if batch_size is None else min(batch_size, n)
    tail = n % bs
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return n // bs + (1 if tail and not (drop_last or (has_bn and tail == 1)) else 0)


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    train: tuple[torch.Tensor, torch.Tensor],
    val: Optional[tuple[torch.Tensor, torch.Tensor]],
    task: Task,
    loop: Loop,
    run: Any = None,
    progress: Optional[Progress] = None,
    forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    resume: Optional[dict[str, Any]] = None,
    manual: Optional[Backprop] = None,
) -> FitResult:
    """Train with early stopping; ``run`` (a runs.Run) receives metrics, histograms and checkpoints.

    ``forward`` is the model as called for training steps (e.g. its ``torch.compile`` form);
    weights, evaluation and checkpoints always go through ``model`` itself. ``resume`` is a
    ``last.pt`` this loop wrote: training continues from the very next step, bit for bit as if it
    had never stopped (same device and seed). ``manual`` (a backprop.Backprop of ``model``) computes
    the gradients in place of autograd.
    """
    progress = progress or NoProgress()
    forward = forward or model
    x, y = train
    n = len(x)
    stream = loop.host_batches
    device = torch.device(loop.device) if loop.device is not None else x.device
    bs = n if loop.batch_size is None else min(loop.batch_size, n)
    steps_per_epoch = epoch_steps(n, loop.batch_size, loop.drop_last, model)
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size {bs} with drop_last leaves no batch of the {n} training rows")
    generators = {"shuffle": torch.Generator().manual_seed(loop.seed)}
    if loop.augment is not None:  # its own stream on the device, apart from dropout's
        generators["augment"] = torch.Generator(device=device).manual_seed(loop.seed + 7919)
    batches = HostBatches(x, y, device, bs) if stream else None
    scaler = torch.amp.GradScaler(device.type) if loop.precision == "16-mixed" else None
    classify = task.name in ("binary", "multiclass")
    skip_nan = loop.on_nan == "skip_batch"

    best = math.inf if loop.mode == "min" else -math.inf
    best_epoch, bad_epochs, step, skipped = 0, 0, 0, 0
    best_state: Optional[dict[str, torch.Tensor]] = None
    history: list[dict[str, float]] = []
    table = HistoryTable()  # history as last.pt stores it
    values: dict[str, float] = {}
    done_epochs, seconds_before, val_seconds = 0, 0.0, 0.0
    position: Optional[dict[str, Any]] = None
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        r = resume["resume"]
        best, best_epoch, bad_epochs = resume["best"]["value"], resume["best"]["epoch"], r["bad_epochs"]
        best_state, history, values = r["best_model"], unpack_history(r["history"]), dict(resume["metrics"])
        table = HistoryTable(history)
        done_epochs, step, skipped, position = resume["epoch"], resume["step"], r["skipped"], r["position"]
        seconds_before, val_seconds = r["seconds"]["train"] + r["seconds"]["val"], r["seconds"]["val"]
        set_rng_state(r["rng"], generators)

    def best_info() -> dict[str, Any]:
        return {"epoch": best_epoch, "value": best, "monitor": loop.monitor, "mode": loop.mode}

    def state(at: Optional[dict[str, Any]], finished: bool = False, stopped_early: bool = False) -> dict[str, Any]:
        """The checkpoint of this moment: weights, optimizer, early stopping, counters, RNGs, position."""
        return {
            "model": model.state_dict(),
            "epoch": done_epochs,
            "step": step,
            "metrics": values,
            "best": best_info(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "resume": {
                "position": at,  # mid-epoch: the epoch's order and how many of its batches are done
                "bad_epochs": bad_epochs,
                "best_model": best_state,
                "history": table.packed(),
                "rng": rng_state(generators),
                "seconds": {"train": time.perf_counter() - start - val_seconds, "val": val_seconds},
                "skipped": skipped,
                "finished": finished,  # the last epoch ran, or early stopping ended the run
                "stopped_early": stopped_early,
            },
        }

    # The epoch's sums, on the device, allocated once: the step adds into them (a CUDA graph needs fixed addresses).
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    # this window's step losses: a window never spans an epoch's end, so it needs no more slots than an epoch has steps
    window_buf = torch.zeros(min(loop.step_every, steps_per_epoch), device=device, dtype=torch.float64)

    def learn(xb: torch.Tensor, yb: torch.Tensor, rows: int) -> Optional[torch.Tensor]:
        """One step on a batch of ``rows`` rows: forward, loss, gradients, update, and the epoch's sums.
        The loss, detached; None when train.on_nan: skip_batch drops the batch."""
        if manual is not None:  # float32, no autograd graph: forward, loss and δ at the logits by hand
            logits = manual.forward(xb)
            loss = manual.loss(logits, yb)
        else:
            with autocast(device, loop.precision):
                logits = forward(xb)
                loss = loss_fn(logits.float(), yb)
        if skip_nan and not bool(torch.isfinite(loss)):  # train.on_nan: skip_batch (one sync per step)
            return None
        if manual is not None:  # float32, so no scaler; it overwrites every .grad in place
            manual.backward()
        else:  # autograd; under float16 the scaler scales the loss so small gradients survive
            optimizer.zero_grad(set_to_none=True)
            (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is None:
            if loop.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
            optimizer.step()
        else:  # unscale before clipping; the scaler skips a step whose gradients overflowed
            if loop.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        detached = loss.detach()
        loss_sum.add_(detached, alpha=rows)  # in place: no new tensors per step
        if classify:
            correct.add_((predict_classes(task.name, logits.detach()).view(-1) == yb.view(-1)).sum())
        return detached

    blocker = graph_blocker(loop, device, optimizer, compiled=forward is not model)
    graphed = GraphedStep(learn, x, y, bs, optimizer, window_buf) if blocker is None else None
    set_capturable(optimizer, graphed is not None, device)
    warmup_seconds = warm_up(model, loss_fn, optimizer, x, y, bs, loop.precision, device) if device.type == "cuda" else 0.0

    stopped = halted = False
    start = time.perf_counter() - seconds_before
    model.train()
    epoch = resumed_at = done_epochs
    # A resumed run that had ended (its last epoch, or early stopping) trains on only if given more
    # epochs or patience; otherwise only what follows the loop (restoring the best weights) remains.
    ended = position is None and run_over(done_epochs, bad_epochs, loop.epochs, loop.early_stopping, loop.patience)
    for epoch in range(done_epochs + 1, loop.epochs + 1 if not ended else 0):
        progress.start_epoch(epoch, loop.epochs, steps_per_epoch)
        epoch_start = time.perf_counter()
        if position is not None:  # resuming in the middle of this epoch
            order, first = position["order"], position["batch"]
            sums = position["sums"]
            loss_sum.copy_(sums["loss"])
            correct.copy_(sums["correct"])
            window_buf.copy_(sums["window"][: len(window_buf)])  # (last.pt of older versions held step_every slots)
            seen, window_steps, epoch_skipped = sums["seen"], sums["window_steps"], sums["skipped"]
            epoch_start -= sums["seconds"]
            position = None
        else:
            order = torch.randperm(n, generator=generators["shuffle"]) if loop.shuffle else torch.arange(n)
            order, first = order if stream else order.to(device), 0
            loss_sum.zero_()  # in place, every epoch: a CUDA graph adds into these very tensors
            correct.zero_()
            seen, window_steps, epoch_skipped = 0, 0, 0
        used_lr = optimizer.param_groups[0]["lr"]  # the rate of the epoch's last step: what its row logs as lr
        if graphed is not None:
            graphed.start(order, first, window_steps)
        if epoch == resumed_at + 1 and (resumed_at or first):  # a resumed run's bar starts where it stopped
            progress.advance(resumed_at * steps_per_epoch + first, None)
        for b in range(first, steps_per_epoch):
            rows = min(bs, n - b * bs)
            if graphed is not None and rows == bs and graphed.step():
                pass  # the graph stepped, gathering its batch by itself
            else:
                idx = order[b * bs : (b + 1) * bs]
                xb, yb = batches.get(x, y, idx) if batches is not None else (x[idx], y[idx])
                if loop.augment is not None:
                    xb = loop.augment(xb, generators["augment"])
                detached = learn(xb, yb, rows)
                if detached is None:  # train.on_nan: skip_batch
                    skipped += 1
                    epoch_skipped += 1
                    rows = 0
                else:
                    if loop.schedule_per_step:
                        used_lr = optimizer.param_groups[0]["lr"]
                        schedule.step()
                    window_buf[window_steps] = detached
                    if graphed is not None:
                        graphed.eager_step_done()
            if rows:
                step += 1
                window_steps += 1
                seen += rows
            last_batch = b == steps_per_epoch - 1
            if window_steps and (step % loop.step_every == 0 or last_batch):
                mean = window_mean(window_buf, window_steps, epoch, step)  # the one host sync every step_every steps
                if run is not None:
                    run.log_step(step, mean)
                progress.advance(window_steps, mean)
                window_steps = 0
                if graphed is not None:
                    graphed.window_read()
            # A signal (or train.checkpoint.every_steps) saves the position within the epoch; at an
            # epoch's last batch the epoch's end comes first (its checkpoint, logs and histograms).
            halted = loop.interrupt.signal is not None and not last_batch
            save_now = not last_batch and loop.save_last and run is not None and (
                halted or (loop.checkpoint_every_steps is not None and step % loop.checkpoint_every_steps == 0)
            )
            if save_now:
                if window_steps:
                    window_mean(window_buf, window_steps, epoch, step)  # nothing NaN goes into a checkpoint
                sums = {
                    "loss": loss_sum, "correct": correct, "window": window_buf, "seen": seen,
                    "window_steps": window_steps, "skipped": epoch_skipped, "seconds": time.perf_counter() - epoch_start,
                }
                run.save_checkpoint("last", state({"epoch": epoch, "batch": b + 1, "order": order, "sums": sums}), durable=True)
            if halted:
                break
        if halted:
            break

        if seen == 0:  # train.on_nan: skip_batch skipped every batch: nothing left to learn from
            raise NonFiniteLoss(epoch, step, float("nan"))
        values = {"train/loss": float(loss_sum) / seen}
        if classify:
            values["train/accuracy"] = float(correct) / seen
        if val is not None and len(val[0]):
            val_start = time.perf_counter()
            values.update({f"val/{k}": v for k, v in evaluate(model, loss_fn, val[0], val[1], task, loop.eval_batch_size, loop.precision).items()})
            val_seconds += time.perf_counter() - val_start
        values["lr"] = float(used_lr)
        if epoch_skipped:
            values["train/skipped_batches"] = float(epoch_skipped)
        history.append({"epoch": epoch, **values})
        table.append(history[-1])

        current = values[loop.monitor]
        improved = _improved(current, best, loop.mode, loop.min_delta)
        if improved:
            best, best_epoch, bad_epochs = current, epoch, 0
            if loop.restore_best_weights:
                best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        final = run_over(epoch, bad_epochs, loop.epochs, loop.early_stopping, loop.patience)
        schedule.epoch_end(values[loop.plateau_monitor] if loop.plateau_monitor else current)
        if not loop.schedule_per_step:
            schedule.step()
        done_epochs = epoch
        if run is not None:
            run.log_epoch(epoch, values, time.perf_counter() - epoch_start)
            if loop.histograms_every and epoch % loop.histograms_every == 0:
                tensors = [(f"weights/{k}", p.detach().cpu()) for k, p in model.named_parameters()]
                tensors += [(f"grads/{k}", p.grad.detach().cpu()) for k, p in model.named_parameters() if p.grad is not None]
                run.log_histograms(epoch, tensors)
            if improved and loop.save_best:  # for eval/predict: weights only, no optimizer state to write
                run.save_checkpoint("best", {"model": model.state_dict(), "epoch": epoch, "step": step, "metrics": values,
                                             "best": best_info()}, durable=True)  # on disk before this epoch's last.pt
            if loop.save_last:  # after the schedule's step: resuming starts the next epoch exactly here
                run.save_checkpoint("last", state(None, finished=final, stopped_early=final and epoch < loop.epochs), durable=True)
        progress.end_epoch(epoch, values, improved)
        if final and epoch < loop.epochs:
            stopped = True
            break
        if loop.interrupt.signal is not None and not final:
            halted = True
            break

    if resume is not None and epoch == resumed_at:  # nothing left to train: the run ended before its summary
        stopped = resume["resume"]["stopped_early"]
    seconds = time.perf_counter() - start - val_seconds
    if graphed is not None and graphed.failed:
        blocker = f"capture failed ({graphed.failed})"
    elif graphed is not None and not graphed.captures:
        blocker = f"fewer than {GraphedStep.WARMUP + 1} full batches"
    how = {"skipped_batches": skipped, "cuda_graph": "on" if blocker is None else f"off: {blocker}",
           "warmup_seconds": warmup_seconds}
    if halted:  # last.pt holds the position; the weights stay as trained so far
        return FitResult(best_epoch, best, done_epochs, False, seconds, step, history, val_seconds,
                         interrupted=loop.interrupt.signal, **how)
    if loop.restore_best_weights and best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch, best, epoch, stopped, seconds, step, history, val_seconds, **how)
