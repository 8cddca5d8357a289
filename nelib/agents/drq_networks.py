"""DrQ's networks (denisyarats/drq), built from nelib masked layers so that sparsity and NE apply to them.

A conv encoder (4 conv layers of 32 3x3 filters, the first with stride 2, ReLUs, then a linear head to 50
features with LayerNorm and tanh), a twin Q-critic that owns the encoder, and a tanh-Gaussian actor that reads
the critic's conv layers (tied, not trained by the actor) through its own linear head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nelib.agents.networks import mlp
from nelib.sparse.masks import MaskedConv2d, MaskedLinear


def conv_output_size(image_size: int) -> int:
    """Side of the encoder's last feature map: 84 -> 41 (3x3, stride 2) -> 39 -> 37 -> 35."""
    side = (image_size - 3) // 2 + 1
    return side - 2 * 3


class Encoder(nn.Module):
    """DrQ's conv encoder: 4 conv+ReLU layers, flatten, linear head, LayerNorm, tanh."""

    def __init__(self, in_channels: int, image_size: int, num_filters: int = 32, feature_dim: int = 50):
        super().__init__()
        # In-place ReLUs: the conv activations are the largest tensors of the update, and writing them once
        # instead of twice is measurably faster on a CPU.
        layers: list[nn.Module] = [MaskedConv2d(in_channels, num_filters, 3, stride=2), nn.ReLU(inplace=True)]
        for _ in range(3):
            layers += [MaskedConv2d(num_filters, num_filters, 3, stride=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.conv_dim = num_filters * conv_output_size(image_size) ** 2
        self.head = nn.Sequential(MaskedLinear(self.conv_dim, feature_dim), nn.LayerNorm(feature_dim))

    def conv_features(self, obs: torch.Tensor) -> torch.Tensor:
        """Flattened conv features ``[B, conv_dim]`` (channel-major, whatever the memory format)."""
        return self.convs(obs).flatten(1)

    def project(self, conv_features: torch.Tensor) -> torch.Tensor:
        """Features ``[B, feature_dim]`` from flattened conv features: linear head, LayerNorm, tanh."""
        return torch.tanh(self.head(conv_features))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.project(self.conv_features(obs))


class Critic(nn.Module):
    """Encoder + two Q-networks on ``concat(features, action)``; ``forward`` returns both Q-values."""

    def __init__(self, encoder: Encoder, act_dim: int, hidden_dim: int, feature_dim: int):
        super().__init__()
        self.encoder = encoder
        self.q1 = mlp(feature_dim + act_dim, (hidden_dim, hidden_dim), 1)
        self.q2 = mlp(feature_dim + act_dim, (hidden_dim, hidden_dim), 1)

    def forward(self, obs: torch.Tensor | None, action: torch.Tensor,
                conv_features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(obs) if conv_features is None else self.encoder.project(conv_features)
        x = torch.cat([h, action], dim=-1)
        return self.q1(x), self.q2(x)


class Actor(nn.Module):
    """Tanh-Gaussian policy on the critic's conv layers (read, not trained: not a submodule) and its own
    linear head; ``forward`` returns the mean and standard deviation before the tanh."""

    def __init__(self, convs: nn.Sequential, conv_dim: int, act_dim: int, hidden_dim: int, feature_dim: int,
                 log_std_bounds: tuple[float, float]):
        super().__init__()
        # Tied conv layers live in the critic; kept out of this module's parameters, masks and ReLUs, so the
        # actor's optimizer, NE scheduler and metrics see only what the actor trains.
        object.__setattr__(self, "convs", convs)
        self.encoder_head = nn.Sequential(MaskedLinear(conv_dim, feature_dim), nn.LayerNorm(feature_dim))
        self.trunk = mlp(feature_dim, (hidden_dim, hidden_dim), 2 * act_dim)
        self.log_std_bounds = log_std_bounds

    def forward(self, obs: torch.Tensor | None = None,
                conv_features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if conv_features is None:
            with torch.no_grad():  # DrQ detaches the encoder for the actor
                conv_features = self.convs(obs).flatten(1)
        mu, log_std = self.trunk(torch.tanh(self.encoder_head(conv_features))).chunk(2, dim=-1)
        lo, hi = self.log_std_bounds
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1)
        return mu, log_std.exp()


def squashed_sample(mu: torch.Tensor, std: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tanh(mu + std * eps)`` and its log-probability under the tanh-Gaussian (summed over actions)."""
    u = mu + std * eps
    log_prob = -0.5 * eps.pow(2) - std.log() - 0.5 * math.log(2 * math.pi)
    # log |d tanh(u) / du| = log(1 - tanh(u)^2), in the numerically stable form 2 (log 2 - u - softplus(-2u))
    log_prob = log_prob - 2 * (math.log(2) - u - F.softplus(-2 * u))
    return torch.tanh(u), log_prob.sum(-1, keepdim=True)


@torch.no_grad()
def drq_init(module: nn.Module) -> None:
    """DrQ's initialisation: orthogonal weights (conv: ReLU gain), zero biases; masked weights stay zero."""
    for m in module.modules():
        if isinstance(m, (MaskedLinear, MaskedConv2d)):
            gain = nn.init.calculate_gain("relu") if isinstance(m, MaskedConv2d) else 1.0
            nn.init.orthogonal_(m.weight, gain)
            m.weight.mul_(m.mask)
            if m.bias is not None:
                m.bias.zero_()
