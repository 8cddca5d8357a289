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
               exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], group: dict,
               capturable: bool = False) -> None:
    """One Adam update of ``params`` in place, as ``torch.optim.Adam.step`` makes it for the parameter
    group ``group`` (its ``lr``, ``betas``, ``eps``, ``weight_decay``, ``maximize``, ``foreach``). ``steps``
    (one tensor per parameter) hold the step counts before this update; Adam counts them up in place.
    ``capturable``: Adam's form that a CUDA graph can hold (``steps`` on the device, bias correction computed
    there; equal up to float rounding)."""
    _adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=group["foreach"], capturable=capturable,
          differentiable=False, fused=None, has_complex=False,
          decoupled_weight_decay=group.get("decoupled_weight_decay", False), amsgrad=False,
          beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"], weight_decay=group["weight_decay"],
          eps=group["eps"], maximize=group["maximize"])


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_matmul_supported(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware. On a CPU that means AVX512-BF16 or AMX:
    oneDNN also accepts bf16 on plain AVX-512 (``torch.ops.mkldnn._is_mkldnn_bf16_supported``), but emulates
    it there, and without AVX-512 bf16 products are about 11x slower than fp32 (measured on an AVX2 EPYC)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
