"""Provenance: which code, library versions and hardware produced a number.

Every results table carries these fields (see :mod:`mod_arch_core.results`), and every notebook's
Setup cell prints them through :func:`setup_notebook`.
"""

from __future__ import annotations

import functools
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mod_arch_core
from mod_arch_core.models.kernels import use_fused

REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def git_commit(short: bool = False) -> str:
    """The git commit of the working tree (``"+dirty"`` appended if modified), or ``"unknown"``.

    ``MOD_ARCH_GIT_COMMIT`` overrides the lookup (for installs without a ``.git`` folder).
    """
    override = os.environ.get("MOD_ARCH_GIT_COMMIT")
    if override:
        return override
    try:
        commit = subprocess.run(
            ["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.split()[-1]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "mod_arch_core"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware(device: str | None = None, setting: str | None = None) -> str:
    """A fingerprint of what computes, precise enough to decide when bitwise equality is owed.

    GPU: ``cuda:<name>``. CPU: ``cpu:<model> (<torch's CPU capability>, <threads> threads)``, e.g.
    ``cpu:AMD EPYC (AVX2, 2 threads)``. Float32 results are bitwise repeatable only on the same
    fingerprint (and torch version): another CPU make or vector width makes BLAS choose other
    kernels, and another thread count splits reductions differently (see the reproduce page).
    An RNN run on the CPU whose cell was the fused C++ kernel
    (:mod:`mod_arch_core.models.kernels`) adds ``, fused LSTM``: its numbers differ in the last
    bits from the pure-PyTorch cell's. Rows written before this fingerprint existed say
    ``cpu:x86_64x2`` (architecture and cores).
    ``device``: the device that computed (default: CUDA when available, else the CPU).
    """
    on_gpu = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if on_gpu:
        return f"cuda:{torch.cuda.get_device_name(0)}"
    capability = torch.backends.cpu.get_cpu_capability()
    engine = ", fused LSTM" if setting == "rnn" and use_fused() else ""
    return f"cpu:{cpu_model()} ({capability}, {torch.get_num_threads()} threads{engine})"


def package_versions() -> dict[str, str]:
    """Versions of the package and of the libraries that shape its numbers."""
    return {
        "package_version": mod_arch_core.__version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
    }


def provenance(device: str | None = None, setting: str | None = None) -> dict[str, Any]:
    """Provenance fields stored with every result row: versions, commit, device and hardware
    (:func:`hardware` of the device, for runs of ``setting``)."""
    info: dict[str, Any] = dict(package_versions())
    info["device"] = (
        device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    info["hardware"] = hardware(info["device"], setting)
    return info


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global RNG and torch; for notebooks and demos only.

    Library code never relies on global state: it takes explicit generators and seeds.
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - deliberate: notebooks may use the legacy API
    torch.manual_seed(seed)


def setup_notebook(seed: int = 0) -> dict[str, str]:
    """One call for a notebook's Setup cell: seed everything, quiet plotting, print provenance.

    Tables show their text cells whole: pandas cuts strings at 50 characters by default, which
    hid the end of a per-setting list such as "MLP 2, 4, 8, 16, 32; MHA 2, 4, 8, 16; RNN 2, 4...".
    """
    import matplotlib
    import pandas as pd

    from mod_arch_core.glued import record_glued

    matplotlib.use("Agg")
    pd.set_option("display.max_colwidth", None)
    seed_everything(seed)
    record_glued()  # so the chapter's last cell can print its numbers outside the book
    versions = package_versions()
    print(
        f"mod_arch_core {versions['package_version']} | commit {versions['git_commit']} | "
        f"torch {versions['torch_version']} | numpy {versions['numpy_version']} | seed {seed}"
    )
    return versions
