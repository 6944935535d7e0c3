"""Image data sets read offline from their own files, with numpy only (no torchvision needed to read).

* The MNIST family (``mnist``, ``fashion_mnist``, ``kmnist``, ``emnist``): IDX files, gzipped or
  plain (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-...``; EMNIST's are
  ``emnist-<subset>-train-images-idx3-ubyte.gz`` ...).
* ``cifar10``: the python batches (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``).

Files are looked for in ``data.root`` (and torchvision's layouts below it: ``root/FashionMNIST/raw/``,
``root/cifar-10-batches-py/``), then in the system directory of the set (Debian's
``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist/``). ``data.download: true``
fetches missing files with torchvision's own dataset classes into ``data.root``, failing fast
(one line) without a network.

Images become rows of ``C*H*W`` float32 pixels in [0, 1]; the image shape goes into the
preprocessing state as ``image_shape``. The official test set is the test split (``Table.extra["test"]``).
"""

from __future__ import annotations

import gzip
import os
import pickle
import socket
import string
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mlptrain.config import DataSpec
from mlptrain.data.sources import Table, load_arrays
from mlptrain.errors import DataError, DataWarning
from mlptrain.wording import article

__all__ = ["IMAGE_SETS", "load_images", "locate", "search_dirs", "download", "read_idx", "read_cifar_batch", "read_image_inputs"]

DOWNLOAD_TIMEOUT = 10.0  # seconds per network operation while downloading

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGITS = list(string.digits)
# EMNIST's own mapping files (emnist-<subset>-mapping.txt): merged letters keep their upper case.
_MERGED = set("cijklmopsuvwxyz")
EMNIST_CLASSES = {
    "byclass": DIGITS + list(string.ascii_uppercase) + list(string.ascii_lowercase),
    "bymerge": DIGITS + list(string.ascii_uppercase) + [c for c in string.ascii_lowercase if c not in _MERGED],
    "balanced": DIGITS + list(string.ascii_uppercase) + [c for c in string.ascii_lowercase if c not in _MERGED],
    "letters": list(string.ascii_lowercase),  # labels 1..26 (upper and lower case merged)
    "digits": DIGITS,
    "mnist": DIGITS,
}


@dataclass(frozen=True)
class ImageSet:
    title: str  # for messages
    torchvision: str  # torchvision's dataset class, also its folder: root/<class>/raw/
    system_dirs: tuple[str, ...] = ()  # where a system package installs the files
    package: Optional[str] = None  # the Debian package that installs them


IMAGE_SETS: dict[str, ImageSet] = {
    "fashion_mnist": ImageSet("Fashion-MNIST", "FashionMNIST", ("/usr/share/datasets/fashion-mnist",), "dataset-fashion-mnist"),
    "mnist": ImageSet("MNIST", "MNIST"),
    "kmnist": ImageSet("KMNIST", "KMNIST"),
    "emnist": ImageSet("EMNIST", "EMNIST"),
    "cifar10": ImageSet("CIFAR-10", "CIFAR10"),
}


def _title(spec: DataSpec) -> str:
    title = IMAGE_SETS[spec.name].title
    return f"{title} ({spec.subset})" if spec.name == "emnist" else title


def class_names(spec: DataSpec) -> tuple[list[str], int]:
    """Class names in label order and the label of the first one (EMNIST letters count from 1)."""
    if spec.name == "fashion_mnist":
        return list(FASHION_CLASSES), 0
    if spec.name == "kmnist":
        return list(KMNIST_CLASSES), 0
    if spec.name == "cifar10":
        return list(CIFAR10_CLASSES), 0
    if spec.name == "emnist":
        return list(EMNIST_CLASSES[spec.subset]), 1 if spec.subset == "letters" else 0
    return list(DIGITS), 0


# ----------------------------------------------------------------------------------------------
# Where the files are.


def file_names(spec: DataSpec) -> dict[str, str]:
    """The files of a set by role (train_images, ..., or the CIFAR batches), without ``.gz``."""
    if spec.name == "cifar10":
        names = {f"train_{i}": f"data_batch_{i}" for i in range(1, 6)}
        names["test"] = "test_batch"
        return names
    if spec.name == "emnist":
        prefix = {"train": f"emnist-{spec.subset}-train", "test": f"emnist-{spec.subset}-test"}
    else:
        prefix = {"train": "train", "test": "t10k"}
    return {
        f"{split}_{kind}": f"{prefix[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        for split in ("train", "test") for kind in ("images", "labels")
    }


def search_dirs(spec: DataSpec) -> list[Path]:
    """Directories searched, in order: data.root and torchvision's layouts below it, then the system's."""
    image_set = IMAGE_SETS[spec.name]
    bases = ([Path(spec.root).expanduser()] if spec.root else []) + [Path(d) for d in image_set.system_dirs]
    dirs: list[Path] = []
    for base in bases:
        if spec.name == "cifar10":
            below = [base / "cifar-10-batches-py"]
        else:
            below = [base / image_set.torchvision / "raw", base / image_set.torchvision]
            if spec.name == "emnist":
                below.append(base / "gzip")  # the official gzip.zip unpacked as is
        for d in [base, *below]:
            if d not in dirs:
                dirs.append(d)
    return dirs


def _find(directory: Path, name: str) -> Optional[Path]:
    """``name`` in ``directory``: plain, gzipped, or with '.idx' instead of '-idx' (another common spelling)."""
    spellings = [name, name.replace("-idx", ".idx")] if "-idx" in name else [name]
    for spelling in spellings:
        for candidate in (directory / spelling, directory / f"{spelling}.gz"):
            if candidate.is_file():
                return candidate
    return None


def locate(spec: DataSpec) -> dict[str, Path]:
    """The set's files from the first directory that holds all of them; a one-line DataError otherwise."""
    names = file_names(spec)
    partial: Optional[tuple[Path, list[str]]] = None
    root = Path(spec.root).expanduser() if spec.root else None
    for directory in search_dirs(spec):
        found = {role: _find(directory, name) for role, name in names.items()}
        if all(found.values()):
            if root is not None and root not in (directory, *directory.parents):  # the user named another place
                why = "does not exist" if not root.exists() else (
                    f"lacks {', '.join(partial[1])}" if partial is not None and root in (partial[0], *partial[0].parents)
                    else "holds none of its files")
                warnings.warn(DataWarning(f"data.root {root} {why}; reading {_title(spec)} from {directory} instead"), stacklevel=2)
            return {role: p for role, p in found.items() if p is not None}
        missing = [names[r] for r, p in found.items() if p is None]
        if partial is None and len(missing) < len(names):
            partial = (directory, missing)
    raise DataError(missing_message(spec, partial))


def missing_message(spec: DataSpec, partial: Optional[tuple[Path, list[str]]] = None) -> str:
    """One line: which files were looked for, where, and the two ways to get them."""
    image_set = IMAGE_SETS[spec.name]
    suffix = "" if spec.name == "cifar10" else "[.gz]"
    wanted = ", ".join(f"{n}{suffix}" for n in file_names(spec).values())
    where = []
    for d in search_dirs(spec):
        where.append(f"{d}{'' if d.exists() else ' (missing)'}")
    places = f"in {', '.join(where)}" if where else "nowhere (data.root is not set)"
    found = f"; {partial[0]} lacks {', '.join(partial[1])}" if partial else ""
    if spec.name == "cifar10":
        layout = "data.root/cifar-10-batches-py/ (the unpacked cifar-10-python.tar.gz)"
    else:
        layout = f"data.root (or data.root/{image_set.torchvision}/raw/, torchvision's layout)"
    ways = f"put the files in {layout}"
    if image_set.package:
        ways = f"install them with `apt-get install -y {image_set.package}` (into {image_set.system_dirs[0]}/) or {ways}"
    download = "or run with data.download: true on a machine with a network" if spec.download else \
        "or set data.download: true (with data.root) on a machine with a network"
    return (
        f"data.name '{spec.name}': {_title(spec)} files not found: looked for {wanted} {places}{found}; "
        f"get them: {ways}; {download}"
    )


# ----------------------------------------------------------------------------------------------
# Reading.


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with gzip's magic number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({exc}); delete it and get it again") from None


def read_idx_dims(path: Path, ndim: int) -> tuple[int, ...]:
    """The dimensions in an IDX file's header, reading only the header (`validate`: no pixels).
    The length the header implies is checked without reading the pixels: against the file's size,
    or a gzip file's last four bytes (the uncompressed length, mod 2^32), so that validate refuses
    a truncated download as fit does."""
    magic = 0x0800 + ndim
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            size = raw.seek(0, os.SEEK_END)
            raw.seek(max(size - 4, 0))
            tail = raw.read(4)
        with (gzip.open(path) if gzipped else open(path, "rb")) as f:
            head = f.read(4 + 4 * ndim)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); delete it and get it again") from None
    if len(head) < 4 + 4 * ndim or struct.unpack(">I", head[:4])[0] != magic:
        raise DataError(
            f"{path}: not an IDX {'images' if ndim == 3 else 'labels'} file (header {head[:4].hex() or 'missing'}, "
            f"expected {magic:08x}); the file is corrupt or of another kind: delete it and get it again"
        )
    dims = struct.unpack(f">{ndim}I", head[4:])
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    length = struct.unpack("<I", tail)[0] if gzipped and len(tail) == 4 else size
    if length != (expected % 2**32 if gzipped else expected):
        raise DataError(
            f"{path}: truncated or corrupt {'gzip' if gzipped else 'IDX'} file: its header ({' x '.join(map(str, dims))}) "
            f"needs {expected} bytes{' unpacked' if gzipped else f', the file has {size}'}; delete it and get it again"
        )
    return dims


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions (3: images, 1: labels), checked against its header."""
    data = _read_bytes(path)
    magic = 0x0800 + ndim
    what = "images" if ndim == 3 else "labels"
    if len(data) < 4 or struct.unpack(">I", data[:4])[0] != magic:
        got = data[:4].hex() or "none: an empty file"
        raise DataError(
            f"{path}: not an IDX {what} file (magic number {got}, expected {magic:08x}); "
            "the file is corrupt or of another kind: delete it and get it again"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, the header alone needs {header}); delete it and get it again")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "corrupt"
        raise DataError(
            f"{path}: {kind} IDX file: {len(data)} bytes, its header ({' x '.join(map(str, dims))}) needs {expected}; "
            "delete it and get it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a batch file cannot run code."""

    ALLOWED = {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    } | {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how protocol 2 stores Python 3 bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()  # latin1: the batches were pickled by Python 2
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ...: whatever a damaged file raises
        raise DataError(f"{path}: not a CIFAR-10 python batch, corrupt or truncated ({type(exc).__name__}: {exc}); delete it and get it again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (holds {article(type(obj).__name__)}, not a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch: uint8 images [N, 3*32*32] (channel planes, rows) and labels [N]."""
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: not a CIFAR-10 python batch (needs 'data' and 'labels'; has {', '.join(batch) or 'nothing'})")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: CIFAR-10 'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(data) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: CIFAR-10 'labels' must be {len(data)} integers, got {labels.dtype} {list(labels.shape)}")
    return data, labels


def _cifar_names(directory: Path) -> list[str]:
    meta = _find(directory, "batches.meta")
    if meta is None:
        return list(CIFAR10_CLASSES)
    names = _unpickle(meta).get("label_names")
    if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES):
        raise DataError(f"{meta}: 'label_names' must list {len(CIFAR10_CLASSES)} class names")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def unit_floats(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]; training, eval and predict all use this, so the same
    pixels give the same floats."""
    out = pixels.astype(np.float32)
    out /= np.float32(255.0)
    return out


def _labelled(x: np.ndarray, labels: np.ndarray, names: list[str], first: int, source: str, shape: list[int]) -> Table:
    """uint8 images -> a Table of [0, 1] float32 rows with class-name labels."""
    codes = labels.astype(np.int64) - first
    bad = (codes < 0) | (codes >= len(names))
    if bad.any():
        raise DataError(
            f"{source}: label {int(labels[bad][0])} outside {first}..{first + len(names) - 1} ({len(names)} classes); the file "
            "belongs to another set or is damaged: check data.name (and data.subset for emnist), or delete it and get it again"
        )
    rows = x.reshape(len(x), -1)  # still uint8: prepare makes [0, 1] floats after the split, per split (memory)
    features = [f"px{i}" for i in range(rows.shape[1])]
    y = np.asarray(names, dtype=object)[codes]
    return Table(rows, y, features, ["label"], "multiclass", list(names), {"image_shape": list(shape)})


def load_images(spec: DataSpec, pixels: bool = True) -> Table:
    """The official training set as a Table; ``extra`` holds the official test set and the image shape.

    ``pixels=False`` (for `validate`) reads the labels and the image files' headers only: the rows
    then have no columns, and ``extra["image_shape"]`` says what they would hold.
    """
    try:
        files = locate(spec)
    except DataError:
        if not spec.download:
            raise
        download(spec)
        files = locate(spec)
    names, first = class_names(spec)
    if spec.name == "cifar10":
        names = _cifar_names(files["test"].parent)
        parts = [read_cifar_batch(files[f"train_{i}"]) for i in range(1, 6)]
        train_x = np.concatenate([p[0] for p in parts])
        train_y = np.concatenate([p[1] for p in parts])
        test_x, test_y = read_cifar_batch(files["test"])
        shape = [3, 32, 32]
        train_src, test_src = str(files["train_1"].parent), str(files["test"])
    else:
        read = read_idx if pixels else lambda path, ndim: np.broadcast_to(np.uint8(0), read_idx_dims(path, ndim))  # no pixels
        train_x, train_y = read(files["train_images"], 3), read_idx(files["train_labels"], 1)
        test_x, test_y = read(files["test_images"], 3), read_idx(files["test_labels"], 1)
        for (images, labels), (a, b) in (
            ((train_x, train_y), (files["train_images"], files["train_labels"])),
            ((test_x, test_y), (files["test_images"], files["test_labels"])),
        ):
            if len(images) != len(labels):
                raise DataError(f"{a} holds {len(images)} images but {b} holds {len(labels)} labels; one of them is damaged")
        if train_x.shape[1:] != test_x.shape[1:]:
            raise DataError(
                f"{files['test_images']}: images are {test_x.shape[1]}x{test_x.shape[2]}, "
                f"the training images ({files['train_images']}) {train_x.shape[1]}x{train_x.shape[2]}"
            )
        if spec.name == "emnist":  # EMNIST stores each image transposed; make it upright like MNIST
            train_x, test_x = train_x.transpose(0, 2, 1), test_x.transpose(0, 2, 1)
        shape = [1, int(train_x.shape[1]), int(train_x.shape[2])]
        train_src, test_src = str(files["train_labels"]), str(files["test_labels"])
    if len(train_x) == 0 or len(test_x) == 0:
        raise DataError(f"{train_src if len(train_x) == 0 else test_src}: holds no images")
    if not pixels:  # rows without columns: prepare splits and counts them without touching pixels
        train_x, test_x = train_x.reshape(len(train_x), -1)[:, :0], test_x.reshape(len(test_x), -1)[:, :0]
    train = _labelled(train_x, train_y, names, first, train_src, shape)
    test = _labelled(test_x, test_y, names, first, test_src, shape)
    train.extra["test"] = test
    train.extra["files"] = {role: str(p) for role, p in files.items()}
    return train


# ----------------------------------------------------------------------------------------------
# download: true


def _torchvision_class(spec: DataSpec) -> Any:
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise DataError(f"data.download: true needs torchvision ({exc}); install it, or get the files yourself") from None
    return getattr(tvd, IMAGE_SETS[spec.name].torchvision)


def _host(cls: Any) -> tuple[str, int]:
    """Host and port of the first place torchvision downloads the set from."""
    from urllib.parse import urlsplit

    url = cls.mirrors[0] if getattr(cls, "mirrors", None) else cls.url
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _reachable(host: str, port: int, timeout: float) -> Optional[str]:
    """None when a TCP connection to host:port opens within ``timeout`` (or a proxy is set), else why not."""
    import urllib.request

    if urllib.request.getproxies():
        return None  # behind a proxy a direct connection says nothing; the download's own timeout applies
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return str(exc) or type(exc).__name__
    return None


def _fetch(cls: Any, spec: DataSpec, root: Path) -> None:
    """torchvision's own download (it skips files already there), then it reads them once."""
    kwargs = {"split": spec.subset} if spec.name == "emnist" else {}
    cls(str(root), train=True, download=True, **kwargs)


def download(spec: DataSpec) -> None:
    """Fetch the set into data.root with torchvision; without a network a one-line DataError within seconds."""
    assert spec.root, "the config validator requires data.root with data.download"
    root = Path(spec.root).expanduser()
    cls = _torchvision_class(spec)
    host, port = _host(cls)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # urllib (used by torchvision) waits this long per operation
    try:
        why = _reachable(host, port, DOWNLOAD_TIMEOUT)
        if why is None:
            try:
                root.mkdir(parents=True, exist_ok=True)
                _fetch(cls, spec, root)
            except Exception as exc:  # URLError, RuntimeError("Error downloading ..."), OSError, checksum errors
                why = " ".join(str(exc).split()) or type(exc).__name__
    finally:
        socket.setdefaulttimeout(previous)
    if why is not None:
        message = missing_message(spec)
        raise DataError(f"data.download: could not download {_title(spec)} from {host} into {root} ({why[:200]}); {message}")


# ----------------------------------------------------------------------------------------------
# eval --data / predict inputs for a model trained on images.


def image_rows(x: np.ndarray, path: Path, state: dict[str, Any]) -> np.ndarray:
    """Images given to eval or predict (any of the layouts below, from an NPZ, NPY or CSV) -> the
    float32 [0, 1] rows training saw: 0..255 pixels are divided by 255 (digits' 0..16 by 16), as training's were."""
    c, h, w = (int(v) for v in state["image_shape"])
    white = int(state.get("pixel_max", 255))
    if len(x) == 0:
        raise DataError(f"{path}: holds no images")
    inner = tuple(x.shape[1:])
    if inner in ((c, h, w), (c * h * w,)) or (c == 1 and inner == (h, w)):
        x = x.reshape(len(x), -1)
    elif inner == (h, w, c):  # channels last (PIL, matplotlib): to the C, H, W order of training
        x = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    else:
        raise DataError(
            f"{path}: x has shape {list(x.shape)}; the model was trained on {c}x{h}x{w} images: give "
            f"{f'[N, {h}, {w}], ' if c == 1 else ''}[N, {c}, {h}, {w}], [N, {h}, {w}, {c}] or [N, {c * h * w}]"
        )
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: x must hold numbers, got {x.dtype}")
    if x.dtype == np.uint8 and white == 255:
        return unit_floats(x)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: x holds {int((~np.isfinite(x)).sum())} NaN or infinite values; clean them first")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > white:
        raise DataError(
            f"{path}: pixel values run from {low:g} to {high:g}; give them as training had them: 0..{white} (or 0..1), "
            f"not normalized{' or 16-bit' if white == 255 else ''}"
        )
    if high > 1.0:
        x /= np.float32(white)  # pixels given as 0..white
    return x


def read_image_inputs(path: Path, spec: DataSpec, state: dict[str, Any], need_target: bool) -> Table:
    """An NPZ (``x``, optional ``y``) or NPY (``x``) of images -> a Table of flattened [0, 1] rows.

    ``x`` may be [N, H, W] (one channel), [N, C, H, W], [N, H, W, C] or [N, C*H*W]; values above 1
    are taken as 0..255 and divided by 255. Integer labels ``y`` are the set's label numbers, string
    labels its class names.
    """
    arrays = load_arrays(path, need_target)
    x = image_rows(np.asarray(arrays["x"]), path, state)
    y = np.asarray(arrays.get("y", np.zeros((len(x), 0))))
    if len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
    if y.size and y.ndim == 1 and (y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0))):
        names, first = list(state["class_names"]), class_names(spec)[1]
        codes = y.astype(np.int64) - first
        bad = (codes < 0) | (codes >= len(names))
        if bad.any():
            raise DataError(f"{path}: label {y[bad][0]} outside {first}..{first + len(names) - 1}; the model knows {len(names)} classes")
        y = np.asarray(names, dtype=object)[codes]
    return Table(x, y, list(state["feature_names"]), list(state["target_names"]))
