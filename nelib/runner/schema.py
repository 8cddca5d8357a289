"""Which config fields a run's hash covers, and how a stored config compares with today's: one rule.

A stored result or checkpoint is reused only for the config it was made with, recognised by the config's
hash (:meth:`nelib.runner.config.TrainConfig.hash`). nelib keeps gaining config fields; a field added with
a default that keeps the old behaviour must not change the hashes of the runs stored before it. So:

- :data:`NOT_HASHED` fields change how a run executes, not what it computes: never hashed.
- :data:`ADDED_LATER` lists every field added after runs were stored, with the value that keeps the old
  behaviour (its default): it is left out of the hash while it holds that value.
- A config section that came with an algorithm (DrQ's ``drq``) is hashed only in that algorithm's runs
  (:attr:`nelib.runner.algos.AlgoSpec.section_in_every_hash` says which sections are hashed everywhere).
- A stored config that lacks fields added since is read with them at their defaults (:func:`upgrade`);
  it is the same config as today's if, so read, it hashes alike (:func:`same_config`).

Every hash stays what it was when its run was stored: add a new field to :data:`ADDED_LATER`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from nelib.runner import algos

NOT_HASHED = ("device", "threads", "checkpoint_every", "progress", "cuda_graph")
"""Fields that change how a run executes, not what it computes."""
ADDED_LATER: dict[str, Any] = {
    "algo": "td3",  # with DrQ; TD3 runs hold "td3"
    "review.window": 0, "review.threshold_ratio": 0.5, "review.skip_warmup": False,
    "topology.growth.end_fraction": 1.0, "topology.growth.revive_init": "zero", "sparsity.keep": "random",
    "topology.grow_actor": True, "topology.algorithm": "ne", "topology.rewire_fraction": 0.1,
    "topology.pruning.criterion": "dormant", "topology.growth.empty_score": "gradient",
    "topology.growth.revive_first": False,
    "agent.precision": "fp32",
}
"""Fields added after runs were stored (dotted) -> the value that keeps the old behaviour."""


def algo_sections() -> dict[str, str]:
    """Config sections hashed only in their algorithm's runs: section -> algorithm."""
    return {s.section: s.name for s in algos.SPECS.values() if not s.section_in_every_hash}


def hashed(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config (as ``TrainConfig.to_dict()`` gives it) that its hash covers."""
    own = algo_sections()
    d = {k: copy.deepcopy(v) for k, v in config.items()
         if k not in NOT_HASHED and own.get(k, config["algo"]) == config["algo"]}
    for key, old in ADDED_LATER.items():
        *path, name = key.split(".")
        node = d
        for p in path:
            node = node[p]
        if node[name] == old:
            del node[name]
    return d


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as one level of dotted keys (``{"review": {"window": 5}}`` -> ``{"review.window": 5}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The dotted fields, among those the hash covers, in which configs ``a`` and ``b`` differ (sorted)."""
    fa, fb = flat(hashed(a)), flat(hashed(b))
    return sorted(k for k in fa.keys() | fb.keys() if k not in fa or k not in fb or fa[k] != fb[k])


def config_hash(config: dict[str, Any]) -> str:
    """Short stable hash of a config dict (see the module docstring for what it covers)."""
    return hashlib.sha256(json.dumps(hashed(config), sort_keys=True).encode()).hexdigest()[:12]


def upgrade(stored: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A stored config dict as today's config reads it: fields added since it was stored take their
    ``defaults`` (which keep the old behaviour), fields nelib no longer has are dropped."""
    if not isinstance(defaults, dict) or not isinstance(stored, dict):
        return stored
    return {k: upgrade(stored[k], v) if k in stored else v for k, v in defaults.items()}


def same_config(stored: dict[str, Any], config: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether a stored config dict is ``config``: read as today's config reads it (:func:`upgrade`), it
    hashes alike. Any hashed field whose stored value differs still makes it a different config."""
    return config_hash(upgrade(stored, defaults)) == config_hash(config)
