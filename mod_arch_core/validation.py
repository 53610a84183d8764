"""Argument checks shared by every public function.

Each check raises a ``ValueError`` or ``TypeError`` whose message names the argument,
the value it got and what is allowed, e.g. ``num_rules must be >= 2, got 1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


#: Largest size, count or step number accepted anywhere (torch sizes and ``range`` need an int64
#: or a C ``ssize_t``; nothing in this study comes near it).
MAX_SIZE: int = 2**31 - 1


def check_int(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``value`` as an ``int`` after checking its type and bounds.

    Booleans and floats are refused (``num_rules=2.0`` is almost always a bug).
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
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


#: Seeds must fit the random number generators they seed: ``np.random.RandomState`` (data seeds)
#: takes values in [0, 2**32); model seeds use the same range so that one rule covers both.
SEED_LIMIT: int = 2**32
#: At most this many seeds in one list (a stack trains them all at once).
MAX_SEEDS: int = 10_000
#: Torch device types a configuration may run on.
DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda")


def check_seed(value: Any, name: str) -> int:
    """A seed: an integer in ``[0, 2**32)`` (:data:`SEED_LIMIT`)."""
    seed = check_int(value, name, minimum=0)
    if seed >= SEED_LIMIT:
        raise ValueError(f"{name} must be < 2**32 = {SEED_LIMIT}, got {seed}")
    return seed


def check_finite_float(value: Any, name: str, *, minimum: float | None = None) -> float:
    """Return ``value`` as a finite float (``>= minimum`` when given)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


#: The keys of a learning-rate decay (``TrainConfig.lr_decay``, a profile's ``lr_decay``).
LR_DECAY_KEYS: tuple[str, ...] = ("start", "factor")


def check_known_keys(
    value: dict[Any, Any], allowed: Sequence[str], field: str, what: str, example: str
) -> None:
    """Refuse keys of the mapping ``value`` outside ``allowed``, naming them and what is allowed.

    ``what`` names the keys in the message (``"settings"``, ``"keys"``), ``example`` a valid value.
    """
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ValueError(
            f"{field} has unknown {what} {unknown}; allowed: {', '.join(allowed)} (e.g. {example})"
        )


def check_lr_decay(value: Any, name: str = "lr_decay") -> dict[str, float] | None:
    """A learning-rate decay ``{start: S, factor: F}``, or ``None`` for a constant lr (spec §4).

    ``start`` in [0, 1) is the fraction of the steps trained at the constant lr; ``factor`` in
    (0, 1] is the last step's lr as a fraction of ``lr``. Returns a new ``{"start": float,
    "factor": float}`` (keys in that order) or ``None``.
    """
    example = f"{name}={{start: 0.8, factor: 0.1}}"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(
            f"{name} must be a mapping with start and factor, e.g. {example}, or null for a "
            f"constant lr; got {value!r} ({type(value).__name__})"
        )
    check_known_keys(value, LR_DECAY_KEYS, name, "keys", example)
    missing = [k for k in LR_DECAY_KEYS if k not in value]
    if missing:
        raise ValueError(
            f"{name} needs {' and '.join(f'{name}.{k}' for k in missing)}, e.g. {example}; "
            f"got {value!r}"
        )
    start = check_finite_float(value["start"], f"{name}.start")
    if not 0.0 <= start < 1.0:
        raise ValueError(
            f"{name}.start must lie in [0, 1) (the fraction of the steps at constant lr), "
            f"got {start}"
        )
    factor = check_finite_float(value["factor"], f"{name}.factor")
    if not 0.0 < factor <= 1.0:
        raise ValueError(
            f"{name}.factor must lie in (0, 1] (the last step's lr is factor x lr), got {factor}"
        )
    return {"start": start, "factor": factor}


def check_device_name(device: Any, name: str = "device") -> str:
    """Validate a device name without importing torch: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Whether CUDA is available is checked where the device is resolved
    (``training.resolve_device``).
    """
    allowed = "'auto', 'cpu' or 'cuda[:N]'"
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a string, {allowed}; got {device!r}")
    text = device.strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return text
    kind, sep, index = text.partition(":")
    if kind == "cuda" and sep and index.isdigit():
        return f"cuda:{int(index)}"
    raise ValueError(f"{name} must be {allowed}, got {device!r}")


def check_list(value: Any, name: str, example: str) -> list[Any]:
    """``value`` as a list; a string, a mapping or a scalar is an error (``example`` shows a list)."""
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(
        f"{name} must be a list, e.g. {name}={example}; got {value!r} ({type(value).__name__})"
    )


def parse_key_value(
    text: Any, *, what: str = "override", example: str = "num_rules=[2,4]"
) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` with a YAML value (``[2, 4]``, ``2000``, ``cpu``); errors name ``what``.

    A YAML syntax error is a ``ValueError`` naming the key and the problem, never a raw
    ``yaml.scanner`` traceback.
    """
    import yaml

    if not isinstance(text, str):
        raise TypeError(f"{what} must be a KEY=VALUE string, got {text!r}")
    if "=" not in text:
        raise ValueError(f"malformed {what} {text!r}: expected KEY=VALUE, e.g. {example}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(
            f"malformed {what} {text!r}: empty key; expected KEY=VALUE, e.g. {example}"
        )
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(
            f"malformed {what} {text!r}: the value of {key} is not valid YAML ({problem}); "
            "lists look like [2, 4], mappings like {mlp: 2000}"
        ) from None
    return key, value
