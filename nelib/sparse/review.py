"""Experience review: when plasticity gains plateau, replay more of the early experience.

NE's third mechanism (neuron consolidation). The trigger watches the critic's dormant ratio ``d``, measured
at each topology update, through its *fluctuation rate* ``r = |mean(d over the last W) - mean(d over the W
before)|`` (one measurement on one batch moves by about 3e-3 from batch noise alone, more than the trend,
so consecutive measurements are too noisy to compare; ``window=0`` keeps that older rate, EMA-smoothed).

The paper compares the rate with a *dynamic* threshold and grades the review's strength (its Fig. 5 plots a
threshold that falls and then plateaus). ``trigger='dynamic'`` (NE) reads this as:

- the signal is the rate smoothed over consecutive windows, ``s_t = EMA_smoothing(r)``;
- the threshold is ``threshold_ratio`` times the mean of every rate seen so far. While the network still
  changes fast the mean is high; as the changes die down it falls and flattens, as in Fig. 5. A smoothed
  rate that jitters around a constant level seldom drops to half its own mean (a low window can: the
  `laptop` runs show review acting at 45k-55k steps, while the networks still grow);
- the strength is ``1 - s_t / threshold`` clipped to [0, 1]: 0 at the threshold, 1 when the rate has gone.
  A batch then takes ``round(strength * batch_fraction * batch)`` samples from the early window.

``fluctuation`` (a fixed threshold, full strength), ``fau`` (the official code's gate on the critic's FAU),
``never`` and ``always`` remain for comparison.

"Early experience" is the oldest ``early_fraction`` of the transitions the agent's own policy collected:
with ``skip_warmup`` (NE) the uniform-random warm-up is left out, since it holds no behaviour the agent has
learned and could forget; the official code's window (the oldest 30% of the whole buffer) is, for the
first ``start_steps / 0.3`` steps, nothing but that warm-up.
"""

from __future__ import annotations

import dataclasses

import torch

from nelib.validation import check_between, check_choice, check_non_negative

TRIGGERS = ("dynamic", "fluctuation", "fau", "never", "always")


@dataclasses.dataclass
class ReviewConfig:
    """When and how NE reviews early experience."""

    trigger: str = "fluctuation"
    """``dynamic`` (NE: the paper's dynamic threshold and graded strength), ``fluctuation`` (fixed
    threshold), ``fau`` (official code), ``never`` or ``always``."""
    threshold: float = 1e-3
    """``fluctuation``: review is on while the smoothed fluctuation rate of the dormant ratio is below this."""
    threshold_ratio: float = 0.5
    """``dynamic``: the threshold is this times the mean of the rates seen so far."""
    smoothing: float = 0.9
    """EMA coefficient of the rate (``dynamic``: of the windowed rate; ``fluctuation`` with ``window=0``: of
    consecutive measurements; 0: no smoothing)."""
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
    """Share of each batch drawn from the early window at full strength (official: about half)."""
    skip_warmup: bool = False
    """Leave the uniform-random warm-up out of the early window (NE; see the module)."""

    def __post_init__(self):
        check_choice("review", self, "trigger", TRIGGERS)
        check_between("review", self, ("smoothing", "early_fraction", "batch_fraction", "fau_threshold",
                                       "threshold_ratio"), 0, 1)
        check_non_negative("review", self, "threshold", "warmup", "window", "tau")
        if self.trigger == "dynamic" and self.window <= 0:
            raise ValueError("review.trigger 'dynamic' needs review.window > 0 (measurements per window)")


class ExperienceReview:
    """The review trigger's state; call :meth:`observe` at every topology update.

    ``warmup_transitions``: how many transitions the random warm-up wrote first (left out of the early
    window with ``skip_warmup``).
    """

    def __init__(self, cfg: ReviewConfig, warmup_transitions: int = 0):
        self.cfg = cfg
        self.skip = warmup_transitions if cfg.skip_warmup else 0
        self.active = cfg.trigger == "always"
        self.strength = 1.0 if self.active else 0.0
        self.rate: float | None = None  # smoothed fluctuation rate
        self.threshold: float | None = None  # dynamic threshold (``dynamic``)
        self._last: float | None = None
        self._seen = 0
        self._history: list[float] = []  # the last 2 * window measurements (windowed rate)
        self._rate_sum, self._rate_count = 0.0, 0  # every windowed rate so far (``dynamic``)
        # Strength summed over the measurements since the last `take_share`: evaluations see `active` only
        # at their own step, and review can switch on and off between two of them.
        self._checks, self._strength_sum = 0, 0.0

    def _windowed_rate(self, dormant_ratio: float) -> float | None:
        w = self.cfg.window
        self._history = (self._history + [dormant_ratio])[-2 * w:]
        if len(self._history) < 2 * w:
            return None
        return abs(sum(self._history[w:]) - sum(self._history[:w])) / w

    def _smooth(self, value: float) -> float:
        a = self.cfg.smoothing
        return value if self.rate is None else a * self.rate + (1 - a) * value

    def observe(self, dormant_ratio: float, fau: float) -> bool:
        """Update the trigger with the latest critic measurements; return whether review is on."""
        cfg = self.cfg
        if cfg.trigger == "fau":
            self.active = fau < cfg.fau_threshold
        elif cfg.trigger == "dynamic":
            self._seen += 1
            raw = self._windowed_rate(dormant_ratio)
            if raw is not None:
                self._rate_sum, self._rate_count = self._rate_sum + raw, self._rate_count + 1
                self.rate = self._smooth(raw)
                self.threshold = cfg.threshold_ratio * self._rate_sum / self._rate_count
            on = self._seen > cfg.warmup and self.threshold is not None and self.threshold > 0
            self.strength = min(1.0, max(0.0, 1.0 - self.rate / self.threshold)) if on else 0.0
            self.active = self.strength > 0
        elif cfg.trigger == "fluctuation" and cfg.window > 0:
            self._seen += 1
            raw = self._windowed_rate(dormant_ratio)
            if raw is not None:
                self.rate = raw
            self.active = self._seen > cfg.warmup and self.rate is not None and self.rate < cfg.threshold
        elif cfg.trigger == "fluctuation":
            if self._last is not None:
                self.rate = self._smooth(abs(dormant_ratio - self._last))
            self._last = dormant_ratio
            self._seen += 1
            self.active = self._seen > cfg.warmup and self.rate is not None and self.rate < cfg.threshold
        if cfg.trigger != "dynamic":
            self.strength = 1.0 if self.active else 0.0
        self._checks += 1
        self._strength_sum += self.strength
        return self.active

    def take_share(self) -> float:
        """The mean review strength over the measurements since the previous call (NaN if none; with an
        on/off trigger, the share of them at which review was on), and restart the count."""
        share = self._strength_sum / self._checks if self._checks else float("nan")
        self._checks, self._strength_sum = 0, 0.0
        return share

    def early_count(self, batch_size: int) -> int:
        """How many of a batch of ``batch_size`` come from the early window (0 while review is off)."""
        return round(self.strength * self.cfg.batch_fraction * batch_size) if self.active else 0

    def warmup_left(self, size: int, added: int) -> int:
        """How many of the ``size`` stored transitions (``added`` ever written) belong to the skipped
        warm-up: it was written first, so the oldest ones, until the ring overwrites them."""
        return min(max(0, self.skip - (added - size)), max(0, size - 1))

    def state_dict(self) -> dict:
        return {"active": self.active, "rate": self.rate, "last": self._last, "seen": self._seen,
                "history": list(self._history), "strength": self.strength, "threshold": self.threshold,
                "rates": (self._rate_sum, self._rate_count), "checks": (self._checks, self._strength_sum)}

    def load_state_dict(self, state: dict) -> None:
        self.active, self.rate, self._last, self._seen = (
            state["active"], state["rate"], state["last"], state["seen"])
        self._history = list(state.get("history", []))  # absent in checkpoints of window=0 runs
        self.strength = state.get("strength", 1.0 if self.active else 0.0)
        self.threshold = state.get("threshold")
        self._rate_sum, self._rate_count = state.get("rates", (0.0, 0))
        self._checks, self._strength_sum = state.get("checks", (0, 0.0))  # absent in older checkpoints


def early_indices(
    n: int, size: int, capacity: int, oldest: int, early_fraction: float, generator: torch.Generator | None,
    skip: int = 0,
) -> torch.Tensor:
    """``n`` buffer indices drawn uniformly from the oldest ``early_fraction`` of ``size`` stored items,
    after leaving out the ``skip`` oldest of them.

    ``oldest`` is the ring-buffer position of the oldest item (0 until the buffer wraps).
    """
    window = max(1, int(early_fraction * (size - skip)))
    offsets = torch.randint(0, window, (n,), generator=generator)
    return (oldest + skip + offsets) % capacity
