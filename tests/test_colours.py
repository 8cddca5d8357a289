"""The project's method colours: one per method, and distinguishable under colour-vision deficiencies.

Colour-vision deficiencies are simulated with the matrices of Machado, Oliveira & Fernandes (2009, severity
1.0) on linear RGB; two colours count as distinguishable when their CIELAB distance (Delta E 1976) stays above
:data:`MIN_DELTA_E` for normal vision and every simulated deficiency. 15 is about where two thin lines of a
plot stop being told apart at a glance (Okabe-Ito's own palette has pairs near 17 under tritanopia).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nelib.report import plotting
from nelib.runner.experiments import EXPERIMENTS
from nelib.runner.methods import METHODS

MIN_DELTA_E = 15.0

CVD = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


def _lab(hex_color: str, vision: str) -> np.ndarray:
    srgb = np.array([int(hex_color.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)])
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    linear = np.clip(CVD[vision] @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def worst_pair(colors: dict[str, str]) -> tuple[float, str, str, str]:
    """The smallest Delta E over all pairs of ``colors`` and all visions, with the pair and the vision."""
    worst = (np.inf, "", "", "")
    for (a, ca), (b, cb) in itertools.combinations(colors.items(), 2):
        for vision in CVD:
            d = float(np.linalg.norm(_lab(ca, vision) - _lab(cb, vision)))
            worst = min(worst, (d, a, b, vision))
    return worst


def test_every_method_has_its_own_colour_and_name():
    assert set(METHODS) <= set(plotting.METHOD_COLORS)
    assert set(METHODS) <= set(plotting.METHOD_NAMES)
    assert len(set(plotting.METHOD_COLORS.values())) == len(plotting.METHOD_COLORS)


# The methods each figure puts side by side: every experiment's arms, and the schedules notebook 03 traces.
GROUPS = {name: [arm.label for arm in exp.arms] for name, exp in EXPERIMENTS.items() if name != "sensitivity"}
GROUPS["growth schedules (03)"] = ["ne", "ne-official", "ne-fast"]


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_methods_compared_together_stay_apart_under_colour_vision_deficiencies(group):
    colors = plotting.palette(GROUPS[group])
    assert len(set(colors.values())) == len(colors)
    d, a, b, vision = worst_pair(colors)
    assert d >= MIN_DELTA_E, f"{a} and {b} are too close under {vision} (Delta E {d:.1f})"


def test_variants_are_shades_of_their_method_lightest_for_the_smallest_value():
    colors = plotting.palette(["ne", "ne@omega0.8", "ne-no-prune", "ne@omega0.1"])
    assert colors["ne"] == plotting.METHOD_COLORS["ne"]
    lightness = {lab: _lab(colors[lab], "normal")[0] for lab in ("ne@omega0.1", "ne", "ne@omega0.8")}
    assert lightness["ne@omega0.1"] > lightness["ne"] > lightness["ne@omega0.8"]
    assert plotting.palette(["ne@omega0.1"]) == {"ne@omega0.1": plotting.shade(plotting.METHOD_COLORS["ne"], 0.55)}


def test_readable_names():
    assert plotting.method_name("ne-no-prune") == "NE without pruning"
    assert plotting.method_name("ne@omega0.1") == "NE, ω = 0.1"
    assert plotting.method_name("ne@tend0.25") == "NE, T_end = 0.25"
    assert plotting.method_name("something-else") == "something-else"
    assert plotting.split_label("ne@density0.4") == ("ne", "density", 0.4)
    assert plotting.split_label("td3@bf16") == ("td3", "bf16", None)
    assert plotting.method_name("td3@bf16") == "TD3, bf16"
