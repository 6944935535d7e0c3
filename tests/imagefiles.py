"""Tiny image data sets in the real file formats, written into test directories (never downloaded).

``write_idx`` writes an IDX file (gzipped or plain) exactly as the MNIST family ships them;
``write_mnist`` a whole set whose classes are learnable (class k lights up its own block of
pixels); ``write_cifar`` CIFAR-10 python batches (pickled dicts with ``data`` and ``labels``).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Optional

import numpy as np


def write_idx(path: Path, array: np.ndarray, gz: Optional[bool] = None) -> Path:
    """An IDX file of unsigned bytes: magic 0x0000080<ndim>, big-endian dims, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    gz = path.suffix == ".gz" if gz is None else gz
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def images_for(labels: np.ndarray, size: int, rng: np.random.Generator, first: int = 0) -> np.ndarray:
    """uint8 images [N, size, size]: noise, plus a bright block whose position encodes the label."""
    n = len(labels)
    x = rng.integers(0, 60, size=(n, size, size))
    blocks = size // 4
    for i, label in enumerate(labels):
        k = int(label) - first
        r, c = divmod(k % (blocks * blocks), blocks)
        x[i, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 255
        x[i, 0, 0] = 100 + k  # a per-class pixel, so classes beyond blocks*blocks differ too
    return x.astype(np.uint8)


def write_mnist(
    directory: Path, n_train: int = 60, n_test: int = 30, n_classes: int = 10, size: int = 28, seed: int = 0,
    gz: bool = True, prefix: tuple[str, str] = ("train", "t10k"), first: int = 0,
) -> dict[str, np.ndarray]:
    """A set in the MNIST family's four files; returns the arrays written (images, labels per split)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    ext = ".gz" if gz else ""
    for split, n, stem in (("train", n_train, prefix[0]), ("test", n_test, prefix[1])):
        labels = (np.arange(n) % n_classes + first).astype(np.uint8)
        rng.shuffle(labels)
        images = images_for(labels, size, rng, first)
        write_idx(directory / f"{stem}-images-idx3-ubyte{ext}", images, gz)
        write_idx(directory / f"{stem}-labels-idx1-ubyte{ext}", labels, gz)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def write_emnist(directory: Path, subset: str, n_classes: int, first: int = 0, seed: int = 0, **kw) -> dict[str, np.ndarray]:
    """EMNIST's file names: emnist-<subset>-train-images-idx3-ubyte.gz, ..."""
    return write_mnist(
        directory, n_classes=n_classes, seed=seed, prefix=(f"emnist-{subset}-train", f"emnist-{subset}-test"),
        first=first, **kw,
    )


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(
    directory: Path, per_batch: int = 10, n_test: int = 20, seed: int = 0, label_names: Optional[list[str]] = None,
) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/: data_batch_1..5, test_batch and batches.meta (``label_names``)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 7):
        n = per_batch if i <= 5 else n_test
        labels = rng.permutation(np.arange(n) % 10)
        planes = images_for(labels, 32, rng)  # one plane per image, then three channels of it
        data = np.stack([planes, planes // 2, 255 - planes], axis=1).reshape(n, 3 * 32 * 32).astype(np.uint8)
        name = f"data_batch_{i}" if i <= 5 else "test_batch"
        _dump(directory / name, {b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": data,
                                 b"filenames": [f"img{j}.png".encode() for j in range(n)]})
        if i <= 5:
            train_x.append(data)
            train_y.append(labels)
        else:
            test_x, test_y = data, labels
    names = label_names or CIFAR_NAMES
    _dump(directory / "batches.meta", {b"label_names": [n.encode() for n in names], b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return {"train_images": np.concatenate(train_x), "train_labels": np.concatenate(train_y), "test_images": test_x, "test_labels": test_y}
