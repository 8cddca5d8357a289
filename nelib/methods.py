"""The methods a run can use, by name: each is a set of config overrides on one shared code path."""

from __future__ import annotations

# NE's review trigger uses the windowed fluctuation rate (see nelib.review): 50 measurements = 5k updates.
NE = {"sparsity.density": 0.2, "expansion": True, "review.window": 50}

METHODS: dict[str, dict[str, object]] = {
    "td3": {},
    # Dense DrQ, the pixel (DeepMind Control) baseline; every other method works with both algorithms
    # unless ALGO_ONLY says otherwise.
    "drq": {},
    "sparse": {"sparsity.density": 0.2},
    "ne": {**NE},
    "ne-random-growth": {**NE, "topology.growth.criterion": "random"},
    "ne-no-prune": {**NE, "topology.prune": False},
    # No review: the review window is moot, so it keeps its default and stays out of the config hash.
    "ne-no-review": {**NE, "review.trigger": "never", "review.window": 0},
    # Growth alone, at random, no pruning or review: the "naive growth" of the paper's motivation (Fig 3).
    "naive-growth": {**NE, "topology.growth.criterion": "random", "topology.prune": False,
                     "review.trigger": "never", "review.window": 0},
    # The paper's baselines for TD3 (dense networks).
    "reset": {"reset.enabled": True},
    "redo": {"redo.enabled": True},
    "plasticity-injection": {"injection.enabled": True},
    "layernorm": {"agent.layernorm": "all"},
}
"""Method name -> dotted config overrides (see :class:`nelib.config.TrainConfig`)."""


ALGO_ONLY: dict[str, str] = {"td3": "td3", "drq": "drq", "plasticity-injection": "td3", "layernorm": "td3"}
"""Methods that exist for one algorithm only (the TD3 and DrQ baselines, and TD3-only networks)."""


def check_method_algo(method: str, algo: str) -> None:
    """A clear error when ``method`` does not exist for ``algo`` (e.g. ``td3`` on a pixel task)."""
    need = ALGO_ONLY.get(method)
    if need is not None and need != algo:
        raise ValueError(f"method {method!r} is for {need} tasks only; this task uses {algo}"
                         + (" (its dense baseline is 'drq')" if algo == "drq" else " (its dense baseline is 'td3')"))


def method_overrides(name: str) -> dict[str, object]:
    """Overrides of method ``name``; a clear error lists the known methods."""
    try:
        return dict(METHODS[name])
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None
