"""Plasticity metrics against hand-computed activations."""

import math

import pytest
import torch
from torch import nn

from nelib.metrics import (
    capture_activations,
    dormant_units,
    effective_rank,
    fau,
    plasticity_report,
    redo_scores,
    stable_rank,
    weight_magnitude,
)
from nelib.sparse.masks import MaskedLinear


def test_redo_scores_hand_computed():
    acts = torch.tensor([[1.0, 0.0, 2.0, 0.1], [3.0, 0.0, 2.0, 0.1]])
    # per-unit mean |h| = [2, 0, 2, 0.1]; layer mean = 4.1 / 4
    scores = redo_scores(acts)
    assert scores.tolist() == pytest.approx([2 / 1.025, 0.0, 2 / 1.025, 0.1 / 1.025])
    assert dormant_units(scores, 0.0).tolist() == [False, True, False, False]
    assert dormant_units(scores, 0.1).tolist() == [False, True, False, True]


def test_tau_zero_is_an_exact_test():
    scores = torch.tensor([0.0, 1e-30, 1.0])
    assert dormant_units(scores, 0.0).tolist() == [True, False, False]


def test_all_zero_layer_is_fully_dormant_without_nan():
    scores = redo_scores(torch.zeros(5, 3))
    assert scores.tolist() == [0.0, 0.0, 0.0]
    assert dormant_units(scores, 0.0).all()


def test_conv_channel_is_one_unit():
    acts = torch.zeros(2, 3, 2, 2)
    acts[:, 0] = 1.0  # channel 0: mean 1
    acts[0, 2, 0, 0] = 4.0  # channel 2: mean 4 / 8 = 0.5
    scores = redo_scores(acts)  # layer mean = 1.5 / 3 = 0.5
    assert scores.tolist() == pytest.approx([2.0, 0.0, 1.0])


def test_report_on_tiny_network_with_hand_set_weights():
    net = nn.Sequential(MaskedLinear(2, 3), nn.ReLU(), MaskedLinear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        net[0].bias.zero_()
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    acts = capture_activations(net, x)
    assert list(acts) == ["1"]
    # unit outputs: [[1,2,0],[3,0,0]] -> means [2, 1, 0], layer mean 1 -> scores [2, 1, 0]
    assert redo_scores(acts["1"]).tolist() == [2.0, 1.0, 0.0]
    rep = plasticity_report(acts, taus=(0.0, 1.0))
    assert rep["dormant_0"] == pytest.approx(1 / 3)
    assert rep["dormant_1"] == pytest.approx(2 / 3)
    assert rep["active_ratio"] == pytest.approx(2 / 3)
    assert rep["fau"] == pytest.approx(3 / 6) == fau(acts["1"])
    assert not net[1]._forward_hooks  # hooks removed


def test_ranks_of_a_diagonal_feature_matrix():
    f = torch.diag(torch.tensor([3.0, 1.0]))
    assert stable_rank(f) == pytest.approx(10 / 9)
    assert effective_rank(f) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert stable_rank(torch.zeros(3, 2)) == 0.0 and effective_rank(torch.zeros(3, 2)) == 0.0


def test_weight_magnitude_ignores_biases():
    lin = MaskedLinear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -3.0], [0.0, 0.0]]))
        lin.bias.fill_(100.0)
    assert weight_magnitude(lin) == pytest.approx(1.0)
