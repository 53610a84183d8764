"""The course kit: student versions of the chapters, the repository setting, the bootstrap cell.

* **Student versions.** A chapter's worked solutions are the cells tagged ``solution`` (the
  "Solution N" boxes and their hidden code). :func:`student_version` drops them and puts one prompt
  (a Markdown cell and an empty code cell) where each solution was; :func:`write_student_versions`
  does it for every chapter (``make student``; ``book/student/`` by default, where the course guide
  links to them). Everything else is the same source notebook.
* **The repository setting.** :func:`repository_url` reads one setting, ``repository.url`` in
  ``_config.yml``; when it is empty it falls back to ``git remote get-url origin``; when neither
  gives a web address there is none, and the book shows no repository, issue or launch buttons
  (:func:`setup`, a Sphinx extension listed in ``_config.yml``).
* **The bootstrap cell.** The first cell of every chapter (tagged ``bootstrap`` and ``remove-cell``,
  so the book hides it) is the text of :mod:`mod_arch_core.bootstrap` with the repository URL filled
  in. Inside a clone it does nothing; in Colab or a bare Jupyter it clones the repository (which
  brings the shipped results), installs the package and changes to ``notebooks/``.
  :func:`sync_bootstrap` writes it (``python -m mod_arch_core.coursekit sync``) and a test checks
  that every chapter carries the current text.

Command line::

    python -m mod_arch_core.coursekit student [--out DIR] [--only NAME ...]
    python -m mod_arch_core.coursekit sync [--check]
    python -m mod_arch_core.coursekit url
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BOOTSTRAP_TAGS",
    "SOLUTION_TAG",
    "STUDENT_DIR",
    "bootstrap_source",
    "is_solution",
    "normalise_remote",
    "repository_url",
    "same_code",
    "setup",
    "student_version",
    "sync_bootstrap",
    "write_student_versions",
]

#: Tag of a cell that holds (part of) a worked solution; student versions drop it.
SOLUTION_TAG = "solution"
#: Tags of the bootstrap cell: found by the first, hidden in the book by the second.
BOOTSTRAP_TAGS: tuple[str, ...] = ("bootstrap", "remove-cell")
#: Cell id of the bootstrap cell (stable, so re-syncing a notebook changes nothing else).
BOOTSTRAP_ID = "bootstrap"
#: Folder of the student versions, relative to the project root (gitignored, linked by the book).
STUDENT_DIR = "book/student"

_SOLUTION_TITLE = re.compile(r":::\{admonition\}\s*Solution\s+(\d+)")
_URL_LINE = re.compile(r'^REPOSITORY_URL = ".*?"(.*)$', re.M)


# --------------------------------------------------------------------------------------
# The repository setting
# --------------------------------------------------------------------------------------


def normalise_remote(remote: str) -> str | None:
    """A git remote as a web address: ``git@github.com:o/r.git`` -> ``https://github.com/o/r``.

    Returns ``None`` for anything that is not a web or scp-style address (a local path, ``file://``).
    """
    remote = remote.strip()
    scp = re.fullmatch(r"[\w.-]+@([\w.-]+):(?!/)(.+)", remote)
    if scp:
        remote = f"https://{scp.group(1)}/{scp.group(2)}"
    elif remote.startswith(("ssh://", "git://")):
        remote = "https://" + re.sub(r"^[a-z]+://([^@/]+@)?", "", remote)
    if not re.fullmatch(r"https?://[\w.-]+/[^\s]+", remote):
        return None
    return re.sub(r"\.git$", "", remote.rstrip("/"))


def repository_url(root: str | Path | None = None) -> str | None:
    """The repository's web address: ``_config.yml`` ``repository.url``, else ``git remote``, else None."""
    import yaml

    from mod_arch_core.book import project_root

    root_path = project_root(root)
    config = yaml.safe_load((root_path / "_config.yml").read_text(encoding="utf-8")) or {}
    configured = str((config.get("repository") or {}).get("url") or "").strip()
    if configured:
        return configured.rstrip("/")
    try:
        remote = subprocess.run(
            ["git", "remote", "get-url", "origin"],
            cwd=root_path,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return normalise_remote(remote) if remote.strip() else None


# --------------------------------------------------------------------------------------
# The bootstrap cell
# --------------------------------------------------------------------------------------


def bootstrap_source(url: str | None) -> str:
    """The bootstrap cell: :mod:`mod_arch_core.bootstrap` with ``REPOSITORY_URL`` set to ``url``.

    The formatter may re-wrap the cell (notebooks use a narrower line length than the package);
    :func:`sync_bootstrap` therefore compares code, not text (:func:`same_code`).
    """
    text = (Path(__file__).parent / "bootstrap.py").read_text(encoding="utf-8")
    if not _URL_LINE.search(text):
        raise RuntimeError("mod_arch_core/bootstrap.py lost its REPOSITORY_URL line")
    text = _URL_LINE.sub(
        lambda m: f"REPOSITORY_URL = {json.dumps(url or '')}{m.group(1)}", text, count=1
    )
    return text.rstrip("\n")


def same_code(a: str, b: str) -> bool:
    """True when two Python sources parse to the same code (layout and comments aside)."""
    import ast

    try:
        return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))
    except SyntaxError:
        return False


def _is_bootstrap(cell: Any) -> bool:
    return BOOTSTRAP_TAGS[0] in cell.get("metadata", {}).get("tags", [])


def sync_bootstrap(
    paths: Iterable[str | Path], url: str | None, *, check: bool = False
) -> list[Path]:
    """Make the first cell of each notebook the bootstrap cell for ``url``; returns those changed.

    With ``check=True`` nothing is written (the return value lists the notebooks out of date).
    """
    import nbformat

    changed = []
    source = bootstrap_source(url)
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        existing = [c for c in nb.cells if _is_bootstrap(c)]
        first = nb.cells[0] if nb.cells else None
        up_to_date = (
            len(existing) == 1
            and first is existing[0]
            and same_code(first.source, source)
            and first.metadata.get("tags") == list(BOOTSTRAP_TAGS)
        )
        if up_to_date:
            continue
        changed.append(path)
        if check:
            continue
        nb.cells = [c for c in nb.cells if not _is_bootstrap(c)]
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(BOOTSTRAP_TAGS)})
        cell.id = BOOTSTRAP_ID
        nb.cells.insert(0, cell)
        nbformat.write(nb, path)
    return changed


# --------------------------------------------------------------------------------------
# Student versions
# --------------------------------------------------------------------------------------


def is_solution(cell: Any) -> bool:
    """True for a cell tagged ``solution``."""
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def _prompt_cells(group: list[Any], index: int) -> list[Any]:
    import nbformat

    numbers = [m.group(1) for c in group for m in _SOLUTION_TITLE.finditer(c.get("source", ""))]
    label = f"exercise {numbers[0]}" if numbers else "this exercise"
    prompt = nbformat.v4.new_markdown_cell(
        f"**Your answer to {label}.** Predict first, write your prediction here, then check it "
        "in the code cell below and say in a sentence or two what the result means. The worked "
        "solution is in the book's version of this chapter."
    )
    code = nbformat.v4.new_code_cell(f"# your code for {label}\n")
    prompt.id, code.id = f"student-prompt-{index}", f"student-code-{index}"
    return [prompt, code]


def student_version(nb: Any) -> Any:
    """A copy of notebook ``nb`` with each worked solution replaced by one prompt.

    A solution is a run of cells tagged ``solution`` that starts at a "Solution N" box (or at the
    first tagged cell) and ends before the next box or the next untagged cell.

    Raises ``ValueError`` when the notebook has no solution cell (a chapter without exercises has
    no student version).
    """
    out = copy.deepcopy(nb)
    cells: list[Any] = []
    group: list[Any] = []
    groups = 0
    for cell in [*out.cells, None]:
        starts_new = cell is not None and bool(_SOLUTION_TITLE.search(cell.get("source", "")))
        if cell is not None and is_solution(cell) and not (starts_new and group):
            group.append(cell)
            continue
        if group:
            groups += 1
            cells.extend(_prompt_cells(group, groups))
            group = []
        if cell is not None and is_solution(cell):
            group = [cell]  # the next solution starts right after the previous one
        elif cell is not None:
            cells.append(cell)
    if not groups:
        raise ValueError("the notebook has no cell tagged 'solution'")
    out.cells = cells
    out.metadata.setdefault("mod_arch_core", {})["student_version"] = True
    return out


def write_student_versions(
    out_dir: str | Path = STUDENT_DIR,
    names: Iterable[str] | None = None,
    root: str | Path | None = None,
) -> list[Path]:
    """Write the student version of each chapter (all, or those named) into ``out_dir``.

    ``out_dir`` is relative to the project root unless absolute. Returns the written paths.
    """
    import nbformat

    from mod_arch_core.book import find_notebooks, project_root

    root_path = project_root(root)
    target = Path(out_dir)
    if not target.is_absolute():
        target = root_path / target
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source in find_notebooks(names, root_path):
        nb = student_version(nbformat.read(source, as_version=4))
        path = target / source.name
        text = nbformat.writes(nb) + "\n"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")  # unchanged files keep their time stamp
        written.append(path)
    return written


# --------------------------------------------------------------------------------------
# Sphinx extension
# --------------------------------------------------------------------------------------


def _configure_buttons(app: Any, config: Any) -> None:
    """Point the repository and launch buttons at :func:`repository_url`, or drop them."""
    options = config.html_theme_options
    url = repository_url(app.srcdir)
    launch = dict(options.get("launch_buttons") or {})
    if url:
        options["repository_url"] = url
        options["use_repository_button"] = True
        options["use_issues_button"] = True
    else:
        options.pop("repository_url", None)
        options["use_repository_button"] = False
        options["use_issues_button"] = False
        options["use_edit_page_button"] = False
        for key in ("binderhub_url", "colab_url", "jupyterhub_url", "deepnote_url"):
            launch.pop(key, None)
    options["launch_buttons"] = launch


def _write_student_versions(app: Any) -> None:
    write_student_versions(root=app.srcdir)


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point: buttons from the repository setting; student versions for the links."""
    from mod_arch_core import __version__

    app.connect("config-inited", _configure_buttons)
    app.connect("builder-inited", _write_student_versions)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mod_arch_core.coursekit student|sync|url``; returns the exit status."""
    from mod_arch_core.book import find_notebooks, project_root

    parser = argparse.ArgumentParser(prog="python -m mod_arch_core.coursekit")
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student versions of the chapters")
    student.add_argument("--out", default=STUDENT_DIR, help=f"folder (default {STUDENT_DIR})")
    student.add_argument("--only", nargs="+", metavar="NAME", help="chapters to convert")
    sync = commands.add_parser("sync", help="write the bootstrap cell into every chapter")
    sync.add_argument("--check", action="store_true", help="only report chapters out of date")
    commands.add_parser("url", help="print the repository URL the book and the bootstrap use")
    args = parser.parse_args(argv)
    root = project_root()
    if args.command == "student":
        try:
            paths = write_student_versions(args.out, args.only, root)
        except ValueError as error:
            print(f"[coursekit] ERROR: {error}", file=sys.stderr)
            return 1
        for path in paths:
            print(
                f"[coursekit] wrote {path.relative_to(root) if path.is_relative_to(root) else path}"
            )
        return 0
    if args.command == "sync":
        url = repository_url(root)
        changed = sync_bootstrap(find_notebooks(None, root), url, check=args.check)
        for path in changed:
            verb = "out of date" if args.check else "updated"
            print(f"[coursekit] {path.relative_to(root)}: bootstrap cell {verb}")
        if args.check and changed:
            print("[coursekit] run `python -m mod_arch_core.coursekit sync`", file=sys.stderr)
            return 1
        return 0
    print(repository_url(root) or "(none: set repository.url in _config.yml or a git remote)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
