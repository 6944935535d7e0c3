"""Image data sets: IDX and CIFAR files read offline, splits, errors, download: true without a network.

Every set here is a few dozen images written into ``tmp_path`` in the real formats (see
``imagefiles.py``); the real Fashion-MNIST a machine may have in /usr/share/datasets/ is hidden
by the autouse fixture, and nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import pickle
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlptrain import data as datamod
from mlptrain import pipeline
from mlptrain.cli import main
from mlptrain.config import load_spec, validate_dict
from mlptrain.data import images
from mlptrain.errors import ConfigError, DataError, DataWarning

from imagefiles import CIFAR_NAMES, write_cifar, write_emnist, write_idx, write_mnist

QUIET = {"tensorboard": False, "progress": "none"}


@pytest.fixture(autouse=True)
def system_dir(tmp_path, monkeypatch) -> Path:
    """Fashion-MNIST's system directory, moved into tmp_path (empty unless a test writes there)."""
    fake = tmp_path / "usr-share-fashion-mnist"
    original = images.IMAGE_SETS["fashion_mnist"]
    monkeypatch.setitem(images.IMAGE_SETS, "fashion_mnist", dataclasses.replace(original, system_dirs=(str(fake),)))
    return fake


def data_spec(**data):
    return validate_dict({"data": data}, "test").data


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# ------------------------------------------------------------------------------------------------
# Reading: shapes, scaling, state, class names, splits.


def test_mnist_idx_gz_rows_are_flat_unit_floats_with_image_shape_in_state(tmp_path):
    arrays = write_mnist(tmp_path / "mnist", n_train=60, n_test=30)
    p = datamod.prepare(data_spec(name="mnist", root=str(tmp_path / "mnist"), scale="none"))
    assert p.task == "multiclass" and p.in_features == 784 and p.out_features == 10
    assert p.state["image_shape"] == [1, 28, 28]
    assert p.state["class_names"] == [str(d) for d in range(10)]
    for split in (p.train, p.val, p.test):
        assert split.x.dtype == np.float32 and split.x.min() >= 0.0 and split.x.max() <= 1.0
    assert p.train.x.max() == 1.0  # 255 -> 1
    # the official test set is the test split, unshuffled and complete
    assert len(p.test.x) == 30
    np.testing.assert_allclose(p.test.x, arrays["test_images"].reshape(30, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(p.test.y, arrays["test_labels"].astype(np.int64))
    # val is carved from the official training set only
    assert len(p.train.x) + len(p.val.x) == 60


def test_scale_applies_on_top_of_unit_pixels_fitted_on_train(tmp_path):
    write_mnist(tmp_path, n_train=60, n_test=30)
    p = datamod.prepare(data_spec(name="mnist", root=str(tmp_path), scale="standard"))
    assert p.state["scaler"]["kind"] == "standard"
    np.testing.assert_allclose(p.train.x.mean(axis=0), 0.0, atol=1e-4)
    raw = datamod.prepare(data_spec(name="mnist", root=str(tmp_path), scale="none"))
    shift = np.asarray(p.state["scaler"]["shift"])
    np.testing.assert_allclose(shift, raw.train.x.mean(axis=0), atol=1e-6)  # fitted on the training split only


def test_val_is_carved_stratified_by_seed_and_split_test_is_ignored(tmp_path):
    write_mnist(tmp_path, n_train=100, n_test=30)
    base = dict(name="mnist", root=str(tmp_path), scale="none")
    a = datamod.prepare(data_spec(**base, split={"val": 0.2, "seed": 0}))
    b = datamod.prepare(data_spec(**base, split={"val": 0.2, "seed": 0}))
    c = datamod.prepare(data_spec(**base, split={"val": 0.2, "seed": 1}))
    assert (len(a.train.x), len(a.val.x), len(a.test.x)) == (80, 20, 30)
    np.testing.assert_array_equal(a.val.x, b.val.x)
    assert not np.array_equal(a.val.x, c.val.x)
    assert np.bincount(a.val.y, minlength=10).tolist() == [2] * 10  # stratified: 10 classes x 10 images
    d = datamod.prepare(data_spec(**base, split={"val": 0.2, "test": 0.5, "seed": 0}))
    assert (len(d.train.x), len(d.val.x), len(d.test.x)) == (80, 20, 30)
    np.testing.assert_array_equal(a.test.x, d.test.x)
    none = datamod.prepare(data_spec(**base, split={"val": 0.0}))
    assert none.val is None and len(none.train.x) == 100


def test_prepare_with_a_stored_state_rebuilds_the_same_splits(tmp_path):
    write_mnist(tmp_path, n_train=60, n_test=30)
    spec = data_spec(name="mnist", root=str(tmp_path))
    first = datamod.prepare(spec)
    again = datamod.prepare(spec, state=first.state)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, s).x, getattr(again, s).x)
        np.testing.assert_array_equal(getattr(first, s).y, getattr(again, s).y)


@pytest.mark.parametrize("name, folder", [
    ("fashion_mnist", "FashionMNIST/raw"), ("mnist", "MNIST/raw"), ("kmnist", "KMNIST/raw"), ("emnist", "EMNIST/raw"),
])
def test_torchvision_layout_with_plain_files_is_found(tmp_path, name, folder):
    if name == "emnist":
        write_emnist(tmp_path / folder, "balanced", n_classes=47, n_train=94, n_test=47, gz=False)
    else:
        write_mnist(tmp_path / folder, gz=False)
    p = datamod.prepare(data_spec(name=name, root=str(tmp_path)))
    assert p.in_features == 784 and len(p.test.x) == (47 if name == "emnist" else 30)
    expected = {
        "fashion_mnist": images.FASHION_CLASSES, "mnist": list("0123456789"), "kmnist": images.KMNIST_CLASSES,
        "emnist": images.EMNIST_CLASSES["balanced"],
    }[name]
    assert p.state["class_names"] == expected


def test_fashion_mnist_classes_and_the_system_directory(system_dir):
    write_mnist(system_dir)  # as `apt-get install dataset-fashion-mnist` lays them out, no data.root
    p = datamod.prepare(data_spec(name="fashion_mnist"))
    assert p.state["class_names"][0] == "T-shirt/top" and p.state["class_names"][-1] == "Ankle boot"
    assert len(p.test.x) == 30


def test_root_is_looked_in_before_the_system_directory(tmp_path, system_dir):
    write_mnist(system_dir, n_test=30)
    write_mnist(tmp_path / "mine", n_test=20, seed=5)
    assert len(datamod.prepare(data_spec(name="fashion_mnist", root=str(tmp_path / "mine"))).test.x) == 20


def test_emnist_subset_picks_files_and_class_names_and_images_are_upright(tmp_path):
    letters = write_emnist(tmp_path, "letters", n_classes=26, first=1, n_train=52, n_test=26)
    write_emnist(tmp_path, "digits", n_classes=10, n_train=40, n_test=20, seed=3)
    p = datamod.prepare(data_spec(name="emnist", subset="letters", root=str(tmp_path), scale="none"))
    assert p.state["class_names"] == list("abcdefghijklmnopqrstuvwxyz") and p.out_features == 26
    np.testing.assert_array_equal(p.test.y, letters["test_labels"].astype(np.int64) - 1)  # labels 1..26
    upright = letters["test_images"].transpose(0, 2, 1).reshape(26, -1) / 255.0  # stored transposed
    np.testing.assert_allclose(p.test.x, upright, rtol=1e-6)
    d = datamod.prepare(data_spec(name="emnist", subset="digits", root=str(tmp_path)))
    assert d.state["class_names"] == list("0123456789") and len(d.test.x) == 20


def test_cifar10_python_batches(tmp_path):
    arrays = write_cifar(tmp_path / "cifar-10-batches-py", per_batch=10, n_test=20)
    p = datamod.prepare(data_spec(name="cifar10", root=str(tmp_path), scale="none", split={"val": 0.2}))
    assert p.state["image_shape"] == [3, 32, 32] and p.in_features == 3072
    assert p.state["class_names"] == CIFAR_NAMES
    assert (len(p.train.x), len(p.val.x), len(p.test.x)) == (40, 10, 20)  # five batches of 10; the test batch
    np.testing.assert_allclose(p.test.x, arrays["test_images"] / 255.0, rtol=1e-6)  # C, H, W order as stored
    np.testing.assert_array_equal(p.test.y, arrays["test_labels"])


def test_cifar10_class_names_come_from_batches_meta(tmp_path):
    names = [f"c{i}" for i in range(10)]
    write_cifar(tmp_path, label_names=names)  # the batches directly in root works too
    assert datamod.prepare(data_spec(name="cifar10", root=str(tmp_path))).state["class_names"] == names


# ------------------------------------------------------------------------------------------------
# Damaged and missing files: one line naming the file.


def _first_file(tmp_path: Path, stem: str) -> Path:
    return tmp_path / f"{stem}.gz"


@pytest.mark.parametrize("damage, expected", [
    ("magic", "not an IDX images file"),
    ("truncate_idx", "truncated IDX file"),
    ("truncate_gzip", "corrupt or truncated gzip file"),
    ("garbage_gzip", "corrupt or truncated gzip file"),
])
def test_a_corrupt_or_truncated_idx_file_is_one_line_naming_it(tmp_path, damage, expected):
    write_mnist(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(bad.read_bytes())
    if damage == "magic":
        bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + raw[4:]))
    elif damage == "truncate_idx":
        bad.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "truncate_gzip":
        bad.write_bytes(bad.read_bytes()[:-50])
    else:
        bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name="mnist", root=str(tmp_path)))
    text = one_line(exc)
    assert str(bad) in text and expected in text
    with pytest.raises(DataError) as exc:  # validate reads no pixels, and refuses the file all the same
        datamod.prepare(data_spec(name="mnist", root=str(tmp_path)), pixels=False)
    text = one_line(exc)
    assert str(bad) in text and "delete it and get it again" in text


def test_validate_refuses_a_truncated_plain_idx_file_and_accepts_whole_ones(tmp_path):
    write_mnist(tmp_path)
    assert len(datamod.prepare(data_spec(name="mnist", root=str(tmp_path)), pixels=False).train.y)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    plain = tmp_path / "train-images-idx3-ubyte"
    plain.write_bytes(gzip.decompress(bad.read_bytes())[:-1])
    bad.unlink()
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name="mnist", root=str(tmp_path)), pixels=False)
    assert f"{plain}: truncated or corrupt IDX file" in one_line(exc) and "the file has" in str(exc.value)


def test_images_and_labels_of_different_lengths(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name="mnist", root=str(tmp_path)))
    assert "holds 30 images but" in one_line(exc) and "7 labels" in str(exc.value)


def test_a_label_outside_the_classes(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(30, 12, np.uint8))
    with pytest.raises(DataError, match="label 12 outside 0..9"):
        datamod.prepare(data_spec(name="mnist", root=str(tmp_path)))


def test_a_corrupt_cifar_batch_is_one_line_and_foreign_pickles_run_nothing(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes((tmp_path / "data_batch_3").read_bytes()[:500])
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name="cifar10", root=str(tmp_path)))
    assert str(tmp_path / "data_batch_3") in one_line(exc)

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name="cifar10", root=str(tmp_path)))
    assert "test_batch" in one_line(exc) and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "emnist", "cifar10"])
def test_missing_files_fail_at_once_naming_files_places_and_both_ways(tmp_path, system_dir, name):
    root = tmp_path / "empty"
    root.mkdir()
    started = time.perf_counter()
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name=name, root=str(root)))
    assert time.perf_counter() - started < 2.0
    text = one_line(exc)
    wanted = {
        "fashion_mnist": "train-images-idx3-ubyte[.gz]", "mnist": "t10k-labels-idx1-ubyte[.gz]",
        "emnist": "emnist-balanced-train-images-idx3-ubyte[.gz]", "cifar10": "data_batch_1",
    }[name]
    assert wanted in text and str(root) in text
    assert "data.download: true" in text and "network" in text
    if name == "fashion_mnist":
        assert "apt-get install -y dataset-fashion-mnist" in text and str(system_dir) in text
    else:
        assert "put the files in data.root" in text and "apt-get" not in text


def test_missing_files_without_root_name_the_system_directory(system_dir):
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name="fashion_mnist"))
    assert f"{system_dir} (missing)" in one_line(exc)


def test_a_partial_directory_says_which_files_it_lacks(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name="mnist", root=str(tmp_path)))
    assert f"{tmp_path} lacks t10k-labels-idx1-ubyte" in one_line(exc)


# ------------------------------------------------------------------------------------------------
# download: true, never over a real network.


@pytest.fixture
def no_network(monkeypatch):
    """Every TCP connection fails as on a machine without a network; no proxy."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "kmnist", "emnist", "cifar10"])
def test_download_without_a_network_fails_fast_in_one_line(tmp_path, no_network, name):
    before = socket.getdefaulttimeout()
    started = time.perf_counter()
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name=name, root=str(tmp_path / "dl"), download=True))
    assert time.perf_counter() - started < 10.0
    text = one_line(exc)
    assert text.startswith("data.download: could not download") and "Network is unreachable" in text
    assert str(tmp_path / "dl") in text and "put the files in" in text
    assert "or run with data.download: true on a machine with a network" in text and "or set data.download" not in text
    assert socket.getdefaulttimeout() == before


def test_download_errors_of_torchvision_become_one_line_and_the_timeout_is_set(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    seen = []

    def failing(self):
        seen.append(socket.getdefaulttimeout())
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example/, got:\n<urlopen error timed out>\n")

    monkeypatch.setattr(images, "_reachable", lambda host, port, timeout: None)
    monkeypatch.setattr(tvd.MNIST, "download", failing)
    with pytest.raises(DataError) as exc:
        datamod.prepare(data_spec(name="mnist", root=str(tmp_path), download=True))
    assert "Error downloading train-images-idx3-ubyte.gz: Tried https://example/" in one_line(exc)
    assert seen == [images.DOWNLOAD_TIMEOUT] and socket.getdefaulttimeout() != images.DOWNLOAD_TIMEOUT


def test_download_goes_through_torchvision_and_reads_its_layout(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake_download(self):  # what torchvision leaves behind: root/MNIST/raw/ with unpacked files
        calls.append(self.raw_folder)
        write_mnist(Path(self.raw_folder), n_train=40, n_test=20, gz=False)

    monkeypatch.setattr(images, "_reachable", lambda host, port, timeout: None)
    monkeypatch.setattr(tvd.MNIST, "download", fake_download)
    spec = data_spec(name="mnist", root=str(tmp_path / "dl"), download=True)
    p = datamod.prepare(spec)
    assert calls == [str(tmp_path / "dl" / "MNIST" / "raw")] and len(p.test.x) == 20
    datamod.prepare(spec)  # the files are there now: no second download
    assert len(calls) == 1


def test_download_false_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "download", lambda spec: pytest.fail("downloaded with download: false"))
    with pytest.raises(DataError, match="files not found"):
        datamod.prepare(data_spec(name="mnist", root=str(tmp_path)))


# ------------------------------------------------------------------------------------------------
# Config keys.


def test_root_is_relative_to_the_config_file(tmp_path, monkeypatch):
    write_mnist(tmp_path / "configs" / "data" / "mnist")
    cfg = tmp_path / "configs" / "m.yaml"
    cfg.write_text("data: {name: mnist, root: data/mnist}\n")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(cfg)
    assert spec.data.root == str(tmp_path / "configs" / "data" / "mnist")
    assert len(datamod.prepare(spec.data).test.x) == 30


@pytest.mark.parametrize("data, message", [
    ({"name": "moons", "root": "x"}, "data.root applies to image sets"),
    ({"name": "csv", "path": "a.csv", "target": "y", "download": True}, "data.download applies to image sets"),
    ({"name": "mnist", "subset": "letters"}, "data.subset applies to emnist only"),
    ({"name": "mnist", "download": True}, "data.download: true needs data.root"),
    ({"name": "mnist", "path": "x.csv"}, "data.path applies to csv/parquet/npz files only"),
    ({"name": "cifar10", "target": "y"}, "data.target applies to"),
    ({"name": "emnist", "subset": "greek"}, "data.subset"),
])
def test_image_keys_are_checked(data, message):
    with pytest.raises(ConfigError, match=message):
        validate_dict({"data": data}, "cfg")


# ------------------------------------------------------------------------------------------------
# Training end to end: pipeline and CLI, eval reproduces the test metrics, --data image arrays.

CONFIG = """\
data: {{name: {name}, root: {root}, split: {{val: 0.2, seed: 0}}}}
model: {{hidden: [32]}}
optimizer: {{name: adam, lr: 0.01}}
train: {{epochs: {epochs}, batch_size: 16, seed: 0, device: cpu}}
logging: {{tensorboard: false, progress: none, runs_dir: {runs}}}
"""


def test_pipeline_trains_on_cifar_batches(tmp_path):
    write_cifar(tmp_path / "cifar", per_batch=20, n_test=40)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.format(name="cifar10", root="cifar", epochs=4, runs=tmp_path / "runs"))
    spec = load_spec(cfg)
    run_dir = pipeline.start_run(spec, None, tmp_path / "run")
    outcome = pipeline.train(spec, run_dir, "cpu")
    assert outcome.summary["task"] == "multiclass" and outcome.summary["epochs_run"] == 4
    assert set(outcome.metrics) == {"train", "val", "test"}
    assert outcome.summary["parameters"] == 3072 * 32 + 32 + 32 * 10 + 10


def test_cli_fit_then_eval_reproduces_the_test_metrics_and_scores_image_arrays(tmp_path, capsys):
    arrays = write_mnist(tmp_path / "fm" / "FashionMNIST" / "raw", n_train=100, n_test=40)
    cfg = tmp_path / "fm.yaml"
    cfg.write_text(CONFIG.format(name="fashion_mnist", root="fm", epochs=8, runs=tmp_path / "runs"))
    run_dir = tmp_path / "run"
    assert main(["fit", str(cfg), "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    ckpt = summary["checkpoint"]
    test = summary["metrics"]["test"]
    assert test["accuracy"] > 0.5  # the classes are learnable blocks
    capsys.readouterr()

    assert main(["eval", ckpt, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 40 and result["class_names"][0] == "T-shirt/top"
    assert result["metrics"] == pytest.approx(test, abs=1e-6)

    import torch

    state = torch.load(ckpt, weights_only=True)
    assert state["data_state"]["image_shape"] == [1, 28, 28]

    # --data: [N, H, W] 0..255 with integer labels, [N, C, H, W] in [0, 1], [N, C*H*W]: the same images, same metrics
    x, y = arrays["test_images"], arrays["test_labels"].astype(np.int64)
    variants = {
        "hw.npz": x, "chw.npz": (x[:, None] / 255.0).astype(np.float32), "flat.npz": x.reshape(len(x), -1).astype(np.float64),
    }
    for name, arr in variants.items():
        np.savez(tmp_path / name, x=arr, y=y)
        assert main(["eval", ckpt, "--data", str(tmp_path / name), "--json"]) == 0, capsys.readouterr().err
        scored = json.loads(capsys.readouterr().out)
        assert scored["metrics"] == pytest.approx(test, abs=1e-5), name
    # labels by class name work too
    np.savez(tmp_path / "names.npz", x=x, y=np.asarray(images.FASHION_CLASSES)[y])
    assert main(["eval", ckpt, "--data", str(tmp_path / "names.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(test, abs=1e-5)

    np.save(tmp_path / "x.npy", x[:5])
    assert main(["predict", ckpt, str(tmp_path / "x.npy"), "-o", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0].startswith("prediction,prob_T-shirt/top") and len(lines) == 6

    np.save(tmp_path / "bad.npy", np.zeros((3, 27, 28)))
    capsys.readouterr()
    assert main(["predict", ckpt, str(tmp_path / "bad.npy"), "-o", str(tmp_path / "q.csv")]) == 3
    err = capsys.readouterr().err
    assert "x has shape [3, 27, 28]" in err and "[N, 28, 28]" in err and len(err.strip().splitlines()) == 1


def test_channels_last_cifar_arrays_are_reordered(tmp_path):
    arrays = write_cifar(tmp_path, per_batch=10, n_test=20)
    spec = data_spec(name="cifar10", root=str(tmp_path))
    p = datamod.prepare(spec)
    chw = arrays["test_images"].reshape(-1, 3, 32, 32)
    np.savez(tmp_path / "hwc.npz", x=chw.transpose(0, 2, 3, 1), y=arrays["test_labels"])
    x, y, _ = datamod.read_inputs(tmp_path / "hwc.npz", spec, p.state, need_target=True)
    np.testing.assert_array_equal(x, p.test.x)
    np.testing.assert_array_equal(y, p.test.y)


def test_cli_missing_image_files_is_exit_3_and_one_line(tmp_path, capsys):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(CONFIG.format(name="mnist", root="nowhere", epochs=1, runs=tmp_path / "runs"))
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "run")]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: data.name 'mnist': MNIST files not found")


# ------------------------------------------------------------------------------------------------
# What eval and predict are given: every layout scaled as training was, or one line


def _fashion_state(tmp_path) -> tuple[Any, dict]:
    write_mnist(tmp_path / "fm")
    spec = data_spec(name="fashion_mnist", root=str(tmp_path / "fm"), scale="none")
    return spec, datamod.prepare(spec).state


def test_pixels_in_a_csv_are_scaled_like_an_npz(tmp_path):
    spec, state = _fashion_state(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 28 * 28))
    np.savez(tmp_path / "x.npz", x=pixels.astype(np.uint8))
    (tmp_path / "x.csv").write_text(",".join(f"px{i}" for i in range(784)) + "\n" + "\n".join(",".join(map(str, r)) for r in pixels) + "\n")
    from_npz = datamod.read_inputs(tmp_path / "x.npz", spec, state, need_target=False)[0]
    from_csv = datamod.read_inputs(tmp_path / "x.csv", spec, state, need_target=False)[0]
    np.testing.assert_allclose(from_csv, from_npz, rtol=1e-6)
    assert from_csv.max() <= 1.0


@pytest.mark.parametrize("x, words", [
    (np.full((2, 28, 28), -0.5, np.float32), "pixel values run from -0.5 to -0.5"),
    (np.full((2, 28, 28), 4000, np.uint16), "pixel values run from 4000 to 4000"),
    (np.zeros((0, 28, 28), np.uint8), "holds no images"),
    (np.array([[1] * 784] * 2, dtype=object), "not a readable NPZ/NPY file of plain arrays"),
])
def test_images_given_to_predict_out_of_range_empty_or_objects_are_one_line(tmp_path, x, words):
    spec, state = _fashion_state(tmp_path)
    np.save(tmp_path / "x.npy", x, allow_pickle=True)
    with pytest.raises(DataError) as exc:
        datamod.read_inputs(tmp_path / "x.npy", spec, state, need_target=False)
    assert words in one_line(exc)


def test_a_root_without_the_files_says_which_copy_is_read(tmp_path, system_dir):
    write_mnist(system_dir)
    with pytest.warns(DataWarning, match=rf"data.root {tmp_path / 'nothere'} does not exist; reading Fashion-MNIST from {system_dir}"):
        datamod.prepare(data_spec(name="fashion_mnist", root=str(tmp_path / "nothere")))
    write_mnist(tmp_path / "partial")
    next((tmp_path / "partial").glob("t10k-images*")).unlink()
    with pytest.warns(DataWarning, match=r"partial lacks t10k-images-idx3-ubyte; reading Fashion-MNIST from"):
        datamod.prepare(data_spec(name="fashion_mnist", root=str(tmp_path / "partial")))


def test_image_sets_ignore_split_test_and_refuse_a_shift_out_of_the_frame(tmp_path):
    assert data_spec(name="fashion_mnist", split={"val": 0.9}).split.val == 0.9  # test 0.15 is not carved from it
    write_mnist(tmp_path / "fm")
    spec = validate_dict({"data": {"name": "fashion_mnist", "root": str(tmp_path / "fm")}, "augment": {"shift": 28}}, "t")
    with pytest.raises(ConfigError, match=r"augment.shift = 28 moves 28x28 images out of the frame; keep it below 28"):
        spec.augment.check_data([1, 28, 28], "fashion_mnist")


def test_emnist_upper_and_lower_case_classes_are_not_warned_about(tmp_path):
    write_emnist(tmp_path, "byclass", n_classes=62, n_train=124, n_test=62)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        p = datamod.prepare(data_spec(name="emnist", subset="byclass", root=str(tmp_path)))
    assert "A" in p.state["class_names"] and "a" in p.state["class_names"]


# ----------------------------------------------------------------------------------------------
# digits: scikit-learn's 8x8 digits are an image set too (0..16 pixels read as [0, 1]).


def _raw_digits() -> np.ndarray:
    from mlptrain.data import sources

    return sources.bundled("digits").x


def test_digits_are_8x8_images_whose_0_to_16_pixels_read_as_0_to_1():
    d = datamod.prepare(data_spec(name="digits", scale="none", split={"val": 0.0, "test": 0.0}))
    assert d.state["image_shape"] == [1, 8, 8] and d.state["pixel_max"] == 16
    np.testing.assert_array_equal(d.train.x, _raw_digits() / np.float32(16))  # nothing held out: the file's order
    assert float(d.train.x.max()) == 1.0 and float(d.train.x.min()) == 0.0


@pytest.mark.parametrize("scale", ["standard", "minmax"])
def test_scaled_digits_are_bit_for_bit_what_the_raw_pixels_gave(scale):
    """Dividing by 16 is exact in floats and scaling undoes any factor: digits configs train on the same values."""
    spec = data_spec(name="digits", scale=scale)
    now = datamod.prepare(spec)
    unscaled = {**now.state, "pixel_max": None, "scaler": {"kind": "none"}, "splits": None}
    raw = datamod.prepare(spec, state=unscaled).train.x  # 0..16
    assert float(raw.max()) == 16.0
    before = datamod.apply_scaler(raw.copy(), datamod._fit_scaler(raw, scale))  # as prepare scaled digits until now
    np.testing.assert_array_equal(now.train.x, before)


def test_a_digits_checkpoint_from_before_images_reads_its_pixels_as_it_trained():
    spec = data_spec(name="digits", scale="none")
    state = dict(datamod.prepare(spec).state)
    del state["pixel_max"], state["image_shape"], state["splits"]  # what a run fitted before digits were images stored
    old = datamod.prepare(spec, state=state)
    assert float(old.train.x.max()) == 16.0


@pytest.mark.parametrize("layout", ["npz 8x8", "npz flat", "csv"])
def test_predict_inputs_for_a_digits_model_take_0_to_16_pixels_as_training_did(layout, tmp_path):
    spec = data_spec(name="digits", scale="standard")
    d = datamod.prepare(spec)
    raw = _raw_digits()[:5]
    if layout == "csv":
        path = tmp_path / "x.csv"
        path.write_text(",".join(d.state["feature_names"]) + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in raw) + "\n")
    else:
        path = tmp_path / "x.npz"
        np.savez(path, x=raw.reshape(5, 8, 8) if layout == "npz 8x8" else raw)
    x, _, _ = datamod.read_inputs(path, spec, d.state, need_target=False)
    np.testing.assert_array_equal(x, datamod.apply_scaler(raw / np.float32(16), d.state["scaler"]))
