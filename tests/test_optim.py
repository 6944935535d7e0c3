"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

from mlptrain import config
from mlptrain.config import OptimizerSpec, SchedulerSpec
from mlptrain.optim import OPTIMIZERS, SCHEDULES, LRSchedule, build_optimizer

# A learning rate per optimizer that makes 100 steps on a small least-squares problem count.
LRS = {"sgd": 0.05, "adam": 0.05, "adamw": 0.05, "nadam": 0.05, "rmsprop": 0.01, "adagrad": 0.5, "adadelta": 1.0}
# Adadelta's step starts at about sqrt(eps): with the shared default eps = 1e-8 it barely moves in
# 100 steps, so it gets PyTorch's own default 1e-6 here.
EXTRA = {"adadelta": {"eps": 1e-6}}


def test_optimizer_registry_matches_config_names():
    assert set(OPTIMIZERS) == set(get_args(config.OptimizerName))
    assert len(OPTIMIZERS) == len(get_args(config.OptimizerName))
    assert set(LRS) == set(OPTIMIZERS)


def _least_squares(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(40, 5, generator=g)
    w_true = torch.randn(5, 1, generator=g)
    b = a @ w_true
    return a, b


@pytest.mark.parametrize("name", sorted(get_args(config.OptimizerName)))
def test_every_optimizer_reduces_a_least_squares_loss(name):
    a, b = _least_squares()
    w = torch.zeros(5, 1, requires_grad=True)
    opt = build_optimizer([w], OptimizerSpec(name=name, lr=LRS[name], **EXTRA.get(name, {})))
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["lr"] == LRS[name]

    def loss_fn():
        return ((a @ w - b) ** 2).mean()

    start = loss_fn().item()
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    end = loss_fn().item()
    assert end < 0.5 * start, (name, start, end)


def test_optimizer_classes():
    w = [torch.zeros(1, requires_grad=True)]
    expected = {
        "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "nadam": torch.optim.NAdam,
        "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
    }
    for name, cls in expected.items():
        assert type(build_optimizer(w, OptimizerSpec(name=name))) is cls


def test_sgd_momentum_and_nesterov_reach_param_groups():
    w = [torch.zeros(3, requires_grad=True)]
    opt = build_optimizer(w, OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["momentum"] == 0.9 and group["nesterov"] is True
    assert group["weight_decay"] == 1e-4
    plain = build_optimizer(w, OptimizerSpec(name="sgd", lr=0.1))
    assert plain.param_groups[0]["momentum"] == 0.0 and plain.param_groups[0]["nesterov"] is False


def test_hyperparameters_reach_param_groups():
    w = [torch.zeros(3, requires_grad=True)]
    adam = build_optimizer(w, OptimizerSpec(name="adam", lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1))
    g = adam.param_groups[0]
    assert tuple(g["betas"]) == (0.8, 0.95) and g["eps"] == 1e-6 and g["weight_decay"] == 0.1
    rms = build_optimizer(w, OptimizerSpec(name="rmsprop", alpha=0.9, momentum=0.5)).param_groups[0]
    assert rms["alpha"] == 0.9 and rms["momentum"] == 0.5
    ada = build_optimizer(w, OptimizerSpec(name="adadelta", rho=0.8)).param_groups[0]
    assert ada["rho"] == 0.8


def test_sgd_step_is_plain_gradient_descent():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = build_optimizer([w], OptimizerSpec(name="sgd", lr=0.1))
    (w**2).sum().backward()  # grad = 2w
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.8, -1.6]))


# ---------------------------------------------------------------------------------------------
# Schedules

BASE = 0.1


def _sched(mode: str = "min", horizon: int = 20, base: float = BASE, **kw) -> LRSchedule:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    return LRSchedule(opt, SchedulerSpec(**kw), horizon, mode)


def _lrs(sched: LRSchedule, n: int) -> list[float]:
    out = [sched.lr]
    for _ in range(n - 1):
        sched.step()
        out.append(sched.lr)
    return out


def test_schedule_registry_matches_config_names():
    assert set(SCHEDULES) == set(get_args(config.SchedulerName))
    assert len(SCHEDULES) == len(get_args(config.SchedulerName))


@pytest.mark.parametrize("name", sorted(get_args(config.SchedulerName)))
def test_every_schedule_builds_and_keeps_lr_positive(name):
    s = _sched(name=name, horizon=30)
    assert s.lr == pytest.approx(BASE)  # every schedule starts at the base lr without warmup
    lrs = _lrs(s, 30)
    assert all(0 <= lr <= BASE + 1e-12 for lr in lrs)


def test_none_keeps_lr():
    assert _lrs(_sched(name="none"), 10) == [BASE] * 10


def test_step_multiplies_by_gamma_every_step_size():
    lrs = _lrs(_sched(name="step", step_size=3, gamma=0.5), 10)
    assert lrs == pytest.approx([BASE * 0.5 ** (t // 3) for t in range(10)], rel=1e-12)
    assert lrs[2] == pytest.approx(BASE) and lrs[3] == pytest.approx(BASE / 2)


def test_multistep():
    lrs = _lrs(_sched(name="multistep", milestones=[2, 5], gamma=0.1), 8)
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001], rel=1e-12)


def test_exponential():
    lrs = _lrs(_sched(name="exponential", gamma=0.9), 10)
    assert lrs == pytest.approx([BASE * 0.9**t for t in range(10)], rel=1e-12)


def test_inverse_sqrt_is_lr_over_sqrt_t_plus_1():
    lrs = _lrs(_sched(name="inverse_sqrt"), 50)
    assert lrs == pytest.approx([BASE / math.sqrt(t + 1) for t in range(50)], rel=1e-14)
    assert lrs[3] == pytest.approx(BASE / 2, rel=1e-14)


def test_cosine_reaches_min_lr_at_t_max():
    lrs = _lrs(_sched(name="cosine", t_max=10, min_lr=0.01), 15)
    expected = [0.01 + (BASE - 0.01) * 0.5 * (1 + math.cos(math.pi * min(t, 10) / 10)) for t in range(15)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(BASE)
    assert lrs[5] == pytest.approx((BASE + 0.01) / 2)
    assert lrs[10] == pytest.approx(0.01) and lrs[14] == pytest.approx(0.01)  # stays at min_lr
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_cosine_defaults_to_horizon():
    lrs = _lrs(_sched(name="cosine", horizon=20), 21)
    assert lrs[20] == pytest.approx(0.0, abs=1e-15)
    assert lrs[10] == pytest.approx(BASE / 2)


def test_warmup_is_linear_then_hands_over():
    w = 4
    lrs = _lrs(_sched(name="none", warmup=w), 8)
    assert lrs[:w + 1] == pytest.approx([BASE * (t + 1) / (w + 1) for t in range(w + 1)], rel=1e-12)
    assert lrs[0] == pytest.approx(BASE / (w + 1))
    assert lrs[w:] == pytest.approx([BASE] * (8 - w))


def test_warmup_then_step_and_inverse_sqrt():
    lrs = _lrs(_sched(name="step", warmup=2, step_size=2, gamma=0.5), 8)
    assert lrs == pytest.approx([BASE / 3, 2 * BASE / 3, BASE, BASE, BASE / 2, BASE / 2, BASE / 4, BASE / 4])
    lrs = _lrs(_sched(name="inverse_sqrt", warmup=3), 10)
    assert lrs[3] == pytest.approx(BASE)
    assert lrs[3 + 3] == pytest.approx(BASE / 2)


def test_warmup_then_cosine():
    lrs = _lrs(_sched(name="cosine", warmup=5, t_max=10, min_lr=0.02), 20)
    assert lrs[0] == pytest.approx(BASE / 6)
    assert lrs[5] == pytest.approx(BASE)
    assert lrs[10] == pytest.approx((BASE + 0.02) / 2)
    assert lrs[15] == pytest.approx(0.02) and lrs[19] == pytest.approx(0.02)
    # Default period: the horizon left after warmup.
    lrs = _lrs(_sched(name="cosine", warmup=5, horizon=25), 26)
    assert lrs[5] == pytest.approx(BASE) and lrs[25] == pytest.approx(0.0, abs=1e-15)


def test_schedule_scales_every_param_group():
    opt = torch.optim.SGD(
        [{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.1},
         {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.01}],
        lr=0.1,
    )
    s = LRSchedule(opt, SchedulerSpec(name="exponential", gamma=0.5), 10, "min")
    s.step()
    s.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.025, 0.0025])


def test_reduce_on_plateau_min_mode():
    s = _sched(name="reduce_on_plateau", factor=0.5, patience=2)
    s.epoch_end(1.0)
    s.step()
    for _ in range(2):  # patience epochs without improvement: not yet
        s.epoch_end(1.0)
        s.step()
        assert s.lr == pytest.approx(BASE)
    s.epoch_end(1.5)  # one more: reduced by factor
    s.step()  # step() must not undo the plateau's reduction
    assert s.lr == pytest.approx(BASE * 0.5)
    s.epoch_end(0.5)  # improvement resets
    s.step()
    for _ in range(2):
        s.epoch_end(0.6)
        assert s.lr == pytest.approx(BASE * 0.5)
    s.epoch_end(0.6)
    assert s.lr == pytest.approx(BASE * 0.25)


def test_reduce_on_plateau_max_mode_and_improving_metric():
    s = _sched("max", name="reduce_on_plateau", factor=0.1, patience=0)
    for acc in (0.5, 0.6, 0.7):  # improving: no reduction
        s.epoch_end(acc)
        s.step()
    assert s.lr == pytest.approx(BASE)
    s.epoch_end(0.65)  # worse for max mode, patience 0: reduce at once
    assert s.lr == pytest.approx(BASE * 0.1)


def test_reduce_on_plateau_respects_min_lr_and_ignores_none():
    s = _sched(name="reduce_on_plateau", factor=0.1, patience=0, min_lr=0.05)
    s.epoch_end(None)
    s.epoch_end(1.0)
    for _ in range(3):
        s.epoch_end(2.0)
    assert s.lr == pytest.approx(0.05)


def test_reduce_on_plateau_after_warmup():
    s = _sched(name="reduce_on_plateau", warmup=3, factor=0.5, patience=0)
    lrs = [s.lr]
    for _ in range(3):
        s.epoch_end(1.0)  # ignored during warmup
        s.step()
        lrs.append(s.lr)
    assert lrs == pytest.approx([BASE / 4, BASE / 2, 3 * BASE / 4, BASE])
    s.epoch_end(1.0)
    s.epoch_end(1.0)
    assert s.lr == pytest.approx(BASE / 2)
    s.step()
    assert s.lr == pytest.approx(BASE / 2)


@pytest.mark.parametrize(
    "kw",
    [
        {"name": "step", "step_size": 2, "gamma": 0.5},
        {"name": "cosine", "t_max": 12, "min_lr": 0.001, "warmup": 2},
        {"name": "inverse_sqrt", "warmup": 3},
    ],
)
def test_state_dict_round_trip(kw):
    a = _sched(**kw)
    for _ in range(7):
        a.step()
    state = a.state_dict()
    assert state["t"] == 7
    b = _sched(**kw)
    assert b.lr != pytest.approx(a.lr)
    b.load_state_dict(state)
    assert b.t == 7 and b.lr == pytest.approx(a.lr, rel=1e-14)
    assert _lrs(b, 6) == pytest.approx(_lrs(a, 6), rel=1e-14)


def test_state_dict_round_trip_reduce_on_plateau():
    a = _sched(name="reduce_on_plateau", factor=0.5, patience=1)
    for metric in (1.0, 1.0, 1.0, 0.9, 0.95):  # reduce once, then best = 0.9 with one bad epoch
        a.epoch_end(metric)
        a.step()
    assert a.lr == pytest.approx(BASE / 2)
    state = a.state_dict()
    opt_state = a.optimizer.state_dict()

    b = _sched(name="reduce_on_plateau", factor=0.5, patience=1)
    b.optimizer.load_state_dict(opt_state)
    b.load_state_dict(state)
    assert b.t == a.t and b.lr == pytest.approx(BASE / 2)
    assert b.plateau.best == a.plateau.best and b.plateau.num_bad_epochs == a.plateau.num_bad_epochs
    a.epoch_end(0.95)
    b.epoch_end(0.95)  # the second bad epoch since 0.9 reduces again in both
    assert a.lr == pytest.approx(BASE / 4) and b.lr == pytest.approx(BASE / 4)
