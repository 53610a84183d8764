"""Budget calibration: window means, the comparison at B and at the end, ranking changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mod_arch_core import calibration, results


def synthetic_curves(step: int = 100, end: int = 800) -> pd.DataFrame:
    """Two settings, one task, two models, two runs each; perf = a / (1 + iteration / scale)."""
    rows = []
    shapes = {"modular": (1.0, 100.0), "gt-modular": (2.0, 10.0)}  # gt: slow start, faster later
    for setting in ("mlp", "rnn"):
        for model, (a, scale) in shapes.items():
            for seed in (0, 1):
                for it in range(0, end + 1, step):
                    perf = a / (1.0 + it / scale) + 0.001 * seed
                    rows.append(
                        dict(setting=setting, task="regression", model=model, num_rules=4,
                             encoder_dim=8, dim=32, search_version=np.nan, data_seed=0, seed=seed,
                             iterations=end, iteration=it, perf=perf, perf_val=perf,
                             config_hash=f"{setting}{model}")
                    )  # fmt: skip
    return results.conform(pd.DataFrame(rows), results.CURVE_COLUMNS)


def test_window_means_average_the_last_evaluations_up_to_a_step() -> None:
    curves = synthetic_curves()
    means = calibration.window_means(curves, 250, window=2)
    row = means[(means.setting == "mlp") & (means.model == "modular") & (means.seed == 0)]
    assert row["perf"].item() == pytest.approx((1 / 2 + 1 / 3) / 2)  # iterations 100 and 200
    with pytest.raises(ValueError, match="end before step 900"):
        calibration.window_means(curves, 900)
    with pytest.raises(ValueError, match="window must be >= 1"):
        calibration.window_means(curves, 100, window=0)


def test_budget_comparison_ranks_at_the_budget_and_at_the_end() -> None:
    curves = synthetic_curves()
    table = calibration.budget_comparison(curves, {"mlp": 100, "rnn": 100}, window=1)
    mlp = table[table.setting == "mlp"].set_index("model")
    assert set(table["longer"]) == {800}
    # at 100: modular 0.5, gt 2/11 = 0.18; at 800: modular 1/9 = 0.11, gt 2/81 = 0.025
    assert (
        mlp.loc["gt-modular", "rank_at_budget"] == 1 and mlp.loc["modular", "rank_at_budget"] == 2
    )
    assert mlp.loc["modular", "improvement"] == pytest.approx(1 - (1 / 9 + 0.0005) / (0.5 + 0.0005))
    changes = calibration.ranking_changes(table)
    assert changes["order_same"].all() and changes["winner_same"].all()
    assert "gt-modular > modular" in calibration.describe(table, "mlp", "regression")
    with pytest.raises(ValueError, match="no budget for setting 'rnn'"):
        calibration.budget_comparison(curves, {"mlp": 100})
    with pytest.raises(ValueError, match="not after the budget 800"):
        calibration.budget_comparison(curves, {"mlp": 800, "rnn": 100})


def test_ranking_change_is_detected() -> None:
    comparison = pd.DataFrame(
        dict(setting="mlp", task="regression", model=["a", "b"], budget=10, longer=20,
             perf_at_budget=[1.0, 2.0], perf_at_longer=[1.0, 0.5], improvement=[0.0, 0.75],
             rank_at_budget=[1, 2], rank_at_longer=[2, 1])
    )  # fmt: skip
    (row,) = calibration.ranking_changes(comparison).to_dict("records")
    assert row["order_at_budget"] == "a > b" and row["order_at_longer"] == "b > a"
    assert not row["winner_same"] and not row["order_same"]


def test_search_versions_are_judged_apart() -> None:
    """MHA's two search versions are two tasks: each gets its own ranks and its own sentence."""
    curves = synthetic_curves()
    mha = curves[curves.setting == "rnn"].assign(setting="mha", search_version=1.0)
    flipped = mha.assign(search_version=2.0)
    flipped["model"] = flipped["model"].map({"modular": "gt-modular", "gt-modular": "modular"})
    both = pd.concat([curves, mha, flipped], ignore_index=True)
    table = calibration.budget_comparison(both, {"mlp": 100, "rnn": 100, "mha": 100}, window=1)
    assert len(table) == 2 * 4, "two models x (mlp, rnn, mha v1, mha v2)"
    v1 = table[(table.setting == "mha") & (table.search_version == 1)].set_index("model")
    v2 = table[(table.setting == "mha") & (table.search_version == 2)].set_index("model")
    assert v1.loc["gt-modular", "rank_at_budget"] == 1 and v2.loc["modular", "rank_at_budget"] == 1
    changes = calibration.ranking_changes(table)
    assert len(changes) == 4 and set(changes["search_version"].dropna()) == {1.0, 2.0}
    assert "gt-modular > modular" in calibration.describe(
        table, "mha", "regression", search_version=1
    )
    assert "modular > gt-modular" in calibration.describe(
        table, "mha", "regression", search_version=2
    )
    with pytest.raises(ValueError, match="pass search_version"):
        calibration.describe(table, "mha", "regression")


def test_learned_at_the_budget_and_at_the_end() -> None:
    curves = synthetic_curves()
    table = calibration.learned_at(curves, {"mlp": 100, "rnn": 400}, window=1).set_index("setting")
    # gt-modular: 2 / (1 + it / 10): untrained 2.0005, at 100 0.18, at 400 0.049
    np.testing.assert_allclose(table.loc["mlp", "untrained"], 2.0005)
    np.testing.assert_allclose(table.loc["mlp", "threshold"], 0.5 * 2.0005)
    assert table["learned_at_budget"].all() and table["learned_at_end"].all()
    np.testing.assert_allclose(table.loc["rnn", "at_budget"], 2 / 41 + 0.0005)
    slow = curves.assign(perf=np.where(curves["iteration"] == 0, 2.0, 1.5))
    none = calibration.learned_at(slow, {"mlp": 100, "rnn": 100}, window=1)
    assert not none["learned_at_end"].any()
    with pytest.raises(ValueError, match="no runs of 'monolithic'"):
        calibration.learned_at(curves, {"mlp": 100, "rnn": 100}, model="monolithic")


def recipe_runs(curves: pd.DataFrame, budget: int, factor: dict[str, float]) -> pd.DataFrame:
    """Runs "trained to ``budget`` with another recipe": each run's curve value at the budget
    times ``factor[model]``, as ``last`` rows of a runs table (plus an unrelated R = 8 cell)."""
    at = curves[curves["iteration"] == budget].copy()
    at["perf"] = at["perf"] * at["model"].map(factor)
    extra = at.assign(num_rules=8)  # a cell the calibration did not train: ignored
    rows = pd.concat([at, extra], ignore_index=True).assign(checkpoint="last", iterations=budget)
    return rows.drop(columns=["iteration", "perf_val"])


def test_recipe_comparison_pairs_the_calibration_cells_at_the_reference_budget() -> None:
    curves = synthetic_curves()
    # at 200: modular 1/3, gt-modular 2/21 = 0.095; the recipe makes modular 4x better: 0.083
    runs = recipe_runs(curves, 200, {"modular": 0.25, "gt-modular": 1.0})
    table = calibration.recipe_comparison(curves, runs, window=1)
    assert set(table["num_rules"]) == {4} and set(table["budget"]) == {200}
    mlp = table[table.setting == "mlp"].set_index("model")
    assert mlp.loc["modular", "perf_constant"] == pytest.approx(1 / 3 + 0.0005)
    assert mlp.loc["modular", "perf_recipe"] == pytest.approx((1 / 3 + 0.0005) / 4)
    assert mlp.loc["gt-modular", "rank_constant"] == 1 and mlp.loc["modular", "rank_recipe"] == 1
    assert (table["runs_constant"] == 2).all() and (table["runs_recipe"] == 2).all()
    changes = calibration.recipe_changes(table)
    assert not changes["winner_same"].any() and not changes["order_same"].any()
    assert changes["order_constant"].iloc[0] == "gt-modular > modular"
    assert changes["gap_recipe"].iloc[0] == pytest.approx(
        (2 / 21 + 0.0005) / ((1 / 3 + 0.0005) / 4) - 1
    )
    same = calibration.recipe_changes(
        calibration.recipe_comparison(curves, recipe_runs(curves, 200, {"modular": 0.9, "gt-modular": 0.9}), window=1)
    )  # fmt: skip
    assert same["winner_same"].all() and same["median_change"].to_numpy() == pytest.approx(-0.1)
    assert calibration.describe_recipe(same) == "The winner is the same in 2 of 2 cells."
    # the two seeds differ by 0.001, far less than the gap: a change beyond seed noise
    assert changes["separated_constant"].all() and changes["separated_recipe"].all()
    text = calibration.describe_recipe(changes)
    assert text.startswith("The winner is the same in 0 of 2 cells. In 2 cells the recipe changes")
    assert "MLP regression, R = 4, E = 8 / D = 32: gt-modular at the constant rate" in text
    tie = calibration.recipe_changes(
        calibration.recipe_comparison(curves, recipe_runs(curves, 200, {"modular": 0.2858, "gt-modular": 1.0}), window=1)
    )  # fmt: skip
    assert not tie["separated_recipe"].any()  # 0.0954 vs 0.0954: within the seeds' spread
    assert "changes a winner that was ahead beyond seed noise" in calibration.describe_recipe(tie)
    noisy = tie.assign(separated_constant=False)  # a near tie under both recipes
    assert "within seed noise of each other" in calibration.describe_recipe(noisy)
    with pytest.raises(ValueError, match=r"non-empty table of calibration\.recipe_changes"):
        calibration.describe_recipe(tie.iloc[:0])


def test_recipe_comparison_rejects_what_it_cannot_compare() -> None:
    curves = synthetic_curves()
    runs = recipe_runs(curves, 200, {"modular": 1.0, "gt-modular": 1.0})
    with pytest.raises(ValueError, match="checkpoint must be one of \\['last'\\], got 'best'"):
        calibration.recipe_comparison(curves, runs, checkpoint="best")
    mixed = runs.copy()
    mixed.loc[mixed.index[0], "iterations"] = 400
    with pytest.raises(ValueError, match="mix iteration budgets within a setting"):
        calibration.recipe_comparison(curves, mixed)
    with pytest.raises(ValueError, match="share no cell"):
        calibration.recipe_comparison(curves, runs.assign(num_rules=16))
    with pytest.raises(ValueError, match="share no setting"):
        calibration.recipe_comparison(curves, runs.assign(setting="mha"))
    with pytest.raises(ValueError, match="end before step 900"):
        calibration.recipe_comparison(curves, runs.assign(iterations=900))
    with pytest.raises(ValueError, match="lacks columns \\['checkpoint'\\]"):
        calibration.recipe_comparison(curves, runs.drop(columns="checkpoint"))


def test_describe_says_worsens_when_the_models_got_worse() -> None:
    curves = synthetic_curves()
    rising = curves.assign(perf=lambda f: 1.0 + f["iteration"] / 8000)  # 10% worse by the end
    table = calibration.budget_comparison(rising, {"mlp": 100, "rnn": 100}, window=1)
    text = calibration.describe(table, "mlp", "regression")
    assert "the median model worsens by 9%" in text and "-" not in text.split("(")[0]
    flat = calibration.budget_comparison(curves.assign(perf=1.0), {"mlp": 100, "rnn": 100})
    assert "stays within 1%" in calibration.describe(flat, "mlp", "regression")
