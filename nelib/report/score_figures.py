"""Figures of final scores: rliable aggregates with their intervals, and the one-at-a-time sensitivity."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from nelib.report.plotting import caption, method_color, method_name
from nelib.report.scoring import IQM_MIN_RUNS


def interval_plot(agg: pd.DataFrame, metrics_order: Sequence[str] = ("IQM", "mean", "optimality gap"),
                  counts: dict[str, tuple[int, int]] | None = None, baseline: str = "td3",
                  order: Sequence[str] | None = None):
    """One panel per aggregate metric: point estimate and 95% CI per method (top to bottom in ``order``, by
    default as in ``agg``), with the runs behind each (``counts`` from :func:`run_counts`) and a caption. The
    IQM panel is left out (and the caption says why) when no method has :data:`IQM_MIN_RUNS` runs, since it
    would repeat the mean panel."""
    present = list(dict.fromkeys(agg["label"]))
    labels = [lab for lab in (order or present) if lab in present] + [lab for lab in present
                                                                       if order and lab not in order]
    runs = {lab: math.prod(counts[lab]) for lab in labels if counts and lab in counts}
    dropped = bool(runs) and "IQM" in metrics_order and max(runs.values()) < IQM_MIN_RUNS
    shown = [m for m in metrics_order if not (dropped and m == "IQM")]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown) + 1.2, 0.8 + 0.55 * len(labels)),
                             squeeze=False)
    base = method_name(baseline)

    def ytick(lab: str) -> str:
        if not counts or lab not in counts:
            return method_name(lab)
        seeds, tasks = counts[lab]
        runs = f"n={seeds} seed{'s' if seeds != 1 else ''}" + (f" × {tasks} tasks" if tasks > 1 else "")
        return f"{method_name(lab)}\n({runs})"

    for ax, m in zip(axes[0], shown, strict=True):
        sub = agg[agg.metric == m].set_index("label").reindex(labels)
        ax.axvline(0.0 if m == "optimality gap" else 1.0, color="0.3", lw=1.0, ls="--", zorder=1.5)
        for y, lab in enumerate(labels):
            ax.plot([sub.loc[lab, "low"], sub.loc[lab, "high"]], [y, y], lw=6, alpha=0.6,
                    color=method_color(lab), solid_capstyle="butt")
            ax.plot(sub.loc[lab, "point"], y, "|", color="k", ms=14)
        ax.set_yticks(range(len(labels)), [ytick(lab) for lab in labels] if ax is axes[0, 0] else [""] * len(labels))
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_title(m + (" (lower is better)" if m == "optimality gap" else ""))
        ax.set_xlabel(f"{base}-normalised score")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    fig.tight_layout()
    text = (f"Each run's final return (mean of its last 3 evaluations) divided by {base}'s mean final return on "
            f"the same task. Tick: point estimate; bar: 95% stratified-bootstrap CI over seeds (rliable). IQM: "
            f"mean of the middle 50% of the runs; optimality gap: mean shortfall below {base}'s level (1.0). "
            f"Dashed: 1.0, {base}'s mean final return (IQM, mean), and 0, no shortfall (gap). A bar too short to "
            f"see is an interval of zero width: one seed, or (gap) no run below {base}'s level.")
    if dropped:
        text += (f" No IQM panel: with fewer than {IQM_MIN_RUNS} runs per method the IQM trims nothing and "
                 "equals the mean.")
    caption(fig, text)
    return fig


PARAM_TITLES = {
    "density": "initial density",
    "tend": "T_end: full size after this share of the updates",
    "omega": "pruning cap ω (share of the grown)",
    "early": "early share reviewed (review.early_fraction)",
}
"""Panel titles of the sensitivity parameters (variant label prefixes)."""


def sensitivity_plot(table: pd.DataFrame):
    """One panel per parameter: final return against its value (mean and 95% CI over seeds, each seed a dot;
    the default value marked on the axis)."""
    params = list(dict.fromkeys(table["param"]))
    tasks = list(dict.fromkeys(table["task"]))
    colors = [method_color("ne")] if len(tasks) == 1 else sns.color_palette("colorblind", len(tasks))
    fig, axes = plt.subplots(1, len(params), figsize=(3.4 * len(params), 3.4), squeeze=False, sharey=True)
    np.random.seed(0)  # seaborn's strip jitter draws from numpy's global RNG: same figure on every run
    for ax, p in zip(axes[0], params, strict=True):
        sub = table[table.param == p]
        dodge = 0.2 if len(tasks) > 1 else False  # seaborn divides by zero dodging one hue
        sns.stripplot(data=sub, x="value", y="score", hue="task", hue_order=tasks, dodge=bool(dodge), ax=ax,
                      alpha=0.35, size=4, jitter=0.05, legend=False, palette=colors)
        sns.pointplot(data=sub, x="value", y="score", hue="task", hue_order=tasks, errorbar=("ci", 95), seed=0,
                      ax=ax, dodge=dodge, markers="o", palette=colors)
        default = sub.loc[sub["default"], "value"]
        ticks = [f"{v:g}" for v in sorted(sub["value"].unique())]
        ax.set_xticks(range(len(ticks)), [f"{t}\n(default)" if not default.empty and t == f"{default.iloc[0]:g}"
                                          else t for t in ticks])
        ax.set_title(textwrap.fill(PARAM_TITLES.get(p, p), 24), fontsize=10)
        ax.set_xlabel(None)
        ax.set_ylabel("final return\n(mean of last 3 evaluations)" if ax is axes[0, 0] else None)
        if ax.get_legend():
            ax.get_legend().remove()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if len(tasks) > 1:
        fig.tight_layout()
        fig.legend(handles[-len(tasks):], labels[-len(tasks):], loc="lower center", ncol=len(tasks),
                   frameon=False, bbox_to_anchor=(0.5, 1.0))
    else:
        fig.suptitle(tasks[0])
        fig.tight_layout()
    n = table.groupby(["param", "value", "task"])["seed"].nunique()
    seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    caption(fig, f"NE with one parameter changed at a time. Dots: single seeds; point and bar: mean and 95% "
                 f"bootstrap CI over the {seeds} seeds of each value; the default value's runs are the same in "
                 "every panel.")
    return fig
