"""The TD3 runner: CLI smoke runs, determinism, resume, terminal handling, results store, bad input."""

import json

import pandas as pd
import pytest
import torch
from conftest import FAKE, FAKE_TERMINAL, run_interrupted

import nelib.runner.train as train
from nelib.agents.replay import ReplayBuffer
from nelib.runner.config import make_config
from nelib.runner.methods import ALGO_ONLY, METHODS
from nelib.runner.store import ResultMismatch

FAST = dict(steps=600, start_steps=100, eval_every=200, eval_episodes=1, checkpoint_every=0, progress=False,
            threads=1, device="cpu", **{"topology.interval": 20})
# Columns that measure time, not results.
TIMING = ["steps_per_s"]


def fast_config(method="ne", task=FAKE, seed=0, **kw):
    return make_config(task, method, seed, "ci", **{**FAST, **kw})


@pytest.mark.parametrize("method", sorted(m for m in METHODS if ALGO_ONLY.get(m, "td3") == "td3"))  # DrQ: test_dmc
def test_cli_smoke_each_method_on_halfcheetah(method, tmp_path, capsys):
    train.main(["--task", "HalfCheetah-v5", "--method", method, "--preset", "ci", "--steps", "300",
                "--start_steps", "150", "--eval_every", "150", "--eval_episodes", "1", "--progress", "0",
                "--topology.interval", "20", "--reset.interval", "50", "--redo.interval", "50",
                "--data-dir", str(tmp_path)])  # baselines' intervals short enough to fire (injection: update 75)
    assert f"{method} HalfCheetah-v5 seed 0: return" in capsys.readouterr().out
    df = pd.read_csv(tmp_path / "runs" / "ci" / "HalfCheetah-v5" / method / "seed0.csv")
    assert df["step"].tolist() == [0, 150, 300]
    rec = json.loads((tmp_path / "runs" / "ci" / "HalfCheetah-v5" / method / "seed0.json").read_text())
    assert rec["config"]["method"] == method and len(rec["hash"]) == 12 and rec["commit"]
    assert rec["platform"] == f"torch {torch.__version__}, cpu ({train.cpu_model()})"
    last = df.iloc[-1]
    assert 0 <= last["critic_dormant_0"] <= 1 and 0 <= last["actor_active_ratio"] <= 1
    cfg = make_config("HalfCheetah-v5", method)
    assert df["review_share"].dropna().between(0, 1).all()  # share of trigger checks with review on
    if not cfg.expansion:
        assert df["review_share"].isna().all()
    if cfg.redo.enabled:  # recycles at updates 50, 100, 150: all after the evaluation at step 150
        assert df["critic_recycled"].tolist()[1:] == [0, df["critic_recycled"].iloc[-1]]
        assert df["critic_dormant_before_recycle"].isna().tolist() == [True, True, False]
        assert 0 <= last["critic_dormant_before_recycle"] <= 1 and 0 <= last["actor_dormant_before_recycle"] <= 1
    else:
        assert "critic_dormant_before_recycle" not in df
    if cfg.expansion:
        assert df["grown"].sum() > 0 and last["critic_density"] > 0.2
    elif cfg.sparsity.density < 1:
        assert last["critic_density"] == pytest.approx(0.2, abs=0.01) and df["grown"].sum() == 0
    else:
        assert last["critic_density"] == 1.0


def test_runs_are_deterministic_on_cpu(store, tmp_path):
    from nelib.runner.store import ResultStore

    a = train.run(fast_config(), store)
    b = train.run(fast_config(), ResultStore(tmp_path / "other"))
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))
    c = train.run(fast_config(seed=1), store)
    assert not a["critic_loss"].iloc[-1:].equals(c["critic_loss"].iloc[-1:])


def test_resume_after_interruption_equals_uninterrupted_run(store, tmp_path, monkeypatch):
    from nelib.runner.store import ResultStore

    cfg = fast_config(checkpoint_every=200)
    full = train.run(cfg, ResultStore(tmp_path / "full"))

    ckpt = run_interrupted(cfg, store, monkeypatch, at_eval=4)  # killed at the step-600 evaluation
    assert ckpt["t"] == 400 and not store.csv_path(cfg).exists()
    resumed = train.run(cfg, store)
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING))
    assert not store.checkpoint_path(cfg).exists()


def test_a_checkpoint_that_keeps_topology_counts_in_the_agent_resumes_alike(store, tmp_path, monkeypatch):
    """Checkpoints written before the runner counted topology changes keep the current evaluation window's
    counts in the agent's state (``topology_log``): the run takes them over and ends as if uninterrupted."""
    from nelib.runner.store import ResultStore

    cfg = fast_config(checkpoint_every=200, eval_every=300)
    full = train.run(cfg, ResultStore(tmp_path / "full"))
    ckpt = run_interrupted(cfg, store, monkeypatch, at_eval=3)  # killed at the step-600 evaluation
    assert ckpt["t"] == 400 and ckpt["topology_counts"]["grown"] > 0  # counted since the step-300 evaluation
    ckpt["agent"]["topology_log"] = ckpt.pop("topology_counts")  # the old layout
    torch.save(ckpt, store.checkpoint_path(cfg))
    resumed = train.run(cfg, store)
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING))


@pytest.mark.parametrize("task, expected", [(FAKE, False), (FAKE_TERMINAL, True)])
def test_only_true_terminals_stop_bootstrapping(task, expected, store, monkeypatch):
    seen = []
    real_add = ReplayBuffer.add

    def recording_add(self, obs, action, reward, next_obs, terminated):
        seen.append(terminated)
        real_add(self, obs, action, reward, next_obs, terminated)

    monkeypatch.setattr(ReplayBuffer, "add", recording_add)
    train.run(fast_config("td3", task=task, steps=120, start_steps=120, eval_every=120), store)
    # FAKE is truncated by its 50-step time limit (never terminal); FAKE_TERMINAL terminates every 3rd step
    assert any(seen) is expected
    if expected:
        assert seen[:6] == [False, False, True, False, False, True]


def test_store_reuses_same_hash_and_refuses_a_different_one(store, monkeypatch):
    cfg = fast_config("td3", steps=200, eval_every=100)
    first = train.run(cfg, store)
    monkeypatch.setattr(train, "build_agent", lambda *a, **k: pytest.fail("a stored run was re-run"))
    pd.testing.assert_frame_equal(first, train.run(cfg, store))
    other = fast_config("td3", steps=200, eval_every=100, **{"agent.lr": 1e-3})
    assert other.hash() != cfg.hash()
    with pytest.raises(ResultMismatch, match="overwrite"):
        train.run(other, store)
    assert json.loads(store.json_path(cfg).read_text())["hash"] == cfg.hash()  # nothing overwritten
    monkeypatch.undo()
    train.run(other, store, overwrite=True)
    assert json.loads(store.json_path(cfg).read_text())["hash"] == other.hash()
    # execution-only fields do not change the hash
    assert fast_config("td3", threads=2, device="cuda").hash() == fast_config("td3").hash()


def test_commit_outside_a_git_checkout_comes_from_the_environment(tmp_path, monkeypatch):
    from nelib.runner import store as store_mod
    monkeypatch.setattr(store_mod, "REPO", tmp_path)  # a copy of the code without .git
    monkeypatch.delenv("NELIB_COMMIT", raising=False)
    assert store_mod.git_commit() == "unknown"
    monkeypatch.setenv("NELIB_COMMIT", "abc1234")
    assert store_mod.git_commit() == "abc1234"


def test_corrupt_record_is_said_in_one_line_and_counts_as_missing(store, capsys):
    cfg = fast_config("td3", steps=200, eval_every=100)
    store.json_path(cfg).parent.mkdir(parents=True)
    store.json_path(cfg).write_text("{not json")
    train.run(cfg, store)  # re-trained, and the record replaced
    err = capsys.readouterr().err
    assert err.startswith(f"nelib: {store.json_path(cfg)} is damaged (not a result record: ") and err.count("\n") == 1
    assert json.loads(store.json_path(cfg).read_text())["hash"] == cfg.hash()


def test_incompatible_checkpoint_is_refused_and_kept(store):
    cfg = fast_config("td3")
    path = store.checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    torch.save({"hash": "0123456789ab"}, path)
    with pytest.raises(ValueError, match="another config"):
        train.run(cfg, store)
    assert torch.load(path, weights_only=False) == {"hash": "0123456789ab"}


@pytest.mark.parametrize("args, message", [
    (["--task", "NoSuchTask-v5"], "unknown task 'NoSuchTask-v5'"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--steps", "0"], "steps must be > 0"),
    (["--agent.lr", "fast"], "bad value 'fast' for agent.lr"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--topology.growth.criterion", "psychic"], "growth.criterion must be one of"),
])
def test_bad_input_gives_one_line_errors(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main([*args, "--data-dir", str(tmp_path), "--progress", "0"])
    text = str(exc.value.code) if not isinstance(exc.value.code, int) else capsys.readouterr().err
    assert message in text and text.strip().count("\n") == 0
    assert not (tmp_path / "runs").exists()


def test_unknown_config_field_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--agent.nope", "1", "--data-dir", str(tmp_path)])
    assert "unknown option --agent.nope; the closest is --agent." in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown config field 'agent.nope'"):
        make_config(**{"agent__nope": 1})


def test_a_run_of_an_earlier_method_definition_is_stale_not_shown_and_not_retrained(store, monkeypatch):
    import dataclasses

    from nelib.runner.store import StaleResult, is_stale_record

    old = fast_config("ne-fast")
    rows = train.run(old, store)
    # file it under `ne`, as runs trained before `ne` changed are stored
    stale = dataclasses.replace(old, method="ne")
    store.save(stale, rows, 1.0)
    assert is_stale_record(store.record(stale))
    with pytest.raises(StaleResult, match="stale: trained by the earlier definition of 'ne'.*--overwrite"):
        store.load(fast_config())
    # runs of the method's current definition, and of methods that never changed, are not stale
    assert not is_stale_record({"config": fast_config().to_dict()})
    assert not is_stale_record({"config": fast_config("ne", **{"sparsity.density": 0.1}).to_dict()})
    assert not is_stale_record({"config": fast_config("td3", **{"agent.lr": 1e-3}).to_dict()})
    assert is_stale_record({"config": dataclasses.replace(fast_config("ne-fast", **{"sparsity.density": 0.1}),
                                                          method="ne").to_dict()})
    from nelib.runner.backends import run_configs
    monkeypatch.setattr(train, "build_agent", lambda *a, **k: pytest.fail("a stale run was re-trained"))
    failures = run_configs([fast_config()], store, workers=1, progress=False)
    assert len(failures) == 1 and "stale" in failures[0][1]


def test_ne_official_grows_the_critic_only_from_its_largest_initial_weights(store):
    cfg = make_config("HalfCheetah-v5", "ne-official")
    agent = train.build_agent(cfg, 17, 6, 1.0, "cpu")
    assert set(agent.topology) == {"critic"}  # the actor keeps its initial 20%
    assert len(agent.critic.q1) > len(agent.actor.net)  # the official 256-256-256 critic
    from nelib.sparse.masks import density_report
    from nelib.sparse.official import OfficialTopologyScheduler
    assert isinstance(agent.topology["critic"], OfficialTopologyScheduler)
    assert density_report(agent.actor)["density"] == pytest.approx(0.2, abs=0.01)
    df = train.run(fast_config("ne-official", **{"topology.growth.target_density": 0.25}), store)
    assert df["actor_density"].dropna().nunique() == 1 and df["critic_density"].iloc[-1] > df["critic_density"].iloc[1]


def test_topology_trace_shows_each_schedule_without_training():
    from nelib.report.topology_trace import topology_trace

    trace = topology_trace("ne", preset="ci", batch=16, **{"topology.interval": 50})
    assert set(trace["net"]) == {"actor", "critic"}
    critic = trace[trace["net"] == "critic"]
    assert critic["update"].tolist() == list(range(50, 1_001, 50))  # 1,000 updates after 1,000 random steps
    assert critic["density"].is_monotonic_increasing and critic["density"].iloc[-1] == pytest.approx(1.0, abs=0.01)
    assert (critic["step"] == 1_000 + critic["update"]).all()
    official = topology_trace("ne-official", preset="ci", batch=16, **{"topology.interval": 50})
    assert set(official["net"]) == {"critic"}  # the actor stays static
    with pytest.raises(ValueError, match="no topology updates"):
        topology_trace("td3", preset="ci")


def test_differing_fields_lists_the_hashed_fields_two_configs_differ_in():
    from nelib.runner import schema
    from nelib.runner.config import fields

    a = make_config("HalfCheetah-v5", "ne", 0, "ci")
    b = make_config("HalfCheetah-v5", "ne", 1, "ci", threads=2, **{"review.window": 7, "topology.rewire_fraction": 0.2})
    assert schema.differing_fields(a.to_dict(), b.to_dict()) == ["review.window", "seed", "topology.rewire_fraction"]
    assert schema.differing_fields(a.to_dict(), a.to_dict()) == []  # threads is not hashed: not listed above
    assert schema.flat({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    fields().clear()  # fields() is cached: a caller's copy, not the cache
    assert "review.window" in fields()


def test_is_record_of_accepts_the_same_hash_or_an_older_record_of_the_same_config_only():
    from nelib.runner.store import is_record_of

    cfg = make_config("HalfCheetah-v5", "td3", 0, "ci")
    older = cfg.to_dict()
    del older["agent"]["precision"]  # stored before the field existed; its default keeps the old behaviour
    assert is_record_of({"hash": cfg.hash(), "config": {}}, cfg)
    assert is_record_of({"hash": "0" * 12, "config": older}, cfg)
    other = make_config("HalfCheetah-v5", "td3", 1, "ci").to_dict()
    assert not is_record_of({"hash": "0" * 12, "config": other}, cfg)
    assert not is_record_of({"hash": "0" * 12}, cfg)
