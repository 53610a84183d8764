"""One configuration end to end: train the stack, evaluate both checkpoints, return tidy tables.

This is the unit of work of a sweep (:mod:`mod_arch_core.sweep`) and of ``python -m mod_arch_core
train``: a pure function of its configuration, budget and profile name, whose result is two
DataFrames following :data:`mod_arch_core.results.RUN_COLUMNS` and
:data:`~mod_arch_core.results.CURVE_COLUMNS`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mod_arch_core import results
from mod_arch_core.evaluation import EvalBudget, evaluate_result
from mod_arch_core.models.registry import resolved_options
from mod_arch_core.provenance import provenance
from mod_arch_core.training import TrainConfig, TrainResult, train


@dataclass
class ExperimentOutput:
    """Tidy tables of one configuration, plus the trained stack for callers that want it."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    result: TrainResult
    seconds: float


def experiment_hash(config: TrainConfig, budget: EvalBudget) -> str:
    """Hash of everything that determines a configuration's numbers (device excluded)."""
    data = config.to_dict()
    data.pop("device", None)
    return results.config_hash({"config": data, "budget": budget.to_dict()})


def run_experiment(
    config: TrainConfig,
    budget: EvalBudget,
    *,
    profile: str = "custom",
    progress: bool | None = None,
) -> ExperimentOutput:
    """Train ``config`` (all its seeds stacked), evaluate ``last`` and ``best``, build the tables."""
    start = time.perf_counter()
    trained = train(config, progress=progress)
    evaluated = evaluate_result(trained, budget)
    seconds = time.perf_counter() - start
    chash = experiment_hash(config, budget)
    info = provenance(trained.device, config.setting)
    key = config.key()
    common: dict[str, Any] = {
        **key,
        "iterations": config.num_steps,
        "n_params": trained.n_params,
        "wall_seconds": seconds,
        "stacked_runs": config.num_runs,
        "config_hash": chash,
        "profile": profile,
        "model_options": json.dumps(
            resolved_options(config.model, config.model_options), sort_keys=True
        ),
        **{
            k: info[k]
            for k in ("package_version", "git_commit", "torch_version", "device", "hardware")
        },
    }
    rows = []
    for row in evaluated:
        matrix = row.pop("activation_matrix")
        rows.append(
            {**common, **row, "activation_matrix": "" if matrix is None else json.dumps(matrix)}
        )
    runs = results.conform(pd.DataFrame(rows), results.RUN_COLUMNS)
    curves = trained.curves.drop(columns=["run"]).assign(
        **{**key, "iterations": config.num_steps, "config_hash": chash}
    )
    curves = results.conform(curves, results.CURVE_COLUMNS)
    return ExperimentOutput(runs=runs, curves=curves, result=trained, seconds=seconds)


def save_experiment(
    output: ExperimentOutput,
    out_dir: str | Path,
    *,
    checkpoints: bool = True,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a results folder for one experiment, plus ``last``/``best`` safetensors checkpoints."""
    out_dir = Path(out_dir)
    config = output.result.config
    info = {
        "config": config.to_dict(),
        "provenance": provenance(output.result.device, config.setting),
        "wall_seconds": output.seconds,
        **(meta or {}),
    }
    if checkpoints:
        for checkpoint in ("last", "best"):
            results.save_checkpoint(
                out_dir / f"model_{checkpoint}.safetensors",
                output.result.state(checkpoint),
                {"train_config": config.to_dict(), "checkpoint": checkpoint},
            )
    return results.write_results(out_dir, output.runs, output.curves, info)
