"""K TD3 agents updated in lockstep: one batched forward and backward pass over a seed dimension
(:class:`VectorTD3`), the same update, bit for bit on CPU, as K ``TD3.train`` calls.

How the batching stays exact. The agents keep their ordinary ``nn.Parameter`` objects, but their storage
becomes a slice of one stacked ``[K, ...]`` tensor per parameter (:class:`VectorTD3`), so the optimizers,
masks, NE operators and baselines of each seed act in place on its slice as before, while a batched
pass reads all K at once. Batched passes use :class:`_BatchedLinear`, whose products are laid out as a
single run's ``nn.Linear`` lays them out (a one-output layer is a matrix-vector product there), and
per-seed losses, so that each seed's gradients are those of its own single run. The Adam moments are
stacked the same way, so that one call of Adam's (element-wise) update steps all K agents when none has
a topology update due.

On CUDA the batched update can also run as a CUDA graph (``cuda_graph=True``): between topology updates
an update is the same fixed sequence of kernels on the same tensors, so it is captured once and replayed,
which removes the launch overhead of its hundreds of small kernels. What changes from one update to the
next enters through static tensors (the batch's replay indices, the target-smoothing noise, Adam's step
count), drawn on the host exactly as the eager path draws them; the graph is captured again after every
change of structure (a topology update, new masks, restacked parameters or optimizer state). The replayed
update equals the eager CUDA update up to float rounding (Adam's capturable form computes its bias
correction on the device).

The runner trains seeds this way in :mod:`nelib.runner.vectorized`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nelib.agents.base import summed_counts
from nelib.agents.networks import Actor, TwinCritic
from nelib.agents.replay import ReplayBuffer
from nelib.agents.td3 import TD3, smoothed_action, td_target, twin_critic_loss
from nelib.baselines.injection import FrozenReLU, InjectedHead
from nelib.sparse.masks import float_mask, masked_layers
from nelib.torch_ops import Adam, adam_step_, soft_update_

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
        gw = None
        if ctx.needs_input_grad[1]:
            if w.shape[1] == 1 and g.device.type == "cpu":
                # One output: a single run's weight gradient is a [1, B] x [B, in] product, which MKL
                # rounds with a kernel of its own on some CPUs (Intel's) that no batched product matches.
                gw = torch.stack([g[k].t().mm(x[k]) for k in range(len(x))])
            else:
                gw = torch.bmm(g.transpose(1, 2), x)
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

    def __init__(self, agents: Sequence[TD3], cuda_graph: bool = False):
        if not agents or not all(isinstance(a, TD3) for a in agents):
            raise TypeError("VectorTD3 batches TD3 agents")
        a0 = agents[0]
        if any(a.cfg != a0.cfg or a.max_action != a0.max_action or a.device != a0.device
               or (a.updates, a.actor_updates) != (a0.updates, a0.actor_updates) for a in agents):
            raise ValueError("vectorized agents must share hyper-parameters, device and update counts")
        if cuda_graph and a0.device.type != "cuda":
            raise ValueError(f"cuda_graph replays the update on a CUDA device; these agents are on {a0.device}")
        self.agents = list(agents)
        # CPU: reduce each seed's losses on their own, which rounds as a single run does; elsewhere (CUDA,
        # not bit-reproducible across kernels anyway) reduce all seeds in one kernel instead of K.
        self.exact = a0.device.type == "cpu"
        self.cuda_graph = cuda_graph
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
        self._stack_masks()

    @torch.no_grad()
    def _stack_masks(self) -> None:
        """Stack every agent's float masks (:func:`~nelib.sparse.masks.float_mask`) per masked weight of actor
        and critic, to mask the stacked gradients with one multiply per layer (left out where no agent masks
        the layer). Drops any captured graph: it read the old stacks."""
        self.masks: dict[str, dict[str, torch.Tensor]] = {}
        self._masked: list = []  # every agent's masked layers, whose mask versions say when masks changed
        for key in ("actor", "critic"):
            layers = [dict(masked_layers(getattr(a, key))) for a in self.agents]
            self._masked += [m for ls in layers for m in ls.values()]
            sparse = [getattr(a, key) in a.sparse_nets for a in self.agents]
            stacked = {}
            for name in layers[0]:
                masks = [float_mask(ls[name]) if s else None for ls, s in zip(layers, sparse, strict=True)]
                if any(m is not None for m in masks):
                    w = layers[0][name].weight
                    stacked[f"{name}.weight"] = torch.stack([torch.ones_like(w) if m is None else m for m in masks])
            self.masks[key] = stacked
        self._mask_key = self._masks_now()
        self._graphs: dict[bool, tuple | None] = {}

    def _masks_now(self) -> tuple:
        """What identifies every agent's current masks (each mask update bumps its version counter)."""
        return tuple((m.mask._version, m.mask.data_ptr()) for m in self._masked)

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
        if (any(type(o) not in (torch.optim.Adam, Adam) or len(o.param_groups) != 1 for o in opts)
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
        elif self._masks_now() != self._mask_key:
            self._stack_masks()

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
        """Every agent's masked optimizer step of its ``key`` network.

        Topology updates never reach here (:meth:`train` runs those updates agent by agent), so the step is
        masking and Adam: the stacked gradients are masked with the stacked masks, then one Adam update runs
        on the stacks. Where their Adam states cannot be stacked, each agent masks and steps its own (the
        gradients scattered to it first). The step counts are counted up by :meth:`train`, on the host.
        """
        st = self.adam[key]
        if st is None:
            self._scatter_grads(key, leaves)
            for a, u, b in zip(self.agents, updates, batches, strict=True):
                a._optimizer_step(key, u, b)
            return
        with torch.no_grad():
            for name, mask in self.masks[key].items():
                g = leaves[name].grad
                if g is not None:
                    g.mul_(mask)
            if self.cuda_graph:  # device step counts, set from the host's before every update
                steps = self._device_steps[key]
            else:
                steps = [s[0].clone() for s in st["step"]]  # Adam counts them up; all agents' are equal
            adam_step_([self.params[key][n] for n in st["names"]], [leaves[n].grad for n in st["names"]],
                       st["exp_avg"], st["exp_avg_sq"], steps, st["group"], capturable=self.cuda_graph)

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
        agents = self.agents
        a0 = agents[0]
        cfg = a0.cfg
        if any(a.topology_due(a.updates + 1, cfg.policy_delay) for a in agents):
            # A topology update hooks the agent's own modules (straight-through growth scores), so this
            # update, one in `interval`, runs agent by agent: the same computation, unbatched.
            outs = [a.train(b) for a, b in zip(agents, buffers, strict=True)]
            self._restack_if_changed()
            return outs
        for a in agents:
            a.updates += 1
        with_actor = a0.updates % cfg.policy_delay == 0
        if with_actor:
            for a in agents:
                a.actor_updates += 1
        # What differs between updates, drawn on the host in a single run's order: each agent's batch, then
        # each agent's target-smoothing noise.
        idx = torch.stack([buf.indices(cfg.batch_size, a.review) for a, buf in zip(agents, buffers, strict=True)])
        noise = torch.stack([torch.randn((cfg.batch_size, a.act_dim), generator=a.gen, device=a.device)
                             for a in agents])
        if self.cuda_graph:
            critic_losses, actor_losses, obs, act = self._replay(buffers, idx, noise, with_actor)
        else:
            critic_losses, actor_losses, obs, act = self._update(buffers, idx, noise, with_actor)
        for key in ("critic", "actor") if with_actor else ("critic",):
            if self.adam[key] is not None:
                torch._foreach_add_(self.adam[key]["step"], 1.0)
        outs = [{"critic_loss": v} for v in critic_losses.tolist()]
        if with_actor:
            for out, v in zip(outs, actor_losses.tolist(), strict=True):
                out["actor_loss"] = v
        for k, a in enumerate(agents):
            for intervention in a.interventions:
                intervention.after_update(a, obs[k], act[k])
        if any(a.interventions for a in agents):
            self._restack_if_changed()
        return [{**out, **summed_counts()} for out in outs]  # no topology update on a batched one

    def _update(self, buffers: Sequence[ReplayBuffer], idx: torch.Tensor, noise: torch.Tensor, with_actor: bool):
        """The batched update on the device, from the batches' replay indices ``idx`` ``[K, B]`` and the
        target-smoothing noise ``[K, B, act_dim]``: critic step, and with ``with_actor`` actor step and Polyak
        averaging. No host synchronisation (a CUDA graph can hold it). Returns the per-seed critic and actor
        losses ``[K]`` (actor: None without ``with_actor``) and the batches' observations and actions."""
        agents, K = self.agents, len(self.agents)
        cfg, max_action = agents[0].cfg, agents[0].max_action
        obs, act, rew, next_obs, not_done = (
            torch.stack([field[idx[k]] for k, field in enumerate(fields)])
            for fields in zip(*((b.obs, b.action, b.reward, b.next_obs, b.not_done) for b in buffers), strict=True))
        with torch.no_grad():
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
        batches = [(obs[k], act[k]) for k in range(K)]
        self._optimizer_step("critic", leaves, [a.updates for a in agents], batches)
        actor_losses = None
        if with_actor:
            leaves = self._leaves("actor")
            # The critic's stacked parameters need no gradient here (a single run computes and discards it).
            q = self._q1(self.params["critic"], torch.cat([obs, self.actor(leaves, obs)], dim=-1))
            actor_losses = torch.stack([-q[k].mean() for k in range(K)]) if self.exact else -q.mean((1, 2))
            actor_losses.sum().backward()
            self._optimizer_step("actor", leaves, [a.actor_updates for a in agents], [(b[0],) for b in batches])
            with torch.no_grad():
                soft_update_(*self._polyak, cfg.tau)
        return losses.detach(), None if actor_losses is None else actor_losses.detach(), obs, act

    def _replay(self, buffers: Sequence[ReplayBuffer], idx: torch.Tensor, noise: torch.Tensor, with_actor: bool):
        """:meth:`_update` as a CUDA graph, one per value of ``with_actor``.

        After a change of structure (:meth:`_stack_masks` drops the graphs) the first update runs eagerly
        on a side stream (CUDA's warm-up before a capture), the next one is captured and then replayed, and
        every later one only replayed. Inputs are copied into the graph's static tensors first."""
        if any(self.adam[k] is None for k in ("actor", "critic")):
            raise ValueError("cuda_graph needs Adam states that stack (plain Adam, same step counts)")
        if not self._graphs:  # fresh structure: fresh static inputs and device step counts
            self._static = {"idx": idx.to(self.agents[0].device), "noise": noise.clone()}
            self._device_steps = {k: [s[0].to(noise.device) for s in self.adam[k]["step"]] for k in ("actor", "critic")}
        static = self._static
        static["idx"].copy_(idx, non_blocking=True)
        static["noise"].copy_(noise)
        for key in ("actor", "critic"):  # the host's counts, before this update
            for dev, host in zip(self._device_steps[key], self.adam[key]["step"], strict=True):
                dev.copy_(host[0], non_blocking=True)
        state = self._graphs.get(with_actor)
        if state is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self._update(buffers, static["idx"], static["noise"], with_actor)
            torch.cuda.current_stream().wait_stream(side)
            self._graphs[with_actor] = ("warm",)
            return out
        if state[0] == "warm":
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._update(buffers, static["idx"], static["noise"], with_actor)
            self._graphs[with_actor] = state = ("graph", graph, out)
        state[1].replay()
        return state[2]
