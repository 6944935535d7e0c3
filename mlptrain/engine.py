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
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from mlptrain import plan
from mlptrain.backprop import Backprop
from mlptrain.metrics import compute_metrics, dominant_class, predict_classes
from mlptrain.regularizers import Net, Part, weight_stats
from mlptrain.state import Clock, EarlyStopping, HistoryTable, Stop, Streams, Sums

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
    parts: list[Part] = field(default_factory=list)  # the step's parts (regularizers.build), in step order
    weight_stats: bool = False  # log weights/small_fraction and weights/max_unit_norm every epoch (a regularizer is on)
    on_nan: str = "stop"  # stop | skip_batch
    checkpoint_every_steps: Optional[int] = None  # also write last.pt every N steps (mid-epoch position included)
    graph_off: Optional[str] = "train.cuda_graph: false"  # None: replay each full batch's step as one CUDA graph; else why not (plan.graph_blocker)
    epoch_end: list[Callable[[int, dict[str, float]], Optional[Stop]]] = field(default_factory=list)  # hooks; a Stop ends the run
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
    stop: Stop = Stop.COMPLETED  # why training ended


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


@torch.inference_mode()
def mc_dropout_logits(model: nn.Module, x: torch.Tensor, task: str, passes: int, batch_size: int, seed: int) -> torch.Tensor:
    """Monte Carlo dropout: the mean over ``passes`` forward passes with dropout on (every other layer in
    eval mode: batch norm on its running statistics), as logits that ``score`` and predict read like a
    single pass's: the log of the mean class probabilities (binary, multilabel: the logit of the mean
    probability; regression: the mean output). Seeded apart from the process's own random stream."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    out = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for i in range(0, len(x), batch_size):
                xb = x[i : i + batch_size].to(device, non_blocking=True)
                runs = torch.stack([model(xb).float() for _ in range(passes)])
                if task == "multiclass":
                    mean = torch.logsumexp(torch.log_softmax(runs, dim=-1), dim=0) - math.log(passes)
                elif task == "regression":
                    mean = runs.mean(dim=0)
                else:  # log p̄ − log(1 − p̄), each a log-mean-exp: exact where p̄ rounds to 1
                    mean = torch.logsumexp(F.logsigmoid(runs), dim=0) - torch.logsumexp(F.logsigmoid(-runs), dim=0)
                out.append(mean)
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, device=device)


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


def epoch_steps(n: int, batch_size: Optional[int], drop_last: bool, model: nn.Module) -> int:
    """Optimizer steps in an epoch of ``n`` rows (the length of a per-step schedule is built from it).
    BatchNorm cannot normalize a batch of one row in training mode: such a tail batch is dropped."""
    bs = n if batch_size is None else min(batch_size, n)
    tail = n % bs
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return n // bs + (1 if tail and not (drop_last or (has_bn and tail == 1)) else 0)


class Step:
    """One training step on a batch: the parts' points around forward, loss, backward and update
    (regularizers.Part), then the epoch's sums. Returns the loss, detached; None when
    train.on_nan: skip_batch drops the batch. ``manual`` (a backprop.Backprop) computes forward,
    loss and gradients by hand, in float32; plan.manual_blocker keeps it from parts that need autograd."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], loss_fn: LossFn,
                 optimizer: torch.optim.Optimizer, loop: Loop, device: torch.device, scaler: Optional[torch.amp.GradScaler],
                 manual: Optional[Backprop], sums: Sums, task: Task):
        self.model, self.forward, self.loss_fn, self.optimizer, self.loop = model, forward, loss_fn, optimizer, loop
        self.device, self.scaler, self.manual, self.sums = device, scaler, manual, sums
        self.parts = loop.parts
        self.net = Net(model, forward, loss_fn)
        self.classify = task.name in ("binary", "multiclass")
        self.task = task.name
        self.soft = any(part.soft_targets for part in self.parts)  # train/accuracy: against the dominant class

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, rows: int) -> Optional[torch.Tensor]:
        model, optimizer, scaler, loop, manual = self.model, self.optimizer, self.scaler, self.loop, self.manual
        penalty: Optional[torch.Tensor] = None  # the parts' loss terms, summed (train/penalty)
        for part in self.parts:
            xb, yb = part.batch(xb, yb)
        for part in self.parts:
            part.before_forward(model)
        if manual is not None:
            logits = manual.forward(xb)
            loss = manual.loss(logits, yb)
        else:
            with autocast(self.device, loop.precision):
                logits = self.forward(xb)
                loss = self.loss_fn(logits.float(), yb)
                for part in self.parts:
                    loss = part.objective(loss, xb, yb, self.net)
            terms = [term for term in (part.penalty(model) for part in self.parts) if term is not None]
            if terms:
                penalty = sum(terms)
                loss = loss + penalty
        if loop.on_nan == "skip_batch" and not bool(torch.isfinite(loss)):  # (one sync per step)
            for part in self.parts:
                part.skipped(model)
            return None
        if manual is not None:  # it overwrites every .grad in place
            manual.backward()
        else:  # under float16 the scaler scales the loss so small gradients survive
            optimizer.zero_grad(set_to_none=True)
            (loss if scaler is None else scaler.scale(loss)).backward()
        for part in self.parts:
            part.after_backward(model)
        if scaler is not None and loop.grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients
        if loop.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
        if scaler is None:
            optimizer.step()
        else:  # the scaler skips a step whose gradients overflowed
            scaler.step(optimizer)
            scaler.update()
        for part in self.parts:
            part.after_step(model)
        detached = loss.detach()
        self.sums.loss.add_(detached, alpha=rows)  # in place: no new tensors per step
        if penalty is not None:
            self.sums.penalty.add_(penalty.detach(), alpha=rows)
        if self.classify:
            labels = dominant_class(self.task, yb) if self.soft else yb
            self.sums.correct.add_((predict_classes(self.task, logits.detach()).view(-1) == labels.view(-1)).sum())
        return detached


@dataclass
class Counters:
    """Where the run is: epochs done, optimizer steps taken, batches skipped."""

    epochs: int = 0
    steps: int = 0
    skipped: int = 0


class Training:
    """The state of one fit as components (early stopping, history, random streams, the epoch's sums,
    the clock), the data and the step; its methods are the loop's parts, so that ``fit`` reads in
    one screen. ``state_dict`` is last.pt's layout."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer, schedule: Any,
                 train: tuple[torch.Tensor, torch.Tensor], val: Optional[tuple[torch.Tensor, torch.Tensor]], task: Task,
                 loop: Loop, run: Any, progress: Progress, forward: Callable[[torch.Tensor], torch.Tensor],
                 manual: Optional[Backprop]):
        self.model, self.loss_fn, self.optimizer, self.schedule = model, loss_fn, optimizer, schedule
        self.x, self.y = train
        self.val, self.task, self.loop, self.run, self.progress = val, task, loop, run, progress
        self.n = len(self.x)
        self.device = torch.device(loop.device) if loop.device is not None else self.x.device
        self.bs = self.n if loop.batch_size is None else min(loop.batch_size, self.n)
        self.steps_per_epoch = epoch_steps(self.n, loop.batch_size, loop.drop_last, model)
        if self.steps_per_epoch == 0:
            raise ValueError(f"train.batch_size {self.bs} with drop_last leaves no batch of the {self.n} training rows")
        self.stopper = EarlyStopping(loop.monitor, loop.mode, loop.early_stopping, loop.patience, loop.min_delta,
                                     loop.restore_best_weights)
        self.history = HistoryTable()
        own = {p.name: plan.PARTS[p.name].needs.seed_offset for p in loop.parts if plan.PARTS[p.name].needs.stream}
        self.streams = Streams(loop.seed, self.device, own)
        for part in loop.parts:
            part.rng = self.streams.generators.get(part.name)
        self.sums = Sums(self.device, min(loop.step_every, self.steps_per_epoch))
        self.penalized = any(type(part).penalty is not Part.penalty for part in loop.parts)  # a part adds loss terms
        self.clock = Clock()
        self.count = Counters()
        self.values: dict[str, float] = {}
        self.position: Optional[dict[str, Any]] = None  # a resumed run's place within an epoch
        self.scaler = torch.amp.GradScaler(self.device.type) if loop.precision == "16-mixed" else None
        self.batches = HostBatches(self.x, self.y, self.device, self.bs) if loop.host_batches else None
        self.step = Step(model, forward, loss_fn, optimizer, loop, self.device, self.scaler, manual, self.sums, task)
        self.graphed = GraphedStep(self.step, self.x, self.y, self.bs, optimizer, self.sums.window) if loop.graph_off is None else None
        self.resumed_at = 0  # the epochs done when this process started

    def state_dict(self, at: Optional[dict[str, Any]] = None, finished: bool = False, stopped_early: bool = False) -> dict[str, Any]:
        """last.pt at this moment; ``at``: the position within an epoch (its order, batches done, sums)."""
        stopper = self.stopper.state_dict()
        return {
            "model": self.model.state_dict(),
            "epoch": self.count.epochs,
            "step": self.count.steps,
            "metrics": self.values,
            "best": stopper["best"],
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "resume": {
                "position": at,
                "bad_epochs": stopper["bad_epochs"],
                "best_model": stopper["best_model"],
                "history": self.history.state_dict(),
                "rng": self.streams.state_dict(),
                "seconds": self.clock.state_dict(),
                "skipped": self.count.skipped,
                "finished": finished,  # the last epoch ran, or early stopping ended the run
                "stopped_early": stopped_early,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        r = state["resume"]
        self.stopper.load_state_dict({"best": state["best"], "bad_epochs": r["bad_epochs"], "best_model": r["best_model"]})
        self.history.load_state_dict(r["history"])
        self.values = dict(state["metrics"])
        self.count = Counters(state["epoch"], state["step"], r["skipped"])
        self.position = r["position"]
        self.clock.load_state_dict(r["seconds"])
        self.streams.load_state_dict(r["rng"])

    def ended(self) -> bool:
        """A resumed run that had ended (its last epoch, or early stopping) trains on only if given more
        epochs or patience; otherwise only what follows the loop (restoring the best weights) remains."""
        return self.position is None and self.stopper.over(self.count.epochs, self.loop.epochs)

    def train_epoch(self, epoch: int) -> bool:
        """The epoch's batches (from where a resumed run stopped); False when a signal stopped it midway."""
        loop, sums, graphed, count = self.loop, self.sums, self.graphed, self.count
        start = time.perf_counter()
        if self.position is not None:  # resuming in the middle of this epoch
            order, first = self.position["order"], self.position["batch"]
            sums.load_state_dict(self.position["sums"])
            start -= self.position["sums"]["seconds"]
            self.position = None
        else:
            order = torch.randperm(self.n, generator=self.streams.generators["shuffle"]) if loop.shuffle else torch.arange(self.n)
            order, first = order if self.batches is not None else order.to(self.device), 0
            sums.zero()  # in place, every epoch: a CUDA graph adds into these very tensors
        self.epoch_start = start
        self.used_lr = self.optimizer.param_groups[0]["lr"]  # the rate of the epoch's last step: what its row logs as lr
        if graphed is not None:
            graphed.start(order, first, sums.window_steps)
        if epoch == self.resumed_at + 1 and (self.resumed_at or first):  # a resumed run's bar starts where it stopped
            self.progress.advance(self.resumed_at * self.steps_per_epoch + first, None)
        for b in range(first, self.steps_per_epoch):
            rows = min(self.bs, self.n - b * self.bs)
            if graphed is not None and rows == self.bs and graphed.step():
                pass  # the graph stepped, gathering its batch by itself
            else:
                idx = order[b * self.bs : (b + 1) * self.bs]
                xb, yb = self.batches.get(self.x, self.y, idx) if self.batches is not None else (self.x[idx], self.y[idx])
                detached = self.step(xb, yb, rows)
                if detached is None:  # train.on_nan: skip_batch
                    count.skipped += 1
                    sums.skipped += 1
                    rows = 0
                else:
                    if loop.schedule_per_step:
                        self.used_lr = self.optimizer.param_groups[0]["lr"]
                        self.schedule.step()
                    sums.window[sums.window_steps] = detached
                    if graphed is not None:
                        graphed.eager_step_done()
            if rows:
                count.steps += 1
                sums.window_steps += 1
                sums.seen += rows
            last_batch = b == self.steps_per_epoch - 1
            if sums.window_steps and (count.steps % loop.step_every == 0 or last_batch):
                self.read_window(epoch)
            # A signal (or train.checkpoint.every_steps) saves the position within the epoch; at an
            # epoch's last batch the epoch's end comes first (its checkpoint, logs and histograms).
            halted = loop.interrupt.signal is not None and not last_batch
            every = loop.checkpoint_every_steps is not None and count.steps % loop.checkpoint_every_steps == 0
            if not last_batch and loop.save_last and self.run is not None and (halted or every):
                if sums.window_steps:
                    window_mean(sums.window, sums.window_steps, epoch, count.steps)  # nothing NaN goes into a checkpoint
                at = {"epoch": epoch, "batch": b + 1, "order": order, "sums": sums.state_dict(time.perf_counter() - start)}
                self.run.save_checkpoint("last", self.state_dict(at), durable=True)
            if halted:
                return False
        return True

    def read_window(self, epoch: int) -> None:
        """The one host sync every step_every steps: the window's mean loss to the logs and the bar."""
        sums = self.sums
        mean = window_mean(sums.window, sums.window_steps, epoch, self.count.steps)
        if self.run is not None:
            self.run.log_step(self.count.steps, mean)
        self.progress.advance(sums.window_steps, mean)
        sums.window_steps = 0
        if self.graphed is not None:
            self.graphed.window_read()

    def epoch_values(self, epoch: int) -> dict[str, float]:
        """The epoch's row: training loss (and accuracy) from the sums, the validation metrics, lr."""
        sums, loop = self.sums, self.loop
        if sums.seen == 0:  # train.on_nan: skip_batch skipped every batch: nothing left to learn from
            raise NonFiniteLoss(epoch, self.count.steps, float("nan"))
        values = {"train/loss": float(sums.loss) / sums.seen}
        if self.penalized:  # train/loss = train/data_loss + train/penalty
            penalty = float(sums.penalty) / sums.seen
            values.update({"train/data_loss": values["train/loss"] - penalty, "train/penalty": penalty})
        if self.task.name in ("binary", "multiclass"):
            values["train/accuracy"] = float(sums.correct) / sums.seen
        if self.val is not None and len(self.val[0]):
            val_start = time.perf_counter()
            scores = evaluate(self.model, self.loss_fn, self.val[0], self.val[1], self.task, loop.eval_batch_size, loop.precision)
            values.update({f"val/{k}": v for k, v in scores.items()})
            self.clock.val += time.perf_counter() - val_start
        values["lr"] = float(self.used_lr)
        if loop.weight_stats:
            values.update(weight_stats(self.model))
        if sums.skipped:
            values["train/skipped_batches"] = float(sums.skipped)
        return values

    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool, final: bool) -> None:
        """The epoch's logs, histograms and checkpoints (best.pt on disk before this epoch's last.pt)."""
        run, loop, model = self.run, self.loop, self.model
        if run is None:
            return
        run.log_epoch(epoch, values, time.perf_counter() - self.epoch_start)
        if loop.histograms_every and epoch % loop.histograms_every == 0:
            tensors = [(f"weights/{k}", p.detach().cpu()) for k, p in model.named_parameters()]
            tensors += [(f"grads/{k}", p.grad.detach().cpu()) for k, p in model.named_parameters() if p.grad is not None]
            run.log_histograms(epoch, tensors)
        if improved and loop.save_best:  # for eval/predict: weights only, no optimizer state to write
            run.save_checkpoint("best", {"model": model.state_dict(), "epoch": epoch, "step": self.count.steps,
                                         "metrics": values, "best": self.stopper.info()}, durable=True)
        if loop.save_last:  # after the schedule's step: resuming starts the next epoch exactly here
            run.save_checkpoint("last", self.state_dict(None, finished=final, stopped_early=final and epoch < loop.epochs),
                                durable=True)

    def graph_status(self) -> str:
        """summary.json's cuda_graph: "on", or "off: why"."""
        if self.graphed is not None and self.graphed.failed:
            return f"off: capture failed ({self.graphed.failed})"
        if self.graphed is not None and not self.graphed.captures:
            return f"off: fewer than {GraphedStep.WARMUP + 1} full batches"
        return "on" if self.graphed is not None else f"off: {self.loop.graph_off}"


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
    t = Training(model, loss_fn, optimizer, schedule, train, val, task, loop, run, progress, forward or model, manual)
    if resume is not None:
        t.load_state_dict(resume)
    set_capturable(optimizer, t.graphed is not None, t.device)  # after loading: last.pt keeps the flag of its own run
    warmup_seconds = warm_up(model, loss_fn, optimizer, t.x, t.y, t.bs, loop.precision, t.device) if t.device.type == "cuda" else 0.0
    t.clock.begin()
    model.train()
    t.resumed_at = epoch = t.count.epochs
    stop: Optional[Stop] = None
    if t.ended():  # nothing left to train: the run ended before its summary
        stop = Stop.EARLY_STOPPED if resume["resume"]["stopped_early"] else Stop.COMPLETED
    while stop is None and epoch < loop.epochs:
        epoch += 1
        progress.start_epoch(epoch, loop.epochs, t.steps_per_epoch)
        if not t.train_epoch(epoch):
            stop = Stop.INTERRUPTED
            break
        values = t.values = t.epoch_values(epoch)
        t.history.append({"epoch": epoch, **values})
        improved = t.stopper.update(epoch, values[loop.monitor], model)
        final = t.stopper.over(epoch, loop.epochs)
        schedule.epoch_end(values[loop.plateau_monitor] if loop.plateau_monitor else values[loop.monitor])
        if not loop.schedule_per_step:
            schedule.step()
        t.count.epochs = epoch
        t.end_epoch(epoch, values, improved, final)
        progress.end_epoch(epoch, values, improved)
        hooked = next((s for s in (hook(epoch, values) for hook in loop.epoch_end) if s is not None), None)
        if final:
            stop = Stop.EARLY_STOPPED if epoch < loop.epochs else Stop.COMPLETED
        elif hooked is not None:
            stop = hooked
        elif loop.interrupt.signal is not None:
            stop = Stop.INTERRUPTED
    stop = stop or Stop.COMPLETED
    for part in loop.parts:
        part.end(model)
    result = FitResult(t.stopper.best_epoch, t.stopper.best, t.count.epochs if stop is Stop.INTERRUPTED else epoch,
                       stop is Stop.EARLY_STOPPED, t.clock.train(), t.count.steps, t.history.rows, t.clock.val,
                       interrupted=loop.interrupt.signal if stop is Stop.INTERRUPTED else None,
                       skipped_batches=t.count.skipped, cuda_graph=t.graph_status(), warmup_seconds=warmup_seconds, stop=stop)
    if stop is not Stop.INTERRUPTED and loop.restore_best_weights and t.stopper.best_state is not None:
        model.load_state_dict(t.stopper.best_state)  # (an interrupted run keeps the weights as trained so far)
    return result
