"""Vectorized seeds (nelib.runner.vectorized): K seeds trained in one process equal K single runs, bit for bit.

On CPU with one torch thread, every stored column of every seed (returns, losses, dormant ratios, ranks,
densities, grown/pruned counts...) must be *exactly* equal to the single run's; only the timing column
``steps_per_s`` may differ. The batched kernels are chosen to round as a single run's do (see
``_BatchedLinear``); if a platform's BLAS ever rounds batched products differently, these tests say so.
"""

import dataclasses
import json

import pandas as pd
import pytest
import torch
from conftest import FAKE, run_interrupted

import nelib.runner.train as train
from nelib.runner.config import make_config
from nelib.runner.store import ResultStore
from nelib.runner.vectorized import batched_linear, check_group, run_vectorized, seed_groups

# Short runs (200 updates) whose NE topology updates fire (every 20 updates: 10 critic and 5 actor updates of
# the masks), and baselines' intervals short enough to fire too (Reset at 150 updates, ReDo every 100,
# injection at 120).
FAST = dict(steps=300, start_steps=100, eval_every=100, eval_episodes=1, checkpoint_every=0, progress=False,
            threads=1, device="cpu", **{"topology.interval": 20, "reset.interval": 150, "redo.interval": 100,
                                        "injection.update": 120})
SMALL_BATCH = {"agent.batch_size": 64}  # 4x faster; the NE runs keep TD3's batch of 256
TIMING = ["steps_per_s"]


def configs(method, seeds=(0, 1), task=FAKE, **kw):
    return [make_config(task, method, s, "ci", **{**FAST, **kw}) for s in seeds]


def assert_same_runs(singles, vectorized):
    assert len(singles) == len(vectorized)
    for s, v in zip(singles, vectorized, strict=True):
        pd.testing.assert_frame_equal(s.drop(columns=TIMING), v.drop(columns=TIMING), check_exact=True)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method, task", [("td3", FAKE), ("sparse", FAKE), ("ne", FAKE), ("ne", "HalfCheetah-v5")])
def test_vectorized_seeds_equal_single_runs(method, task, tmp_path):
    seeds, kw = ((0, 1, 2), {}) if method == "ne" and task == FAKE else ((0, 1), SMALL_BATCH)
    if task != FAKE:
        seeds, kw = (0, 1), {"steps": 250, "start_steps": 100, "eval_every": 125}
    cfgs = configs(method, seeds, task, **kw)
    singles = [train.run(c, ResultStore(tmp_path / "single")) for c in cfgs]
    store = ResultStore(tmp_path / "vec")
    vectorized = run_vectorized(cfgs, store)
    assert_same_runs(singles, vectorized)
    if method == "ne":  # the short run did grow and prune
        assert all(df["grown"].sum() > 0 for df in vectorized)
    # each seed is a run of its own in the store, with the usual record
    for c, df in zip(cfgs, vectorized, strict=True):
        pd.testing.assert_frame_equal(store.load(c), df, check_dtype=False)
        rec = json.loads(store.json_path(c).read_text())
        assert rec["hash"] == c.hash() and "nelib.runner.vectorized" in rec["command"]


@pytest.mark.parametrize("method", ["reset", "redo", "plasticity-injection", "layernorm", "ne-random-growth"])
def test_vectorized_baselines_equal_single_runs(method, tmp_path):
    cfgs = configs(method, **SMALL_BATCH)
    singles = [train.run(c, ResultStore(tmp_path / "single")) for c in cfgs]
    assert_same_runs(singles, run_vectorized(cfgs, ResultStore(tmp_path / "vec")))


def test_resume_mixes_single_and_vectorized_checkpoints(tmp_path, monkeypatch):
    """Seeds resumed at different steps catch up alone, then train together; a vectorized run's checkpoints
    hold one seed each and resume as single runs."""
    cfgs = configs("ne", checkpoint_every=100, **SMALL_BATCH)
    full = [train.run(c, ResultStore(tmp_path / "full")) for c in cfgs]

    store = ResultStore(tmp_path / "a")  # seed 0 stopped at step 300 (checkpoint at 200), seed 1 not started
    assert run_interrupted(cfgs[0], store, monkeypatch, at_eval=4)["t"] == 200  # killed at the last evaluation
    assert_same_runs(full, run_vectorized(cfgs, store))
    assert not any(store.checkpoint_path(c).exists() for c in cfgs)

    store = ResultStore(tmp_path / "b")  # both seeds stopped together at step 300, resumed as single runs
    real_evaluate, calls = train.evaluate, {"n": 0}

    def dying_evaluate(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 7:  # seed 0's evaluation at step 300
            raise KeyboardInterrupt
        return real_evaluate(*args, **kw)

    monkeypatch.setattr(train, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        run_vectorized(cfgs, store)
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    ckpt = torch.load(store.checkpoint_path(cfgs[1]), weights_only=False)
    weight = ckpt["agent"]["critic"]["q1.2.weight"]
    assert ckpt["t"] == 200 and weight.untyped_storage().nbytes() == weight.numel() * weight.element_size()
    assert_same_runs(full, [train.run(c, store) for c in cfgs])


def test_batched_linear_rounds_as_f_linear():
    """The products of nelib's layer shapes (TD3 on HalfCheetah and the fake env; training batches of 256
    and 64, acting on one row) equal F.linear's seed by seed, forward and backward."""
    g = torch.Generator().manual_seed(0)
    for rows, n_in, n_out in [(256, 23, 256), (256, 256, 256), (256, 256, 1), (256, 256, 6), (256, 17, 256),
                              (1, 17, 256), (1, 256, 6), (1, 256, 1), (256, 4, 256), (1, 3, 256), (64, 4, 256),
                              (64, 256, 256), (64, 256, 1)]:
        x, w, b = (torch.randn(*s, generator=g) for s in ((3, rows, n_in), (3, n_out, n_in), (3, n_out)))
        grad = torch.randn(3, rows, n_out, generator=g)
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        batched_linear(xs, ws, bs).backward(grad)
        for k in range(3):
            xk, wk, bk = (t[k].clone().requires_grad_() for t in (x, w, b))
            y = torch.nn.functional.linear(xk, wk, bk)
            y.backward(grad[k])
            assert torch.equal(batched_linear(x, w, b)[k], y.detach()), (rows, n_in, n_out)
            if rows > 1:  # one row: acting only, no gradients
                for a, ref in ((xs, xk), (ws, wk), (bs, bk)):
                    assert torch.equal(a.grad[k], ref.grad), (rows, n_in, n_out)


def test_only_seed_may_differ():
    a, b = configs("ne")
    check_group([a, b])
    with pytest.raises(ValueError, match="apart from the seed"):
        check_group([a, dataclasses.replace(b, steps=500)])
    with pytest.raises(ValueError, match="distinct seeds"):
        check_group([a, a])
    with pytest.raises(ValueError, match="TD3 tasks only"):
        check_group([make_config("dmc:cartpole-swingup", "drq", 0, "ci")])
    bf16 = [make_config(FAKE, "td3", s, "ci", **{"agent.precision": "bf16"}) for s in (0, 1)]
    with pytest.raises(ValueError, match="fp32 only"):
        check_group(bf16)
    assert seed_groups(bf16, 2) == [[bf16[0]], [bf16[1]]]  # a sweep trains them one per process


def test_seed_groups_and_sweep_integration(tmp_path):
    from nelib.runner.backends import run_configs

    td3 = configs("td3", (0, 1, 2), **SMALL_BATCH, steps=150, eval_every=50)
    ne = configs("ne", (0, 1), **SMALL_BATCH)
    groups = seed_groups([*td3, *ne, make_config("dmc:cartpole-swingup", "drq", 0, "ci")], 2)
    assert [[(c.method, c.seed) for c in g] for g in groups] == [
        [("td3", 0), ("td3", 1)], [("td3", 2)], [("ne", 0), ("ne", 1)], [("drq", 0)]]
    assert seed_groups(td3, 0) == [[c] for c in td3]

    store = ResultStore(tmp_path)
    assert run_configs(td3, store, workers=1, progress=False, vectorize=2) == []
    for c in td3:  # seeds 0 and 1 trained together, seed 2 alone; all stored as usual
        assert len(store.load(c)) == 4
        assert ("nelib.runner.vectorized" in json.loads(store.json_path(c).read_text())["command"]) is (c.seed < 2)
    with pytest.raises(ValueError, match="local backend"):
        run_configs(td3, store, backend="ray", vectorize=2)


def test_batched_losses_of_the_cuda_path_are_close():
    """Off CPU, ``VectorTD3`` reduces all seeds' losses in one kernel: the same update up to float rounding
    (checked here on CPU by switching the per-seed reduction off)."""
    import numpy as np

    from nelib.agents.replay import ReplayBuffer
    from nelib.agents.td3 import TD3, TD3Config
    from nelib.runner.vectorized import VectorTD3

    def agent_and_buffer(seed):
        buffer, rng = ReplayBuffer(3, 1, 500, seed=seed), np.random.default_rng(seed)
        for _ in range(300):
            buffer.add(rng.normal(size=3), rng.uniform(-1, 1, 1), rng.normal(), rng.normal(size=3), False)
        return TD3(3, 1, 1.0, TD3Config(batch_size=64), seed=seed), buffer

    single, batched = [agent_and_buffer(s) for s in (0, 1)], [agent_and_buffer(s) for s in (0, 1)]
    vec = VectorTD3([a for a, _ in batched])
    vec.exact = False
    for _ in range(4):
        expected = [a.train(b) for a, b in single]
        got = vec.train([b for _, b in batched])
        for e, g in zip(expected, got, strict=True):
            assert e.keys() == g.keys() and all(g[k] == pytest.approx(e[k], rel=1e-4) for k in e)
    for (a, _), (b, _) in zip(single, batched, strict=True):
        for p, q in zip(a.actor.parameters(), b.actor.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_cuda_graph_is_refused_off_cuda(tmp_path):
    from nelib.agents.td3 import TD3, TD3Config
    from nelib.runner.preflight import check_training
    from nelib.runner.vectorized import VectorTD3

    with pytest.raises(ValueError, match="CUDA device; these agents are on cpu"):
        VectorTD3([TD3(3, 1, 1.0, TD3Config(), seed=s) for s in (0, 1)], cuda_graph=True)
    cfg = configs("td3", cuda_graph=True)[0]
    assert cfg.hash() == configs("td3")[0].hash()  # how a run executes, not what it computes
    with pytest.raises(ValueError, match="cuda_graph replays updates on a CUDA GPU; this run is on cpu"):
        check_training(cfg, ResultStore(tmp_path))
    with pytest.raises(ValueError, match="python -m nelib.runner.vectorized"):
        train.run(cfg, ResultStore(tmp_path))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("method", ["td3", "ne", "redo"])
def test_cuda_graph_updates_equal_eager_cuda_updates(method):
    """The replayed update equals the eager one up to float rounding, through recaptures after topology
    updates (NE, every 20 updates) and in-place changes between replays (ReDo, every 100)."""
    import numpy as np

    from nelib.agents.replay import ReplayBuffer
    from nelib.runner.algos import build_agent
    from nelib.runner.vectorized import VectorTD3

    cuda = torch.device("cuda")

    def agents_and_buffers():
        out = []
        for cfg in configs(method, (0, 1, 2), device="cuda", **SMALL_BATCH):
            buffer, rng = ReplayBuffer(3, 1, 500, cuda, seed=cfg.seed), np.random.default_rng(cfg.seed)
            for _ in range(300):
                buffer.add(rng.normal(size=3), rng.uniform(-1, 1, 1), rng.normal(), rng.normal(size=3), False)
            out.append((build_agent(cfg, 3, 1, 1.0, cuda), buffer))
        return out

    eager, graphed = agents_and_buffers(), agents_and_buffers()
    vec_e, vec_g = VectorTD3([a for a, _ in eager]), VectorTD3([a for a, _ in graphed], cuda_graph=True)
    for _ in range(150):
        expected, got = vec_e.train([b for _, b in eager]), vec_g.train([b for _, b in graphed])
        for e, g in zip(expected, got, strict=True):
            assert e.keys() == g.keys() and all(g[k] == pytest.approx(e[k], rel=1e-3, abs=1e-5) for k in e)
    assert all(isinstance(s, tuple) and s[0] == "graph" for s in vec_g._graphs.values())  # replaying by now
    for (a, _), (b, _) in zip(eager, graphed, strict=True):
        for net in ("actor", "critic"):
            for p, q in zip(getattr(a, net).parameters(), getattr(b, net).parameters(), strict=True):
                torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)
