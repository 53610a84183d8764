"""Results as data: tidy tables with a documented schema, atomic writes, checksums, checkpoints.

Two tables describe a set of experiments:

* **runs** (:data:`RUN_COLUMNS`): one row per (run, checkpoint) with the configuration keys, the
  performance numbers, the five metrics and provenance;
* **curves** (:data:`CURVE_COLUMNS`): one row per (run, evaluation iteration) of training.

A results folder holds ``runs.parquet``, ``curves.parquet`` and ``meta.json`` (provenance and the
SHA-256 of both tables), each written atomically (temporary file + ``os.replace``) so that an
interrupted write never leaves a half-written file under the final name. :func:`load` verifies the
checksums and the schema and says which file is wrong and how to recompute it.

Checkpoints are safetensors files (no pickle) whose metadata carries the configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from mod_arch_core.folders import CURVES_FILE, META_FILE, RUNS_FILE, check_sweep_out
from mod_arch_core.validation import PAPER_MODELS, SETTINGS, TASKS

#: Keys that identify a run; no two rows of a runs table share them (with ``checkpoint``).
RUN_KEYS: tuple[str, ...] = (
    "setting",
    "task",
    "model",
    "num_rules",
    "encoder_dim",
    "dim",
    "search_version",
    "data_seed",
    "seed",
    "iterations",
)

#: The runs table: column -> (dtype kind, description). "f" float, "i" int, "s" string.
RUN_COLUMNS: dict[str, tuple[str, str]] = {
    "setting": ("s", "architecture: mlp, mha or rnn (spec §2)"),
    "task": ("s", "regression or classification"),
    "model": ("s", "monolithic, modular, modular-op, gt-modular (or a routing variant)"),
    "num_rules": ("i", "R, the number of rules and of modules"),
    "encoder_dim": ("i", "E: MLP encoder / MHA token width / RNN encoder width"),
    "dim": ("i", "D = 4E on the paper grid: MLP width / MHA attention width / LSTM hidden"),
    "search_version": ("f", "MHA search version (1 or 2); NaN for MLP and RNN"),
    "data_seed": ("i", "seed of the task instance (rule coefficients)"),
    "seed": ("i", "model seed: initial weights and data stream"),
    "iterations": ("i", "optimizer steps of the run"),
    "checkpoint": ("s", "last (final weights) or best (best validation)"),
    "n_params": ("i", "parameters per run, reference convention (spec §3.5)"),
    "perf": ("f", "headline ID performance: L1 loss (regression) or error % (classification)"),
    "perf_ood": ("f", "headline OoD performance: inputs x2 (and length 30 for MHA/RNN)"),
    **{
        f"perf_{kind}{length}": ("f", f"{label} performance at sequence length {length} (MHA/RNN)")
        for length in (3, 5, 10, 20, 30)
        for kind, label in (("", "ID"), ("ood_", "OoD (inputs x2)"))
    },
    "collapse_avg": ("f", "Collapse-Avg of P (Eq. 16); NaN for monolithic"),
    "collapse_worst": ("f", "Collapse-Worst of P (Eq. 17); NaN for monolithic"),
    "alignment": ("f", "Alignment of P (Eq. 18); NaN for monolithic"),
    "adaptation": ("f", "model-based Adaptation (Eq. 20, with 1/2); NaN for monolithic"),
    "inverse_mutual_info": ("f", "1 - MI(P)/log R (Eq. 19); NaN for monolithic"),
    "activation_matrix": ("s", "P as JSON (R x R nested list); empty for monolithic"),
    "best_iteration": ("i", "iteration of the best validation"),
    "diverged_at": ("i", "first step with a non-finite loss, -1 if the run never diverged"),
    "wall_seconds": ("f", "wall time of the configuration's stacked training, all its runs"),
    "stacked_runs": ("i", "number of runs trained together in that time"),
    "config_hash": ("s", "hash of the configuration and protocol that produced the row"),
    "profile": ("s", "named profile of the sweep, or 'custom'"),
    "package_version": ("s", "mod_arch_core version"),
    "git_commit": ("s", "git commit of the code (+dirty if modified)"),
    "torch_version": ("s", "torch version"),
    "device": ("s", "cpu or cuda"),
    "hardware": ("s", "CPU model, vector ISA and threads, or GPU name (provenance.hardware)"),
    "model_options": (
        "s",
        'routing options in effect, JSON with sorted keys (e.g. {"top_k": 1}); {} for none',
    ),
    # Hard routers (top-k, Gumbel; evaluation.SELECTED_METRIC_NAMES): the five metrics once more,
    # on P of the selection frequencies (argmax of the scores); NaN for every other model.
    **{
        f"{name}_selected": ("f", f"{label} of the selection-frequency P; NaN unless hard routing")
        for name, label in (
            ("collapse_avg", "Collapse-Avg"),
            ("collapse_worst", "Collapse-Worst"),
            ("alignment", "Alignment"),
            ("adaptation", "model-based Adaptation"),
            ("inverse_mutual_info", "inverse mutual information"),
        )
    },
}

#: The curves table.
CURVE_COLUMNS: dict[str, tuple[str, str]] = {
    **{k: RUN_COLUMNS[k] for k in RUN_KEYS},
    "iteration": ("i", "optimizer steps before this evaluation"),
    "perf": ("f", "ID performance on fresh batches at the training length"),
    "perf_val": ("f", "ID performance on the validation batches (selects 'best')"),
    "config_hash": RUN_COLUMNS["config_hash"],
}


class ResultsError(ValueError):
    """A results file is missing, corrupted or does not follow the schema."""


# Atomic writes -----------------------------------------------------------------------------


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the file to ``path`` atomically.

    The temporary file lives in the destination folder (same filesystem), is flushed to disk and
    then renamed with ``os.replace``; on any error it is removed, so ``path`` either keeps its old
    content or gets the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as Parquet atomically (no index)."""
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented, key-sorted JSON atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path | tuple):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_hash(data: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable mapping (key order does not matter)."""
    text = json.dumps(data, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Schema ------------------------------------------------------------------------------------


def conform(df: pd.DataFrame, columns: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """Return ``df`` with exactly the schema's columns, in order, with the schema's dtypes.

    Missing float columns are filled with NaN (e.g. per-length columns of an MLP run), a missing
    ``model_options`` with ``{}`` (tables written before the column existed); any other missing
    column is an error.
    """
    df = df.copy()
    if "model_options" in columns and "model_options" not in df.columns:
        df["model_options"] = "{}"
    missing = [c for c, (kind, _) in columns.items() if c not in df.columns and kind != "f"]
    if missing:
        raise ResultsError(f"missing columns {missing}; the schema needs {list(columns)}")
    for column, (kind, _) in columns.items():
        if column not in df.columns:
            df[column] = np.nan
        if kind == "f":
            df[column] = pd.to_numeric(df[column], errors="raise").astype("float64")
        elif kind == "i":
            df[column] = pd.to_numeric(df[column], errors="raise").astype("int64")
        else:
            df[column] = df[column].fillna("").astype(str)
    return df[list(columns)]


def validate_runs(df: pd.DataFrame, *, where: str = "runs table") -> pd.DataFrame:
    """Check a runs table: schema, value ranges, no duplicate (run, checkpoint) keys.

    Raises
    ------
    ResultsError naming ``where``, the column and the offending values.
    """
    df = conform(df, RUN_COLUMNS)
    _check_values(df, "setting", SETTINGS, where)
    _check_values(df, "task", TASKS, where)
    _check_values(df, "checkpoint", ("last", "best"), where)
    if (df["num_rules"] < 2).any():
        raise ResultsError(
            f"{where}: num_rules must be >= 2, found {sorted(df['num_rules'].unique())}"
        )
    bounded = ("collapse_avg", "collapse_worst", "alignment", "adaptation")
    for column in (*bounded, *(f"{name}_selected" for name in bounded)):
        values = df[column].dropna()
        if ((values < -1e-9) | (values > 1 + 1e-9)).any():
            raise ResultsError(
                f"{where}: {column} outside [0, 1]: {values[(values < 0) | (values > 1)].tolist()[:5]}"
            )
    classification = df["task"] == "classification"
    errors = df.loc[classification, "perf"].dropna()
    if ((errors < 0) | (errors > 100)).any():
        raise ResultsError(
            f"{where}: classification perf is an error in % and must lie in [0, 100]"
        )
    keys = [*RUN_KEYS, "model_options", "checkpoint"]  # options: one model, several weights
    duplicated = df.duplicated(keys, keep=False)
    if duplicated.any():
        raise ResultsError(
            f"{where}: {int(duplicated.sum())} rows share their run keys {keys}; first:\n"
            f"{df.loc[duplicated, keys].head(4).to_string(index=False)}"
        )
    return df


def validate_curves(df: pd.DataFrame, *, where: str = "curves table") -> pd.DataFrame:
    """Check a curves table: schema and no duplicate (run, configuration, iteration) keys."""
    df = conform(df, CURVE_COLUMNS)
    keys = [*RUN_KEYS, "config_hash", "iteration"]  # the hash tells routing options apart
    duplicated = df.duplicated(keys, keep=False)
    if duplicated.any():
        raise ResultsError(f"{where}: {int(duplicated.sum())} rows share their keys {keys}")
    if (df["iteration"] < 0).any():
        raise ResultsError(f"{where}: negative iterations")
    return df


def _check_values(df: pd.DataFrame, column: str, allowed: Iterable[str], where: str) -> None:
    allowed = tuple(allowed)
    bad = sorted(set(df[column]) - set(allowed))
    if bad:
        raise ResultsError(f"{where}: column {column!r} has values {bad}; allowed: {list(allowed)}")


# Folders of results ------------------------------------------------------------------------


@dataclass
class Results:
    """A loaded results folder: the two tidy tables and their provenance."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    meta: dict[str, Any]
    path: Path

    def activation_matrix(self, row: pd.Series | dict[str, Any]) -> np.ndarray:
        """P of one row as an (R, R) array (raises for a model without scores)."""
        text = row["activation_matrix"]
        if not text:
            raise ValueError(f"row of model {row['model']!r} has no activation matrix")
        return np.asarray(json.loads(text), dtype=float)


def write_results(
    path: str | Path,
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Validate and write a results folder (``runs.parquet``, ``curves.parquet``, ``meta.json``).

    ``meta.json`` is written last and records the SHA-256 of both tables, so a folder whose
    ``meta.json`` exists is complete and verifiable.
    """
    path = Path(path)
    runs = validate_runs(runs, where=str(path / RUNS_FILE))
    curves = validate_curves(curves, where=str(path / CURVES_FILE))
    write_parquet(runs, path / RUNS_FILE)
    write_parquet(curves, path / CURVES_FILE)
    meta = dict(meta or {})
    meta["schema_version"] = 1
    meta["rows"] = {"runs": len(runs), "curves": len(curves)}
    meta["sha256"] = {RUNS_FILE: sha256(path / RUNS_FILE), CURVES_FILE: sha256(path / CURVES_FILE)}
    write_json(meta, path / META_FILE)
    return path


def load(path: str | Path, *, verify: bool = True) -> Results:
    """Load a results folder written by :func:`write_results` (what notebooks call).

    Raises
    ------
    FileNotFoundError if the folder or one of its files is missing, saying how to produce it;
    ResultsError if a checksum or the schema does not match, naming the file.
    """
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.exists():
        hint = (
            "run a sweep into it (python -m mod_arch_core sweep --profile quick --out PATH) or "
            "train a configuration (python -m mod_arch_core train ... --out PATH)"
        )
        raise FileNotFoundError(f"no results at {path}: {meta_file} is missing; {hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as error:
        raise ResultsError(
            f"{meta_file} is not valid JSON ({error}); recompute the results"
        ) from error
    for name in (RUNS_FILE, CURVES_FILE):
        file = path / name
        if not file.exists():
            raise FileNotFoundError(f"{file} is missing although {meta_file} lists it; recompute")
        if verify:
            expected = meta.get("sha256", {}).get(name)
            actual = sha256(file)
            if expected != actual:
                raise ResultsError(
                    f"{file} is corrupted: its SHA-256 {actual[:12]}... does not match "
                    f"{expected and expected[:12]}... recorded in {meta_file}; delete the folder "
                    "and recompute it (a sweep re-runs only what is missing)"
                )
    try:
        runs = pd.read_parquet(path / RUNS_FILE)
        curves = pd.read_parquet(path / CURVES_FILE)
    except Exception as error:  # pyarrow raises several types for damaged files
        raise ResultsError(f"cannot read the tables of {path}: {error}") from error
    runs = validate_runs(runs, where=str(path / RUNS_FILE))
    curves = validate_curves(curves, where=str(path / CURVES_FILE))
    return Results(runs=runs, curves=curves, meta=meta, path=path)


# Load or compute ---------------------------------------------------------------------------

#: The profile whose results the book ships (``results/reference``) and reads by default.
SHIPPED_PROFILE = "reference"
#: Values of a results chapter's ``profile`` parameter that mean "read, do not compute": ``None``,
#: and ``"book"``, which the book pipeline (:mod:`mod_arch_core.book`) passes to every chapter.
READ_ONLY_PROFILES: tuple[Any, ...] = (None, "book")


def default_results_path(profile: str | None = None, root: str | Path = "results") -> Path:
    """Where a profile's results live: ``root/<profile>``, or ``root/reference`` to read shipped ones.

    This is the convention of ``make figures PROFILE=...`` (``results/$(PROFILE)``), so a smoke run
    never lands in the folder of the shipped results.
    """
    name = SHIPPED_PROFILE if profile in READ_ONLY_PROFILES else str(profile)
    return Path(root) / name


def load_or_run(
    results_path: str | Path | None = None,
    profile: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    root: str | Path = "results",
    executor: str = "process",
    workers: int | None = None,
    allow_mixed: bool = False,
) -> Results:
    """Results for a chapter: load them, or run a profile's sweep first (resumable), then load.

    The load-or-compute step of the book's results chapters (house style: "notebooks load shipped
    results by default and recompute when a parameter asks").

    Parameters
    ----------
    results_path : path or None
        Results folder (relative paths are relative to the working directory; a notebook runs in
        ``notebooks/``). None: :func:`default_results_path` under ``root``.
    profile : str or None
        None or ``"book"``: read ``results_path`` as it is. A profile name (``smoke``, ``quick``,
        ``reference``, ``paper``) or YAML file: run that sweep into ``results_path`` with
        :func:`mod_arch_core.sweep.run_sweep` (configurations already there are skipped), then
        :func:`mod_arch_core.sweep.collect` and return the rows of that profile's configurations.
    overrides : list of "KEY=VALUE" (or a mapping), optional
        Profile overrides (``["num_rules=[2,4]", "iterations.mlp=500"]``); only with a profile.
    root : path
        Parent folder of the default results folders (``"../results"`` from ``notebooks/``).
    executor, workers
        Where the sweep runs (:func:`mod_arch_core.sweep.make_executor`).
    allow_mixed : bool
        Let :func:`mod_arch_core.sweep.collect` merge folders of different profiles, package
        versions or commits (e.g. a sweep resumed after a code change).

    Raises
    ------
    FileNotFoundError
        Nothing to read at ``results_path``; the message gives the command that produces it.
    ValueError
        A bad parameter, or a folder that already holds results of another profile.
    ResultsError
        Damaged results, or configurations of the sweep that failed.
    """
    if profile is not None and not isinstance(profile, str):
        raise TypeError(f"profile must be None or a profile name, got {profile!r}")
    if overrides is None:
        overrides = []
    if isinstance(overrides, str) or not isinstance(overrides, list | tuple | dict):
        raise TypeError(
            f"overrides must be a list of KEY=VALUE strings (or a mapping), got {overrides!r}"
        )
    if results_path is not None and not isinstance(results_path, str | os.PathLike):
        raise TypeError(f"results_path must be a path or None, got {results_path!r}")
    path = Path(results_path) if results_path is not None else default_results_path(profile, root)
    if profile in READ_ONLY_PROFILES:
        if overrides:
            raise ValueError(
                f"overrides {list(overrides)} need a profile to run; with profile={profile!r} the "
                "results are only read"
            )
        return _load_for_reading(path)

    from mod_arch_core.profiles import load_profile  # lazily: sweeps sit above this module
    from mod_arch_core.sweep import collect, plan, run_sweep

    loaded = load_profile(profile, list(overrides) if isinstance(overrides, tuple) else overrides)
    hashes = {job.config_hash for job in plan(loaded, path)}
    check_sweep_out(path, loaded.name, hashes, flag="results_path")
    summary = run_sweep(loaded, path, executor=executor, workers=workers, progress=False)
    if summary.failures:
        failed = summary.table[summary.table["status"] == "failed"]
        raise ResultsError(
            f"{summary.failures} configuration(s) of profile {loaded.name!r} failed in {path}; "
            f"first: {failed['configuration'].iloc[0]}\n{failed['error'].iloc[0]}"
        )
    merged = collect(path, profile=loaded, allow_mixed=allow_mixed)
    runs = merged.runs[merged.runs["config_hash"].isin(hashes)].reset_index(drop=True)
    curves = merged.curves[merged.curves["config_hash"].isin(hashes)].reset_index(drop=True)
    return Results(runs=runs, curves=curves, meta=merged.meta, path=merged.path)


def _load_for_reading(path: Path) -> Results:
    if not (path / META_FILE).exists():
        name = path.name
        try:
            from mod_arch_core.profiles import available_profiles

            known = name in available_profiles()
        except Exception:  # pragma: no cover - profiles are always importable in the package
            known = False
        sweep = name if known else SHIPPED_PROFILE
        raise FileNotFoundError(
            f"no results at {path} ({path / META_FILE} is missing). Produce them from the "
            f"repository root with `make figures PROFILE={sweep}` (or `python -m mod_arch_core "
            f"sweep --profile {sweep} --out results/{sweep}`), or run a chapter with "
            "profile='smoke' to compute a small set on the spot"
        )
    return load(path)


# Checkpoints -------------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Save a (stacked) state dict as safetensors, with the configuration in its metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    metadata = {"config": json.dumps(config, sort_keys=True, default=_json_default)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`: (state dict, configuration)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except Exception as error:
        raise ResultsError(f"{path} is not a readable safetensors checkpoint: {error}") from error
    if "config" not in metadata:
        raise ResultsError(f"{path} has no configuration in its metadata")
    return state, json.loads(metadata["config"])


__all__ = [
    "CURVE_COLUMNS",
    "PAPER_MODELS",
    "READ_ONLY_PROFILES",
    "RUN_COLUMNS",
    "RUN_KEYS",
    "SHIPPED_PROFILE",
    "Results",
    "ResultsError",
    "atomic_write",
    "config_hash",
    "default_results_path",
    "load",
    "load_checkpoint",
    "load_or_run",
    "save_checkpoint",
    "sha256",
    "validate_curves",
    "validate_runs",
    "write_results",
]
