"""Analysis helpers on hand-made evaluation rows."""

import numpy as np
import pandas as pd
import pytest

from nelib.report import analysis


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
    scores = analysis.final_scores(rows(), last=2)
    got = scores.set_index(["label", "seed"])["score"].to_dict()
    assert got == {("ne", 0): 200.0, ("ne", 1): 205.0, ("td3", 0): 100.0, ("td3", 1): 105.0}
    (line,) = analysis.compare(scores, "ne", "td3")
    assert line.startswith("T: ne 202 vs td3 102 (+98%, higher; 2 seed(s) each)")
    (trend,) = analysis.trend(rows(), "critic_active_ratio", "ne", early=1, late=1)
    assert trend == "T (ne): critic active-neuron ratio fell from 1.000 (at 0k steps) to 0.800 (at 2k steps)"
    (trend,) = analysis.trend(rows(), "critic_active_ratio", "ne", unit="frames")
    assert trend.endswith("fell from 0.950 (frames 0k-1k) to 0.850 (frames 1k-2k)")


def test_normalised_scores_layout_and_forgetting():
    scores = analysis.final_scores(rows(), last=2)
    norm = analysis.normalized_scores(scores, "td3")
    assert norm["td3"].shape == (2, 1) and norm["td3"].mean() == pytest.approx(1.0)
    np.testing.assert_allclose(norm["ne"][:, 0], [200 / 102.5, 205 / 102.5])
    # a label missing from a task takes that task out of every label's aggregate
    more = pd.concat([scores, pd.DataFrame({"task": "U", "label": ["td3", "td3", "ne"], "seed": [0, 1, 0],
                                            "score": [10.0, 30.0, 40.0]})], ignore_index=True)
    assert analysis.common_tasks(more) == ["T", "U"]
    both = analysis.normalized_scores(more, "td3")
    np.testing.assert_allclose(both["ne"], [[200 / 102.5, 2.0]])  # ne's seed 1 has no run on U
    assert analysis.common_tasks(more[~((more.task == "U") & (more.label == "ne"))]) == ["T"]
    drop = analysis.forgetting(rows())
    assert (drop["drop"] == 0).all()


def test_sensitivity_table_parses_variant_labels():
    scores = pd.DataFrame({"task": "T", "seed": 0, "score": [1.0, 2.0, 3.0],
                           "label": ["ne", "ne@rate0.002", "ne@density0.1"]})
    table = analysis.sensitivity_table(scores, {"rate": 0.008, "density": 0.2})
    assert set(map(tuple, table[["param", "value", "default"]].values.tolist())) == {
        ("rate", 0.008, True), ("density", 0.2, True), ("rate", 0.002, False), ("density", 0.1, False)}


def test_sensitivity_plot_with_one_task():
    import matplotlib

    matplotlib.use("Agg")
    scores = pd.DataFrame({"task": "T", "seed": [0, 1, 0], "score": [1.0, 2.0, 3.0],
                           "label": ["ne", "ne", "ne@rate0.002"]})
    fig = analysis.sensitivity_plot(analysis.sensitivity_table(scores, {"rate": 0.008}))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.002", "0.008\n(default)"]
    two = pd.concat([scores, scores.assign(task="U")], ignore_index=True)
    fig = analysis.sensitivity_plot(analysis.sensitivity_table(two, {"rate": 0.008}))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["T", "U"]


def test_sensitivity_plot_is_the_same_on_every_call():
    # the seed dots are jittered; a fixed jitter keeps `make figures` from rewriting unchanged figures
    import matplotlib

    matplotlib.use("Agg")
    scores = pd.DataFrame({"task": "T", "seed": [0, 1, 2, 0, 1, 2], "score": [1.0, 2.0, 3.0, 2.0, 3.0, 4.0],
                           "label": ["ne"] * 3 + ["ne@rate0.002"] * 3})
    table = analysis.sensitivity_table(scores, {"rate": 0.008})
    offsets = []
    for _ in range(2):
        np.random.uniform(size=7)  # whatever drew from numpy's global RNG before
        fig = analysis.sensitivity_plot(table)
        offsets.append(np.concatenate([c.get_offsets()[:, 0] for c in fig.axes[0].collections]))
    assert np.array_equal(offsets[0], offsets[1])


def test_first_divergence_brackets_where_two_arms_part():
    df = rows()
    same = df[df["label"] == "td3"].assign(label="td3-copy")
    # seed 0 parts at step 2000, seed 1 never
    same.loc[(same["seed"] == 0) & (same["step"] == 2000), "return_mean"] += 1.0
    got = analysis.first_divergence(pd.concat([df, same]), "td3", "td3-copy")
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
    spans = analysis.visit_spans(df)
    assert spans["task"].tolist() == ["A-v5", "B-v5", "A-v5", "B-v5"]
    assert spans["start"].tolist() == [0.0, 25.0, 40.0, 60.0]  # stage 0 ends at 20 or 30: median 25
    assert spans["end"].tolist() == [25.0, 40.0, 60.0, 80.0]
    visits = analysis.visit_returns(df)
    assert visits["visit"].tolist().count(2) == 8 and set(visits["visit"]) == {1, 2}
    got = analysis.revisit_changes(visits)
    # task A: stage 0 -> 100.5 for both; stage 2 -> 300.5 (td3) and 350.5 (ne); task B: 200.5 -> 400.5/450.5
    assert got[["task", "label"]].values.tolist() == [["A-v5", "ne"], ["A-v5", "td3"], ["B-v5", "ne"],
                                                      ["B-v5", "td3"]]
    assert got["change"].tolist() == [250.0, 200.0, 250.0, 200.0]
    assert got["first"].tolist() == [100.5, 100.5, 200.5, 200.5]


def test_cyclic_figures_shade_each_visit_and_keep_one_legend():
    import matplotlib.pyplot as plt

    df = cyclic_rows()
    fig = analysis.cyclic_curves(df, ["return_mean", "critic_active_ratio"])
    top = fig.axes[0]
    assert [t.get_text() for t in top.texts] == ["A", "B", "A", "B"]
    assert len(top.patches) >= 4 and len(fig.legends) == 1 and top.get_legend() is None
    fig2 = analysis.visit_return_grid(analysis.visit_returns(df), labels=["td3", "ne", "reset"])
    assert [ax.get_title() for ax in fig2.axes] == ["A-v5", "B-v5"]
    assert [t.get_text() for t in fig2.legends[0].get_texts()] == ["td3", "ne"]  # absent labels dropped
    analysis.visit_return_grid(analysis.visit_returns(df[df.label == "ne"]))  # one label: nothing to dodge
    plt.close("all")


def test_bootstrap_intervals_depend_on_their_seed_only():
    scores = analysis.final_scores(rows(), last=2)
    np.random.seed(123)
    a = analysis.aggregate(scores, reps=200, seed=0)
    np.random.seed(7)  # numpy's global RNG does not matter
    pd.testing.assert_frame_equal(a, analysis.aggregate(scores, reps=200, seed=0))
    b = analysis.probability_of_improvement(scores, "ne", ["td3"], reps=200, seed=0)
    pd.testing.assert_frame_equal(b, analysis.probability_of_improvement(scores, "ne", ["td3"], reps=200, seed=0))
    assert b["point"].item() == 1.0  # both ne seeds above both td3 seeds
