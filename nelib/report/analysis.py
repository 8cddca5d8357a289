"""Tables, curves and computed statements over stored runs (what the notebooks show).

Seeds are the statistical unit everywhere: a run's score is the mean of its last evaluations, and
uncertainty is across seeds, never across evaluation episodes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from nelib.report.plotting import method_color

STEP_LABEL = "environment steps (x1000)"
METRIC_LABELS = {
    "return_mean": "evaluation return",
    "critic_active_ratio": "critic active-neuron ratio",
    "actor_active_ratio": "actor active-neuron ratio",
    "critic_density": "critic density",
    "actor_density": "actor density",
    "critic_fau": "critic FAU",
}


def label_of(col: str) -> str:
    """Axis label of a logged column."""
    if col in METRIC_LABELS:
        return METRIC_LABELS[col]
    for net in ("critic", "actor"):
        if col.startswith(f"{net}_dormant_"):
            return f"{net} dormant ratio (tau={col.rsplit('_', 1)[1]})"
    return col.replace("_", " ")


def palette(labels: Sequence[str]) -> dict[str, str]:
    """Method colours, consistent across all figures (a variant shares its method's hue family)."""
    return {lab: method_color(lab) for lab in labels}


def curves(df: pd.DataFrame, y: str, ax=None, hue: str = "label", title: str | None = None,
           xlabel: str = STEP_LABEL):
    """Mean of ``y`` over seeds against steps, with a 95% bootstrap CI band across seeds."""
    ax = ax or plt.gca()
    if y not in df.columns or df[y].isna().all():  # e.g. a metric added after these runs were made
        ax.text(0.5, 0.5, f"{label_of(y)}:\nnot logged in these runs", ha="center", va="center",
                transform=ax.transAxes)
        return ax
    data = df.dropna(subset=[y]).assign(kstep=lambda d: d["step"] / 1000)
    labels = list(dict.fromkeys(data[hue]))
    sns.lineplot(data=data, x="kstep", y=y, hue=hue, hue_order=labels, palette=palette(labels),
                 errorbar=("ci", 95), n_boot=1000, seed=0, ax=ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label_of(y))
    if ax.get_legend():
        ax.get_legend().set_title(None)
    if title:
        ax.set_title(title)
    return ax


def _legend_on_top(fig, ax, top: float) -> None:
    """One figure legend above the panels, from ``ax``'s lines; panels fill the height below ``top``."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, top))


def curve_grid(df: pd.DataFrame, ys: Sequence[str], hue: str = "label", height: float = 2.8,
               xlabel: str = STEP_LABEL):
    """One row per metric, one column per task; a single legend. ``xlabel`` names what ``df["step"]`` counts."""
    tasks = list(dict.fromkeys(df["task"]))
    fig, axes = plt.subplots(len(ys), len(tasks), figsize=(4.6 * len(tasks), height * len(ys)),
                             squeeze=False, sharex="col")
    for j, task in enumerate(tasks):
        for i, y in enumerate(ys):
            ax = curves(df[df["task"] == task], y, axes[i, j], hue, title=task if i == 0 else None, xlabel=xlabel)
            if ax.get_legend():
                ax.get_legend().remove()
    _legend_on_top(fig, axes[0, 0], 0.95)
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


def trend(df: pd.DataFrame, col: str, label: str | None = None, early: int = 2, late: int = 2,
          unit: str = "steps") -> list[str]:
    """Per task: the mean of ``col`` over the first ``early`` measured evaluations vs the last ``late``
    (``unit``: what ``df["step"]`` counts, for the sentence)."""
    def span(steps) -> str:
        ks = [f"{s // 1000}k" for s in steps]
        return f"at {ks[0]} {unit}" if len(ks) == 1 else f"{unit} {ks[0]}-{ks[-1]}"

    out = []
    sub = df if label is None else df[df["label"] == label]
    for task, g in sub.dropna(subset=[col]).groupby("task"):
        steps = sorted(g["step"].unique())
        first = g[g["step"].isin(steps[:early])][col].mean()
        last = g[g["step"].isin(steps[-late:])][col].mean()
        direction = "rose" if last > first else "fell" if last < first else "stayed"
        who = f" ({label})" if label else ""
        out.append(f"{task}{who}: {label_of(col)} {direction} from {first:.3f} ({span(steps[:early])}) "
                   f"to {last:.3f} ({span(steps[-late:])})")
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
    """rliable's stratified-bootstrap point estimates and 95% CIs, drawn from a generator seeded ``seed``."""
    import warnings

    from rliable import library as rly

    with warnings.catch_warnings():  # arch (under rliable) asks for `generator=`, which rliable does not pass on
        warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
        return rly.get_interval_estimates(scores, fn, reps=reps, random_state=np.random.RandomState(seed))


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


def interval_plot(agg: pd.DataFrame, metrics_order: Sequence[str] = ("IQM", "mean", "optimality gap")):
    """One panel per aggregate metric: point estimate and 95% CI per method."""
    fig, axes = plt.subplots(1, len(metrics_order), figsize=(4.2 * len(metrics_order), 0.5 + 0.45 *
                                                              agg["label"].nunique()), squeeze=False)
    labels = list(dict.fromkeys(agg["label"]))
    for ax, m in zip(axes[0], metrics_order, strict=True):
        sub = agg[agg.metric == m].set_index("label").reindex(labels)
        for y, lab in enumerate(labels):
            ax.plot([sub.loc[lab, "low"], sub.loc[lab, "high"]], [y, y], lw=6, alpha=0.6,
                    color=method_color(lab), solid_capstyle="butt")
            ax.plot(sub.loc[lab, "point"], y, "|", color="k", ms=14)
        ax.set_yticks(range(len(labels)), labels if ax is axes[0, 0] else [""] * len(labels))
        ax.set_title(m)
        ax.set_xlabel("TD3-normalised score")
    fig.tight_layout()
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


def sensitivity_plot(table: pd.DataFrame):
    """One panel per parameter: final return against its value (mean and 95% CI over seeds, each seed a dot;
    the default value marked on the axis)."""
    params = list(dict.fromkeys(table["param"]))
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(1, len(params), figsize=(3.4 * len(params), 3.2), squeeze=False, sharey=True)
    np.random.seed(0)  # seaborn's strip jitter draws from numpy's global RNG: same figure on every run
    for ax, p in zip(axes[0], params, strict=True):
        sub = table[table.param == p]
        dodge = 0.2 if len(tasks) > 1 else False  # seaborn divides by zero dodging one hue
        sns.stripplot(data=sub, x="value", y="score", hue="task", hue_order=tasks, dodge=bool(dodge), ax=ax,
                      alpha=0.35, size=4, jitter=0.05, legend=False)
        sns.pointplot(data=sub, x="value", y="score", hue="task", hue_order=tasks, errorbar=("ci", 95), seed=0,
                      ax=ax, dodge=dodge, markers="o")
        default = sub.loc[sub["default"], "value"]
        ticks = [f"{v:g}" for v in sorted(sub["value"].unique())]
        ax.set_xticks(range(len(ticks)), [f"{t}\n(default)" if not default.empty and t == f"{default.iloc[0]:g}"
                                          else t for t in ticks])
        ax.set_title(p)
        ax.set_xlabel(None)
        ax.set_ylabel("final return\n(mean of last 3 evaluations)" if ax is axes[0, 0] else None)
        if ax.get_legend():
            ax.get_legend().remove()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if len(tasks) > 1:
        fig.legend(handles[-len(tasks):], labels[-len(tasks):], loc="upper center", ncol=len(tasks),
                   frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.9))
    else:
        fig.suptitle(tasks[0])
        fig.tight_layout()
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


def cyclic_curves(df: pd.DataFrame, ys: Sequence[str], height: float = 2.6):
    """Cyclic runs: one row per metric against steps over the whole sequence, each visit shaded in its
    task's colour and named on top; a single legend."""
    spans = visit_spans(df)
    tasks = list(dict.fromkeys(spans["task"]))
    shade = dict(zip(tasks, sns.color_palette("pastel", len(tasks)), strict=True))
    fig, axes = plt.subplots(len(ys), 1, figsize=(10, height * len(ys)), squeeze=False, sharex=True)
    for i, y in enumerate(ys):
        ax = curves(df, y, axes[i, 0])
        for s in spans.itertuples():
            ax.axvspan(s.start / 1000, s.end / 1000, color=shade[s.task], alpha=0.2, lw=0, zorder=0)
            if i == 0:
                ax.text((s.start + s.end) / 2000, 1.02, s.task.removesuffix("-v5"), ha="center", va="bottom",
                        fontsize=8, transform=ax.get_xaxis_transform())
        if ax.get_legend():
            ax.get_legend().remove()
        if i < len(ys) - 1:
            ax.set_xlabel("")
    _legend_on_top(fig, axes[0, 0], 0.93)
    return fig


def visit_return_grid(visits: pd.DataFrame, labels: Sequence[str] | None = None):
    """Cyclic runs: one panel per task, the return at the end of each visit (95% CI over seeds)."""
    tasks = list(dict.fromkeys(visits["task_now"]))
    labels = [lab for lab in (labels or dict.fromkeys(visits["label"])) if lab in set(visits["label"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sns.pointplot(data=visits[visits.task_now == task], x="visit", y="return_mean", hue="label",
                      hue_order=labels, palette=palette(labels), errorbar=("ci", 95), seed=0,
                      dodge=0.3 if len(labels) > 1 else False, ax=ax)
        ax.set(title=task, xlabel="visit", ylabel="return at end of visit")
        if ax.get_legend():
            ax.get_legend().remove()
    _legend_on_top(fig, axes[0, 0], 0.88)
    return fig


def revisit_changes(visits: pd.DataFrame) -> pd.DataFrame:
    """Cyclic runs: per task and label, the mean return at the end of the first and the last visit
    (over seeds) and the change between them; the labels' order within a task is by that change."""
    mean = visits.groupby(["task_now", "label", "visit"])["return_mean"].mean().unstack("visit")
    out = pd.DataFrame({"first": mean[mean.columns.min()], "last": mean[mean.columns.max()]})
    out["change"] = out["last"] - out["first"]
    out = out.reset_index().rename(columns={"task_now": "task"})
    return out.sort_values(["task", "change"], ascending=[True, False], kind="stable").reset_index(drop=True)
