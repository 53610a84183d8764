"""Tidy analysis of results tables: checkpoints, baselines, long tables, intervals, ranking, claims.

Every function here is a pure function of the tidy tables of :mod:`mod_arch_core.results` (the
runs table, :data:`~mod_arch_core.results.RUN_COLUMNS`, and the curves table,
:data:`~mod_arch_core.results.CURVE_COLUMNS`); nothing trains, nothing plots. The figure functions
(:mod:`mod_arch_core.figures.paper`) and the book's results chapters call them.

* checkpoints (spec §5.7, §9.4): :func:`select_checkpoint` keeps ``last`` unless told otherwise;
* the Random baseline rows (spec §5.5): :func:`add_random_baseline`;
* long tables: :func:`performance_long` (Fig. 4), :func:`performance_per_length` (appendix),
  :func:`metrics_long` (Figs. 5-6), :func:`normalised_curves` (Fig. 7, claim 6);
* intervals: :func:`bootstrap_ci` and :func:`summarise`, a seeded **percentile bootstrap over
  runs** (``numpy.random.default_rng(seed)``, 1000 resamples, 95% by default);
* ranking (spec §5.6, §9.1): :func:`ranking`, :func:`ranking_table`, :func:`count_ties`;
* learned-ness (issue 13): :func:`learned` decides per setting, task and R whether the models
  have learned and separate beyond seed noise; :func:`learned_caveat` turns it into the caveat
  the results chapters put next to a figure;
* the paper's findings (spec §7, claims 1-6): :func:`claim_1_ranking` ... :func:`claim_6_training_speed`,
  gathered by :func:`all_claims` and :func:`claims_table`.

How the claims are judged
-------------------------
Each claim is split into *parts*, each a measurable statement with an estimate and a 95% percentile
bootstrap interval; the unit that is resampled is stated in every part:

* a level (e.g. GT-Modular's collapse is zero) resamples **runs**;
* a comparison of two models (e.g. Modular worse than Modular-op) resamples **cells**, one cell per
  (setting, task, R, capacity), each holding the paired model means; performance gaps are symmetric
  relative differences ``(a - b) / ((|a| + |b|) / 2)`` so that losses and errors of different
  settings can be pooled without being averaged together;
* a trend in R (e.g. collapse grows with R) fits, per (setting, task) unit, the least-squares slope
  against log2 R and resamples **units**.

A part *holds* when its whole interval lies on the claimed side, *does not hold* when the whole
interval lies on the other side, and is *inconclusive* otherwise (or when there are fewer than
:data:`MIN_UNITS` units). A claim holds when all its parts hold, does not hold when none does and
at least one does not, is inconclusive when every part is, and holds *partly* otherwise.

References: Mittal, Bengio, Lajoie, "Is a Modular Architecture Enough?", NeurIPS 2022
(arXiv 2206.02713), §5 (Figs. 3-7); Efron and Tibshirani (1993) for the percentile bootstrap.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mod_arch_core import metrics
from mod_arch_core.results import RUN_KEYS
from mod_arch_core.validation import (
    PAPER_MODELS,
    SETTINGS,
    check_finite_float,
    check_int,
    check_seed,
)

__all__ = [
    "CHECKPOINTS",
    "CLAIM_TEXT",
    "COMPARABLE",
    "DOES_NOT_HOLD",
    "HOLDS",
    "INCONCLUSIVE",
    "LEARNED_KEYS",
    "LEARNED_LOSS_FRACTION",
    "LEARNED_MAX_ERROR",
    "MARGINAL",
    "METRICS",
    "MIN_UNITS",
    "NEGLIGIBLE",
    "PANELS",
    "PAPER_SCALE",
    "PARTLY",
    "SEPARATION_Z",
    "VERDICTS",
    "ClaimPart",
    "ClaimResult",
    "adaptation_draws",
    "add_random_baseline",
    "advantage",
    "all_claims",
    "area_per_cell",
    "bootstrap_ci",
    "capacity_note",
    "check_checkpoint",
    "claim_1_ranking",
    "claim_2_benefit_grows_with_rules",
    "claim_3_modular_falls_short",
    "claim_4_collapse",
    "claim_5_specialisation",
    "claim_6_training_speed",
    "claims_table",
    "combine_verdicts",
    "count_ties",
    "curve_areas",
    "example_activation_matrices",
    "in_cells",
    "learned",
    "learned_caveat",
    "learned_summary",
    "metrics_long",
    "normalised_curves",
    "performance_long",
    "performance_per_length",
    "ranking",
    "ranking_table",
    "relative_gap",
    "run_activation_matrices",
    "runs_per_cell_note",
    "scale_summary",
    "scale_table",
    "search_version_note",
    "select_checkpoint",
    "summarise",
]

#: Checkpoint selections: one checkpoint, or ``"pooled"`` (both rows, as the paper's main figures).
CHECKPOINTS: tuple[str, ...] = ("last", "best", "pooled")
#: The five routing metrics, in the column order of the paper's Fig. 5.
METRICS: tuple[str, ...] = (
    "collapse_avg",
    "collapse_worst",
    "alignment",
    "adaptation",
    "inverse_mutual_info",
)
#: Columns of the paper's Fig. 4, in order: task type | split.
PANELS: tuple[str, ...] = (
    "Classification | ID",
    "Classification | OoD",
    "Regression | ID",
    "Regression | OoD",
)
#: Evaluation lengths of the MHA/RNN performance columns (spec §5.1).
LENGTHS: tuple[int, ...] = (3, 5, 10, 20, 30)
#: The modular models, in the legend order of the metric figures.
MODULAR_MODELS: tuple[str, ...] = ("gt-modular", "modular-op", "modular")
#: A cell of the study for comparisons: search versions, data seeds and seeds are pooled inside it.
CELL_KEYS: tuple[str, ...] = ("setting", "task", "num_rules", "encoder_dim", "dim")
#: A unit for trends in R: one (setting, task) pair (capacities pooled).
UNIT_KEYS: tuple[str, ...] = ("setting", "task")

HOLDS, PARTLY, DOES_NOT_HOLD, INCONCLUSIVE = "holds", "partly", "does not hold", "inconclusive"
#: The four verdicts of a claim (a part uses all but ``partly``).
VERDICTS: tuple[str, ...] = (HOLDS, PARTLY, DOES_NOT_HOLD, INCONCLUSIVE)
#: A routing metric below this is "zero" (GT-Modular's collapse, its Alignment): 1% of the range.
NEGLIGIBLE = 0.01
#: "Only marginally better" on a [0, 1] metric: a difference below 0.05.
MARGINAL = 0.05
#: Fewest cells or units a comparison or trend needs before it can be decided.
MIN_UNITS = 3
#: "Comparable" performance: a symmetric relative gap below 5%.
COMPARABLE = 0.05

#: The paper's scale (spec §1, §5.6, §8), next to which every results table is described.
PAPER_SCALE: dict[str, Any] = {
    "runs": 20_000,
    "settings_ranked": 1000,
    "num_rules": (2, 4, 8, 16, 32),
    "capacities": 5,
    "data_seeds": 5,
    "seeds": 5,
    "iterations": {"mlp": 100_000, "mha": 500_000, "rnn": 500_000},
}

#: Claim number -> (short statement, what the paper reports) (spec §7, paraphrased).
CLAIM_TEXT: dict[int, tuple[str, str]] = {
    1: (
        "GT-Modular is the best model in most settings; Modular beats Monolithic more often "
        "than not, by a small margin",
        "Fig. 3 pies over 1000 settings (last checkpoint, ID); percentages only in the image",
    ),
    2: (
        "The benefit of specialisation (GT-Modular, Modular-op) over Monolithic grows with the "
        "number of rules; with few rules Monolithic is comparable",
        "Fig. 4, performance against R for every setting, task and split",
    ),
    3: (
        "End-to-end Modular falls short of Modular-op and of GT-Modular, in and out of "
        "distribution, mostly at large R",
        "Fig. 4, in- and out-of-distribution columns",
    ),
    4: (
        "GT-Modular and Random do not collapse; Modular and Modular-op do, more as R grows, "
        "Modular-op less than Modular",
        "Fig. 5 (per R) and Fig. 6 (per model), Collapse-Avg and Collapse-Worst",
    ),
    5: (
        "GT-Modular specialises almost perfectly, Random poorly; Modular and Modular-op are "
        "sub-optimal, worse as R grows, Modular-op only marginally better",
        "Figs. 5-6, Alignment, Adaptation and inverse mutual information",
    ),
    6: (
        "Better specialisation gives lower final error or loss and faster training",
        "Fig. 7, one training curve averaged over every run",
    ),
}


# --------------------------------------------------------------------------------------
# Checkpoints and the Random baseline
# --------------------------------------------------------------------------------------


def check_checkpoint(checkpoint: Any) -> str:
    """Validate a checkpoint selection: ``last``, ``best`` or ``pooled`` (spec §5.7, §9.4)."""
    if not isinstance(checkpoint, str) or checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}; got {checkpoint!r}")
    return checkpoint


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; columns: {list(df.columns)}")


def select_checkpoint(runs: pd.DataFrame, checkpoint: str = "last") -> pd.DataFrame:
    """Rows of one checkpoint (default ``last``, the book's convention; errata item 11).

    Parameters
    ----------
    runs : DataFrame
        A runs table (one row per run and checkpoint).
    checkpoint : {"last", "best", "pooled"}
        ``pooled`` keeps both rows of every run, as the paper's main figures do (spec §5.7); the two
        rows of a run are then two correlated observations, so intervals are too narrow.

    Returns
    -------
    DataFrame, a copy with a fresh index.
    """
    _require(runs, ["checkpoint"], "runs")
    checkpoint = check_checkpoint(checkpoint)
    if checkpoint == "pooled":
        return runs.reset_index(drop=True).copy()
    selected = runs[runs["checkpoint"] == checkpoint].reset_index(drop=True)
    if selected.empty and not runs.empty:
        raise ValueError(
            f"no rows with checkpoint {checkpoint!r}; present: {sorted(runs['checkpoint'].unique())}"
        )
    return selected


def adaptation_draws(runs: pd.DataFrame, default: int = 100) -> int:
    """Dirichlet draws behind the Adaptation of ``runs``: those of its profile's budget.

    The Random baseline should be scored on the same draws as the models (spec §5.5). Results of a
    single shipped profile use its budget (``quick``: 25); anything else gets ``default`` (the
    paper's 100).
    """
    from mod_arch_core.profiles import available_profiles, load_profile

    names = sorted(set(runs["profile"])) if "profile" in runs.columns else []
    if len(names) == 1 and names[0] in available_profiles():
        return load_profile(names[0]).eval_budget().adaptation_draws
    return default


def add_random_baseline(runs: pd.DataFrame, num_draws: int | None = None) -> pd.DataFrame:
    """Append the Random baseline rows, model ``"random"`` (spec §5.5).

    One row per (setting, task, search version, R, capacity, checkpoint) group present in ``runs``,
    as the reference's ``add_random`` appends one per capacity and checkpoint mode in each task
    table. The routing metrics are those of the uniform P (:func:`metrics.random_baseline`):
    collapse 0, Alignment (R-1)/R, inverse MI 1, Adaptation of the static uniform marginal against
    ``num_draws`` Dirichlet draws (None: :func:`adaptation_draws`); performance is missing.

    Returns
    -------
    DataFrame: ``runs`` followed by the new rows (existing ``random`` rows are replaced).
    """
    keys = ["setting", "task", "search_version", "num_rules", "encoder_dim", "dim", "checkpoint"]
    _require(runs, [*keys, "model"], "runs")
    base = runs[runs["model"] != "random"]
    if base.empty:
        return base.reset_index(drop=True).copy()
    draws = (
        adaptation_draws(base)
        if num_draws is None
        else check_int(num_draws, "num_draws", minimum=1)
    )
    groups = base[keys].drop_duplicates().reset_index(drop=True)
    values = {
        r: metrics.random_baseline(int(r), draws) for r in sorted(groups["num_rules"].unique())
    }
    rows = groups.copy()
    rows["model"] = "random"
    for metric in METRICS:
        rows[metric] = [values[r][metric] for r in rows["num_rules"]]
    rows["activation_matrix"] = [
        json.dumps((np.full((r, r), 1.0 / r**2)).tolist()) for r in rows["num_rules"]
    ]
    for column in ("profile", "iterations"):
        if column in base.columns and base[column].nunique() == 1:
            rows[column] = base[column].iloc[0]
    return pd.concat([base, rows], ignore_index=True)


# --------------------------------------------------------------------------------------
# Long tables
# --------------------------------------------------------------------------------------


def _id_columns(df: pd.DataFrame) -> list[str]:
    wanted = [*RUN_KEYS, "checkpoint", "n_params"]
    return [c for c in wanted if c in df.columns]


def performance_long(runs: pd.DataFrame) -> pd.DataFrame:
    """Headline performance in long form, one row per (run, checkpoint, split) (Fig. 4).

    Returns
    -------
    DataFrame with the run keys, ``split`` ("ID" from ``perf``, "OoD" from ``perf_ood``; spec
    §5.1), ``panel`` (one of :data:`PANELS`, e.g. "Regression | OoD") and ``value`` (L1 loss for
    regression, error in % for classification; lower is better). Random rows are dropped.
    """
    _require(runs, ["model", "task", "perf", "perf_ood"], "runs")
    table = runs[runs["model"] != "random"]
    ids = _id_columns(table)
    long = table.melt(
        id_vars=ids, value_vars=["perf", "perf_ood"], var_name="split", value_name="value"
    )
    long["split"] = long["split"].map({"perf": "ID", "perf_ood": "OoD"})
    long["panel"] = long["task"].str.capitalize() + " | " + long["split"]
    return long


def performance_per_length(runs: pd.DataFrame) -> pd.DataFrame:
    """MHA/RNN performance at every evaluation length (spec §5.1; appendix ``perf_{L}`` files).

    Returns
    -------
    DataFrame with the run keys, ``length`` (3, 5, 10, 20, 30), ``split`` ("ID" or "OoD", the
    latter with inputs x2 at that length) and ``value``; MLP rows (no sequences) are dropped.
    """
    columns = [f"perf_{k}{n}" for n in LENGTHS for k in ("", "ood_")]
    _require(runs, ["setting", "model", *columns], "runs")
    table = runs[(runs["setting"] != "mlp") & (runs["model"] != "random")]
    long = table.melt(
        id_vars=_id_columns(table), value_vars=columns, var_name="column", value_name="value"
    )
    long["split"] = np.where(long["column"].str.startswith("perf_ood_"), "OoD", "ID")
    long["length"] = long["column"].str.rsplit("_", n=1).str[-1].astype(int)
    return long.drop(columns="column")


def metrics_long(
    runs: pd.DataFrame,
    metrics_: Sequence[str] = METRICS,
    *,
    include_random: bool = True,
) -> pd.DataFrame:
    """The routing metrics in long form, one row per (run, checkpoint, metric) (Figs. 5-6).

    Monolithic rows (no routing, NaN metrics) are dropped; with ``include_random`` the Random
    baseline rows of :func:`add_random_baseline` are added (if absent).
    """
    unknown = [m for m in metrics_ if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; allowed: {', '.join(METRICS)}")
    _require(runs, ["model", *metrics_], "runs")
    table = runs
    if include_random and not (runs["model"] == "random").any():
        table = add_random_baseline(runs)
    elif not include_random:
        table = runs[runs["model"] != "random"]
    table = table[table["model"] != "monolithic"]
    long = table.melt(
        id_vars=_id_columns(table), value_vars=list(metrics_), var_name="metric", value_name="value"
    )
    return long.dropna(subset=["value"]).reset_index(drop=True)


def normalised_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Training curves with ``fraction`` (iteration / final) and ``relative`` (perf / perf at 0).

    ``relative`` puts losses and errors of different settings on one scale (1 at initialisation),
    for comparisons of training speed (claim 6) without averaging a loss with an error. Runs whose
    iteration-0 value is 0 or missing get NaN.
    """
    _require(curves, [*RUN_KEYS, "iteration", "perf"], "curves")
    table = curves.sort_values([*RUN_KEYS, "iteration"]).reset_index(drop=True)
    grouped = table.groupby(list(RUN_KEYS), dropna=False, sort=False)
    first = grouped["perf"].transform("first")
    final = grouped["iteration"].transform("max").replace(0, np.nan)
    table["fraction"] = table["iteration"] / final
    table["relative"] = table["perf"] / first.where(first.abs() > 0)
    return table


def curve_areas(curves: pd.DataFrame) -> pd.DataFrame:
    """Area under each run's relative training curve (claim 6; lower means faster training).

    The relative curve is perf / perf at iteration 0 against the fraction of training
    (:func:`normalised_curves`); its area (trapezoid rule) is 1 for a run that never improves and
    approaches the final relative value for a run that improves at once.

    Returns
    -------
    DataFrame with the run keys and ``area`` (NaN for runs with fewer than two finite points).
    """
    curve = normalised_curves(curves)
    curve = curve[np.isfinite(curve["relative"]) & np.isfinite(curve["fraction"])]
    keys = list(RUN_KEYS)

    def area(group: pd.DataFrame) -> float:
        if len(group) < 2:
            return np.nan
        return float(np.trapezoid(group["relative"], group["fraction"]))

    rows = [
        {**dict(zip(keys, key, strict=True)), "area": area(group)}
        for key, group in curve.groupby(keys, dropna=False, sort=True)
    ]
    return pd.DataFrame(rows, columns=[*keys, "area"])


def area_per_cell(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean area under the relative curve per cell and model (claim 6, Fig. 7 on a common scale).

    A cell is (setting, task, R, capacity): search versions, data seeds and seeds are pooled inside
    it, and every cell then counts once, whatever its number of runs. Averaging
    :func:`curve_areas` per run instead weighs the MHA cells twice (two search versions), which
    moves a pooled mean towards the attention setting's.

    Returns
    -------
    DataFrame indexed by the cell keys, one column per model.
    """
    return _cell_means(curve_areas(curves), "area")


# --------------------------------------------------------------------------------------
# Bootstrap intervals
# --------------------------------------------------------------------------------------


def bootstrap_ci(
    values: Any,
    *,
    confidence: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of ``values`` (the figures' 95% CI).

    Resamples the finite values with replacement ``num_resamples`` times using
    ``numpy.random.default_rng(seed)`` and takes the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of the resampled means. Non-finite values (diverged runs)
    are left out.

    Returns
    -------
    (mean, low, high); NaNs for no finite value, ``(x, x, x)`` for one.
    """
    confidence = check_finite_float(confidence, "confidence")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    num_resamples = check_int(num_resamples, "num_resamples", minimum=1)
    seed = check_seed(seed, "seed")
    try:
        x = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as error:
        raise TypeError(f"values must be numbers, got {values!r:.80}") from error
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return (np.nan, np.nan, np.nan)
    mean = float(x.mean())
    if n == 1 or np.all(x == x[0]):
        return (mean, mean, mean)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # bounded memory at paper scale (20,000 runs)
    means = np.empty(num_resamples)
    for start in range(0, num_resamples, chunk):
        stop = min(start + chunk, num_resamples)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (mean, float(min(low, mean)), float(max(high, mean)))


def summarise(
    df: pd.DataFrame,
    by: Sequence[str],
    value: str = "value",
    *,
    confidence: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean and bootstrap interval of ``value`` per group of ``by`` (one row per group).

    Every group is resampled with a fresh ``default_rng(seed)``, so a group's interval does not
    depend on which other groups are present.

    Returns
    -------
    DataFrame with the ``by`` columns, ``mean``, ``ci_low``, ``ci_high`` and ``n`` (finite values).
    """
    by = [by] if isinstance(by, str) else list(by)
    _require(df, [*by, value], "table")
    rows = []
    for key, group in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high = bootstrap_ci(
            group[value], confidence=confidence, num_resamples=num_resamples, seed=seed
        )
        n = int(np.isfinite(group[value].to_numpy(dtype=float)).sum())
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "n": n,
            }
        )
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])


# --------------------------------------------------------------------------------------
# Ranking (spec §5.6, §9.1)
# --------------------------------------------------------------------------------------


def ranking(
    runs: pd.DataFrame,
    *,
    metric: str = "perf",
    contest: str = "all",
    checkpoint: str = "last",
    as_released: bool = False,
) -> pd.DataFrame:
    """Wins per model over every setting (the paper's Fig. 3), fixed or as released.

    Parameters
    ----------
    runs : DataFrame
        A runs table (Random rows are ignored).
    metric : {"perf", "perf_ood"}
        Headline ID or OoD performance (lower is better for both tasks).
    contest : {"all", "sub"}
        ``all``: the four models, ties to the earlier of GT-Modular, Modular-op, Monolithic,
        Modular; ``sub``: Modular against Monolithic, ties to Monolithic.
    checkpoint : {"last", "best"}
    as_released : bool
        Reproduce the released RNN classification direction (spec §9.1): the worst model wins.

    Returns
    -------
    DataFrame of :func:`metrics.rank_models` (index model, columns ``wins``, ``share``), with
    ``attrs["num_settings"]`` and ``attrs["ties"]`` (settings whose best score is shared).
    """
    if contest not in ("all", "sub"):
        raise ValueError(f"contest must be 'all' or 'sub'; got {contest!r}")
    if checkpoint not in ("last", "best"):
        raise ValueError(f"ranking needs one checkpoint, 'last' or 'best'; got {checkpoint!r}")
    order = metrics.PAPER_RANK_ORDER if contest == "all" else metrics.SUB_RANK_ORDER
    table = runs[runs["model"] != "random"]
    kwargs = dict(metric=metric, models=order, checkpoint=checkpoint, as_released=as_released)
    result = metrics.rank_models(table, **kwargs)
    result.attrs["ties"] = count_ties(metrics.setting_winners(table, **kwargs), order)
    return result


def count_ties(winners: pd.DataFrame, models: Sequence[str]) -> int:
    """Settings of :func:`metrics.setting_winners` whose winning score another model shares.

    Exact ties occur at 0% error (spec §5.6); the strict comparison gives them to the model listed
    first. Works for the fixed and the as-released direction alike, since it compares every model
    with the winner's own score.
    """
    models = list(models)
    values = winners[models].to_numpy(dtype=np.float64)
    index = {m: k for k, m in enumerate(models)}
    ties = 0
    for row, winner in zip(values, winners["winner"], strict=True):
        if winner not in index:
            continue
        ties += int((row == row[index[winner]]).sum() > 1)
    return ties


def ranking_table(runs: pd.DataFrame, *, checkpoint: str = "last") -> pd.DataFrame:
    """Every ranking of the paper's pies, tidy: fixed and as released, ID and OoD, all and sub.

    Returns
    -------
    DataFrame with ``direction`` ("fixed" or "as released"), ``metric`` ("ID" or "OoD"),
    ``contest`` ("all" or "sub"), ``model``, ``wins``, ``share`` and ``settings``.
    """
    rows = []
    for as_released in (False, True):
        for metric, label in (("perf", "ID"), ("perf_ood", "OoD")):
            for contest in ("all", "sub"):
                ranked = ranking(
                    runs,
                    metric=metric,
                    contest=contest,
                    checkpoint=checkpoint,
                    as_released=as_released,
                )
                for model, row in ranked.iterrows():
                    rows.append(
                        {
                            "direction": "as released" if as_released else "fixed",
                            "metric": label,
                            "contest": contest,
                            "model": model,
                            "wins": int(row["wins"]),
                            "share": float(row["share"]),
                            "settings": ranked.attrs["num_settings"],
                        }
                    )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Helpers for the claims
# --------------------------------------------------------------------------------------


def relative_gap(a: Any, b: Any) -> np.ndarray:
    """Symmetric relative difference ``(a - b) / ((|a| + |b|) / 2)``, 0 where both are 0.

    Bounded in [-2, 2]; positive when ``a`` is larger (for losses and errors: when ``b`` is
    better). Lets gaps of different settings and tasks be pooled without mixing their units.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = (np.abs(a) + np.abs(b)) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(scale > 0, (a - b) / np.where(scale > 0, scale, 1.0), 0.0)
    return np.where(np.isfinite(a) & np.isfinite(b), gap, np.nan)


def _cell_means(table: pd.DataFrame, value: str, keys: Sequence[str] = CELL_KEYS) -> pd.DataFrame:
    """Model means of ``value`` per cell: index cell keys, one column per model."""
    present = [k for k in keys if k in table.columns]
    means = table.groupby([*present, "model"], dropna=False)[value].mean()
    return means.unstack("model")


def _slopes(cells: pd.DataFrame, column: str) -> np.ndarray:
    """Least-squares slope of ``column`` against log2 R per unit (setting, task); NaN-free."""
    frame = cells.reset_index()
    slopes = []
    for _, unit in frame.groupby(list(UNIT_KEYS), dropna=False):
        per_r = unit.groupby("num_rules")[column].mean().dropna()
        if len(per_r) < 2:
            continue
        x = np.log2(per_r.index.to_numpy(dtype=np.float64))
        slopes.append(float(np.polyfit(x, per_r.to_numpy(), 1)[0]))
    return np.asarray(slopes)


@dataclass(frozen=True)
class ClaimPart:
    """One measurable statement of a claim: estimate, 95% interval, verdict and reason."""

    name: str  # e.g. "Modular collapses more as R grows"
    estimate: float
    ci_low: float
    ci_high: float
    n: int  # resampled units
    unit: str  # what was resampled: runs, cells, units, settings
    verdict: str  # holds | does not hold | inconclusive
    reason: str
    quantity: str = ""  # what the estimate measures, with its unit (labels the parts table)


@dataclass
class ClaimResult:
    """The measured numbers and verdict of one claim of spec §7."""

    number: int
    claim: str
    paper: str
    parts: list[ClaimPart]
    measured: dict[str, float] = field(default_factory=dict)
    verdict: str = INCONCLUSIVE
    reason: str = ""
    #: (setting, task, R) cells the claim was judged on, and all cells of the results (None:
    #: judged on every cell, learned or not; see :func:`all_claims`).
    cells_judged: int | None = None
    cells_total: int | None = None

    def to_row(self) -> dict[str, Any]:
        """One row of :func:`claims_table`."""
        row = {
            "claim": self.number,
            "statement": self.claim,
            "paper": self.paper,
            "verdict": self.verdict,
            "reason": self.reason,
            "parts_holding": sum(p.verdict == HOLDS for p in self.parts),
            "parts": len(self.parts),
        }
        if self.cells_total is not None:
            row["cells judged"] = f"{self.cells_judged} of {self.cells_total}"
        return row

    def parts_table(self) -> pd.DataFrame:
        """One row per part, with the estimate and its interval (no rows for a claim judged on
        no cell, with the same columns)."""
        columns = ["claim", *(f.name for f in dataclasses.fields(ClaimPart))]
        rows = [{"claim": self.number, **vars(p)} for p in self.parts]
        return pd.DataFrame(rows, columns=columns)


def combine_verdicts(parts: Sequence[str]) -> str:
    """The verdict of a claim from those of its parts (rule in the module docstring)."""
    parts = list(parts)
    if not parts:
        return INCONCLUSIVE
    if all(p == HOLDS for p in parts):
        return HOLDS
    if any(p == HOLDS for p in parts):
        return PARTLY
    if any(p == DOES_NOT_HOLD for p in parts):
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def _fmt(x: float, pct: bool = False) -> str:
    if not np.isfinite(x):
        return "nan"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def _count(n: int, unit: str) -> str:
    """``"1 setting"``, ``"3 settings"``: a count with its unit in the right number."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def _decide(
    name: str,
    values: Any,
    *,
    threshold: float = 0.0,
    above: bool = True,
    unit: str,
    what: str,
    pct: bool = False,
    seed: int = 0,
) -> ClaimPart:
    """A part asking whether the mean of ``values`` lies above (or below) ``threshold``."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    mean, low, high = bootstrap_ci(x, seed=seed)
    side = ">" if above else "<"
    interval = (
        f"{what} {_fmt(mean, pct)} (95% CI {_fmt(low, pct)} to {_fmt(high, pct)}, "
        f"{_count(x.size, unit)})"
    )
    if x.size < MIN_UNITS:
        verdict = INCONCLUSIVE
        reason = f"{interval}: fewer than {MIN_UNITS} {unit}"
    elif (low > threshold) if above else (high < threshold):
        verdict = HOLDS
        reason = f"{interval} {side} {_fmt(threshold, pct)}"
    elif (high < threshold) if above else (low > threshold):
        verdict = DOES_NOT_HOLD
        reason = f"{interval}, not {side} {_fmt(threshold, pct)}"
    else:
        verdict = INCONCLUSIVE
        reason = f"{interval} straddles {_fmt(threshold, pct)}"
    quantity = f"{what} (fraction: 0.1 = 10%)" if pct else what
    return ClaimPart(name, mean, low, high, int(x.size), unit, verdict, reason, quantity)


def _finish_claim(number: int, parts: list[ClaimPart], measured: dict[str, float]) -> ClaimResult:
    claim, paper = CLAIM_TEXT[number]
    verdict = combine_verdicts([p.verdict for p in parts])
    held = sum(p.verdict == HOLDS for p in parts)
    # The reason names the part that decides the verdict: a part that fails before one that is
    # merely inconclusive (claim 2 used to cite its inconclusive slope while its R = 2 part failed).
    first_other = next((p for p in parts if p.verdict == DOES_NOT_HOLD), None) or next(
        (p for p in parts if p.verdict != HOLDS), None
    )
    reason = f"{held} of {len(parts)} parts hold"
    if first_other is not None:
        reason += f"; {first_other.name}: {first_other.verdict} ({first_other.reason})"
    else:
        reason += f"; e.g. {parts[0].name}: {parts[0].reason}"
    for p in parts:
        key = _slug(p.name)
        measured.setdefault(key, p.estimate)
        measured.setdefault(f"{key}_low", p.ci_low)
        measured.setdefault(f"{key}_high", p.ci_high)
    return ClaimResult(number, claim, paper, parts, measured, verdict, reason)


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in text.lower())
    return "_".join(filter(None, keep.split("_")))


def _last(runs: pd.DataFrame, checkpoint: str) -> pd.DataFrame:
    if "checkpoint" in runs.columns and checkpoint != "pooled":
        runs = select_checkpoint(runs, checkpoint)
    return runs[runs["model"] != "random"]


def _models_present(table: pd.DataFrame, models: Iterable[str]) -> None:
    missing = sorted(set(models) - set(table["model"]))
    if missing:
        raise ValueError(
            f"the results lack models {missing}; present: {sorted(set(table['model']))}"
        )


# --------------------------------------------------------------------------------------
# The claims (spec §7)
# --------------------------------------------------------------------------------------


def claim_1_ranking(runs: pd.DataFrame, *, checkpoint: str = "last") -> ClaimResult:
    """Claim 1 (Fig. 3): GT-Modular wins most settings; Modular beats Monolithic more often than not.

    Parts: (a) GT-Modular's share of wins exceeds that of every other model; (b) Modular wins more
    than half of the Modular-vs-Monolithic contests. Settings are resampled (bootstrap over the
    settings of spec §5.6); the ranking is the fixed one (lower error wins), and ``measured`` also
    holds the as-released shares (spec §9.1).
    """
    table = _last(runs, checkpoint)
    _models_present(table, PAPER_MODELS)
    kw = dict(metric="perf", checkpoint=checkpoint if checkpoint != "pooled" else "last")
    all_winners = metrics.setting_winners(table, models=metrics.PAPER_RANK_ORDER, **kw)
    sub_winners = metrics.setting_winners(table, models=metrics.SUB_RANK_ORDER, **kw)
    won = all_winners["winner"].to_numpy()
    others = [m for m in metrics.PAPER_RANK_ORDER if m != "gt-modular"]
    n = won.size
    gt = won == "gt-modular"
    rival_shares = {m: float((won == m).mean()) for m in others}
    strongest = max(rival_shares, key=rival_shares.get) if n else others[0]
    margin = gt.astype(float) - (won == strongest).astype(float)
    margin_part = _decide(
        "GT-Modular wins more settings than any other model",
        margin,
        unit="settings",
        what=f"share of GT-Modular minus share of {strongest}",
        pct=True,
    )
    sub = (sub_winners["winner"] == "modular").astype(float).to_numpy()
    sub_part = _decide(
        "Modular beats Monolithic in more than half of the settings",
        sub,
        threshold=0.5,
        unit="settings",
        what="share of Modular",
        pct=True,
    )
    measured: dict[str, float] = {
        "settings": float(n),
        "gt_share": float(gt.mean()) if n else np.nan,
        "modular_sub_share": float(sub.mean()) if sub.size else np.nan,
    }
    for m in others:
        measured[f"{_slug(m)}_share"] = rival_shares[m]
    released = ranking(table, checkpoint=kw["checkpoint"], as_released=True)
    released_sub = ranking(table, contest="sub", checkpoint=kw["checkpoint"], as_released=True)
    measured["gt_share_as_released"] = float(released.loc["gt-modular", "share"])
    measured["modular_sub_share_as_released"] = float(released_sub.loc["modular", "share"])
    return _finish_claim(1, [margin_part, sub_part], measured)


def claim_2_benefit_grows_with_rules(
    runs: pd.DataFrame, *, checkpoint: str = "last"
) -> ClaimResult:
    """Claim 2 (Fig. 4): the advantage of GT-Modular and Modular-op over Monolithic grows with R.

    The advantage in a cell is ``relative_gap(Monolithic, model)`` on ID performance (positive:
    the model is better). Parts: (a, b) its slope against log2 R, per (setting, task) unit, is
    positive for GT-Modular and for Modular-op; (c) at the smallest R the advantage (both models,
    every cell) is not clearly above :data:`COMPARABLE`, i.e. Monolithic is comparable or better.
    """
    table = _last(runs, checkpoint)
    _models_present(table, ["monolithic", "gt-modular", "modular-op"])
    cells = _cell_means(table, "perf")
    parts, measured = [], {}
    gaps = {}
    for model in ("gt-modular", "modular-op"):
        gaps[model] = pd.Series(relative_gap(cells["monolithic"], cells[model]), index=cells.index)
        frame = gaps[model].rename("gap").to_frame()
        parts.append(
            _decide(
                f"advantage of {model} over monolithic grows with R",
                _slopes(frame, "gap"),
                unit="units",
                what="slope per doubling of R",
            )
        )
    small = int(cells.index.get_level_values("num_rules").min())
    at_small = np.concatenate(
        [g[g.index.get_level_values("num_rules") == small].to_numpy() for g in gaps.values()]
    )
    parts.append(
        _decide(
            f"monolithic comparable or better at R = {small}",
            at_small,
            threshold=COMPARABLE,
            above=False,
            unit="cells",
            what="advantage of the specialised models",
            pct=True,
        )
    )
    large = int(cells.index.get_level_values("num_rules").max())
    for model, gap in gaps.items():
        r = gap.index.get_level_values("num_rules")
        measured[f"{_slug(model)}_advantage_small_r"] = float(np.nanmean(gap[r == small]))
        measured[f"{_slug(model)}_advantage_large_r"] = float(np.nanmean(gap[r == large]))
    measured["small_r"], measured["large_r"] = float(small), float(large)
    return _finish_claim(2, parts, measured)


def claim_3_modular_falls_short(runs: pd.DataFrame, *, checkpoint: str = "last") -> ClaimResult:
    """Claim 3 (Fig. 4): Modular is worse than Modular-op and than GT-Modular, ID and OoD.

    Parts: ``relative_gap(Modular, other) > 0`` over cells for other in (Modular-op, GT-Modular)
    and split in (ID, OoD); and the ID shortfall against GT-Modular grows with R ("mostly at
    large R"; slope per unit).
    """
    table = _last(runs, checkpoint)
    _models_present(table, ["modular", "modular-op", "gt-modular"])
    parts, measured = [], {}
    for metric, split in (("perf", "ID"), ("perf_ood", "OoD")):
        cells = _cell_means(table, metric)
        for other in ("modular-op", "gt-modular"):
            parts.append(
                _decide(
                    f"modular worse than {other} ({split})",
                    relative_gap(cells["modular"], cells[other]),
                    unit="cells",
                    what="relative shortfall",
                    pct=True,
                )
            )
    cells = _cell_means(table, "perf")
    shortfall = pd.Series(relative_gap(cells["modular"], cells["gt-modular"]), index=cells.index)
    parts.append(
        _decide(
            "shortfall against gt-modular grows with R (ID)",
            _slopes(shortfall.rename("gap").to_frame(), "gap"),
            unit="units",
            what="slope per doubling of R",
        )
    )
    return _finish_claim(3, parts, measured)


def _metric_claim_parts(
    table: pd.DataFrame, metric: str, label: str
) -> tuple[list[ClaimPart], dict[str, float], pd.DataFrame]:
    """Parts shared by claims 4 and 5 for one metric: GT zero, learned models above, trends."""
    parts = [
        _decide(
            f"gt-modular {label} is zero",
            table.loc[table["model"] == "gt-modular", metric],
            threshold=NEGLIGIBLE,
            above=False,
            unit="runs",
            what=f"mean {label}",
        )
    ]
    cells = _cell_means(table, metric)
    measured: dict[str, float] = {}
    for model in ("modular", "modular-op"):
        values = table.loc[table["model"] == model, metric]
        parts.append(
            _decide(
                f"{model} {label} is above zero",
                values,
                threshold=NEGLIGIBLE,
                unit="runs",
                what=f"mean {label}",
            )
        )
    for model in ("modular", "modular-op"):
        parts.append(
            _decide(
                f"{model} {label} grows with R",
                _slopes(cells[[model]], model),
                unit="units",
                what="slope per doubling of R",
            )
        )
    for model in (*MODULAR_MODELS,):
        measured[f"{_slug(model)}_mean"] = float(table.loc[table["model"] == model, metric].mean())
    return parts, measured, cells


def claim_4_collapse(runs: pd.DataFrame, *, checkpoint: str = "last") -> ClaimResult:
    """Claim 4 (Figs. 5-6): collapse (Collapse-Avg) is zero for GT-Modular, present and growing
    with R for Modular and Modular-op, and smaller for Modular-op than for Modular.

    Random has no collapse by construction (spec §5.5) and is reported, not tested.
    """
    table = _last(runs, checkpoint)
    _models_present(table, MODULAR_MODELS)
    parts, measured, cells = _metric_claim_parts(table, "collapse_avg", "collapse")
    parts.append(
        _decide(
            "modular-op collapses less than modular",
            cells["modular"] - cells["modular-op"],
            unit="cells",
            what="Collapse-Avg of Modular minus Modular-op",
        )
    )
    for model in MODULAR_MODELS:
        rows = table["model"] == model
        measured[f"{_slug(model)}_collapse_worst"] = float(table.loc[rows, "collapse_worst"].mean())
    measured["random_collapse"] = 0.0
    return _finish_claim(4, parts, measured)


def claim_5_specialisation(runs: pd.DataFrame, *, checkpoint: str = "last") -> ClaimResult:
    """Claim 5 (Figs. 5-6): Alignment is zero for GT-Modular, above zero and growing with R for
    Modular and Modular-op, and Modular-op is only marginally better than Modular.

    "Only marginally better" holds when the mean of Modular minus Modular-op over cells is positive
    and its interval stays below :data:`MARGINAL`. Inverse MI, Adaptation and the Random baseline
    (Alignment (R-1)/R) are reported in ``measured``.
    """
    table = _last(runs, checkpoint)
    _models_present(table, MODULAR_MODELS)
    parts, measured, cells = _metric_claim_parts(table, "alignment", "alignment")
    diff = (cells["modular"] - cells["modular-op"]).to_numpy(dtype=float)
    diff = diff[np.isfinite(diff)]
    mean, low, high = bootstrap_ci(diff)
    what = (
        f"Alignment of Modular minus Modular-op {_fmt(mean)} (95% CI {_fmt(low)} to "
        f"{_fmt(high)}, {diff.size} cells)"
    )
    if diff.size < MIN_UNITS:
        verdict, reason = INCONCLUSIVE, f"{what}: fewer than {MIN_UNITS} cells"
    elif mean > 0 and high < MARGINAL:
        verdict, reason = HOLDS, f"{what}: positive and below {MARGINAL}"
    elif high < 0:
        verdict, reason = DOES_NOT_HOLD, f"{what}: Modular-op is worse"
    elif low > MARGINAL:
        verdict, reason = DOES_NOT_HOLD, f"{what}: more than marginally better"
    else:
        verdict, reason = INCONCLUSIVE, f"{what}: sign or size not settled"
    parts.append(
        ClaimPart(
            "modular-op only marginally better than modular",
            mean,
            low,
            high,
            int(diff.size),
            "cells",
            verdict,
            reason,
            "Alignment of Modular minus Modular-op",
        )
    )
    for model in MODULAR_MODELS:
        rows = table["model"] == model
        for metric in ("adaptation", "inverse_mutual_info"):
            measured[f"{_slug(model)}_{metric}"] = float(table.loc[rows, metric].mean())
    rules = sorted(table["num_rules"].unique())
    measured["random_alignment"] = float(np.mean([(r - 1) / r for r in rules]))
    return _finish_claim(5, parts, measured)


def claim_6_training_speed(
    runs: pd.DataFrame, curves: pd.DataFrame, *, checkpoint: str = "last"
) -> ClaimResult:
    """Claim 6 (Fig. 7): better specialised models end lower and train faster.

    Speed is the area under a run's relative curve (perf / perf at iteration 0, against the
    fraction of training; :func:`normalised_curves`), lower is faster; final performance is the
    run's ID ``perf`` at ``checkpoint``. Parts, over cells: GT-Modular and Modular-op each train
    faster than Modular, and each ends lower than Modular (symmetric relative gaps).
    """
    table = _last(runs, checkpoint)
    _models_present(table, MODULAR_MODELS)
    area_cells = area_per_cell(curves)
    perf_cells = _cell_means(table, "perf")
    parts, measured = [], {}
    for model in ("gt-modular", "modular-op"):
        if model in area_cells and "modular" in area_cells:
            faster = relative_gap(area_cells["modular"], area_cells[model])
        else:
            faster = np.array([])
        parts.append(
            _decide(
                f"{model} trains faster than modular",
                faster,
                unit="cells",
                what="relative area under the curve, Modular vs it",
                pct=True,
            )
        )
        parts.append(
            _decide(
                f"{model} ends lower than modular",
                relative_gap(perf_cells["modular"], perf_cells[model]),
                unit="cells",
                what="relative final gap, Modular vs it",
                pct=True,
            )
        )
    for model in (*MODULAR_MODELS, "monolithic"):
        if model in area_cells:
            measured[f"{_slug(model)}_area"] = float(np.nanmean(area_cells[model]))
    return _finish_claim(6, parts, measured)


def in_cells(table: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The rows of a runs or curves ``table`` that lie in ``cells`` (rows of (setting, task, R))."""
    _require(cells, LEARNED_KEYS, "cells")
    keep = cells[list(LEARNED_KEYS)].drop_duplicates()
    merged = table.merge(keep, on=list(LEARNED_KEYS), how="left", indicator=True)
    return table[(merged["_merge"] == "both").to_numpy()]


def all_claims(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    *,
    checkpoint: str = "last",
    learned_cells: pd.DataFrame | None = None,
) -> list[ClaimResult]:
    """Claims 1-6 of spec §7 on one set of results, in order.

    With ``learned_cells`` (a :func:`learned` table) every claim is judged only on the
    (setting, task, R) cells in which the models have learned: the paper's claims are about
    trained models, and a cell where even GT-Modular has not learned compares initialisations.
    Each result then records how many cells it was judged on (``cells_judged`` of
    ``cells_total``, a column of :func:`claims_table`). A claim whose parts need cells that are
    all left out comes out inconclusive, with the reason its parts give.
    """
    total = judged = None
    if learned_cells is not None:
        _require(learned_cells, [*LEARNED_KEYS, "learned"], "learned cells")
        kept = learned_cells[learned_cells["learned"].astype(bool)]
        total, judged = len(learned_cells), len(kept)
        runs, curves = in_cells(runs, kept), in_cells(curves, kept)
    claims = [
        lambda: claim_1_ranking(runs, checkpoint=checkpoint),
        lambda: claim_2_benefit_grows_with_rules(runs, checkpoint=checkpoint),
        lambda: claim_3_modular_falls_short(runs, checkpoint=checkpoint),
        lambda: claim_4_collapse(runs, checkpoint=checkpoint),
        lambda: claim_5_specialisation(runs, checkpoint=checkpoint),
        lambda: claim_6_training_speed(runs, curves, checkpoint=checkpoint),
    ]
    results = []
    for number, judge in enumerate(claims, start=1):
        if runs.empty:
            claim, paper = CLAIM_TEXT[number]
            result = ClaimResult(number, claim, paper, [], reason="no cell has learned")
        else:
            result = judge()
        result.cells_judged, result.cells_total = judged, total
        results.append(result)
    return results


def claims_table(claims: Sequence[ClaimResult]) -> pd.DataFrame:
    """One row per claim: statement, what the paper reports, verdict and reason."""
    return pd.DataFrame([c.to_row() for c in claims]).set_index("claim")


# --------------------------------------------------------------------------------------
# Scale and examples
# --------------------------------------------------------------------------------------


def scale_summary(runs: pd.DataFrame) -> dict[str, Any]:
    """How large a set of results is, next to the paper's (:data:`PAPER_SCALE`; spec §1, §8).

    Returns
    -------
    dict with ``profiles``, ``runs`` (distinct trained runs), ``settings_ranked`` (settings of the
    ranking, spec §5.6), ``num_rules`` (every R of the results), ``capacities`` (the most
    capacities any setting has), ``num_rules_per_setting`` and ``capacities_per_setting`` (a
    profile's grid may differ by setting), ``data_seeds``, ``seeds`` and ``iterations`` (per
    setting).
    """
    _require(runs, [*RUN_KEYS, "checkpoint", "profile"], "runs")
    table = runs[runs["model"] != "random"]
    last = table[table["checkpoint"] == "last"] if (table["checkpoint"] == "last").any() else table
    setting_keys = [k for k in metrics.DEFAULT_SETTING_KEYS if k != "checkpoint"]
    by_setting = table.groupby("setting")
    capacities = {
        str(s): int(group[["encoder_dim", "dim"]].drop_duplicates().shape[0])
        for s, group in by_setting
    }
    return {
        "profiles": sorted(set(table["profile"])),
        "runs": int(last.drop_duplicates(list(RUN_KEYS)).shape[0]),
        "settings_ranked": int(last.drop_duplicates(setting_keys).shape[0]),
        "num_rules": tuple(int(r) for r in sorted(table["num_rules"].unique())),
        "num_rules_per_setting": {
            str(s): tuple(int(r) for r in sorted(group["num_rules"].unique()))
            for s, group in by_setting
        },
        "capacities": max(capacities.values()),
        "capacities_per_setting": capacities,
        "data_seeds": int(table["data_seed"].nunique()),
        "seeds": int(table["seed"].nunique()),
        "iterations": {
            str(k): int(v) for k, v in table.groupby("setting")["iterations"].max().items()
        },
    }


def capacity_note(runs: pd.DataFrame, *, single: str) -> str:
    """What a per-capacity figure can show, from the capacities each setting holds.

    ``single`` is the sentence for results with one capacity in every setting (what the figure
    then cannot show). Otherwise the note names the settings with more than one capacity, and
    the settings that hold one (each of their models and *R* is a single point).
    """
    counts = scale_summary(runs)["capacities_per_setting"]
    several = {s: n for s, n in counts.items() if n > 1}
    if not several:
        return single
    named = ", ".join(f"{s.upper()} {n}" for s, n in several.items())
    one = [s.upper() for s, n in counts.items() if n == 1]
    rest = f"; {' and '.join(one)} {'hold' if len(one) > 1 else 'holds'} one" if one else ""
    return f"Capacities per model and *R*: {named}{rest}."


def search_version_note(runs: pd.DataFrame) -> str:
    """Which MHA search versions the results hold, as the lead-in of a per-version figure.

    The paper pools the two versions in every figure (errata, item 6). Results with both get the
    pooled reading; results with one (a profile that trains a single version, as the CPU
    ``reference`` does) say so, since a per-version figure then has one row and nothing was pooled.
    """
    if not isinstance(runs, pd.DataFrame) or "setting" not in runs or "search_version" not in runs:
        raise ValueError("runs must be a runs table with setting and search_version columns")
    versions = sorted(
        int(v) for v in runs.loc[runs["setting"] == "mha", "search_version"].dropna().unique()
    )
    if not versions:
        return "These results hold no MHA runs, so there is no search version to draw."
    if len(versions) == 1:
        return (
            f"These results hold search version {versions[0]} only, so the other figures pooled "
            "nothing and the figure below has one row (the calibration chapter draws both "
            "versions side by side):"
        )
    shown = " and ".join(map(str, versions))
    return (
        f"These results hold search versions {shown}, pooled in the other figures as the paper "
        "does; drawn apart, one row per version:"
    )


def runs_per_cell_note(table: pd.DataFrame) -> str:
    """How a per-run mean and a per-cell mean (:data:`CELL_KEYS`) of ``table`` weigh the settings.

    ``table`` has one row per run (:data:`~mod_arch_core.results.RUN_KEYS`), e.g. a curves or a
    runs table. When every cell holds as many runs, the two means are the same number; when some
    hold more (MHA with two search versions), a per-run mean weighs those settings more.
    """
    missing = [k for k in RUN_KEYS if k not in table]
    if missing:
        raise ValueError(f"the table lacks columns {missing}")
    runs = table.drop_duplicates(list(RUN_KEYS))
    per_cell = runs.groupby([*CELL_KEYS, "model"]).size()
    per_setting = per_cell.groupby(level="setting").max()
    if per_cell.nunique() == 1:
        return (
            f"every cell here holds {int(per_cell.iloc[0])} runs, so the two averages are the "
            "same number"
        )
    most = int(per_setting.max())
    heavy = [s.upper() for s, n in per_setting.items() if n == most]
    fewest = int(per_cell.min())
    return (
        f"{' and '.join(heavy)} cells hold {most} runs and the others as few as {fewest}, so a "
        f"per-run mean weighs {'those settings' if len(heavy) > 1 else 'that setting'} "
        f"{most / fewest:g} times as much"
    )


def scale_table(runs: pd.DataFrame) -> pd.DataFrame:
    """:func:`scale_summary` next to the paper's scale, as a two-column table for the book."""
    ours = scale_summary(runs)
    paper = PAPER_SCALE

    def iterations(values: dict[str, int]) -> str:
        return " / ".join(f"{values.get(s, 0):,}" for s in ("mlp", "mha", "rnn"))

    def per_setting(values: dict[str, Any], show: Any) -> str:
        """One value for all settings, or ``MLP ...; MHA ...`` where they differ."""
        shown = {s: show(v) for s, v in values.items()}
        if len(set(shown.values())) == 1:
            return next(iter(shown.values()))
        return "; ".join(f"{s.upper()} {shown[s]}" for s in SETTINGS if s in shown)

    rows = {
        "profile": (", ".join(ours["profiles"]), "paper"),
        "trained runs": (f"{ours['runs']:,}", f"{paper['runs']:,}"),
        "settings ranked (Fig. 3)": (
            f"{ours['settings_ranked']:,}",
            f"{paper['settings_ranked']:,}",
        ),
        "numbers of rules R": (
            per_setting(ours["num_rules_per_setting"], lambda rs: ", ".join(map(str, rs))),
            ", ".join(map(str, paper["num_rules"])),
        ),
        "capacities (E, D = 4E)": (
            per_setting(ours["capacities_per_setting"], str),
            str(paper["capacities"]),
        ),
        "data seeds x model seeds": (
            f"{ours['data_seeds']} x {ours['seeds']}",
            f"{paper['data_seeds']} x {paper['seeds']}",
        ),
        "iterations MLP / MHA / RNN": (
            iterations(ours["iterations"]),
            iterations(paper["iterations"]),
        ),
    }
    table = pd.DataFrame(rows, index=["these results", "paper"]).T
    table.index.name = "quantity"
    return table


def advantage(
    runs: pd.DataFrame,
    *,
    reference: str = "monolithic",
    metric: str = "perf",
    checkpoint: str = "last",
) -> pd.DataFrame:
    """Relative advantage of every model over ``reference`` per cell (Fig. 4, claims 2-3).

    In each cell (setting, task, R, capacity; seeds and search versions pooled) the advantage of a
    model is ``relative_gap(reference, model)`` on its mean ``metric``: positive when the model's
    loss or error is lower. Unitless, so cells of different settings and tasks can be averaged.

    Returns
    -------
    DataFrame with the cell keys, ``model`` and ``advantage`` (the reference itself is left out).
    """
    if metric not in ("perf", "perf_ood"):
        raise ValueError(f"metric must be 'perf' or 'perf_ood'; got {metric!r}")
    table = _last(runs, checkpoint)
    _models_present(table, [reference])
    cells = _cell_means(table, metric)
    frames = []
    for model in cells.columns:
        if model == reference:
            continue
        gap = relative_gap(cells[reference], cells[model])
        frames.append(cells.index.to_frame(index=False).assign(model=model, advantage=gap))
    return pd.concat(frames, ignore_index=True)


def run_activation_matrices(runs: pd.DataFrame, checkpoint: str = "last") -> dict[str, np.ndarray]:
    """The learned P of every run of a table, labelled "data seed d, seed s" (book chapter 4).

    Rows without a matrix (Monolithic) are skipped, so the result may be empty.
    """
    _require(runs, ["activation_matrix", "data_seed", "seed"], "runs")
    table = select_checkpoint(runs, checkpoint) if checkpoint != "pooled" else runs
    table = table[table["activation_matrix"] != ""].sort_values(["data_seed", "seed"])
    out: dict[str, np.ndarray] = {}
    for row in table.itertuples(index=False):
        label = f"data seed {row.data_seed}, seed {row.seed}"
        if getattr(row, "model", None) and table["model"].nunique() > 1:
            label = f"{row.model}, {label}"
        out[label] = np.asarray(json.loads(row.activation_matrix), dtype=float)
    return out


def example_activation_matrices(
    runs: pd.DataFrame,
    *,
    setting: str,
    task: str,
    num_rules: int,
    checkpoint: str = "last",
    models: Sequence[str] = MODULAR_MODELS,
) -> dict[str, np.ndarray]:
    """One learned P per model, for the first run (lowest data seed, seed, search version).

    Returns
    -------
    dict label -> (R, R) array, label "Model (data seed d, seed s)".
    """
    table = select_checkpoint(runs, checkpoint) if checkpoint != "pooled" else runs
    chosen = table[
        (table["setting"] == setting)
        & (table["task"] == task)
        & (table["num_rules"] == num_rules)
        & (table["activation_matrix"] != "")
    ]
    if chosen.empty:
        raise ValueError(
            f"no run with an activation matrix for setting={setting!r}, task={task!r}, "
            f"num_rules={num_rules}"
        )
    out: dict[str, np.ndarray] = {}
    labels = {"gt-modular": "GT-Modular", "modular-op": "Modular-op", "modular": "Modular"}
    for model in models:
        rows = chosen[chosen["model"] == model].sort_values(
            ["encoder_dim", "search_version", "data_seed", "seed"]
        )
        if rows.empty:
            continue
        row = rows.iloc[0]
        label = f"{labels.get(model, model)} (data seed {row['data_seed']}, seed {row['seed']})"
        out[label] = np.asarray(json.loads(row["activation_matrix"]), dtype=float)
    return out


# --------------------------------------------------------------------------------------
# Learned-ness: which cells of the results can judge the paper at all
# --------------------------------------------------------------------------------------

#: Regression has learned when the final ID L1 loss is at most this fraction of the untrained one.
LEARNED_LOSS_FRACTION = 0.5
#: Classification has learned when the final ID error is at most this many percent (chance: 50%).
LEARNED_MAX_ERROR = 25.0
#: Two models separate when their mean difference exceeds this many standard errors (~95%).
SEPARATION_Z = 2.0
#: Keys of a learned-ness cell: what a reader compares in one panel point of Fig. 4.
LEARNED_KEYS: tuple[str, ...] = ("setting", "task", "num_rules")


def _sem(values: pd.Series) -> float:
    x = values.dropna().to_numpy(dtype=np.float64)
    return float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else np.nan


def learned(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    *,
    checkpoint: str = "last",
    model: str = "gt-modular",
    baseline: str = "monolithic",
    by: Sequence[str] = (),
    loss_fraction: float = LEARNED_LOSS_FRACTION,
    max_error: float = LEARNED_MAX_ERROR,
    z: float = SEPARATION_Z,
) -> pd.DataFrame:
    """Whether the models of each (setting, task, R) cell have learned, and whether they separate.

    The paper's findings (its §5, Figs. 3-7) compare *trained* models; a cell in which even the
    model with the ground-truth routing has not learned its task compares initialisations, and a
    figure drawn from it says nothing about the paper. This decides it from the data, per cell
    (setting, task, R, plus ``by``; capacities, search versions, data seeds and seeds pooled):

    * **learned**: ``model`` (GT-Modular, the easiest model by construction) reaches, at
      ``checkpoint``, a mean ID L1 loss of at most ``loss_fraction`` times its mean untrained loss
      (iteration 0 of ``curves``) for regression, or a mean ID error of at most ``max_error`` %
      for classification (chance is 50%);
    * **separated**: ``model`` and ``baseline`` (Monolithic) differ by more than ``z`` standard
      errors of the difference of their means over runs, ``sqrt(se_model^2 + se_baseline^2)``:
      beyond seed noise.

    Parameters
    ----------
    runs, curves : DataFrame
        A runs table and its curves table (:mod:`mod_arch_core.results`).
    checkpoint : {"last", "best"}
    model, baseline : str
        The model whose learning is judged and the one it must separate from.
    by : sequence of str
        Extra cell keys, e.g. ``("search_version",)`` to judge the MHA search versions apart.
    loss_fraction, max_error, z : float
        The thresholds (:data:`LEARNED_LOSS_FRACTION`, :data:`LEARNED_MAX_ERROR`,
        :data:`SEPARATION_Z`).

    Returns
    -------
    DataFrame
        One row per cell, sorted by the keys: the keys, ``runs`` (runs of ``model``), ``untrained``
        and ``final`` (``model``'s means), ``threshold`` (the final value needed to count as
        learned), ``learned`` (bool), ``baseline_final``, ``difference`` (baseline minus model;
        positive when ``model`` is better), ``se``, ``separated`` (bool) and ``verdict``: one of
        "learned, separates", "learned, within noise", "not learned".
    """
    checkpoint = check_checkpoint(checkpoint)
    if checkpoint == "pooled":
        raise ValueError("learned() judges one checkpoint: 'last' or 'best', got 'pooled'")
    if not 0 < loss_fraction < 1:
        raise ValueError(f"loss_fraction must lie in (0, 1), got {loss_fraction}")
    if not 0 < max_error < 50:
        raise ValueError(f"max_error must lie in (0, 50) percent, got {max_error}")
    keys = [*LEARNED_KEYS, *by]
    _require(runs, [*keys, "model", "checkpoint", "perf"], "runs")
    _require(curves, [*keys, "model", "iteration", "perf"], "curves")
    table = select_checkpoint(runs, checkpoint)
    _models_present(table, [model, baseline])
    mine = table[table["model"] == model]
    theirs = table[table["model"] == baseline]
    start = curves[(curves["model"] == model) & (curves["iteration"] == 0)]
    if start.empty:
        raise ValueError(
            f"the curves table has no iteration-0 rows of {model}; the untrained value is needed"
        )
    group = lambda df: df.groupby(keys, dropna=False)["perf"]  # noqa: E731
    cells = pd.DataFrame(
        {
            "runs": group(mine).size(),
            "untrained": group(start).mean(),
            "final": group(mine).mean(),
            "se_model": group(mine).agg(_sem),
            "baseline_final": group(theirs).mean(),
            "se_baseline": group(theirs).agg(_sem),
        }
    )
    cells = cells[cells["runs"].notna() & (cells["runs"] > 0)].reset_index()
    cells["runs"] = cells["runs"].astype(int)
    is_cls = cells["task"] == "classification"
    cells["threshold"] = np.where(is_cls, max_error, loss_fraction * cells["untrained"])
    cells["learned"] = (cells["final"] <= cells["threshold"]).astype(bool)
    cells["difference"] = cells["baseline_final"] - cells["final"]
    cells["se"] = np.sqrt(cells["se_model"] ** 2 + cells["se_baseline"] ** 2)
    cells["separated"] = (cells["difference"].abs() > z * cells["se"]).astype(bool)
    cells["verdict"] = np.where(
        ~cells["learned"],
        "not learned",
        np.where(cells["separated"], "learned, separates", "learned, within noise"),
    )
    return cells[[*keys, *_LEARNED_OUTPUTS]].sort_values(keys, ignore_index=True)


#: Columns :func:`learned` adds to its cell keys.
_LEARNED_OUTPUTS: tuple[str, ...] = (
    "runs",
    "untrained",
    "final",
    "threshold",
    "learned",
    "baseline_final",
    "difference",
    "se",
    "separated",
    "verdict",
)


def _rule_list(values: Iterable[Any]) -> str:
    return ", ".join(str(int(v)) for v in sorted(values))


def learned_summary(cells: pd.DataFrame) -> str:
    """Per setting, in how many cells of a :func:`learned` table GT-Modular has learned and
    separates from Monolithic, as a clause for the book's prose, e.g. "GT-Modular has learned in
    10 of 10 MLP cells (separating from Monolithic beyond seed noise in 6), 2 of 8 MHA cells (1)
    and 8 of 8 RNN cells (8)"."""
    needed = ["setting", "learned", "separated"]
    if not isinstance(cells, pd.DataFrame) or cells.empty or any(c not in cells for c in needed):
        raise ValueError("cells must be a non-empty table of analysis.learned()")
    parts = []
    for setting in [s for s in SETTINGS if s in set(cells["setting"])]:
        part = cells[cells["setting"] == setting]
        learned_ = int(part["learned"].sum())
        both = int((part["learned"] & part["separated"]).sum())
        parts.append((f"{learned_} of {len(part)} {setting.upper()} cells", both))
    first, *rest = parts
    text = (
        f"GT-Modular has learned in {first[0]} (separating from Monolithic beyond seed noise "
        f"in {first[1]})"
    )
    for i, (what, both) in enumerate(rest):
        text += f"{' and' if i == len(rest) - 1 else ','} {what} ({both})"
    return text


def learned_caveat(
    cells: pd.DataFrame,
    *,
    settings: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    what: str = "this figure",
) -> str:
    """A MyST admonition naming the cells of a figure whose models have not learned, or ``""``.

    ``cells`` is a :func:`learned` table; ``settings`` and ``tasks`` restrict it to the cells a
    figure draws (None: all). The text is generated from the table and the thresholds it was
    judged with, so it changes with the results: it lists the cells that have not learned
    (setting, task and the values of R), says that differences between models there are
    differences between barely trained models, and adds the learned cells in which GT-Modular and
    Monolithic are within seed noise. Returns an empty string when every cell in scope has learned
    and separates, so a chapter can paste it unconditionally. The admonition is a ``warning`` when
    a cell has not learned and a ``note`` when cells are only within noise; it carries the CSS
    class ``learned-caveat`` (the book's browser tests look for it).
    """
    _require(cells, [*LEARNED_KEYS, "learned", "separated", "threshold"], "learned cells")
    scope = cells
    if settings is not None:
        scope = scope[scope["setting"].isin(list(settings))]
    if tasks is not None:
        scope = scope[scope["task"].isin(list(tasks))]
    if scope.empty:
        return ""
    stuck = scope[~scope["learned"]]
    noisy = scope[scope["learned"] & ~scope["separated"]]
    if stuck.empty and noisy.empty:
        return ""

    extra = [c for c in cells.columns if c not in (*LEARNED_KEYS, *_LEARNED_OUTPUTS)]

    def label(setting: str, task: str, values: tuple) -> str:
        named = [str(setting).upper()]
        for key, value in zip(extra, values, strict=True):
            if key == "search_version":
                named.append(f"search v{int(value)}")
            else:
                named.append(f"{key} {value}")
        return " ".join([*named, task])

    def listing(part: pd.DataFrame) -> str:
        groups = []
        for key, rows in part.groupby(["setting", "task", *extra], sort=False, dropna=False):
            name = label(key[0], key[1], tuple(key[2:]))
            groups.append(f"{name} (R = {_rule_list(rows['num_rules'])})")
        return "; ".join(groups)

    lines = []
    if not stuck.empty:
        fraction = scope.loc[scope["task"] == "regression", "threshold"]
        rule = []
        if (scope["task"] == "classification").any():
            rule.append(f"classification error at most {LEARNED_MAX_ERROR:g}%")
        if not fraction.empty:
            rule.append(f"regression loss at most {LEARNED_LOSS_FRACTION:g} of its untrained value")
        lines.append(
            f"In {len(stuck)} of the {len(scope)} cells (setting, task, R) of {what}, even "
            f"GT-Modular has not learned its task ({' and '.join(rule)}; `analysis.learned`): "
            f"{listing(stuck)}. "
            "Differences between models there are differences between barely trained models, "
            "not evidence for or against the paper."
        )
    if not noisy.empty:
        lines.append(
            f"In {_count(len(noisy), 'learned cells')} GT-Modular and Monolithic are within seed "
            "noise "
            f"({SEPARATION_Z:g} standard errors of their difference): {listing(noisy)}; these "
            "seeds do not resolve which of the two is better there."
        )
    if stuck.empty:
        title, kind = "Some cells are within seed noise", "note"
    else:
        title, kind = "Not every cell has learned", "warning"
    body = "\n\n".join(lines)
    return f"```{{admonition}} {title}\n:class: {kind} learned-caveat\n\n{body}\n```\n"
