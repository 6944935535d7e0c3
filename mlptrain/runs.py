"""The run directory: where a run's config, metrics, checkpoints and TensorBoard events live.

``runs/<name>/<timestamp>/`` is created with ``exist_ok=False``, so a new run never touches an old
one. Every file goes through ``atomic_write``: a temporary file in the same directory, flushed,
fsynced and renamed into place, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, Optional, Union

from mlptrain.errors import RunDirError

if TYPE_CHECKING:
    import numpy as np


# Keys a resumed run may change (`mlptrain resume --set`): how long to go on and where, not what is
# trained. Here, not in config: `mlptrain --help` shows them without importing pydantic and the spec.
RESUMABLE = ("train.epochs", "train.early_stopping.patience", "train.device", "train.threads", "logging.progress")

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, data: Union[bytes, Callable[[BinaryIO], Any]]) -> None:
    """Write ``data`` to ``path`` so that readers only ever see a whole file.

    ``data`` is the bytes, or a function that writes them into the open file (a checkpoint streams
    its tensors instead of building a second copy of them in memory first).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_error(path: Path, exc: OSError, hint: str = "") -> RunDirError:
    """A failed write (full disk, lost permission) as one line: the file, the reason, what to do."""
    return RunDirError(f"{path}: cannot be written ({exc.strerror or exc}); free disk space or fix permissions{hint}")


def write_output(path: Path, data: Union[bytes, Callable[[BinaryIO], Any]]) -> None:
    """A file the user named (``-o``, ``init``): atomically, and a failed write (a folder that is
    not writable, a full disk) as one line that names the path, not the temporary file."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise write_error(Path(path), exc) from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"))


def create_run_dir(runs_root: Path, name: str, run_dir: Optional[Path] = None, command: str = "mlptrain") -> Path:
    """A fresh, writable run directory; an existing non-empty one is refused, never reused (``command``:
    how the user runs mlptrain, for the resume command the refusal suggests)."""
    if run_dir is not None:
        path = Path(run_dir)
        fresh = path.is_dir() and (not any(path.iterdir()) or unused(path))
        if path.exists() and not fresh:
            hint = f" (to go on with that run: {command} resume {path})" if (path / "checkpoints" / "last.pt").is_file() else ""
            raise RunDirError(f"--run-dir {path}: already exists and is not empty; pick a new directory{hint}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"--run-dir {path}: cannot create it ({exc.strerror}); pick a writable place") from None
    else:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        parent = Path(runs_root) / name
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"{parent}: cannot create the run directory ({exc.strerror}); set logging.runs_dir or --run-dir") from None
        for attempt in range(1000):
            path = parent / (stamp if attempt == 0 else f"{stamp}_{attempt}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunDirError(f"{path}: cannot create the run directory ({exc.strerror})") from None
        else:
            raise RunDirError(f"{parent}: too many runs started in the same second")
    probe_writable(path)
    return path


def probe_writable(path: Path, fix: str = "pick a writable run directory or free space") -> None:
    """Fail before training, not at the first checkpoint: make checkpoints/ and write a file there
    (``fix``: what the user can do about a directory that is not writable, as the caller knows it)."""
    path = Path(path)
    try:
        (path / "checkpoints").mkdir(exist_ok=True)
        atomic_write(path / "checkpoints" / ".write-probe", b"")
        os.unlink(path / "checkpoints" / ".write-probe")
    except OSError as exc:
        raise RunDirError(f"{path}: not writable ({exc.strerror}); {fix}") from None


def unused(path: Path) -> bool:
    """A run directory that holds nothing but its empty checkpoints/ folder (a fit stopped before
    writing anything, even by SIGKILL): as good as new."""
    try:
        entries = list(Path(path).iterdir())
        return [e.name for e in entries] == ["checkpoints"] and not any((Path(path) / "checkpoints").iterdir())
    except OSError:
        return False


def existing_ancestor(path: Path) -> Path:
    """The deepest of ``path`` and its parents that exists now: what a run's cleanup must leave (see remove_if_unused)."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))


def remove_if_unused(path: Path, keep: Optional[Path] = None) -> bool:
    """Remove a run directory that holds nothing but its empty checkpoints/ folder; never a file.

    ``keep`` is the deepest directory that existed before the run's was made (``existing_ancestor``):
    it stays, and so does all above it; the directories between (``runs/<name>/`` made for this run)
    go too while empty. ``keep`` is the run directory itself for an empty --run-dir made beforehand:
    only its checkpoints/ goes.
    """
    path = Path(path)
    try:
        if not unused(path):
            return False
        (path / "checkpoints").rmdir()
        if keep is not None and Path(keep) == path:
            return True
        path.rmdir()
    except OSError:
        return False
    if keep is not None and Path(keep) in path.parents:
        for parent in path.parents:
            if parent == Path(keep):
                break
            try:
                parent.rmdir()
            except OSError:  # another run's directory appeared there meanwhile
                break
    return True


class BackgroundWriter:
    """Atomic file writes on one worker thread, so serializing and fsync never stall the training loop.

    Only the newest pending version of a path is kept: a version nobody will read is skipped rather
    than queued, and a crash still leaves the previous whole file. After each ordinary write the
    worker rests so that those writes take at most ``duty`` of its time (it competes with training
    for the cores). A ``durable`` version (a checkpoint) skips the rest and is never skipped: submitting
    the next durable version of a path first waits until the previous one is on disk. ``flush``
    writes everything pending at once and re-raises a failure (a full disk must stop the run, not
    vanish in a thread).
    """

    def __init__(self, hint: Union[str, Callable[[], str]] = "", duty: float = 1.0) -> None:
        self._hint = hint  # appended to a failed write's message: how to go on (a function: as things stand then)
        self.duty = duty  # the largest share of the time spent writing: after a write of w s, rest w * (1/duty - 1)
        self._rest_until = 0.0
        self._flushing = 0
        self._pending: dict[Path, Callable[[BinaryIO], Any]] = {}
        self._durable: set[Path] = set()  # paths whose durable version is pending or being written
        self._busy = False
        self._error: Optional[BaseException] = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="mlptrain-writer", daemon=True)
        self._thread.start()

    def submit(self, path: Path, payload: Callable[[BinaryIO], Any], durable: bool = False) -> None:
        """Queue ``payload(file)`` (called on the worker with the open temporary file) to become ``path``."""
        with self._cond:
            while durable and path in self._durable and self._error is None:
                self._cond.wait()  # the previous durable version first: none is ever skipped
            self._raise()
            self._pending.pop(path, None)  # re-insert: the newest version, written in submission order
            self._pending[path] = payload
            if durable:
                self._durable.add(path)
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._pending:
                        if self._closed:
                            return
                        self._cond.wait()
                        continue
                    durable = next((p for p in self._pending if p in self._durable), None)
                    rest = self._rest_until - time.monotonic()
                    if durable is not None or rest <= 0 or self._flushing or self._closed:
                        break
                    self._cond.wait(rest)
                path = durable if durable is not None else next(iter(self._pending))
                payload = self._pending.pop(path)
                self._busy = True
            began = time.monotonic()
            try:
                atomic_write(path, payload)
            except BaseException as exc:  # reported to the training thread by flush/submit
                if isinstance(exc, OSError):
                    exc = write_error(path, exc, self.hint)
                with self._cond:
                    self._error = self._error or exc
            finally:
                with self._cond:
                    ended = time.monotonic()
                    if durable is None:  # durable writes are owed, not rested for
                        self._rest_until = ended + (ended - began) * (1 / self.duty - 1)
                    elif path not in self._pending:  # (a newer durable version may already wait)
                        self._durable.discard(path)
                    self._busy = False
                    self._cond.notify_all()

    @property
    def hint(self) -> str:
        return self._hint() if callable(self._hint) else self._hint

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def flush(self) -> None:
        """Write everything pending now (no rest), and wait for it."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._pending or self._busy:
                    self._cond.wait()
            finally:
                self._flushing -= 1
            self._raise()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join()


FINAL_RUN = "final"  # the run directory's sub-folder for the final model, a TensorBoard run of its own: see Run.log_final
PR_CURVE_MAX_CLASSES = 10  # one-vs-rest PR curves per class up to this many classes


@dataclass
class Classified:
    """One split's class decisions by the final model, which TensorBoard's pictures are drawn from."""

    task: str  # binary or multiclass
    confusion: np.ndarray  # k x k counts, rows: true class, columns: predicted (as `mlptrain eval` prints it)
    target: np.ndarray  # (N,) true class indices
    probs: np.ndarray  # (N, k) class probabilities (binary: both columns)

    def image(self, split: str, names: list[str]) -> np.ndarray:
        from mlptrain.figures import confusion_image

        rows = int(self.confusion.sum())
        accuracy = float(self.confusion.trace()) / max(rows, 1)
        return confusion_image(self.confusion, names, f"{split}: {rows} rows, accuracy {accuracy:.3f}")

    def pr_classes(self) -> range:
        """Whose PR curves to draw: binary, the positive class (the second); multiclass, each against the rest."""
        if self.task == "binary":
            return range(1, 2)
        k = self.probs.shape[1]
        return range(k) if k <= PR_CURVE_MAX_CLASSES else range(0)


_PLAIN = (int, float, str, bool, type(None))
INLINE_MAX_BYTES = 256 * 2**20  # see Run.serialize_inline


def _map_tensors(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to every tensor in it (dicts, lists and tuples rebuilt around them)."""
    if isinstance(value, _PLAIN):  # first: a run's history is thousands of floats
        return value
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    return fn(value) if hasattr(value, "detach") else value


def tensor_bytes(value: Any) -> int:
    """The bytes of all tensors in a (nested) state."""
    sizes: list[int] = []
    _map_tensors(value, lambda t: sizes.append(t.numel() * t.element_size()))
    return sum(sizes)


def snapshot(value: Any) -> Any:
    """A copy of a (nested) state whose tensors no longer change with training: saved later, on the writer."""
    return _map_tensors(value, lambda t: t.detach().to("cpu", copy=True))


def _csv_line(columns: list[str], row: dict[str, Any]) -> str:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=columns, lineterminator="\n").writerow(row)
    return buf.getvalue()


class Run:
    """Writes one run's files: config.yaml, metrics.csv, summary.json, checkpoints, TensorBoard events.

    Per-epoch files (metrics.csv, checkpoints) go through a BackgroundWriter; ``close`` waits for them.
    A resumed run passes the metrics rows of its checkpoint (``rows``) and, in ``logged``, the last
    TensorBoard step of each tag already on disk: a step the stopped run logged after its
    checkpoint is not logged twice, and one it never flushed is logged now.
    """

    def __init__(
        self, path: Path, tensorboard: bool, write_checkpoint: Callable[[BinaryIO, dict[str, Any]], None],
        rows: Iterable[dict[str, Any]] = (), logged: Optional[dict[str, int]] = None, serialize_inline: bool = False,
        command: str = "mlptrain",
    ):
        self.path = Path(path)
        self.command = command  # how the user runs mlptrain (python -m mlptrain), for the commands next_step suggests
        # Where a checkpoint is serialized. Training on the CPU: here, at once. A writer thread then
        # competes with training's own threads for the cores, and an OpenMP team waits for its
        # slowest member: serializing last.pt on the writer slowed a 12 ms digits epoch by 3.5 ms,
        # in line by 1.6 ms (median of 16 interleaved runs). On a GPU the CPU is idle while the
        # device computes, so the writer serializes a snapshot in the background. So does a state over
        # INLINE_MAX_BYTES: pickled in line it would stall a step for long, and the in-memory copy
        # grows by doubling (twice the checkpoint's memory at a time).
        self.serialize_inline = serialize_inline
        self.rows: list[dict[str, Any]] = list(rows)
        self._csv_columns: list[str] = []  # metrics.csv as rendered so far: a 1,000-epoch run re-rendered
        self._csv_lines: list[str] = []  # 1,000 rows after every epoch (the header first)
        self._write_checkpoint = write_checkpoint
        # A failed write leaves the previous version of the file whole, so the run stays resumable.
        # Checkpoints are durable: written at once, in order (best.pt before the same epoch's last.pt),
        # and the next version waits for the previous, so a crash loses at most the epoch (or
        # every_steps steps) in progress and the one just finished, and leaves best.pt no older than
        # last.pt's best epoch. metrics.csv takes at most an eighth of the writer's time, newest
        # first: resume rebuilds its rows from last.pt.
        self._writer = BackgroundWriter(hint=self.next_step, duty=0.125)
        self.static: dict[str, Any] = {}  # merged into every checkpoint (spec, preprocessing, names)
        self._clock: Optional[float] = None  # perf_counter() when the run's wall time was 0 (start_clock)
        self.logged = logged or {}
        self.writer = None
        if tensorboard:
            self.writer = self._open_writer(self.path)
            for row in self.rows:  # a killed session's last events may never have reached the disk
                self._log_row(row)

    def next_step(self) -> str:
        """How to go on after a failed write, as things stand: resume from last.pt once there is one."""
        if self.checkpoint_path("last").is_file():
            return f", then go on with: {self.command} resume {self.path}"
        return f", then start the run again with {self.command} fit (nothing resumable was saved yet)"

    def _open_writer(self, log_dir: Path) -> Any:
        """A TensorBoard writer for ``log_dir`` (the run, or its final/ run), failing in the writer's words."""
        from torch.utils.tensorboard import SummaryWriter

        try:
            return SummaryWriter(log_dir=str(log_dir))
        except OSError as exc:  # a full disk: the probe's empty file fit, the event file's header did not
            for partial in Path(log_dir).glob("events.out.tfevents.*"):
                if partial.stat().st_size == 0:
                    partial.unlink()
            raise write_error(Path(log_dir) / "events.out.tfevents.*", exc, self.next_step()) from None

    @contextlib.contextmanager
    def _events(self, log_dir: Optional[Path] = None) -> Iterator[None]:
        """TensorBoard's writes failing (full disk, read-only directory) as one line, like every other file's."""
        try:
            yield
        except OSError as exc:
            raise write_error(Path(log_dir or self.path) / "events.out.tfevents.*", exc, self.next_step()) from None

    def write_config(self, text: str) -> None:
        self._write_text("config.yaml", text, "")

    def _write_text(self, name: str, text: str, hint: str) -> None:
        """A small file written at once (not by the writer thread), failing in the writer's words."""
        try:
            atomic_write_text(self.path / name, text)
        except OSError as exc:
            raise write_error(self.path / name, exc, hint) from None

    def start_clock(self, seconds_before: float = 0.0) -> None:
        """The run's wall clock starts now, at ``seconds_before`` (the sessions before a resume): last.pt
        carries it on (``resume.seconds.wall``) so that summary.json's wall_seconds counts the whole run."""
        self._clock = time.perf_counter() - seconds_before

    def wall_seconds(self) -> float:
        """The run's wall time so far, every session of a resumed run included (0 before start_clock)."""
        return 0.0 if self._clock is None else time.perf_counter() - self._clock

    def _clocked(self, state: dict[str, Any]) -> dict[str, Any]:
        """A resumable state (last.pt's) with the wall time so far beside its training seconds."""
        if self._clock is None or not isinstance(state.get("resume"), dict):
            return state
        resume = state["resume"]
        return {**state, "resume": {**resume, "seconds": {**resume.get("seconds", {}), "wall": self.wall_seconds()}}}

    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def save_checkpoint(self, name: str, state: dict[str, Any], durable: bool = False) -> Path:
        """Queue a checkpoint; ``durable`` ones are never skipped (see BackgroundWriter)."""
        path = self.checkpoint_path(name)
        state = self._clocked(state)
        if self.serialize_inline and tensor_bytes(state) <= INLINE_MAX_BYTES:
            buf = io.BytesIO()
            self._write_checkpoint(buf, {**self.static, **state})
            data = buf.getbuffer()  # the bytes are the snapshot: training may change the tensors now
            self._writer.submit(path, lambda f: f.write(data), durable)
            return path
        frozen = {**self.static, **snapshot(state)}
        self._writer.submit(path, lambda f: self._write_checkpoint(f, frozen), durable)
        return path

    def log_epoch(self, epoch: int, values: dict[str, float], seconds: Optional[float] = None) -> None:
        """One metrics.csv row and one TensorBoard scalar per value, tagged as given (train/loss, val/f1, lr).

        ``seconds`` (the epoch's wall time, training and validation) goes to metrics.csv's
        ``epoch_seconds`` column and TensorBoard's ``time/epoch_seconds``: slowing epochs show up.
        """
        row = {"epoch": epoch, **values}
        if seconds is not None:
            row["epoch_seconds"] = seconds
        self.rows.append(row)
        text = self._csv_text(row)
        self._writer.submit(self.path / "metrics.csv", lambda f: f.write(text.encode("utf-8")))
        self._log_row(row)

    def _log_row(self, row: dict[str, Any]) -> None:
        """One metrics.csv row as TensorBoard scalars (epoch_seconds as time/epoch_seconds)."""
        epoch = row["epoch"]
        tags = {("time/epoch_seconds" if k == "epoch_seconds" else k): v for k, v in row.items() if k != "epoch"}
        self._scalars(epoch, {tag: v for tag, v in tags.items() if self._new(tag, epoch)})

    def _scalars(self, step: int, values: dict[str, float], writer: Any = None) -> None:
        """TensorBoard scalars of one step as one event: add_scalar makes an event per tag, and a
        dozen of them took 1.4 ms of every epoch (0.09 ms as one). ``writer``: another run's (final/)."""
        writer = writer or self.writer
        if writer is None or not values:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
        with self._events(Path(writer.log_dir)):
            writer._get_file_writer().add_summary(summary, step)

    def _csv_text(self, row: dict[str, Any]) -> str:
        """metrics.csv with ``row`` (just appended to self.rows) added: only a new column re-renders the rows."""
        if not self._csv_columns or any(k not in self._csv_columns for k in row):
            for r in self.rows:
                self._csv_columns += [k for k in r if k not in self._csv_columns]
            self._csv_lines = [_csv_line(self._csv_columns, dict(zip(self._csv_columns, self._csv_columns)))]  # header
            self._csv_lines += [_csv_line(self._csv_columns, r) for r in self.rows]
        else:
            self._csv_lines.append(_csv_line(self._csv_columns, row))
        return "".join(self._csv_lines)

    def _new(self, tag: str, step: int) -> bool:
        """Whether TensorBoard should get ``tag`` at ``step``: it is on, and no earlier session logged it."""
        return self.writer is not None and step > self.logged.get(tag, -1)

    def log_step(self, step: int, loss: float) -> None:
        if self._new("step/train_loss", step):
            self._scalars(step, {"step/train_loss": loss})

    def log_image(self, tag: str, image: Any, step: int = 0) -> None:
        """One picture [C, H, W] in [0, 1] (augmentation's examples), once: a resumed run has it already."""
        if self._new(tag, step):
            with self._events():
                self.writer.add_image(tag, image, step)

    def log_histograms(self, epoch: int, tensors: Iterable[tuple[str, Any]]) -> None:
        for tag, tensor in tensors:
            if self._new(tag, epoch):
                with self._events():
                    self.writer.add_histogram(tag, tensor, epoch)

    def log_final(
        self, hparams: dict[str, Any], metrics: dict[str, dict[str, float]], step: int,
        classified: dict[str, Classified], class_names: list[str],
    ) -> None:
        """The final model in TensorBoard, as the run's ``final/`` run at ``step`` (the last epoch):
        its metrics, confusion matrices and PR curves, and the config beside the metrics for the HParams tab.

        A run of their own, not the training curves' tags: restored best weights' val/loss logged onto
        the val/loss curve would end it with an earlier epoch's value, and the HParams tab reads a
        metric's last point in the run that holds the config. Only what is not a curve (test/...,
        the pictures) makes a card of its own; a train/ metric the epochs do not log (train/f1) is
        left to summary.json.
        """
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        curves = {tag for row in self.rows for tag in row}
        values = {f"{split}/{k}": v for split, m in metrics.items() for k, v in m.items()}
        values = {tag: v for tag, v in values.items() if tag.startswith("test/") or tag in curves}
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        log_dir = self.path / FINAL_RUN
        final = self._open_writer(log_dir)
        try:
            self._scalars(step, values, final)
            with self._events(log_dir):
                for split, c in classified.items():
                    final.add_image(f"{split}/confusion_matrix", c.image(split, class_names), step, dataformats="HWC")
                    for i in c.pr_classes():
                        final.add_pr_curve(f"{split}/pr_curve/{class_names[i]}", c.target == i, c.probs[:, i], step)
                for summary in hparams_summary(clean, values):  # names the metrics; their values are the scalars
                    final._get_file_writer().add_summary(summary)
        finally:
            with self._events(log_dir):
                final.close()

    def mark_resumed(self) -> None:
        """A complete run trained further: its summary no longer vouches for the checkpoints about to change."""
        path = self.path / "summary.json"
        if path.is_file():
            old = read_json(path)
            old = old if isinstance(old, dict) else {}  # damaged: the finished run writes it whole again
            old.pop("checkpoints", None)
            self.write_summary({**old, "status": "resumed: training again"})

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write_text("summary.json", json.dumps(summary, indent=2) + "\n", self._writer.hint)

    def flush(self) -> None:
        """Wait until every queued file is on disk (checkpoints included)."""
        self._writer.flush()

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            if self.writer is not None:
                with self._events():
                    self.writer.flush()
                    self.writer.close()


def read_json(path: Path) -> Any:
    """A JSON file's value; None when it is missing or damaged (a kill or a hand cut it short)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv (none if it has none yet)."""
    try:
        with open(Path(path) / "metrics.csv", newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def logged_steps(path: Path) -> dict[str, int]:
    """The last step of every TensorBoard tag in a run directory's event files (a torn last record ends a file)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    last: dict[str, int] = {}
    for events in sorted(Path(path).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                last[value.tag] = max(last.get(value.tag, -1), event.step)
    return last


def remove_partial_files(path: Path) -> list[Path]:
    """Temporary files that a killed writer left in a run directory (whole files are never touched)."""
    removed = []
    for folder in (Path(path), Path(path) / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, for hparams."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
