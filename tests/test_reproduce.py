"""The reproducibility promise (mod_arch_core.reproduce): bitwise on one machine, noise elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mod_arch_core import reproduce, results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped() -> pd.DataFrame:
    """The shipped rows of one Modular configuration (6 runs x 2 checkpoints)."""
    runs = results.load(ROOT / "results" / "reference").runs
    rows = runs[
        (runs["setting"] == "mlp")
        & (runs["task"] == "regression")
        & (runs["model"] == "modular")
        & (runs["num_rules"] == 4)
        & (runs["encoder_dim"] == 32)
    ]
    assert len(rows) == 12
    return rows.reset_index(drop=True)


def _elsewhere(rows: pd.DataFrame, scale: float, seed: int = 0) -> pd.DataFrame:
    """The same runs as if re-run on another CPU: each measured value redrawn from the
    configuration's own spread around its mean (``scale`` = 1 is seed noise)."""
    rng = np.random.default_rng(seed)
    other = rows.copy()
    other["hardware"] = "cpu:Other CPU (AVX512, 2 threads)"
    for column in ("perf", "perf_ood", "collapse_avg", "alignment"):
        for _, index in other.groupby("checkpoint").groups.items():
            values = other.loc[index, column].to_numpy(float)
            noise = rng.normal(0.0, values.std(ddof=1) * scale, len(values))
            other.loc[index, column] = rng.permutation(values) + noise
    return other


def test_same_rows_on_the_same_machine_compare_bitwise(shipped):
    comparison = reproduce.compare(shipped.copy(), shipped)
    assert comparison.mode == "bitwise" and comparison.ok, str(comparison)
    assert set(comparison.table["column"]) == set(reproduce.MEASURED)


def test_a_last_bit_change_on_the_same_machine_is_not_reproduced(shipped):
    fresh = shipped.copy()
    fresh.loc[0, "perf"] = np.nextafter(fresh.loc[0, "perf"], np.inf)
    comparison = reproduce.compare(fresh, shipped)
    assert comparison.mode == "bitwise" and not comparison.ok
    assert any("perf:" in p and "bitwise" in p for p in comparison.problems)


def test_another_machine_within_seed_noise_is_reproduced(shipped):
    comparison = reproduce.compare(_elsewhere(shipped, scale=1.0), shipped)
    assert comparison.mode == "statistical" and comparison.ok, str(comparison)


def test_the_noise_threshold_rarely_raises_a_false_alarm():
    """Same distribution, fresh draws: |t| > T_LIMIT in well under 1% of 2000 pairs of 6 runs.

    Log-normal values mimic losses with occasional spikes (the noisy `last` checkpoint).
    """
    rng = np.random.default_rng(1)
    t = [
        reproduce.welch_t(rng.lognormal(-3, 0.8, 6), rng.lognormal(-3, 0.8, 6)) for _ in range(2000)
    ]
    assert np.mean(np.abs(t) > reproduce.T_LIMIT) < 0.005


def test_a_real_shift_of_the_mean_is_caught(shipped):
    fresh = _elsewhere(shipped, scale=0.2)
    fresh["perf"] = fresh["perf"] * 3  # e.g. another learning rate or a broken evaluation
    comparison = reproduce.compare(fresh, shipped)
    assert comparison.mode == "statistical" and not comparison.ok
    assert any(p.startswith(("best perf:", "last perf:")) for p in comparison.problems)


def test_deterministic_columns_must_match_on_any_machine(shipped):
    fresh = _elsewhere(shipped, scale=0.0)
    fresh["n_params"] = fresh["n_params"] + 1
    comparison = reproduce.compare(fresh, shipped)
    assert not comparison.ok and any(p.startswith("n_params differs") for p in comparison.problems)


def test_missing_runs_and_nan_patterns_are_reported(shipped):
    comparison = reproduce.compare(shipped.iloc[:-1], shipped, mode="statistical")
    assert not comparison.ok and "different runs" in comparison.problems[0]
    fresh = shipped.copy()
    fresh.loc[0, "alignment"] = np.nan  # e.g. a run that diverged only on this machine
    comparison = reproduce.compare(fresh, shipped, mode="statistical")
    assert any("alignment" in p and "NaN" in p for p in comparison.problems)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"mode": "exact"}, "mode"), ({}, "empty")],
)
def test_bad_arguments_are_named(shipped, kwargs, match):
    fresh = shipped if kwargs else shipped.iloc[:0]
    with pytest.raises(ValueError, match=match):
        reproduce.compare(fresh, shipped, **kwargs)


def test_welch_t_without_spread():
    assert reproduce.welch_t([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert reproduce.welch_t([1.0, 1.0], [0.0, 0.0]) == float("inf")
    with pytest.raises(ValueError, match=">= 2 values"):
        reproduce.welch_t([1.0], [1.0, 2.0])


@pytest.mark.slow
def test_reproduce_command_on_a_folder_made_here_is_bitwise(tmp_path, capsys):
    from mod_arch_core.__main__ import main

    out = tmp_path / "smoke"
    grid = ["settings=[mlp]", "tasks=[regression]", "models=[modular]", "num_rules=[2]"]
    sweep_args = ["sweep", "--profile", "smoke", "--out", str(out), "--executor", "serial"]
    assert main([*sweep_args, *[a for o in grid for a in ("--set", o)]]) == 0
    capsys.readouterr()
    args = ["--setting", "mlp", "--task", "regression", "--model", "modular", "--num-rules", "2"]
    assert main(["reproduce", str(out), *args]) == 0
    report = capsys.readouterr().out
    assert report.startswith("reproduced (bitwise comparison")
    assert "perf_ood" in report
