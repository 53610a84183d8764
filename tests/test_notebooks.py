"""Every chapter runs end to end at the ``smoke`` profile, and a bad parameter stops it clearly.

Each test executes a notebook through papermill (via :func:`mod_arch_core.book.execute_notebooks`)
with an execution timeout into a pytest temporary folder; pytest keeps the last three such folders
(``/tmp/pytest-of-$USER/``), so the executed notebooks can be opened after a failure.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from mod_arch_core import book

ROOT = Path(__file__).resolve().parents[1]
NAMES = [p.stem for p in sorted((ROOT / book.NOTEBOOK_DIR).glob("*.ipynb"))]
TIMEOUT = 300  # seconds per cell; the smoke profile needs a few seconds per notebook


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_at_smoke_profile(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp(f"smoke-{name}")
    figures = out / "figures"
    (report,) = book.execute_notebooks(
        [name],
        parameters={"figures_dir": str(figures)},
        out_dir=out,
        profile="smoke",
        force=True,
        timeout=TIMEOUT,
        verbose=False,
    )
    assert report.status == "executed"
    nb = nbformat.read(report.output, as_version=4)
    assert not nb.metadata["papermill"]["exception"]
    assert nb.metadata["mod_arch_core"]["profile"] == "smoke"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every cell ran"
    for cell in code:
        for output in cell.outputs:
            assert output.output_type != "error", f"{name}: a cell raised"
            if output.output_type == "stream":
                assert output.name == "stdout", f"{name}: stderr output {output.text[:200]!r}"
    glued = [o for c in code for o in c.outputs if "scrapbook" in o.get("metadata", {})]
    assert glued, f"{name} glues no numbers into its prose"
    hidden = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert hidden and "remove-cell" in hidden[0].metadata["tags"]
    if name.startswith("03"):
        assert (figures / "fig2_collapse_example.svg").stat().st_size > 1000
        assert (figures / "fig2_collapse_example.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_bad_parameter_stops_the_notebook_clearly(name: str, tmp_path: Path) -> None:
    with pytest.raises(book.NotebookExecutionError) as info:
        book.execute_notebooks(
            [name],
            parameters={"num_rules": 1, "figures_dir": str(tmp_path / "figures")},
            out_dir=tmp_path,
            profile="smoke",
            force=True,
            timeout=TIMEOUT,
            verbose=False,
        )
    cause = info.value.__cause__
    assert isinstance(cause, PapermillExecutionError)
    assert cause.ename == "ValueError"
    assert cause.evalue == "num_rules must be >= 2, got 1"
    assert f"{name}.ipynb failed in cell" in str(info.value)
    assert "num_rules must be >= 2, got 1" in str(info.value)
    nb = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    assert nb.metadata["papermill"]["exception"], "the partly executed notebook is kept"
    assert book._stored_stamp(tmp_path / f"{name}.ipynb") is None, "a failed run is never cached"


@pytest.mark.slow
def test_unknown_profile_is_refused_inside_the_notebook(tmp_path: Path) -> None:
    name = NAMES[-1]
    with pytest.raises(book.NotebookExecutionError) as info:
        book.execute_notebooks(
            [name],
            parameters={"profile": "huge"},
            out_dir=tmp_path,
            profile="smoke",
            force=True,
            timeout=TIMEOUT,
            verbose=False,
        )
    assert info.value.__cause__.evalue == "profile must be one of smoke, book; got 'huge'"
