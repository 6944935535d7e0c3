"""`validate`'s torch-free layer table agrees with the real model, layer by layer."""

from __future__ import annotations

import typing

import pytest

from mlptrain.config import ActivationName, ModelSpec
from mlptrain.model import build_model, count_parameters, summarize
from mlptrain.summary import count, layer_table

ACTIVATIONS = typing.get_args(ActivationName)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_layer_table_matches_the_built_model(activation, norm):
    spec = ModelSpec(
        hidden=[7, 5], activation={"name": activation, "slope": 0.2, "alpha": 0.5, "beta": 2.0, "k": 3},
        norm=norm, dropout=0.3, input_dropout=0.1,
    )
    model = build_model(spec, 4, 3)
    rows = layer_table(spec, 4, 3)
    assert rows == summarize(model, 4)
    assert count(rows) == count_parameters(model)


@pytest.mark.parametrize("hidden", [[], [4], [256, 256, 10]])
def test_plain_nets_and_the_notes_26(hidden):
    spec = ModelSpec(hidden=hidden, activation=[{"name": "relu"}] * len(hidden) if hidden else "relu")
    assert layer_table(spec, 3, 2) == summarize(build_model(spec, 3, 2), 3)
    if hidden == [4]:
        assert count(layer_table(spec, 3, 2)) == 26
