"""The calibration figure of the Reproducing part: long runs with the budget B marked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mod_arch_core.figures.paper import (
    PERF_LABELS,
    PERF_MODELS,
    PathLike,
    _finish,
    _grid,
    _label,
    _legend,
    _ordered,
)
from mod_arch_core.figures.style import figure_style, model_style
from mod_arch_core.validation import SETTINGS, TASKS

__all__ = ["calibration_curves"]


def _scale(ax: Any, values: np.ndarray, task: str) -> None:
    """Symmetric-log y when the values span more than a decade, else linear.

    Linear below 1% for errors (a zero error stays on the plot), below the smallest losses for
    regression.
    """
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size and finite.max() / max(finite.min(), 1e-12) > 10:
        linthresh = 1.0 if task == "classification" else float(np.quantile(finite, 0.05))
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.set_ylim(bottom=0.0)


def _rows(curves: pd.DataFrame) -> list[tuple[str, float | None]]:
    """One panel row per setting, or per (setting, search version) where a setting has several
    (MHA's two versions are two tasks, spec §2.2)."""
    rows: list[tuple[str, float | None]] = []
    for setting in _ordered(curves["setting"], SETTINGS):
        versions = sorted(
            curves.loc[curves["setting"] == setting, "search_version"].dropna().unique()
        )
        rows.extend(
            [(setting, float(v)) for v in versions] if len(versions) > 1 else [(setting, None)]
        )
    return rows


def calibration_curves(
    curves: pd.DataFrame,
    budgets: Mapping[str, int],
    *,
    figures_dir: PathLike | None = None,
    name: str = "calibration_curves",
) -> Figure:
    """ID performance during the long calibration runs, one panel per setting and task (and per
    search version where the runs have two).

    One line per model (mean over its runs of the ``perf`` column of the curves table); a dashed
    vertical line marks the setting's budget B; models keep their colours and line styles. A panel whose values span more than a decade has a
    logarithmic y axis (linear below 1, so that a zero error stays on the plot): the interesting
    part is how much the curve still falls after B
    (:func:`mod_arch_core.calibration.budget_comparison`).
    """
    if not isinstance(curves, pd.DataFrame) or curves.empty:
        raise ValueError("curves must be a non-empty curves table")
    rows = _rows(curves)
    tasks = _ordered(curves["task"], TASKS)
    with figure_style():
        fig, axes = _grid(len(rows), len(tasks), figsize=(5.2 * len(tasks), 2.8 * len(rows) + 0.8))
        for i, (setting, version) in enumerate(rows):
            for j, task in enumerate(tasks):
                ax = axes[i, j]
                part = curves[(curves["setting"] == setting) & (curves["task"] == task)]
                if version is not None:
                    part = part[part["search_version"] == version]
                means = part.groupby(["model", "iteration"], as_index=False)["perf"].mean()
                for model in _ordered(means["model"], PERF_MODELS):
                    line = means[means["model"] == model].sort_values("iteration")
                    style = {**model_style(model), "marker": None}
                    ax.plot(line["iteration"], line["perf"], lw=1.6, label=_label(model), **style)
                if setting in budgets:
                    ax.axvline(
                        budgets[setting], color="#222222", ls=(0, (6, 2)), lw=1.2, label="budget B"
                    )
                _scale(ax, means["perf"].to_numpy(dtype=float), task)
                label = setting.upper() if version is None else f"{setting.upper()} v{version:g}"
                ax.set_title(f"{label} · {task}", fontsize=10)
                ax.set_xlabel("Iteration" if i == len(rows) - 1 else "")
                ax.set_ylabel(PERF_LABELS[task])
        _legend(fig, axes.ravel())
        fig.suptitle("Calibration runs: ID performance beyond the budget B (mean over runs)")
        return _finish(fig, figures_dir, name)
