"""The private torch calls nelib relies on, in one place.

Polyak averaging uses ``torch._foreach_lerp_`` (one fused call over all parameters), and the vectorized
seeds step all seeds' Adam state at once through ``torch.optim.adam.adam``, the function behind
``torch.optim.Adam.step``. Neither is public API: ``tests/test_torch_ops.py`` fails if a torch upgrade
changes what they compute, instead of results changing silently.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam as _adam


@torch.no_grad()
def soft_update_(targets: list[torch.Tensor], online: list[torch.Tensor], tau: float) -> None:
    """``target <- target + tau (online - target)`` for every pair, in place (Polyak averaging; lists, so
    that the per-update call copies nothing)."""
    torch._foreach_lerp_(targets, online, tau)


@torch.no_grad()
def adam_step_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
               exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], group: dict) -> None:
    """One Adam update of ``params`` in place, as ``torch.optim.Adam.step`` makes it for the parameter
    group ``group`` (its ``lr``, ``betas``, ``eps``, ``weight_decay``, ``maximize``, ``foreach``). ``steps``
    (one tensor per parameter) hold the step counts before this update; Adam counts them up in place."""
    _adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=group["foreach"], capturable=False,
          differentiable=False, fused=None, has_complex=False,
          decoupled_weight_decay=group.get("decoupled_weight_decay", False), amsgrad=False,
          beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"], weight_decay=group["weight_decay"],
          eps=group["eps"], maximize=group["maximize"])
