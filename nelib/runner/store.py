"""The results store: one CSV of evaluation rows plus one JSON record per (preset, task, method, seed).

Layout under the data folder (``NELIB_DATA`` or the repository's ``data/``)::

    runs/<preset>/<task>/<method>[@<variant>]/seed<k>.csv    one tidy row per evaluation
    runs/<preset>/<task>/<method>/seed<k>.json   config, config hash, git commit, command, wall time,
                                                 and the CSV's sha256, row count and last step
    checkpoints/...                              resumable state of unfinished runs (not committed)

A stored result is reused only if its config hash matches; a different hash is an error unless the
caller asks to overwrite. A stored run whose files fail verification (:mod:`nelib.runner.integrity`) is reported
in one line and counts as missing. Every write goes to a temporary file that is then renamed over the
target, so a reader sees the old file or the new one, never a part of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from nelib.runner import integrity, schema
from nelib.runner.config import TrainConfig
from nelib.runner.files import atomic_write, note
from nelib.runner.integrity import DamagedRun, check_rows, verify_run
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


def same_config(stored: dict, cfg: TrainConfig) -> bool:
    """Whether a stored config is ``cfg`` once fields added to nelib since then take their defaults (which keep
    the old behaviour; :func:`nelib.runner.schema.same_config`)."""
    return schema.same_config(stored, cfg.to_dict(), TrainConfig().to_dict())


def is_record_of(rec: dict, cfg: TrainConfig) -> bool:
    """Whether a stored record is a run of ``cfg``: the same hash, or the same config once upgraded."""
    return rec.get("hash") == cfg.hash() or same_config(rec.get("config", {}), cfg)


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
        """The JSON record of ``cfg``'s run key, or None; an unreadable one raises :class:`DamagedRun`."""
        path = self.json_path(cfg)
        if not path.exists():
            return None
        try:
            rec = json.loads(path.read_text())
            rec["hash"]  # noqa: B018 - a record without a hash is corrupt
            return rec
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise DamagedRun(path, f"not a result record: {e}") from None

    def lookup(self, cfg: TrainConfig) -> tuple[str, pd.DataFrame | None, str]:
        """``(state, rows, why)`` of ``cfg``'s run: ``stored`` (rows verified), ``missing``, ``damaged``,
        ``stale`` (an earlier definition of its method) or ``other config``; reads, never writes."""
        try:
            rec = self.record(cfg)
        except DamagedRun as e:
            return "damaged", None, str(e)
        if rec is None:
            return "missing", None, ""
        if not is_record_of(rec, cfg):
            if is_stale_record(rec):
                return "stale", None, (
                    f"{self.json_path(cfg)} is stale: trained by the earlier definition of {cfg.method!r} "
                    f"(see nelib.runner.methods.SUPERSEDED); rerun it (train: --overwrite; sweep: --fresh)")
            return "other config", None, (
                f"{self.json_path(cfg)} holds a run with config hash {rec['hash']}, this config is "
                f"{cfg.hash()}; pass overwrite=True (train: --overwrite; sweep: --fresh) to replace it")
        try:
            return "stored", check_rows(self.csv_path(cfg), rec, cfg), ""
        except DamagedRun as e:
            return "damaged", None, str(e)

    def load(self, cfg: TrainConfig, overwrite: bool = False) -> pd.DataFrame | None:
        """The stored rows of this exact config, verified; None if absent, damaged (said in one line: it
        counts as missing) or if ``overwrite``. A run of another config raises :class:`ResultMismatch`."""
        if overwrite:
            return None
        state, rows, why = self.lookup(cfg)
        if state == "stale":
            raise StaleResult(why)
        if state == "other config":
            raise ResultMismatch(why)
        if state == "damaged":
            note(f"{why}; it counts as missing: training this run again replaces it")
        return rows

    def save(self, cfg: TrainConfig, rows: pd.DataFrame, wall_time_s: float, commit: str | None = None,
             command: str | None = None, platform: str | None = None) -> None:
        """Write the rows, then the record (config, hash, commit, command, wall time, platform, and the sha256,
        row count and last step of the CSV as written), each atomically: a crash between the two leaves a
        record whose checksum the new CSV fails, so the run counts as missing, never as stored.

        ``commit`` should be taken when the run started (the code that produced the rows); ``platform``
        says what ran it (torch version and device), since a run's numbers depend on both.
        """
        sha = []

        def write_csv(p: Path) -> None:
            rows.to_csv(p, index=False)
            sha.append(hashlib.sha256(p.read_bytes()).hexdigest())

        atomic_write(self.csv_path(cfg), write_csv)
        rec = {"hash": cfg.hash(), "commit": commit or git_commit(), "command": command or current_command(),
               "wall_time_s": round(wall_time_s, 1), **({"platform": platform} if platform else {}),
               "sha256": sha[0], "rows": len(rows), "last_step": int(rows["step"].iloc[-1]) if len(rows) else None,
               "config": cfg.to_dict()}
        atomic_write(self.json_path(cfg), lambda p: p.write_text(json.dumps(rec, indent=1) + "\n"))

    def runs(self, preset: str | None = None) -> pd.DataFrame:
        """All stored rows (optionally of one preset), with preset/task/method/seed columns; damaged runs
        are left out, each with a line saying so."""
        frames = []
        for path in sorted((self.root / "runs").glob(f"{preset or '*'}/*/*/seed*.csv")):
            status, why = verify_run(path.with_suffix(".json"), trust_checksum=True)
            if status == "damaged":
                note(f"{why}; left out")
                continue
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
    defaults = schema.flat(TrainConfig().to_dict())
    new = METHODS[stored["method"]]
    flat = {**defaults, **schema.flat(stored)}
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
    p.add_argument("--check", action="store_true",
                   help="verify every stored run (record, config, rows, checksum); exit 1 unless all pass")
    p.add_argument("--add-checksums", action="store_true",
                   help="add sha256, rows and last step to the records that lack them, once their CSVs verify "
                        "(never changes a CSV; running it again changes nothing)")
    args = p.parse_args(argv)
    if args.write or args.readme:
        p.error("the index and the README's summary are written by `python -m nelib.report.results` now "
                "(--data-index for data/README.md)")
    store = ResultStore(args.root)
    if args.check or args.add_checksums:
        lines, ok = integrity.add_checksums(store.root) if args.add_checksums else integrity.check_store(store.root)
        print("\n".join(lines))
        sys.exit(0 if ok else 1)
    print(f"{len(list((store.root / 'runs').glob('*/*/*/seed*.json')))} runs stored under {store.root / 'runs'}; "
          "results pages: python -m nelib.report.results")


if __name__ == "__main__":
    main()
