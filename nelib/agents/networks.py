"""Actor and twin-critic MLPs built from masked layers (dense until a mask says otherwise)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nelib.sparse.masks import MaskedLinear

LAYERNORM = ("none", "last", "all")


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, layernorm: str = "none") -> nn.Sequential:
    """``Linear-[LayerNorm]-ReLU`` blocks then a linear head, all layers masked.

    ``layernorm``: ``none``; ``last`` puts LayerNorm after the last hidden linear only (the official NE
    critic); ``all`` after every hidden linear (the LayerNorm baseline).
    """
    if layernorm not in LAYERNORM:
        raise ValueError(f"layernorm must be one of {LAYERNORM}, got {layernorm!r}")
    layers: list[nn.Module] = []
    d = in_dim
    for i, h in enumerate(hidden):
        layers.append(MaskedLinear(d, h))
        if layernorm == "all" or (layernorm == "last" and i == len(hidden) - 1):
            layers.append(nn.LayerNorm(h))
        layers.append(nn.ReLU())
        d = h
    layers.append(HeadLinear(d, out_dim))
    return nn.Sequential(*layers)


class HeadLinear(MaskedLinear):
    """The output layer. Under bf16 autocast it still multiplies in fp32: a Q-value rounded to bf16's 8
    significant bits is off by up to 0.4% (2 at Q = 500, a step's reward), which would add noise to every
    TD target. It is 1/256 of the network's products, so the cost is nil; so is asking whether autocast is
    on (about 1 us a call, a few per update of ~10 ms)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class Actor(nn.Module):
    """Deterministic policy ``max_action * tanh(mlp(obs))``."""

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, hidden: Sequence[int],
                 layernorm: str = "none"):
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim, layernorm)
        self.max_action = max_action

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.net(obs))


class TwinCritic(nn.Module):
    """Two independent Q-networks on ``concat(obs, action)``; ``forward`` returns both."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], layernorm: str = "none"):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, hidden, 1, layernorm)
        self.q2 = mlp(obs_dim + act_dim, hidden, 1, layernorm)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x), self.q2(x)

    def q1_value(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.q1(torch.cat([obs, act], dim=-1))
