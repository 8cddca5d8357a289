"""The private torch calls behind nelib.torch_ops still compute what nelib relies on (bit for bit)."""

import pytest
import torch

from nelib.torch_ops import Adam, adam_step_, soft_update_, zero_safe_sqrt_applies


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


def _sparse_grads(shape, gen, dtype):
    """Gradients of a masked layer: exact zeros (masked weights), tiny values (second moments that underflow
    to subnormal numbers, in float32 and float64) and ordinary ones, each entry of one kind throughout (by its
    position)."""
    g = torch.randn(shape, generator=gen, dtype=dtype)
    kind = torch.arange(g.numel()).reshape(shape) % 3
    tiny = 1e-20 if dtype == torch.float32 else 1e-160
    return torch.where(kind == 0, torch.zeros_like(g), torch.where(kind == 1, g * tiny, g))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nelib_adam_equals_torch_adam_bit_for_bit_on_masked_gradients(dtype):
    gen = torch.Generator().manual_seed(1)
    ref = [torch.nn.Parameter(torch.randn(16, 8, generator=gen, dtype=dtype)),
           torch.nn.Parameter(torch.randn(16, generator=gen, dtype=dtype))]
    mine = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    torch_opt, nelib_opt = torch.optim.Adam(ref, lr=1e-2), Adam(mine, lr=1e-2)
    assert zero_safe_sqrt_applies(nelib_opt.param_groups[0], mine)  # the CPU path, not torch's, is tested
    for step in range(40):
        grads = [_sparse_grads(p.shape, gen, dtype) for p in ref]
        if step == 7:
            grads[1] = None  # a parameter without a gradient is skipped, as torch skips it
        for p, q, g in zip(ref, mine, grads, strict=True):
            p.grad, q.grad = (None, None) if g is None else (g.clone(), g.clone())
        torch_opt.step()
        nelib_opt.step()
    for p, q in zip(ref, mine, strict=True):
        assert torch.equal(p, q)
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch_opt.state[p][k], nelib_opt.state[q][k])
    v = torch_opt.state[ref[0]]["exp_avg_sq"]
    assert (v == 0).any()  # the zeros the faster square root is for
    assert ((v > 0) & (v < torch.finfo(dtype).tiny)).any()  # and second moments below the floor
    assert torch_opt.state_dict()["param_groups"] == nelib_opt.state_dict()["param_groups"]


def test_adam_step_equals_torch_adam_on_masked_gradients():
    gen = torch.Generator().manual_seed(2)
    ref = [torch.nn.Parameter(torch.randn(3, 6, 4, generator=gen))]
    mine = [p.detach().clone() for p in ref]
    opt = torch.optim.Adam(ref, lr=3e-4)
    exp_avgs, exp_avg_sqs, steps = [torch.zeros_like(mine[0])], [torch.zeros_like(mine[0])], [torch.tensor(0.0)]
    assert zero_safe_sqrt_applies(opt.param_groups[0], mine)
    for _ in range(5):
        g = _sparse_grads(mine[0].shape, gen, torch.float32)
        ref[0].grad = g.clone()
        opt.step()
        adam_step_(mine, [g], exp_avgs, exp_avg_sqs, steps, opt.param_groups[0])
    assert torch.equal(ref[0].detach(), mine[0])
    assert torch.equal(opt.state[ref[0]]["exp_avg_sq"], exp_avg_sqs[0])


@pytest.mark.parametrize("options", [{"amsgrad": True}, {"weight_decay": 0.1}, {"maximize": True},
                                     {"foreach": True}, {"eps": 1e-30}])
def test_nelib_adam_leaves_every_other_configuration_to_torch(options):
    gen = torch.Generator().manual_seed(3)
    ref = [torch.nn.Parameter(torch.randn(5, 4, generator=gen))]
    mine = [torch.nn.Parameter(ref[0].detach().clone())]
    torch_opt, nelib_opt = torch.optim.Adam(ref, lr=1e-2, **options), Adam(mine, lr=1e-2, **options)
    # eps 1e-30 is below what the floor's square root would round away
    assert not zero_safe_sqrt_applies(nelib_opt.param_groups[0], mine)
    for _ in range(4):
        g = _sparse_grads(ref[0].shape, gen, torch.float32)
        ref[0].grad, mine[0].grad = g.clone(), g.clone()
        torch_opt.step()
        nelib_opt.step()
    assert torch.equal(ref[0], mine[0])


def test_nelib_adam_steps_with_a_closure_and_returns_its_loss():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = Adam([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert float(opt.step(closure).detach()) == 5.0
    assert torch.allclose(w.detach(), torch.tensor([0.9, 1.9]))  # Adam's first step moves each entry by lr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nelib_adam_equals_torch_adam_wherever_its_path_applies_near_the_eps_bound(dtype):
    """eps and beta2 on both sides of the bound of zero_safe_sqrt_applies (float32, beta2 0.999: eps > 4.6e-10):
    where the path applies, the bits are torch's."""
    applied = 0
    for eps in (1e-11, 1e-10, 4e-10, 5e-10, 1e-9, 1e-8):
        for beta2 in (0.9, 0.999, 0.99999):
            gen = torch.Generator().manual_seed(4)
            ref = [torch.nn.Parameter(torch.randn(12, 6, generator=gen, dtype=dtype))]
            mine = [torch.nn.Parameter(ref[0].detach().clone())]
            kw = {"lr": 1e-2, "eps": eps, "betas": (0.9, beta2)}
            torch_opt, nelib_opt = torch.optim.Adam(ref, **kw), Adam(mine, **kw)
            applied += zero_safe_sqrt_applies(nelib_opt.param_groups[0], mine)
            for _ in range(6):
                g = _sparse_grads(ref[0].shape, gen, dtype)
                ref[0].grad, mine[0].grad = g.clone(), g.clone()
                torch_opt.step()
                nelib_opt.step()
            assert torch.equal(ref[0], mine[0]), (eps, beta2)
    # float32: eps above 4.6e-11 (beta2 0.9: 5 of 6), above 4.6e-10 (0.999: 3), above 4.6e-9 (0.99999: 1)
    assert applied == (9 if dtype == torch.float32 else 18)
