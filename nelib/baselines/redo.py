"""ReDo (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep Reinforcement Learning").

Every ``interval`` updates each hidden unit is scored on a batch with the ReDo score
(:func:`nelib.metrics.redo_scores`); a unit with score <= tau is recycled:

- its incoming weights and bias are drawn again from the initial distribution
  (:func:`nelib.baselines.reset.init_units`), with a LayerNorm between the layer and its ReLU reset to
  gain 1 / bias 0 for that unit;
- its outgoing weights (the columns of the next layer) are set to zero, so the network's output is
  unchanged by the recycling and the unit re-enters through learning;
- Adam's first and second moments of all those entries are set to zero (the step count is kept, as in
  the reference google/dopamine ``labs/redo``).

The output layer is never recycled: only units followed by a ReLU are scored. Scores of all layers are
computed from the same activations before anything changes. Target networks are not touched (as in the
reference SAC agent, ``reset_target_models=False``); Polyak averaging carries the change over.

An evaluation that falls right after a recycle sees ReDo at its best (no dormant unit left), so the
intervention also keeps the dormant share it found just before each recycle (:meth:`RedoIntervention.take_metrics`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nelib.baselines.reset import NORM_TYPES, init_units
from nelib.metrics import capture_activations, dormant_units, plasticity_report, redo_scores
from nelib.sparse.masks import MASKED_TYPES, MaskedConv2d, reset_adam_state
from nelib.validation import check_non_negative, check_positive


@dataclasses.dataclass
class RedoConfig:
    """Recycling of dormant units (the ``redo`` method)."""

    enabled: bool = False
    """Recycle dormant units every ``interval`` updates."""
    interval: int = 1_000
    """Critic updates between recyclings (ReDo paper: every 1000 gradient steps)."""
    tau: float = 0.1
    """A unit is dormant, and recycled, if its ReDo score is <= tau (0: exactly silent units only)."""
    actor: bool = True
    """Recycle the actor's dormant units (scored on the batch's observations)."""
    critic: bool = True
    """Recycle the critic's dormant units (scored on the batch's observation-action pairs)."""

    def __post_init__(self):
        check_positive("redo", self, "interval")
        check_non_negative("redo", self, "tau")


@dataclasses.dataclass
class UnitConnections:
    """Where the units activated by one ReLU come from and go to."""

    layer: nn.Module
    """The masked layer that produces the units (their incoming weights are its rows)."""
    norms: list[nn.Module]
    """Norm layers between ``layer`` and the ReLU (one affine entry per unit)."""
    next: nn.Module | None
    """The next masked layer, which reads the units (their outgoing weights are its columns); None if none."""


def _reads(next_layer: nn.Module, layer: nn.Module) -> bool:
    """Whether ``next_layer``'s input can be ``layer``'s output (a conv's flattened output for a linear)."""
    units, fan_in = layer.weight.shape[0], next_layer.weight.shape[1]
    if isinstance(layer, MaskedConv2d) and not isinstance(next_layer, MaskedConv2d):
        return fan_in % units == 0
    return fan_in == units


def unit_connections(net: nn.Module) -> dict[str, UnitConnections]:
    """Map each ``nn.ReLU`` of ``net`` (by module name) to the layers around its units.

    Pairing is by registration order, as in :func:`nelib.sparse.dormant.unit_layers`: a ReLU's units come from
    the last masked layer registered before it, and go to the next masked layer registered after it if
    that layer's input size fits (so the output layer of one Q-network never reads the other's units).
    """
    out: dict[str, UnitConnections] = {}
    last: nn.Module | None = None
    norms: list[nn.Module] = []
    waiting: list[str] = []  # ReLUs whose next layer is not registered yet
    for name, module in net.named_modules():
        if isinstance(module, MASKED_TYPES):
            for relu in waiting:
                if _reads(module, out[relu].layer):
                    out[relu].next = module
            waiting, last, norms = [], module, []
        elif isinstance(module, NORM_TYPES) and last is not None:
            norms.append(module)
        elif isinstance(module, nn.ReLU) and last is not None:
            out[name] = UnitConnections(last, norms, None)
            waiting.append(name)
            last, norms = None, []  # a second ReLU in a row would not be the layer's output
    return out


def outgoing_mask(next_layer: nn.Module, units: torch.Tensor) -> torch.Tensor:
    """Boolean mask over ``next_layer.weight`` of the weights that read ``units`` (a vector over units).

    A linear layer after a conv reads the flattened channels: each channel owns ``in_features / channels``
    consecutive inputs (PyTorch flattens channel-major).
    """
    w = next_layer.weight
    units = units.to(w.device)
    if w.shape[1] != units.numel():
        units = units.repeat_interleave(w.shape[1] // units.numel())
    return units.view(1, -1, *([1] * (w.dim() - 2))).expand_as(w)


def _rows(units: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return units.to(like.device).view(-1, *([1] * (like.dim() - 1))).expand_as(like)


@torch.no_grad()
def recycle_dormant(
    net: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    activations: dict[str, torch.Tensor],
    tau: float,
    generator: torch.Generator | None = None,
) -> dict[str, int]:
    """Recycle the dormant units of ``net``: the ReDo operation.

    ``activations`` are ReLU outputs on a batch keyed by module name (:func:`nelib.metrics.capture_activations`).
    Each unit with ReDo score <= ``tau`` gets fresh incoming weights and bias, zero outgoing weights, and
    zero Adam moments for all of them (``optimizer`` may be None). Returns the number of recycled units
    per ReLU (only ReLUs with at least one).
    """
    connections = unit_connections(net)
    # Decide every layer from the same activations before changing anything (recycling a layer changes
    # the activations of the layers after it).
    plan = {}
    for relu, acts in activations.items():
        if relu in connections:
            dormant = dormant_units(redo_scores(acts), tau)
            if bool(dormant.any()):
                plan[relu] = dormant
    for relu, dormant in plan.items():
        c = connections[relu]
        init_units(c.layer, dormant, generator)
        for norm in c.norms:
            init_units(norm, dormant)
        if optimizer is not None:
            for module in (c.layer, *c.norms):
                for p in module.parameters(recurse=False):
                    reset_adam_state(optimizer, p, _rows(dormant, p))
    # Outgoing weights last, so that a recycled unit's fresh incoming row does not bring back weights
    # from recycled units of the layer before it (their outgoing weights must be zero).
    for relu, dormant in plan.items():
        c = connections[relu]
        if c.next is not None:
            out = outgoing_mask(c.next, dormant)
            c.next.weight.masked_fill_(out, 0.0)
            if optimizer is not None:
                reset_adam_state(optimizer, c.next.weight, out)
    return {relu: int(d.sum()) for relu, d in plan.items()}


class RedoIntervention:
    """Calls :func:`recycle_dormant` on the agent's (TD3 or DrQ) critic and actor every ``cfg.interval``
    updates, scoring units on the update's training batch (DrQ: conv channels included)."""

    NETWORKS = ("critic", "actor")

    def __init__(self, cfg: RedoConfig, seed: int = 0):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)
        self.recycled = {"actor": 0, "critic": 0}
        self._window = self._empty_window()

    @classmethod
    def _empty_window(cls) -> dict[str, list[float]]:
        """Per network, since the last :meth:`take_metrics`: [sum of dormant shares before a recycle, number of
        recycles, units recycled]."""
        return {key: [0.0, 0, 0] for key in cls.NETWORKS}

    def after_update(self, agent, obs: torch.Tensor, act: torch.Tensor) -> None:
        if agent.updates % self.cfg.interval:
            return
        for key, inputs in (("critic", (obs, act)), ("actor", (obs,))):
            if getattr(self.cfg, key):
                net = getattr(agent, key)
                acts = capture_activations(net, *inputs)
                share = plasticity_report(acts, taus=(self.cfg.tau,))[f"dormant_{self.cfg.tau:g}"]
                n = sum(recycle_dormant(net, getattr(agent, f"{key}_opt"), acts, self.cfg.tau,
                                        self.generator).values())
                self.recycled[key] += n
                w = self._window[key]
                w[0], w[1], w[2] = w[0] + share, w[1] + 1, w[2] + n

    def take_metrics(self) -> dict[str, float]:
        """Per recycled network, since the last call: ``<net>_dormant_before_recycle``, the mean share of its
        units with ReDo score <= tau on the batch of each recycle, just before it (NaN if none recycled), and
        ``<net>_recycled``, the units recycled. Starts a new window."""
        out = {}
        for key, (total, n, units) in self._window.items():
            if getattr(self.cfg, key):
                out[f"{key}_dormant_before_recycle"] = total / n if n else float("nan")
                out[f"{key}_recycled"] = units
        self._window = self._empty_window()
        return out

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "recycled": dict(self.recycled),
                "window": {k: list(v) for k, v in self._window.items()}}

    def load_state_dict(self, state: dict, agent) -> None:
        self.generator.set_state(state["generator"].cpu())  # torch.load(map_location=cuda) moves it
        self.recycled = dict(state["recycled"])
        # A checkpoint from before the window was kept: the window restarts at the resumed step.
        self._window = ({k: list(v) for k, v in state["window"].items()} if "window" in state
                        else self._empty_window())
