"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from mod_arch_core import results


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``smoke`` sweep, run once per test session into a temporary folder (about 30 s)."""
    path = tmp_path_factory.mktemp("results") / "smoke"
    loaded = results.load_or_run(path, "smoke")
    assert set(loaded.runs["profile"]) == {"smoke"}
    return path
