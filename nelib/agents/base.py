"""What TD3 and DrQ share around their actor and critic: initial sparsity, NE's topology schedulers and
experience review, the masked optimizer step, per-network plasticity metrics and the checkpoint state of
all that.

:class:`SparseAgent` is their base class. An agent builds its networks and calls, in this order,
:meth:`SparseAgent._init_sparsity` (generators and ERK masks, before target networks copy the masks), then
after its optimizers :meth:`SparseAgent._init_ne`; it steps its optimizers through
:meth:`SparseAgent._optimizer_step` and puts its own networks and optimizers into checkpoints through
``_own_state`` / ``_load_own_state``. It must have ``actor``, ``critic``, ``actor_target`` (None when it
has none, as SAC), ``critic_target``, ``actor_opt``, ``critic_opt`` and ``device``.

Its ``train(buffer)`` is one update and returns that update's metrics: its losses and the
:data:`TOPOLOGY_COUNTS` its ``_optimizer_step`` calls returned, summed (:func:`summed_counts`); the runner
adds the counts up per evaluation window, the agent keeps no such tally.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nelib.metrics import capture_activations, effective_rank, plasticity_report, stable_rank, weight_magnitude
from nelib.seeding import MASKS, stream_seed
from nelib.sparse.masks import copy_masks, density_report, mask_gradients, sparsify
from nelib.sparse.review import ExperienceReview, ReviewConfig
from nelib.sparse.topology import TopologyConfig, TopologyScheduler, make_scheduler

NETS = ("actor", "critic")
TOPOLOGY_COUNTS = ("grown", "pruned")
"""Metrics every update returns besides its losses: connections its topology updates grew and pruned (0 on the
updates without one)."""


def summed_counts(*counts: dict[str, int]) -> dict[str, int]:
    """The :data:`TOPOLOGY_COUNTS` of one update: the sum of its networks' (what ``_optimizer_step`` returns)."""
    return {k: sum(c[k] for c in counts) for k in TOPOLOGY_COUNTS}


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
    keep: str = "random"
    """Which initial connections each layer keeps: ``random`` (NE) or ``magnitude`` (its largest-|w| initial
    weights, as the official code)."""

    def __post_init__(self):
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"sparsity.density must be in (0, 1], got {self.density}")
        if self.keep not in ("random", "magnitude"):
            raise ValueError(f"sparsity.keep must be 'random' or 'magnitude', got {self.keep!r}")


def last_relu(net: nn.Module, prefix: str) -> str:
    """Name (under ``prefix``) of the last ``nn.ReLU`` of ``net``, as :func:`capture_activations` keys it."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.ReLU)]
    return f"{prefix}.{names[-1]}"


class SparseAgent:
    """Base of the actor-critic agents: sparsity, NE and the checkpoint state they share (see the module)."""

    actor: nn.Module
    critic: nn.Module
    actor_target: nn.Module | None
    critic_target: nn.Module
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    device: torch.device

    # -- set-up -------------------------------------------------------------------------------------
    def _init_sparsity(self, sparsity: SparsityConfig, seed: int) -> None:
        """The agent's generators (``gen``: its sampling noise, on its device; ``mask_gen``: masks and
        topology updates) and ERK masks on the actor and/or critic (the part :meth:`_sparse_part` names)."""
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.mask_gen = torch.Generator().manual_seed(stream_seed(seed, MASKS))
        self.sparse_nets: list[nn.Module] = []
        if sparsity.density < 1.0:
            for key in NETS:
                if getattr(sparsity, key):
                    sparsify(self._sparse_part(key), sparsity.density, self.mask_gen, sparsity.dense_first_last,
                             sparsity.keep)
                    self.sparse_nets.append(getattr(self, key))

    def _sparse_part(self, key: str) -> nn.Module:
        """What sparsity covers in the actor or critic (here: all of it)."""
        return getattr(self, key)

    def _init_ne(self, sparsity: SparsityConfig, topology: TopologyConfig | None, review: ReviewConfig | None,
                 total_updates: int, actor_update_every: int, warmup_steps: int = 0) -> None:
        """NE's topology schedulers (one per sparse network, over its own number of updates) and experience
        review (``warmup_steps``: the random warm-up's transitions, which review may leave out), the update
        counters, and the (empty) list of interventions of the baselines."""
        self.topology: dict[str, TopologyScheduler] = {}
        if topology is not None:
            if sparsity.actor and topology.grow_actor:
                self.topology["actor"] = make_scheduler(
                    self.actor, self.actor_opt, topology, total_updates // actor_update_every, self.mask_gen)
            if sparsity.critic:
                self.topology["critic"] = make_scheduler(
                    self.critic, self.critic_opt, topology, total_updates, self.mask_gen)
        on = review is not None and review.trigger != "never"
        self.review = ExperienceReview(review, warmup_steps) if on else None
        self.updates = self.actor_updates = 0
        # Baselines that act on the networks between updates (Reset, ReDo, Plasticity Injection): objects
        # with ``after_update(agent, obs, act)``, ``state_dict()`` and ``load_state_dict(state, agent)``, and
        # optionally ``take_metrics()`` (columns of the evaluation row).
        self.interventions: list = []

    # -- learning -----------------------------------------------------------------------------------
    def _watch(self, key: str, update: int) -> None:
        """Call before the forward pass of the ``key`` network's loss at ``update``: lets its topology
        scheduler hook the pass when it has a topology update due there (straight-through growth scores)."""
        sched = self.topology.get(key)
        if sched is not None:
            sched.watch(update)

    def topology_due(self, update: int, actor_update_every: int) -> bool:
        """Whether update ``update`` (1-based, counting critic updates) ends with a topology update of
        either network."""
        critic, actor = self.topology.get("critic"), self.topology.get("actor")
        return ((critic is not None and critic.due(update))
                or (actor is not None and update % actor_update_every == 0 and actor.due(self.actor_updates + 1)))

    def _optimizer_step(self, key: str, update: int, batch: tuple[torch.Tensor, ...]) -> dict[str, int]:
        """Step the ``key`` network's optimizer (after ``backward``) with masked gradients, and run NE's
        topology update when one is due at ``update``: ``batch`` gives the activations for dormant pruning,
        the target network (if any) gets the new masks, and the critic's dormant ratio and FAU feed the
        experience review. Returns the connections grown and pruned (:data:`TOPOLOGY_COUNTS`)."""
        net, opt = getattr(self, key), getattr(self, f"{key}_opt")
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
            target = getattr(self, f"{key}_target")
            if target is not None:
                copy_masks(net, target)
            if key == "critic" and self.review is not None:
                report = plasticity_report(acts, taus=(self.review.cfg.tau,))
                self.review.observe(report[f"dormant_{self.review.cfg.tau:g}"], report["fau"])
            return {k: stats[k] for k in TOPOLOGY_COUNTS}
        return dict.fromkeys(TOPOLOGY_COUNTS, 0)

    # -- measuring ----------------------------------------------------------------------------------
    @staticmethod
    @torch.no_grad()
    def _network_metrics(key: str, net: nn.Module, inputs: tuple[torch.Tensor, ...],
                         last: str | None = None) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """``<key>_*`` metrics of one network on a batch (dormant ratios, active ratio, FAU, density, weight
        magnitude, stable and effective rank of the ReLU layer ``last``, default the last one run), and the
        activations they were measured on."""
        acts = capture_activations(net, *inputs)
        out = {f"{key}_{k}": v for k, v in plasticity_report(acts).items() if "/" not in k}
        out[f"{key}_density"] = density_report(net)["density"]
        out[f"{key}_weight_magnitude"] = weight_magnitude(net)
        features = acts[last] if last is not None else list(acts.values())[-1]
        out[f"{key}_stable_rank"] = stable_rank(features)
        out[f"{key}_effective_rank"] = effective_rank(features)
        return out, acts

    def take_intervention_metrics(self) -> dict[str, float]:
        """What the interventions measured since the last call (those with a ``take_metrics()``, e.g. ReDo's
        dormant share before each recycle); starts their next window."""
        out: dict[str, float] = {}
        for iv in self.interventions:
            if hasattr(iv, "take_metrics"):
                out.update(iv.take_metrics())
        return out

    # -- checkpointing ------------------------------------------------------------------------------
    def _own_state(self) -> dict:
        """The agent's networks, optimizers and other learned state (the start of :meth:`state_dict`)."""
        raise NotImplementedError

    def _load_own_state(self, state: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {
            **self._own_state(),
            "gen": self.gen.get_state(), "mask_gen": self.mask_gen.get_state(),
            "topology": {k: s.state_dict() for k, s in self.topology.items()},
            "review": self.review.state_dict() if self.review else None,
            "updates": self.updates, "actor_updates": self.actor_updates,
            "interventions": [iv.state_dict() for iv in self.interventions],
        }

    def load_state_dict(self, state: dict) -> None:
        # A checkpoint written before the runner counted topology changes also holds the agent's count since
        # the last evaluation (``topology_log``): the runner takes it over (nelib.runner.train.Run), not the agent.
        # Interventions first: one may change the networks' structure (Plasticity Injection adds a head).
        for iv, iv_state in zip(self.interventions, state["interventions"], strict=True):
            iv.load_state_dict(iv_state, self)
        self._load_own_state(state)
        # .cpu(): generator states are CPU tensors, but torch.load(map_location="cuda") moves them
        self.gen.set_state(state["gen"].cpu())
        self.mask_gen.set_state(state["mask_gen"].cpu())
        for k, s in self.topology.items():
            s.load_state_dict(state["topology"][k])
        if self.review is not None:
            self.review.load_state_dict(state["review"])
        self.updates, self.actor_updates = state["updates"], state["actor_updates"]
