"""Ctrl-C while training: the first press checkpoints every run at its next episode end and stops in one line;
the same command resumes and ends as an uninterrupted run; a second press stops at once, also in one line."""

import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import FAKE

import nelib.runner.train as train
from nelib.runner.config import make_config
from nelib.runner.loop import Interrupted
from nelib.runner.store import ResultStore
from nelib.runner.vectorized import run_vectorized

# FAKE's episodes end every 50 steps; checkpoint_every 0: only a Ctrl-C asks for a checkpoint.
ARGS = ["--task", FAKE, "--method", "ne", "--preset", "ci", "--steps", "300", "--start_steps", "100",
        "--eval_every", "100", "--eval_episodes", "1", "--checkpoint_every", "0", "--progress", "0",
        "--topology.interval", "20", "--threads", "1", "--device", "cpu"]
TIMING = ["steps_per_s"]


def config(seed=0):
    return make_config(FAKE, "ne", seed, "ci", steps=300, start_steps=100, eval_every=100, eval_episodes=1,
                       checkpoint_every=0, progress=False, threads=1, device="cpu", **{"topology.interval": 20})


def press_ctrl_c_at(monkeypatch, *steps):
    """Send this process SIGINT right after env step number ``steps[i]`` (once each, whichever run gets there
    first: seeds in lockstep all do)."""
    real, left = train.Run.env_step, list(steps)

    def env_step(self, action):
        real(self, action)
        if self.t in left:
            left.remove(self.t)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train.Run, "env_step", env_step)
    return real


def test_ctrl_c_checkpoints_at_the_next_episode_end_and_the_same_command_resumes(tmp_path, capsys, monkeypatch):
    train.run(config(), ResultStore(tmp_path / "full"))
    full = pd.read_csv(ResultStore(tmp_path / "full").csv_path(config()))  # both read back from their CSV files
    store = ResultStore(tmp_path / "data")
    argv = [*ARGS, "--data-dir", str(tmp_path / "data")]
    real = press_ctrl_c_at(monkeypatch, 120)
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    assert stop.value.code == 130
    path = store.checkpoint_path(config())
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "nelib: stopping at the next episode end, once each run has written its checkpoint; press Ctrl-C again "
        "to stop at once (losing the steps since the last checkpoint)",
        f"nelib: interrupted; checkpoint {path} at step 150: the same command resumes from there"]
    assert torch.load(path, weights_only=False)["t"] == 150 and not store.csv_path(config()).exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    monkeypatch.setattr(train.Run, "env_step", real)
    train.main(argv)
    resumed = pd.read_csv(store.csv_path(config()))
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING), check_exact=True)
    assert not path.exists()


def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path, capsys, monkeypatch):
    press_ctrl_c_at(monkeypatch, 120, 130)
    with pytest.raises(SystemExit) as stop:
        train.main([*ARGS, "--data-dir", str(tmp_path)])
    assert stop.value.code == 130
    assert capsys.readouterr().err.splitlines()[1] == (
        "nelib: stopped at once: the steps since each run's last checkpoint are lost; the same command resumes "
        "from that checkpoint")
    assert not ResultStore(tmp_path).checkpoint_path(config()).exists()  # none was due before step 150


def test_ctrl_c_stops_seeds_in_lockstep_with_a_checkpoint_each(tmp_path, monkeypatch):
    configs = [config(0), config(1)]
    full = [train.run(c, ResultStore(tmp_path / "full")) for c in configs]
    store = ResultStore(tmp_path / "data")
    real = press_ctrl_c_at(monkeypatch, 220)
    with pytest.raises(Interrupted, match="checkpoints .* at step 250, .* at step 250: the same command"):
        run_vectorized(configs, store)
    assert [torch.load(store.checkpoint_path(c), weights_only=False)["t"] for c in configs] == [250, 250]
    monkeypatch.setattr(train.Run, "env_step", real)
    for f, r in zip(full, run_vectorized(configs, store), strict=True):
        pd.testing.assert_frame_equal(f.drop(columns=TIMING), r.drop(columns=TIMING), check_exact=True)


def test_ctrl_c_stops_an_in_process_sweep_after_the_run_in_progress_checkpoints(tmp_path, monkeypatch):
    from nelib.runner.backends import run_configs

    configs = [config(0), config(1)]
    store = ResultStore(tmp_path)
    press_ctrl_c_at(monkeypatch, 120)
    with pytest.raises(Interrupted):  # not a failed run that the sweep reports and goes on after
        run_configs(configs, store, workers=1, progress=False)
    assert torch.load(store.checkpoint_path(configs[0]), weights_only=False)["t"] == 150
    assert not store.checkpoint_path(configs[1]).exists() and not store.csv_path(configs[1]).exists()


def _children_cpu_seconds(pid: int) -> list[float]:
    """CPU seconds (user + system) of each child process of ``pid``, from /proc."""
    ticks, out = os.sysconf("SC_CLK_TCK"), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:  # fields[1] is the parent's pid; [11], [12]: user and system ticks
            out.append((int(fields[11]) + int(fields[12])) / ticks)
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU times from Linux's /proc")
def test_ctrl_c_stops_a_process_pool_sweep_and_the_same_command_finishes_it(tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: the sweep and its spawn workers. The runs in
    progress checkpoint (or end, if their last step comes first), the pending one never starts, the sweep
    ends in one line with status 130, and the same command finishes all of them."""
    import subprocess
    import sys
    import threading
    import time

    cmd = [sys.executable, "-m", "nelib.runner.sweep", "--experiment", "long-horizon", "--preset", "ci",
           "--methods", "td3", "--seeds", "0,1,2", "--workers", "2", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    # Both workers are training once each has used 3 s of CPU (importing torch and MuJoCo takes about 1.6):
    # CPU time, not wall time, so that a busy machine does not make the press come before training starts.
    while sorted(_children_cpu_seconds(proc.pid))[-2:] < [3.0, 3.0] or len(_children_cpu_seconds(proc.pid)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "".join(err)[-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) == 130
    reader.join(timeout=10)
    text = "".join(err).replace("\r", "\n")
    assert "Traceback" not in text
    assert text.rstrip().splitlines()[-1].startswith("nelib: interrupted; the runs in progress keep their checkpoints")
    store = ResultStore(tmp_path)
    configs = [make_config("HalfCheetah-v5", "td3", s, "ci") for s in range(3)]
    for c in configs[:2]:  # interrupted at an episode end, or done
        assert store.checkpoint_path(c).exists() != store.csv_path(c).exists()
    assert not store.checkpoint_path(configs[2]).exists() and not store.csv_path(configs[2]).exists()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip().splitlines()[-1] == f"3 of 3 runs stored under {store.root}"
    assert all(store.csv_path(c).exists() and not store.checkpoint_path(c).exists() for c in configs)
    proc.stdout.close()


def test_a_pool_worker_remembers_a_ctrl_c_between_runs_and_starts_no_run_after_it(tmp_path, monkeypatch):
    from nelib.runner import loop
    from nelib.runner.backends import _start_in_worker

    monkeypatch.setattr(loop._PoolWorker, "enabled", False)  # restored after the test, as is the handler
    monkeypatch.setattr(loop._PoolWorker, "pressed", False)
    handler = signal.getsignal(signal.SIGINT)
    try:
        loop.keep_ctrl_c_in_pool_worker()
        assert not loop.ctrl_c_came()
        os.kill(os.getpid(), signal.SIGINT)  # no run trains: remembered, no KeyboardInterrupt
        assert loop.ctrl_c_came()
        started = []
        with pytest.raises(Interrupted, match="not started"):  # a failure the sweep can report, not a success
            _start_in_worker(lambda *args: started.append(args), [config()], str(tmp_path), False, "")
        assert started == []
        # A run that starts anyway (pressed while it was set up) stops at its first episode end (step 50).
        store = ResultStore(tmp_path)
        with pytest.raises(Interrupted, match="at step 50"):
            train.run(config(), store)
        assert torch.load(store.checkpoint_path(config()), weights_only=False)["t"] == 50
        assert signal.getsignal(signal.SIGINT) is loop._remember_press  # the worker's own handler is back
        with pytest.raises(KeyboardInterrupt) as second:  # a second press, with no run training: at once
            os.kill(os.getpid(), signal.SIGINT)
        assert not isinstance(second.value, Interrupted)
    finally:
        signal.signal(signal.SIGINT, handler)


def test_in_a_pool_worker_a_second_ctrl_c_while_training_stops_at_once(tmp_path, monkeypatch):
    from nelib.runner import loop

    monkeypatch.setattr(loop._PoolWorker, "enabled", False)
    monkeypatch.setattr(loop._PoolWorker, "pressed", False)
    handler = signal.getsignal(signal.SIGINT)
    try:
        loop.keep_ctrl_c_in_pool_worker()
        press_ctrl_c_at(monkeypatch, 120, 130)
        with pytest.raises(KeyboardInterrupt) as stop:
            train.run(config(), ResultStore(tmp_path))
        assert not isinstance(stop.value, Interrupted)  # not the checkpoint at step 150: stopped at once
        assert not ResultStore(tmp_path).checkpoint_path(config()).exists()
        assert loop.ctrl_c_came() and signal.getsignal(signal.SIGINT) is loop._remember_press
    finally:
        signal.signal(signal.SIGINT, handler)
