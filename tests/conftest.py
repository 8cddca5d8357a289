"""Shared fixtures: a tiny, fast gymnasium env for runner tests, and a temporary results store."""

import gymnasium as gym
import numpy as np
import pytest

from nelib.store import ResultStore

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


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "data")
