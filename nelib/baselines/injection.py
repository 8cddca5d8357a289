"""Plasticity Injection (Nikishin et al. 2023, "Deep Reinforcement Learning with Plasticity Injection").

At one chosen update the head ``h_theta`` of each network (its last ``layers`` masked layers) is frozen and
two copies of a freshly initialised head ``theta'`` are added, one trainable and one frozen::

    output(x) = h_theta(phi(x)) + ( h_theta'(phi(x)) - h_theta'_frozen(phi(x)) )

The bracket is exactly zero at injection, so the outputs do not change; afterwards only the new head (and
the body ``phi``, whose gradient flows through all three heads, as in the paper) trains, and the number of
trainable parameters is unchanged. Optimizer: the optimizer's parameter list becomes the trainable
parameters; the body keeps its Adam state (the paper found resetting the optimizer hurts), the new head
starts with none, the frozen head's state is dropped.

Target networks get the same structure: their own current head is frozen and the new head and its frozen
copy are exact copies of the online network's, so the targets' outputs do not change either; Polyak
averaging then runs over the whole (online, target) parameter lists, as before.

Reference: timoklein/plasticity-injection-torch (DQN; heads built up front, frozen by ``requires_grad``).
Here the structure is added at injection time, in place, on any ``nn.Sequential`` of masked layers.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from nelib.baselines.reset import NORM_TYPES, init_units
from nelib.sparse.masks import MASKED_TYPES
from nelib.validation import check_between, check_non_negative, check_positive


@dataclasses.dataclass
class InjectionConfig:
    """One plasticity injection during training (the ``plasticity-injection`` method)."""

    enabled: bool = False
    """Inject plasticity once, after update ``update`` (or the ``fraction`` of the run's updates)."""
    fraction: float = 0.5
    """When ``update`` is 0: inject after this fraction of the run's critic updates (the middle, as in
    the Plasticine TD3 reference)."""
    update: int = 0
    """Inject after this critic update (0: use ``fraction``)."""
    layers: int = 2
    """Masked layers of each network that form the head (2: last hidden layer and output layer, like the
    paper's two-layer MLP head on top of the Atari encoder; a one-layer linear head would be a no-op)."""
    actor: bool = True
    """Inject into the actor (and its target)."""
    critic: bool = True
    """Inject into both Q-networks of the critic (and its target)."""

    def __post_init__(self):
        check_between("injection", self, ("fraction",), 0, 1, open_low=True)
        check_non_negative("injection", self, "update")
        check_positive("injection", self, "layers")


class FrozenReLU(nn.Module):
    """ReLU of the frozen copy of the new head: not an ``nn.ReLU``, so plasticity metrics and ReDo, which
    look for ``nn.ReLU`` modules, do not count a constant bookkeeping copy as units of the network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class InjectedHead(nn.Module):
    """``old(x) + (new(x) - frozen(x))``; ``old`` and ``frozen`` have ``requires_grad`` off.

    The bracket is computed first so that at injection, when ``new`` and ``frozen`` are equal, it is
    exactly zero and the output is bit-for-bit the old head's.
    """

    def __init__(self, old: nn.Sequential, new: nn.Sequential):
        super().__init__()
        # Registration order old, frozen, new: the last nn.ReLU of the network is then the new head's
        # (the features whose rank the metrics report).
        self.old = old
        self.frozen = copy.deepcopy(new)
        for i, m in enumerate(self.frozen):
            if isinstance(m, nn.ReLU):
                self.frozen[i] = FrozenReLU()
        self.new = new
        self.old.requires_grad_(False)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.old(x) + (self.new(x) - self.frozen(x))


def _containers(net: nn.Module) -> list[nn.Sequential]:
    """The ``nn.Sequential`` modules of ``net`` that hold masked layers directly, in registration order."""
    seqs = [m for m in net.modules() if isinstance(m, nn.Sequential)
            and any(isinstance(c, MASKED_TYPES) for c in m.children())]
    if not seqs:
        raise ValueError("plasticity injection needs nn.Sequential modules of masked layers")
    return seqs


@torch.no_grad()
def inject(net: nn.Module, layers: int = 2, generator: torch.Generator | None = None,
           like: nn.Module | None = None) -> list[InjectedHead]:
    """Plasticity injection, in place, into every ``nn.Sequential`` of masked layers in ``net``.

    The modules from the ``layers``-th last masked layer on (the whole Sequential if it has fewer) become
    the frozen old head of an :class:`InjectedHead`. The new head is a copy of the old one re-initialised
    with :func:`nelib.baselines.reset.init_units` (masks kept), or, with ``like`` (an injected network of the same
    structure, e.g. the online network when ``net`` is its target), a copy of ``like``'s new heads.
    Returns the new :class:`InjectedHead` modules.
    """
    if any(isinstance(m, InjectedHead) for m in net.modules()):
        raise ValueError("this network already had plasticity injected")
    sources = [m for m in like.modules() if isinstance(m, InjectedHead)] if like is not None else None
    seqs = _containers(net)
    if sources is not None and len(sources) != len(seqs):
        raise ValueError("`like` does not have the structure of the network")
    heads = []
    for i, seq in enumerate(seqs):
        masked = [j for j, m in enumerate(seq) if isinstance(m, MASKED_TYPES)]
        start = masked[-layers] if layers <= len(masked) else 0
        old = nn.Sequential(*list(seq)[start:])
        if sources is not None:
            new = copy.deepcopy(sources[i].new)
        else:
            new = copy.deepcopy(old)
            for m in new.modules():
                if isinstance(m, MASKED_TYPES + NORM_TYPES):
                    init_units(m, None, generator)
        new.requires_grad_(True)
        del seq[start:]
        head = InjectedHead(old, new)
        seq.append(head)
        heads.append(head)
    return heads


def use_trainable_parameters(optimizer: torch.optim.Optimizer, net: nn.Module) -> None:
    """Make ``net``'s parameters with ``requires_grad`` the optimizer's (single) parameter group.

    State of parameters that stay is kept; state of parameters that leave (now frozen) is dropped.
    """
    if len(optimizer.param_groups) != 1:
        raise ValueError("expected an optimizer with one parameter group")
    params = [p for p in net.parameters() if p.requires_grad]
    keep = {id(p) for p in params}
    for p in [p for p in optimizer.state if id(p) not in keep]:
        del optimizer.state[p]
    optimizer.param_groups[0]["params"] = params


class InjectionIntervention:
    """Injects plasticity into the TD3 agent's actor and critic (and their targets) once, after update
    ``cfg.update`` (or ``cfg.fraction`` of ``total_updates``)."""

    def __init__(self, cfg: InjectionConfig, total_updates: int, seed: int = 0):
        self.cfg = cfg
        self.at = cfg.update or max(1, round(cfg.fraction * total_updates))
        self.generator = torch.Generator().manual_seed(seed)
        self.injected = False

    def after_update(self, agent, obs: torch.Tensor, act: torch.Tensor) -> None:
        if not self.injected and agent.updates >= self.at:
            self.apply(agent)

    def apply(self, agent) -> None:
        """Inject into the configured networks and their targets; re-pair the optimizers and Polyak lists."""
        for key in ("actor", "critic"):
            if getattr(self.cfg, key):
                net, target = getattr(agent, key), getattr(agent, f"{key}_target")
                inject(net, self.cfg.layers, self.generator)
                inject(target, self.cfg.layers, like=net)
                target.requires_grad_(False)
                use_trainable_parameters(getattr(agent, f"{key}_opt"), net)
        agent.refresh_parameter_lists()
        self.injected = True

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "injected": self.injected}

    def load_state_dict(self, state: dict, agent) -> None:
        # Called before the agent loads its networks and optimizers: rebuild the injected structure first
        # (its values are then overwritten by the checkpoint's).
        if state["injected"] and not self.injected:
            self.apply(agent)
        self.generator.set_state(state["generator"].cpu())  # torch.load(map_location=cuda) moves it
        self.injected = state["injected"]
