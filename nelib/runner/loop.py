"""The loop that trains runs to their end, shared by a single run (:func:`nelib.runner.train.run`) and by
seeds trained in lockstep (:func:`nelib.runner.vectorized.train_together`).

The runs are :class:`nelib.runner.train.Run` objects standing at the same step, and ``step()`` moves each
of them one environment step on (a single run: its own :meth:`~nelib.runner.train.Run.step`; seeds in
lockstep: one step of all, with one batched update). The loop evaluates them at step 0 and whenever an
evaluation is due, gives each row the steps/s of its window (evaluation time included), shows one
progress bar and stores the runs at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text bar: readable in notebooks (no ipywidgets needed), logs and CI alike

if TYPE_CHECKING:
    from nelib.runner.train import Run


def evaluate_first(runs: Sequence[Run]) -> None:
    """Evaluate the runs that have no row yet (fresh ones, at step 0; a resumed run has its rows)."""
    for r in runs:
        if not r.rows:
            r.evaluate_row(float("nan"))


def advance(runs: Sequence[Run], step: Callable[[], None], until: int, bar: tqdm | None = None) -> None:
    """Call ``step()`` until the runs stand at step ``until``, evaluating all of them whenever one is due."""
    first = runs[0]
    window_start, window_t = time.perf_counter(), first.t
    while first.t < until:
        step()
        if bar is not None:
            bar.update(len(runs))
        if first.eval_due:
            sps = (first.t - window_t) / (time.perf_counter() - window_start)  # steps/s of each run
            rows = [r.evaluate_row(sps) for r in runs]
            if bar is not None:  # one speed on the bar: tqdm's own rate (the rows keep sps)
                bar.set_postfix(ret=f"{np.mean([x['return_mean'] for x in rows]):.0f}",
                                active=f"{np.mean([x.get('critic_active_ratio', np.nan) for x in rows]):.3f}")
            window_start, window_t = time.perf_counter(), first.t


def train_to_end(runs: Sequence[Run], step: Callable[[], None], desc: str,
                 command: str | None = None) -> list[pd.DataFrame]:
    """Train ``runs`` (same config but the seed, standing at one step) to their last step with ``step()``;
    store them (their records say ``command`` produced them); return their rows."""
    evaluate_first(runs)
    cfg = runs[0].cfg
    bar = tqdm(total=cfg.steps * len(runs), initial=runs[0].t * len(runs), disable=not cfg.progress,
               dynamic_ncols=True, mininterval=1.0, desc=desc, unit="step")
    advance(runs, step, cfg.steps, bar)
    bar.close()
    return [r.finish(command) for r in runs]
