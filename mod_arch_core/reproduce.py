"""Does a re-run reproduce shipped results? Bitwise on the same machine, within seed noise elsewhere.

What the companion promises (the book's reproduce page):

* **bitwise** on one machine: the same command, torch version, CPU (or GPU) and thread count give
  identical rows. :func:`mod_arch_core.provenance.hardware` records that fingerprint in every row;
* **statistical** everywhere else: float32 results differ in their last bits between CPU makes,
  vector widths and BLAS kernels, and thousands of optimizer steps amplify that into visibly
  different numbers per run (a shipped MLP run's loss of 0.0167 re-ran as 0.0253 on another CPU).
  What must agree is each configuration's distribution over its seeds: per metric and checkpoint,
  the mean of the re-run lies within :data:`T_LIMIT` standard errors of the shipped mean (Welch's
  t statistic over the runs), and the deterministic columns (parameter counts, iterations, keys,
  options, configuration hash) are equal.

:func:`compare` decides which promise applies and checks it; :func:`rerun` re-trains one shipped
configuration and compares (``python -m mod_arch_core reproduce``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mod_arch_core import results

#: Columns computed by training and evaluation: compared statistically across machines.
MEASURED: tuple[str, ...] = tuple(
    name
    for name, (kind, _) in results.RUN_COLUMNS.items()
    if (kind == "f" and name not in ("search_version", "wall_seconds"))
    or name in ("best_iteration", "diverged_at")
)
#: Columns fixed by the configuration alone: equal on every machine.
DETERMINISTIC: tuple[str, ...] = (
    *results.RUN_KEYS,
    "checkpoint",
    "setting",
    "task",
    "model",
    "n_params",
    "stacked_runs",
    "config_hash",
    "model_options",
)
#: Largest |Welch t| of a metric's mean (re-run vs shipped) that counts as seed noise. With 6 runs
#: a side (about 10 degrees of freedom) a correct re-run exceeds 6 with probability ~1e-4 per
#: metric, so a check of some 40 metric-checkpoint pairs raises a false alarm well under 1% of the
#: time, while a real change of the computation (another recipe, a bug) moves means by many
#: standard errors.
T_LIMIT = 6.0
#: Two zero-variance samples (e.g. GT-Modular's Collapse-Avg of 0) must agree to this tolerance.
EXACT_RTOL = 1e-9

_KEYS = ["data_seed", "seed", "checkpoint"]


@dataclass
class Comparison:
    """The outcome of :func:`compare`: which promise applied, a table per metric, the verdict."""

    mode: str  # "bitwise" or "statistical"
    table: pd.DataFrame  # one row per (checkpoint, column): means, t, agrees
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        verdict = "reproduced" if self.ok else "NOT reproduced"
        lines = [f"{verdict} ({self.mode} comparison; |t| <= {T_LIMIT:g} across machines)"]
        if len(self.table):
            shown = self.table.dropna(subset=["shipped_mean", "fresh_mean"], how="all")
            lines.append(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        lines.extend(f"problem: {p}" for p in self.problems)
        return "\n".join(lines)


def same_machine(fresh: pd.DataFrame, shipped: pd.DataFrame) -> bool:
    """True when both tables come from one hardware fingerprint and torch version (bitwise owed)."""
    columns = ["hardware", "torch_version"]
    values = pd.concat([fresh[columns], shipped[columns]]).drop_duplicates()
    return len(values) == 1


def welch_t(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's t statistic of mean(a) - mean(b); 0 or inf when both samples have no spread."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"welch_t needs >= 2 values a side, got {len(x)} and {len(y)}")
    diff = x.mean() - y.mean()
    se = np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    if se == 0:
        scale = max(abs(x.mean()), abs(y.mean()), 1.0)
        return 0.0 if abs(diff) <= EXACT_RTOL * scale else float("inf")
    return float(diff / se)


def compare(fresh: pd.DataFrame, shipped: pd.DataFrame, *, mode: str | None = None) -> Comparison:
    """Compare re-run rows with shipped rows of the same configuration(s).

    Parameters
    ----------
    fresh, shipped : runs tables (:data:`mod_arch_core.results.RUN_COLUMNS`)
        The same runs (data seed, seed, checkpoint), each exactly once.
    mode : "bitwise", "statistical" or None
        None: bitwise when :func:`same_machine`, else statistical.
    """
    if mode not in (None, "bitwise", "statistical"):
        raise ValueError(f"mode must be None, 'bitwise' or 'statistical', got {mode!r}")
    for name, table in (("fresh", fresh), ("shipped", shipped)):
        if table.empty:
            raise ValueError(f"{name} rows are empty: nothing to compare")
        if table.duplicated(["config_hash", *_KEYS]).any():
            raise ValueError(f"{name} rows repeat a (config_hash, data_seed, seed, checkpoint)")
    mode = mode or ("bitwise" if same_machine(fresh, shipped) else "statistical")
    problems: list[str] = []
    index = ["config_hash", *_KEYS]
    a = fresh.set_index(index).sort_index()
    b = shipped.set_index(index).sort_index()
    if not a.index.equals(b.index):
        missing = b.index.difference(a.index).tolist()[:3]
        extra = a.index.difference(b.index).tolist()[:3]
        problems.append(f"different runs: missing {missing}, extra {extra}")
        return Comparison(mode, pd.DataFrame(), problems)
    for column in DETERMINISTIC:
        if column in index:
            continue
        left, right = a[column].reset_index(drop=True), b[column].reset_index(drop=True)
        if not left.equals(right):
            problems.append(f"{column} differs: {left.tolist()[:3]} vs {right.tolist()[:3]}")
    rows = []
    for checkpoint in sorted(set(a.index.get_level_values("checkpoint"))):
        part_a = a.xs(checkpoint, level="checkpoint")
        part_b = b.xs(checkpoint, level="checkpoint")
        for column in MEASURED:
            rows.append(_compare_column(part_a[column], part_b[column], checkpoint, column, mode))
    table = pd.DataFrame(rows)
    for row in table[~table["agrees"]].itertuples():
        problems.append(f"{row.checkpoint} {row.column}: {row.why}")
    return Comparison(mode, table, problems)


def _compare_column(
    fresh: pd.Series, shipped: pd.Series, checkpoint: str, column: str, mode: str
) -> dict[str, Any]:
    x, y = fresh.to_numpy(float), shipped.to_numpy(float)
    row: dict[str, Any] = {
        "checkpoint": checkpoint,
        "column": column,
        "fresh_mean": float(np.nanmean(x)) if np.isfinite(x).any() else float("nan"),
        "shipped_mean": float(np.nanmean(y)) if np.isfinite(y).any() else float("nan"),
        "t": float("nan"),
        "agrees": True,
        "why": "",
    }
    if mode == "bitwise":
        if not np.array_equal(x, y, equal_nan=True):
            row.update(agrees=False, why=f"not bitwise equal: {x.tolist()} vs {y.tolist()}")
        return row
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    if nan_x.all() and nan_y.all():
        return row  # not defined for this model (e.g. Monolithic's collapse)
    if nan_x.sum() != nan_y.sum():
        row.update(agrees=False, why=f"{nan_x.sum()} NaN in the re-run vs {nan_y.sum()} shipped")
        return row
    x, y = x[~nan_x], y[~nan_y]
    if len(x) < 2:
        equal = np.allclose(x, y, rtol=EXACT_RTOL)
        row.update(agrees=bool(equal), why="" if equal else "single values differ")
        return row
    t = welch_t(x, y)
    row["t"] = t
    if not abs(t) <= T_LIMIT:
        row.update(agrees=False, why=f"|t| = {abs(t):.3g} > {T_LIMIT:g}")
    return row


def rerun(
    folder: str | Path,
    *,
    setting: str,
    task: str,
    model: str,
    num_rules: int,
    profile: str | None = None,
    device: str = "cpu",
    mode: str | None = None,
) -> Comparison:
    """Re-train one configuration of a shipped results folder and :func:`compare` its rows.

    The configuration is the one of ``profile`` (default: the folder's recorded profile) with the
    given setting, task, model and R; if the profile holds several (capacities, search versions),
    the first in the profile's order is used.
    """
    from mod_arch_core.experiment import experiment_hash, run_experiment
    from mod_arch_core.profiles import load_profile

    loaded = results.load(folder)
    if profile is None:
        names = sorted(loaded.runs["profile"].unique())
        if len(names) != 1:
            raise ValueError(f"{folder} holds profiles {names}; pass profile=")
        profile = names[0]
    grid = load_profile(profile)
    budget = grid.eval_budget()
    wanted = (setting, task, model, num_rules)
    candidates = [
        c
        for c in grid.configurations(device=device)
        if (c.setting, c.task, c.model, c.num_rules) == wanted
    ]
    if not candidates:
        raise ValueError(f"profile {profile!r} has no configuration {wanted}")
    config = candidates[0]
    chash = experiment_hash(config, budget)
    shipped = loaded.runs[loaded.runs["config_hash"] == chash]
    if shipped.empty:
        raise ValueError(f"{folder} holds no rows of configuration {wanted} ({chash})")
    fresh = run_experiment(config, budget, profile=profile, progress=False).runs
    return compare(fresh, shipped, mode=mode)
