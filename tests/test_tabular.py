"""Tabular data as it really comes: CSV and Parquet with text labels, categorical, bool and id columns,
empty cells (every data.missing policy, fitted on train only), unseen categories, class weights."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from mlptrain import data, pipeline
from mlptrain.cli import main
from mlptrain.config import DataSpec, LossSpec, validate_dict
from mlptrain.data import tabular
from mlptrain.errors import ConfigError, DataError, DataWarning
from mlptrain.losses import build_loss
from mlptrain.summary import describe

NO_SPLIT = {"val": 0.0, "test": 0.0}
HINT = "set data.missing to drop, impute_mean, impute_median or impute_constant"


def messy_frame(n: int = 90, seed: int = 0) -> pd.DataFrame:
    """An id, a numeric and a text column with empty cells, a bool column with empty cells, string labels."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], size=n).astype(object)
    size = rng.normal(size=n).round(4)
    member = rng.random(n) < 0.5
    label = np.where(size + (color == "red") * 1.5 - member * 0.5 > 0.2, "buy", "skip").astype(object)
    frame = pd.DataFrame({
        "id": [f"u{i:03d}" for i in range(n)],
        "size": size,
        "color": color,
        "member": member.astype(object),
        "label": label,
    })
    frame.loc[[3, 10, 40], "size"] = np.nan
    frame.loc[[5, 50], "color"] = None
    frame.loc[[7], "member"] = None
    return frame


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def prep(**kw) -> data.Prepared:
    task = kw.pop("task", "auto")
    state = kw.pop("state", None)
    return data.prepare(DataSpec(**kw), task, state)


def columns_of(p: data.Prepared, name: str) -> list[int]:
    """Indices of the encoded columns that come from one raw column."""
    names = p.state["tabular"]["encoded_names"]
    return [i for i, n in enumerate(names) if n == name or n.startswith(f"{name}=")]


def warning_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning:")]


# ------------------------------------------------------------------------------------------------
# End to end: CSV and Parquet through fit -> predict


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_messy_file_trains_with_impute_median_and_predict_writes_names_and_ids(kind, tmp_path, write_config, capsys):
    frame = messy_frame()
    frame.loc[[12], "label"] = None  # a row without a label: dropped with a warning
    path = write(frame, tmp_path / f"shop.{kind}")
    cfg = write_config(f"""\
data: {{name: {kind}, path: {path.name}, target: label, id: id, missing: impute_median, split: {{val: 0.2, test: 0.2}}}}
model: {{hidden: [8]}}
optimizer: {{lr: 0.02}}
train: {{epochs: 15, batch_size: 16, device: cpu}}
logging: {{tensorboard: false, progress: none}}
""")
    run = tmp_path / "run"
    assert main(["fit", str(cfg), "--run-dir", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"shop.{kind}: dropped 1 of 90 rows with no target value (label: 1)" in err

    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)  # plain data only
    st = ckpt["data_state"]
    assert st["class_names"] == ["buy", "skip"]
    assert st["feature_names"] == ["size", "color", "member"]  # the id is not a feature
    enc = st["tabular"]
    assert [(c["name"], c["kind"]) for c in enc["columns"]] == [("size", "numeric"), ("color", "categorical"), ("member", "bool")]
    assert enc["columns"][1]["categories"] == ["blue", "green", "red"] and enc["id"] == "id"
    assert ckpt["in_features"] == 1 + 3 + 1

    new = frame.drop(columns=["label"]).iloc[:6].copy()
    new.loc[1, "size"] = np.nan
    inputs = write(new, tmp_path / f"new.{kind}")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run / "checkpoints" / "best.pt"), str(inputs), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["id", "prediction", "prob_buy", "prob_skip"]
    assert [r["id"] for r in rows] == list(new["id"])
    assert {r["prediction"] for r in rows} <= {"buy", "skip"}
    fills = {c["name"]: c["fill"] for c in enc["columns"]}
    assert warning_lines(capsys.readouterr().err) == [  # the filled cells are said, with the training values; nothing unseen
        f"warning: {inputs}: 3 rows have missing values (size: 2, color: 1); filled with the training split's values "
        f"(data.missing: impute_median): size with {fills['size']:.6g}, color with {fills['color']!r}"
    ]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_predict_copies_ids_exactly_and_keeps_full_precision(kind, tmp_path, write_config):
    """Ids as the file has them (zero padding, integers beside an empty cell), every float digit kept,
    and -o .parquet writes Parquet."""
    n = 60
    rng = np.random.default_rng(1)
    x = rng.normal(size=n)
    ids = np.array([12345678 + i for i in range(n)], dtype=object)
    ids[4] = None
    frame = pd.DataFrame({"id": ids, "x": x, "price": 1e6 + 3e5 * x})
    write(frame, tmp_path / f"train.{kind}")
    cfg = write_config(f"data: {{name: {kind}, path: train.{kind}, target: price, id: id}}\nmodel: {{hidden: [4]}}\n"
                       "train: {epochs: 2, device: cpu}\nlogging: {tensorboard: false, progress: none}\n")
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    best = str(tmp_path / "run" / "checkpoints" / "best.pt")
    new = tmp_path / "new.csv"
    (tmp_path / "na.csv").write_text("id,x\n00007,0.5\n,2.0\nNA,0.1\nnull,0.2\n")
    assert main(["predict", best, str(tmp_path / "na.csv"), "-o", str(tmp_path / "na_p.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "na_p.csv").open()))
    assert [r["id"] for r in rows] == ["00007", "", "NA", "null"]  # an id is copied, never read as 'missing'
    new.write_text("id,x\n00007,0.5\n12345679,1.5\n,2.0\n")
    assert main(["predict", best, str(new), "-o", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["id"] for r in rows] == ["00007", "12345679", ""]
    values = [r["pred_price"] for r in rows]
    assert all("e" not in v for v in values) and all(abs(float(v)) > 1e4 for v in values)  # 1081328.4, not 1.08133e+06
    assert main(["predict", best, str(new), "-o", str(tmp_path / "p.parquet")]) == 0
    back = pq.read_table(tmp_path / "p.parquet")
    assert back.column("id").to_pylist() == ["00007", "12345679", None]
    assert back.column("pred_price").to_pylist() == [float(np.float32(v)) for v in values]  # the CSV's digits read back exactly
    if kind == "parquet":  # a typed integer id column in Parquet comes out as its integers, not floats
        write(frame.drop(columns="price"), tmp_path / "new.parquet")
        assert main(["predict", best, str(tmp_path / "new.parquet"), "-o", str(tmp_path / "q.csv")]) == 0
        got = [r["id"] for r in csv.DictReader((tmp_path / "q.csv").open())]
        assert got[:5] == ["12345678", "12345679", "12345680", "12345681", ""]


@pytest.mark.parametrize("id_name, renamed", [("prediction", "prediction.1"), ("prob_q", "prob_q.1")])
def test_an_id_named_like_an_output_column_keeps_its_ids_and_the_output_is_renamed(id_name, renamed, tmp_path, write_config, capsys):
    """The ids are copied and the output named like them gets a .1, with a warning: neither is lost."""
    rows = "".join(f"k{i:02d},{i % 5},{'p' if i % 5 > 1 else 'q'}\n" for i in range(40))
    (tmp_path / "d.csv").write_text(f"{id_name},a,y\n" + rows)
    cfg = write_config(f"data: {{name: csv, path: d.csv, target: y, id: {id_name}}}\nmodel: {{hidden: [4]}}\n"
                       "train: {epochs: 2, device: cpu}\nlogging: {tensorboard: false, progress: none}\n")
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    (tmp_path / "new.csv").write_text(f"{id_name},a\nfirst,0\nsecond,4\n")
    capsys.readouterr()
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "run" / "checkpoints" / "best.pt"), str(tmp_path / "new.csv"), "-o", str(out)]) == 0
    assert warning_lines(capsys.readouterr().err) == [
        f"warning: {tmp_path / 'new.csv'}: the id column '{id_name}' (data.id) has the name of an output column; "
        f"that output is written as '{renamed}'"
    ]
    with open(out) as f:
        header = next(csv.reader(f))
    got = list(csv.DictReader(out.open()))
    col = {c: renamed if c == id_name else c for c in ("prediction", "prob_p", "prob_q")}
    assert header == [id_name, *col.values()]
    assert [r[id_name] for r in got] == ["first", "second"]
    for r in got:
        assert r[col["prediction"]] in ("p", "q") and float(r[col["prob_p"]]) + float(r[col["prob_q"]]) == pytest.approx(1.0)


def test_validate_shows_dtypes_kinds_and_missing_counts(tmp_path, write_config, capsys):
    write(messy_frame(), tmp_path / "shop.csv")
    cfg = write_config("data: {name: csv, path: shop.csv, target: label, id: id, missing: impute_mean}\n")
    assert main(["validate", str(cfg)]) == 0
    text = capsys.readouterr().out
    table = text[text.index("column"):]
    cells = {}
    for line in table.splitlines():
        parts = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if len(parts) == 5 and parts[0] in ("id", "size", "color", "member", "label"):
            cells[parts[0]] = parts[1:]
    assert cells["size"] == ["feature", "float64", "numeric", "3"]
    assert cells["color"][0] == "feature" and cells["color"][2:] == ["categorical", "2"]
    assert cells["member"][0] == "feature" and cells["member"][2:] == ["bool", "1"]
    assert cells["id"][0] == "id" and cells["label"][0] == "target"
    info = describe(validate_dict({"data": {"name": "csv", "path": str(tmp_path / "shop.csv"), "target": "label",
                                                      "missing": "drop"}}))
    assert {c["column"]: c["kind"] for c in info["columns"]}["id"] == "categorical"  # without data.id, text is a feature


# ------------------------------------------------------------------------------------------------
# Encoding: one-hot fitted on train only, bools, codes, unseen categories


def test_vocabulary_is_fitted_on_the_training_split_only(tmp_path):
    frame = messy_frame().fillna({"size": 0.0, "color": "red", "member": False})
    train = write(frame.iloc[:60], tmp_path / "train.csv")
    test_frame = frame.iloc[60:].copy()
    test_frame.loc[test_frame.index[:3], "color"] = "purple"  # only in the test file
    test = write(test_frame, tmp_path / "test.csv")
    with pytest.warns(DataWarning, match=r"test\.csv: 3 rows have categories unseen in training \(color: 'purple'\); encoded as all-zero"):
        p = prep(name="csv", train_path=str(train), test_path=str(test), target="label", id="id", split=NO_SPLIT)
    assert p.state["tabular"]["columns"][1]["categories"] == ["blue", "green", "red"]
    cols = columns_of(p, "color")
    assert np.all(p.test.x[:3][:, cols] == 0.0)  # all-zero: one-hot columns are not shifted by the scaler
    many = test_frame.copy()
    many.loc[many.index[:6], "color"] = ["teal", "mauve", "teal", "ochre", "puce", "sand"]
    with pytest.warns(DataWarning, match=r"6 rows have categories unseen in training \(color: 'teal', 'mauve', 'ochre' and 2 more\)"):
        prep(name="csv", train_path=str(train), test_path=str(write(many, tmp_path / "many.csv")), target="label", id="id",
             split=NO_SPLIT)
    np.testing.assert_array_equal(p.test.x[3:][:, cols].sum(axis=1), 1.0)
    # split by fractions: a category of one row is in the vocabulary exactly when that row is a training row
    rare = frame.copy()
    rare.loc[0, "color"] = "teal"
    rare.loc[0, "size"] = 123.0  # marks the row in the (unscaled) splits
    path = write(rare, tmp_path / "rare.csv")
    seen = set()
    for seed in range(12):
        p = prep(name="csv", path=str(path), target="label", id="id", scale="none", split={"val": 0.2, "test": 0.2, "seed": seed})
        in_train = bool((p.train.x[:, 0] == 123.0).any())
        assert in_train == ("teal" in p.state["tabular"]["columns"][1]["categories"])
        seen.add(in_train)
    assert seen == {True, False}


def test_bool_columns_are_0_1_and_codes_can_be_categorical(tmp_path):
    frame = pd.DataFrame({"flag": [True, False, True, False] * 5, "code": [1, 2, 3, 2] * 5, "y": ["a", "b"] * 10})
    path = write(frame, tmp_path / "b.csv")
    p = prep(name="csv", path=str(path), target="y", split=NO_SPLIT)
    assert [c["kind"] for c in p.state["tabular"]["columns"]] == ["bool", "numeric"]
    np.testing.assert_array_equal(p.train.x[:, 0], frame["flag"].astype(float))  # bools stay 0/1: not scaled
    p = prep(name="csv", path=str(path), target="y", categorical=["code"], split=NO_SPLIT)
    assert p.state["tabular"]["encoded_names"] == ["flag", "code=1", "code=2", "code=3"]
    np.testing.assert_array_equal(p.train.x[:, 1:].argmax(axis=1), frame["code"] - 1)
    with pytest.raises(DataError, match=r"data\.categorical names 'nope', which is not a feature column"):
        prep(name="csv", path=str(path), target="y", categorical=["nope"])


def test_mostly_numeric_text_column_is_a_bad_cell_not_categories(tmp_path):
    frame = pd.DataFrame({"a": ["1", "2", "x", "4"] * 5, "y": [0, 1] * 10})
    path = write(frame, tmp_path / "n.csv")
    with pytest.raises(DataError, match=r"column 'a' row 4 has non-numeric value 'x'.*data\.categorical"):
        prep(name="csv", path=str(path), target="y")
    p = prep(name="csv", path=str(path), target="y", categorical=["a"], split=NO_SPLIT)
    assert p.state["tabular"]["encoded_names"] == ["a=1", "a=2", "a=4", "a=x"]


def test_unseen_category_at_predict_is_all_zero_with_one_warning_line(tmp_path, write_config, capsys):
    rng = np.random.default_rng(1)
    n = 80
    frame = pd.DataFrame({
        "x": rng.normal(size=n).round(3),
        "color": rng.choice(["red", "blue"], size=n),
        "size": rng.choice(["S", "M", "L"], size=n),
        "y": rng.choice(["no", "yes"], size=n),
    })
    write(frame, tmp_path / "d.csv")
    cfg = write_config("""\
data: {name: csv, path: d.csv, target: y, split: {val: 0.2, test: 0.0}}
model: {hidden: [4]}
train: {epochs: 2, device: cpu}
logging: {tensorboard: false, progress: none}
""")
    run = tmp_path / "run"
    assert main(["fit", str(cfg), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    new = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4], "color": ["green", "red", "pink", "blue"], "size": ["M", "XL", "S", "L"]})
    inputs = write(new, tmp_path / "new.csv")
    assert main(["predict", str(run / "checkpoints" / "best.pt"), str(inputs), "-o", str(tmp_path / "p.csv")]) == 0
    lines = warning_lines(capsys.readouterr().err)
    assert lines == [
        f"warning: {inputs}: 3 rows have categories unseen in training (color: 'green', 'pink'; size: 'XL'); encoded as all-zero"
    ]
    restored, _ = pipeline.restore(run / "checkpoints" / "best.pt", "cpu")
    st = restored.built.prepared.state
    with pytest.warns(DataWarning):
        x, _, _ = data.read_inputs(inputs, restored.spec.data, st, need_target=False)
    names = st["tabular"]["encoded_names"]
    color = [i for i, c in enumerate(names) if c.startswith("color=")]
    size = [i for i, c in enumerate(names) if c.startswith("size=")]
    np.testing.assert_array_equal(x[:, color].sum(axis=1), [0, 1, 0, 1])
    np.testing.assert_array_equal(x[:, size].sum(axis=1), [1, 0, 1, 1])


# ------------------------------------------------------------------------------------------------
# Missing values: every policy, fitted on train only


def split_files(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    train = pd.DataFrame({
        "num": [1.0, 2.0, np.nan, 10.0, 4.0, np.nan, 3.0, 100.0],
        "cat": ["a", "b", "b", None, "b", "c", "a", "b"],
        "flag": [True, True, False, True, None, True, False, True],
        "y": ["p", "q"] * 4,
    })
    test = pd.DataFrame({"num": [np.nan, 5.0], "cat": [None, "a"], "flag": [None, False], "y": ["p", "q"]})
    return write(train, tmp_path / "train.csv"), write(test, tmp_path / "test.csv"), train, test


def test_missing_error_counts_per_column_and_names_the_key(tmp_path):
    train, _, _, _ = split_files(tmp_path)
    with pytest.raises(DataError) as info:
        prep(name="csv", path=str(train), target="y")
    assert str(info.value) == f"{train}: 4 missing values (num: 2, cat: 1, flag: 1); {HINT}"


def test_missing_drop_drops_rows_at_fit_and_counts_them(tmp_path):
    train, test, frame, _ = split_files(tmp_path)
    with pytest.warns(DataWarning, match=r"train\.csv: dropped 4 of 8 rows with missing values \(num: 2, cat: 1, flag: 1\)"):
        p = prep(name="csv", train_path=str(train), target="y", missing="drop", scale="none", split=NO_SPLIT)
    assert len(p.train.x) == 4
    kept = frame.dropna()
    np.testing.assert_array_equal(p.train.x[:, 0], kept["num"])
    # predict cannot drop rows: it fills them with the training means and says so
    spec = DataSpec(name="csv", train_path=str(train), target="y", missing="drop", scale="none", split=NO_SPLIT)
    with pytest.warns(DataWarning, match=r"1 row has missing values \(num: 1, cat: 1, flag: 1\); data\.missing: drop cannot"):
        x, _, _ = data.read_inputs(test, spec, p.state, need_target=False)
    assert x[0, 0] == pytest.approx(kept["num"].mean())
    assert p.state["tabular"]["columns"][1]["fill"] == "a"  # most frequent of the kept rows (a, b, a, b): ties go to the first


def test_missing_impute_mean_median_and_constant_use_training_values_only(tmp_path):
    train, test, frame, _ = split_files(tmp_path)
    common = dict(name="csv", train_path=str(train), test_path=str(test), target="y", scale="none", split=NO_SPLIT)
    mean = prep(missing="impute_mean", **common)
    median = prep(missing="impute_median", **common)
    const = prep(missing="impute_constant", fill_value=-7.0, **common)
    num = frame["num"].dropna()
    flag = frame["flag"].dropna().astype(float)
    # numeric: the train file's mean / median (not the test file's 5.0)
    assert mean.test.x[0, 0] == pytest.approx(num.mean()) and mean.train.x[2, 0] == pytest.approx(num.mean())
    assert median.test.x[0, 0] == pytest.approx(num.median())
    assert const.test.x[0, 0] == -7.0 and const.train.x[5, 0] == -7.0
    # categorical: the most frequent training category (b); constant: its own category <missing>
    for p in (mean, median):
        cols = columns_of(p, "cat")
        assert p.state["tabular"]["encoded_names"][cols[0]:cols[-1] + 1] == ["cat=a", "cat=b", "cat=c"]
        np.testing.assert_array_equal(p.test.x[0, cols], [0, 1, 0])
    cols = columns_of(const, "cat")
    assert [const.state["tabular"]["encoded_names"][i] for i in cols] == ["cat=<missing>", "cat=a", "cat=b", "cat=c"]
    np.testing.assert_array_equal(const.test.x[0, cols], [1, 0, 0, 0])
    # bool: 0/1, empty cells as numbers (the share of true / the median / fill_value)
    flag_col = columns_of(mean, "flag")[0]
    assert mean.test.x[0, flag_col] == pytest.approx(flag.mean())
    assert median.test.x[0, flag_col] == pytest.approx(flag.median())
    assert const.test.x[0, columns_of(const, "flag")[0]] == -7.0
    assert mean.test.x[1, flag_col] == 0.0
    # the fitted values live in the checkpoint state as plain numbers and strings
    fills = [c["fill"] for c in mean.state["tabular"]["columns"]]
    assert fills == [pytest.approx(num.mean()), "b", pytest.approx(flag.mean())]
    assert all(isinstance(f, (float, str)) for f in fills)


def test_missing_values_are_filled_after_the_split_from_train_rows(tmp_path):
    # one file split by fractions: the fill value is the mean of the training rows, not of the whole file
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"v": rng.exponential(3.0, size=100).round(3), "y": ["a", "b"] * 50})
    frame.loc[::9, "v"] = np.nan
    path = write(frame, tmp_path / "f.csv")
    p = prep(name="csv", path=str(path), target="y", missing="impute_mean", scale="none", split={"val": 0.3, "test": 0.0})
    fill = p.state["tabular"]["columns"][0]["fill"]
    assert fill != pytest.approx(frame["v"].mean())
    train_values = p.train.x[:, 0]
    observed = train_values[train_values != np.float32(fill)]
    n_missing_train = int((train_values == np.float32(fill)).sum())
    assert fill == pytest.approx(observed.mean(), rel=1e-5) and n_missing_train > 0


def test_predict_with_missing_error_policy_is_a_clear_error(tmp_path):
    train, test, _, _ = split_files(tmp_path)
    clean = pd.read_csv(train).dropna()
    clean_path = write(clean, tmp_path / "clean.csv")
    spec = DataSpec(name="csv", path=str(clean_path), target="y", split=NO_SPLIT)
    p = data.prepare(spec)
    with pytest.raises(DataError, match=r"test\.csv: 3 missing values \(num: 1, cat: 1, flag: 1\); the model was trained "
                                        r"with data\.missing: error"):
        data.read_inputs(test, spec, p.state, need_target=False)


def test_rows_without_target_are_dropped_and_integer_labels_stay_integers(tmp_path):
    frame = pd.DataFrame({"x": np.arange(30.0), "y": [0, 1, 2] * 10})
    frame["y"] = frame["y"].astype("float64")
    frame.loc[[4, 8], "y"] = np.nan
    path = write(frame, tmp_path / "t.csv")
    with pytest.warns(DataWarning, match=r"dropped 2 of 30 rows with no target value \(y: 2\)"):
        p = prep(name="csv", path=str(path), target="y", split=NO_SPLIT)
    assert len(p.train.x) == 28 and p.state["class_names"] == ["0", "1", "2"]


def test_stratified_split_still_works_with_text_labels(tmp_path):
    frame = messy_frame(n=200).fillna({"size": 0.0, "color": "red", "member": False})
    frame["label"] = ["rare" if i % 10 == 0 else "common" for i in range(200)]
    path = write(frame, tmp_path / "s.csv")
    p = prep(name="csv", path=str(path), target="label", id="id", split={"val": 0.2, "test": 0.2})
    rare = p.state["class_names"].index("rare")
    for split in (p.train, p.val, p.test):
        assert (split.y.reshape(-1) == rare).mean() == pytest.approx(0.1)


def test_id_column_not_found_and_id_not_a_feature(tmp_path):
    path = write(messy_frame(), tmp_path / "m.csv")
    with pytest.raises(DataError, match=r"id column 'key' \(data\.id\) not found"):
        prep(name="csv", path=str(path), target="label", id="key", missing="impute_mean")
    with pytest.raises(ConfigError, match=r"data\.id 'id' is also in data\.features"):
        validate_dict({"data": {"name": "csv", "path": "m.csv", "target": "label", "id": "id", "features": ["id", "size"]}})
    with pytest.raises(ConfigError, match=r"data\.missing applies to csv/parquet files only"):
        validate_dict({"data": {"name": "iris", "missing": "drop"}})


def test_checkpoint_without_tabular_state_still_reads_numeric_csv(tmp_path):
    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) * 2, "y": ["u", "v"] * 10})
    path = write(frame, tmp_path / "old.csv")
    p = prep(name="csv", path=str(path), target="y", split=NO_SPLIT)
    old_state = {k: v for k, v in p.state.items() if k not in ("tabular", "class_counts")}  # as before this feature
    again = prep(name="csv", path=str(path), target="y", split=NO_SPLIT, state=old_state)
    np.testing.assert_allclose(again.train.x, p.train.x)
    x, _, _ = data.read_inputs(path, DataSpec(name="csv", path=str(path), target="y"), old_state, need_target=False)
    np.testing.assert_allclose(x, p.train.x)


# ------------------------------------------------------------------------------------------------
# Class weights


def test_balanced_class_weights_follow_sklearn_and_weight_the_mean():
    from sklearn.utils.class_weight import compute_class_weight

    names, counts = ["a", "b", "c"], [60, 30, 10]
    labels = np.repeat(np.arange(3), counts)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    gen = torch.Generator().manual_seed(0)
    z, y = torch.randn(12, 3, generator=gen), torch.tensor([0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 0, 0])
    w = torch.tensor(expected, dtype=torch.float32)
    for loss in ("cross_entropy", "nll"):
        _, fn = build_loss(LossSpec(name=loss, class_weight="balanced"), "multiclass", names, counts)
        per_row = -torch.log_softmax(z, dim=-1).gather(1, y[:, None])[:, 0]
        assert float(fn(z, y)) == pytest.approx(float((w[y] * per_row).sum() / w[y].sum()), rel=1e-6)
        _, plain = build_loss(LossSpec(name=loss), "multiclass")
        assert float(fn(z, y)) != pytest.approx(float(plain(z, y)))


def test_mapping_class_weights_for_cross_entropy_and_bce():
    z = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0], [0.0, 2.0]])
    y = torch.tensor([0, 1, 1, 0])
    _, fn = build_loss(LossSpec(name="cross_entropy", class_weight={"dog": 4.0}), "multiclass", ["cat", "dog"], [3, 1])
    w = torch.tensor([1.0, 4.0])[y]
    per_row = F.cross_entropy(z, y, reduction="none")
    assert float(fn(z, y)) == pytest.approx(float((w * per_row).sum() / w.sum()), rel=1e-6)
    # bce (binary): each row weighs what its class weighs
    logits = torch.tensor([[1.5], [-0.5], [0.2], [-2.0], [0.7]])
    target = torch.tensor([[1.0], [0.0], [1.0], [0.0], [0.0]])
    _, bce = build_loss(LossSpec(class_weight={"no": 0.5, "yes": 3.0}), "binary", ["no", "yes"], [3, 2])
    w = torch.where(target > 0.5, 3.0, 0.5)
    per_row = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    assert float(bce(logits, target)) == pytest.approx(float((w * per_row).sum() / w.sum()), rel=1e-6)
    _, balanced = build_loss(LossSpec(class_weight="balanced"), "binary", ["no", "yes"], [3, 2])
    w = torch.where(target > 0.5, 5 / (2 * 2), 5 / (2 * 3))
    assert float(balanced(logits, target)) == pytest.approx(float((w * per_row).sum() / w.sum()), rel=1e-6)


def test_class_weight_errors():
    with pytest.raises(ConfigError) as info:
        build_loss(LossSpec(class_weight={"dgo": 2.0}), "multiclass", ["cat", "dog"], [1, 1])
    assert str(info.value) == "loss.class_weight names unknown classes ('dgo'); the classes are: cat, dog"
    with pytest.raises(ConfigError, match="task 'regression' has no classes"):
        build_loss(LossSpec(class_weight="balanced"), "regression")
    with pytest.raises(ConfigError, match="not to loss 'hinge'"):
        build_loss(LossSpec(name="hinge", class_weight="balanced"), "binary", ["a", "b"], [1, 1])
    with pytest.raises(ConfigError, match="loss.class_weight"):
        validate_dict({"data": {"name": "xor"}, "loss": {"class_weight": {"a": -1.0}}})


def test_class_weight_through_the_pipeline_uses_training_counts(tmp_path, write_config, capsys):
    path = write(messy_frame(n=120).fillna({"size": 0.0, "color": "red", "member": False}), tmp_path / "w.csv")
    raw = {"data": {"name": "csv", "path": str(path), "target": "label", "id": "id"}, "loss": {"class_weight": "balanced"}}
    built = pipeline.build(validate_dict(raw))
    st = built.prepared.state
    counts = np.bincount(built.prepared.train.y.reshape(-1).astype(int), minlength=2)
    assert st["class_counts"] == counts.tolist()
    z = torch.linspace(-2, 2, 10)[:, None]
    y = (torch.arange(10) % 2).float()[:, None]
    w = torch.where(y > 0.5, counts.sum() / (2 * counts[1]), counts.sum() / (2 * counts[0])).float()
    expected = (w * F.binary_cross_entropy_with_logits(z, y, reduction="none")).sum() / w.sum()
    assert float(built.loss_fn(z, y)) == pytest.approx(float(expected), rel=1e-6)
    cfg = write_config(f"data: {{name: csv, path: {path}, target: label, id: id}}\nloss: {{class_weight: {{maybe: 2}}}}\n")
    assert main(["validate", str(cfg)]) == 2
    assert "loss.class_weight names unknown classes ('maybe'); the classes are: buy, skip" in capsys.readouterr().err
    cfg = write_config("data: {name: diabetes}\nloss: {class_weight: balanced}\n", "reg.yaml")
    assert main(["validate", str(cfg)]) == 2


def test_bad_cells_are_named_by_their_line_in_the_file_after_dropped_rows(tmp_path):
    frame = pd.DataFrame({"a": [str(i) for i in range(20)], "y": ["u", "v"] * 10})
    frame.loc[[1, 2], "y"] = None  # dropped first: the bad cell keeps its own line number
    frame.loc[9, "a"] = "oops"
    path = write(frame, tmp_path / "lines.csv")
    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"lines\.csv: column 'a' row 11 has non-numeric value 'oops'"):
        prep(name="csv", path=str(path), target="y")
    good = write(frame.drop(index=9), tmp_path / "good.csv")
    spec = DataSpec(name="csv", path=str(good), target="y", split=NO_SPLIT)
    with pytest.warns(DataWarning):
        p = data.prepare(spec)
    new = pd.DataFrame({"a": ["1", "2", "3", "x"]})
    with pytest.raises(DataError, match=r"new\.csv: column 'a' row 5 has non-numeric value 'x'"):
        data.read_inputs(write(new, tmp_path / "new.csv"), spec, p.state, need_target=False)


# ------------------------------------------------------------------------------------------------
# Reading: pyarrow's types, pandas' empty-cell spellings, repeated names, a saved pandas index


def test_reader_types_empty_spellings_and_repeated_names(tmp_path):
    from mlptrain.data.frame import read_frame

    path = tmp_path / "f.csv"
    path.write_text("n,x,x,flag,when,word\n1,1.5,a,true,2024-01-01,NA\n2,,b,,2024-01-02,null\n3,2.5,c,false,2024-01-03,ok\n")
    f = read_frame(path, "csv")
    assert f.columns == ["n", "x", "x.1", "flag", "when", "word"]  # a repeated name gets .1, as pandas spells it
    assert f.dtypes == {"n": "int64", "x": "float64", "x.1": "str", "flag": "bool", "when": "date32[day]", "word": "str"}
    assert f.kinds == {"n": "int", "x": "float", "x.1": "text", "flag": "bool", "when": "temporal", "word": "text"}
    np.testing.assert_array_equal(f.data["x"], [1.5, np.nan, 2.5])
    assert list(f.data["flag"]) == [True, None, False] and list(f.data["word"]) == [None, None, "ok"]  # NA, null: empty
    kept = f.take(np.array([2, 0]))
    assert list(kept.rows) == [2, 0] and list(kept.data["n"]) == [3, 1]  # rows keep their place in the file
    with pytest.raises(DataError, match=r"column 'when' holds dates or durations \(date32\[day\]\)"):
        tabular.infer_kinds(f.select(["n", "when"]), [], str(path))


def test_reader_takes_a_bom_crlf_and_quoted_commas_and_newlines(tmp_path):
    from mlptrain.data.frame import read_frame

    path = tmp_path / "excel.csv"
    path.write_bytes(b'\xef\xbb\xbfa,b,label\r\n1,"x\r\ny",cat\r\n2,"z, w",dog\r\n\r\n')
    f = read_frame(path, "csv")
    assert f.columns == ["a", "b", "label"] and list(f.data["b"]) == ["x\r\ny", "z, w"] and len(f) == 2


def test_a_column_of_empty_cells_only_is_read_and_counted(tmp_path, write_config, capsys):
    from mlptrain.data.frame import read_frame

    path = tmp_path / "blank.csv"
    path.write_text("a,note,label\n" + "".join(f"{i},,{'xy'[i % 2]}\n" for i in range(20)))
    f = read_frame(path, "csv")
    assert list(f.data["note"]) == [None] * 20 and f.kinds["note"] == "text"
    with pytest.raises(DataError, match=r"20 missing values \(note: 20\); set data\.missing"):
        prep(name="csv", path=str(path), target="label")


def test_parquet_drops_a_saved_pandas_index_and_keeps_categories(tmp_path):
    from mlptrain.data.frame import read_frame

    frame = pd.DataFrame({"c": pd.Categorical(["a", "b", None]), "v": [1, 2, 3]}, index=[7, 8, 9])
    frame.to_parquet(tmp_path / "f.parquet")  # index=None: pandas stores the index as a column
    f = read_frame(tmp_path / "f.parquet", "parquet")
    assert f.columns == ["c", "v"] and f.dtypes == {"c": "category", "v": "int64"}
    assert list(f.data["c"]) == ["a", "b", None]
    assert tabular.infer_kinds(f, [], "f.parquet") == {"c": "categorical", "v": "numeric"}


def test_parquet_decimal_columns_are_numbers(tmp_path):
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlptrain.data.frame import read_frame

    price = pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("-2.25")], type=pa.decimal128(6, 2))
    pq.write_table(pa.table({"price": price}), tmp_path / "d.parquet")
    f = read_frame(tmp_path / "d.parquet", "parquet")
    assert f.kinds == {"price": "float"} and f.dtypes == {"price": "decimal128(6, 2)"}
    np.testing.assert_array_equal(f.data["price"], [1.5, np.nan, -2.25])
    assert tabular.infer_kinds(f, [], "d.parquet") == {"price": "numeric"}


@pytest.mark.parametrize("arrow_type", ["int8", "uint16", "int64", "float32", "float64", "bool"])
def test_columns_read_from_arrow_buffers_match_arrow_values(arrow_type):
    """Values come from Arrow's buffers (to_numpy would import pandas): check them, nulls and slice offsets included."""
    import pyarrow as pa

    from mlptrain.data.frame import _column

    rng = np.random.default_rng(1)
    raw = [None if rng.random() < 0.2 else (bool(v % 2) if arrow_type == "bool" else int(v)) for v in rng.integers(0, 100, 37)]
    for chunks in ([raw[:5], raw[5:]], [raw]):
        column = pa.chunked_array([pa.array(c, type=pa.type_for_alias(arrow_type)) for c in chunks]).slice(3)  # an offset
        values, _, kind = _column(column)
        expected = raw[3:]
        got = [None if (isinstance(v, float) and np.isnan(v)) else v for v in values.tolist()]
        assert got == expected
        assert kind == {"bool": "bool", "float32": "float", "float64": "float"}.get(arrow_type, "float")  # nulls: ints become floats
    whole, _, kind = _column(pa.chunked_array([pa.array([1, 2, 3], type=pa.int16())]))
    assert kind == ("int") and whole.dtype == np.int64 and whole.tolist() == [1, 2, 3]


def test_numeric_csv_reader_for_built_in_models_names_bad_and_empty_cells(tmp_path):
    """The reader `eval --data`/`predict` use for models trained on built-in data parses cells as the tabular path does."""
    from mlptrain.data.sources import read_csv

    path = tmp_path / "x.csv"
    pick = lambda header: (["target"], ["a", "b"])  # noqa: E731
    path.write_text("a,b,target\n1,2,0\n' 4 ',3,1\n")
    with pytest.raises(DataError, match=r"x\.csv: column 'a' row 3 has non-numeric value \"' 4 '\""):
        read_csv(path, pick)
    path.write_text("a,b,target\n1,,0\n2,NA,1\n")
    with pytest.raises(DataError, match=r"missing values in feature columns \('b': 2\)"):
        read_csv(path, pick)
    path.write_text("a,b,target\n1,2,0\n 2 ,3.5,1\n")
    table = read_csv(path, pick)
    assert table.x.tolist() == [[1.0, 2.0], [2.0, 3.5]] and table.y.tolist() == [0, 1]


# ------------------------------------------------------------------------------------------------
# A category is the same category in every file, however each file's reader typed its cells


def _churn(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"zip": rng.choice(["02134", "10001", "00501"], n), "age": rng.integers(18, 80, n),
                         "label": rng.choice(["stay", "leave"], n)})


def test_categorical_codes_keep_their_zeros_in_csv_and_match_a_text_parquet(tmp_path):
    train = write(_churn(), tmp_path / "train.csv")
    p = prep(name="csv", path=str(train), target="label", categorical=["zip"], split=NO_SPLIT)
    assert [c["categories"] for c in p.state["tabular"]["columns"] if c["name"] == "zip"] == [["00501", "02134", "10001"]]
    new = write(_churn().drop(columns="label"), tmp_path / "new.parquet")  # zip as text here
    with_text = write(_churn().drop(columns="label").assign(zip=lambda f: f.zip.astype(object)), tmp_path / "new.csv")
    for path in (new, with_text):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, _, _ = data.read_inputs(path, DataSpec(name="csv", path=str(train), target="label", categorical=["zip"]), p.state, False)
        assert not [w for w in caught if issubclass(w.category, DataWarning)]  # no 'categories unseen in training'
        assert x[:, columns_of(p, "zip")].sum() == len(x)


def test_a_true_false_column_with_stray_spaces_is_bool_and_matches_a_clean_one(tmp_path):
    frame = _churn().assign(autopay=lambda f: np.where(np.arange(len(f)) % 2 == 0, " true", "false"))
    p = prep(name="csv", path=str(write(frame, tmp_path / "train.csv")), target="label", split=NO_SPLIT)
    assert {c["name"]: c["kind"] for c in p.state["tabular"]["columns"]}["autopay"] == "bool"
    clean = write(frame.drop(columns="label").assign(autopay=lambda f: f.autopay.str.strip() == "true"), tmp_path / "new.csv")
    x, _, _ = data.read_inputs(clean, DataSpec(name="csv", path="x.csv", target="label"), p.state, False)
    assert x[:, columns_of(p, "autopay")].reshape(-1).tolist() == [1.0, 0.0] * (len(frame) // 2)
    assert tabular.category_key(True) == tabular.category_key(" TRUE ") == "true"  # forced categorical: one key too


def test_a_csv_that_is_not_utf8_is_one_line_naming_the_column_and_row(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("plan,age,label\nbasic,30,stay\ncafé,41,leave\n".encode("latin-1"))
    with pytest.raises(DataError) as exc:
        prep(name="csv", path=str(path), target="label", split=NO_SPLIT)
    assert str(exc.value) == (f"{path}: column 'plan' is not UTF-8 text (row 3: b'caf\\xe9'); save the file as UTF-8 "
                              "(e.g. in a spreadsheet: CSV UTF-8), or leave the column out with data.features")


def test_an_id_saved_as_the_parquet_index_is_the_id(tmp_path, write_config):
    frame = _churn().assign(id=[f"{i:05d}" for i in range(40)]).set_index("id")
    frame.to_parquet(tmp_path / "train.parquet")
    cfg = write_config(f"data: {{name: parquet, path: {tmp_path / 'train.parquet'}, target: label, id: id}}\n"
                       "model: {hidden: [4]}\ntrain: {epochs: 1}\n")
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    frame.drop(columns="label").to_parquet(tmp_path / "new.parquet")
    assert main(["predict", str(tmp_path / "run" / "checkpoints" / "best.pt"), str(tmp_path / "new.parquet"), "-o", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as f:
        assert [r["id"] for r in csv.DictReader(f)][:2] == ["00000", "00001"]
    frame.reset_index(drop=True).to_parquet(tmp_path / "plain.parquet")  # any other saved index is still no feature
    assert "__index_level_0__" not in tabular.read_frame(tmp_path / "plain.parquet", "parquet").columns


def test_uint64_beyond_int64_reads_as_large_numbers_not_negative_ones(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"u": pa.array([1, 2**63 + 5, 3, 2**64 - 1], pa.uint64())}), tmp_path / "u.parquet")
    values = tabular.read_frame(tmp_path / "u.parquet", "parquet")["u"].values
    assert values.min() >= 1 and values.max() == pytest.approx(2.0**64)


def test_a_value_beyond_float32_is_an_error_not_an_inf(tmp_path):
    frame = _churn().astype({"age": float})
    frame.loc[5, "age"] = 5e38
    with pytest.raises(DataError) as exc:
        prep(name="csv", path=str(write(frame, tmp_path / "t.csv")), target="label", split=NO_SPLIT)
    assert str(exc.value).startswith(f"{tmp_path / 't.csv'} (train): column 'age' row 7 is 5e+38, beyond float32's range")


def test_an_empty_column_is_named_and_a_bad_training_cell_names_the_file(tmp_path):
    frame = _churn().assign(notes=None)
    path = write(frame, tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"t.csv \(train\): column 'notes' is empty in every training row; leave it out with data.features"):
        prep(name="csv", path=str(path), target="label", split=NO_SPLIT, missing="impute_mean")
    frame = _churn().astype({"age": float})
    frame.loc[3, "age"] = np.inf
    with pytest.raises(DataError, match=r"t2.csv \(train\): column 'age' row 5 is infinite"):
        prep(name="csv", path=str(write(frame, tmp_path / "t2.csv")), target="label", split=NO_SPLIT, missing="impute_mean")


def test_many_integer_target_values_taken_for_classes_are_said_at_fit(tmp_path, write_config, capsys):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=300), "score": np.tile(np.arange(20, 50), 10)})
    path = write(frame, tmp_path / "scores.csv")
    cfg = write_config(f"data: {{name: csv, path: {path}, target: score}}\nmodel: {{hidden: [4]}}\ntrain: {{epochs: 1}}\n")
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "a")]) == 0
    assert ("warning: data.target: 30 integer values (20 to 49) are taken for classes (task: auto); set task: regression "
            "if they are quantities") in capsys.readouterr().err
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "b"), "--set", "task=multiclass"]) == 0
    assert "integer values" not in capsys.readouterr().err  # said by the config: nothing to warn about


@pytest.mark.parametrize("sep, suffix", [(";", ".csv"), ("\t", ".tsv"), ("|", ".csv"), (",", ".csv")])
def test_the_separator_is_read_off_the_header(tmp_path, sep, suffix):
    path = tmp_path / f"d{suffix}"
    _churn().to_csv(path, sep=sep, index=False)
    p = prep(name="csv", path=str(path), target="label", categorical=["zip"], split=NO_SPLIT)
    assert p.state["feature_names"] == ["zip", "age"] and len(p.train.x) == 40
    assert tabular.kind_of_path(path) == "csv"
    quoted = tmp_path / "q.csv"  # a separator inside a quoted header name does not count
    quoted.write_text('"a;b",c,label\n1,2,x\n3,4,y\n')
    assert tabular.read_frame(quoted, "csv").columns == ["a;b", "c", "label"]


def test_numbers_typed_with_separators_or_symbols_are_said_to_be_text(tmp_path):
    frame = _churn().assign(income=[f"{1000 + 37 * i:,}" for i in range(40)])
    with pytest.warns(DataWarning, match=r"column 'income' looks like numbers written with separators or symbols \('1,000'\)"):
        prep(name="csv", path=str(write(frame, tmp_path / "t.csv")), target="label", split=NO_SPLIT)
    frame = _churn().astype({"age": object})
    frame.loc[::2, "age"] = "1,5"
    with pytest.raises(DataError, match=r"non-numeric value '1,5'.*; a decimal comma\? write numbers with a decimal point"):
        prep(name="csv", path=str(write(frame, tmp_path / "t2.csv")), target="label", split=NO_SPLIT)


def test_a_pandas_categorical_of_integers_in_parquet_is_categorical(tmp_path):
    frame = _churn().assign(size_code=pd.Categorical(np.arange(40) % 3 + 1))
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    p = prep(name="parquet", path=str(tmp_path / "t.parquet"), target="label", split=NO_SPLIT)
    assert [n for n in p.state["tabular"]["encoded_names"] if n.startswith("size_code")] == ["size_code=1", "size_code=2", "size_code=3"]


def test_labels_that_differ_only_in_case_are_said_to_be_separate_classes(tmp_path):
    frame = _churn().assign(label=["Yes", "yes", "No"] * 13 + ["no"])
    with pytest.warns(DataWarning, match=r"classes 'No', 'no'; 'Yes', 'yes' differ only in case, so they are separate classes"):
        p = prep(name="csv", path=str(write(frame, tmp_path / "t.csv")), target="label", split=NO_SPLIT)
    assert p.state["class_names"] == ["No", "Yes", "no", "yes"]


def test_several_text_target_columns_get_a_message_that_names_the_two_shapes(tmp_path):
    frame = _churn().assign(tag_a=["yes", "no"] * 20, tag_b=["no", "yes"] * 20).drop(columns="label")
    with pytest.raises(DataError, match=r"labels such as 'yes'; several target columns are multilabel \(each 0/1"):
        prep(name="csv", path=str(write(frame, tmp_path / "t.csv")), target=["tag_a", "tag_b"], split=NO_SPLIT)


def test_a_parquet_column_of_raw_bytes_is_refused_by_name(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"blob": pa.array([b"\x00\x01", b"ok"], pa.binary()), "label": ["a", "b"]}), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"column 'blob' holds raw bytes \(binary\), not numbers or text; leave it out with data.features"):
        tabular.read_frame(tmp_path / "b.parquet", "parquet")
