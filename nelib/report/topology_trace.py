"""A method's topology schedule traced without training: density, grown and pruned at every topology update.

The growth and pruning counts of NE's schedules depend on the update number and the masks, hardly on what
the networks learn, so stepping a method's real agent (built as a run builds it) through its topology
updates on random inputs shows its schedule in seconds: when each network fills up, how many connections
change per update, and whether the topology keeps changing until the end. The networks take one optimizer
step (on a squared-output loss) per topology update, so gradients and dormant units are those of random
inputs, not of a trained agent: the counts are the schedule's, the pruned counts a lower bound.
"""

from __future__ import annotations

import pandas as pd
import torch

from nelib.metrics import capture_activations
from nelib.runner.algos import build_agent
from nelib.runner.config import make_config
from nelib.sparse.masks import copy_masks, mask_gradients

MUJOCO_DIMS = {"HalfCheetah-v5": (17, 6), "Walker2d-v5": (17, 6), "Hopper-v5": (11, 3), "Ant-v5": (105, 8),
               "Humanoid-v5": (348, 17)}
"""Observation and action sizes of the MuJoCo tasks (so that tracing needs no environment)."""


@torch.no_grad()
def _inputs(key: str, obs_dim: int, act_dim: int, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    obs = torch.randn(batch, obs_dim, generator=gen)
    return (obs,) if key == "actor" else (obs, torch.rand(batch, act_dim, generator=gen) * 2 - 1)


def topology_trace(method: str, task: str = "HalfCheetah-v5", preset: str = "laptop", seed: int = 0,
                   batch: int = 256, **overrides) -> pd.DataFrame:
    """One row per topology update of each grown network of ``method``'s TD3 agent at ``preset`` scale:
    ``net`` (actor or critic), ``update`` (that network's own update count), ``step`` (environment step),
    ``grown``, ``pruned`` and ``density``."""
    cfg = make_config(task, method, seed, preset, **overrides)
    if not cfg.expansion:
        raise ValueError(f"method {method!r} has no topology updates to trace")
    obs_dim, act_dim = MUJOCO_DIMS[task]
    agent = build_agent(cfg, obs_dim, act_dim, 1.0, "cpu")
    gen, rows = torch.Generator().manual_seed(seed), []
    per_update = {"critic": 1, "actor": cfg.agent.policy_delay}  # critic updates per update of the network
    for key, sched in agent.topology.items():
        net, opt = getattr(agent, key), getattr(agent, f"{key}_opt")
        for update in range(sched.cfg.interval, sched.total_updates + 1, sched.cfg.interval):
            inputs = _inputs(key, obs_dim, act_dim, batch, gen)
            sched.watch(update)
            out = net(*inputs)
            loss = sum(o.pow(2).mean() for o in out) if isinstance(out, tuple) else out.pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sched.capture_gradients()
            mask_gradients(net)
            opt.step()
            stats = sched.step(update, capture_activations(net, *inputs))
            target = getattr(agent, f"{key}_target")
            if target is not None:
                copy_masks(net, target)
            rows.append({"method": method, "net": key, "update": update,
                         "step": cfg.start_steps + update * per_update[key], **stats})
    return pd.DataFrame(rows)


def trace_plot(trace: pd.DataFrame, random_start: float | None = None):
    """Density, grown and pruned per topology update (columns) of each traced network (rows), one line per
    method, against environment steps; ``random_start`` (steps) shades the random-action start. The caption
    says what a trace is (one seed, random inputs, no training)."""
    import matplotlib.pyplot as plt

    from nelib.report.plotting import RANDOM_START_COLOR, RANDOM_START_LABEL, STEP_LABEL, caption, method_name, palette

    nets = [n for n in ("critic", "actor") if n in set(trace["net"])]
    cols = (("density", "density (share of weights present)"), ("grown", "connections grown per update"),
            ("pruned", "connections pruned per update"))
    colors = palette(list(dict.fromkeys(trace["method"])))
    fig, axes = plt.subplots(len(nets), 3, figsize=(12, 2.9 * len(nets)), squeeze=False, sharex=True)
    for i, net in enumerate(nets):
        for j, (col, label) in enumerate(cols):
            ax = axes[i, j]
            if random_start:
                ax.axvspan(0, random_start / 1000, color=RANDOM_START_COLOR, lw=0, zorder=0,
                           label=RANDOM_START_LABEL)
            for method, g in trace[trace["net"] == net].groupby("method", sort=False):
                ax.plot(g["step"] / 1000, g[col], lw=1.2, label=method_name(method), color=colors[method])
            ax.set_title(f"{net}: {label}", fontsize=10)
            if col == "density":
                ax.set_ylim(0, 1.03)
            else:
                ax.set_yscale("symlog", linthresh=10)
            if i == len(nets) - 1:
                ax.set_xlabel(STEP_LABEL)
    handles: dict[str, object] = {}
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    labels = sorted(handles, key=lambda lab: lab == RANDOM_START_LABEL)  # methods first
    fig.tight_layout()
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    caption(fig, "Each method's real agent stepped through its topology updates on random inputs (one seed, one "
                 "optimizer step per update, no environment): the counts are the schedule's, the pruned counts a "
                 "lower bound (a trained network has more dormant units). Grown and pruned axes: linear up to 10, "
                 "logarithmic above. A network missing from a row is not grown by that method.")
    return fig
