"""Curves over stored runs against steps: the mean over seeds with a bootstrap band, in grids of tasks and
metrics, with captions that say what the lines, bands and markers are and over how many seeds.

Seeds are the statistical unit: a band is across seeds, never across evaluation episodes, and every legend
entry carries its number of seeds.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_hex

from nelib.report.plotting import (
    RANDOM_START_COLOR,
    RANDOM_START_LABEL,
    STEP_LABEL,
    axis_label,
    caption,
    label_of,
    method_color,
    method_name,
    palette,
    shade,
)

BAND = "95% bootstrap CI across seeds"
"""The band every curve figure draws around the mean over seeds (seaborn, 1000 resamples, seed 0)."""
RECYCLE_LABEL = "evaluated right after a ReDo recycle"


def seed_counts(df: pd.DataFrame, hue: str = "label") -> dict[str, str]:
    """Seeds per ``hue`` value and task, as text: ``"3"``, or ``"2-3"`` when tasks differ."""
    n = df.groupby([hue, "task"])["seed"].nunique() if "task" in df else df.groupby(hue)["seed"].nunique()
    out = {}
    for lab, g in n.groupby(level=0):
        lo, hi = int(g.min()), int(g.max())
        out[lab] = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return out


def legend_names(df: pd.DataFrame, hue: str = "label") -> dict[str, str]:
    """Legend entry of every ``hue`` value: its readable name and its number of seeds, ``"NE (n=3)"``."""
    counts = seed_counts(df, hue)
    return {lab: f"{method_name(str(lab))} (n={counts[lab]})" for lab in dict.fromkeys(df[hue])}


def curve_caption(df: pd.DataFrame, random_start: float | dict | None = None, extra: str = "",
                  unit: str = "steps") -> str:
    """The caption of a curve figure: what the lines and bands are, over how many seeds, what the grey span
    (``random_start``, in ``unit``; a dict: per task) and the ReDo markers mean."""
    n = df.groupby(["label", "task"])["seed"].nunique() if len(df) else pd.Series(dtype=int)
    text = f"Lines: mean over seeds (n seeds per method in the legend); bands: {BAND}"
    if len(n) and n.max() <= 1:
        text += " (one seed: no band)"
    elif len(n) and n.min() <= 3:
        text += f" (with {n.min()}{'' if n.min() == n.max() else f'-{n.max()}'} seeds a band spans little more " \
                "than the runs themselves)"
    text += "."
    if isinstance(random_start, dict):
        spans = sorted(set(random_start.values()))
        text += (f" Grey span: the first {spans[0]:,.0f} {unit}, {RANDOM_START_LABEL}." if len(spans) == 1 else
                 f" Grey span: each task's first {unit} ({', '.join(f'{t} {v:,.0f}' for t, v in random_start.items())}"
                 f"), {RANDOM_START_LABEL}.")
    elif random_start:
        text += f" Grey span: the first {random_start:,.0f} {unit}, {RANDOM_START_LABEL}."
    if "after_recycle" in df and df["after_recycle"].fillna(False).astype(bool).any():
        every = sorted({int(v) for v in df["recycle_every"].dropna()})
        text += (f" Open circles: ReDo evaluated right after one of its recycles (every "
                 f"{', '.join(f'{v:,}' for v in every)} updates), when its dormant units have just been "
                 "re-initialised: there its active ratio and dormant share show its best case, not the network it "
                 "trains with.")
    return text + (f" {extra}" if extra else "")


def mark_recycles(df: pd.DataFrame, configs: Sequence) -> pd.DataFrame:
    """``df`` with ``after_recycle`` (True where a ReDo run's evaluation comes right after a recycle) and
    ``recycle_every`` (the ReDo interval, in updates) for the runs of ``configs`` that use ReDo.

    A run updates once per environment (agent) step after its ``start_steps`` random ones, so update ``u`` is
    step ``start_steps + u``, and ReDo recycles at every multiple of ``redo.interval`` updates. ``df["step"]``
    must count agent steps (as stored), not frames.
    """
    out = df.assign(after_recycle=False, recycle_every=np.nan)
    for cfg in configs:
        redo = getattr(cfg, "redo", None)
        if redo is None or not redo.enabled:
            continue
        rows = (out["task"] == cfg.task) & (out["label"] == cfg.label) & (out["seed"] == cfg.seed)
        updates = out.loc[rows, "step"] - cfg.start_steps
        out.loc[rows, "after_recycle"] = (updates > 0) & (updates % redo.interval == 0)
        out.loc[rows, "recycle_every"] = redo.interval
    return out


def recycle_dormancy(df: pd.DataFrame, tau: float = 0.1) -> pd.DataFrame:
    """ReDo's dormant share two ways, per task and network, over the evaluation windows that hold a recycle:
    at the evaluation (``<net>_dormant_<tau>``, on the metrics batch; where the evaluation comes right after a
    recycle, :func:`mark_recycles`, this is ReDo's best case) and on the batch of each recycle just before
    it (``<net>_dormant_before_recycle``, the window's mean). ``runs``: the runs that have the second column
    (runs stored before the runner kept it have none); empty if no run has it."""
    rows = []
    after = df["after_recycle"].fillna(False).astype(bool) if "after_recycle" in df else pd.Series(False, df.index)
    for net in ("critic", "actor"):
        before = f"{net}_dormant_before_recycle"
        if before not in df:
            continue
        has = df[before].notna()
        for task, g in df[has].groupby("task"):
            rows.append({"task": task, "network": net, "runs": g["seed"].nunique(),
                         "evaluations right after a recycle": after[g.index].mean(),
                         f"dormant {tau:g} at evaluation": g[f"{net}_dormant_{tau:g}"].mean(),
                         f"dormant {tau:g} just before each recycle": g[before].mean()})
    return pd.DataFrame(rows)


def active_floor(values) -> float:
    """Lower end of an active-ratio axis: 0.9, or lower in steps of 0.05 to hold every value. One floor for
    all the active-ratio panels of a figure keeps a 0.4% change from looking like a collapse."""
    values = pd.Series(np.ravel(values), dtype=float).dropna()
    return min(0.9, math.floor(values.min() * 20) / 20) if len(values) else 0.9


def _honest_limits(ax, y: str, values: pd.Series, floor: float | None = None) -> None:
    """Axis ranges that do not exaggerate: shares start at 0 (active ratios at ``floor``, 0.9 or lower, and
    the label says so), densities and review strength span [0, 1]."""
    if y.endswith("active_ratio"):
        lo = active_floor(values) if floor is None else floor
        ax.set_ylim(lo, 1.0 + (1.0 - lo) * 0.03)
        if lo > 0:
            ax.set_ylabel(f"{ax.get_ylabel()}\n(axis from {lo:.2f})")
    elif y.endswith("density") or y == "review_share":
        ax.set_ylim(-0.02, 1.03)
    elif "_dormant_" in y or y in ("grown", "pruned"):
        ax.set_ylim(bottom=0)


def curves(df: pd.DataFrame, y: str, ax=None, hue: str = "label", title: str | None = None,
           xlabel: str = STEP_LABEL, names: dict | None = None, colors: dict | None = None,
           random_start: float | None = None, floor: float | None = None):
    """Mean of ``y`` over seeds against steps, with a 95% bootstrap CI band across seeds.

    ``names`` and ``colors`` map each ``hue`` value to its legend entry and colour (default: the method's
    readable name with its seed count, and its colour). ``random_start`` (steps) shades the random-action
    start; ``floor`` is the lower end of an active-ratio axis (default :func:`active_floor` of the panel).
    Density panels leave out methods that stay dense (and say which), and a method with no value of ``y`` is
    named in a note (review metrics: it has no experience review); on plasticity metrics, ReDo evaluations
    right after a recycle (``after_recycle``, from :func:`mark_recycles`) get an open circle.
    """
    ax = ax or plt.gca()
    if random_start:
        ax.axvspan(0, random_start / 1000, color=RANDOM_START_COLOR, lw=0, zorder=0,
                   label=RANDOM_START_LABEL)
    why = "no experience review" if y.startswith("review") else "not logged"  # why a method has no line
    if y not in df.columns or df[y].isna().all():  # e.g. a metric added after these runs were made
        ax.text(0.5, 0.5, f"{label_of(y)}:\n{why} in these runs", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        return ax
    data = df.dropna(subset=[y]).assign(kstep=lambda d: d["step"] / 1000)
    labels = list(dict.fromkeys(data[hue]))
    absent = [lab for lab in dict.fromkeys(df[hue]) if lab not in labels]
    if absent:  # a method in the legend with no line here says why
        ax.text(0.98, 0.96, textwrap.fill(f"{why}: " + ", ".join(method_name(str(lab)) for lab in absent), 40),
                transform=ax.transAxes, ha="right", va="top", fontsize=8, color="0.3")
    names = names or legend_names(data, hue)
    colors = colors or palette(labels)
    if y.endswith("density"):  # a dense method is a flat line at 1.0 that would hide the others
        dense = [lab for lab in labels if (data.loc[data[hue] == lab, y] >= 1 - 1e-9).all()]
        if dense:
            ax.text(0.98, 0.04, textwrap.fill("at 1.0 throughout (dense): " + ", ".join(
                method_name(str(lab)) for lab in dense), 40), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, color="0.3")
            labels = [lab for lab in labels if lab not in dense]
            data = data[data[hue].isin(labels)]
    if labels:
        sns.lineplot(data=data.assign(_name=data[hue].map(names)), x="kstep", y=y, hue="_name",
                     hue_order=[names[lab] for lab in labels],
                     palette={names[lab]: colors[lab] for lab in labels},
                     errorbar=("ci", 95), n_boot=1000, seed=0, ax=ax)
        if "after_recycle" in data and any(k in y for k in ("active", "dormant", "fau")):
            for lab in labels:
                hit = data[(data[hue] == lab) & data["after_recycle"].fillna(False).astype(bool)]
                if len(hit):
                    m = hit.groupby("kstep")[y].mean()
                    ax.plot(m.index, m.to_numpy(), ls="none", marker="o", ms=4.5, mfc="white", mec=colors[lab],
                            mew=1.2, zorder=5, label=RECYCLE_LABEL)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(axis_label(y))
    if labels:
        _honest_limits(ax, y, data[y], floor)
    if ax.get_legend():
        ax.get_legend().set_title(None)
    if title:
        ax.set_title(title)
    return ax


def legend_above(fig, axes, ncol: int | None = None) -> None:
    """Lay the panels out, then put one figure legend above them, from the lines of all ``axes`` (each entry
    once: methods first, then the ReDo markers and the random-start shading)."""
    entries: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if not lab.startswith("_"):
                entries.setdefault(lab, h)
    order = sorted(entries, key=lambda lab: (lab == RECYCLE_LABEL) + 2 * (lab == RANDOM_START_LABEL))
    fig.tight_layout()
    ncol = ncol or max(2, int(fig.get_figwidth() / 3))
    if order:
        fig.legend([entries[lab] for lab in order], order, loc="lower center", ncol=min(len(order), ncol),
                   frameon=False, bbox_to_anchor=(0.5, 1.0))


def curve_grid(df: pd.DataFrame, ys: Sequence[str], hue: str = "label", height: float = 2.8,
               xlabel: str = STEP_LABEL, random_start: float | dict | None = None, note: str = "",
               unit: str = "steps", symlog: Sequence[str] = ()):
    """One row per metric, one column per task; a single legend (with each method's seeds) and a caption
    saying what the lines and bands are. ``xlabel`` names what ``df["step"]`` counts (``unit``, in a word),
    ``random_start`` (in those units; a dict: per task) shades the random-action start, ``note`` is added to the
    caption. The metrics in ``symlog`` (counts that span orders of magnitude between methods) get a symmetric
    log axis, linear below 1 so that zero stays on it, and the label says so."""
    unknown = [y for y in symlog if y not in ys]
    if unknown:
        raise ValueError(f"symlog names metrics not drawn: {unknown} (drawn: {list(ys)})")
    tasks = list(dict.fromkeys(df["task"]))
    fig, axes = plt.subplots(len(ys), len(tasks), figsize=(max(5.6, 4.6 * len(tasks)), height * len(ys)),
                             squeeze=False, sharex="col")
    names, colors = legend_names(df, hue), palette(list(dict.fromkeys(df[hue])))
    floor = active_floor(df[[y for y in ys if y.endswith("active_ratio") and y in df]])
    for j, task in enumerate(tasks):
        for i, y in enumerate(ys):
            ax = curves(df[df["task"] == task], y, axes[i, j], hue, title=task if i == 0 else None, xlabel=xlabel,
                        names=names, colors=colors, floor=floor,
                        random_start=random_start.get(task) if isinstance(random_start, dict) else random_start)
            if y in symlog:
                ax.set_yscale("symlog", linthresh=1.0)
                ax.set_ylim(bottom=0)
                ax.set_ylabel(f"{ax.get_ylabel()}\n(log scale)")
            if ax.get_legend():
                ax.get_legend().remove()
            if i < len(ys) - 1:
                ax.set_xlabel("")
    legend_above(fig, axes)
    caption(fig, curve_caption(df, random_start, note, unit))
    return fig


def dormant_grid(df: pd.DataFrame, nets: Sequence[str] = ("critic", "actor"),
                 taus: Sequence[str] = ("0", "0.025", "0.1"), random_start: float | None = None):
    """The dormant ratios of one method at several ReDo thresholds tau: one row per network, one column per
    task, one line per tau (darker: larger tau, more units counted), mean over seeds with a 95% CI band."""
    tasks = list(dict.fromkeys(df["task"]))
    shades = dict(zip(taus, ("#88CCEE", "#44AA99", "#332288"), strict=False))
    names = {tau: ("silent (score = 0)" if float(tau) == 0 else f"score <= {tau}") for tau in taus}
    fig, axes = plt.subplots(len(nets), len(tasks), figsize=(max(5.6, 4.6 * len(tasks)), 2.9 * len(nets)),
                             squeeze=False, sharex=True)
    for j, task in enumerate(tasks):
        for i, net in enumerate(nets):
            cols = [f"{net}_dormant_{tau}" for tau in taus]
            sub = df[df["task"] == task].melt(id_vars=["task", "seed", "step"], value_vars=cols, var_name="metric",
                                              value_name="ratio")
            sub["tau"] = sub["metric"].str.rsplit("_", n=1).str[1]
            ax = curves(sub.rename(columns={"ratio": f"{net}_dormant"}), f"{net}_dormant", axes[i, j], hue="tau",
                        title=task if i == 0 else None, names=names, colors=shades, random_start=random_start)
            ax.set_ylim(bottom=0)
            ax.set_ylabel(f"{net}: share of units\nwith ReDo score <= tau")
            if ax.get_legend():
                ax.get_legend().remove()
            if i < len(nets) - 1:
                ax.set_xlabel("")
    legend_above(fig, axes)
    n = seed_counts(df)
    method = ", ".join(f"{method_name(lab)} (n={k} seed{'s' if k != 1 else ''})" for lab, k in n.items())
    caption(fig, f"{method}. Lines: mean over seeds of the share of units whose ReDo score is at most tau, on "
                 f"1024 replay samples at each evaluation; bands: {BAND}."
                 + (f" Grey span: the first {random_start:,.0f} steps, {RANDOM_START_LABEL}." if random_start else ""))
    return fig


def review_trigger_plot(df: pd.DataFrame, label: str = "ne", random_start: float | None = None,
                        end: float | None = None, window_updates: int | None = None):
    """Experience review's trigger in the runs of ``label``: the fluctuation rate and its dynamic threshold
    (mean over seeds, 95% CI band; log scale), and each seed's review strength per evaluation window. Both
    panels span the whole run (``end`` steps); ``window_updates``: updates before the rate is defined."""
    runs = df[df["label"] == label]
    color = method_color(label)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharex=True)
    series = runs.melt(id_vars=["task", "seed", "step"], value_vars=[c for c in ("review_rate", "review_threshold")
                                                                      if c in runs], var_name="series",
                       value_name="value")
    series = series.assign(label=series["series"])
    names = {"review_rate": f"fluctuation rate, {method_name(label)}", "review_threshold": "dynamic threshold"}
    curves(series.rename(columns={"value": "review_signal"}), "review_signal", axes[0], names=names,
           colors={"review_rate": color, "review_threshold": "#000000"}, random_start=random_start)
    for line in axes[0].get_lines():  # the threshold dashed (seaborn's lines carry no hue label)
        if to_hex(line.get_color()) == "#000000":
            line.set_linestyle("--")
    if axes[0].get_legend():
        axes[0].get_legend().remove()
    axes[0].legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0),
                   ncol=2)
    if series["value"].gt(0).any():
        axes[0].set_yscale("log")
    axes[0].set_ylabel("change of the critic's\ndormant ratio per window")
    styles = ("-", "--", ":", "-.")
    for k, (seed, g) in enumerate(runs.groupby("seed")):
        axes[1].plot(g["step"] / 1000, g["review_share"], lw=1.3, ls=styles[k % len(styles)],
                     color=shade(color, -0.35 * (k % 3) + 0.2), label=f"seed {seed}")
    if random_start:
        axes[1].axvspan(0, random_start / 1000, color=RANDOM_START_COLOR, lw=0, zorder=0)
    axes[1].set_ylim(-0.02, 1.03)
    axes[1].set_ylabel("review strength\n(mean per evaluation window)")
    axes[1].set_xlabel(STEP_LABEL)
    axes[1].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=4)
    for ax in axes:
        ax.set_xlim(0, (end or runs["step"].max()) / 1000)
    fig.tight_layout()
    n = runs.groupby("task")["seed"].nunique()
    undefined = (f" The rate needs two full windows of measurements ({window_updates:,} updates after the random "
                 "start) before it is defined." if window_updates else "")
    seeds = f"{n.min()} seed{'s' if n.min() != 1 else ''}"
    caption(fig, f"{method_name(label)}, {seeds} per task. Left: the fluctuation rate and its dynamic threshold "
                 f"(dashed; review acts while the rate is below it), mean over seeds, {BAND}; grey span: "
                 f"{RANDOM_START_LABEL}.{undefined} Right: each seed's review strength (0: off, 1: full review) on "
                 "its own, no band: a strength that is 0 at most checks is not summarised well by a mean and an "
                 "interval over so few seeds.")
    return fig
