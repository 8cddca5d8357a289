"""Verifying stored runs: every record carries its CSV's sha256, row count and last step.

A run's rows are trusted only if its CSV parses whole (no row cut short, no row missing), its rows are
those its config's evaluation schedule makes (step 0, every ``eval_every`` steps, the last step), and,
for records that carry them, the file's sha256, row count and last step are those stored with it.
Records written before checksums existed (*legacy*) are checked for everything but the sha256;
``python -m nelib.runner.store --add-checksums DIR`` adds theirs, once their CSVs pass those checks.

``python -m nelib.runner.store --check DIR`` (:func:`check_store`) verifies every stored run of a store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import pandas as pd

from nelib.runner.config import TrainConfig, from_dict
from nelib.runner.files import atomic_write

CHECKSUM_FIELDS = ("sha256", "rows", "last_step")
"""What a record holds to verify its CSV (records of older nelib lack them: legacy)."""


class DamagedRun(ValueError):
    """A stored run whose files fail verification; ``reason`` says how, in a few words."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} is damaged ({reason})")
        self.path, self.reason = path, reason


def expected_steps(cfg: TrainConfig) -> list[int]:
    """The ``step`` column a finished run of ``cfg`` stores: 0, every ``eval_every`` steps, and the last step
    (as :func:`nelib.runner.train.run` evaluates)."""
    steps = list(range(0, cfg.steps + 1, cfg.eval_every))
    return steps if steps[-1] == cfg.steps else [*steps, cfg.steps]


def read_csv_checked(path: Path) -> tuple[pd.DataFrame, dict]:
    """The rows of a stored CSV and its facts (sha256, rows, last step); :class:`DamagedRun` if it does not
    parse whole: unreadable, cut short (mid-row or in its header), or rows with missing fields."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DamagedRun(path, f"cannot be read: {e.strerror or e}") from None
    try:
        text = raw.decode()
        lines = list(csv.reader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DamagedRun(path, f"not a CSV file: {e}") from None
    # pandas ends every row it writes with a newline: a file that does not was cut short.
    if not raw.endswith(b"\n"):
        raise DamagedRun(path, "cut short: its last line is incomplete")
    if not lines or "step" not in lines[0] or "return_mean" not in lines[0]:
        raise DamagedRun(path, "no header with step and return_mean columns")
    if len(lines) == 1:
        raise DamagedRun(path, "a header and no rows")
    short = [i for i, row in enumerate(lines[1:], 1) if len(row) != len(lines[0])]
    if short:
        raise DamagedRun(path, f"row {short[0]} has {len(lines[short[0]])} fields, the header {len(lines[0])}")
    df = pd.read_csv(io.BytesIO(raw))
    if not pd.api.types.is_integer_dtype(df["step"]):
        raise DamagedRun(path, "its step column is not whole numbers")
    facts = {"sha256": hashlib.sha256(raw).hexdigest(), "rows": len(df), "last_step": int(df["step"].iloc[-1])}
    return df, facts


def check_rows(path: Path, rec: dict, cfg: TrainConfig | None = None) -> pd.DataFrame:
    """The rows of ``path``, verified against its record ``rec`` and, given ``cfg``, against the evaluation
    schedule of ``cfg``; raises :class:`DamagedRun` naming what does not match."""
    df, facts = read_csv_checked(path)
    if "sha256" in rec:
        if (rec.get("rows"), rec.get("last_step")) != (facts["rows"], facts["last_step"]):
            raise DamagedRun(path, f"{facts['rows']} rows to step {facts['last_step']}, its record says "
                                   f"{rec.get('rows')} rows to step {rec.get('last_step')}")
        if rec["sha256"] != facts["sha256"]:
            raise DamagedRun(path, "its sha256 differs from its record's: changed since it was stored")
    if cfg is not None:
        want = expected_steps(cfg)
        if df["step"].tolist() != want:
            raise DamagedRun(path, f"{facts['rows']} rows to step {facts['last_step']}, its config makes "
                                   f"{len(want)} to step {want[-1]}")
        if not all(math.isfinite(x) for x in df["return_mean"]):
            raise DamagedRun(path, "a return_mean that is not a number")
    return df


def record_config(json_path: Path) -> tuple[dict, TrainConfig]:
    """A record and the config it holds; :class:`DamagedRun` if either does not load, or if the record is not
    where its config's run is stored."""
    try:
        rec = json.loads(json_path.read_text())
        cfg = from_dict(rec["config"])
        rec["hash"]  # noqa: B018 - a record without a hash is corrupt
    except OSError as e:
        raise DamagedRun(json_path, f"cannot be read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedRun(json_path, f"not JSON: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise DamagedRun(json_path, f"its config does not load: {e}") from None
    method = f"{cfg.method}@{cfg.variant}" if cfg.variant else cfg.method
    key = (cfg.preset, cfg.task, method, f"seed{cfg.seed}")
    if tuple(json_path.with_suffix("").parts[-4:]) != key:
        raise DamagedRun(json_path, f"its config is the run {'/'.join(key)}, stored elsewhere")
    return rec, cfg


def verify_run(json_path: Path, trust_checksum: bool = False) -> tuple[str, str]:
    """``(status, detail)`` of the stored run of record ``json_path``: ``ok``, ``legacy`` (verified but for
    the sha256, which its record lacks) or ``damaged`` (detail: why). The rows are checked against the
    config's evaluation schedule too, unless ``trust_checksum`` and the record has a checksum (the index
    tables do so: they also list rows stored by hand, through ``ResultStore.save``)."""
    csv_path = json_path.with_suffix(".csv")
    try:
        rec, cfg = record_config(json_path)
        if not csv_path.exists():
            raise DamagedRun(csv_path, "missing: its record is there, its rows are not")
        check_rows(csv_path, rec, None if trust_checksum and "sha256" in rec else cfg)
    except DamagedRun as e:
        return "damaged", str(e)
    if "sha256" not in rec:
        return "legacy", f"{json_path}: legacy, no checksum"
    detail = "" if rec["hash"] == cfg.hash() else (
        f"note: {json_path}: its hash {rec['hash']} is not its config's ({cfg.hash()}): written by an older nelib, "
        "or its config was edited by hand")
    return "ok", detail


def stored_records(root: Path) -> tuple[list[Path], list[Path]]:
    """The records under ``root/runs``, and the CSVs there that have none."""
    runs = Path(root) / "runs"
    records = sorted(runs.glob("*/*/*/seed*.json"))
    orphans = [p for p in sorted(runs.glob("*/*/*/seed*.csv")) if not p.with_suffix(".json").exists()]
    return records, orphans


def check_store(root: Path | str) -> tuple[list[str], bool]:
    """Verify every stored run under ``root``: ``(report lines, whether all are ok)``. Damaged and legacy
    runs get a line each; the last line is the summary."""
    records, orphans = stored_records(Path(root))
    lines, counts = [], {"ok": 0, "legacy": 0, "damaged": 0}
    for path in records:
        status, detail = verify_run(path)
        counts[status] += 1
        if status == "damaged":
            lines.append(f"DAMAGED {detail}: restore it (git checkout, if committed), or delete its two files "
                         "and re-run it")
        elif detail:
            lines.append(detail)
    for path in orphans:
        counts["damaged"] += 1
        lines.append(f"DAMAGED {path}: rows without a record; delete it and re-run it")
    if counts["legacy"]:
        lines.append(f"{counts['legacy']} legacy runs have no checksum; add them with: "
                     f"python -m nelib.runner.store --add-checksums {root}")
    total = len(records) + len(orphans)
    ok = total > 0 and counts["ok"] == total
    lines.append(f"{'ok' if ok else 'FAILED'}: {total} stored runs under {root}: {counts['ok']} verified, "
                 f"{counts['legacy']} legacy (no checksum), {counts['damaged']} damaged"
                 + ("" if total else " (no runs: is this a results store?)"))
    return lines, ok


def _with_checksums(rec: dict, facts: dict) -> dict:
    """``rec`` with the checksum fields set, placed before its config (which stays last, as ``save`` writes)."""
    out = {k: v for k, v in rec.items() if k not in (*CHECKSUM_FIELDS, "config")}
    return {**out, **{k: facts[k] for k in CHECKSUM_FIELDS}, **({"config": rec["config"]} if "config" in rec else {})}


def add_checksums(root: Path | str) -> tuple[list[str], bool]:
    """Add sha256, rows and last step to every legacy record under ``root`` whose CSV verifies (it parses
    whole and its rows are its config's evaluation schedule); never touches a CSV. Records that have them
    are left alone, so running it again changes nothing. Returns ``(report lines, whether every run is now
    verified)``."""
    records, orphans = stored_records(Path(root))
    lines, added, had, failed = [], 0, 0, len(orphans)
    lines += [f"DAMAGED {p}: rows without a record; left alone" for p in orphans]
    for path in records:
        status, detail = verify_run(path)
        if status == "damaged":
            failed += 1
            lines.append(f"DAMAGED {detail}: left alone")
            continue
        if status == "ok":
            had += 1
            continue
        csv_path = path.with_suffix(".csv")
        before = read_csv_checked(csv_path)[1]
        rec = _with_checksums(json.loads(path.read_text()), before)
        atomic_write(path, lambda p, rec=rec: p.write_text(json.dumps(rec, indent=1) + "\n"))
        if read_csv_checked(csv_path)[1] != before or verify_run(path)[0] != "ok":  # a CSV changed meanwhile
            raise RuntimeError(f"{csv_path} changed while its checksum was added; run this again")
        added += 1
    lines.append(f"checksums added to {added} records under {root}; {had} had them; {failed} damaged, left alone")
    return lines, failed == 0
