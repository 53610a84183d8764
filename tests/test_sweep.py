"""Profiles and sweeps: overrides, executors, kill-and-resume, corruption, collect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mod_arch_core import results
from mod_arch_core.folders import configuration_folders
from mod_arch_core.profiles import apply_overrides, available_profiles, load_profile, parse_override
from mod_arch_core.sweep import CONFIGS_DIR, collect, parse_shard, plan, run_sweep

ROOT = Path(__file__).resolve().parents[1]
#: A small slice of the smoke profile: two settings, two models, both tasks.
SMALL = ["settings=[mlp, rnn]", "models=[modular, gt-modular]", "num_rules=[2]"]
VOLATILE = ["wall_seconds", "hardware"]


def numbers(out: Path) -> pd.DataFrame:
    runs = results.load(out).runs.drop(columns=VOLATILE)
    return runs.sort_values([*results.RUN_KEYS, "checkpoint"]).reset_index(drop=True)


def test_shipped_profiles_load_and_describe_their_grid() -> None:
    assert {"smoke", "quick", "reference", "paper"} <= set(available_profiles())
    paper = load_profile("paper")
    assert paper.num_runs() == 20_000  # spec §1
    assert paper.total_steps() == 5000 * 100_000 + 10_000 * 500_000 + 5000 * 500_000  # spec §8
    smoke = load_profile("smoke")
    assert set(smoke.settings) == {"mlp", "mha", "rnn"} and len(smoke.models) == 4


def test_quick_profile_grid_is_what_the_readme_says() -> None:
    quick = load_profile("quick")
    assert quick.num_rules == (2, 4, 8, 16)
    assert quick.capacities == ((32, 128),)
    assert set(quick.models) == {"monolithic", "modular", "modular-op", "gt-modular"}
    assert set(quick.settings) == {"mlp", "mha", "rnn"} and set(quick.tasks) == {
        "regression",
        "classification",
    }
    readme = (ROOT / "README.md").read_text()
    assert f"{len(quick.configurations())} configurations" in readme
    assert f"{quick.num_runs()} runs" in readme


def test_overrides_parse_and_validate() -> None:
    assert parse_override("num_rules=[2, 4]") == ("num_rules", [2, 4])
    assert parse_override("iterations.mlp=2000") == ("iterations.mlp", 2000)
    profile = load_profile("smoke", ["num_rules=[3]", "iterations.mlp=7", "models=[GT_Modular]"])
    assert profile.num_rules == (3,) and profile.iterations["mlp"] == 7
    assert profile.models == ("gt-modular",)
    assert load_profile("smoke", {"seeds": [4]}).seeds == (4,)
    with pytest.raises(ValueError, match="malformed override 'num_rules'"):
        parse_override("num_rules")
    with pytest.raises(ValueError, match="unknown profile field 'num_rule'"):
        load_profile("smoke", ["num_rule=[2]"])
    with pytest.raises(ValueError, match="num_rules must be >= 2, got 1"):
        load_profile("smoke", ["num_rules=[1]"])
    with pytest.raises(ValueError, match="unknown models 'transformer'"):
        load_profile("smoke", ["models=[transformer]"])
    with pytest.raises(ValueError, match="unknown profile 'huge'; available: "):
        load_profile("huge")
    assert apply_overrides({"iterations": 5}, ["iterations.rnn=9"])["iterations"]["rnn"] == 9


def test_shards_partition_the_grid(tmp_path: Path) -> None:
    profile = load_profile("smoke")
    whole = [job.label for job in plan(profile, tmp_path)]
    parts = [job.label for i in range(3) for job in plan(profile, tmp_path, (i, 3))]
    assert sorted(parts) == sorted(whole) and len(set(whole)) == len(whole)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_unknown_executor_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="unknown executor 'ray'; allowed: serial, process, submitit"
    ):
        run_sweep("smoke", tmp_path, executor="ray", overrides=SMALL)


@pytest.mark.slow
def test_executors_give_identical_rows(tmp_path: Path) -> None:
    grid = [*SMALL, "tasks=[regression]"]  # one task: four configurations per executor
    serial = tmp_path / "serial"
    run_sweep("smoke", serial, executor="serial", overrides=grid, progress=False)
    collect(serial)
    reference = numbers(serial)
    assert len(reference) == 2 * 2 * 2 * 2  # settings x models x seeds x checkpoints
    for name, kwargs in (
        ("process", {"executor": "process", "workers": 2}),
        ("submitit", {"executor": "submitit", "submitit_cluster": "debug"}),
        ("submitit-local", {"executor": "submitit", "submitit_cluster": "local"}),
    ):
        out = tmp_path / name
        summary = run_sweep("smoke", out, overrides=grid, progress=False, **kwargs)
        assert summary.failures == 0, summary.table.error.tolist()
        collect(out)
        pd.testing.assert_frame_equal(
            numbers(out), reference, check_exact=False, rtol=1e-6, atol=1e-7
        )


@pytest.mark.slow
def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "mod_arch_core",
        "sweep",
        "--profile",
        "smoke",
        "--out",
        str(out),
        "--executor",
        "serial",
        "--no-collect",
        *[arg for o in SMALL[:2] for arg in ("--set", o)],
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(configuration_folders(out)) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {f.name for f in configuration_folders(out)}
    assert 3 <= len(finished_before) < 16, "the kill should land mid-sweep"
    profile = load_profile("smoke", SMALL[:2])
    with pytest.raises(results.ResultsError, match="missing"):
        collect(out, profile=profile)
    summary = run_sweep(profile, out, executor="serial", progress=False)
    skipped = set(summary.table.loc[summary.table.status == "skipped", "configuration"])
    assert skipped == finished_before  # finished work is kept, not redone
    merged = collect(out, profile=profile)
    assert len(merged.runs) == profile.num_runs() * 2  # every run, both checkpoints, once
    assert not merged.runs.duplicated([*results.RUN_KEYS, "checkpoint"]).any()


@pytest.mark.slow
def test_corrupted_configuration_is_reported_with_its_path(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    run_sweep(
        "smoke",
        out,
        executor="serial",
        overrides=["settings=[mlp]", "models=[modular]", "num_rules=[2]"],
        progress=False,
    )
    folder = next((out / CONFIGS_DIR).iterdir())
    runs_file = folder / results.RUNS_FILE
    runs_file.write_bytes(runs_file.read_bytes()[:-20])  # truncated
    with pytest.raises(
        results.ResultsError, match=rf"(?s){folder.name}.*corrupted.*re-run the same sweep"
    ):
        collect(out)


@pytest.mark.slow
def test_sweep_cli_runs_and_collects(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "mod_arch_core",
        "sweep",
        "--profile",
        "smoke",
        "--out",
        str(out),
        "--executor",
        "serial",
        "--set",
        "settings=[mha]",
        "--set",
        "models=[modular-op]",
        "--set",
        "num_rules=[2]",
        "--set",
        "tasks=[regression]",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "collected 8 rows" in proc.stdout  # 2 search versions x 2 seeds x 2 checkpoints
    dry = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert dry.stdout.count("done     ") == 2
    bad = subprocess.run(
        [sys.executable, "-m", "mod_arch_core", "sweep", "--profile", "nope", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown profile 'nope'" in bad.stderr
