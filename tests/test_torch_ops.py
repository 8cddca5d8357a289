"""The private torch calls behind nelib.torch_ops still compute what nelib relies on (bit for bit)."""

import torch

from nelib.torch_ops import adam_step_, soft_update_


def test_soft_update_is_the_polyak_average():
    gen = torch.Generator().manual_seed(0)
    targets = [torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen)]
    online = [torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen)]
    expected = [torch.lerp(t, o, 0.005) for t, o in zip(targets, online, strict=True)]
    soft_update_(targets, online, 0.005)
    for t, e in zip(targets, expected, strict=True):
        assert torch.equal(t, e)


def test_adam_step_equals_torch_adam_step_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    ref = [torch.nn.Parameter(torch.randn(6, 4, generator=gen)), torch.nn.Parameter(torch.randn(6, generator=gen))]
    mine = [p.detach().clone() for p in ref]
    opt = torch.optim.Adam(ref, lr=3e-4)
    exp_avgs = [torch.zeros_like(p) for p in mine]
    exp_avg_sqs = [torch.zeros_like(p) for p in mine]
    steps = [torch.tensor(0.0) for _ in mine]
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in mine]
        for p, g in zip(ref, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        adam_step_(mine, grads, exp_avgs, exp_avg_sqs, steps, opt.param_groups[0])
    for p, q in zip(ref, mine, strict=True):
        assert torch.equal(p.detach(), q)
    assert [float(s) for s in steps] == [3.0, 3.0]  # Adam counts the steps up itself
    for p, m, v in zip(ref, exp_avgs, exp_avg_sqs, strict=True):
        assert torch.equal(opt.state[p]["exp_avg"], m) and torch.equal(opt.state[p]["exp_avg_sq"], v)
