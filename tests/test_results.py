"""Results as data: schema, atomic writes, checksums, checkpoints, the train CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mod_arch_core import results
from mod_arch_core.__main__ import main, parse_seeds
from mod_arch_core.evaluation import named_budget
from mod_arch_core.experiment import run_experiment, save_experiment
from mod_arch_core.models import build_model
from mod_arch_core.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def experiment():
    config = TrainConfig(
        "mlp",
        "classification",
        "modular",
        2,
        encoder_dim=8,
        dim=32,
        data_seeds=(0, 1),
        seeds=(0,),
        iterations=6,
        batch_size=16,
        eval_every=3,
        eval_batches=1,
        device="cpu",
    )
    return run_experiment(config, named_budget("smoke"))


def test_tables_follow_the_schema(experiment) -> None:
    runs, curves = experiment.runs, experiment.curves
    assert list(runs.columns) == list(results.RUN_COLUMNS)
    assert list(curves.columns) == list(results.CURVE_COLUMNS)
    assert len(runs) == 2 * 2  # runs x checkpoints
    assert set(runs.checkpoint) == {"last", "best"}
    assert len(curves) == 2 * 3  # runs x evaluations (0, 3, 6)
    row = runs.iloc[0]
    assert row.n_params > 0 and row.stacked_runs == 2 and row.iterations == 6
    assert row.torch_version == torch.__version__ and row.profile == "custom"
    assert np.isnan(row.perf_10)  # per-length columns are for MHA/RNN
    P = np.asarray(json.loads(row.activation_matrix))
    assert P.shape == (2, 2) and P.sum() == pytest.approx(1.0)
    results.validate_runs(runs)
    results.validate_curves(curves)


def test_write_load_round_trip_and_checksums(experiment, tmp_path: Path) -> None:
    path = save_experiment(experiment, tmp_path / "exp")
    loaded = results.load(path)
    pd.testing.assert_frame_equal(loaded.runs, experiment.runs)
    pd.testing.assert_frame_equal(loaded.curves, experiment.curves)
    assert loaded.meta["config"]["setting"] == "mlp"
    assert not list(path.glob(".*.tmp")), "temporary files left behind"
    # corrupt one byte of the runs table: load names the file and says what to do
    data = bytearray((path / results.RUNS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / results.RUNS_FILE).write_bytes(bytes(data))
    with pytest.raises(results.ResultsError, match=r"runs\.parquet is corrupted.*recompute"):
        results.load(path)


def test_missing_results_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no results at .*sweep"):
        results.load(tmp_path / "nowhere")


def test_schema_validation_catches_bad_tables(experiment) -> None:
    runs = experiment.runs
    with pytest.raises(results.ResultsError, match="share their run keys"):
        results.validate_runs(pd.concat([runs, runs.iloc[:1]]))
    bad = runs.copy()
    bad.loc[0, "checkpoint"] = "middle"
    with pytest.raises(results.ResultsError, match=r"checkpoint.*middle"):
        results.validate_runs(bad)
    bad = runs.copy()
    bad.loc[0, "alignment"] = 1.5
    with pytest.raises(results.ResultsError, match=r"alignment outside \[0, 1\]"):
        results.validate_runs(bad)
    with pytest.raises(results.ResultsError, match="missing columns"):
        results.validate_runs(runs.drop(columns=["seed"]))


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("old")

    def failing(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        results.atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_checkpoint_round_trip_loads_without_pickle(tmp_path: Path) -> None:
    model = build_model("rnn", "modular", 2, 8, 16, "regression", num_runs=2, state_dim=4)
    config = {"setting": "rnn", "num_runs": 2}
    path = results.save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), config)
    state, loaded_config = results.load_checkpoint(path)
    assert loaded_config == config
    fresh = build_model(
        "rnn", "modular", 2, 8, 16, "regression", num_runs=2, seeds=[5, 6], state_dim=4
    )
    fresh.load_state_dict(state)
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(results.ResultsError, match=r"not a readable safetensors"):
        results.load_checkpoint(tmp_path / "bad.safetensors")


def test_seed_lists_parse() -> None:
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("0,3") == (0, 3)
    assert parse_seeds("7") == (7,)
    for bad in ("a", "4-1", "1,1", "-3"):
        with pytest.raises(Exception, match="seed"):
            parse_seeds(bad)


def test_train_cli_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--setting",
            "rnn",
            "--task",
            "classification",
            "--model",
            "modular_op",
            "--num-rules",
            "2",
            "--encoder-dim",
            "8",
            "--dim",
            "16",
            "--data-seeds",
            "0-1",
            "--seeds",
            "0",
            "--iterations",
            "4",
            "--batch-size",
            "8",
            "--eval-every",
            "2",
            "--eval-batches",
            "1",
            "--budget",
            "smoke",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    loaded = results.load(out)
    assert len(loaded.runs) == 4 and set(loaded.runs.model) == {"modular-op"}
    assert (out / "model_last.safetensors").exists() and (out / "model_best.safetensors").exists()
    assert "2 runs x 4 steps" in capsys.readouterr().out


def test_train_cli_names_bad_flags() -> None:
    cmd = [
        sys.executable,
        "-m",
        "mod_arch_core",
        "train",
        "--setting",
        "cnn",
        "--task",
        "regression",
        "--model",
        "modular",
        "--num-rules",
        "4",
        "--out",
        "x",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "--setting" in proc.stderr and "'cnn' is not one of mlp, mha, rnn" in proc.stderr
    cmd[cmd.index("cnn")] = "mlp"
    cmd[cmd.index("4")] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "num_rules must be >= 2, got 1" in proc.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "mod_arch_core", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    for flag in ("--data-seeds", "--iterations", "--encoder-dim", "--budget"):
        assert flag in help_text
