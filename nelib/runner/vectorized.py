"""Vectorized seeds: K independent TD3 runs (any TD3 method, NE included) trained in one process.

``run_vectorized(configs)`` trains runs that differ only in their seed, in lockstep: the K environments
are stepped one after the other in the same loop, the K policies act in one batched forward pass, and
the heavy part of the update, the forward and backward passes of critic, actor and their targets, is one
set of batched matrix products over a seed dimension. Everything else is each seed's own: its agent
(built exactly as a single run builds it: initialisation, generators, masks, NE scheduler,
interventions), its replay buffer and sampling, its exploration noise, its masked optimizer step and
topology update, its evaluation, checkpoints and stored results. On CPU (one torch thread) the result
is the same, bit for bit, as K single runs (``tests/test_vectorized.py``); on CUDA, where the losses of
all seeds are reduced in one kernel, it is the same up to float rounding, so the same in distribution.

The batched update is :class:`nelib.agents.vector_td3.VectorTD3`'s.

``python -m nelib.runner.vectorized --seeds 0,1,2 [any nelib.runner.train option]`` runs K seeds from the shell;
``python -m nelib.runner.sweep ... --vectorize K`` groups a grid's seeds K at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

import pandas as pd
import torch

from nelib.agents.vector_td3 import VectorTD3, batched_linear  # noqa: F401 - batched_linear: tests import it here
from nelib.runner import preflight
from nelib.runner.algos import spec
from nelib.runner.config import TrainConfig
from nelib.runner.experiments import experiment_mismatch
from nelib.runner.files import note
from nelib.runner.loop import advance, evaluate_first, exit_on_ctrl_c, train_to_end
from nelib.runner.process import setup_process
from nelib.runner.store import ResultStore, current_command
from nelib.runner.train import Run, parse_args, stored_rows


def compact(state):
    """``state`` with every tensor copied out of the stacks, so that a checkpoint holds one seed's
    parameters only (``torch.save`` writes the whole storage of a view)."""
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: compact(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(compact(v) for v in state)
    return state


def check_group(configs: Sequence[TrainConfig]) -> None:
    """Configs that can train together: TD3 runs that are equal but for distinct seeds."""
    if not configs:
        raise ValueError("no configs to run")
    if any(not spec(c.algo).vectorizable for c in configs):
        raise ValueError("vectorized seeds are implemented for TD3 tasks only (DrQ runs one seed per process)")
    if any(c.agent.precision != "fp32" for c in configs):
        raise ValueError("vectorized seeds run in fp32 only (agent.precision bf16 runs one seed per process)")
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"vectorized runs need distinct seeds, got {seeds}")
    base = dataclasses.replace(configs[0], seed=0)
    if any(dataclasses.replace(c, seed=0) != base for c in configs):
        raise ValueError("vectorized runs must have the same config apart from the seed")


def seed_groups(configs: Sequence[TrainConfig], k: int) -> list[list[TrainConfig]]:
    """``configs`` as work items of :func:`nelib.runner.backends.run_configs`: TD3 runs equal but for the seed in
    groups of at most ``k`` (trained by one :func:`run_vectorized`), every other run alone; order kept."""
    groups: dict[object, list[list[TrainConfig]]] = {}
    items: list[list[TrainConfig]] = []
    for c in configs:
        if not spec(c.algo).vectorizable or k <= 1 or c.agent.precision != "fp32":
            items.append([c])
            continue
        key = dataclasses.replace(c, seed=0).hash() + str((c.device, c.threads, c.checkpoint_every, c.progress,
                                                           c.cuda_graph))
        open_groups = groups.setdefault(key, [])
        if open_groups and len(open_groups[-1]) < k:
            open_groups[-1].append(c)
        else:
            open_groups.append([c])
            items.append(open_groups[-1])
    return items


def auto_vectorize(configs: Sequence[TrainConfig]) -> int:
    """How many seeds to train together when asked to choose: all seeds of a task and method where the runs
    go to a GPU (a single TD3 run leaves it mostly idle), none on CPU (there, K single runs on the process
    pool are as fast; see docs/speed.md)."""
    from nelib.runner.train import runs_on_cuda

    if not runs_on_cuda(configs):
        return 0
    return len({c.seed for c in configs})


def run_group(configs: Sequence[TrainConfig], root: str, overwrite: bool, command: str = "") -> None:
    """A pool worker's job: :func:`run_vectorized` on the store at ``root`` (one config: a single run)."""
    from nelib.runner.train import run

    if len(configs) == 1 and not configs[0].cuda_graph:  # a CUDA graph replays the batched update: K = 1 too
        run(configs[0], ResultStore(root), overwrite=overwrite, command=command or None)
    else:
        run_vectorized(configs, ResultStore(root), overwrite=overwrite, command=command or None)


def run_vectorized(configs: Sequence[TrainConfig], store: ResultStore | None = None, overwrite: bool = False,
                   command: str | None = None) -> list[pd.DataFrame]:
    """Train (or load) runs that differ only in their seed together; return each one's evaluation rows.

    Each seed is stored as its own run, exactly as :func:`nelib.runner.train.run` stores it (its record's wall
    time is the shared process's; its command is this process's command line, marked as vectorized).
    Runs already stored are loaded; interrupted ones resume from their checkpoints.
    """
    check_group(configs)
    store = store or ResultStore()
    done = {c.seed: stored_rows(c, store, overwrite) for c in configs}
    todo = [c for c in configs if done[c.seed] is None]
    if todo:
        setup_process(todo[0].threads)
        command = command or current_command()
        command += f"  [nelib.runner.vectorized: seeds {','.join(str(c.seed) for c in todo)} in one process]"
        runs = [SeedRun(c, store) for c in todo]
        for r, df in zip(runs, train_together(runs, command), strict=True):
            done[r.cfg.seed] = df
    return [done[c.seed] for c in configs]


class SeedRun(Run):
    """A single run that a :class:`VectorTD3` trains with others: its checkpoints copy its agent's
    parameters out of the shared stacks."""

    def agent_state(self) -> dict:
        return compact(self.agent.state_dict())


def train_together(runs: Sequence[Run], command: str | None = None) -> list[pd.DataFrame]:
    """Train ``runs`` (TD3, same config but the seed) to the end in lockstep; store them; return their rows."""
    cfg = runs[0].cfg
    evaluate_first(runs)
    # Resumed seeds may stand at different steps (each checkpoints at its own episode ends): the ones
    # behind step alone, as a single run would, until all stand at the same step.
    t = max(r.t for r in runs)
    for r in runs:
        advance([r], r.step, t)
    vec = VectorTD3([r.agent for r in runs], cuda_graph=cfg.cuda_graph)
    return train_to_end(runs, lambda: step_together(runs, vec), f"{cfg.method} {cfg.task} x{len(runs)} seeds",
                        command)


def step_together(runs: Sequence[Run], vec: VectorTD3) -> None:
    """One step of every run: each acts (the policies in one batched pass) and steps its env, then one
    batched update of all agents."""
    for r in runs:
        r.begin_step()
    if runs[0].random_phase:
        actions = [r.random_action() for r in runs]
    else:  # each seed's noise from its own generator, as TD3.explore draws it
        noise = [r.agent.exploration_noise(r.rng) for r in runs]
        greedy = vec.select_actions([r.obs for r in runs])
        actions = [r.clip(a + n) for r, a, n in zip(runs, greedy, noise, strict=True)]
    for r, a in zip(runs, actions, strict=True):
        r.env_step(a)
    if runs[0].trains:
        for r, metrics in zip(runs, vec.train([r.buffer for r in runs]), strict=True):
            r.record_update(metrics)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds trained together")
    known, rest = p.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__.split("\n")[0] + "\n\n--seeds S,S,...  comma-separated seeds trained together (default 0,1,2)"
              "\nevery other option as for python -m nelib.runner.train:\n")
    cfg, args = parse_args(rest, prog="python -m nelib.runner.vectorized [--seeds S,S,...]")
    try:
        seeds = [int(s) for s in known.seeds.split(",")]
        configs = [dataclasses.replace(cfg, seed=s) for s in seeds]
        for c in configs:
            preflight.check_config(c)  # a bad value is the one line said, before any note on the config
        for mismatch in filter(None, map(experiment_mismatch, configs)):
            note(mismatch)
        with exit_on_ctrl_c():
            dfs = run_vectorized(configs, ResultStore(args.data_dir), overwrite=args.overwrite)
    except ValueError as e:
        sys.exit(f"error: {e}")
    for s, df in zip(seeds, dfs, strict=True):
        last = df.iloc[-1]
        print(f"{cfg.method} {cfg.task} seed {s}: return {last['return_mean']:.1f} at step {int(last['step'])}")


if __name__ == "__main__":
    main()
