"""Growth, dormant pruning, the topology scheduler and experience review, with exact counts."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from nelib.agents.replay import ReplayBuffer
from nelib.metrics import capture_activations
from nelib.sparse.dormant import PruneConfig, prune_dormant, unit_layers
from nelib.sparse.growth import (
    GrowthConfig,
    cosine_progress,
    end_of_growth,
    grow,
    growth_count,
    growth_fraction,
    revived_units,
    target_count,
)
from nelib.sparse.masks import MaskedLinear, mask_gradients, masked_layers
from nelib.sparse.review import ExperienceReview, ReviewConfig, early_indices
from nelib.sparse.topology import TopologyConfig, TopologyScheduler


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


def test_rate_schedules_and_growth_count():
    cosine = GrowthConfig(schedule="cosine", rate=0.1)
    assert growth_fraction(cosine, 0, 1000) == pytest.approx(0.1)
    assert growth_fraction(cosine, 500, 1000) == pytest.approx(0.05)
    assert growth_fraction(cosine, 250, 1000) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert growth_fraction(cosine, 1000, 1000) == 0.0
    assert growth_fraction(GrowthConfig(schedule="constant", rate=0.1), 999, 1000) == 0.1
    with pytest.raises(ValueError, match="rate schedules"):
        growth_fraction(GrowthConfig(schedule="cosine-target"), 0, 1000)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[:2] = True  # 20 present, 80 free
    assert growth_count(GrowthConfig(schedule="constant", rate=0.1), mask, 80, 5, 1000) == 8
    assert growth_count(GrowthConfig(schedule="constant", rate=0.1, target_density=0.25), mask, 80, 5, 1000) == 5


def test_cosine_target_reaches_full_size_at_t_end_and_not_before():
    cfg = GrowthConfig(schedule="cosine-target")
    # 100 weights, 20 present: 20 + round(80 F(t / 1000)), F(x) = x + sin(pi x) / pi
    assert [target_count(cfg, 100, 20, t, 1000) for t in range(0, 1001, 100)] == [
        20, 36, 51, 65, 76, 85, 92, 97, 99, 100, 100]
    assert cosine_progress(0.5) == pytest.approx(0.5 + 1 / math.pi)
    # the per-update increments follow the cosine: largest first, shrinking to zero at T_end
    steps = [target_count(cfg, 100, 20, t, 1000) - target_count(cfg, 100, 20, t - 100, 1000)
             for t in range(100, 1001, 100)]
    assert steps == sorted(steps, reverse=True) and steps[-1] == 0
    # a 256x256 layer, 10k present, grown at every 100 of 75k updates: still growing in the last 5% of the
    # run; full at 73.7k, where the cosine's last increments round to one connection, and not before
    mask = torch.zeros(256, 256, dtype=torch.bool)
    mask.view(-1)[:10_000] = True
    free, end = int((~mask).sum()), 75_000
    assert [65_536 - target_count(cfg, 65_536, 10_000, t, end) for t in (70_000, 72_000, 73_600, 73_700, end)] == [
        27, 6, 1, 0, 0]
    assert growth_count(cfg, mask, free, 100, end) == target_count(cfg, 65_536, 10_000, 100, end) - 10_000
    mask[:] = True
    # after T_end growth only refills what pruning freed, and never goes past the target
    mask.view(-1)[:7] = False
    assert growth_count(cfg, mask, free, end + 100, end) == 7
    half = GrowthConfig(schedule="cosine-target", target_density=0.5)
    assert growth_count(half, mask, free, end, end) == 0
    assert end_of_growth(GrowthConfig(end_fraction=0.25), 75_000) == 18_750
    assert end_of_growth(GrowthConfig(end_step=500, end_fraction=0.25), 75_000) == 500


def test_gradient_growth_breaks_zero_gradient_ties_at_random_only_when_it_reaches_them():
    mask = torch.zeros(4, 5, dtype=torch.bool)
    grad = torch.zeros(4, 5)
    grad[0, :3] = torch.tensor([3.0, 2.0, 1.0])  # 3 positive candidates, 17 zero ties
    a = layer_with_mask(mask)
    gen = torch.Generator().manual_seed(0)
    grown = grow(a, 3, "gradient", grad, generator=gen)
    assert {tuple(ix) for ix in grown.nonzero().tolist()} == {(0, 0), (0, 1), (0, 2)}
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())  # no draw needed
    picks = []
    for seed in (1, 2):
        b = layer_with_mask(mask)
        grown = grow(b, 6, "gradient", grad, generator=torch.Generator().manual_seed(seed))
        assert grown[0, :3].all() and int(grown.sum()) == 6
        picks.append(grown.clone())
    assert not torch.equal(picks[0], picks[1])  # the 3 zero-gradient picks depend on the seed


def test_a_unit_silenced_by_pruning_fires_again_after_its_regrowth():
    torch.manual_seed(0)
    x = torch.rand(32, 4)  # ReLU-like inputs: non-negative
    for revive, fires in (("lecun", True), ("zero", False)):
        layer = MaskedLinear(4, 3)
        with torch.no_grad():
            layer.bias[1] = -5.0
        scores = torch.tensor([1.0, 0.0, 1.0])  # unit 1 is dormant
        pruned = prune_dormant(layer, scores, 0.0, 100)
        assert pruned[1].all() and not pruned[[0, 2]].any()  # all its incoming connections go
        assert torch.all(torch.relu(layer(x))[:, 1] == 0)
        before = layer.mask.clone()
        grown = grow(layer, 4, "random", generator=torch.Generator().manual_seed(0), revive_init=revive)
        assert grown[1].all() and torch.equal(revived_units(before, grown), torch.tensor([False, True, False]))
        out = torch.relu(layer(x))[:, 1]
        assert bool((out > 0).any()) is fires
        if fires:  # LeCun-uniform weights, bias zeroed
            assert layer.bias[1] == 0 and layer.weight[1].abs().max() <= math.sqrt(3 / 4)
        else:
            assert torch.all(layer.weight[1] == 0) and layer.bias[1] == -5.0


def emptied_net():
    """3 -> 4 -> 1 with hidden unit 1 emptied (every incoming connection pruned, bias negative)."""
    torch.manual_seed(0)
    net = nn.Sequential(MaskedLinear(3, 4), nn.ReLU(), MaskedLinear(4, 1))
    with torch.no_grad():
        net[0].mask[1] = False
        net[0].weight.mul_(net[0].mask)
        net[0].bias.copy_(torch.tensor([1.0, -1.0, 1.0, 1.0]))  # live units fire on non-negative inputs
        net[2].weight.copy_(torch.tensor([[0.1, 1.0, 0.1, 0.1]]))  # the emptied unit's outgoing weight is live
    return net


@pytest.mark.parametrize("empty_score", ["straight-through", "gradient"])
def test_straight_through_scores_an_emptied_units_connections_and_changes_no_gradient(empty_score):
    net = emptied_net()
    x, y = torch.rand(8, 3), torch.randn(8, 1)
    cfg = TopologyConfig(interval=1, growth=GrowthConfig(schedule="constant", empty_score=empty_score))
    sched = TopologyScheduler(net, torch.optim.Adam(net.parameters()), cfg, total_updates=10)
    # Reference: the gradient of the loss with respect to the hidden ReLU's output, by hand.
    h = torch.relu(net[0](x)).detach().requires_grad_(True)
    (net[2](h) - y).pow(2).mean().backward()
    expected = h.grad[:, 1] @ x  # dL/dW_1j were the ReLU the identity: sum_b dL/dh_1(b) x_j(b)
    sched.watch(1)
    (net(x) - y).pow(2).mean().backward()
    plain = net[0].weight.grad.clone()
    sched.capture_gradients()
    assert torch.all(plain[1] == 0)  # the silent unit passes no gradient to its (absent) inputs
    captured = sched._grads["0"]
    assert torch.equal(captured[[0, 2, 3]], plain[[0, 2, 3]])  # live units keep their gradient
    if empty_score == "straight-through":
        torch.testing.assert_close(captured[1], expected)
        assert bool((captured[1].abs() > 0).all())
    else:
        assert torch.all(captured[1] == 0)
    assert not sched._through._handles  # unhooked
    net.zero_grad()
    (net(x) - y).pow(2).mean().backward()
    assert torch.equal(net[0].weight.grad, plain)  # watching changed no gradient


def test_gradient_growth_revives_an_emptied_unit_through_its_straight_through_scores():
    x, y = torch.rand(32, 3), torch.randn(32, 1)
    for empty_score, revived in (("straight-through", True), ("gradient", False)):
        net = emptied_net()
        cfg = TopologyConfig(interval=1, prune=False,
                             growth=GrowthConfig(schedule="constant", rate=0.6, empty_score=empty_score,
                                                 revive_init="lecun"))
        # layer 0 lacks 5 connections: unit 1's 3 and two of live units, whose gradients are not zero
        with torch.no_grad():
            net[0].mask[0, 0] = net[0].mask[2, 1] = False
            net[0].weight.mul_(net[0].mask)
        sched = TopologyScheduler(net, torch.optim.Adam(net.parameters()), cfg, total_updates=10,
                                  generator=torch.Generator().manual_seed(0))
        sched.watch(1)
        (net(x) - y).pow(2).mean().backward()
        sched.capture_gradients()
        before = net[0].mask.clone()
        sched.step(1)
        grown = net[0].mask & ~before
        assert int(grown.sum()) == 3  # 0.6 of 5
        # Unit 1's outgoing weight is 10x the others': straight-through, its connections score highest;
        # by the plain gradient (0) growth takes the two live candidates, then one of unit 1's by tie-break.
        assert int(grown[1].sum()) == (3 if revived else 1)
        if revived:  # LeCun-initialised, bias zeroed: the unit fires again
            assert bool((torch.relu(net[0](x))[:, 1] > 0).any())


def test_revive_first_grows_an_emptied_unit_as_many_connections_as_a_live_one_holds():
    mask = torch.tensor([[1, 1, 1, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0],  # emptied
                         [1, 1, 0, 1, 0, 0]], dtype=torch.bool)
    grad = torch.tensor([[9.0, 9.0, 9.0, 8.0, 7.0, 6.0],
                         [0.0, 0.1, 0.3, 0.2, 0.0, 0.0],  # small scores, as an emptied unit's are
                         [9.0, 9.0, 5.0, 9.0, 4.0, 3.0]])
    for revive_first, k, unit1 in ((False, 4, 0), (True, 4, 3), (True, 2, 2)):
        layer = layer_with_mask(mask.clone())
        grown = grow(layer, k, "gradient", grad, revive_first=revive_first)
        assert int(grown.sum()) == k
        assert int(grown[1].sum()) == unit1  # live units hold 3 connections each: unit 1 gets its best 3
        if revive_first:  # its best-scored candidates, best first when the budget is short
            assert grown[1].tolist() == ([False, True, True, True, False, False] if k == 4
                                         else [False, False, True, True, False, False])
    layer = layer_with_mask(mask.clone())  # k = 4: the fourth goes to the best live candidate (8.0)
    grown = grow(layer, 4, "gradient", grad, revive_first=True)
    assert grown[0, 3] and int(grown[[0, 2]].sum()) == 1


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


def test_dynamic_review_threshold_falls_and_strength_is_graded():
    cfg = ReviewConfig(trigger="dynamic", window=2, threshold_ratio=0.5, smoothing=0.0, warmup=0)
    review = ExperienceReview(cfg)
    for d in (0.0, 0.0, 0.4):
        assert review.observe(d, 1.0) is False and review.threshold is None
    thresholds, strengths = [], []
    for d in (0.4, 0.4, 0.4, 0.45):
        review.observe(d, 1.0)
        thresholds.append(review.threshold)
        strengths.append(review.strength)
    # rates 0.4, 0.2, 0.0, 0.025; threshold: half the mean of the rates so far
    assert thresholds == pytest.approx([0.2, 0.15, 0.1, 0.078125])
    assert strengths == pytest.approx([0.0, 0.0, 1.0, 1 - 0.025 / 0.078125])
    assert review.active and review.early_count(256) == round(0.68 * 128)
    # the evaluation row logs the mean strength since the previous row
    assert review.take_share() == pytest.approx((1.0 + 0.68) / 7)
    # a rate that only jitters around a constant level never falls to half its own mean
    jitter = ExperienceReview(cfg)
    for d in (0.0, 0.1) * 20:
        jitter.observe(d, 1.0)
        assert jitter.strength == 0.0
    # resume: threshold, rates and strength travel with the checkpoint
    other = ExperienceReview(cfg)
    other.load_state_dict(review.state_dict())
    assert (other.threshold, other.strength) == (review.threshold, review.strength)
    assert other.observe(0.45, 1.0) == review.observe(0.45, 1.0) and other.strength == review.strength
    with pytest.raises(ValueError, match="window"):
        ReviewConfig(trigger="dynamic", window=0)


def test_review_leaves_the_random_warm_up_out_of_the_early_window():
    review = ExperienceReview(ReviewConfig(trigger="always", skip_warmup=True, early_fraction=0.3), 10)
    assert review.warmup_left(size=40, added=40) == 10
    assert review.warmup_left(size=50, added=55) == 5  # the ring overwrote 5 warm-up transitions
    assert review.warmup_left(size=50, added=70) == 0
    assert ExperienceReview(ReviewConfig(trigger="always"), 10).warmup_left(40, 40) == 0  # official window
    buffer = ReplayBuffer(1, 1, 100, seed=0)
    for i in range(40):
        buffer.add(np.array([i]), np.zeros(1), 0.0, np.array([i + 1]), False)
    obs = buffer.sample(256, review)[0][:, 0]
    early, uniform = obs[:128], obs[128:]
    assert early.min() >= 10 and early.max() < 10 + int(0.3 * 30)  # the oldest 30% after the warm-up
    assert uniform.min() < 10  # the rest of the batch is uniform over everything


def official_net(present: int):
    net = nn.Sequential(MaskedLinear(256, 256), nn.ReLU())
    with torch.no_grad():
        mask = torch.zeros(256 * 256, dtype=torch.bool)
        mask[torch.randperm(256 * 256, generator=torch.Generator().manual_seed(0))[:present]] = True
        net[0].mask.copy_(mask.view(256, 256))
        net[0].weight.mul_(net[0].mask)
    return net


def test_official_schedule_grows_334_prunes_133_then_rewires_at_constant_density():
    from nelib.sparse.official import OfficialTopologyScheduler

    net = official_net(10_603)  # a hidden 256x256 layer of the official critic at ERK density 0.162
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    cfg = TopologyConfig(interval=100, growth=GrowthConfig(rate=0.008, target_density=0.18, end_step=1_000),
                         pruning=PruneConfig(omega=0.4, criterion="magnitude"), algorithm="official")
    sched = OfficialTopologyScheduler(net, opt, cfg, 10_000, torch.Generator().manual_seed(0))
    x = torch.rand(64, 256, generator=torch.Generator().manual_seed(1))
    layer, counts, densities = net[0], [], []
    for update in range(100, 1_301, 100):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        sched.capture_gradients()
        mask_gradients(net)
        opt.step()
        before, weight = layer.mask.clone(), layer.weight.detach().clone()
        stats = sched.step(update)
        grown, pruned = layer.mask & ~before, before & ~layer.mask
        assert (stats["grown"], stats["pruned"]) == (int(grown.sum()), int(pruned.sum()))
        assert torch.all(layer.weight[grown] == 0)  # zero init
        # pruned by |w|: among the layer's smallest (a drop grown straight back is no prune, hence <=)
        n_drop = 133 if sched.rewiring_since is None else int(sched.drop_fraction(update) * int(before.sum()))
        smallest = weight[before].abs().kthvalue(n_drop).values
        assert not pruned.any() or weight[pruned].abs().max() <= smallest
        counts.append((stats["grown"], stats["pruned"]))
        densities.append(int(layer.mask.sum()))
    # growth: int(0.008 (0.8 * 65536 - 10603)) = 334 grown, int(0.4 * 334) = 133 pruned, +201 per update
    assert counts[:6] == [(334, 133)] * 6 and densities[:6] == [10_603 + 201 * k for k in range(1, 7)]
    # 11,809 connections = 0.1802 >= 0.18 at update 700: rewiring from then on, at constant density
    assert sched.rewiring_since == 700 and densities[6:] == [11_809] * 7
    for i, update in enumerate(range(700, 1_301, 100)):
        n = int(0.1 * (1 + math.cos(math.pi * (update - 700) / 1_000)) * 11_809)
        assert 0 < counts[6 + i][0] == counts[6 + i][1] <= n  # swaps; a drop grown straight back is no swap
    assert counts[6][0] > counts[-1][0] > 0  # the cosine drop fraction shrinks
    # a full layer is left alone by rewiring
    full = official_net(256 * 256)
    sched = OfficialTopologyScheduler(full, torch.optim.Adam(full.parameters()), cfg, 10_000)
    full(x).pow(2).mean().backward()
    sched.capture_gradients()
    w = full[0].weight.detach().clone()
    assert sched.step(100)["grown"] == 0 and torch.equal(full[0].weight, w)
