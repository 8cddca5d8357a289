"""Tests of the project scaffolding: presets on the command line, figure saving, colours, notebook rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest

from nelib.report import plotting
from nelib.runner import presets
from scripts import system

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_presets_cli_accepts_known_and_rejects_unknown_with_one_line():
    for name in presets.PRESETS:
        ok = subprocess.run([sys.executable, "-m", "nelib.runner.presets", name], capture_output=True, text=True)
        assert ok.returncode == 0 and ok.stdout.strip() == name
    bad = subprocess.run([sys.executable, "-m", "nelib.runner.presets", "bogus"], capture_output=True, text=True)
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1 and "bogus" in bad.stderr
    with pytest.raises(ValueError, match="known presets"):
        presets.get("bogus")


def test_make_stops_on_unknown_preset_with_one_line():
    # Only when the venv is up to date: otherwise `make` would start installing it inside the test.
    if subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT).returncode != 0:
        pytest.skip(".venv is not set up by make")
    out = subprocess.run(["make", "--no-print-directory", "figures", "PRESET=bogus"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "unknown preset 'bogus'" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "papermill" not in out.stdout  # stopped before running any notebook


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], color=plotting.method_color("ne"))
    png, pdf = plotting.save_figure(fig, "demo", folder=tmp_path / "sub")
    plt.close(fig)
    assert (png, pdf) == (tmp_path / "sub" / "demo.png", tmp_path / "sub" / "demo.pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_save_figure_defaults_to_repo_figures_folder():
    assert plotting.FIGURES_DIR == ROOT / "figures"


def test_method_colors_are_distinct_and_cover_the_paper_methods():
    methods = {"td3", "sparse", "ne", "ne-random-growth", "ne-no-prune", "ne-no-review", "reset", "redo",
               "plasticity-injection", "layernorm", "drq"}
    assert methods <= set(plotting.METHOD_COLORS)
    assert len(set(plotting.METHOD_COLORS.values())) == len(plotting.METHOD_COLORS)
    assert plotting.method_color("NE") == plotting.method_color("ne")
    assert plotting.method_color("Plasticity_Injection") == plotting.METHOD_COLORS["plasticity-injection"]
    unknown = plotting.method_color("some-new-method")
    assert unknown == plotting.method_color("some-new-method")
    assert unknown not in plotting.METHOD_COLORS.values()


def test_paper_style_applies():
    with matplotlib.rc_context():  # keep the global style of other tests unchanged
        plotting.paper_style()
        assert matplotlib.rcParams["pdf.fonttype"] == 42


def test_system_check_explains_what_to_install_when_it_cannot(monkeypatch):
    monkeypatch.setattr(system, "missing", lambda: ["libegl-mesa0"])
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)  # not root: no apt-get
    monkeypatch.setenv("MUJOCO_GL", "egl")
    with pytest.raises(SystemExit) as exc:
        system.ensure()
    message = str(exc.value)
    assert "\n" not in message and "libegl-mesa0" in message and "apt-get install" in message


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_have_parameters_cell_and_no_stored_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    assert "parameters" in first["metadata"].get("tags", []), "first code cell must be tagged 'parameters'"
    assert 'preset = os.environ.get("NELIB_PRESET", "laptop")' in "".join(first["source"])
    for cell in code:
        assert not cell["outputs"] and cell["execution_count"] is None, "strip outputs before committing"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "01" <= p.name[:2] <= "09"], ids=lambda p: p.name)
def test_notebooks_open_with_the_claim_and_point_to_the_next(path):
    # The walk from plasticity-loss diagnosis through each mechanism to the benchmark: each of 01-09 states the
    # paper's claim up front and ends by pointing to the notebook that follows.
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and "claim" in "".join(cells[0]["source"]).lower()
    last = "".join(cells[-1]["source"])
    assert cells[-1]["cell_type"] == "markdown" and last.startswith("**Next:")
    following = f"{int(path.name[:2]) + 1:02d}_"
    targets = [n for n in NOTEBOOKS if n.name.startswith(following)]
    assert targets and f"({targets[0].name})" in last, f"{path.name} should point to {following}*.ipynb"
