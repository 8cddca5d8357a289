"""Pixel-based DeepMind Control Suite tasks with a gymnasium-like API, for DrQ.

A task is named ``dmc:<domain>-<task>`` (``dmc:cheetah-run``, ``dmc:ball_in_cup-catch``). Observations are
the last ``frame_stack`` rendered RGB frames, channel-first and stacked on the channel axis
(``uint8[3 * frame_stack, size, size]``), as in DrQ (Kostrikov et al. 2020). One agent step repeats the action
``action_repeat`` times (rewards summed) and renders once. Episodes never terminate (``terminated`` is always
False; DMC's discount stays 1) and are truncated by the suite's time limit (1000 physics control steps, so
``1000 / action_repeat`` agent steps).

Rendering is headless: ``import nelib`` selects MuJoCo's EGL back-end before dm_control is imported.
"""

from __future__ import annotations

import collections

import numpy as np

PREFIX = "dmc:"

# DrQ's action repeat per domain (the PlaNet benchmark setting of the DrQ paper, Table 2): 8 for cartpole,
# 2 for finger and walker, 4 for everything else.
ACTION_REPEAT = {"cartpole": 8, "finger": 2, "walker": 2}
DEFAULT_ACTION_REPEAT = 4


# Extra pixel tasks by name -> a factory ``(action_repeat, frame_stack, image_size) -> env`` (tests register a
# GL-free fake here; see :func:`register`).
EXTRA_TASKS: dict = {}


def register(task: str, factory) -> None:
    """Make ``task`` (``dmc:<domain>-<task>``) build ``factory(action_repeat=, frame_stack=, image_size=)``,
    an env with :class:`DMCEnv`'s API (used for a fake pixel env in tests)."""
    parse_task(task)
    EXTRA_TASKS[task] = factory


def parse_task(task: str) -> tuple[str, str]:
    """``dmc:cheetah-run`` -> ``("cheetah", "run")``; a clear error for a malformed name."""
    name = task.removeprefix(PREFIX)
    domain, sep, name_task = name.partition("-")
    if not task.startswith(PREFIX) or not sep or not domain or not name_task:
        raise ValueError(f"bad DeepMind Control task {task!r}; expected dmc:<domain>-<task>, e.g. dmc:cheetah-run")
    return domain, name_task


def check_task(task: str) -> None:
    """Raise a one-line ``ValueError`` unless ``task`` names a dm_control suite task."""
    domain, name = parse_task(task)
    if task in EXTRA_TASKS:
        return
    from dm_control import suite

    if (domain, name) not in suite.ALL_TASKS:
        known = ", ".join(f"{PREFIX}{d}-{t}" for d, t in suite.BENCHMARKING)
        raise ValueError(f"unknown DeepMind Control task {task!r}; suite tasks: {known}")


def make(task: str, action_repeat: int = 0, frame_stack: int = 3, image_size: int = 84):
    """The pixel env of ``task``: a :class:`DMCEnv`, or a registered extra task."""
    if task in EXTRA_TASKS:
        return EXTRA_TASKS[task](action_repeat=action_repeat, frame_stack=frame_stack, image_size=image_size)
    return DMCEnv(task, action_repeat, frame_stack, image_size)


def default_action_repeat(task: str) -> int:
    """DrQ's action repeat for ``task`` (8 cartpole, 2 finger and walker, else 4)."""
    return ACTION_REPEAT.get(parse_task(task)[0], DEFAULT_ACTION_REPEAT)


class _Box:
    """The part of ``gymnasium.spaces.Box`` the runner uses (shape, dtype, low, high)."""

    def __init__(self, low, high, shape, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.low = np.full(shape, low, dtype=dtype)
        self.high = np.full(shape, high, dtype=dtype)


class DMCEnv:
    """A dm_control suite task from pixels: ``reset(seed=None) -> (obs, info)``,
    ``step(action) -> (obs, reward, terminated, truncated, info)``.

    The task's random state (initial states, and any task noise) is a ``numpy.random.RandomState``
    seeded through ``reset(seed=...)``; :meth:`rng_state` / :meth:`set_rng_state` save and restore it
    for resumable runs.
    """

    def __init__(self, task: str, action_repeat: int = 0, frame_stack: int = 3, image_size: int = 84,
                 camera_id: int | None = None):
        from dm_control import suite

        check_task(task)
        if action_repeat < 0 or frame_stack <= 0 or image_size <= 0:
            raise ValueError("action_repeat must be >= 0 (0: the task's default), frame_stack and image_size > 0")
        self.task = task
        self.domain, self.task_name = parse_task(task)
        self.action_repeat = action_repeat or default_action_repeat(task)
        self.frame_stack, self.image_size = frame_stack, image_size
        # DrQ (after Dreamer) films quadruped with camera 2; every other domain with camera 0.
        self.camera_id = camera_id if camera_id is not None else (2 if self.domain == "quadruped" else 0)
        self._env = suite.load(self.domain, self.task_name, task_kwargs={"random": 0})
        spec = self._env.action_spec()
        self.action_space = _Box(spec.minimum, spec.maximum, spec.shape, np.float32)
        self.observation_space = _Box(0, 255, (3 * frame_stack, image_size, image_size), np.uint8)
        self._frames: collections.deque[np.ndarray] = collections.deque(maxlen=frame_stack)

    @property
    def unwrapped(self) -> DMCEnv:
        """This env (the runner reaches the base env through ``env.unwrapped``, as with gymnasium)."""
        return self

    def render_frame(self) -> np.ndarray:
        """The current camera image, ``uint8[3, size, size]`` (channel-first)."""
        img = self._env.physics.render(height=self.image_size, width=self.image_size, camera_id=self.camera_id)
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def _obs(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=0)

    def reset(self, *, seed: int | None = None, options=None) -> tuple[np.ndarray, dict]:
        """Start an episode (re-seeding the task's random state first if ``seed`` is given)."""
        if seed is not None:
            self._env.task.random.seed(seed)
        self._env.reset()
        frame = self.render_frame()
        for _ in range(self.frame_stack):  # the first observation repeats the first frame, as in DrQ
            self._frames.append(frame)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Repeat ``action`` ``action_repeat`` times, render once; the reward is the sum over repeats."""
        reward, truncated, terminated = 0.0, False, False
        for _ in range(self.action_repeat):
            ts = self._env.step(action)
            reward += ts.reward or 0.0
            if ts.last():
                # Suite tasks end by their time limit with discount 1 (truncation); a discount of 0 would be
                # a true terminal state.
                terminated = ts.discount == 0
                truncated = not terminated
                break
        self._frames.append(self.render_frame())
        return self._obs(), reward, terminated, truncated, {}

    def rng_state(self) -> tuple:
        """The task's random state (for checkpoints)."""
        return self._env.task.random.get_state()

    def set_rng_state(self, state: tuple) -> None:
        """Restore a state from :meth:`rng_state`."""
        self._env.task.random.set_state(state)

    def close(self) -> None:
        self._env.close()
