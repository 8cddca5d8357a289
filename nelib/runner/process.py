"""How a training process is set up before it trains: torch's CPU threads, and how glibc's ``malloc`` treats
the large blocks that tensors are.

Why the allocator. By default glibc serves a block above its mmap threshold with a fresh ``mmap`` and
gives memory at the top of its heap back to the system (``trim``) as soon as enough is free. An update
allocates and frees tensors of a few hundred KB to a few MB (a ``[K, 256, 256]`` Adam temporary is 786 KB
at K = 3) many times, and each fresh mapping costs page faults on first touch. Raising both thresholds
keeps those blocks in the heap for reuse. It changes where tensors live, never what is computed: results
are bit for bit the same. Measured (HalfCheetah-v5, one thread, thread CPU time, under load): 3 vectorized
`ne` seeds 79-83 -> 104 seed-updates/s, `td3` 87-102 -> 91-112; single runs unchanged within noise
(docs/speed.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
HEAP_BLOCKS_UP_TO = 32 << 20
"""Blocks up to this size come from the heap (glibc's largest mmap threshold on 64-bit)."""
KEEP_FREE_UP_TO = 1 << 30
"""Free memory at the top of the heap kept for reuse, up to this size."""


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep large freed blocks for reuse (see the module's docstring). Returns whether
    it applied: False where the C library is not glibc (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE_UP_TO))


def setup_process(threads: int) -> None:
    """Set up this process for training: ``threads`` torch CPU threads (0: torch's default) and
    :func:`keep_freed_memory`."""
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
