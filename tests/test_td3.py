"""TD3's update helpers on tiny networks."""

import pytest
import torch
from torch import nn

from nelib.agents.td3 import frozen


def test_frozen_skips_the_critics_gradient_leaves_the_actors_bit_for_bit_and_restores_each_flag():
    torch.manual_seed(0)
    actor, critic = nn.Linear(3, 2), nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    critic[2].bias.requires_grad_(False)  # an already frozen part (Plasticity Injection's old network) stays so
    obs = torch.randn(5, 3)

    def actor_grad(freeze: bool) -> list[torch.Tensor]:
        actor.zero_grad(set_to_none=True)
        critic.zero_grad(set_to_none=True)
        if freeze:
            with frozen(critic):
                (-critic(actor(obs)).mean()).backward()
        else:
            (-critic(actor(obs)).mean()).backward()
        return [p.grad.clone() for p in actor.parameters()]

    plain = actor_grad(False)
    assert critic[0].weight.grad is not None
    skipped = actor_grad(True)
    assert all(torch.equal(a, b) for a, b in zip(plain, skipped, strict=True))
    assert all(p.grad is None for p in critic.parameters())  # nothing computed for the critic
    assert [p.requires_grad for p in critic.parameters()] == [True, True, True, False]


def test_frozen_restores_the_flags_when_the_block_raises():
    net = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="inside"), frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
        raise RuntimeError("inside")
    assert all(p.requires_grad for p in net.parameters())
