"""The cluster path on a real one-node Slurm: job arrays, a cancelled task, a requeue, a lost slurmd.

The cluster (``tests/slurm_cluster.py``) is started once for the module from Debian's ``slurm-wlm``
and ``munge``, which ``.ci/run`` installs; without them the cluster tests (marked ``slurm`` and
``slow``) are skipped, saying how to install them (in CI, where they must be there, they fail
instead). Every sweep runs the same shard of the smoke profile, and every sweep's collected rows
are compared with that shard run by the process executor: bitwise on one machine, statistically
where the hardware differs. Each fault case ends with a resumed sweep and :func:`check_complete`:
no configuration lost, none duplicated, no half-written folder left. The last tests check the
pieces (the ``squeue`` watcher, the task environment, requeue skipping) without a cluster.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd
import pytest
from slurm_cluster import SlurmCluster, unavailable_reason

from mod_arch_core import reproduce, results, slurm
from mod_arch_core.profiles import Profile, load_profile
from mod_arch_core.sweep import (
    CONFIGS_DIR,
    SweepSummary,
    collect,
    plan,
    run_jobs,
    run_sweep,
    task_rows,
)

ROOT = Path(__file__).resolve().parents[1]
#: 8 configurations of the smoke profile; shard 0/2 (4 of them) is what every sweep here runs.
#: 200 MLP steps make one configuration last a few seconds, so faults land mid-task.
GRID = ["settings=[mlp]", "models=[modular, gt-modular]", "num_rules=[2, 4]", "iterations.mlp=200"]
SHARD = (0, 2)
#: Two array tasks of two configurations each (both run at once on a 2-core node).
TASKS = 2
#: One CPU per array task: also its torch thread count, the same as the process executor's.
PARAMETERS = {"cpus_per_task": 1, "timeout_min": 30}
REASON = unavailable_reason()


def on_cluster(test: Callable) -> Callable:
    """Mark a test that needs the cluster: ``slurm`` and ``slow``; skipped without the packages."""
    skip = pytest.mark.skipif(REASON is not None and not os.environ.get("CI"), reason=str(REASON))
    for mark in (pytest.mark.slurm, pytest.mark.slow, skip, pytest.mark.timeout(240)):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A one-node cluster for the module; ``SLURM_CONF`` points submitit at it."""
    if REASON is not None:
        pytest.fail(f"CI must provide Slurm (see .ci/run): {REASON}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    start = time.perf_counter()
    try:
        cluster.start()
        print(f"\ncluster started in {time.perf_counter() - start:.1f} s")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(cluster.conf))
            yield cluster
    finally:
        start = time.perf_counter()
        cluster.stop()
        print(f"\ncluster stopped in {time.perf_counter() - start:.1f} s")
    assert all(p.poll() is not None for p in cluster.processes.values())


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile("smoke", GRID)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, profile: Profile) -> pd.DataFrame:
    """The shard's rows computed by the process executor (the reference for every comparison)."""
    out = tmp_path_factory.mktemp("process")
    summary = run_sweep(profile, out, executor="process", workers=2, shard=SHARD, progress=False)
    assert summary.failures == 0, summary.table.error.tolist()
    return collect(out).runs


# Checks ----------------------------------------------------------------------------------------


def same_rows(rows: pd.DataFrame, reference: pd.DataFrame) -> str:
    """Assert two sweeps' rows agree (:func:`mod_arch_core.reproduce.compare`); returns the mode.

    Bitwise where both come from one hardware fingerprint (CPU model, vector ISA, thread count) and
    torch version, as on this one-node cluster; within seed noise where they do not (other nodes).
    """
    comparison = reproduce.compare(rows, reference)
    assert comparison.ok, str(comparison)
    return comparison.mode


def check_complete(out: Path, profile: Profile, reference: pd.DataFrame) -> str:
    """Collect ``out``; count lost, duplicated and half-written configurations (all must be 0).

    Then compare the rows with ``reference`` (:func:`same_rows`); returns how they were compared.
    Hidden ``.*.tmp`` entries of a writer killed mid-write are counted but allowed: ``collect``
    never reads them, and a resume removes them once they are stale
    (:data:`mod_arch_core.folders.STALE_SECONDS`).
    """
    expected = {job.folder.name for job in plan(profile, out, SHARD)}
    visible = [p for p in (out / CONFIGS_DIR).iterdir() if not p.name.startswith(".")]
    complete = {p.name for p in visible if (p / results.META_FILE).exists()}
    runs = collect(out).runs
    keys = [*results.RUN_KEYS, "checkpoint"]
    counts = {
        "lost": len(expected - complete),
        "duplicated": int(runs.duplicated(keys).sum()) + len(complete - expected),
        "half_written": len(visible) - len(complete),
    }
    leftover = len(list(out.rglob(".*.tmp")))
    assert counts == {"lost": 0, "duplicated": 0, "half_written": 0}, counts
    assert len(runs) == len(reference)
    comparison = same_rows(runs, reference)
    print(f"\n{out.name}: {counts}, hidden temporary entries {leftover}, rows equal the "
          f"process executor's ({comparison})")  # fmt: skip
    return comparison


# Driving a sweep while faults are injected ------------------------------------------------------


class BackgroundSweep(threading.Thread):
    """``run_sweep`` on the cluster in a thread, so that the test can act while it runs."""

    def __init__(self, profile: Profile, out: Path) -> None:
        super().__init__(daemon=True)
        self.profile, self.out = profile, out
        self.summary: SweepSummary | None = None
        self.error: BaseException | None = None
        self.groups = [plan(profile, out, SHARD)[i::TASKS] for i in range(TASKS)]

    def run(self) -> None:
        try:
            self.summary = sweep(self.profile, self.out)
        except BaseException as error:
            self.error = error

    def finish(self, timeout: float = 150) -> SweepSummary:
        """Wait for the sweep; its summary (raises what the sweep raised)."""
        self.join(timeout)
        assert not self.is_alive(), f"the sweep did not return within {timeout} s"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary

    def done(self, task: int) -> list[bool]:
        """For each configuration of array task ``task``: is its folder complete?"""
        return [(job.folder / results.META_FILE).exists() for job in self.groups[task]]


def sweep(profile: Profile, out: Path) -> SweepSummary:
    """The shard as ``TASKS`` array tasks on the cluster."""
    return run_sweep(
        profile,
        out,
        executor="submitit",
        submitit_cluster="slurm",
        submitit_parameters=PARAMETERS,
        shard=SHARD,
        max_array=TASKS,
        progress=False,
    )


def task_states(cluster: SlurmCluster) -> dict[str, str]:
    """``{"<job>_<task>": state}`` for every array task slurmctld holds."""
    listing = cluster.run(["squeue", "-h", "-r", "--states=all", "-o", "%i %T"]).stdout
    return dict(line.split() for line in listing.splitlines() if "_" in line)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.1)


def newest_array(cluster: SlurmCluster) -> int:
    """The id of the newest array job slurmctld holds (0 if none)."""
    return max((int(task.split("_")[0]) for task in task_states(cluster)), default=0)


def running_task(cluster: SlurmCluster, index: int, after: int) -> str:
    """Wait until task ``index`` of an array newer than job ``after`` runs; ``<job>_<index>``."""
    found: list[str] = []

    def running() -> bool:
        states = task_states(cluster)
        newest = newest_array(cluster)
        found[:] = [f"{newest}_{index}"]
        return newest > after and states.get(found[0]) == "RUNNING"

    wait_for(running, f"array task {index} to run")
    return found[0]


# Tests -----------------------------------------------------------------------------------------


@on_cluster
def test_array_sweep_matches_the_process_executor(
    cluster: SlurmCluster, profile: Profile, baseline: pd.DataFrame, tmp_path: Path
) -> None:
    """The README's command, through the CLI: one array task per configuration, no sacct noise."""
    out = tmp_path / "array"
    cmd = [sys.executable, "-m", "mod_arch_core", "sweep", "--profile", "smoke", "--out", str(out),
           "--executor", "submitit", "--cluster", "slurm", "--shard", "0/2",
           "--slurm", "cpus_per_task=1", *[a for o in GRID for a in ("--set", o)]]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=cluster.env, capture_output=True, text=True)
    print(f"\narray sweep (CLI, 4 tasks) in {time.perf_counter() - start:.1f} s")
    assert proc.returncode == 0, proc.stderr
    assert "Bypassing sacct error" not in proc.stderr  # squeue answers where sacct cannot
    # a task's result file appears just before its process exits: Slurm says COMPLETED soon after
    wait_for(lambda: set(task_states(cluster).values()) == {"COMPLETED"}, "4 completed tasks", 30)
    assert len(task_states(cluster)) == 4
    check_complete(out, profile, baseline)
    metas = [json.loads(p.read_text()) for p in out.glob(f"{CONFIGS_DIR}/*/{results.META_FILE}")]
    assert sorted(m["slurm"]["array_task_id"] for m in metas) == ["0", "1", "2", "3"]


@on_cluster
def test_cancelled_array_task_is_reported_and_resumed(
    cluster: SlurmCluster, profile: Profile, baseline: pd.DataFrame, tmp_path: Path
) -> None:
    """``scancel`` one array task mid-run: the sweep returns, naming what is missing; a re-run adds it."""
    out = tmp_path / "cancel"
    background = BackgroundSweep(profile, out)
    before, start = newest_array(cluster), time.perf_counter()
    background.start()
    task = running_task(cluster, 0, after=before)
    assert background.done(0) == [False, False]
    cluster.run(["scancel", task])
    first = background.finish()
    print(f"\nscancel case: first sweep returned after {time.perf_counter() - start:.1f} s")
    failed = set(first.table.loc[first.table.status == "failed", "configuration"])
    cancelled = {job.label for job in background.groups[0]}
    assert failed and failed <= cancelled, first.table
    assert "CANCELLED" in " ".join(first.table.error)
    start = time.perf_counter()
    resumed = sweep(profile, out)
    print(f"scancel case: resume in {time.perf_counter() - start:.1f} s")
    assert set(resumed.table.loc[resumed.table.status == "done", "configuration"]) == failed
    check_complete(out, profile, baseline)


@on_cluster
def test_requeued_array_task_runs_twice_and_redoes_nothing(
    cluster: SlurmCluster, profile: Profile, baseline: pd.DataFrame, tmp_path: Path
) -> None:
    """``scontrol requeue`` a task between its two configurations: the rerun redoes neither.

    Slurm signals the first attempt with SIGTERM, which submitit ignores, and kills it ``KillWait``
    seconds later, so the configuration in flight is either finished by the first attempt or left
    to the second; the first configuration is never written again. The sweep returns on whichever
    attempt writes the task's result first.
    """
    out = tmp_path / "requeue"
    background = BackgroundSweep(profile, out)
    before, start = newest_array(cluster), time.perf_counter()
    background.start()
    task = running_task(cluster, 0, after=before)
    wait_for(lambda: background.done(0)[0], "the first configuration of task 0")
    assert background.done(0) == [True, False], "the requeue should land mid-task"
    cluster.run(["scontrol", "requeue", task])
    summary = background.finish()
    assert summary.failures == 0, summary.table.error.tolist()
    wait_for(lambda: task_states(cluster)[task] == "COMPLETED", f"{task}'s rerun to end", 120)
    print(f"\nrequeue case: sweep and the rerun in {time.perf_counter() - start:.1f} s")
    assert "Restarts=1" in cluster.run(["scontrol", "show", "job", task]).stdout  # it ran twice
    attempt = {
        job.folder.name: json.loads((job.folder / results.META_FILE).read_text())["slurm"]
        for job in background.groups[0]
    }
    first, second = attempt.values()
    assert first["restart_count"] == "0"  # written once, by the first attempt; the rerun skipped it
    print(
        f"requeue case: the in-flight configuration was written by attempt {second['restart_count']}"
    )
    resumed = sweep(profile, out)
    assert set(resumed.table.status) == {"skipped"}
    check_complete(out, profile, baseline)


@on_cluster
def test_killed_slurmd_then_resume(
    cluster: SlurmCluster, profile: Profile, baseline: pd.DataFrame, tmp_path: Path
) -> None:
    """SIGKILL ``slurmd`` while tasks run, restart it: the tasks finish; a resume has nothing to add."""
    out = tmp_path / "slurmd"
    background = BackgroundSweep(profile, out)
    before, start = newest_array(cluster), time.perf_counter()
    background.start()
    running_task(cluster, 0, after=before)
    assert background.done(0) == [False, False]
    cluster.kill_slurmd()
    time.sleep(2)
    cluster.start_slurmd()
    cluster.wait_node_idle()
    first = background.finish()
    print(f"\nslurmd case: sweep in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    resumed = sweep(profile, out)
    print(f"slurmd case: resume in {time.perf_counter() - start:.1f} s")
    lost_in_first = set(first.table.loc[first.table.status == "failed", "configuration"])
    assert set(resumed.table.loc[resumed.table.status == "done", "configuration"]) == lost_in_first
    check_complete(out, profile, baseline)


# Without a cluster: the pieces, on fakes --------------------------------------------------------


def test_queue_watcher_reads_states_from_squeue(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = "7_0|RUNNING|vm\n7_1|CANCELLED|vm\n7_[3-4]|PENDING|\n"
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=listing, stderr="")

    monkeypatch.setattr(slurm.subprocess, "run", fake_run)
    watcher = slurm.QueueWatcher(delay_s=60)
    for task in ("7_0", "7_1", "7_2", "7_3", "7_4"):
        watcher.register_job(task)
    watcher.update()
    assert calls[0][0] == "squeue" and "--jobs=7" in calls[0]
    states = {t: watcher.get_state(t, mode="cache") for t in ("7_0", "7_1", "7_2", "7_3", "7_4")}
    assert states == {"7_0": "RUNNING", "7_1": "CANCELLED", "7_2": slurm.GONE,
                      "7_3": "PENDING", "7_4": "PENDING"}  # fmt: skip
    # a task squeue no longer lists has ended: submitit then reads its result or reports it
    assert [watcher.is_done(t, mode="cache") for t in states] == [False, True, True, False, False]


def test_accounting_is_read_from_the_cluster_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def config(value: str):
        text = f"AccountingStorageHost   = localhost\nAccountingStorageType   = {value}\n"
        return lambda command, **kwargs: subprocess.CompletedProcess(command, 0, text, "")

    monkeypatch.setattr(slurm.subprocess, "run", config("accounting_storage/none"))
    assert not slurm.accounting_enabled()
    monkeypatch.setattr(slurm.subprocess, "run", config("accounting_storage/slurmdbd"))
    assert slurm.accounting_enabled()
    # futures of other executors are left alone (no scontrol call at all)
    assert not slurm.watch_without_accounting([concurrent.futures.Future()])


def test_array_task_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SLURM_CPUS_PER_TASK",
        "SLURM_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_RESTART_COUNT",
    ):
        monkeypatch.delenv(name, raising=False)
    assert slurm.cpus_per_task() is None and slurm.task_attempt() == {}
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm.cpus_per_task() == 4
    assert slurm.task_attempt() == {"job_id": "12", "array_task_id": "3", "restart_count": "0"}
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert slurm.task_attempt()["restart_count"] == "1"


def test_a_task_run_twice_skips_what_it_finished(tmp_path: Path) -> None:
    """What a requeued array task does (``run_jobs``), and what the sweep reports for a lost one."""
    profile = load_profile("smoke", ["settings=[mlp]", "models=[modular]", "num_rules=[2]"])
    first, second = plan(profile, tmp_path)
    assert run_jobs([first])[0]["status"] == "done"
    assert [row["status"] for row in run_jobs([first])] == ["skipped"]  # not recomputed
    lost: concurrent.futures.Future = concurrent.futures.Future()
    lost.set_exception(RuntimeError("Job 7_0 has not produced any output (state: CANCELLED)"))
    rows = task_rows(lost, [first, second])
    assert [row["status"] for row in rows] == ["done", "failed"]
    assert "CANCELLED" in rows[1]["error"] and "worker died" not in rows[1]["error"]
    broken: concurrent.futures.Future = concurrent.futures.Future()
    broken.set_exception(BrokenProcessPool("terminated abruptly"))
    (row,) = task_rows(broken, [second])
    assert row["error"].startswith("BrokenProcessPool: terminated abruptly (a process worker died")
    assert 'if __name__ == "__main__":' in row["error"]
