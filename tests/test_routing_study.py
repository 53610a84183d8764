"""The routing chapter's analysis: taxonomy, weight choice, paired differences, headline table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mod_arch_core import routing_study
from mod_arch_core.analysis import METRICS
from mod_arch_core.models.registry import MODEL_NAMES

STRINGS = dict(activation_matrix="", profile="custom", package_version="0", git_commit="x",
               torch_version="2", device="cpu", hardware="cpu", config_hash="h")  # fmt: skip


def run_rows(model: str, options: dict, *, perf: float, collapse: float, alignment: float,
             selected: bool = False) -> list[dict]:  # fmt: skip
    rows = []
    for task in ("regression", "classification"):
        for r in (4, 16):
            for d in (0, 1):
                for s in (0, 1):
                    noise = 0.001 * (d + 2 * s)
                    row = dict(setting="mlp", task=task, model=model, num_rules=r, encoder_dim=8,
                               dim=32, search_version=np.nan, data_seed=d, seed=s, iterations=10,
                               checkpoint="last", n_params=100, perf=perf + noise, perf_ood=perf,
                               collapse_avg=collapse + noise, collapse_worst=collapse,
                               alignment=alignment + noise, adaptation=0.1, inverse_mutual_info=0.5,
                               model_options=json.dumps(options, sort_keys=True), **STRINGS)  # fmt: skip
                    for m in METRICS:
                        row[f"{m}_selected"] = row[m] if selected else np.nan
                    rows.append(row)
    return rows


def table() -> pd.DataFrame:
    rows = run_rows("modular", {}, perf=1.0, collapse=0.3, alignment=0.6)
    rows += run_rows("modular", {"balance_weight": 0.01}, perf=1.05, collapse=0.05, alignment=0.6)
    rows += run_rows("modular", {"balance_weight": 1.0}, perf=1.5, collapse=0.0, alignment=0.6)
    rows += run_rows("modular", {"entropy_weight": 0.1}, perf=1.02, collapse=0.2, alignment=0.4)
    return pd.DataFrame(rows)


def test_taxonomy_covers_every_registered_model() -> None:
    assert set(routing_study.TAXONOMY) == set(MODEL_NAMES)
    assert set(routing_study.ROUTING_MODELS) <= set(MODEL_NAMES)
    tax = routing_study.taxonomy_table(["modular", "modular-topk"])
    assert list(tax["model"]) == ["modular", "modular-topk"]
    assert tax.set_index("model").loc["modular-topk", "selection"] == "hard top-1"
    with pytest.raises(ValueError, match="no taxonomy entry for \\['moe'\\]"):
        routing_study.taxonomy_table(["moe"])


def test_choose_weight_takes_the_largest_weight_within_the_tolerance() -> None:
    runs = table()
    out, chosen = routing_study.choose_weight(runs, "balance_weight", tolerance=0.10)
    assert chosen == 0.01
    assert list(out["weight"]) == [0.0, 0.01, 1.0]  # entropy rows are left out
    assert out.set_index("weight").loc[1.0, "perf_change"] == pytest.approx(0.5, abs=0.01)
    _, loose = routing_study.choose_weight(runs, "balance_weight", tolerance=0.6)
    assert loose == 1.0
    _, entropy = routing_study.choose_weight(runs, "entropy_weight", tolerance=0.10)
    assert entropy == 0.1
    with pytest.raises(ValueError, match="option must be"):
        routing_study.choose_weight(runs, "dropout")
    with pytest.raises(ValueError, match="baseline"):
        routing_study.choose_weight(runs[runs.model_options != "{}"], "balance_weight")


def test_paired_differences_pair_the_same_runs() -> None:
    base = pd.DataFrame(run_rows("modular", {}, perf=1.0, collapse=0.3, alignment=0.6))
    balanced = pd.DataFrame(
        run_rows(
            "modular-balanced", {"balance_weight": 0.01}, perf=1.1, collapse=0.05, alignment=0.6
        )
    )
    diffs = routing_study.paired_differences(
        pd.concat([base, balanced]), "modular", "modular-balanced"
    )
    by = diffs.set_index("column")
    assert by.loc["collapse_avg", "difference"] == pytest.approx(-0.25)
    assert by.loc["collapse_avg", "excludes_zero"]
    # the per-run noise is shared by both models, so the paired difference has no spread
    assert by.loc["alignment", "difference"] == pytest.approx(0.0, abs=1e-12)
    assert not by.loc["alignment", "excludes_zero"]
    assert by.loc["perf", "is_relative"] and not by.loc["alignment", "is_relative"]
    assert by.loc["perf", "difference"] == pytest.approx(0.1, rel=0.01)  # 10% worse, per pair
    # a relative column pools losses with errors only through relative changes: no pooled means
    perf_text = routing_study.describe_difference(by.loc["perf"])
    assert perf_text.startswith("+10% relative to modular (95% CI [")
    assert "→" not in perf_text
    assert np.isnan(by.loc["perf", "base_mean"]) and np.isnan(by.loc["perf", "variant_mean"])
    one_task = pd.concat([base, balanced])
    one_task = one_task[one_task["task"] == "regression"]
    single = routing_study.paired_differences(one_task, "modular", "modular-balanced")
    single = single.set_index("column")
    assert single.loc["perf", "base_mean"] == pytest.approx(1.0, abs=0.05), "one unit: a mean"
    assert routing_study.verdict(diffs, "modular-balanced") == (
        "collapse lower (-0.250), specialisation unchanged (Alignment +0.000, inverse MI +0.000), "
        "ID error/loss higher (+10%): balanced, not specialised"
    )
    assert by.loc["collapse_avg", "pairs"] == 16
    text = routing_study.describe_difference(by.loc["collapse_avg"])
    assert text == "0.301 → 0.052 (-0.250, 95% CI [-0.250, -0.250])"
    with pytest.raises(ValueError, match="no 'modular-topk' rows"):
        routing_study.paired_differences(base, "modular", "modular-topk")


def test_metrics_by_source_and_headline_table() -> None:
    soft = run_rows("modular", {}, perf=1.0, collapse=0.3, alignment=0.6)
    hard = run_rows(
        "modular-topk", {"top_k": 1}, perf=1.2, collapse=0.5, alignment=0.7, selected=True
    )
    runs = pd.DataFrame(soft + hard)
    long = routing_study.metrics_by_source(runs)
    assert set(long[long.source == "selection"]["model"]) == {"modular-topk"}
    assert set(long[long.source == "probabilities"]["model"]) == {"modular", "modular-topk"}
    assert len(long) == 2 * 16 * 5 + 16 * 5
    head = routing_study.headline_table(runs, 16).set_index("model")
    assert head.loc["modular-topk", "collapse_avg"] == pytest.approx(0.5015)
    assert head.loc["modular-topk", "perf_regression"] == pytest.approx(1.2015)
    assert {"perf_classification", "perf_classification_low"} <= set(head.columns)
    assert "perf" not in head.columns  # losses and errors are never pooled
    assert head.loc["modular", "collapse_avg_low"] <= head.loc["modular", "collapse_avg"]
    with pytest.raises(ValueError, match="no runs with R = 8"):
        routing_study.headline_table(runs, 8)


def test_exploration_overrides_and_option_values() -> None:
    assert routing_study.exploration_overrides("balance_weight", 0.1) == [
        "model_options={modular: {balance_weight: 0.1}}"
    ]
    with pytest.raises(ValueError, match="option must be one of"):
        routing_study.exploration_overrides("top_k", 1)
    runs = table()
    values = routing_study.option_values(runs, "balance_weight")
    assert sorted(values.unique()) == [0.0, 0.01, 1.0]
