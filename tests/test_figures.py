"""Figures of the definition and results chapters: right content, labels, reproducible bytes."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Wedge

from mod_arch_core import analysis, metrics, results
from mod_arch_core.data import make_task
from mod_arch_core.figures import definitions as figs
from mod_arch_core.figures import paper, style


def _visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


# --------------------------------------------------------------------------------------
# Style and the reproducible writer
# --------------------------------------------------------------------------------------


def test_fig2_files_are_byte_identical_across_runs(tmp_path: Path) -> None:
    first = figs.fig2_collapse_example(path=tmp_path / "a" / "fig2_collapse_example.svg")
    second = figs.fig2_collapse_example(path=tmp_path / "b" / "fig2_collapse_example.svg")
    assert isinstance(first, Figure) and isinstance(second, Figure)
    for suffix in ("svg", "png"):
        a = (tmp_path / "a" / f"fig2_collapse_example.{suffix}").read_bytes()
        b = (tmp_path / "b" / f"fig2_collapse_example.{suffix}").read_bytes()
        assert len(a) > 1000
        assert a == b, f"{suffix} bytes differ between two runs"
    svg = (tmp_path / "a" / "fig2_collapse_example.svg").read_text()
    assert "<dc:date>" not in svg, "no creation date in the SVG"
    assert "mod_arch_core.figures" in svg
    png = (tmp_path / "a" / "fig2_collapse_example.png").read_bytes()
    assert b"Matplotlib version" not in png, "no software/version stamp in the PNG"


def test_figure_bytes_match_saved_file(tmp_path: Path) -> None:
    fig = figs.fig2_collapse_example()
    (svg,) = style.save_figure(fig, tmp_path / "x.svg", formats=("svg",))
    assert svg.read_bytes() == style.figure_bytes(fig, "svg") == style.figure_bytes(fig, "svg")


def test_save_figure_refuses_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be one of svg, png, pdf; got 'jpg'"):
        style.save_figure(figs.fig2_collapse_example(), tmp_path / "x.svg", formats=("jpg",))


def test_theme_does_not_leak_into_global_settings() -> None:
    before = dict(mpl.rcParams)
    figs.fig2_collapse_example()
    with style.figure_style():
        assert mpl.rcParams["svg.hashsalt"] == "mod_arch_core"
    after = dict(mpl.rcParams)
    assert before == after


def test_show_returns_svg_for_notebooks() -> None:
    shown = style.show(figs.fig2_collapse_example())
    assert type(shown).__name__ == "SVG"
    assert "<svg" in shown.data


def test_model_colours_are_okabe_ito_and_unknown_names_fail() -> None:
    assert style.model_color("GT_Modular") == "#0072b2"
    assert style.model_color("monolithic") == "#d55e00"
    with pytest.raises(ValueError, match="unknown model 'mixture'"):
        style.model_color("mixture")


# Colour-vision deficiency simulation (Machado, Oliveira and Fernandes 2009, severity 1.0), applied
# in linear RGB, and CIE L*a*b* distances (CIE76) between the simulated colours.
_CVD = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                   [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                   [0.004733, 0.691367, 0.303900]],
}  # fmt: skip


def _linear(rgb: np.ndarray) -> np.ndarray:
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _lab(linear: np.ndarray) -> np.ndarray:
    xyz = (
        linear
        @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    )
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def _min_distance(colours: list[str], vision: str | None) -> float:
    rgb = _linear(np.array([mpl.colors.to_rgb(c) for c in colours]))
    if vision is not None:
        rgb = np.clip(rgb @ np.array(_CVD[vision]).T, 0, 1)
    lab = _lab(rgb)
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    return float(d[np.triu_indices(len(colours), 1)].min())


@pytest.mark.parametrize("vision", [None, *_CVD])
def test_paper_models_stay_distinct_for_colour_blind_readers(vision: str | None) -> None:
    colours = [
        style.model_color(m)
        for m in ("gt-modular", "modular-op", "modular", "monolithic", "random")
    ]
    # the paper's purples, pinks and grey: about 10 apart under protanopia and deuteranopia
    assert _min_distance(colours, vision) > 15, f"{vision}: two models look alike"


def test_routing_variants_are_apart_in_grey_scale_too() -> None:
    styles = {m: style.model_style(m) for m in style.MODEL_ORDER}
    keys = {(s["marker"], str(s["linestyle"])) for s in styles.values()}
    assert len(keys) == len(styles), "every model needs its own marker and line style"
    assert len({s["marker"] for s in styles.values()}) == len(styles)
    assert len({str(s["linestyle"]) for s in styles.values()}) == len(styles)
    assert set(style.MODEL_HATCHES) == set(style.MODEL_COLORS)
    variants = [
        m
        for m in style.MODEL_ORDER
        if m not in ("gt-modular", "modular-op", "monolithic", "random")
    ]
    assert _min_distance([style.model_color(m) for m in variants], None) > 10


def test_rule_colours_are_distinct() -> None:
    for r in (2, 4, 10, 32):
        colours = style.rule_colors(r)
        assert len(colours) == r == len(set(colours))


# --------------------------------------------------------------------------------------
# Chapter 3: the paper's Figure 2 and the metric figures
# --------------------------------------------------------------------------------------


def test_fig2_content_and_labels() -> None:
    fig = figs.fig2_collapse_example()
    heatmap = fig.axes[0]
    assert heatmap.get_title() == "Ground Truth Rules: 4 | Modules: 4"
    assert heatmap.get_xlabel() == "Module" and heatmap.get_ylabel() == "Rule"
    assert [t.get_text() for t in heatmap.get_xticklabels()] == ["1", "2", "3", "4"]
    assert [t.get_text() for t in heatmap.get_yticklabels()] == ["1", "2", "3", "4"]
    mesh = heatmap.collections[0]
    np.testing.assert_allclose(
        np.asarray(mesh.get_array()).reshape(4, 4), figs.FIG2_MODULE_GIVEN_RULE
    )
    assert mesh.get_cmap().name == "YlGnBu"
    assert mesh.get_clim() == (0.0, 1.0)
    assert len(fig.axes) == 2, "heatmap and colour bar"


def test_fig2_matrix_has_the_reference_metrics() -> None:
    P = figs.FIG2_MODULE_GIVEN_RULE / 4
    assert metrics.collapse_avg(P) == pytest.approx(1 / 3, abs=1e-12)
    assert metrics.collapse_worst(P) == pytest.approx(1.0, abs=1e-12)
    assert metrics.alignment(P) == pytest.approx(0.2625, abs=1e-12)


def test_activation_heatmaps_titles_carry_metrics() -> None:
    fig = figs.activation_heatmaps({"perfect": np.eye(3) / 3, "uniform": np.full((3, 3), 1 / 9)})
    axes = _visible_axes(fig)
    assert len(axes) == 2
    assert axes[0].get_title().startswith("perfect\nC_A 0.00")
    assert "Align 0.67" in axes[1].get_title()
    with pytest.raises(ValueError, match="at least one matrix"):
        figs.activation_heatmaps({})


def test_interpolate_routing_end_points() -> None:
    np.testing.assert_array_equal(figs.interpolate_routing(3, 0.0), np.eye(3))
    collapsed = figs.interpolate_routing(3, 1.0, "collapse")
    np.testing.assert_array_equal(collapsed[:, 0], 1.0)
    np.testing.assert_allclose(figs.interpolate_routing(3, 1.0, "uniform"), 1 / 3)
    np.testing.assert_allclose(figs.interpolate_routing(5, 0.3).sum(axis=1), 1.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\], got 1.5"):
        figs.interpolate_routing(3, 1.5)
    with pytest.raises(ValueError, match="target must be one of collapse, uniform"):
        figs.interpolate_routing(3, 0.5, "sideways")


def test_routing_adaptation_limits() -> None:
    assert figs.routing_adaptation(np.eye(4)) == pytest.approx(0.0, abs=1e-12)
    assert figs.routing_adaptation(np.roll(np.eye(4), 1, axis=1)) == pytest.approx(0.0, abs=1e-12)
    uniform = figs.routing_adaptation(np.full((4, 4), 0.25))
    assert uniform == pytest.approx(metrics.adaptation_static(None, 4), abs=1e-12)
    assert uniform == pytest.approx(0.30071, abs=5e-6)
    with pytest.raises(ValueError, match="square"):
        figs.routing_adaptation(np.ones((2, 3)))


def test_metric_path_table_and_figure() -> None:
    table = figs.metric_path_table(4, num_steps=5, num_draws=20)
    assert list(table.columns) == ["target", "t", "metric", "value"]
    assert len(table) == 2 * 5 * 5
    start = table[table["t"] == 0.0]
    assert start["value"].abs().max() < 1e-6, "every metric is ~0 for a perfect specialist"
    end = table[(table["t"] == 1.0) & (table["target"] == "uniform")].set_index("metric")["value"]
    assert end["collapse_avg"] == pytest.approx(0.0, abs=1e-12)
    assert end["alignment"] == pytest.approx(0.75)
    fig = figs.metric_path_figure(table)
    axes = _visible_axes(fig)
    assert len(axes) == 2
    assert axes[0].get_xlabel() == "t" and axes[0].get_ylabel() == "metric value"
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == list(
        figs.METRIC_LABELS.values()
    )


# --------------------------------------------------------------------------------------
# Chapter 1: rules and tasks
# --------------------------------------------------------------------------------------


def test_mlp_rules_figure_has_one_panel_per_rule() -> None:
    task = make_task("mlp", "regression", num_rules=4, data_seed=0)
    fig = figs.mlp_rules_figure(task, num_points=50)
    panels = [ax for ax in _visible_axes(fig) if ax.get_title().startswith("rule")]
    assert len(panels) == 4
    assert panels[0].get_title() == "rule 1: y = 1.76 x$_1$ + 1.87 x$_2$"
    assert panels[2].get_xlabel() == "x$_1$" and panels[0].get_ylabel() == "x$_2$"
    assert "data seed 0" in fig.get_suptitle()
    with pytest.raises(ValueError, match="needs a 'mlp' task"):
        figs.mlp_rules_figure(make_task("rnn", "regression", num_rules=2, data_seed=0))


def test_mha_search_figure_marks_two_choices_per_token() -> None:
    task = make_task("mha", "regression", num_rules=3, data_seed=0, search_version=2)
    fig = figs.mha_search_figure(task, seq_len=5)
    left, right = fig.axes[0], fig.axes[1]  # then the text panel and the colour bars
    for ax in (left, right):
        circles = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert len(circles) == 5
        assert ax.get_xlabel() == "candidate token j"
        assert len(ax.get_yticklabels()) == 5
    assert "⟨q[j], q[i]⟩" in left.get_title(), "version 2 searches by cosine"
    assert "version 2" in fig.get_suptitle()


def test_rnn_trajectory_figure() -> None:
    task = make_task("rnn", "classification", num_rules=2, data_seed=1, state_dim=8)
    fig = figs.rnn_trajectory_figure(task, seq_len=12, num_sequences=3)
    top, bottom = _visible_axes(fig)
    assert bottom.get_xlabel() == "time step t"
    assert len(bottom.get_lines()) == 3
    assert len(top.get_lines()) == 3, "three state coordinates"
    assert "d = 8" in fig.get_suptitle()


# --------------------------------------------------------------------------------------
# Chapter 2: parameter counts
# --------------------------------------------------------------------------------------


def test_parameter_count_table_and_figure() -> None:
    table = figs.parameter_count_table(rules=(2, 4), encoder_dims=(32,))
    assert len(table) == 3 * 4 * 2
    mono = table[table["model"] == "monolithic"]
    assert (mono["vs_monolithic"] == 0).all()
    row = table.set_index(["setting", "model", "num_rules"]).loc[("mlp", "modular", 2)]
    assert row["parameters"] == 35619  # the reference code's count (spec §3.5)
    rnn = table[(table["setting"] == "rnn") & (table["model"] == "modular")]
    assert ((rnn["parameters"] - rnn["parameters_used"]) == rnn["num_rules"]).all()
    fig = figs.parameter_count_figure(table)
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["MLP", "MHA", "RNN"]
    assert axes[0].get_ylabel() == "parameters vs Monolithic (%)"
    with pytest.raises(ValueError, match="table lacks columns"):
        figs.parameter_count_figure(table.drop(columns="vs_monolithic"))


# --------------------------------------------------------------------------------------
# The paper's result figures (figures.paper), on small synthetic tables
# --------------------------------------------------------------------------------------

PERF_ORDER = {"gt-modular": 1.0, "modular-op": 2.0, "modular": 3.0, "monolithic": 4.0}


def _synthetic_runs() -> pd.DataFrame:
    """A schema-valid runs table: MLP and RNN, both tasks, R in {2, 4}, 3 seeds, both checkpoints."""
    rows = []
    for setting, task, model, r, seed in product(
        ("mlp", "rnn"), ("regression", "classification"), PERF_ORDER, (2, 4), (0, 1, 2)
    ):
        value = PERF_ORDER[model] * r + 0.1 * seed
        row = {
            "setting": setting, "task": task, "model": model, "num_rules": r, "encoder_dim": 8,
            "dim": 32, "search_version": np.nan, "data_seed": 0, "seed": seed, "iterations": 50,
            "n_params": 1000 * r + 100 * PERF_ORDER[model], "perf": value, "perf_ood": 2 * value,
            "best_iteration": 50, "diverged_at": -1, "wall_seconds": 1.0, "stacked_runs": 3,
            "config_hash": "h", "profile": "custom", "package_version": "0", "git_commit": "c",
            "torch_version": "t", "device": "cpu", "hardware": "cpu", "activation_matrix": "",
        }  # fmt: skip
        if setting == "rnn":
            for length in (3, 5, 10, 20, 30):
                row[f"perf_{length}"] = value * length
                row[f"perf_ood_{length}"] = 2 * value * length
        if model != "monolithic":
            level = 0.0 if model == "gt-modular" else 0.1 * r + 0.01 * seed
            for name in analysis.METRICS:
                row[name] = min(level, 1.0)
            matrix = np.eye(r) / r if model == "gt-modular" else np.full((r, r), 1 / r**2)
            row["activation_matrix"] = json.dumps(matrix.tolist())
        for checkpoint in ("last", "best"):
            rows.append({**row, "checkpoint": checkpoint})
    return results.validate_runs(pd.DataFrame(rows))


def _synthetic_curves(runs: pd.DataFrame) -> pd.DataFrame:
    last = runs[runs["checkpoint"] == "last"]
    rows = []
    for run in last.itertuples(index=False):
        for iteration in range(0, 51, 10):
            value = run.perf * (2.0 - iteration / 50)
            keys = {key: getattr(run, key) for key in results.RUN_KEYS}
            rows.append({**keys, "iteration": iteration, "perf": value, "perf_val": value})
    return results.validate_curves(pd.DataFrame(rows).assign(config_hash="h"))


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return _synthetic_runs()


@pytest.fixture(scope="module")
def curves(runs: pd.DataFrame) -> pd.DataFrame:
    return _synthetic_curves(runs)


def _legend_labels(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_fig3_pies_state_settings_ties_and_colours(runs: pd.DataFrame, tmp_path: Path) -> None:
    fig = paper.fig3_ranking_pies(runs, figures_dir=tmp_path)
    donut, sub = fig.axes[:2]
    # GT-Modular always wins; empty slices are dropped, so each pie has one wedge
    wedges = [p for p in donut.patches if isinstance(p, Wedge)]
    assert len(wedges) == 1 and mpl.colors.to_hex(wedges[0].get_facecolor()) == "#0072b2"
    assert wedges[0].width == pytest.approx(0.3), "the four-model pie is a donut"
    sub_wedges = [p for p in sub.patches if isinstance(p, Wedge)]
    assert [mpl.colors.to_hex(w.get_facecolor()) for w in sub_wedges] == ["#009e73"]
    assert "8 settings; 0 ties" in donut.get_title()
    assert "GT-Modular, Modular-op, Monolithic, Modular" in donut.get_title()
    assert "ties to Monolithic" in sub.get_title()
    assert "100.0%" in [t.get_text() for t in donut.texts]
    assert "ID, last checkpoint, ranking fixed" in fig.get_suptitle()
    assert (tmp_path / "fig3_ranking_pies.svg").is_file()
    assert (tmp_path / "fig3_ranking_pies.png").is_file()
    released = paper.fig3_ranking_pies(runs, as_released=True, figures_dir=tmp_path)
    slices = [p for p in released.axes[0].patches if isinstance(p, Wedge)]
    assert len(slices) == 2, "RNN classification crowns its worst model, Monolithic"
    assert "as released" in released.get_suptitle()
    assert (tmp_path / "fig3_ranking_pies_as_released.svg").is_file()
    with pytest.raises(ValueError, match="metric must be 'perf' or 'perf_ood'"):
        paper.fig3_ranking_pies(runs, metric="accuracy")


def test_fig4_facets_labels_hues_and_bands(runs: pd.DataFrame) -> None:
    fig = paper.fig4_perf_vs_rules(runs)
    axes = _visible_axes(fig)
    assert len(axes) == 2 * 4
    assert [ax.get_title() for ax in axes[:4]] == [f"MLP · {p}" for p in analysis.PANELS]
    assert axes[4].get_title() == "RNN · Classification | ID"
    assert axes[0].get_ylabel() == "Error (%)" and axes[2].get_ylabel() == "Loss (L1)"
    assert axes[4].get_xlabel() == "Rules"
    assert axes[0].get_xscale() == "log"
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["2", "4"]
    for ax in axes:
        assert len(ax.get_lines()) == 4, "one line per model"
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 4, "a confidence band per model"
    assert _legend_labels(fig) == ["GT-Modular", "Modular-op", "Modular", "Monolithic"]
    assert "95% bootstrap CI" in fig.get_suptitle() and "last checkpoint" in fig.get_suptitle()
    # the plotted means are the means over runs of the last checkpoint
    gt = axes[2].get_lines()[0]
    np.testing.assert_allclose(gt.get_ydata(), [2.1, 4.1])


def test_fig4_bands_are_real_intervals(runs: pd.DataFrame) -> None:
    fig = paper.fig4_perf_vs_rules(runs)
    band = next(c for c in fig.axes[2].collections if isinstance(c, PolyCollection))
    heights = np.ptp(band.get_paths()[0].vertices[:, 1])
    assert heights > 0.05, "seeds differ by 0.1, so the 95% band is visible"


def test_fig5_and_fig6_bars_hues_and_error_bars(runs: pd.DataFrame) -> None:
    fig = paper.fig5_metrics_vs_rules(runs)
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "Collapse-Avg", "Collapse-Worst", "Alignment", "Adaptation", "Inverse Mutual Info",
    ]  # fmt: skip
    assert _legend_labels(fig) == ["GT-Modular", "Modular-op", "Modular", "Random"]
    alignment = axes[2]
    bars = [c for c in alignment.containers if isinstance(c, BarContainer)]
    assert len(bars) == 4 and all(len(b) == 2 for b in bars), "4 hues x 2 values of R"
    random_heights = [patch.get_height() for patch in bars[3]]
    np.testing.assert_allclose(random_heights, [0.5, 0.75])
    assert all(b.errorbar is not None for b in bars), "95% CI error bars"
    assert [t.get_text() for t in alignment.get_xticklabels()] == ["2", "4"]
    by_setting = paper.fig5_metrics_vs_rules(runs, by="setting")
    assert len(_visible_axes(by_setting)) == 2 * 5
    assert _visible_axes(by_setting)[5].get_title() == "RNN · Collapse-Avg"
    fig6 = paper.fig6_metrics_per_model(runs)
    axes6 = _visible_axes(fig6)
    assert len(axes6) == 5
    labels = [t.get_text() for t in axes6[0].get_xticklabels()]
    assert labels == ["GT-Modular", "Modular-op", "Modular", "Random"]
    (bars6,) = [c for c in axes6[2].containers if isinstance(c, BarContainer)]
    assert bars6[3].get_height() == pytest.approx(0.625), "Random: mean of 1/2 and 3/4"


def test_fig7_per_setting_and_task_never_mixes_units(curves: pd.DataFrame) -> None:
    fig = paper.fig7_training_curves(curves)
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "MLP · regression", "MLP · classification", "RNN · regression", "RNN · classification",
    ]  # fmt: skip
    assert axes[0].get_ylabel() == "Loss (L1)" and axes[1].get_ylabel() == "Error (%)"
    assert axes[2].get_xlabel() == "Iteration"
    for ax in axes:
        assert len(ax.get_lines()) == 4
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 4
    relative = paper.fig7_training_curves(curves, relative=True)
    first = _visible_axes(relative)[0]
    assert first.get_ylabel() == "Perf / perf at start"
    line = first.get_lines()[0]
    assert line.get_ydata()[0] == pytest.approx(1.0)
    assert line.get_ydata()[-1] == pytest.approx(0.5)


def test_appendix_figures(runs: pd.DataFrame) -> None:
    size = paper.perf_vs_size(runs)
    axes = _visible_axes(size)
    assert len(axes) == 8 and axes[0].get_xscale() == "log"
    assert axes[-1].get_xlabel() == "Number of parameters"
    lengths = paper.perf_per_length(runs)
    axes = _visible_axes(lengths)
    assert [ax.get_title() for ax in axes] == [
        "RNN regression · ID", "RNN regression · OoD",
        "RNN classification · ID", "RNN classification · OoD",
    ]  # fmt: skip
    assert [int(t) for t in axes[0].get_xticks()] == [3, 5, 10, 20, 30]
    assert len([c for c in axes[0].collections if isinstance(c, PolyCollection)]) == 4
    with pytest.raises(ValueError, match="needs MHA or RNN runs"):
        paper.perf_per_length(runs[runs["setting"] == "mlp"])
    capacity = paper.metrics_per_capacity(runs)
    axes = _visible_axes(capacity)
    assert len(axes) == 5 * 2
    assert [ax.get_title() for ax in axes[:2]] == ["Rules = 2", "Rules = 4"]
    assert axes[0].get_ylabel() == "Collapse-Avg"


def test_activation_and_training_run_figures(runs: pd.DataFrame, curves: pd.DataFrame) -> None:
    fig = paper.learned_activation_figure(runs, setting="mlp", task="regression", num_rules=4)
    panels = _visible_axes(fig)
    assert len(panels) == 3
    assert panels[0].get_title().startswith("GT-Modular (data seed 0, seed 0)\nC_A 0.00")
    assert "Align 0.75" in panels[2].get_title(), "uniform routing"
    one = curves[
        (curves["setting"] == "mlp")
        & (curves["task"] == "regression")
        & (curves["model"] == "modular")
        & (curves["num_rules"] == 2)
    ]
    training = paper.training_runs_figure(one)
    left = training.axes[0]
    assert len(left.get_lines()) == 3 + 1, "three runs and their mean"
    assert left.get_ylabel() == "Loss (L1)"
    assert "3 runs trained as one stack" in training.get_suptitle()
    with pytest.raises(ValueError, match="draws one configuration"):
        paper.training_runs_figure(curves)
    with pytest.raises(ValueError, match="at least one"):
        paper.activation_matrices_figure({})


def test_result_figures_have_reproducible_bytes(runs: pd.DataFrame, curves: pd.DataFrame) -> None:
    for draw in (
        lambda: paper.fig3_ranking_pies(runs),
        lambda: paper.fig4_perf_vs_rules(runs),
        lambda: paper.fig5_metrics_vs_rules(runs),
        lambda: paper.fig7_training_curves(curves),
    ):
        assert style.figure_bytes(draw()) == style.figure_bytes(draw())


def _overlapping_tick_labels(fig: Figure) -> list[str]:
    """Pairs of x tick labels of one axis whose drawn boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    clashes = []
    for ax in _visible_axes(fig):
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        for k in range(len(boxes) - 1):
            if boxes[k].overlaps(boxes[k + 1]):
                clashes.append(
                    f"{ax.get_title()}: {labels[k].get_text()} / {labels[k + 1].get_text()}"
                )
    return clashes


def test_perf_vs_size_tick_labels_never_overlap(runs: pd.DataFrame) -> None:
    # the shipped RNN models: parameter counts 99.5k, 101k, 103k, 106k across R (a few % apart)
    narrow = runs.copy()
    narrow["n_params"] = 99_500 + 2_000 * np.log2(narrow["num_rules"]) + narrow["n_params"] % 7
    for table in (runs, narrow):
        fig = paper.perf_vs_size(table)
        assert _overlapping_tick_labels(fig) == []
        for ax in _visible_axes(fig):
            texts = [t.get_text() for t in ax.get_xticklabels()]
            assert len(texts) == len(set(texts)), f"repeated tick labels {texts}"
    ticks = [t.get_text() for t in _visible_axes(paper.perf_vs_size(narrow))[0].get_xticklabels()]
    assert len(ticks) == 2, "a narrow range gets its two ends only"


def _mha_versions(runs: pd.DataFrame) -> pd.DataFrame:
    rnn = runs[runs["setting"] == "rnn"]
    return pd.concat(
        [rnn.assign(setting="mha", search_version=v, perf=rnn["perf"] * v) for v in (1.0, 2.0)],
        ignore_index=True,
    )


def test_search_version_figures_draw_each_version_apart(runs: pd.DataFrame) -> None:
    mha = _mha_versions(runs)
    fig = paper.perf_per_search_version(pd.concat([runs, mha], ignore_index=True))
    axes = _visible_axes(fig)
    assert len(axes) == 2 * 4
    assert axes[0].get_title() == "MHA search v1 · Classification | ID"
    assert axes[4].get_title() == "MHA search v2 · Classification | ID"
    # version 2's numbers are twice version 1's: the lines are not pooled
    v1 = axes[0].get_lines()[0].get_ydata()
    v2 = axes[4].get_lines()[0].get_ydata()
    np.testing.assert_allclose(np.asarray(v2), 2 * np.asarray(v1))
    metrics_fig = paper.fig5_metrics_vs_rules(mha, by="search_version")
    titles = [ax.get_title() for ax in _visible_axes(metrics_fig)]
    assert (
        titles[0] == "MHA search v1 · Collapse-Avg" and titles[5] == "MHA search v2 · Collapse-Avg"
    )
    with pytest.raises(ValueError, match="needs MHA runs"):
        paper.perf_per_search_version(runs)
    with pytest.raises(ValueError, match="needs MHA runs"):
        paper.fig5_metrics_vs_rules(runs, by="search_version")


def test_result_figures_refuse_bad_input(runs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="checkpoint must be one of last, best, pooled"):
        paper.fig4_perf_vs_rules(runs, checkpoint="final")
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        paper.fig5_metrics_vs_rules([1, 2])
    with pytest.raises(ValueError, match="by must be None, 'setting', 'task' or 'search_version'"):
        paper.fig5_metrics_vs_rules(runs, by="seed")
    with pytest.raises(ValueError, match="table is empty"):
        paper.fig6_metrics_per_model(runs.iloc[:0])


# --------------------------------------------------------------------------------------
# Beyond the paper: routing chapter and calibration page
# --------------------------------------------------------------------------------------


def test_every_registered_model_has_a_label_colour_and_marker() -> None:
    from mod_arch_core.models.registry import MODEL_NAMES

    for name in MODEL_NAMES:
        assert name in style.MODEL_ORDER and name in style.MODEL_LABELS
        assert style.model_color(name).startswith("#")
        assert name in style.MODEL_MARKERS
    assert len(set(style.MODEL_COLORS.values())) == len(style.MODEL_COLORS)


def _with_variants(runs: pd.DataFrame) -> pd.DataFrame:
    """The synthetic table plus a hard router (selected metrics) and a balanced soft router."""
    modular = runs[runs["model"] == "modular"]
    topk = modular.assign(model="modular-topk", model_options='{"top_k": 1}')
    for name in analysis.METRICS:
        topk[f"{name}_selected"] = topk[name] + 0.05
    balanced = modular.assign(
        model="modular-balanced",
        model_options='{"balance_weight": 0.01}',
        collapse_avg=modular["collapse_avg"] / 2,
    )
    return pd.concat([runs, topk, balanced], ignore_index=True)


def test_routing_figures(runs: pd.DataFrame) -> None:
    from mod_arch_core import routing_study
    from mod_arch_core.figures import routing as rfigs

    table = _with_variants(runs)
    fig = rfigs.routing_metrics(table)
    assert len(fig.axes) == 5
    assert {"Top-1", "Balanced", "Modular"} <= set(_legend_labels(fig))
    hard = rfigs.routing_metrics(table, source="selection")
    assert _legend_labels(hard) == ["Top-1"]
    perf = rfigs.routing_performance(table, models=["modular", "modular-topk"])
    assert len(perf.axes) == 4 and set(_legend_labels(perf)) == {"Modular", "Top-1"}
    diffs = pd.concat(
        [
            routing_study.paired_differences(table, "modular", v)
            for v in ("modular-topk", "modular-balanced")
        ]
    )
    forest = rfigs.paired_differences_figure(diffs)
    assert len(forest.axes) == 6
    heat = rfigs.routing_heatmaps(
        table, setting="mlp", task="regression", num_rules=4, models=["modular", "modular-topk"]
    )
    titles = [ax.get_title() for ax in heat.axes if ax.get_visible()]
    assert titles[0].startswith("Modular (") and titles[1].startswith("Top-1 (")
    with pytest.raises(ValueError, match="source must be"):
        rfigs.routing_metrics(table, source="both")
    with pytest.raises(ValueError, match="no selection metrics"):
        rfigs.routing_metrics(runs, source="selection")
    with pytest.raises(ValueError, match="not in the table"):
        rfigs.routing_performance(table, models=["modular-gumbel"])


def test_calibration_figure_marks_the_budget(curves: pd.DataFrame) -> None:
    from mod_arch_core.figures.calibration import calibration_curves

    fig = calibration_curves(curves, {"mlp": 20, "rnn": 30})
    assert len(fig.axes) == 4
    assert "budget B" in _legend_labels(fig)
    dashed = [line for ax in fig.axes for line in ax.get_lines() if line.get_label() == "budget B"]
    assert sorted({line.get_xdata()[0] for line in dashed}) == [20, 30]
    with pytest.raises(ValueError, match="non-empty curves table"):
        calibration_curves(curves.iloc[:0], {"mlp": 20})
    # a setting with two search versions gets one row of panels per version
    mha = curves[curves["setting"] == "rnn"].assign(setting="mha", search_version=1.0)
    both = pd.concat([curves, mha, mha.assign(search_version=2.0)], ignore_index=True)
    fig = calibration_curves(both, {"mlp": 20, "rnn": 30, "mha": 25})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(fig.axes) == 4 * len({t.split(" · ")[1] for t in titles})
    assert {t.split(" · ")[0] for t in titles} == {"MLP", "MHA v1", "MHA v2", "RNN"}
