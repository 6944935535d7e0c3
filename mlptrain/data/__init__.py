"""Data: source -> task and label encoding -> train/val/test split -> preprocessing fitted on train.

``prepare(spec)`` is what ``fit`` uses. ``prepare(spec, state)`` rebuilds the same splits for
``eval`` with the preprocessing stored in a checkpoint, and ``read_inputs`` turns a new file into
model inputs for ``predict``/``eval --data``. The preprocessing state is plain lists and strings so
a checkpoint holds it without pickling.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mlptrain.config import SKLEARN_NAMES, SYNTHETIC_NAMES, TABLE_NAMES, DataSpec
from mlptrain.data import tabular as _tab
from mlptrain.data.sources import Table, bundled, read_file, synthetic
from mlptrain.data.images import IMAGE_SETS, image_rows, load_images, read_image_inputs, unit_floats
from mlptrain.errors import DataError, DataWarning

__all__ = ["Split", "Prepared", "prepare", "stored", "read_inputs", "encode_targets"]


@dataclass
class Split:
    x: np.ndarray  # float32 [N, F], preprocessed
    y: np.ndarray  # task layout: binary float [N,1], multiclass int64 [N], multilabel/regression float [N,D]


@dataclass
class Prepared:
    task: str
    train: Split
    val: Optional[Split]
    test: Optional[Split]
    state: dict[str, Any]  # preprocessing + names, stored in checkpoints
    columns: Optional[list[dict[str, Any]]] = None  # csv/parquet: column, role, dtype, kind, missing (for validate)

    @property
    def in_features(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.state["out_features"])


def _load(spec: DataSpec, path: Optional[Path], pixels: bool = True) -> Table:
    if spec.name in SYNTHETIC_NAMES:
        return synthetic(spec)
    if spec.name in SKLEARN_NAMES:
        return bundled(spec.name)
    if spec.name in IMAGE_SETS:
        return load_images(spec, pixels)  # the official training set; extra["test"]: the official test set
    assert path is not None
    return read_file(spec.name, path, spec)


def infer_task(table: Table) -> str:
    """Guess the task of a file's target: several 0/1 columns are multilabel, few integer or text values classes."""
    if table.task:
        return table.task
    y = table.y
    if y.ndim == 2 and y.shape[1] > 1:
        return "multilabel" if np.isin(y, (0, 1)).all() else "regression"
    y = y.reshape(-1)
    if y.dtype.kind in "OUSb":
        return "binary" if len(np.unique(y)) == 2 else "multiclass"
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        return "regression"
    n_unique = len(np.unique(y))
    if n_unique <= max(2, min(50, len(y) // 5)):
        return "binary" if n_unique == 2 else "multiclass"
    return "regression"


def _class_names(table: Table, task: str, positive: Any = None, source: str = "") -> list[str]:
    """The classes in output order: sorted, or the set's own; a binary task's ``positive`` class (data.positive_class)
    goes second, as the class the output is the probability of."""
    if task == "multilabel":  # one output per target column (a built-in set's class names are not its columns)
        return list(table.target_names)
    if table.class_names is not None:
        names = list(table.class_names)
    else:
        names = [str(v.item() if hasattr(v, "item") else v) for v in np.unique(table.y.reshape(-1))]
    if task != "binary" or positive is None or len(names) != 2:
        return names
    key = _class_key(str(positive), {n: i for i, n in enumerate(names)})
    if key not in names:
        raise DataError(f"{source}: data.positive_class = {positive!r} is not a class of the target; "
                        f"the classes are: {', '.join(names)}")
    return [n for n in names if n != key] + [key]


def check_targets(table: Table, source: str) -> None:
    """NaN or infinite target values would train on a NaN loss without a word: refuse them, naming the first."""
    y = np.asarray(table.y)
    if y.dtype.kind != "f" or y.size == 0:
        return
    bad = ~np.isfinite(y.reshape(len(y), -1))
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        where = _tab._row_label(table.frame, i, source) if table.frame is not None else f"y[{i}]"
        raise DataError(
            f"{source}: the target ({', '.join(table.target_names)}) holds {int(bad.sum())} NaN or infinite values "
            f"(the first at {where}); remove those rows or fix their values"
        )


def target_values(y: np.ndarray, task: str, source: str) -> np.ndarray:
    """Regression and multilabel targets as float32 [N, D]; text labels there are an error naming one."""
    try:
        return np.asarray(y, dtype=np.float32).reshape(len(y), -1)
    except (TypeError, ValueError):
        pass
    several = y.ndim == 2 and y.shape[1] > 1
    for v in np.asarray(y, dtype=object).reshape(-1):
        try:
            float(v)
        except (TypeError, ValueError):
            fix = ("several target columns are multilabel (each 0/1, or true/false) or multi-output regression "
                   "(numbers): write the labels as 0/1, or give one label column as data.target") if several else \
                "for class labels set task: auto, binary or multiclass"
            raise DataError(f"{source}: task '{task}' needs numeric targets, but the target holds labels such as {str(v)!r}; {fix}") from None
    raise DataError(f"{source}: task '{task}' needs one number per target cell")  # ragged object arrays


def encode_targets(y: np.ndarray, task: str, state: dict[str, Any], source: str) -> np.ndarray:
    """Raw labels/values -> the task's tensor layout, with the class names fixed at fit time."""
    if task == "regression":
        y = target_values(y, task, source)
        mean, std = state.get("target_mean"), state.get("target_std")
        if mean is not None:
            y = (y - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        return y.astype(np.float32)
    if task == "multilabel":
        y = target_values(y, task, source)
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise DataError(
                f"{source}: multilabel targets must be 0 or 1, found {y[bad][0]:g}; "
                "for other values set task: regression (or auto)"
            )
        return y
    names = state["class_names"]
    index = {name: i for i, name in enumerate(names)}
    raw = np.asarray(y).reshape(-1)
    keys = [_class_key(str(v.item() if hasattr(v, "item") else v), index) for v in raw]
    unknown = sorted({k for k in keys if k not in index})
    if unknown:
        raise DataError(
            f"{source}: labels {unknown[:5]} were not seen in training; known classes: {', '.join(names)}; "
            "remove those rows, or retrain on data that has them"
        )
    codes = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    if task == "binary":
        return codes.astype(np.float32)[:, None]
    return codes


def _class_key(key: str, index: dict[str, int]) -> str:
    """A label as the class name it spells: 1.0 (a file's reader made the column float) is class 1."""
    if key in index:
        return key
    try:
        number = float(key)
    except ValueError:
        return key
    return str(int(number)) if number.is_integer() and str(int(number)) in index else key


def _split_indices(n: int, fraction: float, seed: int, strata: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) row indices, stratified: each class gives its share of the held-out rows and
    keeps at least one for training (a class of one row stays in training).

    ``fraction`` is a share of the ``n`` rows, or (an int) the number of rows to hold out. Written
    with numpy rather than sklearn's train_test_split: importing sklearn.model_selection costs
    about 140 MB of memory and a second of start-up.
    """
    idx = np.arange(n)
    if fraction <= 0:
        return idx, idx[:0]
    held = fraction if isinstance(fraction, int) else int(np.ceil(fraction * n))
    if held >= n:
        raise DataError(f"data.split: cannot hold out {fraction:g} of {n} rows (no training rows would be left)")
    rng = np.random.default_rng(seed)
    classes = counts = None
    if strata is not None:
        classes, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
        if not (held >= (counts >= 2).sum() and n - held >= len(counts)):
            classes = None
    if classes is None:
        held_out = rng.permutation(n)[:held]
    else:
        # Each class gives its share of the held-out rows (largest remainders round up, ties at
        # random) and keeps at least one row for training.
        quota = counts * held / n
        take = np.minimum(np.floor(quota).astype(np.int64), counts - 1)
        order = np.lexsort((rng.random(len(counts)), -(quota - take)))
        while take.sum() < held:  # held <= n - classes, so some class always has room
            for c in order:
                if take.sum() < held and take[c] < counts[c] - 1:
                    take[c] += 1
        held_out = np.concatenate([rng.permutation(np.flatnonzero(inverse == c))[: take[c]] for c in range(len(counts))])
    mask = np.zeros(n, dtype=bool)
    mask[held_out] = True
    return idx[~mask], idx[mask]


def _moments(x: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation in float64, a chunk of rows at a time: two passes, but no
    temporary the size of the data (x.std() would allocate one, on 60000 images 190 MB)."""
    n = max(len(x), 1)
    total = np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        total += x[i : i + chunk].sum(axis=0, dtype=np.float64)
    mean = total / n
    squares = np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        d = x[i : i + chunk].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", d, d)
    return mean, np.sqrt(squares / n)


def _fit_scaler(x: np.ndarray, kind: str) -> dict[str, Any]:
    if kind == "standard":
        shift, scale = _moments(x)
    elif kind == "minmax":
        shift, scale = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
    else:
        return {"kind": "none"}
    scale = np.where(scale > 0, scale, 1.0)  # constant columns stay put instead of dividing by zero
    return {"kind": kind, "shift": shift.astype(np.float64).tolist(), "scale": scale.astype(np.float64).tolist()}


def feature_std(x: np.ndarray, numeric: Optional[np.ndarray] = None) -> list[float]:
    """Each input column's standard deviation over the training rows, as read: the unit of an adversarial ε
    on data that is not images (mlptrain.attacks). Columns outside ``numeric`` (one-hot, bool) get 0: a
    perturbation of a fraction of a category means nothing, so they are left alone."""
    std = _moments(x)[1] if len(x) else np.zeros(x.shape[1])
    return (std if numeric is None else np.where(numeric, std, 0.0)).astype(np.float64).tolist()


def apply_scaler(x: np.ndarray, scaler: dict[str, Any]) -> np.ndarray:
    """Scaled float32 rows. Works in place on a float32 array it may own (prepare's split copies),
    so scaling needs no second copy of the data; pass ``x.copy()`` to keep the input."""
    out = x if (x.dtype == np.float32 and x.flags.writeable and x.flags.owndata) else x.astype(np.float32)
    if scaler["kind"] == "none":
        return out
    out -= np.asarray(scaler["shift"], np.float32)
    out /= np.asarray(scaler["scale"], np.float32)
    return out


def stored(state: dict[str, Any], in_features: int) -> Prepared:
    """A checkpoint's preprocessing without its data, for predict and eval on a file of new rows: those
    must not need the training file (moved or deleted since, or 70,000 images read for 10 predictions)."""
    empty = Split(np.zeros((0, in_features), dtype=np.float32), np.zeros((0,), dtype=np.int64))
    return Prepared(state["task"], empty, None, None, state)


def prepare(
    spec: DataSpec, task: str = "auto", state: Optional[dict[str, Any]] = None, pixels: bool = True
) -> Prepared:
    """Load, split, then fit the preprocessing on the training split; with ``state`` (from a checkpoint) reuse it.

    ``pixels=False`` (`validate`) leaves out the pixels of image sets: the splits keep their rows and
    labels but no feature columns, and ``state["image_shape"]`` tells the input width.
    csv/parquet features stay raw columns until after the split, so the categorical vocabularies, the
    fill values of empty cells and the scaler all come from the training rows only.
    """
    files = {
        k: Path(v) if v else None for k, v in
        (("path", spec.path), ("train", spec.train_path), ("val", spec.val_path), ("test", spec.test_path))
    }
    main = _load(spec, files["path"] or files["train"], pixels)
    source = str(files["path"] or files["train"] or spec.name)
    check_targets(main, source)
    fresh = state is None
    tabular = main.frame is not None
    kinds: dict[str, str] = {}
    if tabular:
        if fresh:
            unknown = [c for c in (spec.categorical or []) if c not in main.feature_names]
            if unknown:
                raise DataError(
                    f"{source}: data.categorical names '{unknown[0]}', which is not a feature column; "
                    f"the features are: {', '.join(main.feature_names)}"
                )
            kinds = _tab.infer_kinds(main.frame, spec.categorical or [], source)
        else:
            encoder = state.get("tabular") or _tab.numeric_encoder(state["feature_names"])
            kinds = {c["name"]: c["kind"] for c in encoder["columns"]}
        main = _tab.apply_policy(main, spec.missing, source)
    if fresh:
        task = infer_task(main) if task == "auto" else task
        if task in ("regression", "multilabel"):
            target_values(main.y, task, source)  # class labels for a task that needs numbers: say so before splitting
    else:
        task = state["task"]
    if len(main.x) == 0:
        raise DataError(f"{source}: no rows")
    if task in ("binary", "multiclass") and fresh:
        names = _class_names(main, task, spec.positive_class, source)
        if len(names) < 2:
            raise DataError(
                f"{source}: the target has a single class ({names[0]}); classification needs at least two: check that "
                "data.target names the label column, or add rows of other classes"
            )
        if task == "binary" and len(names) != 2:
            raise DataError(f"{source}: task 'binary' needs exactly 2 classes, found {len(names)}; use task: multiclass")
        spellings: dict[str, list[str]] = {}
        for name in names if tabular else ():  # (an image set's own classes, EMNIST's A and a, are meant)
            spellings.setdefault(name.casefold(), []).append(name)
        same = [", ".join(map(repr, group)) for group in spellings.values() if len(group) > 1]
        if same:
            warnings.warn(DataWarning(
                f"{source}: classes {'; '.join(same[:3])} differ only in case, so they are separate classes; "
                "if they are one class, spell it one way in the file"
            ), stacklevel=2)
    rows = {"train": main, "val": None, "test": None}
    # A split file's columns are matched by name to the training file's, not by position.
    split_spec = spec.model_copy(update={"features": list(main.feature_names)}) if spec.name in TABLE_NAMES else spec
    for split in ("val", "test"):
        if files[split] is not None:
            table = _load(split_spec, files[split])
            check_targets(table, str(files[split]))
            _same_row_shape(files[split], table, source, main)
            rows[split] = _tab.apply_policy(table, spec.missing, str(files[split])) if tabular else table
    if main.extra.get("test") is not None:  # image sets: the official test set, not carved from the rows
        rows["test"] = main.extra["test"]
    # Hold out by fraction what was not given as a file: test first, then val from the rest.
    strata = main.y.reshape(len(main.y), -1)[:, 0] if (task in ("binary", "multiclass") and spec.split.stratify) else None
    if strata is not None and any(rows[k] is None and f > 0 for k, f in (("test", spec.split.test), ("val", spec.split.val))):
        values, counts = np.unique(strata, return_counts=True)
        if (counts == 1).any():
            alone = ", ".join(repr(str(v)) for v in values[counts == 1][:5])
            warnings.warn(DataWarning(
                f"{source}: class {alone} has a single row; it stays in the training split (val and test have none of it)"
                if (counts == 1).sum() == 1 else
                f"{source}: classes {alone} have a single row each; they stay in the training split (val and test have none of them)"
            ), stacklevel=2)
    keep = np.arange(len(main.x))
    for split, fraction in (("test", spec.split.test), ("val", spec.split.val)):
        if rows[split] is not None or fraction <= 0:
            continue
        # the val fraction is of all rows: hold out that many rows of what the test split left
        # (a count, not a rescaled fraction, whose rounding error could add a row)
        frac = fraction if split == "test" else int(np.ceil(round(fraction * len(main.x), 9)))
        kept, held = _split_indices(len(keep), frac, spec.split.seed, None if strata is None else strata[keep])
        rows[split] = main.take(keep[held])
        keep = keep[kept]
    rows["train"] = main if len(keep) == len(main.x) else main.take(keep)  # nothing held out: no copy
    main = replace(main, x=main.x[:0])  # the splits own their rows now: free the full array (memory peak)
    # pixels of another range than 0..255 (digits: 0..16), divided as the run that fitted ``state`` divided
    # them (a checkpoint from before digits were images read them as they are)
    pixel_max = main.extra.get("pixel_max") if fresh else state.get("pixel_max")
    for key, table in rows.items():
        if table is not None and table.x.dtype == np.uint8:  # image pixels -> [0, 1] floats, one split at a time
            rows[key] = replace(table, x=unit_floats(table.x))
        elif table is not None and pixel_max is not None:
            rows[key] = replace(table, x=table.x / np.float32(pixel_max))
    train = rows["train"]

    encoded: dict[str, np.ndarray] = {}  # splits already encoded while fitting
    if fresh:
        state = {
            "task": task,
            "feature_names": list(main.feature_names),
            "target_names": list(main.target_names),
            "class_names": _class_names(main, task, spec.positive_class, source) if task != "regression" else [],
            "scaler": None,
            "target_mean": None,
            "target_std": None,
        }
        if "image_shape" in main.extra:  # image sets: [C, H, W] of the flattened rows
            state["image_shape"] = list(main.extra["image_shape"])
        if pixel_max is not None:  # the value of a white pixel, when not 255 (predict's inputs are read with it)
            state["pixel_max"] = pixel_max
        if len(main.extra.get("row_shape", ())) > 1:  # an NPZ of [N, A, B] arrays: predict takes that shape (or flat rows)
            state["row_shape"] = list(main.extra["row_shape"])
        if tabular:
            encoder = _tab.fit_encoder(train.frame, kinds, spec.missing, spec.fill_value, spec.id, f"{source} (train)")
            state["tabular"] = encoder
            encoded["train"] = _tab.encode(train.frame, encoder, f"{source} (train)", "train")
            scaler = _fit_scaler(encoded["train"], spec.scale)
            state["scaler"] = _tab.keep_unscaled(scaler, _tab.scaled_columns(encoder))
            state["feature_std"] = feature_std(encoded["train"], _tab.scaled_columns(encoder))
            _tab.warn_wide_categories(encoder, len(train.x), source)
        else:
            state["scaler"] = _fit_scaler(train.x, spec.scale)
            if "image_shape" not in state:
                state["feature_std"] = feature_std(train.x)
        if task == "regression" and spec.scale_target:
            y = np.asarray(train.y, np.float64).reshape(len(train.y), -1)
            std = y.std(axis=0)
            state["target_mean"] = y.mean(axis=0).tolist()
            state["target_std"] = np.where(std > 0, std, 1.0).tolist()
        if task == "regression":
            state["out_features"] = int(np.asarray(main.y).reshape(len(main.y), -1).shape[1])
        elif task == "binary":
            state["out_features"] = 1
        else:
            state["out_features"] = len(state["class_names"])
    assert state is not None
    if tabular:
        encoder = state.get("tabular") or _tab.numeric_encoder(state["feature_names"])

    def build(table: Optional[Table], name: str) -> Optional[Split]:
        if table is None or len(table.x) == 0:
            return None
        where = str(files[name]) if files.get(name) else f"{source} ({name})"  # the file the rows came from
        if tabular:
            x = encoded[name] if name in encoded else _tab.encode(table.frame, encoder, where, name)
        else:
            if table.x.shape[1] != len(state["feature_names"]):
                raise DataError(
                    f"{where}: {name} data has {table.x.shape[1]} features, training had {len(state['feature_names'])}; "
                    "give it the training file's columns"
                )
            x = table.x
        return Split(apply_scaler(x, state["scaler"]), encode_targets(table.y, task, state, where))

    train_split = build(rows["train"], "train")
    assert train_split is not None
    if fresh and task in ("binary", "multiclass"):
        codes = train_split.y.reshape(-1).astype(np.int64)
        state["class_counts"] = np.bincount(codes, minlength=len(state["class_names"])).tolist()  # for loss.class_weight
    columns = _tab.column_table(main, kinds) if tabular else None
    splits = {"train": train_split, "val": build(rows["val"], "val"), "test": build(rows["test"], "test")}
    digests = {name: digest(split) for name, split in splits.items() if split is not None}
    if fresh:
        state["splits"] = digests
    for name, was in ({} if fresh else state.get("splits") or {}).items():  # (checkpoints before it have none)
        change = split_change(name, was, digests.get(name))
        if change:
            warnings.warn(DataWarning(
                f"{source}: the data changed since the run trained: {change}; these are not the rows it was "
                "scored on (give the file it trained on)", name,
            ), stacklevel=2)
    return Prepared(task, splits["train"], splits["val"], splits["test"], state, columns)


def digest(split: Split) -> dict[str, int]:
    """Rows and a CRC-32 of a split's preprocessed arrays: eval and resume tell the run's own rows from changed ones."""
    crc = zlib.crc32(np.ascontiguousarray(split.x).data)
    return {"rows": int(len(split.x)), "crc32": zlib.crc32(np.ascontiguousarray(split.y).data, crc)}


def split_change(name: str, was: Optional[dict[str, int]], now: Optional[dict[str, int]]) -> Optional[str]:
    """How a split differs from the one a run trained on (``digest``s), in words; None when it is the same."""
    if was == now:
        return None
    was, now = was or {"rows": 0}, now or {"rows": 0}
    return f"its {name} split has {now['rows']} rows, had {was['rows']}" if now["rows"] != was["rows"] else f"its {name} split has other values"


def read_inputs(path: Path, spec: DataSpec, state: dict[str, Any], need_target: bool) -> tuple[np.ndarray, Optional[np.ndarray], Table]:
    """A new CSV/Parquet/NPZ/NPY file -> (preprocessed x, encoded y or None, the raw table) for eval/predict.

    For a model trained on csv/parquet data the stored encoder applies (categories, fill values); the
    table's ``ids`` hold the ``data.id`` column when the file has it. ``need_target=False`` (predict)
    ignores a target column.
    """
    from mlptrain.data.frame import require_file
    from mlptrain.data.sources import read_npz

    command = "eval --data" if need_target else "predict"
    require_file(path, f"input file not found; check the path given to {command}",
                 f"give {command} a .csv, .parquet, .npz or .npy file")
    kind = _tab.kind_of_path(path)
    if kind is None and path.suffix.lower() not in (".npz", ".npy"):
        raise DataError(f"{path}: unknown input kind '{path.suffix}'; give a .csv, .parquet, .npz or .npy file")
    if kind is not None and spec.name in TABLE_NAMES:
        encoder = state.get("tabular") or _tab.numeric_encoder(state["feature_names"])
        table = _tab.read_table(
            path, kind, state["target_names"], state["feature_names"], encoder.get("id"),
            need_target=need_target, use_target=need_target, need_id=False,
            categorical=[c["name"] for c in encoder["columns"] if c["kind"] == "categorical"],
        )
        x = apply_scaler(_tab.encode(table.frame, encoder, str(path), at_fit=False), state["scaler"])
    else:
        if kind == "parquet":
            raise DataError(f"{path}: this model was trained on '{spec.name}' data; give its inputs as .csv, .npz or .npy")
        if kind is None and state.get("image_shape"):  # images: [N, H, W], [N, C, H, W], ... flattened, 0..255 -> [0, 1]
            table = read_image_inputs(path, spec, state, need_target)
        else:
            table = read_npz(path, need_target) if kind is None else _builtin_csv(path, state, need_target)
            if kind is None:
                _check_row_shape(path, table.extra["row_shape"], state)
            if state.get("image_shape"):  # pixels in a CSV: scaled as training's were, like an NPZ's
                table = replace(table, x=image_rows(table.x, path, state))
        # arrays for a csv/parquet model hold the encoded inputs (one-hot columns included)
        width = len(state["tabular"]["encoded_names"]) if "tabular" in state else len(state["feature_names"])
        if table.x.shape[1] != width:
            names = state["tabular"]["encoded_names"] if "tabular" in state else state["feature_names"]
            raise DataError(
                f"{path}: has {table.x.shape[1]} feature columns, the model was trained on {width}; "
                f"give exactly its {width} inputs, in training order ({_first_names(names)})"
            )
        x = apply_scaler(table.x, state["scaler"])
    has_y = table.y.size > 0 and (table.y.ndim == 1 or table.y.shape[1] > 0)
    if need_target and not has_y:
        raise DataError(f"{path}: no target column ({', '.join(state['target_names'])}); eval needs true labels")
    y = encode_targets(table.y, state["task"], state, str(path)) if has_y else None
    return x, y, table


def _first_names(names: list[str]) -> str:
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def _same_row_shape(path: Path, table: Table, source: str, main: Table) -> None:
    """An NPZ split file's rows have the training file's shape, or are its rows flattened: rows of [2, 8]
    beside training rows of [4, 4] have as many values but mean something else."""
    shape, trained = table.extra.get("row_shape"), main.extra.get("row_shape")
    if shape is None or trained is None or shape == trained or len(shape) == 1:  # flat: the width check follows
        return
    dims = lambda s: "[N, " + ", ".join(map(str, s)) + "]"  # noqa: E731
    raise DataError(f"{path}: x has shape {dims(shape)}, but the training file {source} has x of shape {dims(trained)}; "
                    "save every split with the training file's row shape (or its rows flattened)")


def _check_row_shape(path: Path, shape: list[int], state: dict[str, Any]) -> None:
    """An NPZ's rows must have the model's shape: flat [features], or the [A, B, ...] it was trained on.
    Another shape with as many values ([N, 1, 2] for two features) would be flattened into rows that mean
    something else."""
    width = len(state["tabular"]["encoded_names"]) if "tabular" in state else len(state["feature_names"])
    trained = state.get("row_shape")
    if len(shape) == 1 or shape == trained:
        return
    takes = f"[N, {width}]" + (f" or [N, {', '.join(map(str, trained))}] as in training" if trained else "")
    raise DataError(
        f"{path}: x has shape [N, {', '.join(map(str, shape))}], but the model takes rows of {width} features, x of shape "
        f"{takes}; save x with that shape (reshape it only if its values are those features, in training order)"
    )


def _builtin_csv(path: Path, state: dict[str, Any], need_target: bool) -> Table:
    """A CSV for a model trained on built-in or NPZ data, whose columns have names the user never wrote
    (x0, x1, ...). One rule, never eating a row: a header naming all the features is read by name; a header
    naming none of them, with as many feature columns, is read by position, with a warning; a file whose first
    row is numbers has no header: its columns are the features in training order (predict only), with a warning."""
    from mlptrain.data.frame import first_row, is_number
    from mlptrain.data.sources import read_csv

    names = list(state["feature_names"])
    first = first_row(path)
    if first and all(is_number(c) for c in first) and not any(is_number(n) for n in names):
        shown = ", ".join(first[:4]) + (", ..." if len(first) > 4 else "")
        if need_target:
            raise DataError(
                f"{path}: has no header row (its first row is numbers: {shown}); eval --data needs one naming the columns: "
                f"{', '.join((names + list(state['target_names']))[:9])}"
            )
        if len(first) != len(names):
            raise DataError(
                f"{path}: has no header row (its first row is numbers: {shown}) and {len(first)} columns, the model was "
                f"trained on {len(names)} ({_first_names(names)}); give exactly those, in that order (or add a header row naming them)"
            )
        warnings.warn(DataWarning(
            f"{path}: no header row (the first row is numbers): its {len(names)} columns are read as the model's features "
            f"{_first_names(names)}, in that order"
        ), stacklevel=2)
        return read_csv(path, lambda header: ([], names), need_target, names=names)

    def pick(header: list[str]) -> tuple[list[str], list[str]]:
        targets = [t for t in state["target_names"] if t in header]
        if all(f in header for f in names):
            return targets, names
        columns = [c for c in header if c not in targets]
        if len(columns) != len(names):  # before reading a value: the wrong file, not a bad cell
            raise DataError(
                f"{path}: has {len(columns)} feature columns ({', '.join(columns[:8])}), the model was trained on "
                f"{len(names)} ({_first_names(names)}); give a file with those columns"
            )
        known = [c for c in columns if c in names]
        if known:  # some named, others not: position would put a named column where another feature goes
            absent = [f for f in names if f not in header]
            raise DataError(
                f"{path}: names some of the model's features ({_first_names(known)}) but not {_first_names(absent)}; "
                f"name every feature column as in training ({_first_names(names)}), or none (then columns are read by position)"
            )
        warnings.warn(DataWarning(
            f"{path}: columns {_first_names(columns)} are not the model's feature names; read by position as "
            f"{_first_names(names)}"
        ), stacklevel=2)
        return targets, columns

    return read_csv(path, pick, need_target)
