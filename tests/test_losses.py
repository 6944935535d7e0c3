"""Losses: each registry entry against its formula, task fit, default per task, output units."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
import torch.nn.functional as F

from mlptrain import config
from mlptrain.config import LossSpec
from mlptrain.errors import ConfigError
from mlptrain.losses import LOSSES, build_loss, output_unit
from mlptrain.tasks import DEFAULT_LOSS, LOSS_TASKS

TASKS = ("binary", "multiclass", "regression", "multilabel")


def _data(task: str, seed: int = 0):
    """Logits and targets in the task's layout, float64 so formulas compare tightly."""
    g = torch.Generator().manual_seed(seed)
    n = 12
    if task == "binary":
        return torch.randn(n, 1, generator=g, dtype=torch.float64) * 2, torch.randint(0, 2, (n, 1), generator=g).double()
    if task == "multiclass":
        return torch.randn(n, 4, generator=g, dtype=torch.float64) * 2, torch.randint(0, 4, (n,), generator=g)
    if task == "multilabel":
        return torch.randn(n, 3, generator=g, dtype=torch.float64) * 2, torch.randint(0, 2, (n, 3), generator=g).double()
    return torch.randn(n, 2, generator=g, dtype=torch.float64) * 3, torch.randn(n, 2, generator=g, dtype=torch.float64)


def _log_softmax(z):
    return z - torch.log(torch.exp(z).sum(dim=-1, keepdim=True))


def _ce_manual(z, y, eps=0.0):
    k = z.shape[-1]
    q = torch.full_like(z, eps / k)
    q[torch.arange(len(y)), y] += 1 - eps
    return -(q * _log_softmax(z)).sum(-1).mean()


def _bce_manual(z, y, eps=0.0):
    s = 1 / (1 + torch.exp(-z))
    t = torch.where(y > 0.5, torch.tensor(1 - eps / 2, dtype=z.dtype), torch.tensor(eps / 2, dtype=z.dtype))  # ε/2 inward
    return -(t * torch.log(s) + (1 - t) * torch.log(1 - s)).mean()


def _huber_manual(z, y, delta):
    a = (z - y).abs()
    return torch.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta)).mean()


def _smooth_l1_manual(z, y, beta):
    a = (z - y).abs()
    return torch.where(a < beta, 0.5 * a**2 / beta, a - 0.5 * beta).mean()


def _hinge_manual(z, y, margin):
    if y.dtype == torch.long:  # multiclass: sum_{j != y} max(0, m - z_y + z_j) / K, mean over rows
        n, k = z.shape
        zy = z[torch.arange(n), y].unsqueeze(1)
        terms = torch.clamp(margin - zy + z, min=0.0)
        terms[torch.arange(n), y] = 0.0
        return (terms.sum(1) / k).mean()
    t = torch.where(y > 0.5, 1.0, -1.0).to(z.dtype)
    return torch.clamp(margin - t * z, min=0.0).mean()


def _kl_manual(z, y, eps):
    k = z.shape[-1]
    q = torch.full_like(z, eps / k)
    q[torch.arange(len(y)), y] += 1 - eps
    logq = torch.where(q > 0, torch.log(q.clamp(min=1e-300)), torch.zeros_like(q))
    return (q * (logq - _log_softmax(z))).sum(-1).mean()


# (loss name, spec kwargs, task, manual formula(z, y))
CASES = [
    ("cross_entropy", {}, "multiclass", lambda z, y: _ce_manual(z, y)),
    ("cross_entropy", {"label_smoothing": 0.2}, "multiclass", lambda z, y: _ce_manual(z, y, 0.2)),
    ("nll", {}, "multiclass", lambda z, y: -_log_softmax(z)[torch.arange(len(y)), y].mean()),
    ("kl_div", {}, "multiclass", lambda z, y: _kl_manual(z, y, 0.0)),
    ("kl_div", {"label_smoothing": 0.1}, "multiclass", lambda z, y: _kl_manual(z, y, 0.1)),
    ("bce", {}, "binary", _bce_manual),
    ("bce", {}, "multilabel", _bce_manual),
    ("bce", {"label_smoothing": 0.2}, "binary", lambda z, y: _bce_manual(z, y, 0.2)),
    ("bce", {"label_smoothing": 0.1}, "multilabel", lambda z, y: _bce_manual(z, y, 0.1)),
    ("hinge", {}, "binary", lambda z, y: _hinge_manual(z, y, 1.0)),
    ("hinge", {"margin": 2.5}, "binary", lambda z, y: _hinge_manual(z, y, 2.5)),
    ("hinge", {}, "multiclass", lambda z, y: _hinge_manual(z, y, 1.0)),
    ("hinge", {"margin": 0.5}, "multiclass", lambda z, y: _hinge_manual(z, y, 0.5)),
    ("mse", {}, "regression", lambda z, y: ((z - y) ** 2).mean()),
    ("mse", {}, "binary", lambda z, y: ((torch.sigmoid(z) - y) ** 2).mean()),
    ("mse", {}, "multiclass", lambda z, y: ((torch.softmax(z, -1) - F.one_hot(y, z.shape[-1]).to(z.dtype)) ** 2).mean()),
    ("mae", {}, "regression", lambda z, y: (z - y).abs().mean()),
    ("huber", {}, "regression", lambda z, y: _huber_manual(z, y, 1.0)),
    ("huber", {"delta": 2.0}, "regression", lambda z, y: _huber_manual(z, y, 2.0)),
    ("smooth_l1", {"delta": 0.5}, "regression", lambda z, y: _smooth_l1_manual(z, y, 0.5)),
    ("smooth_l1", {"delta": 3.0}, "regression", lambda z, y: _smooth_l1_manual(z, y, 3.0)),
    ("log_cosh", {}, "regression", lambda z, y: torch.log(torch.cosh(z - y)).mean()),
]


def test_loss_registry_matches_config_names():
    assert set(LOSSES) == set(get_args(config.LossName)) == set(LOSS_TASKS)
    assert len(LOSSES) == len(get_args(config.LossName))


def test_every_loss_has_a_formula_case():
    assert {c[0] for c in CASES} == set(LOSSES)


@pytest.mark.parametrize("name, kw, task, formula", CASES, ids=[f"{c[0]}-{c[2]}-{c[1]}" for c in CASES])
def test_loss_matches_formula(name, kw, task, formula):
    got_name, fn = build_loss(LossSpec(name=name, **kw), task)
    assert got_name == name
    z, y = _data(task)
    value = fn(z, y)
    assert value.ndim == 0
    torch.testing.assert_close(value, formula(z, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(get_args(config.LossName)))
def test_every_loss_builds_for_each_task_it_fits_and_gives_gradient(name):
    tasks = LOSS_TASKS[name]
    assert tasks and set(tasks) <= set(TASKS)
    for task in tasks:
        _, fn = build_loss(LossSpec(name=name), task)
        z, y = _data(task, seed=3)
        z = z.clone().requires_grad_(True)
        value = fn(z, y)
        assert torch.isfinite(value) and value.item() >= 0
        value.backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_label_smoothing_zero_equals_plain_cross_entropy_and_nll():
    z, y = _data("multiclass")
    _, ce = build_loss(LossSpec(name="cross_entropy"), "multiclass")
    _, nll = build_loss(LossSpec(name="nll"), "multiclass")
    _, kl = build_loss(LossSpec(name="kl_div"), "multiclass")
    torch.testing.assert_close(ce(z, y), nll(z, y))
    torch.testing.assert_close(kl(z, y), ce(z, y))  # entropy of a one-hot target is 0
    _, smooth = build_loss(LossSpec(name="cross_entropy", label_smoothing=0.3), "multiclass")
    assert smooth(z, y).item() != pytest.approx(ce(z, y).item())


def test_log_cosh_does_not_overflow():
    _, fn = build_loss(LossSpec(name="log_cosh"), "regression")
    y = torch.zeros(2, 1)
    for dtype in (torch.float32, torch.float64):
        z = torch.tensor([[1000.0], [-1000.0]], dtype=dtype, requires_grad=True)
        value = fn(z, y.to(dtype))
        assert torch.isfinite(value)
        assert value.item() == pytest.approx(1000.0 - math.log(2.0), rel=1e-6)
        value.backward()
        torch.testing.assert_close(z.grad, torch.tensor([[0.5], [-0.5]], dtype=dtype))  # tanh(±1000)/2
    # Small errors: log cosh x ≈ x^2 / 2 (float64: the stable form cancels to ~1e-8 in float32).
    small = fn(torch.tensor([[1e-3]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)).item()
    assert small == pytest.approx(0.5e-6, rel=1e-3)


def test_bce_is_stable_for_large_logits():
    _, fn = build_loss(LossSpec(name="bce"), "binary")
    z = torch.tensor([[100.0], [-100.0]])
    assert fn(z, torch.tensor([[1.0], [0.0]])).item() == pytest.approx(0.0, abs=1e-30)
    assert fn(z, torch.tensor([[0.0], [1.0]])).item() == pytest.approx(100.0)


def test_hinge_binary_values_by_hand():
    _, fn = build_loss(LossSpec(name="hinge", margin=1.0), "binary")
    z = torch.tensor([[2.0], [0.5], [-0.5], [0.3]])
    y = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    # t = +1, +1, -1, -1: max(0, 1 - t z) = 0, 0.5, 0.5, 1.3
    assert fn(z, y).item() == pytest.approx((0 + 0.5 + 0.5 + 1.3) / 4)


def test_hinge_multiclass_by_hand():
    _, fn = build_loss(LossSpec(name="hinge", margin=1.0), "multiclass")
    z = torch.tensor([[3.0, 2.5, 0.0]])
    y = torch.tensor([0])
    # j=1: max(0, 1 - 3 + 2.5) = 0.5; j=2: max(0, 1 - 3 + 0) = 0; divided by K = 3
    assert fn(z, y).item() == pytest.approx(0.5 / 3)


def test_huber_by_hand():
    _, fn = build_loss(LossSpec(name="huber", delta=1.0), "regression")
    z = torch.tensor([[0.5], [3.0]])
    y = torch.zeros(2, 1)
    assert fn(z, y).item() == pytest.approx((0.5 * 0.25 + (3.0 - 0.5)) / 2)


FITS = LOSS_TASKS
MISFITS = [(name, task) for name in sorted(LOSSES) for task in TASKS if task not in FITS[name]]


def test_fit_table():
    assert set(FITS["cross_entropy"]) == {"multiclass"}
    assert set(FITS["bce"]) == {"binary", "multilabel"}
    assert set(FITS["hinge"]) == {"binary", "multiclass"}
    assert set(FITS["mse"]) == {"regression", "binary", "multiclass", "multilabel"}  # classification: on probabilities
    for name in ("mae", "huber", "smooth_l1", "log_cosh"):
        assert set(FITS[name]) == {"regression"}


@pytest.mark.parametrize("name, task", MISFITS)
def test_build_loss_refuses_a_loss_that_does_not_fit(name, task):
    with pytest.raises(ConfigError) as exc:
        build_loss(LossSpec(name=name), task)
    msg = str(exc.value)
    assert name in msg and task in msg
    assert DEFAULT_LOSS[task] in msg  # the error names a loss that does fit


def test_default_loss_per_task_matches_the_notes():
    assert DEFAULT_LOSS == {"binary": "bce", "multiclass": "cross_entropy", "regression": "mse", "multilabel": "bce"}
    for task, name in DEFAULT_LOSS.items():
        got, fn = build_loss(LossSpec(), task)
        assert got == name
        z, y = _data(task)
        assert torch.isfinite(fn(z, y))


def test_output_units():
    z = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    soft = output_unit("multiclass", z)
    torch.testing.assert_close(soft, torch.exp(z) / torch.exp(z).sum(1, keepdim=True))
    torch.testing.assert_close(soft.sum(1), torch.ones(2))
    for task in ("binary", "multilabel"):
        torch.testing.assert_close(output_unit(task, z), 1 / (1 + torch.exp(-z)))
    assert torch.equal(output_unit("regression", z), z)


def test_smoothed_bce_with_class_weights_weighs_rows_by_their_unsmoothed_class():
    z, y = _data("binary", seed=5)
    _, fn = build_loss(LossSpec(name="bce", label_smoothing=0.2, class_weight={"1": 3.0}), "binary", ["0", "1"], [10, 10])
    w = torch.where(y > 0.5, 3.0, 1.0).to(z.dtype)
    s = torch.sigmoid(z)
    t = torch.where(y > 0.5, torch.tensor(0.9, dtype=z.dtype), torch.tensor(0.1, dtype=z.dtype))
    per_row = -(t * torch.log(s) + (1 - t) * torch.log(1 - s))
    torch.testing.assert_close(fn(z, y), (per_row * w).sum() / w.sum())


@pytest.mark.parametrize("kw, task, key", [
    ({"delta": 2.0}, "multiclass", "loss.delta = 2.0 changes nothing with loss.name 'cross_entropy'"),
    ({"margin": 2.0}, "regression", "loss.margin = 2.0 changes nothing with loss.name 'mse'"),
    ({"label_smoothing": 0.1}, "regression", "loss.label_smoothing = 0.1 changes nothing with loss.name 'mse'"),
])
def test_a_key_the_tasks_default_loss_does_not_read_is_refused(kw, task, key):
    with pytest.raises(ConfigError, match=f"^{key} \\(only "):
        build_loss(LossSpec(**kw), task)
    build_loss(LossSpec(label_smoothing=0.1), "binary")  # bce reads it


def test_cross_entropy_learns_from_a_saturated_start_where_squared_error_on_probabilities_stalls():
    """The notes' comparison: a sigmoid unit that starts confidently wrong. Squared error's gradient
    carries σ'(z) ≈ 0 there; cross-entropy's is σ(z) − y, as large as the mistake."""
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, :1] > 0).float()

    def train(loss: str) -> float:
        _, fn = build_loss(LossSpec(name=loss), "binary")
        w = torch.tensor([[-8.0, 0.0]], requires_grad=True)  # every positive row gets σ(z) ≈ 0
        for _ in range(100):
            value = fn(x @ w.t(), y)
            (g,) = torch.autograd.grad(value, [w])
            with torch.no_grad():
                w -= 0.5 * g
        return float(((x @ w.t() > 0).float() == y).float().mean())

    assert train("bce") >= 0.95
    assert train("mse") < 0.2  # mostly still on the wrong side after 100 steps (it was 0.055)


@pytest.mark.parametrize("name", ["cross_entropy", "kl_div", "mse"])
def test_multiclass_losses_take_mixups_class_probabilities(name):
    """One-hot probabilities give the hard labels' loss; cross_entropy is linear in the target, so a mixture's
    loss is the λ-weighted sum of its two labels' losses."""
    g = torch.Generator().manual_seed(0)
    z, a, b = torch.randn(16, 4, generator=g), torch.randint(0, 4, (16,), generator=g), torch.randint(0, 4, (16,), generator=g)
    loss = LOSSES[name](LossSpec(name=name, label_smoothing=0.1 if name != "mse" else 0.0), "multiclass")
    torch.testing.assert_close(loss(z, F.one_hot(a, 4).float()), loss(z, a))
    if name == "cross_entropy":
        mixed = 0.3 * F.one_hot(a, 4).float() + 0.7 * F.one_hot(b, 4).float()
        torch.testing.assert_close(loss(z, mixed), 0.3 * loss(z, a) + 0.7 * loss(z, b))
