"""Benchmark: aggregate env-steps/s of K seeds trained together (nelib.runner.vectorized) vs a process pool.

``python -m benchmarks.bench_vectorized [--ks 1,2,4,8,16,32] [--steps 200] [--method td3] [--device cpu]``

On a GPU: ``--device cuda --no-pool`` times the eager batched update, ``--device cuda --no-pool --cuda-graph``
the update replayed as a CUDA graph (``TrainConfig.cuda_graph``).

For each K, the same K short runs (seeds 0..K-1) are trained three ways: ``vectorized``, all K in this
process (``--threads`` torch threads, default 1); ``vectorized x W``, K/W seeds per process on the pool of
``nelib.runner.experiments`` (``sweep --vectorize``, W = ``min(K, --workers)`` processes of 1 thread, default one
per core); ``pool``, K single runs on that pool. Modes alternate from one K to the next, so that
background load biases them alike. As in ``benchmarks.bench``, a run takes ``--steps`` random-start steps, an
evaluation, then ``--steps`` timed training steps (env step, action, replay, update); the aggregate rate
is the sum of the timed-window steps/s of the runs training at the same time. ``wall`` counts the whole
thing instead (start phase, evaluations, process start-up included).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from benchmarks.bench import cpu_name
from benchmarks.ceiling import measure_ceiling
from nelib.runner.backends import run_configs
from nelib.runner.config import make_config
from nelib.runner.store import ResultStore


def configs(method: str, task: str, k: int, steps: int, device: str, threads: int = 1, cuda_graph: bool = False):
    return [make_config(task, method, seed, "ci", steps=2 * steps, start_steps=steps, eval_every=steps,
                        eval_episodes=1, checkpoint_every=0, progress=False, threads=threads, device=device,
                        cuda_graph=cuda_graph)
            for seed in range(k)]


def measure_vectorized(method: str, task: str, k: int, steps: int, threads: int, device: str,
                       cuda_graph: bool = False) -> tuple[float, float]:
    """(aggregate timed-window steps/s, aggregate steps/s over the wall time) of K seeds in this process."""
    from nelib.runner.vectorized import run_vectorized

    cfgs = configs(method, task, k, steps, device, threads, cuda_graph)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        rows = run_vectorized(cfgs, ResultStore(tmp))
        wall = time.perf_counter() - start
    return k * float(rows[0]["steps_per_s"].iloc[-1]), k * 2 * steps / wall


def measure_pool(method: str, task: str, k: int, steps: int, workers: int, device: str,
                 vectorize: bool = False) -> tuple[float, float]:
    """The same for K runs on the process pool (1 thread each): single runs, or ``vectorize``d groups of
    ``ceil(K / workers)`` seeds."""
    cfgs = configs(method, task, k, steps, device)
    workers = min(k, workers)
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(tmp)
        start = time.perf_counter()
        failures = run_configs(cfgs, store, workers=workers, progress=False,
                               vectorize=-(-k // workers) if vectorize else 0)
        wall = time.perf_counter() - start
        if failures:
            raise RuntimeError(f"pool runs failed: {failures}")
        rates = [float(store.load(c)["steps_per_s"].iloc[-1]) for c in cfgs]
    # Single runs: `workers` of them train at any time. Groups: all train at once, each seed at its group's rate.
    return (sum(rates) if vectorize else workers * sum(rates) / len(rates)), k * 2 * steps / wall


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_vectorized", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="HalfCheetah-v5")
    p.add_argument("--method", default="td3")
    p.add_argument("--ks", default="1,2,4,8,16,32", help="comma-separated numbers of seeds")
    p.add_argument("--steps", type=int, default=200, help="timed training steps per run")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the one-process vectorized run")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pool processes (1 thread each)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-pool", action="store_true", help="one-process vectorized runs only (e.g. on a GPU)")
    p.add_argument("--cuda-graph", action="store_true", help="vectorized runs replay their update as a CUDA graph")
    args = p.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    # Per-process ceiling: one thread's (the pool's processes run one thread each).
    ceiling = measure_ceiling(args.task, threads=1, device=args.device)
    print(f"{args.method} on {args.task}, {args.steps} timed steps per run, device {args.device} ({dev}), "
          f"{os.cpu_count()} cores, vectorized: {args.threads} thread(s), pool: {args.workers} workers x 1 thread, "
          f"torch {torch.__version__}{', vectorized update as a CUDA graph' if args.cuda_graph else ''}", flush=True)
    print(f"{ceiling.describe()} per thread", flush=True)
    share = "share of the fp32" + (" / bf16" if ceiling.bf16 else "") + " ceiling: vectorized, x W, pool"
    print(f"| K | vectorized | vectorized x W | pool | vectorized / pool | vectorized x W / pool | wall: vectorized, "
          f"x W, pool | {share} |\n|---|---|---|---|---|---|---|---|", flush=True)
    modes = ["vec"] + ([] if args.no_pool else ["vec-pool", "pool"])
    nan = (float("nan"), float("nan"))
    single = None
    for i, k in enumerate(ks):
        res = {m: nan for m in ("vec", "vec-pool", "pool")}
        for mode in modes[i % len(modes):] + modes[:i % len(modes)]:  # rotate, against drifting load
            if mode == "vec":
                res[mode] = measure_vectorized(args.method, args.task, k, args.steps, args.threads, args.device,
                                               args.cuda_graph)
            else:
                res[mode] = measure_pool(args.method, args.task, k, args.steps, args.workers, args.device,
                                         vectorize=mode == "vec-pool")
        single = single or res["vec"][0]
        vec, vecw, pool = res["vec"][0], res["vec-pool"][0], res["pool"][0]
        w = min(k, args.workers)
        shares = ", ".join(ceiling.shares(r, c) for r, c in ((vec, args.threads or 1), (vecw, w), (pool, w))
                           if r == r)  # NaN: mode not run
        print(f"| {k} | {vec:.0f} ({vec / single:.1f}x K=1) | {vecw:.0f} | {pool:.0f} | {vec / pool:.2f}x | "
              f"{vecw / pool:.2f}x | {res['vec'][1]:.0f}, {res['vec-pool'][1]:.0f}, {res['pool'][1]:.0f} | {shares} |",
              flush=True)


if __name__ == "__main__":
    main()
