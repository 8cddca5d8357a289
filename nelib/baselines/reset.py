"""Reset (Nikishin et al. 2022, "The Primacy Bias in Deep Reinforcement Learning").

Every ``interval`` updates the last layers of the actor and the critic are re-initialised while the replay
buffer is kept. The reference code (evgenii-nikishin/rl_with_resets) does this for state-based SAC by
building a whole new agent every 200k environment steps (one update per step): every layer, the target
networks (copies of the fresh networks) and the optimizer state start over. Here the same happens
layer-wise, so that only the last ``layers`` of each network can be reset (0 = all, the reference's choice):

- the chosen layers (and the LayerNorms after the first of them) are drawn again from their initial
  distribution; masks are kept, so a sparse layer stays sparse;
- their optimizer state is deleted (moments *and* Adam's step count, as in a fresh optimizer);
- their target-network copies are set equal to the fresh layers, as a new agent's targets would be.

:func:`init_units` is the re-initialisation shared with ReDo and Plasticity Injection.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from nelib.sparse.masks import MASKED_TYPES
from nelib.validation import check_non_negative, check_positive

NORM_TYPES = (nn.LayerNorm,)


@dataclasses.dataclass
class ResetConfig:
    """Periodic resets of the last layers (the ``reset`` method)."""

    enabled: bool = False
    """Reset the networks every ``interval`` updates."""
    interval: int = 200_000
    """Critic updates between resets (Reset paper, SAC on DMC: every 200k steps at one update per step;
    note that a 100k-step run never gets there)."""
    layers: int = 0
    """How many of the last masked layers of each network (each Q-network of the twin critic) to reset;
    0: all of them, the Reset paper's choice for state-based SAC."""
    actor: bool = True
    """Reset the actor (and its target)."""
    critic: bool = True
    """Reset the critic (and its target)."""

    def __post_init__(self):
        check_positive("reset", self, "interval")
        check_non_negative("reset", self, "layers")  # 0: all of them


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the CPU so that one CPU generator serves networks on any device.
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def _rows(units: torch.Tensor | None, like: torch.Tensor):
    return slice(None) if units is None else units.to(like.device)


@torch.no_grad()
def init_units(module: nn.Module, units: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> None:
    """Draw the parameters of ``module``'s output units ``units`` again from their initial distribution.

    ``units`` is a boolean vector over output units (rows of a linear weight, output channels of a conv,
    entries of a LayerNorm); None means all. Masked linear/conv layers get PyTorch's default
    initialisation, which nelib's networks start from: weight and bias ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``;
    masked-out weights stay zero. LayerNorm gets gain 1 and bias 0.
    """
    if isinstance(module, MASKED_TYPES):
        w = module.weight
        n = w.shape[0] if units is None else int(units.sum())
        if n == 0:
            return
        bound = 1.0 / math.sqrt(w[0].numel())  # kaiming_uniform(a=sqrt(5)) and the bias rule both give this
        w[_rows(units, w)] = _uniform((n, *w.shape[1:]), bound, generator).to(w)
        if module.bias is not None:
            module.bias[_rows(units, w)] = _uniform((n,), bound, generator).to(module.bias)
        w.mul_(module.mask)
    elif isinstance(module, NORM_TYPES):
        if module.weight is not None:
            module.weight[_rows(units, module.weight)] = 1.0
        if module.bias is not None:
            module.bias[_rows(units, module.bias)] = 0.0
    else:
        raise TypeError(f"cannot re-initialise a {type(module).__name__}")


def reset_layer_names(net: nn.Module, layers: int = 0) -> list[str]:
    """Names of the modules Reset re-initialises in ``net``, in registration order.

    Masked layers and LayerNorms are grouped by their parent module (the actor's ``net``, the twin critic's
    ``q1`` and ``q2``); in each group the last ``layers`` masked layers are taken, with every LayerNorm
    registered after the first of them. ``layers == 0`` (or more than a group has) takes the whole group.
    """
    if layers < 0:
        raise ValueError(f"layers must be >= 0, got {layers}")
    groups: dict[str, list[tuple[str, nn.Module]]] = {}
    for name, module in net.named_modules():
        if isinstance(module, MASKED_TYPES + NORM_TYPES):
            groups.setdefault(name.rpartition(".")[0], []).append((name, module))
    names = []
    for members in groups.values():
        masked = [i for i, (_, m) in enumerate(members) if isinstance(m, MASKED_TYPES)]
        if not masked:
            continue
        start = masked[-layers] if 0 < layers <= len(masked) else 0
        names += [n for n, _ in members[start:]]
    return names


@torch.no_grad()
def reset_modules(
    net: nn.Module,
    names: list[str],
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    target: nn.Module | None = None,
) -> int:
    """Re-initialise the modules ``names`` of ``net`` and forget their optimizer state.

    ``target`` (a network of the same structure, e.g. the target network) gets exact copies of the
    re-initialised modules. Returns the number of parameters reset.
    """
    modules = dict(net.named_modules())
    target_modules = dict(target.named_modules()) if target is not None else {}
    count = 0
    for name in names:
        module = modules[name]
        init_units(module, None, generator)
        for p in module.parameters(recurse=False):
            count += p.numel()
            if optimizer is not None:
                optimizer.state.pop(p, None)  # Adam starts this parameter afresh, step count included
        if target is not None:
            target_modules[name].load_state_dict(module.state_dict())
    return count


class ResetIntervention:
    """Calls :func:`reset_modules` on the agent's actor and critic every ``cfg.interval`` updates (modules
    named with a prefix in the agent's ``reset_skip``, if it has one, are kept)."""

    def __init__(self, cfg: ResetConfig, seed: int = 0):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)
        self.resets = 0

    def after_update(self, agent, obs: torch.Tensor, act: torch.Tensor) -> None:
        if agent.updates % self.cfg.interval:
            return
        skip = getattr(agent, "reset_skip", ())  # module-name prefixes an agent keeps (DrQ: its encoder)
        for key in ("actor", "critic"):
            if getattr(self.cfg, key):
                net = getattr(agent, key)
                names = [n for n in reset_layer_names(net, self.cfg.layers) if not n.startswith(skip)]
                reset_modules(net, names, getattr(agent, f"{key}_opt"), self.generator,
                              getattr(agent, f"{key}_target"))
        self.resets += 1

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "resets": self.resets}

    def load_state_dict(self, state: dict, agent) -> None:
        self.generator.set_state(state["generator"].cpu())  # torch.load(map_location=cuda) moves it
        self.resets = state["resets"]
