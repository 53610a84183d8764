"""The results that ship with the book are complete, verified, and what the code produces.

* every shipped folder loads through :func:`mod_arch_core.results.load`, which checks the schema
  and the SHA-256 checksums recorded in ``meta.json``;
* every configuration of its profile is present, each with every (data seed, seed) run at both
  checkpoints exactly once, and nothing else (``config_hash`` covers the whole protocol);
* one shipped configuration, re-run now at its profile's settings on CPU, reproduces its rows:
  bitwise when this machine's hardware fingerprint and torch version are the ones recorded in the
  rows, otherwise within seed noise (:mod:`mod_arch_core.reproduce` states both promises).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mod_arch_core import provenance, reproduce, results, routing_study
from mod_arch_core.experiment import experiment_hash
from mod_arch_core.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
#: Shipped folder -> the profile runs (name, overrides) whose configurations it must hold.
SHIPPED: dict[str, list[tuple[str, list[str]]]] = {
    "reference": [("reference", [])],
    "calibration": [("calibration", [])],
    "routing-quick": [("routing-quick", [])],
    "routing-explore": [("routing-explore", [])]
    + [
        ("routing-explore", routing_study.exploration_overrides(option, weight))
        for weight in routing_study.EXPLORE_WEIGHTS
        for option in routing_study.REGULARISERS
    ],
}


def _expected(folder: str) -> dict[str, object]:
    """config_hash -> TrainConfig for every configuration the folder must hold."""
    expected = {}
    for name, overrides in SHIPPED[folder]:
        profile = load_profile(name, overrides)
        budget = profile.eval_budget()
        for config in profile.configurations(device="auto"):
            expected[experiment_hash(config, budget)] = config
    return expected


@pytest.mark.parametrize("folder", sorted(SHIPPED))
def test_shipped_results_load_with_verified_checksums(folder: str) -> None:
    loaded = results.load(ROOT / "results" / folder)
    meta = json.loads((ROOT / "results" / folder / "meta.json").read_text())
    assert set(meta["sha256"]) == {"runs.parquet", "curves.parquet"}
    assert meta["rows"] == {"runs": len(loaded.runs), "curves": len(loaded.curves)}
    assert set(meta["wall_seconds_per_setting"]) == set(loaded.runs["setting"])
    assert meta["hardware"] and meta["provenance_of_collect"]["torch_version"].startswith("2.13.0")
    assert set(loaded.runs["profile"]) <= {name for name, _ in SHIPPED[folder]}


@pytest.mark.parametrize("folder", sorted(SHIPPED))
def test_shipped_results_hold_every_run_of_the_profile_exactly_once(folder: str) -> None:
    loaded = results.load(ROOT / "results" / folder)
    expected = _expected(folder)
    runs = loaded.runs
    assert set(runs["config_hash"]) == set(expected), "configurations missing or extra"
    for chash, config in expected.items():
        rows = runs[runs["config_hash"] == chash]
        keys = set(zip(rows["data_seed"], rows["seed"], rows["checkpoint"], strict=True))
        wanted = {(d, s, c) for d, s in config.runs for c in ("last", "best")}
        assert keys == wanted and len(rows) == len(wanted), config.key()
        assert set(rows["model"]) == {config.model}
        assert set(rows["iterations"]) == {config.num_steps}
    curves = loaded.curves
    assert set(curves["config_hash"]) == set(expected)
    assert not curves.duplicated(["config_hash", "data_seed", "seed", "iteration"]).any()


def test_reference_results_record_one_commit_and_their_hardware() -> None:
    runs = results.load(ROOT / "results" / "reference").runs
    assert runs["git_commit"].nunique() == 1 and not runs["git_commit"].iloc[0].endswith("+dirty")
    assert runs["hardware"].nunique() >= 1 and (runs["device"] == "cpu").all()


@pytest.mark.slow
def test_one_shipped_configuration_reproduces_on_cpu() -> None:
    """Re-run the cheapest reference configuration: bitwise here if it was made here, else in noise."""
    comparison = reproduce.rerun(
        ROOT / "results" / "reference",
        setting="mlp",
        task="regression",
        model="monolithic",
        num_rules=2,
        device="cpu",
    )
    shipped = results.load(ROOT / "results" / "reference").runs
    made_here = (shipped["hardware"] == provenance.hardware("cpu")).any()
    assert comparison.mode == ("bitwise" if made_here else "statistical")
    assert comparison.ok, str(comparison)
    # Every measured metric of both checkpoints was compared, not skipped.
    compared = comparison.table.dropna(subset=["fresh_mean"])
    assert {"perf", "perf_ood", "best_iteration"} <= set(compared["column"])
    assert set(compared["checkpoint"]) == {"best", "last"}


@pytest.mark.parametrize("folder", ["reference", "routing-quick"])
def test_learned_judges_every_cell_of_the_shipped_results(folder: str) -> None:
    """One verdict per (setting, task, R) of the results the chapters read, from the thresholds."""
    from mod_arch_core import analysis

    loaded = results.load(ROOT / "results" / folder)
    cells = analysis.learned(loaded.runs, loaded.curves)
    last = loaded.runs[loaded.runs["checkpoint"] == "last"]
    expected = last[["setting", "task", "num_rules"]].drop_duplicates()
    assert len(cells) == len(expected)
    assert set(cells["verdict"]) <= {"learned, separates", "learned, within noise", "not learned"}
    classification = cells["task"] == "classification"
    assert (cells.loc[classification, "threshold"] == analysis.LEARNED_MAX_ERROR).all()
    regression = cells[~classification]
    np.testing.assert_allclose(
        regression["threshold"], analysis.LEARNED_LOSS_FRACTION * regression["untrained"]
    )
    assert (cells["learned"] == (cells["final"] <= cells["threshold"])).all()
