"""Every chapter runs end to end at the ``smoke`` profile, and a bad parameter stops it clearly.

Each test executes a notebook through papermill (via :func:`mod_arch_core.book.execute_notebooks`)
with an execution timeout into a pytest temporary folder; pytest keeps the last three such folders
(``/tmp/pytest-of-$USER/``), so the executed notebooks can be opened after a failure.

The results chapters (those whose parameters define ``results_path``) share one ``smoke`` sweep per
test session (:func:`smoke_results`, with per-setting capacities and the lr decay): the first of them
runs with ``profile="smoke"`` and the fixture's overrides on that folder,
which exercises the resumable load-or-compute path, the others read it with ``profile=None``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from conftest import SMOKE_RESULTS_OVERRIDES
from papermill.exceptions import PapermillExecutionError

from mod_arch_core import book
from mod_arch_core.figures import paper
from mod_arch_core.models.registry import MODEL_NAMES
from mod_arch_core.profiles import available_profiles, load_profile

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / book.NOTEBOOK_DIR).glob("*.ipynb"))
NAMES = [p.stem for p in SOURCES]
RESULTS_NAMES = [p.stem for p in SOURCES if "results_path" in book.declared_parameters(p)]
DEFINITION_NAMES = [name for name in NAMES if name not in RESULTS_NAMES]
TIMEOUT = 300  # seconds per cell; the smoke profile needs a few seconds per notebook
#: Figure files each chapter must write (stems under figures_dir).
FIGURES = {
    "03_metrics": ["fig2_collapse_example"],
    "04_training": ["ch4_training_runs", "ch4_activation_matrices"],
    "05_results_performance": [
        "fig3_ranking_pies",
        "fig3_ranking_pies_as_released",
        "fig4_perf_vs_rules",
        "perf_vs_size",
        "perf_per_length",
        "perf_per_search_version",
    ],
    "06_results_specialization": [
        "fig5_metrics_vs_rules",
        "fig5_metrics_vs_rules_by_setting",
        "fig5_metrics_vs_rules_by_search_version",
        "fig6_metrics_per_model",
        "metrics_per_capacity",
        "learned_activation_matrices",
    ],
    "07_results_training_speed": ["fig7_training_curves", "fig7_training_curves_relative"],
    "09_routing": [
        "routing_metrics_probabilities",
        "routing_metrics_selection",
        "routing_performance",
        "routing_paired_differences",
        "routing_heatmaps",
    ],
    "10_calibration": ["calibration_curves"],
}


def _execute(name: str, out: Path, parameters: dict) -> list[book.ExecutionReport]:
    """Execute one chapter at the ``smoke`` profile into ``out`` (never from the cache)."""
    return book.execute_notebooks(
        [name],
        parameters=parameters,
        out_dir=out,
        profile="smoke",
        force=True,
        timeout=TIMEOUT,
        verbose=False,
    )


def _check_executed(name: str, output: Path, figures: Path) -> None:
    nb = nbformat.read(output, as_version=4)
    assert not nb.metadata["papermill"]["exception"]
    assert nb.metadata["mod_arch_core"]["profile"] == "smoke"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every cell ran"
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"{name}: a cell raised"
            if out.output_type == "stream":
                assert out.name == "stdout", f"{name}: stderr output {out.text[:200]!r}"
    glued = [o for c in code for o in c.outputs if "scrapbook" in o.get("metadata", {})]
    assert glued, f"{name} glues no numbers into its prose"
    hidden = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert hidden and "remove-cell" in hidden[0].metadata["tags"]
    for stem in FIGURES.get(name, []):
        for suffix in ("svg", "png"):
            file = figures / f"{stem}.{suffix}"
            assert file.is_file() and file.stat().st_size > 1000, f"{name} did not write {file}"


# --------------------------------------------------------------------------------------
# Fast checks of the chapters' parameters and the book pages that describe them
# --------------------------------------------------------------------------------------


def test_chapters_are_split_into_definitions_and_results() -> None:
    assert RESULTS_NAMES == [
        "05_results_performance",
        "06_results_specialization",
        "07_results_training_speed",
        "08_reproduction_report",
    ]
    assert "04_training" in DEFINITION_NAMES
    for name in RESULTS_NAMES:
        declared = book.declared_parameters(ROOT / book.NOTEBOOK_DIR / f"{name}.ipynb")
        assert {"profile", "results_path", "overrides", "checkpoint", "figures_dir"} <= declared


def test_book_param_reaches_only_declaring_chapters(tmp_path: Path) -> None:
    assert book.parse_param("results_path=../r") == ("results_path", "../r")
    assert book.parse_param("profile=null") == ("profile", None)
    assert book.parse_param("overrides=['num_rules=[2]']") == ("overrides", ["num_rules=[2]"])
    with pytest.raises(ValueError, match="malformed --param 'results_path'"):
        book.parse_param("results_path")
    with pytest.raises(ValueError, match=r"parameters \['results_path'\] are not defined"):
        book.execute_notebooks(
            ["01"], declared_only={"results_path": "x"}, out_dir=tmp_path, verbose=False
        )


def test_reproduce_page_states_the_profile_sizes() -> None:
    page = (ROOT / "book" / "reproduce.md").read_text(encoding="utf-8")

    def row(name: str) -> list[str]:
        line = next(line for line in page.splitlines() if line.startswith(f"| `{name}` |"))
        return [c.strip() for c in line.split("|")]

    for name in available_profiles():
        if name == "routing":  # sized for a GPU; described in the prose below the table
            continue
        assert row(name)[2] == load_profile(name).description, f"{name}: the grid column"
    for folder in ("reference", "calibration", "routing-quick", "routing-explore"):
        meta = json.loads((ROOT / "results" / folder / "meta.json").read_text())
        for setting, seconds in meta["wall_seconds_per_setting"].items():
            assert f"{round(seconds):,}" in row(folder)[7], f"{folder}: busy {setting} time"
    for name in ("smoke", "quick", "reference", "calibration", "paper"):
        profile = load_profile(name)
        cells = row(name)
        assert cells[3] == f"{len(profile.configurations()):,}", f"{name}: configurations"
        assert cells[4] == f"{profile.num_runs():,}", f"{name}: runs"
        assert cells[5] == f"{profile.total_steps():,}", f"{name}: optimizer steps"
        if isinstance(profile.budget, str):
            assert cells[6] == f"`{profile.budget}`", f"{name}: evaluation budget"
        else:
            draws = profile.eval_budget().adaptation_draws
            assert f"{draws} Adaptation draws" in cells[6], f"{name}: evaluation budget"
    for command in ("make figures PROFILE=quick", "--shard 0/4", "--executor submitit", "collect"):
        assert command in page


def test_figure_index_names_every_figure_function_and_file() -> None:
    page = (ROOT / "book" / "figure-index.md").read_text(encoding="utf-8")
    for function in paper.FIGURE_FILES:
        assert f"mod_arch_core.figures.paper.{function}" in page, function
    for stems in FIGURES.values():
        for stem in stems:
            assert f"figures/{stem}.{{svg,png}}" in page, stem
    for name in NAMES:
        if name != "01_rules_and_tasks":
            assert f"executed/{name}" in page, name


def test_makefile_figures_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^figures: \$\(STAMP\) ## ", makefile, re.M)
    assert "--profile $(PROFILE) --out results/$(PROFILE)" in makefile
    assert "-m mod_arch_core.book all --param results_path=" in makefile


# --------------------------------------------------------------------------------------
# Definition and training chapters: each computes its own numbers
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", DEFINITION_NAMES)
def test_notebook_runs_at_smoke_profile(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp(f"smoke-{name}")
    figures = out / "figures"
    (report,) = _execute(name, out, {"figures_dir": str(figures)})
    assert report.status == "executed"
    _check_executed(name, report.output, figures)


#: Chapters with a number-of-rules parameter, and the bad value of another parameter for the rest.
RULES_NAMES = [
    n
    for n in DEFINITION_NAMES
    if "num_rules" in book.declared_parameters(ROOT / book.NOTEBOOK_DIR / f"{n}.ipynb")
]
BAD_PARAMETER = {name: ("num_rules", 1, "num_rules must be >= 2, got 1") for name in RULES_NAMES}
BAD_PARAMETER["10_calibration"] = ("window", 0, "window must be >= 1, got 0")


def test_every_definition_chapter_has_a_bad_parameter_check() -> None:
    assert set(BAD_PARAMETER) == set(DEFINITION_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BAD_PARAMETER))
def test_bad_parameter_stops_the_notebook_clearly(name: str, tmp_path: Path) -> None:
    key, value, message = BAD_PARAMETER[name]
    with pytest.raises(book.NotebookExecutionError) as info:
        _execute(name, tmp_path, {key: value, "figures_dir": str(tmp_path / "figures")})
    cause = info.value.__cause__
    assert isinstance(cause, PapermillExecutionError)
    assert cause.ename == "ValueError"
    assert cause.evalue == message
    assert f"{name}.ipynb failed in cell" in str(info.value)
    assert message in str(info.value)
    nb = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    assert nb.metadata["papermill"]["exception"], "the partly executed notebook is kept"
    assert book._stored_stamp(tmp_path / f"{name}.ipynb") is None, "a failed run is never cached"


@pytest.mark.slow
def test_unknown_profile_is_refused_inside_the_notebook(tmp_path: Path) -> None:
    name = "04_training"
    with pytest.raises(book.NotebookExecutionError) as info:
        _execute(name, tmp_path, {"profile": "huge"})
    assert info.value.__cause__.evalue == "profile must be one of smoke, book; got 'huge'"


@pytest.mark.slow
def test_training_chapter_refuses_an_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(book.NotebookExecutionError) as info:
        _execute(
            "04_training",
            tmp_path,
            {"model": "transformer", "figures_dir": str(tmp_path / "figures")},
        )
    assert info.value.__cause__.evalue == (
        f"unknown model 'transformer'; allowed: {', '.join(MODEL_NAMES)}"
    )


# --------------------------------------------------------------------------------------
# Results chapters: one smoke sweep per session
# --------------------------------------------------------------------------------------


# ``smoke_results`` (the session's smoke sweep) lives in conftest.py: the student versions use it too.


@pytest.mark.slow
@pytest.mark.parametrize("name", RESULTS_NAMES)
def test_results_chapter_runs_on_the_smoke_sweep(
    name: str, smoke_results: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp(f"smoke-{name}")
    figures = out / "figures"
    # the first chapter goes through the sweep path (everything is already done: it resumes)
    first = name == RESULTS_NAMES[0]
    parameters = {
        "profile": "smoke" if first else None,
        "results_path": str(smoke_results),
        "figures_dir": str(figures),
    }
    if first:  # the sweep path with the fixture's own grid: it finds every configuration done
        parameters["overrides"] = SMOKE_RESULTS_OVERRIDES
    (report,) = _execute(name, out, parameters)
    assert report.status == "executed"
    _check_executed(name, report.output, figures)


@pytest.mark.slow
@pytest.mark.parametrize("name", RESULTS_NAMES)
def test_results_chapter_without_results_says_how_to_make_them(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "results" / "quick"
    with pytest.raises(book.NotebookExecutionError) as info:
        _execute(name, tmp_path, {"profile": None, "results_path": str(missing)})
    cause = info.value.__cause__
    assert cause.ename == "FileNotFoundError"
    assert cause.evalue.startswith(f"no results at {missing}")
    assert "make figures PROFILE=quick" in cause.evalue
    assert book._stored_stamp(tmp_path / f"{name}.ipynb") is None


@pytest.mark.slow
def test_results_chapter_refuses_an_unknown_profile_and_checkpoint(tmp_path: Path) -> None:
    name = RESULTS_NAMES[-1]
    for parameters, message in (
        ({"profile": "huge"}, "unknown profile 'huge'; available:"),
        ({"profile": None, "checkpoint": "middle"}, "checkpoint must be one of last, best"),
    ):
        with pytest.raises(book.NotebookExecutionError) as info:
            _execute(name, tmp_path, {"results_path": str(tmp_path / "r"), **parameters})
        assert info.value.__cause__.ename == "ValueError"
        assert info.value.__cause__.evalue.startswith(message)
