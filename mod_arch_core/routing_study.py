"""Beyond the paper: can the survey's routing choices fix collapse? (book chapter 9).

Analysis of the ``routing-quick`` / ``routing`` profiles (the paper's four models and the routing
variants of :mod:`mod_arch_core.models.sparse_routing` on one grid) and of ``routing-explore``
(the exploration seeds on which the regulariser weights are chosen). Pure functions of runs
tables (:data:`mod_arch_core.results.RUN_COLUMNS`):

* :data:`TAXONOMY` / :func:`taxonomy_table`: which of the survey's design choices each model
  makes (survey-map §A3, §A11);
* :func:`option_values`, :func:`choose_weight`: the exploration step, with its selection rule;
* :func:`metrics_by_source`: the five metrics of the mean router probabilities and, for hard
  routers, of the selection frequencies, in long form;
* :func:`paired_differences`: variant minus base model on the same runs (same data seed, seed,
  R, task), with bootstrap intervals; the "balanced is not specialised" exhibit;
* :func:`headline_table`: Collapse-Avg, Alignment and ID performance at one R, per model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mod_arch_core.analysis import METRICS, bootstrap_ci, select_checkpoint, summarise
from mod_arch_core.models.registry import MODEL_NAMES
from mod_arch_core.results import RUN_KEYS, Results, ResultsError
from mod_arch_core.validation import PAPER_MODELS, check_int

__all__ = [
    "EXPLORE_WEIGHTS",
    "REGULARISERS",
    "ROUTING_MODELS",
    "SMOKE_OVERRIDES",
    "TAXONOMY",
    "choose_weight",
    "describe_difference",
    "exploration_overrides",
    "headline_table",
    "metrics_by_source",
    "option_values",
    "paired_differences",
    "run_exploration",
    "taxonomy_table",
    "verdict",
    "weight_decision",
]

#: Where each model sits in the survey's design space (survey-map §A3, §A11): what the router
#: looks at, how it selects, which auxiliary objective it adds, and who introduced the choice.
TAXONOMY: dict[str, dict[str, str]] = {
    "monolithic": {
        "routing": "none (one network)",
        "selection": "-",
        "regulariser": "-",
        "survey": "no modules",
        "introduced by": "-",
    },
    "modular": {
        "routing": "learned, per input (each module scores itself)",
        "selection": "soft (softmax)",
        "regulariser": "-",
        "survey": "learned soft routing §4.2.3",
        "introduced by": "Jacobs et al. 1991; Mittal et al. 2022",
    },
    "modular-op": {
        "routing": "learned, from the rule context only",
        "selection": "soft (softmax)",
        "regulariser": "-",
        "survey": "task-level routing §4.3",
        "introduced by": "Mittal et al. 2022",
    },
    "gt-modular": {
        "routing": "fixed: the true rule (oracle)",
        "selection": "hard (one-hot)",
        "regulariser": "-",
        "survey": "fixed routing §4.1",
        "introduced by": "Mittal et al. 2022",
    },
    "modular-topk": {
        "routing": "learned, per input",
        "selection": "hard top-1",
        "regulariser": "-",
        "survey": "hard learned routing §4.2.2",
        "introduced by": "Shazeer et al. 2017; Fedus et al. 2022",
    },
    "modular-top2": {
        "routing": "learned, per input",
        "selection": "sparse top-2 (renormalised)",
        "regulariser": "-",
        "survey": "sparse soft routing §4.2.3",
        "introduced by": "Shazeer et al. 2017",
    },
    "modular-gumbel": {
        "routing": "learned, per input",
        "selection": "Gumbel-softmax, straight-through one-hot",
        "regulariser": "-",
        "survey": "hard learned routing §4.2.2",
        "introduced by": "Jang et al. 2017; Maddison et al. 2017",
    },
    "modular-op-topk": {
        "routing": "learned, from the rule context only",
        "selection": "hard top-1",
        "regulariser": "-",
        "survey": "task-level hard routing §4.3",
        "introduced by": "Rosenbaum et al. 2018",
    },
    "modular-balanced": {
        "routing": "learned, per input",
        "selection": "soft (softmax)",
        "regulariser": "load balancing",
        "survey": "auxiliary balancing objective §4.2.2",
        "introduced by": "Fedus et al. 2022",
    },
    "modular-entropy": {
        "routing": "learned, per input",
        "selection": "soft (softmax)",
        "regulariser": "entropy / mutual information",
        "survey": "routing regulariser §4.2.2",
        "introduced by": "Kirsch et al. 2018 (modular networks)",
    },
    "modular-topk-balanced": {
        "routing": "learned, per input",
        "selection": "hard top-1",
        "regulariser": "load balancing",
        "survey": "Switch-style MoE §4.2.2",
        "introduced by": "Fedus et al. 2022",
    },
    "modular-gumbel-balanced": {
        "routing": "learned, per input",
        "selection": "Gumbel-softmax, straight-through one-hot",
        "regulariser": "load balancing",
        "survey": "hard learned routing §4.2.2",
        "introduced by": "Jang et al. 2017; Fedus et al. 2022",
    },
}
#: The routing variants beyond the paper, in the registry's order.
ROUTING_MODELS: tuple[str, ...] = tuple(m for m in MODEL_NAMES if m not in PAPER_MODELS)
#: Keys of one run: the rows of two models with equal keys saw the same task and data stream.
PAIR_KEYS: tuple[str, ...] = (*(k for k in RUN_KEYS if k != "model"), "checkpoint")


def taxonomy_table(models: Sequence[str] | None = None) -> pd.DataFrame:
    """:data:`TAXONOMY` as a table, one row per model (all of them by default)."""
    models = list(TAXONOMY) if models is None else list(models)
    unknown = [m for m in models if m not in TAXONOMY]
    if unknown:
        raise ValueError(f"no taxonomy entry for {unknown}; known: {', '.join(TAXONOMY)}")
    return pd.DataFrame([{"model": m, **TAXONOMY[m]} for m in models])


def option_values(runs: pd.DataFrame, option: str) -> pd.Series:
    """The value of routing option ``option`` in each row's ``model_options`` (0.0 when absent)."""
    if "model_options" not in runs.columns:
        raise ValueError("the runs table has no model_options column (results.RUN_COLUMNS)")
    return runs["model_options"].map(lambda s: float(json.loads(s or "{}").get(option, 0.0)))


def choose_weight(
    runs: pd.DataFrame,
    option: str,
    *,
    tolerance: float = 0.10,
    checkpoint: str = "last",
) -> tuple[pd.DataFrame, float]:
    """Pick a regulariser weight on exploration seeds (the rule is fixed before looking).

    For every value w of ``option`` (``balance_weight`` or ``entropy_weight``) among the rows of
    ``runs`` (the plain model is w = 0 and must be present): the mean ID ``perf`` per
    (setting, task, R) cell relative to w = 0, averaged over cells (``perf_change``, e.g. 0.05 =
    5% worse), and the mean Collapse-Avg and Alignment. The choice is the largest w whose
    ``perf_change`` is at most ``tolerance``: the strongest regularisation that costs (almost)
    nothing, the fairest chance the regulariser gets.

    Returns
    -------
    (table with one row per weight, chosen weight)
    """
    if not 0.0 <= float(tolerance):
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    table = select_checkpoint(runs, checkpoint).copy()
    other = "entropy_weight" if option == "balance_weight" else "balance_weight"
    if option not in ("balance_weight", "entropy_weight"):
        raise ValueError(f"option must be 'balance_weight' or 'entropy_weight', got {option!r}")
    table["weight"] = option_values(table, option)
    table = table[option_values(table, other) == 0.0]
    if not (table["weight"] == 0.0).any():
        raise ValueError(f"no run without {option} in the table: the baseline (w = 0) is needed")
    cells = ["setting", "task", "num_rules"]
    means = table.groupby([*cells, "weight"], as_index=False)[
        ["perf", "collapse_avg", "alignment"]
    ].mean()
    base = means[means["weight"] == 0.0].set_index(cells)["perf"]
    means["relative"] = means["perf"] / means.set_index(cells).index.map(base).to_numpy() - 1.0
    out = means.groupby("weight", as_index=False).agg(
        perf_change=("relative", "mean"),
        collapse_avg=("collapse_avg", "mean"),
        alignment=("alignment", "mean"),
        cells=("relative", "size"),
    )
    allowed = out[out["perf_change"] <= tolerance]["weight"]
    chosen = float(allowed.max()) if not allowed.empty else 0.0
    out["chosen"] = out["weight"] == chosen
    return out, chosen


def metrics_by_source(runs: pd.DataFrame, checkpoint: str = "last") -> pd.DataFrame:
    """The five metrics in long form with a ``source`` column.

    ``source`` is ``"probabilities"`` (P of the mean router probabilities, every modular model)
    or ``"selection"`` (P of the argmax selection frequencies, hard routers only: the
    ``*_selected`` columns). Monolithic rows are dropped.
    """
    table = select_checkpoint(runs, checkpoint)
    table = table[table["model"] != "monolithic"]
    keys = ["model", *PAIR_KEYS]
    parts = []
    for source, suffix in (("probabilities", ""), ("selection", "_selected")):
        columns = {f"{m}{suffix}": m for m in METRICS}
        long = table[keys + list(columns)].rename(columns=columns)
        long = long.melt(id_vars=keys, value_vars=list(METRICS), var_name="metric")
        parts.append(long.dropna(subset=["value"]).assign(source=source))
    return pd.concat(parts, ignore_index=True)


def paired_differences(
    runs: pd.DataFrame,
    base: str,
    variant: str,
    columns: Sequence[str] = ("perf", *METRICS),
    *,
    relative: Sequence[str] = ("perf", "perf_ood"),
    checkpoint: str = "last",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """``variant`` minus ``base`` on the same runs, per column, with a bootstrap interval.

    Rows are paired on :data:`PAIR_KEYS` (same task instance, seed, R and checkpoint), so the
    difference removes the variation between tasks and seeds. Columns in ``relative`` (the
    performance columns: a loss for regression, an error % for classification) are compared in
    relative terms: each pair's difference is divided by the base model's mean in its (setting,
    task, R) cell, so losses and errors can be pooled (0.1 = 10% worse than the base).

    Returns one row per column: ``base_mean``, ``variant_mean`` (plain means; NaN for the
    ``relative`` columns when the runs mix tasks, because a mean over an L1 loss and an error in %
    has no unit and no meaning), ``difference``
    (mean of the paired differences, relative for ``relative`` columns), ``ci_low``/``ci_high``
    (percentile bootstrap over pairs), ``is_relative``, ``excludes_zero`` (the interval excludes
    0) and ``pairs``.
    """
    table = select_checkpoint(runs, checkpoint)
    for name in (base, variant):
        if not (table["model"] == name).any():
            raise ValueError(
                f"no {name!r} rows in the table; models: {sorted(table.model.unique())}"
            )
    keys = list(PAIR_KEYS)
    a = table[table["model"] == base].set_index(keys)
    b = table[table["model"] == variant].set_index(keys)
    common = a.index.intersection(b.index)
    if common.empty:
        raise ValueError(f"{base!r} and {variant!r} share no run (same data seed, seed, R, task)")
    cells = ["setting", "task", "num_rules"]
    rows = []
    for column in columns:
        x, y = a.loc[common, column], b.loc[common, column]
        diff = (y - x).to_numpy(float)
        is_relative = column in relative
        if is_relative:
            scale = x.groupby(level=cells).transform("mean").to_numpy(float)
            with np.errstate(divide="ignore", invalid="ignore"):
                diff = np.where(scale != 0, diff / scale, np.nan)
        mean, low, high = bootstrap_ci(diff, confidence=confidence)
        pooled = is_relative and x.index.get_level_values("task").nunique() > 1
        rows.append(
            {
                "column": column,
                "base": base,
                "variant": variant,
                "base_mean": np.nan if pooled else float(np.nanmean(x)),
                "variant_mean": np.nan if pooled else float(np.nanmean(y)),
                "difference": mean,
                "ci_low": low,
                "ci_high": high,
                "is_relative": is_relative,
                "excludes_zero": bool(low > 0 or high < 0),
                "pairs": int(np.isfinite(diff).sum()),
            }
        )
    return pd.DataFrame(rows)


def _direction(row: pd.Series) -> int:
    """-1 if the interval lies below 0, +1 above, 0 if it contains 0."""
    return -1 if row["ci_high"] < 0 else (1 if row["ci_low"] > 0 else 0)


def verdict(differences: pd.DataFrame, variant: str) -> str:
    """The exhibit's verdict for one variant, from :func:`paired_differences` rows.

    Collapse is Collapse-Avg; specialisation is Alignment and inverse MI (lower is better for
    all); performance is the relative ID ``perf``. Each is "lower", "higher" or "unchanged"
    (interval containing 0); a variant that lowers collapse without improving specialisation is
    flagged "balanced is not specialised".
    """
    rows = differences[differences["variant"] == variant].set_index("column")
    needed = {"collapse_avg", "alignment", "inverse_mutual_info", "perf"}
    if not needed <= set(rows.index):
        raise ValueError(
            f"differences for {variant!r} lack columns {sorted(needed - set(rows.index))}"
        )
    collapse = _direction(rows.loc["collapse_avg"])
    special = {_direction(rows.loc[c]) for c in ("alignment", "inverse_mutual_info")}
    perf = _direction(rows.loc["perf"])
    words = {-1: "lower", 1: "higher", 0: "unchanged"}
    if -1 in special and 1 not in special:
        spec = "better"
    elif 1 in special and -1 not in special:
        spec = "worse"
    elif special == {0}:
        spec = "unchanged"
    else:
        spec = "mixed"
    text = (
        f"collapse {words[collapse]} ({rows.loc['collapse_avg', 'difference']:+.3f}), "
        f"specialisation {spec} (Alignment {rows.loc['alignment', 'difference']:+.3f}, "
        f"inverse MI {rows.loc['inverse_mutual_info', 'difference']:+.3f}), "
        f"ID error/loss {words[perf]} "
        f"({100 * rows.loc['perf', 'difference']:+.0f}%)"
    )
    if collapse == -1 and spec in ("unchanged", "worse", "mixed"):
        text += ": balanced, not specialised"
    return text


def headline_table(
    runs: pd.DataFrame,
    num_rules: int,
    *,
    columns: Sequence[str] = ("collapse_avg", "alignment", "inverse_mutual_info"),
    checkpoint: str = "last",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per model at one R: mean and bootstrap interval of each column, pooled over the rest.

    Wide table, one row per model present (monolithic has NaN routing metrics), columns
    ``<column>``, ``<column>_low``, ``<column>_high``, then ID performance per task
    (``perf_<task>``, with its interval): losses and errors are never pooled.
    """
    num_rules = check_int(num_rules, "num_rules", minimum=2)
    table = select_checkpoint(runs, checkpoint)
    table = table[table["num_rules"] == num_rules]
    if table.empty:
        present = sorted(int(r) for r in runs["num_rules"].unique())
        raise ValueError(f"no runs with R = {num_rules}; R in the table: {present}")

    def wide(part: pd.DataFrame, column: str, name: str) -> pd.DataFrame:
        s = summarise(part, ["model"], column, confidence=confidence)
        renamed = {"mean": name, "ci_low": f"{name}_low", "ci_high": f"{name}_high"}
        return s.rename(columns=renamed).drop(columns="n").set_index("model")

    parts = [wide(table, column, column) for column in columns]
    for task, part in table.groupby("task", sort=True):
        parts.append(wide(part, "perf", f"perf_{task}"))
    return pd.concat(parts, axis=1).reset_index()


#: Overrides that shrink ``routing-quick`` and ``routing-explore`` to a seconds-long run (tests,
#: the chapter's ``profile="smoke"``).
SMOKE_OVERRIDES: tuple[str, ...] = (
    "num_rules=[2, 4]",
    "data_seeds=[0]",
    "seeds=[0]",
    "iterations.mlp=20",
    "eval_every.mlp=10",
    "budget=smoke",
)
#: The weights tried on the exploration seeds, and the two regularisers (options of ``modular``).
EXPLORE_WEIGHTS: tuple[float, ...] = (0.01, 0.1, 1.0)
REGULARISERS: tuple[str, ...] = ("balance_weight", "entropy_weight")


def exploration_overrides(option: str, weight: float) -> list[str]:
    """The ``--set`` override that trains ``modular`` with one regulariser weight."""
    if option not in REGULARISERS:
        raise ValueError(f"option must be one of {', '.join(REGULARISERS)}, got {option!r}")
    return [f"model_options={{modular: {{{option}: {float(weight)}}}}}"]


def run_exploration(
    out: str | Path,
    *,
    weights: Sequence[float] = EXPLORE_WEIGHTS,
    overrides: Sequence[str] = (),
    executor: str = "process",
    workers: int | None = None,
) -> Results:
    """Run the ``routing-explore`` profile: plain Modular, then each regulariser at each weight.

    All into one folder (each weight has its own configuration hash, and rows record it in
    ``model_options``); resumable like every sweep. ``overrides`` shrink the profile (tests).
    Returns the merged results (:func:`mod_arch_core.sweep.collect`).
    """
    from mod_arch_core.sweep import collect, run_sweep  # lazily: sweeps sit above analysis

    runs = [[]] + [exploration_overrides(o, w) for w in weights for o in REGULARISERS]
    for extra in runs:
        summary = run_sweep(
            "routing-explore",
            out,
            overrides=[*overrides, *extra],
            executor=executor,
            workers=workers,
            progress=False,
        )
        if summary.failures:
            failed = summary.table[summary.table["status"] == "failed"]
            raise ResultsError(
                f"{summary.failures} exploration configuration(s) failed in {out}; first: "
                f"{failed['configuration'].iloc[0]}\n{failed['error'].iloc[0]}"
            )
    return collect(out)


def weight_decision(option: str, chosen: float) -> str:
    """What the exploration's choice means for the named model of a regulariser (book prose).

    Compares ``chosen`` (from :func:`choose_weight`) with the weight the registry fixes for
    ``modular-balanced`` / ``modular-entropy`` and says which weight the confirmation runs use.
    """
    from mod_arch_core.models.registry import BALANCE_WEIGHT, ENTROPY_WEIGHT

    if option not in REGULARISERS:
        raise ValueError(f"option must be one of {', '.join(REGULARISERS)}, got {option!r}")
    name, fixed = (
        ("modular-balanced", BALANCE_WEIGHT)
        if option == "balance_weight"
        else ("modular-entropy", ENTROPY_WEIGHT)
    )
    if chosen == fixed:
        return f"`{name}` uses this weight, {fixed:g}"
    if chosen == 0.0:
        return (
            f"no weight tried stays within the tolerance, so `{name}` keeps the registry's "
            f"{fixed:g} (for load balancing, Switch's published value): the confirmation runs "
            "measure the regulariser at its standard strength, not at a tuned one"
        )
    return (
        f"`{name}` uses {fixed:g}, not the chosen {chosen:g}: change the weight in "
        "mod_arch_core.models.registry and re-run the routing-quick sweep to confirm the choice"
    )


def describe_difference(row: pd.Series, digits: int = 3) -> str:
    """One row of :func:`paired_differences` as text.

    ``0.160 → 0.050 (-0.110, 95% CI [-0.13, -0.09])`` for a metric; a relative column (ID
    performance, which pools regression losses and classification errors only through their
    relative changes) gives the change in per cent of the base model's mean in each task and R,
    and no pooled means: ``-1% relative to modular (95% CI [-8%, +8%])``.
    """
    f = f"{{:.{digits}f}}"
    if bool(row.get("is_relative", False)):

        def pct(value: float) -> str:
            # whole per cent, or one decimal below 1% (never "-0%")
            return f"{100 * value:+.0f}%" if abs(value) >= 0.01 else f"{100 * value:+.1f}%"

        base = row.get("base", "the base model")
        return (
            f"{pct(row['difference'])} relative to {base} "
            f"(95% CI [{pct(row['ci_low'])}, {pct(row['ci_high'])}])"
        )
    means = f"{f.format(row['base_mean'])} → {f.format(row['variant_mean'])}"
    sign = "+" if row["difference"] >= 0 else ""
    return (
        f"{means} ({sign}{f.format(row['difference'])}, 95% CI [{f.format(row['ci_low'])}, "
        f"{f.format(row['ci_high'])}])"
    )
