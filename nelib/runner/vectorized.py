"""Vectorized seeds: K independent TD3 runs (any TD3 method, NE included) trained in one process.

``run_vectorized(configs)`` trains runs that differ only in their seed, in lockstep: the K environments
are stepped one after the other in the same loop, the K policies act in one batched forward pass, and
the heavy part of the update, the forward and backward passes of critic, actor and their targets, is one
set of batched matrix products over a seed dimension. Everything else is each seed's own: its agent
(built exactly as a single run builds it: initialisation, generators, masks, NE scheduler,
interventions), its replay buffer and sampling, its exploration noise, its masked optimizer step and
topology update, its evaluation, checkpoints and stored results. On CPU (one torch thread) the result
is the same, bit for bit, as K single runs (``tests/test_vectorized.py``); on CUDA, where the losses of
all seeds are reduced in one kernel, it is the same up to float rounding, so the same in distribution.

How the batching stays exact. The agents keep their ordinary ``nn.Parameter`` objects, but their storage
becomes a slice of one stacked ``[K, ...]`` tensor per parameter (:class:`VectorTD3`), so the optimizers,
masks, NE operators and baselines of each seed act in place on its slice as before, while a batched
pass reads all K at once. Batched passes use :class:`_BatchedLinear`, whose products are laid out as a
single run's ``nn.Linear`` lays them out (a one-output layer is a matrix-vector product there), and
per-seed losses, so that each seed's gradients are those of its own single run. The Adam moments are
stacked the same way, so that one call of Adam's (element-wise) update steps all K agents when none has
a topology update due.

``python -m nelib.runner.vectorized --seeds 0,1,2 [any nelib.runner.train option]`` runs K seeds from the shell;
``python -m nelib.runner.sweep ... --vectorize K`` groups a grid's seeds K at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from nelib.agents.base import summed_counts
from nelib.agents.networks import Actor, TwinCritic
from nelib.agents.replay import ReplayBuffer
from nelib.agents.td3 import TD3, smoothed_action, td_target, twin_critic_loss
from nelib.baselines.injection import FrozenReLU, InjectedHead
from nelib.runner.algos import spec
from nelib.runner.config import TrainConfig
from nelib.runner.loop import advance, evaluate_first, train_to_end
from nelib.runner.store import ResultStore, current_command
from nelib.runner.train import Run, parse_args, stored_rows
from nelib.sparse.masks import mask_gradients
from nelib.torch_ops import adam_step_, soft_update_

NETS = ("actor", "critic", "actor_target", "critic_target")


class _BatchedLinear(torch.autograd.Function):
    """``y[k] = x[k] @ w[k].T + b[k]`` for every seed ``k``, with the products laid out as ``F.linear``'s.

    Why a Function of its own: autograd's formulas for ``baddbmm`` transpose some products differently
    from those of ``F.linear`` (its weight gradient is ``(x.T @ g).T``, ``F.linear``'s is ``g.T @ x``), and
    on MKL the two round differently; here forward and backward make the same products a single run makes.
    """

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        if w.shape[1] == 1 and x.shape[1] == 1:  # one row, one output: no batched product rounds alike
            return torch.stack([F.linear(x[k], w[k], None if b is None else b[k]) for k in range(len(x))])
        if w.shape[1] == 1:  # one output: a single run's addmm is a matrix-vector product; so is w @ x.T
            y = torch.bmm(w, x.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(2), w, x.transpose(1, 2))
            return y.transpose(1, 2)
        return torch.bmm(x, w.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = g.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def batched_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``[K, B, in] x [K, out, in] (+ [K, out]) -> [K, B, out]``, seed by seed as ``F.linear`` computes it."""
    return _BatchedLinear.apply(x, w, b)


Params = dict[str, torch.Tensor]


def compile_forward(module: nn.Module, prefix: str = "") -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """A function ``(params, x) -> y`` computing ``module`` for all seeds at once from stacked parameters
    (``params[name]`` is ``[K, *shape]``; ``x`` is ``[K, B, features]``).

    Covers what nelib's TD3 networks are made of: sequences of (masked) linear layers, ReLUs, LayerNorms
    and Plasticity Injection's heads. LayerNorm runs seed by seed (its fused per-seed affine has no batched
    form that rounds alike).
    """
    if isinstance(module, nn.Sequential):
        steps = [compile_forward(m, f"{prefix}{name}.") for name, m in module.named_children()]

        def sequential(p, x):
            for step in steps:
                x = step(p, x)
            return x
        return sequential
    if isinstance(module, nn.Linear):  # MaskedLinear: masked weights are exactly zero, no mask needed
        w, b = prefix + "weight", prefix + "bias"
        return lambda p, x: batched_linear(x, p[w], p.get(b))
    if isinstance(module, (nn.ReLU, FrozenReLU)):
        return lambda p, x: F.relu(x)
    if isinstance(module, nn.LayerNorm):
        shape, eps, w, b = module.normalized_shape, module.eps, prefix + "weight", prefix + "bias"
        return lambda p, x: torch.stack([F.layer_norm(x[k], shape, p[w][k], p[b][k], eps) for k in range(len(x))])
    if isinstance(module, InjectedHead):
        old, new, frozen = (compile_forward(getattr(module, n), f"{prefix}{n}.") for n in ("old", "new", "frozen"))
        return lambda p, x: old(p, x) + (new(p, x) - frozen(p, x))  # the bracket first, as InjectedHead does
    raise TypeError(f"no batched forward for {type(module).__name__}")


class VectorTD3:
    """K TD3 agents in lockstep whose parameters live in stacked tensors; ``train`` is K ``TD3.train`` calls.

    The agents must have the same structure and hyper-parameters and the same number of updates so far.
    """

    def __init__(self, agents: Sequence[TD3]):
        if not agents or not all(isinstance(a, TD3) for a in agents):
            raise TypeError("VectorTD3 batches TD3 agents")
        a0 = agents[0]
        if any(a.cfg != a0.cfg or a.max_action != a0.max_action or a.device != a0.device
               or (a.updates, a.actor_updates) != (a0.updates, a0.actor_updates) for a in agents):
            raise ValueError("vectorized agents must share hyper-parameters, device and update counts")
        self.agents = list(agents)
        # CPU: reduce each seed's losses on their own, which rounds as a single run does; elsewhere (CUDA,
        # not bit-reproducible across kernels anyway) reduce all seeds in one kernel instead of K.
        self.exact = a0.device.type == "cpu"
        self.stack()

    # -- stacked parameters -------------------------------------------------------------------------
    @torch.no_grad()
    def stack(self) -> None:
        """Move every agent's parameters into stacked tensors (agent ``k``'s are views of slice ``k``)."""
        self.params: dict[str, Params] = {}
        for net in NETS:
            named = [dict(getattr(a, net).named_parameters()) for a in self.agents]
            if any(list(n) != list(named[0]) or any(n[k].shape != named[0][k].shape for k in n) for n in named):
                raise ValueError(f"the agents' {net} networks differ in structure")
            stacked = {}
            for key in named[0]:
                s = torch.stack([n[key].detach() for n in named])
                for k, n in enumerate(named):
                    n[key].data = s[k]  # same Parameter object (optimizer state, masks' layers keep it)
                stacked[key] = s
            self.params[net] = stacked
        a0 = self.agents[0]
        self._actor = compile_forward(a0.actor.net, "net.")
        self._q1, self._q2 = compile_forward(a0.critic.q1, "q1."), compile_forward(a0.critic.q2, "q2.")
        if not isinstance(a0.actor, Actor) or not isinstance(a0.critic, TwinCritic):
            raise TypeError("VectorTD3 expects nelib's Actor and TwinCritic")
        # Polyak pairs as TD3.refresh_parameter_lists makes them: (targets, online), actor then critic
        self._polyak = ([*self.params["actor_target"].values(), *self.params["critic_target"].values()],
                        [*self.params["actor"].values(), *self.params["critic"].values()])
        self.adam = {key: self._stack_adam(key) for key in ("actor", "critic")}
        self._ptrs = self._storage()

    @torch.no_grad()
    def _stack_adam(self, key: str) -> dict | None:
        """Stack the Adam state of the ``key`` network's trainable parameters like the parameters, so that one
        call of Adam's own update function steps all agents (None where that cannot be exact: then each agent
        steps its own optimizer).

        State an agent's Adam has not created yet is created here as Adam would create it (zero moments,
        step 0), which changes nothing. Adam's update is element-wise, and all agents' step counts are equal.
        """
        opts = [getattr(a, f"{key}_opt") for a in self.agents]
        group = opts[0].param_groups[0]
        if (any(type(o) is not torch.optim.Adam or len(o.param_groups) != 1 for o in opts)
                or group["amsgrad"] or group["fused"] or group["capturable"] or group["differentiable"]):
            return None
        names = {id(p): n for n, p in getattr(self.agents[0], key).named_parameters()}
        stacks = {"names": [names[id(p)] for p in group["params"]], "group": group, "entries": [],
                  "exp_avg": [], "exp_avg_sq": [], "step": []}
        for params in zip(*(o.param_groups[0]["params"] for o in opts), strict=True):
            states = [o.state.get(p) for o, p in zip(opts, params, strict=True)]
            if all(not st for st in states):
                states = [{"step": torch.tensor(0.0, dtype=torch.get_default_dtype()), "exp_avg": torch.zeros_like(p),
                           "exp_avg_sq": torch.zeros_like(p)} for p in params]
            elif not all(states) or len({float(st["step"]) for st in states}) != 1:
                return None  # some agents have state and others not, or steps differ: no common update
            for field in ("exp_avg", "exp_avg_sq", "step"):
                stacked = torch.stack([st[field] for st in states])
                for k, st in enumerate(states):
                    st[field] = stacked[k]
                stacks[field].append(stacked)
            for o, p, st in zip(opts, params, states, strict=True):
                o.state[p] = st
                stacks["entries"].append((o, p, st, st["exp_avg"]))
        return stacks

    def _adam_intact(self, key: str) -> bool:
        """Whether every agent's Adam state is still the stacked one (Reset deletes it, for example)."""
        st = self.adam[key]
        return st is None or all(o.state.get(p) is state and state.get("exp_avg") is view
                                 for o, p, state, view in st["entries"])

    def _storage(self) -> list[int]:
        return [p.data_ptr() for a in self.agents for net in NETS for p in getattr(a, net).parameters()]

    def _restack_if_changed(self) -> None:
        # An intervention that replaces parameters (Plasticity Injection adds heads) or optimizer state (Reset)
        # moves them out of the stacks: stack again, so that the batched passes see the agents as they are.
        if self._storage() != self._ptrs or not all(self._adam_intact(k) for k in ("actor", "critic")):
            self.stack()

    def _leaves(self, net: str) -> Params:
        """The stacked parameters of ``net`` as fresh leaves that collect gradients (sharing storage)."""
        ref = dict(getattr(self.agents[0], net).named_parameters())
        return {k: s.detach().requires_grad_(ref[k].requires_grad) for k, s in self.params[net].items()}

    def _scatter_grads(self, net: str, leaves: Params) -> None:
        """Give each agent's parameters its slice of the stacked gradients, as its own backward would."""
        for k, a in enumerate(self.agents):
            for name, p in getattr(a, net).named_parameters():
                g = leaves[name].grad
                p.grad = None if g is None else g[k]

    def _optimizer_step(self, key: str, leaves: Params, updates: list[int], batches: list[tuple]) -> None:
        """Every agent's masked optimizer step of its ``key`` network (gradients scattered already).

        Topology updates never reach here (:meth:`train` runs those updates agent by agent), so the step is
        masking and Adam: each agent masks its gradients (in place, in the stacked gradients), then one Adam
        update runs on the stacks (or, where their Adam states cannot be stacked, each agent steps its own).
        """
        st = self.adam[key]
        if st is None:
            for a, u, b in zip(self.agents, updates, batches, strict=True):
                a._optimizer_step(key, u, b)
            return
        for a in self.agents:
            net = getattr(a, key)
            if net in a.sparse_nets:
                mask_gradients(net)
        g = st["group"]
        with torch.no_grad():
            steps = [s[0].clone() for s in st["step"]]  # Adam counts it up; all agents' are equal
            adam_step_([self.params[key][n] for n in st["names"]], [leaves[n].grad for n in st["names"]],
                       st["exp_avg"], st["exp_avg_sq"], steps, g)
            torch._foreach_add_(st["step"], 1.0)

    # -- batched networks ---------------------------------------------------------------------------
    def actor(self, p: Params, obs: torch.Tensor) -> torch.Tensor:
        return self.agents[0].max_action * torch.tanh(self._actor(p, obs))

    def critic(self, p: Params, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return self._q1(p, x), self._q2(p, x)

    # -- acting and learning ------------------------------------------------------------------------
    @torch.no_grad()
    def select_actions(self, obs: Sequence[np.ndarray]) -> np.ndarray:
        """Deterministic actions ``[K, act_dim]`` for one observation per agent (``TD3.select_action``)."""
        x = torch.as_tensor(np.stack(obs), dtype=torch.float32, device=self.agents[0].device).unsqueeze(1)
        return self.actor(self.params["actor"], x)[:, 0].cpu().numpy()

    def train(self, buffers: Sequence[ReplayBuffer]) -> list[dict[str, float]]:
        """One TD3 update of every agent on its own buffer; the same as ``[a.train(b) for a, b in ...]``, metrics
        included."""
        agents, K = self.agents, len(self.agents)
        a0 = agents[0]
        cfg, max_action = a0.cfg, a0.max_action
        if any(a.topology_due(a.updates + 1, cfg.policy_delay) for a in agents):
            # A topology update hooks the agent's own modules (straight-through growth scores), so this
            # update, one in `interval`, runs agent by agent: the same computation, unbatched.
            outs = [a.train(b) for a, b in zip(agents, buffers, strict=True)]
            self._restack_if_changed()
            return outs
        for a in agents:
            a.updates += 1
        batches = [buf.sample(cfg.batch_size, a.review) for a, buf in zip(agents, buffers, strict=True)]
        obs, act, rew, next_obs, not_done = (torch.stack(x) for x in zip(*batches, strict=True))
        with torch.no_grad():
            noise = torch.stack([torch.randn(act.shape[1:], generator=a.gen, device=a.device) for a in agents])
            next_act = smoothed_action(self.actor(self.params["actor_target"], next_obs), noise, cfg, max_action)
            target = td_target(rew, not_done, *self.critic(self.params["critic_target"], next_obs, next_act), cfg.gamma)
        leaves = self._leaves("critic")
        q1, q2 = self.critic(leaves, obs, act)
        # Per-seed losses; their sum gives each seed its own gradient.
        if self.exact:
            losses = torch.stack([twin_critic_loss(q1[k], q2[k], target[k]) for k in range(K)])
        else:
            losses = (F.mse_loss(q1, target, reduction="none").mean((1, 2))
                      + F.mse_loss(q2, target, reduction="none").mean((1, 2)))
        losses.sum().backward()
        self._scatter_grads("critic", leaves)
        self._optimizer_step("critic", leaves, [a.updates for a in agents], [(b[0], b[1]) for b in batches])
        outs = [{"critic_loss": v} for v in losses.tolist()]

        if a0.updates % cfg.policy_delay == 0:
            for a in agents:
                a.actor_updates += 1
            leaves = self._leaves("actor")
            # The critic's stacked parameters need no gradient here (a single run computes and discards it).
            q = self._q1(self.params["critic"], torch.cat([obs, self.actor(leaves, obs)], dim=-1))
            actor_losses = torch.stack([-q[k].mean() for k in range(K)]) if self.exact else -q.mean((1, 2))
            actor_losses.sum().backward()
            self._scatter_grads("actor", leaves)
            self._optimizer_step("actor", leaves, [a.actor_updates for a in agents], [(b[0],) for b in batches])
            with torch.no_grad():
                soft_update_(*self._polyak, cfg.tau)
            for out, v in zip(outs, actor_losses.tolist(), strict=True):
                out["actor_loss"] = v
        for a, b in zip(agents, batches, strict=True):
            for intervention in a.interventions:
                intervention.after_update(a, b[0], b[1])
        if any(a.interventions for a in agents):
            self._restack_if_changed()
        return [{**out, **summed_counts()} for out in outs]  # no topology update on a batched one


def compact(state):
    """``state`` with every tensor copied out of the stacks, so that a checkpoint holds one seed's
    parameters only (``torch.save`` writes the whole storage of a view)."""
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: compact(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(compact(v) for v in state)
    return state


def check_group(configs: Sequence[TrainConfig]) -> None:
    """Configs that can train together: TD3 runs that are equal but for distinct seeds."""
    if not configs:
        raise ValueError("no configs to run")
    if any(not spec(c.algo).vectorizable for c in configs):
        raise ValueError("vectorized seeds are implemented for TD3 tasks only (DrQ runs one seed per process)")
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"vectorized runs need distinct seeds, got {seeds}")
    base = dataclasses.replace(configs[0], seed=0)
    if any(dataclasses.replace(c, seed=0) != base for c in configs):
        raise ValueError("vectorized runs must have the same config apart from the seed")


def seed_groups(configs: Sequence[TrainConfig], k: int) -> list[list[TrainConfig]]:
    """``configs`` as work items of :func:`nelib.runner.backends.run_configs`: TD3 runs equal but for the seed in
    groups of at most ``k`` (trained by one :func:`run_vectorized`), every other run alone; order kept."""
    groups: dict[object, list[list[TrainConfig]]] = {}
    items: list[list[TrainConfig]] = []
    for c in configs:
        if not spec(c.algo).vectorizable or k <= 1:
            items.append([c])
            continue
        key = dataclasses.replace(c, seed=0).hash() + str((c.device, c.threads, c.checkpoint_every, c.progress))
        open_groups = groups.setdefault(key, [])
        if open_groups and len(open_groups[-1]) < k:
            open_groups[-1].append(c)
        else:
            open_groups.append([c])
            items.append(open_groups[-1])
    return items


def auto_vectorize(configs: Sequence[TrainConfig]) -> int:
    """How many seeds to train together when asked to choose: all seeds of a task and method where the runs
    go to a GPU (a single TD3 run leaves it mostly idle), none on CPU (there, K single runs on the process
    pool are as fast; see docs/speed.md)."""
    from nelib.runner.train import runs_on_cuda

    if not runs_on_cuda(configs):
        return 0
    return len({c.seed for c in configs})


def run_group(configs: Sequence[TrainConfig], root: str, overwrite: bool, command: str = "") -> None:
    """A pool worker's job: :func:`run_vectorized` on the store at ``root`` (one config: a single run)."""
    from nelib.runner.train import run

    if len(configs) == 1:
        run(configs[0], ResultStore(root), overwrite=overwrite, command=command or None)
    else:
        run_vectorized(configs, ResultStore(root), overwrite=overwrite, command=command or None)


def run_vectorized(configs: Sequence[TrainConfig], store: ResultStore | None = None, overwrite: bool = False,
                   command: str | None = None) -> list[pd.DataFrame]:
    """Train (or load) runs that differ only in their seed together; return each one's evaluation rows.

    Each seed is stored as its own run, exactly as :func:`nelib.runner.train.run` stores it (its record's wall
    time is the shared process's; its command is this process's command line, marked as vectorized).
    Runs already stored are loaded; interrupted ones resume from their checkpoints.
    """
    check_group(configs)
    store = store or ResultStore()
    done = {c.seed: stored_rows(c, store, overwrite) for c in configs}
    todo = [c for c in configs if done[c.seed] is None]
    if todo:
        if todo[0].threads:
            torch.set_num_threads(todo[0].threads)
        command = command or current_command()
        command += f"  [nelib.runner.vectorized: seeds {','.join(str(c.seed) for c in todo)} in one process]"
        runs = [SeedRun(c, store) for c in todo]
        for r, df in zip(runs, train_together(runs, command), strict=True):
            done[r.cfg.seed] = df
    return [done[c.seed] for c in configs]


class SeedRun(Run):
    """A single run that a :class:`VectorTD3` trains with others: its checkpoints copy its agent's
    parameters out of the shared stacks."""

    def agent_state(self) -> dict:
        return compact(self.agent.state_dict())


def train_together(runs: Sequence[Run], command: str | None = None) -> list[pd.DataFrame]:
    """Train ``runs`` (TD3, same config but the seed) to the end in lockstep; store them; return their rows."""
    cfg = runs[0].cfg
    evaluate_first(runs)
    # Resumed seeds may stand at different steps (each checkpoints at its own episode ends): the ones
    # behind step alone, as a single run would, until all stand at the same step.
    t = max(r.t for r in runs)
    for r in runs:
        advance([r], r.step, t)
    vec = VectorTD3([r.agent for r in runs])
    return train_to_end(runs, lambda: step_together(runs, vec), f"{cfg.method} {cfg.task} x{len(runs)} seeds",
                        command)


def step_together(runs: Sequence[Run], vec: VectorTD3) -> None:
    """One step of every run: each acts (the policies in one batched pass) and steps its env, then one
    batched update of all agents."""
    for r in runs:
        r.begin_step()
    if runs[0].random_phase:
        actions = [r.random_action() for r in runs]
    else:  # each seed's noise from its own generator, as TD3.explore draws it
        noise = [r.agent.exploration_noise(r.rng) for r in runs]
        greedy = vec.select_actions([r.obs for r in runs])
        actions = [r.clip(a + n) for r, a, n in zip(runs, greedy, noise, strict=True)]
    for r, a in zip(runs, actions, strict=True):
        r.env_step(a)
    if runs[0].trains:
        for r, metrics in zip(runs, vec.train([r.buffer for r in runs]), strict=True):
            r.record_update(metrics)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds trained together")
    known, rest = p.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__.split("\n")[0] + "\n\n--seeds S,S,...  comma-separated seeds trained together (default 0,1,2)"
              "\nevery other option as for python -m nelib.runner.train:\n")
    cfg, args = parse_args(rest, prog="python -m nelib.runner.vectorized [--seeds S,S,...]")
    try:
        seeds = [int(s) for s in known.seeds.split(",")]
        dfs = run_vectorized([dataclasses.replace(cfg, seed=s) for s in seeds], ResultStore(args.data_dir),
                             overwrite=args.overwrite)
    except ValueError as e:
        sys.exit(f"error: {e}")
    for s, df in zip(seeds, dfs, strict=True):
        last = df.iloc[-1]
        print(f"{cfg.method} {cfg.task} seed {s}: return {last['return_mean']:.1f} at step {int(last['step'])}")


if __name__ == "__main__":
    main()
