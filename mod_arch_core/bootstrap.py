# Bootstrap: lets this notebook run where the repository is not beside it (Colab, a bare Jupyter).
# Inside a clone of the repository it does nothing. Hidden in the book; its text is that of
# mod_arch_core/bootstrap.py, written into every chapter by `python -m mod_arch_core.coursekit sync`.
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPOSITORY_URL = ""  # the repository setting (_config.yml repository.url or `git remote`)
MARKERS = ("_config.yml", "notebooks", "mod_arch_core/__init__.py", "results/reference/meta.json")


def is_root(folder: Path) -> bool:
    """True when ``folder`` is a clone of the repository with its shipped results."""
    return all((folder / marker).exists() for marker in MARKERS)


def find_root(start: Path) -> Path | None:
    """The clone that holds ``start`` (or ``start/mod-arch-companion``, a clone made here)."""
    for folder in (start, *start.parents, start / "mod-arch-companion"):
        if is_root(folder):
            return folder
    return None


def plan(cwd: Path, repository_url: str, have_package: bool) -> list[tuple[str, str]]:
    """What to do before the chapter's first import: ("clone", url), ("install", root), ("chdir", dir).

    An empty plan means the notebook already sits in a clone with the package installed.
    """
    steps = []
    root = find_root(cwd)
    if root is None:
        if not repository_url:
            raise RuntimeError(
                "this notebook needs the mod-arch companion repository (package and shipped "
                "results) and no repository URL is set: clone the repository and open "
                "notebooks/ from there, or set REPOSITORY_URL in this cell"
            )
        root = cwd / "mod-arch-companion"
        steps.append(("clone", repository_url))
    if not have_package:
        steps.append(("install", str(root)))
    if cwd.resolve() != (root / "notebooks").resolve():
        steps.append(("chdir", str(root / "notebooks")))
    return steps


def run(steps: list[tuple[str, str]], cwd: Path) -> None:
    """Carry out a :func:`plan`: shallow clone, editable install, change to ``notebooks/``."""
    for action, argument in steps:
        print(f"bootstrap: {action} {argument}")
        if action == "clone":
            target = str(cwd / "mod-arch-companion")
            subprocess.run(["git", "clone", "--depth", "1", argument, target], check=True)
        elif action == "install":
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "-e", argument], check=True
            )
            sys.path.insert(0, argument)  # an editable install is seen by new kernels only
        elif action == "chdir":
            os.chdir(argument)


if __name__ == "__main__":  # a notebook cell runs as __main__, an import does not
    run(
        plan(Path.cwd(), REPOSITORY_URL, importlib.util.find_spec("mod_arch_core") is not None),
        Path.cwd(),
    )
