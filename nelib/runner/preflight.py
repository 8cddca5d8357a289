"""Checks made before anything trains, each failing in one line that says what to change.

A run (or a sweep's whole grid) is checked up front: its task and method exist, its values are in range,
its device is there, its results store can be written. Without these a bad setting surfaces as a
traceback minutes or hours into training, or after it, when the result is saved.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path

import torch

from nelib.envs import check_task
from nelib.runner import schema
from nelib.runner.algos import spec
from nelib.runner.config import TrainConfig, fields
from nelib.runner.methods import METHODS

# Fields whose range no config class checks (the others check theirs when built): dotted name -> bound.
AT_LEAST = {"seed": 0, "agent.policy_noise": 0, "agent.noise_clip": 0, "agent.expl_noise": 0,
            "topology.growth.end_step": 0, "topology.growth.init_scale": 0, "drq.hidden_dim": 1,
            "drq.feature_dim": 1, "drq.num_filters": 1, "drq.image_size": 1, "drq.init_temperature": 1e-12}


@functools.cache
def _float_fields() -> frozenset[str]:
    return frozenset(name for name, (t, _) in fields().items() if t is float)


def check_config(cfg: TrainConfig) -> None:
    """Raise a one-line ``ValueError`` unless ``cfg``'s task and method exist and its values are in range
    (besides what the config classes check themselves): every number finite, seeds and noise >= 0."""
    check_task(cfg.task)
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; known methods: {', '.join(METHODS)}")
    for name, value in schema.flat(cfg.to_dict()).items():
        if name in _float_fields() and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        if name in AT_LEAST and value < AT_LEAST[name]:
            bound = "> 0" if AT_LEAST[name] > 0 else ">= 0"
            raise ValueError(f"{name} must be {bound}, got {value}")


def check_device(name: str) -> torch.device:
    """The torch device ``name`` (``auto``: CUDA when available); a one-line ``ValueError`` if this machine
    or this torch build does not have it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; "
                             "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: there are {torch.cuda.device_count()} CUDA GPUs "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available here; use --device cpu (or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r}: nelib runs on cpu, cuda or mps")
    return device


def check_writable(folders) -> None:
    """Create each folder and a file in it, or raise a one-line ``ValueError``: a store that cannot be
    written must fail before training, not when the result is saved."""
    for folder in folders:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".nelib-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ValueError(f"cannot write to {folder} ({e.strerror or e}); pass a writable --data-dir "
                             "(or set NELIB_DATA)") from None


def check_training(cfg: TrainConfig, store, device: torch.device | None = None) -> torch.device:
    """Everything a run needs before it trains: :func:`check_config`, its device (``device``, default the
    config's) and what its settings need of it, and write access to the store's folders for its rows and
    checkpoints. Returns the device."""
    check_config(cfg)
    device = device or check_device(cfg.device)
    spec(cfg.algo).check_device(cfg, device)
    if cfg.cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph replays updates on a CUDA GPU; this run is on {device}")
    check_writable([store.csv_path(cfg).parent, store.checkpoint_path(cfg).parent])
    return device


def check_grid(configs, store=None) -> list[str]:
    """The distinct errors of a sweep's configs (each said once, with how many runs it concerns); with
    ``store``, also whether the runs can train and be stored there."""
    errors: dict[str, int] = {}
    for cfg in configs:
        try:
            check_config(cfg)
        except ValueError as e:
            errors[str(e)] = errors.get(str(e), 0) + 1
    if store is not None and configs and not errors:
        folders = [store.root / "runs", store.root / "checkpoints"]
        for check in (lambda: check_device(configs[0].device), lambda: check_writable(folders)):
            try:
                check()
            except ValueError as e:
                errors[str(e)] = len(configs)
    return [f"{e} ({n} of {len(configs)} runs)" if len(configs) > 1 else e for e, n in errors.items()]
