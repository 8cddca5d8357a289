"""The bf16 A/B learning check: do bf16 matrix products change what TD3 and NE learn?

``python -m benchmarks.precision_ab [--preset laptop]`` loads the stored runs of the ``precision``
experiment (``td3`` and ``ne`` in fp32 and as the ``bf16`` variant, ``--agent.precision bf16``), prints each
method's final score in both precisions with a Welch 95% interval on the difference, and writes
``docs/figures/precision_ab.png`` for the speed page (return and critic dormant share over training; not
one of the notebooks' figures, so ``make figures`` leaves it alone). It trains nothing; train the
runs with ``python -m nelib.runner.sweep --experiment precision --preset laptop --methods td3@bf16,ne@bf16``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from nelib.report.curves import curve_grid  # noqa: E402
from nelib.report.plotting import paper_style, save_figure  # noqa: E402
from nelib.report.scoring import difference, final_scores, summary_table  # noqa: E402
from nelib.report.verdicts import difference_verdict  # noqa: E402
from nelib.runner.experiments import run_experiment  # noqa: E402
from nelib.runner.presets import PRESETS  # noqa: E402

METHODS = ("td3", "ne")
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def ab_rows(scores) -> list[str]:
    """Markdown rows, one per method and task: bf16 minus fp32, its Welch 95% interval and what it supports
    (in the words of :func:`nelib.report.verdicts.difference_verdict`)."""
    rows = []
    for m in METHODS:
        diff = difference(scores, f"{m}@bf16", m)
        for i, row in diff.iterrows():
            interval = "-" if row["low"] != row["low"] else f"[{row['low']:+.0f}, {row['high']:+.0f}]"
            words = difference_verdict(diff.loc[[i]], f"{m}@bf16", m)
            rows.append(f"| {m} ({row['task']}) | {row['diff']:+.0f} | {interval} | {words} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="laptop", choices=sorted(PRESETS))
    p.add_argument("--figure", default="precision_ab", help="figure name under docs/figures/ (no suffix)")
    args = p.parse_args(argv)
    df = run_experiment("precision", args.preset, train=False, progress=False)
    scores = final_scores(df)
    print(summary_table(scores).to_string())
    print("\n| method | bf16 - fp32 (mean final return) | Welch 95% interval | verdict |\n|---|---|---|---|")
    print("\n".join(ab_rows(scores)))
    paper_style()
    fig = curve_grid(df, ["return_mean", "critic_dormant_0.1"], random_start=PRESETS[args.preset].start_steps,
                     note="fp32 and bf16 (--agent.precision bf16) runs of the same seeds.")
    png, _ = save_figure(fig, args.figure, FIGURES)
    print(f"\nwrote {png}")


if __name__ == "__main__":
    main()
