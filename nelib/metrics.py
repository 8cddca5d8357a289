"""Plasticity metrics: ReDo dormant scores, dormant/active ratios, FAU, feature ranks, weight magnitude.

All functions take activations captured on a batch. A "unit" is one output of a hidden layer after its
non-linearity; in a conv layer a channel is one unit (its score averages over batch and positions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_TAUS = (0.0, 0.025, 0.1)


def _unit_means(activations: torch.Tensor) -> torch.Tensor:
    """Mean |h| per unit: over the batch for ``[B, U]``, over batch and positions for ``[B, C, H, W]``."""
    if activations.dim() == 2:
        return activations.abs().mean(dim=0)
    if activations.dim() == 4:
        return activations.abs().mean(dim=(0, 2, 3))
    raise ValueError(f"expected [batch, units] or [batch, channels, H, W], got shape {tuple(activations.shape)}")


def redo_scores(activations: torch.Tensor) -> torch.Tensor:
    """ReDo score per unit (Sokar et al. 2023): ``mean|h_i| / mean_k mean|h_k|``.

    The normaliser is the layer's *mean* of the per-unit means, as in the reference code. A layer whose
    activations are all zero scores 0 everywhere (every unit is dormant) instead of dividing by zero.
    """
    means = _unit_means(activations.detach().float())
    layer_mean = means.mean()
    if layer_mean == 0:
        return torch.zeros_like(means)
    return means / layer_mean


def dormant_units(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """Boolean mask of dormant units: ``score <= tau``; for ``tau == 0`` an exact zero test."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    return scores == 0 if tau == 0 else scores <= tau


def fau(activations: torch.Tensor) -> float:
    """Fraction of active units: the share of (sample, unit[, position]) entries with output > 0."""
    return float((activations > 0).float().mean())


def _singular_values(features: torch.Tensor) -> torch.Tensor:
    if features.dim() == 4:  # conv features: one row per sample
        features = features.flatten(1)
    return torch.linalg.svdvals(features.detach().float())


def stable_rank(features: torch.Tensor) -> float:
    """Stable rank ``sum(sigma^2) / max(sigma)^2`` of a ``[batch, units]`` feature matrix."""
    s = _singular_values(features)
    return float((s**2).sum() / (s[0] ** 2)) if s[0] > 0 else 0.0


def effective_rank(features: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007): ``exp`` of the entropy of the normalised singular values."""
    s = _singular_values(features)
    total = s.sum()
    if total == 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def weight_magnitude(net: nn.Module) -> float:
    """Mean |w| over all weight matrices/kernels of ``net`` (biases and norm gains excluded)."""
    total, count = 0.0, 0
    for name, p in net.named_parameters():
        if name.endswith("weight") and p.dim() >= 2:
            total += float(p.detach().abs().sum())
            count += p.numel()
    return total / count if count else float("nan")


@torch.no_grad()
def capture_activations(net: nn.Module, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``net(*inputs)`` and return the output of every ``nn.ReLU`` module, keyed by module name.

    Hooks are removed before returning, so this costs nothing outside metric steps.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in net.named_modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_hook(
                lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach())))
    try:
        net(*inputs)
    finally:
        for h in handles:
            h.remove()
    return captured


def plasticity_report(activations: dict[str, torch.Tensor], taus: Sequence[float] = DEFAULT_TAUS) -> dict[str, float]:
    """Dormant ratio per tau (overall, pooled over units of all layers), active ratio and FAU.

    ``active_ratio`` is ``1 - dormant ratio at tau = 0``: the share of units that fire for at least one
    sample of the batch. Keys are ``dormant_{tau}``, ``active_ratio``, ``fau``, plus
    per-layer ``dormant_{tau}/<layer>``.
    """
    out: dict[str, float] = {}
    scores = {name: redo_scores(a) for name, a in activations.items()}
    n_units = sum(s.numel() for s in scores.values())
    for tau in taus:
        n_dormant = 0
        for name, s in scores.items():
            d = int(dormant_units(s, tau).sum())
            out[f"dormant_{tau:g}/{name}"] = d / s.numel()
            n_dormant += d
        out[f"dormant_{tau:g}"] = n_dormant / n_units if n_units else float("nan")
    dead = sum(int(dormant_units(s, 0.0).sum()) for s in scores.values())
    out["active_ratio"] = 1.0 - dead / n_units if n_units else float("nan")
    entries = sum(a.numel() for a in activations.values())
    active_entries = sum(int((a > 0).sum()) for a in activations.values())
    out["fau"] = active_entries / entries if entries else float("nan")
    return out
