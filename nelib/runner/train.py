"""Train one agent: ``nelib.run(config)`` from Python, ``python -m nelib.runner.train ...`` from the shell.

A run evaluates every ``eval_every`` steps (and at step 0), writes its rows to the results store,
and checkpoints everything it needs to resume (agent, optimizers, masks, replay buffer, RNG states)
at the first episode end after every ``checkpoint_every`` steps. Restarted with the same command, it
continues from the checkpoint and, on CPU, ends with the same result as an uninterrupted run.
Before it trains, the run is checked (:mod:`nelib.runner.preflight`); a NaN or infinite loss stops it, and a
result that cannot be stored is kept in a checkpoint, so that nothing trained is lost.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nelib.agents.base import TOPOLOGY_COUNTS, SparseAgent
from nelib.envs import make_env
from nelib.envs.cyclic import CyclicEnv
from nelib.runner import checkpoints, preflight
from nelib.runner.algos import build_agent, make_buffer, spec
from nelib.runner.cli import parse_args  # noqa: F401 - nelib.runner.vectorized parses with it
from nelib.runner.config import TrainConfig
from nelib.runner.experiments import experiment_mismatch
from nelib.runner.loop import exit_on_ctrl_c, train_to_end
from nelib.runner.process import setup_process
from nelib.runner.store import ResultStore, git_commit, note
from nelib.seeding import EVALUATION, METRICS, stream_seed


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what :mod:`platform` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def platform_of(device: torch.device) -> str:
    """What a run ran on, for its record: torch version and device (GPU model on CUDA, CPU model on CPU:
    BLAS libraries round the same product differently from one CPU to another)."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_model()})"
    return f"torch {torch.__version__}, {where}"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU (a name only: :func:`nelib.runner.preflight.check_device` checks
    that the device is there)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def runs_on_cuda(configs) -> bool:
    """Whether these runs (one sweep's, all on one device setting) train on a GPU."""
    return bool(configs) and resolve_device(configs[0].device).type == "cuda"


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


def evaluate(agent: SparseAgent, env, episodes: int, seed: int) -> tuple[float, float]:
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


def run_label(cfg: TrainConfig) -> str:
    return f"{cfg.method}{'@' + cfg.variant if cfg.variant else ''} {cfg.task} seed {cfg.seed}"


def stored_rows(cfg: TrainConfig, store: ResultStore, overwrite: bool = False) -> pd.DataFrame | None:
    """Check ``cfg`` (task, method, values: :func:`nelib.runner.preflight.check_config`); return its stored rows
    if this exact config is stored and verifies (saying so in one line), else None."""
    preflight.check_config(cfg)
    rows = store.load(cfg, overwrite=overwrite)
    if rows is not None:
        note(f"{run_label(cfg)}: loaded from the store ({store.csv_path(cfg)}, {len(rows)} evaluations to step "
             f"{int(rows['step'].iloc[-1])}); --overwrite trains it again")
    return rows


class Diverged(ValueError):
    """A loss became NaN or infinite: the run stops, its last checkpoint (written before) is kept."""


class Run:
    """One run between its steps: envs, agent, replay, RNG streams, counters and evaluation rows.

    :func:`run` drives one of these step by step; :mod:`nelib.runner.vectorized` drives several in lockstep and
    batches their updates (both through :mod:`nelib.runner.loop`). Building one restores the run's checkpoint,
    if there is one.
    """

    def __init__(self, cfg: TrainConfig, store: ResultStore, device: torch.device | None = None):
        self.cfg, self.store = cfg, store
        self.device = device = preflight.check_training(cfg, store, device)
        algo = spec(cfg.algo)
        settings = algo.env_settings(cfg)
        self.env, self.eval_env = make_env(cfg.task, **settings), make_env(cfg.task, **settings)
        env = self.env
        act_dim = env.action_space.shape[0]
        self.low, self.high = env.action_space.low, env.action_space.high
        max_action = float(self.high[0])
        self.agent = build_agent(cfg, algo.observation(env.observation_space.shape), act_dim, max_action, device)
        self.buffer = make_buffer(cfg, env, device)
        self.frames_per_step = algo.frames_per_step(env)  # DMC rows also count frames
        self.rng = np.random.default_rng(cfg.seed)
        self.metric_gen = torch.Generator().manual_seed(stream_seed(cfg.seed, METRICS))
        self.cyclic_env = isinstance(env.unwrapped, CyclicEnv)

        self.t, self.rows, self.wall_before, self.commit = 0, [], 0.0, git_commit()
        self.episode_return, self.last_return, self.episodes = 0.0, float("nan"), 0
        self.losses: dict[str, float] = {}  # the last update's
        self.window_counts = dict.fromkeys(TOPOLOGY_COUNTS, 0)  # topology changes since the last evaluation
        self.obs, _ = env.reset(seed=cfg.seed)
        self.needs_reset = False
        self.ckpt_path, self.ckpt_step = store.checkpoint_path(cfg), None
        if checkpoints.exists(self.ckpt_path):
            ckpt, used = checkpoints.load_checkpoint(self.ckpt_path, map_location=device)
            try:
                self._restore(ckpt, used)
            except (KeyError, TypeError, RuntimeError) as e:  # a missing part, or tensors of other shapes
                raise checkpoints.CheckpointError(f"checkpoint {used} does not fit this run ({type(e).__name__}: "
                                                  f"{str(e).splitlines()[0] if str(e) else ''}); delete it to "
                                                  "start the run over") from None
            note(f"{run_label(cfg)}: resuming from its checkpoint {used} at step {self.t} of {cfg.steps}")
        self.next_ckpt = ((self.t // cfg.checkpoint_every + 1) * cfg.checkpoint_every
                          if cfg.checkpoint_every else None)
        self.start = time.perf_counter()

    def _restore(self, ckpt: dict, path: Path) -> None:
        cfg = self.cfg
        if ckpt.get("hash") != cfg.hash():
            raise ValueError(f"checkpoint {path} was written by another config (hash {ckpt.get('hash')}, "
                             f"now {cfg.hash()}); delete it to start over")
        self.agent.load_state_dict(ckpt["agent"])
        self.buffer.load_state_dict(ckpt["buffer"])
        self.rng.bit_generator.state = ckpt["rng"]
        self.metric_gen.set_state(ckpt["metric_gen"].cpu())  # map_location moved it; generator states live on the CPU
        set_env_rng_state(self.env, ckpt["env_rng"])
        if ckpt.get("env_state") is not None:
            self.env.unwrapped.load_state_dict(ckpt["env_state"])
        self.t, self.rows, self.wall_before, self.commit = ckpt["t"], ckpt["rows"], ckpt["wall_time_s"], ckpt["commit"]
        self.last_return, self.episodes = ckpt["last_return"], ckpt["episodes"]
        # Checkpoints written before the runner counted topology changes hold the agent's count instead.
        self.window_counts = dict(ckpt["topology_counts"] if "topology_counts" in ckpt
                                  else ckpt["agent"]["topology_log"])
        self.needs_reset, self.ckpt_step = True, self.t

    def agent_state(self) -> dict:
        """The agent's part of a checkpoint."""
        return self.agent.state_dict()

    def state(self) -> dict:
        """Everything the run needs to resume (taken between episodes)."""
        env = self.env
        return {"hash": self.cfg.hash(), "agent": self.agent_state(), "buffer": self.buffer.state_dict(),
                "rng": self.rng.bit_generator.state, "metric_gen": self.metric_gen.get_state(),
                "env_rng": env_rng_state(env), "t": self.t, "rows": self.rows,
                "env_state": env.unwrapped.state_dict() if self.cyclic_env else None,
                "wall_time_s": self.wall_before + time.perf_counter() - self.start,
                "last_return": self.last_return, "episodes": self.episodes, "commit": self.commit,
                "topology_counts": dict(self.window_counts)}

    def checkpoint(self) -> None:
        """Write :meth:`state` to the run's checkpoint, atomically, keeping the previous one until it is whole."""
        checkpoints.save_checkpoint(self.state(), self.ckpt_path)
        self.ckpt_step = self.t

    def check_losses(self) -> None:
        """Stop the run (:class:`Diverged`) if the last update's losses are not finite numbers."""
        bad = [k for k, v in self.losses.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            kept = (f"its last good checkpoint {self.ckpt_path} (step {self.ckpt_step}) is kept"
                    if self.ckpt_step is not None else "it has no checkpoint yet")
            raise Diverged(f"{run_label(self.cfg)}: {bad[0]} is {self.losses[bad[0]]} at step {self.t}, training "
                           f"diverged; stopped, nothing stored ({kept})")

    def evaluate_row(self, sps: float) -> dict:
        """Evaluate the agent now, append the evaluation row (with plasticity metrics) and return it."""
        self.check_losses()
        cfg, env, agent, buffer = self.cfg, self.env, self.agent, self.buffer
        if self.cyclic_env:  # evaluate on the task being trained now
            self.eval_env.unwrapped.load_state_dict({"stage": env.unwrapped.stage, "visit_steps": 0})
        ret_mean, ret_std = evaluate(agent, self.eval_env, cfg.eval_episodes, stream_seed(cfg.seed, EVALUATION))
        t = self.t
        row = {"step": t, **({"frames": t * self.frames_per_step} if self.frames_per_step else {}),
               "return_mean": ret_mean, "return_std": ret_std, "episodes": self.episodes,
               **({"task_now": env.unwrapped.task, "stage": env.unwrapped.stage} if self.cyclic_env else {}),
               "train_return": self.last_return, "review": bool(agent.review and agent.review.active),
               "review_rate": agent.review.rate if agent.review and agent.review.rate is not None else float("nan"),
               "review_threshold": (agent.review.threshold if agent.review and agent.review.threshold is not None
                                    else float("nan")),
               "review_share": agent.review.take_share() if agent.review else float("nan"),
               **self.window_counts, **agent.take_intervention_metrics(), "steps_per_s": sps, **self.losses}
        if buffer.size:
            row.update(agent.plasticity(*buffer.metrics_batch(cfg.metrics_batch, self.metric_gen)))
        self.window_counts = dict.fromkeys(TOPOLOGY_COUNTS, 0)
        self.rows.append(row)
        return row

    def begin_step(self) -> None:
        """Reset the env after an episode end, checkpointing first when one is due."""
        self.check_losses()  # before a checkpoint is written: a diverged state never replaces a good one
        if self.needs_reset:
            cfg = self.cfg
            if self.next_ckpt is not None and self.t >= self.next_ckpt and self.t > 0:
                try:
                    self.checkpoint()
                except OSError as e:  # the run goes on; the result is still saved (or rescued) at the end
                    note(f"{run_label(cfg)}: could not write the checkpoint {self.ckpt_path} ({e.strerror or e}) "
                         f"at step {self.t}; training goes on, the previous checkpoint is kept")
                self.next_ckpt = ((self.t // cfg.checkpoint_every + 1) * cfg.checkpoint_every
                                  if cfg.checkpoint_every else None)  # None: only a Ctrl-C asks for one
            self.obs, _ = self.env.reset()
            self.needs_reset = False

    @property
    def random_phase(self) -> bool:
        """Whether this step's action is uniform random (the start phase)."""
        return self.t < self.cfg.start_steps

    def random_action(self) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(np.float32)

    def clip(self, action: np.ndarray) -> np.ndarray:
        """An exploration action (the agent's, plus noise) clipped to the action space."""
        return action.clip(self.low, self.high).astype(np.float32)

    def env_step(self, action: np.ndarray) -> None:
        """Step the env with ``action``, store the transition and count the step."""
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        # Bootstrap through time-limit truncation: only a true terminal state has no future value.
        self.buffer.add(self.obs, action, reward, next_obs, terminated)
        self.obs = next_obs
        self.episode_return += float(reward)
        self.t += 1
        if terminated or truncated:
            self.last_return, self.episode_return, self.episodes = self.episode_return, 0.0, self.episodes + 1
            self.needs_reset = True

    @property
    def trains(self) -> bool:
        """Whether the agent updates after the step just taken."""
        return self.t > self.cfg.start_steps

    @property
    def eval_due(self) -> bool:
        return self.t % self.cfg.eval_every == 0 or self.t == self.cfg.steps

    def step(self) -> None:
        """One whole step of a single run: reset if needed, act, step the env, update the agent."""
        self.begin_step()
        if self.random_phase:
            action = self.random_action()
        else:
            action = self.clip(self.agent.explore(self.obs, self.rng))
        self.env_step(action)
        if self.trains:
            self.record_update(self.agent.train(self.buffer))

    def record_update(self, metrics: dict[str, float]) -> None:
        """Take an update's metrics: its topology counts add up until the next evaluation, its losses are
        kept for the next evaluation row (and checked there)."""
        for k in TOPOLOGY_COUNTS:
            self.window_counts[k] += metrics.pop(k)
        self.losses = metrics

    def finish(self, command: str | None = None, wall_time_s: float | None = None) -> pd.DataFrame:
        """Save the rows and the record to the store, delete the checkpoint, return the rows.

        ``wall_time_s`` defaults to this run's own time (checkpointed time included)."""
        df = pd.DataFrame(self.rows)
        wall = self.wall_before + time.perf_counter() - self.start if wall_time_s is None else wall_time_s
        try:
            self.store.save(self.cfg, df, wall, self.commit, command, platform_of(self.device))
        except OSError as e:  # nothing trained is lost: the finished run goes into a checkpoint
            raise ValueError(f"could not store {run_label(self.cfg)} in {self.store.root} ({e.strerror or e}); "
                             f"{checkpoints.rescue(self.state(), self.ckpt_path)}") from None
        checkpoints.remove_checkpoints(self.ckpt_path)
        return df


def run(cfg: TrainConfig, store: ResultStore | None = None, overwrite: bool = False,
        command: str | None = None) -> pd.DataFrame:
    """Train (or load, if stored with the same config hash) one run; return its evaluation rows.

    ``command`` is what the results record says produced the run (default: this process's command line).
    """
    if cfg.cuda_graph:
        raise ValueError("cuda_graph replays the batched update of vectorized seeds: run them with "
                         "python -m nelib.runner.vectorized --seeds ...")
    store = store or ResultStore()
    done_rows = stored_rows(cfg, store, overwrite)
    if done_rows is not None:
        return done_rows
    setup_process(cfg.threads)
    r = Run(cfg, store)
    return train_to_end([r], r.step, f"{cfg.method} {cfg.task} s{cfg.seed}", command)[0]


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_args(argv)
    try:
        preflight.check_config(cfg)  # a bad value is the one line said, before any note on the config
        if mismatch := experiment_mismatch(cfg):
            note(mismatch)
        with exit_on_ctrl_c():
            df = run(cfg, ResultStore(args.data_dir), overwrite=args.overwrite)
    except (ValueError, OSError) as e:  # e.g. a bad setting, a damaged checkpoint, a full disk: one line each
        sys.exit(f"error: {e}")
    last = df.iloc[-1]
    print(f"{cfg.method} {cfg.task} seed {cfg.seed}: return {last['return_mean']:.1f} at step {int(last['step'])}")


if __name__ == "__main__":
    main()
