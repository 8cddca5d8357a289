"""The NE topology scheduler: growth + dormant pruning every ``interval`` updates, for any masked network.

Usage inside a training step (the gradient must be the *dense* one, so capture it before masking)::

    sched.watch(update)                           # before the forward pass (straight-through scores)
    loss = ...; loss.backward()
    if sched.due(update):
        sched.capture_gradients()
    mask_gradients(net); optimizer.step(); apply_masks(net)
    if sched.due(update):
        acts = capture_activations(net, *batch)   # for ReDo scores
        stats = sched.step(update, acts)          # grows, prunes, resets Adam state of changed entries

It works on any ``nn.Module`` made of :mod:`nelib.sparse.masks` masked layers and ReLUs; nothing here knows
about TD3 or DrQ.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nelib.metrics import redo_scores
from nelib.sparse.dormant import PruneConfig, prune_dormant, prune_smallest, unit_layers
from nelib.sparse.growth import GrowthConfig, StraightThrough, end_of_growth, grow, growth_count, revived_units
from nelib.sparse.masks import masked_layers, reset_adam_state
from nelib.validation import check_between, check_choice, check_positive

ALGORITHMS = ("ne", "official")


@dataclasses.dataclass
class TopologyConfig:
    """NE's topology update: when it runs, how it grows, whether and how it prunes."""

    interval: int = 100
    """Gradient updates between topology updates (delta; official code: 100)."""
    growth: GrowthConfig = dataclasses.field(default_factory=GrowthConfig)
    """How connections are grown."""
    prune: bool = True
    """Prune the incoming connections of dormant units (off for the ``ne-no-prune`` ablation)."""
    pruning: PruneConfig = dataclasses.field(default_factory=PruneConfig)
    """How dormant units are pruned."""
    grow_actor: bool = True
    """Change the actor's topology too (the official README's command keeps the actor static)."""
    algorithm: str = "ne"
    """``ne``: :class:`TopologyScheduler` (the paper); ``official``: the official code's grow-then-rewire
    (:class:`nelib.sparse.official.OfficialTopologyScheduler`)."""
    rewire_fraction: float = 0.1
    """``official``: peak fraction of active connections swapped per update once the target is reached."""

    def __post_init__(self):
        check_positive("topology", self, "interval")
        check_choice("topology", self, "algorithm", ALGORITHMS)
        check_between("topology", self, ("rewire_fraction",), 0, 0.5)


class TopologyScheduler:
    """Grows and prunes one masked network in place, keeping its optimizer state consistent."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        cfg: TopologyConfig,
        total_updates: int,
        generator: torch.Generator | None = None,
    ):
        self.net, self.optimizer, self.cfg = net, optimizer, cfg
        self.total_updates = total_updates
        self.generator = generator
        self.layers = masked_layers(net)
        self.initial_free = {name: int((~layer.mask).sum()) for name, layer in self.layers}
        self.relu_to_layer = {relu: lname for relu, (lname, _) in unit_layers(net).items()}
        self._grads: dict[str, torch.Tensor] = {}
        self._through = StraightThrough(net)

    def due(self, update: int) -> bool:
        """Whether update number ``update`` (1-based) ends with a topology update."""
        return update > 0 and update % self.cfg.interval == 0

    def watch(self, update: int) -> None:
        """Call before the forward pass of update ``update``: when a topology update is due there and
        empty units are scored straight-through, hook the network so that the coming backward pass
        records their scores (:meth:`capture_gradients` unhooks)."""
        g = self.cfg.growth
        if self.due(update) and g.criterion == "gradient" and g.empty_score == "straight-through":
            self._through.arm()

    @torch.no_grad()
    def capture_gradients(self) -> None:
        """Keep the dense weight gradients of this step (call after ``backward``, before masking), with
        the straight-through scores of empty units in their rows when :meth:`watch` armed them."""
        through = self._through.collect()
        if self.cfg.growth.criterion == "gradient":
            self._grads = {n: lay.weight.grad.detach().clone() for n, lay in self.layers
                           if lay.weight.grad is not None}
            for name, (empty, score) in through.items():
                if name in self._grads:
                    self._grads[name][empty] = score.to(self._grads[name].dtype)

    @torch.no_grad()
    def step(self, update: int, activations: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """Grow, then prune dormant units; return ``grown``, ``pruned`` and ``density``.

        Growth candidates are the connections absent before this update; pruning candidates are those
        present before it, so the grown and pruned sets are disjoint. ``activations`` (ReLU outputs keyed
        by module name, from :func:`nelib.metrics.capture_activations`) are needed when pruning is on.
        """
        g = self.cfg.growth
        end = end_of_growth(g, self.total_updates)
        scores = self._dormant_scores(activations)
        total_grown = total_pruned = 0
        for name, layer in self.layers:
            before = layer.mask.clone()
            k = growth_count(g, layer.mask, self.initial_free[name], update, end)
            grown = grow(layer, k, g.criterion, self._grads.get(name), self.generator, g.init_scale,
                         g.revive_init, g.revive_first)
            n_grown = int(grown.sum())
            pruned = None
            if name in scores:
                cap = int(self.cfg.pruning.omega * n_grown)
                pruned = prune_dormant(layer, scores[name], self.cfg.pruning.tau, cap, self.generator,
                                       candidates=before)
            elif self.cfg.prune and self.cfg.pruning.criterion == "magnitude":
                pruned = prune_smallest(layer, int(self.cfg.pruning.omega * n_grown), candidates=before)
            if pruned is not None:
                total_pruned += int(pruned.sum())
            self._forget_moments(layer.weight, grown if pruned is None else grown | pruned)
            if g.revive_init == "lecun" and layer.bias is not None and n_grown:
                self._forget_moments(layer.bias, revived_units(before, grown))
            total_grown += n_grown
        self._grads = {}
        return {"grown": total_grown, "pruned": total_pruned, "density": self.density()}

    def density(self) -> float:
        """Share of the network's maskable weights that are present."""
        return sum(int(lay.mask.sum()) for _, lay in self.layers) / sum(lay.mask.numel() for _, lay in self.layers)

    def _dormant_scores(self, activations: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """ReDo scores of the units of each masked layer, by layer name, when pruning is by dormancy (else
        none); ``activations`` as :meth:`step` takes them."""
        if not (self.cfg.prune and self.cfg.pruning.criterion == "dormant"):
            return {}
        if activations is None:
            raise ValueError("dormant pruning needs the activations of a batch")
        return {self.relu_to_layer[r]: redo_scores(a) for r, a in activations.items() if r in self.relu_to_layer}

    def _forget_moments(self, param: torch.Tensor, changed: torch.Tensor) -> None:
        """Zero the Adam moments of the entries of ``param`` that a topology update changed (if any did), so
        that a grown entry starts clean and a pruned one cannot come back through momentum."""
        if changed.any():
            reset_adam_state(self.optimizer, param, changed)

    def state_dict(self) -> dict:
        return {"initial_free": dict(self.initial_free)}

    def load_state_dict(self, state: dict) -> None:
        self.initial_free = dict(state["initial_free"])


def make_scheduler(net: nn.Module, optimizer: torch.optim.Optimizer, cfg: TopologyConfig, total_updates: int,
                   generator: torch.Generator | None = None):
    """The topology scheduler ``cfg.algorithm`` names, for one network."""
    if cfg.algorithm == "official":
        from nelib.sparse.official import OfficialTopologyScheduler

        return OfficialTopologyScheduler(net, optimizer, cfg, total_updates, generator)
    return TopologyScheduler(net, optimizer, cfg, total_updates, generator)
