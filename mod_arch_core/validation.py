"""Argument checks shared by every public function.

Each check raises a ``ValueError`` or ``TypeError`` whose message names the argument,
the value it got and what is allowed, e.g. ``num_rules must be >= 2, got 1``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: The three architectures of the paper (spec §1), as lower-case names.
SETTINGS: tuple[str, ...] = ("mlp", "mha", "rnn")
#: The two task types (spec §2).
TASKS: tuple[str, ...] = ("regression", "classification")
#: The paper's four model families (spec §3.1), canonical spelling.
PAPER_MODELS: tuple[str, ...] = ("monolithic", "modular", "modular-op", "gt-modular")


def canonical_name(value: Any, name: str, allowed: Iterable[str]) -> str:
    """Return ``value`` normalised (lower case, ``_`` -> ``-``) if it is in ``allowed``.

    >>> canonical_name("GT_Modular", "model", PAPER_MODELS)
    'gt-modular'
    """
    allowed = tuple(allowed)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(allowed)}; got {value!r}")
    key = value.strip().lower().replace("_", "-")
    if key not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
    return key


def check_setting(setting: Any) -> str:
    """Validate and normalise an architecture name (``mlp``, ``mha``, ``rnn``)."""
    return canonical_name(setting, "setting", SETTINGS)


def check_task(task: Any) -> str:
    """Validate and normalise a task name (``regression``, ``classification``)."""
    return canonical_name(task, "task", TASKS)


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking its type and lower bound.

    Booleans and floats are refused (``num_rules=2.0`` is almost always a bug).
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_num_rules(num_rules: Any) -> int:
    """Validate the number of rules R (= number of modules): an integer >= 2 (spec §1)."""
    return check_int(num_rules, "num_rules", minimum=2)


def check_positive_float(value: Any, name: str) -> float:
    """Return ``value`` as a finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value
