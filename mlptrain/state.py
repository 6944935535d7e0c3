"""The training state as small components, each owning its ``state_dict`` / ``load_state_dict``.

``last.pt`` is their union plus the model, optimizer, schedule and scaler (engine.Training lays
them out). Each piece is restored by the object that uses it, so a new piece of state (a random
stream for a new step part, a policy's counters) is one component, not edits spread over the loop.
"""

from __future__ import annotations

import copy
import enum
import math
import random
import time
from typing import Any, Optional

import numpy as np
import torch
from torch import nn


class Stop(str, enum.Enum):
    """Why training ended (the one reason the loop reports instead of flags)."""

    COMPLETED = "completed"  # the last epoch ran
    EARLY_STOPPED = "early_stopped"  # patience ran out
    INTERRUPTED = "interrupted"  # a signal: last.pt holds the position
    PRUNED = "pruned"  # an epoch-end hook (a sweep's pruner) ended the run


def run_over(epoch: int, bad_epochs: int, epochs: int, early_stopping: bool, patience: int) -> bool:
    """Whether training ends after ``epoch``: the last epoch, or patience used up (Keras's rule).

    The loop asks it after every epoch; ``mlptrain resume`` asks it of a stopped run's last.pt.
    """
    return epoch >= epochs or (early_stopping and bad_epochs >= max(1, patience))


def _improved(value: float, best: float, mode: str, min_delta: float) -> bool:
    if math.isnan(value):
        return False
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping:
    """Keras's EarlyStopping as a policy object: the best value so far, its epoch and weights, and the
    epochs without improvement."""

    def __init__(self, monitor: str, mode: str, enabled: bool, patience: int, min_delta: float, restore_best_weights: bool):
        self.monitor, self.mode, self.enabled, self.patience = monitor, mode, enabled, patience
        self.min_delta, self.restore_best_weights = min_delta, restore_best_weights
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_state: Optional[dict[str, torch.Tensor]] = None

    def update(self, epoch: int, value: float, model: nn.Module) -> bool:
        """Count an epoch's monitored value; whether it improved on the best."""
        if not _improved(value, self.best, self.mode, self.min_delta):
            self.bad_epochs += 1
            return False
        self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        if self.restore_best_weights:
            self.best_state = copy.deepcopy(model.state_dict())
        return True

    def over(self, epoch: int, epochs: int) -> bool:
        return run_over(epoch, self.bad_epochs, epochs, self.enabled, self.patience)

    def info(self) -> dict[str, Any]:
        """What a checkpoint records as its ``best``."""
        return {"epoch": self.best_epoch, "value": self.best, "monitor": self.monitor, "mode": self.mode}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.info(), "bad_epochs": self.bad_epochs, "best_model": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"]["value"], state["best"]["epoch"]
        self.bad_epochs, self.best_state = state["bad_epochs"], state["best_model"]


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


class Streams:
    """The run's random streams: the global ones (python, numpy, torch: dropout, init) and one
    generator per named stream (``shuffle`` on the host; each step part's own, on the device)."""

    def __init__(self, seed: int, device: torch.device, part_streams: dict[str, int]):
        self.generators = {"shuffle": torch.Generator().manual_seed(seed)}
        for name, offset in part_streams.items():  # apart from dropout's, so adding a part leaves the others' draws alone
            self.generators[name] = torch.Generator(device=device).manual_seed(seed + offset)

    def state_dict(self) -> dict[str, Any]:
        return rng_state(self.generators)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(state, self.generators)


class HistoryTable:
    """The per-epoch values as one float64 table (and which were present), grown in place.

    last.pt is written every epoch. Pickled value by value, a 1,000-epoch history made a checkpoint
    20,000 objects; rebuilt from the row dicts each epoch, packing cost O(epochs) (4 ms at epoch 1,000).
    Appending a row here costs O(columns).
    """

    def __init__(self, rows: list[dict[str, float]] = ()) -> None:
        self.rows: list[dict[str, float]] = []
        self.columns: list[str] = []
        self.index: dict[str, int] = {}
        self.values = np.zeros((8, 0), dtype=np.float64)
        self.present = np.zeros((8, 0), dtype=bool)
        self.n = 0
        for row in rows:
            self.append(row)

    def append(self, row: dict[str, float]) -> None:
        self.rows.append(row)
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

    state_dict = packed

    def load_state_dict(self, packed: dict[str, Any]) -> None:
        self.__init__(unpack_history(packed))


def unpack_history(packed: dict[str, Any]) -> list[dict[str, float]]:
    columns = packed["columns"]
    return [
        {c: (int(v) if c == "epoch" else v) for c, v, here in zip(columns, values, present) if here}
        for values, present in zip(packed["values"].tolist(), packed["present"].tolist())
    ]


class Clock:
    """Training and validation seconds, carried across resumes (``seconds`` in last.pt). The clock
    starts at ``begin``: after CUDA's warm-up, which is reported apart."""

    def __init__(self) -> None:
        self.before = 0.0  # seconds of the run before this process (a resume)
        self.start = time.perf_counter()
        self.val = 0.0

    def begin(self) -> None:
        self.start = time.perf_counter() - self.before

    def train(self) -> float:
        return time.perf_counter() - self.start - self.val

    def state_dict(self) -> dict[str, float]:
        return {"train": self.train(), "val": self.val}

    def load_state_dict(self, seconds: dict[str, float]) -> None:
        self.before, self.val = seconds["train"] + seconds["val"], seconds["val"]


class Sums:
    """The epoch's sums on the device (loss × rows, the step parts' penalties × rows, correct predictions,
    this window's step losses), allocated once: the step adds into them in place (a CUDA graph needs fixed
    addresses), and counters on the host (rows seen, steps in the window, skipped batches)."""

    def __init__(self, device: torch.device, window: int):
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.penalty = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.float64)
        # a window never spans an epoch's end, so it needs no more slots than an epoch has steps
        self.window = torch.zeros(window, device=device, dtype=torch.float64)
        self.seen = self.window_steps = self.skipped = 0

    def zero(self) -> None:
        self.loss.zero_()
        self.penalty.zero_()
        self.correct.zero_()
        self.seen = self.window_steps = self.skipped = 0

    def state_dict(self, seconds: float) -> dict[str, Any]:
        return {"loss": self.loss, "penalty": self.penalty, "correct": self.correct, "window": self.window, "seen": self.seen,
                "window_steps": self.window_steps, "skipped": self.skipped, "seconds": seconds}

    def load_state_dict(self, sums: dict[str, Any]) -> None:
        self.loss.copy_(sums["loss"])
        if "penalty" in sums:
            self.penalty.copy_(sums["penalty"])
        else:  # a last.pt from before the step parts' penalties
            self.penalty.zero_()
        self.correct.copy_(sums["correct"])
        self.window.copy_(sums["window"][: len(self.window)])  # (last.pt of older versions held step_every slots)
        self.seen, self.window_steps, self.skipped = sums["seen"], sums["window_steps"], sums["skipped"]
