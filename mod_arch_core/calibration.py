"""Are the iteration budgets long enough? Curves at a budget B against the same runs continued.

The book's results need budgets "where the loss has flattened or where the ranking of models no
longer changes", two criteria fixed before the runs were made. The ``calibration`` profile trains the four paper models k times
longer than the budget with the same recipe; with a constant learning rate and a fixed data
stream per run, the first B steps of such a run *are* the run at budget B. So one long run gives
both numbers (``calibration`` trains 4x the MLP and MHA budgets and 2x the RNN one), and these
functions compare them:

* :func:`window_means`: each run's ID performance averaged over the last ``window`` evaluations
  up to a step (the curves are measured on two small batches, so single points are noisy);
* :func:`budget_comparison`: per setting, task and model, the mean over runs at B and at the end,
  the relative improvement, and the rank of the model at both;
* :func:`ranking_changes`: per setting and task, the ranking at B and at the end and whether it
  changed;
* :func:`recipe_comparison` and :func:`recipe_changes`: the same cells at the budget under the
  calibration's constant learning rate and under another recipe (the ``reference`` results, whose
  learning rate decays over the last steps), and whether the recipe changes which model wins.

All pure functions of a curves table (:data:`mod_arch_core.results.CURVE_COLUMNS`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mod_arch_core.results import RUN_KEYS
from mod_arch_core.validation import check_int

__all__ = [
    "budget_comparison",
    "describe",
    "describe_recipe",
    "learned_at",
    "ranking_changes",
    "recipe_changes",
    "recipe_comparison",
    "window_means",
]


def _check_curves(curves: pd.DataFrame) -> None:
    if not isinstance(curves, pd.DataFrame) or curves.empty:
        raise ValueError("curves must be a non-empty curves table (results.CURVE_COLUMNS)")
    missing = [c for c in (*RUN_KEYS, "iteration", "perf") if c not in curves.columns]
    if missing:
        raise ValueError(f"the curves table lacks columns {missing}")


def window_means(curves: pd.DataFrame, step: int, *, window: int = 3) -> pd.DataFrame:
    """Each run's ID ``perf`` averaged over its last ``window`` evaluations at or before ``step``.

    Returns one row per run: the :data:`RUN_KEYS` columns, ``step`` and ``perf``. A run whose
    curve does not reach ``step`` is an error (the long runs must be at least that long).
    """
    _check_curves(curves)
    step = check_int(step, "step", minimum=1)
    window = check_int(window, "window", minimum=1)
    keys = list(RUN_KEYS)
    upto = curves[curves["iteration"] <= step]
    short = curves.groupby(keys, dropna=False)["iteration"].max()
    if (short < step).any():
        raise ValueError(
            f"{int((short < step).sum())} runs end before step {step} "
            f"(last evaluation at {int(short.min())}); calibrate with longer runs"
        )
    tail = upto.sort_values("iteration").groupby(keys, dropna=False).tail(window)
    out = tail.groupby(keys, dropna=False, as_index=False)["perf"].mean()
    return out.assign(step=step)


#: Extra grouping of the comparison: MHA's two search versions are two tasks of their own (spec
#: §2.2), so the ranking is judged per version (NaN for the settings without versions).
VERSION_KEYS: tuple[str, ...] = ("search_version",)


def _group_keys(frame: pd.DataFrame) -> list[str]:
    """``setting``, ``task`` and, when the frame has them, the :data:`VERSION_KEYS`."""
    return ["setting", "task", *(k for k in VERSION_KEYS if k in frame.columns)]


def budget_comparison(
    curves: pd.DataFrame, budgets: Mapping[str, int], *, window: int = 3
) -> pd.DataFrame:
    """Mean ID performance of each model at its setting's budget B and at the end of the runs.

    Parameters
    ----------
    curves : curves table of runs longer than B (the ``calibration`` profile)
    budgets : iteration budget B per setting, e.g. ``{"mlp": 2000, "mha": 600, "rnn": 1000}``
    window : evaluations averaged per run (:func:`window_means`)

    Returns
    -------
    One row per setting, task, search version (NaN outside MHA; each version is judged on its
    own) and model: ``budget``, ``longer`` (the runs' last iteration),
    ``perf_at_budget``, ``perf_at_longer`` (means over runs; lower is better, loss or error %),
    ``improvement`` (relative fall from B to the end, e.g. 0.25 = 25% lower), ``rank_at_budget``
    and ``rank_at_longer`` (1 = best within the setting and task).
    """
    _check_curves(curves)
    groups = _group_keys(curves)
    keys = [*groups, "model"]
    parts = []
    for setting, part in curves.groupby("setting", sort=True):
        if setting not in budgets:
            raise ValueError(f"no budget for setting {setting!r}; got budgets for {list(budgets)}")
        budget = check_int(budgets[setting], f"budgets[{setting!r}]", minimum=1)
        at_b = window_means(part, budget, window=window).groupby(
            keys, as_index=False, dropna=False
        )["perf"]
        longer = int(part["iteration"].max())
        if longer <= budget:
            raise ValueError(
                f"{setting}: the runs end at {longer} steps, not after the budget {budget}"
            )
        at_kb = window_means(part, longer, window=window).groupby(
            keys, as_index=False, dropna=False
        )
        merged = at_b.mean().rename(columns={"perf": "perf_at_budget"})
        merged = merged.merge(at_kb["perf"].mean().rename(columns={"perf": "perf_at_longer"}))
        parts.append(merged.assign(budget=budget, longer=longer))
    merged = pd.concat(parts, ignore_index=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        merged["improvement"] = 1.0 - merged["perf_at_longer"] / merged["perf_at_budget"]
    group = merged.groupby(groups, dropna=False)
    merged["rank_at_budget"] = group["perf_at_budget"].rank(method="min").astype(int)
    merged["rank_at_longer"] = group["perf_at_longer"].rank(method="min").astype(int)
    return merged[
        [
            *groups,
            "model",
            "budget",
            "longer",
            "perf_at_budget",
            "perf_at_longer",
            "improvement",
            "rank_at_budget",
            "rank_at_longer",
        ]
    ]


def ranking_changes(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per setting and task: the models best-first at B and at the end, and whether the order changed.

    ``comparison`` is the output of :func:`budget_comparison`. Returns columns ``setting``,
    ``task``, ``order_at_budget``, ``order_at_longer`` (model names joined by ``" > "``, best
    first), ``winner_same`` and ``order_same`` (booleans), and ``median_improvement`` over models.
    """
    rows = []
    groups = _group_keys(comparison)
    for values, part in comparison.groupby(groups, sort=True, dropna=False):
        rows.append(
            {
                **dict(zip(groups, values, strict=True)),
                **_orders(part, "perf_at_budget", "perf_at_longer", ("at_budget", "at_longer")),
                "median_improvement": float(part["improvement"].median()),
            }
        )
    return pd.DataFrame(rows)


def _orders(part: pd.DataFrame, first: str, second: str, names: tuple[str, str]) -> dict:
    """The models best-first by column ``first`` and by ``second`` (ties by name), and whether
    the winner and the whole order agree: ``order_<names[0]>``, ``order_<names[1]>``,
    ``winner_same``, ``order_same``."""
    one = part.sort_values([first, "model"])["model"].tolist()
    two = part.sort_values([second, "model"])["model"].tolist()
    return {
        f"order_{names[0]}": " > ".join(one),
        f"order_{names[1]}": " > ".join(two),
        "winner_same": one[0] == two[0],
        "order_same": one == two,
    }


def describe(
    comparison: pd.DataFrame, setting: str, task: str, *, search_version: int | None = None
) -> str:
    """One sentence on a setting and task of :func:`budget_comparison`, for the book's prose.

    States the median and the largest relative change after the budget (and which model), and
    whether the winner and the full order of the models are the same at the end. An MHA
    comparison with both search versions needs ``search_version``.
    """
    part = comparison[(comparison["setting"] == setting) & (comparison["task"] == task)]
    if search_version is not None:
        part = part[part["search_version"] == search_version]
    if part.empty:
        raise ValueError(
            f"no rows for setting={setting!r}, task={task!r}, search_version={search_version!r} "
            "in the comparison"
        )
    if "search_version" in part.columns and part["search_version"].nunique() > 1:
        raise ValueError(
            f"{setting} {task} has search versions {sorted(part['search_version'].unique())}: "
            "pass search_version"
        )
    (change,) = ranking_changes(part).to_dict("records")
    top = part.loc[part["improvement"].idxmax()]
    order = "the same order" if change["order_same"] else "a different order"
    winner = "the same winner" if change["winner_same"] else "a different winner"
    return (
        f"after the budget the median model {_change_words(change['median_improvement'])} "
        f"(most: {top['model']}, {100 * top['improvement']:.0f}% lower); the end of the runs has "
        f"{winner} and {order} ({change['order_at_longer']})"
    )


def _change_words(improvement: float) -> str:
    """``0.25`` -> "improves by 25%", ``-0.02`` -> "worsens by 2%" (lower is better)."""
    percent = round(100 * improvement)
    if percent == 0:
        return "stays within 1%"
    return f"{'improves' if percent > 0 else 'worsens'} by {abs(percent)}%"


def learned_at(
    curves: pd.DataFrame,
    budgets: Mapping[str, int],
    *,
    window: int = 3,
    model: str = "gt-modular",
) -> pd.DataFrame:
    """Has ``model`` learned by the budget, and by the end of the runs? Per setting, task, version.

    The criterion of :func:`mod_arch_core.analysis.learned`, applied to the curves: regression
    has learned when the mean ID loss is at most
    :data:`~mod_arch_core.analysis.LEARNED_LOSS_FRACTION` of the untrained one (iteration 0),
    classification when the mean ID error is at most
    :data:`~mod_arch_core.analysis.LEARNED_MAX_ERROR` %. GT-Modular is the model whose routing is
    given, so a cell in which it has not learned is one where no model has.

    Returns one row per setting, task (and search version): ``untrained``, ``at_budget``,
    ``at_end`` (means over runs of :func:`window_means`), ``threshold``, ``learned_at_budget``
    and ``learned_at_end``.
    """
    from mod_arch_core.analysis import LEARNED_LOSS_FRACTION, LEARNED_MAX_ERROR

    _check_curves(curves)
    part = curves[curves["model"] == model]
    if part.empty:
        raise ValueError(f"the curves have no runs of {model!r}")
    groups = _group_keys(part)
    untrained = (
        part[part["iteration"] == 0]
        .groupby(groups, dropna=False, as_index=False)["perf"]
        .mean()
        .rename(columns={"perf": "untrained"})
    )
    rows = []
    for setting, one in part.groupby("setting", sort=True):
        if setting not in budgets:
            raise ValueError(f"no budget for setting {setting!r}; got budgets for {list(budgets)}")
        budget = check_int(budgets[setting], f"budgets[{setting!r}]", minimum=1)
        end = int(one["iteration"].max())
        at = {
            name: window_means(one, step, window=window)
            .groupby(groups, dropna=False, as_index=False)["perf"]
            .mean()
            .rename(columns={"perf": name})
            for name, step in (("at_budget", min(budget, end)), ("at_end", end))
        }
        rows.append(at["at_budget"].merge(at["at_end"], on=groups).assign(budget=budget, end=end))
    table = pd.concat(rows, ignore_index=True).merge(untrained, on=groups, how="left")
    classification = table["task"] == "classification"
    table["threshold"] = np.where(
        classification, LEARNED_MAX_ERROR, LEARNED_LOSS_FRACTION * table["untrained"]
    )
    table["learned_at_budget"] = table["at_budget"] <= table["threshold"]
    table["learned_at_end"] = table["at_end"] <= table["threshold"]
    return table[
        [*groups, "budget", "end", "untrained", "at_budget", "at_end", "threshold",
         "learned_at_budget", "learned_at_end"]
    ]  # fmt: skip


#: A cell of the recipe comparison: one setting, task, search version, R and capacity.
CELL_KEYS: tuple[str, ...] = (
    "setting",
    "task",
    "search_version",
    "num_rules",
    "encoder_dim",
    "dim",
)


def recipe_comparison(
    curves: pd.DataFrame, runs: pd.DataFrame, *, window: int = 3, checkpoint: str = "last"
) -> pd.DataFrame:
    """Each model of the calibration's cells at the budget: constant learning rate vs a recipe.

    ``curves`` are the ``calibration`` runs (a constant learning rate, so their first B steps
    are the run at budget B); ``runs`` are results trained *to* B with the recipe under test
    (the ``reference`` results, whose learning rate decays over the last part of training), of
    which only the cells the calibration also trained are compared. The budget B of a setting is
    the ``iterations`` of its rows in ``runs``.

    The constant-lr value of a run is its mean ID ``perf`` over the last ``window`` evaluations
    up to B (:func:`window_means`); the recipe's is the ``perf`` of its ``checkpoint`` at the
    final evaluation, the number the book reports. Both are then averaged over runs.

    Returns one row per cell (:data:`CELL_KEYS`) and model: ``budget``, ``perf_constant``,
    ``perf_recipe``, their standard errors over runs ``se_constant`` and ``se_recipe``,
    ``runs_constant``, ``runs_recipe``, ``rank_constant`` and ``rank_recipe`` (1 = best within
    the cell). No shared cell is an error.
    """
    _check_curves(curves)
    if not isinstance(runs, pd.DataFrame) or runs.empty:
        raise ValueError("runs must be a non-empty runs table (results.RUN_COLUMNS)")
    missing = [
        c for c in (*CELL_KEYS, "model", "checkpoint", "iterations", "perf") if c not in runs
    ]
    if missing:
        raise ValueError(f"the runs table lacks columns {missing}")
    if checkpoint not in set(runs["checkpoint"]):
        raise ValueError(
            f"checkpoint must be one of {sorted(set(runs['checkpoint']))}, got {checkpoint!r}"
        )
    window = check_int(window, "window", minimum=1)
    cells, keys = list(CELL_KEYS), [*CELL_KEYS, "model"]
    recipe = runs[runs["checkpoint"] == checkpoint]
    budgets = recipe.groupby("setting")["iterations"].unique()
    mixed = {setting: sorted(b) for setting, b in budgets.items() if len(b) > 1}
    if mixed:
        raise ValueError(f"the runs mix iteration budgets within a setting: {mixed}")
    parts = []
    for setting in sorted(set(curves["setting"]) & set(recipe["setting"])):
        budget = int(budgets[setting][0])
        constant = window_means(curves[curves["setting"] == setting], budget, window=window)
        parts.append(
            constant.groupby(keys, dropna=False, as_index=False)
            .agg(
                perf_constant=("perf", "mean"),
                se_constant=("perf", _standard_error),
                runs_constant=("perf", "size"),
            )
            .assign(budget=budget)
        )
    if not parts:
        raise ValueError("the curves and the runs share no setting")
    constant = pd.concat(parts, ignore_index=True)
    trained = recipe.groupby(keys, dropna=False, as_index=False).agg(
        perf_recipe=("perf", "mean"),
        se_recipe=("perf", _standard_error),
        runs_recipe=("perf", "size"),
    )
    table = constant.merge(trained, on=keys, how="inner")
    if table.empty:
        raise ValueError(
            "the curves and the runs share no cell (setting, task, search version, R, capacity)"
        )
    group = table.groupby(cells, dropna=False)
    table["rank_constant"] = group["perf_constant"].rank(method="min").astype(int)
    table["rank_recipe"] = group["perf_recipe"].rank(method="min").astype(int)
    return table[
        [*keys, "budget", "perf_constant", "perf_recipe", "se_constant", "se_recipe",
         "runs_constant", "runs_recipe", "rank_constant", "rank_recipe"]
    ]  # fmt: skip


def recipe_changes(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per cell of :func:`recipe_comparison`: the models best-first under the constant learning
    rate and under the recipe, ``winner_same`` and ``order_same``; ``gap_constant`` and
    ``gap_recipe``, how much worse the second model is than the winner (relative: 0.1 = 10%);
    ``separated_constant`` and ``separated_recipe``, whether that gap exceeds twice the standard
    error of the difference of the two means (seed noise), which says whether a different winner
    is a near tie; and ``median_change``, the median over models of the recipe's relative change
    (e.g. -0.2 = 20% lower loss or error)."""
    rows = []
    cells = list(CELL_KEYS)
    for values, part in comparison.groupby(cells, sort=True, dropna=False):
        with np.errstate(divide="ignore", invalid="ignore"):
            change = part["perf_recipe"] / part["perf_constant"] - 1.0
        rows.append(
            {
                **dict(zip(cells, values, strict=True)),
                "budget": int(part["budget"].iloc[0]),
                **_orders(part, "perf_constant", "perf_recipe", ("constant", "recipe")),
                "gap_constant": _runner_up_gap(part["perf_constant"]),
                "gap_recipe": _runner_up_gap(part["perf_recipe"]),
                "separated_constant": _separated(part, "perf_constant", "se_constant"),
                "separated_recipe": _separated(part, "perf_recipe", "se_recipe"),
                "median_change": float(change.median()),
            }
        )
    return pd.DataFrame(rows)


def _standard_error(values: pd.Series) -> float:
    """Standard error of the mean over runs (NaN for a single run)."""
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else np.nan


def _separated(part: pd.DataFrame, perf: str, se: str) -> bool:
    """Does the best model beat the runner-up by more than
    :data:`~mod_arch_core.analysis.SEPARATION_Z` (2) standard errors of the difference of their
    means, the book's "beyond seed noise"? False when it cannot be told (one model, one run)."""
    from mod_arch_core.analysis import SEPARATION_Z

    top = part.nsmallest(2, perf)
    if len(top) < 2:
        return False
    noise = SEPARATION_Z * float(np.sqrt((top[se] ** 2).sum()))
    return bool(top[perf].iloc[1] - top[perf].iloc[0] > noise)


def _runner_up_gap(perf: pd.Series) -> float:
    """Relative gap of the second-best value to the best (lower is better); NaN for one model."""
    best, second = [*perf.nsmallest(2).tolist(), np.nan][:2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(second) / np.float64(best) - 1.0)


def _cell_label(row: Mapping) -> str:
    """``MLP regression, R = 8, E = 32 / D = 128`` (and the search version where there is one)."""
    version = row.get("search_version")
    shown = "" if version is None or version != version else f", search version {version:g}"
    return (
        f"{str(row['setting']).upper()} {row['task']}{shown}, R = {row['num_rules']}, "
        f"E = {row['encoder_dim']} / D = {row['dim']}"
    )


def describe_recipe(changes: pd.DataFrame) -> str:
    """One or two sentences on :func:`recipe_changes`, for the book's prose.

    Counts the cells whose winner is the same under both recipes, and names each cell whose
    winner differs: *within seed noise* when under neither recipe the winner beats the runner-up
    by more than twice the standard error of their difference, otherwise a *clear* change.
    """
    if not isinstance(changes, pd.DataFrame) or changes.empty:
        raise ValueError("changes must be a non-empty table of calibration.recipe_changes")
    same = int(changes["winner_same"].sum())
    parts = [f"The winner is the same in {same} of {len(changes)} cells."]
    noise, clear = [], []
    for row in changes[~changes["winner_same"]].to_dict("records"):
        winners = (row["order_constant"].split(" > ")[0], row["order_recipe"].split(" > ")[0])
        text = (
            f"{_cell_label(row)}: {winners[0]} at the constant rate (runner-up "
            f"{row['gap_constant']:.1%} behind), {winners[1]} with the recipe "
            f"({row['gap_recipe']:.1%} behind)"
        )
        separated = row["separated_constant"] or row["separated_recipe"]
        (clear if separated else noise).append(text)
    if noise:
        parts.append(
            "Where it differs, the two leading models are within seed noise of each other under "
            "both recipes (the gap is less than twice the standard error of the difference of "
            "their means): " + "; ".join(noise) + "."
        )
    if clear:
        parts.append(
            f"In {len(clear)} cell{'s' if len(clear) > 1 else ''} the recipe changes a winner "
            "that was ahead beyond seed noise: " + "; ".join(clear) + "."
        )
    return " ".join(parts)
