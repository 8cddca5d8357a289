"""The speed limit of a TD3 update on this machine: the time its matrix products alone take.

``python -m benchmarks.ceiling [--task HalfCheetah-v5] [--threads 1] [--arch td3]``

A TD3 step (one critic update, half an actor update, the target computation and one action) is a fixed
list of matrix products, set by the layer widths and the batch size. Timing exactly those products here,
each warm and in a loop, gives the steps/s that a loop doing nothing else would reach: the ceiling that
``benchmarks.bench`` and ``benchmarks.bench_vectorized`` report their measurements against. It is
measured in fp32 and, where the CPU or GPU has bf16 matrix units (AVX512-BF16, AMX, tensor cores), in
bf16, so the second number says what the opt-in ``--agent.precision bf16`` could gain at most.
Elementwise work (activations, Adam, the masks) is left out, so the ceiling is an upper bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from nelib.envs import make_env
from nelib.torch_ops import bf16_matmul_supported


@dataclasses.dataclass(frozen=True)
class Gemm:
    """``count`` products of an ``m x k`` by a ``k x n`` matrix per environment step."""

    m: int
    k: int
    n: int
    count: float

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.k * self.n * self.count


def _layers(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> list[tuple[int, int]]:
    dims = (in_dim, *hidden, out_dim)
    return list(zip(dims[:-1], dims[1:], strict=True))


def _forward(layers, rows: int, count: float) -> list[Gemm]:
    return [Gemm(rows, i, o, count) for i, o in layers]


def _backward(layers, rows: int, count: float, input_grad: bool) -> list[Gemm]:
    """Weight gradients of every layer, and input gradients of every layer but the first unless the
    network's input needs one (the critic's input carries the actor's action in the actor update)."""
    out = [Gemm(o, rows, i, count) for i, o in layers]
    out += [Gemm(rows, o, i, count) for j, (i, o) in enumerate(layers) if j > 0 or input_grad]
    return out


def td3_step_gemms(obs_dim: int, act_dim: int, actor_hidden=(256, 256), critic_hidden=(256, 256),
                   batch: int = 256, policy_delay: int = 2) -> list[Gemm]:
    """The matrix products of one TD3 environment step (twin critics; actor every ``policy_delay``)."""
    actor = _layers(obs_dim, tuple(actor_hidden), act_dim)
    q = _layers(obs_dim + act_dim, tuple(critic_hidden), 1)
    half = 1.0 / policy_delay
    gemms = _forward(actor, 1, 1.0)  # the action taken in the environment
    gemms += _forward(actor, batch, 1.0) + _forward(q, batch, 2.0)  # target actor and both target critics
    gemms += _forward(q, batch, 2.0) + _backward(q, batch, 2.0, input_grad=False)  # critic update
    gemms += _forward(actor, batch, half) + _backward(actor, batch, half, input_grad=False)  # actor update
    gemms += _forward(q, batch, half) + _backward(q, batch, half, input_grad=True)  # through Q1
    counts: dict[tuple[int, int, int], float] = {}
    for g in gemms:  # one entry per shape, so each is timed once
        counts[g.m, g.k, g.n] = counts.get((g.m, g.k, g.n), 0.0) + g.count
    return [Gemm(m, k, n, c) for (m, k, n), c in counts.items()]


def time_gemms(gemms: list[Gemm], dtype: torch.dtype = torch.float32, device: str = "cpu",
               min_time: float = 0.2) -> float:
    """Seconds per environment step that ``gemms`` take, each product timed warm over ``min_time`` s."""
    total = 0.0
    gen = torch.Generator(device="cpu").manual_seed(0)
    for g in gemms:
        a = torch.randn(g.m, g.k, generator=gen).to(device, dtype)
        b = torch.randn(g.k, g.n, generator=gen).to(device, dtype)
        out = torch.empty(g.m, g.n, device=device, dtype=dtype)
        for _ in range(3):
            torch.mm(a, b, out=out)
        reps, elapsed = 8, 0.0
        while elapsed < min_time:
            reps *= 2
            _sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=out)
            _sync(device)
            elapsed = time.perf_counter() - start
        total += g.count * elapsed / reps
    return total


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclasses.dataclass
class Ceiling:
    """Steps/s a TD3 loop doing only its matrix products would reach, per thread of ``threads``."""

    mflop_per_step: float
    fp32: float
    bf16: float | None

    def shares(self, steps_per_s: float, cores: int = 1) -> str:
        """``steps_per_s`` as a share of the fp32 (and bf16) ceiling of ``cores`` such processes."""
        out = f"{100 * steps_per_s / (cores * self.fp32):.0f}%"
        if self.bf16:
            out += f" / {100 * steps_per_s / (cores * self.bf16):.0f}%"
        return out

    def describe(self) -> str:
        line = f"ceiling (matrix products alone, {self.mflop_per_step:.0f} MFLOP/step): fp32 {self.fp32:.0f} steps/s"
        line += f" ({self.mflop_per_step * self.fp32 / 1e3:.0f} GFLOP/s)"
        if self.bf16:
            line += f", bf16 {self.bf16:.0f} steps/s ({self.mflop_per_step * self.bf16 / 1e3:.0f} GFLOP/s)"
        else:
            line += ", bf16: no hardware support here"
        return line


def measure_ceiling(task: str = "HalfCheetah-v5", arch: str = "td3", threads: int = 1, device: str = "cpu",
                    batch: int = 256) -> Ceiling:
    """The fp32 and bf16 ceilings of a TD3 step on ``task`` (``arch``: ``td3`` or the official NE critic)."""
    if threads:
        torch.set_num_threads(threads)
    env = make_env(task)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    critic = (256, 256, 256) if arch == "ne" else (256, 256)
    gemms = td3_step_gemms(obs_dim, act_dim, critic_hidden=critic, batch=batch)
    mflop = sum(g.flops for g in gemms) / 1e6
    fp32 = 1.0 / time_gemms(gemms, torch.float32, device)
    bf16 = 1.0 / time_gemms(gemms, torch.bfloat16, device) if bf16_matmul_supported(device) else None
    return Ceiling(mflop, fp32, bf16)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ceiling", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="HalfCheetah-v5")
    p.add_argument("--arch", default="td3", choices=("td3", "ne"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    print(f"{args.task}, threads={args.threads}, {args.device}: "
          + measure_ceiling(args.task, args.arch, args.threads, args.device).describe())


if __name__ == "__main__":
    main()
