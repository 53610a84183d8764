"""The paper's result figures (Figs. 3-7), their appendix variants, and the training chapter's plots.

One owner function per figure; each reads tidy tables only (the runs or curves table of
:mod:`mod_arch_core.results`, shaped by :mod:`mod_arch_core.analysis`), draws with the book's single
theme (:func:`~mod_arch_core.figures.style.figure_style`) on a pyplot-free figure, returns the
:class:`~matplotlib.figure.Figure` and, given ``figures_dir``, writes ``figures_dir/<name>.svg`` and
``.png`` with reproducible bytes (:func:`~mod_arch_core.figures.style.save_figure`). The fixed file
names are :data:`FIGURE_FILES`.

Conventions (``book/errata.md``): the ``last`` checkpoint unless stated; intervals are 95% percentile
bootstrap intervals over runs (:func:`mod_arch_core.analysis.summarise`, seeded); regression losses
and classification errors are never averaged together; the ranking is the fixed one (lower error
wins) with the as-released RNN classification direction as an option; MHA search versions are pooled
as in the paper's figures.

=================================  =======================================================
paper                              function
=================================  =======================================================
Fig. 3 (ranking pies)              :func:`fig3_ranking_pies`
Fig. 4 (performance vs rules)      :func:`fig4_perf_vs_rules`
Fig. 5 (metrics vs rules)          :func:`fig5_metrics_vs_rules`
Fig. 6 (metrics per model)         :func:`fig6_metrics_per_model`
Fig. 7 (training curves)           :func:`fig7_training_curves`
appendix ``perf_p*``               :func:`perf_vs_size`
appendix ``perf_{L}_*``            :func:`perf_per_length`
MHA per search version             :func:`perf_per_search_version`,
                                   :func:`fig5_metrics_vs_rules` (``by="search_version"``)
appendix ``*_full``                :func:`metrics_per_capacity`
=================================  =======================================================

References: Mittal, Bengio, Lajoie, "Is a Modular Architecture Enough?", NeurIPS 2022
(arXiv 2206.02713), Figs. 3-7 and appendices C-E.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mod_arch_core import analysis, metrics
from mod_arch_core.figures.definitions import METRIC_LABELS, _heatmap
from mod_arch_core.figures.style import (
    MODEL_COLORS,
    MODEL_HATCHES,
    MODEL_LABELS,
    figure_style,
    model_style,
    new_figure,
    save_figure,
)
from mod_arch_core.validation import SETTINGS, TASKS

__all__ = [
    "FIGURE_FILES",
    "METRIC_MODELS",
    "PERF_MODELS",
    "activation_matrices_figure",
    "fig3_ranking_pies",
    "fig4_perf_vs_rules",
    "fig5_metrics_vs_rules",
    "fig6_metrics_per_model",
    "fig7_training_curves",
    "learned_activation_figure",
    "metrics_per_capacity",
    "perf_per_length",
    "perf_per_search_version",
    "perf_vs_size",
    "training_runs_figure",
]

PathLike = str | os.PathLike[str]

#: Models of the performance figures, in legend order (the paper's Fig. 4 hue order).
PERF_MODELS: tuple[str, ...] = ("gt-modular", "modular-op", "modular", "monolithic")
#: Hues of the metric figures (Figs. 5-6): Monolithic has no routing; Random is the baseline.
METRIC_MODELS: tuple[str, ...] = ("gt-modular", "modular-op", "modular", "random")
#: Slice order of the paper's pies (spec §5.6).
PIE_ORDER: tuple[str, ...] = ("gt-modular", "modular", "modular-op", "monolithic")
#: Function name -> file stem written under ``figures_dir`` (without suffix).
FIGURE_FILES: dict[str, str] = {
    "fig3_ranking_pies": "fig3_ranking_pies",
    "fig4_perf_vs_rules": "fig4_perf_vs_rules",
    "fig5_metrics_vs_rules": "fig5_metrics_vs_rules",
    "fig6_metrics_per_model": "fig6_metrics_per_model",
    "fig7_training_curves": "fig7_training_curves",
    "perf_vs_size": "perf_vs_size",
    "perf_per_search_version": "perf_per_search_version",
    "perf_per_length": "perf_per_length",
    "metrics_per_capacity": "metrics_per_capacity",
    "learned_activation_figure": "learned_activation_matrices",
    "training_runs_figure": "training_runs",
    "activation_matrices_figure": "activation_matrices",
}
#: Y-axis label per task (spec §5.1).
PERF_LABELS: dict[str, str] = {"regression": "Loss (L1)", "classification": "Error (%)"}
#: Long metric names for panel titles (the paper's Fig. 5 columns).
METRIC_TITLES: dict[str, str] = {**METRIC_LABELS, "inverse_mutual_info": "Inverse Mutual Info"}


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _finish(fig: Figure, figures_dir: PathLike | None, name: str) -> Figure:
    # Settle constrained layout, then freeze it: every later save or display is identical.
    fig.canvas.draw()
    fig.canvas.draw()
    fig.set_layout_engine("none")
    if figures_dir is not None:
        save_figure(fig, Path(figures_dir) / f"{name}.svg")
    return fig


def _grid(nrows: int, ncols: int, **kwargs: Any) -> tuple[Figure, np.ndarray]:
    """:func:`new_figure` with the axes always as a 2-D array ``(nrows, ncols)``."""
    fig, axes = new_figure(nrows, ncols, **kwargs)
    return fig, np.asarray(axes, dtype=object).reshape(nrows, ncols)


def _label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def _color(model: str) -> str:
    return MODEL_COLORS.get(model, "#444444")


def _ordered(values: Any, order: Sequence[str]) -> list[str]:
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def _checked(runs: pd.DataFrame, checkpoint: str, what: str = "runs") -> pd.DataFrame:
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(
            f"{what} must be a pandas DataFrame (a runs table), got {type(runs).__name__}"
        )
    table = analysis.select_checkpoint(runs, checkpoint)
    if table.empty:
        raise ValueError(f"the {what} table is empty; nothing to plot")
    return table


def _log2_axis(ax: Any, values: Sequence[float]) -> None:
    ticks = sorted({int(v) for v in values})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()


def _band(ax: Any, part: pd.DataFrame, x: str, model: str, *, markers: bool = True) -> None:
    """A model's mean line (its colour, marker and line style) over its interval band."""
    part = part.sort_values(x)
    style = model_style(model)
    if not markers:
        style["marker"] = None
    ax.plot(part[x], part["mean"], ms=5, lw=1.8, label=_label(model), **style)
    ax.fill_between(
        part[x], part["ci_low"], part["ci_high"], color=style["color"], alpha=0.18, lw=0
    )


def _bars(
    ax: Any,
    summary: pd.DataFrame,
    x: str,
    x_order: Sequence[Any],
    hues: Sequence[str],
    *,
    hue: str = "model",
) -> None:
    """Grouped bars (means) with 95% CI error bars, one group per x value, one bar per hue."""
    width = 0.8 / max(len(hues), 1)
    positions = np.arange(len(x_order))
    for k, name in enumerate(hues):
        part = summary[summary[hue] == name].set_index(x).reindex(list(x_order))
        offset = (k - (len(hues) - 1) / 2) * width
        mean = part["mean"].to_numpy(dtype=float)
        err = np.vstack(
            [
                mean - part["ci_low"].to_numpy(dtype=float),
                part["ci_high"].to_numpy(dtype=float) - mean,
            ]
        )
        ax.bar(
            positions + offset, np.nan_to_num(mean), width=width * 0.95, color=_color(name),
            hatch=MODEL_HATCHES.get(name, ""), edgecolor="white", linewidth=0.0,
            label=_label(name), yerr=np.nan_to_num(err), capsize=2,
            error_kw={"elinewidth": 1.0, "ecolor": "#222222"},
        )  # fmt: skip
    ax.set_xticks(positions)
    ax.set_xticklabels([str(v) for v in x_order])


def _legend(fig: Figure, axes: Sequence[Any], *, ncols: int | None = None) -> None:
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols or len(labels))


def _plural(n: int, noun: str) -> str:
    """``"1 tie"``, ``"0 ties"``, ``"3 ties"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ci_note(confidence: float) -> str:
    return f"mean and {100 * confidence:.0f}% bootstrap CI over runs"


# --------------------------------------------------------------------------------------
# Fig. 3: ranking pies
# --------------------------------------------------------------------------------------


def fig3_ranking_pies(
    runs: pd.DataFrame,
    *,
    metric: str = "perf",
    checkpoint: str = "last",
    as_released: bool = False,
    figures_dir: PathLike | None = None,
    name: str | None = None,
) -> Figure:
    """The paper's Fig. 3: share of settings each model wins (spec §5.6).

    Left, a donut of the four models; right, Modular against Monolithic. A setting is one
    (setting, task, search version, R, capacity, data seed); each model is scored by its mean over
    model seeds; lower loss or error wins; exact ties go to the earlier of GT-Modular, Modular-op,
    Monolithic, Modular (sub pie: to Monolithic). The title states the number of settings and of
    ties. Slices use the paper's colours and order; empty slices are dropped.

    Parameters
    ----------
    runs : DataFrame
        A runs table.
    metric : {"perf", "perf_ood"}
        ID (the paper's pies) or OoD performance.
    checkpoint : {"last", "best"}
    as_released : bool
        Rank RNN classification as the released code does (the worst model wins; spec §9.1).
    figures_dir : path, optional
        Write ``<name>.svg`` and ``.png`` there; ``name`` defaults to ``fig3_ranking_pies`` with
        ``_ood`` and ``_as_released`` suffixes as applicable.
    """
    if metric not in ("perf", "perf_ood"):
        raise ValueError(f"metric must be 'perf' or 'perf_ood'; got {metric!r}")
    table = _checked(runs, checkpoint)
    ranked = {
        contest: analysis.ranking(
            table, metric=metric, contest=contest, checkpoint=checkpoint, as_released=as_released
        )
        for contest in ("all", "sub")
    }
    split = "ID" if metric == "perf" else "OoD"
    direction = "as released (RNN classification: worst model wins)" if as_released else "fixed"
    with figure_style():
        fig, axes = _grid(1, 2, figsize=(10.0, 5.4))
        axes = axes.ravel()
        for ax, contest in zip(axes, ("all", "sub"), strict=True):
            result = ranked[contest]
            order = [m for m in PIE_ORDER if m in result.index and result.loc[m, "wins"] > 0]
            wins = [int(result.loc[m, "wins"]) for m in order]
            wedge = (
                {"width": 0.3, "edgecolor": "white"} if contest == "all" else {"edgecolor": "white"}
            )
            _, _, texts = ax.pie(
                wins, colors=[_color(m) for m in order], labels=None, autopct="%.1f%%",
                hatch=[MODEL_HATCHES.get(m, "") for m in order],
                startangle=90, counterclock=False, wedgeprops=wedge,
                pctdistance=0.85 if contest == "all" else 0.6,
            )  # fmt: skip
            for text in texts:
                text.set_color("white")
                text.set_fontsize(10)
            ax.set_aspect("equal")
            n = result.attrs["num_settings"]
            ties = result.attrs["ties"]
            no_winner = int(result.loc[metrics.NO_WINNER, "wins"])
            if contest == "all":
                title = (
                    f"Best of four models\n{_plural(n, 'setting')}; {_plural(ties, 'tie')}, "
                    "given to the first of\n"
                    "GT-Modular, Modular-op, Monolithic, Modular"
                )
            else:
                title = (
                    f"Modular vs Monolithic\n{_plural(n, 'setting')}; {_plural(ties, 'tie')}, "
                    "ties to Monolithic"
                )
            if no_winner:
                title += f"; {no_winner} without a finite score"
            ax.set_title(title, fontsize=10)
            for model, count in zip(order, wins, strict=True):
                ax.bar(
                    [0], [0], color=_color(model), hatch=MODEL_HATCHES.get(model, ""),
                    edgecolor="white", label=f"{_label(model)} ({count})",
                )  # fmt: skip
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=2, fontsize=9)
        fig.suptitle(
            f"Share of settings won ({split}, {checkpoint} checkpoint, ranking {direction})",
            fontsize=12,
        )
        if name is None:
            name = FIGURE_FILES["fig3_ranking_pies"]
            name += "_ood" if metric == "perf_ood" else ""
            name += "_as_released" if as_released else ""
        return _finish(fig, figures_dir, name)


# --------------------------------------------------------------------------------------
# Fig. 4 and appendix: performance
# --------------------------------------------------------------------------------------


def fig4_perf_vs_rules(
    runs: pd.DataFrame,
    *,
    checkpoint: str = "last",
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str = FIGURE_FILES["fig4_perf_vs_rules"],
) -> Figure:
    """The paper's Fig. 4: performance against the number of rules (spec §6.1).

    Rows are settings (MLP, MHA, RNN, those present), columns ``Classification | ID``,
    ``Classification | OoD``, ``Regression | ID``, ``Regression | OoD``; one line per model with a
    95% bootstrap band over runs (capacities, data seeds, seeds and MHA search versions pooled). The
    x axis is R on a log2 scale; y is the error in % or the L1 loss, independent per panel.
    """
    table = _checked(runs, checkpoint)
    long = analysis.performance_long(table)
    summary = analysis.summarise(
        long, ["setting", "panel", "model", "num_rules"], confidence=confidence
    )
    settings = _ordered(summary["setting"], SETTINGS)
    return _perf_grid(
        summary,
        "setting",
        settings,
        lambda setting, panel: f"{setting.upper()} · {panel}",
        f"Performance vs number of rules ({checkpoint} checkpoint; {_ci_note(confidence)})",
        {},
        figures_dir,
        name,
    )


def _perf_grid(
    summary: pd.DataFrame,
    row_key: str,
    rows: list[Any],
    panel_title: Callable[[Any, str], str],
    title: str,
    title_kw: dict[str, Any],
    figures_dir: PathLike | None,
    name: str,
) -> Figure:
    """Fig. 4's grid: one row per value of ``row_key``, the four task | split panels as columns,
    one band per model against R (shared by :func:`fig4_perf_vs_rules` and
    :func:`perf_per_search_version`)."""
    with figure_style():
        fig, axes = _grid(
            len(rows), len(analysis.PANELS), figsize=(13.0, 2.9 * len(rows) + 1.0),
        )  # fmt: skip
        for i, row in enumerate(rows):
            for j, panel in enumerate(analysis.PANELS):
                ax = axes[i, j]
                part = summary[(summary[row_key] == row) & (summary["panel"] == panel)]
                for model in _ordered(part["model"], PERF_MODELS):
                    _band(ax, part[part["model"] == model], "num_rules", model)
                if part.empty:
                    ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
                else:
                    _log2_axis(ax, part["num_rules"])
                task = panel.split(" | ")[0].lower()
                ax.set_title(panel_title(row, panel), fontsize=10)
                ax.set_ylabel(PERF_LABELS[task] if j in (0, 2) else "")
                ax.set_xlabel("Rules" if i == len(rows) - 1 else "")
        _legend(fig, axes.ravel())
        fig.suptitle(title, **title_kw)
        return _finish(fig, figures_dir, name)


def perf_per_search_version(
    runs: pd.DataFrame,
    *,
    checkpoint: str = "last",
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str = FIGURE_FILES["perf_per_search_version"],
) -> Figure:
    """Fig. 4 for the attention setting, one row per MHA search version (``book/errata.md`` item 6).

    The paper pools its two search versions (scalar distance, version 1; cosine similarity of unit
    keys, version 2) in every figure; this draws them apart. Columns are the four task | split
    panels of Fig. 4; one line per model with a 95% bootstrap band over runs (capacities, data
    seeds and seeds pooled within a version).
    """
    table = _checked(runs, checkpoint)
    table = table[(table["setting"] == "mha") & table["search_version"].notna()]
    if table.empty:
        raise ValueError("perf_per_search_version needs MHA runs; the table has none")
    long = analysis.performance_long(table)
    summary = analysis.summarise(
        long, ["search_version", "panel", "model", "num_rules"], confidence=confidence
    )
    versions = sorted(int(v) for v in summary["search_version"].unique())
    return _perf_grid(
        summary,
        "search_version",
        versions,
        lambda version, panel: f"MHA search v{version} · {panel}",
        f"MHA performance vs number of rules per search version ({checkpoint} checkpoint; "
        f"{_ci_note(confidence)})",
        {"fontsize": 11},
        figures_dir,
        name,
    )


def perf_vs_size(
    runs: pd.DataFrame,
    *,
    checkpoint: str = "last",
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str = FIGURE_FILES["perf_vs_size"],
) -> Figure:
    """Performance against the number of parameters (appendix ``perf_p``; spec §6.2).

    Rows are settings, columns the four task | split panels of Fig. 4; one point per (model, R,
    capacity) at its mean parameter count (log axis; MHA search versions pooled) with a 95%
    bootstrap interval over runs. Points of one model and R are joined across capacities, so a line
    shows the effect of size at a fixed number of rules; the marker size grows with R.
    """
    table = _checked(runs, checkpoint)
    long = analysis.performance_long(table)
    keys = ["setting", "panel", "model", "num_rules", "encoder_dim"]
    summary = analysis.summarise(long, keys, confidence=confidence)
    sizes = long.groupby(keys)["n_params"].mean().rename("n_params").reset_index()
    summary = summary.merge(sizes, on=keys)
    settings = _ordered(summary["setting"], SETTINGS)
    rules = sorted(summary["num_rules"].unique())
    marker_size = {r: 3.0 + 1.5 * k for k, r in enumerate(rules)}
    with figure_style():
        fig, axes = _grid(
            len(settings), len(analysis.PANELS), figsize=(13.0, 2.9 * len(settings) + 1.0),
        )  # fmt: skip
        for i, setting in enumerate(settings):
            for j, panel in enumerate(analysis.PANELS):
                ax = axes[i, j]
                part = summary[(summary["setting"] == setting) & (summary["panel"] == panel)]
                for model in _ordered(part["model"], PERF_MODELS):
                    for k, r in enumerate(rules):
                        points = part[(part["model"] == model) & (part["num_rules"] == r)]
                        points = points.sort_values("n_params")
                        mean = points["mean"].to_numpy()
                        err = np.vstack([mean - points["ci_low"], points["ci_high"] - mean])
                        ax.errorbar(
                            points["n_params"], mean, yerr=err, ms=marker_size[r],
                            lw=1.0, capsize=2, **model_style(model),
                            label=_label(model) if k == 0 else None,
                        )  # fmt: skip
                if not part.empty:
                    _size_axis(ax, part["n_params"])
                task = panel.split(" | ")[0].lower()
                ax.set_title(f"{setting.upper()} · {panel}", fontsize=10)
                ax.set_ylabel(PERF_LABELS[task] if j in (0, 2) else "")
                ax.set_xlabel("Number of parameters" if i == len(settings) - 1 else "")
        _legend(fig, axes.ravel())
        sizes_note = ", ".join(f"R={r}" for r in rules)
        fig.suptitle(
            f"Performance vs model size ({checkpoint} checkpoint; {_ci_note(confidence)}; "
            f"marker size: {sizes_note})",
            fontsize=11,
        )
        return _finish(fig, figures_dir, name)


def _compact(value: float) -> str:
    for divisor, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.3g}{suffix}"
    return f"{value:.3g}"


def _size_axis(ax: Any, values: pd.Series) -> None:
    """A log x axis with readable, non-overlapping ticks in k / M units.

    Three ticks (min, geometric middle, max) when the sizes span at least a factor 4; the two
    ends only when they are closer (the RNN's parameter counts differ by a few percent across R,
    where three labels such as "99.5k", "101k", "103k" would run into each other); one tick for a
    single size. Labels are rotated so that two ends of a narrow range still fit.
    """
    from matplotlib.ticker import NullFormatter, NullLocator

    low, high = float(values.min()), float(values.max())
    ax.set_xscale("log")
    if high <= low * 1.001:
        ticks = [low]
    elif high >= 4 * low:
        ticks = list(np.geomspace(low, high, 3))
    else:
        ticks = [low, high]
    ax.set_xticks(ticks)
    ax.set_xticklabels([_compact(t) for t in ticks], rotation=30, ha="right")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    pad = max(np.log10(high / low) * 0.15, 0.02)
    ax.set_xlim(low / 10**pad, high * 10**pad)


def perf_per_length(
    runs: pd.DataFrame,
    *,
    checkpoint: str = "last",
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str = FIGURE_FILES["perf_per_length"],
) -> Figure:
    """MHA and RNN performance against the evaluation length (appendix ``perf_{L}_*``; spec §5.1).

    Rows are (setting, task) pairs of MHA and RNN, columns ID and OoD (inputs x2); x is the
    sequence length (3, 5, 10, 20, 30; training used 10, dotted); one line per model with a 95%
    bootstrap band over runs (rules, capacities, seeds and search versions pooled).
    """
    table = _checked(runs, checkpoint)
    long = analysis.performance_per_length(table)
    if long.empty:
        raise ValueError("perf_per_length needs MHA or RNN runs; the table has none")
    summary = analysis.summarise(
        long, ["setting", "task", "split", "model", "length"], confidence=confidence
    )
    pairs = [
        (s, t)
        for s in _ordered(summary["setting"], SETTINGS)
        for t in _ordered(summary["task"], TASKS)
        if ((summary["setting"] == s) & (summary["task"] == t)).any()
    ]
    with figure_style():
        fig, axes = _grid(len(pairs), 2, figsize=(9.0, 2.7 * len(pairs) + 1.0))
        for i, (setting, task) in enumerate(pairs):
            for j, split in enumerate(("ID", "OoD")):
                ax = axes[i, j]
                part = summary[
                    (summary["setting"] == setting)
                    & (summary["task"] == task)
                    & (summary["split"] == split)
                ]
                for model in _ordered(part["model"], PERF_MODELS):
                    _band(ax, part[part["model"] == model], "length", model)
                ax.axvline(10, color="black", lw=0.8, ls=":")
                ax.set_xticks(sorted(part["length"].unique()))
                ax.set_title(f"{setting.upper()} {task} · {split}", fontsize=10)
                ax.set_ylabel(PERF_LABELS[task] if j == 0 else "")
                ax.set_xlabel("Evaluation length" if i == len(pairs) - 1 else "")
        _legend(fig, axes.ravel())
        fig.suptitle(
            f"Performance per sequence length ({checkpoint} checkpoint; trained at 10; "
            f"{_ci_note(confidence)})",
            fontsize=11,
        )
        return _finish(fig, figures_dir, name)


# --------------------------------------------------------------------------------------
# Figs. 5-6 and appendix: routing metrics
# --------------------------------------------------------------------------------------


def _metric_summary(
    runs: pd.DataFrame, checkpoint: str, by: Sequence[str], confidence: float
) -> pd.DataFrame:
    table = _checked(runs, checkpoint)
    long = analysis.metrics_long(table)
    return analysis.summarise(long, [*by, "metric", "model"], confidence=confidence)


def fig5_metrics_vs_rules(
    runs: pd.DataFrame,
    *,
    checkpoint: str = "last",
    by: str | None = None,
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str | None = None,
) -> Figure:
    """The paper's Fig. 5: the five routing metrics against the number of rules (spec §6.1).

    Columns Collapse-Avg, Collapse-Worst, Alignment, Adaptation, Inverse MI; x is R
    (categorical); bars GT-Modular, Modular-op, Modular and Random (spec §5.5) with 95% bootstrap
    intervals over runs. ``by="setting"`` adds one row per architecture (the appendix's
    per-setting files); ``by="search_version"`` draws the MHA runs only, one row per search
    version (``book/errata.md`` item 6); None pools every setting and task, as the paper does.
    """
    if by not in (None, "setting", "task", "search_version"):
        raise ValueError(f"by must be None, 'setting', 'task' or 'search_version'; got {by!r}")
    keys = [] if by is None else [by]
    if by == "search_version":
        runs = runs[(runs["setting"] == "mha") & runs["search_version"].notna()]
        if runs.empty:
            raise ValueError("by='search_version' needs MHA runs; the table has none")
    summary = _metric_summary(runs, checkpoint, [*keys, "num_rules"], confidence)
    if by == "search_version":
        rows = sorted(summary[by].unique())
    else:
        rows = (
            [None] if by is None else _ordered(summary[by], SETTINGS if by == "setting" else TASKS)
        )
    rules = sorted(summary["num_rules"].unique())
    with figure_style():
        fig, axes = _grid(len(rows), len(analysis.METRICS), figsize=(14.0, 3.0 * len(rows) + 1.1))
        for i, row in enumerate(rows):
            for j, metric in enumerate(analysis.METRICS):
                ax = axes[i, j]
                part = summary[summary["metric"] == metric]
                if row is not None:
                    part = part[part[by] == row]
                _bars(ax, part, "num_rules", rules, _ordered(part["model"], METRIC_MODELS))
                title = METRIC_TITLES[metric]
                if row is None:
                    ax.set_title(title, fontsize=10)
                elif by == "search_version":
                    ax.set_title(f"MHA search v{int(row)} · {title}", fontsize=10)
                else:
                    ax.set_title(f"{row.upper()} · {title}", fontsize=10)
                ax.set_xlabel("Rules" if i == len(rows) - 1 else "")
                ax.set_ylabel("Score" if j == 0 else "")
        _legend(fig, axes.ravel())
        fig.suptitle(
            f"Routing metrics vs number of rules ({checkpoint} checkpoint; {_ci_note(confidence)})"
        )
        if name is None:
            name = FIGURE_FILES["fig5_metrics_vs_rules"] + ("" if by is None else f"_by_{by}")
        return _finish(fig, figures_dir, name)


def fig6_metrics_per_model(
    runs: pd.DataFrame,
    *,
    checkpoint: str = "last",
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str = FIGURE_FILES["fig6_metrics_per_model"],
) -> Figure:
    """The paper's Fig. 6: the five routing metrics per model, pooled over R (spec §6.1).

    One panel per metric; one bar per model (GT-Modular, Modular-op, Modular, Random) with a 95%
    bootstrap interval over runs. The Random bar is the plain mean of its per-R values.
    """
    summary = _metric_summary(runs, checkpoint, [], confidence)
    with figure_style():
        fig, axes = _grid(1, len(analysis.METRICS), figsize=(14.0, 3.6))
        axes = axes.ravel()
        for ax, metric in zip(axes, analysis.METRICS, strict=True):
            part = summary[summary["metric"] == metric]
            models = _ordered(part["model"], METRIC_MODELS)
            positions = np.arange(len(models))
            indexed = part.set_index("model").reindex(models)
            mean = indexed["mean"].to_numpy(dtype=float)
            err = np.vstack([mean - indexed["ci_low"], indexed["ci_high"] - mean])
            ax.bar(
                positions, mean, color=[_color(m) for m in models], yerr=err, capsize=3,
                hatch=[MODEL_HATCHES.get(m, "") for m in models], edgecolor="white", linewidth=0.0,
                error_kw={"elinewidth": 1.0, "ecolor": "#222222"},
            )  # fmt: skip
            ax.set_xticks(positions)
            ax.set_xticklabels([_label(m) for m in models], rotation=30, ha="right")
            ax.set_title(METRIC_TITLES[metric], fontsize=10)
        axes[0].set_ylabel("Score")
        fig.suptitle(f"Routing metrics per model ({checkpoint} checkpoint; {_ci_note(confidence)})")
        return _finish(fig, figures_dir, name)


def metrics_per_capacity(
    runs: pd.DataFrame,
    *,
    checkpoint: str = "last",
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str = FIGURE_FILES["metrics_per_capacity"],
) -> Figure:
    """Routing metrics against capacity, one column per R (appendix ``*_full``; spec §6.2).

    Rows are the five metrics, columns ``Rules = R``; x is the encoder width E (D = 4E); bars per
    model with 95% bootstrap intervals over runs (settings, tasks and seeds pooled).
    """
    summary = _metric_summary(runs, checkpoint, ["num_rules", "encoder_dim"], confidence)
    rules = sorted(summary["num_rules"].unique())
    widths = sorted(summary["encoder_dim"].unique())
    with figure_style():
        fig, axes = _grid(
            len(analysis.METRICS), len(rules),
            figsize=(2.9 * len(rules) + 1.2, 2.2 * len(analysis.METRICS) + 1.0),
            sharey="row",
        )  # fmt: skip
        for i, metric in enumerate(analysis.METRICS):
            for j, r in enumerate(rules):
                ax = axes[i, j]
                part = summary[(summary["metric"] == metric) & (summary["num_rules"] == r)]
                _bars(ax, part, "encoder_dim", widths, _ordered(part["model"], METRIC_MODELS))
                ax.set_title(f"Rules = {r}" if i == 0 else "", fontsize=10)
                ax.set_ylabel(METRIC_TITLES[metric] if j == 0 else "", fontsize=9)
                ax.set_xlabel("Encoder width E" if i == len(analysis.METRICS) - 1 else "")
        _legend(fig, axes.ravel())
        fig.suptitle(
            f"Routing metrics per capacity ({checkpoint} checkpoint; {_ci_note(confidence)})",
            fontsize=11,
        )
        return _finish(fig, figures_dir, name)


def activation_matrices_figure(
    matrices: Mapping[str, Any],
    *,
    title: str = "",
    figures_dir: PathLike | None = None,
    name: str = FIGURE_FILES["activation_matrices_figure"],
) -> Figure:
    """Heatmaps of learned p(module | rule) = R P, one per named matrix (spec §5.2, like Fig. 2).

    Each panel's title carries its Collapse-Avg, Collapse-Worst, Alignment and inverse MI.
    """
    names = list(matrices)
    if not names:
        raise ValueError("matrices must hold at least one (R, R) matrix")
    ncols = min(len(names), 3)
    nrows = int(np.ceil(len(names) / ncols))
    with figure_style():
        fig, axes = _grid(nrows, ncols, figsize=(3.6 * ncols, 4.2 * nrows + 0.5))
        flat = axes.ravel()
        for ax in flat[len(names) :]:
            ax.set_visible(False)
        for ax, label in zip(flat, names, strict=False):
            joint = metrics.normalise(matrices[label])
            r = joint.shape[0]
            values = metrics.all_metrics(joint)
            text = (
                f"{label}\nC_A {values['collapse_avg']:.2f} · C_W {values['collapse_worst']:.2f}"
                f"\nAlign {values['alignment']:.2f} · IMI {values['inverse_mutual_info']:.2f}"
            )
            _heatmap(ax, r * joint, text, annotate=r <= 6, cbar=False)
        if title:
            fig.suptitle(title, fontsize=11)
        return _finish(fig, figures_dir, name)


def learned_activation_figure(
    runs: pd.DataFrame,
    *,
    setting: str,
    task: str,
    num_rules: int,
    checkpoint: str = "last",
    figures_dir: PathLike | None = None,
    name: str = FIGURE_FILES["learned_activation_figure"],
) -> Figure:
    """One learned P per modular model for one configuration (book chapter 6).

    Picks the first run of each model (:func:`mod_arch_core.analysis.example_activation_matrices`)
    and draws p(module | rule) as heatmaps.
    """
    matrices = analysis.example_activation_matrices(
        runs, setting=setting, task=task, num_rules=num_rules, checkpoint=checkpoint
    )
    title = f"Learned p(module | rule): {setting.upper()} {task}, R = {num_rules} ({checkpoint} checkpoint)"
    return activation_matrices_figure(matrices, title=title, figures_dir=figures_dir, name=name)


# --------------------------------------------------------------------------------------
# Fig. 7 and the training chapter: curves
# --------------------------------------------------------------------------------------


def fig7_training_curves(
    curves: pd.DataFrame,
    *,
    relative: bool = False,
    confidence: float = 0.95,
    figures_dir: PathLike | None = None,
    name: str | None = None,
) -> Figure:
    """The paper's Fig. 7, per setting and task: ID performance during training (spec §6.1).

    Rows are settings, columns tasks; one line per model with a 95% bootstrap band over runs (R,
    capacities, seeds and search versions pooled). Unlike the paper's single pooled curve, losses
    and errors are never averaged together, and iteration 0 is the ID number like every other point
    (errata item 12). ``relative=True`` plots perf / perf at iteration 0 against the fraction of
    training (:func:`mod_arch_core.analysis.normalised_curves`), the scale of claim 6.
    """
    if not isinstance(curves, pd.DataFrame) or curves.empty:
        raise ValueError("curves must be a non-empty curves table")
    table = curves[curves["model"] != "random"]
    if relative:
        table = analysis.normalised_curves(table)
        x, value = "fraction", "relative"
    else:
        x, value = "iteration", "perf"
    summary = analysis.summarise(
        table, ["setting", "task", "model", x], value=value, confidence=confidence
    )
    settings = _ordered(summary["setting"], SETTINGS)
    tasks = _ordered(summary["task"], TASKS)
    with figure_style():
        fig, axes = _grid(
            len(settings), len(tasks), figsize=(5.0 * len(tasks) + 1.0, 2.8 * len(settings) + 1.0),
        )  # fmt: skip
        for i, setting in enumerate(settings):
            for j, task in enumerate(tasks):
                ax = axes[i, j]
                part = summary[(summary["setting"] == setting) & (summary["task"] == task)]
                for model in _ordered(part["model"], PERF_MODELS):
                    _band(ax, part[part["model"] == model], x, model, markers=False)
                ax.set_title(f"{setting.upper()} · {task}", fontsize=10)
                if relative:
                    ax.axhline(1.0, color="black", lw=0.6, ls=":")
                    ax.set_ylabel("Perf / perf at start" if j == 0 else "")
                else:
                    ax.set_ylabel(PERF_LABELS[task])
                last_row = i == len(settings) - 1
                ax.set_xlabel(
                    ("Fraction of training" if relative else "Iteration") if last_row else ""
                )
        _legend(fig, axes.ravel())
        what = "relative to iteration 0" if relative else "ID performance"
        fig.suptitle(f"Training curves, {what} ({_ci_note(confidence)})")
        if name is None:
            name = FIGURE_FILES["fig7_training_curves"] + ("_relative" if relative else "")
        return _finish(fig, figures_dir, name)


def training_runs_figure(
    curves: pd.DataFrame,
    *,
    figures_dir: PathLike | None = None,
    name: str = FIGURE_FILES["training_runs_figure"],
) -> Figure:
    """Training curves of the runs of one configuration (book chapter 4).

    One thin line per run (data seed, seed) and their mean in black; left the ID curve evaluation,
    right the validation batches that select the ``best`` checkpoint.
    """
    if not isinstance(curves, pd.DataFrame) or curves.empty:
        raise ValueError("curves must be a non-empty curves table")
    configs = curves[["setting", "task", "model", "num_rules"]].drop_duplicates()
    if len(configs) != 1:
        raise ValueError(f"training_runs_figure draws one configuration; got {len(configs)}")
    config = configs.iloc[0]
    runs = curves[["data_seed", "seed"]].drop_duplicates().sort_values(["data_seed", "seed"])
    colors = [MODEL_COLORS["gt-modular"], MODEL_COLORS["modular-op"], MODEL_COLORS["monolithic"]]
    with figure_style():
        fig, axes = _grid(1, 2, figsize=(11.0, 3.8), sharey=True)
        axes = axes.ravel()
        for ax, column, label in zip(
            axes, ("perf", "perf_val"), ("curve batches", "validation batches"), strict=True
        ):
            for k, (d, s) in enumerate(runs.itertuples(index=False)):
                run = curves[(curves["data_seed"] == d) & (curves["seed"] == s)].sort_values(
                    "iteration"
                )
                ax.plot(
                    run["iteration"], run[column], lw=1.0, alpha=0.8, color=colors[k % len(colors)],
                    label=f"data seed {d}, seed {s}",
                )  # fmt: skip
            mean = curves.groupby("iteration")[column].mean()
            ax.plot(mean.index, mean.to_numpy(), lw=2.2, color="black", label="mean")
            ax.set_xlabel("Iteration")
            ax.set_title(label, fontsize=10)
        axes[0].set_ylabel(PERF_LABELS[config["task"]])
        axes[1].legend(loc="upper right", fontsize=8)
        fig.suptitle(
            f"{config['setting'].upper()} {config['task']}, {_label(config['model'])}, "
            f"R = {config['num_rules']}: {len(runs)} runs trained as one stack",
            fontsize=11,
        )
        return _finish(fig, figures_dir, name)
