"""Every random stream of a run, derived from its one seed in this one place.

Each stream has a generator of its own, so that turning a feature on (a baseline's intervention, a metric)
never shifts the numbers any other part draws. A run with seed ``s`` seeds:

- ``NETWORKS`` (s): torch's global generator before the networks are built (their initial weights), the
  agent's sampling generator (exploration and target-smoothing noise, augmentation), the replay buffer's
  sampling, the runner's numpy generator (random-start actions, exploration noise) and the training env;
- ``MASKS`` (s + 1): the initial sparse masks and every topology update (growth ties, pruning order);
- ``METRICS`` (s + 2): the replay batches that plasticity metrics are measured on;
- ``INTERVENTIONS`` (s + 3): Reset, ReDo and Plasticity Injection's re-initialisations;
- ``EVALUATION`` (s + 100): the evaluation env's episodes.
"""

from __future__ import annotations

NETWORKS, MASKS, METRICS, INTERVENTIONS, EVALUATION = 0, 1, 2, 3, 100


def stream_seed(seed: int, stream: int) -> int:
    """The seed of ``stream`` (one of the constants above) in a run seeded ``seed``."""
    return seed + stream
