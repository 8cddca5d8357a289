"""bf16 matrix products (``agent.precision bf16``): what stays fp32, that it learns the same thing up to
rounding, that fp32 is untouched, and the errors where bf16 cannot run."""

import json

import numpy as np
import pytest
import torch
from conftest import FAKE

import nelib.agents.td3 as td3
import nelib.runner.train as train
from nelib.agents.networks import HeadLinear, TwinCritic
from nelib.agents.replay import ReplayBuffer
from nelib.runner.config import make_config
from nelib.torch_ops import bf16_matmul_supported

needs_bf16 = pytest.mark.skipif(not bf16_matmul_supported("cpu"),
                                reason="this CPU has no bf16 matrix units")


def _buffer(obs_dim=5, act_dim=2, n=400):
    buf = ReplayBuffer(obs_dim, act_dim, n, "cpu", seed=0)
    rng = np.random.default_rng(0)
    for _ in range(n):
        buf.add(rng.normal(size=obs_dim).astype(np.float32), rng.uniform(-1, 1, act_dim).astype(np.float32),
                float(rng.normal()), rng.normal(size=obs_dim).astype(np.float32), False)
    return buf


def _agent(precision, method="td3"):
    cfg = make_config(FAKE, method, 0, "ci", **{"agent.precision": precision, "agent.batch_size": 32})
    return train.build_agent(cfg, 5, 2, 1.0, "cpu")


def test_default_precision_keeps_every_config_hash():
    cfg = make_config("HalfCheetah-v5", "td3", 0, "laptop")
    assert cfg.agent.precision == "fp32"
    assert make_config("HalfCheetah-v5", "td3", 0, "laptop", **{"agent.precision": "bf16"}).hash() != cfg.hash()


@needs_bf16
def test_head_multiplies_in_fp32_under_autocast_and_hidden_layers_in_bf16():
    torch.manual_seed(0)
    critic = TwinCritic(5, 2, (8, 8))
    seen = {}
    hidden = critic.q1[0]
    hidden.register_forward_hook(lambda m, i, o: seen.update(hidden=o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q1, _ = critic(torch.randn(4, 5), torch.randn(4, 2))
    assert isinstance(critic.q1[-1], HeadLinear)
    assert seen["hidden"] == torch.bfloat16 and q1.dtype == torch.float32
    # Outside autocast the head is an ordinary masked linear layer.
    x = torch.randn(3, 8)
    head = critic.q1[-1]
    assert torch.equal(head(x), torch.nn.functional.linear(x, head.weight, head.bias))


@needs_bf16
@pytest.mark.parametrize("method", ["td3", "ne"])
def test_bf16_update_stays_close_to_fp32_and_keeps_fp32_state(method):
    buf = _buffer()
    a32, a16 = _agent("fp32", method), _agent("bf16", method)
    for _ in range(20):
        l32, l16 = a32.train(buf), a16.train(buf)
    assert np.isfinite(l16["critic_loss"])
    assert abs(l16["critic_loss"] - l32["critic_loss"]) < 0.1 * abs(l32["critic_loss"]) + 0.05
    assert all(p.dtype == torch.float32 for p in a16.critic.parameters())
    exp_avg = a16.critic_opt.state[next(iter(a16.critic.parameters()))]["exp_avg"]
    assert exp_avg.dtype == torch.float32
    diffs = [(p - q).abs().max().item() for p, q in zip(a32.critic.parameters(), a16.critic.parameters(), strict=True)]
    assert 0 < max(diffs) < 1e-2  # rounding differs, training does not diverge


def test_bf16_without_hardware_support_is_one_line_error(monkeypatch):
    monkeypatch.setattr(td3, "bf16_matmul_supported", lambda device: False)
    with pytest.raises(ValueError, match="agent.precision bf16 needs bf16 matrix units.*use fp32"):
        td3.check_precision("bf16", torch.device("cpu"))
    td3.check_precision("fp32", torch.device("cpu"))  # fp32 runs anywhere


def test_bf16_run_on_a_cpu_without_support_stops_before_training(monkeypatch, tmp_path):
    monkeypatch.setattr(td3, "bf16_matmul_supported", lambda device: False)
    with pytest.raises(SystemExit, match="needs bf16 matrix units"):
        train.main(["--task", FAKE, "--preset", "ci", "--agent.precision", "bf16", "--data-dir", str(tmp_path)])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.csv"))


def test_unknown_precision_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--task", FAKE, "--preset", "ci", "--agent.precision", "fp16", "--data-dir", str(tmp_path)])
    assert "agent.precision must be one of ('fp32', 'bf16'), got 'fp16'" in capsys.readouterr().err


@needs_bf16
def test_a_bf16_run_records_its_precision(tmp_path):
    train.main(["--task", FAKE, "--preset", "ci", "--steps", "200", "--start_steps", "100", "--eval_every", "100",
                "--eval_episodes", "1", "--progress", "0", "--agent.precision", "bf16", "--data-dir", str(tmp_path)])
    rec = json.loads(next((tmp_path / "runs").rglob("seed0.json")).read_text())
    assert rec["config"]["agent"]["precision"] == "bf16"


def test_cpu_bf16_needs_avx512_bf16_or_amx(monkeypatch):
    import nelib.torch_ops as ops
    for flags, expected in (({"avx2"}, False), ({"avx512f", "avx512bw"}, False), ({"avx512f", "avx512_bf16"}, True),
                            ({"amx_bf16"}, True)):
        monkeypatch.setattr(ops, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert ops.bf16_matmul_supported("cpu") is expected
    assert ops.bf16_matmul_supported("mps") is False
