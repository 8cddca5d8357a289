"""Benchmark: training steps/s of TD3, static sparse TD3 and NE-TD3 through the real training loop.

``python -m benchmarks.bench [--steps 2000] [--repeats 2] [--threads 1] [--device cpu]``

Each measurement of a method is a real run (env step + action + replay + update) with evaluation and the random
start phase excluded: the run's start phase and first evaluation end at ``--steps``, and the second
window of ``--steps`` training steps is what is timed. Methods are interleaved and repeated, and the
best of the repeats is kept, so that a background process on the machine biases all of them alike.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial

import torch

from benchmarks.ceiling import measure_ceiling
from nelib.runner.config import make_config
from nelib.runner.store import ResultStore
from nelib.runner.train import cpu_model as cpu_name


def measure(method: str, task: str, steps: int, threads: int, device: str, precision: str = "fp32") -> float:
    """Training steps/s of one short run of ``method``."""
    from nelib.runner.train import run

    cfg = make_config(task, method, 0, "ci", steps=2 * steps, start_steps=steps, eval_every=steps,
                      eval_episodes=1, checkpoint_every=0, progress=False, threads=threads, device=device,
                      **{"agent.precision": precision})
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(cfg, ResultStore(tmp))
    return float(rows["steps_per_s"].iloc[-1])


def measure_reference(task: str, steps: int, threads: int, device: str) -> float:
    """Steps/s of a plain single-file TD3 loop in the style of sfujim/TD3 (nn.Linear, Adam, numpy buffer,
    no masks, no metrics): the yardstick for the overhead of nelib's training loop."""
    import copy
    import time

    import numpy as np
    import torch.nn.functional as F
    from torch import nn

    from nelib.envs import make_env

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    env = make_env(task)
    od, ad = env.observation_space.shape[0], env.action_space.shape[0]
    actor = nn.Sequential(nn.Linear(od, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, ad),
                          nn.Tanh()).to(device)
    q1, q2 = (nn.Sequential(nn.Linear(od + ad, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                            nn.Linear(256, 1)).to(device) for _ in range(2))
    actor_t, q1_t, q2_t = copy.deepcopy(actor), copy.deepcopy(q1), copy.deepcopy(q2)
    a_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    c_opt = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=3e-4)
    n = 2 * steps
    S, A, R, S2, D = (np.zeros((n, k), np.float32) for k in (od, ad, 1, od, 1))
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    start = None
    for t in range(n):
        if t == steps:
            start = time.perf_counter()
        if t < steps:
            act = rng.uniform(-1, 1, ad).astype(np.float32)
        else:
            with torch.no_grad():
                act = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0].cpu().numpy()
            act = (act + rng.normal(0, 0.1, ad)).clip(-1, 1).astype(np.float32)
        obs2, r, term, trunc, _ = env.step(act)
        S[t], A[t], R[t], S2[t], D[t] = obs, act, r, obs2, 1.0 - float(term)
        obs = env.reset()[0] if term or trunc else obs2
        if t < steps:
            continue
        idx = rng.integers(0, t + 1, 256)
        s, a, r_, s2, nd = (torch.as_tensor(x[idx], device=device) for x in (S, A, R, S2, D))
        with torch.no_grad():
            noise = (torch.randn_like(a) * 0.2).clamp(-0.5, 0.5)
            a2 = (actor_t(s2) + noise).clamp(-1, 1)
            sa2 = torch.cat([s2, a2], 1)
            y = r_ + nd * 0.99 * torch.min(q1_t(sa2), q2_t(sa2))
        sa = torch.cat([s, a], 1)
        loss = F.mse_loss(q1(sa), y) + F.mse_loss(q2(sa), y)
        c_opt.zero_grad()
        loss.backward()
        c_opt.step()
        if t % 2 == 0:
            a_loss = -q1(torch.cat([s, actor(s)], 1)).mean()
            a_opt.zero_grad()
            a_loss.backward()
            a_opt.step()
            with torch.no_grad():
                for net, tgt in ((actor, actor_t), (q1, q1_t), (q2, q2_t)):
                    for p, pt in zip(net.parameters(), tgt.parameters(), strict=True):
                        pt.mul_(0.995).add_(0.005 * p)
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="HalfCheetah-v5")
    p.add_argument("--methods", default="td3,sparse,ne", help="comma-separated method names")
    p.add_argument("--steps", type=int, default=2000, help="timed training steps per measurement")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-reference", action="store_true", help="skip the plain single-file TD3 yardstick")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="nelib's --agent.precision")
    args = p.parse_args(argv)
    ceiling = measure_ceiling(args.task, threads=args.threads, device=args.device)
    methods = args.methods.split(",")
    rows = methods if args.no_reference else ["plain TD3 (reference)", *methods]
    best = {m: 0.0 for m in rows}
    for _ in range(args.repeats):
        for m in rows:
            fn = measure_reference if m.startswith("plain") else partial(measure, m, precision=args.precision)
            best[m] = max(best[m], fn(args.task, args.steps, args.threads, args.device))
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    print(f"{args.task}, {args.steps} timed steps, best of {args.repeats}, threads={args.threads}, "
          f"torch {torch.__version__}, {dev}, precision {args.precision}")
    print(ceiling.describe())
    share = "share of the fp32" + (" / bf16" if ceiling.bf16 else "") + " ceiling"
    print(f"| method | steps/s | time per step vs td3 | {share} |\n|---|---|---|---|")
    for m in rows:
        ratio = best["td3"] / best[m] if "td3" in best else float("nan")
        print(f"| {m} | {best[m]:.1f} | {ratio:.2f}x | {ceiling.shares(best[m])} |")


if __name__ == "__main__":
    main()
