"""A CSV or Parquet file as named numpy columns, read with pyarrow.

pyarrow parses and infers the types; each column then becomes one numpy array. pandas is not
imported on this path: its import alone (0.35 s here) took `mlptrain validate` on a CSV past its
0.5 s budget, and the tabular code needs no more than arrays, row numbers and a few kinds.

A column is one of these kinds, with the dtype `validate` shows:

* ``int``: int64 numbers without empty cells (an integer column with empty cells is ``float``);
* ``float``: float64 (or float32) numbers, NaN where empty;
* ``bool``: true/false (a numpy bool array; object True/False/None where some cells are empty);
* ``text``: Python strings, None where empty (also the fallback for any other Arrow type);
* ``category``: a Parquet dictionary column, decoded (always one-hot, never parsed as numbers);
* ``temporal``: dates, times, durations (refused as features).

Rows keep their position in the file (``rows``) through ``take``, so an error about a cell names the
line an editor shows even after rows were dropped or split off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from mlptrain.errors import DataError, files_in

# The cells pandas reads as empty (its default na_values): the same files mean the same thing here.
NA_STRINGS = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]


@dataclass
class Column:
    name: str
    values: np.ndarray
    dtype: str  # as `validate` shows it: int64, float64, bool, str, category, timestamp[s], ...
    kind: str  # int | float | bool | text | category | temporal
    rows: np.ndarray  # each value's row among the file's data rows (0 = the first row after the header)

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Frame:
    """Named columns of equal length; ``rows`` are the file's row numbers of the rows still here."""

    data: dict[str, np.ndarray]
    dtypes: dict[str, str]
    kinds: dict[str, str]
    rows: np.ndarray

    @property
    def columns(self) -> list[str]:
        return list(self.data)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> Column:
        return Column(name, self.data[name], self.dtypes[name], self.kinds[name], self.rows)

    def select(self, names: Sequence[str]) -> "Frame":
        return Frame({n: self.data[n] for n in names}, {n: self.dtypes[n] for n in names}, {n: self.kinds[n] for n in names}, self.rows)

    def take(self, idx: np.ndarray) -> "Frame":
        """The rows at positions ``idx`` (they keep their file row numbers)."""
        return Frame({n: v[idx] for n, v in self.data.items()}, self.dtypes, self.kinds, self.rows[idx])


def _buffer(array: Any, dtype: Any) -> np.ndarray:
    """A fixed-width Arrow array's values, nulls included as whatever bytes they hold.

    Read straight from the data buffer: pyarrow's ``to_numpy`` imports pandas (0.35 s), and its
    compute functions (``cast``, ``is_null``) load their registry on first use (0.08 s).
    """
    dtype = np.dtype(dtype)
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize).copy()


def _bits(buffer: Any, offset: int, n: int) -> np.ndarray:
    """An Arrow bitmap (validity, or a bool array's values) as n numpy bools."""
    return np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")[offset : offset + n].astype(bool)


def _nulls(array: Any) -> np.ndarray:
    if array.null_count == 0:
        return np.zeros(len(array), dtype=bool)
    validity = array.buffers()[0]
    if validity is None:  # a column of empty cells only (Arrow's null type) has no validity bitmap
        return np.ones(len(array), dtype=bool)
    return ~_bits(validity, array.offset, len(array))


def _column(array: Any) -> tuple[np.ndarray, str, str]:
    """One Arrow column -> (values, dtype shown, kind)."""
    import pyarrow as pa

    array = array.combine_chunks()  # one Array, one data buffer
    t = array.type
    nulls = _nulls(array)
    if pa.types.is_dictionary(t):
        return np.asarray(array.to_pylist(), dtype=object), "category", "category"
    if pa.types.is_boolean(t):
        values = _bits(array.buffers()[1], array.offset, len(array))
        if nulls.any():
            values = values.astype(object)
            values[nulls] = None
        return values, "bool", "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        kind = "f" if pa.types.is_floating(t) else ("i" if pa.types.is_signed_integer(t) else "u")
        values = _buffer(array, f"{kind}{t.bit_width // 8}")
        if kind != "f" and not nulls.any() and not (kind == "u" and t.bit_width == 64 and values.max(initial=0) > np.iinfo(np.int64).max):
            return values.astype(np.int64), "int64", "int"  # (uint64 beyond int64 goes on as floats, not wrapped)
        # integers with empty cells become floats, as in pandas
        values = values.astype(np.float64 if kind != "f" or t.bit_width > 32 else np.float32)
        values[nulls] = np.nan
        return values, str(values.dtype), "float"
    if pa.types.is_decimal(t):  # databases' fixed-point numbers: as floats, like pandas' to_numeric made them
        values = np.array([np.nan if v is None else float(v) for v in array.to_pylist()], dtype=np.float64)
        return values, str(t), "float"
    values = np.empty(len(array), dtype=object)
    values[:] = array.to_pylist()
    if pa.types.is_temporal(t):
        return values, str(t), "temporal"
    return values, "str" if (pa.types.is_string(t) or pa.types.is_large_string(t)) else str(t), "text"


DELIMITERS = (",", ";", "\t", "|")


def delimiter(path: Path) -> str:
    """The field separator of a CSV, read off its header line: a comma, or the one of ; tab | that
    appears most often outside quotes there (spreadsheets in many locales write ;, .tsv files tabs)."""
    with open(path, "rb") as f:
        head = f.read(65536).decode("utf-8", errors="replace").lstrip("\ufeff")
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in head:
        if ch == '"':
            quoted = not quoted
        elif ch in "\r\n" and not quoted:
            break
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])  # (a tie, or none at all: the comma, first)
    return best if counts[best] > 0 else ","


def first_row(path: Path) -> list[str]:
    """The cells of a CSV's first row as written (its header, if it has one), split as ``read_frame`` splits them."""
    import csv
    import io

    with open(path, "rb") as f:
        head = f.read(65536).decode("utf-8", errors="replace").lstrip("\ufeff")
    return next(csv.reader(io.StringIO(head), delimiter=delimiter(path)), [])


def is_number(cell: str) -> bool:
    """A header cell that is a number (``1.5``, ``-3``, ``2e-4``): a data row read as if it were a header."""
    try:
        float(cell.strip())
    except ValueError:
        return False
    return bool(cell.strip()) and "_" not in cell


DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".npz", ".npy")


def require_file(path: Path, missing: str, fix: str) -> None:
    """A data path that is no file: a directory is said to be one (naming data files in it), anything else
    not found. ``missing``: the not-found text (what to check); ``fix``: what to give instead of a directory."""
    if path.is_dir():
        raise DataError(f"{path}: a directory, not a data file; {fix}{files_in(path, DATA_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: {missing}")


def foreign_format(path: Path) -> Optional[str]:
    """What a file named .csv really is when its first bytes say it is no text (Parquet, gzip, zip, Excel),
    and what to do about it; None for anything else. Checked before parsing, so that binary bytes are never
    quoted back as if they were a CSV's cells."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PAR1"):
        return "a Parquet file, not a CSV (it starts with PAR1); rename it to .parquet (in a config: data.name: parquet)"
    if head.startswith(b"\x1f\x8b"):
        return f"gzip-compressed, not a plain CSV; decompress it first (e.g. zcat {path} > plain.csv)"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "an Excel 97-2003 workbook (.xls), not a CSV; save it as CSV (UTF-8) from the spreadsheet"
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        if any(n.endswith(".npy") for n in names):
            return "an NPZ file of arrays, not a CSV; rename it to .npz (in a config: data.name: npz)"
        if any(n.startswith("xl/") for n in names):
            return "an Excel workbook (.xlsx), not a CSV; save it as CSV (UTF-8) from the spreadsheet"
        if any(n.endswith("data.pkl") for n in names):
            return "a PyTorch checkpoint, not a CSV; give the data file (the checkpoint comes first: predict CHECKPOINT INPUT)"
        return "a zip archive, not a CSV; extract the CSV from it first (unzip)"
    return None


def pa_binary(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t))


def _utf8(v: bytes) -> bool:
    try:
        v.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _unique_names(names: list[str]) -> list[str]:
    """Repeated header names get .1, .2 (pandas' spelling), so each column can be named in the config."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            candidate = f"{name}.{seen[name]}"
            while candidate in seen:
                seen[name] += 1
                candidate = f"{name}.{seen[name]}"
            name = candidate
        seen.setdefault(name, 0)
        out.append(name)
    return out


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def verbatim_column(path: Path, name: str) -> list[Optional[str]]:
    """One CSV column exactly as written, `NA` and `null` included (an id is copied, not interpreted);
    None only for an empty cell."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        path, parse_options=pacsv.ParseOptions(delimiter=delimiter(path), newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=[name], column_types={name: pa.string()}, null_values=[""],
                                             strings_can_be_null=True),
    )
    return table.column(0).to_pylist()


def read_frame(path: Path, kind: str, text: Sequence[str] = (), names: Optional[Sequence[str]] = None) -> Frame:
    """The whole file as a Frame; one-line DataErrors for a missing, empty or unreadable file.

    Columns named in ``text`` (an id) are read as the file writes them: 00042 stays 00042, and an
    integer id beside an empty cell does not turn into a float. ``names`` (CSV): the file has no header
    row; these are its columns, and its first row is data."""
    path = Path(path)
    require_file(path, "data file not found; check data.path in the config", "give data.path a file inside it")
    label = "Parquet file" if kind == "parquet" else "CSV"
    categories: set[str] = set()
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            with pq.ParquetFile(path) as f:  # (pq.read_table imports pandas)
                table = f.read(use_pandas_metadata=False)
        except Exception as exc:  # ArrowInvalid, OSError, ... for files that are not Parquet
            raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
        meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))  # (.pandas_metadata imports pandas)
        index = [c for c in (meta.get("index_columns") or []) if isinstance(c, str)]
        # a saved pandas index is no feature, unless it is the id the config names
        table = table.drop_columns([c for c in index if c in table.column_names and c not in text])
        # pandas writes a Categorical of integers as plain integers, saying so only in its metadata
        categories = {c.get("name") for c in meta.get("columns") or [] if c.get("pandas_type") == "categorical"}
    else:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        foreign = foreign_format(path)
        if foreign:
            raise DataError(f"{path}: {foreign}")
        try:
            table = pacsv.read_csv(
                path,  # a quoted cell may span lines
                read_options=pacsv.ReadOptions(column_names=list(names) if names is not None else None),
                parse_options=pacsv.ParseOptions(delimiter=delimiter(path), newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    null_values=NA_STRINGS, strings_can_be_null=True, column_types={c: pa.string() for c in text}
                ),
            )
        except Exception as exc:  # ArrowInvalid: no bytes, ragged rows, bad UTF-8, ...
            if "Empty CSV" in str(exc):
                raise DataError(f"{path}: the CSV file is empty; it needs a header row and data rows") from None
            raise DataError(f"{path}: not a readable CSV ({_first_line(exc)})") from None
    if table.num_columns == 0:
        raise DataError(f"{path}: the {label} has no columns")
    if table.num_rows == 0:
        raise DataError(f"{path}: the {label} has a header but no data rows")
    names = _unique_names([str(c) for c in table.column_names])
    data, dtypes, kinds = {}, {}, {}
    for name, array in zip(names, table.columns):
        if pa_binary(array.type) and kind == "parquet":
            raise DataError(f"{path}: column '{name}' holds raw bytes ({array.type}), not numbers or text; leave it out with data.features")
        if pa_binary(array.type):  # a CSV's reader gives bytes for text that is not UTF-8 (Latin-1 from Excel)
            row = next((i for i, v in enumerate(array.to_pylist()) if v is not None and not _utf8(v)), None)
            where = f" (row {row + 2}: {array[row].as_py()!r})" if row is not None else ""
            raise DataError(
                f"{path}: column '{name}' is not UTF-8 text{where}; save the file as UTF-8 (e.g. in a spreadsheet: "
                "CSV UTF-8), or leave the column out with data.features"
            )
        if name in text and kind == "parquet":
            import pyarrow as pa

            array = array.cast(pa.string())  # a typed id column: its values as text (ints stay ints)
        data[name], dtypes[name], kinds[name] = _column(array)
        if name in categories and kinds[name] != "category":
            data[name], dtypes[name], kinds[name] = data[name].astype(object), "category", "category"
    return Frame(data, dtypes, kinds, np.arange(table.num_rows))
