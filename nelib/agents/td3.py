"""TD3 (Fujimoto et al. 2018) with optional sparse networks and Neuroplastic Expansion.

The agent API follows sfujim/TD3: ``select_action(obs)`` and ``train(buffer)``. NE plugs in through
:class:`nelib.sparse.topology.TopologyScheduler` (one per network) and :class:`nelib.sparse.review.ExperienceReview`,
set up and stepped by :class:`nelib.agents.base.SparseAgent` (shared with DrQ); with NE off and dense
networks the hot path is plain TD3.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nelib.agents.base import SparseAgent, SparsityConfig, last_relu, summed_counts
from nelib.agents.networks import Actor, TwinCritic
from nelib.agents.replay import ReplayBuffer
from nelib.seeding import NETWORKS, stream_seed
from nelib.sparse.review import ReviewConfig
from nelib.sparse.topology import TopologyConfig
from nelib.torch_ops import Adam, bf16_matmul_supported, soft_update_
from nelib.validation import check_between, check_choice, check_positive

ARCHS = ("td3", "ne")
PRECISIONS = ("fp32", "bf16")
# What TD3 checkpoints of its own, before SparseAgent's generators, NE state and counters.
_STATE = ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt")


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
    precision: str = "fp32"
    """Matrix products of the update in ``fp32`` or ``bf16`` (autocast: weights, Adam, output layers and
    losses stay fp32; acting and measuring stay fp32). ``bf16`` needs bf16 matrix units (AVX512-BF16 or AMX
    on a CPU, a bf16-capable GPU)."""

    def __post_init__(self):
        check_choice("agent", self, "arch", ARCHS)
        check_choice("agent", self, "layernorm", ("none", "all"))
        check_positive("agent", self, "batch_size", "policy_delay", "lr")
        check_between("agent", self, ("gamma", "tau"), 0, 1, open_low=True)
        check_choice("agent", self, "precision", PRECISIONS)


def check_precision(precision: str, device: torch.device) -> None:
    """A one-line error when ``precision`` cannot run fast on ``device`` (bf16 without bf16 matrix units
    would be emulated, several times slower than fp32)."""
    if precision == "bf16" and not bf16_matmul_supported(device):
        raise ValueError(f"agent.precision bf16 needs bf16 matrix units (AVX512-BF16 or AMX, or a bf16 GPU); "
                         f"{device} has none: use fp32")


def smoothed_action(target_action: torch.Tensor, noise: torch.Tensor, cfg: TD3Config,
                    max_action: float) -> torch.Tensor:
    """Target policy smoothing: the target actor's action plus clipped Gaussian noise (``noise`` is standard
    normal), clipped to the action range."""
    noise = (noise * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip) * max_action
    return (target_action + noise).clamp(-max_action, max_action)


def td_target(rew: torch.Tensor, not_done: torch.Tensor, tq1: torch.Tensor, tq2: torch.Tensor,
              gamma: float) -> torch.Tensor:
    """Clipped double-Q target: ``r + gamma * not_done * min(Q1', Q2')``."""
    return rew + not_done * gamma * torch.min(tq1, tq2)


@contextlib.contextmanager
def frozen(net: nn.Module):
    """Within the block no parameter of ``net`` collects a gradient; on leaving, each gets back its own
    ``requires_grad`` (a frozen part, such as Plasticity Injection's old network, stays frozen). Gradients
    flowing through ``net`` to its inputs are unchanged, bit for bit."""
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield net
    finally:
        for p in params:
            p.requires_grad_(True)


def twin_critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The sum of both critics' mean squared TD errors."""
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


class TD3(SparseAgent):
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
        warmup_steps: int = 0,
    ):
        self.cfg, self.device, self.max_action, self.act_dim = cfg, torch.device(device), max_action, act_dim
        check_precision(cfg.precision, self.device)
        self._bf16 = cfg.precision == "bf16"
        sparsity = sparsity or SparsityConfig()
        torch.manual_seed(stream_seed(seed, NETWORKS))  # the initial weights
        ln = cfg.layernorm
        critic_hidden, critic_ln = ((256, 256, 256), "last") if cfg.arch == "ne" else ((256, 256), "none")
        self.actor = Actor(obs_dim, act_dim, max_action, (256, 256), ln).to(self.device)
        self.critic = TwinCritic(obs_dim, act_dim, critic_hidden, "all" if ln == "all" else critic_ln).to(self.device)
        self._init_sparsity(sparsity, seed)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        for p in (*self.actor_target.parameters(), *self.critic_target.parameters()):
            p.requires_grad_(False)
        self.actor_opt = Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = Adam(self.critic.parameters(), lr=cfg.lr)
        self.refresh_parameter_lists()
        self._init_ne(sparsity, topology, review, total_updates, cfg.policy_delay, warmup_steps)

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
        noise = self.exploration_noise(rng)
        return self.select_action(obs) + noise

    def exploration_noise(self, rng: np.random.Generator) -> np.ndarray:
        """The Gaussian noise :meth:`explore` adds, drawn from ``rng`` (apart, so that a caller that
        computes the actions of several agents at once draws the same numbers)."""
        return rng.normal(0.0, self.max_action * self.cfg.expl_noise, size=self.act_dim)

    # -- learning -----------------------------------------------------------------------------------
    def train(self, buffer: ReplayBuffer) -> dict[str, float]:
        """One TD3 update (critic every call, actor and targets every ``policy_delay`` calls); returns its
        metrics: ``critic_loss``, ``actor_loss`` (on actor updates) and the topology counts ``grown`` and
        ``pruned``."""
        cfg = self.cfg
        self.updates += 1
        obs, act, rew, next_obs, not_done = buffer.sample(cfg.batch_size, self.review)
        with torch.no_grad(), self._autocast():
            noise = torch.randn(act.shape, generator=self.gen, device=self.device)
            next_act = smoothed_action(self.actor_target(next_obs), noise, cfg, self.max_action)
            target = td_target(rew, not_done, *self.critic_target(next_obs, next_act), cfg.gamma)
        self._watch("critic", self.updates)
        with self._autocast():
            q1, q2 = self.critic(obs, act)
        critic_loss = twin_critic_loss(q1, q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        counts = [self._optimizer_step("critic", self.updates, (obs, act))]
        out = {"critic_loss": critic_loss.item()}

        if self.updates % cfg.policy_delay == 0:
            self.actor_updates += 1
            self._watch("actor", self.actor_updates)
            with frozen(self.critic):  # the critic's gradient here would be discarded: skip computing it
                with self._autocast():
                    q = self.critic.q1_value(obs, self.actor(obs))
                actor_loss = -q.mean()  # deterministic policy gradient
                self.actor_opt.zero_grad(set_to_none=True)
                actor_loss.backward()
            counts.append(self._optimizer_step("actor", self.actor_updates, (obs,)))
            with torch.no_grad():
                soft_update_(self._target, self._online, cfg.tau)
            out["actor_loss"] = actor_loss.item()
        for intervention in self.interventions:
            intervention.after_update(self, obs, act)
        return {**out, **summed_counts(*counts)}

    def _autocast(self):
        """bf16 autocast for ``agent.precision bf16``, a no-op context otherwise."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._bf16)

    # -- measuring ----------------------------------------------------------------------------------
    def plasticity(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, float]:
        """Dormant ratios, active ratio, FAU, density, weight magnitude and feature ranks on a batch."""
        actor, _ = self._network_metrics("actor", self.actor, (obs,))  # ranks: the last ReLU run
        critic, _ = self._network_metrics("critic", self.critic, (obs, act), last_relu(self.critic.q1, "q1"))
        return {**actor, **critic}

    # -- checkpointing ------------------------------------------------------------------------------
    def _own_state(self) -> dict:
        return {key: getattr(self, key).state_dict() for key in _STATE}

    def _load_own_state(self, state: dict) -> None:
        for key in _STATE:
            getattr(self, key).load_state_dict(state[key])

