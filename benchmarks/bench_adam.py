"""Benchmark: one Adam step of a masked 256x256 layer, torch's ``torch.optim.Adam`` against nelib's.

``python -m benchmarks.bench_adam [--repeats 2000] [--threads 1]``

A masked weight's gradient and Adam moments are exactly zero, and torch's CPU square root is much slower on
zeros than on other numbers on some CPUs; :class:`nelib.torch_ops.Adam` floors the second moment before the
root and gets the same bits (see its docstring). For each density the layer is stepped 20 times by both
optimizers (so that the moments are what training makes them), then each is timed over ``--repeats`` steps,
interleaved; the table also says whether the two agree bit for bit after all of them.
"""

from __future__ import annotations

import argparse
import time

import torch

from nelib.runner.train import cpu_model
from nelib.torch_ops import Adam


def time_steps(opt: torch.optim.Optimizer, repeats: int) -> float:
    """Microseconds per ``opt.step()`` (the gradients left as they are)."""
    start = time.perf_counter()
    for _ in range(repeats):
        opt.step()
    return (time.perf_counter() - start) / repeats * 1e6


def measure(density: float, repeats: int, size: int = 256) -> dict[str, float | bool]:
    """Time both optimizers on one ``size x size`` layer of ``density``; return the row."""
    gen = torch.Generator().manual_seed(0)
    mask = (torch.rand(size, size, generator=gen) < density).float()
    weights = torch.randn(size, size, generator=gen) * 0.05
    ref, mine = torch.nn.Parameter(weights.clone()), torch.nn.Parameter(weights.clone())
    torch_opt, nelib_opt = torch.optim.Adam([ref], lr=3e-4), Adam([mine], lr=3e-4)
    for _ in range(20):
        g = torch.randn(size, size, generator=gen) * mask
        ref.grad, mine.grad = g.clone(), g.clone()
        torch_opt.step()
        nelib_opt.step()
    t_torch, t_nelib = [], []
    for _ in range(2):  # interleaved, best of two: a busy machine biases both alike
        t_torch.append(time_steps(torch_opt, repeats // 2))
        t_nelib.append(time_steps(nelib_opt, repeats // 2))
    return {"density": density, "torch_us": min(t_torch), "nelib_us": min(t_nelib),
            "equal": torch.equal(ref, mine) and torch.equal(torch_opt.state[ref]["exp_avg_sq"],
                                                            nelib_opt.state[mine]["exp_avg_sq"])}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2000, help="timed steps per optimizer and density")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--densities", default="1,0.75,0.5,0.2", help="comma-separated layer densities")
    args = p.parse_args(argv)
    if args.repeats < 2 or args.threads < 1:
        p.error("--repeats must be at least 2 and --threads at least 1")
    torch.set_num_threads(args.threads)
    print(f"Adam step of a masked 256x256 layer, torch {torch.__version__}, {cpu_model()}, {args.threads} thread(s)")
    print("| density | torch.optim.Adam (us) | nelib Adam (us) | speed-up | bit for bit |")
    print("| --- | --- | --- | --- | --- |")
    for d in (float(x) for x in args.densities.split(",")):
        r = measure(d, args.repeats)
        print(f"| {d:g} | {r['torch_us']:.1f} | {r['nelib_us']:.1f} | {r['torch_us'] / r['nelib_us']:.2f}x | "
              f"{'yes' if r['equal'] else 'NO'} |")


if __name__ == "__main__":
    main()
