"""bench/bench.py's bookkeeping (not its timings, which only `make bench` measures)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "bench" / "bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _res(**samples_per_s: float) -> dict:
    return {
        v: {"samples_per_s": s, "test_accuracy": 0.87, "epoch_seconds": [4.0, 4.0, 4.1], "peak_rss_mb": 1000.0}
        for v, s in samples_per_s.items()
    }


def _targets(workload: str, device: str, res: dict) -> dict:
    _, targets = bench.ratios_and_targets(workload, device, res)
    return {t["target"]: t for t in targets}


def test_speed_targets_take_the_faster_precision_and_say_which(capsys):
    t = _targets("fashion_mnist", "cpu", _res(a=10_000, b=12_000, d=13_000, e=20_000))
    assert t["fashion b/a speed (bf16-mixed)"]["value"] == pytest.approx(2.0) and t["fashion b/a speed (bf16-mixed)"]["pass"]
    assert t["fashion time_b/time_d"]["value"] == pytest.approx(13 / 12)  # the floor is compared with float32 b
    t = _targets("fashion_mnist", "cpu", _res(a=10_000, b=12_000, d=13_000))  # no native bf16: e did not run
    assert t["fashion b/a speed (32)"]["value"] == pytest.approx(1.2) and not t["fashion b/a speed (32)"]["pass"]
    assert "e test accuracy - a test accuracy" not in t


def test_bf16_speed_does_not_pass_with_worse_accuracy_unseen():
    res = _res(a=10_000, b=12_000, e=20_000)
    res["e"]["test_accuracy"] = 0.80
    assert _targets("digits", "cpu", res)["e test accuracy - a test accuracy"]["pass"] is False


def test_gpu_target_is_bf16_mixed_ten_times_the_idiomatic_loop_and_knows_peaks():
    assert _targets("fashion_mnist", "cuda", _res(a=50_000, b=300_000, e=600_000))["fashion e/a speed on the GPU (bf16-mixed)"]["pass"]
    assert bench.gpu_peak("NVIDIA H100 80GB HBM3") == 989.0 and bench.gpu_peak("NVIDIA H100 PCIe") == 756.0
    assert bench.gpu_peak("some other GPU") is None


def test_startup_targets_are_each_command_under_half_a_second(capsys):
    seconds = {"python -c pass": 0.025, "mlptrain --help": 0.3, "mlptrain validate (CSV, 2,000 rows)": 0.62,
               "mlptrain validate (digits)": None}
    t = {x["target"]: x for x in bench.startup_targets(seconds)}
    assert "python -c pass" not in t  # the baseline, not a target
    assert t["mlptrain --help"]["pass"] is True and t["mlptrain validate (CSV, 2,000 rows)"]["pass"] is False
    assert t["mlptrain validate (digits)"]["pass"] is None  # a failed command is no pass
    out = capsys.readouterr().out
    assert "12.0x" in out and "MISS  mlptrain validate (CSV" in out


def test_a_one_epoch_fit_is_set_beside_import_torch_and_has_no_half_second_goal(capsys):
    seconds = {"python -c pass": 0.02, "mlptrain --help": 0.3, bench.IMPORT_TORCH: 1.5, bench.FIT_XOR: 2.25}
    t = {x["target"]: x for x in bench.startup_targets(seconds)}
    assert set(t) == {"mlptrain --help"}
    assert "mlptrain fit (XOR, 1 epoch): 2.250 s from start to exit, 0.750 s more than `import torch` alone (1.500 s)" in capsys.readouterr().out


def test_a_command_that_makes_its_run_directory_gets_a_fresh_one_each_run(tmp_path):
    run_dir = tmp_path / "run"
    make = [sys.executable, "-c", "import os, sys; os.mkdir(sys.argv[1])", str(run_dir)]
    assert bench.best_seconds(make, 3, fresh=run_dir)[0] is not None
    assert bench.best_seconds(make, 1)[0] is None  # the check itself: the directory exists now


def test_startup_files_cover_text_bool_and_empty_cells(tmp_path):
    from mlptrain.data.frame import read_frame

    paths = bench.startup_files(tmp_path)
    assert set(paths) == {"digits", "csv", "parquet"}
    for kind in ("csv", "parquet"):
        f = read_frame(tmp_path / f"shop.{kind}", kind)
        assert len(f) == 2000 and f.kinds == {"id": "text", "size": "float", "color": "text", "member": "bool", "label": "text"}
        assert np.isnan(f.data["size"]).sum() > 0 and sum(v is None for v in f.data["color"]) > 0


def test_repeats_run_in_rounds_and_keep_each_variants_fastest(monkeypatch, tmp_path):
    calls: list[str] = []
    seconds = {"a": iter([3.0, 2.0, 2.5]), "b": iter([1.0, 1.5, 1.2]), "d": iter([0.5])}

    def once(v, *args):
        calls.append(v)
        if v == "d" and calls.count("d") == 2:
            return {"error": "boom"}
        return {"train_seconds": next(seconds[v]), "peak_rss_mb": 100.0 + len(calls), "n_train": 10, "epochs": 2}

    monkeypatch.setattr(bench, "run_once", once)
    res = bench.run_variants(["a", "b", "d"], {}, 2, "cpu", 3, tmp_path, 60)
    assert calls == ["a", "b", "d", "a", "b", "d", "a", "b"]  # rounds, not a variant's runs back to back
    assert calls.count("d") == 2  # a failed variant runs no further rounds
    assert res["a"]["train_seconds"] == 2.0 and res["a"]["repeats_train_seconds"] == [3.0, 2.0, 2.5]
    assert res["b"]["train_seconds"] == 1.0 and res["a"]["samples_per_s"] == 10 * 2 / 2.0
    assert res["a"]["peak_rss_mb"] == 107.0  # the highest of its runs (calls 1, 4 and 7), not the fastest one's
    assert res["d"] == {"error": "boom"}


def test_the_parent_never_imports_torch_so_child_peaks_are_their_own():
    """Linux carries the parent's resident size into a fork+exec'd child's ru_maxrss: a parent holding
    torch and scikit-learn made every child's peak RSS read ~900 MB. main() probes them in a child."""
    import subprocess
    import sys

    script = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bench", {str(Path(bench.__file__))!r})
bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
bench.run_startup = lambda tmp, repeat: {{"seconds": {{}}, "targets": []}}
bench.main(["--only", "startup", "--no-save"])
print(json.dumps(sorted(m for m in ("torch", "sklearn") if m in sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("mlptrain bench: python ") and " torch " in lines[0]  # the child's probe reached the header
    assert lines[-1] == "[]"


def test_set_overrides_reach_every_fit_variant_and_the_record(monkeypatch, tmp_path):
    seen: list[list[str]] = []

    def child(cmd, timeout):
        seen.append(cmd)
        return {"rc": 1, "wall_seconds": 0.1, "peak_rss_mb": 1.0, "stdout": "", "stderr": "stopped here"}

    monkeypatch.setattr(bench, "run_child", child)
    monkeypatch.setattr(bench, "FIT_OVERRIDES", ["train.cuda_graph=true", "train.checkpoint.save_last=false"])
    result = bench.run_fit(bench.WORKLOADS["digits"], 2, "cpu", tmp_path, 60, "bf16-mixed")
    cmd = seen[0]
    assert cmd[cmd.index("train.cuda_graph=true") - 1] == "--set" and "train.checkpoint.save_last=false" in cmd
    assert result["error"] == "stopped here"
    with pytest.raises(SystemExit):
        bench.main(["--set", "train.cuda_graph", "--no-save"])  # no '=': refused before anything runs


def test_the_table_says_whether_fit_used_a_cuda_graph_and_its_warm_up(capsys):
    res = _res(a=10_000, b=50_000, e=100_000)
    for v in res.values():
        v.update(train_seconds=1.0, epochs=2)
    res["b"].update(cuda_graph="off: train.cuda_graph: false", warmup_seconds=0.31)
    res["e"].update(cuda_graph="on", warmup_seconds=0.3)
    bench.print_table("fashion_mnist", "cuda", res, 1_000_000, "NVIDIA H200")
    out = capsys.readouterr().out
    assert "b mlptrain fit: cuda_graph off: train.cuda_graph: false, 0.31 s of CUDA warm-up before its clock" in out
    assert "e fit bf16-mixed: cuda_graph on, 0.30 s" in out and "989 TFLOP/s" in out
