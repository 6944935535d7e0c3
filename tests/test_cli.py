"""End to end through the command line: fit -> eval -> predict, errors, and every shipped config.

Most tests call ``cli.main(argv)`` in-process (same code path as the console script, without
paying torch's import per test); a few run the real ``mlptrain`` / ``python -m mlptrain`` to
prove the entry points, exit codes and the absence of tracebacks.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from mlptrain import docs
from mlptrain.cli import main

from conftest import CONFIGS, ROOT

TINY = """\
data: {name: blobs, n_samples: 240, n_classes: 3, n_features: 4, noise: 1.0, seed: 3}
model: {hidden: [16], activation: tanh}
optimizer: {name: adam, lr: 0.01}
train: {epochs: 6, batch_size: 32, seed: 1}
logging: {progress: plain, histograms_every: 2}
"""

MLPTRAIN = [sys.executable, "-m", "mlptrain"]


def run_cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MLPTRAIN, *argv], capture_output=True, text=True, cwd=cwd, timeout=300)


def table_column(text: str, title: str, column: str) -> dict[str, str]:
    """metric -> printed cell of one column of a rich table that follows ``title``."""
    lines = text[text.index(title):].splitlines()
    header = next(line for line in lines if "metric" in line and re.search(r"[┃│|]", line))
    names = [c.strip() for c in re.split(r"[┃│|]", header) if c.strip()]
    col = names.index(column)
    cells: dict[str, str] = {}
    for line in lines[lines.index(header) + 1 :]:
        parts = [c.strip() for c in re.split(r"[┃│|]", line) if c.strip()]
        if not parts or line.startswith(("└", "╰")):
            if cells:
                break
            continue
        if len(parts) == len(names):
            cells[parts[0]] = parts[col]
    return cells


@pytest.fixture
def fitted(tmp_path, write_config, capsys):
    """One tiny run through `mlptrain fit`, shared by the eval/predict checks."""
    cfg = write_config(TINY, "tiny.yaml")
    run_dir = tmp_path / "run"
    code = main(["fit", str(cfg), "--run-dir", str(run_dir), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    return run_dir, printed


def test_fit_prints_run_dir_first_then_one_line_per_epoch_and_final_table(fitted):
    run_dir, printed = fitted
    lines = printed.splitlines()
    assert lines[0] == f"run directory: {run_dir}"
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(epoch_lines) == summary["epochs_run"]
    assert "train/loss" in epoch_lines[0] and "val/loss" in epoch_lines[0] and "lr" in epoch_lines[0]
    cells = table_column(printed, "final metrics", "test")
    assert set(cells) >= {"loss", "accuracy", "zero_one_loss", "precision", "recall", "f1"}
    assert "TensorBoard" in printed


def test_a_one_epoch_fit_says_1_epoch(write_config, tmp_path, capsys):
    assert main(["fit", str(write_config(TINY)), "--run-dir", str(tmp_path / "run"), "--set", "train.epochs=1"]) == 0
    assert re.search(r"^1 epoch \(ran all epochs\) in ", capsys.readouterr().out, re.M)


def test_run_directory_layout(fitted):
    run_dir, _ = fitted
    assert (run_dir / "checkpoints" / "best.pt").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["model"]["hidden"] == [16] and stored["train"]["device"] == "cpu"
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(rows) == summary["epochs_run"] and "val/accuracy" in rows[0]
    assert summary["parameters"] == 4 * 16 + 16 + 16 * 3 + 3
    assert set(summary["metrics"]) == {"train", "val", "test"}
    assert summary["train_seconds"] > 0 and summary["best_epoch"] >= 1
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_eval_reproduces_fit_test_metrics_to_the_printed_digit(fitted, capsys):
    run_dir, printed = fitted
    fit_cells = table_column(printed, "final metrics", "test")
    assert main(["eval", str(run_dir / "checkpoints" / "best.pt")]) == 0
    eval_out = capsys.readouterr().out
    assert table_column(eval_out, "metrics", "test") == fit_cells
    assert "confusion matrix" in eval_out
    # --json gives the same numbers as summary.json
    assert main(["eval", str(run_dir / "checkpoints" / "best.pt"), "--json", "--split", "val"]) == 0
    data = json.loads(capsys.readouterr().out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert data["metrics"] == pytest.approx(summary["metrics"]["val"], rel=1e-6)
    assert sum(map(sum, data["confusion_matrix"])) == data["rows"]


def test_eval_writes_json_file_and_refuses_bad_split(fitted, tmp_path, capsys):
    run_dir, _ = fitted
    out = tmp_path / "m.json"
    assert main(["eval", str(run_dir / "checkpoints" / "best.pt"), "--split", "train", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["data"] == "train split"
    capsys.readouterr()
    assert main(["eval", str(run_dir / "checkpoints" / "best.pt"), "--split", "holdout"]) == 2
    assert "holdout" in capsys.readouterr().err


def test_predict_writes_one_row_per_input_with_probabilities(fitted, tmp_path, capsys):
    run_dir, _ = fitted
    import numpy as np

    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    inp = tmp_path / "new.npz"
    np.savez(inp, x=x)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir / "checkpoints" / "best.pt"), str(inp), "-o", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7
    probs = [[float(r[f"prob_{k}"]) for k in ("0", "1", "2")] for r in rows]
    for r, p in zip(rows, probs):
        assert sum(p) == pytest.approx(1.0, abs=1e-4)
        assert r["prediction"] == str(int(np.argmax(p)))
    # never overwrites
    capsys.readouterr()
    assert main(["predict", str(run_dir / "checkpoints" / "best.pt"), str(inp), "-o", str(out)]) != 0
    assert "exists" in capsys.readouterr().err


def test_predict_on_a_csv_without_the_feature_names_keeps_every_row_and_says_how_it_read_it(fitted, tmp_path, capsys):
    """A model of x0..x3 (built-in data): a headerless CSV is not a header and one row less, and a header of
    other names is read by position, each with a warning; the predictions are those of the named file."""
    run_dir, _ = fitted
    best = str(run_dir / "checkpoints" / "best.pt")
    rows = "".join(f"{i * 0.5},{-i},{i * i * 0.25},{1 - i}\n" for i in range(3))
    (tmp_path / "named.csv").write_text("x0,x1,x2,x3\n" + rows)
    (tmp_path / "bare.csv").write_text(rows)
    (tmp_path / "other.csv").write_text("a,b,c,d\n" + rows)
    capsys.readouterr()
    written = {}
    for name in ("named", "bare", "other"):
        out = tmp_path / f"{name}.out.csv"
        assert main(["predict", best, str(tmp_path / f"{name}.csv"), "-o", str(out)]) == 0
        written[name] = out.read_text()
        std = capsys.readouterr()
        assert std.out == f"wrote 3 predictions to {out}\n"
        warnings = [line for line in std.err.splitlines() if line.startswith("warning:")]
        if name == "named":
            assert warnings == []
        elif name == "bare":
            assert warnings == [f"warning: {tmp_path / 'bare.csv'}: no header row (the first row is numbers): its 4 columns are "
                                "read as the model's features x0, x1, x2, x3, in that order"]
        else:
            assert warnings == [f"warning: {tmp_path / 'other.csv'}: columns a, b, c, d are not the model's feature names; "
                                "read by position as x0, x1, x2, x3"]
    assert len(written["named"].splitlines()) == 1 + 3
    assert written["bare"] == written["named"] and written["other"] == written["named"]
    (tmp_path / "one.csv").write_text("x0,x1,x2,x3\n1,2,3,4\n")
    assert main(["predict", best, str(tmp_path / "one.csv"), "-o", str(tmp_path / "one.out.csv")]) == 0
    assert capsys.readouterr().out == f"wrote 1 prediction to {tmp_path / 'one.out.csv'}\n"


def test_binary_tasks_say_which_class_is_positive_in_validate_and_eval(tmp_path, write_config, capsys):
    """One output, the probability of one class: validate and eval name it, and it is predict's prob_ of that class."""
    rows = "".join(f"{i % 7},{(i * 3) % 5},{'yes' if (i % 7) + (i * 3) % 5 > 5 else 'no'}\n" for i in range(60))
    (tmp_path / "d.csv").write_text("a,b,answer\n" + rows)
    cfg = write_config("data: {name: csv, path: d.csv, target: answer}\nmodel: {hidden: [4]}\n"
                       "train: {epochs: 3, device: cpu}\nlogging: {progress: none, tensorboard: false}\n")
    said = ("positive class: 'yes' (the model outputs its probability, predict's prob_yes; above 0.5 a row is 'yes'); "
            "precision, recall and F1 average both classes (macro)")
    assert main(["validate", str(cfg)]) == 0
    assert said in capsys.readouterr().out.splitlines()
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    best = str(tmp_path / "run" / "checkpoints" / "best.pt")
    capsys.readouterr()
    assert main(["eval", best]) == 0
    assert said in capsys.readouterr().out.splitlines()
    assert main(["eval", best, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["positive_class"] == "yes"
    assert main(["predict", best, str(tmp_path / "d.csv"), "-o", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as f:
        for r in csv.DictReader(f):
            assert (r["prediction"] == "yes") == (float(r["prob_yes"]) > 0.5)
    # a multiclass task has no positive class
    assert main(["validate", str(write_config(TINY, "multi.yaml"))]) == 0
    assert "positive class" not in capsys.readouterr().out


def test_data_positive_class_picks_the_class_the_output_is_the_probability_of(tmp_path, write_config, capsys):
    rows = "".join(f"{i % 7},{(i * 3) % 5},{'yes' if (i % 7) + (i * 3) % 5 > 5 else 'no'}\n" for i in range(60))
    (tmp_path / "d.csv").write_text("a,b,answer\n" + rows)
    base = ("data: {name: csv, path: d.csv, target: answer%s}\nmodel: {hidden: [4]}\n"
            "train: {epochs: 3, device: cpu}\nlogging: {progress: none, tensorboard: false}\n")
    probs = {}
    for name, extra in (("default", ""), ("no", ", positive_class: 'no'")):
        cfg = write_config(base % extra, f"{name}.yaml")
        assert main(["fit", str(cfg), "--run-dir", str(tmp_path / name)]) == 0
        best = str(tmp_path / name / "checkpoints" / "best.pt")
        assert main(["predict", best, str(tmp_path / "d.csv"), "-o", str(tmp_path / f"{name}.csv")]) == 0
        with open(tmp_path / f"{name}.csv") as f:
            probs[name] = list(csv.DictReader(f))
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "no" / "checkpoints" / "best.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["positive_class"] == "no"
    # the classes in output order: the positive one last, as class_names keeps them
    assert list(probs["default"][0]) == ["prediction", "prob_no", "prob_yes"]
    assert list(probs["no"][0]) == ["prediction", "prob_yes", "prob_no"]
    for r in probs["no"]:  # the output is now the probability of 'no'
        assert (r["prediction"] == "no") == (float(r["prob_no"]) > 0.5)
    assert main(["validate", str(write_config(base % ", positive_class: maybe", "bad.yaml"))]) == 3
    assert "data.positive_class = 'maybe' is not a class of the target; the classes are: no, yes" in capsys.readouterr().err
    assert main(["validate", str(write_config("data: {name: iris, positive_class: 1}\n", "iris.yaml"))]) == 2
    assert "data.positive_class = 1 changes nothing with task = 'multiclass' (only binary reads it)" in capsys.readouterr().err


def test_csv_example_predicts_class_names_and_eval_on_new_file(tmp_path, capsys):
    run_dir = tmp_path / "csv"
    assert main(["fit", str(CONFIGS / "csv_example.yaml"), "--run-dir", str(run_dir), "--set", "train.epochs=5"]) == 0
    ckpt = run_dir / "checkpoints" / "best.pt"
    out = tmp_path / "p.csv"
    assert main(["predict", str(ckpt), str(CONFIGS / "data" / "flowers.csv"), "-o", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 150
    assert {r["prediction"] for r in rows} <= {"alpha", "beta", "gamma"}
    assert set(rows[0]) == {"prediction", "prob_alpha", "prob_beta", "prob_gamma"}
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--data", str(CONFIGS / "data" / "flowers.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 150


def test_predict_and_eval_on_new_rows_need_only_the_checkpoint(tmp_path, capsys):
    """The checkpoint carries the preprocessing: the training file may be gone (and is not read)."""
    data = tmp_path / "train.csv"
    data.write_bytes((CONFIGS / "data" / "flowers.csv").read_bytes())
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{name: csv, path: {data}, target: species}}\nmodel: {{hidden: [8]}}\ntrain: {{epochs: 2}}\n")
    run_dir = tmp_path / "run"
    assert main(["fit", str(config), "--run-dir", str(run_dir)]) == 0
    ckpt = run_dir / "checkpoints" / "best.pt"
    before = tmp_path / "before.csv"
    assert main(["predict", str(ckpt), str(CONFIGS / "data" / "flowers.csv"), "-o", str(before)]) == 0
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--data", str(CONFIGS / "data" / "flowers.csv"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    data.unlink()
    after = tmp_path / "after.csv"
    assert main(["predict", str(ckpt), str(CONFIGS / "data" / "flowers.csv"), "-o", str(after)]) == 0
    assert after.read_bytes() == before.read_bytes()
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--data", str(CONFIGS / "data" / "flowers.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == scored
    assert main(["eval", str(ckpt)]) == 3  # the run's own test split does need its file
    assert "train.csv: data file not found" in capsys.readouterr().err


def test_eval_on_a_split_of_changed_data_says_so(tmp_path, capsys):
    data = tmp_path / "train.csv"
    lines = (CONFIGS / "data" / "flowers.csv").read_text().splitlines(keepends=True)
    data.write_text("".join(lines))
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{name: csv, path: {data}, target: species}}\nmodel: {{hidden: [8]}}\ntrain: {{epochs: 2}}\n")
    assert main(["fit", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    ckpt = str(tmp_path / "run" / "checkpoints" / "best.pt")
    capsys.readouterr()
    assert main(["eval", ckpt]) == 0
    assert "warning" not in capsys.readouterr().err  # the run's own rows
    data.write_text("".join(lines[:-31]))
    assert main(["eval", ckpt]) == 0
    err = capsys.readouterr().err
    assert f"warning: {data}: the data changed since the run trained: its test split has" in err
    assert err.count("warning:") == 1  # the test split only: eval scores that one


def test_regression_predict_is_in_target_units(tmp_path, capsys):
    run_dir = tmp_path / "reg"
    assert main(["fit", str(CONFIGS / "diabetes.yaml"), "--run-dir", str(run_dir), "--set", "train.epochs=30"]) == 0
    import numpy as np
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    inp, out = tmp_path / "x.npy", tmp_path / "y.csv"
    np.save(inp, x[:50].astype(np.float32))
    assert main(["predict", str(run_dir / "checkpoints" / "best.pt"), str(inp), "-o", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    pred = np.array([float(r["pred_target"]) for r in rows])
    assert len(pred) == 50
    assert 25 < pred.mean() < 350  # the target's own units (disease progression 25..346), not standardized
    assert np.corrcoef(pred, y[:50])[0, 1] > 0.5


def test_validate_prints_summary_and_counts_26_for_the_notes_3_4_2_net(write_config, capsys):
    cfg = write_config("data: {name: blobs, n_features: 3, n_classes: 2}\ntask: multiclass\nmodel: {hidden: [4]}\n")
    assert main(["validate", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "# resolved config" in text and "learnable parameters: 26" in text
    assert "Linear(3→4)" in text and "Linear(4→2)" in text and "config OK" in text


def _printed_config(argv: list[str], capsys) -> dict:
    """The resolved config `validate` printed, read back as YAML."""
    assert main(argv) == 0
    text = capsys.readouterr().out
    return yaml.safe_load(text[text.index("# resolved config"):text.index("\n\n")])


@pytest.mark.parametrize("config, gone, kept", [
    ("moons.yaml", {"data": ["n_classes", "n_features", "root", "download", "subset", "path", "target", "missing", "fill_value",
                             "scale_target"], "optimizer": ["betas", "eps", "alpha", "rho"], "scheduler": ["step_size", "gamma", "t_max", "factor"],
                    "loss": ["delta", "margin"]},
     {"data": ["n_samples", "noise", "seed", "split"], "optimizer": ["momentum", "nesterov"], "loss": ["label_smoothing"]}),
    ("csv_example.yaml", {"data": ["n_samples", "noise", "seed", "n_classes", "root", "subset", "scale_target", "fill_value"]},
     {"data": ["path", "target", "missing"]}),
    ("diabetes.yaml", {"data": ["n_samples", "path", "root"]}, {"data": ["scale_target"]}),
])
def test_validate_shows_the_keys_that_apply_and_every_key_with_all(config, gone, kept, tmp_path, capsys):
    from mlptrain.config import applied_dict, load_spec, spec_to_dict
    from mlptrain.summary import describe

    shown = _printed_config(["validate", str(CONFIGS / config)], capsys)
    every = _printed_config(["validate", str(CONFIGS / config), "--all"], capsys)
    assert every == spec_to_dict(load_spec(CONFIGS / config))
    for section, keys in gone.items():
        assert not set(keys) & set(shown[section]) and set(keys) <= set(every[section]), (section, shown[section])
    for section, keys in kept.items():
        assert set(keys) <= set(shown[section]), (section, shown[section])
    if "diabetes" in config:  # regression: no class proportions to keep
        assert "stratify" not in shown["data"]["split"] and "stratify" in every["data"]["split"]
    # what it shows is a config of its own that shows the same again
    again = tmp_path / "shown.yaml"
    again.write_text(yaml.safe_dump(shown))
    spec = load_spec(again)
    info = describe(spec)
    assert applied_dict(spec, info["task"], info["loss"]) == shown


def test_misspelled_key_is_one_line_exit_2_no_traceback(write_config):
    cfg = write_config("data: {name: moons}\noptimzer: {lr: 0.1}\n")
    proc = run_cli("fit", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "optimzer" in proc.stderr and "did you mean 'optimizer'" in proc.stderr and str(cfg) in proc.stderr


def test_bad_value_lists_allowed_values(write_config, capsys):
    cfg = write_config("data: {name: moons}\nmodel: {activation: relux}\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model.activation" in err and "'relux'" in err and "leaky_relu" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_flag_shows_the_traceback(where, write_config):
    cfg = write_config("data: {name: moons}\noptimzer: {lr: 0.1}\n")
    proc = run_cli("--debug", "fit", str(cfg)) if where == "before" else run_cli("fit", str(cfg), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "ConfigError" in proc.stderr and "optimzer" in proc.stderr  # the config's error, not "no such option"


@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_before_training_removes_the_empty_run_and_says_so(signum, code, said, write_config, tmp_path, monkeypatch, capsys):
    from mlptrain import pipeline

    real_build = pipeline.build

    def build_then_signal(*args, **kwargs):  # the signal arrives while the data loads
        built = real_build(*args, **kwargs)
        os.kill(os.getpid(), signum)
        time.sleep(0.5)  # delivered by now: the handler has run (or the test fails on the sleep's end)
        return built

    monkeypatch.setattr(pipeline, "build", build_then_signal)
    cfg = write_config("data: {name: moons, n_samples: 100}\ntrain: {epochs: 1}\n")
    run_dir = tmp_path / "r"
    assert main(["fit", str(cfg), "--run-dir", str(run_dir)]) == code
    err = capsys.readouterr().err
    assert f"nothing was written ({run_dir} removed)" in err and said in err
    assert not run_dir.exists()


def test_a_run_dir_left_by_a_kill_before_training_can_be_used(write_config, tmp_path):
    """SIGKILL before the first write leaves the run directory with its empty checkpoints/ folder only."""
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = write_config("data: {name: moons, n_samples: 100}\ntrain: {epochs: 1}\n")
    assert main(["fit", str(cfg), "--run-dir", str(run_dir)]) == 0
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "other")]) == 5  # anything else there is kept out of


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["fit", "does/not/exist.yaml"], 2, ["does/not/exist.yaml", "not found"]),
        (["eval", "nothing.pt"], 4, ["nothing.pt", "not found"]),
        (["fit", "{cfg}", "--set", "optimizer.lr"], 2, ["KEY=VALUE"]),
        (["fit", "{cfg}", "--device", "tpu"], 2, ["device", "tpu"]),
        (["fit", "{cfg}", "--device", "cuda"], 1, ["CUDA is not available"]),
        (["fit", "{cfg}", "--set", "train.early_stopping.monitor=val/auc"], 2, ["val/auc", "val/accuracy"]),
        (["fit", "{cfg}", "--set", "loss=mae"], 2, ["mae", "binary"]),
    ],
)
def test_bad_input_exit_codes(argv, code, words, write_config, tmp_path, capsys):
    cfg = write_config("data: {name: moons, n_samples: 100}\ntrain: {epochs: 1}\n")
    argv = [a.replace("{cfg}", str(cfg)) for a in argv] + (["--run-dir", str(tmp_path / "r")] if argv[0] == "fit" else [])
    assert main(argv) == code
    captured = capsys.readouterr()
    assert all(w in captured.err for w in words), captured.err
    assert captured.err.startswith("error:") and "Traceback" not in captured.err


def test_fit_refuses_a_non_empty_run_dir_and_keeps_it(write_config, tmp_path, capsys):
    cfg = write_config("data: {name: moons, n_samples: 100}\ntrain: {epochs: 1}\n")
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("precious")
    assert main(["fit", str(cfg), "--run-dir", str(run_dir)]) == 5
    assert (run_dir / "keep.txt").read_text() == "precious" and len(list(run_dir.iterdir())) == 1


def test_runs_go_to_name_and_timestamp_and_never_collide(write_config, tmp_path, capsys):
    cfg = write_config(f"data: {{name: moons, n_samples: 100}}\ntrain: {{epochs: 1}}\nlogging: {{runs_dir: {tmp_path / 'runs'}}}\n")
    assert main(["fit", str(cfg), "--name", "exp"]) == 0
    assert main(["fit", str(cfg), "--name", "exp"]) == 0
    runs = sorted((tmp_path / "runs" / "exp").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").is_file() for r in runs)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(_\d+)?", runs[0].name)


def test_init_writes_a_starter_that_validates_and_trains(tmp_path, capsys):
    path = tmp_path / "starter.yaml"
    assert main(["init", str(path)]) == 0
    assert path.read_text().startswith("#")
    assert main(["fit", str(path), "--run-dir", str(tmp_path / "r"), "--set", "train.epochs=2"]) == 0
    assert main(["init", str(path)]) != 0  # never overwrites


def test_schema_is_json_schema_of_every_section(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == {"name", "data", "augment", "regularization", "adversarial", "model", "task", "loss",
                                         "optimizer", "scheduler", "train", "logging"}
    assert schema["required"] == ["data"]
    assert schema["$defs"]["OptimizerSpec"]["anyOf"][1]["additionalProperties"] is False


def test_every_shipped_config_and_inits_file_pass_the_schema(tmp_path, capsys):
    """What editors check with `mlptrain schema` must accept what mlptrain accepts: the short forms too."""
    import jsonschema

    assert main(["schema"]) == 0
    validator = jsonschema.Draft202012Validator(json.loads(capsys.readouterr().out))
    assert main(["init", str(tmp_path / "new.yaml")]) == 0
    for path in [*sorted(CONFIGS.glob("**/*.yaml")), tmp_path / "new.yaml"]:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path.name, errors)
    wrong = {"data": {"name": "digits"}, "model": {"activation": "relux", "init": {"nam": "normal"}}}
    assert len(list(validator.iter_errors(wrong))) == 2  # and still refuses what mlptrain refuses


def test_every_command_has_help_with_an_example():
    for command in ("fit", "eval", "predict", "validate", "init", "tensorboard", "schema"):
        proc = run_cli(command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert "Example: mlptrain " + command in proc.stdout, command


def test_help_names_values_as_other_command_line_tools_do():
    """typer 0.29 wrote every flag as <bool>, --set as <list[str]> and a required argument as {CHECKPOINT}."""
    helps = {command: run_cli(*command.split(), "--help").stdout for command in ("", "fit", "eval", "predict", "validate")}
    for command, text in helps.items():
        assert not re.search(r"<(bool|str|path|int|list\[\w+\])>|\{[A-Z_]+\}", text), (command, text)
    assert re.search(r"--debug +Show the full traceback", helps[""]) and re.search(r"--version +Print the version", helps[""])
    assert re.search(r"--set +-s +KEY=VALUE +Override a value", helps["fit"]) and re.search(r"--device +-d +DEVICE ", helps["fit"])
    assert "Usage: mlptrain fit [OPTIONS] [CONFIG]" in helps["fit"] and re.search(r"│ +CONFIG +YAML spec", helps["fit"])
    assert re.search(r"Usage: mlptrain eval \[OPTIONS\] CHECKPOINT *$", helps["eval"], re.M)
    assert re.search(r"--json +Print the metrics as JSON", helps["eval"]) and re.search(r"--data +FILE +A new CSV, Parquet or NPZ", helps["eval"])
    assert "Usage: mlptrain predict [OPTIONS] CHECKPOINT INPUT" in helps["predict"] and "CSV or Parquet" in helps["predict"]
    assert re.search(r"--set +-s +KEY=VALUE", helps["validate"]) and re.search(r"--all +Show every key", helps["validate"])


def test_version_comes_from_the_package_metadata_without_torch():
    import tomllib

    code = ("import sys\nfrom mlptrain.cli import main\ncode = main(['--version'])\n"
            "print('HEAVY:', ','.join(m for m in ('torch', 'pydantic', 'mlptrain.config') if m in sys.modules))\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert done.returncode == 0 and done.stdout == f"mlptrain {version}\nHEAVY: \n", done.stdout + done.stderr
    assert run_cli("--version").stdout == f"mlptrain {version}\n"


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "mlptrain"
    assert script.is_file(), "pip install -e . should have created the mlptrain console script"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "fit" in proc.stdout


def test_readme_config_reference_is_current():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert docs.render(readme) == readme, "README config reference is stale: run `make docs`"


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_readme_documents_every_config_section_and_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in ("fit", "eval", "predict", "validate", "init", "tensorboard", "schema"):
        assert f"mlptrain {command}" in readme
    for section in ("data", "model", "loss", "optimizer", "scheduler", "train", "logging"):
        assert f"#### `{section}`" in readme


# ------------------------------------------------------------------------------------------------
# Every shipped config runs (shortened), and the notes' XOR claims hold for the real config.


SHIPPED = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("**/*.yaml"))  # regularization/l1.yaml too


@pytest.mark.parametrize("config", SHIPPED)
def test_every_shipped_config_runs(config, tmp_path, capsys):
    from mlptrain.config import IMAGE_NAMES, load_spec
    from mlptrain.data.images import locate
    from mlptrain.errors import DataError

    spec = load_spec(CONFIGS / config)
    if spec.data.name in IMAGE_NAMES:  # image sets are not shipped: run where their files are installed
        try:
            locate(spec.data)
        except DataError as exc:
            pytest.skip(f"{config}: {spec.data.name} files are not on this machine ({str(exc)[:120]}...)")
    # 60 000 images: one epoch of a small net shows the data, splits and config work (the full run takes minutes)
    shorter = ["train.epochs=1", "model.hidden=[64]"] if spec.data.name in IMAGE_NAMES else ["train.epochs=3"]
    run_dir = tmp_path / "run"
    sets = [arg for item in shorter for arg in ("--set", item)]
    assert main(["fit", str(CONFIGS / config), "--run-dir", str(run_dir), *sets]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] <= 3 and "test" in summary["metrics"]


@pytest.mark.parametrize("switch", ["logging.tensorboard=false", "train.early_stopping.enabled=false"])
@pytest.mark.parametrize("config", SHIPPED)
def test_every_shipped_config_takes_a_one_flag_switch_with_at_most_one_warning(config, switch, tmp_path, capsys):
    """A --set that switches something off is not refused because the file sets a key only the switched-off
    feature reads (digits.yaml's patience, or histograms_every: 0, which means never anyway)."""
    from imagefiles import write_mnist
    from mlptrain.config import IMAGE_NAMES, EarlyStoppingSpec, LoggingSpec, read_yaml

    raw = read_yaml(CONFIGS / config)
    sets = ["--set", switch]
    if raw["data"]["name"] in IMAGE_NAMES:  # the sets are not shipped: the same files, small
        write_mnist(tmp_path / "images", n_train=40, n_test=20)
        sets += ["--set", f"data.root={tmp_path / 'images'}"]
    assert main(["validate", str(CONFIGS / config), *sets]) == 0, capsys.readouterr().err
    ignored = [line for line in capsys.readouterr().err.splitlines() if "is ignored" in line]
    section, key, model = ("train", "early_stopping"), "patience", EarlyStoppingSpec
    if switch.startswith("logging"):
        section, key, model = ("logging",), "histograms_every", LoggingSpec
    value = raw.get(section[0], {}).get(section[-1], {}) if len(section) == 2 else raw.get("logging", {})
    value = value.get(key) if isinstance(value, dict) else None
    by = switch.split("=")[0]
    expected = [] if value in (None, model.model_fields[key].default, *model.NEVER.get(key, ())) else [
        f"warning: {CONFIGS / config}: {'.'.join(section)}.{key} = {value} is ignored with {by}: false from --set "
        f"(only {by.split('.')[-1]}: true reads it)"
    ]
    assert ignored == expected


def test_a_switched_off_key_warns_once_and_the_run_trains(tmp_path, capsys):
    argv = ["fit", str(CONFIGS / "quickstart.yaml"), "--run-dir", str(tmp_path / "run"), "--set", "train.epochs=2",
            "--set", "train.early_stopping.enabled=false", "--set", "logging.tensorboard=false"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "train.early_stopping.patience = 8 is ignored" in err, err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_run"] == 2
    assert not list((tmp_path / "run").rglob("events.out.tfevents*"))


def test_xor_config_is_learned_with_one_hidden_layer_and_not_without(tmp_path, capsys):
    deep, linear = tmp_path / "deep", tmp_path / "linear"
    assert main(["fit", str(CONFIGS / "xor.yaml"), "--run-dir", str(deep), "--set", "train.epochs=60"]) == 0
    assert main(["fit", str(CONFIGS / "xor.yaml"), "--run-dir", str(linear), "--set", "train.epochs=60", "--set", "model.hidden=[]"]) == 0
    acc = lambda d: json.loads((d / "summary.json").read_text())["metrics"]["test"]["accuracy"]  # noqa: E731
    assert acc(deep) == 1.0
    assert acc(linear) < 0.8


def test_quickstart_reaches_high_test_accuracy(tmp_path, capsys):
    run_dir = tmp_path / "qs"
    assert main(["fit", str(CONFIGS / "quickstart.yaml"), "--run-dir", str(run_dir), "--set", "logging.histograms_every=0"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"]["test"]["accuracy"] > 0.95


# ------------------------------------------------------------------------------------------------
# TensorBoard serves the run's scalars.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_refuses_a_missing_dir_and_a_busy_port_in_one_line(fitted, tmp_path, capsys):
    assert main(["tensorboard", str(tmp_path / "nothing")]) == 5
    assert "no such runs directory" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["tensorboard", str(fitted[0].parent), "--port", str(port)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: --port {port}: cannot serve on 127.0.0.1:{port}") and f"--port {port + 1}" in err


def test_tensorboard_command_serves_the_runs_scalars(fitted):
    run_dir, _ = fitted
    port = _free_port()
    proc = subprocess.Popen(
        [*MLPTRAIN, "tensorboard", str(run_dir.parent), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        tags: dict = {}
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.loads(r.read())
                if len(tags) == 2:  # the run and its final/ run
                    break
            except OSError:
                pass
            time.sleep(1)
        assert tags, "TensorBoard did not serve scalars"
        run_tags = tags[run_dir.name]
        for tag in ("train/loss", "val/loss", "val/accuracy", "lr", "step/train_loss"):
            assert tag in run_tags, (tag, sorted(run_tags))
        assert {"val/loss", "test/loss", "test/accuracy"} <= set(tags[f"{run_dir.name}/final"])
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out


def test_printed_checkpoint_always_holds_the_final_weights(write_config, tmp_path, capsys):
    cfg = write_config(TINY, "tiny.yaml")
    # last weights kept, only last.pt saved: eval of the printed checkpoint reproduces the test metrics
    run_a = tmp_path / "a"
    argv = ["fit", str(cfg), "--run-dir", str(run_a), "--set", "train.early_stopping.restore_best_weights=false"]
    assert main([*argv, "--set", "train.checkpoint.save_best=false"]) == 0
    summary = json.loads((run_a / "summary.json").read_text())
    assert summary["checkpoint"].endswith("last.pt") and not (run_a / "checkpoints" / "best.pt").exists()
    capsys.readouterr()
    assert main(["eval", summary["checkpoint"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(summary["metrics"]["test"], rel=1e-6)
    # nothing saved that holds the final weights: say so rather than point at the wrong file
    run_b = tmp_path / "b"
    assert main(["fit", str(cfg), "--run-dir", str(run_b), "--set", "train.early_stopping.restore_best_weights=false",
                 "--set", "train.checkpoint.save_last=false"]) == 0
    assert json.loads((run_b / "summary.json").read_text())["checkpoint"] is None
    assert "checkpoint: none holds the final weights (train.checkpoint.save_last is off)" in capsys.readouterr().out
    # best weights restored, no best.pt: last.pt is there, but holds the last epoch's weights
    run_c = tmp_path / "c"
    assert main(["fit", str(cfg), "--run-dir", str(run_c), "--set", "train.checkpoint.save_best=false",
                 "--set", "train.early_stopping.patience=1", "--set", "train.epochs=40"]) == 0
    summary = json.loads((run_c / "summary.json").read_text())
    assert summary["checkpoint"] is None and summary["best_epoch"] < summary["epochs_run"]
    assert (f"none holds the final weights: they are epoch {summary['best_epoch']}'s (early_stopping.restore_best_weights) "
            f"and train.checkpoint.save_best is off; last.pt holds epoch {summary['epochs_run']}'s") in capsys.readouterr().out


def test_the_printed_eval_command_works_without_a_test_split(write_config, tmp_path, capsys):
    cfg = write_config(TINY, "tiny.yaml")
    run_dir = tmp_path / "r"
    assert main(["fit", str(cfg), "--run-dir", str(run_dir), "--set", "data.split.test=0"]) == 0
    command = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluate:"))
    assert command.endswith("best.pt --split val")
    assert main(command.split()[2:]) == 0
    assert main(["eval", str(run_dir / "checkpoints" / "best.pt")]) == 3
    assert "no test split; give --split train or val, or --data FILE" in capsys.readouterr().err


def test_a_run_that_fails_before_writing_leaves_no_directory(write_config, tmp_path, capsys):
    cfg = write_config("data: {name: mnist, root: nothing-here}\ntrain: {epochs: 1}\n")
    run_dir = tmp_path / "r"
    assert main(["fit", str(cfg), "--run-dir", str(run_dir)]) == 3
    captured = capsys.readouterr()
    err = captured.err
    assert "files not found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"run directory: {run_dir}" in captured.out and f"(nothing was written: {run_dir} removed)" in err
    assert not run_dir.exists()
    run_dir.mkdir()  # an empty --run-dir the user made beforehand is theirs: left there, empty
    assert main(["fit", str(cfg), "--run-dir", str(run_dir)]) == 3
    assert f"(nothing was written: {run_dir} left empty)" in capsys.readouterr().err
    assert run_dir.is_dir() and not any(run_dir.iterdir())
    # a directory with anything in it is never removed
    keep = tmp_path / "keep"
    (keep / "checkpoints").mkdir(parents=True)
    (keep / "checkpoints" / "best.pt").write_bytes(b"x")
    from mlptrain.runs import remove_if_unused

    assert not remove_if_unused(keep) and (keep / "checkpoints" / "best.pt").exists()


def test_tensorboard_write_failures_are_one_line_exit_5_with_the_next_step(write_config, tmp_path, monkeypatch, capsys):
    import errno

    import torch.utils.tensorboard as tb

    from mlptrain import runs

    cfg = write_config(TINY, "tiny.yaml")
    real = tb.SummaryWriter

    def full_disk(*args, **kwargs):  # the event file's header does not fit
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tb, "SummaryWriter", full_disk)
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "a")]) == 5
    err = capsys.readouterr().err
    assert "events.out.tfevents.*: cannot be written (No space left on device)" in err and "Traceback" not in err
    assert "then start the run again with mlptrain fit (nothing resumable was saved yet)" in err
    monkeypatch.setattr(tb, "SummaryWriter", real)
    calls = {"n": 0}
    real_scalars = runs.Run._scalars

    def fails_later(self, step, values):  # the disk fills (or turns read-only) in epoch 3
        calls["n"] += 1
        if calls["n"] > 8:
            with self._events():
                raise OSError(errno.EROFS, "Read-only file system")
        real_scalars(self, step, values)

    monkeypatch.setattr(runs.Run, "_scalars", fails_later)
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "b")]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written (Read-only file system)" in err
    assert f"then go on with: mlptrain resume {tmp_path / 'b'}" in err


def test_a_failed_write_of_the_final_tensorboard_run_leaves_the_run_to_finish_with_resume(write_config, tmp_path, monkeypatch, capsys):
    import errno

    import torch.utils.tensorboard as tb

    cfg = write_config(TINY, "tiny.yaml")
    run = tmp_path / "r"

    def full_disk(*args, **kwargs):  # the disk fills while the confusion matrices are written
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(tb.SummaryWriter, "add_image", full_disk)
        assert main(["fit", str(cfg), "--run-dir", str(run)]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{run / 'final' / 'events.out.tfevents.*'}: cannot be written (No space left on device)" in err
    assert f"then go on with: mlptrain resume {run}" in err
    assert not (run / "summary.json").exists()  # not complete, so resume finishes it
    assert main(["resume", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "complete"
    assert any(p.stat().st_size for p in (run / "final").glob("events.out.tfevents.*"))


def test_ctrl_c_after_the_last_epoch_says_how_to_finish_the_run(write_config, tmp_path, monkeypatch, capsys):
    from mlptrain import pipeline

    def interrupted(*args, **kwargs):  # Ctrl-C while the final metrics are computed
        raise KeyboardInterrupt

    cfg = write_config(TINY, "tiny.yaml")
    with monkeypatch.context() as m:
        m.setattr(pipeline, "score", interrupted)
        assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert f"stopped before the run was complete; finish it with: mlptrain resume {tmp_path / 'r'}" in err
    assert main(["resume", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "complete"


# ------------------------------------------------------------------------------------------------
# What fit shows while it trains and where it points afterwards.


def test_each_epoch_shows_the_tasks_main_metric_beside_the_monitored_one(fitted, tmp_path, capsys):
    """Monitoring val/loss, a classifier's line still says how accurate it is; a regression's, its RMSE."""
    _, printed = fitted
    epoch_lines = [line for line in printed.splitlines() if line.startswith("epoch ")]
    assert epoch_lines and all(re.search(r"val/loss \d\.\d{4}  val/accuracy \d\.\d{4}  lr ", line) for line in epoch_lines)
    run_dir = tmp_path / "reg"
    assert main(["fit", str(CONFIGS / "diabetes.yaml"), "--run-dir", str(run_dir), "--set", "train.epochs=2",
                 "--set", "logging.progress=plain"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert len(lines) == 2 and all(f"val/rmse {float(r['val/rmse']):.4f}" in line for line, r in zip(lines, rows))


def test_the_bar_ends_full_when_early_stopping_ends_the_run(write_config, tmp_path, monkeypatch):
    from rich.console import Console

    from mlptrain import cli

    screen = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=200)
    monkeypatch.setattr(cli, "out", screen)
    cfg = write_config(TINY.replace("epochs: 6", "epochs: 300, early_stopping: {patience: 1}").replace("plain", "bar"))
    assert main(["fit", str(cfg), "--run-dir", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stopped_early"] and summary["epochs_run"] < 300
    frames = re.findall(r"epoch (\d+)/300 \S+ +(\d+)/(\d+) loss \S+ (.*?) \d+:\d\d:\d\d", screen.file.getvalue())
    epoch, done, total, metrics = frames[-1]  # the bar as it stays on screen
    assert int(epoch) == summary["epochs_run"] and int(done) == int(total) == summary["steps"]
    assert "val/accuracy" in metrics and "val/loss" in metrics


def _script(tmp_path: Path) -> Path:
    """An `mlptrain` console script in a venv-like bin/ folder, as pip writes one."""
    script = tmp_path / "venv" / "bin" / "mlptrain"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom mlptrain.cli import run\nsys.exit(run())\n")
    script.chmod(0o755)
    return script


def test_printed_commands_are_the_command_as_it_was_invoked(write_config, tmp_path):
    """`mlptrain` is on PATH only with the venv active: a command printed must run as the user ran this one."""
    import shlex

    cfg = write_config(TINY.replace("epochs: 6", "epochs: 1"))
    bare = {**os.environ, "PATH": os.defpath}  # no venv on PATH
    proc = subprocess.run([*MLPTRAIN, "fit", str(cfg), "--run-dir", str(tmp_path / "r")], capture_output=True,
                          text=True, cwd=tmp_path, env=bare, timeout=300)
    assert proc.returncode == 0, proc.stderr
    python = shlex.quote(sys.executable)
    evaluate = next(line for line in proc.stdout.splitlines() if line.startswith("evaluate:"))
    assert evaluate == f"evaluate:   {python} -m mlptrain eval {tmp_path / 'r' / 'checkpoints' / 'best.pt'}"
    assert f"TensorBoard: {python} -m mlptrain tensorboard {tmp_path / 'r'}" in proc.stdout
    assert subprocess.run(shlex.split(evaluate.split(":", 1)[1]), capture_output=True, cwd=tmp_path, env=bare, timeout=300).returncode == 0
    script = _script(tmp_path)
    proc = subprocess.run(["venv/bin/mlptrain", "init", "a.yaml"], capture_output=True, text=True, cwd=tmp_path, env=bare, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "wrote a.yaml; train it with: venv/bin/mlptrain fit a.yaml", proc.stderr
    active = {**bare, "PATH": f"{script.parent}{os.pathsep}{os.defpath}"}  # the venv activated: the bare name runs it
    proc = subprocess.run(["mlptrain", "init", "b.yaml"], capture_output=True, text=True, cwd=tmp_path, env=active, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "wrote b.yaml; train it with: mlptrain fit b.yaml", proc.stderr


def test_a_fit_that_fails_on_its_data_leaves_no_runs_name_folder(write_config, tmp_path, capsys):
    """Only what this call made goes: runs/<name>/ made for the run, never a folder that was there before."""
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    runs_dir = tmp_path / "runs"
    cfg = write_config(f"name: exp\ndata: {{name: csv, path: d.csv, target: nope}}\nlogging: {{runs_dir: {runs_dir}}}\n")
    assert main(["fit", str(cfg)]) == 3
    assert "target column 'nope' not found" in capsys.readouterr().err
    assert not runs_dir.exists()  # runs/ and runs/exp/ were made by this call
    (runs_dir / "other" / "2026-01-01_00-00-00").mkdir(parents=True)
    assert main(["fit", str(cfg)]) == 3
    assert sorted(p.relative_to(runs_dir) for p in runs_dir.rglob("*")) == [Path("other"), Path("other/2026-01-01_00-00-00")]
    old = runs_dir / "exp" / "2026-01-01_00-00-00"
    old.mkdir(parents=True)  # an earlier run of the same name: its folder stays
    assert main(["fit", str(cfg)]) == 3
    assert list((runs_dir / "exp").iterdir()) == [old]
