"""The executable book: run the chapters with papermill, then build the Jupyter Book.

The pipeline has two steps, each a function and a sub-command of ``python -m mod_arch_core.book``:

1. :func:`execute_notebooks` runs every ``notebooks/*.ipynb`` through papermill into
   ``book/executed/`` (the copies that ``_toc.yml`` lists). Each run is cached on a *stamp*: the
   SHA-256 of the notebook file, its parameters, the profile, and every file of the
   ``mod_arch_core`` package and of the shipped results (``results/``). A change in the package
   therefore re-executes the chapters, which Jupyter Book's own cache (it sees only code cells)
   would not do. After a run the ``parameters`` and ``injected-parameters`` cells are tagged
   ``remove-cell`` and progress-bar noise is stripped from the outputs.
2. :func:`build_book` runs ``jupyter-book build --all -W --keep-going`` on the repository root, so
   any warning, broken reference or missing executed notebook fails the build.

The module is also a small Sphinx extension (listed in ``_config.yml``): :func:`setup` points the
Binder/Colab launch links of a chapter at its source notebook ``notebooks/NAME.ipynb``, because the
executed copies are build artefacts that are not in the repository.

Command line::

    python -m mod_arch_core.book execute [--force] [--only NAME ...] [--profile smoke|book]
                                         [--param KEY=VALUE ...]
    python -m mod_arch_core.book build
    python -m mod_arch_core.book all [--force] [--only NAME ...] [--param KEY=VALUE ...]

``--param results_path=/abs/path/results/reference`` points the results chapters (those whose parameter
cell defines ``results_path``) at other results; a ``--param`` reaches only the chapters that declare
that parameter, and a name no selected chapter declares is an error.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EXECUTED_DIR",
    "NOTEBOOK_DIR",
    "NOTEBOOK_PROFILES",
    "BookBuildError",
    "ExecutionReport",
    "NotebookExecutionError",
    "build_book",
    "check_parameter_names",
    "check_parameters",
    "check_profile",
    "declared_parameters",
    "execute_notebooks",
    "find_notebooks",
    "kernel_python",
    "notebook_parameters",
    "notebook_stamp",
    "parse_param",
    "project_root",
    "tidy_executed_notebook",
]

#: Source notebooks, relative to the project root.
NOTEBOOK_DIR = "notebooks"
#: Executed copies (gitignored), relative to the project root; ``_toc.yml`` points here.
EXECUTED_DIR = "book/executed"
#: Profiles a chapter accepts: ``smoke`` (tests: tiny sizes, seconds) and ``book`` (the site).
NOTEBOOK_PROFILES: tuple[str, ...] = ("smoke", "book")
#: Folders whose files enter every stamp: the package, and shipped results that chapters read.
STAMP_PATHS: tuple[str, ...] = ("mod_arch_core", "results")
#: Bump to invalidate every cached execution after a change in how chapters are executed.
STAMP_VERSION = "1"
#: Seconds one cell may run before papermill stops the notebook.
DEFAULT_TIMEOUT = 600
#: Kernel used for every chapter; it must resolve to the Python running this module.
KERNEL_NAME = "python3"
#: Key of this module's record in an executed notebook's metadata.
METADATA_KEY = "mod_arch_core"
#: Tags papermill puts on the parameter cells; both are hidden in the rendered book.
PARAMETER_TAGS: tuple[str, ...] = ("parameters", "injected-parameters")
#: Environment of the kernel: no progress bars, deterministic hashing, no debugger warnings.
KERNEL_ENV: dict[str, str] = {
    "TQDM_DISABLE": "1",
    "PYTHONHASHSEED": "0",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    "MOD_ARCH_BOOK": "1",
    # tqdm.auto warns on import when ipywidgets is missing; progress bars are off anyway
    "PYTHONWARNINGS": "ignore:IProgress not found",
}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PROGRESS = re.compile(r"\r|\d+%\|[^\n]*\||\d+/\d+ \[\d+:\d+|it/s\]|s/it\]")


class NotebookExecutionError(RuntimeError):
    """A chapter failed; the message names the notebook, the cell and the error."""


class BookBuildError(RuntimeError):
    """``jupyter-book build`` failed (a warning under ``-W``, a broken link, a missing page)."""


@dataclass(frozen=True)
class ExecutionReport:
    """What :func:`execute_notebooks` did with one notebook."""

    name: str  # notebook stem, e.g. "03_metrics"
    output: Path  # the executed copy
    status: str  # "executed" or "cached"
    seconds: float  # wall time of the execution (0 when cached)
    stamp: str  # the cache stamp stored in the executed copy


# --------------------------------------------------------------------------------------
# Locations and validation
# --------------------------------------------------------------------------------------


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The repository root: the first folder upwards holding ``_config.yml`` and ``notebooks/``.

    Searches from ``start`` (default: the current directory), then from this file's location, so
    the pipeline works from any sub-folder and from an editable install.
    """
    candidates = [Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent]
    for base in candidates:
        for folder in (base, *base.parents):
            if (folder / "_config.yml").is_file() and (folder / NOTEBOOK_DIR).is_dir():
                return folder
    raise FileNotFoundError(
        f"no project root (a folder with _config.yml and {NOTEBOOK_DIR}/) above "
        f"{candidates[0]} or {candidates[1]}"
    )


def check_profile(profile: Any) -> str:
    """Validate a chapter's ``profile`` parameter: one of :data:`NOTEBOOK_PROFILES`."""
    if not isinstance(profile, str) or profile not in NOTEBOOK_PROFILES:
        raise ValueError(f"profile must be one of {', '.join(NOTEBOOK_PROFILES)}; got {profile!r}")
    return profile


def find_notebooks(
    names: Iterable[str] | None = None, root: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Source notebooks to run: all of ``notebooks/*.ipynb`` (sorted), or those named.

    A name may be the stem (``03_metrics``), a unique prefix of it (``03``), the file name or a
    path; an unknown or ambiguous name raises ``ValueError`` listing the notebooks that exist.
    """
    folder = project_root(root) / NOTEBOOK_DIR
    available = sorted(folder.glob("*.ipynb"))
    if names is None:
        return available
    by_stem = {p.stem: p for p in available}
    chosen = []
    for name in names:
        stem = Path(name).stem
        matches = [stem] if stem in by_stem else [s for s in by_stem if s.startswith(stem)]
        if len(matches) != 1:
            problem = "ambiguous" if matches else "unknown"
            raise ValueError(
                f"{problem} notebook {name!r}; available: {', '.join(by_stem) or '(none)'}"
            )
        chosen.append(by_stem[matches[0]])
    return chosen


def declared_parameters(notebook: str | os.PathLike[str]) -> set[str]:
    """Names assigned in a notebook's cell tagged ``parameters`` (empty if it has none)."""
    data = json.loads(Path(notebook).read_text(encoding="utf-8"))
    names: set[str] = set()
    for cell in data.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell.get("source", "")
        names.update(_assigned_names("".join(source) if isinstance(source, list) else source))
    return names


def _assigned_names(source: str) -> list[str]:
    """Names assigned at the top level of Python ``source`` (in order, without repeats)."""
    import ast

    names: list[str] = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names.extend(t.id for t in targets if isinstance(t, ast.Name) and t.id not in names)
    return names


def notebook_parameters(notebook: str | os.PathLike[str]) -> list[str]:
    """The parameter names of a notebook as papermill sees them (``papermill.inspect_notebook``)."""
    import papermill

    return list(papermill.inspect_notebook(str(notebook)))


def check_parameter_names(notebook: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Refuse ``names`` that the notebook's ``parameters`` cell does not declare.

    papermill itself only warns (``Passed unknown parameter``) and runs the default, so a typo such
    as ``num_rule=8`` would silently produce the page for ``num_rules=4``. The message names the
    unknown parameters and lists the notebook's own.
    """
    declared = notebook_parameters(notebook)
    unknown = sorted(set(names) - set(declared))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for notebook {Path(notebook).name}; its parameters "
            f"are: {', '.join(declared) or '(none)'}"
        )


#: First line of the cell papermill injects after the ``parameters`` cell (its Python translator).
INJECTED_HEADER = "# Parameters"


def check_parameters(history: Sequence[str] | None = None) -> list[str]:
    """Inside a notebook: refuse parameters papermill injected that the notebook does not declare.

    Call it first thing in the cell after the ``parameters`` cell. papermill runs the ``parameters``
    cell and then the cell it injects (tagged ``injected-parameters``, first line
    :data:`INJECTED_HEADER`); this reads both back from the kernel's input history (``In``), most
    recent first, and raises ``ValueError`` naming every injected name that the parameters cell
    does not assign, with the list of those it does. Run interactively (no injected cell), it
    does nothing. ``history`` (the cells' sources in execution order) is for tests; by default it
    is IPython's. Returns the injected names.
    """
    if history is None:
        try:
            from IPython import get_ipython
        except ImportError:  # not in a kernel
            return []
        shell = get_ipython()
        if shell is None:
            return []
        history = list(shell.history_manager.input_hist_raw)
    history = [h if isinstance(h, str) else "" for h in history]
    for position in range(len(history) - 1, 0, -1):
        if history[position].lstrip().startswith(INJECTED_HEADER):
            injected = _assigned_names(history[position])
            declared = _assigned_names(history[position - 1])
            unknown = [name for name in injected if name not in declared]
            if unknown:
                raise ValueError(
                    f"unknown parameter(s) {unknown}: this notebook's parameters are "
                    f"{', '.join(declared) or '(none)'}"
                )
            return injected
    return []


def parse_param(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` from the command line; the value is YAML (``3``, ``null``, ``[a, b]``)."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ValueError(f"malformed --param {text!r}: expected KEY=VALUE, e.g. results_path=../r")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ValueError(f"malformed --param {text!r}: the value is not valid YAML") from error
    return key, value


def kernel_python(kernel_name: str = KERNEL_NAME) -> str:
    """The Python executable that the Jupyter kernel ``kernel_name`` would start.

    jupyter_client replaces a bare ``python`` in a kernelspec by the running interpreter, so the
    virtual environment's ``python3`` kernel (installed with ``--sys-prefix``) runs the venv.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(kernel_name)
    exe = spec.argv[0]
    if exe in {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}:
        return sys.executable
    return exe


def _check_kernel(kernel_name: str) -> None:
    exe = kernel_python(kernel_name)
    if Path(exe).resolve() != Path(sys.executable).resolve():
        raise RuntimeError(
            f"kernel {kernel_name!r} runs {exe}, not this interpreter ({sys.executable}); install "
            f"the environment's kernel with `{sys.executable} -m ipykernel install --sys-prefix`"
        )


# --------------------------------------------------------------------------------------
# Cache stamp
# --------------------------------------------------------------------------------------


def _hash_tree(digest: Any, root: Path, relative: str) -> None:
    base = root / relative
    if base.is_file():
        files = [base]
    elif base.is_dir():
        files = sorted(
            p
            for p in base.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
        )
    else:
        return
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())


def notebook_stamp(
    notebook: str | os.PathLike[str],
    parameters: Mapping[str, Any],
    root: str | os.PathLike[str] | None = None,
    extra_paths: Sequence[str] = STAMP_PATHS,
) -> str:
    """SHA-256 stamp of everything an execution depends on.

    Covers the notebook file, the JSON of ``parameters`` (which include the profile), and every
    file under ``extra_paths`` (relative to the project root; missing ones are skipped), so editing
    the package or the shipped results invalidates the cached executions.
    """
    root_path = project_root(root)
    digest = hashlib.sha256(f"mod_arch_core.book stamp v{STAMP_VERSION}\0".encode())
    digest.update(Path(notebook).read_bytes())
    digest.update(json.dumps(dict(parameters), sort_keys=True, default=str).encode() + b"\0")
    for relative in extra_paths:
        _hash_tree(digest, root_path, relative)
    return digest.hexdigest()


def _stored_stamp(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return None
    if meta.get("papermill", {}).get("exception"):
        return None
    return meta.get(METADATA_KEY, {}).get("stamp")


# --------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _is_progress_output(output: Mapping[str, Any]) -> bool:
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        return bool(_PROGRESS.search(output.get("text", "")))
    data = output.get("data", {})
    return "application/vnd.jupyter.widget-view+json" in data


def tidy_executed_notebook(nb: Any, record: Mapping[str, Any] | None = None) -> Any:
    """Prepare an executed notebook for the book, in place; returns it.

    * cells tagged ``parameters`` or ``injected-parameters`` get the ``remove-cell`` tag, so the
      rendered page hides them (the values stay in the notebook for readers of the source);
    * progress bars (stderr streams with carriage returns or tqdm counters, widget outputs) are
      dropped;
    * ``record`` (stamp, profile, parameters) is stored under ``metadata.mod_arch_core``.
    """
    for cell in nb.cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if any(tag in tags for tag in PARAMETER_TAGS) and "remove-cell" not in tags:
            tags.append("remove-cell")
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not _is_progress_output(o)]
    if record is not None:
        nb.metadata[METADATA_KEY] = dict(record)
    return nb


def _execute_one(
    source: Path,
    output: Path,
    parameters: Mapping[str, Any],
    timeout: int,
    cwd: Path,
    kernel_name: str,
) -> None:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    try:
        with _environment(KERNEL_ENV):
            pm.execute_notebook(
                str(source),
                str(output),
                parameters=dict(parameters),
                kernel_name=kernel_name,
                cwd=str(cwd),
                execution_timeout=timeout,
                progress_bar=False,
                log_output=False,
                report_mode=False,
                # the kernel's own log goes to this terminal; keep only its errors there
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
    except PapermillExecutionError as error:
        raise NotebookExecutionError(
            f"{source.name} failed in cell {error.cell_index} (execution count "
            f"{error.exec_count}): {error.ename}: {error.evalue}\n"
            f"The partly executed notebook is at {output}"
        ) from error


def execute_notebooks(
    names: Iterable[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] = EXECUTED_DIR,
    profile: str = "book",
    force: bool = False,
    *,
    root: str | os.PathLike[str] | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    kernel_name: str = KERNEL_NAME,
    verbose: bool = True,
    declared_only: Mapping[str, Any] | None = None,
) -> list[ExecutionReport]:
    """Execute chapters with papermill into ``out_dir``, skipping those whose stamp is unchanged.

    Parameters
    ----------
    names : iterable of str, optional
        Notebook stems or file names; all of ``notebooks/*.ipynb`` when omitted.
    parameters : mapping, optional
        Values injected into every notebook after its ``parameters`` cell (on top of ``profile``);
        a name that some selected notebook does not declare raises ``ValueError`` before anything
        runs (:func:`check_parameter_names`).
    declared_only : mapping, optional
        Values injected only into the notebooks whose ``parameters`` cell defines them
        (:func:`declared_parameters`), e.g. ``{"results_path": ...}`` for the results chapters;
        a name that no selected notebook defines raises ``ValueError``.
    out_dir : path
        Folder of the executed copies, relative to the project root unless absolute.
    profile : {"smoke", "book"}
        Passed to every notebook as its ``profile`` parameter.
    force : bool
        Execute even when the stored stamp matches.
    root : path, optional
        Project root (found from the current directory when omitted).
    timeout : int
        Seconds a single cell may run.
    kernel_name : str
        Jupyter kernel; it must resolve to the interpreter running this function.
    verbose : bool
        Print one line per notebook.

    Returns
    -------
    list of ExecutionReport
        One per notebook, in execution order.

    Raises
    ------
    NotebookExecutionError
        When a cell raises; the message names the notebook, the cell and the error.
    """
    root_path = project_root(root)
    check_profile(profile)
    out_path = Path(out_dir)
    if not out_path.is_absolute():
        out_path = root_path / out_path
    out_path.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, **dict(parameters or {})}
    sources = find_notebooks(names, root_path)
    if not sources:
        return []
    declared = {source: declared_parameters(source) for source in sources}
    for source in sources:  # parameters for every notebook: each must declare every one
        check_parameter_names(source, params)
    extra = dict(declared_only or {})
    unused = sorted(k for k in extra if not any(k in names_ for names_ in declared.values()))
    if unused:
        listed = "; ".join(f"{s.stem}: {', '.join(sorted(declared[s]))}" for s in sources)
        raise ValueError(
            f"parameters {unused} are not defined by any selected notebook; their parameters "
            f"are {listed}"
        )
    _check_kernel(kernel_name)

    import nbformat

    reports = []
    for source in sources:
        target = out_path / source.name
        nb_params = {**params, **{k: v for k, v in extra.items() if k in declared[source]}}
        stamp = notebook_stamp(source, nb_params, root_path)
        if not force and _stored_stamp(target) == stamp:
            reports.append(ExecutionReport(source.stem, target, "cached", 0.0, stamp))
            if verbose:
                print(f"[book] {source.stem}: cached ({target.relative_to(root_path)})")
            continue
        if verbose:
            print(f"[book] {source.stem}: executing (profile={profile}) ...", flush=True)
        start = time.perf_counter()
        _execute_one(source, target, nb_params, timeout, source.parent, kernel_name)
        seconds = time.perf_counter() - start
        nb = nbformat.read(target, as_version=4)
        papermill_meta = nb.metadata.get("papermill", {})
        for key in ("input_path", "output_path"):  # no machine-specific absolute paths
            if key in papermill_meta:
                papermill_meta[key] = Path(papermill_meta[key]).name
        record = {"stamp": stamp, "profile": profile, "parameters": nb_params}
        nbformat.write(tidy_executed_notebook(nb, record), target)
        reports.append(ExecutionReport(source.stem, target, "executed", seconds, stamp))
        if verbose:
            print(f"[book] {source.stem}: done in {seconds:.1f} s")
    return reports


# --------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------


def _toc_files(root: Path) -> list[str]:
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries: Iterable[Mapping[str, Any]]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return files


def _check_executed(root: Path) -> None:
    """Every executed chapter listed in ``_toc.yml`` exists and did not fail."""
    problems = []
    for entry in _toc_files(root):
        if not entry.startswith(EXECUTED_DIR + "/"):
            continue
        path = root / (entry if entry.endswith(".ipynb") else entry + ".ipynb")
        if not path.is_file():
            problems.append(f"{path.relative_to(root)} is missing")
        elif _stored_stamp(path) is None:
            problems.append(f"{path.relative_to(root)} failed or was not executed by this module")
    if problems:
        raise BookBuildError(
            "executed chapters are not ready: "
            + "; ".join(problems)
            + ". Run `python -m mod_arch_core.book execute` first."
        )


def _jupyter_book() -> str:
    local = Path(sys.executable).parent / "jupyter-book"
    found = str(local) if local.is_file() else shutil.which("jupyter-book")
    if not found:
        raise BookBuildError(
            "jupyter-book is not installed (pip install jupyter-book==1.0.4.post1)"
        )
    return found


def build_book(
    root: str | os.PathLike[str] | None = None,
    *,
    builder: str = "html",
    check_executed: bool = True,
    verbose: bool = True,
) -> Path:
    """Run ``jupyter-book build --all -W --keep-going`` on the project root.

    Returns the output folder (``_build/html``). Raises :class:`BookBuildError` with the last lines
    of the log when the build fails; under ``-W`` every warning is a failure, and the tracebacks of
    any failing cell are under ``_build/html/reports/``.
    """
    root_path = project_root(root)
    if check_executed:
        _check_executed(root_path)
    command = [
        _jupyter_book(),
        "build",
        "--all",
        "-W",
        "--keep-going",
        "--builder",
        builder,
        str(root_path),
    ]
    if verbose:
        print("[book] " + " ".join(command), flush=True)
    lines: list[str] = []
    with subprocess.Popen(
        command,
        cwd=root_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(_ANSI.sub("", line.rstrip("\n")))
            if verbose:
                print(line, end="", flush=True)
    if proc.returncode != 0:
        tail = "\n".join(lines[-40:])
        raise BookBuildError(
            f"jupyter-book build failed (exit {proc.returncode}); last lines:\n{tail}"
        )
    return root_path / "_build" / builder


# --------------------------------------------------------------------------------------
# Sphinx extension: launch links point at the source notebooks
# --------------------------------------------------------------------------------------


def _rewrite_launch_urls(buttons: Any) -> None:
    if isinstance(buttons, list):
        for button in buttons:
            _rewrite_launch_urls(button)
    elif isinstance(buttons, dict):
        url = buttons.get("url")
        # only launch services (Binder, Colab, ...); the download link must keep the executed copy
        if isinstance(url, str) and url.startswith("https://") and EXECUTED_DIR + "/" in url:
            buttons["url"] = url.replace(EXECUTED_DIR + "/", NOTEBOOK_DIR + "/")
        _rewrite_launch_urls(buttons.get("buttons"))


def _launch_links_to_sources(
    app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    if pagename.startswith(EXECUTED_DIR + "/"):
        _rewrite_launch_urls(context.get("header_buttons"))


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point: register the launch-link rewrite (after sphinx-book-theme's, 501)."""
    from mod_arch_core import __version__

    app.connect("html-page-context", _launch_links_to_sources, priority=900)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mod_arch_core.book execute|build|all``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m mod_arch_core.book",
        description="Execute the chapters with papermill and build the Jupyter Book.",
    )
    parser.add_argument("command", choices=("execute", "build", "all"))
    parser.add_argument("--force", action="store_true", help="ignore the execution cache")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="notebooks to execute")
    parser.add_argument("--profile", default="book", choices=NOTEBOOK_PROFILES)
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a chapter parameter (YAML value), passed to the chapters that define it, e.g. "
        "results_path=$PWD/results/reference (relative paths are relative to notebooks/); repeatable",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.command in ("execute", "all"):
            extra = dict(parse_param(text) for text in args.param)
            execute_notebooks(
                args.only,
                profile=args.profile,
                force=args.force,
                timeout=args.timeout,
                declared_only=extra,
            )
        if args.command in ("build", "all"):
            out = build_book()
            print(f"[book] site written to {out}/index.html")
    except (NotebookExecutionError, BookBuildError, ValueError) as error:
        print(f"[book] ERROR: {error}", file=sys.stderr)
        return 1
    print(f"[book] {args.command} finished in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
