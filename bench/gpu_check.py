"""Check mlptrain's CUDA path on a GPU: train.cuda_graph against op-by-op training, then speed.

    python bench/gpu_check.py [--fashion-root DIR] [--out DIR]

1. Several setups (optimizers, dropout, BatchNorm/LayerNorm, bf16-mixed, clipping, an epoch-wise
   schedule that makes the graph record again, manual backprop) train twice on CUDA, with
   ``train.cuda_graph`` on and off: the graph run must say ``cuda_graph: on`` and end with the same
   test metrics (within 2e-2: the same ops in the same order, so far closer in practice).
2. A graph run stopped by SIGINT mid-epoch and resumed ends with the metrics of the run never stopped.
3. With Fashion-MNIST at hand, the bench's setup ([1024, 1024], batch 128, 3 epochs) in 32 and
   bf16-mixed, graph on and off: seconds per epoch, warm-up, test accuracy.

Exit 0 when 1 and 2 hold, 1 when not, 2 without CUDA. Tests never run this (they have no GPU);
bench/README "On a GPU machine" says how to run it.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

BLOBS = {"name": "blobs", "n_samples": 3000, "n_classes": 3, "n_features": 8, "noise": 1.5, "seed": 2}
NO_ES = {"early_stopping": {"enabled": False}}
SETUPS: dict[str, dict[str, Any]] = {
    "adam dropout step-lr bf16 clip": {
        "model": {"hidden": [64, 64], "dropout": 0.2}, "optimizer": {"name": "adam", "lr": 0.01},
        "scheduler": {"name": "step", "step_size": 1, "gamma": 0.7},
        "train": {"epochs": 4, "batch_size": 64, "precision": "bf16-mixed", "grad_clip": 1.0, **NO_ES,
                  "checkpoint": {"every_steps": 7}}},
    "sgd momentum manual-backprop": {
        "model": {"hidden": [64, 64], "activation": "relu"}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 4, "batch_size": 64, **NO_ES}},
    "rmsprop batchnorm plateau": {
        "model": {"hidden": [32], "norm": "batch"}, "optimizer": {"name": "rmsprop", "lr": 0.01, "momentum": 0.5},
        "scheduler": {"name": "reduce_on_plateau", "patience": 0, "factor": 0.5}, "train": {"epochs": 5, "batch_size": 50}},
    "nadam gelu autograd": {
        "model": {"hidden": [32], "activation": "gelu"}, "optimizer": {"name": "nadam", "lr": 0.01},
        "train": {"epochs": 3, "batch_size": 40, "backprop": "autograd", **NO_ES}},
    "adamw layernorm": {
        "model": {"hidden": [32], "norm": "layer"}, "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
        "train": {"epochs": 3, "batch_size": 40, **NO_ES}},
}


class SignalAt:
    """Progress that sends SIGINT to this process once training has done ``step`` steps."""

    def __init__(self, step: int):
        self.step, self.done = step, 0

    def start_epoch(self, *args: Any) -> None: ...
    def end_epoch(self, *args: Any) -> None: ...

    def advance(self, steps: int, loss: Optional[float]) -> None:
        before, self.done = self.done, self.done + steps
        if before < self.step <= self.done:
            os.kill(os.getpid(), signal.SIGINT)


def train(raw: dict[str, Any], out: Path, name: str, graph: bool, progress: Any = None, device: str = "cuda"):
    from mlptrain import pipeline
    from mlptrain.config import validate_dict

    spec = validate_dict({"logging": {"progress": "none", "step_every": 4, "histograms_every": 0, "runs_dir": str(out)},
                          **raw, "train": {**raw["train"], "cuda_graph": graph}}, name)
    path = pipeline.start_run(spec, None, out / f"{name.replace(' ', '_')}-graph_{graph}-{time.monotonic_ns()}")
    return pipeline.train(spec, path, device, progress)


def check_setups(out: Path, device: str = "cuda") -> bool:
    ok = True
    for name, raw in SETUPS.items():
        try:
            g = train({"data": BLOBS, **raw}, out, name, True, device=device)
            e = train({"data": BLOBS, **raw}, out, name, False, device=device)
            diff = max(abs(g.metrics["test"][k] - v) for k, v in e.metrics["test"].items())
            good = g.summary["cuda_graph"] == "on" and diff < 2e-2
            print(f"{'PASS' if good else 'FAIL'}  {name:<32} graph: {g.summary['cuda_graph']:<24} {g.summary['train_seconds']:7.3f} s"
                  f" | op by op {e.summary['train_seconds']:7.3f} s | test metrics max |diff| {diff:.1e}", flush=True)
            ok &= good
        except Exception:  # noqa: BLE001 - report every setup
            traceback.print_exc()
            print(f"FAIL  {name}: raised", flush=True)
            ok = False
    return ok


def check_resume(out: Path, device: str = "cuda") -> bool:
    from mlptrain import pipeline
    from mlptrain.errors import Interrupted

    raw = {"data": BLOBS, **SETUPS["adam dropout step-lr bf16 clip"]}
    try:
        whole = train(raw, out, "resume whole", True, device=device)
        try:
            train(raw, out, "resume stopped", True, SignalAt(50), device)  # epoch 2 of 4, mid-epoch
            print("FAIL  resume: the run was not stopped", flush=True)
            return False
        except Interrupted:
            pass
        path = max(out.glob("resume_stopped-graph_True-*"))
        spec, state = pipeline.load_resume(path, [])
        resumed = pipeline.resume(path, spec, state, device, None)
        diff = max(abs(resumed.metrics["test"][k] - v) for k, v in whole.metrics["test"].items())
        good = resumed.summary["cuda_graph"] == "on" and diff < 1e-4
        print(f"{'PASS' if good else 'FAIL'}  graph run stopped mid-epoch and resumed ({resumed.summary['cuda_graph']}): "
              f"test metrics max |diff| {diff:.1e}", flush=True)
        return good
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print("FAIL  resume: raised", flush=True)
        return False


def fashion_speed(out: Path, root: Path) -> None:
    data = {"name": "fashion_mnist", "root": str(root.resolve()), "split": {"val": 0.15, "test": 0.15, "seed": 0}, "scale": "standard"}
    for precision in ("bf16-mixed", "32"):
        for graph in (True, False):
            raw = {"data": data, "model": {"hidden": [1024, 1024], "activation": "relu"}, "optimizer": {"name": "adam", "lr": 1e-3},
                   "scheduler": {"name": "none"}, "train": {"batch_size": 128, "epochs": 3, "precision": precision, **NO_ES}}
            done = train(raw, out, f"fashion {precision}", graph)
            s = done.summary
            with open(done.run_dir / "metrics.csv", newline="") as f:
                epochs = [round(float(r["epoch_seconds"]) * 1e3) for r in csv.DictReader(f)]
            print(f"fashion {precision:<10} graph {s['cuda_graph']:<24} {s['train_seconds'] / 3 * 1e3:6.0f} ms/epoch"
                  f" (epochs with validation {epochs} ms) warm-up {s['warmup_seconds']:.2f} s backprop {s['backprop']}"
                  f" test accuracy {s['metrics']['test']['accuracy']:.4f}", flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fashion-root", type=Path, default=Path(os.environ.get("MLPTRAIN_FASHION_ROOT", "/usr/share/datasets/fashion-mnist")))
    ap.add_argument("--out", type=Path, help="where the runs go (default: a temporary directory)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine (bench/README.md, 'On a GPU machine')", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="mlptrain-gpu-check-"))
    print(f"gpu_check: torch {torch.__version__} on {torch.cuda.get_device_name(0)}; runs in {out}", flush=True)
    ok = check_setups(out)
    ok &= check_resume(out)
    if (args.fashion_root / "train-images-idx3-ubyte.gz").is_file():
        fashion_speed(out, args.fashion_root)
    else:
        print(f"fashion: skipped ({args.fashion_root} has no train-images-idx3-ubyte.gz)")
    print("gpu_check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
