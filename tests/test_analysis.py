"""Tidy analysis: checkpoints, Random rows, long tables, bootstrap intervals, ranking, claims.

The claim functions are checked on synthetic tables built so that each verdict is known in advance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mod_arch_core import analysis, metrics, results
from mod_arch_core.validation import PAPER_MODELS

MODULAR = ("gt-modular", "modular-op", "modular")


def make_runs(
    perf: Callable[[str, str, int, int], float],
    metric: Callable[[str, str, int, int], float] | None = None,
    *,
    settings: tuple[str, ...] = ("mlp", "rnn"),
    tasks: tuple[str, ...] = ("regression", "classification"),
    rules: tuple[int, ...] = (2, 4, 8, 16),
    data_seeds: tuple[int, ...] = (0, 1),
    seeds: tuple[int, ...] = (0, 1, 2),
    models: tuple[str, ...] = PAPER_MODELS,
) -> pd.DataFrame:
    """A schema-valid runs table: ``perf(model, task, R, k)`` and ``metric(model, name, R, k)``.

    ``k`` counts the runs of a (model, task, R) group, so callers can add deterministic,
    zero-mean noise. OoD performance is twice the ID one; both checkpoints carry the same numbers.
    """
    rows = []
    counters: dict[tuple, int] = {}
    for setting, task, model, r, d, s in product(settings, tasks, models, rules, data_seeds, seeds):
        key = (model, task, r)
        k = counters[key] = counters.get(key, -1) + 1
        value = perf(model, task, r, k)
        row = {
            "setting": setting, "task": task, "model": model, "num_rules": r, "encoder_dim": 8,
            "dim": 32, "search_version": np.nan, "data_seed": d, "seed": s, "iterations": 100,
            "n_params": 1000 + 10 * r, "perf": value, "perf_ood": 2 * value, "best_iteration": 100,
            "diverged_at": -1, "wall_seconds": 1.0, "stacked_runs": 6, "config_hash": "h",
            "profile": "custom", "package_version": "0", "git_commit": "c", "torch_version": "t",
            "device": "cpu", "hardware": "cpu", "activation_matrix": "",
        }  # fmt: skip
        if setting != "mlp":
            for length in (3, 5, 10, 20, 30):
                row[f"perf_{length}"] = value * length / 10
                row[f"perf_ood_{length}"] = 2 * value * length / 10
        if model != "monolithic":
            for name in analysis.METRICS:
                row[name] = metric(model, name, r, k) if metric else 0.0
            row["activation_matrix"] = json.dumps((np.eye(r) / r).tolist())
        for checkpoint in ("last", "best"):
            rows.append({**row, "checkpoint": checkpoint})
    return results.validate_runs(pd.DataFrame(rows))


def make_curves(
    runs: pd.DataFrame, curve: Callable[[str, float, int], float], points: int = 11
) -> pd.DataFrame:
    """Curves for every run of ``runs``: ``curve(model, fraction, k)`` at ``points`` evaluations."""
    last = runs[runs["checkpoint"] == "last"]
    rows = []
    for k, run in enumerate(last.itertuples(index=False)):
        for t in np.linspace(0.0, 1.0, points):
            value = curve(run.model, float(t), k)
            row = {key: getattr(run, key) for key in results.RUN_KEYS}
            rows.append({**row, "iteration": round(t * 100), "perf": value, "perf_val": value})
    return results.validate_curves(pd.DataFrame(rows).assign(config_hash="h"))


def noise(k: int, scale: float = 0.01) -> float:
    """Deterministic zero-mean noise over k = 0, 1, 2, ... (period 4)."""
    return scale * (-1.5, -0.5, 0.5, 1.5)[k % 4]


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def test_select_checkpoint() -> None:
    runs = make_runs(lambda m, t, r, k: 1.0)
    assert set(analysis.select_checkpoint(runs)["checkpoint"]) == {"last"}
    assert len(analysis.select_checkpoint(runs, "pooled")) == len(runs)
    with pytest.raises(ValueError, match="checkpoint must be one of last, best, pooled; got 'x'"):
        analysis.select_checkpoint(runs, "x")
    with pytest.raises(ValueError, match="no rows with checkpoint 'best'"):
        analysis.select_checkpoint(runs[runs["checkpoint"] == "last"], "best")


def test_random_baseline_rows() -> None:
    runs = make_runs(lambda m, t, r, k: 1.0, rules=(2, 4))
    table = analysis.add_random_baseline(runs, num_draws=100)
    random = table[table["model"] == "random"]
    # one row per setting, task, R, capacity and checkpoint (spec §5.5)
    assert len(random) == 2 * 2 * 2 * 2
    by_r = random.groupby("num_rules")[list(analysis.METRICS)].first()
    np.testing.assert_allclose(by_r["alignment"], [0.5, 0.75])
    np.testing.assert_allclose(by_r["adaptation"], [0.25666, 0.30071], atol=5e-6)
    assert (by_r[["collapse_avg", "collapse_worst"]] == 0).all().all()
    assert random["perf"].isna().all()
    again = analysis.add_random_baseline(table, num_draws=100)
    assert (again["model"] == "random").sum() == len(random), "existing Random rows are replaced"
    assert analysis.adaptation_draws(runs) == 100, "custom profile: the paper's 100 draws"


def test_long_tables() -> None:
    runs = analysis.select_checkpoint(make_runs(lambda m, t, r, k: float(r)))
    perf = analysis.performance_long(runs)
    assert set(perf["panel"]) == set(analysis.PANELS)
    assert len(perf) == 2 * len(runs)
    ood = perf[perf["split"] == "OoD"]["value"].to_numpy()
    np.testing.assert_allclose(ood, 2 * perf[perf["split"] == "ID"]["value"].to_numpy())
    per_length = analysis.performance_per_length(runs)
    assert set(per_length["setting"]) == {"rnn"}, "MLP has no sequences"
    assert sorted(per_length["length"].unique()) == [3, 5, 10, 20, 30]
    long = analysis.metrics_long(runs)
    assert set(long["model"]) == {*MODULAR, "random"}, "Monolithic out, Random in"
    assert set(long["metric"]) == set(analysis.METRICS)
    with pytest.raises(ValueError, match="unknown metrics"):
        analysis.metrics_long(runs, ["accuracy"])


def test_normalised_curves_and_areas() -> None:
    runs = make_runs(lambda m, t, r, k: 1.0, settings=("mlp",), tasks=("regression",), rules=(2,))
    curves = make_curves(runs, lambda m, t, k: 2.0 - t)  # from 2 to 1: relative 1 -> 0.5
    table = analysis.normalised_curves(curves)
    assert table["fraction"].min() == 0.0 and table["fraction"].max() == 1.0
    assert table["relative"].max() == pytest.approx(1.0)
    areas = analysis.curve_areas(curves)
    np.testing.assert_allclose(areas["area"], 0.75)


def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 1.0, 200)
    mean, low, high = analysis.bootstrap_ci(x)
    assert low < mean < high and mean == pytest.approx(x.mean())
    assert (low, high) == analysis.bootstrap_ci(x)[1:], "seeded: identical intervals"
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.25)
    wide = analysis.bootstrap_ci(x[:20])
    assert wide[2] - wide[1] > high - low
    assert analysis.bootstrap_ci([np.nan, 2.0]) == (2.0, 2.0, 2.0)
    assert all(np.isnan(analysis.bootstrap_ci([np.nan])))
    with pytest.raises(ValueError, match="confidence must lie in"):
        analysis.bootstrap_ci(x, confidence=95)


def test_summarise_groups_independently() -> None:
    df = pd.DataFrame({"g": ["a"] * 10 + ["b"] * 10, "value": np.arange(20.0)})
    both = analysis.summarise(df, ["g"])
    alone = analysis.summarise(df[df["g"] == "b"], ["g"])
    assert list(both.columns) == ["g", "mean", "ci_low", "ci_high", "n"]
    pd.testing.assert_frame_equal(both.iloc[[1]].reset_index(drop=True), alone)


def test_relative_gap() -> None:
    np.testing.assert_allclose(analysis.relative_gap([3.0, 0.0, 1.0], [1.0, 0.0, 3.0]), [1, 0, -1])
    assert np.isnan(analysis.relative_gap(np.nan, 1.0))


# --------------------------------------------------------------------------------------
# Ranking (spec §5.6, §9.1)
# --------------------------------------------------------------------------------------


def test_ranking_fixed_and_as_released() -> None:
    order = {"gt-modular": 1.0, "modular-op": 2.0, "modular": 3.0, "monolithic": 4.0}
    runs = make_runs(lambda m, t, r, k: order[m], rules=(2, 4), data_seeds=(0,))
    fixed = analysis.ranking(runs)
    assert fixed.attrs["num_settings"] == 2 * 2 * 2
    assert fixed.loc["gt-modular", "wins"] == 8
    released = analysis.ranking(runs, as_released=True)
    # the RNN classification settings (2 of 8) crown the worst model, Monolithic
    assert released.loc["gt-modular", "wins"] == 6
    assert released.loc["monolithic", "wins"] == 2
    sub = analysis.ranking(runs, contest="sub")
    assert sub.loc["modular", "wins"] == 8
    table = analysis.ranking_table(runs)
    assert set(table["direction"]) == {"fixed", "as released"}
    assert set(table["metric"]) == {"ID", "OoD"}
    with pytest.raises(ValueError, match="contest must be 'all' or 'sub'"):
        analysis.ranking(runs, contest="half")


def test_ties_are_counted_and_go_to_the_first_model() -> None:
    runs = make_runs(lambda m, t, r, k: 0.0, rules=(2,), data_seeds=(0,))
    ranked = analysis.ranking(runs)
    assert ranked.attrs["ties"] == ranked.attrs["num_settings"] == 4
    assert ranked.loc["gt-modular", "wins"] == 4
    assert analysis.ranking(runs, contest="sub").loc["monolithic", "wins"] == 4


# --------------------------------------------------------------------------------------
# Claims (spec §7), on tables whose verdict is known
# --------------------------------------------------------------------------------------


def test_combine_verdicts() -> None:
    H, N, I = analysis.HOLDS, analysis.DOES_NOT_HOLD, analysis.INCONCLUSIVE
    assert analysis.combine_verdicts([H, H]) == analysis.HOLDS
    assert analysis.combine_verdicts([H, N]) == analysis.PARTLY
    assert analysis.combine_verdicts([H, I]) == analysis.PARTLY
    assert analysis.combine_verdicts([N, I]) == analysis.DOES_NOT_HOLD
    assert analysis.combine_verdicts([I, I]) == analysis.INCONCLUSIVE
    assert analysis.combine_verdicts([]) == analysis.INCONCLUSIVE


def _specialised_perf(m: str, t: str, r: int, k: int) -> float:
    """GT best, then Modular-op, Modular, Monolithic; the advantage grows with R."""
    step = {"gt-modular": 0.12, "modular-op": 0.1, "modular": 0.05, "monolithic": 0.0}[m]
    return 1.0 - step * np.log2(r) / 4 + noise(k, 0.002)


def test_claim_1_holds_and_fails() -> None:
    good = analysis.claim_1_ranking(make_runs(_specialised_perf))
    assert good.verdict == analysis.HOLDS, good.reason
    assert good.measured["gt_share"] == 1.0
    assert good.measured["modular_sub_share"] == 1.0
    worst_first = {"gt-modular": 4.0, "modular-op": 3.0, "modular": 2.0, "monolithic": 1.0}
    bad = analysis.claim_1_ranking(make_runs(lambda m, t, r, k: worst_first[m]))
    assert bad.verdict == analysis.DOES_NOT_HOLD, bad.reason
    assert "0 of 2 parts hold" in bad.reason


def test_claim_2_benefit_grows_with_rules() -> None:
    good = analysis.claim_2_benefit_grows_with_rules(make_runs(_specialised_perf))
    assert good.verdict == analysis.HOLDS, good.reason
    assert (
        good.measured["gt_modular_advantage_large_r"]
        > good.measured["gt_modular_advantage_small_r"]
    )

    def shrinking(m: str, t: str, r: int, k: int) -> float:
        return 1.0 if m == "monolithic" else 0.5 + 0.1 * np.log2(r) / 4 + noise(k, 0.002)

    bad = analysis.claim_2_benefit_grows_with_rules(make_runs(shrinking))
    assert bad.verdict == analysis.DOES_NOT_HOLD, bad.reason


def test_claim_3_modular_falls_short() -> None:
    good = analysis.claim_3_modular_falls_short(make_runs(_specialised_perf))
    assert good.verdict == analysis.HOLDS, good.reason
    alike = analysis.claim_3_modular_falls_short(make_runs(lambda m, t, r, k: 1.0 + noise(k)))
    assert alike.verdict == analysis.INCONCLUSIVE, alike.reason


def _metric(levels: dict[str, float], slopes: dict[str, float]) -> Callable:
    def value(m: str, name: str, r: int, k: int) -> float:
        return float(np.clip(levels[m] + slopes[m] * np.log2(r) + noise(k, 0.004), 0.0, 1.0))

    return value


def test_claim_4_collapse() -> None:
    paper_like = _metric(
        {"gt-modular": 0.0, "modular-op": 0.05, "modular": 0.1},
        {"gt-modular": 0.0, "modular-op": 0.05, "modular": 0.08},
    )
    good = analysis.claim_4_collapse(make_runs(lambda *a: 1.0, lambda m, n, r, k: (
        0.0 if m == "gt-modular" else paper_like(m, n, r, k)
    )))  # fmt: skip
    assert good.verdict == analysis.HOLDS, good.reason
    # the oracle collapses, the learned routers never do: every part fails or is undecided
    opposite = _metric(
        {"gt-modular": 0.5, "modular-op": 0.0, "modular": 0.0},
        {"gt-modular": 0.0, "modular-op": 0.0, "modular": 0.0},
    )
    bad = analysis.claim_4_collapse(make_runs(lambda *a: 1.0, opposite))
    assert bad.verdict == analysis.DOES_NOT_HOLD, bad.reason


def test_claim_5_specialisation() -> None:
    def alignment(gap: float) -> Callable:
        def value(m: str, n: str, r: int, k: int) -> float:
            if m == "gt-modular":
                return 0.0
            base = 0.2 + 0.1 * np.log2(r) + noise(k, 0.004)
            return base - (gap if m == "modular-op" else 0.0)

        return value

    good = analysis.claim_5_specialisation(make_runs(lambda *a: 1.0, alignment(0.02)))
    assert good.verdict == analysis.HOLDS, good.reason
    much_better = analysis.claim_5_specialisation(make_runs(lambda *a: 1.0, alignment(0.15)))
    assert much_better.verdict == analysis.PARTLY
    assert much_better.parts[-1].verdict == analysis.DOES_NOT_HOLD
    assert "more than marginally" in much_better.parts[-1].reason


def test_claim_6_training_speed() -> None:
    rates = {"gt-modular": 8.0, "modular-op": 5.0, "modular": 2.0, "monolithic": 3.0}
    final = {"gt-modular": 0.1, "modular-op": 0.2, "modular": 0.4, "monolithic": 0.3}
    runs = make_runs(lambda m, t, r, k: final[m] + noise(k, 0.001))
    curves = make_curves(
        runs, lambda m, t, k: final[m] + (1 - final[m]) * np.exp(-rates[m] * t) + noise(k, 0.001)
    )
    good = analysis.claim_6_training_speed(runs, curves)
    assert good.verdict == analysis.HOLDS, good.reason
    assert good.measured["gt_modular_area"] < good.measured["modular_area"]
    flat_runs = make_runs(lambda m, t, r, k: 0.5 + noise(k))
    flat = make_curves(flat_runs, lambda m, t, k: 1.0 - 0.5 * t + noise(k))
    assert analysis.claim_6_training_speed(flat_runs, flat).verdict == analysis.INCONCLUSIVE


def test_too_few_units_are_inconclusive() -> None:
    runs = make_runs(_specialised_perf, settings=("mlp",), tasks=("regression",), rules=(2, 4))
    claim = analysis.claim_2_benefit_grows_with_rules(runs)
    assert claim.parts[0].verdict == analysis.INCONCLUSIVE
    assert "fewer than 3 units" in claim.parts[0].reason


def test_all_claims_table() -> None:
    runs = make_runs(_specialised_perf, lambda m, n, r, k: 0.0 if m == "gt-modular" else 0.3)
    curves = make_curves(runs, lambda m, t, k: 1.0 - 0.5 * t)
    claims = analysis.all_claims(runs, curves)
    assert [c.number for c in claims] == [1, 2, 3, 4, 5, 6]
    table = analysis.claims_table(claims)
    assert list(table.index) == [1, 2, 3, 4, 5, 6]
    assert set(table["verdict"]) <= set(analysis.VERDICTS)
    for claim in claims:
        assert claim.reason.startswith(f"{sum(p.verdict == 'holds' for p in claim.parts)} of")
        assert len(claim.parts_table()) == len(claim.parts)


def test_claims_refuse_missing_models() -> None:
    runs = make_runs(_specialised_perf, models=("monolithic", "modular"))
    with pytest.raises(ValueError, match="the results lack models"):
        analysis.claim_4_collapse(runs)


# --------------------------------------------------------------------------------------
# Scale, examples, advantage
# --------------------------------------------------------------------------------------


def test_scale_summary_and_table() -> None:
    runs = make_runs(lambda *a: 1.0)
    scale = analysis.scale_summary(runs)
    assert scale["runs"] == 2 * 2 * 4 * 4 * 2 * 3
    assert scale["settings_ranked"] == 2 * 2 * 4 * 2
    assert scale["num_rules"] == (2, 4, 8, 16)
    table = analysis.scale_table(runs)
    assert table.loc["trained runs", "paper"] == "20,000"


def test_scale_of_per_setting_grids() -> None:
    """A profile may give each setting its own R list and capacities: the table says which."""
    runs = make_runs(lambda *a: 1.0)
    wide = runs[runs["setting"] == "mlp"].copy()
    wide[["encoder_dim", "dim"]] = [16, 64]
    big_r = runs[(runs["setting"] == "mlp") & (runs["num_rules"] == 16)].copy()
    big_r["num_rules"] = 32
    runs = pd.concat([runs, wide, big_r], ignore_index=True)
    scale = analysis.scale_summary(runs)
    assert scale["num_rules"] == (2, 4, 8, 16, 32)
    assert scale["num_rules_per_setting"] == {"mlp": (2, 4, 8, 16, 32), "rnn": (2, 4, 8, 16)}
    assert scale["capacities_per_setting"] == {"mlp": 2, "rnn": 1}
    assert scale["capacities"] == 2
    table = analysis.scale_table(runs)
    assert (
        table.loc["numbers of rules R", "these results"] == "MLP 2, 4, 8, 16, 32; RNN 2, 4, 8, 16"
    )
    assert table.loc["capacities (E, D = 4E)", "these results"] == "MLP 2; RNN 1"
    note = analysis.capacity_note(runs, single="one capacity")
    assert note == "Capacities per model and *R*: MLP 2; RNN holds one."
    same = analysis.scale_table(make_runs(lambda *a: 1.0))
    assert same.loc["numbers of rules R", "these results"] == "2, 4, 8, 16"
    assert same.loc["capacities (E, D = 4E)", "these results"] == "1"
    assert (
        analysis.capacity_note(make_runs(lambda *a: 1.0), single="one capacity") == "one capacity"
    )


def test_chapter_tables_show_a_per_setting_list_whole() -> None:
    """pandas cuts text cells at 50 characters; a chapter's Setup cell lifts that."""
    from mod_arch_core.provenance import setup_notebook

    with pd.option_context("display.max_colwidth", 50):
        long = pd.DataFrame({"x": ["MLP 2, 4, 8, 16, 32; MHA 2, 4, 8, 16; RNN 2, 4, 8, 16"]})
        assert "MHA 2, 4, 8, 16; RNN 2, 4...</td>" in long._repr_html_()  # what chapters showed
        setup_notebook(seed=0)  # a chapter's Setup cell: tables show text cells whole
        assert "MHA 2, 4, 8, 16; RNN 2, 4, 8, 16</td>" in long._repr_html_()


def test_search_version_and_runs_per_cell_notes_follow_the_results() -> None:
    """The chapters' sentences on MHA search versions and run weights come from the rows."""
    runs = make_runs(lambda *a: 1.0, settings=("mlp", "mha"))
    mha = runs["setting"] == "mha"
    one = runs.assign(search_version=np.where(mha, 2.0, np.nan))
    both = pd.concat([one, one[mha].assign(search_version=1.0)], ignore_index=True)
    assert analysis.search_version_note(both).startswith(
        "These results hold search versions 1 and 2, pooled in the other figures"
    )
    assert analysis.search_version_note(one).startswith(
        "These results hold search version 2 only, so the other figures pooled nothing"
    )
    assert "no MHA runs" in analysis.search_version_note(one[~mha])
    assert analysis.runs_per_cell_note(one) == (
        "every cell here holds 6 runs, so the two averages are the same number"
    )
    assert analysis.runs_per_cell_note(both) == (
        "MHA cells hold 12 runs and the others as few as 6, so a per-run mean weighs that "
        "setting 2 times as much"
    )
    with pytest.raises(ValueError, match="lacks columns \\['seed'\\]"):
        analysis.runs_per_cell_note(one.drop(columns="seed"))
    with pytest.raises(ValueError, match="setting and search_version columns"):
        analysis.search_version_note(one.drop(columns="search_version"))


def test_learned_summary_counts_cells_per_setting() -> None:
    cells = pd.DataFrame(
        {
            "setting": ["mlp", "mlp", "mha", "rnn"],
            "learned": [True, True, False, True],
            "separated": [True, False, True, True],
        }
    )
    assert analysis.learned_summary(cells) == (
        "GT-Modular has learned in 2 of 2 MLP cells (separating from Monolithic beyond seed "
        "noise in 1), 0 of 1 MHA cells (0) and 1 of 1 RNN cells (1)"
    )
    assert analysis.learned_summary(cells[cells.setting == "rnn"]).endswith("noise in 1)")
    with pytest.raises(ValueError, match=r"non-empty table of analysis\.learned"):
        analysis.learned_summary(cells.iloc[:0])


def test_activation_matrix_examples() -> None:
    runs = make_runs(lambda *a: 1.0, rules=(4,))
    examples = analysis.example_activation_matrices(
        runs, setting="mlp", task="regression", num_rules=4
    )
    assert [k.split(" (")[0] for k in examples] == ["GT-Modular", "Modular-op", "Modular"]
    np.testing.assert_allclose(next(iter(examples.values())), np.eye(4) / 4)
    with pytest.raises(ValueError, match="no run with an activation matrix"):
        analysis.example_activation_matrices(runs, setting="mha", task="regression", num_rules=4)
    one = runs[
        (runs["model"] == "modular") & (runs["setting"] == "mlp") & (runs["task"] == "regression")
    ]
    assert len(analysis.run_activation_matrices(one)) == 2 * 3


def test_advantage_is_positive_for_better_models() -> None:
    edge = analysis.advantage(make_runs(_specialised_perf))
    by_model = edge.groupby("model")["advantage"].mean()
    assert by_model["gt-modular"] > by_model["modular-op"] > by_model["modular"] > 0
    assert "monolithic" not in by_model


# --------------------------------------------------------------------------------------
# Load or compute (results.load_or_run)
# --------------------------------------------------------------------------------------


def test_load_or_run_reports_missing_results(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no results at .*make figures PROFILE=reference"):
        results.load_or_run(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="PROFILE=quick"):
        results.load_or_run(tmp_path / "quick", "book")
    with pytest.raises(FileNotFoundError, match="PROFILE=reference"):
        results.load_or_run(tmp_path / "reference", "book")
    with pytest.raises(ValueError, match="need a profile to run"):
        results.load_or_run(tmp_path, None, ["num_rules=[2]"])
    with pytest.raises(TypeError, match="overrides must be a list"):
        results.load_or_run(tmp_path, "smoke", "num_rules=[2]")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        results.load_or_run(tmp_path, "huge")
    assert results.default_results_path(None) == Path("results/reference")
    assert results.default_results_path("smoke", "../results") == Path("../results/smoke")


def test_load_or_run_refuses_another_profiles_folder(tmp_path: Path) -> None:
    folder = tmp_path / "configs" / "mlp-x"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"profile": "quick", "config_hash": "other"}))
    with pytest.raises(ValueError, match=r"holds results of profile 'quick'.*would mix them"):
        results.load_or_run(tmp_path, "smoke")


def test_load_or_run_runs_then_resumes(tmp_path: Path) -> None:
    grid = ["settings=[mlp]", "tasks=[regression]", "models=[monolithic, modular]", "seeds=[0]"]
    overrides = [*grid, "num_rules=[2]"]
    first = results.load_or_run(tmp_path / "r", "smoke", overrides, executor="serial")
    assert sorted(first.runs["model"].unique()) == ["modular", "monolithic"]
    assert len(first.runs) == 2 * 2, "two models, two checkpoints"
    again = results.load_or_run(tmp_path / "r", "smoke", overrides, executor="serial")
    pd.testing.assert_frame_equal(first.runs, again.runs)
    read = results.load_or_run(tmp_path / "r")
    assert len(read.runs) == len(first.runs)
    assert set(read.runs["profile"]) == {"smoke"}
    # a different grid of the same profile in the same folder: only its own rows come back
    other = results.load_or_run(
        tmp_path / "r", "smoke", [*grid, "num_rules=[4]"], executor="serial"
    )
    assert set(other.runs["num_rules"]) == {4}
    ranked = metrics.rank_models(other.runs, models=metrics.SUB_RANK_ORDER)
    assert ranked.attrs["num_settings"] == 1


# --------------------------------------------------------------------------------------
# Learned-ness (issue 13): which cells can judge the paper
# --------------------------------------------------------------------------------------


def _learning_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """GT-Modular learns regression at R <= 4 only and classification at R = 2 only.

    Regression starts (iteration 0) at 1.0, so the learned threshold is 0.5; Monolithic is far
    from GT-Modular at R = 2 and within noise elsewhere.
    """

    def perf(model: str, task: str, r: int, k: int) -> float:
        if task == "regression":
            gt = 0.4 if r <= 4 else 0.6
            scale = 0.01
        else:
            gt = 20.0 if r == 2 else 30.0
            scale = 1.0
        if model == "gt-modular":
            return gt + noise(k, scale)
        if model == "monolithic":
            return gt + (0.3 * gt if r == 2 else 0.0) + noise(k + 1, scale)
        return gt + 0.1 * gt

    runs = make_runs(perf, settings=("mlp",))
    curves = make_curves(runs, lambda m, t, k: 1.0 if t == 0 else 0.7)
    return runs, curves


def test_learned_decides_each_cell_from_the_thresholds() -> None:
    runs, curves = _learning_runs()
    cells = analysis.learned(runs, curves).set_index(["task", "num_rules"])
    assert len(cells) == 2 * 4, "one row per (setting, task, R)"
    np.testing.assert_allclose(cells.loc["regression", "untrained"], 1.0)
    np.testing.assert_allclose(cells.loc["regression", "threshold"], 0.5)
    np.testing.assert_allclose(cells.loc["classification", "threshold"], 25.0)
    assert cells.loc["regression", "learned"].tolist() == [True, True, False, False]
    assert cells.loc["classification", "learned"].tolist() == [True, False, False, False]
    assert (cells["runs"] == 6).all()
    # a stricter loss threshold turns the learned regression cells into unlearned ones
    strict = analysis.learned(runs, curves, loss_fraction=0.3).set_index(["task", "num_rules"])
    assert not strict.loc["regression", "learned"].any()


def test_learned_separates_beyond_seed_noise() -> None:
    runs, curves = _learning_runs()
    cells = analysis.learned(runs, curves).set_index(["task", "num_rules"])
    assert cells.loc[("regression", 2), "separated"]
    assert not cells.loc[("regression", 4), "separated"]
    assert cells.loc[("regression", 2), "verdict"] == "learned, separates"
    assert cells.loc[("regression", 4), "verdict"] == "learned, within noise"
    assert cells.loc[("regression", 8), "verdict"] == "not learned"
    # the standard error is that of the difference of the two means over runs
    last = runs[(runs["checkpoint"] == "last") & (runs["task"] == "regression")]
    last = last[last["num_rules"] == 4]
    gt = last.loc[last["model"] == "gt-modular", "perf"]
    mono = last.loc[last["model"] == "monolithic", "perf"]
    se = np.sqrt(gt.var(ddof=1) / gt.size + mono.var(ddof=1) / mono.size)
    np.testing.assert_allclose(cells.loc[("regression", 4), "se"], se)
    np.testing.assert_allclose(cells.loc[("regression", 4), "difference"], mono.mean() - gt.mean())


def test_claims_are_judged_only_on_learned_cells() -> None:
    runs, curves = _learning_runs()
    cells = analysis.learned(runs, curves)
    kept = cells[cells["learned"]]
    judged = analysis.all_claims(runs, curves, learned_cells=cells)
    assert {(c.cells_judged, c.cells_total) for c in judged} == {(len(kept), len(cells))}
    table = analysis.claims_table(judged)
    assert (table["cells judged"] == f"{len(kept)} of {len(cells)}").all()
    # the same as judging the learned cells' rows by hand
    keys = list(analysis.LEARNED_KEYS)
    inside = runs.merge(kept[keys], on=keys)
    by_hand = analysis.all_claims(inside, curves.merge(kept[keys], on=keys))
    assert [c.verdict for c in judged] == [c.verdict for c in by_hand]
    assert [c.reason for c in judged] == [c.reason for c in by_hand]
    assert "cells judged" not in analysis.claims_table(by_hand).columns
    assert len(analysis.in_cells(runs, kept)) == len(inside)
    # no cell learned: every claim is inconclusive and says why
    none = analysis.all_claims(runs, curves, learned_cells=cells.assign(learned=False))
    assert {c.verdict for c in none} == {analysis.INCONCLUSIVE}
    assert {c.reason for c in none} == {"no cell has learned"}
    assert list(none[0].parts_table().columns) == list(judged[0].parts_table().columns)


def test_learned_rejects_what_it_cannot_judge() -> None:
    runs, curves = _learning_runs()
    with pytest.raises(ValueError, match="'last' or 'best', got 'pooled'"):
        analysis.learned(runs, curves, checkpoint="pooled")
    with pytest.raises(ValueError, match="no iteration-0 rows of gt-modular"):
        analysis.learned(runs, curves[curves["iteration"] > 0])
    with pytest.raises(ValueError, match="the results lack models"):
        analysis.learned(runs[runs["model"] != "monolithic"], curves)
    with pytest.raises(ValueError, match="loss_fraction must lie in"):
        analysis.learned(runs, curves, loss_fraction=1.5)


def test_learned_caveat_names_exactly_the_cells_that_have_not_learned() -> None:
    runs, curves = _learning_runs()
    cells = analysis.learned(runs, curves)
    text = analysis.learned_caveat(cells, what="Fig. 4")
    assert text.startswith("```{admonition} Not every cell has learned\n")
    assert ":class: warning learned-caveat" in text
    assert "In 5 of the 8 cells (setting, task, R) of Fig. 4" in text
    assert "MLP regression (R = 8, 16)" in text
    assert "MLP classification (R = 4, 8, 16)" in text
    assert "within seed noise" in text and "MLP regression (R = 4)" in text
    assert text.rstrip().endswith("```")
    # restricted to what a figure draws: regression only
    only = analysis.learned_caveat(cells, tasks=["regression"])
    assert "In 2 of the 4 cells" in only and "classification" not in only.split(":", 2)[-1]


def test_learned_caveat_is_empty_when_every_cell_learned_and_separates() -> None:
    runs, curves = _learning_runs()
    cells = analysis.learned(runs, curves)
    good = cells[(cells["task"] == "regression") & (cells["num_rules"] == 2)]
    assert analysis.learned_caveat(good) == ""
    assert analysis.learned_caveat(cells, settings=["rnn"]) == "", "nothing in scope"
    noise_only = cells[(cells["task"] == "regression") & (cells["num_rules"] <= 4)]
    text = analysis.learned_caveat(noise_only)
    assert text.startswith("```{admonition} Some cells are within seed noise")
    assert ":class: note learned-caveat" in text and "MLP regression (R = 4)" in text


def test_learned_judges_search_versions_apart() -> None:
    runs, curves = _learning_runs()
    runs = pd.concat(
        [runs.assign(setting="mha", search_version=v) for v in (1.0, 2.0)], ignore_index=True
    )
    curves = pd.concat(
        [curves.assign(setting="mha", search_version=v) for v in (1.0, 2.0)], ignore_index=True
    )
    pooled = analysis.learned(runs, curves)
    apart = analysis.learned(runs, curves, by=("search_version",))
    assert len(apart) == 2 * len(pooled)
    assert set(apart["search_version"]) == {1.0, 2.0}
    text = analysis.learned_caveat(apart)
    assert "MHA search v1 regression (R = 8, 16)" in text
    assert "MHA search v2 regression (R = 8, 16)" in text


def test_claim_reason_names_the_failing_part_before_an_inconclusive_one() -> None:
    def part(name: str, verdict: str) -> analysis.ClaimPart:
        return analysis.ClaimPart(name, 0.0, -1.0, 1.0, 5, "cells", verdict, f"why {name}")

    parts = [
        part("slope", analysis.INCONCLUSIVE),
        part("at small R", analysis.DOES_NOT_HOLD),
        part("other", analysis.HOLDS),
    ]
    claim = analysis._finish_claim(2, parts, {})
    assert claim.verdict == analysis.PARTLY
    assert "at small R: does not hold (why at small R)" in claim.reason
    assert "slope" not in claim.reason
    only_vague = analysis._finish_claim(2, [part("slope", analysis.INCONCLUSIVE)], {})
    assert "slope: inconclusive" in only_vague.reason


def test_area_per_cell_counts_each_cell_once() -> None:
    """Two cells, one with twice the runs: the per-cell mean weighs them equally, the per-run not."""
    runs = make_runs(lambda m, t, r, k: 1.0, settings=("mlp",), tasks=("regression",), rules=(2, 4))
    curves = make_curves(runs, lambda m, t, k: 2.0 - t)  # area 0.75 everywhere
    slow = curves["num_rules"] == 4
    curves.loc[slow, "perf"] = 2.0  # R = 4 never improves: area 1
    doubled = pd.concat([curves, curves[slow].assign(seed=curves.loc[slow, "seed"] + 10)])
    cells = analysis.area_per_cell(doubled)
    np.testing.assert_allclose(cells["gt-modular"].mean(), (0.75 + 1.0) / 2)
    per_run = analysis.curve_areas(doubled).groupby("model")["area"].mean()
    np.testing.assert_allclose(per_run["gt-modular"], (0.75 * 6 + 1.0 * 12) / 18)


def test_claim_parts_are_labelled_and_counted_in_the_right_number() -> None:
    part = analysis._decide("one", [0.5], unit="settings", what="share of X", pct=True)
    assert "1 setting)" in part.reason and "1 settings" not in part.reason
    assert part.quantity == "share of X (fraction: 0.1 = 10%)"
    many = analysis._decide("many", [0.1, 0.2, 0.3, 0.4], unit="cells", what="gap")
    assert "4 cells)" in many.reason and many.quantity == "gap"
