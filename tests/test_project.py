"""Project-level invariants: one source of truth for dependencies, pins, CI wiring."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_exact_pins_that_protect_the_install() -> None:
    """torch and jupyter-book must be pinned with == (see spec/toolchain.md)."""
    deps = _pyproject()["project"]["dependencies"]
    assert "torch==2.13.0" in deps
    assert "jupyter-book==1.0.4.post1" in deps


def test_user_named_dependencies_are_declared() -> None:
    names = {_name(d) for d in _pyproject()["project"]["dependencies"]}
    for needed in (
        "torch",
        "jupyter-book",
        "papermill",
        "nbclient",
        "seaborn",
        "numpy",
        "pandas",
        "scipy",
        "matplotlib",
        "ipykernel",
        "tqdm",
    ):
        assert needed in names, f"{needed} missing from pyproject dependencies"


def test_environment_yml_defers_to_pyproject() -> None:
    """environment.yml installs the project itself and repeats no dependency of it."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    py = _pyproject()["project"]
    deps = env["dependencies"]
    conda_pkgs = [d for d in deps if isinstance(d, str)]
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip_section == ["-e .[dev]"], pip_section
    python = next(d for d in conda_pkgs if d.startswith("python"))
    major_minor = python.split("=")[1]
    assert f">={major_minor}" in py["requires-python"]
    declared = {_name(d) for d in py["dependencies"]}
    repeated = {_name(d) for d in conda_pkgs if not d.startswith(("python", "pip"))} & declared
    assert not repeated, f"environment.yml repeats pyproject dependencies: {repeated}"


def test_lock_file_agrees_with_pyproject_pins() -> None:
    """requirements-lock.txt (used as pip constraints) holds every declared package once."""
    lock = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            lock[_name(name)] = version
    assert lock["torch"] == "2.13.0"
    assert lock["jupyter-book"] == "1.0.4.post1"
    for dep in _pyproject()["project"]["dependencies"]:
        assert _name(dep) in lock, f"{dep} is not in requirements-lock.txt (run `make lock`)"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    assert "make test" in ci
    assert "set -euo pipefail" in ci


def test_makefile_targets_are_listed_in_help() -> None:
    out = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for target in ("test", "test-fast", "lint", "venv"):
        assert f"make {target} " in out


def test_readme_layout_lists_existing_paths() -> None:
    """Every path in the README's layout block exists (the layout section stays true).

    Indented entries are relative to the nearest less-indented folder above them.
    """
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    parents: list[tuple[int, str]] = []
    paths = []
    for line in block.splitlines():
        match = re.match(r"^(\s*)([\w./-]+/?)(\s|$)", line)
        if not match:
            continue
        indent, name = len(match.group(1)), match.group(2)
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = "".join(p for _, p in parents) + name
        paths.append(path)
        if name.endswith("/"):
            parents.append((indent, name))
    assert len(paths) > 10, "no paths found in the README layout block"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README layout names missing paths: {missing}"
