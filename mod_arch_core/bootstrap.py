# Bootstrap (hidden in the book): in a clone of the repository this cell does nothing; in Colab
# or a bare Jupyter it clones the repository (package + shipped results), installs the package
# and continues from the clone's notebooks/. Source: mod_arch_core/bootstrap.py.
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPOSITORY_URL = ""  # set from _config.yml by `python -m mod_arch_core.coursekit sync`
MARKERS = ("_config.yml", "notebooks", "mod_arch_core", "results/reference/meta.json")


def find_root(start: Path) -> Path | None:
    """The clone holding ``start``, or the one a previous run made in ``start``."""
    for folder in (start, *start.parents, start / "mod-arch-companion"):
        if all((folder / marker).exists() for marker in MARKERS):
            return folder
    return None


def plan(cwd: Path, url: str, have_package: bool) -> list[tuple[str, str]]:
    """Steps before the first import: ("clone", url), ("install", root), ("chdir", folder)."""
    steps, root = [], find_root(cwd)
    if root is None:
        if not url:
            raise RuntimeError(
                "no repository URL is set: clone the mod-arch companion and open this "
                "notebook from the clone, or set REPOSITORY_URL in this cell"
            )
        root = cwd / "mod-arch-companion"
        steps.append(("clone", url))
    if not have_package:
        steps.append(("install", str(root)))
    if cwd.resolve() != (root / "notebooks").resolve():
        steps.append(("chdir", str(root / "notebooks")))
    return steps


def run(steps: list[tuple[str, str]], cwd: Path) -> None:
    """Carry out a :func:`plan`."""
    for action, argument in steps:
        print(f"bootstrap: {action} {argument}")
        if action == "clone":
            clone = str(cwd / "mod-arch-companion")
            subprocess.run(["git", "clone", "--depth", "1", argument, clone], check=True)
        elif action == "install":
            pip = [sys.executable, "-m", "pip", "install", "-q", "-e", argument]
            subprocess.run(pip, check=True)
            sys.path.insert(0, argument)  # new kernels see the install, this one the path
        elif action == "chdir":
            os.chdir(argument)


if __name__ == "__main__":  # true in a notebook cell, false on import
    _installed = importlib.util.find_spec("mod_arch_core") is not None
    run(plan(Path.cwd(), REPOSITORY_URL, _installed), Path.cwd())
