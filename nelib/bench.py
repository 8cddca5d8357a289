"""Benchmark: training steps/s of TD3, static sparse TD3 and NE-TD3 through the real training loop.

``python -m nelib.bench [--steps 2000] [--repeats 2] [--threads 1] [--device cpu]``

Each measurement is a real run (env step + action + replay + update) with evaluation and the random
start phase excluded: the run's start phase and first evaluation end at ``--steps``, and the second
window of ``--steps`` training steps is what is timed. Methods are interleaved and repeated, and the
best of the repeats is kept, so that a background process on the machine biases all of them alike.
"""

from __future__ import annotations

import argparse
import platform
import tempfile

import torch

from nelib.config import make_config
from nelib.store import ResultStore


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure(method: str, task: str, steps: int, threads: int, device: str) -> float:
    """Training steps/s of one short run of ``method``."""
    from nelib.train import run

    cfg = make_config(task, method, 0, "ci", steps=2 * steps, start_steps=steps, eval_every=steps,
                      eval_episodes=1, checkpoint_every=0, progress=False, threads=threads, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(cfg, ResultStore(tmp))
    return float(rows["steps_per_s"].iloc[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nelib.bench", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="HalfCheetah-v5")
    p.add_argument("--methods", default="td3,sparse,ne", help="comma-separated method names")
    p.add_argument("--steps", type=int, default=2000, help="timed training steps per measurement")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    best = {m: 0.0 for m in methods}
    for _ in range(args.repeats):
        for m in methods:
            best[m] = max(best[m], measure(m, args.task, args.steps, args.threads, args.device))
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    print(f"{args.task}, {args.steps} timed steps, best of {args.repeats}, threads={args.threads}, "
          f"torch {torch.__version__}, {dev}")
    print("| method | steps/s | time per step vs td3 |\n|---|---|---|")
    for m in methods:
        ratio = best["td3"] / best[m] if "td3" in best else float("nan")
        print(f"| {m} | {best[m]:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
