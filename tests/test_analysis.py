"""Analysis helpers on hand-made evaluation rows."""

import numpy as np
import pandas as pd
import pytest

from nelib.report import curves, cyclic, plotting, score_figures, scoring, verdicts


def rows():
    # two labels x two seeds x three evaluations; final score = mean of the last two returns
    recs = []
    for label, base in (("td3", 100.0), ("ne", 200.0)):
        for seed in (0, 1):
            for step, r in ((0, 0.0), (1000, base), (2000, base + 10 * seed)):
                recs.append({"task": "T", "label": label, "seed": seed, "step": step, "return_mean": r,
                             "critic_active_ratio": 1.0 - step / 1e4})
    return pd.DataFrame(recs)


def test_final_scores_and_comparison():
    scores = scoring.final_scores(rows(), last=2)
    got = scores.set_index(["label", "seed"])["score"].to_dict()
    assert got == {("ne", 0): 200.0, ("ne", 1): 205.0, ("td3", 0): 100.0, ("td3", 1): 105.0}
    (line,) = verdicts.compare(scores, "ne", "td3")
    assert line.startswith("T: ne 202 vs td3 102 (+98%, higher; 2 seed(s) each)")
    (trend,) = verdicts.trend(rows(), "critic_active_ratio", "ne", early=1, late=1)
    assert trend == "T (ne): critic active-neuron ratio fell from 1.000 (at 0k steps) to 0.800 (at 2k steps)"
    (trend,) = verdicts.trend(rows(), "critic_active_ratio", "ne", unit="frames")
    assert trend.endswith("fell from 0.950 (frames 0k-1k) to 0.850 (frames 1k-2k)")


def test_summary_table_gives_mean_and_sd_over_seeds_and_the_score_alone_for_one_seed():
    scores = pd.DataFrame({"task": ["T"] * 3, "label": ["ne", "ne", "td3"], "seed": [0, 1, 0],
                           "score": [200.0, 210.0, 100.4]})
    table = scoring.summary_table(scores)
    assert table.loc["T"].to_dict() == {"ne": "205 +- 7 (n=2)", "td3": "100 (n=1)"}


def test_normalised_scores_layout_and_forgetting():
    scores = scoring.final_scores(rows(), last=2)
    norm = scoring.normalized_scores(scores, "td3")
    assert norm["td3"].shape == (2, 1) and norm["td3"].mean() == pytest.approx(1.0)
    np.testing.assert_allclose(norm["ne"][:, 0], [200 / 102.5, 205 / 102.5])
    # a label missing from a task takes that task out of every label's aggregate
    more = pd.concat([scores, pd.DataFrame({"task": "U", "label": ["td3", "td3", "ne"], "seed": [0, 1, 0],
                                            "score": [10.0, 30.0, 40.0]})], ignore_index=True)
    assert scoring.common_tasks(more) == ["T", "U"]
    both = scoring.normalized_scores(more, "td3")
    np.testing.assert_allclose(both["ne"], [[200 / 102.5, 2.0]])  # ne's seed 1 has no run on U
    assert scoring.common_tasks(more[~((more.task == "U") & (more.label == "ne"))]) == ["T"]
    drop = scoring.forgetting(rows())
    assert (drop["drop"] == 0).all()


def test_sensitivity_table_parses_variant_labels():
    scores = pd.DataFrame({"task": "T", "seed": 0, "score": [1.0, 2.0, 3.0],
                           "label": ["ne", "ne@rate0.002", "ne@density0.1"]})
    table = scoring.sensitivity_table(scores, {"rate": 0.008, "density": 0.2})
    assert set(map(tuple, table[["param", "value", "default"]].values.tolist())) == {
        ("rate", 0.008, True), ("density", 0.2, True), ("rate", 0.002, False), ("density", 0.1, False)}


def test_sensitivity_plot_with_one_task():
    import matplotlib

    matplotlib.use("Agg")
    scores = pd.DataFrame({"task": "T", "seed": [0, 1, 0], "score": [1.0, 2.0, 3.0],
                           "label": ["ne", "ne", "ne@rate0.002"]})
    fig = score_figures.sensitivity_plot(scoring.sensitivity_table(scores, {"rate": 0.008}))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.002", "0.008\n(default)"]
    two = pd.concat([scores, scores.assign(task="U")], ignore_index=True)
    fig = score_figures.sensitivity_plot(scoring.sensitivity_table(two, {"rate": 0.008}))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["T", "U"]


def test_sensitivity_plot_is_the_same_on_every_call():
    # the seed dots are jittered; a fixed jitter keeps `make figures` from rewriting unchanged figures
    import matplotlib

    matplotlib.use("Agg")
    scores = pd.DataFrame({"task": "T", "seed": [0, 1, 2, 0, 1, 2], "score": [1.0, 2.0, 3.0, 2.0, 3.0, 4.0],
                           "label": ["ne"] * 3 + ["ne@rate0.002"] * 3})
    table = scoring.sensitivity_table(scores, {"rate": 0.008})
    offsets = []
    for _ in range(2):
        np.random.uniform(size=7)  # whatever drew from numpy's global RNG before
        fig = score_figures.sensitivity_plot(table)
        offsets.append(np.concatenate([c.get_offsets()[:, 0] for c in fig.axes[0].collections]))
    assert np.array_equal(offsets[0], offsets[1])


def test_first_divergence_brackets_where_two_arms_part():
    df = rows()
    same = df[df["label"] == "td3"].assign(label="td3-copy")
    # seed 0 parts at step 2000, seed 1 never
    same.loc[(same["seed"] == 0) & (same["step"] == 2000), "return_mean"] += 1.0
    got = scoring.first_divergence(pd.concat([df, same]), "td3", "td3-copy")
    assert got.to_dict("records") == [
        {"task": "T", "seed": 0, "last_same": 1000, "first_different": 2000},
        {"task": "T", "seed": 1, "last_same": 2000, "first_different": pytest.approx(np.nan, nan_ok=True)}]


def cyclic_rows():
    # two tasks x two visits; evaluations every 10 steps, a visit closes at its 20-step budget except
    # seed 1's first, which runs on to step 30 (its episode ended late)
    recs = []
    for label, gain in (("td3", 0.0), ("ne", 50.0)):
        for seed, ends in ((0, (20, 40, 60, 80)), (1, (30, 40, 60, 80))):
            stage = 0
            for step in range(0, 90, 10):
                if stage < 3 and step > ends[stage]:
                    stage += 1
                task = "A-v5" if stage % 2 == 0 else "B-v5"
                ret = 100.0 * (stage + 1) + gain * (stage // 2) + seed
                recs.append({"task": "cycle", "label": label, "seed": seed, "step": step, "stage": stage,
                             "task_now": task, "return_mean": ret, "critic_active_ratio": 1.0})
    return pd.DataFrame(recs)


def test_visit_spans_and_revisit_changes():
    df = cyclic_rows()
    spans = cyclic.visit_spans(df)
    assert spans["task"].tolist() == ["A-v5", "B-v5", "A-v5", "B-v5"]
    assert spans["start"].tolist() == [0.0, 25.0, 40.0, 60.0]  # stage 0 ends at 20 or 30: median 25
    assert spans["end"].tolist() == [25.0, 40.0, 60.0, 80.0]
    visits = cyclic.visit_returns(df)
    assert visits["visit"].tolist().count(2) == 8 and set(visits["visit"]) == {1, 2}
    got = cyclic.revisit_changes(visits)
    # task A: stage 0 -> 100.5 for both; stage 2 -> 300.5 (td3) and 350.5 (ne); task B: 200.5 -> 400.5/450.5
    assert got[["task", "label"]].values.tolist() == [["A-v5", "ne"], ["A-v5", "td3"], ["B-v5", "ne"],
                                                      ["B-v5", "td3"]]
    assert got["change"].tolist() == [250.0, 200.0, 250.0, 200.0]
    assert got["first"].tolist() == [100.5, 100.5, 200.5, 200.5]


def test_cyclic_figures_shade_each_visit_and_keep_one_legend():
    import matplotlib.pyplot as plt

    df = cyclic_rows()
    fig = cyclic.cyclic_curves(df, ["return_mean", "critic_active_ratio"])
    top = fig.axes[0]
    assert [t.get_text() for t in top.texts] == ["A\nvisit 1", "B\nvisit 1", "A\nvisit 2", "B\nvisit 2"]
    assert len(top.patches) >= 2 and len(fig.legends) == 1 and top.get_legend() is None  # every other visit grey
    assert "95% bootstrap CI" in fig.texts[-1].get_text()  # the caption says what the bands are
    fig2 = cyclic.visit_return_grid(cyclic.visit_returns(df), labels=["td3", "ne", "reset"])
    assert [ax.get_title() for ax in fig2.axes] == ["A-v5", "B-v5"]
    # absent labels dropped, readable names with their seeds
    assert [t.get_text() for t in fig2.legends[0].get_texts()] == ["TD3 (n=2)", "NE (n=2)"]
    cyclic.visit_return_grid(cyclic.visit_returns(df[df.label == "ne"]))  # one label: nothing to dodge
    plt.close("all")


def test_bootstrap_intervals_depend_on_their_seed_only():
    scores = scoring.final_scores(rows(), last=2)
    np.random.seed(123)
    a = scoring.aggregate(scores, reps=200, seed=0)
    np.random.seed(7)  # numpy's global RNG does not matter
    pd.testing.assert_frame_equal(a, scoring.aggregate(scores, reps=200, seed=0))
    b = scoring.probability_of_improvement(scores, "ne", ["td3"], reps=200, seed=0)
    pd.testing.assert_frame_equal(b, scoring.probability_of_improvement(scores, "ne", ["td3"], reps=200, seed=0))
    assert b["point"].item() == 1.0  # both ne seeds above both td3 seeds


def curve_rows():
    """Two methods, two seeds, evaluations every 1000 steps after a 2000-step random start."""
    recs = []
    for label, act in (("td3", 0.99), ("redo", 1.0)):
        for seed in (0, 1):
            for step in range(0, 6001, 1000):
                recs.append({"task": "T", "label": label, "seed": seed, "step": step, "return_mean": step * 0.1,
                             "critic_active_ratio": act - 0.001 * seed, "critic_density": 1.0 if label == "redo"
                             else 0.2 + 0.1 * step / 1000})
    return pd.DataFrame(recs)


def test_curve_grid_states_its_statistic_seeds_and_random_start():
    import matplotlib.pyplot as plt

    fig = curves.curve_grid(curve_rows(), ["return_mean", "critic_active_ratio", "critic_density"],
                              random_start=2000)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["TD3 (n=2)", "ReDo (n=2)", plotting.RANDOM_START_LABEL]
    text = fig.texts[-1].get_text().replace("\n", " ")
    assert "mean over seeds" in text and "95% bootstrap CI across seeds" in text and "2,000 steps" in text
    ret, act, dens = fig.axes
    assert ret.patches and ret.patches[0].get_x() == 0  # the random start, shaded from step 0
    assert act.get_ylim()[0] == pytest.approx(0.9) and "axis from 0.90" in act.get_ylabel()  # no silent zoom
    assert dens.get_ylim()[0] < 0.01 and dens.get_ylim()[1] > 1.0
    assert "ReDo" in dens.texts[0].get_text() and "dense" in dens.texts[0].get_text()  # dense: not drawn
    plt.close("all")


def test_curve_grid_draws_counts_on_a_symlog_axis_that_keeps_zero():
    import matplotlib.pyplot as plt

    df = curve_rows().assign(grown=lambda d: np.where(d.label == "td3", 0, 10 ** (d.step // 1000)))
    fig = curves.curve_grid(df, ["return_mean", "grown"], symlog=["grown"])
    ret, grown = fig.axes
    assert ret.get_yscale() == "linear" and grown.get_yscale() == "symlog"
    assert grown.get_ylim()[0] == 0 and grown.get_ylim()[1] >= 1e6 and "(log scale)" in grown.get_ylabel()
    with pytest.raises(ValueError, match="symlog names metrics not drawn: \\['pruned'\\]"):
        curves.curve_grid(df, ["grown"], symlog=["pruned"])
    plt.close("all")


def test_a_method_without_values_is_named_instead_of_silently_missing():
    import matplotlib.pyplot as plt

    df = curve_rows().assign(review_share=lambda d: np.where(d.label == "td3", np.nan, 0.5))
    review, ret = curves.curve_grid(df, ["review_share", "return_mean"]).axes
    assert [t.get_text() for t in review.texts] == ["no experience review: TD3"]
    assert len([line for line in review.get_lines() if len(line.get_xdata())]) == 1  # ReDo only
    assert not ret.texts  # both methods drawn
    plt.close("all")
    (empty,) = curves.curve_grid(df.assign(review_share=np.nan), ["review_share"]).axes
    no_review = f"{curves.label_of('review_share')}:\nno experience review in these runs"
    assert [t.get_text() for t in empty.texts] == [no_review]
    (missing,) = curves.curve_grid(df, ["critic_fau"]).axes
    assert [t.get_text() for t in missing.texts] == [f"{curves.label_of('critic_fau')}:\nnot logged in these runs"]
    plt.close("all")


def test_redo_recycles_are_marked_from_the_config():
    from nelib.baselines.redo import RedoConfig

    class Cfg:  # what mark_recycles reads of a TrainConfig
        def __init__(self, label, interval, enabled):
            self.task, self.label, self.seed, self.start_steps = "T", label, 0, 2000
            self.redo = RedoConfig(enabled=enabled, interval=interval)

    df = curve_rows()
    marked = curves.mark_recycles(df[df.seed == 0], [Cfg("redo", 2000, True), Cfg("td3", 1000, False)])
    redo = marked[marked.label == "redo"]
    assert redo.loc[redo.after_recycle, "step"].tolist() == [4000, 6000]  # 2000 and 4000 updates
    assert not marked.loc[marked.label == "td3", "after_recycle"].any()
    fig = curves.curve_grid(marked, ["critic_active_ratio"], random_start=2000)
    assert curves.RECYCLE_LABEL in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "every 2,000 updates" in fig.texts[-1].get_text().replace("\n", " ")
    import matplotlib.pyplot as plt

    plt.close("all")


def test_redo_dormancy_before_recycles_against_at_evaluation():
    nan = float("nan")
    df = pd.DataFrame({"task": ["A"] * 4 + ["B"] * 2, "seed": [0, 0, 1, 1, 0, 0],
                       "after_recycle": [False, True, False, False, False, True],
                       "critic_dormant_0.1": [0.5, 0.0, 0.5, 0.1, 0.9, 0.2],
                       "critic_dormant_before_recycle": [nan, 0.2, nan, 0.4, nan, 0.3]})
    out = curves.recycle_dormancy(df).set_index("task")
    assert out["runs"].to_dict() == {"A": 2, "B": 1} and set(out["network"]) == {"critic"}
    assert out["evaluations right after a recycle"].to_dict() == {"A": 0.5, "B": 1.0}
    assert out["dormant 0.1 at evaluation"].to_dict() == pytest.approx({"A": 0.05, "B": 0.2})
    assert out["dormant 0.1 just before each recycle"].to_dict() == pytest.approx({"A": 0.3, "B": 0.3})
    assert curves.recycle_dormancy(df.drop(columns="critic_dormant_before_recycle")).empty  # stored before


def test_interval_plot_leaves_out_an_iqm_that_equals_the_mean():
    import matplotlib.pyplot as plt

    scores = scoring.final_scores(rows(), last=2)  # 2 seeds x 1 task per method: IQM == mean
    agg = scoring.aggregate(scores, reps=50)
    counts = scoring.run_counts(scores)
    assert counts == {"ne": (2, 1), "td3": (2, 1)}
    fig = score_figures.interval_plot(agg, counts=counts, order=["td3", "ne"])
    assert [ax.get_title() for ax in fig.axes] == ["mean", "optimality gap (lower is better)"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["TD3\n(n=2 seeds)", "NE\n(n=2 seeds)"]
    assert "No IQM panel" in fig.texts[-1].get_text().replace("\n", " ")
    assert len(score_figures.interval_plot(agg).axes) == 3  # without counts nothing is dropped
    fig = score_figures.interval_plot(agg, counts={"ne": (1, 1), "td3": (2, 3)}, order=["td3", "ne"])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["TD3\n(n=2 seeds × 3 tasks)", "NE\n(n=1 seed)"]
    plt.close("all")


def test_difference_and_its_verdict():
    scores = pd.DataFrame({"task": "T", "label": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                           "score": [10.0, 11.0, 12.0, 1.0, 2.0, 3.0]})
    diff = scoring.difference(scores, "a", "b")
    assert diff["diff"].item() == 9.0 and 0 < diff["low"].item() < 9 < diff["high"].item()
    assert "ends above" in verdicts.difference_verdict(diff, "a", "b")
    noisy = scores.assign(score=[10.0, 0.0, 20.0, 1.0, 12.0, 3.0])
    verdict = verdicts.difference_verdict(scoring.difference(noisy, "a", "b"), "a", "b")
    assert "within seed-to-seed variation" in verdict
    one = scoring.difference(scores[scores.seed == 0], "a", "b")
    assert np.isnan(one["low"].item()) and "no conclusion" in verdicts.difference_verdict(one, "a", "b")
    assert "cannot be compared" in verdicts.difference_verdict(scoring.difference(scores, "a", "c"), "a", "c")
    assert verdicts.absent_note(scores, ["a", "c"]).startswith("No usable runs of `c`")


def test_rank_test_counts_pairs_and_gives_the_exact_p_value():
    scores = pd.DataFrame({"task": "T", "label": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                           "score": [10.0, 11.0, 2.5, 1.0, 2.0, 3.0]})
    r = scoring.rank_test(scores, "a", "b").iloc[0]
    assert (r.wins, r.pairs) == (8.0, 9)  # 2.5 loses only to 3.0
    assert r.p == pytest.approx(2 / 20)  # of the 20 equally likely splits, 2 have U >= 8
    assert scoring.rank_test(scores, "b", "a").iloc[0].wins == 1.0
    assert scoring.rank_test(scores, "a", "c").empty


def test_bootstrap_intervals_are_the_same_on_every_call_with_enough_seeds():
    # rliable resamples from numpy's global generator: with 5 seeds (unlike 2) a stray global state would show
    rng = np.random.default_rng(3)
    scores = pd.DataFrame({"task": "T", "label": ["td3"] * 5 + ["ne"] * 5, "seed": list(range(5)) * 2,
                           "score": np.r_[rng.normal(100, 10, 5), rng.normal(120, 30, 5)]})
    first = scoring.aggregate(scores, reps=300, seed=0)
    np.random.seed(99)
    state = np.random.get_state()
    pd.testing.assert_frame_equal(first, scoring.aggregate(scores, reps=300, seed=0))
    assert np.array_equal(np.random.get_state()[1], state[1])  # the caller's global state is left alone
    assert not first.equals(scoring.aggregate(scores, reps=300, seed=1))
    poi = scoring.probability_of_improvement(scores, "ne", ["td3"], reps=300, seed=0)
    pd.testing.assert_frame_equal(poi, scoring.probability_of_improvement(scores, "ne", ["td3"], reps=300, seed=0))


def test_axis_labels_wrap_between_words_but_keep_a_no_break_group_whole():
    assert plotting.axis_label("pruned") == "connections pruned per\nevaluation window\n(actor\u00a0+\u00a0critic)"
    assert plotting.axis_label("critic_dormant_0.1", width=20) == "critic: share of\ndormant units (ReDo\nscore <= 0.1)"
