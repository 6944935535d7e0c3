"""Data: built-in sets, files, splits, scaling, stored preprocessing and the errors users see."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlptrain import data
from mlptrain.config import DataSpec, validate_dict
from mlptrain.data import sources
from mlptrain.data.sources import synthetic
from mlptrain.errors import ConfigError, DataError, DataWarning

SYNTHETIC_TASKS = {
    "xor": "binary",
    "moons": "binary",
    "circles": "binary",
    "spirals": "multiclass",
    "blobs": "multiclass",
    "sine": "regression",
}
# name -> (task, rows, features, classes)
BUNDLED = {
    "digits": ("multiclass", 1797, 64, 10),
    "iris": ("multiclass", 150, 4, 3),
    "wine": ("multiclass", 178, 13, 3),
    "breast_cancer": ("binary", 569, 30, 2),
    "diabetes": ("regression", 442, 10, 0),
}
NO_SPLIT = {"val": 0.0, "test": 0.0}


def prep(**kw) -> data.Prepared:
    task = kw.pop("task", "auto")
    state = kw.pop("state", None)
    return data.prepare(DataSpec(**kw), task, state)


def sizes(p: data.Prepared) -> tuple[int, int, int]:
    return tuple(0 if s is None else len(s.x) for s in (p.train, p.val, p.test))


def rows(x: np.ndarray) -> set[tuple[float, ...]]:
    return {tuple(r) for r in np.asarray(x).tolist()}


def write_csv(path: Path, header: list[str], body: list[list[object]]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in body]
    path.write_text("\n".join(lines) + "\n")
    return path


def labelled_csv(path: Path, n: int = 40, labels=("cat", "dog", "bird"), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    body = [[round(float(rng.normal()), 4), labels[i % len(labels)], round(float(rng.normal()) * 10, 4)] for i in range(n)]
    return write_csv(path, ["a", "label", "b"], body)


def check_layout(p: data.Prepared) -> None:
    for split in (p.train, p.val, p.test):
        if split is None:
            continue
        assert split.x.dtype == np.float32 and split.x.shape[1] == p.in_features
        if p.task == "multiclass":
            assert split.y.dtype == np.int64 and split.y.ndim == 1
            assert split.y.min() >= 0 and split.y.max() < p.out_features
        elif p.task == "binary":
            assert split.y.dtype == np.float32 and split.y.shape == (len(split.x), 1)
            assert set(np.unique(split.y)) <= {0.0, 1.0}
        else:
            assert split.y.dtype == np.float32 and split.y.shape == (len(split.x), p.out_features)


# ------------------------------------------------------------------------------------------
# Built-in sets


@pytest.mark.parametrize("name", sorted(SYNTHETIC_TASKS))
def test_synthetic_sets_prepare_with_their_task(name):
    p = prep(name=name, n_samples=200)
    assert p.task == SYNTHETIC_TASKS[name]
    assert sum(sizes(p)) == 200
    assert sizes(p) == (140, 30, 30)  # default 0.15 / 0.15 fractions
    assert p.in_features == (1 if name == "sine" else 2)
    expected_out = {"binary": 1, "multiclass": 3, "regression": 1}[p.task]
    assert p.out_features == expected_out
    check_layout(p)
    if p.task != "regression":
        # every class shows up in training
        assert len(np.unique(p.train.y)) == (2 if p.task == "binary" else 3)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_sets_prepare_with_their_task(name):
    task, total, features, classes = BUNDLED[name]
    p = prep(name=name)
    assert p.task == task
    assert sum(sizes(p)) == total
    assert p.in_features == features
    assert len(p.state["feature_names"]) == features
    if classes:
        assert len(p.state["class_names"]) == classes
        assert p.out_features == (1 if task == "binary" else classes)
    else:
        assert p.state["class_names"] == [] and p.out_features == 1
    check_layout(p)


def test_bundled_class_names_are_the_real_names():
    p = prep(name="iris")
    assert p.state["class_names"] == ["setosa", "versicolor", "virginica"]
    p = prep(name="breast_cancer")
    assert sorted(p.state["class_names"]) == ["benign", "malignant"]


@pytest.mark.parametrize("name", sorted(SYNTHETIC_TASKS))
def test_synthetic_n_samples_noise_and_seed_change_the_data(name):
    base = dict(name=name, n_samples=100, noise=0.1, seed=0)
    a = synthetic(DataSpec(**base))
    assert a.x.shape[0] == 100 and len(a.y) == 100
    again = synthetic(DataSpec(**base))
    np.testing.assert_array_equal(a.x, again.x)
    np.testing.assert_array_equal(a.y, again.y)
    assert synthetic(DataSpec(**{**base, "n_samples": 60})).x.shape[0] == 60

    def differs(other) -> bool:  # sine's noise is on the target, the classification sets' on x
        return not (np.array_equal(a.x, other.x) and np.array_equal(a.y, other.y))

    assert differs(synthetic(DataSpec(**{**base, "seed": 1})))
    assert differs(synthetic(DataSpec(**{**base, "noise": 0.3})))


def test_xor_without_noise_is_the_four_corners_with_xor_labels():
    t = synthetic(DataSpec(name="xor", n_samples=64, noise=0.0))
    assert set(np.unique(t.x)) == {-1.0, 1.0}
    expected = (t.x[:, 0] > 0) ^ (t.x[:, 1] > 0)
    np.testing.assert_array_equal(t.y.astype(bool), expected)
    assert len(rows(t.x)) == 4


def test_prepare_without_split_or_scaling_returns_the_generated_rows():
    spec = DataSpec(name="moons", n_samples=80, split=NO_SPLIT, scale="none")
    p = data.prepare(spec)
    raw = synthetic(spec)
    assert p.val is None and p.test is None
    np.testing.assert_array_equal(p.train.x, raw.x)
    np.testing.assert_array_equal(p.train.y[:, 0], raw.y.astype(np.float32))


def test_blobs_n_classes_and_n_features():
    p = prep(name="blobs", n_samples=300, n_classes=5, n_features=7)
    assert p.task == "multiclass"
    assert p.in_features == 7
    assert p.out_features == 5
    assert p.state["class_names"] == ["0", "1", "2", "3", "4"]
    assert set(np.unique(p.train.y)) == set(range(5))


def test_spirals_n_classes():
    p = prep(name="spirals", n_samples=120, n_classes=4)
    assert p.out_features == 4
    assert set(np.unique(np.concatenate([p.train.y, p.val.y, p.test.y]))) == {0, 1, 2, 3}


# ------------------------------------------------------------------------------------------
# Splits


def test_split_fractions_give_the_right_sizes():
    p = prep(name="moons", n_samples=200, split={"val": 0.2, "test": 0.1})
    n_train, n_val, n_test = sizes(p)
    assert n_test == 20
    assert abs(n_val - 40) <= 1  # val is a fraction of all rows, not of what the test split left
    assert n_train + n_val + n_test == 200


@pytest.mark.parametrize("val,test", [(0.0, 0.2), (0.25, 0.0), (0.0, 0.0)])
def test_zero_fraction_means_no_split(val, test):
    p = prep(name="moons", n_samples=100, split={"val": val, "test": test})
    assert (p.val is None) == (val == 0)
    assert (p.test is None) == (test == 0)
    assert sum(sizes(p)) == 100


def test_splits_are_disjoint_and_cover_every_row():
    spec = DataSpec(name="circles", n_samples=150, scale="none", split={"val": 0.2, "test": 0.2, "seed": 3})
    p = data.prepare(spec)
    all_rows = rows(synthetic(spec).x)
    tr, va, te = rows(p.train.x), rows(p.val.x), rows(p.test.x)
    assert len(all_rows) == 150  # continuous data: rows are unique, so sets identify them
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == all_rows


def test_split_seed_changes_which_rows_land_where():
    def test_rows(seed: int) -> set:
        return rows(prep(name="moons", n_samples=120, scale="none", split={"seed": seed}).test.x)

    assert test_rows(0) == test_rows(0)
    assert test_rows(0) != test_rows(1)


def test_split_seed_is_independent_of_the_data_seed():
    a = prep(name="moons", n_samples=120, scale="none", seed=0, split={"seed": 5})
    b = prep(name="moons", n_samples=120, scale="none", seed=0, split={"seed": 5})
    np.testing.assert_array_equal(a.val.x, b.val.x)


def _class_counts(y: np.ndarray, k: int) -> list[int]:
    return np.bincount(y, minlength=k).tolist()


def test_stratify_keeps_class_proportions():
    p = prep(name="iris", split={"val": 0.2, "test": 0.2, "stratify": True})
    assert _class_counts(p.test.y, 3) == [10, 10, 10]
    assert _class_counts(p.val.y, 3) == [10, 10, 10]
    assert _class_counts(p.train.y, 3) == [30, 30, 30]


def test_stratify_keeps_rare_class_share_in_every_split(tmp_path):
    body = [[i, "rare" if i % 10 == 0 else "common"] for i in range(200)]
    csv = write_csv(tmp_path / "d.csv", ["f", "y"], body)
    for seed in range(3):
        p = prep(name="csv", path=str(csv), target="y", split={"val": 0.25, "test": 0.25, "seed": seed})
        names = p.state["class_names"]
        rare = names.index("rare")
        for split in (p.train, p.val, p.test):
            share = float(np.mean(split.y[:, 0] == rare))
            assert share == pytest.approx(0.1, abs=0.011)


def test_a_class_of_one_row_stays_in_training_and_the_others_stay_stratified(tmp_path):
    body = [[i, "rare" if i == 0 else ("a" if i % 3 == 0 else "b")] for i in range(120)]
    csv = write_csv(tmp_path / "d.csv", ["f", "y"], body)
    with pytest.warns(DataWarning, match=r"d.csv: class 'rare' has a single row; it stays in the training split"):
        p = prep(name="csv", path=str(csv), target="y", split={"val": 0.25, "test": 0.25, "seed": 0})
    names = p.state["class_names"]
    assert int(np.sum(p.train.y == names.index("rare"))) == 1
    for split in (p.train, p.val, p.test):  # 'a' is 39 of the 119 other rows: its share everywhere
        share = float(np.mean(split.y == names.index("a")) / np.mean(split.y != names.index("rare")))
        assert share == pytest.approx(39 / 119, abs=0.02)


def test_without_stratify_proportions_drift():
    counts = [
        _class_counts(prep(name="iris", split={"val": 0.2, "test": 0.2, "stratify": False, "seed": s}).test.y, 3)
        for s in range(5)
    ]
    assert any(c != [10, 10, 10] for c in counts)


# ------------------------------------------------------------------------------------------
# Scaling


def _raw_and_scaled(scale: str, **kw):
    base = dict(name="blobs", n_samples=300, n_features=3, split={"val": 0.2, "test": 0.2}, **kw)
    return prep(**base, scale="none"), prep(**base, scale=scale)


def test_standard_scaling_is_fitted_on_train_only():
    raw, p = _raw_and_scaled("standard")
    np.testing.assert_allclose(p.train.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(p.train.x.std(axis=0), 1.0, atol=1e-4)
    scaler = p.state["scaler"]
    assert scaler["kind"] == "standard"
    np.testing.assert_allclose(scaler["shift"], raw.train.x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scaler["scale"], raw.train.x.std(axis=0), rtol=1e-5)
    # the fit used neither the validation rows nor all rows
    all_x = np.concatenate([raw.train.x, raw.val.x, raw.test.x])
    assert not np.allclose(scaler["shift"], all_x.mean(axis=0), rtol=0, atol=1e-6)
    assert not np.allclose(p.val.x.mean(axis=0), 0.0, atol=1e-4)
    # the same transform applies to the held-out splits
    np.testing.assert_allclose(p.val.x, (raw.val.x - scaler["shift"]) / np.asarray(scaler["scale"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.test.x, (raw.test.x - scaler["shift"]) / np.asarray(scaler["scale"]), rtol=1e-5, atol=1e-5)


def test_minmax_scaling_maps_train_to_unit_interval():
    raw, p = _raw_and_scaled("minmax")
    assert p.state["scaler"]["kind"] == "minmax"
    np.testing.assert_allclose(p.train.x.min(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(p.train.x.max(axis=0), 1.0, atol=1e-6)
    lo, span = raw.train.x.min(axis=0), raw.train.x.max(axis=0) - raw.train.x.min(axis=0)
    np.testing.assert_allclose(p.val.x, (raw.val.x - lo) / span, rtol=1e-5, atol=1e-5)


def test_no_scaling_keeps_raw_features():
    spec = DataSpec(name="blobs", n_samples=100, scale="none", split=NO_SPLIT)
    p = data.prepare(spec)
    assert p.state["scaler"] == {"kind": "none"}
    np.testing.assert_array_equal(p.train.x, synthetic(spec).x)


@pytest.mark.parametrize("scale", ["standard", "minmax"])
def test_constant_column_is_not_divided_by_zero(tmp_path, scale):
    body = [[i * 0.5, 7.0, i % 2] for i in range(30)]
    csv = write_csv(tmp_path / "c.csv", ["a", "const", "y"], body)
    p = prep(name="csv", path=str(csv), target="y", scale=scale)
    for split in (p.train, p.val, p.test):
        assert np.isfinite(split.x).all()
        np.testing.assert_array_equal(split.x[:, 1], 0.0)
    assert p.state["scaler"]["scale"][1] == 1.0


def _json_roundtrip(state: dict) -> dict:
    return json.loads(json.dumps(state))


@pytest.mark.parametrize(
    "kw",
    [
        dict(name="moons", n_samples=100),
        dict(name="iris", scale="minmax"),
        dict(name="sine", n_samples=100),
        dict(name="diabetes", scale="none", scale_target=False),
    ],
    ids=["binary", "multiclass", "regression", "raw-regression"],
)
def test_state_is_plain_json_data(kw):
    state = prep(**kw).state
    assert _json_roundtrip(state) == state
    for key in ("task", "feature_names", "target_names", "class_names", "scaler", "target_mean", "target_std", "out_features"):
        assert key in state


@pytest.mark.parametrize(
    "kw",
    [
        dict(name="moons", n_samples=150, split={"val": 0.2, "test": 0.2, "seed": 4}),
        dict(name="wine", scale="minmax"),
        dict(name="sine", n_samples=150),
    ],
    ids=["binary", "multiclass", "regression"],
)
def test_stored_state_reproduces_the_same_arrays(kw):
    first = prep(**kw)
    state = _json_roundtrip(first.state)
    again = prep(**kw, state=state)
    assert again.task == first.task
    for a, b in ((first.train, again.train), (first.val, again.val), (first.test, again.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        assert a.y.dtype == b.y.dtype


def test_stored_state_wins_over_the_spec_scaling():
    first = prep(name="moons", n_samples=100, scale="standard")
    again = prep(name="moons", n_samples=100, scale="none", state=_json_roundtrip(first.state))
    np.testing.assert_array_equal(first.val.x, again.val.x)


# ------------------------------------------------------------------------------------------
# Regression targets


def test_regression_targets_are_standardized_on_train():
    raw = prep(name="sine", n_samples=200, scale_target=False)
    p = prep(name="sine", n_samples=200)
    assert raw.state["target_mean"] is None and raw.state["target_std"] is None
    np.testing.assert_allclose(p.train.y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(p.train.y.std(axis=0), 1.0, atol=1e-4)
    mean, std = np.asarray(p.state["target_mean"]), np.asarray(p.state["target_std"])
    np.testing.assert_allclose(mean, raw.train.y.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, raw.train.y.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(p.val.y, (raw.val.y - mean) / std, rtol=1e-5, atol=1e-6)
    # scale_target false keeps the raw sine values
    assert raw.train.y.min() < -0.5 and raw.train.y.max() > 0.5
    assert abs(float(raw.train.y.mean())) < 0.2 and not np.isclose(raw.train.y.std(), 1.0, atol=1e-3)


def test_regression_scale_target_false_keeps_raw_values():
    spec = DataSpec(name="diabetes", scale_target=False, split=NO_SPLIT)
    p = data.prepare(spec)
    from sklearn.datasets import load_diabetes

    np.testing.assert_allclose(p.train.y[:, 0], load_diabetes().target.astype(np.float32))


# ------------------------------------------------------------------------------------------
# CSV, NPZ, NPY


def test_csv_target_by_name_features_all_others_and_sorted_class_names(tmp_path):
    csv = labelled_csv(tmp_path / "d.csv", n=60)
    p = prep(name="csv", path=str(csv), target="label", split=NO_SPLIT, scale="none")
    assert p.task == "multiclass"
    assert p.state["feature_names"] == ["a", "b"]
    assert p.state["target_names"] == ["label"]
    assert p.state["class_names"] == ["bird", "cat", "dog"]
    import pandas as pd

    frame = pd.read_csv(csv)
    np.testing.assert_allclose(p.train.x, frame[["a", "b"]].to_numpy(np.float32))
    expected = frame["label"].map({"bird": 0, "cat": 1, "dog": 2}).to_numpy()
    np.testing.assert_array_equal(p.train.y, expected)


def test_csv_features_by_name(tmp_path):
    csv = labelled_csv(tmp_path / "d.csv")
    p = prep(name="csv", path=str(csv), target="label", features=["b"])
    assert p.in_features == 1
    assert p.state["feature_names"] == ["b"]


def test_csv_string_binary_labels(tmp_path):
    body = [[i, "yes" if i % 3 else "no"] for i in range(30)]
    csv = write_csv(tmp_path / "b.csv", ["f", "answer"], body)
    p = prep(name="csv", path=str(csv), target="answer", split=NO_SPLIT, scale="none")
    assert p.task == "binary"
    assert p.state["class_names"] == ["no", "yes"]
    assert p.out_features == 1
    np.testing.assert_array_equal(p.train.y[:, 0], [1.0 if i % 3 else 0.0 for i in range(30)])


def test_csv_numeric_targets_infer_task(tmp_path):
    rng = np.random.default_rng(0)
    reg = write_csv(tmp_path / "r.csv", ["f", "y"], [[i, round(float(rng.normal()), 5)] for i in range(50)])
    assert prep(name="csv", path=str(reg), target="y").task == "regression"
    cls = write_csv(tmp_path / "c.csv", ["f", "y"], [[i, i % 4] for i in range(50)])
    p = prep(name="csv", path=str(cls), target="y")
    assert p.task == "multiclass"
    assert p.state["class_names"] == ["0", "1", "2", "3"]


def test_csv_task_override(tmp_path):
    cls = write_csv(tmp_path / "c.csv", ["f", "y"], [[i, i % 4] for i in range(50)])
    p = prep(name="csv", path=str(cls), target="y", task="regression")
    assert p.task == "regression" and p.out_features == 1


def test_csv_multilabel_with_a_list_of_targets(tmp_path):
    body = [[i, i % 2, (i // 2) % 2, int(i % 3 == 0)] for i in range(40)]
    csv = write_csv(tmp_path / "m.csv", ["f", "l1", "l2", "l3"], body)
    p = prep(name="csv", path=str(csv), target=["l1", "l2", "l3"], split=NO_SPLIT)
    assert p.task == "multilabel"
    assert p.out_features == 3
    assert p.state["class_names"] == ["l1", "l2", "l3"]
    assert p.state["feature_names"] == ["f"]
    assert p.train.y.shape == (40, 3) and p.train.y.dtype == np.float32
    np.testing.assert_array_equal(p.train.y, np.asarray([r[1:] for r in body], np.float32))


def test_csv_multi_output_regression(tmp_path):
    rng = np.random.default_rng(1)
    body = [[i, round(float(rng.normal()), 4), round(float(rng.normal()), 4)] for i in range(40)]
    csv = write_csv(tmp_path / "r.csv", ["f", "t1", "t2"], body)
    p = prep(name="csv", path=str(csv), target=["t1", "t2"])
    assert p.task == "regression" and p.out_features == 2
    assert len(p.state["target_mean"]) == 2


def test_csv_separate_split_files(tmp_path):
    train = labelled_csv(tmp_path / "train.csv", n=30, seed=0)
    val = labelled_csv(tmp_path / "val.csv", n=9, seed=1)
    test = labelled_csv(tmp_path / "test.csv", n=12, seed=2)
    p = prep(name="csv", train_path=str(train), val_path=str(val), test_path=str(test), target="label", scale="none")
    assert sizes(p) == (30, 9, 12)  # split fractions do not apply to files given per split
    import pandas as pd

    np.testing.assert_allclose(p.test.x, pd.read_csv(test)[["a", "b"]].to_numpy(np.float32))


def test_csv_train_file_alone_is_split_by_fraction(tmp_path):
    train = labelled_csv(tmp_path / "train.csv", n=40)
    test = labelled_csv(tmp_path / "test.csv", n=10, seed=3)
    p = prep(name="csv", train_path=str(train), test_path=str(test), target="label", split={"val": 0.25, "test": 0.5})
    assert sizes(p) == (30, 10, 10)


def test_csv_split_files_are_matched_by_column_name(tmp_path):
    train = labelled_csv(tmp_path / "train.csv", n=30)
    import pandas as pd

    frame = pd.read_csv(labelled_csv(tmp_path / "v.csv", n=9, seed=1))
    val = tmp_path / "val.csv"
    frame[["b", "label", "a"]].to_csv(val, index=False)  # same columns, another order
    p = prep(name="csv", train_path=str(train), val_path=str(val), target="label", scale="none")
    np.testing.assert_allclose(p.val.x, frame[["a", "b"]].to_numpy(np.float32))


def test_csv_split_file_missing_a_training_column(tmp_path):
    train = labelled_csv(tmp_path / "train.csv", n=30)
    val = write_csv(tmp_path / "val.csv", ["a", "label"], [[0.5, "cat"], [0.1, "dog"]])
    with pytest.raises(DataError, match=r"val\.csv.*feature column 'b' not found"):
        prep(name="csv", train_path=str(train), val_path=str(val), target="label")


def test_npz_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    p = prep(name="npz", path=str(tmp_path / "d.npz"), split=NO_SPLIT, scale="none")
    assert p.task == "binary" and p.in_features == 3
    assert p.state["feature_names"] == ["x0", "x1", "x2"]
    np.testing.assert_allclose(p.train.x, x.astype(np.float32))
    np.testing.assert_array_equal(p.train.y[:, 0], y.astype(np.float32))


def test_npz_regression_and_separate_files(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("train", 50), ("val", 10), ("test", 7)):
        x = rng.normal(size=(n, 2))
        np.savez(tmp_path / f"{name}.npz", x=x, y=x.sum(axis=1) + 0.5)
    p = prep(
        name="npz", train_path=str(tmp_path / "train.npz"), val_path=str(tmp_path / "val.npz"),
        test_path=str(tmp_path / "test.npz"),
    )
    assert p.task == "regression"
    assert sizes(p) == (50, 10, 7)


def test_npy_cannot_train_but_serves_predict(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 1] > 0).astype(int))
    np.save(tmp_path / "x.npy", x[:5])
    spec = DataSpec(name="npz", path=str(tmp_path / "d.npz"))
    p = data.prepare(spec)
    with pytest.raises(DataError, match="'x' and 'y'"):
        data.prepare(DataSpec(name="npz", path=str(tmp_path / "x.npy")))
    xs, ys, _ = data.read_inputs(tmp_path / "x.npy", spec, p.state, need_target=False)
    assert ys is None
    np.testing.assert_allclose(xs, data.apply_scaler(x[:5].astype(np.float32), p.state["scaler"]))


def test_read_inputs_csv_without_target_for_predict(tmp_path):
    csv = labelled_csv(tmp_path / "d.csv", n=40)
    spec = DataSpec(name="csv", path=str(csv), target="label", split=NO_SPLIT)
    p = data.prepare(spec)
    import pandas as pd

    frame = pd.read_csv(csv)
    inputs = tmp_path / "new.csv"
    frame[["b", "a"]].to_csv(inputs, index=False)  # no label, columns in another order
    x, y, table = data.read_inputs(inputs, spec, p.state, need_target=False)
    assert y is None
    np.testing.assert_allclose(x, p.train.x, rtol=1e-6)
    with pytest.raises(DataError, match="label"):
        data.read_inputs(inputs, spec, p.state, need_target=True)
    # with the target present it is encoded with the training classes
    x2, y2, _ = data.read_inputs(csv, spec, p.state, need_target=True)
    np.testing.assert_array_equal(y2, p.train.y)


def test_read_inputs_for_a_builtin_model(tmp_path):
    spec = DataSpec(name="iris", split=NO_SPLIT, scale="none")
    p = data.prepare(spec)
    import pandas as pd

    frame = pd.DataFrame(p.train.x[:6], columns=p.state["feature_names"])
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    x, y, _ = data.read_inputs(path, spec, p.state, need_target=False)
    assert y is None
    np.testing.assert_allclose(x, p.train.x[:6], rtol=1e-6)


def test_read_inputs_takes_rows_of_the_models_shape_only(tmp_path):
    """An NPZ whose x has as many values per row in another shape is refused, not flattened and scored;
    a model trained on [N, 2, 3] rows takes that shape (or its flat rows)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    np.savez(tmp_path / "flat.npz", x=x, y=(x[:, 0] > 0).astype(int))
    flat = DataSpec(name="npz", path=str(tmp_path / "flat.npz"))
    p = data.prepare(flat)
    np.savez(tmp_path / "cube.npz", x=x[:4].reshape(4, 1, 2))
    with pytest.raises(DataError, match=r"cube\.npz: x has shape \[N, 1, 2\].*x of shape \[N, 2\]"):
        data.read_inputs(tmp_path / "cube.npz", flat, p.state, need_target=False)

    cubes = rng.normal(size=(40, 2, 3))
    np.savez(tmp_path / "cubes.npz", x=cubes, y=(cubes[:, 0, 0] > 0).astype(int))
    shaped = DataSpec(name="npz", path=str(tmp_path / "cubes.npz"))
    p = data.prepare(shaped)
    assert p.state["row_shape"] == [2, 3] and p.in_features == 6
    np.savez(tmp_path / "same.npz", x=cubes[:5])
    np.savez(tmp_path / "flattened.npz", x=cubes[:5].reshape(5, 6))
    np.savez(tmp_path / "turned.npz", x=cubes[:5].reshape(5, 3, 2))
    same = data.read_inputs(tmp_path / "same.npz", shaped, p.state, need_target=False)[0]
    np.testing.assert_array_equal(same, data.read_inputs(tmp_path / "flattened.npz", shaped, p.state, need_target=False)[0])
    with pytest.raises(DataError, match=r"turned\.npz: x has shape \[N, 3, 2\].*\[N, 6\] or \[N, 2, 3\] as in training"):
        data.read_inputs(tmp_path / "turned.npz", shaped, p.state, need_target=False)


def test_a_csv_for_a_builtin_model_is_read_by_name_by_position_or_without_header_never_losing_a_row(tmp_path):
    spec = DataSpec(name="moons", n_samples=50, split=NO_SPLIT)
    p = data.prepare(spec)
    rows = "0.5,0.25\n1.0,-0.25\n-1.5,2.0\n"
    (tmp_path / "named.csv").write_text("x0,x1\n" + rows)
    (tmp_path / "reversed.csv").write_text("x1,x0\n" + "".join(",".join(r.split(",")[::-1]) + "\n" for r in rows.split()))
    (tmp_path / "bare.csv").write_text(rows)
    (tmp_path / "other.csv").write_text("foo,bar\n" + rows)
    (tmp_path / "half.csv").write_text("x0,bar\n" + rows)
    named = data.read_inputs(tmp_path / "named.csv", spec, p.state, need_target=False)[0]
    assert len(named) == 3
    np.testing.assert_array_equal(data.read_inputs(tmp_path / "reversed.csv", spec, p.state, need_target=False)[0], named)
    with pytest.warns(DataWarning, match=r"bare\.csv: no header row \(the first row is numbers\): its 2 columns are read as "
                                         r"the model's features x0, x1, in that order"):
        np.testing.assert_array_equal(data.read_inputs(tmp_path / "bare.csv", spec, p.state, need_target=False)[0], named)
    with pytest.warns(DataWarning, match=r"other\.csv: columns foo, bar are not the model's feature names; read by position as x0, x1"):
        np.testing.assert_array_equal(data.read_inputs(tmp_path / "other.csv", spec, p.state, need_target=False)[0], named)
    with pytest.raises(DataError, match=r"half\.csv: names some of the model's features \(x0\) but not x1"):
        data.read_inputs(tmp_path / "half.csv", spec, p.state, need_target=False)
    with pytest.raises(DataError, match=r"bare\.csv: has no header row .*eval --data needs one naming the columns: x0, x1, y"):
        data.read_inputs(tmp_path / "bare.csv", spec, p.state, need_target=True)
    (tmp_path / "three.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"three\.csv: has no header row .* and 3 columns, the model was trained on 2"):
        data.read_inputs(tmp_path / "three.csv", spec, p.state, need_target=False)


def test_read_inputs_rejects_unknown_kind_and_width(tmp_path):
    spec = DataSpec(name="moons", n_samples=50)
    p = data.prepare(spec)
    other = tmp_path / "x.txt"
    other.write_text("1,2\n")
    with pytest.raises(DataError, match="x.txt"):
        data.read_inputs(other, spec, p.state, need_target=False)
    np.save(tmp_path / "wide.npy", np.zeros((3, 5)))
    with pytest.raises(DataError, match=r"wide\.npy.*5 feature"):
        data.read_inputs(tmp_path / "wide.npy", spec, p.state, need_target=False)


# ------------------------------------------------------------------------------------------
# Errors


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="nope.csv"):
        prep(name="csv", path=str(missing), target="y")
    with pytest.raises(DataError, match="nope.npz"):
        prep(name="npz", path=str(tmp_path / "nope.npz"))


def test_missing_target_column(tmp_path):
    csv = labelled_csv(tmp_path / "d.csv")
    with pytest.raises(DataError, match=r"d\.csv.*target column 'species'"):
        prep(name="csv", path=str(csv), target="species")


def test_unknown_feature_column(tmp_path):
    csv = labelled_csv(tmp_path / "d.csv")
    with pytest.raises(DataError, match=r"d\.csv.*feature column 'zz'"):
        prep(name="csv", path=str(csv), target="label", features=["a", "zz"])


def test_non_numeric_feature(tmp_path):
    body = [[i, "x" if i == 3 else i * 2, i % 2] for i in range(20)]
    csv = write_csv(tmp_path / "n.csv", ["a", "b", "y"], body)
    with pytest.raises(DataError, match=r"n\.csv.*column 'b' row 5.*'x'"):
        prep(name="csv", path=str(csv), target="y")


def test_missing_feature_values(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("a,b,y\n1,2,0\n3,,1\n4,5,0\n6,7,1\n")
    with pytest.raises(DataError, match=r"m\.csv: 1 missing value \(b: 1\); set data\.missing to drop"):
        prep(name="csv", path=str(csv), target="y")


def test_empty_csv(tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text("")
    with pytest.raises(DataError, match="e.csv"):
        prep(name="csv", path=str(csv), target="y")
    csv.write_text("a,y\n")
    with pytest.raises(DataError, match="no data rows"):
        prep(name="csv", path=str(csv), target="y")


def test_unseen_label_in_test_file(tmp_path):
    train = labelled_csv(tmp_path / "train.csv", n=30, labels=("cat", "dog"))
    test = labelled_csv(tmp_path / "test.csv", n=6, labels=("cat", "emu"))
    with pytest.raises(DataError, match=r"test\.csv.*'emu'.*cat, dog"):
        prep(name="csv", train_path=str(train), test_path=str(test), target="label")


def test_single_class_target(tmp_path):
    csv = labelled_csv(tmp_path / "one.csv", labels=("cat",))
    with pytest.raises(DataError, match=r"one\.csv.*single class \(cat\)"):
        prep(name="csv", path=str(csv), target="label")


def test_task_binary_with_three_classes(tmp_path):
    csv = labelled_csv(tmp_path / "three.csv")
    with pytest.raises(DataError, match=r"three\.csv.*binary.*found 3"):
        prep(name="csv", path=str(csv), target="label", task="binary")
    with pytest.raises(DataError, match="binary"):
        prep(name="iris", task="binary")


def test_multilabel_targets_must_be_zero_or_one(tmp_path):
    body = [[i, i % 2, i % 3] for i in range(20)]
    csv = write_csv(tmp_path / "ml.csv", ["f", "a", "b"], body)
    with pytest.raises(DataError, match=r"ml\.csv.*0 or 1"):
        prep(name="csv", path=str(csv), target=["a", "b"], task="multilabel")


def test_feature_count_mismatch_between_split_files(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.normal(size=(20, 2)), y=np.arange(20) % 2)
    np.savez(tmp_path / "val.npz", x=rng.normal(size=(6, 3)), y=np.arange(6) % 2)
    with pytest.raises(DataError, match=r"val\.npz.*3 features.*2"):
        prep(name="npz", train_path=str(tmp_path / "train.npz"), val_path=str(tmp_path / "val.npz"))


def test_an_npz_split_file_of_another_row_shape_is_refused(tmp_path):
    """[N, 2, 8] beside training rows of [4, 4]: as many values, other features. Flat rows are taken."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.random((20, 4, 4)), y=np.arange(20) % 2)
    np.savez(tmp_path / "val.npz", x=rng.random((6, 2, 8)), y=np.arange(6) % 2)
    np.savez(tmp_path / "flat.npz", x=rng.random((6, 16)), y=np.arange(6) % 2)
    with pytest.raises(DataError, match=r"val\.npz: x has shape \[N, 2, 8\], but the training file .*train\.npz has x of shape \[N, 4, 4\]"):
        prep(name="npz", train_path=str(tmp_path / "train.npz"), val_path=str(tmp_path / "val.npz"))
    p = prep(name="npz", train_path=str(tmp_path / "train.npz"), val_path=str(tmp_path / "flat.npz"))
    assert p.val.x.shape == (6, 16)


def test_npz_shape_errors(tmp_path):
    np.savez(tmp_path / "rows.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"rows\.npz.*5 rows.*4"):
        prep(name="npz", path=str(tmp_path / "rows.npz"))
    np.savez(tmp_path / "nan.npz", x=np.array([[0.0, np.nan]] * 4), y=np.zeros(4))
    with pytest.raises(DataError, match=r"nan\.npz.*NaN"):
        prep(name="npz", path=str(tmp_path / "nan.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"junk\.npz"):
        prep(name="npz", path=str(tmp_path / "junk.npz"))


def test_split_too_small_for_the_fractions(tmp_path):
    csv = write_csv(tmp_path / "tiny.csv", ["f", "y"], [[i, i % 2] for i in range(4)])
    # test takes 2 of the 4 rows, val ceil(0.49 * 4) = 2 more: nothing is left to train on
    with pytest.raises(DataError, match=r"data\.split.*of 2 rows"):
        prep(name="csv", path=str(csv), target="y", split={"val": 0.49, "test": 0.5}, task="regression")


@pytest.mark.parametrize(
    "raw,needle",
    [
        ({"name": "csv", "path": "d.csv"}, "data.target"),
        ({"name": "npz"}, "data.path"),
        ({"name": "iris", "path": "d.csv"}, "data.path"),
        ({"name": "csv", "path": "a.csv", "train_path": "b.csv", "target": "y"}, "not both"),
        ({"name": "moons", "split": {"val": 0.5, "test": 0.5}}, "leaves no training rows"),
        ({"name": "moons", "n_samples": 2}, "data.n_samples"),
        ({"name": "moons", "scale": "robust"}, "data.scale"),
        ({"name": "imagenet"}, "data.name"),
    ],
)
def test_bad_data_section_is_a_config_error(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate_dict({"data": raw})


@pytest.mark.parametrize("n, held, counts", [(10, 3, [5, 5]), (7, 4, [2, 2, 3]), (101, 50, [90, 9, 2]), (12, 8, [2, 2, 2, 6])])
def test_stratified_split_holds_out_exactly_and_keeps_every_class(n, held, counts):
    from mlptrain.data import _split_indices

    strata = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(0)
    strata = strata[rng.permutation(n)]
    kept, out = _split_indices(n, held, 3, strata)
    assert len(out) == held and len(kept) == n - held
    assert sorted(np.concatenate([kept, out]).tolist()) == list(range(n))
    assert set(strata[kept].tolist()) == set(range(len(counts)))  # every class keeps a training row
    share = np.bincount(strata[out], minlength=len(counts)) / held
    assert np.abs(share - np.asarray(counts) / n).max() <= 1.0 / held + 1e-9 or min(counts) == 2


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer", "diabetes"])
def test_bundled_sets_read_without_sklearn_equal_sklearns_own_loaders(name):
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    table = sources.bundled(name)
    np.testing.assert_array_equal(table.x, bunch.data.astype(np.float32))
    assert table.feature_names == [str(f) for f in bunch.feature_names]
    if name == "diabetes":
        np.testing.assert_array_equal(table.y, bunch.target)
    else:
        assert table.class_names == [str(c) for c in bunch.target_names]
        assert list(table.y) == [str(bunch.target_names[i]) for i in bunch.target]


@pytest.mark.parametrize("name", ["moons", "circles"])
def test_moons_and_circles_have_their_shapes(name):
    table = sources.synthetic(DataSpec(name=name, n_samples=400, noise=0.0, seed=1))
    x, y = table.x.astype(np.float64), table.y
    assert np.bincount(y).tolist() == [200, 200]
    if name == "circles":  # outer radius 1, inner 0.5
        np.testing.assert_allclose(np.hypot(x[:, 0], x[:, 1]), np.where(y == 0, 1.0, 0.5), atol=1e-6)
    else:  # upper half circle around (0, 0), lower one around (1, 0.5)
        centre = np.where(y[:, None] == 0, [0.0, 0.0], [1.0, 0.5])
        np.testing.assert_allclose(np.hypot(*(x - centre).T), 1.0, atol=1e-6)
        assert (x[y == 0, 1] >= -1e-6).all() and (x[y == 1, 1] <= 0.5 + 1e-6).all()


def test_integer_labels_written_as_floats_are_the_same_classes():
    state = {"class_names": ["0", "1", "2"]}
    codes = data.encode_targets(np.array([0.0, 2.0, 1.0]), "multiclass", state, "f.csv")
    assert codes.tolist() == [0, 2, 1]
    with pytest.raises(DataError, match=r"labels \['1.5'\] were not seen in training"):
        data.encode_targets(np.array([1.5]), "multiclass", state, "f.csv")
