"""Benchmark: mlptrain fit against an idiomatic PyTorch loop, scikit-learn and the matmul floor.

Every variant trains the same MLP on the same train/test arrays for the same epochs, each in its
own fresh Python process, one after the other (never concurrently):

  a  idiomatic PyTorch: TensorDataset + DataLoader(shuffle=True, batch_size=128), loss.item() per
     batch, Adam(lr=1e-3), nn.Sequential of Linear/ReLU, then test accuracy
  b  `python -m mlptrain fit <generated yaml> --run-dir <tmp> --set ...` (the real CLI path);
     time = summary.json train_seconds, accuracy = summary.json metrics.test.accuracy
  c  scikit-learn MLPClassifier (adam, batch 128, lr 1e-3, max_iter=epochs, no early stopping)
  d  the matmul floor: forward + backward of the same layers (out.sum().backward()), no loss,
     no optimizer, over the same number of batches per epoch
  e  b with `train.precision: bf16-mixed` (what `precision: auto` picks there): run only on a
     device that multiplies bfloat16 natively (a GPU from Ampere on, a CPU with AVX512-BF16 or AMX)

Before them, ``startup``: the wall time of `mlptrain --help` and `mlptrain validate` (digits, a CSV,
a Parquet file), best of 5 fresh processes, beside a bare `python -c pass`; the goal is < 0.5 s. Then
a one-epoch `mlptrain fit configs/xor.yaml`, start to exit, beside `python -c "import torch"` (best of 3).

Usage: python bench/bench.py [--only startup,digits,fashion_mnist] [--epochs N] [--repeat R] [--quick]
                             [--set KEY=VALUE ...]   (config overrides for b and e, e.g. train.cuda_graph=true)
Speed ratios are samples/s of b (or e) over samples/s of the other variant: above 1 means mlptrain
is faster. A speed target is checked on the faster of b and e, and says which; the test accuracy
column shows whether the speed was bought with worse maths.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.jsonl"
# Fashion-MNIST where Debian's dataset-fashion-mnist puts it, or the directory named by
# MLPTRAIN_FASHION_ROOT (a machine without the package: see bench/README "On a GPU machine").
FASHION_ROOT = os.environ.get("MLPTRAIN_FASHION_ROOT")
FASHION_FILE = Path(FASHION_ROOT or "/usr/share/datasets/fashion-mnist") / "train-images-idx3-ubyte.gz"
BATCH = 128
LR = 1e-3

# name -> data name, hidden sizes, default epochs, default repeats (each repeat a fresh process)
WORKLOADS: dict[str, dict[str, Any]] = {
    "digits": {"data": "digits", "hidden": [256, 256], "epochs": 20, "repeat": 3},
    "fashion_mnist": {"data": "fashion_mnist", "hidden": [1024, 1024], "epochs": 3, "repeat": 2},
}

# Reference figures to aim by (2 CPU cores, torch 2.14.1 CPU), ms per epoch.
REFERENCE_MS = {"digits": {"a": 18.0, "d": 5.0, "c": 19.0}}

NAMES = {
    "a": "a idiomatic torch",
    "b": "b mlptrain fit",
    "c": "c sklearn MLP",
    "d": "d matmul floor",
    "e": "e fit bf16-mixed",
}
FITS = {"b": "32", "e": "bf16-mixed"}  # the variants that run `mlptrain fit`, with their train.precision

# Dense bfloat16 peak of a GPU (TFLOP/s, vendor spec sheets), to print beside what e achieves.
GPU_PEAK_BF16 = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def gpu_peak(name: str) -> Optional[float]:
    return next((peak for key, peak in GPU_PEAK_BF16.items() if key in name), None)


# ------------------------------------------------------------------------------------------------
# The data every variant sees: mlptrain.data.prepare on the same DataSpec as variant b's config.


def data_section(data: str) -> dict[str, Any]:
    root = {"root": str(Path(FASHION_ROOT).resolve())} if data == "fashion_mnist" and FASHION_ROOT else {}
    return {"name": data, **root, "split": {"val": 0.15, "test": 0.15, "seed": 0}, "scale": "standard"}


def load_arrays(data: str):
    from mlptrain.config import DataSpec
    from mlptrain.data import prepare

    p = prepare(DataSpec.model_validate(data_section(data)), "multiclass")
    assert p.test is not None
    return p.train.x, p.train.y, p.test.x, p.test.y, p.out_features


def make_model(in_features: int, hidden: list[int], out_features: int):
    from torch import nn

    layers: list[Any] = []
    width = in_features
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def weight_count(in_features: int, hidden: list[int], out_features: int) -> int:
    """Multiply-accumulate weights of the Linear layers (biases excluded): FLOPs = 6 * this * samples."""
    sizes = [in_features, *hidden, out_features]
    return sum(a * b for a, b in zip(sizes, sizes[1:]))


def self_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------------
# Workers: each runs in its own process and writes one JSON file.


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _accuracy(model, x, y, device) -> float:
    import torch

    model.eval()
    with torch.inference_mode():
        pred = model(torch.from_numpy(x).to(device)).argmax(dim=1).cpu()
    return float((pred == torch.from_numpy(y)).float().mean())


def worker_torch(args: argparse.Namespace) -> dict[str, Any]:
    """Variant a: the loop a PyTorch user writes first."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    xtr, ytr, xte, yte, k = load_arrays(args.data)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_model(xtr.shape[1], args.hidden, k).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(
        TensorDataset(torch.from_numpy(xtr), torch.from_numpy(ytr)), batch_size=BATCH, shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    epoch_s: list[float] = []
    for _ in range(args.epochs):
        _sync(device)
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        _sync(device)
        epoch_s.append(time.perf_counter() - t0)
    return {
        "train_seconds": sum(epoch_s), "epoch_seconds": epoch_s, "epochs": args.epochs,
        "n_train": len(xtr), "in_features": int(xtr.shape[1]), "classes": k,
        "test_accuracy": _accuracy(model, xte, yte, device), "self_rss_mb": self_rss_mb(),
    }


def worker_floor(args: argparse.Namespace) -> dict[str, Any]:
    """Variant d: forward + backward of the layers alone over the same batches per epoch."""
    import torch

    xtr, ytr, xte, yte, k = load_arrays(args.data)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_model(xtr.shape[1], args.hidden, k).to(device)
    x = torch.from_numpy(xtr).to(device)
    batches = [x[i : i + BATCH] for i in range(0, len(x), BATCH)]
    epoch_s: list[float] = []
    for _ in range(args.epochs):
        _sync(device)
        t0 = time.perf_counter()
        for xb in batches:
            model.zero_grad(set_to_none=True)
            model(xb).sum().backward()
        _sync(device)
        epoch_s.append(time.perf_counter() - t0)
    return {
        "train_seconds": sum(epoch_s), "epoch_seconds": epoch_s, "epochs": args.epochs,
        "n_train": len(xtr), "in_features": int(xtr.shape[1]), "classes": k, "test_accuracy": None,
        "self_rss_mb": self_rss_mb(),
    }


def worker_sklearn(args: argparse.Namespace) -> dict[str, Any]:
    """Variant c: scikit-learn's MLPClassifier, all epochs (no early stopping, tol 0)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    xtr, ytr, xte, yte, k = load_arrays(args.data)
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(args.hidden), activation="relu", solver="adam", alpha=0.0,
        batch_size=BATCH, learning_rate_init=LR, max_iter=args.epochs, shuffle=True, random_state=0,
        tol=0.0, n_iter_no_change=10**9, early_stopping=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(xtr, ytr)
        seconds = time.perf_counter() - t0
    return {
        "train_seconds": seconds, "epoch_seconds": None, "epochs": int(clf.n_iter_),
        "n_train": len(xtr), "in_features": int(xtr.shape[1]), "classes": k,
        "test_accuracy": float(clf.score(xte, yte)), "self_rss_mb": self_rss_mb(),
    }


def worker_info(args: argparse.Namespace) -> dict[str, Any]:
    """The facts the parent prints and records, probed here so that the parent never imports torch or
    scikit-learn (see run_child): versions, the machine, which devices multiply bfloat16 natively, the
    GPU's name and, with --data, the shape of the training split."""
    import sklearn
    import torch

    from mlptrain.engine import native_bf16

    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "sklearn": sklearn.__version__},
        "machine": {
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": cuda,
        },
        "bf16": {"cpu": native_bf16(torch.device("cpu")), **({"cuda": native_bf16(torch.device("cuda"))} if cuda else {})},
    }
    if hasattr(os, "sched_getaffinity"):
        info["machine"]["cpus_usable"] = len(os.sched_getaffinity(0))
    if cuda:
        info["machine"]["gpu"] = torch.cuda.get_device_name(0)
    if args.data:
        xtr, _, _, _, k = load_arrays(args.data)
        info["shape"] = [len(xtr), int(xtr.shape[1]), k]
    return info


WORKERS = {"a": worker_torch, "c": worker_sklearn, "d": worker_floor, "info": worker_info}


# ------------------------------------------------------------------------------------------------
# The parent: one child process at a time, peak RSS from wait4.


def run_child(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run one child to completion; its own peak RSS comes from wait4 (Linux: KiB).

    Linux carries the parent's resident size at fork into the child's ru_maxrss (exec keeps the
    high-water mark of the forked copy), so a child's peak reads as at least the parent's: a parent
    that had imported torch and scikit-learn (~900 MB here) made a 540 MB child read 914 MB. The
    parent therefore never imports them (worker_info probes what it needs in a child)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return {
            "rc": proc.returncode, "wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0,
            "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace"),
        }


def per_epoch_from_csv(path: Path, epochs: int, train_seconds: float) -> Optional[list[float]]:
    """Per-epoch seconds from metrics.csv when it has a time column (per-epoch or cumulative)."""
    import csv

    if not path.is_file():
        return None
    rows = list(csv.DictReader(path.open()))
    if not rows:
        return None
    cols = [c for c in rows[0] if any(w in c.lower() for w in ("time", "second", "elapsed", "duration"))]
    for col in cols:
        try:
            vals = [float(r[col]) for r in rows]
        except (TypeError, ValueError):
            continue
        if len(vals) != epochs:
            continue
        cumulative = all(b >= a for a, b in zip(vals, vals[1:])) and abs(vals[-1] - train_seconds) < 0.25 * max(train_seconds, 1e-9) \
            and abs(sum(vals) - train_seconds) > abs(vals[-1] - train_seconds)
        if "elapsed" in col.lower() or cumulative:
            return [b - a for a, b in zip([0.0, *vals], vals)]
        return vals
    return None


THREADS_PINNED = False  # set by --threads
FIT_OVERRIDES: list[str] = []  # --set KEY=VALUE: passed to every `mlptrain fit` (b, e)


def fit_train_keys() -> set[str]:
    from mlptrain.config import TrainSpec

    return set(TrainSpec.model_fields)


def run_fit(workload: dict[str, Any], epochs: int, device: str, tmp: Path, timeout: float, precision: str = "32") -> dict[str, Any]:
    """Variant b (or e: bf16-mixed) through the real CLI."""
    import yaml

    config = {
        "name": f"bench_{workload['data']}",
        "data": data_section(workload["data"]),
        "model": {"hidden": list(workload["hidden"]), "activation": "relu"},
        "optimizer": {"name": "adam", "lr": LR},
        "scheduler": {"name": "none"},
        "train": {"batch_size": BATCH, "epochs": epochs, "early_stopping": {"enabled": False}, "precision": precision},
        "logging": {"histograms_every": 0},
    }
    cfg = tmp / f"{workload['data']}.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = tmp / f"run_{workload['data']}_{device.replace(':', '')}_{time.monotonic_ns()}"
    cmd = [
        sys.executable, "-m", "mlptrain", "fit", str(cfg), "--run-dir", str(run_dir),
        "--set", f"train.epochs={epochs}", "--set", f"train.batch_size={BATCH}", "--set", "logging.histograms_every=0",
        "--device", device,
    ]
    for override in FIT_OVERRIDES:
        cmd += ["--set", override]
    threads = os.environ.get("OMP_NUM_THREADS") if THREADS_PINNED else None
    if threads and "threads" in fit_train_keys():
        cmd += ["--set", f"train.threads={threads}"]  # mlptrain sets torch's threads itself, over OMP_NUM_THREADS
    child = run_child(cmd, timeout)
    result: dict[str, Any] = {"rc": child["rc"], "wall_seconds": child["wall_seconds"], "peak_rss_mb": child["peak_rss_mb"], "config": config}
    result["cmd"] = cmd[1:]
    summary_path = run_dir / "summary.json"
    if child["rc"] != 0 or not summary_path.is_file():
        result["error"] = (child["stderr"].strip().splitlines() or [f"exit code {child['rc']}"])[-1]
        result["stderr_tail"] = child["stderr"][-2000:]
        return result
    summary = json.loads(summary_path.read_text())
    ran = int(summary.get("epochs_run", epochs))
    test = summary.get("metrics", {}).get("test", {})
    result.update({
        "train_seconds": float(summary["train_seconds"]), "epochs": ran,
        "epoch_seconds": per_epoch_from_csv(run_dir / "metrics.csv", ran, float(summary["train_seconds"])),
        "test_accuracy": test.get("accuracy"), "device_reported": summary.get("device"),
        "final_weights": summary.get("final_weights"), "steps": summary.get("steps"),
        "wall_seconds_summary": summary.get("wall_seconds"),
        "cuda_graph": summary.get("cuda_graph"), "warmup_seconds": summary.get("warmup_seconds"),
    })
    return result


def run_worker(variant: str, workload: dict[str, Any], epochs: int, device: str, tmp: Path, timeout: float) -> dict[str, Any]:
    return run_worker_args(variant, [
        "--data", workload["data"], "--hidden", ",".join(map(str, workload["hidden"])), "--epochs", str(epochs),
        "--device", device,
    ], tmp, timeout)


def run_worker_args(worker: str, argv: list[str], tmp: Path, timeout: float) -> dict[str, Any]:
    """``bench.py --worker WORKER ARGV`` in a fresh process; its JSON result, or an ``error``."""
    out = tmp / f"{worker}_{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, *argv, "--result", str(out)]
    child = run_child(cmd, timeout)
    result: dict[str, Any] = {"rc": child["rc"], "wall_seconds": child["wall_seconds"], "peak_rss_mb": child["peak_rss_mb"]}
    if child["rc"] != 0 or not out.is_file():
        result["error"] = (child["stderr"].strip().splitlines() or [f"exit code {child['rc']}"])[-1]
        result["stderr_tail"] = child["stderr"][-2000:]
        return result
    result.update(json.loads(out.read_text()))
    return result


def run_once(variant: str, workload: dict[str, Any], epochs: int, device: str, tmp: Path, timeout: float) -> dict[str, Any]:
    """One fresh process of a variant."""
    if variant in FITS:
        return run_fit(workload, epochs, device, tmp, timeout, FITS[variant])
    return run_worker(variant, workload, epochs, device, tmp, timeout)


def run_variants(variants: list[str], workload: dict[str, Any], epochs: int, device: str, repeat: int, tmp: Path,
                 timeout: float) -> dict[str, dict[str, Any]]:
    """Every variant ``repeat`` times in rounds (a b c d e, a b c d e, ...), each a fresh process; keep each
    variant's fastest run (noise only ever adds time). Rounds, not a variant's runs back to back: a slow
    spell of a shared machine then hits every variant once instead of all runs of one."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    failed: dict[str, dict[str, Any]] = {}
    for _ in range(repeat):
        for v in variants:
            if v in failed:
                continue
            r = run_once(v, workload, epochs, device, tmp, timeout)
            if "error" in r:
                failed[v] = r
            else:
                runs[v].append(r)
    res: dict[str, dict[str, Any]] = {}
    for v in variants:
        if v in failed:
            res[v] = failed[v]
            continue
        ordered = sorted(runs[v], key=lambda r: r["train_seconds"])
        chosen = dict(ordered[0])
        chosen["repeats_train_seconds"] = [round(r["train_seconds"], 4) for r in runs[v]]  # in run order
        chosen["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs[v])
        if "n_train" in chosen:
            chosen["samples_per_s"] = chosen["n_train"] * chosen["epochs"] / chosen["train_seconds"]
        res[v] = chosen
    return res


# ------------------------------------------------------------------------------------------------
# Reporting


def fmt_ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def print_table(workload_name: str, device: str, res: dict[str, dict[str, Any]], weights: int, gpu_name: str = "") -> None:
    cuda = device.startswith("cuda")
    head = f"{'variant':<20} {'ms/epoch':>9} {'samples/s':>11} {'peak RSS MB':>12} {'test acc':>9}"
    head += f" {'TFLOP/s':>8}" if cuda else ""
    print(head + "  per-epoch ms")
    for v, r in res.items():
        if "error" in r:
            print(f"{NAMES[v]:<20} FAILED: {r['error']}")
            continue
        per_epoch = r["train_seconds"] / r["epochs"]
        acc = "-" if r.get("test_accuracy") is None else f"{r['test_accuracy']:.4f}"
        line = f"{NAMES[v]:<20} {per_epoch * 1e3:>9.1f} {r['samples_per_s']:>11,.0f} {r['peak_rss_mb']:>12.0f} {acc:>9}"
        if cuda:
            line += f" {6 * weights * r['samples_per_s'] / 1e12:>8.2f}"
        eps = r.get("epoch_seconds")
        if eps:
            line += "  " + " ".join(fmt_ms(s) for s in eps)
        else:
            line += "  (no per-epoch times)" if v not in FITS else "  (metrics.csv has no time column; train_seconds/epochs)"
        if len(r.get("repeats_train_seconds", [])) > 1:
            line += f"  [best of {len(r['repeats_train_seconds'])} runs: {r['repeats_train_seconds']} s]"
        print(line)
    for v in (v for v in FITS if cuda and v in res and "error" not in res[v] and res[v].get("warmup_seconds") is not None):
        r = res[v]
        warm = f", {r['warmup_seconds']:.2f} s of CUDA warm-up before its clock (not in its time)" if r["warmup_seconds"] else ""
        print(f"{NAMES[v]}: cuda_graph {r['cuda_graph']}{warm}")
    peak = gpu_peak(gpu_name) if cuda else None
    if peak:
        print(f"TFLOP/s = 6 x weights x samples/s; the GPU's dense bf16 peak is {peak:.0f} TFLOP/s (spec sheet)")
    ref = REFERENCE_MS.get(workload_name)
    if ref and device == "cpu":
        print("reference (2 cores, torch 2.14.1 CPU): " + ", ".join(f"{NAMES[k]} {v:.0f} ms/epoch" for k, v in ref.items()))


MARKS = {True: "PASS", False: "MISS", None: "n/a "}  # a target's pass: met, missed, not measured


def ratios_and_targets(workload_name: str, device: str, res: dict[str, dict[str, Any]]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    ok = {v: r for v, r in res.items() if "error" not in r}
    ratios: dict[str, float] = {}
    for fit in (v for v in FITS if v in ok):
        for other in ("a", "c", "d"):
            if other in ok:
                ratios[f"{fit}/{other}"] = ok[fit]["samples_per_s"] / ok[other]["samples_per_s"]
    if ratios:
        print("speed ratios (samples/s of b or e / samples/s of X; > 1 means mlptrain fit is faster than X):")
        for k, v in ratios.items():
            extra = f"   (time_b/time_d = {1 / v:.2f}: how many times the floor's time b takes; 1.00 is the floor)" if k == "b/d" else ""
            print(f"  {k} = {v:.2f}x{extra}")

    def fastest(other: str) -> tuple[Optional[float], str]:
        """mlptrain's speed over ``other`` at its faster precision (b: 32, e: bf16-mixed), and which."""
        found = [(ratios[f"{fit}/{other}"], FITS[fit]) for fit in FITS if f"{fit}/{other}" in ratios]
        return max(found) if found else (None, "")

    targets: list[dict[str, Any]] = []

    def target(name: str, value: Optional[float], goal: str, passed: Optional[bool]) -> None:
        targets.append({"target": name, "value": value, "goal": goal, "pass": passed})

    def speed(name: str, other: str, goal: float) -> None:
        value, precision = fastest(other)
        label = f"{name} b/{other} speed" + (f" ({precision})" if precision else "")
        target(label, value, f">= {goal:g}x", None if value is None else value >= goal)

    if device != "cpu":
        if workload_name == "fashion_mnist":
            value = ratios.get("e/a")
            target("fashion e/a speed on the GPU (bf16-mixed)", value, ">= 10x", None if value is None else value >= 10)
    elif workload_name == "digits":
        speed("digits", "a", 1.8)
        speed("digits", "c", 1.6)
    elif workload_name == "fashion_mnist":
        speed("fashion", "a", 1.8)
        td = None if "b/d" not in ratios else 1 / ratios["b/d"]
        target("fashion time_b/time_d", td, "<= 1.35", None if td is None else td <= 1.35)
        eps = ok.get("b", {}).get("epoch_seconds")
        slow = eps[-1] / eps[1] if eps and len(eps) >= 3 else None
        target("fashion b last epoch / second epoch", slow, "<= 1.10", None if slow is None else slow <= 1.10)
        rss = ok.get("b", {}).get("peak_rss_mb")
        target("fashion fit peak RSS (MB)", rss, "< 1200 MB (1.2 GB)", None if rss is None else rss < 1200)
    if "e" in ok and "a" in ok and ok["e"].get("test_accuracy") is not None and ok["a"].get("test_accuracy") is not None:
        gap = ok["e"]["test_accuracy"] - ok["a"]["test_accuracy"]
        target("e test accuracy - a test accuracy", gap, ">= -0.015 (noise)", gap >= -0.015)
    if targets:
        print(f"targets ({'CPU' if device == 'cpu' else device}):")
        for t in targets:
            mark = MARKS[t["pass"]]
            value = "-" if t["value"] is None else f"{t['value']:.2f}"
            why = ""
            if t["pass"] is None and "epoch" in t["target"]:
                why = "  (needs per-epoch times of b: metrics.csv has no time column, or fewer than 3 epochs)"
            print(f"  {mark}  {t['target']:<38} {value:>8}  goal {t['goal']}{why}")
    return ratios, targets


# ------------------------------------------------------------------------------------------------
# Startup: `mlptrain --help` and `mlptrain validate` answer in under 0.5 s (torch, scikit-learn and
# pandas are imported only by the commands that need them); a one-epoch fit, beside `import torch`.

STARTUP_GOAL_S = 0.5
IMPORT_TORCH = "python -c 'import torch'"
FIT_XOR = "mlptrain fit (XOR, 1 epoch)"


def startup_files(tmp: Path) -> dict[str, Path]:
    """Configs for validate: built-in digits, and a 2,000-row CSV and Parquet file with text labels,
    a text category, a bool column and empty cells (the tabular path with every kind of column)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    n = 2000
    table = pa.table({
        "id": [f"u{i:04d}" for i in range(n)],
        "size": [None if i % 11 == 0 else (i * 7919 % 1000) / 100 for i in range(n)],
        "color": [["red", "green", "blue", None][i % 4] for i in range(n)],
        "member": [None if i % 13 == 0 else i % 3 == 0 for i in range(n)],
        "label": [["buy", "skip"][(i * 31 % 7) > 3] for i in range(n)],
    })
    pacsv.write_csv(table, tmp / "shop.csv")
    pq.write_table(table, tmp / "shop.parquet")
    configs = {"digits": "data: {name: digits}\nmodel: {hidden: [256, 256]}\n"}
    for kind in ("csv", "parquet"):
        configs[kind] = (f"data: {{name: {kind}, path: {tmp / ('shop.' + kind)}, target: label, id: id, missing: impute_median}}\n"
                         "model: {hidden: [64]}\ntrain: {early_stopping: {monitor: val/accuracy}}\n")
    paths = {}
    for name, text in configs.items():
        paths[name] = tmp / f"startup_{name}.yaml"
        paths[name].write_text(text)
    return paths


def best_seconds(cmd: list[str], repeat: int, fresh: Optional[Path] = None) -> tuple[Optional[float], str]:
    """The fastest of ``repeat`` fresh runs of ``cmd`` (wall seconds, until the process has exited), or
    None and the error's last line. ``fresh`` (a run directory the command creates) is removed before each run."""
    times = []
    for _ in range(repeat):
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            return None, (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        times.append(time.perf_counter() - t0)
    return min(times), ""


def run_startup(tmp: Path, repeat: int) -> dict[str, Any]:
    """Each command's best wall time over fresh processes, beside a bare interpreter's start measured now."""
    script = Path(sys.executable).parent / "mlptrain"
    mlptrain = [str(script)] if script.is_file() else [sys.executable, "-m", "mlptrain"]
    configs = startup_files(tmp)
    fit_dir = tmp / "startup_fit"
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "mlptrain --help": mlptrain + ["--help"],
        "mlptrain validate (digits)": mlptrain + ["validate", str(configs["digits"])],
        "mlptrain validate (CSV, 2,000 rows)": mlptrain + ["validate", str(configs["csv"])],
        "mlptrain validate (Parquet, 2,000 rows)": mlptrain + ["validate", str(configs["parquet"])],
        IMPORT_TORCH: [sys.executable, "-c", "import torch"],
        FIT_XOR: mlptrain + ["fit", str(ROOT / "configs" / "xor.yaml"), "--set", "train.epochs=1", "--run-dir", str(fit_dir)],
    }
    heavy = min(repeat, 3)  # the two that load torch take seconds each
    print(f"\n== startup: best of {repeat} fresh processes each ({heavy} for the two with torch); the goal is < {STARTUP_GOAL_S:g} s")
    seconds: dict[str, Optional[float]] = {}
    for name, cmd in commands.items():
        if name in (IMPORT_TORCH, FIT_XOR):
            seconds[name], error = best_seconds(cmd, heavy, fresh=fit_dir if name == FIT_XOR else None)
        else:
            seconds[name], error = best_seconds(cmd, repeat)
        print(f"  {name:<40} {'failed: ' + error if seconds[name] is None else f'{seconds[name]:.3f} s'}")
    return {"seconds": seconds, "targets": startup_targets(seconds)}


def startup_targets(seconds: dict[str, Optional[float]]) -> list[dict[str, Any]]:
    """Each mlptrain command that needs no torch under the goal; the ratio to a bare interpreter start
    shows what the command itself costs on this machine, measured in the same run. A one-epoch fit
    has no goal: it is set beside `import torch`, which is most of it."""
    base = seconds.get("python -c pass")
    targets = []
    print(f"targets (startup; x: times a bare `python -c pass`, {base or 0:.3f} s here):")
    for name, value in seconds.items():
        if name in ("python -c pass", IMPORT_TORCH, FIT_XOR):
            continue
        passed = None if value is None else value < STARTUP_GOAL_S
        targets.append({"target": name, "value": value, "goal": f"< {STARTUP_GOAL_S:g} s", "pass": passed})
        mark = MARKS[passed]
        ratio = f"{value / base:5.1f}x" if value and base else "  -  "
        print(f"  {mark}  {name:<40} {'-' if value is None else f'{value:.3f}':>6} s  {ratio}  goal < {STARTUP_GOAL_S:g} s")
    fit, torch_s = seconds.get(FIT_XOR), seconds.get(IMPORT_TORCH)
    if fit is not None and torch_s is not None:
        print(f"  {FIT_XOR}: {fit:.3f} s from start to exit, {fit - torch_s:.3f} s more than `import torch` alone "
              f"({torch_s:.3f} s); no goal")
    return targets


def probe(tmp: Path, data: Optional[str] = None) -> dict[str, Any]:
    """worker_info's facts (with the shape of ``data``'s training split), from a child process."""
    info = run_worker_args("info", ["--data", data] if data else [], tmp, 600)
    if "error" in info:
        raise SystemExit(f"bench: probing torch failed: {info['error']}\n{info.get('stderr_tail', '')}")
    return info


def fashion_available() -> tuple[bool, str]:
    from mlptrain.config import DataName

    if "fashion_mnist" not in typing.get_args(DataName):
        return False, "mlptrain.config.DataName has no 'fashion_mnist' yet"
    if not FASHION_FILE.is_file():
        return False, f"{FASHION_FILE} is missing"
    return True, ""


def warn_load() -> Optional[float]:
    """Other processes on the CPUs make every number here noisy: say so."""
    if not hasattr(os, "getloadavg"):
        return None
    load = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load > 0.5 * cpus:
        print(f"warning: 1-minute load average {load:.2f} on {cpus} CPUs: other processes compete for the cores; timings are noisy")
    return load


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated workloads: startup, " + ", ".join(WORKLOADS))
    ap.add_argument("--epochs", type=int, help="epochs for every workload (default: digits 20, fashion_mnist 3)")
    ap.add_argument("--repeat", type=int, help="fresh processes per variant, fastest kept (default: digits 3, fashion_mnist 2)")
    ap.add_argument("--variants", default="abcde", help="which variants to run (default abcde; e only where bf16 is native)")
    ap.add_argument("--devices", help="comma-separated: cpu,cuda (default cpu, plus cuda when available)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 1 repeat, digits only unless --only")
    ap.add_argument("--no-save", action="store_true", help="do not append to bench/results.jsonl")
    ap.add_argument("--threads", type=int, help="set OMP/MKL/OpenBLAS threads of every child (default: libraries' own)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the `mlptrain fit` variants b and e (repeatable), e.g. train.cuda_graph=true")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    # worker mode (internal)
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--hidden", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.threads:
        global THREADS_PINNED
        THREADS_PINNED = True
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)  # children inherit os.environ
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        ap.error(f"--set {bad[0]!r}: write KEY=VALUE, e.g. --set train.cuda_graph=true")
    FIT_OVERRIDES[:] = args.overrides
    if args.worker:
        args.hidden = [int(h) for h in (args.hidden or "").split(",") if h]
        result = WORKERS[args.worker](args)
        Path(args.result).write_text(json.dumps(result))
        return 0

    names = [n.strip() for n in args.only.split(",")] if args.only else (["startup", "digits"] if args.quick else ["startup", *WORKLOADS])
    unknown = [n for n in names if n not in WORKLOADS and n != "startup"]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from startup, {', '.join(WORKLOADS)}")
    tmp = Path(tempfile.mkdtemp(prefix="mlptrain-bench-"))
    try:
        info = probe(tmp)
    except SystemExit:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    vers, mach = info["versions"], info["machine"]
    if args.devices:
        devices = [d.strip() for d in args.devices.split(",")]
    else:
        devices = ["cpu"] + (["cuda"] if mach["cuda"] else [])
    print(f"mlptrain bench: python {vers['python']}, torch {vers['torch']}, sklearn {vers['sklearn']}; "
          f"{mach['cpu_count']} CPUs, torch threads {mach['torch_threads']}; {mach['platform']}"
          + (f"; GPU {mach['gpu']}" if mach.get("gpu") else "; no CUDA"))
    print("each variant runs in its own fresh process, one after the other; times are the training loop only")
    if FIT_OVERRIDES:
        print("mlptrain fit (b, e) with --set " + " --set ".join(FIT_OVERRIDES))
    load_before = warn_load()

    try:
        for name in names:
            if name == "startup":
                result = run_startup(tmp, 2 if args.quick else 5)
                if not args.no_save:
                    with RESULTS.open("a") as f:
                        f.write(json.dumps({
                            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                            "workload": "startup", "machine": mach, "versions": vers, **result,
                        }) + "\n")
                continue
            wl = WORKLOADS[name]
            if name == "fashion_mnist":
                ok, why = fashion_available()
                if not ok:
                    print(f"\n== fashion_mnist: skipped ({why})")
                    continue
            epochs = args.epochs or (2 if args.quick else wl["epochs"])
            repeat = args.repeat or (1 if args.quick else wl["repeat"])
            for device in devices:
                variants = [v for v in "abcde" if v in args.variants and (device == "cpu" or v != "c")
                            and (v != "e" or info["bf16"].get(device.split(":")[0], False))]
                print(f"\n== {name}: hidden {wl['hidden']}, {epochs} epochs, batch {BATCH}, Adam lr {LR:g}, device {device}, "
                      f"{repeat} round(s) of every variant")
                res = run_variants(variants, wl, epochs, device, repeat, tmp, args.timeout)
                shape = next(((r["n_train"], r["in_features"], r["classes"]) for r in res.values() if "n_train" in r), None)
                if shape is None:  # only b ran (or every worker failed): read the shapes as the workers do
                    shape = tuple(probe(tmp, wl["data"])["shape"])
                n_train, in_features, classes = shape
                for fit in (v for v in FITS if v in res and "error" not in res[v]):
                    res[fit]["n_train"] = n_train
                    res[fit]["samples_per_s"] = n_train * res[fit]["epochs"] / res[fit]["train_seconds"]
                weights = weight_count(in_features, wl["hidden"], classes)
                print(f"train rows {n_train}, {weights:,} weights")
                print_table(name, device, res, weights, mach.get("gpu", ""))
                ratios, targets = ratios_and_targets(name, device, res)
                record = {
                    "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "workload": name, "hidden": wl["hidden"], "epochs": epochs, "batch_size": BATCH, "lr": LR,
                    "repeat": repeat, "quick": args.quick, "device": device, "machine": mach, "versions": vers,
                    "n_train": n_train, "weights": weights, "threads_env": args.threads, "fit_overrides": FIT_OVERRIDES,
                    "load_before": load_before, "load_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                    "variants": {v: {k: val for k, val in r.items() if k not in ("stderr_tail", "config")} for v, r in res.items()},
                    "fit_config": res.get("b", {}).get("config"),
                    "ratios": ratios, "targets": targets,
                }
                if device != "cpu":
                    record["tflops"] = {v: 6 * weights * r["samples_per_s"] / 1e12 for v, r in res.items() if "samples_per_s" in r}
                for v, r in res.items():
                    if "error" in r and r.get("stderr_tail"):
                        print(f"--- {NAMES[v]} stderr (tail) ---\n{r['stderr_tail']}")
                if not args.no_save:
                    with RESULTS.open("a") as f:
                        f.write(json.dumps(record) + "\n")
        if not args.no_save:
            print(f"\nappended to {RESULTS.relative_to(ROOT)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
