"""DrQ (Kostrikov, Yarats & Fergus 2020; the first DrQ, SAC-based) on pixels, with optional sparse networks
and Neuroplastic Expansion.

Networks follow denisyarats/drq (:mod:`nelib.agents.drq_networks`): a conv encoder, a twin Q-critic and a
tanh-Gaussian actor (MLPs of two hidden layers of 1024). The critic owns the encoder and trains it; the actor
reads the same conv layers (tied weights) without training them, through its own linear head. Every learned
layer is a nelib masked layer, so NE's :class:`nelib.sparse.topology.TopologyScheduler` grows the critic
*including its encoder* (conv channels are units for dormant pruning) and the actor's head and MLP, and
ReDo/Reset act on them too.

DrQ's regulariser: each sampled observation gets ``K = M = augmentations`` independent random shifts
(replicate-pad 4, crop back to 84; :func:`nelib.agents.augmentation.random_shift`); the critic's target is the
mean over the K shifted next observations and its loss the sum over the M shifted observations. SAC with a
learned temperature (initial 0.1, target entropy ``-|A|``), actor and target update every 2 updates, Polyak
0.01.

Speed (the update is all convolutions): the shifts are integer crops of uint8 frames (no ``grid_sample``),
the actor update reuses one conv pass for the actor and the critic, convolutions run channels-last with
in-place ReLUs; bf16 autocast is optional (it pays only on CPUs with bf16 matrix units, e.g. AMX, or on
GPUs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nelib.agents.augmentation import random_shift
from nelib.agents.base import SparseAgent, SparsityConfig, last_relu, summed_counts
from nelib.agents.drq_networks import Actor, Critic, Encoder, drq_init, squashed_sample
from nelib.metrics import plasticity_report
from nelib.seeding import NETWORKS, stream_seed
from nelib.sparse.masks import density_report
from nelib.sparse.review import ReviewConfig
from nelib.sparse.topology import TopologyConfig
from nelib.torch_ops import Adam, soft_update_
from nelib.validation import check_between, check_non_negative, check_positive


@dataclasses.dataclass
class DrQConfig:
    """DrQ hyper-parameters and pixel settings (defaults: denisyarats/drq's config, as the NE paper lists)."""

    lr: float = 1e-3
    """Adam learning rate of actor, critic (with encoder) and temperature."""
    batch_size: int = 128
    """Transitions per update (each seen ``augmentations`` times)."""
    hidden_dim: int = 1024
    """Width of the actor's and each Q-network's two hidden layers."""
    feature_dim: int = 50
    """Output size of the encoder's linear head."""
    num_filters: int = 32
    """Channels of each of the 4 conv layers."""
    gamma: float = 0.99
    """Discount factor."""
    critic_tau: float = 0.01
    """Polyak coefficient of the target critic (encoder included)."""
    actor_update_every: int = 2
    """Critic updates per actor and temperature update."""
    target_update_every: int = 2
    """Critic updates per target-critic update."""
    init_temperature: float = 0.1
    """Initial SAC temperature alpha."""
    log_std_min: float = -10.0
    """Lower bound of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper bound of the actor's log standard deviation."""
    image_pad: int = 4
    """Random shift: replicate-pad by this many pixels, then crop back (shifts in [-pad, pad])."""
    augmentations: int = 2
    """K = M: shifted copies of each observation per update (2: DrQ; 1: a single shift, as in RAD)."""
    action_repeat: int = 0
    """Physics steps per agent step (0: DrQ's per-task value: 8 cartpole, 2 finger and walker, else 4)."""
    frame_stack: int = 3
    """Stacked frames per observation."""
    image_size: int = 84
    """Height and width of the rendered frames."""
    sparse_encoder: bool = True
    """With sparsity/NE, the encoder (the critic's conv layers and head, the actor's head) is sparse and grows
    too; False keeps it dense and applies sparsity to the actor's and critic's MLPs only."""
    reset_encoder: bool = False
    """The Reset baseline also re-initialises the encoder (DrQ in the Reset paper keeps it)."""
    channels_last: bool = True
    """Run convolutions in channels-last memory format (faster on CPUs with oneDNN; same results up to
    floating-point rounding)."""
    bf16: bool = False
    """bf16 autocast for the forward passes (a speed option for AMX CPUs and GPUs; slower on AVX2 CPUs)."""

    def __post_init__(self):
        check_positive("drq", self, "batch_size", "augmentations", "lr", "actor_update_every", "target_update_every",
                       "frame_stack")
        check_non_negative("drq", self, "image_pad", "action_repeat")
        check_between("drq", self, ("gamma", "critic_tau"), 0, 1, open_low=True)
        if self.log_std_min >= self.log_std_max:
            raise ValueError("drq.log_std_min must be below drq.log_std_max")


class DrQ(SparseAgent):
    """The DrQ agent, with the runner API of :class:`nelib.agents.td3.TD3` (``select_action``, ``explore``,
    ``train``, ``plasticity``, ``state_dict``/``load_state_dict``, ``review``,
    ``interventions``); sparsity, NE and their checkpoint state come from :class:`SparseAgent`."""

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        act_dim: int,
        cfg: DrQConfig,
        sparsity: SparsityConfig | None = None,
        topology: TopologyConfig | None = None,
        review: ReviewConfig | None = None,
        total_updates: int = 1,
        device: str | torch.device = "cpu",
        seed: int = 0,
        warmup_steps: int = 0,
    ):
        self.cfg, self.device = cfg, torch.device(device)
        sparsity = sparsity or SparsityConfig()
        torch.manual_seed(stream_seed(seed, NETWORKS))  # the initial weights
        encoder = Encoder(obs_shape[0], obs_shape[1], cfg.num_filters, cfg.feature_dim)
        self.critic = Critic(encoder, act_dim, cfg.hidden_dim, cfg.feature_dim)
        self.actor = Actor(encoder.convs, encoder.conv_dim, act_dim, cfg.hidden_dim, cfg.feature_dim,
                           (cfg.log_std_min, cfg.log_std_max))
        drq_init(self.critic)
        drq_init(self.actor)
        # Only the conv inputs are channels-last (conv outputs follow); weights and masks keep the default
        # layout, which the mask operations (flat views) rely on.
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.critic.to(self.device)
        self.actor.to(self.device)
        self._init_sparsity(sparsity, seed)
        self.critic_target = Critic(Encoder(obs_shape[0], obs_shape[1], cfg.num_filters, cfg.feature_dim),
                                    act_dim, cfg.hidden_dim, cfg.feature_dim)
        self.critic_target.to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        self.actor_target = None  # SAC has none (Reset and other interventions look for it)
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = Adam(self.critic.parameters(), lr=cfg.lr)
        self.alpha_opt = Adam([self.log_alpha], lr=cfg.lr)
        self.refresh_parameter_lists()
        self._init_ne(sparsity, topology, review, total_updates, cfg.actor_update_every, warmup_steps)
        # Reset leaves modules with these name prefixes alone: the encoder (the critic's conv layers and head,
        # the actor's head on them), unless drq.reset_encoder.
        self.reset_skip: tuple[str, ...] = () if cfg.reset_encoder else ("encoder",)

    def _sparse_part(self, key: str) -> nn.Module:
        """What sparsity covers in the actor or critic: all of it, or (``sparse_encoder`` off) its MLPs only,
        so that the ERK budget is spread over them and the encoder stays dense (and, with no free
        connections, is never grown)."""
        if self.cfg.sparse_encoder:
            return getattr(self, key)
        return self.actor.trunk if key == "actor" else nn.ModuleList([self.critic.q1, self.critic.q2])

    def refresh_parameter_lists(self) -> None:
        """Re-pair online and target critic parameters for Polyak updates."""
        self._online = list(self.critic.parameters())
        self._target = list(self.critic_target.parameters())

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def _autocast(self):
        if not self.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 images ``[B, C, H, W]`` -> float in [0, 1], in the conv memory format."""
        return obs.to(self.device).contiguous(memory_format=self.memory_format).float().div_(255.0)

    # -- acting -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _policy(self, obs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prepare(torch.as_tensor(obs).unsqueeze(0))
        with self._autocast():
            mu, std = self.actor(x)
        return mu.float()[0], std.float()[0]

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action (the tanh of the policy mean) for one stacked observation."""
        return torch.tanh(self._policy(obs)[0]).cpu().numpy()

    def explore(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A policy sample for data collection; its noise comes from the runner's ``rng``."""
        mu, std = self._policy(obs)
        eps = torch.as_tensor(rng.standard_normal(mu.shape[0]), dtype=torch.float32, device=mu.device)
        return torch.tanh(mu + std * eps).cpu().numpy()

    # -- learning -----------------------------------------------------------------------------------
    def train(self, buffer) -> dict[str, float]:
        """One DrQ update: critic every call, actor and temperature and target every few calls; returns its
        metrics: ``critic_loss``, on actor updates ``actor_loss``, ``alpha`` and ``entropy``, and the topology
        counts ``grown`` and ``pruned``."""
        cfg = self.cfg
        self.updates += 1
        k, b = cfg.augmentations, cfg.batch_size
        obs_u8, act, rew, next_u8, not_done = buffer.sample(b, self.review)
        # K shifted copies of each observation; one conv pass per copy (batches of `batch_size` images are
        # faster per image on a CPU than one pass over all copies, whose activations outgrow the caches).
        obs = self.prepare(random_shift(obs_u8, cfg.image_pad, self.gen, k)).chunk(k)
        next_obs = self.prepare(random_shift(next_u8, cfg.image_pad, self.gen, k)).chunk(k)
        with torch.no_grad(), self._autocast():
            target = 0.0
            for nxt in next_obs:  # the actor reads the online conv layers, the target critic its own
                mu, std = self.actor(conv_features=self.critic.encoder.conv_features(nxt))
                eps = torch.randn(mu.shape, generator=self.gen, device=self.device)
                next_act, log_prob = squashed_sample(mu.float(), std.float(), eps)
                tq1, tq2 = self.critic_target(nxt, next_act)
                target_v = torch.min(tq1, tq2).float() - self.alpha * log_prob
                target = target + (rew + not_done * cfg.gamma * target_v) / k  # the mean over the K shifts
        critic_loss = 0.0
        self._watch("critic", self.updates)
        for o in obs:  # DrQ sums the M = K losses, each a mean over the batch
            with self._autocast():
                q1, q2 = self.critic(o, act)
            critic_loss = critic_loss + F.mse_loss(q1.float(), target) + F.mse_loss(q2.float(), target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        counts = [self._optimizer_step("critic", self.updates, (obs[0], act))]
        out = {"critic_loss": critic_loss.item()}

        if self.updates % cfg.actor_update_every == 0:
            self.actor_updates += 1
            actor_out, actor_counts = self._update_actor_and_alpha(obs[0])
            out.update(actor_out)
            counts.append(actor_counts)
        if self.updates % cfg.target_update_every == 0:
            with torch.no_grad():
                soft_update_(self._target, self._online, cfg.critic_tau)
        for intervention in self.interventions:
            intervention.after_update(self, obs[0], act)
        return {**out, **summed_counts(*counts)}

    def _update_actor_and_alpha(self, obs: torch.Tensor) -> tuple[dict[str, float], dict[str, int]]:
        """The actor's and the temperature's update: their metrics, and the actor's topology counts."""
        with torch.no_grad(), self._autocast():
            # One pass of the (just updated) conv layers serves actor and critic: DrQ detaches both.
            features = self.critic.encoder.conv_features(obs)
        critic_params = list(self.critic.parameters())
        for p in critic_params:  # gradients flow through the critic to the action, not into it
            p.requires_grad_(False)
        try:
            self._watch("actor", self.actor_updates)
            with self._autocast():
                mu, std = self.actor(conv_features=features)
                eps = torch.randn(mu.shape, generator=self.gen, device=self.device)
                act, log_prob = squashed_sample(mu.float(), std.float(), eps)
                q1, q2 = self.critic(None, act, conv_features=features)
            actor_loss = (self.alpha.detach() * log_prob - torch.min(q1, q2).float()).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
        finally:
            for p in critic_params:
                p.requires_grad_(True)
        counts = self._optimizer_step("actor", self.actor_updates, (obs,))
        alpha_loss = (self.alpha * (-log_prob - self.target_entropy).detach()).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {"actor_loss": actor_loss.item(), "alpha": self.log_alpha.detach().exp().item(),
                "entropy": -log_prob.detach().mean().item()}, counts

    # -- measuring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def plasticity(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, float]:
        """TD3's metrics (dormant ratios, active ratio, FAU, density, weight magnitude, ranks of the last
        hidden layer) for actor and critic, plus ``encoder_*`` ones for the conv layers alone (a channel is a
        unit). The critic's figures pool its conv channels and MLP units. ``obs`` are uint8 images."""
        x = self.prepare(obs)
        out, _ = self._network_metrics("actor", self.actor, (x,), last_relu(self.actor.trunk, "trunk"))
        critic, acts = self._network_metrics("critic", self.critic, (x, act), last_relu(self.critic.q1, "q1"))
        out.update(critic)
        conv = {n: a for n, a in acts.items() if n.startswith("encoder.")}
        out.update({f"encoder_{k}": v for k, v in plasticity_report(conv).items() if "/" not in k})
        out["encoder_density"] = density_report(self.critic.encoder)["density"]
        return out

    # -- checkpointing ------------------------------------------------------------------------------
    def _own_state(self) -> dict:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
        }

    def _load_own_state(self, state: dict) -> None:
        for key in ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "alpha_opt"):
            getattr(self, key).load_state_dict(state[key])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
