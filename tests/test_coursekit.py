"""The course kit: student versions, the bootstrap cell, the numbers cell, the repository setting.

Fast tests check the sources (every solution tagged, every chapter carrying the current bootstrap
cell and a numbers cell, open-ended exercises in the results chapters) and the pieces of
:mod:`mod_arch_core.coursekit`, :mod:`mod_arch_core.bootstrap` and :mod:`mod_arch_core.glued`. The
slow tests execute two student versions at the ``smoke`` profile; a static check shows that
no later cell of any chapter needs a name that only a solution binds.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from mod_arch_core import book, bootstrap, coursekit, glued

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / book.NOTEBOOK_DIR).glob("*.ipynb"))
NAMES = [p.stem for p in SOURCES]
RESULTS_NAMES = [p.stem for p in SOURCES if "results_path" in book.declared_parameters(p)]
#: Chapters that must offer an open-ended exercise (run something new and interpret it).
OPEN_ENDED = [*RESULTS_NAMES, "09_routing"]
SOLUTION_TITLE = re.compile(r":::\{admonition\}\s*Solution\s+\d+")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return cell.metadata.get("tags", [])


# --------------------------------------------------------------------------------------
# The chapters' sources
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_every_worked_solution_is_tagged(path: Path) -> None:
    nb = _read(path)
    solutions = [c for c in nb.cells if coursekit.is_solution(c)]
    assert solutions, f"{path.name} has no cell tagged 'solution'"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and SOLUTION_TITLE.search(cell.source):
            assert coursekit.is_solution(cell), f"{path.name} cell {index}: untagged solution"
            assert not re.search(r"^## ", cell.source, re.M), "a solution cell holds a section"
        if coursekit.is_solution(cell) and cell.cell_type == "code":
            previous = nb.cells[index - 1]
            assert coursekit.is_solution(previous), f"{path.name} cell {index}: stray solution"
    exercises = next(c for c in nb.cells if "## Exercises" in c.source)
    assert not coursekit.is_solution(exercises), "the exercises themselves stay"


@pytest.mark.parametrize("name", OPEN_ENDED)
def test_results_chapters_have_an_open_ended_exercise(name: str) -> None:
    nb = _read(ROOT / book.NOTEBOOK_DIR / f"{name}.ipynb")
    cells = [c for c in nb.cells if c.get("id") == "exercises-open"]
    assert len(cells) == 1, f"{name}: one cell with id 'exercises-open'"
    text = cells[0].source
    assert text.startswith("### Open-ended")
    assert not coursekit.is_solution(cells[0]), "open-ended exercises stay in student versions"
    assert "```bash" in text or "```python" in text, "the exercise says what to run"
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        ast.parse(textwrap.dedent(block))  # the code the student is given at least parses
    index = nb.cells.index(cells[0])
    assert "## Exercises" in nb.cells[index - 1].source, "right after the predict-and-check ones"


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_chapter_starts_with_the_current_bootstrap_cell(path: Path) -> None:
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "code"
    assert _tags(first) == list(coursekit.BOOTSTRAP_TAGS), "tagged bootstrap, hidden in the book"
    expected = coursekit.bootstrap_source(coursekit.repository_url(ROOT))
    assert coursekit.same_code(first.source, expected), (
        "out of date: run `python -m mod_arch_core.coursekit sync`"
    )
    assert sum(coursekit._is_bootstrap(c) for c in nb.cells) == 1


def test_sync_check_reports_nothing_to_do() -> None:
    assert coursekit.sync_bootstrap(SOURCES, coursekit.repository_url(ROOT), check=True) == []


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_chapter_is_readable_outside_the_book(path: Path) -> None:
    nb = _read(path)
    last = nb.cells[-1]
    assert last.cell_type == "code" and "remove-cell" in _tags(last)
    assert f'numbers_in_this_chapter("{path.stem}")' in last.source
    note = [c for c in nb.cells if c.get("id") == "jupyter-note"]
    assert len(note) == 1 and "remove-cell" in _tags(note[0]), "a note for Jupyter readers"
    assert "last cell" in note[0].source


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_long_glue_cells_are_folded(path: Path) -> None:
    """A code cell of 15+ lines, 30% or more of them glue calls, is folded in the book."""
    folded = {"hide-input", "remove-input", "hide-cell", "remove-cell", "parameters"}
    for cell in _read(path).cells:
        if cell.cell_type != "code" or "glue(" not in cell.source:
            continue
        lines: set[int] = set()
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "glue":
                lines.update(range(node.lineno, node.end_lineno + 1))
        size = cell.source.count("\n") + 1
        if size >= 15 and len(lines) / size >= 0.3:
            assert folded & set(_tags(cell)), f"{path.name} {cell.id}: fold this glue cell"


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_figures_default_to_a_build_folder(path: Path) -> None:
    """A papermill run without figures_dir never writes into the repository's figures/."""
    nb = _read(path)
    params = next(c for c in nb.cells if "parameters" in _tags(c))
    match = re.search(r'^figures_dir = "([^"]+)"', params.source, re.M)
    assert match, f"{path.name}: figures_dir parameter"
    target = (ROOT / book.NOTEBOOK_DIR / match.group(1)).resolve()
    assert target.is_relative_to(ROOT / "_build"), f"{path.name}: figures go to {target}"


def test_makefile_student_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^student: \$\(STAMP\) ## ", makefile, re.M)
    assert "-m mod_arch_core.coursekit student" in makefile


def test_course_guide_links_every_student_version() -> None:
    page = (ROOT / "book" / "course-guide.md").read_text(encoding="utf-8")
    assert "book/course-guide" in book._toc_files(ROOT)
    for name in NAMES:
        assert f"{{download}}`student/{name}.ipynb`" in page, name
        assert f"executed/{name}" in page, name
    assert "{doc}`survey-map`" in page, "the seminar plan is built around the survey map"
    assert "make student" in page
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert coursekit.STUDENT_DIR in config["exclude_patterns"], "downloads, not pages"


# --------------------------------------------------------------------------------------
# Student versions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_student_version_drops_solutions_and_keeps_the_rest(path: Path) -> None:
    nb = _read(path)
    student = coursekit.student_version(nb)
    assert not [c for c in student.cells if coursekit.is_solution(c)]
    text = "\n".join(c.source for c in student.cells)
    assert not SOLUTION_TITLE.search(text), "no worked solution is left"
    kept = [c for c in nb.cells if not coursekit.is_solution(c)]
    added = [c for c in student.cells if c.get("id", "").startswith("student-")]
    assert [c for c in student.cells if c not in added] == kept, "everything else unchanged"
    numbers = sorted(
        {
            int(n)
            for n in re.findall(
                r"Solution\s+(\d+)", "".join(c.source for c in nb.cells if coursekit.is_solution(c))
            )
        }
    )
    prompts = [c for c in added if c.cell_type == "markdown"]
    assert [re.search(r"exercise (\d+)", c.source).group(1) for c in prompts] == [
        str(n) for n in numbers
    ], "one prompt per worked solution, in order"
    assert all(c.source.startswith("**Your answer to exercise") for c in prompts)
    nbformat.validate(student)
    assert [c for c in nb.cells if coursekit.is_solution(c)], "the source still has solutions"


def test_student_version_refuses_a_notebook_without_solutions() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t")])
    with pytest.raises(ValueError, match="no cell tagged 'solution'"):
        coursekit.student_version(nb)


def test_write_student_versions_writes_every_chapter_clean(tmp_path: Path) -> None:
    paths = coursekit.write_student_versions(tmp_path, root=ROOT)
    assert [p.name for p in paths] == [p.name for p in SOURCES]
    before = {p: p.stat().st_mtime_ns for p in paths}
    assert coursekit.write_student_versions(tmp_path, root=ROOT) == paths
    assert {p: p.stat().st_mtime_ns for p in paths} == before, "unchanged files are not rewritten"
    for path in paths:
        nb = _read(path)
        assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
        assert nb.metadata["mod_arch_core"]["student_version"] is True
    assert coursekit.main(["student", "--out", str(tmp_path / "cli"), "--only", "03"]) == 0
    assert (tmp_path / "cli" / "03_metrics.ipynb").is_file()


def _execute_student(path: Path, out: Path, parameters: dict) -> nbformat.NotebookNode:
    """Execute a student version as a student would: from notebooks/, at the smoke profile."""
    import papermill as pm

    with book._environment(book.KERNEL_ENV):
        pm.execute_notebook(
            str(path),
            str(out),
            parameters={"profile": "smoke", **parameters},
            kernel_name=book.KERNEL_NAME,
            cwd=str(ROOT / book.NOTEBOOK_DIR),
            execution_timeout=300,
            progress_bar=False,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    return _read(out)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("student")
    coursekit.write_student_versions(folder, root=ROOT)
    return folder


def _code(cell: nbformat.NotebookNode) -> ast.Module:
    """A code cell's Python, with IPython's magics and shell lines left out."""
    lines = [ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def _bound(tree: ast.Module) -> set[str]:
    """Names a cell binds at its top level (assignments, loops, imports, defs, classes)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _loaded(tree: ast.Module) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_no_later_cell_needs_a_solution(path: Path) -> None:
    """A student version runs to the end with every exercise unsolved: no cell after a solution
    reads a name that only a solution binds. (The slow tests execute two student versions.)"""
    only_in_solutions: dict[str, int] = {}
    defined: set[str] = set()
    for index, cell in enumerate(_read(path).cells):
        if cell.cell_type != "code":
            continue
        tree = _code(cell)
        if coursekit.is_solution(cell):
            for name in _bound(tree) - defined:
                only_in_solutions.setdefault(name, index)
            continue
        bound = _bound(tree)
        needed = (_loaded(tree) - bound) & set(only_in_solutions)
        assert not needed, f"cell {index} reads {sorted(needed)}, bound only by solution cells"
        defined |= bound
        for name in bound:
            only_in_solutions.pop(name, None)


#: Student versions executed end to end: one definitions chapter and one results chapter (the
#: others are covered by the chapter smoke runs plus the static check above).
EXECUTED_STUDENT_VERSIONS = ["03_metrics", "05_results_performance"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXECUTED_STUDENT_VERSIONS)
def test_student_version_executes_at_smoke_profile(
    name: str, student_dir: Path, smoke_results: Path, tmp_path: Path
) -> None:
    parameters: dict = {"figures_dir": str(tmp_path / "figures")}
    if name in RESULTS_NAMES:
        parameters.update(profile=None, results_path=str(smoke_results))
    nb = _execute_student(student_dir / f"{name}.ipynb", tmp_path / f"{name}.ipynb", parameters)
    assert not nb.metadata["papermill"]["exception"]
    assert not [c for c in nb.cells if coursekit.is_solution(c)]
    first, last = nb.cells[0], nb.cells[-1]
    assert coursekit._is_bootstrap(first) and first.outputs == [], "bootstrap: a no-op here"
    (shown,) = [o for o in last.outputs if o.output_type in ("display_data", "execute_result")]
    numbers = shown["data"]["text/markdown"]
    assert numbers.startswith("### Numbers in this chapter")
    body = numbers.split("\n", 3)[3]  # after the heading and the line that explains the roles
    assert not glued.GLUE_ROLE.search(body), "every role is filled in"
    assert "not glued in this run" not in body
    assert body.count("**") >= 4, "numbers are filled in"


# --------------------------------------------------------------------------------------
# The bootstrap cell's decisions (no network: the clone and install steps are only planned)
# --------------------------------------------------------------------------------------


def _fake_clone(folder: Path) -> Path:
    for marker in bootstrap.MARKERS:
        path = folder / marker
        if "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
        else:
            path.mkdir(parents=True, exist_ok=True)
    return folder


def test_bootstrap_is_a_no_op_inside_the_repository() -> None:
    assert bootstrap.find_root(ROOT / "notebooks") == ROOT
    assert bootstrap.plan(ROOT / "notebooks", "", have_package=True) == []
    proc = subprocess.run(
        [sys.executable, str(ROOT / "mod_arch_core" / "bootstrap.py")],
        cwd=ROOT / "notebooks",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout == "" and proc.stderr == "", "nothing done, nothing printed"


def test_bootstrap_plans_inside_a_clone(tmp_path: Path) -> None:
    root = _fake_clone(tmp_path / "clone")
    (root / "book" / "student").mkdir(parents=True)
    assert bootstrap.plan(root / "notebooks", "", have_package=False) == [("install", str(root))]
    assert bootstrap.plan(root / "book" / "student", "", have_package=True) == [
        ("chdir", str(root / "notebooks"))
    ], "a student copy elsewhere in the clone runs from notebooks/"


def test_bootstrap_plans_outside_a_clone(tmp_path: Path) -> None:
    url = "https://example.org/o/r"
    assert bootstrap.plan(tmp_path, url, have_package=False) == [
        ("clone", url),
        ("install", str(tmp_path / "mod-arch-companion")),
        ("chdir", str(tmp_path / "mod-arch-companion" / "notebooks")),
    ]
    with pytest.raises(RuntimeError, match="no repository URL is set"):
        bootstrap.plan(tmp_path, "", have_package=True)
    _fake_clone(tmp_path / "mod-arch-companion")  # a second run finds the first run's clone
    assert bootstrap.plan(tmp_path, url, have_package=True) == [
        ("chdir", str(tmp_path / "mod-arch-companion" / "notebooks"))
    ]


def test_bootstrap_run_changes_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notebooks").mkdir()
    bootstrap.run([("chdir", str(tmp_path / "notebooks"))], tmp_path)
    assert Path.cwd() == tmp_path / "notebooks"


def test_bootstrap_source_fills_in_the_url() -> None:
    text = coursekit.bootstrap_source("https://example.org/o/r")
    assert 'REPOSITORY_URL = "https://example.org/o/r"' in text
    assert 'REPOSITORY_URL = ""' in coursekit.bootstrap_source(None)
    assert coursekit.same_code(text, text + "\n# a comment")
    assert not coursekit.same_code(text, coursekit.bootstrap_source(None))


def test_sync_bootstrap_inserts_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "x.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t")])
    nbformat.write(nb, path)
    assert coursekit.sync_bootstrap([path], None, check=True) == [path]
    assert _read(path).cells[0].cell_type == "markdown", "check writes nothing"
    assert coursekit.sync_bootstrap([path], None) == [path]
    assert coursekit.sync_bootstrap([path], None) == []
    assert coursekit.sync_bootstrap([path], "https://example.org/o/r") == [path]
    cells = _read(path).cells
    assert len(cells) == 2 and cells[0].id == coursekit.BOOTSTRAP_ID
    assert "example.org" in cells[0].source


# --------------------------------------------------------------------------------------
# The repository setting and the buttons
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "url"),
    [
        ("git@github.com:o/r.git", "https://github.com/o/r"),
        ("https://github.com/o/r.git\n", "https://github.com/o/r"),
        ("https://gitlab.com/g/sub/r/", "https://gitlab.com/g/sub/r"),
        ("ssh://git@github.com/o/r.git", "https://github.com/o/r"),
        ("/work/main", None),
        ("file:///work/main", None),
        ("", None),
    ],
)
def test_normalise_remote(remote: str, url: str | None) -> None:
    assert coursekit.normalise_remote(remote) == url


def _project(tmp_path: Path, url: str) -> Path:
    tmp_path.mkdir(parents=True)
    (tmp_path / "_config.yml").write_text(f'repository:\n  url: "{url}"\n')
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def test_repository_url_from_the_setting_then_git_remote(tmp_path: Path) -> None:
    assert coursekit.repository_url(_project(tmp_path / "a", "https://x.org/o/r/")) == (
        "https://x.org/o/r"
    )
    bare = _project(tmp_path / "b", "")
    subprocess.run(["git", "init", "-q", str(bare)], check=True)
    assert coursekit.repository_url(bare) is None, "no setting, no remote: none"
    subprocess.run(
        ["git", "-C", str(bare), "remote", "add", "origin", "git@github.com:o/r.git"], check=True
    )
    assert coursekit.repository_url(bare) == "https://github.com/o/r"


def _config() -> SimpleNamespace:
    return SimpleNamespace(
        html_theme_options={
            "launch_buttons": {
                "binderhub_url": "https://mybinder.org",
                "colab_url": "https://colab.research.google.com",
                "notebook_interface": "jupyterlab",
            },
            "use_repository_button": False,
        }
    )


def test_buttons_follow_the_repository_setting(tmp_path: Path) -> None:
    config = _config()
    coursekit._configure_buttons(SimpleNamespace(srcdir=_project(tmp_path / "a", "")), config)
    options = config.html_theme_options
    assert "repository_url" not in options
    assert not options["use_repository_button"] and not options["use_issues_button"]
    assert options["launch_buttons"] == {"notebook_interface": "jupyterlab"}, "no launch links"
    config = _config()
    app = SimpleNamespace(srcdir=_project(tmp_path / "b", "https://github.com/o/r"))
    coursekit._configure_buttons(app, config)
    options = config.html_theme_options
    assert options["repository_url"] == "https://github.com/o/r"
    assert options["use_repository_button"] and options["use_issues_button"]
    assert options["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


# --------------------------------------------------------------------------------------
# The numbers cell
# --------------------------------------------------------------------------------------


def _glue_message(name: str, plain: str, prefix: str = "application/papermill.record/") -> dict:
    return {
        "content": {
            "data": {prefix + "text/plain": plain},
            "metadata": {"scrapbook": {"name": name, "mime_prefix": prefix}},
        }
    }


def test_glued_values_are_recorded_from_display_messages() -> None:
    hooks: list = []
    shell = SimpleNamespace(display_pub=SimpleNamespace(register_hook=hooks.append))
    assert glued.record_glued(shell)
    assert glued.record_glued(shell) and len(hooks) == 1, "registered once"
    message = _glue_message("share_test", "0.4375")
    assert hooks[0](message) is message, "the display itself goes on unchanged"
    assert glued.glued_values()["share_test"] == {"text/plain": "0.4375"}
    assert not glued.record_glued(SimpleNamespace())


def test_numbers_in_this_chapter_fills_the_prose(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title\n\n## Overview\n\nNo numbers here."),
            nbformat.v4.new_markdown_cell(
                "## Wins\n\nGT-Modular wins {glue:text}`share:.1%` of {glue:text}`n` settings. "
                "Another sentence. Profile {glue:md}`profiles`.\n\n| a | {glue:text}`n` |"
            ),
            nbformat.v4.new_markdown_cell(
                ":::{admonition} Solution 1\n{glue:text}`secret`\n:::",
                metadata={"tags": ["solution"]},
            ),
        ]
    )
    nbformat.write(nb, tmp_path / "ch.ipynb")
    values = {
        "share": {"text/plain": "0.4375"},
        "n": {"text/plain": "96"},
        "profiles": {"text/markdown": "`reference`", "text/plain": "<Markdown>"},
    }
    text = glued.numbers_in_this_chapter(tmp_path / "ch", values).data
    assert "**Wins**" in text and "Overview" not in text
    assert "- GT-Modular wins **43.8%** of **96** settings." in text
    assert "- Profile `reference`." in text
    assert "- | a | **96** |" in text
    assert "Another sentence" not in text and "secret" not in text, "solutions stay hidden"
    assert glued.fill_roles("{glue:text}`missing`", {}) == "‹missing: not glued in this run›"
    fallback = glued.numbers_in_this_chapter(tmp_path / "absent", values).data
    assert "`share`: **0.4375**" in fallback
