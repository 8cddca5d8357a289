"""Process set-up before training (nelib.runner.process): threads and glibc's malloc thresholds."""

import platform

import pytest
import torch

import nelib.runner.process as process


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_malloc_keeps_freed_blocks_on_glibc():
    assert process.keep_freed_memory() is True


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(process.ctypes.util, "find_library", lambda name: "/no/such/libc.so")
    assert process.keep_freed_memory() is False


def test_setup_sets_the_threads_and_keeps_them_at_zero():
    before = torch.get_num_threads()
    try:
        process.setup_process(1)
        assert torch.get_num_threads() == 1
        process.setup_process(0)  # 0: torch's default, left as it is
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
