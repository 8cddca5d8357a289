"""Checks for the configs' ``__post_init__``: each raises a ``ValueError`` that names the dotted field
(``section.name``, as it is overridden on the command line) and the value it got.

The sign checks let NaN through on purpose: the runner's preflight refuses every non-finite number with its
own message (``must be a finite number``); a range check refuses it, as a NaN is in no range."""

from __future__ import annotations

from collections.abc import Iterable


def check_positive(section: str, cfg, *names: str) -> None:
    """Every field ``names`` of ``cfg`` is > 0."""
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{section}.{name} must be > 0, got {getattr(cfg, name)!r}")


def check_non_negative(section: str, cfg, *names: str) -> None:
    """Every field ``names`` of ``cfg`` is >= 0."""
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{section}.{name} must be >= 0, got {getattr(cfg, name)!r}")


def check_between(section: str, cfg, names: Iterable[str], low: float, high: float, open_low: bool = False) -> None:
    """Every field ``names`` of ``cfg`` lies in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    for name in names:
        value = getattr(cfg, name)
        if not (low < value if open_low else low <= value) or not value <= high:
            raise ValueError(f"{section}.{name} must be in {'(' if open_low else '['}{low:g}, {high:g}], "
                             f"got {value!r}")


def check_choice(section: str, cfg, name: str, choices: Iterable[str]) -> None:
    """Field ``name`` of ``cfg`` is one of ``choices``."""
    choices = tuple(choices)
    if getattr(cfg, name) not in choices:
        raise ValueError(f"{section}.{name} must be one of {choices}, got {getattr(cfg, name)!r}")
