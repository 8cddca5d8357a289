"""Benchmark of DrQ on pixels: agent steps/s on a DeepMind Control task with rendering, render speed, replay
memory per transition, and the same agent written like the reference code as a yardstick.

``python -m benchmarks.bench_pixels [--task dmc:cheetah-run] [--steps 100] [--threads 1] [--methods drq,ne]``

An agent step is one env step (``action_repeat`` physics steps and one 84x84 render), one replay insert,
one policy action and one DrQ update (batch 128, two shifted copies of each observation). Each measurement
is a real run through :func:`nelib.runner.train.run`: a random start phase and an evaluation, then ``--steps``
timed training steps. The yardstick (``reference style``) runs the same networks and the same update the
way denisyarats/drq writes it: float32 NCHW, shifts by replicate padding + bilinear ``grid_sample`` on float
images, one forward pass per augmented copy, separate conv passes for actor and critic, the policy's
log-probability from torch's tanh-transformed Normal, Polyak averaging as ``tau * p + (1 - tau) * p_target``,
and a buffer that stores stacked ``obs`` and ``next_obs``.

``--ab FRAMES`` instead trains two dense DrQ runs of FRAMES frames with the same seed, one with nelib's update
and one with the reference-style update (:func:`reference_update`), to check that the speed-ups do not change
learning.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from benchmarks.bench import cpu_name
from nelib.agents.base import summed_counts
from nelib.envs.dmc import default_action_repeat
from nelib.runner.config import make_config
from nelib.runner.store import ResultStore


def render_fps(task: str, frames: int = 200) -> float:
    """Frames/s of the task's 84x84 rendering alone."""
    from nelib.envs.dmc import DMCEnv

    env = DMCEnv(task)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(frames):
        env.render_frame()
    return frames / (time.perf_counter() - start)


def measure(method: str, task: str, steps: int, threads: int, device: str, **overrides) -> float:
    """Agent steps/s of ``steps`` training steps of ``method`` through the runner."""
    from nelib.runner.train import run

    start = max(steps, 200)  # enough random transitions for a batch of 128
    # The laptop preset's DrQ settings (ci's are shrunk for speed), with this run's length.
    cfg = make_config(task, method, 0, "laptop", steps=start + steps, start_steps=start, eval_every=start,
                      eval_episodes=1, checkpoint_every=0, progress=False, threads=threads, device=device,
                      metrics_batch=256, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(cfg, ResultStore(tmp))
    return float(rows["steps_per_s"].iloc[-1])


def grid_sample_shift(x: torch.Tensor, pad: int, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """The reference codes' shift: replicate-pad float images, then sample an integer-offset crop with
    bilinear ``grid_sample`` (kornia's crop in DrQ, ``RandomShiftsAug`` in DrQ-v2). ``shifts``
    (``[n, 2]``, row and column offsets in ``[0, 2 pad]``) replaces the random draw."""
    n, _, h, _ = x.shape
    x = F.pad(x, (pad,) * 4, mode="replicate")
    side = h + 2 * pad
    # Pixel centres of the first h columns of the padded image, in grid_sample's [-1, 1] coordinates.
    centres = torch.linspace(-1.0 + 1.0 / side, 1.0 - 1.0 / side, side, device=x.device)[:h]
    grid = torch.stack([centres.expand(h, h), centres.view(h, 1).expand(h, h)], dim=-1)  # (x=col, y=row)
    if shifts is None:
        shifts = torch.randint(0, 2 * pad + 1, (n, 2))  # on the CPU generator, wherever x is
    offset = shifts.to(x.device).flip(1).float().view(n, 1, 1, 2) * 2.0 / side  # (col, row) offsets
    return F.grid_sample(x, grid.unsqueeze(0) + offset, padding_mode="zeros", align_corners=False)


def squashed_normal_sample(mu: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """denisyarats/drq's policy sample: ``SquashedNormal(mu, std).rsample()`` and its ``log_prob`` summed over
    actions (a Normal through a cached tanh transform; the noise comes from torch's global generator)."""
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    dist = TransformedDistribution(Normal(mu, std), [TanhTransform(cache_size=1)], validate_args=False)
    action = dist.rsample()
    return action, dist.log_prob(action).sum(-1, keepdim=True)


def reference_update(agent, obs_u8, act, rew, next_u8, not_done) -> dict[str, float]:
    """One DrQ update written like denisyarats/drq (see the module docstring), on ``agent``'s networks;
    returns its losses."""
    cfg = agent.cfg
    obs, obs_aug = (grid_sample_shift(obs_u8.float(), cfg.image_pad) for _ in range(2))
    next_obs, next_obs_aug = (grid_sample_shift(next_u8.float(), cfg.image_pad) for _ in range(2))
    obs, obs_aug, next_obs, next_obs_aug = (x / 255.0 for x in (obs, obs_aug, next_obs, next_obs_aug))
    with torch.no_grad():
        targets = []
        for nxt in (next_obs, next_obs_aug):
            a, logp = squashed_normal_sample(*agent.actor(nxt))
            tq1, tq2 = agent.critic_target(nxt, a)
            targets.append(rew + not_done * cfg.gamma * (torch.min(tq1, tq2) - agent.alpha * logp))
        target = (targets[0] + targets[1]) / 2
    q1, q2 = agent.critic(obs, act)
    qa1, qa2 = agent.critic(obs_aug, act)
    loss = sum(F.mse_loss(q, target) for q in (q1, q2, qa1, qa2))
    agent.critic_opt.zero_grad()
    loss.backward()
    agent.critic_opt.step()
    agent.updates += 1
    out = {"critic_loss": loss.item()}
    if agent.updates % cfg.actor_update_every == 0:
        a, logp = squashed_normal_sample(*agent.actor(obs))
        with torch.no_grad():
            feats = agent.critic.encoder.conv_features(obs)  # the reference's detached critic encoder pass
        aq1, aq2 = agent.critic(None, a, conv_features=feats)
        actor_loss = (agent.alpha.detach() * logp - torch.min(aq1, aq2)).mean()
        agent.actor_opt.zero_grad()
        actor_loss.backward()
        agent.actor_opt.step()
        alpha_loss = (agent.alpha * (-logp - agent.target_entropy).detach()).mean()
        agent.alpha_opt.zero_grad()
        alpha_loss.backward()
        agent.alpha_opt.step()
        out["actor_loss"] = actor_loss.item()
    if agent.updates % cfg.target_update_every == 0:
        with torch.no_grad():
            for p, tp in zip(agent.critic.parameters(), agent.critic_target.parameters(), strict=True):
                tp.copy_(cfg.critic_tau * p + (1 - cfg.critic_tau) * tp)
    return out


def measure_reference(task: str, steps: int, threads: int) -> tuple[float, float]:
    """Agent steps/s of the reference-style loop, and its replay bytes per transition."""
    from nelib.agents.drq import DrQ, DrQConfig
    from nelib.envs import make_env

    if threads:
        torch.set_num_threads(threads)
    cfg = DrQConfig(channels_last=False)
    env = make_env(task)
    agent = DrQ(env.observation_space.shape, env.action_space.shape[0], cfg, seed=0)
    start, n = max(steps, 200), max(steps, 200) + steps
    shape = env.observation_space.shape
    # The reference buffer: stacked uint8 obs and next_obs per transition.
    obs_buf, next_buf = np.zeros((n, *shape), np.uint8), np.zeros((n, *shape), np.uint8)
    act_buf, rew_buf, nd_buf = (np.zeros((n, k), np.float32) for k in (env.action_space.shape[0], 1, 1))
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    t0 = None
    for t in range(n):
        if t == start:
            t0 = time.perf_counter()
        act = rng.uniform(-1, 1, act_buf.shape[1]).astype(np.float32) if t < start else agent.explore(obs, rng)
        nxt, r, term, trunc, _ = env.step(act)
        obs_buf[t], next_buf[t], act_buf[t], rew_buf[t], nd_buf[t] = obs, nxt, act, r, 1.0 - term
        obs = env.reset()[0] if term or trunc else nxt
        if t >= start:
            idx = rng.integers(0, t + 1, cfg.batch_size)
            reference_update(agent, *(torch.as_tensor(b[idx]) for b in (obs_buf, act_buf, rew_buf, next_buf,
                                                                          nd_buf)))
    per_transition = sum(b[0].nbytes for b in (obs_buf, next_buf, act_buf, rew_buf, nd_buf))
    return steps / (time.perf_counter() - t0), float(per_transition)


def reference_train(agent, buffer) -> dict[str, float]:
    """``DrQ.train`` replaced by :func:`reference_update` (for the A/B run); its metrics, as every update's,
    include the topology counts (none: the runs are dense)."""
    return {**reference_update(agent, *buffer.sample(agent.cfg.batch_size)), **summed_counts()}


def ab_run(task: str, frames: int, seed: int, threads: int, episodes: int = 3, **overrides) -> pd.DataFrame:
    """A/B check that nelib's fast DrQ update learns like the reference-style one: two dense DrQ runs of
    ``frames`` frames, same seed (same initial networks; the two updates draw shifts and noise from different
    generators, so the runs are not step-for-step equal), evaluated every tenth of the run; returns both
    runs' evaluation rows. ``overrides`` are config overrides for both arms (e.g. ``device``)."""
    from unittest import mock

    from nelib.agents.drq import DrQ
    from nelib.runner.train import run

    steps = frames // default_action_repeat(task)
    # The laptop preset's DrQ settings (ci's are shrunk for speed), with this run's length.
    settings = dict(steps=steps, start_steps=min(500, steps // 4), eval_every=max(1, steps // 10),
                    eval_episodes=episodes, checkpoint_every=0, progress=False, threads=threads, metrics_batch=256)
    out = []
    for arm in ("nelib", "reference style"):
        reference = {"drq.channels_last": False} if arm != "nelib" else {}
        cfg = make_config(task, "drq", seed, "laptop", **{**settings, **overrides, **reference})
        with tempfile.TemporaryDirectory() as tmp, \
                mock.patch.object(DrQ, "train", reference_train if arm != "nelib" else DrQ.train):
            rows = run(cfg, ResultStore(tmp))
        out.append(rows[["step", "frames", "return_mean", "steps_per_s"]].assign(arm=arm))
    return pd.concat(out, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_pixels", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="dmc:cheetah-run")
    p.add_argument("--methods", default="drq,ne", help="comma-separated method names")
    p.add_argument("--steps", type=int, default=100, help="timed agent steps per measurement")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="also measure drq with bf16 autocast")
    p.add_argument("--no-reference", action="store_true", help="skip the reference-style yardstick")
    p.add_argument("--ab", type=int, default=0, metavar="FRAMES",
                   help="instead: A/B learning check, nelib vs reference-style update, runs of FRAMES frames")
    p.add_argument("--seed", type=int, default=0, help="seed of the A/B runs")
    args = p.parse_args(argv)
    if args.ab:
        df = ab_run(args.task, args.ab, args.seed, args.threads, device=args.device)
        print(df.pivot(index="frames", columns="arm", values="return_mean").round(1).to_string())
        sps = df[df.step > 0].groupby("arm")["steps_per_s"].median()
        print("median agent steps/s:", ", ".join(f"{k} {v:.2f}" for k, v in sps.items()))
        return
    from nelib.agents.pixel_replay import PixelReplayBuffer
    from nelib.envs.dmc import DMCEnv

    env = DMCEnv(args.task)
    frame = (3, env.image_size, env.image_size)
    ours = PixelReplayBuffer(frame, env.frame_stack, env.action_space.shape[0], 100_000).bytes_per_transition()
    rows = [("render 84x84 (frames/s)", f"{render_fps(args.task):.1f}")]
    for m in args.methods.split(","):
        rows.append((f"{m} (agent steps/s)", f"{measure(m, args.task, args.steps, args.threads, args.device):.2f}"))
    if args.bf16:
        sps = measure("drq", args.task, args.steps, args.threads, args.device, **{"drq.bf16": True})
        rows.append(("drq, bf16 autocast (agent steps/s)", f"{sps:.2f}"))
    rows.append(("replay bytes per transition, nelib", f"{ours:,.0f}"))
    if not args.no_reference:
        sps, ref_bytes = measure_reference(args.task, args.steps, args.threads)
        rows.append(("drq, reference style (agent steps/s)", f"{sps:.2f}"))
        rows.append(("replay bytes per transition, reference style", f"{ref_bytes:,.0f}"))
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    print(f"{args.task}, {args.steps} timed agent steps, threads={args.threads}, torch {torch.__version__}, {dev}")
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
