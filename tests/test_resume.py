"""Exact resume: a run stopped at any step and resumed ends bit-identical to the run never stopped.

Runs are stopped the way users stop them: a real SIGINT/SIGTERM sent to this process while the
engine trains (the pipeline's handler asks the loop to save last.pt and return), or SIGKILL to a
``mlptrain`` child process at random moments (tests/test_resume.py::test_sigkill...).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from mlptrain import checkpoint, pipeline, runs
from mlptrain.cli import main
from mlptrain.config import validate_dict
from mlptrain.errors import ConfigError, DataError, Interrupted, RunDirError

from conftest import CONFIGS

BLOBS = {"name": "blobs", "n_samples": 300, "n_classes": 3, "n_features": 4, "noise": 1.5, "seed": 2}

SGD_MOMENTUM = {
    "data": BLOBS,
    "model": {"hidden": [16, 16], "activation": "tanh"},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
    "train": {"epochs": 6, "batch_size": 32, "seed": 4, "early_stopping": {"enabled": False}},
    "logging": {"progress": "none", "step_every": 3, "histograms_every": 2},
}
ADAM_SCHEDULE_DROPOUT = {
    "data": BLOBS,
    "model": {"hidden": [32, 32], "dropout": 0.3, "input_dropout": 0.1},
    "augment": {"noise": 0.05},
    "optimizer": {"name": "adam", "lr": 0.01},
    "scheduler": {"name": "cosine", "interval": "step", "warmup": 5},
    "train": {"epochs": 7, "batch_size": 24, "seed": 9, "early_stopping": {"patience": 2, "monitor": "val/accuracy"}},
    "logging": {"progress": "none", "step_every": 4, "histograms_every": 3},
}
BF16_CLIP_EVERY_STEPS = {
    "data": BLOBS,
    "model": {"hidden": [32], "activation": "gelu", "norm": "layer"},
    "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
    "scheduler": {"name": "step", "step_size": 2, "gamma": 0.5},
    "train": {"epochs": 5, "batch_size": 16, "seed": 2, "precision": "bf16-mixed", "grad_clip": 0.5,
              "early_stopping": {"enabled": False}, "checkpoint": {"every_steps": 5}},
    "logging": {"progress": "none", "step_every": 2},
}
PLATEAU_EARLY_STOP = {
    "data": BLOBS,
    "model": {"hidden": [16], "norm": "batch"},
    "optimizer": {"name": "rmsprop", "lr": 0.02, "momentum": 0.5},
    "scheduler": {"name": "reduce_on_plateau", "patience": 0, "factor": 0.5},
    "train": {"epochs": 12, "batch_size": 50, "seed": 1, "early_stopping": {"patience": 3}},
    "logging": {"progress": "none", "step_every": 1},
}


class SignalAt:
    """Progress that sends a real signal to this process once training has done ``step`` steps (of the whole run)."""

    def __init__(self, step: int, signum: int = signal.SIGINT):
        self.step, self.signum, self.done = step, signum, 0

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def advance(self, steps: int, loss: Optional[float]) -> None:
        before, self.done = self.done, self.done + steps
        if before < self.step <= self.done:
            os.kill(os.getpid(), self.signum)

    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool) -> None: ...


def _spec(raw: dict[str, Any], tmp_path: Path):
    return validate_dict({**raw, "logging": {**raw["logging"], "runs_dir": str(tmp_path / "runs")}}, "test")


def _run(raw: dict[str, Any], tmp_path: Path, name: str, progress: Any = None) -> pipeline.FitOutcome:
    spec = _spec(raw, tmp_path)
    path = pipeline.start_run(spec, None, tmp_path / name)
    return pipeline.train(spec, path, "cpu", progress)


def _resume(path: Path, overrides: list[str] = (), progress: Any = None) -> pipeline.FitOutcome:
    spec, state = pipeline.load_resume(path, list(overrides))
    return pipeline.resume(path, spec, state, "cpu", progress)


def _interrupted(raw: dict[str, Any], tmp_path: Path, name: str, step: int, signum: int = signal.SIGINT) -> Path:
    with pytest.raises(Interrupted) as exc:
        _run(raw, tmp_path, name, SignalAt(step, signum))
    assert exc.value.exit_code == 128 + signum
    assert f"mlptrain resume {tmp_path / name}" in str(exc.value)
    assert not (tmp_path / name / "summary.json").exists()  # the run is not complete
    return tmp_path / name


def _tensors(state: Any) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for k in sorted(state, key=str) for t in _tensors(state[k])]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in _tensors(v)]
    return []


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar event of a run directory, all event files together, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                value = v.simple_value if v.HasField("simple_value") else float(torch.tensor(0.0))
                if v.HasField("tensor") and v.tensor.float_val:
                    value = v.tensor.float_val[0]
                out.setdefault(v.tag, []).append((event.step, value))
    return out


def assert_same_run(a: Path, b: Path, outcome_a: pipeline.FitOutcome, outcome_b: pipeline.FitOutcome) -> None:
    """Bit-identical weights, optimizer state and metrics; the same rows and TensorBoard steps, none twice."""
    assert outcome_a.metrics == outcome_b.metrics
    for name in ("best", "last"):
        pa, pb = a / "checkpoints" / f"{name}.pt", b / "checkpoints" / f"{name}.pt"
        assert pa.exists() == pb.exists()
        if pa.exists():
            sa, sb = checkpoint.load(pa), checkpoint.load(pb)
            assert sa["model"].keys() == sb["model"].keys()
            assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
            assert sa["epoch"] == sb["epoch"] and sa["step"] == sb["step"] and sa["metrics"] == sb["metrics"]
            if name == "last":
                ta, tb = _tensors(sa["optimizer"]), _tensors(sb["optimizer"])
                assert len(ta) == len(tb) and all(torch.equal(x, y) for x, y in zip(ta, tb))
                assert sa["optimizer"]["param_groups"] == sb["optimizer"]["param_groups"]
    drop = ("epoch_seconds",)
    rows_a = [{k: v for k, v in r.items() if k not in drop} for r in runs.read_metrics(a)]
    rows_b = [{k: v for k, v in r.items() if k not in drop} for r in runs.read_metrics(b)]
    assert rows_a == rows_b
    ev_a, ev_b = _scalars(a), _scalars(b)
    timing = ("time/epoch_seconds",)
    assert sorted(ev_a) == sorted(ev_b)
    for tag in ev_a:
        steps_b = [s for s, _ in ev_b[tag]]
        assert len(steps_b) == len(set(steps_b)), f"{tag}: a step logged twice"
        assert sorted(steps_b) == [s for s, _ in ev_a[tag]], f"{tag}: steps missing or extra"
        if tag not in timing:
            assert sorted(ev_b[tag]) == ev_a[tag], tag
    assert _scalars(a / "final") == _scalars(b / "final")  # the final model's metrics and pictures, once
    sa, sb = outcome_a.summary, outcome_b.summary
    for key in ("best_epoch", "best_value", "epochs_run", "stopped_early", "steps", "final_weights", "metrics"):
        assert sa[key] == sb[key], key


@pytest.mark.parametrize(
    "raw, stops",
    [
        (SGD_MOMENTUM, [13]),  # mid-epoch (7 steps an epoch)
        (SGD_MOMENTUM, [10, 27, 28, 38]),  # 28: an epoch's last step; stopped four times
        (ADAM_SCHEDULE_DROPOUT, [9, 30]),
        (PLATEAU_EARLY_STOP, [7, 21]),  # ReduceLROnPlateau state, BatchNorm buffers, early stopping counters
        (BF16_CLIP_EVERY_STEPS, [12, 40]),  # CPU autocast, clipping, mid-epoch saves on the way
        ({**BF16_CLIP_EVERY_STEPS, "train": {**BF16_CLIP_EVERY_STEPS["train"], "precision": "16-mixed"}}, [9, 33]),
    ],
    ids=["sgd-momentum-mid-epoch", "sgd-momentum-4-stops", "adam-cosine-dropout-augment", "rmsprop-plateau-early-stop",
         "adamw-bf16-clip-every-steps", "adamw-fp16-gradscaler"],
)
def test_a_stopped_and_resumed_run_is_bit_identical_to_one_never_stopped(raw, stops, tmp_path):
    whole = _run(raw, tmp_path, "whole")
    path = _interrupted(raw, tmp_path, "stopped", stops[0])
    for at in stops[1:]:  # each resume is stopped again (a resumed run's progress starts where it stopped)
        with pytest.raises(Interrupted):
            _resume(path, progress=SignalAt(at))
    resumed = _resume(path)
    assert_same_run(whole.run_dir, path, whole, resumed)


def test_metrics_csv_rows_the_writer_had_not_written_come_back_from_last_pt(tmp_path):
    """metrics.csv is written lazily and last.pt at once: a kill can leave last.pt epochs ahead."""
    whole = _run(SGD_MOMENTUM, tmp_path, "whole")
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 30)  # 7 steps an epoch: 4 epochs done
    csv_path = path / "metrics.csv"
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + 4
    csv_path.write_text("\n".join(lines[:2]) + "\n")  # as if killed before rows 2-4 reached the disk
    resumed = _resume(path)
    assert_same_run(whole.run_dir, path, whole, resumed)


def test_epoch_scalars_a_killed_session_never_flushed_to_tensorboard_are_logged_on_resume(tmp_path):
    whole = _run(SGD_MOMENTUM, tmp_path, "whole")
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 30)  # 4 epochs done
    for events in path.glob("events.out.tfevents.*"):
        events.unlink()  # as if the process died before TensorBoard's writer reached the disk
    _resume(path)
    a, b = _scalars(whole.run_dir), _scalars(path)
    epoch_tags = [t for t in a if t.startswith(("train/", "val/")) or t == "lr"]  # histograms: not in last.pt
    assert "train/loss" in epoch_tags and "val/loss" in epoch_tags
    for tag in epoch_tags:
        assert sorted(b[tag]) == a[tag], tag  # every epoch once, with the uninterrupted run's values
    assert [s for s, _ in b["step/train_loss"]] == [s for s, _ in a["step/train_loss"] if s > 30]  # steps: lost


def test_sigterm_stops_like_sigint_with_exit_code_143(tmp_path):
    whole = _run(SGD_MOMENTUM, tmp_path, "whole")
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 15, signal.SIGTERM)
    assert_same_run(whole.run_dir, path, whole, _resume(path))


def test_signal_handlers_are_restored_after_training(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _run(SGD_MOMENTUM, tmp_path, "whole")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_mid_epoch_checkpoint_records_the_permutation_and_position(tmp_path):
    raw = {**SGD_MOMENTUM, "logging": {**SGD_MOMENTUM["logging"], "step_every": 1}}
    path = _interrupted(raw, tmp_path, "stopped", 11)  # 7 steps an epoch: the 4th batch of epoch 2
    state = checkpoint.load(path / "checkpoints" / "last.pt")
    position = state["resume"]["position"]
    assert state["step"] == 11 and state["epoch"] == 1
    assert position["epoch"] == 2 and position["batch"] == 4 and position["sums"]["seen"] == 4 * 32
    assert sorted(position["order"].tolist()) == list(range(210))  # the epoch's permutation of the training rows


def test_resuming_with_fewer_epochs_than_trained_is_refused(tmp_path):
    """A stopped run given fewer epochs than it has trained would end as "complete" with its partial
    epoch thrown away: refused, naming what it has trained; as many epochs as begun finishes it."""
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 11)  # 7 steps an epoch: within epoch 2
    with pytest.raises(ConfigError, match=r"train.epochs=1: .* has already trained 1 epoch and part of epoch 2; "
                                          r"give train.epochs >= 2 \(or leave it out to finish the run's 6\)"):
        pipeline.load_resume(path, ["train.epochs=1"])
    finished = _resume(path, ["train.epochs=2"])
    assert finished.summary["epochs_run"] == 2 and finished.summary["status"] == "complete"


def test_extending_a_complete_run_equals_training_longer_at_once(tmp_path):
    longer = {**SGD_MOMENTUM, "train": {**SGD_MOMENTUM["train"], "epochs": 9}}
    whole = _run(longer, tmp_path, "whole")
    short = _run(SGD_MOMENTUM, tmp_path, "short")
    with pytest.raises(RunDirError, match="complete, all 6 epochs ran.*--set train.epochs=12"):
        pipeline.load_resume(short.run_dir, [])
    extended = _resume(short.run_dir, ["train.epochs=9"])
    assert extended.metrics == whole.metrics
    assert extended.summary["epochs_run"] == 9 and extended.summary["status"] == "complete"


def test_a_complete_one_epoch_run_is_counted_in_the_singular(tmp_path):
    one = _run({**SGD_MOMENTUM, "train": {**SGD_MOMENTUM["train"], "epochs": 1}}, tmp_path, "one")
    with pytest.raises(RunDirError, match=r"complete, its 1 epoch ran; to train longer: .* --set train.epochs=2$"):
        pipeline.load_resume(one.run_dir, [])


def test_a_resumed_run_keeps_its_config_but_for_how_long_and_where(tmp_path):
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 5)
    with pytest.raises(ConfigError, match=r"optimizer.lr: the run was trained with 0.05, not 0.1.*train.epochs"):
        pipeline.load_resume(path, ["optimizer.lr=0.1"])
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'; did you mean 'epochs'"):
        pipeline.load_resume(path, ["train.epoch=3"])
    spec, _ = pipeline.load_resume(path, ["train.epochs=8", "logging.progress=plain"])
    assert spec.train.epochs == 8


def test_resume_refuses_a_directory_without_last_pt(tmp_path):
    raw = {**SGD_MOMENTUM, "train": {**SGD_MOMENTUM["train"], "checkpoint": {"save_last": False}}}
    with pytest.raises(Interrupted, match="save_last is off, so there is nothing to resume from"):
        _run(raw, tmp_path, "nolast", SignalAt(3))
    with pytest.raises(RunDirError, match="no checkpoints/last.pt to resume from"):
        pipeline.load_resume(tmp_path / "nolast", [])
    with pytest.raises(RunDirError, match="no such run directory"):
        pipeline.load_resume(tmp_path / "nowhere", [])


def test_resume_after_early_stopping_says_how_to_go_on(tmp_path):
    raw = {**PLATEAU_EARLY_STOP, "train": {**PLATEAU_EARLY_STOP["train"], "epochs": 60,
                                             "early_stopping": {"patience": 1, "min_delta": 0.05}}}
    done = _run(raw, tmp_path, "stopped")
    assert done.summary["stopped_early"]
    with pytest.raises(RunDirError, match=r"stopped early at epoch \d+ \(1 epoch without improvement\).*train.early_stopping.patience=2"):
        pipeline.load_resume(done.run_dir, [])
    again = _resume(done.run_dir, ["train.early_stopping.patience=2"])
    assert again.summary["epochs_run"] > done.summary["epochs_run"]


def test_resume_refuses_data_that_changed(tmp_path):
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 5)
    last = path / "checkpoints" / "last.pt"
    state = checkpoint.load(last)
    state["class_names"] = ["a", "b", "c"]
    checkpoint.save(last, {k: v for k, v in state.items() if k not in ("format", "format_version")})
    with pytest.raises(Exception, match="the data changed since this run started"):
        _resume(path)


def test_resume_refuses_rows_that_changed_in_the_same_columns(tmp_path):
    """Same columns and classes, other rows: the splits' digests in the checkpoint tell."""
    data = tmp_path / "flowers.csv"
    lines = (CONFIGS / "data" / "flowers.csv").read_text().splitlines(keepends=True)
    data.write_text("".join(lines))
    raw = {**SGD_MOMENTUM, "data": {"name": "csv", "path": str(data), "target": "species"},
           "train": {**SGD_MOMENTUM["train"], "epochs": 2}}
    done = _run(raw, tmp_path, "run")
    data.write_text("".join(lines[:-20]))
    with pytest.raises(DataError, match=r"the data changed since this run started \(its train split has \d+ rows, had \d+\)"):
        _resume(done.run_dir, ["train.epochs=3"])
    header, first, *rest = lines
    data.write_text(header + "9.999" + first[first.index(","):] + "".join(rest))  # one value, same rows
    with pytest.raises(DataError, match=r"its (train|val|test) split has other values"):
        _resume(done.run_dir, ["train.epochs=3"])
    data.write_text("".join(lines))
    assert _resume(done.run_dir, ["train.epochs=3"]).summary["epochs_run"] == 3


def test_nan_stop_keeps_the_last_good_checkpoint_and_names_epoch_and_step(tmp_path):
    raw = {**SGD_MOMENTUM, "optimizer": {"name": "sgd", "lr": 1e6}, "model": {"hidden": [16], "activation": "relu"}}
    raw["data"] = {"name": "sine", "n_samples": 300, "noise": 0.1}
    from mlptrain.errors import TrainingError

    with pytest.raises(TrainingError) as exc:
        _run(raw, tmp_path, "nan")
    msg = str(exc.value)
    assert "epoch 1, step" in msg and "learning rate" in msg and "\n" not in msg
    assert not (tmp_path / "nan" / "checkpoints" / "last.pt").exists()  # diverged in epoch 1: nothing good to keep


# ------------------------------------------------------------------------------------------------
# Through the real command line, as users do it.

CLI_CONFIG = """\
data: {name: blobs, n_samples: 3000, n_classes: 3, n_features: 8, noise: 2.0, seed: 5}
model: {hidden: [64, 64], dropout: 0.2}
optimizer: {name: adam, lr: 0.003}
train: {epochs: %(epochs)d, batch_size: 16, seed: 3, early_stopping: {enabled: false}, checkpoint: {every_steps: 40}}
logging: {progress: plain, tensorboard: true, histograms_every: 0}
"""


# A disk as slow as some CI machines': every fsync takes 30 ms, so a checkpoint write (file and
# directory) takes about as long as one of CLI_CONFIG's epochs.
SLOW_DISK = """\
import os, sys, time
fsync = os.fsync
os.fsync = lambda fd: (time.sleep(0.03), fsync(fd))[1]
from mlptrain.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _start(args: list[str], slow_disk: bool = False, own_group: bool = False) -> subprocess.Popen:
    """``own_group``: a process group of its own, as a shell gives a command (a terminal's Ctrl-C signals the whole group)."""
    command = ["-c", SLOW_DISK] if slow_disk else ["-m", "mlptrain"]
    return subprocess.Popen(
        [sys.executable, *command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=own_group,
    )


def _wait_for_epoch(proc: subprocess.Popen, timeout: float = 120.0) -> int:
    """Read stdout until the first per-epoch line (training is under way); its epoch number."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("epoch "):
            return int(line.split()[1].split("/")[0])
    raise AssertionError(f"no epoch line from {proc.args}: {proc.stderr.read() if proc.poll() is not None else ''}")


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory):
    """The uninterrupted run the interrupted ones must match."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = tmp / "c.yaml"
    cfg.write_text(CLI_CONFIG % {"epochs": 40})
    assert main(["fit", str(cfg), "--run-dir", str(tmp / "run")]) == 0
    return cfg, tmp / "run"


def test_ctrl_c_then_resume_ends_with_the_same_metrics(cli_reference, tmp_path, capsys):
    cfg, reference = cli_reference
    run_dir = tmp_path / "run"
    proc = _start(["fit", str(cfg), "--run-dir", str(run_dir)])
    _wait_for_epoch(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    # the command as this one was run (python -m mlptrain), since mlptrain may not be on PATH
    assert f"saved {run_dir / 'checkpoints' / 'last.pt'}; resume with: " in err and f" -m mlptrain resume {run_dir}\n" in err
    assert "Traceback" not in err
    capsys.readouterr()
    assert main(["resume", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "resuming at step" in printed
    a = json.loads((reference / "summary.json").read_text())
    b = json.loads((run_dir / "summary.json").read_text())
    assert a["metrics"] == b["metrics"] and a["steps"] == b["steps"]
    assert checkpoint.sha256(reference / "checkpoints" / "best.pt") != ""  # recorded hashes are real files' hashes
    assert b["checkpoints"]["best"]["sha256"] == checkpoint.sha256(run_dir / "checkpoints" / "best.pt")


def test_sigkill_at_random_moments_never_leaves_a_bad_checkpoint_and_resume_ends_identical(cli_reference, tmp_path):
    cfg, reference = cli_reference
    run_dir = tmp_path / "run"
    rng = random.Random(20261124)
    saved: list[tuple[int, bool]] = []  # (step, mid-epoch) of last.pt after each kill
    proc = _start(["fit", str(cfg), "--run-dir", str(run_dir)], slow_disk=True)
    while len(saved) < 6:
        shown = _wait_for_epoch(proc)
        time.sleep(rng.uniform(0.0, 0.3))  # epochs take 0.06 s or more on the slow disk: 40 outlast six kills
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        shown = max([shown] + [int(line.split()[1].split("/")[0]) for line in out.splitlines() if line.startswith("epoch ")])
        for pt in (run_dir / "checkpoints").glob("*.pt"):
            checkpoint.load(pt)  # every checkpoint on disk is whole
        last = checkpoint.load(run_dir / "checkpoints" / "last.pt")
        assert last["epoch"] >= shown - 1  # at most the epoch in progress and the one just shown are lost
        if (run_dir / "checkpoints" / "best.pt").exists():  # never older than last.pt's best epoch
            best = checkpoint.load(run_dir / "checkpoints" / "best.pt")
            assert best["epoch"] == last["best"]["epoch"] or best["epoch"] > last["epoch"]
        else:  # written before epoch 1's last.pt: only a save inside epoch 1 can be without it
            assert last["epoch"] == 0
        saved.append((last["step"], last["resume"]["position"] is not None))
        proc = _start(["resume", str(run_dir)], slow_disk=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    steps = [s for s, _ in saved]
    assert steps == sorted(steps) and steps[-1] > steps[0] and any(mid for _, mid in saved)  # progress, some mid-epoch
    a = json.loads((reference / "summary.json").read_text())
    b = json.loads((run_dir / "summary.json").read_text())
    assert a["metrics"] == b["metrics"] and a["steps"] == b["steps"]
    for name in ("best", "last"):
        ca, cb = (checkpoint.load(d / "checkpoints" / f"{name}.pt") for d in (reference, run_dir))
        assert ca["epoch"] == cb["epoch"] and all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    tags = _scalars(run_dir)
    for tag, events in tags.items():
        steps = [s for s, _ in events]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice"
    assert sorted(s for s, _ in tags["train/loss"]) == list(range(1, 41))
    assert not list(run_dir.rglob(".*.tmp"))


class SlowEpochs(SignalAt):
    """Epochs of at least 200 ms, so that the writer (which rests between writes) writes before epoch 3."""

    def __init__(self) -> None:
        super().__init__(step=10**9)

    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool) -> None:
        time.sleep(0.2)


def test_a_full_disk_stops_the_run_in_one_line_and_leaves_it_resumable(tmp_path, monkeypatch):
    """The failing write surfaces at the next save or at the end of the run, whichever comes first."""
    whole = _run(SGD_MOMENTUM, tmp_path, "whole")
    real = runs.atomic_write

    def full_disk(path, data):  # noqa: ANN001
        if Path(path).name == "last.pt":
            buf = io.BytesIO()
            data(buf)
            if torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["epoch"] >= 3:  # the disk fills in epoch 3
                raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(runs, "atomic_write", full_disk)
    with pytest.raises(RunDirError) as exc:
        _run(SGD_MOMENTUM, tmp_path, "full", SlowEpochs())
    path = tmp_path / "full"
    msg = str(exc.value)
    assert "last.pt: cannot be written (No space left on device)" in msg and f"mlptrain resume {path}" in msg
    assert "\n" not in msg
    assert checkpoint.load(path / "checkpoints" / "last.pt")["epoch"] in (1, 2)  # a good one before the disk filled, whole
    assert not list((path / "checkpoints").glob(".*.tmp"))
    monkeypatch.setattr(runs, "atomic_write", real)  # space freed
    assert_same_run(whole.run_dir, path, whole, _resume(path))


def test_fit_into_an_existing_run_dir_points_at_resume(tmp_path):
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 5)
    with pytest.raises(RunDirError, match=f"already exists and is not empty.*mlptrain resume {path}"):
        pipeline.start_run(_spec(SGD_MOMENTUM, tmp_path), None, path)


def test_eval_warns_when_a_checkpoint_differs_from_the_hash_its_run_recorded(tmp_path, capsys):
    done = _run(SGD_MOMENTUM, tmp_path, "run")
    best = done.run_dir / "checkpoints" / "best.pt"
    recorded = json.loads((done.run_dir / "summary.json").read_text())["checkpoints"]
    assert recorded["best"]["sha256"] == checkpoint.sha256(best) and recorded["best"]["format_version"] == 2
    assert main(["eval", str(best)]) == 0
    assert "warning" not in capsys.readouterr().err
    state = checkpoint.load(best)
    state["model"] = {k: v + 1 for k, v in state["model"].items()}
    checkpoint.save(best, {k: v for k, v in state.items() if k not in ("format", "format_version")})
    assert main(["eval", str(best)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {best}: its SHA-256 differs from the one" in err and "summary.json" in err


def test_a_second_ctrl_c_exits_at_once_and_leaves_whole_checkpoints(cli_reference, tmp_path):
    cfg, _ = cli_reference
    run_dir = tmp_path / "run"
    proc = _start(["fit", str(cfg), "--run-dir", str(run_dir)])
    _wait_for_epoch(proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    for pt in (run_dir / "checkpoints").glob("*.pt"):
        checkpoint.load(pt)
    spec, state = pipeline.load_resume(run_dir, [])  # still resumable
    assert state["step"] > 0


def test_ctrl_c_again_while_the_process_shuts_down_prints_no_traceback(cli_reference, tmp_path):
    """After the save line Python shuts down (atexit callbacks, threads): a second Ctrl-C then, e.g. one
    20 ms after the first, must end the process without a traceback. Signals every millisecond from the
    save line on reach every moment of the shutdown."""
    cfg, _ = cli_reference
    run_dir = tmp_path / "run"
    proc = _start(["fit", str(cfg), "--run-dir", str(run_dir)], own_group=True)
    _wait_for_epoch(proc)
    os.killpg(proc.pid, signal.SIGINT)
    said = proc.stderr.readline()
    assert "saved" in said and f"mlptrain resume {run_dir}" in said, said
    while proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.001)
    err = said + proc.stderr.read()
    assert proc.returncode in (130, -signal.SIGINT), err  # -SIGINT: past the interpreter's own shutdown, as a shell reports 130
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert pipeline.load_resume(run_dir, [])[1]["step"] > 0


def test_a_run_stopped_after_its_last_epoch_but_before_its_summary_is_finished_by_resume(tmp_path):
    raw = {**PLATEAU_EARLY_STOP, "train": {**PLATEAU_EARLY_STOP["train"], "epochs": 60,
                                             "early_stopping": {"patience": 1, "min_delta": 0.05}}}
    whole = _run(raw, tmp_path, "whole")
    assert whole.summary["stopped_early"]
    cut = tmp_path / "cut"
    _run(raw, tmp_path, "cut")
    (cut / "summary.json").unlink()  # as if Ctrl-C had come during the final evaluation
    finished = _resume(cut)
    assert finished.metrics == whole.metrics
    for key in ("best_epoch", "epochs_run", "stopped_early", "steps", "final_weights"):
        assert finished.summary[key] == whole.summary[key], key


def test_fit_resume_is_resume_and_fit_needs_a_config_otherwise(tmp_path, capsys):
    whole = _run(SGD_MOMENTUM, tmp_path, "whole")
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 17)
    assert main(["fit", "--resume", str(path), "--run-dir", str(tmp_path / "x")]) == 2
    assert "a resumed run stays in its own directory" in capsys.readouterr().err
    assert main(["fit", "--resume", str(path), "--set", "train.epochs=6"]) == 0
    assert json.loads((path / "summary.json").read_text())["metrics"] == whole.metrics
    capsys.readouterr()
    assert main(["fit"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "give the YAML spec to train (or --resume RUN_DIR)" in err
    assert main(["resume", str(path)]) == 5
    assert f"complete, all 6 epochs ran; to train longer: mlptrain resume {path} --set train.epochs=12" in capsys.readouterr().err


def test_a_complete_run_trained_further_no_longer_vouches_for_its_checkpoints(tmp_path, capsys):
    done = _run(SGD_MOMENTUM, tmp_path, "run")
    summary = done.run_dir / "summary.json"
    before = summary.read_bytes()
    spec, state = pipeline.load_resume(done.run_dir, ["train.epochs=9"])
    state["class_names"] = ["x", "y", "z"]  # as if the data had changed: refused before anything is touched
    with pytest.raises(Exception, match="the data changed"):
        pipeline.resume(done.run_dir, spec, state, "cpu")
    assert summary.read_bytes() == before
    with pytest.raises(Interrupted):
        _resume(done.run_dir, ["train.epochs=9"], SignalAt(45))
    during = json.loads(summary.read_text())
    assert during["status"] == "resumed: training again" and "checkpoints" not in during
    assert main(["eval", str(done.run_dir / "checkpoints" / "last.pt")]) == 0
    assert "warning" not in capsys.readouterr().err  # no recorded hash to disagree with
    assert _resume(done.run_dir).summary["status"] == "complete"
    assert json.loads(summary.read_text())["checkpoints"]["last"]["sha256"] == checkpoint.sha256(
        done.run_dir / "checkpoints" / "last.pt")


@pytest.mark.parametrize("signal_at, where", [(11, "within epoch 2"), (7, "the end of epoch 1")])
def test_the_interrupt_and_the_resume_name_the_same_place(tmp_path, capsys, signal_at, where):
    with pytest.raises(Interrupted, match=rf"after step \d+ \({where}\)") as exc:
        _run(SGD_MOMENTUM, tmp_path, "stopped", SignalAt(signal_at))  # 7 steps an epoch
    step = int(str(exc.value).split("after step ")[1].split()[0])
    assert main(["resume", str(tmp_path / "stopped"), "--set", "logging.progress=none"]) == 0
    resumed = "the end of epoch 1" if step == 7 else f"epoch 2, batch {step - 7}"
    assert f"resuming at step {step} ({resumed})" in capsys.readouterr().out


def test_a_hand_edited_config_yaml_is_said_to_be_ignored_on_resume(tmp_path):
    from mlptrain.errors import CheckpointWarning

    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        pipeline.load_resume(path, [])  # untouched: no word
    text = (path / "config.yaml").read_text()
    (path / "config.yaml").write_text(text.replace("lr: 0.05", "lr: 0.5"))
    with pytest.warns(CheckpointWarning, match=r"config.yaml: differs from the config the run was started with .* with --set"):
        spec, _ = pipeline.load_resume(path, [])
    assert spec.optimizer.lr == 0.05


def test_a_damaged_summary_of_a_complete_run_is_written_again_by_resume(tmp_path):
    done = _run(SGD_MOMENTUM, tmp_path, "done")
    (done.run_dir / "summary.json").write_text('{"status": "compl')
    again = _resume(done.run_dir)  # nothing left to train: the run is finished, its summary whole again
    assert json.loads((done.run_dir / "summary.json").read_text())["metrics"] == done.metrics == again.metrics


def test_a_best_pt_missing_at_the_end_is_written_again_from_the_final_weights(tmp_path, monkeypatch, capsys):
    """E.g. removed while a stopped run waited: the summary must not point at a file that is not there."""
    real_fit, real_save = pipeline.fit, runs.Run.save_checkpoint
    training = {"on": False}

    def fit_without_best(*args, **kwargs):
        training["on"] = True
        try:
            return real_fit(*args, **kwargs)
        finally:
            training["on"] = False

    def save(self, name, state, durable=False):
        if name == "best" and training["on"]:
            return self.checkpoint_path(name)  # as if gone from the disk
        return real_save(self, name, state, durable)

    monkeypatch.setattr(pipeline, "fit", fit_without_best)
    monkeypatch.setattr(runs.Run, "save_checkpoint", save)
    notes: list[str] = []
    spec = _spec(SGD_MOMENTUM, tmp_path)
    path = pipeline.start_run(spec, None, tmp_path / "run")
    out = pipeline.train(spec, path, "cpu", None, notify=notes.append)
    best = path / "checkpoints" / "best.pt"
    assert out.summary["checkpoint"] == str(best) and best.is_file()
    assert notes == [f"warning: {best} was missing; written again from epoch {out.summary['best_epoch']}'s weights (the weights of the final metrics)"]
    assert main(["eval", str(best), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(out.metrics["test"], rel=1e-6)


def test_a_best_pt_put_in_place_of_last_pt_is_named_for_what_it_is(tmp_path, capsys):
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 20)
    last = path / "checkpoints" / "last.pt"
    shutil.copy(path / "checkpoints" / "best.pt", last)
    assert main(["resume", str(path)]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"error: {last}: a best-weights checkpoint (like best.pt: the weights of epoch ") and "older" not in err
    assert "resume needs the last.pt its run wrote" in err
    assert f"mlptrain eval {last}" in err and f"mlptrain fit {path / 'config.yaml'} --set KEY=VALUE" in err
    assert main(["eval", str(last)]) == 0  # what it offers works
    state = checkpoint.load(last)
    checkpoint.save(last, {**{k: v for k, v in state.items() if k != "format"}, "format_version": 1})
    assert main(["resume", str(path)]) == 4  # a last.pt from before resume existed is still said to be that
    assert "written by an older mlptrain" in capsys.readouterr().err


def test_resume_in_a_read_only_run_directory_says_what_resume_can_do(tmp_path, monkeypatch, capsys):
    """resume cannot pick another run directory: it says how to make this one writable, or to resume a copy."""
    path = _interrupted(SGD_MOMENTUM, tmp_path, "stopped", 20)
    real = runs.atomic_write

    def read_only(target, data):  # noqa: ANN001  (as chmod -w would, for a user whom permissions bind)
        if Path(target).is_relative_to(path):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(target, data)

    monkeypatch.setattr(runs, "atomic_write", read_only)
    assert main(["resume", str(path)]) == 5
    err = capsys.readouterr().err
    assert f"error: {path}: not writable (Permission denied); make it writable" in err and "pick a" not in err
    assert f"copy the run directory elsewhere and resume the copy: cp -r {path} NEW_DIR && mlptrain resume NEW_DIR" in err
    copy = tmp_path / "copy"
    assert subprocess.run(["cp", "-r", str(path), str(copy)]).returncode == 0
    assert main(["resume", str(copy)]) == 0  # the advice works
    assert json.loads((copy / "summary.json").read_text())["status"] == "complete"


def test_resume_of_a_directory_that_is_no_run_says_so(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["resume", str(empty)]) == 5
    err = capsys.readouterr().err
    assert f"error: {empty}: not an mlptrain run directory (it has no config.yaml or checkpoints/last.pt)" in err
    assert "save_last" not in err
    run = _interrupted(SGD_MOMENTUM, tmp_path, "runs/exp/2026-01-01_00-00-00", 20)
    assert main(["resume", str(tmp_path / "runs")]) == 5  # runs/ given for one of its runs: that run is named
    assert f"e.g. mlptrain resume {run}" in capsys.readouterr().err


class SlowUntilSignal(SignalAt):
    """Epochs of at least 300 ms, then a signal at ``step``: the stopped session holds most of the run's time."""

    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool) -> None:
        time.sleep(0.3)


def test_wall_seconds_of_a_resumed_run_counts_every_session(tmp_path):
    with pytest.raises(Interrupted):
        _run(SGD_MOMENTUM, tmp_path, "stopped", SlowUntilSignal(17))  # in epoch 3, after two slow ones
    seconds = checkpoint.load(tmp_path / "stopped" / "checkpoints" / "last.pt")["resume"]["seconds"]
    assert seconds["wall"] >= seconds["train"] + seconds["val"] >= 0.6
    done = _resume(tmp_path / "stopped")
    s = done.summary
    assert s["wall_seconds"] >= s["train_seconds"] + s["val_seconds"] and s["wall_seconds"] > seconds["wall"]


@pytest.mark.parametrize("augment", [{"label_noise": 0.3}, {"mixup": 0.4}, {"label_noise": 0.2, "mixup": 0.4}],
                         ids=["label-noise", "mixup", "both"])
def test_label_noise_and_mixup_change_the_trajectory_and_are_reproduced_exactly_on_resume(augment, tmp_path):
    raw = {**SGD_MOMENTUM, "augment": augment}
    plain = _run(SGD_MOMENTUM, tmp_path, "plain")
    whole = _run(raw, tmp_path, "whole")
    assert plain.metrics != whole.metrics
    assert [r["train/loss"] for r in runs.read_metrics(plain.run_dir)] != [r["train/loss"] for r in runs.read_metrics(whole.run_dir)]
    path = _interrupted(raw, tmp_path, "stopped", 13)  # mid-epoch (7 steps an epoch)
    streams = checkpoint.load(path / "checkpoints" / "last.pt")["resume"]["rng"]["generators"]
    assert set(augment) <= set(streams)  # each part's own stream, saved under its name
    resumed = _resume(path)
    assert_same_run(whole.run_dir, path, whole, resumed)
