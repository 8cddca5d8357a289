"""Generated sentences for the notebooks: comparisons, trends and what a difference table supports.

Each function turns the output of :mod:`nelib.report.scoring` (or a runs frame) into plain sentences,
so that a notebook's verdict is computed from the stored runs rather than written by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from nelib.report.plotting import label_of, method_name
from nelib.report.scoring import absent_arms


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
