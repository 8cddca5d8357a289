"""scripts.run_notebook: papermill with the kernel on IPC transport (what `make figures` runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scripts import run_notebook

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, code: str) -> Path:
    cells = [{"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
              "outputs": [], "source": "flag = True\nname = 'x'"},
             {"cell_type": "code", "execution_count": None, "id": "c", "metadata": {}, "outputs": [], "source": code}]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                                                          "display_name": "Python 3"}},
                                "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_parameters_are_read_as_papermill_reads_them():
    assert [run_notebook.parse_value(v) for v in ("False", "True", "3", "0.5", "laptop")] == [False, True, 3, 0.5,
                                                                                             "laptop"]


def test_runs_a_notebook_over_ipc_without_the_tcp_warning(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb", "import os\nprint(flag, name, os.getcwd())")
    out = subprocess.run([sys.executable, "-m", "scripts.run_notebook", str(nb), str(tmp_path / "out.ipynb"),
                          "--cwd", str(tmp_path), "-p", "flag", "False", "-p", "name", "ci"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "without encryption" not in out.stdout + out.stderr
    assert "KeyboardInterrupt" not in out.stdout + out.stderr
    cells = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    assert printed.startswith(f"False ci {tmp_path}")


def test_a_failing_cell_exits_1_after_writing_the_notebook(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb", "raise RuntimeError('no stored runs')")
    out = subprocess.run([sys.executable, "-m", "scripts.run_notebook", str(nb), str(tmp_path / "out.ipynb")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "RuntimeError: no stored runs" in out.stderr
    assert "no stored runs" in (tmp_path / "out.ipynb").read_text()
