"""Sources: each returns a ``Table`` of numpy arrays (features, raw targets, names).

Built-in sets need no download: synthetic generators and scikit-learn's bundled data sets.
Files: CSV and Parquet (``data.tabular``: dtypes, categorical and bool columns, ids, empty cells)
and NPZ/NPY with ``x`` and ``y`` arrays. ``read_csv`` here reads an all-numeric CSV for models
trained on built-in data (and checkpoints from before ``data.tabular``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Union

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
    frame: Any = None  # csv/parquet: the raw feature columns (a DataFrame; x is an [N, 0] placeholder until encoded)
    ids: Optional[np.ndarray] = None  # csv/parquet: the data.id column, if any

    def take(self, idx: np.ndarray) -> "Table":
        """The rows at ``idx`` (x, y, raw frame and ids alike)."""
        frame = None if self.frame is None else self.frame.iloc[idx]  # keeps the file's row numbers as index
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


def synthetic(spec: DataSpec) -> Table:
    """Generated 2-D classification sets and the noisy sine regression."""
    from sklearn import datasets

    n, noise, seed = spec.n_samples, spec.noise, spec.seed
    rng = np.random.default_rng(seed)
    if spec.name == "xor":
        x, y = _xor(n, noise, rng)
        task, classes = "binary", ["0", "1"]
    elif spec.name == "moons":
        x, y = datasets.make_moons(n, noise=noise, random_state=seed)
        task, classes = "binary", ["0", "1"]
    elif spec.name == "circles":
        x, y = datasets.make_circles(n, noise=noise, factor=0.5, random_state=seed)
        task, classes = "binary", ["0", "1"]
    elif spec.name == "spirals":
        x, y = _spirals(n, noise, spec.n_classes, rng)
        task, classes = "multiclass", [str(i) for i in range(spec.n_classes)]
    elif spec.name == "blobs":
        x, y = datasets.make_blobs(
            n, n_features=spec.n_features, centers=spec.n_classes, cluster_std=max(noise, 1e-6) * 10, random_state=seed
        )
        task, classes = "multiclass", [str(i) for i in range(spec.n_classes)]
    else:  # sine
        x = rng.uniform(-np.pi, np.pi, size=(n, 1))
        y = np.sin(x[:, 0]) + noise * rng.standard_normal(n)
        task, classes = "regression", None
    names = [f"x{i}" for i in range(x.shape[1])]
    return Table(x.astype(np.float32), np.asarray(y), names, ["y"], task, classes)


def bundled(name: str) -> Table:
    """scikit-learn's bundled real data sets (shipped inside the package, no download)."""
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
    }[name]
    bunch = loader()
    names = [str(f) for f in getattr(bunch, "feature_names", [f"x{i}" for i in range(bunch.data.shape[1])])]
    if name == "diabetes":
        return Table(bunch.data.astype(np.float32), bunch.target, names, ["target"], "regression", None)
    classes = [str(c) for c in bunch.target_names]
    task = "binary" if len(classes) == 2 else "multiclass"
    # Labels as class names (malignant/benign), like a CSV's: predict writes names, not indices.
    labels = np.asarray(classes, dtype=object)[bunch.target]
    return Table(bunch.data.astype(np.float32), labels, names, ["target"], task, classes)


def read_csv(path: Path, target: Union[str, list[str], None], features: Optional[list[str]], need_target: bool = True) -> Table:
    """A CSV with a header row; the target column(s) by name, features by name or all the others."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: data file not found; check data.path in the config")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the CSV file is empty; it needs a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if len(frame) == 0:
        raise DataError(f"{path}: the CSV has a header but no data rows")
    columns = [str(c) for c in frame.columns]
    targets = [target] if isinstance(target, str) else list(target or [])
    for t in targets:
        if t not in columns and need_target:
            raise DataError(f"{path}: target column '{t}' not found; columns are: {', '.join(columns)}")
    feats = features if features is not None else [c for c in columns if c not in targets]
    missing = [c for c in feats if c not in columns]
    if missing:
        raise DataError(f"{path}: feature column '{missing[0]}' not found; columns are: {', '.join(columns)}")
    x = _numeric(frame[feats], path)
    present = [t for t in targets if t in columns]
    y = frame[present].to_numpy() if present else np.zeros((len(frame), 0))
    if len(present) == 1:
        y = y[:, 0]
    if y.dtype == object and y.ndim == 1:
        if frame[present[0]].isna().any():
            raise DataError(f"{path}: target column '{present[0]}' has {int(frame[present[0]].isna().sum())} empty cells")
        y = y.astype(str)
    return Table(x, y, feats, targets)


def _numeric(frame, path: Path) -> np.ndarray:
    """Feature columns as float32, naming the first non-numeric cell or the missing-value counts."""
    import pandas as pd

    for col in frame.columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(
                f"{path}: column '{col}' row {row + 2} has non-numeric value {frame[col].iloc[row]!r}; "
                "features must be numbers (drop the column with data.features)"
            )
    x = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
    nan = np.isnan(x).sum(axis=0)
    if nan.any():
        counts = ", ".join(f"'{c}': {int(k)}" for c, k in zip(frame.columns, nan) if k)
        raise DataError(f"{path}: missing values in feature columns ({counts}); remove those rows or fill them")
    return x


def load_arrays(path: Path, need_target: bool) -> dict[str, np.ndarray]:
    """The arrays of an NPZ (``x``, ``y``) or an NPY (``x`` only), never unpickling anything."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found; check data.path in the config")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable NPZ/NPY file ({exc})") from None
    arrays = {"x": loaded} if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}
    if "x" not in arrays or (need_target and "y" not in arrays):
        raise DataError(f"{path}: needs arrays named 'x' and 'y'; found {', '.join(arrays) or 'none'}")
    return arrays


def read_npz(path: Path, need_target: bool = True) -> Table:
    """NPZ with arrays ``x`` and ``y`` (or NPY holding only ``x``, for predict)."""
    arrays = load_arrays(path, need_target)
    x = np.asarray(arrays["x"])
    if x.ndim == 1:
        x = x[:, None]
    x = x.reshape(len(x), -1).astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: x holds {int((~np.isfinite(x)).sum())} NaN or infinite values; clean them first")
    y = arrays.get("y", np.zeros((len(x), 0)))
    if len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} rows but y has {len(y)}")
    names = [f"x{i}" for i in range(x.shape[1])]
    targets = ["y"] if y.ndim == 1 else [f"y{i}" for i in range(y.shape[1])]
    return Table(x, y, names, targets)


def read_file(kind: str, path: Path, spec: DataSpec, need_target: bool = True) -> Table:
    """Dispatch on the file kind: csv and parquet keep their raw columns (see ``data.tabular``), npz arrays."""
    if kind in ("csv", "parquet"):
        from mlptrain.data.tabular import read_table

        return read_table(path, kind, spec.target, spec.features, spec.id, need_target)
    return read_npz(path, need_target)
