"""A replay buffer of uint8 frames that stores every frame once and stacks frames when sampling.

A frame-stacked observation ``[k * C, H, W]`` shares ``k - 1`` frames with the next one, so storing
``(obs, next_obs)`` per transition, as DrQ's reference buffer does, keeps each frame ``2k`` times. Here each
distinct frame is written once into a ring of frames, and a transition keeps the ``k + 1`` ring positions of
its frames (``obs`` = the first ``k``, ``next_obs`` = the last ``k``). :meth:`PixelReplayBuffer.add` takes
the same arguments as :class:`nelib.agents.replay.ReplayBuffer` (whole stacked observations) and finds the shared
frames itself: the observation of a step is the previous step's next observation, and the first observation
of an episode repeats its first frame, so both cost no new frames.

Memory is one frame per transition, plus one per episode start (the ring holds a little more than
``capacity`` frames for those); :meth:`bytes_per_transition` reports it.
"""

from __future__ import annotations

import numpy as np
import torch

from nelib.sparse.review import ExperienceReview, early_indices


class PixelReplayBuffer:
    """Ring buffer of transitions over a ring of unique uint8 frames; samples are uint8 tensors.

    ``sample`` returns ``(obs, action, reward, next_obs, not_done)`` with ``obs`` and ``next_obs`` of shape
    ``[batch, k * C, H, W]`` (uint8, un-augmented; the agent augments and scales them). When the frame ring
    wraps onto frames that old transitions still use (only with episodes much shorter than
    ``1 / extra_frames`` steps), those transitions are forgotten early.
    """

    def __init__(self, frame_shape: tuple[int, int, int], frame_stack: int, act_dim: int, capacity: int,
                 device: torch.device | str = "cpu", seed: int = 0, extra_frames: float = 0.02):
        if capacity <= 0 or frame_stack <= 0:
            raise ValueError("capacity and frame_stack must be > 0")
        self.capacity, self.k, self.device = capacity, frame_stack, torch.device(device)
        self.frame_shape = tuple(frame_shape)
        self.frame_capacity = capacity + int(extra_frames * capacity) + 2 * frame_stack
        self.frames = torch.zeros(self.frame_capacity, *self.frame_shape, dtype=torch.uint8, device=self.device)
        # Ring positions of a transition's k + 1 frames, and the write count of its oldest frame (to know
        # when the frame ring has overwritten it).
        self.frame_idx = torch.zeros(capacity, frame_stack + 1, dtype=torch.int32, device=self.device)
        self.oldest_frame = np.zeros(capacity, dtype=np.int64)
        self.action = torch.zeros(capacity, act_dim, device=self.device)
        self.reward = torch.zeros(capacity, 1, device=self.device)
        self.not_done = torch.zeros(capacity, 1, device=self.device)
        self.ptr = self.size = self.added = 0  # added: transitions ever written
        self.frames_written = 0  # frames ever written (the ring position is this modulo frame_capacity)
        self.generator = torch.Generator().manual_seed(seed)
        self._last_next: np.ndarray | None = None  # the previous next_obs, and its frames' write counts
        self._last_next_frames: list[int] = []

    # -- writing ------------------------------------------------------------------------------------
    def _write_frame(self, frame: np.ndarray) -> int:
        n = self.frames_written
        self.frames[n % self.frame_capacity] = torch.as_tensor(frame)
        self.frames_written += 1
        return n

    def _frames_of(self, obs: np.ndarray) -> list[int]:
        """Write counts of the k frames of ``obs``, writing those not already stored."""
        if self._last_next is not None and (obs is self._last_next or np.array_equal(obs, self._last_next)):
            return list(self._last_next_frames)
        c = self.frame_shape[0]
        counts: list[int] = []
        for i in range(self.k):
            frame = obs[i * c:(i + 1) * c]
            if i and np.array_equal(frame, obs[(i - 1) * c:i * c]):  # a reset stack repeats its first frame
                counts.append(counts[-1])
            else:
                counts.append(self._write_frame(frame))
        return counts

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
            terminated: bool) -> None:
        """Store one transition of stacked uint8 observations ``[k * C, H, W]``; ``next_obs`` must be ``obs``
        shifted by one frame (frame stacking)."""
        c = self.frame_shape[0]
        if self.k > 1 and not np.array_equal(next_obs[:-c], obs[c:]):
            raise ValueError("next_obs is not obs shifted by one frame; this buffer stores frame stacks only")
        obs_frames = self._frames_of(obs)
        counts = [*obs_frames, self._write_frame(next_obs[-c:])]
        i = self.ptr
        self.frame_idx[i] = torch.tensor([n % self.frame_capacity for n in counts], dtype=torch.int32)
        self.oldest_frame[i] = min(counts)
        self.action[i] = torch.as_tensor(action)
        self.reward[i] = float(reward)
        self.not_done[i] = 0.0 if terminated else 1.0
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.added += 1
        self._last_next, self._last_next_frames = next_obs, counts[1:]
        # Forget the oldest transitions whose frames the frame ring has overwritten (see the class doc).
        limit = self.frames_written - self.frame_capacity
        while self.size and self.oldest_frame[self.oldest] < limit:
            self.size -= 1

    # -- reading ------------------------------------------------------------------------------------
    @property
    def oldest(self) -> int:
        """Ring position of the oldest stored transition."""
        return (self.ptr - self.size) % self.capacity

    def indices(self, batch_size: int, review: ExperienceReview | None = None) -> torch.Tensor:
        """Uniform indices of stored transitions, ``review.early_count(batch_size)`` of them from the oldest."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        oldest, n_early = self.oldest, review.early_count(batch_size) if review is not None else 0
        idx = (oldest + torch.randint(0, self.size, (batch_size - n_early,), generator=self.generator)) % self.capacity
        if n_early:
            early = early_indices(n_early, self.size, self.capacity, oldest, review.cfg.early_fraction,
                                  self.generator, review.warmup_left(self.size, self.added))
            idx = torch.cat([early, idx])
        return idx.to(self.device)

    def stacked(self, idx: torch.Tensor, next_obs: bool = False) -> torch.Tensor:
        """Stacked uint8 observations ``[len(idx), k * C, H, W]`` of transitions ``idx``."""
        pos = self.frame_idx[idx, 1:] if next_obs else self.frame_idx[idx, :-1]
        return self.frames[pos.long()].flatten(1, 2)

    def sample(self, batch_size: int, review: ExperienceReview | None = None):
        """``(obs, action, reward, next_obs, not_done)``; observations uint8 ``[batch, k * C, H, W]``."""
        idx = self.indices(batch_size, review)
        return (self.stacked(idx), self.action[idx], self.reward[idx], self.stacked(idx, next_obs=True),
                self.not_done[idx])

    def metrics_batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` uniformly drawn ``(obs, action)`` pairs for plasticity metrics, drawn with ``generator``."""
        idx = (self.oldest + torch.randint(0, self.size, (n,), generator=generator)) % self.capacity
        idx = idx.to(self.device)
        return self.stacked(idx), self.action[idx]

    # -- memory and checkpoints ---------------------------------------------------------------------
    def bytes_per_transition(self) -> float:
        """Bytes of storage per transition at full capacity (frames, indices, action, reward, flag)."""
        total = sum(t.numel() * t.element_size() for t in (self.frames, self.frame_idx, self.action, self.reward,
                                                            self.not_done))
        return (total + self.oldest_frame.nbytes) / self.capacity

    def state_dict(self) -> dict:
        n_frames = min(self.frames_written, self.frame_capacity)
        return {"frames": self.frames[:n_frames].cpu(), "frame_idx": self.frame_idx[:self.size].cpu(),
                "oldest_frame": self.oldest_frame[:self.size].copy(), "action": self.action[:self.size].cpu(),
                "reward": self.reward[:self.size].cpu(), "not_done": self.not_done[:self.size].cpu(),
                "ptr": self.ptr, "size": self.size, "added": self.added, "capacity": self.capacity,
                "frames_written": self.frames_written,
                "frame_capacity": self.frame_capacity, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if (state["capacity"], state["frame_capacity"]) != (self.capacity, self.frame_capacity):
            raise ValueError(f"buffer capacity {state['capacity']} in checkpoint, {self.capacity} configured")
        n, nf = state["size"], len(state["frames"])
        self.frames[:nf] = state["frames"].to(self.device)
        for key in ("frame_idx", "action", "reward", "not_done"):
            getattr(self, key)[:n] = state[key].to(self.device)
        self.oldest_frame[:n] = state["oldest_frame"]
        self.ptr, self.size, self.frames_written = state["ptr"], n, state["frames_written"]
        self.added = state.get("added", n)  # older checkpoints: runs that never wrapped their buffer
        self.generator.set_state(state["generator"].cpu())
        # Runs checkpoint at episode ends, so the next add starts an episode: no frame to share with it.
        self._last_next, self._last_next_frames = None, []
