"""Tests of mod_arch_core.metrics against hand-checked values and the spec's numbers (§5, §7)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mod_arch_core import metrics as M

FAST = settings(deadline=None, max_examples=60)
RULES = (2, 4, 8, 16, 32)
P_METRICS = (M.collapse_avg, M.collapse_worst, M.alignment, M.inverse_mutual_information)
FIG2 = np.array(
    [[0.95, 0, 0, 0.05], [0, 0, 0, 1], [0.35, 0.1, 0, 0.55], [0, 1, 0, 0]]
)  # p(module | rule), spec §6.1 Fig. 2


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------

entries = st.one_of(st.just(0.0), st.floats(1e-3, 1.0))


@st.composite
def matrices(draw, min_r: int = 2, max_r: int = 5) -> np.ndarray:
    """Any valid (un-normalised) P: non-negative, not all zero."""
    r = draw(st.integers(min_r, max_r))
    p = draw(arrays(np.float64, (r, r), elements=entries))
    if p.sum() == 0:
        p[draw(st.integers(0, r - 1)), draw(st.integers(0, r - 1))] = 1.0
    return p


@st.composite
def row_stochastic(draw, min_r: int = 2, max_r: int = 5) -> np.ndarray:
    """P as estimated by prob.py: every row sums to 1/R."""
    p = draw(matrices(min_r, max_r))
    empty = p.sum(axis=1) == 0
    p[empty, 0] = 1.0
    return p / p.sum(axis=1, keepdims=True) / p.shape[0]


def is_scaled_permutation(p: np.ndarray) -> bool:
    nonzero = p > 0
    one_per_line = (nonzero.sum(0) == 1).all() and (nonzero.sum(1) == 1).all()
    return bool(one_per_line and np.ptp(p[nonzero]) <= 1e-12 * p.max())


# --------------------------------------------------------------------------------------
# Exact values
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", RULES)
def test_identity_and_permutation_have_no_collapse_and_perfect_alignment(r):
    perm = np.eye(r)[np.random.default_rng(r).permutation(r)]
    for p in (np.eye(r) / r, perm / r, 7.0 * perm):
        assert M.collapse_avg(p) == 0.0
        assert M.collapse_worst(p) == 0.0
        assert M.alignment(p) == pytest.approx(0.0, abs=1e-15)
        assert M.mutual_information(p) == pytest.approx(np.log(r), rel=1e-5)


@pytest.mark.parametrize(
    ("r", "artefact"), list(zip(RULES, (5e-8, 1.1e-7, 3.1e-7, 9.2e-7, 3.0e-6), strict=True))
)
def test_gt_inverse_mi_is_the_eps_artefact_of_spec_7(r, artefact):
    value = M.inverse_mutual_information(np.eye(r) / r)
    assert float(f"{value:.1e}") == artefact
    permuted = np.eye(r)[::-1] / r
    assert M.inverse_mutual_information(permuted) == pytest.approx(value, rel=1e-9)


def test_inverse_mi_r2_identity_formula():
    # 1 - MI/log 2 with MI = log(0.5 / (0.25 + EPS) + EPS)
    mi = np.log(0.5 / (0.25 + M.EPS) + M.EPS)
    assert M.mutual_information(np.eye(2)) == pytest.approx(mi, rel=1e-15)
    assert M.inverse_mutual_information(np.eye(2)) == pytest.approx(1 - mi / np.log(2), rel=1e-6)


@pytest.mark.parametrize(
    ("r", "adapt4", "adapt5"),
    list(
        zip(
            RULES,
            (0.2567, 0.3007, 0.3350, 0.3540, 0.3650),
            (0.25666, 0.30071, 0.33501, 0.35401, 0.36499),
            strict=True,
        )
    ),
)
def test_random_baseline_matches_spec_7(r, adapt4, adapt5):
    base = M.random_baseline(r)
    assert set(base) == {*M.METRIC_NAMES, "adaptation"}
    assert base["collapse_avg"] == pytest.approx(0.0, abs=1e-15)
    assert base["collapse_worst"] == pytest.approx(0.0, abs=1e-15)
    assert base["alignment"] == pytest.approx((r - 1) / r, abs=1e-15)
    assert round(base["adaptation"], 4) == adapt4
    assert round(base["adaptation"], 5) == adapt5
    assert 1.0 < base["inverse_mutual_info"] < 1.0 + 1e-5
    if r == 2:
        assert base["inverse_mutual_info"] == pytest.approx(1 + 4e-8, abs=5e-9)
    uniform = np.full((r, r), 1.0 / r**2)
    assert M.all_metrics(uniform)["alignment"] == base["alignment"]


def test_random_bar_of_fig6_is_the_mean_over_rules():
    rows = [M.random_baseline(r) for r in RULES]
    assert round(np.mean([b["alignment"] for b in rows]), 5) == 0.80625
    assert round(np.mean([b["adaptation"] for b in rows]), 5) == 0.32228


@pytest.mark.parametrize("r", (2, 3, 4, 8))
def test_fully_collapsed(r):
    p = np.zeros((r, r))
    p[:, 1] = 1.0 / r
    out = M.all_metrics(p)
    assert out["collapse_avg"] == pytest.approx(1.0, abs=1e-15)
    assert out["collapse_worst"] == pytest.approx(1.0, abs=1e-15)
    assert out["alignment"] == pytest.approx((r - 1) / r, abs=1e-15)
    assert out["inverse_mutual_info"] == pytest.approx(1.0, abs=1e-6)


def test_figure2_matrix():
    p = FIG2 / 4  # rows p(module | rule) -> joint P
    assert M.collapse_avg(p) == pytest.approx(1 / 3, abs=1e-12)
    assert M.collapse_worst(p) == pytest.approx(1.0, abs=1e-12)
    assert M.alignment(p) == pytest.approx(0.2625, abs=1e-12)
    # renormalisation: the conditional rows themselves give the same values
    assert M.alignment(FIG2) == pytest.approx(0.2625, abs=1e-12)
    assert 0 < M.inverse_mutual_information(p) < 1


def test_metrics_accept_stacks_and_tensors():
    stack = np.stack([np.eye(4) / 4, np.full((4, 4), 1 / 16), FIG2 / 4])
    out = M.all_metrics(stack)
    assert set(out) == set(M.METRIC_NAMES)
    for name, values in out.items():
        assert values.shape == (3,)
        for i in range(3):
            assert values[i] == pytest.approx(M.all_metrics(stack[i])[name], abs=1e-15)
    assert M.alignment(stack.reshape(3, 1, 4, 4)).shape == (3, 1)
    assert M.alignment(torch.tensor(FIG2, dtype=torch.float32)) == pytest.approx(0.2625, abs=1e-6)


def test_normalise():
    p = M.normalise([[1, 1], [2, 0]])
    np.testing.assert_allclose(p, [[0.25, 0.25], [0.5, 0.0]])
    stack = M.normalise(np.stack([np.ones((2, 2)), 3 * np.eye(2)]))
    np.testing.assert_allclose(stack.sum(axis=(1, 2)), [1.0, 1.0])


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------


@FAST
@given(matrices())
def test_metric_ranges(p):
    assert -1e-12 <= M.collapse_avg(p) <= 1 + 1e-12
    assert -1e-12 <= M.collapse_worst(p) <= 1 + 1e-12
    assert -1e-12 <= M.alignment(p) <= 1 + 1e-12
    assert -1e-5 <= M.inverse_mutual_information(p) <= 1 + 1e-5
    assert M.collapse_avg(p) <= M.collapse_worst(p) + 1e-12


@FAST
@given(st.data())
def test_invariant_to_permuting_modules_and_rules(data):
    p = data.draw(row_stochastic())
    r = p.shape[0]
    cols = data.draw(st.permutations(range(r)))
    rows = data.draw(st.permutations(range(r)))
    for q in (p[:, cols], p[rows, :], p[rows][:, cols]):
        for fn in (*P_METRICS, M.mutual_information):
            assert fn(q) == pytest.approx(fn(p), abs=1e-12)


@FAST
@given(st.data())
def test_collapse_and_mi_invariant_to_permutations_of_any_p(data):
    p = data.draw(matrices())
    r = p.shape[0]
    cols = data.draw(st.permutations(range(r)))
    rows = data.draw(st.permutations(range(r)))
    q = p[rows][:, cols]
    for fn in (M.collapse_avg, M.collapse_worst, M.inverse_mutual_information):
        assert fn(q) == pytest.approx(fn(p), abs=1e-12)


@FAST
@given(matrices(), st.floats(1e-3, 1e3))
def test_scaling_changes_nothing(p, scale):
    for fn in (*P_METRICS, M.mutual_information):
        assert fn(scale * p) == pytest.approx(fn(p), abs=1e-12)


@FAST
@given(matrices(min_r=2, max_r=2))
def test_collapse_avg_equals_worst_for_two_rules(p):
    assert M.collapse_avg(p) == pytest.approx(M.collapse_worst(p), abs=1e-12)


@FAST
@given(row_stochastic())
def test_alignment_identity_for_row_normalised_p(p):
    r = p.shape[0]
    best = max(sum(p[i, pi[i]] for i in range(r)) for pi in itertools.permutations(range(r)))
    assert M.alignment(p) == pytest.approx(1 - best, abs=1e-12)


@FAST
@given(matrices())
def test_alignment_zero_iff_scaled_permutation(p):
    assert (M.alignment(p) <= 1e-12) == is_scaled_permutation(p)


@FAST
@given(st.integers(2, 6).flatmap(lambda r: st.permutations(range(r))), st.floats(1e-3, 1e3))
def test_scaled_permutations_have_zero_alignment(perm, scale):
    p = scale * np.eye(len(perm))[list(perm)]
    assert M.alignment(p) == pytest.approx(0.0, abs=1e-12)
    assert M.collapse_avg(p) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------
# Activation matrix
# --------------------------------------------------------------------------------------


def softmax_scores(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    z = rng.standard_normal(shape)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def naive_p(scores: np.ndarray, rules: np.ndarray, r: int) -> np.ndarray:
    s, c = scores.reshape(-1, r), rules.ravel()
    p = np.zeros((r, r))
    for i in range(r):
        total, n = np.zeros(r), 0
        for k in range(len(c)):
            if c[k] == i:
                total += s[k]
                n += 1
        p[i] = total / n / r
    return p


def test_activation_matrix_agrees_with_naive_loop():
    rng = np.random.default_rng(0)
    r = 4
    scores = softmax_scores(rng, (30, 5, r))
    rules = rng.integers(0, r, size=(30, 5))
    p = M.activation_matrix(scores, rules, r)
    np.testing.assert_allclose(p, naive_p(scores, rules, r), atol=1e-15)
    np.testing.assert_allclose(p.sum(axis=1), np.full(r, 1 / r), atol=1e-15)
    torch_p = M.activation_matrix(torch.tensor(scores), torch.tensor(rules), r)
    np.testing.assert_allclose(torch_p, p, atol=1e-15)


def test_accumulator_over_batches_equals_one_shot():
    rng = np.random.default_rng(1)
    r = 3
    scores = softmax_scores(rng, (40, 7, r))
    rules = rng.integers(0, r, size=(40, 7))
    acc = M.ActivationAccumulator(r)
    for start in range(0, 40, 9):
        acc.update(scores[start : start + 9], rules[start : start + 9])
    np.testing.assert_allclose(acc.matrix(), M.activation_matrix(scores, rules, r), atol=1e-15)
    np.testing.assert_array_equal(acc.counts, np.bincount(rules.ravel(), minlength=r))
    np.testing.assert_allclose(acc.mean_scores(), scores.reshape(-1, r).mean(axis=0), atol=1e-15)


def test_stacked_accumulator_agrees_per_run():
    rng = np.random.default_rng(2)
    n, r = 3, 4
    scores = softmax_scores(rng, (n, 20, 6, r))
    rules = rng.integers(0, r, size=(n, 20, 6))
    acc = M.ActivationAccumulator(r, num_runs=n)
    acc.update(scores[:, :11], rules[:, :11])
    acc.update(scores[:, 11:], rules[:, 11:])
    stacked = acc.matrix()
    assert stacked.shape == (n, r, r)
    for i in range(n):
        np.testing.assert_allclose(stacked[i], naive_p(scores[i], rules[i], r), atol=1e-15)
    # rules shared by every run may omit the run axis
    shared = M.activation_matrix(scores, rules[0], r, num_runs=n)
    for i in range(n):
        np.testing.assert_allclose(shared[i], naive_p(scores[i], rules[0], r), atol=1e-15)


def test_a_diverged_run_does_not_spoil_the_stack():
    scores = np.full((2, 6, 3), 1 / 3)
    scores[1, 0] = np.nan
    p = M.activation_matrix(scores, np.arange(6) % 3, 3, num_runs=2)
    np.testing.assert_allclose(p[0], np.full((3, 3), 1 / 9))
    assert np.isnan(p[1, 0]).all() and np.isfinite(p[1, 1:]).all()
    with pytest.raises(ValueError, match="finite"):
        M.all_metrics(p)


def test_gt_modular_scores_give_identity_and_empirical_marginal():
    rng = np.random.default_rng(3)
    r = 4
    rules = rng.choice(r, size=500, p=[0.1, 0.2, 0.3, 0.4])
    onehot = np.eye(r)[rules]
    np.testing.assert_allclose(M.activation_matrix(onehot, rules, r), np.eye(r) / r)
    acc = M.ActivationAccumulator(r)
    acc.update(onehot, rules)
    np.testing.assert_allclose(acc.mean_scores(), np.bincount(rules, minlength=r) / 500)


def test_missing_rule_cannot_be_estimated():
    scores = np.full((5, 3), 1 / 3)
    with pytest.raises(ValueError, match="rule 2"):
        M.activation_matrix(scores, np.array([0, 1, 0, 1, 0]), 3)
    acc = M.ActivationAccumulator(3, num_runs=2)
    acc.update(np.full((2, 4, 3), 1 / 3), np.array([[0, 1, 2, 2], [0, 1, 1, 1]]))
    with pytest.raises(ValueError, match=r"rule 2 \(run 1\)"):
        acc.matrix()
    with pytest.raises(ValueError, match="no examples"):
        M.ActivationAccumulator(3).mean_scores()


def test_activation_matrix_bad_input():
    scores = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"rules must have shape \(4,\).*got \(5,\)"):
        M.activation_matrix(scores, np.zeros(5, dtype=int), 3)
    with pytest.raises(ValueError, match="R = 4"):
        M.activation_matrix(scores, np.zeros(4, dtype=int), 4)
    with pytest.raises(ValueError, match=r"rules must lie in \[0, 2\]"):
        M.activation_matrix(scores, np.array([0, 1, 2, 3]), 3)
    with pytest.raises(TypeError, match="integer"):
        M.activation_matrix(scores, np.zeros(4), 3)
    with pytest.raises(ValueError, match="num_runs = 2"):
        M.activation_matrix(np.full((3, 4, 3), 1 / 3), np.zeros((3, 4), dtype=int), 3, num_runs=2)
    with pytest.raises(ValueError, match="num_rules must be >= 2"):
        M.ActivationAccumulator(1)


# --------------------------------------------------------------------------------------
# Adaptation
# --------------------------------------------------------------------------------------


def test_dirichlet_draws_use_the_reference_seeding():
    draws = M.dirichlet_draws(4, num_draws=5)
    assert draws.shape == (5, 4)
    for k in range(5):
        np.testing.assert_array_equal(draws[k], np.random.RandomState(k).dirichlet(np.ones(4)))
    np.testing.assert_array_equal(M.dirichlet_draws(4)[:5], draws)


def test_adaptation_score_hand_values():
    assert M.adaptation_score([0.7, 0.3], [0.5, 0.5]) == pytest.approx(0.2)
    assert M.adaptation_score([0.7, 0.3], [0.3, 0.7]) == 0.0  # sorting: only profiles count
    assert M.adaptation_score([1.0, 0.0, 0.0], [0.0, 0.0, 1.0]) == 0.0
    assert M.adaptation_score([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.5)
    scores = M.adaptation_score(np.array([[0.7, 0.3], [0.5, 0.5]]), [0.5, 0.5])
    np.testing.assert_allclose(scores, [0.2, 0.0])


def test_adaptation_from_marginals():
    draws = M.dirichlet_draws(3, num_draws=10)
    assert M.adaptation_from_marginals(draws, draws) == 0.0
    assert M.adaptation_from_marginals(draws, draws[:, ::-1]) == 0.0
    uniform = np.full((10, 3), 1 / 3)
    expected = np.mean([M.adaptation_score(d, u) for d, u in zip(draws, uniform, strict=True)])
    assert M.adaptation_from_marginals(draws, uniform) == pytest.approx(expected)
    runs = M.adaptation_from_marginals(draws, np.stack([draws, uniform]))
    np.testing.assert_allclose(runs, [0.0, expected])
    assert M.adaptation_static(None, 3, 10) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"\(\.\.\., 10, 3\)"):
        M.adaptation_from_marginals(draws, uniform[:5])


def test_adaptation_static():
    r = 4
    uniform = np.full(r, 1 / r)
    assert M.adaptation_static(uniform, r) == M.adaptation_static(None, r)
    both = M.adaptation_static(np.stack([uniform, np.eye(r)[0]]), r)
    assert both.shape == (2,)
    assert both[0] == M.adaptation_static(None, r)
    assert both[1] > both[0]  # a collapsed marginal adapts worse than uniform
    with pytest.raises(ValueError, match=r"q must have shape \(\.\.\., 4\)"):
        M.adaptation_static(np.ones(3) / 3, r)


# --------------------------------------------------------------------------------------
# Performance
# --------------------------------------------------------------------------------------


def test_regression_loss():
    assert M.regression_loss([1.0, 2.0, 3.0], [1.0, 0.0, 3.0]) == pytest.approx(2 / 3)
    pred = np.array([[[0.0, 1.0]], [[2.0, 2.0]]])  # (runs, batch, dim)
    per_run = M.regression_loss(pred, np.zeros_like(pred), per_run=True)
    np.testing.assert_allclose(per_run, [0.5, 2.0])
    assert M.regression_loss(torch.tensor(pred), torch.zeros(2, 1, 2)) == pytest.approx(1.25)
    assert M.performance(pred, np.zeros_like(pred), "Regression") == pytest.approx(1.25)


def test_classification_error():
    logits = np.array([-1.0, 0.0, 2.0, -3.0])
    labels = np.array([0.0, 0.0, 1.0, 1.0])
    assert M.classification_error(logits, labels) == pytest.approx(50.0)
    assert M.classification_error(logits, labels.astype(bool)) == pytest.approx(50.0)
    assert M.classification_error(logits, (logits >= 0).astype(float)) == 0.0
    stacked = np.stack([logits, -logits - 0.5])  # second run: every prediction flipped
    per_run = M.classification_error(stacked, np.stack([labels, labels]), per_run=True)
    np.testing.assert_allclose(per_run, [50.0, 50.0])
    flipped = M.performance(
        torch.tensor([[3.0, -3.0]]), torch.tensor([[0.0, 1.0]]), "classification", per_run=True
    )
    np.testing.assert_allclose(flipped, [100.0])
    with pytest.raises(ValueError, match=r"labels in \{0, 1\}"):
        M.classification_error(logits, np.array([0.0, 0.5, 1.0, 1.0]))


def test_performance_bad_input():
    with pytest.raises(ValueError, match=r"same shape, got \(3,\) and \(3, 1\)"):
        M.regression_loss(np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        M.performance(np.zeros(3), np.zeros(3), "ranking")
    with pytest.raises(ValueError, match="empty"):
        M.regression_loss(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="run axis"):
        M.regression_loss(np.float64(1.0), np.float64(1.0), per_run=True)


def test_higher_is_better():
    assert M.higher_is_better("regression") is False
    assert M.higher_is_better("Classification") is False
    with pytest.raises(ValueError, match="unknown task"):
        M.higher_is_better("accuracy")


# --------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------

NAMES = dict(
    zip(M.PAPER_RANK_ORDER, ("GT_Modular", "Modular-op", "Monolithic", "Modular"), strict=True)
)


def results(setting: str, task: str, per_ds: dict[int, dict[str, list[float]]], **extra) -> list:
    """Rows of a tidy results table: per data seed, per model, one row per model seed."""
    rows = []
    for ds, by_model in per_ds.items():
        for model, values in by_model.items():
            for seed, value in enumerate(values):
                rows.append(
                    dict(
                        setting=setting,
                        task=task,
                        search_version=extra.get("search_version", np.nan),
                        num_rules=2,
                        encoder_dim=32,
                        dim=128,
                        data_seed=ds,
                        seed=seed,
                        model=NAMES[model],
                        checkpoint=extra.get("checkpoint", "last"),
                        perf=value,
                    )
                )
    return rows


def mlp_table() -> pd.DataFrame:
    nan = np.nan
    per_ds = {
        # 0: GT-Modular clearly best
        0: {"gt-modular": [0.1, 0.1], "modular-op": [0.2, 0.2], "monolithic": [0.3, 0.3],
            "modular": [0.4, 0.4]},
        # 1: Modular wins on the seed mean (0.1) although Modular-op has the best single seed
        1: {"gt-modular": [0.5, 0.5], "modular-op": [0.0, 0.6], "monolithic": [0.2, 0.2],
            "modular": [0.0, 0.2]},
        # 2: GT-Modular has a NaN seed (cannot win); Modular-op and Monolithic tie -> Modular-op
        2: {"gt-modular": [0.0, nan], "modular-op": [0.2, 0.2], "monolithic": [0.2, 0.2],
            "modular": [0.3, 0.3]},
        # 3: every model diverged
        3: {m: [nan, nan] for m in M.PAPER_RANK_ORDER},
        # 4: all perfect (0 % error): a 4-way tie -> GT-Modular; sub tie -> Monolithic
        4: {m: [0.0, 0.0] for m in M.PAPER_RANK_ORDER},
    }  # fmt: skip
    return pd.DataFrame(results("mlp", "regression", per_ds))


def test_setting_winners_known_winners():
    winners = M.setting_winners(mlp_table()).set_index("data_seed")
    assert list(winners["winner"]) == [
        "gt-modular",
        "modular",
        "modular-op",
        "no_winner",
        "gt-modular",
    ]
    assert winners.loc[1, "modular"] == pytest.approx(0.1)
    assert np.isnan(winners.loc[2, "gt-modular"])  # NaN seed propagates to the mean
    assert {"setting", "task", "search_version", "num_rules", "checkpoint"} <= set(winners.columns)


def test_rank_models_counts_and_sub_ranking():
    table = mlp_table()
    rank = M.rank_models(table)
    assert list(rank.index) == [*M.PAPER_RANK_ORDER, "no_winner"]
    assert rank["wins"].to_dict() == {
        "gt-modular": 2, "modular-op": 1, "monolithic": 0, "modular": 1, "no_winner": 1,
    }  # fmt: skip
    assert rank.attrs["num_settings"] == 5 == rank["wins"].sum()
    assert rank["share"].sum() == pytest.approx(1.0)
    sub = M.rank_models(table, models=M.SUB_RANK_ORDER)
    # ds0 mono 0.3 < 0.4; ds1 modular; ds2 mono; ds3 none; ds4 exact tie -> monolithic
    assert sub["wins"].to_dict() == {"monolithic": 3, "modular": 1, "no_winner": 1}
    # the order is a parameter: listing Modular first hands it the tie of ds4
    flipped = M.rank_models(table, models=("modular", "monolithic"))
    assert flipped["wins"].to_dict() == {"modular": 2, "monolithic": 2, "no_winner": 1}


def test_ranking_keeps_settings_apart():
    last = mlp_table()
    best = last.assign(
        checkpoint="best", perf=lambda d: np.where(d.model == "Modular", -1.0, d.perf)
    )
    mha = [
        pd.DataFrame(results("mha", "regression", {0: {m: [v] for m, v in zip(
            M.PAPER_RANK_ORDER, order, strict=True)}}, search_version=sv))
        for sv, order in ((1, (0.4, 0.3, 0.2, 0.1)), (2, (0.1, 0.2, 0.3, 0.4)))
    ]  # fmt: skip
    table = pd.concat([last, best, *mha], ignore_index=True)
    rank = M.rank_models(table)  # checkpoint="last" by default
    assert rank.attrs["num_settings"] == 7  # 5 MLP + one per MHA search version
    assert rank.loc["modular", "wins"] == 2 and rank.loc["gt-modular", "wins"] == 3
    every = M.rank_models(table, checkpoint=None)
    assert every.attrs["num_settings"] == 12
    assert every.loc["modular", "wins"] == 2 + 5  # the "best" rows: Modular -1.0 (even ds3)
    best_only = M.rank_models(table, checkpoint="best")
    assert best_only["wins"].to_dict()["modular"] == 5


def test_as_released_flips_rnn_classification_only():
    errors = {
        0: {"gt-modular": [0.0], "modular-op": [5.0], "monolithic": [10.0], "modular": [20.0]}
    }
    table = pd.DataFrame(
        results("rnn", "classification", errors)
        + results("mlp", "classification", errors)
        + results("rnn", "regression", errors)
    )
    fixed = M.rank_models(table)
    assert fixed["wins"].to_dict()["gt-modular"] == 3
    released = M.rank_models(table, as_released=True)
    assert released["wins"].to_dict() == {
        "gt-modular": 2, "modular-op": 0, "monolithic": 0, "modular": 1, "no_winner": 0,
    }  # fmt: skip
    sub = M.rank_models(table, models=M.SUB_RANK_ORDER, as_released=True)
    assert sub["wins"].to_dict() == {"monolithic": 2, "modular": 1, "no_winner": 0}
    winners = M.setting_winners(table, as_released=True)
    rnn_cls = winners[(winners.setting == "rnn") & (winners.task == "classification")]
    assert list(rnn_cls["winner"]) == ["modular"]


def test_ranking_bad_input():
    table = mlp_table()
    with pytest.raises(ValueError, match="'perf_ood' column"):
        M.rank_models(table, metric="perf_ood")
    with pytest.raises(ValueError, match=r"models \['moe'\] do not occur"):
        M.rank_models(table, models=("monolithic", "moe"))
    with pytest.raises(ValueError, match=r"setting_keys \['capacity'\]"):
        M.rank_models(table, setting_keys=("data_seed", "capacity"))
    with pytest.raises(ValueError, match="checkpoint == 'best'"):
        M.rank_models(table, checkpoint="best")
    with pytest.raises(ValueError, match="as_released=True needs"):
        M.rank_models(table, setting_keys=("data_seed",), as_released=True)
    with pytest.raises(ValueError, match="must not repeat"):
        M.rank_models(table, models=("modular", "Modular"))
    with pytest.raises(TypeError, match="DataFrame"):
        M.rank_models(table.to_dict())


# --------------------------------------------------------------------------------------
# Bad P
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "message"),
    [
        (np.ones((2, 3)), r"square matrix .* got \(2, 3\)"),
        (np.ones(4), r"square matrix .* got \(4,\)"),
        (np.ones((1, 1)), "R >= 2"),
        (np.array([[0.5, -0.1], [0.3, 0.3]]), "non-negative; its smallest entry is -0.1"),
        (np.array([[0.5, np.nan], [0.3, 0.3]]), "finite"),
        (np.array([[0.5, np.inf], [0.3, 0.3]]), "finite"),
        (np.zeros((3, 3)), "all zeros"),
        (np.stack([np.eye(2), np.zeros((2, 2))]), r"all zeros \(at stack index \(1,\)\)"),
    ],
)
def test_bad_p_is_refused_by_every_metric(p, message):
    for fn in (M.normalise, *P_METRICS, M.mutual_information, M.all_metrics):
        with pytest.raises(ValueError, match=message):
            fn(p)


def test_non_numeric_p():
    with pytest.raises(TypeError, match="numeric"):
        M.collapse_avg(np.array([["a", "b"], ["c", "d"]]))
