"""TD3 (Fujimoto et al. 2018) with optional sparse networks and Neuroplastic Expansion.

The agent API follows sfujim/TD3: ``select_action(obs)`` and ``train(buffer)``. NE plugs in through
:class:`nelib.topology.TopologyScheduler` (one per network) and :class:`nelib.review.ExperienceReview`;
with NE off and dense networks the hot path is plain TD3.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from nelib.metrics import (
    capture_activations,
    effective_rank,
    plasticity_report,
    stable_rank,
    weight_magnitude,
)
from nelib.networks import Actor, TwinCritic
from nelib.replay import ReplayBuffer
from nelib.review import ExperienceReview, ReviewConfig
from nelib.sparse import copy_masks, density_report, mask_gradients, sparsify
from nelib.topology import TopologyConfig, TopologyScheduler

ARCHS = ("td3", "ne")


@dataclasses.dataclass
class TD3Config:
    """TD3 hyper-parameters (defaults: the paper's protocol, i.e. sfujim/TD3)."""

    arch: str = "td3"
    """``td3``: actor and critic 256-256; ``ne``: the official NE critic, 256-256-256 with LayerNorm
    after the third hidden layer (actor 256-256)."""
    layernorm: str = "none"
    """Extra LayerNorm in actor and critic: ``none`` or ``all`` hidden layers (the LayerNorm baseline)."""
    lr: float = 3e-4
    """Adam learning rate of actor and critic."""
    batch_size: int = 256
    """Transitions per gradient update."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target networks."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise (in units of max_action)."""
    noise_clip: float = 0.5
    """Clip of the target policy smoothing noise (in units of max_action)."""
    policy_delay: int = 2
    """Critic updates per actor (and target) update."""
    expl_noise: float = 0.1
    """Std of the Gaussian exploration noise (in units of max_action)."""

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"agent.arch must be one of {ARCHS}, got {self.arch!r}")
        if self.layernorm not in ("none", "all"):
            raise ValueError(f"agent.layernorm must be 'none' or 'all', got {self.layernorm!r}")
        if self.batch_size <= 0 or self.policy_delay <= 0 or self.lr <= 0:
            raise ValueError("agent.batch_size, agent.policy_delay and agent.lr must be > 0")
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ValueError("agent.gamma and agent.tau must be in (0, 1]")


@dataclasses.dataclass
class SparsityConfig:
    """Initial sparsity of the networks (ERK allocation)."""

    density: float = 1.0
    """Initial global density of each sparse network (1.0: dense; NE and ``sparse``: 0.2)."""
    actor: bool = True
    """Make the actor sparse (and, with NE, grow it)."""
    critic: bool = True
    """Make the critic sparse (and, with NE, grow it)."""
    dense_first_last: bool = False
    """Keep the first and last layer of each network dense."""

    def __post_init__(self):
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"sparsity.density must be in (0, 1], got {self.density}")


class TD3:
    """TD3 agent; ``expansion`` turns on NE's topology updates, ``review`` its experience review."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        max_action: float,
        cfg: TD3Config,
        sparsity: SparsityConfig | None = None,
        topology: TopologyConfig | None = None,
        review: ReviewConfig | None = None,
        total_updates: int = 1,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        self.cfg, self.device, self.max_action, self.act_dim = cfg, torch.device(device), max_action, act_dim
        sparsity = sparsity or SparsityConfig()
        torch.manual_seed(seed)
        ln = cfg.layernorm
        critic_hidden, critic_ln = ((256, 256, 256), "last") if cfg.arch == "ne" else ((256, 256), "none")
        self.actor = Actor(obs_dim, act_dim, max_action, (256, 256), ln).to(self.device)
        self.critic = TwinCritic(obs_dim, act_dim, critic_hidden, "all" if ln == "all" else critic_ln).to(self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.mask_gen = torch.Generator().manual_seed(seed + 1)
        self.sparse_nets = []
        if sparsity.density < 1.0:
            if sparsity.actor:
                sparsify(self.actor, sparsity.density, self.mask_gen, sparsity.dense_first_last)
                self.sparse_nets.append(self.actor)
            if sparsity.critic:
                sparsify(self.critic, sparsity.density, self.mask_gen, sparsity.dense_first_last)
                self.sparse_nets.append(self.critic)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        for p in (*self.actor_target.parameters(), *self.critic_target.parameters()):
            p.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.refresh_parameter_lists()

        self.topology: dict[str, TopologyScheduler] = {}
        if topology is not None:
            if sparsity.actor:
                self.topology["actor"] = TopologyScheduler(
                    self.actor, self.actor_opt, topology, total_updates // cfg.policy_delay, self.mask_gen)
            if sparsity.critic:
                self.topology["critic"] = TopologyScheduler(
                    self.critic, self.critic_opt, topology, total_updates, self.mask_gen)
        self.review = ExperienceReview(review) if review is not None and review.trigger != "never" else None
        self.updates = self.actor_updates = 0
        self.topology_log = {"grown": 0, "pruned": 0}
        # Baselines that act on the networks between updates (Reset, ReDo, Plasticity Injection): objects
        # with ``after_update(agent, obs, act)``, ``state_dict()`` and ``load_state_dict(state, agent)``.
        self.interventions: list = []

    def refresh_parameter_lists(self) -> None:
        """Re-pair online and target parameters for Polyak updates (after a network changes shape)."""
        self._online = [*self.actor.parameters(), *self.critic.parameters()]
        self._target = [*self.actor_target.parameters(), *self.critic_target.parameters()]

    # -- acting -------------------------------------------------------------------------------------
    @torch.no_grad()
    def select_action(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action for one observation."""
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        return self.actor(x)[0].cpu().numpy()

    def explore(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Action for data collection: the deterministic action plus Gaussian noise drawn from ``rng``
        (the runner clips it to the action space)."""
        noise = rng.normal(0.0, self.max_action * self.cfg.expl_noise, size=self.act_dim)
        return self.select_action(obs) + noise

    # -- learning -----------------------------------------------------------------------------------
    def train(self, buffer: ReplayBuffer) -> dict[str, float]:
        """One TD3 update (critic every call, actor and targets every ``policy_delay`` calls)."""
        cfg = self.cfg
        self.updates += 1
        obs, act, rew, next_obs, not_done = buffer.sample(cfg.batch_size, self.review)
        with torch.no_grad():
            noise = torch.randn(act.shape, generator=self.gen, device=self.device) * cfg.policy_noise
            noise = noise.clamp(-cfg.noise_clip, cfg.noise_clip) * self.max_action
            next_act = (self.actor_target(next_obs) + noise).clamp(-self.max_action, self.max_action)
            tq1, tq2 = self.critic_target(next_obs, next_act)
            target = rew + not_done * cfg.gamma * torch.min(tq1, tq2)
        q1, q2 = self.critic(obs, act)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self._optimizer_step("critic", self.critic, self.critic_opt, self.updates, (obs, act))
        out = {"critic_loss": critic_loss.item()}

        if self.updates % cfg.policy_delay == 0:
            self.actor_updates += 1
            actor_loss = -self.critic.q1_value(obs, self.actor(obs)).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self._optimizer_step("actor", self.actor, self.actor_opt, self.actor_updates, (obs,))
            with torch.no_grad():
                torch._foreach_lerp_(self._target, self._online, cfg.tau)
            out["actor_loss"] = actor_loss.item()
        for intervention in self.interventions:
            intervention.after_update(self, obs, act)
        return out

    def _optimizer_step(self, key, net, opt, update, batch) -> None:
        sched = self.topology.get(key)
        due = sched is not None and sched.due(update)
        if due:
            sched.capture_gradients()
        if net in self.sparse_nets:
            mask_gradients(net)
        opt.step()
        if due:
            acts = capture_activations(net, *batch)
            stats = sched.step(update, acts)
            copy_masks(net, self.actor_target if key == "actor" else self.critic_target)
            self.topology_log["grown"] += stats["grown"]
            self.topology_log["pruned"] += stats["pruned"]
            if key == "critic" and self.review is not None:
                report = plasticity_report(acts, taus=(self.review.cfg.tau,))
                self.review.observe(report[f"dormant_{self.review.cfg.tau:g}"], report["fau"])

    # -- measuring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def plasticity(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, float]:
        """Dormant ratios, active ratio, FAU, density, weight magnitude and feature ranks on a batch."""
        out: dict[str, float] = {}
        for key, net, inputs in (("actor", self.actor, (obs,)), ("critic", self.critic, (obs, act))):
            acts = capture_activations(net, *inputs)
            report = plasticity_report(acts)
            out.update({f"{key}_{k}": v for k, v in report.items() if "/" not in k})
            out[f"{key}_density"] = density_report(net)["density"]
            out[f"{key}_weight_magnitude"] = weight_magnitude(net)
            last = list(acts.values())[-1] if key == "actor" else acts[_last_relu(net.q1, "q1")]
            out[f"{key}_stable_rank"] = stable_rank(last)
            out[f"{key}_effective_rank"] = effective_rank(last)
        return out

    # -- checkpointing ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "gen": self.gen.get_state(), "mask_gen": self.mask_gen.get_state(),
            "topology": {k: s.state_dict() for k, s in self.topology.items()},
            "review": self.review.state_dict() if self.review else None,
            "updates": self.updates, "actor_updates": self.actor_updates, "topology_log": dict(self.topology_log),
            "interventions": [iv.state_dict() for iv in self.interventions],
        }

    def load_state_dict(self, state: dict) -> None:
        # Interventions first: one may change the networks' structure (Plasticity Injection adds a head).
        for iv, iv_state in zip(self.interventions, state["interventions"], strict=True):
            iv.load_state_dict(iv_state, self)
        for key in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, key).load_state_dict(state[key])
        # .cpu(): generator states are CPU tensors, but torch.load(map_location="cuda") moves them
        self.gen.set_state(state["gen"].cpu())
        self.mask_gen.set_state(state["mask_gen"].cpu())
        for k, s in self.topology.items():
            s.load_state_dict(state["topology"][k])
        if self.review is not None:
            self.review.load_state_dict(state["review"])
        self.updates, self.actor_updates = state["updates"], state["actor_updates"]
        self.topology_log = dict(state["topology_log"])


def _last_relu(net: torch.nn.Module, prefix: str) -> str:
    names = [n for n, m in net.named_modules() if isinstance(m, torch.nn.ReLU)]
    return f"{prefix}.{names[-1]}"
