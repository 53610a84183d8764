"""Figures of the routing chapter (book chapter 9): the routing variants next to the paper's models.

One line per model with a 95% bootstrap band over runs, against the number of rules R; the
heatmaps reuse :func:`~mod_arch_core.figures.paper.activation_matrices_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mod_arch_core import analysis, routing_study
from mod_arch_core.figures.paper import (
    METRIC_TITLES,
    PERF_LABELS,
    PathLike,
    _band,
    _ci_note,
    _color,
    _finish,
    _grid,
    _label,
    _legend,
    _log2_axis,
    _ordered,
    activation_matrices_figure,
)
from mod_arch_core.figures.style import MODEL_LABELS, MODEL_ORDER, figure_style
from mod_arch_core.validation import TASKS

__all__ = [
    "paired_differences_figure",
    "routing_heatmaps",
    "routing_metrics",
    "routing_performance",
]

#: Labels of the columns of :func:`mod_arch_core.routing_study.paired_differences`.
COLUMN_TITLES: dict[str, str] = {**METRIC_TITLES, "perf": "ID performance"}


def _models(table: pd.DataFrame, models: Sequence[str] | None) -> list[str]:
    present = _ordered(table["model"], MODEL_ORDER)
    if models is None:
        return present
    missing = [m for m in models if m not in present]
    if missing:
        raise ValueError(f"models {missing} are not in the table; present: {present}")
    return list(models)


def routing_metrics(
    runs: pd.DataFrame,
    *,
    models: Sequence[str] | None = None,
    source: str = "probabilities",
    checkpoint: str = "last",
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str | None = None,
) -> Figure:
    """The five routing metrics against R, one line per model, tasks and settings pooled.

    ``source="probabilities"``: P of the mean router probabilities (every modular model);
    ``"selection"``: P of the argmax selection frequencies (hard routers only).
    """
    if source not in ("probabilities", "selection"):
        raise ValueError(f"source must be 'probabilities' or 'selection', got {source!r}")
    long = routing_study.metrics_by_source(runs, checkpoint)
    long = long[long["source"] == source]
    if long.empty:
        raise ValueError(f"no {source} metrics in the table (selection needs a hard router)")
    chosen = _models(long, models)
    summary = analysis.summarise(
        long[long["model"].isin(chosen)], ["metric", "model", "num_rules"], confidence=confidence
    )
    rules = sorted(summary["num_rules"].unique())
    with figure_style():
        fig, axes = _grid(1, len(analysis.METRICS), figsize=(14.0, 3.9))
        for j, metric in enumerate(analysis.METRICS):
            ax = axes[0, j]
            for model in chosen:
                part = summary[(summary["metric"] == metric) & (summary["model"] == model)]
                if not part.empty:
                    _band(ax, part, "num_rules", model)
            _log2_axis(ax, rules)
            ax.set_title(METRIC_TITLES[metric], fontsize=10)
            ax.set_xlabel("Rules")
            ax.set_ylabel("Score" if j == 0 else "")
        _legend(fig, axes.ravel(), ncols=min(len(chosen), 6))
        what = "router probabilities" if source == "probabilities" else "selection frequencies"
        fig.suptitle(f"Routing metrics of the {what} vs R ({checkpoint}; {_ci_note(confidence)})")
        return _finish(fig, figures_dir, name or f"routing_metrics_{source}")


def routing_performance(
    runs: pd.DataFrame,
    *,
    models: Sequence[str] | None = None,
    checkpoint: str = "last",
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str = "routing_performance",
) -> Figure:
    """ID and OoD performance against R, one line per model; one row per task (lower is better)."""
    table = analysis.select_checkpoint(runs, checkpoint)
    chosen = _models(table, models)
    table = table[table["model"].isin(chosen)]
    tasks = _ordered(table["task"], TASKS)
    rules = sorted(table["num_rules"].unique())
    with figure_style():
        fig, axes = _grid(len(tasks), 2, figsize=(11.0, 3.3 * len(tasks) + 1.0))
        for i, task in enumerate(tasks):
            for j, (column, split) in enumerate((("perf", "ID"), ("perf_ood", "OoD"))):
                ax = axes[i, j]
                part = table[table["task"] == task]
                summary = analysis.summarise(
                    part, ["model", "num_rules"], column, confidence=confidence
                )
                for model in chosen:
                    line = summary[summary["model"] == model]
                    if not line.empty:
                        _band(ax, line, "num_rules", model)
                _log2_axis(ax, rules)
                ax.set_yscale("log")
                ax.set_title(f"{task.capitalize()} | {split}", fontsize=10)
                ax.set_xlabel("Rules" if i == len(tasks) - 1 else "")
                ax.set_ylabel(PERF_LABELS[task] if j == 0 else "")
        _legend(fig, axes.ravel(), ncols=min(len(chosen), 6))
        fig.suptitle(f"Performance vs R ({checkpoint}; {_ci_note(confidence)}; lower is better)")
        return _finish(fig, figures_dir, name)


def paired_differences_figure(
    differences: pd.DataFrame,
    *,
    figures_dir: PathLike | None = None,
    name: str = "routing_paired_differences",
) -> Figure:
    """Variant minus base per metric, with bootstrap intervals (the balancing exhibit).

    ``differences`` stacks outputs of :func:`mod_arch_core.routing_study.paired_differences` (one
    per variant). One panel per column; one point with an error bar per variant; a line at 0.
    Performance columns are relative differences (``is_relative``; 0.1 = 10% worse), the metrics
    plain differences.
    """
    if differences.empty:
        raise ValueError("differences must hold at least one row")
    columns = list(dict.fromkeys(differences["column"]))
    variants = list(dict.fromkeys(differences["variant"]))
    with figure_style():
        fig, axes = _grid(1, len(columns), figsize=(3.2 * len(columns), 0.45 * len(variants) + 2.2))
        for j, column in enumerate(columns):
            ax = axes[0, j]
            part = differences[differences["column"] == column].set_index("variant")
            mid, low, high = part["difference"], part["ci_low"], part["ci_high"]
            is_relative = bool(part["is_relative"].any())
            ys = np.arange(len(variants))[::-1]
            for y, variant in zip(ys, variants, strict=True):
                if variant not in part.index:
                    continue
                ax.errorbar(
                    mid[variant], y, xerr=[[mid[variant] - low[variant]], [high[variant] - mid[variant]]],
                    fmt="o", color=_color(variant), capsize=3, ms=5,
                )  # fmt: skip
            ax.axvline(0.0, color="#222222", lw=1.0)
            ax.set_yticks(ys)
            ax.set_yticklabels([_label(v) for v in variants] if j == 0 else [])
            title = COLUMN_TITLES.get(column, column)
            ax.set_title(f"{title}\n(relative)" if is_relative else title, fontsize=10)
        base = _label(str(differences["base"].iloc[0]))
        fig.suptitle(f"Each variant minus {base} on the same runs (95% bootstrap CI over pairs)")
        return _finish(fig, figures_dir, name)


def routing_heatmaps(
    runs: pd.DataFrame,
    *,
    task: str,
    num_rules: int,
    models: Sequence[str],
    setting: str = "mlp",
    checkpoint: str = "last",
    figures_dir: PathLike | None = None,
    name: str = "routing_heatmaps",
) -> Figure:
    """Learned p(module | rule) of the first run of each model (router probabilities)."""
    matrices = analysis.example_activation_matrices(
        runs, setting=setting, task=task, num_rules=num_rules, checkpoint=checkpoint, models=models
    )
    renamed = {}
    for label, matrix in matrices.items():
        model, rest = label.split(" (", 1)
        renamed[f"{MODEL_LABELS.get(model, model)} ({rest}"] = matrix
    title = f"Learned p(module | rule): {setting.upper()} {task}, R = {num_rules} ({checkpoint})"
    return activation_matrices_figure(renamed, title=title, figures_dir=figures_dir, name=name)
