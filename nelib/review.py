"""Experience review: when plasticity gains plateau, replay more of the early experience.

NE's third mechanism (neuron consolidation). The trigger watches the critic's dormant ratio measured at
each topology update. Its *fluctuation rate* falling below ``threshold`` means the network has stopped
changing, and review turns on: a fraction of each batch is then drawn from the oldest part of the replay
buffer. The paper defines neither the rate nor the threshold. NE methods use a windowed rate,
``|mean(d over the last W measurements) - mean(d over the W before)|``: one measurement on one batch
moves by about 3e-3 from batch noise alone, more than the trend, so the rate of consecutive measurements
(``window=0``, exponentially smoothed; our first version) never fell below the threshold.
The official code's variant gates on the critic's FAU instead (``trigger='fau'``), so both can be compared.
"""

from __future__ import annotations

import dataclasses

import torch

TRIGGERS = ("fluctuation", "fau", "never", "always")


@dataclasses.dataclass
class ReviewConfig:
    """When and how NE reviews early experience."""

    trigger: str = "fluctuation"
    """``fluctuation`` (paper), ``fau`` (official code), ``never`` or ``always``."""
    threshold: float = 1e-3
    """Review is on while the smoothed fluctuation rate of the dormant ratio is below this."""
    smoothing: float = 0.9
    """``window=0``: EMA coefficient of the rate of consecutive measurements (0: no smoothing)."""
    warmup: int = 20
    """Measurements (topology updates) before the fluctuation trigger may fire."""
    window: int = 0
    """Measurements per window of the windowed rate (NE methods: 50, i.e. 5k updates); 0: the smoothed rate
    of consecutive measurements."""
    tau: float = 0.1
    """ReDo threshold of the critic's dormant ratio that the trigger watches."""
    fau_threshold: float = 0.4
    """``fau`` trigger: review while the critic's FAU is below this (official code: 0.4)."""
    early_fraction: float = 0.3
    """The "early" window: the oldest fraction of the transitions in the buffer (official: 30%)."""
    batch_fraction: float = 0.5
    """Share of each batch drawn from the early window while review is on (official: about half)."""

    def __post_init__(self):
        if self.trigger not in TRIGGERS:
            raise ValueError(f"review.trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        for name in ("smoothing", "early_fraction", "batch_fraction", "fau_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"review.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.threshold < 0 or self.warmup < 0 or self.tau < 0 or self.window < 0:
            raise ValueError("review.threshold, review.warmup, review.window and review.tau must be >= 0")


class ExperienceReview:
    """The review trigger's state; call :meth:`observe` at every topology update."""

    def __init__(self, cfg: ReviewConfig):
        self.cfg = cfg
        self.active = cfg.trigger == "always"
        self.rate: float | None = None  # smoothed fluctuation rate
        self._last: float | None = None
        self._seen = 0
        self._history: list[float] = []  # the last 2 * window measurements (windowed rate)
        # Measurements since the last `take_share`: evaluations sample `active` only at their own step, and
        # review can switch on and off between two of them.
        self._checks = self._checks_on = 0

    def observe(self, dormant_ratio: float, fau: float) -> bool:
        """Update the trigger with the latest critic measurements; return whether review is on."""
        cfg = self.cfg
        if cfg.trigger == "fau":
            self.active = fau < cfg.fau_threshold
        elif cfg.trigger == "fluctuation" and cfg.window > 0:
            w = cfg.window
            self._history = (self._history + [dormant_ratio])[-2 * w:]
            self._seen += 1
            if len(self._history) == 2 * w:
                self.rate = abs(sum(self._history[w:]) - sum(self._history[:w])) / w
            self.active = self._seen > cfg.warmup and self.rate is not None and self.rate < cfg.threshold
        elif cfg.trigger == "fluctuation":
            if self._last is not None:
                change = abs(dormant_ratio - self._last)
                a = cfg.smoothing
                self.rate = change if self.rate is None else a * self.rate + (1 - a) * change
            self._last = dormant_ratio
            self._seen += 1
            self.active = self._seen > cfg.warmup and self.rate is not None and self.rate < cfg.threshold
        self._checks += 1
        self._checks_on += self.active
        return self.active

    def take_share(self) -> float:
        """The share of measurements since the previous call at which review was on (NaN if none), and
        restart the count."""
        share = self._checks_on / self._checks if self._checks else float("nan")
        self._checks = self._checks_on = 0
        return share

    def early_count(self, batch_size: int) -> int:
        """How many of a batch of ``batch_size`` come from the early window (0 while review is off)."""
        return round(self.cfg.batch_fraction * batch_size) if self.active else 0

    def state_dict(self) -> dict:
        return {"active": self.active, "rate": self.rate, "last": self._last, "seen": self._seen,
                "history": list(self._history), "checks": (self._checks, self._checks_on)}

    def load_state_dict(self, state: dict) -> None:
        self.active, self.rate, self._last, self._seen = (
            state["active"], state["rate"], state["last"], state["seen"])
        self._history = list(state.get("history", []))  # absent in checkpoints of window=0 runs
        self._checks, self._checks_on = state.get("checks", (0, 0))  # absent in older checkpoints


def early_indices(
    n: int, size: int, capacity: int, oldest: int, early_fraction: float, generator: torch.Generator | None,
) -> torch.Tensor:
    """``n`` buffer indices drawn uniformly from the oldest ``early_fraction`` of ``size`` stored items.

    ``oldest`` is the ring-buffer position of the oldest item (0 until the buffer wraps).
    """
    window = max(1, int(early_fraction * size))
    offsets = torch.randint(0, window, (n,), generator=generator)
    return (oldest + offsets) % capacity
