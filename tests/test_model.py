"""The network: activation and init registries, build_model, summaries, and backprop checks."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlptrain import config, model
from mlptrain.config import ActivationSpec, InitSpec, ModelSpec
from mlptrain.model import ACTIVATIONS, INITS, Maxout, build_model, count_parameters, init_linear, summarize

X = torch.tensor([-1000.0, -3.0, -2.0, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0, 3.0, 20.0])


# ---------------------------------------------------------------------------------------------
# Activations


def test_activation_registry_matches_config_names():
    assert set(ACTIVATIONS) == set(get_args(config.ActivationName))
    assert len(ACTIVATIONS) == len(get_args(config.ActivationName))


@pytest.mark.parametrize("name", sorted(get_args(config.ActivationName)))
def test_every_activation_builds_in_a_model_and_runs(name):
    torch.manual_seed(0)
    net = build_model(ModelSpec(hidden=[6, 4], activation=ActivationSpec(name=name)), 3, 2)
    out = net(torch.randn(5, 3))
    assert out.shape == (5, 2)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert net.hidden1.weight.grad is not None and torch.isfinite(net.hidden1.weight.grad).all()


FORMULAS = {
    "sigmoid": (ActivationSpec(name="sigmoid"), lambda x: 1 / (1 + torch.exp(-x))),
    "tanh": (ActivationSpec(name="tanh"), lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x))),
    "hardtanh": (ActivationSpec(name="hardtanh"), lambda x: torch.clamp(x, -1.0, 1.0)),
    "softsign": (ActivationSpec(name="softsign"), lambda x: x / (1 + x.abs())),
    "relu": (ActivationSpec(name="relu"), lambda x: torch.where(x > 0, x, torch.zeros_like(x))),
    "abs": (ActivationSpec(name="abs"), lambda x: torch.where(x >= 0, x, -x)),
    "leaky_relu": (ActivationSpec(name="leaky_relu", slope=0.2), lambda x: torch.where(x > 0, x, 0.2 * x)),
    "elu": (ActivationSpec(name="elu", alpha=1.5), lambda x: torch.where(x > 0, x, 1.5 * (torch.exp(x) - 1))),
    "softplus": (ActivationSpec(name="softplus", beta=2.0), lambda x: torch.log1p(torch.exp(2.0 * x)) / 2.0),
    "gelu": (ActivationSpec(name="gelu"), lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))),
    "silu": (ActivationSpec(name="silu"), lambda x: x / (1 + torch.exp(-x))),
    "identity": (ActivationSpec(name="identity"), lambda x: x),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activation_matches_its_formula(name):
    spec, formula = FORMULAS[name]
    # Moderate inputs, in float64, so the naive formulas are exact enough.
    x = X[1:-1].double()
    act = ACTIVATIONS[name](spec, x.numel()).double()
    torch.testing.assert_close(act(x), formula(x), rtol=1e-7, atol=1e-9)


def test_activations_stay_finite_at_extreme_inputs():
    for name in ACTIVATIONS:
        if name == "maxout":
            continue
        act = ACTIVATIONS[name](ActivationSpec(name=name), X.numel())
        assert torch.isfinite(act(X[None, :])).all(), name
    softplus = ACTIVATIONS["softplus"](ActivationSpec(name="softplus", beta=1.0), 1)
    assert softplus(torch.tensor([1000.0])).item() == pytest.approx(1000.0)


def test_leaky_relu_and_elu_use_their_parameters():
    leaky = ACTIVATIONS["leaky_relu"](ActivationSpec(name="leaky_relu", slope=0.3), 1)
    assert leaky(torch.tensor([-2.0])).item() == pytest.approx(-0.6)
    elu = ACTIVATIONS["elu"](ActivationSpec(name="elu", alpha=2.0), 1)
    assert elu(torch.tensor([-50.0])).item() == pytest.approx(-2.0)  # saturates at -alpha


def test_prelu_has_one_learned_slope_per_unit_that_gets_gradient():
    act = ACTIVATIONS["prelu"](ActivationSpec(name="prelu", slope=0.25), 4)
    params = list(act.parameters())
    assert len(params) == 1 and params[0].shape == (4,)
    torch.testing.assert_close(params[0].data, torch.full((4,), 0.25))
    z = torch.tensor([[-2.0, -1.0, 1.0, 3.0]])
    torch.testing.assert_close(act(z), torch.tensor([[-0.5, -0.25, 1.0, 3.0]]), check_dtype=False)
    act(z).sum().backward()
    # d/da of a*z for z < 0 is z; units with z > 0 get no gradient.
    torch.testing.assert_close(params[0].grad, torch.tensor([-2.0, -1.0, 0.0, 0.0]))


def test_prelu_in_model_counts_and_trains_its_slopes():
    spec = ModelSpec(hidden=[5], activation=ActivationSpec(name="prelu", slope=0.1))
    net = build_model(spec, 3, 2)
    assert isinstance(net.act1, nn.PReLU)
    assert net.act1.weight.shape == (5,)
    assert count_parameters(net) == (3 * 5 + 5) + 5 + (5 * 2 + 2)
    torch.manual_seed(0)
    net(torch.randn(16, 3)).pow(2).sum().backward()
    assert net.act1.weight.grad is not None and net.act1.weight.grad.abs().sum() > 0


def test_maxout_returns_max_of_consecutive_pieces():
    act = ACTIVATIONS["maxout"](ActivationSpec(name="maxout", k=3), 6)
    assert isinstance(act, Maxout) and act.k == 3
    z = torch.tensor([[1.0, 5.0, 2.0, -1.0, -3.0, -2.0], [0.0, -1.0, 7.0, 4.0, 9.0, 8.0]])
    torch.testing.assert_close(act(z), torch.tensor([[5.0, -1.0], [7.0, 9.0]]))
    torch.manual_seed(0)
    z = torch.randn(4, 12)
    torch.testing.assert_close(act(z), torch.stack([z[:, 3 * j: 3 * j + 3].max(dim=1).values for j in range(4)], 1))


def test_build_model_makes_maxout_linear_k_times_wider():
    spec = ModelSpec(hidden=[4, 3], activation=ActivationSpec(name="maxout", k=3))
    net = build_model(spec, 5, 2)
    assert net.hidden1.in_features == 5 and net.hidden1.out_features == 12
    assert net.hidden2.in_features == 4 and net.hidden2.out_features == 9
    assert net.output.in_features == 3
    assert count_parameters(net) == (5 * 12 + 12) + (4 * 9 + 9) + (3 * 2 + 2)
    assert net(torch.randn(7, 5)).shape == (7, 2)


# ---------------------------------------------------------------------------------------------
# Initialization


def test_init_registry_matches_config_names():
    assert set(INITS) == set(get_args(config.InitName))
    assert len(INITS) == len(get_args(config.InitName))


def _big_layer(name: str, fan_in: int = 400, fan_out: int = 300, **kw) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(fan_in, fan_out)
    init_linear(layer, InitSpec(name=name, **kw))
    return layer


def _expected_var(name: str, fan_in: int, fan_out: int, gain: float) -> float:
    if name.startswith(("xavier", "glorot")):
        return gain**2 * 2.0 / (fan_in + fan_out)
    if name.startswith(("kaiming", "he")):
        return 2.0 / fan_in  # ReLU gain sqrt(2), fan_in mode
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    ["xavier_uniform", "xavier_normal", "glorot_uniform", "glorot_normal",
     "kaiming_uniform", "kaiming_normal", "he_uniform", "he_normal"],
)
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_xavier_and_kaiming_variance(name, gain):
    layer = _big_layer(name, gain=gain)
    w = layer.weight.detach()
    expected = _expected_var(name, 400, 300, gain)
    assert w.var().item() == pytest.approx(expected, rel=0.05)
    assert w.mean().abs().item() < 0.05 * math.sqrt(expected)
    if name.endswith("uniform"):
        bound = math.sqrt(3 * expected)
        assert w.abs().max().item() <= bound + 1e-6
        assert w.abs().max().item() > 0.99 * bound


def test_glorot_names_are_xavier_aliases():
    for a, b in [("glorot_uniform", "xavier_uniform"), ("glorot_normal", "xavier_normal"),
                 ("he_uniform", "kaiming_uniform"), ("he_normal", "kaiming_normal")]:
        torch.testing.assert_close(_big_layer(a, gain=1.5).weight, _big_layer(b, gain=1.5).weight)


def test_normal_init_has_the_given_std():
    w = _big_layer("normal", std=0.05).weight.detach()
    assert w.std().item() == pytest.approx(0.05, rel=0.02)
    assert abs(w.mean().item()) < 0.001


def test_uniform_init_lies_within_a():
    w = _big_layer("uniform", a=0.2).weight.detach()
    assert w.abs().max().item() <= 0.2
    assert w.abs().max().item() > 0.199
    assert w.var().item() == pytest.approx(0.2**2 / 3, rel=0.03)


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal_init_gives_orthonormal_rows(gain):
    layer = _big_layer("orthogonal", fan_in=64, fan_out=32, gain=gain)
    w = layer.weight.detach()
    torch.testing.assert_close(w @ w.T, gain**2 * torch.eye(32), atol=1e-5, rtol=0)
    # Tall matrix: orthonormal columns instead.
    tall = _big_layer("orthogonal", fan_in=16, fan_out=48, gain=gain).weight.detach()
    torch.testing.assert_close(tall.T @ tall, gain**2 * torch.eye(16), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(n for n in get_args(config.InitName) if n != "default"))
def test_every_init_sets_bias_constant_and_changes_weights(name):
    torch.manual_seed(0)
    before = nn.Linear(20, 10)
    torch.manual_seed(0)
    layer = nn.Linear(20, 10)
    init_linear(layer, InitSpec(name=name, bias=0.3))
    torch.testing.assert_close(layer.bias.detach(), torch.full((10,), 0.3))
    assert not torch.equal(layer.weight, before.weight)


def test_build_model_applies_init_to_every_linear():
    spec = ModelSpec(hidden=[8, 8], init=InitSpec(name="uniform", a=0.01, bias=-0.5))
    net = build_model(spec, 4, 3)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    for lin in linears:
        assert lin.weight.abs().max().item() <= 0.01
        torch.testing.assert_close(lin.bias.detach(), torch.full_like(lin.bias, -0.5))


def test_default_init_leaves_pytorch_init():
    spec = ModelSpec(hidden=[7], init=InitSpec(name="default", bias=0.9))
    torch.manual_seed(3)
    net = build_model(spec, 5, 2)
    torch.manual_seed(3)
    ref1, ref2 = nn.Linear(5, 7), nn.Linear(7, 2)
    torch.testing.assert_close(net.hidden1.weight, ref1.weight)
    torch.testing.assert_close(net.hidden1.bias, ref1.bias)
    torch.testing.assert_close(net.output.weight, ref2.weight)
    torch.testing.assert_close(net.output.bias, ref2.bias)
    assert not torch.all(net.hidden1.bias == 0.9)  # bias ignored for default
    # PyTorch's Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    assert net.hidden1.weight.abs().max().item() <= 1 / math.sqrt(5)


# ---------------------------------------------------------------------------------------------
# build_model


def test_no_hidden_layer_is_a_single_linear():
    net = build_model(ModelSpec(hidden=[]), 6, 1)
    children = list(net.named_children())
    assert len(children) == 1
    name, layer = children[0]
    assert name == "output" and isinstance(layer, nn.Linear)
    assert (layer.in_features, layer.out_features) == (6, 1)
    assert count_parameters(net) == 7


def test_3_4_2_net_has_26_parameters():
    net = build_model(ModelSpec(hidden=[4], activation="sigmoid"), 3, 2)
    assert count_parameters(net) == 26
    assert [n for n, _ in net.named_children()] == ["hidden1", "act1", "output"]
    assert isinstance(net.act1, nn.Sigmoid)


def test_count_parameters_skips_frozen():
    net = build_model(ModelSpec(hidden=[4]), 3, 2)
    net.hidden1.weight.requires_grad_(False)
    assert count_parameters(net) == 26 - 12


def test_per_layer_activation_list():
    spec = ModelSpec(hidden=[4, 5, 3], activation=["tanh", {"name": "leaky_relu", "slope": 0.2}, "identity"])
    net = build_model(spec, 2, 1)
    assert isinstance(net.act1, nn.Tanh)
    assert isinstance(net.act2, nn.LeakyReLU) and net.act2.negative_slope == 0.2
    assert isinstance(net.act3, nn.Identity)
    assert [net.hidden1.out_features, net.hidden2.out_features, net.hidden3.out_features] == [4, 5, 3]


def test_dropout_layers_have_right_p_and_order():
    spec = ModelSpec(hidden=[8, 8], input_dropout=0.2, dropout=0.5)
    net = build_model(spec, 4, 2)
    names = [n for n, _ in net.named_children()]
    assert names == ["input_dropout", "hidden1", "act1", "dropout1", "hidden2", "act2", "dropout2", "output"]
    assert isinstance(net.input_dropout, nn.Dropout) and net.input_dropout.p == 0.2
    assert net.dropout1.p == 0.5 and net.dropout2.p == 0.5
    no_drop = build_model(ModelSpec(hidden=[8, 8]), 4, 2)
    assert not any(isinstance(m, nn.Dropout) for m in no_drop.modules())


def test_dropout_only_active_in_train_mode():
    torch.manual_seed(0)
    net = build_model(ModelSpec(hidden=[64], input_dropout=0.2, dropout=0.5), 10, 3)
    x = torch.randn(32, 10)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b)
    net.train()
    with torch.no_grad():
        c, d = net(x), net(x)
    assert not torch.equal(c, d)
    assert not torch.allclose(c, a)
    # The dropout module itself: zeros a fraction p, scales the rest by 1/(1-p).
    ones = torch.ones(100_000)
    dropped = net.dropout1(ones)
    assert (dropped == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert torch.allclose(dropped[dropped != 0], torch.tensor(2.0))
    net.eval()
    assert torch.equal(net.dropout1(ones), ones)
    assert torch.equal(net.input_dropout(ones), ones)


@pytest.mark.parametrize("norm, cls", [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm)])
def test_norm_layers_follow_each_hidden_linear(norm, cls):
    net = build_model(ModelSpec(hidden=[6, 5], norm=norm), 3, 2)
    names = [n for n, _ in net.named_children()]
    assert names == ["hidden1", "norm1", "act1", "hidden2", "norm2", "act2", "output"]
    assert isinstance(net.norm1, cls) and isinstance(net.norm2, cls)
    if cls is nn.BatchNorm1d:
        assert net.norm1.num_features == 6 and net.norm2.num_features == 5
    else:
        assert net.norm1.normalized_shape == (6,) and net.norm2.normalized_shape == (5,)
    # Normalized pre-activations: the hidden1 output after norm1 has ~zero mean per feature (batch)
    # or per row (layer) in train mode.
    torch.manual_seed(0)
    h = net.norm1(net.hidden1(torch.randn(64, 3) * 5 + 3))
    dim = 0 if norm == "batch" else 1
    assert h.mean(dim=dim).abs().max().item() < 1e-5
    assert count_parameters(net) == (3 * 6 + 6) + 12 + (6 * 5 + 5) + 10 + (5 * 2 + 2)


def test_summarize_rows():
    spec = ModelSpec(hidden=[4, 3], activation="prelu", norm="batch", dropout=0.1, input_dropout=0.1)
    net = build_model(spec, 5, 2)
    net.train()
    rows = summarize(net, 5)
    assert net.training  # mode restored
    assert [r["name"] for r in rows] == [n for n, _ in net.named_children()]
    assert sum(r["params"] for r in rows) == count_parameters(net)
    by_name = {r["name"]: r for r in rows}
    assert by_name["input_dropout"]["output"] == [None, 5]
    assert by_name["hidden1"]["output"] == [None, 4]
    assert by_name["hidden1"]["layer"] == "Linear(5→4)"
    assert by_name["hidden1"]["weights"] == {"weight": [4, 5], "bias": [4]}
    assert by_name["hidden1"]["params"] == 24
    assert by_name["norm1"]["params"] == 8
    assert by_name["act1"]["params"] == 4
    assert by_name["hidden2"]["output"] == [None, 3]
    assert by_name["output"]["output"] == [None, 2]
    assert by_name["output"]["params"] == 3 * 2 + 2
    net.eval()
    summarize(net, 5)
    assert not net.training


def test_summarize_26_parameter_net():
    net = build_model(ModelSpec(hidden=[4]), 3, 2)
    rows = summarize(net, 3)
    assert [(r["name"], r["output"], r["params"]) for r in rows] == [
        ("hidden1", [None, 4], 16), ("act1", [None, 4], 0), ("output", [None, 2], 10),
    ]


def test_summarize_maxout_shapes():
    net = build_model(ModelSpec(hidden=[4], activation={"name": "maxout", "k": 2}), 3, 2)
    rows = {r["name"]: r for r in summarize(net, 3)}
    assert rows["hidden1"]["output"] == [None, 8]
    assert rows["act1"]["output"] == [None, 4]
    assert rows["act1"]["layer"] == "Maxout(k=2)"


# ---------------------------------------------------------------------------------------------
# Backpropagation


@pytest.mark.parametrize("act", ["tanh", "softplus"])
def test_gradcheck_wrt_input_and_parameters(act):
    torch.manual_seed(0)
    net = build_model(ModelSpec(hidden=[5, 4], activation=act), 3, 2).double()
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6)

    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in net.parameters())
    y = torch.randn(6, 2, dtype=torch.float64)

    def loss(*ps):
        out = torch.func.functional_call(net, dict(zip(names, ps)), (x.detach(),))
        return F.mse_loss(out, y)

    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6)


def test_hand_written_backprop_matches_autograd():
    """The notes' equations for one sigmoid hidden layer, linear output and MSE."""
    torch.manual_seed(1)
    n, d, h, k = 8, 3, 5, 2
    net = build_model(ModelSpec(hidden=[h], activation="sigmoid"), d, k).double()
    x = torch.randn(n, d, dtype=torch.float64)
    y = torch.randn(n, k, dtype=torch.float64)
    W1, b1 = net.hidden1.weight.detach(), net.hidden1.bias.detach()
    W2, b2 = net.output.weight.detach(), net.output.bias.detach()

    # Forward: z1 = W1 x + b1, a1 = sigma(z1), yhat = W2 a1 + b2, J = 1/(n k) sum (yhat - y)^2.
    z1 = x @ W1.T + b1
    a1 = 1 / (1 + torch.exp(-z1))
    yhat = a1 @ W2.T + b2
    J = ((yhat - y) ** 2).sum() / (n * k)

    # Backward: delta2 = dJ/dyhat, delta1 = (delta2 W2) * sigma'(z1) with sigma' = a (1 - a).
    delta2 = 2 * (yhat - y) / (n * k)
    gW2 = delta2.T @ a1
    gb2 = delta2.sum(0)
    delta1 = (delta2 @ W2) * a1 * (1 - a1)
    gW1 = delta1.T @ x
    gb1 = delta1.sum(0)

    out = net(x)
    loss = F.mse_loss(out, y)
    torch.testing.assert_close(out.detach(), yhat)
    torch.testing.assert_close(loss.detach(), J)
    loss.backward()
    torch.testing.assert_close(net.output.weight.grad, gW2)
    torch.testing.assert_close(net.output.bias.grad, gb2)
    torch.testing.assert_close(net.hidden1.weight.grad, gW1)
    torch.testing.assert_close(net.hidden1.bias.grad, gb1)


def test_model_module_has_registries():
    # The ACTIVATIONS/INITS/NORMS names that config exposes are exactly the ones model builds.
    assert set(model.NORMS) == set(get_args(ModelSpec.model_fields["norm"].annotation)) - {"none"}
