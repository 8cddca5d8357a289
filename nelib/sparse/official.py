"""The official NE code's topology update (method ``ne-official``), as its README's TD3 command runs it.

Read from torressliu/neuroplastic-expansion at commit de2c660 (``NE/STL_Scheduler.py``; the README's
deviations table gives file and line for each number). Every ``interval`` critic updates:

- *Growth phase*, while the network's density is below ``growth.target_density`` (0.75): each layer prunes
  ``int(omega * n_grow)`` of its smallest-|w| connections and grows ``n_grow = int(rate * (0.8 N - n_0))``
  absent ones with the largest |dense gradient| (``N`` weights, ``n_0`` present at the start; 0.8 is the
  command's ``--initial_stl_sparsity``). On a 256x256 layer of ERK density 0.162: 334 grown, 133 pruned.
- *Rewiring phase*, from the first update that finds the network at its target, for the rest of the run:
  RigL. Each layer drops ``int(f * active)`` smallest-|w| connections and regrows as many by gradient
  (just-dropped positions included, so the density stays constant; a full layer is left as it is), with
  ``f = rewire_fraction * (1 + cos(pi t / T_end))``, ``t`` counted in updates from the switch and
  ``T_end = growth.end_step`` (the code's ``max_timesteps - start_timesteps`` = 6e6 - 25e3).

Grown weights start at zero. What nelib does differently, because the code is wrong there (see the README):
the Adam moments of every changed entry are zeroed and its step counter is left alone (the code resets the
counter of every sparse layer at each growth update and keeps stale moments); a layer with no room in
``0.8 N - n_0`` grows nothing (the code's negative count fills it by tie order); the optimizer step on a
topology update is not skipped. ``growth.criterion='random'``, ``growth.init_scale`` (LeCun: sqrt(3)) and
``pruning.criterion='dormant'`` are the options the code parses but never uses.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nelib.sparse.dormant import prune_dormant, prune_smallest
from nelib.sparse.growth import grow
from nelib.sparse.topology import TopologyScheduler

INITIAL_SPACE = 0.8
"""The growth space of a layer is ``INITIAL_SPACE * N - n_0`` (``--initial_stl_sparsity 0.8``)."""


class OfficialTopologyScheduler(TopologyScheduler):
    """Grows, then rewires, one masked network as the official code does; the interface (and the gradient
    capture) of :class:`nelib.sparse.topology.TopologyScheduler`."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer, cfg, total_updates: int,
                 generator: torch.Generator | None = None):
        super().__init__(net, optimizer, cfg, total_updates, generator)
        self.space = {name: INITIAL_SPACE * lay.mask.numel() - int(lay.mask.sum()) for name, lay in self.layers}
        self.rewiring_since: int | None = None  # the update at which the growth phase ended

    def drop_fraction(self, update: int) -> float:
        """The rewiring phase's fraction of active connections swapped at ``update``."""
        t = update - (self.rewiring_since or 0)
        return self.cfg.rewire_fraction * (1 + math.cos(math.pi * t / max(1, self.cfg.growth.end_step)))

    @torch.no_grad()
    def step(self, update: int, activations: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """One topology update; return ``grown``, ``pruned`` and ``density``."""
        g, p = self.cfg.growth, self.cfg.pruning
        if self.rewiring_since is None and self.density() >= g.target_density:
            self.rewiring_since = update
        scores = self._dormant_scores(activations)
        total_grown = total_pruned = 0
        for name, layer in self.layers:
            rewiring = self.rewiring_since is not None
            if rewiring:
                n_grow = int(self.drop_fraction(update) * int(layer.mask.sum()))
                n_prune = n_grow
            else:
                n_grow = int(g.rate * max(0.0, self.space[name]))
                n_prune = int(p.omega * n_grow) if self.cfg.prune else 0
            weight = layer.weight.clone()
            if name in scores and not rewiring:
                pruned = prune_dormant(layer, scores[name], p.tau, n_prune, self.generator)
            else:
                pruned = prune_smallest(layer, n_prune)
            if not rewiring:  # growth phase: exactly n_grow new and n_prune removed, disjoint (as NE)
                layer.mask |= pruned
            grown = grow(layer, n_grow, g.criterion, self._grads.get(name), self.generator, g.init_scale)
            layer.mask &= ~(pruned & ~grown)
            # Rewiring: a connection dropped and grown back at once is unchanged; it keeps its weight (as in
            # the code, which only initialises positions new to the mask) and its optimizer state.
            back = grown & pruned
            layer.weight[back] = weight[back]
            grown, pruned = grown & ~back, pruned & ~back
            self._forget_moments(layer.weight, grown | pruned)
            total_grown += int(grown.sum())
            total_pruned += int(pruned.sum())
        self._grads = {}
        return {"grown": total_grown, "pruned": total_pruned, "density": self.density()}

    def state_dict(self) -> dict:
        return {"initial_free": dict(self.initial_free), "space": dict(self.space),
                "rewiring_since": self.rewiring_since}

    def load_state_dict(self, state: dict) -> None:
        self.initial_free, self.space = dict(state["initial_free"]), dict(state["space"])
        self.rewiring_since = state["rewiring_since"]
