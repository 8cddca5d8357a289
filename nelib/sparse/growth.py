"""Elastic topology growth: add the absent connections with the largest |dense gradient|.

NE's first mechanism (RigL-style growth without the drop). At each topology update a layer grows a
number of connections set by a schedule:

- ``cosine-target`` (the paper; NE methods): the layer's density follows the curve whose slope is the
  paper's cosine ``(1 + cos(pi t / T_end))``, scaled so that it goes from the initial density ``d_0`` to
  ``target_density`` exactly at ``T_end``. Integrating the cosine gives the curve in closed form,

      D(t) = d_0 + (target - d_0) * F(t / T_end),   F(x) = x + sin(pi x) / pi,

  and a topology update grows ``round(D(t) N) - active`` connections: the curve's increment since the last
  update plus whatever pruning freed there, so the topology keeps changing until ``T_end`` and the network
  is full size at ``T_end`` and not before. After ``T_end`` growth only refills what pruning freed.
- ``cosine`` (nelib's first reading, kept as ``ne-fast``): ``rate / 2 * (1 + cos(pi t / T_end))`` of the
  layer's initial free capacity per update. Its integral is about ``rate / 2`` times the number of topology
  updates, many times the free capacity, so a layer is full after a few percent of the run and then freezes.
- ``constant``: ``rate`` of the initial free capacity per update (the official code's shape).

Growth never takes a layer past ``target_density``.

Grown weights start at zero (the paper and the official TD3 path), except in a unit with no live incoming
connection (all of them pruned): zero weights there would keep its output at its bias, so its gradient,
and with it every grown weight, would stay zero for good. ``revive_init='lecun'`` draws those weights
LeCun-uniform and zeroes the unit's bias, so a pruned unit can come back.

But gradient growth must also *choose* such a unit's connections, and their gradient is zero: the unit's
ReLU sits at its bias (<= 0) for every input, so no gradient passes it. ``empty_score='straight-through'``
(NE) scores them by the gradient they would get if that ReLU passed it, ``|sum_b dL/dh_i(b) x_j(b)|`` with
``h_i`` the unit's ReLU output and ``x_j`` the layer's input (:class:`StraightThrough`, hooked on the
topology update's own forward and backward pass). That is the unit's outgoing weights' demand for it, on
the same scale as a live unit's scores, so pruned units re-enter the candidate pool as the paper says, and
the topology keeps turning over. It covers a ReLU that directly follows its masked layer; elsewhere (a
LayerNorm in between) empty units keep the plain gradient. Gradient growth breaks ties among zero-gradient
candidates at random, so once the gradient-carrying candidates are used up, growth reaches every unit.

Scored that way, an emptied unit still comes back late: its outgoing weights stopped learning when it went
silent (their gradient is its output, 0), and in the stored runs they are small, so its connections rank
below the live units' for most of a run. ``revive_first`` (NE) therefore spends each update's growth on
emptied units first: each gets its best-scored candidates, as many as a live unit of the layer has on
average, before any other connection is grown.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import nn

from nelib.sparse.masks import MASKED_TYPES
from nelib.validation import check_between, check_choice

SCHEDULES = ("cosine-target", "cosine", "constant")
CRITERIA = ("gradient", "random")
REVIVE_INITS = ("lecun", "zero")
EMPTY_SCORES = ("gradient", "straight-through")


@dataclasses.dataclass
class GrowthConfig:
    """How NE grows connections."""

    criterion: str = "gradient"
    """``gradient``: top-|dL/dw| absent connections (NE); ``random``: uniform among absent ones (ablation)."""
    schedule: str = "cosine"
    """``cosine-target`` (NE): density follows the paper's cosine to ``target_density`` at T_end; ``cosine``:
    the fast schedule of ``ne-fast``; ``constant``: ``rate`` of the initial free capacity per update (see the
    module)."""
    rate: float = 0.008
    """``cosine`` (peak) and ``constant``: fraction of the initial free capacity grown per update."""
    end_step: int = 0
    """T_end, the update at which growth reaches the target; 0: ``end_fraction`` of the run's updates."""
    end_fraction: float = 1.0
    """T_end as a fraction of the run's updates, when ``end_step`` is 0 (1.0: the last update)."""
    target_density: float = 1.0
    """Per-layer density at which growth stops (1.0: full size, as in the paper; 0.75 in the code)."""
    init_scale: float = 0.0
    """New weights start at 0 (NE); > 0 draws U(-s/sqrt(fan_in), s/sqrt(fan_in)) for every grown weight."""
    revive_init: str = "zero"
    """Weights grown into a unit with no live incoming connection: ``lecun`` (NE: LeCun-uniform, bias
    zeroed, so the unit can fire again) or ``zero`` (it stays silent)."""
    revive_first: bool = False
    """Grow into units with no live incoming connection first (each its best candidates, as many as the layer's
    live units hold on average), so a pruned unit comes back at the next topology update (NE; see the module)."""
    empty_score: str = "gradient"
    """Gradient growth's score for the absent connections of a unit with no live incoming weight:
    ``straight-through`` (NE: the gradient they would get through the unit's ReLU, see the module) or
    ``gradient`` (their |dL/dw|, always 0: such a unit is reached only by the random tie-break)."""

    def __post_init__(self):
        for name, choices in (("criterion", CRITERIA), ("schedule", SCHEDULES), ("revive_init", REVIVE_INITS),
                              ("empty_score", EMPTY_SCORES)):
            check_choice("growth", self, name, choices)
        check_between("growth", self, ("rate",), 0, 1)
        check_between("growth", self, ("target_density",), 0, 1, open_low=True)
        if not 0.0 < self.end_fraction <= 1.0:
            raise ValueError(f"growth.end_fraction must be in (0, 1], got {self.end_fraction}")
        if self.end_step < 0 or self.init_scale < 0:
            raise ValueError("growth.end_step and growth.init_scale must be >= 0")


def end_of_growth(cfg: GrowthConfig, total_updates: int) -> int:
    """T_end in updates: ``end_step``, else ``end_fraction`` of the run's ``total_updates``."""
    return cfg.end_step or max(1, round(cfg.end_fraction * total_updates))


def cosine_progress(x: float) -> float:
    """``F(x) = x + sin(pi x) / pi`` on [0, 1] (clipped outside): the integral of ``1 + cos(pi s)``, so the
    curve's slope is the paper's cosine, from 2 at the start to 0 at the end."""
    x = min(max(x, 0.0), 1.0)
    return x + math.sin(math.pi * x) / math.pi


def growth_fraction(cfg: GrowthConfig, update: int, end_step: int) -> float:
    """``cosine`` and ``constant``: fraction of the initial free capacity to grow at ``update``."""
    if cfg.schedule == "constant":
        return cfg.rate
    if cfg.schedule != "cosine":
        raise ValueError(f"growth_fraction is for the rate schedules, not {cfg.schedule!r}")
    end = cfg.end_step or end_step
    if end <= 0 or update >= end:
        return 0.0
    return cfg.rate / 2 * (1 + math.cos(math.pi * update / end))


def target_count(cfg: GrowthConfig, numel: int, initial: int, update: int, end: int) -> int:
    """``cosine-target``: the connections a layer of ``numel`` weights, ``initial`` of them present at the start,
    should hold after the topology update at ``update``: ``initial + round((target - initial) F(update/end))``."""
    target = round(cfg.target_density * numel)
    if target <= initial:
        return initial
    return initial + round((target - initial) * cosine_progress(update / end))


def growth_count(cfg: GrowthConfig, mask: torch.Tensor, initial_free: int, update: int, end: int) -> int:
    """Connections a layer with ``mask`` grows at ``update`` (T_end ``end``), never past the target."""
    active, numel = int(mask.sum()), mask.numel()
    room = max(0, round(cfg.target_density * numel) - active)
    if cfg.schedule == "cosine-target":
        return min(max(0, target_count(cfg, numel, numel - initial_free, update, end) - active), room)
    return min(round(growth_fraction(cfg, update, end) * initial_free), room)


def _gradient_scores(layer: torch.nn.Module, k: int, dense_grad: torch.Tensor,
                     generator: torch.Generator | None) -> torch.Tensor:
    """|dense gradient| of the absent positions (present ones -inf); zero-gradient ties broken at random,
    below every non-zero score, drawn only when ``k`` reaches into them."""
    absent = ~layer.mask
    score = dense_grad.abs().float().masked_fill(layer.mask, -math.inf)
    if int((score > 0).sum()) < k:
        ties = absent & (score == 0)
        noise = torch.rand(layer.mask.shape, generator=generator, device="cpu").to(score.device)
        score = torch.where(ties, -noise, score)  # in (-1, 0]: after every positive score
    return score


def revive_first_scores(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``score`` with, in every unit (row) that has no live incoming connection, its ``m`` best candidates
    lifted above every other candidate (order among them kept), ``m`` the mean number of live incoming
    connections of the layer's other units. Unchanged when no unit, or every unit, is empty."""
    flat = mask.flatten(1)
    empty = ~flat.any(1)
    n_live = int((~empty).sum())
    if not bool(empty.any()) or n_live == 0:
        return score
    m = min(max(1, round(int(flat.sum()) / n_live)), flat.shape[1])
    top = score.flatten(1)[empty].topk(m, dim=1).indices
    lift = torch.zeros_like(flat)
    lift[empty.nonzero()[:, :1], top] = True
    finite = score[torch.isfinite(score)]
    high = float(finite.max() - finite.min()) + 1.0
    return torch.where(lift.view_as(score), score + high, score)


@torch.no_grad()
def grow(
    layer: torch.nn.Module,
    k: int,
    criterion: str,
    dense_grad: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    init_scale: float = 0.0,
    revive_init: str = "zero",
    revive_first: bool = False,
) -> torch.Tensor:
    """Activate ``k`` absent connections of ``layer``; return the boolean mask of those grown.

    ``criterion='gradient'`` picks the absent positions with the largest ``|dense_grad|`` (the gradient of
    the loss with respect to the full weight, captured before masking); ``'random'`` picks uniformly. The
    grown weights are set to zero (or U(-s/sqrt(fan_in), s/sqrt(fan_in)) with ``init_scale`` s > 0); with
    ``revive_init='lecun'`` those into a unit that had no live incoming weight are LeCun-uniform and the
    unit's bias is zeroed; with ``revive_first`` such units are grown first (:func:`revive_first_scores`).
    The caller resets the optimizer state of the grown entries (and revived biases: :func:`revived_units`).
    """
    absent = ~layer.mask
    k = min(k, int(absent.sum()))
    grown = torch.zeros_like(layer.mask)
    if k <= 0:
        return grown
    if criterion == "gradient":
        if dense_grad is None:
            raise ValueError("gradient growth needs the dense gradient of the layer's weight")
        score = _gradient_scores(layer, k, dense_grad, generator)
    elif criterion == "random":
        score = torch.rand(layer.mask.shape, generator=generator, device="cpu").to(layer.mask.device)
        score = score.masked_fill(layer.mask, -1.0)  # present connections are never candidates
    else:
        raise ValueError(f"unknown growth criterion {criterion!r}")
    if revive_first:
        score = revive_first_scores(score, layer.mask)
    empty = ~layer.mask.flatten(1).any(1)  # units with no live incoming connection before this growth
    idx = torch.topk(score.flatten(), k, sorted=False).indices
    grown.view(-1)[idx] = True
    layer.mask |= grown
    fan_in = layer.weight[0].numel()
    if init_scale > 0:
        bound = init_scale / math.sqrt(fan_in)
        new = (torch.rand(layer.weight.shape, generator=generator, device="cpu") * 2 - 1) * bound
        layer.weight[grown] = new.to(layer.weight.device, layer.weight.dtype)[grown]
    else:
        layer.weight[grown] = 0.0
    if revive_init == "lecun":
        revived = grown & empty.view(-1, *([1] * (grown.dim() - 1)))
        if revived.any():
            bound = math.sqrt(3.0 / fan_in)  # LeCun: variance 1 / fan_in
            new = (torch.rand(layer.weight.shape, generator=generator, device="cpu") * 2 - 1) * bound
            layer.weight[revived] = new.to(layer.weight.device, layer.weight.dtype)[revived]
            if layer.bias is not None:
                layer.bias[revived.flatten(1).any(1)] = 0.0
    elif revive_init != "zero":
        raise ValueError(f"unknown revive_init {revive_init!r}")
    return grown


def revived_units(before: torch.Tensor, grown: torch.Tensor) -> torch.Tensor:
    """The units (rows) that had no live incoming connection in ``before`` and gained one in ``grown``."""
    return ~before.flatten(1).any(1) & grown.flatten(1).any(1)


def relus_after_layers(net: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(relu, layer name, layer)`` for every ``nn.ReLU`` of ``net`` that directly follows a masked layer
    in module order (so its input is that layer's output, unit by unit)."""
    pairs, prev = [], None
    for name, module in net.named_modules():
        if isinstance(module, nn.ReLU) and prev is not None and isinstance(prev[1], MASKED_TYPES):
            pairs.append((module, *prev))
        prev = (name, module)
    return pairs


class StraightThrough:
    """Straight-through growth scores for the empty units of one network (see the module).

    :meth:`arm` before the forward pass whose backward gives the growth gradient; after the backward,
    :meth:`collect` returns, per layer with empty units, those units and the scores of their incoming
    connections (``[n_empty, *weight.shape[1:]]``), and unhooks. Nothing here changes a gradient.
    """

    def __init__(self, net: nn.Module):
        self.pairs = relus_after_layers(net)
        self._handles: list = []
        self._inputs: dict[str, torch.Tensor] = {}
        self._scores: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def arm(self) -> None:
        self.collect()  # drop anything left from an update that never reached collect
        for relu, name, layer in self.pairs:
            empty = ~layer.mask.flatten(1).any(1)
            if bool(empty.any()):
                self._handles.append(layer.register_forward_hook(functools.partial(self._keep_input, name)))
                self._handles.append(relu.register_forward_hook(functools.partial(self._watch, name, layer, empty)))

    def _keep_input(self, name, _module, inputs, _output) -> None:
        self._inputs[name] = inputs[0].detach()

    def _watch(self, name, layer, empty, _module, _inputs, output) -> None:
        x = self._inputs.pop(name, None)
        if x is not None and output.requires_grad:  # passes without gradient (targets) do not count
            output.register_hook(functools.partial(self._accumulate, name, layer, empty, x))

    @torch.no_grad()
    def _accumulate(self, name, layer, empty, x, g) -> None:
        if isinstance(layer, nn.Conv2d):
            full = torch.nn.grad.conv2d_weight(x.float(), layer.weight.shape, g.float(), layer.stride,
                                               layer.padding, layer.dilation, layer.groups)
            part = full[empty]
        else:  # dL/dW_ij with the ReLU's derivative taken as 1: sum_b g_i(b) x_j(b)
            part = g.reshape(-1, g.shape[-1])[:, empty].float().T @ x.reshape(-1, x.shape[-1]).float()
        if name in self._scores:
            part = part + self._scores[name][1]
        self._scores[name] = (empty, part)

    def collect(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        for h in self._handles:
            h.remove()
        scores, self._handles, self._inputs, self._scores = self._scores, [], {}, {}
        return scores
