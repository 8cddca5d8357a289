"""The runner with DrQ on pixels: methods, determinism, resume, config rules, one real dm_control run."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAKE_PIXELS

import nelib.runner.train as train
from nelib.envs.dmc import DMCEnv, default_action_repeat, parse_task
from nelib.runner.config import make_config
from nelib.runner.experiments import EXPERIMENTS, experiment_configs
from nelib.runner.methods import SUPERSEDED
from nelib.runner.store import ResultStore, StaleResult

# Tiny images and networks: the runner, not the networks' size, is under test here.
PIXELS = dict(steps=60, start_steps=20, eval_every=30, eval_episodes=1, checkpoint_every=0, progress=False,
              threads=1, device="cpu", metrics_batch=32,
              **{"drq.image_size": 36, "drq.hidden_dim": 32, "drq.batch_size": 8, "topology.interval": 5,
                 "reset.interval": 15, "redo.interval": 15})
TIMING = ["steps_per_s"]
ROOT = Path(__file__).resolve().parent.parent


def pixel_config(method="ne", seed=0, **kw):
    return make_config(FAKE_PIXELS, method, seed, "ci", **{**PIXELS, **kw})


@pytest.mark.parametrize("method", ["drq", "ne", "reset", "redo"])
def test_cli_runs_each_dmc_method_on_the_fake_pixel_env(method, tmp_path, capsys):
    args = [f"--{k}={v}" for k, v in PIXELS.items()]
    train.main(["--task", FAKE_PIXELS, "--method", method, "--preset", "ci", "--data-dir", str(tmp_path), *args])
    assert f"{method} {FAKE_PIXELS} seed 0: return" in capsys.readouterr().out
    df = pd.read_csv(tmp_path / "runs" / "ci" / FAKE_PIXELS / method / "seed0.csv")
    assert df["step"].tolist() == [0, 30, 60] and df["frames"].tolist() == [0, 60, 120]  # action repeat 2
    last = df.iloc[-1]
    assert 0 <= last["encoder_dormant_0.1"] <= 1 and 0 <= last["critic_active_ratio"] <= 1
    if method == "ne":
        assert df["grown"].sum() > 0 and 0.2 < last["critic_density"] < 1
    else:
        assert last["critic_density"] == 1.0


def test_reset_keeps_the_encoder_and_redo_recycles_conv_channels(monkeypatch):
    from nelib.baselines.redo import RedoIntervention
    from nelib.baselines.reset import ResetIntervention

    agent = train.build_agent(pixel_config("reset"), (9, 36, 36), 2, 1.0, "cpu")
    reset = next(iv for iv in agent.interventions if isinstance(iv, ResetIntervention))
    agent.updates = 15
    before = {k: v.clone() for k, v in agent.critic.state_dict().items()}
    actor_before = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    obs = torch.rand(8, 9, 36, 36)
    reset.after_update(agent, obs, torch.zeros(8, 2))
    after, actor_after = agent.critic.state_dict(), agent.actor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert all(torch.equal(actor_before[k], actor_after[k]) for k in actor_before if k.startswith("encoder_head."))
    assert not torch.equal(before["q1.0.weight"], after["q1.0.weight"])
    assert not torch.equal(actor_before["trunk.0.weight"], actor_after["trunk.0.weight"])
    assert torch.equal(agent.critic_target.state_dict()["q1.0.weight"], after["q1.0.weight"])

    agent = train.build_agent(pixel_config("redo"), (9, 36, 36), 2, 1.0, "cpu")
    redo = next(iv for iv in agent.interventions if isinstance(iv, RedoIntervention))
    with torch.no_grad():  # silence conv channel 3 of the first layer
        agent.critic.encoder.convs[0].weight[3] = 0.0
        agent.critic.encoder.convs[0].bias[3] = -1.0
    agent.updates = 15
    redo.after_update(agent, obs, torch.zeros(8, 2))
    conv = agent.critic.encoder.convs
    assert torch.all(conv[0].weight[3] != 0) and torch.all(conv[2].weight[:, 3] == 0)
    assert redo.recycled["critic"] >= 1


def test_dmc_runs_are_deterministic_and_resume_exactly(store, tmp_path, monkeypatch):
    cfg = pixel_config(checkpoint_every=20)
    full = train.run(cfg, ResultStore(tmp_path / "full"))
    again = train.run(cfg, ResultStore(tmp_path / "again"))
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), again.drop(columns=TIMING))

    calls = {"n": 0}
    real_evaluate = train.evaluate

    def dying_evaluate(*args, **kw):  # the 3rd evaluation (step 60) "kills" the process
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kw)

    monkeypatch.setattr(train, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, store)
    assert torch.load(store.checkpoint_path(cfg), weights_only=False)["t"] == 40
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    resumed = train.run(cfg, store)
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING))


def test_dmc_config_rules_and_preset_scale():
    cfg = make_config("dmc:cheetah-run", "ne", 0, "laptop")
    assert cfg.algo == "drq" and cfg.buffer_size == 100_000 and cfg.expansion
    assert cfg.steps * default_action_repeat("dmc:cheetah-run") == 20_000  # the preset counts frames
    walker = make_config("dmc:walker-walk", "drq", 0, "laptop")
    assert walker.steps == 10_000 and walker.drq.batch_size == 128 and walker.drq.lr == 1e-3
    assert make_config("dmc:cheetah-run", "drq", 0, "laptop", **{"drq.action_repeat": 8}).steps == 2_500
    with pytest.raises(ValueError, match="method 'td3' is for td3 tasks only"):
        make_config("dmc:cheetah-run", "td3")
    with pytest.raises(ValueError, match="method 'drq' is for drq tasks only"):
        make_config("HalfCheetah-v5", "drq")
    with pytest.raises(ValueError, match="needs algo 'drq'"):
        make_config("dmc:cheetah-run", "ne", algo="td3")
    assert parse_task("dmc:ball_in_cup-catch") == ("ball_in_cup", "catch")
    assert default_action_repeat("dmc:cartpole-swingup") == 8 and default_action_repeat("dmc:finger-spin") == 2


@pytest.mark.parametrize("args, message", [
    (["--task", "dmc:cheetah-fly"], "unknown DeepMind Control task 'dmc:cheetah-fly'"),
    (["--task", "dmc:cheetah"], "expected dmc:<domain>-<task>"),
    (["--task", "dmc:cheetah-run", "--method", "plasticity-injection"], "is for td3 tasks only"),
])
def test_bad_dmc_input_gives_one_line_errors(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main([*args, "--data-dir", str(tmp_path), "--progress", "0"])
    text = str(exc.value.code) if not isinstance(exc.value.code, int) else capsys.readouterr().err
    assert message in text and text.strip().count("\n") == 0


def test_td3_hashes_are_unchanged_and_committed_results_still_load():
    # TD3 hashes leave out the DrQ fields: this is the hash the laptop TD3 config had before DrQ existed.
    assert make_config("HalfCheetah-v5", "td3", 0, "laptop").hash() == "cc81bcc3beee"
    # Every committed run still loads under the config its experiment builds now (notebooks load them so), or
    # is stale: trained by the earlier definition of a method that SUPERSEDED lists, differing in nothing else.
    store = ResultStore(ROOT / "data")
    paths = sorted((ROOT / "data" / "runs").glob("*/*/*/seed*.json"))
    assert paths
    made = {(c.preset, c.task, c.method, c.variant, c.seed): c for preset in {p.parts[-4] for p in paths}
            for name in EXPERIMENTS for c in experiment_configs(name, preset)}
    for path in paths:
        stored = json.loads(path.read_text())["config"]
        key = (stored["preset"], stored["task"], stored["method"], stored.get("variant", ""), stored["seed"])
        assert key in made, f"{path}: no experiment makes this run"
        try:
            assert store.load(made[key]) is not None, path
        except StaleResult:
            assert stored["method"] in SUPERSEDED, path


def test_real_dm_control_run_with_rendering(store):
    """One short real run: cartpole swing-up rendered headlessly at 84x84 (frame stack 3, action repeat 8)."""
    env = DMCEnv("dmc:cartpole-swingup")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8 and obs.std() > 0  # a real picture
    obs2, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
    assert not terminated and not truncated and np.array_equal(obs2[:6], obs[3:]) and 0 <= reward <= 8
    state = env.rng_state()
    a, _ = env.reset()
    env.set_rng_state(state)
    assert np.array_equal(env.reset()[0], a)  # the task's random state is what decides the initial state
    cfg = make_config("dmc:cartpole-swingup", "drq", 0, "ci", steps=30, start_steps=20, eval_every=30,
                      eval_episodes=1, checkpoint_every=0, progress=False, threads=1, device="cpu",
                      metrics_batch=16, **{"drq.batch_size": 8, "drq.hidden_dim": 64, "topology.interval": 5,
                                           "drq.action_repeat": 16})  # 63-step episodes: fewer renders
    df = train.run(cfg, store)
    assert df["step"].tolist() == [0, 30] and df["frames"].tolist() == [0, 480]
    assert np.isfinite(df["return_mean"]).all() and np.isfinite(df["critic_loss"].iloc[-1])
    assert 0 < df["encoder_active_ratio"].iloc[-1] <= 1
