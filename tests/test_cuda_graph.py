"""train.cuda_graph: the step of every full batch replayed as one CUDA graph.

The capture needs a GPU; tests/fakegraph.py runs everything around it on the CPU: the batch
cursor and loss window the graph advances itself, the shorter last batch stepped eagerly, a new
recording when an epoch-wise schedule changes the learning rate, resume mid-epoch, and the fall
back to eager steps when a recording fails. Trained through the graph path, a run must match the
same run trained op by op.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from fakegraph import fake_cuda_graphs
from mlptrain import checkpoint, engine, pipeline, plan, runs
from mlptrain.config import validate_dict
from mlptrain.errors import Interrupted
from test_resume import SGD_MOMENTUM as SGD, SignalAt, _resume, _run, assert_same_run

SGD_MOMENTUM = {**SGD, "train": {**SGD["train"], "cuda_graph": True}}

# 300 blobs less 15 % validation and 15 % test: 210 training rows, batch 32: 6 full batches and one of 18
ADAM_DROPOUT_STEP_LR = {
    "data": SGD_MOMENTUM["data"],
    "model": {"hidden": [32, 32], "dropout": 0.2},
    "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 0.001},
    "scheduler": {"name": "step", "step_size": 1, "gamma": 0.7},  # a new lr every epoch: a new recording
    "train": {"epochs": 5, "batch_size": 32, "seed": 5, "grad_clip": 1.0, "early_stopping": {"enabled": False},
              "checkpoint": {"every_steps": 4}, "cuda_graph": True},
    "logging": {"progress": "none", "step_every": 4},
}


ADAM_BATCHNORM_PLATEAU_BF16 = {  # BatchNorm buffers, lr cut by the plateau rule, early stopping with restored weights
    "data": SGD_MOMENTUM["data"],
    "model": {"hidden": [16, 16], "norm": "batch", "activation": "gelu"},
    "optimizer": {"name": "adamw", "lr": 0.05, "weight_decay": 0.01},
    "scheduler": {"name": "reduce_on_plateau", "patience": 0, "factor": 0.5},
    "train": {"epochs": 8, "batch_size": 40, "seed": 1, "precision": "bf16-mixed", "cuda_graph": True,
              "early_stopping": {"patience": 3}},
    "logging": {"progress": "none", "step_every": 3},
}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"]


@pytest.mark.parametrize("raw", [SGD_MOMENTUM, ADAM_DROPOUT_STEP_LR, ADAM_BATCHNORM_PLATEAU_BF16],
                         ids=["sgd-momentum", "adam-dropout-step-lr", "adamw-batchnorm-plateau-bf16"])
def test_a_run_through_the_graph_path_matches_the_same_run_op_by_op(raw, tmp_path):
    eager = _run(raw, tmp_path, "eager")
    with fake_cuda_graphs() as records:
        graphed = _run(raw, tmp_path, "graphed")
    assert eager.summary["cuda_graph"] == "off: not on CUDA"
    assert graphed.summary["cuda_graph"] == "on"
    epochs = graphed.summary["epochs_run"]
    lrs = [float(r["lr"]) for r in runs.read_metrics(graphed.run_dir)]
    assert len(records) == 1 + sum(a != b for a, b in zip(lrs, lrs[1:]))  # recorded again for each new lr only
    if raw is ADAM_DROPOUT_STEP_LR:
        assert len(records) == epochs
    assert graphed.summary["steps"] == eager.summary["steps"]
    for split, values in eager.metrics.items():
        for k, v in values.items():
            assert graphed.metrics[split][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (split, k)
    we, wg = _weights(eager.run_dir), _weights(graphed.run_dir)
    assert all(torch.allclose(we[k], wg[k], atol=1e-6) for k in we)
    # the per-step losses the graph wrote into its window reached metrics and TensorBoard alike
    rows_e = (eager.run_dir / "metrics.csv").read_text().splitlines()
    rows_g = (graphed.run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows_e) == len(rows_g) == epochs + 1


def test_a_graph_run_stopped_mid_epoch_resumes_to_the_same_end(tmp_path):
    raw = ADAM_DROPOUT_STEP_LR
    with fake_cuda_graphs():
        whole = _run(raw, tmp_path, "whole")
        with pytest.raises(Interrupted):
            _run(raw, tmp_path, "stopped", SignalAt(10, signal.SIGINT))  # epoch 2, batch 3 of 7
        resumed = _resume(tmp_path / "stopped")
    assert resumed.summary["cuda_graph"] == "on"
    assert_same_run(whole.run_dir, tmp_path / "stopped", whole, resumed)


def test_the_graph_path_is_off_unless_asked_for(tmp_path):
    with fake_cuda_graphs() as records:
        default = _run(SGD, tmp_path, "default")
    assert default.summary["cuda_graph"] == "off: train.cuda_graph: false" and not records


def test_a_failed_recording_trains_on_op_by_op_and_says_why(tmp_path):
    eager = _run(SGD_MOMENTUM, tmp_path, "eager")
    with fake_cuda_graphs(fail=True):
        fallback = _run(SGD_MOMENTUM, tmp_path, "fallback")
    assert fallback.summary["cuda_graph"].startswith("off: capture failed (CUDA error: operation not permitted")
    assert fallback.metrics == eager.metrics
    saved = json.loads((fallback.run_dir / "summary.json").read_text())
    assert saved["cuda_graph"] == fallback.summary["cuda_graph"]


def _spec(**sections: Any) -> Any:
    raw: dict[str, Any] = {"data": {"name": "moons"}, "train": {"batch_size": 8, "cuda_graph": True}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_dict(raw)


ADAM = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])
SGD_OPT = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
ADAGRAD = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(2))])


@pytest.mark.parametrize(
    "spec, optimizer, why, runtime",
    [
        (_spec(), ADAM, None, {}),
        (_spec(optimizer={"name": "sgd", "momentum": 0.9}), SGD_OPT, None, {}),
        (_spec(train={"cuda_graph": False}), ADAM, "train.cuda_graph: false", {}),
        (_spec(), ADAM, "the training data stays in host memory", {"host_resident": True}),
        (_spec(train={"precision": "16-mixed"}), ADAM, "train.precision: 16-mixed", {"precision": "16-mixed"}),
        (_spec(train={"precision": "bf16-mixed"}), ADAM, None, {"precision": "bf16-mixed"}),
        (_spec(train={"on_nan": "skip_batch"}), ADAM, "train.on_nan: skip_batch", {}),
        (_spec(augment={"noise": 0.1}), ADAM, "augment", {}),
        (_spec(scheduler={"name": "cosine", "interval": "step"}), ADAM, "scheduler.interval: step", {}),
        (_spec(), ADAM, "train.compile", {"compiled": True}),
        (_spec(optimizer={"name": "adagrad"}), ADAGRAD, "optimizer adagrad", {}),
    ],
)
def test_what_keeps_a_step_off_the_graph(spec, optimizer, why, runtime):
    parts = plan.active_parts(spec)
    kw = {"precision": "32", "capturable": pipeline.capturable(optimizer), **runtime}
    assert plan.graph_blocker(spec, parts, device="cuda", **kw) == why
    assert plan.graph_blocker(spec, parts, device="cpu", **kw) == (
        "train.cuda_graph: false" if not spec.train.cuda_graph else "not on CUDA")


def test_a_graph_run_resumed_on_the_cpu_gets_its_optimizer_back_to_host_counters(tmp_path):
    """last.pt of a graph run holds capturable=True; RMSprop & co refuse that on the CPU."""
    opt = torch.optim.RMSprop([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    engine.set_capturable(opt, True, torch.device("cpu"))
    assert opt.param_groups[0]["capturable"]
    engine.set_capturable(opt, False, torch.device("cpu"))
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()  # with capturable left on, this raises on the CPU
    assert not opt.param_groups[0]["capturable"]


def test_warm_up_leaves_the_model_its_optimizer_and_the_random_stream_as_they_were():
    """warm_up runs before the training clock on CUDA; here on the CPU, with dropout drawing from the stream."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    opt.param_groups[0]["initial_lr"] = 0.1  # a key a scheduler may add: not a constructor argument
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    rng = torch.get_rng_state()
    seconds = engine.warm_up(model, torch.nn.functional.cross_entropy, opt, x, y, 8, "32", torch.device("cpu"))
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not opt.state  # no step was taken by the real optimizer
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_gpu_check_script_runs_its_checks(tmp_path, monkeypatch, capsys):
    """bench/gpu_check.py runs only on a GPU machine, where time is scarce: a bug in the script
    itself must show here first. On the CPU with faked graphs, for the optimizers that keep their
    counters on the CPU (RMSprop and NAdam refuse capturable there)."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(gpu_check, "BLOBS", {**gpu_check.BLOBS, "n_samples": 2000})  # 1400 training rows: 22 steps an epoch
    monkeypatch.setattr(gpu_check, "SETUPS", {k: v for k, v in gpu_check.SETUPS.items() if "rmsprop" not in k and "nadam" not in k})
    with fake_cuda_graphs():
        assert gpu_check.check_setups(tmp_path, "cpu")
        assert gpu_check.check_resume(tmp_path, "cpu")
    out = capsys.readouterr().out
    assert out.count("PASS") == 4 and "FAIL" not in out
