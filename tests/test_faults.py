"""Nothing is lost under faults: a diverged run, an existing output folder, a killed sweep.

Each test here reproduces a fault found by probing the command line and the sweep (issue 11):
before the fix it lost results or left processes behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from mod_arch_core import experiment, results, sweep
from mod_arch_core.__main__ import main
from mod_arch_core.evaluation import evaluate_result, named_budget
from mod_arch_core.folders import configuration_folders
from mod_arch_core.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

TINY_FLAGS = [
    "--encoder-dim", "8", "--dim", "32", "--iterations", "20", "--eval-every", "10",
    "--batch-size", "16", "--budget", "smoke", "--no-checkpoints",
]  # fmt: skip


def tiny(setting: str = "mlp", **kw) -> TrainConfig:
    defaults = dict(
        setting=setting, task="regression", model="modular", num_rules=2, encoder_dim=8,
        dim=32, iterations=10, batch_size=16, eval_every=5, eval_batches=1, state_dim=4,
        device="cpu", data_seeds=(0, 1, 2), seeds=(0,),
    )  # fmt: skip
    defaults.update(kw)
    return TrainConfig(**defaults)


# A diverged run ------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["mlp", "rnn"])
def test_a_diverged_run_keeps_its_row_and_spoils_no_other(setting: str) -> None:
    """Run 1's weights blow up (NaN) at step 7: its `last` row is NaN, runs 0 and 2 are intact."""
    budget = named_budget("smoke")
    result = train(tiny(setting))
    clean = pd.DataFrame(evaluate_result(result, budget))
    with torch.no_grad():
        next(result.model.parameters())[1].fill_(float("nan"))
    result = dataclasses.replace(result, diverged_at=np.array([-1, 7, -1]))
    rows = pd.DataFrame(evaluate_result(result, budget))
    assert len(rows) == 6  # every run, both checkpoints
    healthy = rows["seed"].eq(0) & rows["data_seed"].isin([0, 2])
    numeric = [c for c in rows.columns if rows[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(rows[healthy][numeric], clean[healthy][numeric])
    sick_last = rows[(rows["data_seed"] == 1) & (rows["checkpoint"] == "last")].iloc[0]
    assert sick_last["diverged_at"] == 7 and sick_last["activation_matrix"] is None
    assert np.isnan(
        sick_last[["perf", "perf_ood", "collapse_avg", "adaptation"]].astype(float)
    ).all()
    sick_best = rows[(rows["data_seed"] == 1) & (rows["checkpoint"] == "best")].iloc[0]
    assert np.isfinite(sick_best[["perf", "collapse_avg", "adaptation"]].astype(float)).all()


def test_train_with_an_absurd_learning_rate_writes_every_row(tmp_path, capsys) -> None:
    out = tmp_path / "diverged"
    code = main(
        ["train", "--setting", "mlp", "--task", "regression", "--model", "modular",
         "--num-rules", "2", "--seeds", "0-1", "--lr", "1e10", "--out", str(out), *TINY_FLAGS]
    )  # fmt: skip
    assert code == 0
    runs = results.load(out).runs
    assert len(runs) == 4 and (runs["diverged_at"] >= 0).all()
    assert runs[runs["checkpoint"] == "last"]["perf"].isna().all()
    assert "diverged" in capsys.readouterr().out


# Output folders: checked before any work, never silently replaced ------------------------------


def _train_args(out: str, *extra: str) -> list[str]:
    return ["train", "--setting", "mlp", "--task", "regression", "--model", "monolithic",
            "--num-rules", "2", "--out", out, *TINY_FLAGS, *extra]  # fmt: skip


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any training starts (the check must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started although the output path is unusable")

    monkeypatch.setattr(experiment, "run_experiment", refuse)
    monkeypatch.setattr(sweep, "run_experiment", refuse)


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("make", "out", "match"),
    [
        (None, "", "must name a folder"),
        ("file", "f", "is an existing file"),
        ("file", "f/sub/dir", "lies under .* which is a file"),
        ("results", "r", "is a results folder .*--overwrite"),
        ("other", "o", "is a folder that is not empty"),
    ],
)
def test_train_refuses_an_unusable_out_before_training(tmp_path, capsys, make, out, match) -> None:
    target = tmp_path / out.split("/")[0] if out else None
    if make == "file":
        target.write_text("not a folder")
    elif make == "results":
        _fake_results(target)
    elif make == "other":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    arg = str(tmp_path / out) if out else ""
    with pytest.raises(SystemExit) as exit_info:
        main(_train_args(arg))
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    if make == "results":  # untouched
        assert (target / "meta.json").read_text() == '{"rows": "as before"}'


def _fake_results(folder) -> None:
    folder.mkdir(parents=True)
    for name in ("runs.parquet", "curves.parquet"):
        (folder / name).write_bytes(b"shipped")
    (folder / "meta.json").write_text('{"rows": "as before"}')


def test_train_overwrite_swaps_in_the_new_results(tmp_path) -> None:
    out = tmp_path / "r"
    assert main(_train_args(str(out))) == 0
    first = results.load(out).runs
    (out / "stale.txt").write_text("from before")
    assert main(_train_args(str(out), "--overwrite", "--seeds", "0-2")) == 0
    second = results.load(out).runs
    assert len(first) == 2 and len(second) == 6
    assert not (out / "stale.txt").exists()  # the old folder was replaced, not merged into
    assert not list(tmp_path.glob(".*.tmp"))  # nothing left beside it


def test_a_failed_write_leaves_the_old_folder_and_no_partial_one(tmp_path) -> None:
    from mod_arch_core.folders import write_folder

    out = tmp_path / "r"
    _fake_results(out)

    def crash(tmp):
        (tmp / "runs.parquet").write_bytes(b"half")
        raise KeyboardInterrupt  # e.g. Ctrl-C while writing

    with pytest.raises(KeyboardInterrupt):
        write_folder(out, crash, overwrite=True)
    assert (out / "meta.json").read_text() == '{"rows": "as before"}'
    with pytest.raises(KeyboardInterrupt):
        write_folder(tmp_path / "new", crash)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


SWEEP = ["--profile", "smoke", "--set", "settings=[mlp]", "--set", "models=[monolithic]",
         "--set", "num_rules=[2]", "--set", "tasks=[regression]", "--executor", "serial"]  # fmt: skip


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("make", "match"),
    [
        ("results", "collected results but no configs/"),
        ("other", "holds files a sweep does not write"),
        ("profile", "holds results of profile 'quick'"),
    ],
)
def test_sweep_refuses_a_folder_of_other_results(tmp_path, capsys, make, match) -> None:
    out = tmp_path / "o"
    if make == "results":
        _fake_results(out)  # e.g. a copy of results/reference
    elif make == "other":
        out.mkdir()
        (out / "thesis.tex").write_text("mine")
    else:
        folder = out / "configs" / "mlp-x"
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text('{"profile": "quick", "config_hash": "other"}')
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--out", str(out), *SWEEP])
    assert exit_info.value.code == 2 and match in capsys.readouterr().err
    assert any(out.iterdir())  # untouched


def test_sweep_overwrite_empties_a_foreign_folder_then_runs(tmp_path) -> None:
    out = tmp_path / "o"
    _fake_results(out)
    assert main(["sweep", "--out", str(out), "--overwrite", *SWEEP]) == 0
    assert len(results.load(out).runs) == 4  # one configuration x 2 seeds x 2 checkpoints


# Locks and stale temporary files ----------------------------------------------------------------


def test_a_second_sweep_of_the_same_shard_stops_at_once(tmp_path) -> None:
    from mod_arch_core.folders import FolderError, sweep_lock
    from mod_arch_core.sweep import run_sweep

    out = tmp_path / "s"
    grid = SWEEP[3:10:2]
    with sweep_lock(out, (0, 1)):
        with pytest.raises(FolderError, match=r"another sweep is running shard 0/1 .*pid \d+"):
            run_sweep("smoke", out, executor="serial", overrides=grid, progress=False)
        # another shard of the same sweep may run beside it
        summary = run_sweep("smoke", out, executor="serial", overrides=grid, shard="1/2")
        assert summary.failures == 0
    summary = run_sweep("smoke", out, executor="serial", overrides=grid, progress=False)
    assert summary.failures == 0  # the lock went with its holder


def test_resume_removes_stale_temporary_files_only(tmp_path) -> None:
    from mod_arch_core.folders import STALE_SECONDS, clean_partial

    out = tmp_path / "s"
    configs = out / "configs"
    (configs / ".mlp-x.new-1-2.tmp").mkdir(parents=True)  # a killed worker's folder
    (configs / ".mlp-x.new-1-2.tmp" / "runs.parquet").write_bytes(b"half")
    stale_file = configs / ".runs.parquet.abc.tmp"
    stale_file.write_bytes(b"half")
    live = configs / ".curves.parquet.def.tmp"  # a live writer's, seconds old
    live.write_bytes(b"being written")
    old = time.time() - 2 * STALE_SECONDS
    for path in (configs / ".mlp-x.new-1-2.tmp", stale_file):
        os.utime(path, (old, old))
    removed = clean_partial(out)
    assert sorted(p.name for p in removed) == [".mlp-x.new-1-2.tmp", ".runs.parquet.abc.tmp"]
    assert live.exists()


# kill -9 of a sweep ends its workers ------------------------------------------------------------


#: Four configurations of the smoke profile: two settings, two models, one task.
KILL_GRID = ["settings=[mlp, rnn]", "models=[modular, gt-modular]", "num_rules=[2]",
             "tasks=[regression]"]  # fmt: skip


def _sweep_process(out) -> subprocess.Popen:
    grid = [arg for o in KILL_GRID for arg in ("--set", o)]
    cmd = [sys.executable, "-m", "mod_arch_core", "sweep", "--profile", "smoke", "--out",
           str(out), "--executor", "process", "--workers", "2", "--no-collect", *grid]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _workers(pid: int) -> list[psutil.Process]:
    """The sweep's live worker processes: its descendants, less multiprocessing's resource
    tracker and any child that has already exited (a zombie has no command line to read)."""
    workers = []
    for child in _children(pid):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.Error:  # exited (zombie or gone) between listing and reading
            continue
    return workers


def _finished(out) -> set[str]:
    return {folder.name for folder in configuration_folders(out)}


@pytest.mark.slow
@pytest.mark.parametrize("when", ["workers-started", "mid-sweep"])
def test_kill_9_of_a_sweep_ends_its_workers_and_resume_loses_nothing(tmp_path, when) -> None:
    from mod_arch_core.profiles import load_profile
    from mod_arch_core.sweep import collect, run_sweep

    out = tmp_path / "sweep"
    proc = _sweep_process(out)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            workers = _workers(proc.pid)
            if len(workers) >= 2 and (when == "workers-started" or _finished(out)):
                break
            time.sleep(0.1)
        assert len(workers) >= 2, "the sweep never started its workers"
        orphans = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, as `kill -9 PID` does
        proc.wait()
        _, alive = psutil.wait_procs(orphans, timeout=60)
        assert not alive, f"processes outlived the sweep: {[p.pid for p in alive]}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    # Every visible configuration folder is complete; a half-written one is hidden and temporary.
    for folder in (out / "configs").iterdir() if (out / "configs").exists() else []:
        assert folder.name.startswith(".") or (folder / "meta.json").exists(), folder
    before = _finished(out)
    # A folder killed between its meta.json and its move into place is hidden: never collected.
    hidden = [f for f in (out / "configs").glob(".*.tmp")] if (out / "configs").exists() else []
    assert not {f.name for f in hidden} & before
    profile = load_profile("smoke", KILL_GRID)
    summary = run_sweep(profile, out, executor="serial", progress=False)
    assert set(summary.table.loc[summary.table.status == "skipped", "configuration"]) == before
    merged = collect(out, profile=profile)
    assert len(merged.runs) == profile.num_runs() * 2
    assert not merged.runs.duplicated([*results.RUN_KEYS, "checkpoint"]).any()


def test_a_folder_still_being_written_is_never_collected(tmp_path) -> None:
    """A writer killed after its meta.json but before the move leaves a hidden, complete-looking
    folder; collect and resume must ignore it, or its rows would be counted twice."""
    from mod_arch_core.sweep import collect, run_sweep

    out = tmp_path / "s"
    grid = SWEEP[3:10:2]
    run_sweep("smoke", out, executor="serial", overrides=grid, progress=False)
    (done,) = configuration_folders(out)
    shutil.copytree(done, done.parent / f".{done.name}.new-1-2.tmp")
    assert configuration_folders(out) == [done]
    assert len(collect(out).runs) == 4
