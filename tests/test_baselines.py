"""The paper's TD3 baselines: ReDo, Plasticity Injection and Reset on tiny networks, and resuming runs."""

import copy
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import FAKE, run_interrupted
from torch import nn

import nelib.baselines.redo as redo
import nelib.runner.train as train
from nelib.agents.networks import Actor, TwinCritic, mlp
from nelib.baselines.injection import (
    InjectedHead,
    InjectionConfig,
    InjectionIntervention,
    inject,
    use_trainable_parameters,
)
from nelib.baselines.redo import RedoConfig, RedoIntervention, recycle_dormant, unit_connections
from nelib.baselines.reset import ResetConfig, ResetIntervention, reset_layer_names, reset_modules
from nelib.metrics import capture_activations, dormant_units, plasticity_report, redo_scores
from nelib.runner.config import make_config
from nelib.sparse.masks import MaskedConv2d, MaskedLinear


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def adam_step(net, opt, *inputs):
    opt.zero_grad()
    sum(o.pow(2).mean() for o in as_tuple(net(*inputs))).backward()
    opt.step()


# -- ReDo ---------------------------------------------------------------------------------------------

def dormant_mlp():
    """3-4-4-2 MLP (modules 0 L, 1 ReLU, 2 L, 3 ReLU, 4 L), hidden weights set by hand: units 1, 3 of the
    first hidden layer and unit 2 of the second are silent (zero weights, bias -1), the others fire."""
    torch.manual_seed(0)
    net = mlp(3, (4, 4), 2)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 0], [-1, 0, 0], [0, 0, 0]]))
        net[0].bias.copy_(torch.tensor([0.0, -1, 0, -1]))
        net[2].weight.copy_(torch.tensor([[1.0, 0, 1, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 0], [1, 0, -0.5, 0]]))
        net[2].bias.copy_(torch.tensor([0.1, 0.1, -1, 0.1]))
    return net


def test_redo_recycles_exactly_the_dormant_units():
    net = dormant_mlp()
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    adam_step(net, opt, x)
    for p in net.parameters():  # every moment non-zero, so that resets are visible
        opt.state[p]["exp_avg"].fill_(1.0)
        opt.state[p]["exp_avg_sq"].fill_(1.0)
    before = copy.deepcopy(net)
    out_before = net(x)
    acts = capture_activations(net, x)
    assert dormant_units(redo_scores(acts["1"]), 0.1).tolist() == [False, True, False, True]
    assert dormant_units(redo_scores(acts["3"]), 0.1).tolist() == [False, False, True, False]
    assert plasticity_report(acts, taus=(0.1,))["dormant_0.1"] == 3 / 8

    counts = recycle_dormant(net, opt, acts, 0.1, torch.Generator().manual_seed(0))
    assert counts == {"1": 2, "3": 1}
    w0, w2, w4 = net[0].weight, net[2].weight, net[4].weight
    # incoming rows and biases re-drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the others untouched
    # (row 2 of the second layer only in columns 0, 2: columns 1, 3 read recycled units, so they are zero)
    for fresh, bound in ((w0[[1, 3]], 3**-0.5), (w2[2, [0, 2]], 0.5), (net[0].bias[[1, 3]], 3**-0.5),
                         (net[2].bias[[2]], 0.5)):
        assert torch.all(fresh != 0) and torch.all(fresh.abs() <= bound) and torch.all(fresh != -1)
    assert torch.equal(net[0].bias[[0, 2]], before[0].bias[[0, 2]])
    assert torch.equal(net[2].bias[[0, 1, 3]], before[2].bias[[0, 1, 3]])
    assert torch.equal(w0[[0, 2]], before[0].weight[[0, 2]])
    # outgoing columns zero (including in the recycled row 2 of the next layer), the rest untouched
    assert torch.all(w2[:, [1, 3]] == 0)
    assert torch.equal(w2[[0, 1, 3]][:, [0, 2]], before[2].weight[[0, 1, 3]][:, [0, 2]])
    # the output layer is never recycled: only the columns of dormant unit 2 are zeroed
    assert torch.all(w4[:, 2] == 0)
    assert torch.equal(w4[:, [0, 1, 3]], before[4].weight[:, [0, 1, 3]])
    assert torch.equal(net[4].bias, before[4].bias)
    # Adam moments zero exactly where weights were recycled, untouched elsewhere; step counts kept
    expected = {
        net[0].weight: torch.tensor([0, 1, 0, 1]).bool().view(4, 1).expand(4, 3),
        net[0].bias: torch.tensor([0, 1, 0, 1]).bool(),
        net[2].weight: torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1], [1, 1, 1, 1], [0, 1, 0, 1]]).bool(),
        net[2].bias: torch.tensor([0, 0, 1, 0]).bool(),
        net[4].weight: torch.tensor([[0, 0, 1, 0], [0, 0, 1, 0]]).bool(),
        net[4].bias: torch.zeros(2, dtype=torch.bool),
    }
    for p, zeroed in expected.items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][key], (~zeroed).float()), key
        assert float(opt.state[p]["step"]) == 1
    # the network computes the same function, and the dormant ratio drops right away
    assert torch.equal(net(x), out_before)
    assert plasticity_report(capture_activations(net, x), taus=(0.1,))["dormant_0.1"] < 3 / 8
    # seeded: the same generator seed recycles to the same weights
    again = copy.deepcopy(before)
    recycle_dormant(again, None, capture_activations(again, x), 0.1, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), net.parameters(), strict=True))


def test_redo_resets_layernorm_entries_and_maps_conv_channels_to_flattened_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(MaskedLinear(3, 4), nn.LayerNorm(4), nn.ReLU(), MaskedLinear(4, 1))
    with torch.no_grad():
        net[1].weight[1], net[1].bias[1] = 0.0, -1.0  # unit 1 silenced by its LayerNorm entry
        net[1].weight[0], net[1].bias[0] = 2.0, 0.5
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    assert recycle_dormant(net, None, capture_activations(net, x), 0.0) == {"2": 1}
    assert net[1].weight.tolist()[:2] == [2.0, 1.0] and net[1].bias.tolist()[:2] == [0.5, 0.0]

    conv = nn.Sequential(MaskedConv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), MaskedLinear(3 * 2 * 2, 2))
    links = unit_connections(conv)
    assert links["1"].layer is conv[0] and links["1"].next is conv[3] and links["1"].norms == []
    with torch.no_grad():
        conv[0].weight[1], conv[0].bias[1] = 0.0, -1.0  # channel 1 silent
    before = conv[3].weight.clone()
    img = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert recycle_dormant(conv, None, capture_activations(conv, img), 0.0) == {"1": 1}
    assert torch.all(conv[3].weight[:, 4:8] == 0)  # channel 1 owns flattened inputs 4..7
    assert torch.equal(conv[3].weight[:, [0, 1, 2, 3, 8, 9, 10, 11]], before[:, [0, 1, 2, 3, 8, 9, 10, 11]])
    assert torch.all(conv[0].weight[1] != 0)


def test_redo_intervention_runs_every_interval_on_both_networks(monkeypatch):
    calls = []
    monkeypatch.setattr(redo, "recycle_dormant", lambda net, opt, acts, tau, gen: calls.append(
        (agent.updates, sorted(acts), tau)) or {"x": 1})
    agent = SimpleNamespace(actor=Actor(3, 1, 1.0, (4, 4)), critic=TwinCritic(3, 1, (4, 4)),
                            actor_opt=None, critic_opt=None, updates=0)
    iv = RedoIntervention(RedoConfig(interval=100, tau=0.25), seed=0)
    obs, act = torch.randn(5, 3), torch.randn(5, 1)
    for agent.updates in range(1, 250):
        iv.after_update(agent, obs, act)
    assert [c[0] for c in calls] == [100, 100, 200, 200]
    assert calls[0][1:] == (["q1.1", "q1.3", "q2.1", "q2.3"], 0.25) and calls[1][1] == ["net.1", "net.3"]
    assert iv.recycled == {"actor": 2, "critic": 2}


class FirstInputOnly(nn.Module):
    """A critic-shaped wrapper: ``net(obs, act)`` reads only ``obs``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, obs, act):
        return self.net(obs)


def test_redo_keeps_the_dormant_share_found_before_each_recycle():
    agent = SimpleNamespace(critic=FirstInputOnly(dormant_mlp()), critic_opt=None, updates=0)
    iv = RedoIntervention(RedoConfig(interval=10, tau=0.1, actor=False), seed=0)
    obs = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    assert iv.take_metrics() == {"critic_dormant_before_recycle": pytest.approx(float("nan"), nan_ok=True),
                                 "critic_recycled": 0}
    for agent.updates in range(1, 11):
        iv.after_update(agent, obs, None)
    # 3 of the 8 hidden units are dormant just before the recycle at update 10 (the evaluation after it sees
    # fewer); the 3 are recycled
    assert plasticity_report(capture_activations(agent.critic, obs, None), taus=(0.1,))["dormant_0.1"] < 3 / 8
    mid_window = iv.state_dict()
    assert iv.take_metrics() == {"critic_dormant_before_recycle": 3 / 8, "critic_recycled": 3}
    assert iv.take_metrics()["critic_recycled"] == 0  # a new window
    # the window survives a checkpoint; a checkpoint from before windows were kept starts an empty one
    resumed = RedoIntervention(RedoConfig(interval=10, tau=0.1, actor=False))
    resumed.load_state_dict(mid_window, agent)
    assert resumed.take_metrics() == {"critic_dormant_before_recycle": 3 / 8, "critic_recycled": 3}
    resumed.load_state_dict({k: v for k, v in mid_window.items() if k != "window"}, agent)
    assert resumed.take_metrics()["critic_recycled"] == 0


# -- Plasticity injection ----------------------------------------------------------------------------

def trainable_count(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", ["actor", "critic"])
def test_injection_keeps_outputs_and_trains_only_the_new_head(kind):
    torch.manual_seed(0)
    net = Actor(3, 1, 1.0, (16, 16)) if kind == "actor" else TwinCritic(3, 1, (16, 16), "all")
    inputs = (torch.randn(16, 3),) if kind == "actor" else (torch.randn(16, 3), torch.randn(16, 1))
    target = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    adam_step(net, opt, *inputs)
    with torch.no_grad():  # a target that lags behind the online network
        for t, p in zip(target.parameters(), net.parameters(), strict=True):
            t.lerp_(p, 0.5)
    out, target_out, n_trainable = net(*inputs), target(*inputs), trainable_count(net)
    body = [p for n, p in net.named_parameters() if n.split(".")[1] in ("0", "1")]  # first layer (+ its LN)
    body_state = [opt.state[p]["exp_avg"].clone() for p in body]

    heads = inject(net, 2, torch.Generator().manual_seed(0))
    inject(target, 2, like=net)
    target.requires_grad_(False)
    use_trainable_parameters(opt, net)
    assert len(heads) == (1 if kind == "actor" else 2) and all(isinstance(h, InjectedHead) for h in heads)
    # outputs unchanged at injection, to the bit, for the network and its target
    for a, b in ((net(*inputs), out), (target(*inputs), target_out)):
        assert all(torch.equal(u, v) for u, v in zip(as_tuple(a), as_tuple(b), strict=True))
    # same number of trainable parameters: the old head's are swapped for the new head's
    assert trainable_count(net) == n_trainable and trainable_count(target) == 0
    assert [p for p in opt.param_groups[0]["params"]] == [p for p in net.parameters() if p.requires_grad]
    assert all(torch.equal(opt.state[p]["exp_avg"], s) for p, s in zip(body, body_state, strict=True))
    assert not any(p in opt.state for h in heads for p in h.old.parameters())
    target_heads = [m for m in target.modules() if isinstance(m, InjectedHead)]
    for h, th in zip(heads, target_heads, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(h.new.parameters(), th.new.parameters(), strict=True))
        assert all(torch.equal(a, b) for a, b in zip(h.new.parameters(), h.frozen.parameters(), strict=True))
        assert not all(torch.equal(a, b) for a, b in zip(h.new.parameters(), h.old.parameters(), strict=True))

    frozen = {n: p.clone() for n, p in net.named_parameters() if ".old." in n or ".frozen." in n}
    new = {n: p.clone() for n, p in net.named_parameters() if ".new." in n}
    body_before = [p.clone() for p in body]
    adam_step(net, opt, *inputs)
    assert all(torch.equal(p, frozen[n]) for n, p in net.named_parameters() if n in frozen)
    assert all(not torch.equal(p, new[n]) for n, p in net.named_parameters() if n in new and p.dim() == 2)
    # the body keeps learning, with gradient flowing through all three heads (as in the paper)
    assert all(not torch.equal(p, b) for p, b in zip(body, body_before, strict=True) if p.dim() == 2)
    with pytest.raises(ValueError, match="already"):
        inject(net, 2)


def test_injection_intervention_fires_once_and_rebuilds_structure_on_load():
    def agent():
        torch.manual_seed(0)
        a = SimpleNamespace(actor=Actor(3, 1, 1.0, (4, 4)), critic=TwinCritic(3, 1, (4, 4)), updates=0,
                            refresh_parameter_lists=lambda: None)
        a.actor_target, a.critic_target = copy.deepcopy(a.actor), copy.deepcopy(a.critic)
        a.actor_opt = torch.optim.Adam(a.actor.parameters())
        a.critic_opt = torch.optim.Adam(a.critic.parameters())
        return a

    cfg = InjectionConfig(fraction=0.25, layers=1, critic=False)
    live, iv = agent(), InjectionIntervention(cfg, total_updates=100, seed=0)
    assert iv.at == 25
    for live.updates in range(1, 40):
        iv.after_update(live, None, None)
        assert iv.injected is (live.updates >= 25)
    assert sum(isinstance(m, InjectedHead) for m in live.actor.modules()) == 1
    assert not any(isinstance(m, InjectedHead) for m in live.critic.modules())
    # a fresh agent loading the state gets the same structure (parameter names) before loading weights
    resumed, iv2 = agent(), InjectionIntervention(cfg, total_updates=100, seed=0)
    iv2.load_state_dict(iv.state_dict(), resumed)
    for key in ("actor", "actor_target", "actor_opt"):
        getattr(resumed, key).load_state_dict(getattr(live, key).state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(resumed.actor(x), live.actor(x)) and iv2.injected


# -- Reset --------------------------------------------------------------------------------------------

def test_reset_layer_names():
    critic, actor = TwinCritic(3, 1, (4, 4)), Actor(3, 1, 1.0, (4, 4), "all")
    assert reset_layer_names(critic, 1) == ["q1.4", "q2.4"]
    assert reset_layer_names(critic, 0) == ["q1.0", "q1.2", "q1.4", "q2.0", "q2.2", "q2.4"]
    assert reset_layer_names(actor, 2) == ["net.3", "net.4", "net.6"]  # LayerNorm net.4 goes with net.3
    assert reset_layer_names(actor, 0) == reset_layer_names(actor, 9) == ["net.0", "net.1", "net.3", "net.4",
                                                                          "net.6"]


def test_reset_reinitialises_only_the_chosen_layers_and_clears_their_optimizer_state():
    torch.manual_seed(0)
    critic = TwinCritic(3, 1, (4, 4))
    target = copy.deepcopy(critic).requires_grad_(False)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    obs, act = torch.randn(16, 3), torch.randn(16, 1)
    for _ in range(2):
        adam_step(critic, opt, obs, act)
    with torch.no_grad():
        for p in target.parameters():
            p.mul_(0.5)
    before, target_before = copy.deepcopy(critic), copy.deepcopy(target)
    state_before = {n: opt.state[p]["exp_avg"].clone() for n, p in critic.named_parameters()}
    names = reset_layer_names(critic, 1)
    assert reset_modules(critic, names, opt, torch.Generator().manual_seed(0), target) == 2 * (4 + 1)
    old, old_target = dict(before.named_parameters()), dict(target_before.named_parameters())
    for (n, p), (_, t) in zip(critic.named_parameters(), target.named_parameters(), strict=True):
        if n.rpartition(".")[0] in names:
            assert torch.all(p != old[n]) and torch.all(p.abs() <= 0.5)  # U(-1/sqrt(4), 1/sqrt(4))
            assert p not in opt.state  # moments and step count gone
            assert torch.equal(t, p)  # the target copy is the fresh layer
        else:
            assert torch.equal(p, old[n]) and torch.equal(t, old_target[n])
            assert torch.equal(opt.state[p]["exp_avg"], state_before[n]) and float(opt.state[p]["step"]) == 2
    adam_step(critic, opt, obs, act)
    assert {float(opt.state[p]["step"]) for n, p in critic.named_parameters() if n.startswith("q1.4")} == {1.0}
    assert float(opt.state[critic.q1[0].weight]["step"]) == 3


def test_reset_intervention_schedule_and_networks():
    torch.manual_seed(0)
    a = SimpleNamespace(actor=Actor(3, 1, 1.0, (4, 4)), critic=TwinCritic(3, 1, (4, 4)), updates=0)
    a.actor_target, a.critic_target = copy.deepcopy(a.actor), copy.deepcopy(a.critic)
    a.actor_opt, a.critic_opt = torch.optim.Adam(a.actor.parameters()), torch.optim.Adam(a.critic.parameters())
    actor0, critic0 = copy.deepcopy(a.actor), copy.deepcopy(a.critic)
    iv = ResetIntervention(ResetConfig(interval=10, critic=False), seed=0)
    for a.updates in range(1, 25):
        iv.after_update(a, None, None)
    assert iv.resets == 2
    assert all(torch.equal(p, q) for p, q in zip(a.critic.parameters(), critic0.parameters(), strict=True))
    assert all(not torch.equal(p, q) for p, q in zip(a.actor.parameters(), actor0.parameters(), strict=True))
    assert all(torch.equal(p, q) for p, q in zip(a.actor.parameters(), a.actor_target.parameters(), strict=True))


# -- Runs through the runner: resume equals an uninterrupted run ---------------------------------------

# Episodes of the fake env last 50 steps: checkpoints at steps 100 and 200, evaluations at 0, 100, 200, 300.
FAST = dict(steps=300, start_steps=50, eval_every=100, eval_episodes=1, metrics_batch=256, progress=False,
            threads=1, device="cpu", checkpoint_every=100)
TIMING = ["steps_per_s"]


@pytest.mark.parametrize("method, overrides, fired", [
    ("reset", {"reset.interval": 75}, lambda s: s["resets"] == 2),
    ("redo", {"redo.interval": 50}, lambda s: s["recycled"]["critic"] + s["recycled"]["actor"] > 0),
    ("plasticity-injection", {"injection.update": 100}, lambda s: s["injected"]),
])
def test_resume_with_intervention_equals_uninterrupted_run(method, overrides, fired, tmp_path, monkeypatch):
    from nelib.runner.store import ResultStore

    cfg = make_config(FAKE, method, 0, "ci", **FAST, **overrides)
    full = train.run(cfg, ResultStore(tmp_path / "full"))

    store = ResultStore(tmp_path / "data")
    ckpt = run_interrupted(cfg, store, monkeypatch, at_eval=4)  # killed at the step-300 evaluation
    assert ckpt["t"] == 200 and fired(ckpt["agent"]["interventions"][0])  # it fired before the checkpoint
    resumed = train.run(cfg, store)
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING))


def test_methods_set_their_config():
    assert make_config(method="layernorm").agent.layernorm == "all"
    assert make_config(method="reset").reset.enabled and not make_config(method="td3").reset.enabled
    assert make_config(method="redo").redo.enabled
    assert make_config(method="plasticity-injection").injection.enabled
    with pytest.raises(ValueError, match="does not combine"):
        train.build_agent(make_config(method="ne", **{"injection.enabled": True}), 3, 1, 1.0, "cpu")
