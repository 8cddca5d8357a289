"""Tables, curves and computed statements over stored runs (what the notebooks show).

Seeds are the statistical unit everywhere: a run's score is the mean of its last evaluations, and
uncertainty is across seeds, never across evaluation episodes. Every figure says what its lines, bands and
markers are and over how many seeds (a caption under it, n in the legend).
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_hex

from nelib.report import plotting
from nelib.report.plotting import caption, method_color, method_name

STEP_LABEL = "environment steps (x1000)"
METRIC_LABELS = {
    "return_mean": "evaluation return",
    "critic_active_ratio": "critic active-neuron ratio",
    "actor_active_ratio": "actor active-neuron ratio",
    "encoder_active_ratio": "encoder active-channel ratio",
    "critic_density": "critic density (share of weights present)",
    "actor_density": "actor density (share of weights present)",
    "critic_fau": "critic FAU",
    "grown": "connections grown per evaluation window",
    "pruned": "connections pruned per evaluation window",
    "review_share": "review strength (mean per evaluation window)",
    "review_rate": "fluctuation rate of the critic's dormant ratio",
    "review_threshold": "dynamic threshold",
}
BAND = "95% bootstrap CI across seeds"
"""The band every curve figure draws around the mean over seeds (seaborn, 1000 resamples, seed 0)."""
RANDOM_START_LABEL = "random actions, no updates yet"
RECYCLE_LABEL = "evaluated right after a ReDo recycle"


def label_of(col: str) -> str:
    """Readable name of a logged column (one line; axes wrap it)."""
    if col in METRIC_LABELS:
        return METRIC_LABELS[col]
    for net in ("critic", "actor", "encoder"):
        if col.startswith(f"{net}_dormant_"):
            tau = col.rsplit("_", 1)[1]
            units = "channels" if net == "encoder" else "units"
            if float(tau) == 0:
                return f"{net}: share of silent {units} (ReDo score = 0)"
            return f"{net}: share of dormant {units} (ReDo score <= {tau})"
    return col.replace("_", " ")


def axis_label(col: str, width: int = 28) -> str:
    """:func:`label_of`, wrapped to fit beside a panel."""
    return textwrap.fill(label_of(col), width)


def palette(labels: Sequence[str]) -> dict[str, str]:
    """Method colours, the same in every figure (:func:`nelib.report.plotting.palette`)."""
    return plotting.palette(labels)


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
    Density panels leave out methods that stay dense (and say which); on plasticity metrics, ReDo evaluations
    right after a recycle (``after_recycle``, from :func:`mark_recycles`) get an open circle.
    """
    ax = ax or plt.gca()
    if random_start:
        ax.axvspan(0, random_start / 1000, color=plotting.RANDOM_START_COLOR, lw=0, zorder=0,
                   label=RANDOM_START_LABEL)
    if y not in df.columns or df[y].isna().all():  # e.g. a metric added after these runs were made
        ax.text(0.5, 0.5, f"{label_of(y)}:\nnot logged in these runs", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        return ax
    data = df.dropna(subset=[y]).assign(kstep=lambda d: d["step"] / 1000)
    labels = list(dict.fromkeys(data[hue]))
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


def _legend_above(fig, axes, ncol: int | None = None) -> None:
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
               unit: str = "steps"):
    """One row per metric, one column per task; a single legend (with each method's seeds) and a caption
    saying what the lines and bands are. ``xlabel`` names what ``df["step"]`` counts (``unit``, in a word),
    ``random_start`` (in those units; a dict: per task) shades the random-action start, ``note`` is added to the
    caption."""
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
            if ax.get_legend():
                ax.get_legend().remove()
            if i < len(ys) - 1:
                ax.set_xlabel("")
    _legend_above(fig, axes)
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
    _legend_above(fig, axes)
    n = seed_counts(df)
    method = ", ".join(f"{method_name(lab)} (n={k} seeds)" for lab, k in n.items())
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
                     color=plotting.shade(color, -0.35 * (k % 3) + 0.2), label=f"seed {seed}")
    if random_start:
        axes[1].axvspan(0, random_start / 1000, color=plotting.RANDOM_START_COLOR, lw=0, zorder=0)
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


def final_scores(df: pd.DataFrame, y: str = "return_mean", last: int = 3) -> pd.DataFrame:
    """Per run (task, label, seed): the mean of ``y`` over its last ``last`` evaluations."""
    def tail_mean(g):
        return g.sort_values("step")[y].tail(last).mean()

    return (df.groupby(["task", "label", "seed"]).apply(tail_mean, include_groups=False)
            .rename("score").reset_index())


def summary_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean +- std over seeds of each (task, label) score, as a task x label table of strings."""
    agg = scores.groupby(["task", "label"])["score"].agg(["mean", "std", "count"]).reset_index()
    agg["cell"] = [f"{m:.0f} +- {0 if np.isnan(s) else s:.0f} (n={n})"
                   for m, s, n in zip(agg["mean"], agg["std"], agg["count"], strict=True)]
    return agg.pivot(index="task", columns="label", values="cell")


def compare(scores: pd.DataFrame, a: str, b: str) -> list[str]:
    """One sentence per task comparing the mean final score of ``a`` with ``b``."""
    out = []
    for task, g in scores.groupby("task"):
        ma, mb = g[g.label == a]["score"].mean(), g[g.label == b]["score"].mean()
        if np.isnan(ma) or np.isnan(mb):
            continue
        na, nb = (g.label == a).sum(), (g.label == b).sum()
        seeds = f"{na} seed(s) each" if na == nb else f"{na} vs {nb} seeds"
        rel = (ma - mb) / abs(mb) * 100 if mb else float("nan")
        verdict = "higher" if ma > mb else "lower"
        out.append(f"{task}: {a} {ma:.0f} vs {b} {mb:.0f} ({rel:+.0f}%, {verdict}; {seeds})")
    return out


def difference(scores: pd.DataFrame, a: str, b: str, level: float = 0.95) -> pd.DataFrame:
    """Per task: the mean final score of ``a`` minus that of ``b``, with a Welch t interval over seeds
    (``low``, ``high``; NaN with fewer than 2 seeds on either side) and the seed counts."""
    from scipy import stats

    rows = []
    for task, g in scores.groupby("task"):
        xa, xb = g[g.label == a]["score"].to_numpy(), g[g.label == b]["score"].to_numpy()
        if not len(xa) or not len(xb):
            continue
        low = high = np.nan
        if len(xa) > 1 and len(xb) > 1 and (xa.std() > 0 or xb.std() > 0):
            ci = stats.ttest_ind(xa, xb, equal_var=False).confidence_interval(level)
            low, high = float(ci.low), float(ci.high)
        rows.append({"task": task, "diff": xa.mean() - xb.mean(), "low": low, "high": high,
                     "n_a": len(xa), "n_b": len(xb)})
    return pd.DataFrame(rows, columns=["task", "diff", "low", "high", "n_a", "n_b"])


def difference_lines(diff: pd.DataFrame, a: str, b: str) -> list[str]:
    """One sentence per task of a :func:`difference` table."""
    out = []
    for r in diff.itertuples():
        ci = ("no interval: one seed" if np.isnan(r.low) else
              f"95% Welch interval [{r.low:+.0f}, {r.high:+.0f}] over {r.n_a} vs {r.n_b} seeds")
        out.append(f"{r.task}: final return of {a} minus {b}: {r.diff:+.0f} ({ci})")
    return out


def difference_verdict(diff: pd.DataFrame, a: str, b: str) -> str:
    """What a :func:`difference` table supports, in words: ``a`` above or below ``b`` (every task's interval
    on one side of 0), or a lean that seed-to-seed variation can explain."""
    name_a, name_b = f"*{method_name(a)}*", f"*{method_name(b)}*"
    if diff.empty:
        return f"{name_a} and {name_b} cannot be compared yet (no runs of both)"
    if diff["low"].isna().any():
        lean = "above" if diff["diff"].mean() > 0 else "below"
        return f"{name_a} ends {lean} {name_b}, on one seed: no interval, so no conclusion"
    if (diff["low"] > 0).all():
        return f"{name_a} ends above {name_b} (every task's 95% interval of the difference is above 0)"
    if (diff["high"] < 0).all():
        return f"{name_a} ends below {name_b} (every task's 95% interval of the difference is below 0)"
    lean = "above" if diff["diff"].mean() > 0 else "below"
    return (f"{name_a} ends {lean} {name_b} on average, but the 95% interval of the difference includes 0: with "
            "these seeds the gap is within seed-to-seed variation")


def trend(df: pd.DataFrame, col: str, label: str | None = None, early: int = 2, late: int = 2,
          unit: str = "steps", tol: float = 0.0) -> list[str]:
    """Per task: the mean of ``col`` over the first ``early`` measured evaluations vs the last ``late``
    (``unit``: what ``df["step"]`` counts, for the sentence); a change of at most ``tol`` "stayed"."""
    def span(steps) -> str:
        ks = [f"{s // 1000}k" for s in steps]
        return f"at {ks[0]} {unit}" if len(ks) == 1 else f"{unit} {ks[0]}-{ks[-1]}"

    out = []
    sub = df if label is None else df[df["label"] == label]
    for task, g in sub.dropna(subset=[col]).groupby("task"):
        steps = sorted(g["step"].unique())
        first = g[g["step"].isin(steps[:early])][col].mean()
        last = g[g["step"].isin(steps[-late:])][col].mean()
        direction = "rose" if last > first + tol else "fell" if last < first - tol else "stayed"
        who = f" ({label})" if label else ""
        change = "stayed flat: " if direction == "stayed" else f"{direction} from "
        out.append(f"{task}{who}: {label_of(col)} {change}{first:.3f} ({span(steps[:early])}) "
                   f"{'and' if direction == 'stayed' else 'to'} {last:.3f} ({span(steps[-late:])})")
    return out


def forgetting(df: pd.DataFrame, y: str = "return_mean") -> pd.DataFrame:
    """Per run: best return, final return and the drop from best to final (late-training forgetting)."""
    g = df.sort_values("step").groupby(["task", "label", "seed"])[y]
    out = pd.DataFrame({"best": g.max(), "final": g.last()}).reset_index()
    out["drop"] = out["best"] - out["final"]
    return out


def first_divergence(df: pd.DataFrame, a: str, b: str, y: str = "return_mean") -> pd.DataFrame:
    """Per task and seed: the last evaluation step at which arms ``a`` and ``b`` agree exactly in ``y`` before
    they first differ (``last_same``), and that first differing step (``first_different``; NaN if never).

    Two arms that differ in one switch (review on/off) are the same run, bit for bit, until the switch first
    changes an update, so this brackets when it first acted.
    """
    key = ["task", "seed", "step"]
    m = df[df["label"] == a][key + [y]].merge(df[df["label"] == b][key + [y]], on=key, suffixes=("_a", "_b"))
    m = m.sort_values(key)
    m["differs"] = m[f"{y}_a"] != m[f"{y}_b"]
    out = []
    for (task, seed), g in m.groupby(["task", "seed"]):
        first = g.loc[g["differs"], "step"].min()  # NaN if they never differ
        same = g["step"] if np.isnan(first) else g.loc[g["step"] < first, "step"]
        out.append({"task": task, "seed": seed, "last_same": same.max(), "first_different": first})
    return pd.DataFrame(out, columns=["task", "seed", "last_same", "first_different"])


def absent_arms(df: pd.DataFrame, labels: Sequence[str]) -> list[str]:
    """The ``labels`` with no rows in ``df`` (not stored, or stored by an earlier definition of the method)."""
    present = set(df["label"]) if "label" in df else set()
    return [lab for lab in labels if lab not in present]


def absent_note(df: pd.DataFrame, labels: Sequence[str]) -> str:
    """A sentence naming the arms missing from ``df`` ("" when none is), for a notebook's verdict."""
    missing = absent_arms(df, labels)
    if not missing:
        return ""
    return (f"No usable runs of {', '.join(f'`{m}`' for m in missing)}: not stored yet, or stored by an earlier "
            "definition of the method (stale, listed when the runs were loaded), so the comparisons that need "
            "them are left out.")


def bullet_list(lines: Sequence[str]) -> str:
    """Markdown bullets (for ``IPython.display.Markdown``)."""
    return "\n".join(f"- {line}" for line in lines) if lines else "- (no comparable runs)"


def common_tasks(scores: pd.DataFrame, baseline: str = "td3") -> list[str]:
    """Tasks on which every label has a score (and the baseline's mean is not 0), in sorted order: the
    tasks an aggregate over all labels can use while some runs are still missing."""
    per_label = scores.groupby("label")["task"].agg(set)
    tasks = set.intersection(*per_label) if len(per_label) else set()
    ref = scores[scores.label == baseline].groupby("task")["score"].mean()
    return sorted(t for t in tasks if t in ref.index and ref[t] != 0)


def normalized_scores(scores: pd.DataFrame, baseline: str = "td3") -> dict[str, np.ndarray]:
    """Final scores divided by ``baseline``'s mean final score on the same task.

    Returns rliable's layout: label -> array ``[seeds, tasks]`` over the :func:`common_tasks` (so every
    label is compared on the same tasks); only seeds present on all of them are kept, so the array is
    rectangular.
    """
    ref = scores[scores.label == baseline].groupby("task")["score"].mean()
    tasks = common_tasks(scores, baseline)
    out = {}
    for label, g in scores[scores.task.isin(tasks)].groupby("label"):
        table = g.pivot(index="seed", columns="task", values="score").reindex(columns=tasks).dropna()
        if len(table):
            out[label] = (table / ref[tasks].abs()).to_numpy()
    return out


def _interval_estimates(scores: dict, fn, reps: int, seed: int):
    """rliable's stratified-bootstrap point estimates and 95% CIs, drawn from generators seeded ``seed``.

    rliable's stratified bootstraps draw their resamples from numpy's *global* generator
    (``np.random.choice`` in ``update_indices``), not from the ``random_state`` they are given, so the global
    generator is seeded too for the call, and its state restored afterwards: the same scores give the same
    intervals in every process, and `make figures` redraws the same figures.
    """
    import warnings

    from rliable import library as rly

    outer = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch (under rliable) asks for `generator=`, which rliable does not pass on
            warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
            return rly.get_interval_estimates(scores, fn, reps=reps, random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(outer)


def aggregate(scores: pd.DataFrame, baseline: str = "td3", reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """IQM, mean and optimality gap (threshold: the baseline's level, 1.0) of baseline-normalised
    scores, with 95% stratified-bootstrap CIs over seeds (rliable). One row per (label, metric)."""
    from rliable import metrics

    norm = normalized_scores(scores, baseline)
    fns = {"IQM": metrics.aggregate_iqm, "mean": metrics.aggregate_mean,
           "optimality gap": metrics.aggregate_optimality_gap}
    point, ci = _interval_estimates(norm, lambda x: np.array([f(x) for f in fns.values()]), reps, seed)
    rows = [{"label": lab, "metric": m, "point": point[lab][i], "low": ci[lab][0, i], "high": ci[lab][1, i]}
            for lab in norm for i, m in enumerate(fns)]
    return pd.DataFrame(rows)


def probability_of_improvement(scores: pd.DataFrame, method: str, others: Sequence[str],
                               baseline: str = "td3", reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """P(method > other) over seeds and tasks (Agarwal et al. 2021), with 95% bootstrap CIs."""
    from rliable import metrics

    norm = normalized_scores(scores, baseline)
    pairs = {f"{method},{o}": (norm[method], norm[o]) for o in others if o in norm and method in norm}
    if not pairs:
        return pd.DataFrame(columns=["pair", "point", "low", "high"])
    point, ci = _interval_estimates(pairs, metrics.probability_of_improvement, reps, seed)
    return pd.DataFrame([{"pair": p.replace(",", " > "), "point": np.asarray(point[p]).item(),
                          "low": np.asarray(ci[p][0]).item(), "high": np.asarray(ci[p][1]).item()} for p in pairs])


def run_counts(scores: pd.DataFrame, baseline: str = "td3") -> dict[str, tuple[int, int]]:
    """Per label: (seeds, tasks) of the scores an aggregate over :func:`common_tasks` uses."""
    return {lab: tuple(arr.shape) for lab, arr in normalized_scores(scores, baseline).items()}


IQM_MIN_RUNS = 4
"""Below this many runs (seeds x tasks) per method the IQM (25% trimmed each side) trims nothing: it is the mean."""


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
        return f"{method_name(lab)}\n(n={seeds} seeds" + (f" × {tasks} tasks)" if tasks > 1 else ")")

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
    fig.tight_layout()
    text = (f"Each run's final return (mean of its last 3 evaluations) divided by {base}'s mean final return on "
            f"the same task. Tick: point estimate; bar: 95% stratified-bootstrap CI over seeds (rliable). IQM: "
            f"mean of the middle 50% of the runs; optimality gap: mean shortfall below {base}'s level (1.0). "
            f"Dashed: {base}'s level (IQM, mean) and no shortfall (gap).")
    if dropped:
        text += (f" No IQM panel: with fewer than {IQM_MIN_RUNS} runs per method the IQM trims nothing and "
                 "equals the mean.")
    caption(fig, text)
    return fig


def sensitivity_table(scores: pd.DataFrame, defaults: dict[str, float], base: str = "ne") -> pd.DataFrame:
    """Final scores of ``base`` and its variants ``base@<param><value>`` as (param, value, seed, score);
    the plain ``base`` runs count as the default value of every parameter."""
    rows = []
    for r in scores.itertuples():
        method, _, variant = r.label.partition("@")
        if method != base:
            continue
        if not variant:
            rows += [(p, v, True, r.task, r.seed, r.score) for p, v in defaults.items()]
            continue
        param, value = re.fullmatch(r"(\D+)(.+)", variant).groups()  # "rate0.002" -> ("rate", "0.002")
        rows.append((param, float(value), False, r.task, r.seed, r.score))
    return pd.DataFrame(rows, columns=["param", "value", "default", "task", "seed", "score"])


PARAM_TITLES = {
    "density": "initial density",
    "tend": "T_end: full size at this share of the run",
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
    _legend_above(fig, axes)
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
    _legend_above(fig, axes)
    caption(fig, f"Point: mean over seeds (n per method in the legend) of the last evaluation return of each "
                 f"visit; bar: {BAND}.")
    return fig


def revisit_changes(visits: pd.DataFrame) -> pd.DataFrame:
    """Cyclic runs: per task and label, the mean return at the end of the first and the last visit
    (over seeds) and the change between them; the labels' order within a task is by that change."""
    mean = visits.groupby(["task_now", "label", "visit"])["return_mean"].mean().unstack("visit")
    out = pd.DataFrame({"first": mean[mean.columns.min()], "last": mean[mean.columns.max()]})
    out["change"] = out["last"] - out["first"]
    out = out.reset_index().rename(columns={"task_now": "task"})
    return out.sort_values(["task", "change"], ascending=[True, False], kind="stable").reset_index(drop=True)
