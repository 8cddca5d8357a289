"""The configuration of one training run, with dotted overrides and a stable hash."""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from nelib.agents.base import SparsityConfig
from nelib.agents.drq import DrQConfig
from nelib.agents.td3 import TD3Config
from nelib.baselines.injection import InjectionConfig
from nelib.baselines.redo import RedoConfig
from nelib.baselines.reset import ResetConfig
from nelib.runner import algos, presets, schema
from nelib.runner.algos import algo_of
from nelib.runner.methods import check_method_algo, method_label, method_overrides
from nelib.sparse.review import ReviewConfig
from nelib.sparse.topology import TopologyConfig

ALGOS = tuple(algos.SPECS)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines one run. Build it with :func:`make_config`."""

    task: str = "HalfCheetah-v5"
    """Gymnasium MuJoCo task id (e.g. ``HalfCheetah-v5``), or ``dmc:<domain>-<task>`` for DeepMind Control
    from pixels (e.g. ``dmc:cheetah-run``, trained with DrQ)."""
    algo: str = "td3"
    """``td3`` (state-based gymnasium tasks) or ``drq`` (pixel ``dmc:`` tasks); make_config sets it from the
    task."""
    method: str = "td3"
    """Method name from :data:`nelib.runner.methods.METHODS`; it sets the fields below it overrides."""
    variant: str = ""
    """Label of a variant of the method (e.g. ``omega0.2``); runs of variants are stored apart."""
    seed: int = 0
    """The run's seed; every random stream derives from it (:mod:`nelib.seeding`)."""
    preset: str = presets.DEFAULT
    """Preset the scale fields came from; also the results-store folder."""
    steps: int = 100_000
    """Environment steps of the run (DrQ: agent steps, each ``drq.action_repeat`` frames)."""
    start_steps: int = 25_000
    """Uniform-random action steps before the policy acts and training starts."""
    eval_every: int = 5_000
    """Environment (DrQ: agent) steps between evaluations."""
    eval_episodes: int = 10
    """Deterministic episodes per evaluation."""
    buffer_size: int = 1_000_000
    """Replay capacity (allocated as min(buffer_size, steps))."""
    metrics_batch: int = 1024
    """Replay samples on which plasticity metrics are measured at each evaluation."""
    agent: TD3Config = dataclasses.field(default_factory=TD3Config)
    """TD3 hyper-parameters."""
    drq: DrQConfig = dataclasses.field(default_factory=DrQConfig)
    """DrQ hyper-parameters and pixel settings (``algo = drq``)."""
    sparsity: SparsityConfig = dataclasses.field(default_factory=SparsityConfig)
    """Initial sparsity (ERK)."""
    expansion: bool = False
    """Neuroplastic Expansion: topology updates (growth + dormant pruning) and experience review."""
    topology: TopologyConfig = dataclasses.field(default_factory=TopologyConfig)
    """NE's growth and pruning (used when ``expansion``)."""
    review: ReviewConfig = dataclasses.field(default_factory=ReviewConfig)
    """NE's experience review (used when ``expansion``)."""
    reset: ResetConfig = dataclasses.field(default_factory=ResetConfig)
    """Reset baseline (Nikishin et al. 2022): periodic re-initialisation of the last layers."""
    redo: RedoConfig = dataclasses.field(default_factory=RedoConfig)
    """ReDo baseline (Sokar et al. 2023): periodic recycling of dormant units."""
    injection: InjectionConfig = dataclasses.field(default_factory=InjectionConfig)
    """Plasticity Injection baseline (Nikishin et al. 2023): one head injection during training."""
    checkpoint_every: int = 10_000
    """Environment steps between resumable checkpoints (0: none); taken at the next episode end."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``..."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    cuda_graph: bool = False
    """Vectorized seeds on CUDA: replay the batched update as a CUDA graph between topology updates (same
    results up to float rounding; :class:`nelib.agents.vector_td3.VectorTD3`)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        for name in ("steps", "eval_every", "eval_episodes", "buffer_size", "metrics_batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if any(c in self.variant for c in "/\\@") or self.variant.startswith("."):
            raise ValueError(f"variant must be a plain label, got {self.variant!r}")
        if self.start_steps < 0 or self.checkpoint_every < 0 or self.threads < 0:
            raise ValueError("start_steps, checkpoint_every and threads must be >= 0")
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        if self.algo != algo_of(self.task):
            raise ValueError(f"task {self.task!r} needs algo {algo_of(self.task)!r}, got {self.algo!r}")
        check_method_algo(self.method, self.algo)

    @property
    def label(self) -> str:
        """The run's arm: ``method`` or ``method@variant``."""
        return method_label(self.method, self.variant)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Short stable hash of every field that affects results (which: :mod:`nelib.runner.schema`)."""
        return schema.config_hash(self.to_dict())


def fields(cls=TrainConfig, prefix: str = "") -> dict[str, tuple[type, str]]:
    """Every leaf field as ``dotted name -> (type, docstring)``, nested dataclasses flattened."""
    return dict(_fields(cls, prefix))


@functools.cache  # reading the docstrings parses the source: 0.1 s, and every make_config needs the fields
def _fields(cls, prefix: str) -> dict[str, tuple[type, str]]:
    out: dict[str, tuple[type, str]] = {}
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out.update(fields(t, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (t, docs.get(f.name, ""))
    return out


def _field_docs(cls) -> dict[str, str]:
    """The string literal under each field of a dataclass (its docstring), read from the source."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for a, b in zip(body, body[1:], strict=False):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())
    return docs


def _convert(value: Any, t: type, key: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if t is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return t(value)
    except ValueError:
        raise ValueError(f"bad value {value!r} for {key} (expected {t.__name__})") from None


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with dotted-key ``overrides`` applied; unknown keys raise a clear error."""
    known = fields()
    d = cfg.to_dict()
    for key, value in overrides.items():
        if key not in known:
            close = [k for k in known if k.split(".")[-1] == key.split(".")[-1]]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown config field {key!r}{hint}")
        node = d
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = _convert(value, known[key][0], key)
    return from_dict(d)


def from_dict(d: dict[str, Any], cls=TrainConfig):
    """Build a (nested) config dataclass from a plain dict, rejecting unknown fields."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown config field(s) for {cls.__name__}: {', '.join(sorted(unknown))}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        kwargs[k] = from_dict(v, t) if dataclasses.is_dataclass(t) and isinstance(v, dict) else v
    return cls(**kwargs)


def make_config(task: str = "HalfCheetah-v5", method: str | None = None, seed: int = 0,
                preset: str = presets.DEFAULT, **overrides: Any) -> TrainConfig:
    """The config of a run: defaults, then the preset's scale, then the method, then ``overrides``.

    ``overrides`` use dotted names with ``__`` or ``.`` as separator, e.g. ``agent__lr=1e-3`` or
    ``**{"topology.growth.rate": 0.01}``. ``method`` defaults to the dense baseline (``td3``, or ``drq`` for
    ``dmc:`` tasks). For ``dmc:`` tasks the preset's DMC scale applies, given in frames and divided by the
    task's action repeat into agent steps.
    """
    p = presets.get(preset)
    user = {k.replace("__", "."): v for k, v in overrides.items()}
    algo = algo_of(task)
    method = method or algo
    scale = algos.spec(algo).scale(p, task, user)
    base = TrainConfig(task=task, algo=algo, method=method, seed=seed, preset=preset)
    return apply_overrides(base, {**scale, **method_overrides(method), **user})
