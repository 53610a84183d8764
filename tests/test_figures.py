"""Figures of the definition chapters: right content, right labels, reproducible bytes."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
import pytest
from matplotlib.figure import Figure

from mod_arch_core import metrics
from mod_arch_core.data import make_task
from mod_arch_core.figures import definitions as figs
from mod_arch_core.figures import style


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


def test_model_colours_are_the_papers() -> None:
    assert style.model_color("GT_Modular") == "#31356e"
    assert style.model_color("monolithic") == "#d690aa"
    with pytest.raises(ValueError, match="unknown model 'mixture'"):
        style.model_color("mixture")


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
