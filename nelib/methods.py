"""The methods a run can use, by name: each is a set of config overrides on one shared code path."""

from __future__ import annotations

NE = {"sparsity.density": 0.2, "expansion": True}

METHODS: dict[str, dict[str, object]] = {
    "td3": {},
    "sparse": {"sparsity.density": 0.2},
    "ne": {**NE},
    "ne-random-growth": {**NE, "topology.growth.criterion": "random"},
    "ne-no-prune": {**NE, "topology.prune": False},
    "ne-no-review": {**NE, "review.trigger": "never"},
    # Growth alone, at random, no pruning or review: the "naive growth" of the paper's motivation (Fig 3).
    "naive-growth": {**NE, "topology.growth.criterion": "random", "topology.prune": False,
                     "review.trigger": "never"},
    # The paper's baselines for TD3 (dense networks).
    "reset": {"reset.enabled": True},
    "redo": {"redo.enabled": True},
    "plasticity-injection": {"injection.enabled": True},
    "layernorm": {"agent.layernorm": "all"},
}
"""Method name -> dotted config overrides (see :class:`nelib.config.TrainConfig`)."""


def method_overrides(name: str) -> dict[str, object]:
    """Overrides of method ``name``; a clear error lists the known methods."""
    try:
        return dict(METHODS[name])
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None
