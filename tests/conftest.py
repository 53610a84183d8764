"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from mod_arch_core import results

#: The chapters' smoke results use the profile format's per-setting grids (a second MLP capacity)
#: and the lr decay, as the reference results do, so that every results chapter is run on them.
SMOKE_RESULTS_OVERRIDES = [
    "capacities={mlp: [[8, 32], [16, 64]], mha: [[8, 32]], rnn: [[8, 32]]}",
    "lr_decay={start: 0.5, factor: 0.1}",
]


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``smoke`` sweep with :data:`SMOKE_RESULTS_OVERRIDES`, run once per test session (and
    xdist worker) into a temporary folder (about 40 s)."""
    path = tmp_path_factory.mktemp("results") / "smoke"
    loaded = results.load_or_run(path, "smoke", SMOKE_RESULTS_OVERRIDES)
    assert loaded.runs.groupby("setting")["dim"].nunique().to_dict() == {
        "mha": 1,
        "mlp": 2,
        "rnn": 1,
    }
    assert set(loaded.runs["profile"]) == {"smoke"}
    return path
