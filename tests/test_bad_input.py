"""Bad input, one row per case, through the real command line (``cli.main``, in-process).

Every row checks what the project promises for input a user gets wrong: the exit code of its kind
(config 2, data 3, checkpoint 4, run directory 5), exactly one line on stderr that starts with
``error:`` and names the culprit (file, key, value, column, row) and what to do, no traceback, and
a file system left as it was found: a refused ``fit`` leaves no run directory behind, a refused
``predict`` writes no output, and nothing that existed is changed.
"""

from __future__ import annotations

import gzip
import os
import pickle
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union
from urllib.error import URLError

import numpy as np
import pytest
import torch

from mlptrain import checkpoint
from mlptrain.cli import main

from imagefiles import write_idx, write_mnist

FAST = "train: {epochs: 1, batch_size: 16}\nlogging: {progress: none, tensorboard: false}\n"
MOONS = "data: {name: moons, n_samples: 60}\n" + FAST
# a CSV the shared csv model is trained on: three numeric features, a text label
TRAIN_CSV = "a,b,c,y\n" + "".join(f"{i},{i % 3},{i * 0.5},{'p' if i % 2 else 'q'}\n" for i in range(30))


def csv_rows(cells: Callable[[int], str], header: str = "a,b,y", n: int = 30) -> str:
    return header + "\n" + "".join(cells(i) + "\n" for i in range(n))


def labelled(i: int) -> str:
    return "p" if i % 2 else "q"


def npz(**arrays: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    return write


class RunsCode:
    """What a hostile pickle holds: unpickling it calls os.system (it must never be unpickled)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def pickled_code(target: str, with_torch: bool) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        payload = RunsCode(f"touch {path.parent / target}")
        if with_torch:
            torch.save({"format": checkpoint.FORMAT, "format_version": 1, "model": payload}, path)
        else:
            with open(path, "wb") as f:
                pickle.dump(payload, f)

    return write


File = Union[str, bytes, Callable[[Path], None]]


@dataclass
class Row:
    argv: list[str]  # {tmp}: the test's directory (also the cwd); {csv_ckpt}, {blob_ckpt}: shared checkpoints
    code: int
    words: list[str]  # each must be in the error line: the culprit and what to do
    files: dict[str, File] = field(default_factory=dict)  # written into {tmp} first
    setup: Optional[Callable[[Path, dict[str, Path], pytest.MonkeyPatch], None]] = None
    creates: tuple[str, ...] = ()  # paths below {tmp} a refused command may create (torchvision's download folder)
    run_dir: bool = True  # fit: pass --run-dir {tmp}/run (which must not exist afterwards)


def cfg(text: str) -> dict[str, File]:
    return {"cfg.yaml": text}


def fit(*extra: str) -> list[str]:
    return ["fit", "cfg.yaml", *extra]


# ----------------------------------------------------------------------------------------------
# setups that need more than files


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def truncated_copy(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    raw = ck["csv"].read_bytes()
    (tmp / "trunc.pt").write_bytes(raw[: len(raw) // 2])


def newer_version(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    state = torch.load(ck["csv"], weights_only=True)
    state["format_version"] = checkpoint.FORMAT_VERSION + 1
    torch.save(state, tmp / "newer.pt")


def without_spec(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    state = torch.load(ck["csv"], weights_only=True)
    del state["spec"]
    torch.save(state, tmp / "nospec.pt")


def altered_weights(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    state = torch.load(ck["csv"], weights_only=True)
    state["model"] = {k: torch.zeros(7, 7) for k in state["model"]}
    torch.save(state, tmp / "altered.pt")


def flipped_bit(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    """A copy of a checkpoint, outside its run directory, with one bit of a tensor's bytes flipped (a bad
    disk or copy): torch.load reads it without a word; the zip's CRC-32 of that member no longer matches."""
    import struct
    import zipfile

    raw = bytearray(ck["csv"].read_bytes())
    with zipfile.ZipFile(ck["csv"]) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 8)
    name_len, extra_len = struct.unpack("<HH", raw[member.header_offset + 26 : member.header_offset + 30])
    raw[member.header_offset + 30 + name_len + extra_len + 5] ^= 0x08  # a low bit of a float32 weight
    (tmp / "flipped.pt").write_bytes(bytes(raw))
    torch.load(tmp / "flipped.pt", weights_only=True)  # (the damage is one torch itself does not see)


def parquet_named_csv(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x0": [0.5, 1.0], "x1": [0.2, -0.3], "x2": [1.0, 2.0]}), path)


def interrupted_run(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    """A run stopped after its first epoch: last.pt, no summary."""
    (tmp / "runs.yaml").write_text("data: {name: moons, n_samples: 60}\ntrain: {epochs: 3, batch_size: 16}\n"
                                   "logging: {progress: none, tensorboard: false}\n")
    assert main(["fit", str(tmp / "runs.yaml"), "--run-dir", str(tmp / "stopped"), "--device", "cpu"]) == 0
    (tmp / "stopped" / "summary.json").unlink()
    state = torch.load(tmp / "stopped" / "checkpoints" / "last.pt", weights_only=True)
    state["epoch"], state["resume"]["finished"] = 1, False
    torch.save(state, tmp / "stopped" / "checkpoints" / "last.pt")


def foreign_state_dict(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp / "weights.pt")


def unlabelled_mnist(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    arrays = write_mnist(tmp / "imgs", n_train=20, n_test=10)
    labels = arrays["train_labels"].copy()
    labels[3] = 12  # MNIST has the classes 0..9
    write_idx(tmp / "imgs" / "train-labels-idx1-ubyte.gz", labels)


def no_system_fashion_mnist(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    """The machine running the tests may have Debian's dataset-fashion-mnist: look in an empty place instead."""
    from dataclasses import replace

    from mlptrain.data import images

    (tmp / "imgs").mkdir()
    sets = dict(images.IMAGE_SETS)
    sets["fashion_mnist"] = replace(sets["fashion_mnist"], system_dirs=(str(tmp / "system"),))
    mp.setattr(images, "IMAGE_SETS", sets)


def offline(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    """No route to the download host, whatever this machine's network is."""
    import socket
    import urllib.request

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    (tmp / "imgs").mkdir()
    mp.setattr(socket, "create_connection", unreachable)
    mp.setattr(urllib.request, "getproxies", lambda: {})


def download_fails(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    """The host answers the probe, then torchvision's download itself fails (as it does offline behind a proxy)."""
    import torchvision.datasets.mnist as tv_mnist

    from mlptrain.data import images

    def no_network(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    (tmp / "imgs").mkdir()
    mp.setattr(images, "_reachable", lambda host, port, timeout: None)
    mp.setattr(tv_mnist, "download_and_extract_archive", no_network)


def existing_run(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    run = tmp / "old-run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ck["csv"], run / "checkpoints" / "best.pt")
    (run / "metrics.csv").write_text("epoch,train/loss\n1,0.5\n")


def read_only(tmp: Path, ck: dict[str, Path], mp: pytest.MonkeyPatch) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o500)
    try:  # root (os.geteuid() == 0 with CAP_DAC_OVERRIDE) writes anyway: then there is nothing to test
        (tmp / "ro" / "probe").mkdir()
    except PermissionError:
        return
    (tmp / "ro" / "probe").rmdir()
    (tmp / "ro").chmod(0o700)
    pytest.skip(f"file permissions are not enforced for this user (uid {os.geteuid()})")


# ----------------------------------------------------------------------------------------------
# the table

ROWS = [
    # --- config file -----------------------------------------------------------------------------
    pytest.param(Row(fit(), 2, ["cfg.yaml", "config file not found", "mlptrain init"]), id="config-missing"),
    pytest.param(Row(["validate", "confs"], 2, ["confs: a directory, not a config file", "give a YAML file", "(it holds a.yaml)"],
                     setup=lambda tmp, ck, mp: ((tmp / "confs").mkdir(), (tmp / "confs" / "a.yaml").write_text(MOONS))),
                 id="config-a-directory"),
    pytest.param(Row(fit(), 2, ["cfg.yaml", "line 2", "not valid YAML", "fix the syntax"],
                     cfg("data: {name: moons\ntrain: [1, 2\n")), id="config-not-yaml"),
    pytest.param(Row(fit(), 2, ["cfg.yaml", "the config is empty", "data:"], cfg("")), id="config-empty"),
    pytest.param(Row(fit(), 2, ["cfg.yaml", "top level must be a mapping", "got a list"],
                     cfg("- data\n- model\n")), id="config-list-at-top"),
    pytest.param(Row(fit(), 2, ["cfg.yaml", "top level must be a mapping", "got an int"], cfg("5\n")), id="config-int-at-top"),
    pytest.param(Row(fit(), 2, ["cfg.yaml", "unknown key 'optimzer'", "did you mean 'optimizer'?"],
                     cfg(MOONS + "optimzer: {lr: 0.1}\n")), id="unknown-key-top"),
    pytest.param(Row(fit(), 2, ["unknown key 'train.early_stopping.patiense'", "did you mean 'patience'?"],
                     cfg("data: {name: moons}\ntrain: {early_stopping: {patiense: 3}}\n")), id="unknown-key-nested"),
    pytest.param(Row(fit(), 2, ["unknown key 'data.split.vall'", "did you mean 'val'?"],
                     cfg("data: {name: moons, split: {vall: 0.2}}\n")), id="unknown-key-in-data-split"),
    pytest.param(Row(fit(), 2, ["unknown key 'model.activation.0.slop'", "did you mean 'slope'?"],
                     cfg("data: {name: moons}\nmodel: {hidden: [4], activation: [{name: leaky_relu, slop: 0.1}]}\n")),
                 id="unknown-key-in-a-list"),
    pytest.param(Row(fit(), 2, ["unknown key 'train.zzz'", "valid keys here:", "batch_size", "epochs"],
                     cfg("data: {name: moons}\ntrain: {zzz: 1}\n")), id="unknown-key-without-close-match"),
    pytest.param(Row(fit("--set", "train.epochs=abc"), 2, ["train.epochs = 'abc'", "should be a valid integer"], cfg(MOONS)),
                 id="wrong-type"),
    pytest.param(Row(fit("--set", "optimizer.lr=-0.1"), 2, ["optimizer.lr = -0.1", "greater than 0"], cfg(MOONS)),
                 id="negative-lr"),
    pytest.param(Row(fit("--set", "model.dropout=1.0"), 2, ["model.dropout = 1.0", "less than 1"], cfg(MOONS)),
                 id="dropout-one"),
    pytest.param(Row(fit("--set", "train.epochs=0"), 2, ["train.epochs = 0", "greater than or equal to 1"], cfg(MOONS)),
                 id="zero-epochs"),
    pytest.param(Row(fit("--set", "train.early_stopping.patience=-1"), 2,
                     ["train.early_stopping.patience = -1", "greater than or equal to 0"], cfg(MOONS)), id="negative-patience"),
    pytest.param(Row(fit("--set", "data.split={val: 0.5, test: 0.5}"), 2, ["data.split", "no training rows", "below 1"],
                     cfg(MOONS)), id="split-fractions-leave-no-training-rows"),
    pytest.param(Row(fit("--set", "model.activation=relux"), 2,
                     ["model.activation.name = 'relux'", "'relu'", "'leaky_relu'", "'identity'"], cfg(MOONS)),
                 id="unknown-activation"),
    pytest.param(Row(fit("--set", "loss=crossentropy"), 2, ["loss.name = 'crossentropy'", "'cross_entropy'", "'kl_div'"],
                     cfg(MOONS)), id="unknown-loss"),
    pytest.param(Row(fit("--set", "optimizer.name=adamm"), 2, ["optimizer.name = 'adamm'", "'adam'", "'adadelta'"],
                     cfg(MOONS)), id="unknown-optimizer"),
    pytest.param(Row(fit("--set", "scheduler=cosin"), 2, ["scheduler.name = 'cosin'", "'cosine'", "'reduce_on_plateau'"],
                     cfg(MOONS)), id="unknown-scheduler"),
    pytest.param(Row(fit("--set", "loss=hinge"), 2,
                     ["cfg.yaml: ", "loss.name = 'hinge'", "does not fit task 'regression'", "use one of: mse, mae, huber"],
                     cfg("data: {name: sine, n_samples: 60}\n" + FAST)), id="hinge-on-regression"),
    pytest.param(Row(fit("--set", "loss=mae"), 2,
                     ["cfg.yaml: ", "loss.name = 'mae'", "does not fit task 'multiclass'", "cross_entropy", "task: regression"],
                     cfg("data: {name: blobs, n_samples: 60}\n" + FAST)), id="mae-on-multiclass"),
    pytest.param(Row(fit("--set", "train.epoch=3"), 2, ["'train.epoch'", "did you mean 'epochs'?"], cfg(MOONS)),
                 id="set-unknown-path"),
    pytest.param(Row(fit("--set", "train.epochs.max=3"), 2, ["'train.epochs' is a value", "--set train.epochs=VALUE"],
                     cfg(MOONS)), id="set-below-a-value"),
    pytest.param(Row(fit(), 2, ["cfg.yaml", "line 2", "Python tags are not allowed", "!!python/object/apply:os.system",
                                "remove the tag"],
                     cfg("data: {name: moons}\nname: !!python/object/apply:os.system [\"touch PWNED\"]\n")), id="yaml-python-tag"),
    pytest.param(Row(fit("--name", "../../etc"), 2, ["name = '../../etc'", "plain directory name", "pick a name"], cfg(MOONS)),
                 id="name-escapes-runs-dir"),
    # --- data -----------------------------------------------------------------------------------
    pytest.param(Row(fit(), 3, ["nope.csv", "data file not found", "data.path"],
                     cfg("data: {name: csv, path: nope.csv, target: y}\n" + FAST)), id="csv-missing"),
    pytest.param(Row(fit(), 3, ["sets: a directory, not a data file", "give data.path a file inside it", "(it holds d.csv)"],
                     cfg("data: {name: csv, path: sets, target: y}\n" + FAST),
                     setup=lambda tmp, ck, mp: ((tmp / "sets").mkdir(), (tmp / "sets" / "d.csv").write_text(TRAIN_CSV))),
                 id="csv-path-a-directory"),
    pytest.param(Row(fit(), 3, ["arrays: a directory, not a data file", "give data.path a file inside it"],
                     cfg("data: {name: npz, path: arrays}\n" + FAST), setup=lambda tmp, ck, mp: (tmp / "arrays").mkdir()),
                 id="npz-path-a-directory"),
    pytest.param(Row(fit(), 3, ["zipped.csv", "gzip-compressed, not a plain CSV", "decompress it first"],
                     {**cfg("data: {name: csv, path: zipped.csv, target: y}\n" + FAST), "zipped.csv": gzip.compress(TRAIN_CSV.encode())}),
                 id="csv-gzipped"),
    pytest.param(Row(fit(), 3, ["d.csv", "a Parquet file, not a CSV", "rename it to .parquet", "data.name: parquet"],
                     {**cfg("data: {name: csv, path: d.csv, target: y}\n" + FAST), "d.csv": parquet_named_csv}),
                 id="csv-that-is-parquet"),
    pytest.param(Row(fit(), 3, ["empty.csv", "the CSV file is empty", "header row and data rows"],
                     {**cfg("data: {name: csv, path: empty.csv, target: y}\n" + FAST), "empty.csv": ""}), id="csv-empty"),
    pytest.param(Row(fit(), 3, ["head.csv", "header but no data rows"],
                     {**cfg("data: {name: csv, path: head.csv, target: y}\n" + FAST), "head.csv": "a,b,y\n"}),
                 id="csv-header-only"),
    pytest.param(Row(fit(), 3, ["d.csv", "target column 'label' not found", "columns are: a, b, c, y", "set data.target"],
                     {**cfg("data: {name: csv, path: d.csv, target: label}\n" + FAST), "d.csv": TRAIN_CSV}),
                 id="csv-target-missing"),
    pytest.param(Row(fit(), 3, ["d.csv", "feature column 'e' not found", "data.features"],
                     {**cfg("data: {name: csv, path: d.csv, target: y, features: [a, e]}\n" + FAST), "d.csv": TRAIN_CSV}),
                 id="csv-listed-feature-missing"),
    pytest.param(Row(fit(), 3, ["mixed.csv", "column 'a' row 9", "non-numeric value 'oops'", "data.categorical"],
                     {**cfg("data: {name: csv, path: mixed.csv, target: y}\n" + FAST),
                      "mixed.csv": csv_rows(lambda i: f"{i if i != 7 else 'oops'},{i % 3},{labelled(i)}")}),
                 id="csv-text-in-a-number-column"),
    pytest.param(Row(fit(), 3, ["text.npz", "x[1, 1] is 'x'", "not a number", "encode text features as numbers"],
                     {**cfg("data: {name: npz, path: text.npz}\n" + FAST),
                      "text.npz": npz(x=np.array([["1", "2"], ["3", "x"]] * 10), y=np.arange(20) % 2)}),
                 id="npz-text-features"),
    pytest.param(Row(fit(), 3, ["holes.csv", "3 missing values (a: 3)", "data.missing", "drop, impute_mean"],
                     {**cfg("data: {name: csv, path: holes.csv, target: y}\n" + FAST),
                      "holes.csv": csv_rows(lambda i: f"{i if i % 10 else ''},{i % 3},{labelled(i)}")}),
                 id="csv-missing-values"),
    pytest.param(Row(fit(), 3, ["inf.csv", "column 'a' row 6 is infinite", "data.missing"],
                     {**cfg("data: {name: csv, path: inf.csv, target: y}\n" + FAST),
                      "inf.csv": csv_rows(lambda i: f"{i if i != 4 else 'inf'},{i % 3},{labelled(i)}")}),
                 id="csv-infinite-feature"),
    pytest.param(Row(fit(), 3, ["nan.npz", "2 NaN or infinite values", "x[0, 0]", "remove or fill"],
                     {**cfg("data: {name: npz, path: nan.npz}\n" + FAST),
                      "nan.npz": npz(x=np.where(np.eye(20, 2) > 0, np.nan, 1.0), y=np.arange(20) % 2)}),
                 id="npz-nan-features"),
    pytest.param(Row(fit(), 3, ["ynan.npz", "target (y) holds 1 NaN", "y[3]", "remove those rows"],
                     {**cfg("data: {name: npz, path: ynan.npz}\n" + FAST),
                      "ynan.npz": npz(x=np.arange(40.0).reshape(20, 2), y=np.where(np.arange(20) == 3, np.nan, np.arange(20) % 2))}),
                 id="npz-nan-label"),
    pytest.param(Row(fit(), 3, ["yinf.csv", "target (y) holds 1 NaN or infinite", "row 7", "remove those rows"],
                     {**cfg("data: {name: csv, path: yinf.csv, target: y}\n" + FAST),
                      "yinf.csv": csv_rows(lambda i: f"{i},{i % 3},{i * 0.37 if i != 5 else 'inf'}")}),
                 id="csv-infinite-regression-target"),
    pytest.param(Row(fit("--set", "task=regression"), 3, ["iris", "task 'regression' needs numeric targets", "'setosa'",
                                                          "task: auto"],
                     cfg("data: {name: iris}\n" + FAST)), id="regression-on-class-names"),
    pytest.param(Row(fit(), 3, ["one.csv", "single class (p)", "data.target"],
                     {**cfg("data: {name: csv, path: one.csv, target: y}\n" + FAST),
                      "one.csv": csv_rows(lambda i: f"{i},{i % 3},p")}), id="single-class"),
    pytest.param(Row(["eval", "{blob_ckpt}", "--data", "seven.npz"], 3,
                     ["seven.npz", "labels ['7'] were not seen in training", "known classes: 0, 1, 2", "remove those rows"],
                     {"seven.npz": npz(x=np.ones((5, 3)), y=np.array([0, 1, 2, 7, 1]))}), id="eval-label-not-in-training"),
    pytest.param(Row(fit(), 3, ["train-labels-idx1-ubyte.gz", "label 12 outside 0..9", "data.name"],
                     cfg("data: {name: mnist, root: imgs}\n" + FAST), setup=unlabelled_mnist), id="image-label-out-of-range"),
    pytest.param(Row(["validate", "cfg.yaml"], 3,
                     ["train.batch_size 64", "train.drop_last", "only 28 rows", "at most 28", "train.drop_last: false"],
                     cfg("data: {name: moons, n_samples: 40}\ntrain: {batch_size: 64, drop_last: true}\n")),
                 id="batch-larger-than-data-with-drop-last"),
    pytest.param(Row(fit(), 3, ["train.batch_size 64", "train.drop_last", "only 28 rows", "at most 28"],
                     cfg("data: {name: moons, n_samples: 40}\ntrain: {batch_size: 64, drop_last: true}\n"
                         "logging: {progress: none}\n")), id="fit-batch-larger-than-data-with-drop-last"),
    pytest.param(Row(fit(), 3, ["MNIST files not found", "train-images-idx3-ubyte", "imgs", "put the files in data.root",
                                "data.download: true"],
                     cfg("data: {name: mnist, root: imgs}\n" + FAST), setup=lambda t, c, m: (t / "imgs").mkdir()),
                 id="image-root-empty"),
    pytest.param(Row(fit(), 3, ["Fashion-MNIST files not found", "t10k-labels-idx1-ubyte",
                                "apt-get install -y dataset-fashion-mnist", "data.download: true"],
                     cfg("data: {name: fashion_mnist, root: imgs}\n" + FAST), setup=no_system_fashion_mnist),
                 id="image-root-empty-debian-hint"),
    pytest.param(Row(fit(), 3, ["data.download: could not download MNIST", "Network is unreachable", "put the files in"],
                     cfg("data: {name: mnist, root: imgs, download: true}\n" + FAST), setup=offline),
                 id="download-offline"),
    pytest.param(Row(fit(), 3, ["data.download: could not download MNIST", "Error downloading", "name resolution",
                                "put the files in"],
                     cfg("data: {name: mnist, root: imgs, download: true}\n" + FAST), setup=download_fails,
                     creates=("imgs/MNIST",)), id="download-fails-in-torchvision"),
    # --- checkpoints ----------------------------------------------------------------------------
    pytest.param(Row(["eval", "nothing.pt"], 4, ["nothing.pt", "checkpoint not found", "checkpoints/"]), id="checkpoint-missing"),
    pytest.param(Row(["predict", "nothing.pt", "in.csv", "-o", "out.csv"], 4, ["nothing.pt", "checkpoint not found"],
                     {"in.csv": TRAIN_CSV}), id="predict-checkpoint-missing"),
    pytest.param(Row(["eval", "trunc.pt"], 4, ["trunc.pt", "truncated, damaged", "best.pt or last.pt"], setup=truncated_copy),
                 id="checkpoint-truncated"),
    pytest.param(Row(["predict", "trunc.pt", "in.csv", "-o", "out.csv"], 4, ["trunc.pt", "truncated, damaged"],
                     {"in.csv": TRAIN_CSV}, setup=truncated_copy), id="predict-checkpoint-truncated"),
    pytest.param(Row(["eval", "noise.pt"], 4, ["noise.pt", "not a readable mlptrain checkpoint", "best.pt or last.pt"],
                     {"noise.pt": random.Random(0).randbytes(3000)}), id="checkpoint-random-bytes"),
    pytest.param(Row(["eval", "weights.pt"], 4, ["weights.pt", "not an mlptrain checkpoint", "checkpoints/"],
                     setup=foreign_state_dict), id="checkpoint-plain-state-dict"),
    pytest.param(Row(["eval", "nospec.pt"], 4, ["nospec.pt", "lacks 'spec'", "best.pt or last.pt"], setup=without_spec),
                 id="checkpoint-without-its-config"),
    pytest.param(Row(["predict", "altered.pt", "in.csv", "-o", "out.csv"], 4,
                     ["altered.pt", "weights do not fit the stored model", "use the checkpoint its run wrote"],
                     {"in.csv": TRAIN_CSV}, setup=altered_weights), id="checkpoint-weights-altered"),
    pytest.param(Row(["predict", "flipped.pt", "in.csv", "-o", "out.csv"], 4,
                     ["flipped.pt", "damaged", "fails the archive's CRC check", "best.pt or last.pt"],
                     {"in.csv": TRAIN_CSV}, setup=flipped_bit), id="predict-checkpoint-with-a-flipped-bit"),
    pytest.param(Row(["eval", "flipped.pt"], 4, ["flipped.pt", "fails the archive's CRC check"], setup=flipped_bit),
                 id="eval-checkpoint-with-a-flipped-bit"),
    pytest.param(Row(["eval", "newer.pt"], 4, ["newer.pt", f"format version {checkpoint.FORMAT_VERSION + 1}", "newer",
                                                "upgrade mlptrain"], setup=newer_version), id="checkpoint-newer-format"),
    pytest.param(Row(["eval", "evil.pt"], 4, ["evil.pt", "refused as unsafe", f"{os.system.__module__}.system"],
                     {"evil.pt": pickled_code("PWNED", with_torch=False)}), id="checkpoint-pickle-runs-code"),
    pytest.param(Row(["predict", "evil.pt", "in.csv", "-o", "out.csv"], 4,
                     ["evil.pt", "refused as unsafe", f"{os.system.__module__}.system"],
                     {"evil.pt": pickled_code("PWNED", with_torch=True), "in.csv": TRAIN_CSV}),
                 id="predict-torch-save-runs-code"),
    pytest.param(Row(["predict", "{csv_ckpt}", "two.csv", "-o", "out.csv"], 3,
                     ["two.csv", "feature column 'c' not found", "needs every column it was trained on", "a, b, c"],
                     {"two.csv": csv_rows(lambda i: f"{i},{i}", header="a,b", n=3)}), id="predict-csv-missing-column"),
    pytest.param(Row(["eval", "{csv_ckpt}", "--data", "nolabel.csv"], 3,
                     ["nolabel.csv", "target column 'y' not found", "eval --data needs the target column"],
                     {"nolabel.csv": csv_rows(lambda i: f"{i},{i},{i}", header="a,b,c", n=3)}), id="eval-csv-without-target"),
    pytest.param(Row(["predict", "{blob_ckpt}", "wide.npz", "-o", "out.csv"], 3,
                     ["wide.npz", "has 5 feature columns", "trained on 3", "x0, x1, x2"],
                     {"wide.npz": npz(x=np.ones((4, 5)))}), id="predict-npz-too-wide"),
    pytest.param(Row(["eval", "{blob_ckpt}", "--data", "narrow.csv"], 3,
                     ["narrow.csv", "has 2 feature columns", "trained on 3", "x0, x1, x2"],
                     {"narrow.csv": csv_rows(lambda i: f"{i},{i},{i % 3}", header="x0,x1,y", n=6)}), id="eval-csv-too-narrow"),
    pytest.param(Row(["predict", "{blob_ckpt}", "nope.csv", "-o", "out.csv"], 3,
                     ["nope.csv", "input file not found", "path given to predict"]), id="predict-input-missing"),
    pytest.param(Row(["eval", "{csv_ckpt}", "--data", "nope.csv"], 3, ["nope.csv", "input file not found", "eval --data"]),
                 id="eval-data-missing"),
    pytest.param(Row(["predict", "{blob_ckpt}", "new", "-o", "out.csv"], 3,
                     ["new: a directory, not a data file", "give predict a .csv, .parquet, .npz or .npy file", "(it holds in.csv)"],
                     setup=lambda tmp, ck, mp: ((tmp / "new").mkdir(), (tmp / "new" / "in.csv").write_text(TRAIN_CSV))),
                 id="predict-input-a-directory"),
    pytest.param(Row(["eval", "{csv_ckpt}", "--data", "new"], 3, ["new: a directory, not a data file", "give eval --data a .csv"],
                     setup=lambda tmp, ck, mp: (tmp / "new").mkdir()), id="eval-data-a-directory"),
    pytest.param(Row(["predict", "{blob_ckpt}", "in.csv", "-o", "out.csv"], 3,
                     ["in.csv", "a Parquet file, not a CSV", "rename it to .parquet"], {"in.csv": parquet_named_csv}),
                 id="predict-csv-that-is-parquet"),
    pytest.param(Row(["predict", "{blob_ckpt}", "in.csv", "-o", "out.csv"], 3,
                     ["in.csv", "gzip-compressed, not a plain CSV", "zcat in.csv > plain.csv"],
                     {"in.csv": gzip.compress(b"x0,x1,x2\n1,2,3\n")}), id="predict-csv-gzipped"),
    pytest.param(Row(["predict", "{blob_ckpt}", "in.csv", "-o", "out.csv"], 3,
                     ["in.csv", "an NPZ file of arrays, not a CSV", "rename it to .npz"], {"in.csv": npz(x=np.ones((4, 3)))}),
                 id="predict-csv-that-is-npz"),
    pytest.param(Row(["predict", "{blob_ckpt}", "cube.npz", "-o", "out.csv"], 3,
                     ["cube.npz", "x has shape [N, 1, 3]", "rows of 3 features", "x of shape [N, 3]"],
                     {"cube.npz": npz(x=np.ones((4, 1, 3)))}), id="predict-npz-of-another-shape"),
    pytest.param(Row(["predict", "{blob_ckpt}", "empty.csv", "-o", "out.csv"], 3,
                     ["empty.csv", "the CSV file is empty", "header row and data rows"], {"empty.csv": ""}),
                 id="predict-input-empty"),
    pytest.param(Row(["predict", "{blob_ckpt}", "in.csv", "-o", "out.csv"], 2,
                     ["out.csv", "file exists", "choose a new name"], {"in.csv": TRAIN_CSV, "out.csv": "precious\n"}),
                 id="predict-never-overwrites"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "data.split.seed=-5"], 2, ["data.split.seed = -5", "greater than or equal to 0"],
                     cfg(MOONS)), id="seed-negative"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "train.seed=99999999999999999999"], 2,
                     ["train.seed", "less than or equal to 4294967295"], cfg(MOONS)), id="seed-too-large"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "data.n_samples=100000000000"], 2,
                     ["data.n_samples", "less than or equal to 10000000"], cfg(MOONS)), id="synthetic-rows-too-many"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "model.hidden=[1000000000, 1000000000]"], 2,
                     ["model.hidden [1000000000, 1000000000]", "parameters need", "GiB", "make the layers narrower"], cfg(MOONS)),
                 id="model-larger-than-memory-validate"),
    pytest.param(Row(fit("--set", "model.hidden=[1000000000, 1000000000]"), 2, ["parameters need", "make the layers narrower"],
                     cfg(MOONS)), id="model-larger-than-memory-fit"),
    pytest.param(Row(["eval", "{blob_ckpt}", "--device", "tpu"], 2, ["--device", "auto, cpu, cuda or cuda:N", "'tpu'"]),
                 id="eval-device-unknown"),
    pytest.param(Row(["tensorboard", ".", "--port", "99999"], 2, ["--port", "less than or equal to 65535"]), id="tensorboard-port"),
    pytest.param(Row(["predict", "{blob_ckpt}", "in.csv", "-o", "nodir/out.csv"], 2,
                     ["nodir/out.csv", "folder nodir does not exist", "create it"], {"in.csv": TRAIN_CSV}),
                 id="predict-output-folder-missing"),
    pytest.param(Row(["predict", "{blob_ckpt}", "in.csv", "-o", "sub"], 2, ["sub", "is a directory", "sub/out.csv"],
                     {"in.csv": TRAIN_CSV}, setup=lambda tmp, ck, mp: (tmp / "sub").mkdir()), id="predict-output-a-directory"),
    pytest.param(Row(["predict", "{blob_ckpt}", "in.csv", "-o", "out.tsv"], 2,
                     ["out.tsv", "cannot write '.tsv' files", ".csv, .parquet, .npz"], {"in.csv": TRAIN_CSV}),
                 id="predict-output-unknown-format"),
    pytest.param(Row(["eval", "{blob_ckpt}", "-o", "m.json"], 2, ["m.json", "file exists", "never overwrites"],
                     {"m.json": "precious\n"}), id="eval-output-never-overwrites"),
    pytest.param(Row(["schema", "-o", "s.json"], 2, ["s.json", "file exists"], {"s.json": "precious\n"}),
                 id="schema-output-never-overwrites"),
    pytest.param(Row(["eval", "{blob_ckpt}", "-o", "ro/m.json"], 5, ["ro/m.json", "cannot be written", "fix permissions"],
                     setup=read_only), id="eval-output-not-writable"),
    pytest.param(Row(["init", "nodir/my.yaml"], 2, ["nodir/my.yaml", "folder nodir does not exist"]), id="init-folder-missing"),
    pytest.param(Row(fit(), 2, ["data.target 'y' is also in data.features", "remove it from data.features"],
                     {**cfg("data: {name: csv, path: d.csv, target: y, features: [a, y]}\n"), "d.csv": TRAIN_CSV}),
                 id="target-listed-as-a-feature"),
    pytest.param(Row(["validate", "cfg.yaml"], 2, ["cfg.yaml", "line 3", "key 'model' is given twice (also on line 2)", "merge them"],
                     cfg("data: {name: moons}\nmodel: {hidden: [8]}\nmodel: {hidden: [16]}\n")), id="config-key-given-twice"),
    pytest.param(Row(["validate", "cfg.yaml"], 2, ["cfg.yaml", "line 4", "key 'lr' is given twice (also on line 3)"],
                     cfg("data: {name: moons}\noptimizer:\n  lr: 0.1\n  lr: 0.2\n")), id="config-nested-key-given-twice"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "model.hidden=[128,"], 2,
                     ["--set 'model.hidden=[128,'", "not valid YAML", "close its brackets"], cfg(MOONS)), id="set-value-unclosed-list"),
    pytest.param(Row(["eval", "{blob_ckpt}", "--data", "x.npy"], 3, ["x.npy", "found x", "an NPY file holds one array", "NPZ"],
                     {"x.npy": lambda p: np.save(p, np.zeros((3, 3), np.float32))}), id="eval-data-npy-without-labels"),
    pytest.param(Row(["predict", "{blob_ckpt}", "other.csv", "-o", "out.csv"], 3,
                     ["other.csv", "has 2 feature columns (kind, size)", "trained on 3 (x0, x1, x2)", "give a file with those columns"],
                     {"other.csv": "kind,size\nred,1\nblue,2\n"}), id="predict-a-file-of-other-columns"),
    pytest.param(Row(["validate", "cfg.yaml"], 2, ["data.features names 'a' twice", "list each column once"],
                     {**cfg("data: {name: csv, path: d.csv, target: y, features: [a, a]}\n"), "d.csv": TRAIN_CSV}),
                 id="feature-listed-twice"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "scheduler={name: cosine, min_lr: 0.01}"], 2,
                     ["scheduler.min_lr = 0.01 is not below optimizer.lr = 0.001", "keep min_lr below lr"], cfg(MOONS)),
                 id="min-lr-above-lr"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "model.norm=batch", "--set", "train.batch_size=1"], 2,
                     ["model.norm = batch cannot normalize batches of one row", "norm: layer"], cfg(MOONS)), id="batchnorm-batch-of-one"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "train.early_stopping.enabled=false", "--set", "train.early_stopping.patience=3"], 2,
                     ["train.early_stopping.patience = 3 changes nothing with train.early_stopping.enabled: false"], cfg(MOONS)),
                 id="patience-without-early-stopping"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "scheduler={name: reduce_on_plateau, interval: step}"], 2,
                     ["scheduler.interval = 'step' changes nothing with scheduler.name 'reduce_on_plateau'"], cfg(MOONS)),
                 id="plateau-per-step"),
    pytest.param(Row(["validate", "cfg.yaml", "--set", "logging.tensorboard=false", "--set", "logging.histograms_every=2"], 2,
                     ["logging.histograms_every = 2 changes nothing with logging.tensorboard: false"], cfg(MOONS)),
                 id="histograms-without-tensorboard"),
    pytest.param(Row(["validate", "cfg.yaml"], 2, ["data.features applies to csv/parquet files only, not to 'npz' arrays"],
                     {**cfg("data: {name: npz, path: d.npz, features: [a]}\n"), "d.npz": npz(x=np.zeros((20, 2)), y=np.zeros(20))}),
                 id="npz-with-features"),
    pytest.param(Row(["eval", "{tmp}"], 4, ["a directory, not a checkpoint", "give a .pt file"]), id="eval-a-directory"),
    pytest.param(Row(["resume", "{blob_ckpt}"], 5, ["a checkpoint, not a run directory", "mlptrain resume"]),
                 id="resume-a-checkpoint-file"),
    pytest.param(Row(["resume", "stopped"], 4, ["last.pt", "truncated, damaged", "failed finding central directory)",
                                                "this run cannot go on from it", "start it again"],
                     setup=lambda tmp, ck, mp: (interrupted_run(tmp, ck, mp), _truncate(tmp / "stopped" / "checkpoints" / "last.pt")),
                     run_dir=False), id="resume-a-damaged-last-pt"),
    # --- run directory --------------------------------------------------------------------------
    pytest.param(Row(fit("--run-dir", "old-run"), 5, ["old-run", "already exists and is not empty", "pick a new directory"],
                     cfg(MOONS), setup=existing_run, run_dir=False), id="run-dir-not-empty"),
    pytest.param(Row(fit(), 5, ["afile", "cannot create the run directory", "logging.runs_dir"],
                     {**cfg("data: {name: moons, n_samples: 60}\ntrain: {epochs: 1}\nlogging: {runs_dir: afile/runs}\n"),
                      "afile": "not a directory"}, run_dir=False), id="runs-dir-below-a-file"),
    pytest.param(Row(fit(), 5, ["ro", "Permission denied", "logging.runs_dir"],
                     cfg("data: {name: moons, n_samples: 60}\ntrain: {epochs: 1}\nlogging: {runs_dir: ro/runs}\n"),
                     setup=read_only, run_dir=False), id="runs-dir-read-only"),
    pytest.param(Row(["resume", "nowhere"], 5, ["nowhere", "no such run directory", "the directory `mlptrain fit` printed"]),
                 id="resume-no-such-directory"),
    pytest.param(Row(["resume", "stopped", "--set", "optimizer.lr=0.5"], 2,
                     ["optimizer.lr", "trained with 0.001, not 0.5", "train.epochs", "start a new run"],
                     setup=interrupted_run, run_dir=False), id="resume-changing-the-config"),
    pytest.param(Row(fit("--resume", "stopped", "--name", "other"), 2, ["--resume", "stays in its own directory"],
                     setup=interrupted_run, run_dir=False), id="fit-resume-with-a-new-name"),
    pytest.param(Row(fit("--run-dir", "ro/run"), 5, ["ro/run", "Permission denied", "pick a writable place"], cfg(MOONS),
                     setup=read_only, run_dir=False), id="run-dir-read-only"),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Two tiny real runs: a csv model (features a, b, c; labels p/q) and a blobs model (x0..x2; classes 0, 1, 2)."""
    root = tmp_path_factory.mktemp("models")
    (root / "d.csv").write_text(TRAIN_CSV)
    (root / "csv.yaml").write_text("data: {name: csv, path: d.csv, target: y}\n" + FAST)
    (root / "blobs.yaml").write_text("data: {name: blobs, n_samples: 60, n_features: 3}\n" + FAST)
    out = {}
    for name in ("csv", "blobs"):
        assert main(["fit", str(root / f"{name}.yaml"), "--run-dir", str(root / name), "--device", "cpu"]) == 0
        out[name] = root / name / "checkpoints" / "best.pt"
        assert out[name].is_file()
    return out


def tree(root: Path) -> dict[str, Optional[bytes]]:
    """Every path below root with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("row", ROWS)
def test_bad_input(row: Row, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, checkpoints) -> None:
    monkeypatch.chdir(tmp_path)
    for name, content in row.files.items():
        path = tmp_path / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if row.setup is not None:
        row.setup(tmp_path, checkpoints, monkeypatch)
    places = {"tmp": str(tmp_path), "csv_ckpt": str(checkpoints["csv"]), "blob_ckpt": str(checkpoints["blobs"])}
    argv = list(row.argv)
    for key, value in places.items():
        argv = [a.replace("{" + key + "}", value) for a in argv]
    if argv[0] == "fit":
        argv += ["--device", "cpu"] + (["--run-dir", str(tmp_path / "run")] if row.run_dir else [])
    before = tree(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o700)
    out, err = capsys.readouterr()

    assert code == row.code, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    missing = [w for w in row.words if w not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"
    assert "Traceback" not in out + err
    # nothing was created (no run directory, no output file, no file a payload touched) and nothing changed
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith(row.creates)}
    assert after == before
    assert not (tmp_path / "run").exists() and not (tmp_path / "PWNED").exists()
