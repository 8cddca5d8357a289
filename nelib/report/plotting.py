"""Figure helpers shared by the notebooks: one colour per method, one style, one way to save."""

from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

# figures/ at the repository root, whatever the working directory (Jupyter, nbval and papermill run
# notebooks inside notebooks/).
FIGURES_DIR = Path(__file__).resolve().parents[2] / "figures"

# Okabe-Ito and Paul Tol colours, which stay distinguishable under common colour-vision deficiencies.
# NE gets the strongest colour; its ablations take warm neighbours, baselines cool colours and greys.
METHOD_COLORS: dict[str, str] = {
    "ne": "#D55E00",  # vermillion
    "ne-random-growth": "#E69F00",  # orange
    "ne-no-prune": "#CC79A7",  # reddish purple
    "ne-no-review": "#882255",  # wine
    "ne-official": "#44AA99",  # teal
    "ne-fast": "#DDCC77",  # sand
    "td3": "#000000",
    "sparse": "#999999",
    "reset": "#0072B2",  # blue
    "redo": "#009E73",  # bluish green
    "plasticity-injection": "#56B4E9",  # sky blue
    "layernorm": "#117733",  # dark green
    "drq": "#332288",  # indigo
    "td3-official-critic": "#666666",  # dark grey: TD3 with the official critic
}
_FALLBACK_COLORS = ("#44AA99", "#DDCC77", "#AA4499", "#88CCEE", "#661100", "#6699CC")


def method_color(name: str) -> str:
    """Colour of method ``name`` (case, ``_`` and spaces ignored); unknown names get a stable extra colour."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    if key in METHOD_COLORS:
        return METHOD_COLORS[key]
    # crc32, unlike hash(), is the same in every process, so a new method keeps its colour across figures.
    return _FALLBACK_COLORS[zlib.crc32(key.encode()) % len(_FALLBACK_COLORS)]


def paper_style(font_scale: float = 1.3) -> None:
    """Apply the project's figure style globally: white grid, readable fonts, editable text in PDFs."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=font_scale,
                  rc={"figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False,
                      "legend.frameon": False, "pdf.fonttype": 42, "ps.fonttype": 42})


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
