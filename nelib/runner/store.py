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


def main(argv: list[str] | None = None) -> None:
    """The store's CLI. Its markdown pages moved to ``python -m nelib.report.results``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m nelib.runner.store", description="The results store.")
    p.add_argument("root", nargs="?", default=None, help="results store root (default: $NELIB_DATA or ./data)")
    p.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--readme", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.write or args.readme:
        p.error("the index and the README's summary are written by `python -m nelib.report.results` now "
                "(--data-index for data/README.md)")
    store = ResultStore(args.root)
    print(f"{len(list((store.root / 'runs').glob('*/*/*/seed*.json')))} runs stored under {store.root / 'runs'}; "
          "results pages: python -m nelib.report.results")


if __name__ == "__main__":
    main()
