"""Tabular files (CSV, Parquet) as they really come: dtypes, text and bool columns, ids, empty cells.

Reading (``read_table``): pyarrow parses the file and infers each column's type (``data.frame``: no
pandas on this path); ``infer_kinds`` sorts the feature columns into three kinds:

* ``numeric``: numbers, used as they are (then scaled with ``data.scale``);
* ``bool``: true/false columns, encoded 0/1 (not scaled);
* ``categorical``: text and Parquet dictionary columns, or any column listed in
  ``data.categorical`` (integer codes): one-hot over the categories of the training split
  (not scaled); a category the training split never had encodes as all zeros, with one warning.

Fitting (``fit_encoder``) sees the training split only, after the split, and returns plain data
(lists, strings, floats) for the checkpoint: per column its kind, its vocabulary and the value that
fills an empty cell. ``encode`` turns any frame with the training columns into a float32 matrix.

Empty cells (``data.missing``): ``error`` names the count per column; ``drop`` drops those rows at
fit time (and, as rows cannot be dropped from predictions, fills them with the training mean or
most frequent category elsewhere, with a warning); ``impute_mean`` / ``impute_median`` fill numeric
and bool (0/1) columns with the training mean / median and categorical columns with the most
frequent training category; ``impute_constant`` fills numeric and bool columns with
``data.fill_value`` and categorical ones with the category ``<missing>``. Rows without a target
value are always dropped, with a warning.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from mlptrain.data.frame import Column, Frame, read_frame, verbatim_column
from mlptrain.data.sources import Table
from mlptrain.errors import DataError, DataWarning

MISSING_CATEGORY = "<missing>"
FIX_HINT = "set data.missing to drop, impute_mean, impute_median or impute_constant"
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}  # (a CSV's separator is read off its header)


def kind_of_path(path: Path) -> Optional[str]:
    """csv or parquet by file extension (None for anything else)."""
    return SUFFIXES.get(path.suffix.lower())


# ------------------------------------------------------------------------------------------------
# Cells: empty, numbers, bools, category keys.


def _is_empty(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def missing_mask(c: Column) -> np.ndarray:
    """Empty cells: NaN/None, and text that is empty or only spaces."""
    if c.values.dtype.kind == "f":
        return np.isnan(c.values)
    if c.values.dtype != object:
        return np.zeros(len(c), dtype=bool)
    return np.fromiter((_is_empty(v) for v in c.values), dtype=bool, count=len(c))


def category_key(v: Any) -> str:
    """One spelling per category, whatever type a file's reader gave the cell: 3, 3.0 and "3" are the
    same code; True and " true" are "true"; text loses outer spaces."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    text = str(v).strip()
    return text.lower() if text.lower() in ("true", "false") else text


def _parse_number(v: Any) -> float:
    """A cell as a float: numbers as they are, text parsed after stripping spaces; NaN if it is no number."""
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str) and "_" not in v:  # float() would take 1_000; a spreadsheet would not
        try:
            return float(v.strip())
        except ValueError:
            pass
    return math.nan


# a number as people type it: thousands separators, a decimal comma, a currency sign, a percent, a − sign
_FORMATTED = re.compile(r"\s*[-+\u2212]?\s*[$€£¥]?\s*\d[\d,.' ]*\s*%?\s*")


def _comma_hint(v: Any) -> str:
    """For 1,5 or 1.200,50: numbers here need a decimal point and no thousands separators."""
    return "; a decimal comma? write numbers with a decimal point (1.5) and no separators" if re.fullmatch(
        r"\s*[-+]?\d{1,3}([.,' ]\d{3})*,\d+\s*|\s*[-+]?\d+,\d+\s*", str(v)) else ""


_TRUE = {"true", "1", "1.0", "yes", "t", "y"}
_FALSE = {"false", "0", "0.0", "no", "f", "n"}


def _row_label(c: Any, i: int, source: str) -> str:
    """Where cell ``i`` of a column (or frame) is in its file: rows keep the file's row numbers through
    dropped rows and splits; CSV rows are counted as lines (the header is line 1), as an editor shows them."""
    return f"row {int(c.rows[i]) + (1 if source.lower().endswith(('.parquet', '.pq')) else 2)}"


def as_numbers(c: Column, name: str, source: str, miss: np.ndarray) -> np.ndarray:
    """A numeric or bool column as float64 (NaN where empty); a non-number in it is an error."""
    if c.kind in ("int", "float") or c.values.dtype == bool:
        values = c.values.astype(np.float64)  # a copy
    elif c.kind == "bool":
        values = np.array([np.nan if v is None else float(bool(v)) for v in c.values], dtype=np.float64)
    else:
        values = np.fromiter((_parse_number(v) for v in c.values), dtype=np.float64, count=len(c))
        bad = np.isnan(values) & ~miss
        if bad.any():
            i = int(bad.nonzero()[0][0])
            raise DataError(
                f"{source}: column '{name}' {_row_label(c, i, source)} has non-numeric value {c.values[i]!r}; "
                f"this column holds numbers{_comma_hint(c.values[i])}"
            )
        values[miss] = np.nan
    bad = ~np.isfinite(values) & ~np.isnan(values)
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise DataError(
            f"{source}: column '{name}' {_row_label(c, i, source)} is infinite; features must be finite numbers: "
            f"fix the value, or empty the cell and {FIX_HINT}"
        )
    return values


def _as_bools(c: Column, name: str, source: str, miss: np.ndarray) -> np.ndarray:
    """A bool column as 0/1 floats (NaN where empty); accepts true/false, yes/no, 1/0 spellings."""
    if c.kind in ("bool", "int", "float"):
        values = as_numbers(c, name, source, miss)
        ok = np.isnan(values) | np.isin(values, (0.0, 1.0))
        if not ok.all():
            i = int((~ok).nonzero()[0][0])
            raise DataError(f"{source}: column '{name}' {_row_label(c, i, source)} has {values[i]!r}; the column was true/false in training")
        return values
    out = np.full(len(c), np.nan)
    for i, v in enumerate(c.values):
        if miss[i]:
            continue
        key = str(v).strip().lower()
        if isinstance(v, (bool, np.bool_)) or key in _TRUE or key in _FALSE:
            out[i] = float(bool(v)) if isinstance(v, (bool, np.bool_)) else float(key in _TRUE)
        else:
            raise DataError(f"{source}: column '{name}' {_row_label(c, i, source)} has {v!r}; the column was true/false in training")
    return out


def _dtype_kind(c: Column) -> str:
    """numeric / bool / categorical from the column's type alone (what `validate` shows for targets and ids)."""
    if c.kind == "bool":
        return "bool"
    if c.kind in ("int", "float"):
        return "numeric"
    return "categorical"


def infer_kinds(frame: Frame, forced: Sequence[str], source: str) -> dict[str, str]:
    """Feature column -> numeric | bool | categorical, from the training file's column types.

    Text columns whose cells are mostly numbers but not all are taken for numeric columns with a bad
    cell (an error naming it) rather than for categories; ``data.categorical`` overrides that.
    """
    kinds: dict[str, str] = {}
    for name in frame.columns:
        c = frame[name]
        if name in forced:
            kinds[name] = "categorical"
            continue
        if c.kind == "temporal":
            raise DataError(
                f"{source}: column '{name}' holds dates or durations ({c.dtype}); convert it to numbers "
                "or leave it out with data.features"
            )
        kind = _dtype_kind(c)
        if kind == "categorical" and c.kind == "text":
            filled = np.flatnonzero(~missing_mask(c))
            if len(filled) and all(str(c.values[i]).strip().lower() in ("true", "false") for i in filled):
                kinds[name] = "bool"  # true/false with a stray space or odd case: still a bool column, as others read it
                continue
            numeric = np.fromiter((not math.isnan(_parse_number(c.values[i])) for i in filled), dtype=bool, count=len(filled))
            if len(filled) and numeric.all():
                kind = "numeric"  # numbers stored as text (e.g. a Parquet string column)
            elif len(filled) and numeric.mean() >= 0.5:
                i = int(filled[int((~numeric).nonzero()[0][0])])
                raise DataError(
                    f"{source}: column '{name}' {_row_label(c, i, source)} has non-numeric value {c.values[i]!r}; "
                    "features must be numbers (list the column in data.categorical to treat it as categories, "
                    f"or drop it with data.features){_comma_hint(c.values[i])}"
                )
            elif len(filled) and np.mean([bool(_FORMATTED.fullmatch(str(c.values[i]))) for i in filled[~numeric]]) >= 0.9:
                example = c.values[filled[~numeric][0]]
                warnings.warn(DataWarning(
                    f"{source}: column '{name}' looks like numbers written with separators or symbols ({example!r}); it "
                    "is one-hot encoded as text: write plain numbers (1200.5) to use it as numbers, or list it in "
                    "data.categorical to keep it as categories"
                ), stacklevel=2)
        kinds[name] = kind
    return kinds


# ------------------------------------------------------------------------------------------------
# Reading a file into a Table whose features stay a raw frame until the encoder is fitted.


def read_table(
    path: Path, kind: str, target: Any, features: Optional[list[str]], id_column: Optional[str],
    need_target: bool = True, use_target: bool = True, need_id: bool = True, categorical: Sequence[str] = (),
) -> Table:
    """A CSV/Parquet file -> Table with ``frame`` (raw feature columns), ``y`` (labels or values) and ``ids``.

    ``x`` is an empty [N, 0] placeholder: features are encoded once the encoder is fitted. Rows whose
    target is empty are dropped with one warning. ``use_target=False`` (predict) ignores the target;
    ``need_id=False`` (predict, ``eval --data``) reads a file for a trained model, whose columns are fixed.
    ``extra["columns"]`` describes every column used (role, dtype, kind, empty cells) for `validate`.
    """
    # an id and categorical codes are read as the file writes them: 02134 stays 02134 in every file
    file_kind = kind
    frame = read_frame(path, file_kind, ([id_column] if id_column else []) + list(categorical))
    columns = list(frame.columns)
    targets = [target] if isinstance(target, str) else list(target or [])
    for t in targets:
        if t not in columns and need_target:
            fix = "set data.target to the label column" if need_id else "eval --data needs the target column the model was trained on"
            raise DataError(f"{path}: target column '{t}' not found; columns are: {', '.join(columns)}; {fix}")
    if id_column and id_column not in columns and need_id:
        raise DataError(f"{path}: id column '{id_column}' (data.id) not found; columns are: {', '.join(columns)}")
    feats = list(features) if features is not None else [c for c in columns if c not in targets and c != id_column]
    absent = [c for c in feats if c not in columns]
    if absent:
        fix = "add it to the file or leave it out with data.features" if need_id else "the model needs every column it was trained on"
        raise DataError(
            f"{path}: feature column '{absent[0]}' not found; columns are: {', '.join(columns)}; {fix} "
            f"(features: {', '.join(feats)})"
        )
    if not feats:
        raise DataError(f"{path}: no feature columns left besides the target and id; columns are: {', '.join(columns)}")

    info = []
    present = [t for t in targets if t in columns] if use_target else []
    roles = ([(id_column, "id")] if id_column in columns else []) + [(c, "feature") for c in feats] + [(t, "target") for t in present]
    for name, role in roles:
        c = frame[name]
        kind = "-" if role == "id" else _dtype_kind(c)
        info.append({"column": name, "role": role, "dtype": c.dtype, "kind": kind, "missing": int(missing_mask(c).sum())})

    if present:
        empty = np.zeros(len(frame), dtype=bool)
        per_column = {}
        for t in present:
            m = missing_mask(frame[t])
            per_column[t] = int(m.sum())
            empty |= m
        if empty.all():
            raise DataError(f"{path}: every row's target ({', '.join(present)}) is empty")
        if empty.any():
            counts = ", ".join(f"{t}: {k}" for t, k in per_column.items() if k)
            warnings.warn(DataWarning(f"{path}: dropped {int(empty.sum())} of {len(frame)} rows with no target value ({counts})"), stacklevel=2)
            frame = frame.take(np.flatnonzero(~empty))  # rows keep the file's row numbers for error messages
        y = _targets(frame, present, {t: k > 0 for t, k in per_column.items()})
    else:
        y = np.zeros((len(frame), 0))
    ids = frame[id_column].values if id_column and id_column in columns else None
    if ids is not None and file_kind == "csv" and missing_mask(frame[id_column]).any():  # NA, null: ids are copied as written
        raw = np.asarray(verbatim_column(path, id_column), dtype=object)
        ids = raw[frame.rows] if len(raw) > int(frame.rows.max(initial=-1)) else ids
    table = Table(np.zeros((len(frame), 0), np.float32), y, feats, targets, frame=frame.select(feats), ids=ids)
    table.extra["columns"] = info
    return table


def _targets(frame: Frame, present: list[str], had_empty: dict[str, bool]) -> np.ndarray:
    """Target cells (no empty ones left) as labels (text, bool) or numbers, one column or several."""
    if len(present) > 1:
        if all(frame.kinds[t] in ("int", "float", "bool") for t in present):
            return np.column_stack([np.asarray(frame.data[t], dtype=np.float64) for t in present])
        return np.column_stack([frame.data[t].astype(object) for t in present])
    name = present[0]
    values, kind = frame.data[name], frame.kinds[name]
    if kind == "bool":
        return values.astype(bool)
    if kind == "int":
        return values.astype(np.int64)
    if kind == "float":
        values = values.astype(np.float64)
        if had_empty.get(name) and np.all(np.mod(values, 1) == 0):
            return values.astype(np.int64)  # integer labels that were read as floats only because of empty cells
        return values
    return np.asarray([v.strip() if isinstance(v, str) else category_key(v) for v in values], dtype=str)


# ------------------------------------------------------------------------------------------------
# Missing-value policy at fit time, fitting on train, encoding.


def missing_counts(frame: Frame) -> dict[str, int]:
    return {c: int(missing_mask(frame[c]).sum()) for c in frame.columns}


def _rows_have(n: int) -> str:
    return "1 row has" if n == 1 else f"{n} rows have"


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{c}: {k}" for c, k in counts.items() if k)


def _some(values: Sequence[str], shown: int = 3) -> str:
    """A few values quoted, then how many more: 'teal', 'mauve', 'ochre' and 2 more."""
    text = ", ".join(repr(v) for v in values[:shown])
    return text + (f" and {len(values) - shown} more" if len(values) > shown else "")


def _fills_text(encoder: dict[str, Any], counts: dict[str, int]) -> str:
    """What each column's empty cells were filled with: size with 0.52, color with 'red'."""
    fills = {c["name"]: c["fill"] for c in encoder["columns"]}
    return ", ".join(
        f"{name} with {fills[name]:.6g}" if isinstance(fills[name], float) else f"{name} with {fills[name]!r}"
        for name, k in counts.items() if k
    )


def apply_policy(table: Table, policy: str, source: str) -> Table:
    """Fit time, every file read: ``error`` refuses empty feature cells, ``drop`` drops their rows."""
    if table.frame is None or policy not in ("error", "drop"):
        return table
    counts = missing_counts(table.frame)
    total = sum(counts.values())
    if not total:
        return table
    if policy == "error":
        noun = "missing value" if total == 1 else "missing values"
        raise DataError(f"{source}: {total} {noun} ({_counts_text(counts)}); {FIX_HINT}")
    empty = np.zeros(len(table.frame), dtype=bool)
    for c in table.frame.columns:
        empty |= missing_mask(table.frame[c])
    if empty.all():
        raise DataError(f"{source}: every row has a missing value ({_counts_text(counts)}); data.missing: drop leaves none: use an impute_ option")
    warnings.warn(
        DataWarning(f"{source}: dropped {int(empty.sum())} of {len(empty)} rows with missing values ({_counts_text(counts)}) (data.missing: drop)"),
        stacklevel=2,
    )
    return table.take(np.flatnonzero(~empty))


def fit_encoder(
    frame: Frame, kinds: dict[str, str], policy: str, fill_value: float, id_column: Optional[str], source: str = "training split"
) -> dict[str, Any]:
    """Vocabularies and fill values from the training split only, as plain data for the checkpoint."""
    columns = []
    for name in frame.columns:
        s, kind = frame[name], kinds[name]
        miss = missing_mask(s)
        if len(s) and miss.all():  # nothing to learn from, and every later value would be 'unseen'
            raise DataError(f"{source}: column '{name}' is empty in every training row; leave it out with data.features")
        entry: dict[str, Any] = {"name": name, "kind": kind}
        if kind == "categorical":
            counts = Counter(category_key(v) for v in s.values[~miss])
            if policy == "impute_constant" and miss.any():
                counts[MISSING_CATEGORY] += int(miss.sum())
            entry["categories"] = sorted(counts)
            if policy == "impute_constant":
                entry["fill"] = MISSING_CATEGORY
            else:
                entry["fill"] = min(counts, key=lambda k: (-counts[k], k)) if counts else MISSING_CATEGORY
        else:
            values = (_as_bools if kind == "bool" else as_numbers)(s, name, source, miss)[~miss]
            if policy == "impute_constant":
                fill = float(fill_value)
            elif len(values) == 0:
                fill = 0.0
            elif policy == "impute_median":
                fill = float(np.median(values))
            else:  # impute_mean; error and drop keep the mean for rows predict cannot drop
                fill = float(np.mean(values))
            entry["fill"] = fill
        columns.append(entry)
    names = []
    for c in columns:
        names += [f"{c['name']}={k}" for k in c["categories"]] if c["kind"] == "categorical" else [c["name"]]
    return {"missing": policy, "id": id_column, "columns": columns, "encoded_names": names}


def scaled_columns(encoder: dict[str, Any]) -> np.ndarray:
    """Which encoded columns the scaler may shift and scale: numeric ones (bool 0/1 and one-hot stay)."""
    flags: list[bool] = []
    for c in encoder["columns"]:
        flags += [False] * len(c["categories"]) if c["kind"] == "categorical" else [c["kind"] == "numeric"]
    return np.asarray(flags, dtype=bool)


def encode(frame: Frame, encoder: dict[str, Any], source: str, split: Optional[str] = None, at_fit: bool = True) -> np.ndarray:
    """Raw feature frame -> float32 [N, encoded width], filling empty cells and one-hot encoding.

    ``at_fit`` is False for predict and ``eval --data``: there rows cannot be dropped, so under
    ``drop`` their empty cells get the training fill value, with a warning.
    """
    policy = encoder["missing"]
    masks = {c["name"]: missing_mask(frame[c["name"]]) for c in encoder["columns"]}
    counts = {n: int(m.sum()) for n, m in masks.items()}
    total = sum(counts.values())
    if total and policy == "error":
        noun = "missing value" if total == 1 else "missing values"
        raise DataError(
            f"{source}: {total} {noun} ({_counts_text(counts)}); the model was trained with data.missing: error "
            "and cannot fill them: remove those rows, or retrain with data.missing set to drop, impute_mean, "
            "impute_median or impute_constant"
        )
    if total and (policy == "drop" or not at_fit):  # fit shows its filled cells in `validate`; elsewhere say what was filled
        rows = int(np.any(np.stack(list(masks.values())), axis=0).sum())
        how = (
            "data.missing: drop cannot drop rows here, so they are filled with the training mean (most frequent category)"
            if policy == "drop" else f"filled with the training split's values (data.missing: {policy})"
        )
        message = f"{source}: {_rows_have(rows)} missing values ({_counts_text(counts)}); {how}: {_fills_text(encoder, counts)}"
        if at_fit:  # cannot happen: fit drops these rows first
            raise DataError(message)
        warnings.warn(DataWarning(message, split), stacklevel=2)

    blocks = []
    unseen: dict[str, list[str]] = {}
    unseen_rows = np.zeros(len(frame), dtype=bool)
    for c in encoder["columns"]:
        name, kind, miss = c["name"], c["kind"], masks[c["name"]]
        s = frame[name]
        if kind == "categorical":
            index = {k: i for i, k in enumerate(c["categories"])}
            codes = np.fromiter(
                (index.get(c["fill"] if m else category_key(v), -1) for v, m in zip(s.values, miss)), dtype=np.int64, count=len(s)
            )
            block = np.zeros((len(s), len(c["categories"])), dtype=np.float32)
            known = codes >= 0
            block[np.flatnonzero(known), codes[known]] = 1.0
            if (~known).any():
                new = (c["fill"] if m else category_key(v) for v, m, k in zip(s.values, miss, known) if not k)
                unseen[name] = list(dict.fromkeys(new))  # each value once, in the file's order
                unseen_rows |= ~known
        else:
            values = (_as_bools if kind == "bool" else as_numbers)(s, name, source, miss)
            values[miss] = c["fill"]
            too_big = np.abs(values) > np.finfo(np.float32).max  # would be inf as the model's float32
            if too_big.any():
                i = int(too_big.nonzero()[0][0])
                raise DataError(
                    f"{source}: column '{name}' {_row_label(s, i, source)} is {values[i]:g}, beyond float32's range "
                    "(±3.4e38) the model computes in; rescale the column (e.g. to other units)"
                )
            block = values.astype(np.float32)[:, None]
        blocks.append(block)
    if unseen:
        warnings.warn(
            DataWarning(
                f"{source}: {_rows_have(int(unseen_rows.sum()))} categories unseen in training "
                f"({'; '.join(f'{name}: {_some(values)}' for name, values in unseen.items())}); encoded as all-zero",
                split,
            ),
            stacklevel=2,
        )
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0), np.float32)


def warn_wide_categories(encoder: dict[str, Any], n_train: int, source: str) -> None:
    """A text column with a category for nearly every row is usually an id: say so once."""
    for c in encoder["columns"]:
        k = len(c.get("categories", []))
        if c["kind"] == "categorical" and k > 50 and k > 0.5 * n_train:
            warnings.warn(
                DataWarning(
                    f"{source}: column '{c['name']}' has {k} categories over {n_train} training rows (one input each); "
                    "if it is an identifier, set data.id or leave it out with data.features"
                ),
                stacklevel=2,
            )


def column_table(table: Table, kinds: dict[str, str]) -> list[dict[str, Any]]:
    """What `validate` prints: column, role, dtype, kind (features as the encoder sees them), empty cells."""
    rows = [dict(r) for r in table.extra.get("columns", [])]
    for r in rows:
        if r["role"] == "feature" and r["column"] in kinds:
            r["kind"] = kinds[r["column"]]
    return rows


__all__ = [
    "MISSING_CATEGORY", "read_frame", "read_table", "infer_kinds", "apply_policy", "fit_encoder", "encode",
    "scaled_columns", "column_table", "kind_of_path",
]


def numeric_encoder(feature_names: Sequence[str]) -> dict[str, Any]:
    """The encoder a checkpoint from before categorical support implies: every feature numeric, no empty cells."""
    columns = [{"name": n, "kind": "numeric", "fill": 0.0} for n in feature_names]
    return {"missing": "error", "id": None, "columns": columns, "encoded_names": list(feature_names)}


def keep_unscaled(scaler: dict[str, Any], scaled: np.ndarray) -> dict[str, Any]:
    """Shift 0 and scale 1 for bool and one-hot columns: an unseen category stays an all-zero vector."""
    if scaler["kind"] == "none":
        return scaler
    shift = [s if keep else 0.0 for s, keep in zip(scaler["shift"], scaled)]
    scale = [s if keep else 1.0 for s, keep in zip(scaler["scale"], scaled)]
    return {**scaler, "shift": shift, "scale": scale}
