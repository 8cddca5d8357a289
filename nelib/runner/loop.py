"""The loop that trains runs to their end, shared by a single run (:func:`nelib.runner.train.run`) and by
seeds trained in lockstep (:func:`nelib.runner.vectorized.train_together`).

The runs are :class:`nelib.runner.train.Run` objects standing at the same step, and ``step()`` moves each
of them one environment step on (a single run: its own :meth:`~nelib.runner.train.Run.step`; seeds in
lockstep: one step of all, with one batched update). The loop evaluates them at step 0 and whenever an
evaluation is due, gives each row the steps/s of its window (evaluation time included), shows one
progress bar and stores the runs at the end. Ctrl-C stops it cleanly: each run checkpoints at its next
episode end (the only place a checkpoint can be taken) and the loop raises :class:`Interrupted`; a second
Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text bar: readable in notebooks (no ipywidgets needed), logs and CI alike

from nelib.runner.files import note

if TYPE_CHECKING:
    from nelib.runner.train import Run


def evaluate_first(runs: Sequence[Run]) -> None:
    """Evaluate the runs that have no row yet (fresh ones, at step 0; a resumed run has its rows)."""
    for r in runs:
        if not r.rows:
            r.evaluate_row(float("nan"))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after every run had checkpointed at an episode end; the message says where.
    A ``KeyboardInterrupt``, so that code going on after a failed run (a sweep) stops too."""


class _PoolWorker:
    """In a sweep's pool worker (:func:`keep_ctrl_c_in_pool_worker`): whether a Ctrl-C has come."""

    enabled = False
    pressed = False


def keep_ctrl_c_in_pool_worker() -> None:
    """For a sweep's pool worker (its initializer): Ctrl-C reaches the worker as it reaches the sweep, but
    the sweep stops the pool; a first press while no run trains here is only remembered, not a traceback
    (a second one stops at once). Once a Ctrl-C has come, a run being set up stops at its first episode
    end, and no run starts (:func:`ctrl_c_came`): runs already queued for a worker cannot be cancelled."""
    _PoolWorker.enabled = True
    signal.signal(signal.SIGINT, _remember_press)


def _remember_press(signum, frame) -> None:
    if _PoolWorker.pressed:  # the second press stops at once, wherever the worker is
        raise KeyboardInterrupt
    _PoolWorker.pressed = True


def ctrl_c_came() -> bool:
    """Whether a Ctrl-C has come to this pool worker (always False outside one)."""
    return _PoolWorker.pressed


class StopRequest:
    """Ctrl-C's first press while runs train: from then on each run checkpoints at its next episode end."""

    def __init__(self):
        self.since: dict[int, int] | None = None  # id(run) -> its episode count at the press

    def press(self, runs: Sequence[Run]) -> None:
        _PoolWorker.pressed = _PoolWorker.enabled
        self.since = {id(r): r.episodes for r in runs}
        for r in runs:
            r.next_ckpt = r.t  # due at the next episode end, whatever checkpoint_every says
        note("stopping at the next episode end, once each run has written its checkpoint; press Ctrl-C again "
             "to stop at once (losing the steps since the last checkpoint)")

    def done(self, runs: Sequence[Run]) -> bool:
        """Whether every run has passed an episode end (and so its checkpoint) since the press."""
        return self.since is not None and all(r.episodes > self.since[id(r)] and not r.needs_reset for r in runs)


@contextlib.contextmanager
def stop_on_ctrl_c(runs: Sequence[Run]) -> Iterator[StopRequest]:
    """Within this block the first Ctrl-C becomes a :class:`StopRequest` (in the main thread only: signal
    handlers live there) and the next one a plain ``KeyboardInterrupt``."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def on_sigint(signum, frame):
        # the second press stops at once, in a pool worker too (whose own handler only remembers presses)
        signal.signal(signal.SIGINT, signal.default_int_handler if _PoolWorker.enabled else previous)
        request.press(runs)

    previous = signal.signal(signal.SIGINT, on_sigint)
    if _PoolWorker.pressed and request.since is None:  # pressed while this run was being set up
        on_sigint(signal.SIGINT, None)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def exit_on_ctrl_c() -> Iterator[None]:
    """For a command line: Ctrl-C ends it with one line and exit status 130, never a traceback."""
    try:
        yield
    except Interrupted as e:
        note(str(e))
        sys.exit(130)
    except KeyboardInterrupt:
        note("stopped at once: the steps since each run's last checkpoint are lost; the same command resumes "
             "from that checkpoint")
        sys.exit(130)


def advance(runs: Sequence[Run], step: Callable[[], None], until: int, bar: tqdm | None = None,
            stop: StopRequest | None = None) -> None:
    """Call ``step()`` until the runs stand at step ``until``, evaluating all of them whenever one is due;
    raise :class:`Interrupted` once ``stop`` (a Ctrl-C) has every run checkpointed."""
    first = runs[0]
    window_start, window_t = time.perf_counter(), first.t
    while first.t < until:
        step()
        if stop is not None and stop.done(runs):
            where = ", ".join(f"{r.ckpt_path} at step {r.ckpt_step}" if r.ckpt_step is not None
                              else f"none for {r.ckpt_path} (it could not be written)" for r in runs)
            raise Interrupted(f"interrupted; checkpoint{'s' if len(runs) > 1 else ''} {where}: "
                              "the same command resumes from there")
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
    try:
        with stop_on_ctrl_c(runs) as stop:
            advance(runs, step, cfg.steps, bar, stop)
    finally:
        bar.close()
    return [r.finish(command) for r in runs]
