"""Cyclic tasks (the paper's Sec. 5.2, Fig. 9): one agent trained through a repeating sequence of tasks.

A task id ``cycle:HalfCheetah-v5,Walker2d-v5,Hopper-v5@50000x2`` visits the three tasks in order, 50k
environment steps each, twice. Observations are zero-padded and actions truncated to fit the largest
task, so one network (and its optimizer) is carried across tasks unchanged. A visit switches to the next
task at the first episode end after its step budget, so no episode is cut short by the switch.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

PREFIX = "cycle:"


def parse_cycle(task: str) -> tuple[list[str], int, int]:
    """``cycle:A,B,C@steps[xrepeats]`` -> (tasks, steps per visit, repeats)."""
    try:
        body = task.removeprefix(PREFIX)
        names, _, rest = body.partition("@")
        steps, _, repeats = rest.partition("x")
        tasks = [n for n in names.split(",") if n]
        out = tasks, int(steps), int(repeats or 1)
    except ValueError:
        out = None
    if out is None or not out[0] or out[1] <= 0 or out[2] <= 0:
        raise ValueError(f"bad cyclic task {task!r}; expected e.g. 'cycle:HalfCheetah-v5,Hopper-v5@50000x2'")
    return out


class CyclicEnv(gym.Env):
    """Steps the current task of a cycle; observation/action spaces are those of the largest task."""

    def __init__(self, tasks: list[str], steps_per_visit: int, repeats: int = 1):
        self.envs = [gym.make(t) for t in tasks]
        self.tasks, self.steps_per_visit, self.repeats = tasks, steps_per_visit, repeats
        obs_dim = max(e.observation_space.shape[0] for e in self.envs)
        act_dim = max(e.action_space.shape[0] for e in self.envs)
        for t, e in zip(tasks, self.envs, strict=True):
            if not np.allclose(np.abs(e.action_space.low), 1) or not np.allclose(e.action_space.high, 1):
                raise ValueError(f"cyclic tasks need actions in [-1, 1]; {t} has other bounds")
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self.stage = 0  # index of the current visit, 0 .. len(tasks) * repeats - 1
        self.visit_steps = 0

    @property
    def current(self) -> gym.Env:
        return self.envs[self.stage % len(self.envs)]

    @property
    def task(self) -> str:
        """The task being trained now."""
        return self.tasks[self.stage % len(self.tasks)]

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        out = np.zeros(self.observation_space.shape, dtype=np.float64)
        out[: obs.shape[0]] = obs
        return out

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        last = len(self.tasks) * self.repeats - 1
        if self.visit_steps >= self.steps_per_visit and self.stage < last:
            self.stage, self.visit_steps = self.stage + 1, 0
        sub_seed = int(self.np_random.integers(2**31))  # sub-envs follow this env's RNG: one state to save
        obs, info = self.current.reset(seed=sub_seed)
        return self._pad(obs), {**info, "task": self.task}

    def step(self, action):
        k = self.current.action_space.shape[0]
        obs, reward, terminated, truncated, info = self.current.step(np.asarray(action)[:k])
        self.visit_steps += 1
        return self._pad(obs), reward, terminated, truncated, {**info, "task": self.task}

    def state_dict(self) -> dict:
        return {"stage": self.stage, "visit_steps": self.visit_steps}

    def load_state_dict(self, state: dict) -> None:
        self.stage, self.visit_steps = state["stage"], state["visit_steps"]

    def close(self):
        for e in self.envs:
            e.close()
