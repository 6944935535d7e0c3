"""Sources: each returns a ``Table`` of numpy arrays (features, raw targets, names).

Built-in sets need no download: synthetic generators and scikit-learn's bundled data sets.
Files: CSV and Parquet (``data.tabular``: dtypes, categorical and bool columns, ids, empty cells)
and NPZ/NPY with ``x`` and ``y`` arrays. ``read_csv`` here reads an all-numeric CSV for models
trained on built-in data (and checkpoints from before ``data.tabular``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from mlptrain.config import DataSpec
from mlptrain.errors import DataError


@dataclass
class Table:
    """Rows as read: ``y`` holds raw labels (any dtype) or values; ``task`` is known for built-ins."""

    x: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    task: Optional[str] = None
    class_names: Optional[list[str]] = None
    extra: dict = field(default_factory=dict)
    frame: Any = None  # csv/parquet: the raw feature columns (a data.frame.Frame; x is an [N, 0] placeholder until encoded)
    ids: Optional[np.ndarray] = None  # csv/parquet: the data.id column, if any

    def take(self, idx: np.ndarray) -> "Table":
        """The rows at ``idx`` (x, y, raw frame and ids alike)."""
        frame = None if self.frame is None else self.frame.take(idx)  # keeps the file's row numbers
        ids = None if self.ids is None else self.ids[idx]
        return replace(self, x=self.x[idx], y=self.y[idx], frame=frame, ids=ids)


def _xor(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The notes' XOR: four clusters at (±1, ±1); the label is 1 where exactly one coordinate is positive."""
    corners = rng.integers(0, 2, size=(n, 2))
    x = (2.0 * corners - 1.0) + noise * rng.standard_normal((n, 2))
    return x, corners[:, 0] ^ corners[:, 1]


def _spirals(n: int, noise: float, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k interleaved spiral arms, one class each."""
    y = np.arange(n) % k
    r = rng.uniform(0.05, 1.0, size=n)
    theta = 3.0 * np.pi * r + 2.0 * np.pi * y / k
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    return x + noise * rng.standard_normal((n, 2)), y


def _moons(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (the shape of scikit-learn's make_moons)."""
    n_out = n // 2
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    x = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], 1), np.stack([1 - np.cos(t_in), 0.5 - np.sin(t_in)], 1)])
    return x, np.repeat([0, 1], [n_out, n - n_out])


def _circles(n: int, factor: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A circle inside another, ``factor`` times its radius (the shape of scikit-learn's make_circles)."""
    n_out = n // 2
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n - n_out, endpoint=False)
    x = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], 1), factor * np.stack([np.cos(t_in), np.sin(t_in)], 1)])
    return x, np.repeat([0, 1], [n_out, n - n_out])


def _blobs(n: int, k: int, d: int, std: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k Gaussian clusters with centres drawn in [-10, 10]^d (as scikit-learn's make_blobs)."""
    centers = rng.uniform(-10.0, 10.0, size=(k, d))
    y = np.arange(n) % k
    return centers[y] + std * rng.standard_normal((n, d)), y


def synthetic(spec: DataSpec) -> Table:
    """Generated 2-D classification sets and the noisy sine regression, from a seeded numpy generator.

    Written with numpy rather than sklearn.datasets: importing scikit-learn takes about a second,
    and `mlptrain validate` answers in well under one.
    """
    n, noise = spec.n_samples, spec.noise
    rng = np.random.default_rng(spec.seed)
    if spec.name == "xor":
        x, y = _xor(n, noise, rng)
    elif spec.name in ("moons", "circles"):
        x, y = _moons(n) if spec.name == "moons" else _circles(n)
        order = rng.permutation(n)
        x, y = x[order] + noise * rng.standard_normal((n, 2)), y[order]
    elif spec.name == "spirals":
        x, y = _spirals(n, noise, spec.n_classes, rng)
    elif spec.name == "blobs":
        x, y = _blobs(n, spec.n_classes, spec.n_features, max(noise, 1e-6) * 10, rng)
    else:  # sine
        x = rng.uniform(-np.pi, np.pi, size=(n, 1))
        y = np.sin(x[:, 0]) + noise * rng.standard_normal(n)
    if spec.name == "sine":
        task, classes = "regression", None
    elif spec.name in ("spirals", "blobs"):
        task, classes = "multiclass", [str(i) for i in range(spec.n_classes)]
    else:
        task, classes = "binary", ["0", "1"]
    names = [f"x{i}" for i in range(x.shape[1])]
    return Table(x.astype(np.float32), np.asarray(y), names, ["y"], task, classes)


_CANCER = ["radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity", "concave points",
           "symmetry", "fractal dimension"]
# scikit-learn's bundled sets: file in sklearn/datasets/data, feature names (class names follow the header)
BUNDLED: dict[str, tuple[str, list[str]]] = {
    "iris": ("iris.csv", ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]),
    "wine": ("wine_data.csv", [
        "alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols", "flavanoids",
        "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue", "od280/od315_of_diluted_wines", "proline",
    ]),
    "breast_cancer": ("breast_cancer.csv", [f"mean {f}" for f in _CANCER] + [f"{f} error" for f in _CANCER]
                      + [f"worst {f}" for f in _CANCER]),
    "digits": ("digits.csv.gz", [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]),
    "diabetes": ("diabetes_data_raw.csv.gz", ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]),
}


def _sklearn_data_dir() -> Path:
    """Where scikit-learn keeps its bundled files, found without importing it (about a second)."""
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    if found is None or not found.submodule_search_locations:
        raise DataError("the built-in data sets come with scikit-learn, which is not installed: pip install scikit-learn")
    return Path(list(found.submodule_search_locations)[0]) / "datasets" / "data"


def bundled(name: str) -> Table:
    """scikit-learn's bundled real data sets (shipped inside the package, no download), read as
    scikit-learn's own loaders read them (a test checks they agree) but without importing it."""
    filename, features = BUNDLED[name]
    path = _sklearn_data_dir() / filename
    if name == "diabetes":  # load_diabetes(scaled=True): centred, then divided by std * sqrt(n)
        x = np.loadtxt(path)
        x = (x - x.mean(axis=0)) / x.std(axis=0) / np.sqrt(len(x))
        y = np.loadtxt(path.with_name("diabetes_target.csv.gz"))
        return Table(x.astype(np.float32), y, features, ["target"], "regression", None)
    if name == "digits":
        rows, classes = np.loadtxt(path, delimiter=","), [str(i) for i in range(10)]
    else:
        with open(path) as f:
            classes = f.readline().strip().split(",")[2:]  # header: rows, features, class names...
            rows = np.loadtxt(f, delimiter=",")
    task = "binary" if len(classes) == 2 else "multiclass"
    # Labels as class names (malignant/benign), like a CSV's: predict writes names, not indices.
    labels = np.asarray(classes, dtype=object)[rows[:, -1].astype(np.int64)]
    # digits are 8x8 images of 0..16 pixels: prepare reads them as [0, 1], and the pixel changes of augment apply
    extra = {"image_shape": [1, 8, 8], "pixel_max": 16} if name == "digits" else {}
    return Table(rows[:, :-1].astype(np.float32), labels, features, ["target"], task, classes, extra)


def read_csv(
    path: Path, pick: Callable[[list[str]], tuple[list[str], list[str]]], need_target: bool = True,
    names: Optional[list[str]] = None,
) -> Table:
    """An all-numeric CSV with a header row (or, ``names``, without one: those are its columns);
    ``pick(header)`` names the target and feature columns."""
    from mlptrain.data.frame import read_frame
    from mlptrain.data.tabular import as_numbers, missing_mask

    frame = read_frame(path, "csv", names=names)
    columns = frame.columns
    targets, feats = pick(columns)
    for t in targets:
        if t not in columns and need_target:
            raise DataError(f"{path}: target column '{t}' not found; columns are: {', '.join(columns)}")
    missing = [c for c in feats if c not in columns]
    if missing:
        raise DataError(f"{path}: feature column '{missing[0]}' not found; columns are: {', '.join(columns)}")
    x = np.zeros((len(frame), len(feats)), dtype=np.float32)
    empty = {}
    for j, col in enumerate(feats):  # numbers, or numbers written as text; any other cell is named
        miss = missing_mask(frame[col])
        x[:, j] = as_numbers(frame[col], col, str(path), miss)
        empty[col] = int(miss.sum())
    if any(empty.values()):
        counts = ", ".join(f"'{c}': {k}" for c, k in empty.items() if k)
        raise DataError(f"{path}: missing values in feature columns ({counts}); remove those rows or fill them")
    present = [t for t in targets if t in columns]
    if len(present) != 1:
        y = np.column_stack([frame.data[t] for t in present]) if present else np.zeros((len(frame), 0))
        return Table(x, y, feats, targets)
    y = frame.data[present[0]]
    if y.dtype == object:
        if any(v is None for v in y):
            raise DataError(f"{path}: target column '{present[0]}' has {sum(v is None for v in y)} empty cells")
        y = y.astype(str)
    return Table(x, y, feats, targets)


def load_arrays(path: Path, need_target: bool) -> dict[str, np.ndarray]:
    """The arrays of an NPZ (``x``, ``y``) or an NPY (``x`` only), never unpickling anything."""
    from mlptrain.data.frame import require_file

    require_file(path, "data file not found; check data.path in the config", "give data.path a file inside it")
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = {"x": loaded} if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}
    except (ValueError, OSError) as exc:  # (object arrays too: they would need unpickling)
        raise DataError(f"{path}: not a readable NPZ/NPY file of plain arrays ({exc})") from None
    if "x" not in arrays or (need_target and "y" not in arrays):
        kind = "an NPY file holds one array, the inputs: give an NPZ with arrays 'x' and 'y'" if path.suffix == ".npy" else \
            ("save it with np.savez(path, x=inputs, y=targets)" if need_target else "save it with np.savez(path, x=inputs)")
        wanted = "'x' and 'y'" if need_target else "'x'"
        raise DataError(f"{path}: needs {'arrays' if need_target else 'an array'} named {wanted}; found {', '.join(arrays) or 'none'}; {kind}")
    return arrays


def _numbers(x: np.ndarray, path: Path) -> np.ndarray:
    """An [N, F] array of features as float32; a cell that is not a number is an error naming it."""
    if x.dtype.kind in "biuf":
        return x.astype(np.float32)
    if x.dtype.kind in "US":  # text: numbers written as strings are fine, anything else is named
        try:
            return x.astype(np.float32)  # all numbers: one conversion, no Python loop over the cells
        except ValueError:
            pass
        for (i, j), v in np.ndenumerate(x):
            try:
                float(v)
            except ValueError:
                raise DataError(
                    f"{path}: x[{i}, {j}] is {v.item() if hasattr(v, 'item') else v!r}, not a number; "
                    "x must hold numbers only (encode text features as numbers before saving the file)"
                ) from None
        return x.astype(np.float32)
    raise DataError(f"{path}: x holds {x.dtype} values, not numbers; save x as an array of integers or floats")


def read_npz(path: Path, need_target: bool = True) -> Table:
    """NPZ with arrays ``x`` and ``y`` (or NPY holding only ``x``, for predict)."""
    arrays = load_arrays(path, need_target)
    x = np.asarray(arrays["x"])
    if x.ndim == 0:
        raise DataError(f"{path}: x is a single value, not rows of features; save x as an array [rows, features]")
    if x.ndim == 1:
        x = x[:, None]
    shape = list(x.shape[1:])  # a row's shape: predict refuses rows of another one, even with as many values
    x = _numbers(x.reshape(len(x), -1), path)
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: x holds {int(bad.sum())} NaN or infinite values (the first at x[{i}, {j}]); remove or fill those "
            "rows before saving the file (data.missing applies to csv/parquet only)"
        )
    y = arrays.get("y", np.zeros((len(x), 0)))
    if y.ndim == 0 or len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} rows but y has {len(y) if y.ndim else 'a single value'}; give one target per row")
    names = [f"x{i}" for i in range(x.shape[1])]
    targets = ["y"] if y.ndim == 1 else [f"y{i}" for i in range(y.shape[1])]
    return Table(x, y, names, targets, extra={"row_shape": shape})


def read_file(kind: str, path: Path, spec: DataSpec, need_target: bool = True) -> Table:
    """Dispatch on the file kind: csv and parquet keep their raw columns (see ``data.tabular``), npz arrays."""
    if kind in ("csv", "parquet"):
        from mlptrain.data.tabular import read_table

        return read_table(path, kind, spec.target, spec.features, spec.id, need_target, categorical=spec.categorical or ())
    return read_npz(path, need_target)
