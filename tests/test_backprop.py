"""Backprop written out (``train.backprop: manual``) gives autograd's loss and gradients for every
setup it covers, trains to the same weights, and steps aside, or refuses in one line, for the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mlptrain import checkpoint, pipeline
from mlptrain.backprop import DERIVATIVES, LOSS_GRADIENTS, Backprop
from mlptrain.cli import main
from mlptrain.config import LossSpec, ModelSpec, validate_dict
from mlptrain.plan import MANUAL_LOSSES, manual_blocker
from mlptrain.losses import LOSSES
from mlptrain.model import ACTIVATIONS, build_model

COVERED = [
    "sigmoid", "tanh", "hardtanh", "softsign", "relu", "leaky_relu", "abs", "elu", "softplus", "gelu", "silu", "identity",
]


def _targets(loss: str, n: int, out: int, g: torch.Generator) -> torch.Tensor:
    if loss == "cross_entropy":
        return torch.randint(0, out, (n,), generator=g)
    if loss == "bce":
        return torch.randint(0, 2, (n, out), generator=g).float()
    return torch.randn(n, out, generator=g)


def _both(model: torch.nn.Sequential, loss: str, spec: LossSpec, x: torch.Tensor, y: torch.Tensor, seed: int = 5):
    """(loss, grads) from autograd and from Backprop, each after the same seed (dropout draws the same masks)."""
    torch.manual_seed(seed)
    reference = LOSSES[loss](spec, {"cross_entropy": "multiclass", "bce": "binary"}.get(loss, "regression"))(model(x), y)
    reference.backward()
    auto = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    bp = Backprop(model, loss, spec)
    value = bp.loss(bp.forward(x), y)
    bp.backward()
    return (reference.detach(), auto), (value, [p.grad for p in model.parameters()])


@pytest.mark.parametrize("activation", COVERED)
@pytest.mark.parametrize("loss", sorted(LOSS_GRADIENTS))
def test_gradients_match_autograd_for_every_covered_activation_and_loss(activation, loss):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(1)
    act = {"name": activation, "slope": 0.2, "alpha": 0.7, "beta": 2.0}
    model = build_model(ModelSpec(hidden=[9, 7], activation=act), 6, 4)
    x = torch.randn(13, 6, generator=g) * 2  # wide enough to reach hardtanh's and softplus' flat parts
    y = _targets(loss, 13, 4, g)
    (ref, auto), (value, manual) = _both(model, loss, LossSpec(name=loss), x, y)
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, m in zip(auto, manual):
        torch.testing.assert_close(m, a, rtol=1e-5, atol=1e-6)


def test_cross_entropy_gradient_at_the_logits_is_autograds_bit_for_bit():
    z = torch.randn(17, 5, requires_grad=True)
    y = torch.randint(0, 5, (17,))
    torch.nn.functional.cross_entropy(z, y).backward()
    value, delta = LOSS_GRADIENTS["cross_entropy"](z.detach(), y, LossSpec())
    assert torch.equal(delta, z.grad)
    assert torch.equal(value, torch.nn.functional.cross_entropy(z.detach(), y))


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_label_smoothing_and_dropout_match_autograd(smoothing):
    torch.manual_seed(3)
    model = build_model(ModelSpec(hidden=[16, 16], dropout=0.4, input_dropout=0.2), 8, 3)
    model.train()
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    spec = LossSpec(name="cross_entropy", label_smoothing=smoothing)
    (ref, auto), (value, manual) = _both(model, "cross_entropy", spec, x, y)
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, m in zip(auto, manual):
        torch.testing.assert_close(m, a, rtol=1e-5, atol=1e-6)
    assert sum(int((m == 0).sum()) for m in manual) > 0  # dropout did drop units (their weights got no gradient)


def test_smoothed_bce_matches_autograd():
    torch.manual_seed(3)
    model = build_model(ModelSpec(hidden=[16]), 8, 1)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 2, (32, 1), generator=g).float()
    (ref, auto), (value, manual) = _both(model, "bce", LossSpec(name="bce", label_smoothing=0.2), x, y)
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, m in zip(auto, manual):
        torch.testing.assert_close(m, a, rtol=1e-5, atol=1e-6)


def test_backward_writes_into_the_gradients_already_there():
    model = build_model(ModelSpec(hidden=[8]), 4, 3)
    bp = Backprop(model, "cross_entropy", LossSpec())
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    bp.loss(bp.forward(x), y)
    bp.backward()
    held = [p.grad for p in model.parameters()]
    bp.loss(bp.forward(x * 2), y)
    bp.backward()
    assert all(p.grad is h for p, h in zip(model.parameters(), held))  # overwritten, not reallocated or summed
    model.zero_grad(set_to_none=True)
    (_, auto), _ = _both(model, "cross_entropy", LossSpec(), x * 2, y)
    for a, p in zip(auto, model.parameters()):
        torch.testing.assert_close(p.grad, a)


def test_manual_blocker_names_the_first_thing_in_the_way():
    def why(loss="cross_entropy", weighted=False, precision="32", compiled=False, **model):  # noqa: ANN001, ANN003
        spec = validate_dict({"data": {"name": "moons"}, "model": {"hidden": [8], **model},
                              "loss": {"name": loss, **({"class_weight": "balanced"} if weighted else {})},
                              "train": {"precision": precision, "compile": compiled}})
        return manual_blocker(spec, loss, precision, [])

    assert why() is None
    assert why(norm="batch") == "the layer norm1 (BatchNorm1d)"
    assert why(norm="layer") == "the layer norm1 (LayerNorm)"
    assert "PReLU" in why(activation={"name": "prelu"})
    assert "Maxout" in why(activation={"name": "maxout"})
    assert "hinge" in why("hinge")
    assert "class_weight" in why(weighted=True)
    assert "bf16-mixed" in why(precision="bf16-mixed")
    assert "compile" in why(compiled=True)
    covered = {type(build_model(ModelSpec(hidden=[4], activation={"name": a}), 2, 2).act1) for a in COVERED}
    assert covered <= set(DERIVATIVES)
    uncovered = set(ACTIVATIONS) - set(COVERED)
    assert uncovered == {"prelu", "maxout"}  # a new activation must get a derivative or join this list


TINY = {
    "name": "tiny",
    "data": {"name": "blobs", "n_samples": 300, "n_classes": 3, "n_features": 5, "noise": 0.6, "seed": 2},
    "model": {"hidden": [32, 32], "dropout": 0.2},
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 3, "batch_size": 32, "device": "cpu", "early_stopping": {"enabled": False}},
    "logging": {"progress": "none", "tensorboard": False},
}


def _fit(tmp_path: Path, name: str, **changes):
    raw = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, leaf = key.split("__")
        raw.setdefault(section, {})[leaf] = value
    spec = validate_dict(raw)
    return pipeline.train(spec, pipeline.start_run(spec, None, tmp_path / name), "cpu")


def test_manual_backprop_trains_to_autograds_weights(tmp_path):
    manual = _fit(tmp_path, "manual", train__backprop="manual")
    auto = _fit(tmp_path, "autograd", train__backprop="autograd")
    assert (manual.summary["backprop"], auto.summary["backprop"]) == ("manual", "autograd")
    assert manual.metrics["test"]["loss"] == pytest.approx(auto.metrics["test"]["loss"], rel=1e-4)
    assert manual.metrics["train"]["accuracy"] == auto.metrics["train"]["accuracy"]


def test_auto_falls_back_to_autograd_where_manual_does_not_reach(tmp_path):
    out = _fit(tmp_path, "norm", model__norm="layer")
    assert out.summary["backprop"] == "autograd"
    assert _fit(tmp_path, "plain").summary["backprop"] == "manual"


def test_manual_on_a_setup_it_does_not_cover_is_one_line_and_exit_2(tmp_path, capsys):
    raw = json.loads(json.dumps(TINY))
    raw["model"]["norm"] = "batch"
    raw["train"]["backprop"] = "manual"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(raw))
    code = main(["fit", str(cfg), "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "train.backprop: manual does not cover the layer norm1 (BatchNorm1d)" in err[0]
    assert "Traceback" not in err[0]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_validate_reads_the_same_blocker_off_the_spec_as_fit_finds_in_the_model(activation, norm):
    """plan.manual_blocker (validate and fit, read off the spec) refuses exactly what Backprop cannot differentiate."""
    assert set(MANUAL_LOSSES) == set(LOSS_GRADIENTS)
    for loss, weight, precision, compiled in [("cross_entropy", None, "32", False), ("huber", None, "32", False),
                                              ("cross_entropy", "balanced", "32", False), ("mse", None, "bf16-mixed", False),
                                              ("bce", None, "32", True)]:
        spec = validate_dict({
            "data": {"name": "moons"}, "model": {"hidden": [6, 5], "activation": ["relu", activation], "norm": norm},
            "loss": {"name": loss, "class_weight": weight} if weight else {"name": loss},
            "train": {"precision": precision, "compile": compiled},
        })
        model = build_model(spec.model, 2, 3)
        why = manual_blocker(spec, loss, precision, [])
        try:
            Backprop(model, loss, spec.loss)
            in_model = None
        except ValueError as exc:
            in_model = str(exc)
        if weight is None and precision == "32" and not compiled:  # what only the spec knows aside, both name the same thing
            assert (why is None) == (in_model is None), (loss, why, in_model)
            assert in_model is None or why.startswith(in_model), (loss, why, in_model)
        else:
            assert why is not None


def test_validate_refuses_backprop_manual_where_fit_would(write_config, capsys):
    cfg = write_config("data: {name: moons}\nmodel: {activation: prelu}\ntrain: {backprop: manual}\n")
    assert main(["validate", str(cfg)]) == 2
    assert "train.backprop: manual does not cover the layer act1 (PReLU); set train.backprop: auto" in capsys.readouterr().err


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_on_mixed_class_probabilities_matches_autograd(smoothing):
    """mixup's targets are class probabilities: softmax(z) minus the (smoothed) target, as autograd finds."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(17, 5, generator=g, requires_grad=True)
    t = torch.softmax(torch.randn(17, 5, generator=g) * 3, dim=1)
    ref = torch.nn.functional.cross_entropy(z, t, label_smoothing=smoothing)
    ref.backward()
    value, delta = LOSS_GRADIENTS["cross_entropy"](z.detach(), t, LossSpec(label_smoothing=smoothing))
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(delta, z.grad, rtol=1e-6, atol=1e-8)


def _fit_raw(tmp_path: Path, name: str, raw: dict) -> Any:
    spec = validate_dict(raw)
    return pipeline.train(spec, pipeline.start_run(spec, None, tmp_path / name), "cpu")


AUGMENTED = {
    "augment (rotate, scale, elastic, crop) on digits": ({"name": "digits"}, {"rotate": 10.0, "scale": [0.9, 1.1],
                                                          "elastic": {"alpha": 2.0, "sigma": 1.5}, "crop": 1}),
    "label_noise": (TINY["data"], {"label_noise": 0.3}),
    "mixup, cross_entropy": (TINY["data"], {"mixup": 0.4}),
    "mixup, bce": ({"name": "moons", "n_samples": 200}, {"mixup": 0.4}),
    "mixup, mse on values": ({"name": "sine", "n_samples": 200}, {"mixup": 0.4}),
}


@pytest.mark.parametrize("data, augment", AUGMENTED.values(), ids=AUGMENTED.keys())
def test_each_augment_part_trains_under_auto_to_autograds_weights(data, augment, tmp_path):
    raw = {**json.loads(json.dumps(TINY)), "data": data, "augment": augment}
    raw["train"]["epochs"] = 2
    auto = _fit_raw(tmp_path, "auto", raw)
    raw["train"]["backprop"] = "autograd"
    reference = _fit_raw(tmp_path, "autograd", raw)
    assert (auto.summary["backprop"], reference.summary["backprop"]) == ("manual", "autograd")
    a, b = (checkpoint.load(o.run_dir / "checkpoints" / "last.pt")["model"] for o in (auto, reference))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
