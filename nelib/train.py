"""Train one agent: ``nelib.run(config)`` from Python, ``python -m nelib.train ...`` from the shell.

A run evaluates every ``eval_every`` steps (and at step 0), writes its rows to the results store,
and checkpoints everything it needs to resume (agent, optimizers, masks, replay buffer, RNG states)
at the first episode end after every ``checkpoint_every`` steps. Restarted with the same command, it
continues from the checkpoint and, on CPU, ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nelib import presets
from nelib.config import TrainConfig, fields, make_config
from nelib.cyclic import CyclicEnv
from nelib.drq import DrQ
from nelib.envs import check_task, make_env
from nelib.injection import InjectionIntervention
from nelib.methods import METHODS
from nelib.pixel_replay import PixelReplayBuffer
from nelib.redo import RedoIntervention
from nelib.replay import ReplayBuffer
from nelib.reset import ResetIntervention
from nelib.store import ResultStore, atomic_write, git_commit
from nelib.td3 import TD3


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_agent(cfg: TrainConfig, obs_dim, act_dim: int, max_action: float, device) -> TD3 | DrQ:
    """The agent that ``cfg`` describes, TD3 or DrQ (``cfg.algo``; for DrQ ``obs_dim`` is the image shape),
    with NE operators attached when ``cfg.expansion`` and baselines' interventions when enabled."""
    total_updates = max(1, cfg.steps - cfg.start_steps)
    ne = {"topology": cfg.topology if cfg.expansion else None, "review": cfg.review if cfg.expansion else None,
          "total_updates": total_updates, "device": device, "seed": cfg.seed}
    if cfg.algo == "drq":
        if cfg.injection.enabled:
            raise ValueError("plasticity injection is implemented for TD3 only")
        agent = DrQ(tuple(obs_dim), act_dim, cfg.drq, cfg.sparsity, **ne)
    else:
        agent = TD3(obs_dim, act_dim, max_action, cfg.agent, cfg.sparsity, **ne)
    # Interventions draw from their own generators (seed + 3), so they never shift the other streams.
    if cfg.reset.enabled:
        agent.interventions.append(ResetIntervention(cfg.reset, seed=cfg.seed + 3))
    if cfg.redo.enabled:
        agent.interventions.append(RedoIntervention(cfg.redo, seed=cfg.seed + 3))
    if cfg.injection.enabled:
        if cfg.expansion:
            raise ValueError("plasticity injection changes the networks' structure; it does not combine with NE")
        agent.interventions.append(InjectionIntervention(cfg.injection, total_updates, seed=cfg.seed + 3))
    return agent


def make_buffer(cfg: TrainConfig, env, device) -> ReplayBuffer | PixelReplayBuffer:
    """The replay buffer of a run: flat observations (TD3), or single uint8 frames stacked on sampling (DrQ)."""
    act_dim, capacity = env.action_space.shape[0], min(cfg.buffer_size, cfg.steps)
    if cfg.algo == "drq":
        e = env.unwrapped
        frame_shape = (env.observation_space.shape[0] // e.frame_stack, *env.observation_space.shape[1:])
        return PixelReplayBuffer(frame_shape, e.frame_stack, act_dim, capacity, device, seed=cfg.seed)
    return ReplayBuffer(env.observation_space.shape[0], act_dim, capacity, device, seed=cfg.seed)


def env_rng_state(env):
    """The training env's random state, for checkpoints (gymnasium: its ``np_random``)."""
    base = env.unwrapped
    return base.rng_state() if hasattr(base, "rng_state") else base.np_random.bit_generator.state


def set_env_rng_state(env, state) -> None:
    base = env.unwrapped
    if hasattr(base, "set_rng_state"):
        base.set_rng_state(state)
    else:
        base.np_random.bit_generator.state = state


def evaluate(agent: TD3 | DrQ, env, episodes: int, seed: int) -> tuple[float, float]:
    """Mean and std of the return of ``episodes`` deterministic episodes (first reset seeded ``seed``)."""
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed if ep == 0 else None)
        done, total = False, 0.0
        while not done:
            obs, r, terminated, truncated, _ = env.step(agent.select_action(obs))
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


def run(cfg: TrainConfig, store: ResultStore | None = None, overwrite: bool = False,
        command: str | None = None) -> pd.DataFrame:
    """Train (or load, if stored with the same config hash) one run; return its evaluation rows.

    ``command`` is what the results record says produced the run (default: this process's command line).
    """
    check_task(cfg.task)
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; known methods: {', '.join(METHODS)}")
    store = store or ResultStore()
    done_rows = store.load(cfg, overwrite=overwrite)
    if done_rows is not None:
        return done_rows
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    pixels = {"action_repeat": cfg.drq.action_repeat, "frame_stack": cfg.drq.frame_stack,
              "image_size": cfg.drq.image_size} if cfg.algo == "drq" else {}
    env, eval_env = make_env(cfg.task, **pixels), make_env(cfg.task, **pixels)
    obs_shape, act_dim = env.observation_space.shape, env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    max_action = float(high[0])
    agent = build_agent(cfg, obs_shape if cfg.algo == "drq" else obs_shape[0], act_dim, max_action, device)
    buffer = make_buffer(cfg, env, device)
    frames_per_step = env.unwrapped.action_repeat if cfg.algo == "drq" else None  # DMC rows also count frames
    rng = np.random.default_rng(cfg.seed)
    metric_gen = torch.Generator().manual_seed(cfg.seed + 2)

    t, rows, wall_before, commit = 0, [], 0.0, git_commit()
    episode_return, last_return, episodes = 0.0, float("nan"), 0
    obs, _ = env.reset(seed=cfg.seed)
    needs_reset = False
    ckpt_path = store.checkpoint_path(cfg)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt.get("hash") != cfg.hash():
            raise ValueError(f"checkpoint {ckpt_path} was written by another config (hash {ckpt.get('hash')}, "
                             f"now {cfg.hash()}); delete it to start over")
        agent.load_state_dict(ckpt["agent"])
        buffer.load_state_dict(ckpt["buffer"])
        rng.bit_generator.state = ckpt["rng"]
        metric_gen.set_state(ckpt["metric_gen"].cpu())  # map_location moved it; generator states live on the CPU
        set_env_rng_state(env, ckpt["env_rng"])
        if ckpt.get("env_state") is not None:
            env.unwrapped.load_state_dict(ckpt["env_state"])
        t, rows, wall_before, commit = ckpt["t"], ckpt["rows"], ckpt["wall_time_s"], ckpt["commit"]
        last_return, episodes = ckpt["last_return"], ckpt["episodes"]
        needs_reset = True

    def checkpoint():
        state = {"hash": cfg.hash(), "agent": agent.state_dict(), "buffer": buffer.state_dict(),
                 "rng": rng.bit_generator.state, "metric_gen": metric_gen.get_state(),
                 "env_rng": env_rng_state(env), "t": t, "rows": rows,
                 "env_state": env.unwrapped.state_dict() if isinstance(env.unwrapped, CyclicEnv) else None,
                 "wall_time_s": wall_before + time.perf_counter() - start, "last_return": last_return,
                 "episodes": episodes, "commit": commit}
        atomic_write(ckpt_path, lambda p: torch.save(state, p))

    cyclic_env = isinstance(env.unwrapped, CyclicEnv)

    def evaluate_row(sps: float):
        if cyclic_env:  # evaluate on the task being trained now
            eval_env.unwrapped.load_state_dict({"stage": env.unwrapped.stage, "visit_steps": 0})
        ret_mean, ret_std = evaluate(agent, eval_env, cfg.eval_episodes, cfg.seed + 100)
        row = {"step": t, **({"frames": t * frames_per_step} if frames_per_step else {}),
               "return_mean": ret_mean, "return_std": ret_std, "episodes": episodes,
               **({"task_now": env.unwrapped.task, "stage": env.unwrapped.stage} if cyclic_env else {}),
               "train_return": last_return, "review": bool(agent.review and agent.review.active),
               "review_rate": agent.review.rate if agent.review and agent.review.rate is not None else float("nan"),
               **agent.topology_log, "steps_per_s": sps, **losses}
        if buffer.size:
            row.update(agent.plasticity(*buffer.metrics_batch(cfg.metrics_batch, metric_gen)))
        agent.topology_log = {"grown": 0, "pruned": 0}
        rows.append(row)
        return row

    start = time.perf_counter()
    losses: dict[str, float] = {}
    next_ckpt = (t // cfg.checkpoint_every + 1) * cfg.checkpoint_every if cfg.checkpoint_every else None
    bar = tqdm(total=cfg.steps, initial=t, disable=not cfg.progress, dynamic_ncols=True, mininterval=1.0,
               desc=f"{cfg.method} {cfg.task} s{cfg.seed}", unit="step")
    if t == 0:
        evaluate_row(float("nan"))
    window_start, window_t = time.perf_counter(), t
    while t < cfg.steps:
        if needs_reset:
            if next_ckpt is not None and t >= next_ckpt and t > 0:
                checkpoint()
                next_ckpt = (t // cfg.checkpoint_every + 1) * cfg.checkpoint_every
            obs, _ = env.reset()
            needs_reset = False
        if t < cfg.start_steps:
            action = rng.uniform(low, high).astype(np.float32)
        else:
            action = agent.explore(obs, rng).clip(low, high).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        # Bootstrap through time-limit truncation: only a true terminal state has no future value.
        buffer.add(obs, action, reward, next_obs, terminated)
        obs = next_obs
        episode_return += float(reward)
        t += 1
        if terminated or truncated:
            last_return, episode_return, episodes = episode_return, 0.0, episodes + 1
            needs_reset = True
        if t > cfg.start_steps:
            losses = agent.train(buffer)
        bar.update(1)
        if t % cfg.eval_every == 0 or t == cfg.steps:
            sps = (t - window_t) / (time.perf_counter() - window_start)
            row = evaluate_row(sps)
            bar.set_postfix(sps=f"{sps:.0f}", ret=f"{row['return_mean']:.0f}",
                            active=f"{row.get('critic_active_ratio', float('nan')):.3f}")
            window_start, window_t = time.perf_counter(), t
    bar.close()
    df = pd.DataFrame(rows)
    store.save(cfg, df, wall_before + time.perf_counter() - start, commit, command)
    ckpt_path.unlink(missing_ok=True)
    return df


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """CLI -> config. Every config field is an option, nested ones dotted (``--agent.lr 1e-3``)."""
    p = argparse.ArgumentParser(prog="python -m nelib.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="HalfCheetah-v5",
                   help="gymnasium MuJoCo task id, or dmc:<domain>-<task> (pixels, DrQ), e.g. dmc:cheetah-run")
    p.add_argument("--method", default=None,
                   help=f"one of: {', '.join(METHODS)} (default: td3, or drq for dmc: tasks)")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--preset", default=presets.DEFAULT, help=f"one of: {', '.join(presets.PRESETS)}")
    p.add_argument("--data-dir", default=None, help="results store root (default: $NELIB_DATA or ./data)")
    p.add_argument("--overwrite", action="store_true", help="replace a stored result with another config")
    for name, (_, doc) in fields().items():
        if name not in ("task", "method", "seed", "preset"):
            p.add_argument(f"--{name}", dest=f"cfg:{name}", default=None, metavar="V",
                           help=doc.replace("%", "%%"))  # argparse formats help with %
    args = p.parse_args(argv)
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    try:
        cfg = make_config(args.task, args.method, args.seed, args.preset, **overrides)
    except ValueError as e:
        p.exit(2, f"error: {e}\n")
    return cfg, args


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_args(argv)
    try:
        df = run(cfg, ResultStore(args.data_dir), overwrite=args.overwrite)
    except ValueError as e:
        sys.exit(f"error: {e}")
    last = df.iloc[-1]
    print(f"{cfg.method} {cfg.task} seed {cfg.seed}: return {last['return_mean']:.1f} at step {int(last['step'])}")


if __name__ == "__main__":
    main()
