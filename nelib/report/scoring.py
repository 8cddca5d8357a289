"""Statistics over stored runs: final scores, differences between methods, and rliable aggregates.

A run's score is the mean of its last evaluations, and seeds are the statistical unit: every interval is
across seeds (Welch t, an exact rank test, or rliable's stratified bootstrap over seeds), never across
evaluation episodes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd


def final_scores(df: pd.DataFrame, y: str = "return_mean", last: int = 3) -> pd.DataFrame:
    """Per run (task, label, seed): the mean of ``y`` over its last ``last`` evaluations."""
    def tail_mean(g):
        return g.sort_values("step")[y].tail(last).mean()

    return (df.groupby(["task", "label", "seed"]).apply(tail_mean, include_groups=False)
            .rename("score").reset_index())


def summary_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean +- std over seeds of each (task, label) score, as a task x label table of strings; one seed has no
    spread, so its cell is the score alone."""
    agg = scores.groupby(["task", "label"])["score"].agg(["mean", "std", "count"]).reset_index()
    agg["cell"] = [f"{m:.0f} +- {s:.0f} (n={n})" if n > 1 else f"{m:.0f} (n=1)"
                   for m, s, n in zip(agg["mean"], agg["std"], agg["count"], strict=True)]
    return agg.pivot(index="task", columns="label", values="cell")


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


def rank_test(scores: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per task: in how many of the (seed of ``a``, seed of ``b``) pairs ``a`` scores higher (``wins``, a tie
    counts half, of ``pairs``), and the exact one-sided Mann-Whitney p-value that ``a`` is not above ``b``.
    With 4-5 seeds a bootstrap interval is too narrow; the exact test makes no large-sample assumption."""
    from scipy import stats

    rows = []
    for task, g in scores.groupby("task"):
        xa, xb = g[g.label == a]["score"].to_numpy(), g[g.label == b]["score"].to_numpy()
        if not len(xa) or not len(xb):
            continue
        res = stats.mannwhitneyu(xa, xb, alternative="greater", method="exact")
        rows.append({"task": task, "wins": float(res.statistic), "pairs": len(xa) * len(xb),
                     "p": float(res.pvalue)})
    return pd.DataFrame(rows, columns=["task", "wins", "pairs", "p"])


def forgetting(df: pd.DataFrame, y: str = "return_mean") -> pd.DataFrame:
    """Per run: the best evaluation return, the last one (``final``) and the drop from best to last
    (late-training forgetting)."""
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
