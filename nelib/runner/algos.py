"""One spec per algorithm: what the runner needs to know to build and scale a run of TD3 or of DrQ.

A run's algorithm follows from its task (:func:`algo_of`: pixel ``dmc:`` tasks are DrQ's, the rest TD3's);
the runner looks its :class:`AlgoSpec` up once (:func:`spec`) and asks it for the environment settings,
the agent, the replay buffer, the frames per step and the preset's scale, instead of testing the
algorithm's name wherever these differ. A new algorithm is one more spec in :data:`SPECS` (and its config
section in :class:`nelib.runner.config.TrainConfig`).

The registry lives in the runner, not in :mod:`nelib.agents`, because a spec joins an agent to the
runner's own notions (a ``TrainConfig``, presets, environments, baselines' interventions). Imports go one
way: the runner imports the agents, the agents import the sparse operators, never back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from nelib.agents.base import SparseAgent
from nelib.agents.drq import DrQ
from nelib.agents.pixel_replay import PixelReplayBuffer
from nelib.agents.replay import ReplayBuffer
from nelib.agents.td3 import TD3, check_precision
from nelib.baselines.injection import InjectionIntervention
from nelib.baselines.redo import RedoIntervention
from nelib.baselines.reset import ResetIntervention
from nelib.envs import dmc
from nelib.runner.presets import Preset
from nelib.seeding import INTERVENTIONS, stream_seed

if TYPE_CHECKING:
    from nelib.runner.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class AlgoSpec:
    """How the runner builds and scales a run of one algorithm."""

    name: str
    """The algorithm's name, ``TrainConfig.algo``."""
    section: str
    """The ``TrainConfig`` section of its hyper-parameters."""
    task_prefix: str
    """Tasks whose id starts with it use this algorithm (``""``: the default, every other task)."""
    make_agent: Callable[..., SparseAgent]
    """``(cfg, obs, act_dim, max_action, **ne) -> agent``: ``obs`` is what :attr:`observation` returns,
    ``ne`` what :func:`build_agent` passes to every agent (NE settings, update count, device, seed)."""
    make_buffer: Callable[[TrainConfig, Any, torch.device], Any]
    """``(cfg, env, device) -> replay buffer``."""
    observation: Callable[[tuple[int, ...]], Any]
    """The observation space's shape -> what the agent is built with (a size, or an image shape)."""
    scale: Callable[[Preset, str, dict[str, Any]], dict[str, Any]]
    """``(preset, task, user overrides) -> config overrides``: the run length and schedule at a preset."""
    env_settings: Callable[[TrainConfig], dict[str, Any]] = lambda cfg: {}
    """Keyword arguments of :func:`nelib.envs.make_env` for a run (pixel settings)."""
    frames_per_step: Callable[[Any], int | None] = lambda env: None
    """Environment frames per agent step, for the rows' ``frames`` column (None: no such column)."""
    check_device: Callable[[TrainConfig, torch.device], None] = lambda cfg, device: None
    """``(cfg, device)``: raise a one-line ``ValueError`` if the run's agent settings cannot run on ``device``
    (TD3: bf16 precision without bf16 matrix support)."""
    vectorizable: bool = False
    """Whether seeds of its runs can train together (:mod:`nelib.runner.vectorized`)."""
    section_in_every_hash: bool = False
    """Whether its section is hashed in every run's config, not only in its own runs' (TD3's: it predates
    DrQ, whose stored runs hashed it too; see :mod:`nelib.runner.schema`)."""


# -- TD3 on state-based gymnasium tasks ---------------------------------------------------------------
def _td3_agent(cfg: TrainConfig, obs_dim: int, act_dim: int, max_action: float, **ne) -> TD3:
    return TD3(obs_dim, act_dim, max_action, cfg.agent, cfg.sparsity, **ne)


def _flat_buffer(cfg: TrainConfig, env, device) -> ReplayBuffer:
    act_dim, capacity = env.action_space.shape[0], min(cfg.buffer_size, cfg.steps)
    return ReplayBuffer(env.observation_space.shape[0], act_dim, capacity, device, seed=cfg.seed)


def _preset_scale(p: Preset, task: str, user: dict[str, Any]) -> dict[str, Any]:
    return {"steps": p.steps, "start_steps": p.start_steps, "eval_every": p.eval_every,
            "eval_episodes": p.eval_episodes, "checkpoint_every": p.checkpoint_every}


# -- DrQ on pixel DeepMind Control tasks ---------------------------------------------------------------
def _drq_agent(cfg: TrainConfig, obs_shape: tuple[int, ...], act_dim: int, max_action: float, **ne) -> DrQ:
    if cfg.injection.enabled:
        raise ValueError("plasticity injection is implemented for TD3 only")
    return DrQ(tuple(obs_shape), act_dim, cfg.drq, cfg.sparsity, **ne)


def _frame_buffer(cfg: TrainConfig, env, device) -> PixelReplayBuffer:
    """Single uint8 frames, stacked on sampling."""
    act_dim, capacity = env.action_space.shape[0], min(cfg.buffer_size, cfg.steps)
    e = env.unwrapped
    frame_shape = (env.observation_space.shape[0] // e.frame_stack, *env.observation_space.shape[1:])
    return PixelReplayBuffer(frame_shape, e.frame_stack, act_dim, capacity, device, seed=cfg.seed)


def _dmc_scale(p: Preset, task: str, user: dict[str, Any]) -> dict[str, Any]:
    """The preset's DMC scale, given in frames, divided by the task's action repeat into agent steps."""
    repeat = int(user.get("drq.action_repeat", 0) or 0) or dmc.default_action_repeat(task)
    return {"steps": max(1, p.dmc_frames // repeat), "start_steps": p.dmc_start_steps,
            "eval_every": max(1, p.dmc_eval_every // repeat), "eval_episodes": p.eval_episodes,
            "checkpoint_every": p.checkpoint_every // repeat, "buffer_size": 100_000, **dict(p.dmc_overrides)}


def _pixel_settings(cfg: TrainConfig) -> dict[str, Any]:
    return {"action_repeat": cfg.drq.action_repeat, "frame_stack": cfg.drq.frame_stack,
            "image_size": cfg.drq.image_size}


SPECS: dict[str, AlgoSpec] = {s.name: s for s in (
    AlgoSpec("td3", "agent", "", _td3_agent, _flat_buffer, observation=lambda shape: shape[0],
             scale=_preset_scale, check_device=lambda cfg, device: check_precision(cfg.agent.precision, device),
             vectorizable=True, section_in_every_hash=True),
    AlgoSpec("drq", "drq", dmc.PREFIX, _drq_agent, _frame_buffer, observation=tuple, scale=_dmc_scale,
             env_settings=_pixel_settings, frames_per_step=lambda env: env.unwrapped.action_repeat),
)}
"""Algorithm name -> its spec."""
DEFAULT = "td3"


def algo_of(task: str) -> str:
    """The algorithm a task needs: the one whose task prefix it has (``drq`` for ``dmc:...``), else ``td3``."""
    return next((s.name for s in SPECS.values() if s.task_prefix and task.startswith(s.task_prefix)), DEFAULT)


def spec(algo: str) -> AlgoSpec:
    """The spec of algorithm ``algo``; a clear error names the known ones."""
    try:
        return SPECS[algo]
    except KeyError:
        raise ValueError(f"algo must be one of {tuple(SPECS)}, got {algo!r}") from None


def build_agent(cfg: TrainConfig, obs, act_dim: int, max_action: float, device) -> SparseAgent:
    """The agent that ``cfg`` describes (its algorithm's; ``obs``: the observation size, for DrQ the image
    shape), with NE operators attached when ``cfg.expansion`` and baselines' interventions when enabled."""
    total_updates = max(1, cfg.steps - cfg.start_steps)
    ne = {"topology": cfg.topology if cfg.expansion else None, "review": cfg.review if cfg.expansion else None,
          "total_updates": total_updates, "device": device, "seed": cfg.seed, "warmup_steps": cfg.start_steps}
    agent = spec(cfg.algo).make_agent(cfg, obs, act_dim, max_action, **ne)
    # Interventions draw from their own generators, so they never shift the other streams.
    iv_seed = stream_seed(cfg.seed, INTERVENTIONS)
    if cfg.reset.enabled:
        agent.interventions.append(ResetIntervention(cfg.reset, seed=iv_seed))
    if cfg.redo.enabled:
        agent.interventions.append(RedoIntervention(cfg.redo, seed=iv_seed))
    if cfg.injection.enabled:
        if cfg.expansion:
            raise ValueError("plasticity injection changes the networks' structure; it does not combine with NE")
        agent.interventions.append(InjectionIntervention(cfg.injection, total_updates, seed=iv_seed))
    return agent


def make_buffer(cfg: TrainConfig, env, device):
    """The replay buffer of a run: flat observations (TD3), or single uint8 frames stacked on sampling (DrQ)."""
    return spec(cfg.algo).make_buffer(cfg, env, device)
