"""Cyclic runs (one agent trained through a repeating sequence of tasks): each visit's return, its step
span, the change from the first visit to the last, and the figures over the whole sequence."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from nelib.report.curves import BAND, active_floor, curve_caption, curves, legend_above, legend_names
from nelib.report.plotting import caption, palette


def visit_returns(df: pd.DataFrame) -> pd.DataFrame:
    """Cyclic runs: the last evaluation return of every visit (stage) of every run, with its task."""
    d = df.dropna(subset=["stage"]).sort_values("step")
    last = d.groupby(["label", "seed", "stage"]).tail(1)
    out = last[["label", "seed", "stage", "task_now", "return_mean"]].copy()
    n_tasks = out["task_now"].nunique()
    out["visit"] = (out["stage"] // max(n_tasks, 1)).astype(int) + 1
    return out.reset_index(drop=True)


def visit_spans(df: pd.DataFrame) -> pd.DataFrame:
    """Cyclic runs: each visit's task and step span, ``start`` to ``end`` (the median over runs of the
    visit's last evaluation step; a visit runs on to its first episode end, so runs differ slightly)."""
    d = df.dropna(subset=["stage"])
    last = d.groupby(["label", "seed", "stage"]).agg(end=("step", "max"), task=("task_now", "first"))
    spans = last.groupby("stage").agg(end=("end", "median"), task=("task", "first")).sort_index()
    spans["start"] = spans["end"].shift(fill_value=0.0)
    return spans.reset_index()[["stage", "task", "start", "end"]]


def revisit_changes(visits: pd.DataFrame) -> pd.DataFrame:
    """Cyclic runs: per task and label, the mean return at the end of the first and the last visit
    (over seeds) and the change between them; the labels' order within a task is by that change."""
    mean = visits.groupby(["task_now", "label", "visit"])["return_mean"].mean().unstack("visit")
    out = pd.DataFrame({"first": mean[mean.columns.min()], "last": mean[mean.columns.max()]})
    out["change"] = out["last"] - out["first"]
    out = out.reset_index().rename(columns={"task_now": "task"})
    return out.sort_values(["task", "change"], ascending=[True, False], kind="stable").reset_index(drop=True)


def cyclic_curves(df: pd.DataFrame, ys: Sequence[str], height: float = 2.6, random_start: float | None = None):
    """Cyclic runs: one row per metric against steps over the whole sequence; visits alternate between white
    and a light grey band, separated by thin lines and named on top (task and visit); a single legend and a
    caption."""
    spans = visit_spans(df)
    n_tasks = spans["task"].nunique()
    fig, axes = plt.subplots(len(ys), 1, figsize=(10, height * len(ys)), squeeze=False, sharex=True)
    names, colors = legend_names(df), palette(list(dict.fromkeys(df["label"])))
    floor = active_floor(df[[y for y in ys if y.endswith("active_ratio") and y in df]])
    for i, y in enumerate(ys):
        ax = curves(df, y, axes[i, 0], names=names, colors=colors, random_start=random_start, floor=floor)
        for s in spans.itertuples():
            if s.stage % 2:
                ax.axvspan(s.start / 1000, s.end / 1000, color="0.95", lw=0, zorder=0)
            ax.axvline(s.end / 1000, color="0.6", lw=0.8, zorder=0.5)
            if i == 0:
                visit = int(s.stage) // max(n_tasks, 1) + 1
                ax.text((s.start + s.end) / 2000, 1.02, f"{s.task.removesuffix('-v5')}\nvisit {visit}",
                        ha="center", va="bottom", fontsize=10, transform=ax.get_xaxis_transform())
        if ax.get_legend():
            ax.get_legend().remove()
        if i < len(ys) - 1:
            ax.set_xlabel("")
    legend_above(fig, axes)
    if fig.legends:  # above the visit names, which stand above the top panel
        renderer = fig.canvas.get_renderer()
        top = max([t.get_window_extent(renderer).transformed(fig.transFigure.inverted()).y1 for t in axes[0, 0].texts]
                  + [1.0])
        fig.legends[-1].set_bbox_to_anchor((0.5, top + 0.005), transform=fig.transFigure)
    caption(fig, curve_caption(df, random_start, "Thin lines: task switches (median over runs; a visit runs on "
                                                 "to its first episode end)."))
    return fig


def visit_return_grid(visits: pd.DataFrame, labels: Sequence[str] | None = None):
    """Cyclic runs: one panel per task, the return at the end of each visit (mean, 95% CI over seeds)."""
    tasks = list(dict.fromkeys(visits["task_now"]))
    labels = [lab for lab in (labels or dict.fromkeys(visits["label"])) if lab in set(visits["label"])]
    names = legend_names(visits.assign(task=visits["task_now"]))
    colors = palette(labels)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = visits[visits.task_now == task]
        sns.pointplot(data=sub.assign(_name=sub["label"].map(names)), x="visit", y="return_mean", hue="_name",
                      hue_order=[names[lab] for lab in labels], palette={names[lab]: colors[lab] for lab in labels},
                      errorbar=("ci", 95), seed=0, dodge=0.3 if len(labels) > 1 else False, ax=ax)
        ax.set(title=task, xlabel="visit", ylabel="return at end of visit")
        if ax.get_legend():
            ax.get_legend().remove()
    legend_above(fig, axes)
    caption(fig, f"Point: mean over seeds (n per method in the legend) of the last evaluation return of each "
                 f"visit; bar: {BAND}.")
    return fig
