"""Resumable checkpoints that are safe to load and survive a crash while they are written.

A checkpoint is written to a temporary file and renamed into place once it is on disk whole; the one it
replaces is kept beside it (``seed<k>.prev.pt``) until the run ends. Loading unpickles with
``weights_only=True``: tensors, plain Python values and, for the numpy arrays some RNG states and the
pixel replay buffer hold, numpy's array reconstruction only. Whoever can write into a shared store can
therefore not run code in the processes that resume from it: a checkpoint holding anything else is
refused. A damaged newest checkpoint (cut short, say) falls back to the previous one.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from nelib.runner.files import atomic_write, note

# What checkpoints hold beyond tensors and plain values: numpy arrays and scalars (a DMC task's RandomState,
# the pixel buffer's frame counts), rebuilt from their raw bytes, of numeric dtypes only (no object arrays).
# numpy 2 pickles them as numpy._core, numpy 1 as numpy.core; both names are allowed.
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
SAFE_GLOBALS = [np.ndarray, np.dtype, *{type(np.dtype(t)) for t in (bool, *"bBhHiIlLqQefd")},
                *((getattr(_multiarray, f), f"numpy.{core}.multiarray.{f}")
                  for f in ("_reconstruct", "scalar") for core in ("_core", "core"))]


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: refused (foreign objects) or damaged with no previous one."""


def previous_path(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept (``seed0.pt`` -> ``seed0.prev.pt``)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically, keeping the checkpoint it replaces as :func:`previous_path`."""
    atomic_write(path, lambda p: torch.save(state, p), keep_previous=previous_path(path))


def rescue(state: dict, path: Path) -> str:
    """Keep a finished run that could not be stored: write ``state`` to its checkpoint ``path`` (or, if that
    fails too, to a temporary file); return where it is and how to store it from there."""
    try:
        save_checkpoint(state, path)
        return f"the finished run is kept in {path}: run the same command again to store it"
    except OSError:
        fd, tmp = tempfile.mkstemp(prefix="nelib-run-", suffix=".pt")
        os.close(fd)
        torch.save(state, tmp)
        return f"the finished run is kept in {tmp}: copy it to {path} and run the same command again to store it"


def remove_checkpoints(path: Path) -> None:
    """Delete a finished run's checkpoint and the previous one."""
    for p in (path, previous_path(path)):
        p.unlink(missing_ok=True)


def exists(path: Path) -> bool:
    """Whether there is a checkpoint at ``path``, or a previous one beside it, to resume from."""
    return path.exists() or previous_path(path).exists()


def _read(path: Path, map_location) -> dict:
    """Unpickle one checkpoint file, weights only; :class:`CheckpointError` if it holds foreign objects,
    other exceptions if it is damaged."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. about the pickle protocol of a file torch.save did not write
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", str(e))
        if found or "Weights only load failed" in str(e):
            what = next(g for g in found.groups() if g) if found else "an object that is not plain data"
            raise CheckpointError(
                f"refusing to load checkpoint {path}: it holds what nelib never writes ({what}); "
                "delete it if you did not make it") from None
        raise
    if not isinstance(state, dict):
        raise ValueError("not a nelib checkpoint")
    return state


def load_checkpoint(path: Path, map_location=None) -> tuple[dict, Path]:
    """The newest readable checkpoint of a run: ``(state, file it came from)``.

    A damaged ``path`` (cut short, not a checkpoint) falls back, with a line saying so, to the previous
    one; with none readable it raises a one-line :class:`CheckpointError` naming the files. A checkpoint
    holding foreign objects is refused, never skipped."""
    problems = []
    for p in (path, previous_path(path)):
        if not p.exists():
            continue
        try:
            state = _read(p, map_location)
        except CheckpointError:
            raise
        except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            # the first sentence: torch's messages go on about how the file may have been damaged
            why = re.split(r"\.\s", str(e).strip())[0] if str(e).strip() else type(e).__name__
            problems.append(f"{p} is damaged ({why})")
            continue
        if problems:
            note(f"{problems[0]}; resuming from the previous checkpoint {p} (step {state.get('t')})")
        return state, p
    raise CheckpointError("; ".join(problems) + ": no checkpoint left to resume from; delete "
                          f"{' and '.join(str(p) for p in (path, previous_path(path)) if p.exists())} "
                          "to start the run over")
