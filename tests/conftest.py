"""Shared fixtures: tiny, fast envs for runner tests (state-based, and a GL-free pixel env standing in for
DeepMind Control), and a temporary results store."""

import collections

import gymnasium as gym
import numpy as np
import pytest

from nelib.envs import dmc
from nelib.runner.store import ResultStore

FAKE = "NelibFake-v0"  # truncated by the time limit every 50 steps
FAKE_TERMINAL = "NelibFakeTerminal-v0"  # terminates after 3 steps


class FakeEnv(gym.Env):
    """3-d observations, 1-d action; reward -(a - obs[0])^2; optionally terminates after ``terminate_at``."""

    def __init__(self, terminate_at: int | None = None):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.terminate_at = terminate_at
        self._t = 0
        self._obs = np.zeros(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._obs = self.np_random.normal(size=3)
        return self._obs, {}

    def step(self, action):
        self._t += 1
        reward = -float((action[0] - np.tanh(self._obs[0])) ** 2)
        self._obs = self.np_random.normal(size=3)
        terminated = self.terminate_at is not None and self._t >= self.terminate_at
        return self._obs, reward, terminated, False, {}


if FAKE not in gym.registry:
    gym.register(FAKE, entry_point=FakeEnv, max_episode_steps=50)
    gym.register(FAKE_TERMINAL, entry_point=FakeEnv, kwargs={"terminate_at": 3}, max_episode_steps=50)


FAKE_PIXELS = "dmc:fake-pixels"  # truncated every 20 agent steps, like a DMC time limit


class FakePixelEnv:
    """:class:`nelib.envs.dmc.DMCEnv`'s API without rendering: random uint8 frames (a bright square at a random
    place), reward ``-(a_0 - x)^2`` with ``x`` the square's column in [-1, 1], 2-d actions."""

    def __init__(self, action_repeat=0, frame_stack=3, image_size=84, episode_steps=20):
        self.task = FAKE_PIXELS
        self.action_repeat = action_repeat or 2
        self.frame_stack, self.image_size, self.episode_steps = frame_stack, image_size, episode_steps
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (3 * frame_stack, image_size, image_size), np.uint8)
        self._random = np.random.RandomState(0)
        self._frames = collections.deque(maxlen=frame_stack)
        self._t, self._x = 0, 0.0

    @property
    def unwrapped(self):
        return self

    def _frame(self):
        s = self.image_size
        frame = self._random.randint(0, 64, size=(3, s, s)).astype(np.uint8)
        col = self._random.randint(0, s - 4)
        frame[:, s // 2:s // 2 + 4, col:col + 4] = 255
        self._x = 2 * col / (s - 4) - 1
        return frame

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._random.seed(seed)
        self._t = 0
        frame = self._frame()
        for _ in range(self.frame_stack):
            self._frames.append(frame)
        return np.concatenate(self._frames), {}

    def step(self, action):
        self._t += 1
        reward = -float((action[0] - self._x) ** 2)
        self._frames.append(self._frame())
        return np.concatenate(self._frames), reward, False, self._t >= self.episode_steps, {}

    def rng_state(self):
        return self._random.get_state()

    def set_rng_state(self, state):
        self._random.set_state(state)

    def close(self):
        pass


dmc.register(FAKE_PIXELS, FakePixelEnv)


def run_interrupted(cfg, store, monkeypatch, at_eval: int) -> dict:
    """Run ``cfg`` and "kill" it (KeyboardInterrupt) at its ``at_eval``-th evaluation, as a crash or
    Ctrl-C would; return the checkpoint it left behind."""
    import torch

    import nelib.runner.train as train

    calls = {"n": 0}
    real_evaluate = train.evaluate

    def dying_evaluate(*args, **kw):
        calls["n"] += 1
        if calls["n"] == at_eval:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kw)

    monkeypatch.setattr(train, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, store)
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    return torch.load(store.checkpoint_path(cfg), weights_only=False)


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "data")
