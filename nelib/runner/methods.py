"""The methods a run can use, by name: each is a set of config overrides on one shared code path."""

from __future__ import annotations

# nelib's first NE: growth at a cosine rate that fills every layer within ~13k updates, zero-initialised
# growth (a pruned unit never fires again), a fixed review threshold on the windowed fluctuation rate (see
# nelib.sparse.review: 50 measurements = 5k updates). Kept as `ne-fast` for comparison.
NE_FAST = {"sparsity.density": 0.2, "expansion": True, "review.window": 50}
# NE as the paper describes it. First version (its stored runs are stale): density follows the cosine to full
# size at the run's last update, pruning every update, LeCun revival of emptied units, review against a dynamic
# threshold with graded strength, on policy-collected data.
NE_CONTINUOUS = {**NE_FAST, "topology.growth.schedule": "cosine-target", "topology.growth.revive_init": "lecun",
                 "review.trigger": "dynamic", "review.skip_warmup": True}
# Second version (stale): growth also scores an emptied unit's connections (straight-through).
NE_STRAIGHT_THROUGH = {**NE_CONTINUOUS, "topology.growth.empty_score": "straight-through"}
# NE now: ... and grows into emptied units first, so a pruned unit comes back at the next topology update.
NE = {**NE_STRAIGHT_THROUGH, "topology.growth.revive_first": True}
# The official code as its README's TD3 command runs it (nelib.sparse.official): the 256-256-256 critic with
# LayerNorm grows from 20% (largest-|w| initial weights) by a constant count to 75% density, pruning by |w|,
# then rewires RigL-style with the cosine drop fraction over T_end = 6e6 - 25e3 updates; the actor keeps its
# initial 20%; no review.
NE_OFFICIAL = {"sparsity.density": 0.2, "sparsity.keep": "magnitude", "expansion": True, "agent.arch": "ne",
               "topology.algorithm": "official", "topology.grow_actor": False, "topology.interval": 100,
               "topology.growth.rate": 0.008, "topology.growth.target_density": 0.75,
               "topology.growth.end_step": 5_975_000, "topology.pruning.criterion": "magnitude",
               "topology.pruning.omega": 0.4, "review.trigger": "never"}
# Review off: its window and warm-up settings are moot, so they keep their defaults (out of the hash).
NO_REVIEW = {"review.trigger": "never", "review.window": 0, "review.skip_warmup": False}


def _ne_family(ne: dict[str, object]) -> dict[str, dict[str, object]]:
    """NE and its ablation arms, built on one definition of NE."""
    return {
        "ne": {**ne},
        "ne-random-growth": {**ne, "topology.growth.criterion": "random"},
        "ne-no-prune": {**ne, "topology.prune": False},
        "ne-no-review": {**ne, **NO_REVIEW},
        # Growth alone, at random, no pruning or review: the "naive growth" of the paper's motivation (Fig 3).
        "naive-growth": {**ne, "topology.growth.criterion": "random", "topology.prune": False, **NO_REVIEW},
    }


METHODS: dict[str, dict[str, object]] = {
    "td3": {},
    # Dense DrQ, the pixel (DeepMind Control) baseline; every other method works with both algorithms
    # unless ALGO_ONLY says otherwise.
    "drq": {},
    "sparse": {"sparsity.density": 0.2},
    **_ne_family(NE),
    "ne-fast": {**NE_FAST},
    "ne-official": {**NE_OFFICIAL},
    # The paper's baselines for TD3 (dense networks).
    "reset": {"reset.enabled": True},
    "redo": {"redo.enabled": True},
    "plasticity-injection": {"injection.enabled": True},
    "layernorm": {"agent.layernorm": "all"},
    # Dense TD3 with the official code's critic (256-256-256, LayerNorm after the third layer): the control
    # that tells ne-official's growth apart from its network.
    "td3-official-critic": {"agent.arch": "ne"},
}
"""Method name -> dotted config overrides (see :class:`nelib.runner.config.TrainConfig`)."""

SUPERSEDED: dict[str, list[dict[str, object]]] = {
    name: [fast, _ne_family(NE_CONTINUOUS)[name], _ne_family(NE_STRAIGHT_THROUGH)[name]]
    for name, fast in _ne_family(NE_FAST).items()
}
"""Methods whose definition changed after runs were stored -> the overrides they had before, oldest first. A
stored run that matches an earlier definition is *stale*: it is reported, never shown as the method's result, and not
re-trained unless asked (``--overwrite``); see :func:`nelib.runner.store.is_stale_record`."""


ALGO_ONLY: dict[str, str] = {"td3": "td3", "drq": "drq", "plasticity-injection": "td3", "layernorm": "td3",
                             "td3-official-critic": "td3"}
"""Methods that exist for one algorithm only (the TD3 and DrQ baselines, and TD3-only networks)."""


def check_method_algo(method: str, algo: str) -> None:
    """A clear error when ``method`` does not exist for ``algo`` (e.g. ``td3`` on a pixel task)."""
    need = ALGO_ONLY.get(method)
    if need is not None and need != algo:
        raise ValueError(f"method {method!r} is for {need} tasks only; this task uses {algo}"
                         + (" (its dense baseline is 'drq')" if algo == "drq" else " (its dense baseline is 'td3')"))


def method_label(method: str, variant: str = "") -> str:
    """How a run's arm is named in tables, figures and the store: ``method`` or ``method@variant``."""
    return f"{method}@{variant}" if variant else method


def method_overrides(name: str) -> dict[str, object]:
    """Overrides of method ``name``; a clear error lists the known methods."""
    try:
        return dict(METHODS[name])
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None
