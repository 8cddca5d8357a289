"""DrQ on pixels: the shift augmentation, the frame replay buffer, conv masks and dormant scores, the agent."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.bench_pixels import grid_sample_shift
from nelib.agents.augmentation import random_shift
from nelib.agents.drq import DrQ, DrQConfig
from nelib.agents.drq_networks import Encoder, conv_output_size, squashed_sample
from nelib.agents.pixel_replay import PixelReplayBuffer
from nelib.agents.td3 import SparsityConfig
from nelib.metrics import capture_activations, plasticity_report, redo_scores
from nelib.sparse.growth import grow
from nelib.sparse.masks import MaskedConv2d, erk_densities, masked_layers
from nelib.sparse.topology import TopologyConfig

SMALL = DrQConfig(hidden_dim=32, batch_size=8, image_size=36)


# -- augmentation --------------------------------------------------------------------------------------

def test_random_shift_is_replicate_pad_and_crop_and_matches_grid_sample():
    x = torch.randint(0, 256, (3, 6, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    shifts = torch.tensor([[0, 0], [8, 8], [3, 5], [8, 0], [1, 7], [4, 4]])  # (row, col), copies=2
    out = random_shift(x, 4, copies=2, shifts=shifts)
    assert out.shape == (6, 6, 10, 10) and out.dtype == torch.uint8
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="replicate")
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[i].float(), padded[i % 3, :, dy:dy + 10, dx:dx + 10])
    assert torch.equal(out[5].float(), x[2].float())  # shift (4, 4) is the identity
    # DrQ-v2's padded bilinear grid_sample lands on pixel centres: the same images (up to float rounding).
    ref = grid_sample_shift(x.repeat(2, 1, 1, 1).float(), 4, shifts)
    assert torch.allclose(ref, out.float(), atol=1e-3)
    # the one-op gather (the CUDA default) crops the same pixels as the per-image loop
    assert torch.equal(random_shift(x, 4, copies=2, shifts=shifts, gather=True), out)
    assert torch.equal(random_shift(x, 0, copies=2, shifts=shifts, gather=True), x.repeat(2, 1, 1, 1))
    # random draws: offsets 0..8 on both axes, all of them, taken from the generator
    big = x.repeat(100, 1, 1, 1)
    drawn = random_shift(big, 4, torch.Generator().manual_seed(1))
    offsets = torch.randint(0, 9, (300, 2), generator=torch.Generator().manual_seed(1))
    assert set(offsets[:, 0].tolist()) == set(offsets[:, 1].tolist()) == set(range(9))
    assert torch.equal(drawn, random_shift(big, 4, shifts=offsets))


def test_squashed_sample_log_prob_matches_torch_distributions():
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    g = torch.Generator().manual_seed(0)
    mu, std, eps = torch.randn(5, 3, generator=g), torch.rand(5, 3, generator=g) + 0.1, torch.randn(5, 3, generator=g)
    a, logp = squashed_sample(mu, std, eps)
    dist = TransformedDistribution(Normal(mu, std), [TanhTransform()])
    assert torch.allclose(a, torch.tanh(mu + std * eps))
    assert torch.allclose(logp, dist.log_prob(a).sum(-1, keepdim=True), atol=1e-4)


# -- frame replay buffer -------------------------------------------------------------------------------

def episodes(rng, lengths, k=3, c=3, s=5):
    """Frame-stacked (obs, next_obs) transitions of episodes of the given lengths."""
    out = []
    for length in lengths:
        frames = [rng.integers(0, 256, (c, s, s), dtype=np.uint8) for _ in range(length + 1)]
        stack = [frames[0]] * k
        for t in range(length):
            obs = np.concatenate(stack)
            stack = [*stack[1:], frames[t + 1]]
            out.append((obs, np.concatenate(stack), t == length - 1))
    return out


def test_pixel_buffer_stores_each_frame_once_and_stacks_on_sampling():
    rng = np.random.default_rng(0)
    data = episodes(rng, [4, 7, 1, 5])
    buf = PixelReplayBuffer((3, 5, 5), 3, act_dim=2, capacity=100, seed=0)
    for i, (obs, nxt, last) in enumerate(data):
        buf.add(obs, np.full(2, i, np.float32), float(i), nxt, terminated=last and i < 10)
    assert buf.size == 17 and buf.frames_written == 17 + 4  # one frame per step, plus one per episode start
    idx = torch.arange(17)
    for i in range(17):
        assert torch.equal(buf.stacked(idx)[i], torch.as_tensor(data[i][0]))
        assert torch.equal(buf.stacked(idx, next_obs=True)[i], torch.as_tensor(data[i][1]))
    obs, act, rew, nxt, not_done = buf.sample(32)
    for o, a, r, n, d in zip(obs, act, rew, nxt, not_done, strict=True):
        i = int(a[0])
        assert torch.equal(o, torch.as_tensor(data[i][0])) and torch.equal(n, torch.as_tensor(data[i][1]))
        assert r.item() == i and d.item() == (0.0 if i == 3 else 1.0)  # only episode 1's end is terminal
    with pytest.raises(ValueError, match="shifted by one frame"):
        buf.add(data[0][0], np.zeros(2, np.float32), 0.0, data[5][1], False)


def test_pixel_buffer_wraps_and_forgets_transitions_whose_frames_are_gone():
    rng = np.random.default_rng(1)
    data = episodes(rng, [30, 30])
    buf = PixelReplayBuffer((3, 5, 5), 3, act_dim=1, capacity=20, extra_frames=0.0, seed=0)
    assert buf.frame_capacity == 20 + 6
    for i, (obs, nxt, _) in enumerate(data):
        buf.add(obs, np.array([i], np.float32), 0.0, nxt, False)
    assert buf.size == 20 and buf.oldest == buf.ptr
    pos = torch.tensor([(buf.oldest + j) % 20 for j in range(20)])
    assert torch.equal(buf.action[pos, 0], torch.arange(40, 60, dtype=torch.float32))
    for j, p in enumerate(pos.tolist()):
        assert torch.equal(buf.stacked(torch.tensor([p]))[0], torch.as_tensor(data[40 + j][0]))
    # One-step episodes need two frames per transition: the frame ring, not the capacity, limits the window.
    short = PixelReplayBuffer((3, 5, 5), 3, act_dim=1, capacity=20, extra_frames=0.0, seed=0)
    for obs, nxt, _ in episodes(rng, [1] * 40):
        short.add(obs, np.zeros(1, np.float32), 0.0, nxt, False)
    assert short.size == 13  # 26 frames hold 13 two-frame transitions
    o, _, _, n, _ = short.sample(64)
    assert torch.equal(o[:, 6:], n[:, 3:6])  # every sample's frames are intact: next frame follows obs


def test_pixel_buffer_memory_per_transition_and_checkpoint_round_trip():
    buf = PixelReplayBuffer((3, 84, 84), 3, act_dim=6, capacity=1000)
    frames = (1000 + 20 + 6) * 3 * 84 * 84  # capacity, 2% for episode starts, 2k spare
    assert buf.bytes_per_transition() == (frames + 1000 * (4 * 4 + 8 + 6 * 4 + 4 + 4)) / 1000
    assert buf.bytes_per_transition() < 21_800  # vs 2 x 9 x 84 x 84 = 127,008 for stacked obs and next_obs
    rng = np.random.default_rng(2)
    small = PixelReplayBuffer((3, 5, 5), 3, act_dim=1, capacity=10, seed=3)
    for obs, nxt, _ in episodes(rng, [6, 6]):
        small.add(obs, np.zeros(1, np.float32), 1.0, nxt, False)
    state = small.state_dict()
    twin = PixelReplayBuffer((3, 5, 5), 3, act_dim=1, capacity=10, seed=99)
    twin.load_state_dict(state)
    for a, b in zip(small.sample(16), twin.sample(16), strict=True):
        assert torch.equal(a, b)


def test_pixel_buffer_review_draws_from_the_oldest_transitions():
    from nelib.sparse.review import ExperienceReview, ReviewConfig

    buf = PixelReplayBuffer((3, 5, 5), 3, act_dim=1, capacity=50, seed=0)
    for i, (obs, nxt, _) in enumerate(episodes(np.random.default_rng(3), [40])):
        buf.add(obs, np.array([i], np.float32), 0.0, nxt, False)
    review = ExperienceReview(ReviewConfig(trigger="always", early_fraction=0.25, batch_fraction=0.5))
    _, act, _, _, _ = buf.sample(40, review)
    assert act[:20].max() < 10 and act[20:].max() > 10  # the early half comes from the oldest 25%


# -- conv masks and dormant scores ---------------------------------------------------------------------

def test_drq_critic_gets_erk_masks_with_exact_counts_in_conv_layers():
    agent = DrQ((9, 36, 36), 2, SMALL, SparsityConfig(density=0.2), seed=0)
    layers = masked_layers(agent.critic)
    names = [n for n, _ in layers]
    assert names[:5] == ["encoder.convs.0", "encoder.convs.2", "encoder.convs.4", "encoder.convs.6", "encoder.head.0"]
    shapes = [tuple(m.weight.shape) for _, m in layers]
    assert shapes[0] == (32, 9, 3, 3) and shapes[4] == (50, 32 * 11 * 11)
    expected = erk_densities(shapes, 0.2)
    for (_, m), d in zip(layers, expected, strict=True):
        assert int(m.mask.sum()) == round(d * m.mask.numel())
        assert torch.all(m.weight[~m.mask] == 0)
    total = sum(m.mask.numel() for _, m in layers)
    assert abs(sum(int(m.mask.sum()) for _, m in layers) - 0.2 * total) < len(layers)
    # the target critic has the same masks; the actor's masks cover its own head and MLP only
    for (_, a), (_, b) in zip(layers, masked_layers(agent.critic_target), strict=True):
        assert torch.equal(a.mask, b.mask) and torch.equal(a.weight, b.weight)
    assert [n for n, _ in masked_layers(agent.actor)] == ["encoder_head.0", "trunk.0", "trunk.2", "trunk.4"]
    dense = DrQ((9, 36, 36), 2, DrQConfig(hidden_dim=32, image_size=36, sparse_encoder=False),
                SparsityConfig(density=0.2), seed=0)
    assert all(bool(m.mask.all()) for n, m in masked_layers(dense.critic) if n.startswith("encoder"))
    assert not all(bool(m.mask.all()) for n, m in masked_layers(dense.critic) if n.startswith("q1"))


def test_conv_growth_picks_the_largest_gradients_of_absent_kernel_entries():
    conv = MaskedConv2d(2, 2, 3)
    with torch.no_grad():
        conv.mask.zero_()
        conv.mask[0, 0] = True  # one present 3x3 kernel
        conv.weight.mul_(conv.mask)
    grad = torch.arange(36, dtype=torch.float32).view(2, 2, 3, 3)
    grad[1, 1, 2, 2] = -100.0  # largest |g|
    grown = grow(conv, 3, "gradient", grad)
    assert grown.sum() == 3 and grown[1, 1, 2, 2] and grown[1, 1, 2, 1] and grown[1, 1, 2, 0]
    assert not (grown & (conv.mask & ~grown)).any() and conv.mask.sum() == 9 + 3
    assert torch.all(conv.weight[grown] == 0)


def test_conv_channels_are_units_with_exact_dormant_scores():
    enc = Encoder(3, 16, num_filters=4, feature_dim=5)
    with torch.no_grad():
        for _, m in masked_layers(enc):
            m.weight.zero_()
            m.bias.zero_()
        first = enc.convs[0]
        first.weight[0] = 1.0 / 27  # channel 0: the mean of the 3x3x3 patch
        first.weight[1] = 2.0 / 27  # channel 1: twice that; channels 2, 3 silent
        first.bias[2] = -1.0
        enc.convs[2].weight[0, 0, 1, 1] = 1.0  # next layer: channel 0 copies channel 0's centre
    x = torch.full((2, 3, 16, 16), 0.5)
    acts = capture_activations(enc, x)
    assert list(acts) == ["convs.1", "convs.3", "convs.5", "convs.7"]
    assert acts["convs.1"].shape == (2, 4, 7, 7)
    # means per channel: 0.5, 1.0, 0, 0 -> layer mean 0.375 -> scores 4/3, 8/3, 0, 0
    assert torch.allclose(redo_scores(acts["convs.1"]), torch.tensor([4 / 3, 8 / 3, 0.0, 0.0]))
    report = plasticity_report(acts, taus=(0.0,))
    assert report["dormant_0/convs.1"] == 0.5 and report["dormant_0/convs.3"] == 0.75
    assert report["dormant_0/convs.5"] == 1.0  # no input reaches the third conv
    assert report["dormant_0"] == (2 + 3 + 4 + 4) / 16 and report["active_ratio"] == 3 / 16


# -- the agent ----------------------------------------------------------------------------------------

class ArrayBuffer:
    """A buffer that hands out fixed random batches (for agent-level tests without an env)."""

    def __init__(self, batch, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.batch = batch
        self.obs = torch.randint(0, 256, (batch, 9, 36, 36), dtype=torch.uint8, generator=g)
        self.next_obs = torch.randint(0, 256, (batch, 9, 36, 36), dtype=torch.uint8, generator=g)
        self.act = torch.rand(batch, 2, generator=g) * 2 - 1
        self.rew = torch.rand(batch, 1, generator=g)

    def sample(self, batch_size, review=None):
        return self.obs, self.act, self.rew, self.next_obs, torch.ones(self.batch, 1)


def test_drq_update_keeps_masks_trains_conv_only_through_the_critic_and_is_deterministic():
    topo = TopologyConfig(interval=2)
    agent = DrQ((9, 36, 36), 2, SMALL, SparsityConfig(density=0.2), topology=topo, total_updates=20, seed=0)
    buf = ArrayBuffer(8)
    conv0 = agent.critic.encoder.convs[0].weight.detach().clone()
    actor_head = agent.actor.encoder_head[0].weight.detach().clone()
    grown = 0
    for _ in range(6):
        out = agent.train(buf)
        grown += out["grown"]
    assert set(out) >= {"critic_loss", "actor_loss", "alpha", "entropy", "grown", "pruned"}
    assert math.isfinite(out["critic_loss"])
    assert grown > 0
    for net in (agent.actor, agent.critic, agent.critic_target):
        for _, m in masked_layers(net):
            assert torch.all(m.weight[~m.mask] == 0)
    for (_, a), (_, b) in zip(masked_layers(agent.critic), masked_layers(agent.critic_target), strict=True):
        assert torch.equal(a.mask, b.mask)
    assert agent.actor.convs is agent.critic.encoder.convs  # tied, and not the actor's parameters
    assert not any(p is agent.critic.encoder.convs[0].weight for p in agent.actor.parameters())
    assert not torch.equal(conv0, agent.critic.encoder.convs[0].weight)
    assert not torch.equal(actor_head, agent.actor.encoder_head[0].weight)
    # the same seed gives the same updates
    twin = DrQ((9, 36, 36), 2, SMALL, SparsityConfig(density=0.2), topology=topo, total_updates=20, seed=0)
    for _ in range(6):
        twin_out = twin.train(buf)
    assert twin_out == out
    # checkpoints restore everything
    third = DrQ((9, 36, 36), 2, SMALL, SparsityConfig(density=0.2), topology=topo, total_updates=20, seed=5)
    third.load_state_dict(agent.state_dict())
    assert third.train(buf) == agent.train(buf)


def test_drq_actor_update_leaves_the_critic_untouched_and_actions_are_bounded():
    agent = DrQ((9, 36, 36), 2, SMALL, seed=0)
    buf = ArrayBuffer(8)
    agent.updates = 1  # the next update is an actor update
    before = {k: v.clone() for k, v in agent.critic.state_dict().items()}
    agent._update_actor_and_alpha(agent.prepare(buf.obs))
    assert all(torch.equal(before[k], v) for k, v in agent.critic.state_dict().items())
    assert all(p.grad is None for p in agent.critic.parameters())
    obs = buf.obs[0].numpy()
    a = agent.select_action(obs)
    b = agent.explore(obs, np.random.default_rng(0))
    assert a.shape == b.shape == (2,) and np.all(np.abs(a) < 1) and np.all(np.abs(b) < 1)
    assert not np.allclose(a, b)


def test_drq_metrics_report_encoder_dormancy_and_densities():
    agent = DrQ((9, 36, 36), 2, SMALL, SparsityConfig(density=0.2), seed=0)
    buf = ArrayBuffer(16)
    m = agent.plasticity(buf.obs, buf.act)
    for key in ("actor", "critic", "encoder"):
        assert 0 <= m[f"{key}_dormant_0"] <= 1 and 0 <= m[f"{key}_fau"] <= 1
    assert m["actor_density"] == pytest.approx(0.2, abs=1e-3) and m["critic_density"] == pytest.approx(0.2, abs=1e-3)
    assert 0 < m["encoder_density"] < 1 and m["critic_stable_rank"] > 0


def test_conv_output_size_matches_the_encoder():
    assert conv_output_size(84) == 35 and conv_output_size(36) == 11
    enc = Encoder(9, 84)
    assert enc.conv_features(torch.zeros(1, 9, 84, 84)).shape == (1, 32 * 35 * 35)
    assert isinstance(enc.convs[1], nn.ReLU)


class StackedBuffer:
    """denisyarats/drq's replay layout (stacked ``obs`` and ``next_obs`` per transition), drawing its indices
    as a :class:`PixelReplayBuffer` with the same seed does (no wrap, no review)."""

    def __init__(self, transitions, seed):
        self.obs, self.act, self.rew, self.next_obs, self.not_done = (torch.as_tensor(np.stack(x))
                                                                      for x in zip(*transitions, strict=True))
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size, review=None):
        idx = torch.randint(0, len(self.obs), (batch_size,), generator=self.generator)
        return self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.not_done[idx]


def test_fast_update_computes_the_reference_update():
    """The kept speed-ups change nothing but float rounding. nelib's update (integer crops of uint8 frames,
    channels-last convolutions, in-place ReLUs, one conv pass per copy, one conv pass shared by the actor
    update's actor and critic parts, the closed-form tanh-Gaussian log-probability, Polyak by lerp), fed by
    the frame replay buffer, and the update written like denisyarats/drq (float NCHW images shifted by
    padded bilinear grid_sample, out-of-place ReLUs, separate conv passes, torch's tanh-transformed Normal,
    ``tau * p + (1 - tau) * p_target``), fed by a buffer of stacked obs and next_obs, draw the same batches,
    shifts and noise and end with the same networks."""
    from benchmarks.bench_pixels import reference_update

    cfg = DrQConfig(hidden_dim=32, batch_size=8, image_size=36)
    fast = DrQ((9, 36, 36), 2, cfg, seed=0)
    ref = DrQ((9, 36, 36), 2, DrQConfig(hidden_dim=32, batch_size=8, image_size=36, channels_last=False), seed=0)
    assert fast.memory_format == torch.channels_last and ref.memory_format == torch.contiguous_format
    for net in (ref.critic, ref.critic_target):  # the reference's torch.relu (the actor reads these convs)
        for m in net.encoder.convs:
            if isinstance(m, nn.ReLU):
                m.inplace = False
    assert all(m.inplace for m in fast.critic.encoder.convs if isinstance(m, nn.ReLU))
    # The same transitions in both layouts; one terminal transition, rewards and actions per transition.
    rng = np.random.default_rng(0)
    frames = PixelReplayBuffer((3, 36, 36), 3, act_dim=2, capacity=100, seed=7)
    transitions = []
    for i, (obs, nxt, last) in enumerate(episodes(rng, [6, 9], s=36)):
        act, rew, terminal = rng.uniform(-1, 1, 2).astype(np.float32), float(rng.uniform()), last and i < 6
        frames.add(obs, act, rew, nxt, terminal)
        transitions.append((obs, act, np.float32([rew]), nxt, np.float32([0.0 if terminal else 1.0])))
    stacked = StackedBuffer(transitions, seed=7)
    fast_batches = []

    class Recording:  # the batches nelib's update gets from the frame buffer
        def sample(self, *args):
            fast_batches.append(frames.sample(*args))
            return fast_batches[-1]

    # SGD instead of Adam: Adam turns rounding-level differences of near-zero gradients into steps of +-lr,
    # which would hide what this test compares (the gradients).
    for agent in (fast, ref):
        agent.critic_opt = torch.optim.SGD(agent.critic.parameters(), lr=0.05)
        agent.actor_opt = torch.optim.SGD(agent.actor.parameters(), lr=0.05)
        agent.alpha_opt = torch.optim.SGD([agent.log_alpha], lr=0.05)
    # Both draw shifts, then noise, in the same order and sizes: ours from the agent's generator, the
    # reference-style one from torch's global generator.
    fast.gen.manual_seed(123)
    torch.manual_seed(123)
    init = {net: {k: v.clone() for k, v in getattr(fast, net).state_dict().items()}
            for net in ("actor", "critic", "critic_target")}
    for _ in range(6):  # 3 actor, temperature and target updates
        batch = stacked.sample(8)
        a, b = fast.train(Recording()), reference_update(ref, *batch)
        assert all(torch.equal(x, y) for x, y in zip(fast_batches[-1], batch, strict=True))
        assert a["critic_loss"] == pytest.approx(b["critic_loss"], rel=1e-4)
        assert a.get("actor_loss", 0.0) == pytest.approx(b.get("actor_loss", 0.0), rel=1e-4, abs=1e-6)
    assert fast.updates == ref.updates == 6
    # Rounding differs (channels-last convolutions, integer crops vs bilinear sampling at pixel centres), and
    # conv weight gradients sum thousands of terms that nearly cancel: compare each tensor's difference
    # with how far training moved it (observed: under 0.1%).
    for net, before in init.items():
        ours, theirs = getattr(fast, net).state_dict(), getattr(ref, net).state_dict()
        for k, v in ours.items():
            if v.dtype.is_floating_point:
                moved = (v - before[k]).abs().max()
                assert moved > 0, (net, k)  # every tensor trained (the target's by Polyak averaging)
                assert (v - theirs[k]).abs().max() <= 0.005 * moved, (net, k)
    assert torch.allclose(fast.log_alpha, ref.log_alpha, rtol=0, atol=1e-6)
    assert (fast.critic.q1[0].weight - init["critic"]["q1.0.weight"]).abs().max() > 1e-3  # it did train


def test_ab_mode_trains_one_arm_with_each_update(monkeypatch):
    """``bench_pixels --ab``: a nelib arm and a reference-style arm (whose updates are all reference_update)."""
    from conftest import FAKE_PIXELS

    import benchmarks.bench_pixels as bench

    calls = {"n": 0}
    real = bench.reference_update

    def counting(*args):
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(bench, "reference_update", counting)
    df = bench.ab_run(FAKE_PIXELS, frames=80, seed=0, threads=1, episodes=1, device="cpu",
                      metrics_batch=8, **{"drq.image_size": 36, "drq.hidden_dim": 32, "drq.batch_size": 8})
    runs = {arm: rows for arm, rows in df.groupby("arm")}
    assert set(runs) == {"nelib", "reference style"}
    assert runs["nelib"]["step"].tolist() == runs["reference style"]["step"].tolist()
    steps = int(df["step"].max())
    assert calls["n"] == steps - min(500, steps // 4)  # every update of the reference arm, none of nelib's
    assert np.isfinite(df["return_mean"]).all()


# -- checkpointing ---------------------------------------------------------------------------------------

def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_drq_checkpoint_keys_and_shapes_are_those_of_earlier_checkpoints():
    # Written down from the agent as it was before its networks moved to nelib.agents.drq_networks: a stored
    # DrQ checkpoint loads (strictly) only while these names and shapes stay as they are. (Earlier checkpoints
    # also hold the agent's "topology_log"; the run keeps those counts now, and takes them over on load.)
    conv = {f"encoder.convs.{i}.{p}": ((4, 9 if i == 0 else 4, 3, 3) if p != "bias" else (4,))
            for i in (0, 2, 4, 6) for p in ("weight", "bias", "mask")}
    head = {"0.weight": (8, 36), "0.bias": (8,), "0.mask": (8, 36), "1.weight": (8,), "1.bias": (8,)}

    def mlp(prefix, fan_in, out):
        dims = {0: (16, fan_in), 2: (16, 16), 4: (out, 16)}
        return {f"{prefix}.{i}.{p}": (d if p != "bias" else d[:1]) for i, d in dims.items()
                for p in ("weight", "bias", "mask")}

    critic = {**conv, **{f"encoder.head.{k}": v for k, v in head.items()}, **mlp("q1", 10, 1), **mlp("q2", 10, 1)}
    actor = {**{f"encoder_head.{k}": v for k, v in head.items()}, **mlp("trunk", 8, 4)}
    cfg = DrQConfig(hidden_dim=16, batch_size=4, image_size=20, num_filters=4, feature_dim=8)
    agent = DrQ((9, 20, 20), 2, cfg, SparsityConfig(density=0.5), TopologyConfig(), total_updates=10)
    state = agent.state_dict()
    assert sorted(state) == ["actor", "actor_opt", "actor_updates", "alpha_opt", "critic", "critic_opt",
                             "critic_target", "gen", "interventions", "log_alpha", "mask_gen", "review", "topology",
                             "updates"]
    assert list(state["critic"]) == list(critic) and _shapes(state["critic"]) == critic
    assert list(state["actor"]) == list(actor) and _shapes(state["actor"]) == actor
    assert _shapes(state["critic_target"]) == critic
    assert [len(state[k]["param_groups"][0]["params"]) for k in ("actor_opt", "critic_opt", "alpha_opt")] == [10, 24, 1]
    fresh = DrQ((9, 20, 20), 2, cfg, SparsityConfig(density=0.5), TopologyConfig(), total_updates=10, seed=1)
    fresh.load_state_dict(state)
    for key in ("actor", "critic", "critic_target"):
        for name, t in getattr(fresh, key).state_dict().items():
            assert torch.equal(t, state[key][name]), (key, name)
