"""Elastic topology growth: add the absent connections with the largest |dense gradient|.

NE's first mechanism (RigL-style growth without the drop). How many connections a layer grows at a
topology update is a fraction of that layer's *initial free capacity* (its absent connections at the
start), the fraction following a schedule:

- ``constant``: ``rate`` at every update (the official code, rate 0.008 every 100 updates);
- ``cosine``:  ``rate / 2 * (1 + cos(pi * t / end_step))`` (the paper), zero after ``end_step``.

Growth never takes a layer past ``target_density`` (default 1.0, the paper's "full size"; the official
code stops at 0.75). Once there, growth only refills what pruning freed (rewiring at constant density).
"""

from __future__ import annotations

import dataclasses
import math

import torch

SCHEDULES = ("constant", "cosine")
CRITERIA = ("gradient", "random")


@dataclasses.dataclass
class GrowthConfig:
    """How NE grows connections."""

    criterion: str = "gradient"
    """``gradient``: top-|dL/dw| absent connections (NE); ``random``: uniform among absent ones (ablation)."""
    schedule: str = "cosine"
    """``cosine`` (paper) or ``constant`` (official code) growth fraction over training."""
    rate: float = 0.008
    """Fraction of each layer's initial free capacity grown per topology update (peak for ``cosine``)."""
    end_step: int = 0
    """Update at which the cosine schedule reaches zero; 0 means "the run's last update"."""
    target_density: float = 1.0
    """Per-layer density at which growth stops (1.0: full size, as in the paper; 0.75 in the code)."""
    init_scale: float = 0.0
    """New weights start at 0 (NE); > 0 draws U(-s/sqrt(fan_in), s/sqrt(fan_in)) instead."""

    def __post_init__(self):
        if self.criterion not in CRITERIA:
            raise ValueError(f"growth.criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"growth.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"growth.rate must be in [0, 1], got {self.rate}")
        if not 0.0 < self.target_density <= 1.0:
            raise ValueError(f"growth.target_density must be in (0, 1], got {self.target_density}")
        if self.end_step < 0 or self.init_scale < 0:
            raise ValueError("growth.end_step and growth.init_scale must be >= 0")


def growth_fraction(cfg: GrowthConfig, update: int, end_step: int) -> float:
    """Fraction of initial free capacity to grow at ``update`` under ``cfg``'s schedule."""
    if cfg.schedule == "constant":
        return cfg.rate
    end = cfg.end_step or end_step
    if end <= 0 or update >= end:
        return 0.0
    return cfg.rate / 2 * (1 + math.cos(math.pi * update / end))


def growth_count(cfg: GrowthConfig, mask: torch.Tensor, initial_free: int, fraction: float) -> int:
    """Connections a layer with ``mask`` grows: ``round(fraction * initial_free)``, capped at the target."""
    room = max(0, round(cfg.target_density * mask.numel()) - int(mask.sum()))
    return min(round(fraction * initial_free), room)


@torch.no_grad()
def grow(
    layer: torch.nn.Module,
    k: int,
    criterion: str,
    dense_grad: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    init_scale: float = 0.0,
) -> torch.Tensor:
    """Activate ``k`` absent connections of ``layer``; return the boolean mask of those grown.

    ``criterion='gradient'`` picks the absent positions with the largest ``|dense_grad|`` (the gradient of
    the loss with respect to the full weight, captured before masking); ``'random'`` picks uniformly. The
    grown weights are set to zero (or a small uniform init); the caller resets their optimizer state.
    """
    absent = ~layer.mask
    k = min(k, int(absent.sum()))
    grown = torch.zeros_like(layer.mask)
    if k <= 0:
        return grown
    if criterion == "gradient":
        if dense_grad is None:
            raise ValueError("gradient growth needs the dense gradient of the layer's weight")
        score = dense_grad.abs().float()
    elif criterion == "random":
        score = torch.rand(layer.mask.shape, generator=generator, device="cpu").to(layer.mask.device)
    else:
        raise ValueError(f"unknown growth criterion {criterion!r}")
    score = score.masked_fill(layer.mask, -1.0)  # present connections are never candidates
    idx = torch.topk(score.flatten(), k, sorted=False).indices
    grown.view(-1)[idx] = True
    layer.mask |= grown
    if init_scale > 0:
        fan_in = layer.weight[0].numel()
        bound = init_scale / math.sqrt(fan_in)
        new = (torch.rand(layer.weight.shape, generator=generator, device="cpu") * 2 - 1) * bound
        layer.weight[grown] = new.to(layer.weight.device, layer.weight.dtype)[grown]
    else:
        layer.weight[grown] = 0.0
    return grown
