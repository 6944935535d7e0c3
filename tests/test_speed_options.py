"""The engine's speed paths on the CPU: mixed precision, host-resident batches, fused optimizers,
torch.compile's fallback, denormal flushing. None of these may change the maths beyond rounding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlptrain import checkpoint, pipeline
from mlptrain.cli import main
from mlptrain.config import OptimizerSpec, validate_dict
from mlptrain.engine import HostBatches, Loop, Task, fit
from mlptrain.optim import FUSED, OPTIMIZERS, build_optimizer

TINY = {
    "name": "tiny",
    "data": {"name": "blobs", "n_samples": 300, "n_classes": 3, "n_features": 5, "noise": 0.6, "seed": 2},
    "model": {"hidden": [32, 32]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 4, "batch_size": 32, "device": "cpu", "early_stopping": {"enabled": False}},
    "logging": {"progress": "none", "tensorboard": False},
}


def _spec(**train):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return validate_dict(raw)


def _train(spec, tmp_path: Path, name: str = "run", notify=lambda m: None):
    run_dir = pipeline.start_run(spec, None, tmp_path / name)
    return pipeline.train(spec, run_dir, "cpu", notify=notify)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_and_eval_reproduces_fit(precision, tmp_path, capsys):
    out = _train(_spec(precision=precision), tmp_path)
    full = _train(_spec(precision="32"), tmp_path, "fp32")
    test = out.metrics["test"]
    assert test["loss"] == pytest.approx(full.metrics["test"]["loss"], rel=0.1, abs=0.02)  # same maths, rounded
    assert test["accuracy"] >= full.metrics["test"]["accuracy"] - 0.05
    state = checkpoint.load(out.run_dir / "checkpoints" / "last.pt")
    assert (state["scaler"] is not None) == (precision == "16-mixed")  # the GradScaler's state travels with last.pt
    assert all(t.dtype == torch.float32 for t in state["model"].values())  # master weights stay float32
    assert main(["eval", str(out.checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(test, rel=1e-6)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_mixed_only_where_the_hardware_multiplies_bfloat16(native, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    auto = _train(_spec(precision="auto"), tmp_path, "auto")
    chosen = "bf16-mixed" if native else "32"
    assert auto.summary["precision"] == chosen
    same = _train(_spec(precision=chosen), tmp_path, "same")
    assert auto.metrics == same.metrics  # auto trained exactly as the precision it chose
    assert main(["eval", str(auto.checkpoint), "--json"]) == 0  # and eval resolves it the same way
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(auto.metrics["test"], rel=1e-6)


def test_native_bf16_probes_gpus_by_compute_capability_and_cpus_by_their_flags(monkeypatch):
    from mlptrain.engine import native_bf16, resolve_precision

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert not native_bf16(torch.device("cuda"))  # Turing: bf16 only emulated
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert native_bf16(torch.device("cuda")) and resolve_precision("auto", torch.device("cuda")) == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert native_bf16(torch.device("cpu"))
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the probe: float32
    assert resolve_precision("auto", torch.device("cpu")) == "32"
    assert resolve_precision("16-mixed", torch.device("cpu")) == "16-mixed"  # only auto is resolved


def test_float16_scales_the_loss(monkeypatch, tmp_path):
    scaled: list[float] = []
    real = torch.amp.GradScaler.scale

    def spy(self, outputs):
        scaled.append(float(self.get_scale()))
        return real(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    _train(_spec(precision="16-mixed", epochs=1), tmp_path)
    assert scaled and scaled[0] > 1.0  # a loss scale well above 1 keeps small float16 gradients alive


def _fit_tensors(host_batches: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    class Flat:
        def step(self): ...
        def epoch_end(self, metric): ...
        def state_dict(self): return {}

    loop = Loop(epochs=3, batch_size=24, early_stopping=False, restore_best_weights=False,
                device=torch.device("cpu"), host_batches=host_batches)
    result = fit(model, torch.nn.functional.cross_entropy, opt, Flat(), (x, y), (x[:50], y[:50]), Task("multiclass", 2), loop)
    return result.history, [p.detach().clone() for p in model.parameters()]


def test_host_resident_batches_give_the_same_training_as_device_resident_data():
    hist_a, w_a = _fit_tensors(host_batches=False)
    hist_b, w_b = _fit_tensors(host_batches=True)
    assert hist_a == hist_b
    assert all(torch.equal(a, b) for a, b in zip(w_a, w_b))


def test_host_batches_gather_the_requested_rows_through_reused_buffers():
    x = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    y = torch.arange(20)
    batches = HostBatches(x, y, torch.device("cpu"), batch_size=4)
    for idx in (torch.tensor([3, 1, 7, 9]), torch.tensor([0, 19]), torch.tensor([5, 6, 8, 2])):
        xb, yb = batches.get(x, y, idx)
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])
    assert batches.slots[0][0].data_ptr() != batches.slots[1][0].data_ptr()  # two buffers alternate


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_kernels_where_pytorch_has_them(name):
    params = [torch.nn.Parameter(torch.randn(3))]
    opt = build_optimizer(params, OptimizerSpec(name=name), fused=True)
    assert bool(opt.param_groups[0].get("fused")) == (name in FUSED)
    params[0].grad = torch.ones(3)
    before = params[0].detach().clone()
    opt.step()
    assert not torch.equal(before, params[0])


def test_fused_and_unfused_adam_agree(tmp_path):
    def run(fused: bool):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(8, 4))
        opt = build_optimizer([w], OptimizerSpec(name="adam", lr=0.01), fused=fused)
        for _ in range(20):
            opt.zero_grad()
            (w**2).sum().backward()
            opt.step()
        return w.detach()

    assert torch.allclose(run(True), run(False), atol=1e-6)


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nlong details")

    monkeypatch.setattr(torch, "compile", broken)
    notes: list[str] = []
    out = _train(_spec(compile=True, epochs=1), tmp_path, notify=notes.append)
    assert out.metrics["test"]["accuracy"] > 0
    assert len(notes) == 1 and "train.compile" in notes[0] and "no C++ compiler found" in notes[0] and "\n" not in notes[0]


def test_threads_and_denormals_are_set_for_the_run():
    before = torch.get_num_threads()
    try:
        pipeline.configure_torch(1, torch.device("cpu"))
        assert torch.get_num_threads() == 1
        assert torch.tensor([1e-323], dtype=torch.float64).item() == 0.0  # denormals flushed to zero
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(before)
