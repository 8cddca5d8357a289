"""Figure helpers shared by the notebooks: one colour and one name per method, one style, one way to save.

Every figure of the project takes its method colours from :data:`METHOD_COLORS` (through :func:`palette`), so
a method looks the same in every figure. The colours are Okabe-Ito and Paul Tol colours chosen so that the
methods an experiment compares stay apart under the common colour-vision deficiencies (protanopia,
deuteranopia, tritanopia; ``tests/test_colours.py`` checks every experiment's set on a simulation).
"""

from __future__ import annotations

import re
import textwrap
import zlib
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.colors import to_hex, to_rgb

# figures/ at the repository root, whatever the working directory (Jupyter, nbval and papermill run
# notebooks inside notebooks/).
FIGURES_DIR = Path(__file__).resolve().parents[2] / "figures"

# NE is vermillion, its official-code reading wine; the dense baselines are black (TD3) and dark grey (DrQ),
# the static sparse network light grey. The plasticity baselines (compared with NE in one figure) take one
# hue each: blue, bluish green, reddish purple, mustard. The NE ablations are each compared with NE alone,
# so they take colours far from vermillion: sky blue, indigo, teal; naive growth (compared with the static
# sparse network) purple; `ne-fast` (traced next to NE and NE-official) sand.
METHOD_COLORS: dict[str, str] = {
    "td3": "#000000",  # black
    "drq": "#555555",  # dark grey
    "sparse": "#999999",  # grey
    "ne": "#D55E00",  # vermillion
    "ne-official": "#882255",  # wine
    "ne-fast": "#DDCC77",  # sand
    "ne-random-growth": "#56B4E9",  # sky blue
    "ne-no-prune": "#332288",  # indigo
    "ne-no-review": "#44AA99",  # teal
    "naive-growth": "#AA4499",  # purple
    "reset": "#0072B2",  # blue
    "redo": "#009E73",  # bluish green
    "plasticity-injection": "#CC79A7",  # reddish purple
    "layernorm": "#DDAA33",  # mustard
    "td3-official-critic": "#88CCEE",  # light cyan: dense TD3 with the official critic (ne-official's control)
}
_FALLBACK_COLORS = ("#117733", "#999933", "#CC6677", "#661100", "#6699CC")

METHOD_NAMES: dict[str, str] = {
    "td3": "TD3",
    "drq": "DrQ",
    "sparse": "static sparse (20%)",
    "ne": "NE",
    "ne-official": "NE, official code",
    "ne-fast": "NE-fast (first schedule)",
    "ne-random-growth": "NE, random growth",
    "ne-no-prune": "NE without pruning",
    "ne-no-review": "NE without review",
    "naive-growth": "naive growth",
    "reset": "Reset",
    "redo": "ReDo",
    "plasticity-injection": "Plasticity Injection",
    "layernorm": "LayerNorm",
    "td3-official-critic": "TD3, official critic",
}
"""How figures name each method (tables and generated text keep the config names)."""

PARAM_NAMES: dict[str, str] = {
    "omega": "ω",
    "density": "initial density",
    "tend": "T_end",
    "early": "early share",
    "rate": "growth rate",
}
"""Short names of the parameters that variant labels (``method@<param><value>``) vary."""

RANDOM_START_COLOR = "0.91"
"""Shading of the random-action start of a run (no updates yet)."""
RANDOM_START_LABEL = "random actions, no updates yet"
"""Legend entry of that shading."""
STEP_LABEL = "environment steps (x1000)"
"""The x-axis label of every curve against steps."""

METRIC_LABELS: dict[str, str] = {
    "return_mean": "evaluation return",
    "critic_active_ratio": "critic active-neuron ratio",
    "actor_active_ratio": "actor active-neuron ratio",
    "encoder_active_ratio": "encoder active-channel ratio",
    "critic_density": "critic density (share of weights present)",
    "actor_density": "actor density (share of weights present)",
    "critic_fau": "critic FAU",
    "grown": "connections grown per evaluation window (actor\u00a0+\u00a0critic)",
    "pruned": "connections pruned per evaluation window (actor\u00a0+\u00a0critic)",
    "review_share": "review strength (mean per evaluation window)",
    "review_rate": "fluctuation rate of the critic's dormant ratio",
    "review_threshold": "dynamic threshold",
}
"""Readable names of the logged columns (:func:`label_of`; dormant shares are named from their tau)."""


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


NAMED_VARIANTS = ("bf16",)
"""Variants that are names, not a parameter and its value (``td3@bf16`` is not ``bf`` = 16)."""


def split_label(label: str) -> tuple[str, str, float | None]:
    """``"ne@omega0.1"`` -> ``("ne", "omega", 0.1)``; a plain method -> ``(method, "", None)``; a named variant
    (:data:`NAMED_VARIANTS`) -> ``(method, variant, None)``."""
    method, _, variant = label.partition("@")
    named = not variant or variant in NAMED_VARIANTS
    m = None if named else re.fullmatch(r"(\D+?)(-?[\d.]+(?:e-?\d+)?)", variant)
    if m is None:
        return method, variant, None
    return method, m.group(1), float(m.group(2))


def method_color(name: str) -> str:
    """Colour of method ``name`` (case, ``_`` and spaces ignored; a variant ``method@...`` takes its method's
    colour, :func:`palette` shades it); unknown names get a stable extra colour."""
    key = _key(name).partition("@")[0]
    if key in METHOD_COLORS:
        return METHOD_COLORS[key]
    # crc32, unlike hash(), is the same in every process, so a new method keeps its colour across figures.
    return _FALLBACK_COLORS[zlib.crc32(key.encode()) % len(_FALLBACK_COLORS)]


def method_name(label: str) -> str:
    """Readable name of a run label: ``"ne-no-prune"`` -> ``"NE without pruning"``, ``"ne@omega0.1"`` ->
    ``"NE, ω = 0.1"``; unknown labels are returned as they are."""
    method, param, value = split_label(label)
    name = METHOD_NAMES.get(_key(method), method)
    if not param:
        return name
    if value is None:
        return f"{name}, {param}"
    return f"{name}, {PARAM_NAMES.get(param, param)} = {value:g}"


def label_of(col: str) -> str:
    """Readable name of a logged column (one line; axes wrap it)."""
    if col in METRIC_LABELS:
        return METRIC_LABELS[col]
    for net in ("critic", "actor", "encoder"):
        if col.startswith(f"{net}_dormant_"):
            tau = col.rsplit("_", 1)[1]
            units = "channels" if net == "encoder" else "units"
            if float(tau) == 0:
                return f"{net}: share of silent {units} (ReDo score = 0)"
            return f"{net}: share of dormant {units} (ReDo score <= {tau})"
    return col.replace("_", " ")


def axis_label(col: str, width: int = 28) -> str:
    """:func:`label_of`, wrapped to fit beside a panel (never inside a group joined by no-break spaces)."""
    return textwrap.fill(label_of(col), width)


def shade(color: str, amount: float) -> str:
    """``color`` mixed with white (``amount`` > 0) or black (< 0); ``amount`` in [-1, 1]."""
    rgb = np.array(to_rgb(color))
    target = 1.0 if amount > 0 else 0.0
    return to_hex(rgb + (target - rgb) * min(abs(amount), 1.0))


def palette(labels: Iterable[str]) -> dict[str, str]:
    """Colour of every label: a method its colour from :data:`METHOD_COLORS`; the variants of one method
    (``method@<param><value>``) lighter and darker shades of it, lightest for the smallest value, none as
    close to the method's own colour as to be mistaken for it."""
    labels = list(dict.fromkeys(labels))
    out = {lab: method_color(lab) for lab in labels}
    variants: dict[str, list[str]] = {}
    for lab in labels:
        method, param, _ = split_label(lab)
        if param:
            variants.setdefault(method, []).append(lab)
    for method, labs in variants.items():
        labs.sort(key=lambda lab: (split_label(lab)[1], split_label(lab)[2] or 0.0))
        levels = list(np.linspace(0.55, -0.5, len(labs) + 1))
        levels.pop(int(np.argmin(np.abs(levels))))  # the level nearest the method's own colour
        for lab, amount in zip(labs, levels, strict=True):
            out[lab] = shade(method_color(method), amount)
    return out


def paper_style(font_scale: float = 1.3) -> None:
    """Apply the project's figure style globally: white grid, readable fonts, editable text in PDFs."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=font_scale,
                  rc={"figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False,
                      "legend.frameon": False, "pdf.fonttype": 42, "ps.fonttype": 42})


def caption(fig: plt.Figure, text: str, fontsize: float = 9.0) -> None:
    """Write ``text`` under the figure, left-aligned and wrapped to its width: what the lines, bands and
    markers are and over how many seeds. ``save_figure`` keeps it (the saved box grows to hold it)."""
    width = max(40, int(fig.get_figwidth() * 72 / (0.52 * fontsize)))
    wrapped = "\n".join(textwrap.fill(p, width) for p in text.split("\n"))
    fig.text(0.01, -0.01, wrapped, ha="left", va="top", fontsize=fontsize, color="0.25")


def figure_dir(preset: str) -> Path:
    """Where a preset's figures go: ``figures/``, except the throw-away ``ci`` preset (``build/figures-ci``),
    so that ``make test`` never rewrites the committed figures."""
    return FIGURES_DIR.parent / "build" / "figures-ci" if preset == "ci" else FIGURES_DIR


def save_figure(fig: plt.Figure, name: str, folder: str | Path = FIGURES_DIR) -> tuple[Path, Path]:
    """Write ``name.png`` (150 dpi) and ``name.pdf`` into ``folder`` (created if needed); return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    # No creation date, so re-running a notebook leaves an unchanged PDF byte-identical.
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    return png, pdf
