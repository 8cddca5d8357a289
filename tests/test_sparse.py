"""Masked layers, ERK allocation and the zero-weight invariant under Adam."""

import pytest
import torch
from torch import nn

from nelib.sparse.masks import (
    MaskedConv2d,
    MaskedLinear,
    apply_masks,
    copy_masks,
    density_report,
    erk_densities,
    mask_gradients,
    masked_layers,
    sparsify,
)


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(MaskedLinear(4, 8), nn.ReLU(), MaskedLinear(8, 8), nn.ReLU(), MaskedLinear(8, 2))


def test_erk_densities_known_shapes():
    # raw ERK factors: (4+4)/16 = 0.5 and (8+8)/64 = 0.25; budget 0.5 * 80 = 40 = eps * (0.5*16 + 0.25*64)
    d = erk_densities([(4, 4), (8, 8)], 0.5)
    assert d == pytest.approx([0.5 * 40 / 24, 0.25 * 40 / 24])
    assert d[0] * 16 + d[1] * 64 == pytest.approx(40)


def test_erk_makes_overfull_layers_dense_and_respreads_budget():
    # layer 0 would get 14.7 > 1: it becomes dense and the rest of the budget goes to layer 1
    d = erk_densities([(2, 2), (100, 100)], 0.3)
    assert d[0] == 1.0
    assert d[1] == pytest.approx((0.3 * 10004 - 4) / 10000)


def test_erk_forced_dense_layers():
    d = erk_densities([(8, 4), (8, 8), (2, 8)], 0.6, dense=(0, 2))
    assert d[0] == d[2] == 1.0
    assert d[1] == pytest.approx((0.6 * 112 - 48) / 64)
    with pytest.raises(ValueError):
        erk_densities([(8, 4), (8, 8)], 0.0)


def test_sparsify_exact_counts_and_zero_weights():
    net = tiny_net()
    densities = sparsify(net, 0.5, torch.Generator().manual_seed(1))
    for (_, layer), d in zip(masked_layers(net), densities, strict=True):
        assert int(layer.mask.sum()) == round(d * layer.mask.numel())
        assert torch.all(layer.weight[~layer.mask] == 0)
    rep = density_report(net)
    assert rep["active_connections"] == sum(int(m.mask.sum()) for _, m in masked_layers(net))
    assert rep["density"] == pytest.approx(0.5, abs=0.01)


def test_sparsify_is_deterministic_for_a_seed():
    a, b = tiny_net(), tiny_net()
    sparsify(a, 0.3, torch.Generator().manual_seed(7))
    sparsify(b, 0.3, torch.Generator().manual_seed(7))
    for (_, la), (_, lb) in zip(masked_layers(a), masked_layers(b), strict=True):
        assert torch.equal(la.mask, lb.mask)


def test_masked_weights_and_adam_moments_stay_zero_after_50_steps():
    net = tiny_net()
    sparsify(net, 0.3, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(32, 4)
    for _ in range(50):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        mask_gradients(net)
        opt.step()
    for _, layer in masked_layers(net):
        absent = ~layer.mask
        assert torch.all(layer.weight[absent] == 0)
        assert torch.all(opt.state[layer.weight]["exp_avg"][absent] == 0)
        assert torch.all(opt.state[layer.weight]["exp_avg_sq"][absent] == 0)
        assert torch.all(layer.weight[layer.mask] != 0)  # present weights did train


def test_copy_masks_to_target_and_apply_masks():
    net, target = tiny_net(), tiny_net()
    sparsify(net, 0.4, torch.Generator().manual_seed(3))
    copy_masks(net, target)
    for (_, a), (_, b) in zip(masked_layers(net), masked_layers(target), strict=True):
        assert torch.equal(a.mask, b.mask)
        assert torch.all(b.weight[~b.mask] == 0)
    layer = masked_layers(net)[0][1]
    with torch.no_grad():
        layer.weight.fill_(1.0)
    apply_masks(net)
    assert int((layer.weight != 0).sum()) == int(layer.mask.sum())


def test_masked_conv_mask_shape():
    conv = MaskedConv2d(3, 4, 3)
    assert conv.mask.shape == conv.weight.shape and conv.mask.dtype == torch.bool


def test_gradient_masking_follows_mask_changes():
    layer = MaskedLinear(3, 2)
    x = torch.randn(5, 3)

    def masked_grad():
        layer.weight.grad = None
        layer(x).sum().backward()
        mask_gradients(layer)
        return layer.weight.grad

    assert torch.all(masked_grad() != 0)  # full layer: untouched
    layer.mask[0, 1] = False
    assert masked_grad()[0, 1] == 0 and int((masked_grad() != 0).sum()) == 5
    layer.mask[0, 1] = True  # regrown: its gradient flows again
    assert masked_grad()[0, 1] != 0


def test_sparsify_can_keep_the_largest_initial_weights():
    torch.manual_seed(0)
    net = nn.Sequential(MaskedLinear(64, 64), nn.ReLU(), MaskedLinear(64, 64))
    w = [net[0].weight.detach().clone(), net[2].weight.detach().clone()]
    densities = sparsify(net, 0.25, keep="magnitude")
    for layer, before, d in zip((net[0], net[2]), w, densities, strict=True):
        k = round(d * before.numel())
        assert int(layer.mask.sum()) == k
        assert before[layer.mask].abs().min() >= before[~layer.mask].abs().max()  # the top-k |w|
    with pytest.raises(ValueError, match="keep"):
        sparsify(net, 0.25, keep="biggest")
