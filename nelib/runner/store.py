"""The results store: one CSV of evaluation rows plus one JSON record per (preset, task, method, seed).

Layout under the data folder (``NELIB_DATA`` or the repository's ``data/``)::

    runs/<preset>/<task>/<method>[@<variant>]/seed<k>.csv    one tidy row per evaluation
    runs/<preset>/<task>/<method>/seed<k>.json   config, config hash, git commit, command, wall time
    checkpoints/...                              resumable state of unfinished runs (not committed)

A stored result is reused only if its config hash matches; a different hash is an error unless the
caller asks to overwrite. Every write goes to a temporary file that is then renamed over the target.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from nelib.runner.config import NOT_HASHED, TrainConfig
from nelib.runner.methods import METHODS, SUPERSEDED

REPO = Path(__file__).resolve().parents[2]


def default_root() -> Path:
    """``$NELIB_DATA`` if set, else the repository's ``data/`` folder."""
    return Path(os.environ.get("NELIB_DATA", REPO / "data"))


def git_commit() -> str:
    """Commit of the nelib checkout (``+dirty`` if it has uncommitted changes).

    Outside a git checkout (a copy of the code shipped to a cluster node or a GPU box) it is
    ``$NELIB_COMMIT`` if set, else ``unknown``: set it to the commit the copy was made from."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("NELIB_COMMIT", "unknown")


def current_command() -> str:
    """This process's command line, ``python -m nelib.<module> ...`` for nelib's own entry points."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    if argv0.suffix == ".py" and argv0.parent.name == "nelib":
        return " ".join(["python -m", f"nelib.{argv0.stem}", *sys.argv[1:]])
    return " ".join(sys.argv)


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the temporary file onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def same_config(stored: dict, cfg: TrainConfig) -> bool:
    """Whether a stored config equals ``cfg`` once fields added to nelib since then take their defaults.

    A new config field with a default keeps the old behaviour, so results stored before it existed
    stay valid; any field whose stored value differs still counts as a different config.
    """
    def merge(defaults, stored):
        if not isinstance(defaults, dict) or not isinstance(stored, dict):
            return stored
        return {k: merge(v, stored[k]) if k in stored else v for k, v in defaults.items()}

    current = cfg.to_dict()
    upgraded = merge(TrainConfig().to_dict(), stored)
    return all(upgraded.get(k) == v for k, v in current.items() if k not in NOT_HASHED)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class ResultMismatch(ValueError):
    """A stored result exists for this run key with a different config."""


class StaleResult(ResultMismatch):
    """The stored result was trained by an earlier definition of its method."""


class ResultStore:
    """Reads and writes run results under ``root``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def _key(self, cfg: TrainConfig) -> Path:
        method = f"{cfg.method}@{cfg.variant}" if cfg.variant else cfg.method
        return Path(cfg.preset) / cfg.task / method / f"seed{cfg.seed}"

    def csv_path(self, cfg: TrainConfig) -> Path:
        return (self.root / "runs" / self._key(cfg)).with_suffix(".csv")

    def json_path(self, cfg: TrainConfig) -> Path:
        return (self.root / "runs" / self._key(cfg)).with_suffix(".json")

    def checkpoint_path(self, cfg: TrainConfig) -> Path:
        return (self.root / "checkpoints" / self._key(cfg)).with_suffix(".pt")

    def record(self, cfg: TrainConfig) -> dict | None:
        """The JSON record of ``cfg``'s run key, or None; a corrupt file is a clear error."""
        path = self.json_path(cfg)
        if not path.exists():
            return None
        try:
            rec = json.loads(path.read_text())
            rec["hash"]  # noqa: B018 - a record without a hash is corrupt
            return rec
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"corrupt result record {path} ({e}); delete it to re-run") from None

    def load(self, cfg: TrainConfig, overwrite: bool = False) -> pd.DataFrame | None:
        """The stored rows of this exact config, None if absent (or if ``overwrite``)."""
        rec = self.record(cfg)
        if rec is None or overwrite:
            return None
        if rec["hash"] != cfg.hash() and not same_config(rec.get("config", {}), cfg):
            if is_stale_record(rec):
                raise StaleResult(
                    f"{self.json_path(cfg)} is stale: trained by the earlier definition of {cfg.method!r} "
                    f"(see nelib.runner.methods.SUPERSEDED); rerun it with --overwrite")
            raise ResultMismatch(
                f"{self.json_path(cfg)} holds a run with config hash {rec['hash']}, this config is "
                f"{cfg.hash()}; pass overwrite=True (CLI: --overwrite) to replace it")
        try:
            return pd.read_csv(self.csv_path(cfg))
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise ValueError(f"corrupt result file {self.csv_path(cfg)} ({e}); delete it to re-run") from None

    def save(self, cfg: TrainConfig, rows: pd.DataFrame, wall_time_s: float, commit: str | None = None,
             command: str | None = None, platform: str | None = None) -> None:
        """Write the rows and the record (config, hash, commit, command, wall time, platform), atomically.

        ``commit`` should be taken when the run started (the code that produced the rows); ``platform``
        says what ran it (torch version and device), since a run's numbers depend on both.
        """
        atomic_write(self.csv_path(cfg), lambda p: rows.to_csv(p, index=False))
        rec = {"hash": cfg.hash(), "commit": commit or git_commit(), "command": command or current_command(),
               "wall_time_s": round(wall_time_s, 1), **({"platform": platform} if platform else {}),
               "config": cfg.to_dict()}
        atomic_write(self.json_path(cfg), lambda p: p.write_text(json.dumps(rec, indent=1) + "\n"))

    def runs(self, preset: str | None = None) -> pd.DataFrame:
        """All stored rows (optionally of one preset), with preset/task/method/seed columns."""
        frames = []
        for path in sorted((self.root / "runs").glob(f"{preset or '*'}/*/*/seed*.csv")):
            df = pd.read_csv(path)
            df["preset"], df["task"] = path.parts[-4], path.parts[-3]
            df["method"], _, df["variant"] = path.parts[-2].partition("@")
            df["seed"] = int(path.stem.removeprefix("seed"))
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def store_for(preset: str) -> ResultStore:
    """The store notebooks use: ``$NELIB_DATA`` if set; ``build/data-ci`` for the throw-away ``ci``
    preset (so tests never touch committed results); else the repository's ``data/``."""
    if "NELIB_DATA" in os.environ:
        return ResultStore()
    return ResultStore(REPO / "build" / "data-ci" if preset == "ci" else REPO / "data")


def final_return(csv: Path) -> float:
    """The mean return of a stored run's last evaluation."""
    return float(pd.read_csv(csv)["return_mean"].iloc[-1])


def index_markdown(store: ResultStore) -> str:
    """A markdown table of every stored run: key, final return, commit, wall time and command."""
    lines = ["| preset | task | method | seed | final return | commit | wall time | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted((store.root / "runs").glob("*/*/*/seed*.json")):
        rec = json.loads(path.read_text())
        csv = path.with_suffix(".csv")
        final = final_return(csv) if csv.exists() else float("nan")
        preset, task, method = path.parts[-4:-1]
        lines.append(f"| {preset} | {task} | {method} | {path.stem.removeprefix('seed')} | {final:.0f} | "
                     f"{rec['commit'][:7]} | {rec['wall_time_s'] / 60:.0f} min | `{rec['command']}` |")
    return "\n".join(lines)


def is_stale_record(rec: dict) -> bool:
    """Whether a stored record was trained by an earlier definition of its method (one of those
    :data:`nelib.runner.methods.SUPERSEDED` lists): every field the method changed since then holds its value there.
    Such a run is reported, never shown as the method's result, and not re-trained unless asked
    (``--overwrite``)."""
    stored = rec.get("config", {})
    earlier = SUPERSEDED.get(stored.get("method"), [])
    if not earlier:
        return False
    defaults = _flat(TrainConfig().to_dict())
    new = METHODS[stored["method"]]
    flat = {**defaults, **_flat(stored)}
    for old in earlier:
        was = {k: old.get(k, defaults[k]) for k in {*new, *old}}
        changed = [k for k in was if was[k] != new.get(k, defaults[k])]
        if changed and all(flat[k] == was[k] for k in changed):
            return True
    return False


def summary_markdown(store: ResultStore) -> str:
    """A markdown table with one row per preset, task and method: the seeds stored, the mean and
    standard deviation over seeds of the final evaluation's return, and each seed's. Runs of an earlier
    definition of their method are marked ``[stale]``."""
    def method_of(path: Path) -> str:
        stale = is_stale_record(json.loads(path.with_suffix(".json").read_text()))
        return path.parts[-2] + (" [stale]" if stale else "")

    finals = [(*path.parts[-4:-2], method_of(path), int(path.stem.removeprefix("seed")), final_return(path))
              for path in sorted((store.root / "runs").glob("*/*/*/seed*.csv"))]
    lines = ["| preset | task | method | seeds | final return: mean ± sd over seeds | per seed |",
             "| --- | --- | --- | --- | --- | --- |"]
    if not finals:
        return "\n".join(lines)
    df = pd.DataFrame(finals, columns=["preset", "task", "method", "seed", "final"])
    for (preset, task, method), g in df.sort_values("seed").groupby(["preset", "task", "method"]):
        sd = f" ± {g.final.std():.0f}" if len(g) > 1 else ""
        per_seed = ", ".join(f"{f:.0f}" for f in g.final)
        lines.append(f"| {preset} | {task} | {method} | {len(g)} | {g.final.mean():.0f}{sd} | {per_seed} |")
    return "\n".join(lines)


INDEX_MARKER = "Runs so far"


def write_index(store: ResultStore) -> Path:
    """Regenerate the table of ``<root>/README.md`` below its line starting with "Runs so far"."""
    readme = store.root / "README.md"
    text = readme.read_text() if readme.exists() else ""
    head = re.split(f"(?m)^{INDEX_MARKER}", text, maxsplit=1)[0]
    intro = (f"{INDEX_MARKER} (generated by `python -m nelib.runner.store --write`), by method: the return of each "
             "run's last evaluation.")
    runs = "Every run (the JSON beside each run has its full config):"
    atomic_write(readme, lambda p: p.write_text(f"{head.rstrip()}\n\n{intro}\n\n{summary_markdown(store)}\n\n"
                                                f"{runs}\n\n{index_markdown(store)}\n"))
    return readme


SUMMARY_START = "<!-- summary: python -m nelib.runner.store --readme README.md -->"
SUMMARY_END = "<!-- end of summary -->"


def write_summary(store: ResultStore, readme: str | Path) -> Path:
    """Replace the block between ``SUMMARY_START`` and ``SUMMARY_END`` in ``readme`` (the project README)
    with :func:`summary_markdown`, so its results table never drifts from the store."""
    readme = Path(readme)
    text = readme.read_text()
    if text.count(SUMMARY_START) != 1 or text.count(SUMMARY_END) != 1:
        raise ValueError(f"{readme} needs one line {SUMMARY_START!r} and one {SUMMARY_END!r} after it")
    head, rest = text.split(SUMMARY_START)
    _, tail = rest.split(SUMMARY_END)
    atomic_write(readme, lambda p: p.write_text(
        f"{head}{SUMMARY_START}\n{summary_markdown(store)}\n{SUMMARY_END}{tail}"))
    return readme


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m nelib.runner.store",
                                description="Index of the stored runs, as markdown.")
    p.add_argument("root", nargs="?", default=None, help="results store root (default: $NELIB_DATA or ./data)")
    p.add_argument("--write", action="store_true", help="write the index into <root>/README.md instead of printing")
    p.add_argument("--readme", default=None, metavar="PATH",
                   help="rewrite the summary table between the markers in PATH (the project README)")
    args = p.parse_args(argv)
    store = ResultStore(args.root)
    if args.readme:
        try:
            print(f"wrote {write_summary(store, args.readme)}")
        except ValueError as e:
            p.error(str(e))
        if not args.write:
            return
    print(f"wrote {write_index(store)}" if args.write else f"{summary_markdown(store)}\n\n{index_markdown(store)}")


if __name__ == "__main__":
    main()
