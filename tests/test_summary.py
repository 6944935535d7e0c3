"""`validate`'s torch-free summary agrees with what fit builds: data, loss, monitors, layers."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from mlptrain import data as datamod
from mlptrain import pipeline
from mlptrain.config import ActivationName, ModelSpec, Spec, validate_dict
from mlptrain.errors import ConfigError, DataError
from mlptrain.model import build_model, count_parameters, summarize
from mlptrain.summary import count, describe, layer_table

from imagefiles import write_idx, write_mnist

ACTIVATIONS = typing.get_args(ActivationName)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_layer_table_matches_the_built_model(activation, norm):
    spec = ModelSpec(
        hidden=[7, 5], activation={"name": activation, "slope": 0.2, "alpha": 0.5, "beta": 2.0, "k": 3},
        norm=norm, dropout=0.3, input_dropout=0.1,
    )
    model = build_model(spec, 4, 3)
    rows = layer_table(spec, 4, 3)
    assert rows == summarize(model, 4)
    assert count(rows) == count_parameters(model)


@pytest.mark.parametrize("hidden", [[], [4], [256, 256, 10]])
def test_plain_nets_and_the_notes_26(hidden):
    spec = ModelSpec(hidden=hidden, activation=[{"name": "relu"}] * len(hidden) if hidden else "relu")
    assert layer_table(spec, 3, 2) == summarize(build_model(spec, 3, 2), 3)
    if hidden == [4]:
        assert count(layer_table(spec, 3, 2)) == 26


# ------------------------------------------------------------------------------------------------
# describe: what `validate` prints, without torch, scikit-learn or pandas.

HEAVY = ("torch", "sklearn", "pandas", "scipy", "torchvision")


def _validate_in_a_fresh_process(config: Path) -> tuple[str, list[str]]:
    """Run `mlptrain validate` in a new interpreter; its output and the heavy modules it imported."""
    code = (
        "import sys\n"
        "from mlptrain.cli import main\n"
        f"code = main(['validate', {str(config)!r}])\n"
        f"print('HEAVY:', ','.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    heavy = done.stdout.rsplit("HEAVY:", 1)[1].strip()
    return done.stdout, [m for m in heavy.split(",") if m]


@pytest.mark.parametrize("data", ["{name: moons}", "{name: blobs, n_features: 3}", "{name: sine}", "{name: digits}",
                                  "{name: diabetes}", "{name: breast_cancer}", "IMAGES", "csv", "parquet"])
def test_validate_imports_no_torch_sklearn_or_pandas(tmp_path, data):
    if data == "IMAGES":
        write_mnist(tmp_path / "mnist", n_train=40, n_test=20)
        data = f"{{name: mnist, root: {tmp_path / 'mnist'}}}"
    if data in ("csv", "parquet"):  # text labels, a text category, bools, empty cells: the whole tabular path
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        n = 40
        table = pa.table({
            "size": [None if i % 7 == 0 else i * 0.5 for i in range(n)],
            "color": [["red", "blue", None][i % 3] for i in range(n)],
            "member": [None if i == 3 else i % 2 == 0 for i in range(n)],
            "label": [["buy", "skip"][i % 2] for i in range(n)],
        })
        path = tmp_path / f"shop.{data}"
        (pq.write_table if data == "parquet" else pacsv.write_csv)(table, path)
        data = f"{{name: {data}, path: {path}, target: label, missing: impute_median}}"
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {data}\nmodel: {{hidden: [8]}}\ntrain: {{early_stopping: {{monitor: val/accuracy}}}}\n"
                      if "sine" not in data and "diabetes" not in data else f"data: {data}\nmodel: {{hidden: [8]}}\n")
    out, heavy = _validate_in_a_fresh_process(config)
    assert "config OK" in out
    assert heavy == []


def _spec(data: dict, **rest) -> Spec:
    return validate_dict({"data": data, "model": {"hidden": [6]}, **rest}, "test")


@pytest.mark.parametrize("data", [
    {"name": "spirals", "n_classes": 4, "n_samples": 200},
    {"name": "wine", "split": {"val": 0.2, "test": 0.1, "seed": 3}},
    {"name": "diabetes"},
    {"name": "mnist", "split": {"val": 0.25}},
])
def test_describe_agrees_with_the_data_and_model_fit_builds(tmp_path, data):
    if data["name"] == "mnist":
        write_mnist(tmp_path, n_train=40, n_test=20, size=12)
        data = {**data, "root": str(tmp_path)}
    spec = _spec(data)
    info = describe(spec)
    built = pipeline.build(spec)  # what fit trains: the pixels read this time
    p = built.prepared
    assert info["task"] == p.task and info["loss"] == built.loss_name
    assert (info["in_features"], info["out_features"]) == (p.in_features, p.out_features)
    assert info["rows"] == {k: len(getattr(p, k).x) if getattr(p, k) is not None else 0 for k in ("train", "val", "test")}
    assert info["layers"] == summarize(built.model, p.in_features)
    assert info["parameters"] == count_parameters(built.model)


def test_image_rows_without_pixels_split_like_the_full_read(tmp_path):
    write_mnist(tmp_path, n_train=50, n_test=20, size=12)
    spec = _spec({"name": "mnist", "root": str(tmp_path), "split": {"val": 0.3, "seed": 5}}).data
    full, bare = datamod.prepare(spec), datamod.prepare(spec, pixels=False)
    for a, b in ((full.train, bare.train), (full.val, bare.val), (full.test, bare.test)):
        assert b.x.shape == (len(a.x), 0)
        np.testing.assert_array_equal(a.y, b.y)  # the same rows in the same order
    assert bare.state["image_shape"] == full.state["image_shape"] == [1, 12, 12]
    assert bare.state["class_counts"] == full.state["class_counts"]


@pytest.mark.parametrize("spec_change, message", [
    ({"loss": "mae"}, "loss.name = 'mae' does not fit task 'multiclass'"),
    ({"loss": {"class_weight": {"nine": 2.0}}}, "loss.class_weight names unknown classes ('nine')"),
    ({"train": {"early_stopping": {"monitor": "val/r2"}}}, "train.early_stopping.monitor = 'val/r2' is not a logged metric"),
    ({"scheduler": {"name": "reduce_on_plateau", "monitor": "val/f2"}}, "scheduler.monitor = 'val/f2' is not a logged metric"),
])
def test_describe_refuses_what_fit_would_refuse(spec_change, message):
    spec = _spec({"name": "iris"}, **spec_change)
    with pytest.raises(ConfigError, match=re.escape(message)):
        describe(spec)
    with pytest.raises(ConfigError, match=re.escape(message)):
        pipeline.train(spec, Path("unused"), "cpu")


def test_validate_reads_image_headers_and_still_refuses_a_file_of_another_kind(tmp_path):
    arrays = write_mnist(tmp_path, n_train=30, n_test=10, size=8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", arrays["train_labels"])  # labels where images belong
    spec = _spec({"name": "mnist", "root": str(tmp_path)})
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: not an IDX images file"):
        describe(spec)


def test_help_imports_neither_torch_nor_the_spec():
    """`mlptrain --help` lists commands: building the pydantic spec (0.1 s) is for the commands that read a config."""
    code = (
        "import sys\n"
        "from mlptrain.cli import main\n"
        "code = main(['--help'])\n"
        "print('HEAVY:', ','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'mlptrain') + "
        f"{HEAVY!r} and m not in ('mlptrain', 'mlptrain.cli', 'mlptrain.errors', 'mlptrain.runs'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "Usage" in done.stdout and "fit" in done.stdout, done.stdout + done.stderr
    assert done.stdout.rsplit("HEAVY:", 1)[1].strip() == ""
