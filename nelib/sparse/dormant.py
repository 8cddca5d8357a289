"""Dormant-neuron pruning: remove the incoming connections of units whose ReDo score is <= tau.

NE's second mechanism. At a topology update, each hidden layer may prune at most
``omega * (connections it just grew)`` connections, so the network always grows net; the freed
positions go back to the growth candidate pool. When dormant units hold more connections than the
cap, units are taken in random order (whole units first, then part of the last one) so that exactly
the cap is pruned.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nelib.metrics import dormant_units
from nelib.sparse.masks import MASKED_TYPES
from nelib.validation import check_between, check_choice, check_non_negative


@dataclasses.dataclass
class PruneConfig:
    """How NE prunes dormant units."""

    tau: float = 0.0
    """ReDo threshold: a unit is dormant if its score is <= tau (0: exactly silent, as in NE)."""
    omega: float = 0.4
    """Cap: a layer prunes at most omega x (connections grown at the same update)."""
    criterion: str = "dormant"
    """``dormant``: the connections of dormant units (NE); ``magnitude``: the smallest-|w| connections, what
    the official code's pruning does (its activation path never receives activations)."""

    def __post_init__(self):
        check_choice("pruning", self, "criterion", ("dormant", "magnitude"))
        check_non_negative("pruning", self, "tau")
        check_between("pruning", self, ("omega",), 0, 1)


def unit_layers(net: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """Map each ``nn.ReLU`` of ``net`` to the masked layer whose outputs it activates.

    The pairing is by module order: a ReLU belongs to the last masked layer registered before it
    (a LayerNorm in between is fine: it keeps the unit index). ReLUs with no masked layer before
    them are skipped.
    """
    pairs: dict[str, tuple[str, nn.Module]] = {}
    last: tuple[str, nn.Module] | None = None
    for name, module in net.named_modules():
        if isinstance(module, MASKED_TYPES):
            last = (name, module)
        elif isinstance(module, nn.ReLU) and last is not None:
            pairs[name] = last
            last = None  # one ReLU per layer; a second ReLU would not be the layer's output
    return pairs


@torch.no_grad()
def prune_dormant(
    layer: nn.Module,
    scores: torch.Tensor,
    tau: float,
    max_connections: int,
    generator: torch.Generator | None = None,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Remove up to ``max_connections`` incoming connections of ``layer``'s dormant units.

    ``scores`` holds one ReDo score per output unit (row of a linear weight, output channel of a conv).
    ``candidates`` restricts which present connections may go (e.g. excluding those just grown). Returns
    the boolean mask of pruned connections; their weights are zeroed (the caller resets optimizer state).
    """
    pruned = torch.zeros_like(layer.mask)
    if max_connections <= 0:
        return pruned
    dormant = dormant_units(scores, tau).to(layer.mask.device)
    if not bool(dormant.any()):
        return pruned
    n_units = layer.mask.shape[0]
    eligible = layer.mask if candidates is None else layer.mask & candidates
    eligible = eligible & dormant.view(-1, *([1] * (layer.mask.dim() - 1)))
    n_eligible = int(eligible.sum())
    if n_eligible <= max_connections:
        pruned = eligible
    else:
        # Sort key: random rank of the unit (whole units first), then a random order inside the unit.
        unit_rank = torch.randperm(n_units, generator=generator, device="cpu").to(layer.mask.device)
        shape = (-1, *([1] * (layer.mask.dim() - 1)))
        within = torch.rand(layer.mask.shape, generator=generator, device="cpu").to(layer.mask.device)
        key = (unit_rank.view(shape).float() + within).masked_fill(~eligible, float("inf"))
        idx = torch.topk(key.flatten(), max_connections, largest=False, sorted=False).indices
        pruned.view(-1)[idx] = True
    layer.mask &= ~pruned
    layer.weight.mul_(layer.mask)
    return pruned


@torch.no_grad()
def prune_smallest(layer: nn.Module, k: int, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Remove the ``k`` present connections of ``layer`` (among ``candidates``) with the smallest |w|.

    Magnitude pruning: the official NE code's pruning in practice, and the drop step of RigL rewiring.
    Returns the boolean mask of pruned connections; their weights are zeroed.
    """
    eligible = layer.mask if candidates is None else layer.mask & candidates
    k = min(k, int(eligible.sum()))
    pruned = torch.zeros_like(layer.mask)
    if k <= 0:
        return pruned
    score = layer.weight.detach().abs().float().masked_fill(~eligible, float("inf"))
    idx = torch.topk(score.flatten(), k, largest=False, sorted=False).indices
    pruned.view(-1)[idx] = True
    layer.mask &= ~pruned
    layer.weight.mul_(layer.mask)
    return pruned
