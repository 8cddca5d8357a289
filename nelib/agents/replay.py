"""A uniform replay buffer of torch tensors, with optional early-experience review sampling."""

from __future__ import annotations

import numpy as np
import torch

from nelib.sparse.review import ExperienceReview, early_indices


class ReplayBuffer:
    """Ring buffer of ``(obs, action, reward, next_obs, not_done)``; ``not_done = 1 - terminated``.

    Stored as preallocated torch tensors so that sampling is a single gather with no numpy round trip.
    Sampling uses the buffer's own ``torch.Generator`` so a resumed run draws the same batches.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device: torch.device | str = "cpu",
                 seed: int = 0):
        self.capacity, self.device = capacity, torch.device(device)
        self.obs = torch.zeros(capacity, obs_dim, device=self.device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=self.device)
        self.action = torch.zeros(capacity, act_dim, device=self.device)
        self.reward = torch.zeros(capacity, 1, device=self.device)
        self.not_done = torch.zeros(capacity, 1, device=self.device)
        self.ptr = self.size = self.added = 0  # added: transitions ever written
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
            terminated: bool) -> None:
        i = self.ptr
        self.obs[i] = torch.as_tensor(obs)
        self.action[i] = torch.as_tensor(action)
        self.reward[i] = float(reward)
        self.next_obs[i] = torch.as_tensor(next_obs)
        self.not_done[i] = 0.0 if terminated else 1.0
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.added += 1

    def indices(self, batch_size: int, review: ExperienceReview | None = None) -> torch.Tensor:
        """Uniform indices, with ``review.early_count(batch_size)`` of them from the early window."""
        n_early = review.early_count(batch_size) if review is not None else 0
        idx = torch.randint(0, self.size, (batch_size - n_early,), generator=self.generator)
        if n_early:
            oldest = self.ptr if self.size == self.capacity else 0
            early = early_indices(n_early, self.size, self.capacity, oldest, review.cfg.early_fraction,
                                  self.generator, review.warmup_left(self.size, self.added))
            idx = torch.cat([early, idx])
        return idx.to(self.device)

    def sample(self, batch_size: int, review: ExperienceReview | None = None):
        idx = self.indices(batch_size, review)
        return self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx], self.not_done[idx]

    def metrics_batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` uniformly drawn ``(obs, action)`` pairs for plasticity metrics, drawn with ``generator``."""
        idx = torch.randint(0, self.size, (n,), generator=generator).to(self.device)
        return self.obs[idx], self.action[idx]

    def state_dict(self) -> dict:
        n = self.size
        return {"obs": self.obs[:n].cpu(), "next_obs": self.next_obs[:n].cpu(), "action": self.action[:n].cpu(),
                "reward": self.reward[:n].cpu(), "not_done": self.not_done[:n].cpu(), "ptr": self.ptr,
                "size": n, "added": self.added, "capacity": self.capacity, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"buffer capacity {state['capacity']} in checkpoint, {self.capacity} configured")
        n = state["size"]
        for key in ("obs", "next_obs", "action", "reward", "not_done"):
            getattr(self, key)[:n] = state[key].to(self.device)
        self.ptr, self.size = state["ptr"], n
        self.added = state.get("added", n)  # older checkpoints: runs that never wrapped their buffer
        self.generator.set_state(state["generator"].cpu())  # torch.load(map_location="cuda") moves it
