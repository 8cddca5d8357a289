"""The benchmarks' arithmetic: the matrix products a TD3 step does, and how a rate is set against the ceiling."""

import pytest
import torch

from benchmarks.ceiling import Ceiling, Gemm, td3_step_gemms, time_gemms


def test_td3_step_counts_every_product_once():
    # obs 3, action 1, hidden (4, 4), batch 2: counted by hand layer by layer (forward 2mkn each; a backward
    # pass has a weight gradient per layer and an input gradient per layer but the first, except through Q1
    # in the actor update, whose input carries the action).
    gemms = td3_step_gemms(3, 1, (4, 4), (4, 4), batch=2, policy_delay=2)
    act, target, critic, actor, through_q1 = 64, 128 + 288, 288 + 288 + 160, 64 + 64 + 40, 72 + 72 + 72
    assert sum(g.flops for g in gemms) == act + target + critic + actor + through_q1 == 1600
    assert len({(g.m, g.k, g.n) for g in gemms}) == len(gemms)  # one entry per shape


def test_shares_against_the_ceiling_of_all_cores():
    c = Ceiling(mflop_per_step=440.0, fp32=200.0, bf16=800.0)
    assert c.shares(100.0) == "50% / 12%"
    assert c.shares(300.0, cores=2) == "75% / 19%"
    assert Ceiling(440.0, 200.0, None).shares(100.0) == "50%"
    assert "bf16: no hardware support" in Ceiling(440.0, 200.0, None).describe()


def test_timing_scales_with_the_count():
    one = time_gemms([Gemm(8, 8, 8, 1.0)], min_time=0.01)
    assert one > 0 and time_gemms([Gemm(8, 8, 8, 0.0)], min_time=0.01) == 0


def test_precision_ab_rows_read_the_interval():
    import pandas as pd

    from benchmarks.precision_ab import ab_rows

    def scores(task, label, values):
        return [{"task": task, "label": label, "seed": s, "score": v} for s, v in enumerate(values)]

    df = pd.DataFrame(scores("A", "td3", [10, 20, 30]) + scores("A", "td3@bf16", [110, 120, 130])
                      + scores("A", "ne", [10, 20, 30]) + scores("A", "ne@bf16", [0, 20, 40])
                      + scores("B", "ne", [5]) + scores("B", "ne@bf16", [9]))
    td3, ne_a, ne_b = ab_rows(df)
    assert td3.startswith("| td3 (A) | +100 | [+") and "*TD3, bf16* ends above *TD3*" in td3
    assert ne_a.startswith("| ne (A) | +0 | [-") and "includes 0" in ne_a
    assert ne_b.startswith("| ne (B) | +4 | - |") and "on one seed: no interval" in ne_b


def test_precision_experiment_pairs_each_method_with_its_bf16_variant():
    from nelib.runner.experiments import experiment_configs

    configs = experiment_configs("precision", "laptop")
    assert sorted((c.label, c.agent.precision) for c in configs if c.seed == 0) == [
        ("ne", "fp32"), ("ne@bf16", "bf16"), ("td3", "fp32"), ("td3@bf16", "bf16")]
    assert {c.task for c in configs} == {"HalfCheetah-v5"}


def test_bench_adam_prints_one_row_per_density_and_agrees_bit_for_bit(capsys):
    from benchmarks.bench_adam import main

    threads = torch.get_num_threads()
    try:
        main(["--repeats", "4", "--densities", "1,0.3"])
    finally:
        torch.set_num_threads(threads)  # the benchmark sets its own
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 1 ", "| 0.3 "))]
    assert len(rows) == 2 and all(row.endswith("| yes |") for row in rows)


def test_bench_adam_refuses_fewer_than_two_repeats():
    from benchmarks.bench_adam import main

    with pytest.raises(SystemExit):
        main(["--repeats", "1"])
