"""The private torch calls nelib relies on, in one place.

Polyak averaging uses ``torch._foreach_lerp_`` (one fused call over all parameters), and the vectorized
seeds step all seeds' Adam state at once through ``torch.optim.adam.adam``, the function behind
``torch.optim.Adam.step``. :class:`Adam` re-states torch's single-tensor Adam update on the CPU (see there
why) and initialises its state with ``torch.optim.Adam._init_group``. None of these is public API:
``tests/test_torch_ops.py`` fails if a torch upgrade changes what they compute, instead of results changing
silently.
"""

from __future__ import annotations

import math

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
    if not capturable and zero_safe_sqrt_applies(group, params):
        _cpu_adam_(params, grads, exp_avgs, exp_avg_sqs, steps, group)
        return
    _adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=group["foreach"], capturable=capturable,
          differentiable=False, fused=None, has_complex=False,
          decoupled_weight_decay=group.get("decoupled_weight_decay", False), amsgrad=False,
          beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"], weight_decay=group["weight_decay"],
          eps=group["eps"], maximize=group["maximize"])



def zero_safe_sqrt_applies(group: dict, params: list[torch.Tensor]) -> bool:
    """Whether :class:`Adam`'s CPU update is bit for bit torch's for ``group`` and ``params``: plain Adam
    (no AMSGrad, weight decay, maximize, foreach, fused, capturable or differentiable form), real float
    tensors on the CPU, and an ``eps`` so much larger than ``sqrt(tiny)`` that adding either to it rounds
    the same (see :class:`Adam`)."""
    if (group["amsgrad"] or group["maximize"] or group["weight_decay"] != 0 or group["foreach"] or group["fused"]
            or group["capturable"] or group["differentiable"]
            or not all(isinstance(group[k], float) for k in ("lr", "eps"))
            or not all(isinstance(b, float) for b in group["betas"])):
        return False
    dtypes = {p.dtype for p in params}
    if any(p.device.type != "cpu" for p in params) or not dtypes <= {torch.float32, torch.float64}:
        return False
    beta2, eps = group["betas"][1], group["eps"]
    # The largest term the floor can add to eps: sqrt(tiny) / sqrt(1 - beta2) (the bias correction's first
    # and smallest value). Below an eighth of eps's ulp (a margin for its own rounding), eps + term rounds
    # to eps, as eps + 0 does.
    return 0.0 < beta2 < 1.0 and all(
        math.sqrt(torch.finfo(d).tiny / (1 - beta2)) < eps * torch.finfo(d).eps / 16 for d in dtypes)


@torch.no_grad()
def _cpu_adam_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
               exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], group: dict) -> None:
    """torch's single-tensor Adam update (``torch.optim.adam._single_tensor_adam``, non-capturable form),
    except that the second moment is floored at the dtype's smallest normal number before its square root
    (the same bits for the non-negative moments Adam keeps; torch would give NaN for a negative one)."""
    beta1, beta2 = group["betas"]
    lr, eps = group["lr"], group["eps"]
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
        step_t += 1
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = exp_avg_sq.clamp_min(torch.finfo(exp_avg_sq.dtype).tiny).sqrt_().div_(bias_correction2_sqrt)
        param.addcdiv_(exp_avg, denom.add_(eps), value=-step_size)


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` with the same results, bit for bit, and a faster CPU update for sparse networks.

    torch's CPU square root is about 25x slower on an exact zero than on other numbers (measured on an Intel
    Xeon with AVX-512, torch 2.13: 190 us for a 256x256 tensor a quarter zeros, 8 us for one without), and
    the second moment of every masked weight is exactly zero: for a sparse network, Adam's square root
    becomes a tenth of the update. Flooring the second moment at the smallest normal number first changes
    nothing that follows: the floor's root, ``1e-19`` in float32, vanishes when ``eps`` (``1e-8``) is added to
    it, as zero does (:func:`zero_safe_sqrt_applies` checks that for the group's ``eps`` and ``beta2``). Any
    other configuration (CUDA, AMSGrad, weight decay, foreach, ...) runs torch's own update.
    """

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step (as ``torch.optim.Adam.step``)."""
        if not all(zero_safe_sqrt_applies(g, g["params"]) for g in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            if self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, [], steps):  # complex parameters
                raise ValueError("nelib's Adam takes real parameters only")
            _cpu_adam_(params, grads, exp_avgs, exp_avg_sqs, steps, group)
        return loss

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
