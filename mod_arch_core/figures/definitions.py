"""Figures of the definition chapters (book chapters 1-3) and the tables they draw.

Chapter 1, rules and tasks (paper §3, spec §2):
    :func:`mlp_rules_figure`, :func:`mha_search_figure`, :func:`rnn_trajectory_figure`.
Chapter 2, models (paper Table 1, spec §3.5):
    :func:`parameter_count_table` + :func:`parameter_count_figure`.
Chapter 3, metrics (paper §4, Eqs. 16-20, Fig. 2, spec §5):
    :func:`fig2_collapse_example` (the owner of the paper's Figure 2), :func:`activation_heatmaps`,
    :func:`metric_path_table` + :func:`metric_path_figure`, :func:`routing_adaptation`.

Every figure function returns a :class:`~matplotlib.figure.Figure` and, given ``path``, also
writes it with :func:`~mod_arch_core.figures.style.save_figure` (SVG + PNG, reproducible bytes).
Data for chapter 1 are drawn from the package's own generators with an explicit seed.

References: Mittal, Bengio, Lajoie, "Is a Modular Architecture Enough?", NeurIPS 2022
(arXiv 2206.02713).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from mod_arch_core import metrics
from mod_arch_core.data import RuleTask
from mod_arch_core.data import mha as mha_data
from mod_arch_core.data import rnn as rnn_data
from mod_arch_core.figures.style import (
    MODEL_LABELS,
    figure_style,
    model_color,
    model_style,
    new_figure,
    rule_colors,
    save_figure,
    symmetric_limits,
)
from mod_arch_core.validation import check_int, check_num_rules

__all__ = [
    "FIG2_MODULE_GIVEN_RULE",
    "FIG2_TITLE",
    "INTERPOLATION_TARGETS",
    "activation_heatmaps",
    "fig2_collapse_example",
    "interpolate_routing",
    "metric_path_figure",
    "metric_path_table",
    "mha_search_figure",
    "mlp_rules_figure",
    "parameter_count_figure",
    "parameter_count_table",
    "rnn_trajectory_figure",
    "routing_adaptation",
]

PathLike = str | os.PathLike[str]

#: The paper's Figure 2 (spec §6.1): p(module | rule), rows = rules 1-4, columns = modules 1-4.
#: Module 3 is never used and module 4 serves two rules.
FIG2_MODULE_GIVEN_RULE = np.array(
    [
        [0.95, 0.00, 0.00, 0.05],
        [0.00, 0.00, 0.00, 1.00],
        [0.35, 0.10, 0.00, 0.55],
        [0.00, 1.00, 0.00, 0.00],
    ]
)
#: Title of the paper's Figure 2.
FIG2_TITLE = "Ground Truth Rules: 4 | Modules: 4"
#: End points of :func:`interpolate_routing`.
INTERPOLATION_TARGETS: tuple[str, ...] = ("collapse", "uniform")
#: Dashes that keep coinciding curves apart (the collapse metrics agree on many paths).
LINESTYLES: dict[str, str] = {"collapse_worst": "--", "inverse_mutual_info": "-."}
#: Display names of the metrics, in the paper's Fig. 5 column order.
METRIC_LABELS: dict[str, str] = {
    "collapse_avg": "Collapse-Avg",
    "collapse_worst": "Collapse-Worst",
    "alignment": "Alignment",
    "adaptation": "Adaptation",
    "inverse_mutual_info": "Inverse MI",
}


def _finish(fig: Figure, path: PathLike | None) -> Figure:
    # Lay the figure out inside the theme (ticks and text are created lazily), let constrained
    # layout settle, then freeze it: every later save or display draws exactly the same figure.
    fig.canvas.draw()
    fig.canvas.draw()
    fig.set_layout_engine("none")
    if path is not None:
        save_figure(fig, path)
    return fig


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))


def _check_setting(task: RuleTask, setting: str) -> None:
    if not isinstance(task, RuleTask):
        raise TypeError(f"task must be a RuleTask (make_task(...)), got {type(task).__name__}")
    if task.setting != setting:
        raise ValueError(f"this figure needs a {setting!r} task, got setting {task.setting!r}")


# --------------------------------------------------------------------------------------
# Chapter 1: rules and tasks
# --------------------------------------------------------------------------------------


def mlp_rules_figure(
    task: RuleTask,
    *,
    num_points: int = 300,
    seed: int = 0,
    ood: bool = False,
    max_rules: int = 8,
    path: PathLike | None = None,
) -> Figure:
    """The MLP rules as half-planes of the (x1, x2) plane (spec §2.1, paper Eq. 5).

    One panel per rule (at most ``max_rules``): points drawn from that rule alone (``prob`` is
    the rule's one-hot), coloured by their label; the line ``alpha_r x1 + beta_r x2 = 0`` is the
    classification boundary, and the arrow ``(alpha_r, beta_r)`` points to where the regression
    target grows.

    Parameters
    ----------
    task : RuleTask
        An ``mlp`` task (regression or classification).
    num_points : int
        Examples per panel.
    seed : int
        Seed of the ``torch.Generator`` that draws the points.
    ood : bool
        Draw out-of-distribution inputs (doubled x1, x2).
    max_rules : int
        Panels to draw; rules beyond it are left out of the figure.
    path : path, optional
        Also save the figure there (SVG + PNG).
    """
    _check_setting(task, "mlp")
    num_points = check_int(num_points, "num_points", minimum=1)
    shown = min(task.num_rules, check_int(max_rules, "max_rules", minimum=1))
    ncols = min(shown, 2 if shown <= 4 else 4)  # 2 x 2 for the paper's R = 4
    nrows = int(np.ceil(shown / ncols))
    gen = _generator(seed)
    limit = 7.0 if ood else 3.5
    with figure_style():
        fig, axes = new_figure(
            nrows, ncols, figsize=(3.0 * ncols + 0.8, 3.0 * nrows), sharex=True, sharey=True
        )
        axes = np.atleast_1d(axes).ravel()
        points = []
        for r in range(shown):
            onehot = np.eye(task.num_rules)[r]
            batch = task.sample(num_points, gen, ood=ood, prob=onehot)
            points.append((batch.inputs[:, :2].numpy(), batch.targets.numpy()))
        scale = symmetric_limits(np.concatenate([t for _, t in points]))
        for r, ax in enumerate(axes):
            if r >= shown:
                ax.set_visible(False)
                continue
            x, y = points[r]
            a, b = float(task.alpha[r]), float(task.beta[r])
            if task.is_classification:
                mappable = ax.scatter(
                    x[:, 0], x[:, 1], c=y, cmap="coolwarm", vmin=0, vmax=1, s=9, alpha=0.8
                )
            else:
                mappable = ax.scatter(
                    x[:, 0], x[:, 1], c=y, cmap="vlag", vmin=-scale, vmax=scale, s=9, alpha=0.9
                )
            direction = np.array([-b, a]) / np.hypot(a, b)
            ends = np.outer([-2 * limit, 2 * limit], direction)
            ax.plot(ends[:, 0], ends[:, 1], color="black", lw=1.5)
            ax.annotate(
                "",
                xy=(a / np.hypot(a, b) * 1.5, b / np.hypot(a, b) * 1.5),
                xytext=(0, 0),
                arrowprops={"arrowstyle": "->", "lw": 1.8, "color": "black"},
            )
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-limit, limit)
            ax.set_aspect("equal")
            ax.set_title(f"rule {r + 1}: y = {a:.2f} x$_1$ + {b:.2f} x$_2$", fontsize=10)
            if r % ncols == 0:
                ax.set_ylabel("x$_2$")
            if r >= (nrows - 1) * ncols or r + ncols >= shown:
                ax.set_xlabel("x$_1$")
        label = "label 1[y ≥ 0]" if task.is_classification else "target y"
        fig.colorbar(mappable, ax=list(axes[:shown]), label=label, shrink=0.8)
        kind = "out-of-distribution" if ood else "in-distribution"
        fig.suptitle(f"MLP {task.task}, R = {task.num_rules}, data seed {task.data_seed} ({kind})")
        return _finish(fig, path)


def mha_search_figure(
    task: RuleTask,
    *,
    seq_len: int = 6,
    seed: int = 0,
    path: PathLike | None = None,
) -> Figure:
    """One sequence of the MHA task, token by token (spec §2.2, paper Eqs. 9-10).

    Row i is token i, which searches every other token j with the queries of *its own* rule
    ``c_i``. Left: the search score with the first query (distance ``|q[j] - q[i]|`` in
    version 1, to be minimised; cosine similarity in version 2, to be maximised); right: the same
    with the second query. The chosen tokens ``s_i`` and ``s'_i`` (from
    :func:`mod_arch_core.data.mha.search`) are circled, and the label
    ``y_i = alpha[c_i] v[s_i] + beta[c_i] v'[s'_i]`` is printed at the end of each row.
    """
    _check_setting(task, "mha")
    seq_len = check_int(seq_len, "seq_len", minimum=2)
    batch = task.sample(1, _generator(seed), seq_len=seq_len)
    r, version = task.num_rules, task.search_version
    k = mha_data.COLUMNS_PER_RULE[version]
    features = batch.inputs[..., : k * r]  # (1, L, K R)
    rules = batch.rules  # (1, L)
    s, s_prime, v, v_prime = mha_data.search(features, rules, version)
    blocks = features[0].view(seq_len, r, k).double().numpy()  # token j, rule, column
    c = rules[0].numpy()
    scores = np.zeros((2, seq_len, seq_len))
    for which in range(2):
        for i in range(seq_len):
            if version == 1:
                q = blocks[:, c[i], which]
                scores[which, i] = np.abs(q - q[i])
            else:
                q = blocks[:, c[i], 2 * which : 2 * which + 2]
                scores[which, i] = q @ q[i]
    chosen = [s[0].numpy(), s_prime[0].numpy()]
    colors = rule_colors(r)
    with figure_style():
        fig, axes = new_figure(
            1, 3, figsize=(10.0, 0.5 * seq_len + 2.2), width_ratios=(1.0, 1.0, 0.62)
        )
        names = ("q", "q'")
        for which, ax in enumerate(axes[:2]):
            masked = np.ma.masked_array(scores[which], mask=np.eye(seq_len, dtype=bool))
            cmap = "Blues_r" if version == 1 else "Blues"
            image = ax.imshow(masked, cmap=cmap, aspect="auto")
            for i in range(seq_len):
                # the token itself is never a candidate
                ax.add_patch(_square(i, i, facecolor="#d0d0d0", edgecolor="white"))
                ax.plot(chosen[which][i], i, "o", ms=14, mfc="none", mec="#c0392b", mew=2.2)
            ax.set_xticks(range(seq_len), [str(j + 1) for j in range(seq_len)])
            ticks = [f"token {i + 1} · rule {c[i] + 1}" for i in range(seq_len)]
            ax.set_yticks(range(seq_len), ticks, fontsize=9)
            for i, tick in enumerate(ax.get_yticklabels()):
                tick.set_color(colors[c[i]])
            ax.set_xlabel("candidate token j")
            ax.grid(False)
            n = names[which]
            what = f"|{n}[j] − {n}[i]|" if version == 1 else f"⟨{n}[j], {n}[i]⟩"
            ax.set_title(f"search with {n}: {what}", fontsize=10)
            fig.colorbar(image, ax=ax, shrink=0.8)
        labels = batch.targets[0].numpy()
        retrieved = (v[0].numpy(), v_prime[0].numpy())
        text = axes[2]
        text.set_xlim(0, 1)
        text.set_ylim(seq_len - 0.5, -0.5)
        text.axis("off")
        text.set_title("retrieved values and label", fontsize=10)
        for i in range(seq_len):
            text.text(
                0.0,
                i,
                f"v = {retrieved[0][i]:+.2f}, v' = {retrieved[1][i]:+.2f}\n→ y = {labels[i]:+.2f}",
                va="center",
                fontsize=9,
            )
        rule_word = "smallest distance" if version == 1 else "largest similarity"
        fig.suptitle(
            f"MHA {task.task}, search version {version}, R = {r}: every token i picks the other "
            f"token\nwith the {rule_word} (circled), using the queries of its own rule",
            fontsize=11,
        )
        return _finish(fig, path)


def _square(x: float, y: float, **kwargs: Any) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1.0, 1.0, **kwargs)


def rnn_trajectory_figure(
    task: RuleTask,
    *,
    seq_len: int = 30,
    num_sequences: int = 4,
    seed: int = 0,
    path: PathLike | None = None,
) -> Figure:
    """Trajectories of the switching linear dynamical system (spec §2.3, paper Eqs. 14-15).

    Top: three coordinates of the state ``s_t`` of one sequence, on a background coloured by the
    rule active at each step (the rule switches at every step). Bottom: the norm ``||s_t||`` of
    ``num_sequences`` sequences, which stays bounded because each state map has spectral radius
    close to 1.
    """
    _check_setting(task, "rnn")
    seq_len = check_int(seq_len, "seq_len", minimum=1)
    num_sequences = check_int(num_sequences, "num_sequences", minimum=1)
    batch = task.sample(num_sequences, _generator(seed), seq_len=seq_len)
    d = task.state_dim
    coefficients = task.coefficients(dtype=torch.float32)
    states = rnn_data.run_dynamics(
        batch.inputs[None, ..., :d],
        batch.rules[None],
        coefficients["A"][None],
        coefficients["B"][None],
    )[0].numpy()  # (n, L, d)
    rules = batch.rules.numpy()
    colors = rule_colors(task.num_rules)
    steps = np.arange(1, seq_len + 1)
    with figure_style():
        fig, (top, bottom) = new_figure(2, 1, figsize=(9.0, 6.0), sharex=True)
        for t in range(seq_len):
            top.axvspan(t + 0.5, t + 1.5, color=colors[rules[0, t]], alpha=0.25, lw=0)
        for coordinate, style in zip(range(min(3, d)), ("-", "--", ":"), strict=False):
            top.plot(
                steps, states[0, :, coordinate], style, color="black", lw=1.6,
                label=f"$s_t[{coordinate + 1}]$",
            )  # fmt: skip
        top.set_ylabel("state coordinate")
        top.add_artist(top.legend(loc="upper left", ncols=3))  # kept when the rule legend is added
        top.set_title("one sequence; background colour = rule of the step", fontsize=11)
        norms = np.linalg.norm(states, axis=-1)
        for n in range(num_sequences):
            bottom.plot(steps, norms[n], marker="o", ms=3, lw=1.2, label=f"sequence {n + 1}")
        bottom.set_xlabel("time step t")
        bottom.set_ylabel(r"$\|s_t\|$")
        bottom.legend(loc="upper left", ncols=min(num_sequences, 4))
        handles = [
            _square(0, 0, facecolor=colors[r], alpha=0.5) for r in range(min(task.num_rules, 8))
        ]
        top.legend(
            handles,
            [f"rule {r + 1}" for r in range(len(handles))],
            loc="upper right",
            ncols=min(len(handles), 4),
            fontsize=8,
        )
        fig.suptitle(
            f"RNN {task.task}: switching linear dynamics, d = {d}, R = {task.num_rules}, "
            f"data seed {task.data_seed}"
        )
        return _finish(fig, path)


# --------------------------------------------------------------------------------------
# Chapter 2: models
# --------------------------------------------------------------------------------------


#: The paper's grid (spec §1): R and the encoder width E of the zipped capacity pairs (D = 4E).
PAPER_RULES: tuple[int, ...] = (2, 4, 8, 16, 32)
PAPER_ENCODER_DIMS: tuple[int, ...] = (32, 64, 128, 256, 512)


def parameter_count_table(
    settings: Sequence[str] = ("mlp", "mha", "rnn"),
    models: Sequence[str] = ("monolithic", "modular", "modular-op", "gt-modular"),
    rules: Sequence[int] = PAPER_RULES,
    encoder_dims: Sequence[int] = PAPER_ENCODER_DIMS,
    task: str = "regression",
) -> pd.DataFrame:
    """Per-run parameter counts over a grid (spec §3.5), built on the meta device (no memory).

    Returns
    -------
    DataFrame
        One row per (setting, model, R, E) with ``dim`` = 4E, ``parameters`` (the reference's
        convention, unused bias tensors included, spec §9.6), ``parameters_used`` and
        ``vs_monolithic``: the relative difference to the Monolithic model of the same setting,
        R and E (0.01 = 1% more parameters).
    """
    from mod_arch_core.models import count_parameters

    rows = []
    for setting in settings:
        for r in rules:
            for e in encoder_dims:
                for model in models:
                    args = (setting, model, r, e, 4 * e, task)
                    rows.append(
                        {
                            "setting": setting,
                            "model": model,
                            "num_rules": r,
                            "encoder_dim": e,
                            "dim": 4 * e,
                            "parameters": count_parameters(*args),
                            "parameters_used": count_parameters(*args, reference_convention=False),
                        }
                    )
    table = pd.DataFrame(rows)
    keys = ["setting", "num_rules", "encoder_dim"]
    mono = table[table["model"] == "monolithic"].set_index(keys)["parameters"]
    reference = mono.reindex(pd.MultiIndex.from_frame(table[keys])).to_numpy()
    table["vs_monolithic"] = table["parameters"].to_numpy() / reference - 1.0
    return table


def parameter_count_figure(table: pd.DataFrame, *, path: PathLike | None = None) -> Figure:
    """How far each model's parameter count is from Monolithic's (spec §3.5), per setting.

    Parameters
    ----------
    table : DataFrame
        The output of :func:`parameter_count_table` (columns ``setting``, ``model``,
        ``num_rules``, ``encoder_dim``, ``vs_monolithic``). Each line is the median over the
        capacities of the relative difference, in percent, against R; the band spans the
        smallest and the largest capacity.
    """
    needed = {"setting", "model", "num_rules", "encoder_dim", "vs_monolithic"}
    missing = needed - set(table.columns)
    if missing:
        raise ValueError(f"table lacks columns {sorted(missing)}; needs {sorted(needed)}")
    settings = list(dict.fromkeys(table["setting"]))
    with figure_style():
        fig, axes = new_figure(1, len(settings), figsize=(3.2 * len(settings) + 1.6, 3.4))
        axes = np.atleast_1d(axes)
        for ax, setting in zip(axes, settings, strict=True):
            part = table[(table["setting"] == setting) & (table["model"] != "monolithic")]
            for model in dict.fromkeys(part["model"]):
                stats = (
                    part[part["model"] == model]
                    .groupby("num_rules")["vs_monolithic"]
                    .agg(["median", "min", "max"])
                    * 100.0
                )
                style = {**model_style(model), "color": model_color(model)}
                ax.plot(
                    stats.index, stats["median"], ms=5, label=MODEL_LABELS.get(model, model),
                    **style,
                )  # fmt: skip
                ax.fill_between(
                    stats.index, stats["min"], stats["max"], color=style["color"], alpha=0.2
                )
            ax.axhline(0.0, color="black", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(part["num_rules"].unique()))
            ax.set_xticklabels([str(r) for r in sorted(part["num_rules"].unique())])
            ax.set_xlabel("number of rules R")
            ax.set_title(setting.upper())
        axes[0].set_ylabel("parameters vs Monolithic (%)")
        axes[-1].legend(loc="upper left", fontsize=9, bbox_to_anchor=(1.02, 1.0))
        return _finish(fig, path)


# --------------------------------------------------------------------------------------
# Chapter 3: metrics
# --------------------------------------------------------------------------------------


def _heatmap(ax: Any, matrix: np.ndarray, title: str, *, annotate: bool, cbar: bool) -> None:
    r = matrix.shape[0]
    sns.heatmap(
        matrix,
        ax=ax,
        cmap="YlGnBu",
        vmin=0.0,
        vmax=1.0,
        linewidths=2,
        linecolor="white",
        annot=annotate,
        fmt=".2f",
        annot_kws={"fontsize": 9},
        cbar=cbar,
        square=True,
        xticklabels=[str(m + 1) for m in range(r)],
        yticklabels=[str(i + 1) for i in range(r)],
    )
    ax.set_xlabel("Module")
    ax.set_ylabel("Rule")
    ax.set_title(title, fontsize=11)
    ax.tick_params(axis="y", rotation=0)


def fig2_collapse_example(path: PathLike | None = None) -> Figure:
    """The paper's Figure 2: a 4 x 4 heatmap of p(module | rule) showing collapse (spec §6.1).

    Rows are rules 1-4, columns modules 1-4 (:data:`FIG2_MODULE_GIVEN_RULE`), colour map
    ``YlGnBu`` on [0, 1], white cell borders of width 2, title :data:`FIG2_TITLE`. Module 3 is
    never used and module 4 serves rules 2 and 3. Its metrics are C_A = 1/3, C_W = 1 and
    Alignment = 0.2625.
    """
    with figure_style():
        fig, ax = new_figure(figsize=(5.0, 4.2))
        _heatmap(ax, FIG2_MODULE_GIVEN_RULE, FIG2_TITLE, annotate=True, cbar=True)
        return _finish(fig, path)


def activation_heatmaps(
    matrices: Mapping[str, Any],
    *,
    conditional: bool = True,
    path: PathLike | None = None,
) -> Figure:
    """A row of heatmaps, one per named matrix, titled with its metrics.

    Parameters
    ----------
    matrices : mapping of name -> array (R, R)
        Joint P (rows sum to 1/R) or conditional p(module | rule) (rows sum to 1); any
        non-negative matrix is renormalised by the metrics.
    conditional : bool
        Draw p(module | rule) = R P (rows sum to 1), like the paper's Figure 2.
    """
    names = list(matrices)
    if not names:
        raise ValueError("matrices must hold at least one matrix")
    ncols = min(len(names), 3)
    nrows = int(np.ceil(len(names) / ncols))
    with figure_style():
        fig, axes = new_figure(nrows, ncols, figsize=(3.2 * ncols, 3.7 * nrows))
        axes = np.atleast_1d(axes).ravel()
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        for ax, name in zip(axes, names, strict=False):
            joint = metrics.normalise(matrices[name])
            r = joint.shape[0]
            shown = r * joint if conditional else joint
            values = metrics.all_metrics(joint)
            title = (
                f"{name}\nC_A {values['collapse_avg']:.2f} · C_W {values['collapse_worst']:.2f}"
                f"\nAlign {values['alignment']:.2f} · IMI {values['inverse_mutual_info']:.2f}"
            )
            _heatmap(ax, shown, title, annotate=r <= 6, cbar=False)
        return _finish(fig, path)


def interpolate_routing(num_rules: int, t: float, target: str = "collapse") -> np.ndarray:
    """p(module | rule) on the straight path from perfect specialisation to ``target``.

    ``Q(t) = (1 - t) I + t T`` with ``T`` the all-to-module-1 routing (``"collapse"``: every
    rule sent to module 1) or the uniform routing (``"uniform"``: every module 1/R for every
    rule). Returns an ``(R, R)`` matrix whose rows sum to 1; the joint P is ``Q / R``.
    """
    r = check_num_rules(num_rules)
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    if target == "collapse":
        end = np.zeros((r, r))
        end[:, 0] = 1.0
    elif target == "uniform":
        end = np.full((r, r), 1.0 / r)
    else:
        raise ValueError(
            f"target must be one of {', '.join(INTERPOLATION_TARGETS)}; got {target!r}"
        )
    return (1.0 - t) * np.eye(r) + t * end


def routing_adaptation(module_given_rule: Any, num_draws: int = 100) -> float:
    """Adaptation (paper Eq. 20 with the code's ½, spec §5.4) of a fixed routing matrix.

    A model that routes rule r to module m with probability ``Q[r, m]`` uses its modules with
    marginal ``q = p @ Q`` when the rules follow ``p``. Scoring that exact ``q`` against the
    metric's Dirichlet draws gives the Adaptation the model would reach with infinitely many
    evaluation batches: 0 for a permutation, the Random baseline's value for uniform routing.
    """
    q_matrix = np.asarray(module_given_rule, dtype=np.float64)
    if q_matrix.ndim != 2 or q_matrix.shape[0] != q_matrix.shape[1]:
        raise ValueError(f"module_given_rule must be a square (R, R) matrix, got {q_matrix.shape}")
    rows = q_matrix.sum(axis=1, keepdims=True)
    if np.any(rows <= 0):
        raise ValueError("every rule must route somewhere: rows of module_given_rule sum to > 0")
    q_matrix = q_matrix / rows
    draws = metrics.dirichlet_draws(q_matrix.shape[0], num_draws)
    return float(metrics.adaptation_from_marginals(draws, draws @ q_matrix))


def metric_path_table(
    num_rules: int,
    num_steps: int = 21,
    targets: Sequence[str] = INTERPOLATION_TARGETS,
    num_draws: int = 100,
) -> pd.DataFrame:
    """Every metric along :func:`interpolate_routing` paths, as a tidy table.

    Returns
    -------
    DataFrame
        Columns ``target``, ``t``, ``metric`` (keys of :data:`METRIC_LABELS`), ``value``;
        ``num_steps`` values of t evenly spaced in [0, 1] per target.
    """
    r = check_num_rules(num_rules)
    steps = check_int(num_steps, "num_steps", minimum=2)
    rows = []
    for target in targets:
        for t in np.linspace(0.0, 1.0, steps):
            q_matrix = interpolate_routing(r, t, target)
            values = metrics.all_metrics(q_matrix / r)
            values["adaptation"] = routing_adaptation(q_matrix, num_draws)
            for metric in METRIC_LABELS:
                rows.append(
                    {
                        "target": target,
                        "t": float(t),
                        "metric": metric,
                        "value": float(values[metric]),
                    }
                )
    return pd.DataFrame(rows)


def metric_path_figure(table: pd.DataFrame, *, path: PathLike | None = None) -> Figure:
    """Draw :func:`metric_path_table`: one panel per target, one line per metric."""
    targets = list(dict.fromkeys(table["target"]))
    palette = dict(
        zip(METRIC_LABELS, sns.color_palette("colorblind", len(METRIC_LABELS)), strict=True)
    )
    with figure_style():
        fig, axes = new_figure(1, len(targets), figsize=(4.2 * len(targets), 3.6), sharey=True)
        axes = np.atleast_1d(axes)
        for ax, target in zip(axes, targets, strict=True):
            part = table[table["target"] == target]
            for metric, label in METRIC_LABELS.items():
                line = part[part["metric"] == metric].sort_values("t")
                ax.plot(
                    line["t"], line["value"], LINESTYLES.get(metric, "-"), lw=2,
                    color=palette[metric], label=label,
                )  # fmt: skip
            end = "every rule → module 1" if target == "collapse" else "p(m | r) = 1/R"
            ax.set_title(f"from specialisation (t = 0) to {target}\n(t = 1: {end})", fontsize=10)
            ax.set_xlabel("t")
            ax.set_ylim(-0.03, 1.03)
        axes[0].set_ylabel("metric value")
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        return _finish(fig, path)
