"""Growth, dormant pruning, the topology scheduler and experience review, with exact counts."""

import math

import pytest
import torch
from torch import nn

from nelib.dormant import prune_dormant, unit_layers
from nelib.growth import GrowthConfig, grow, growth_count, growth_fraction
from nelib.metrics import capture_activations
from nelib.review import ExperienceReview, ReviewConfig, early_indices
from nelib.sparse import MaskedLinear, mask_gradients, masked_layers
from nelib.topology import TopologyConfig, TopologyScheduler


def layer_with_mask(mask):
    layer = MaskedLinear(mask.shape[1], mask.shape[0])
    with torch.no_grad():
        layer.mask.copy_(mask)
        layer.weight.mul_(mask)
    return layer


def test_gradient_growth_picks_top_abs_grad_absent_positions():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(6, 5, generator=g) < 0.3
    layer = layer_with_mask(mask)
    grad = torch.randn(6, 5, generator=g)
    grown = grow(layer, 7, "gradient", grad)
    # brute force: absent positions sorted by |grad|, descending
    absent = [(abs(grad[i, j].item()), i, j) for i in range(6) for j in range(5) if not mask[i, j]]
    expected = {(i, j) for _, i, j in sorted(absent, reverse=True)[:7]}
    assert {tuple(ix) for ix in grown.nonzero().tolist()} == expected
    assert not (grown & mask).any()  # only absent positions
    assert torch.equal(layer.mask, mask | grown)
    assert torch.all(layer.weight[grown] == 0)  # new weights start at zero


def test_growth_never_exceeds_free_positions_and_random_growth_is_seeded():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0] = True
    a, b = layer_with_mask(mask), layer_with_mask(mask)
    ga = grow(a, 100, "random", generator=torch.Generator().manual_seed(5))
    assert int(ga.sum()) == 12 and a.mask.all()
    grow(b, 5, "random", generator=torch.Generator().manual_seed(5))
    c = layer_with_mask(mask)
    grow(c, 5, "random", generator=torch.Generator().manual_seed(5))
    assert torch.equal(b.mask, c.mask) and int(b.mask.sum()) == 9


def test_schedules_and_growth_count():
    cosine = GrowthConfig(schedule="cosine", rate=0.1)
    assert growth_fraction(cosine, 0, 1000) == pytest.approx(0.1)
    assert growth_fraction(cosine, 500, 1000) == pytest.approx(0.05)
    assert growth_fraction(cosine, 250, 1000) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert growth_fraction(cosine, 1000, 1000) == 0.0
    assert growth_fraction(GrowthConfig(schedule="constant", rate=0.1), 999, 1000) == 0.1
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[:2] = True  # 20 present, 80 free
    assert growth_count(GrowthConfig(), mask, 80, 0.1) == 8
    assert growth_count(GrowthConfig(target_density=0.25), mask, 80, 0.1) == 5  # capped at the target
    with pytest.raises(ValueError):
        GrowthConfig(criterion="magic")


def test_prune_dormant_exact_cap_whole_units_first():
    mask = torch.ones(4, 5, dtype=torch.bool)
    layer = layer_with_mask(mask)
    scores = torch.tensor([0.0, 1.0, 0.0, 0.0])  # units 0, 2, 3 dormant: 15 candidate connections
    pruned = prune_dormant(layer, scores, 0.0, 12, torch.Generator().manual_seed(0))
    assert int(pruned.sum()) == 12
    assert not pruned[1].any()  # active unit untouched
    per_unit = pruned.sum(dim=1).tolist()
    assert sorted(per_unit) == [0, 2, 5, 5]  # two whole units, then part of the third
    assert torch.all(layer.weight[pruned] == 0) and not (layer.mask & pruned).any()


def test_prune_takes_everything_under_the_cap_and_respects_candidates():
    layer = layer_with_mask(torch.ones(3, 4, dtype=torch.bool))
    scores = torch.tensor([0.0, 0.5, 2.5])
    candidates = torch.ones(3, 4, dtype=torch.bool)
    candidates[0, 0] = False
    pruned = prune_dormant(layer, scores, 0.0, 100, candidates=candidates)
    assert pruned.sum(dim=1).tolist() == [3, 0, 0]
    assert prune_dormant(layer, scores, 0.0, 0).sum() == 0


def test_unit_layers_pairs_relu_with_preceding_masked_layer():
    net = nn.Sequential(MaskedLinear(3, 4), nn.LayerNorm(4), nn.ReLU(), MaskedLinear(4, 4), nn.ReLU(),
                        MaskedLinear(4, 1))
    pairs = {relu: lname for relu, (lname, _) in unit_layers(net).items()}
    assert pairs == {"2": "0", "4": "3"}


def make_dormant_net():
    """3-8-8-1 net, hidden layers half sparse, last dense; hidden unit 0 of layer 0 is dead (bias -100)."""
    torch.manual_seed(0)
    net = nn.Sequential(MaskedLinear(3, 8), nn.ReLU(), MaskedLinear(8, 8), nn.ReLU(), MaskedLinear(8, 1))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.mask.copy_(torch.rand(layer.mask.shape, generator=g) < 0.5)
            layer.weight.mul_(layer.mask)
        net[0].bias[0] = -100.0
    return net


def test_scheduler_exact_counts_disjoint_sets_and_adam_state():
    net = make_dormant_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    cfg = TopologyConfig(interval=10, growth=GrowthConfig(schedule="constant", rate=0.25))
    sched = TopologyScheduler(net, opt, cfg, total_updates=1000, generator=torch.Generator().manual_seed(0))
    x = torch.randn(64, 3)
    initial_free = {n: int((~lay.mask).sum()) for n, lay in masked_layers(net)}
    for update in range(1, 11):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        if sched.due(update):
            sched.capture_gradients()
        mask_gradients(net)
        opt.step()
    assert sched.due(10) and not sched.due(5)
    # make every Adam moment non-zero so that resets are visible
    for _, layer in masked_layers(net):
        opt.state[layer.weight]["exp_avg"].fill_(1.0)
        opt.state[layer.weight]["exp_avg_sq"].fill_(1.0)
    before = {n: lay.mask.clone() for n, lay in masked_layers(net)}
    acts = capture_activations(net, x)
    dead = {"0": acts["1"].abs().sum(0) == 0, "2": acts["3"].abs().sum(0) == 0}
    assert dead["0"][0]
    stats = sched.step(10, acts)
    total_grown = total_pruned = 0
    for name, layer in masked_layers(net):
        grown = layer.mask & ~before[name]
        pruned = before[name] & ~layer.mask
        assert int(grown.sum()) == round(0.25 * initial_free[name])
        assert not (grown & pruned).any()
        if name in dead:  # hidden layers: prune the dormant units' connections, capped at omega * grown
            candidates = int(before[name][dead[name]].sum())
            assert int(pruned.sum()) == min(int(0.4 * int(grown.sum())), candidates)
            assert not pruned[~dead[name]].any()
        else:  # the output layer has no ReLU: never pruned
            assert not pruned.any()
        changed = grown | pruned
        assert torch.all(opt.state[layer.weight]["exp_avg"][changed] == 0)
        assert torch.all(opt.state[layer.weight]["exp_avg_sq"][changed] == 0)
        assert torch.all(opt.state[layer.weight]["exp_avg"][~changed] == 1)
        total_grown += int(grown.sum())
        total_pruned += int(pruned.sum())
    assert total_pruned > 0
    assert (stats["grown"], stats["pruned"]) == (total_grown, total_pruned)


def test_pruned_and_never_grown_weights_stay_zero_after_50_adam_steps():
    net = make_dormant_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    cfg = TopologyConfig(interval=10, growth=GrowthConfig(schedule="constant", rate=0.1))
    sched = TopologyScheduler(net, opt, cfg, total_updates=1000, generator=torch.Generator().manual_seed(0))
    x = torch.randn(64, 3)
    for update in range(1, 51):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        if sched.due(update):
            sched.capture_gradients()
        mask_gradients(net)
        opt.step()
        if sched.due(update):
            sched.step(update, capture_activations(net, x))
    for _, layer in masked_layers(net):
        assert torch.all(layer.weight[~layer.mask] == 0)
        assert torch.all(opt.state[layer.weight]["exp_avg"][~layer.mask] == 0)


def test_topology_is_deterministic_for_a_seed():
    def masks():
        net = make_dormant_net()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        cfg = TopologyConfig(interval=5, growth=GrowthConfig(criterion="random", schedule="constant", rate=0.2))
        sched = TopologyScheduler(net, opt, cfg, 100, torch.Generator().manual_seed(3))
        x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
        for u in range(1, 21):
            opt.zero_grad()
            net(x).sum().backward()
            mask_gradients(net)
            opt.step()
            if sched.due(u):
                sched.step(u, capture_activations(net, x))
        return [layer.mask.clone() for _, layer in masked_layers(net)]

    assert all(torch.equal(a, b) for a, b in zip(masks(), masks(), strict=True))


def test_early_indices_stay_in_the_oldest_window():
    g = torch.Generator().manual_seed(0)
    idx = early_indices(1000, size=100, capacity=200, oldest=0, early_fraction=0.3, generator=g)
    assert idx.min() >= 0 and idx.max() < 30
    # wrapped ring buffer: the oldest item is at ptr=150, window covers 150..209 mod 200
    idx = early_indices(5000, size=200, capacity=200, oldest=150, early_fraction=0.3, generator=g)
    assert set(idx.tolist()) == set(range(150, 200)) | set(range(0, 10))


def test_fluctuation_trigger():
    review = ExperienceReview(ReviewConfig(trigger="fluctuation", threshold=0.01, smoothing=0.0, warmup=2))
    assert review.observe(0.5, 1.0) is False  # first measurement: no rate yet
    assert review.observe(0.3, 1.0) is False  # rate 0.2, still in warm-up
    assert review.observe(0.3, 1.0) is True   # rate 0 after warm-up
    assert review.early_count(256) == 128
    assert review.observe(0.1, 1.0) is False  # dormant ratio moved again
    assert review.early_count(256) == 0
    # what an evaluation row logs: on at 1 of the 4 measurements since the last row, then a fresh count
    assert review.take_share() == 0.25
    assert math.isnan(review.take_share())
    review.observe(0.1, 1.0)
    assert review.take_share() == 1.0


def test_windowed_fluctuation_trigger_compares_means_of_consecutive_windows():
    review = ExperienceReview(ReviewConfig(trigger="fluctuation", window=2, threshold=0.05, warmup=0))
    assert review.observe(0.1, 1.0) is False and review.rate is None
    assert review.observe(0.3, 1.0) is False and review.rate is None  # one window only
    assert review.observe(0.5, 1.0) is False and review.rate is None  # the second window is not full
    assert review.observe(0.7, 1.0) is False
    assert review.rate == pytest.approx(0.4)   # windows (0.1, 0.3) and (0.5, 0.7): |0.6 - 0.2|
    # noise around a plateau: consecutive measurements jump by 0.1, the window means by 0.0
    for d in (0.5, 0.6, 0.5, 0.6):
        review.observe(d, 1.0)
    assert review.rate == pytest.approx(0.0, abs=1e-12) and review.active is True
    assert review.early_count(256) == 128
    # resume: the history travels with the checkpoint
    other = ExperienceReview(review.cfg)
    other.load_state_dict(review.state_dict())
    assert other.observe(0.9, 1.0) == review.observe(0.9, 1.0) and other.rate == review.rate
    assert other.take_share() == review.take_share() > 0  # the review-share count travels too
    with pytest.raises(ValueError, match="window"):
        ReviewConfig(window=-1)


def test_fau_trigger_and_never():
    review = ExperienceReview(ReviewConfig(trigger="fau", fau_threshold=0.4))
    assert review.observe(0.0, 0.5) is False and review.observe(0.0, 0.39) is True
    assert ExperienceReview(ReviewConfig(trigger="always")).early_count(10) == 5
    with pytest.raises(ValueError):
        ReviewConfig(trigger="sometimes")
