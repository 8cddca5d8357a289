"""Environment construction: state-based MuJoCo tasks (gymnasium v5 API) and pixel DeepMind Control
tasks (``dmc:<domain>-<task>``, :mod:`nelib.envs.dmc`)."""

from __future__ import annotations

import gymnasium as gym

from nelib.envs import cyclic, dmc


def check_task(task: str) -> None:
    """Raise a one-line ``ValueError`` if ``task`` is not a registered gymnasium environment
    (or a ``cycle:...`` sequence of them, see :mod:`nelib.envs.cyclic`, or a ``dmc:`` DeepMind Control task)."""
    if task.startswith(dmc.PREFIX):
        dmc.check_task(task)
        return
    if task.startswith(cyclic.PREFIX):
        for t in cyclic.parse_cycle(task)[0]:
            check_task(t)
        return
    if task not in gym.registry:
        mujoco = sorted(k for k, v in gym.registry.items()
                        if isinstance(v.entry_point, str) and "mujoco" in v.entry_point and k.endswith("-v5"))
        raise ValueError(f"unknown task {task!r}; MuJoCo v5 tasks: {', '.join(mujoco)}")


def make_env(task: str, **pixels) -> gym.Env:
    """A gymnasium env for ``task`` (seed it through ``reset(seed=...)``); ``dmc:`` tasks give a
    :class:`nelib.envs.dmc.DMCEnv`, built with ``pixels`` (action_repeat, frame_stack, image_size)."""
    check_task(task)
    if task.startswith(dmc.PREFIX):
        return dmc.make(task, **pixels)
    env = cyclic.CyclicEnv(*cyclic.parse_cycle(task)) if task.startswith(cyclic.PREFIX) else gym.make(task)
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(f"task {task!r} has a non-continuous action space; TD3 needs a Box")
    return env
