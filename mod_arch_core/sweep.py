"""Resumable sweeps over a profile's grid: shards, pluggable executors, collect.

The unit of work is one configuration trained with all its seeds stacked
(:func:`mod_arch_core.experiment.run_experiment`). Each configuration writes its own results folder
``OUT/configs/<name>-<hash>/`` atomically (tables first, ``meta.json`` last), so:

* a configuration whose folder has a valid ``meta.json`` with the same hash is skipped: re-running a
  sweep after a crash, ``SIGINT`` or ``SIGKILL`` finishes only what is missing;
* a half-written configuration leaves only hidden temporary files (each folder is written beside
  its place and moved in, :func:`mod_arch_core.folders.write_folder`), which :func:`collect`
  ignores and the next run of the sweep removes;
* the output folder is checked before any work (:func:`mod_arch_core.folders.check_sweep_out`): a
  sweep resumes only a folder of the same profile and never replaces other results unless asked
  (``overwrite``); a second sweep of the same shard on the same folder stops at once
  (:func:`mod_arch_core.folders.sweep_lock`);
* worker processes end with the sweep: if its main process is killed (even ``kill -9``), each
  worker exits instead of computing on beside a resumed sweep (:func:`_end_with_parent`).

Shards are deterministic: shard ``i/n`` takes configurations ``i, i+n, i+2n, ...`` of the profile's
fixed order, so independent machines (or Slurm array tasks) split a sweep without talking.

Executors. Anything with a ``concurrent.futures``-style ``submit(fn, *args) -> future`` works (the
future needs ``result()``): pass it as ``executor=`` to :func:`run_sweep`. Built in:

* ``serial``: in this process, in order (debugging);
* ``process``: a local ``ProcessPoolExecutor`` (default), ``workers`` processes with
  ``cores // workers`` torch threads each so they do not oversubscribe the CPU;
* ``submitit``: Slurm job arrays through ``submitit.AutoExecutor`` (one array task per chunk of
  configurations, at most ``max_array`` tasks); ``submitit_cluster="local"`` or ``"debug"`` runs the
  same path without a cluster. An array task skips configurations already complete, so one that
  Slurm runs twice (requeue, preemption) redoes nothing; a task that ends without a result
  (``scancel``, a lost node) lists its configurations as failed; on clusters without accounting
  the job states come from ``squeue`` (:mod:`mod_arch_core.slurm`). A Dask
  ``distributed.Client`` plugs in the same way as any executor.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from mod_arch_core import folders, results
from mod_arch_core.evaluation import EvalBudget
from mod_arch_core.experiment import experiment_hash, run_experiment
from mod_arch_core.folders import configuration_folders
from mod_arch_core.profiles import Profile, load_profile
from mod_arch_core.provenance import provenance
from mod_arch_core.training import TrainConfig

CONFIGS_DIR = folders.CONFIGS_DIR
EXECUTORS = ("serial", "process", "submitit")


@dataclass(frozen=True)
class Job:
    """One configuration of a sweep and where its results go."""

    config: TrainConfig
    budget: EvalBudget
    profile: str
    folder: Path
    config_hash: str

    @property
    def label(self) -> str:
        return self.folder.name


def config_folder_name(config: TrainConfig, chash: str) -> str:
    """Readable, unique folder name: ``mlp-regression-modular-R8-E32-D128-<hash>``."""
    version = f"-v{config.search_version}" if config.setting == "mha" else ""
    return (
        f"{config.setting}-{config.task}-{config.model}-R{config.num_rules}"
        f"-E{config.encoder_dim}-D{config.dim}{version}-{chash}"
    )


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse ``"i/n"`` (0 <= i < n) into ``(i, n)``; ``None`` means the whole sweep ``(0, 1)``."""
    if text is None:
        return (0, 1)
    try:
        index, count = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(
            f"shard must look like i/n with integers, e.g. 0/4; got {text!r}"
        ) from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r} needs 0 <= i < n and n >= 1")
    return index, count


def plan(
    profile: Profile, out: str | Path, shard: tuple[int, int] = (0, 1), device: str = "auto"
) -> list[Job]:
    """Every job of ``shard`` in the profile's fixed order (done or not)."""
    out = Path(out)
    budget = profile.eval_budget()
    index, count = shard
    jobs = []
    for position, config in enumerate(profile.configurations(device=device)):
        if position % count != index:
            continue
        chash = experiment_hash(config, budget)
        folder = out / CONFIGS_DIR / config_folder_name(config, chash)
        jobs.append(Job(config, budget, profile.name, folder, chash))
    return jobs


def is_done(job: Job) -> bool:
    """True if the job's folder holds complete, verified results of the same configuration hash."""
    meta = job.folder / results.META_FILE
    if not meta.exists():
        return False
    try:
        loaded = results.load(job.folder)
    except (results.ResultsError, FileNotFoundError):
        return False
    return loaded.meta.get("config_hash") == job.config_hash


def run_job(job: Job, threads: int | None = None, checkpoints: bool = False) -> dict[str, Any]:
    """Run one configuration and write its folder; returns a summary row (never raises)."""
    import torch

    from mod_arch_core import slurm
    from mod_arch_core.experiment import save_experiment

    threads = threads or slurm.cpus_per_task()
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        output = run_experiment(job.config, job.budget, profile=job.profile, progress=False)
        meta = {
            "config_hash": job.config_hash,
            "profile": job.profile,
            "budget": job.budget.to_dict(),
        }
        if slurm.task_attempt():
            meta["slurm"] = slurm.task_attempt()  # which array task and attempt wrote it
        folders.write_folder(
            job.folder,
            lambda tmp: save_experiment(output, tmp, checkpoints=checkpoints, meta=meta),
            overwrite=True,  # only unfinished folders are run: what is there is incomplete
        )
        status, error = "done", ""
    except Exception:  # a failed configuration must not stop the sweep
        status, error = "failed", traceback.format_exc(limit=4)
    return {
        "configuration": job.label,
        "setting": job.config.setting,
        "runs": job.config.num_runs,
        "status": status,
        "seconds": time.perf_counter() - start,
        "error": error,
    }


def run_jobs(
    jobs: Sequence[Job], threads: int | None = None, checkpoints: bool = False
) -> list[dict[str, Any]]:
    """Run several jobs one after the other (the body of a Slurm array task).

    A job whose folder is already complete is skipped, so an array task that runs twice (requeued
    by ``scontrol requeue``, preemption or a lost node) redoes only what its first attempt left.
    """
    return [
        skipped_row(job) if is_done(job) else run_job(job, threads, checkpoints) for job in jobs
    ]


def skipped_row(job: Job) -> dict[str, Any]:
    """Summary row of a job found complete (not run again)."""
    return {
        "configuration": job.label,
        "setting": job.config.setting,
        "runs": job.config.num_runs,
        "status": "skipped",
        "seconds": 0.0,
        "error": "",
    }


#: Appended to the error of jobs lost with a process worker: the usual causes, and the one a
#: script's author can fix (the ``spawn`` start method re-imports the main module in each worker).
BROKEN_POOL_HINT = (
    " (a process worker died: killed, out of memory, or, when this runs from a script, the script "
    'lacks an `if __name__ == "__main__":` guard around the code that starts the sweep, so each '
    "worker re-ran it; add the guard, or use executor='serial')"
)


def task_rows(future: Any, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Rows of a finished task; if it ended without a result (cancelled, killed), one per job.

    Jobs of such a task that completed before it ended are reported ``done``; the rest
    ``failed`` with the task's error, so the sweep goes on with the other tasks and a re-run
    finishes only what is missing.
    """
    try:
        return future.result()
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"[:2000]
        if isinstance(error, BrokenProcessPool):
            reason += BROKEN_POOL_HINT
        return [
            {**skipped_row(job), "status": "done"}
            if is_done(job)
            else {**skipped_row(job), "status": "failed", "error": reason}
            for job in jobs
        ]


class SerialExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in this process; for debugging and tests."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


def make_executor(
    name: str,
    *,
    workers: int | None = None,
    out: str | Path = ".",
    submitit_cluster: str | None = None,
    slurm: dict[str, Any] | None = None,
) -> tuple[Any, int]:
    """Build a named executor; returns ``(executor, torch threads per job)``."""
    cores = os.cpu_count() or 1
    if name == "serial":
        return SerialExecutor(), cores
    if name == "process":
        workers = workers or min(cores, 2)
        context = multiprocessing.get_context("spawn")  # fork after torch threads can deadlock
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_end_with_parent,
            initargs=(os.getpid(),),
        )
        return pool, max(1, cores // workers)
    if name == "submitit":
        try:
            import submitit
        except ImportError as error:
            raise ValueError(
                "executor 'submitit' needs the submitit package: pip install submitit"
            ) from error
        executor = submitit.AutoExecutor(folder=Path(out) / "submitit", cluster=submitit_cluster)
        params = {
            "timeout_min": 240,
            "cpus_per_task": 1,  # also each task's torch threads (SLURM_CPUS_PER_TASK)
            "slurm_array_parallelism": workers or 64,
            **(slurm or {}),
        }
        if submitit_cluster in ("local", "debug"):
            params = {k: v for k, v in params.items() if not k.startswith("slurm")}
        executor.update_parameters(**params)
        return executor, 0
    raise ValueError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")


#: ``prctl`` option: the signal a process gets when its parent dies (Linux, <linux/prctl.h>).
PR_SET_PDEATHSIG = 1
#: Seconds between two checks of a worker's parent (the portable fallback to ``prctl``).
PARENT_POLL_SECONDS = 1.0


def _end_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when the sweep's main process ``parent_pid`` dies.

    Without it, ``kill -9`` of a sweep left its workers (about 0.5 GB each) computing on, reparented
    to init, beside a resumed sweep. On Linux the kernel delivers SIGKILL at the parent's death
    (``prctl(PR_SET_PDEATHSIG)``); everywhere, a daemon thread also exits the worker once its
    parent process id changes. A worker killed mid-write leaves only hidden temporary files.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the polling thread below still ends the worker
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


@dataclass
class SweepSummary:
    """What a sweep did: one row per configuration (done, skipped or failed)."""

    table: pd.DataFrame
    seconds: float

    @property
    def failures(self) -> int:
        return int((self.table["status"] == "failed").sum()) if len(self.table) else 0

    def __str__(self) -> str:
        if self.table.empty:
            return "nothing to do"
        by_status = self.table.groupby("status").agg(
            configurations=("configuration", "count"),
            runs=("runs", "sum"),
            seconds=("seconds", "sum"),
        )
        return f"{by_status.to_string()}\nwall time {self.seconds:.1f} s"


def run_sweep(
    profile: Profile | str,
    out: str | Path,
    *,
    executor: str | concurrent.futures.Executor = "process",
    workers: int | None = None,
    shard: tuple[int, int] | str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    device: str = "auto",
    checkpoints: bool = False,
    progress: bool | None = None,
    submitit_cluster: str | None = None,
    submitit_parameters: dict[str, Any] | None = None,
    max_array: int = 1000,
    overwrite: bool = False,
) -> SweepSummary:
    """Run (or resume) every missing configuration of ``profile`` in ``shard`` into ``out``.

    Returns a :class:`SweepSummary`; failed configurations are listed there (with their traceback)
    and do not stop the others. Run :func:`collect` afterwards to merge the tables. ``out`` must be
    new, empty or a sweep folder of the same profile (:func:`mod_arch_core.folders.check_sweep_out`);
    ``overwrite=True`` empties any other folder first. While the sweep runs it holds the shard's
    lock (:func:`mod_arch_core.folders.sweep_lock`); at its start it removes stale temporary files
    of the shard's configurations. ``submitit_parameters`` go to
    ``submitit.AutoExecutor.update_parameters`` (e.g. ``slurm_partition``, ``timeout_min``,
    ``mem_gb``, ``gpus_per_node``, ``cpus_per_task``); ``max_array`` caps the number of array tasks
    (configurations are dealt out round-robin).
    """
    if isinstance(profile, str):
        profile = load_profile(profile, overrides)
    elif overrides:
        raise ValueError(
            "pass overrides with a profile name, or apply them to the Profile yourself"
        )
    shard = parse_shard(shard) if not isinstance(shard, tuple) else shard
    jobs = plan(profile, Path(out), shard, device)
    out = folders.check_sweep_out(
        out, profile.name, {job.config_hash for job in jobs}, overwrite=overwrite
    )
    out.mkdir(parents=True, exist_ok=True)
    with folders.sweep_lock(out, shard):
        folders.clean_partial(out)  # only files older than any live writer's (STALE_SECONDS)
        return _run_locked(profile, out, jobs, executor, workers, checkpoints, progress,
                           submitit_cluster, submitit_parameters, max_array)  # fmt: skip


def _run_locked(
    profile: Profile,
    out: Path,
    jobs: list[Job],
    executor: str | concurrent.futures.Executor,
    workers: int | None,
    checkpoints: bool,
    progress: bool | None,
    submitit_cluster: str | None,
    submitit_parameters: dict[str, Any] | None,
    max_array: int,
) -> SweepSummary:
    """The body of :func:`run_sweep`, once the folder is checked and locked."""
    pending = [job for job in jobs if not is_done(job)]
    rows = [skipped_row(j) for j in jobs if j not in pending]
    start = time.perf_counter()
    owned = isinstance(executor, str)
    if owned:
        pool, threads = make_executor(
            executor,
            workers=workers,
            out=out,
            submitit_cluster=submitit_cluster,
            slurm=submitit_parameters,
        )
    else:
        pool, threads = executor, 0
    is_submitit = type(pool).__module__.startswith("submitit")
    if is_submitit:
        chunks = max(1, min(max_array, len(pending)))
        groups = [pending[i::chunks] for i in range(chunks)] if pending else []
        futures = []
        if groups:  # an empty batch makes submitit warn
            with pool.batch():
                futures = [pool.submit(run_jobs, group, None, checkpoints) for group in groups]
        from mod_arch_core.slurm import watch_without_accounting

        watch_without_accounting(futures)  # squeue, not sacct, where there is no accounting
    else:
        groups = [[job] for job in pending]
        futures = [pool.submit(run_jobs, group, threads or None, checkpoints) for group in groups]
    # progress=None: a bar only on a terminal (tqdm's disable=None), never in logs or notebooks
    disable = (None if progress is None else not progress) if pending else True
    bar = tqdm(total=len(pending), desc=f"sweep {profile.name}", unit="config", disable=disable)
    try:
        future_jobs = dict(zip(futures, groups, strict=True))
        waiting = set(futures)
        while waiting:
            done = _wait_any(waiting)
            for future in done:
                waiting.discard(future)
                for row in task_rows(future, future_jobs[future]):
                    rows.append(row)
                    if row["status"] == "failed":
                        bar.write(f"FAILED {row['configuration']}:\n{row['error']}")
                bar.update(len(future_jobs[future]))
    finally:
        bar.close()
        if owned and hasattr(pool, "shutdown"):
            pool.shutdown(wait=True, cancel_futures=True)
    return SweepSummary(pd.DataFrame(rows), time.perf_counter() - start)


def _wait_any(futures: set[Any]) -> set[Any]:
    """Futures that are done, waiting for at least one (works for submitit jobs too)."""
    if all(isinstance(f, concurrent.futures.Future) for f in futures):
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
        return set(done)
    while True:
        done = {f for f in futures if f.done()}
        if done:
            return done
        time.sleep(0.5)


# Collect -------------------------------------------------------------------------------------


def collect(
    out: str | Path, *, allow_mixed: bool = False, profile: Profile | str | None = None
) -> results.Results:
    """Merge every configuration folder of ``out`` into ``out/runs.parquet`` and ``curves.parquet``.

    Verifies each folder's checksums and schema; refuses results from different profiles, package
    versions or commits unless ``allow_mixed``; with ``profile`` given, also reports configurations
    of the profile that are missing. Returns the merged :class:`~mod_arch_core.results.Results`.
    """
    out = Path(out)
    folders = configuration_folders(out)
    if not folders:
        raise FileNotFoundError(
            f"no configuration results under {out / CONFIGS_DIR}; run a sweep into {out} first"
        )
    runs, curves, problems = [], [], []
    for folder in folders:
        try:
            loaded = results.load(folder)
        except (results.ResultsError, FileNotFoundError) as error:
            problems.append(f"{folder}: {error}")
            continue
        runs.append(loaded.runs)
        curves.append(loaded.curves)
    if problems:
        listing = "\n  ".join(problems)
        raise results.ResultsError(
            f"{len(problems)} configuration folder(s) are corrupted or incomplete:\n  {listing}\n"
            "Delete them and re-run the same sweep command: only those configurations are recomputed."
        )
    merged_runs = pd.concat(runs, ignore_index=True)
    merged_curves = pd.concat(curves, ignore_index=True)
    if not allow_mixed:
        for column in ("profile", "package_version", "git_commit", "torch_version"):
            values = sorted(merged_runs[column].unique())
            if len(values) > 1:
                raise results.ResultsError(
                    f"results under {out} mix {column} values {values}; pass allow_mixed=True "
                    "(--allow-mixed) to merge them anyway"
                )
    missing: list[str] = []
    if profile is not None:
        profile = load_profile(profile) if isinstance(profile, str) else profile
        expected = {job.folder.name for job in plan(profile, out)}
        missing = sorted(expected - {f.name for f in folders})
        if missing:
            raise results.ResultsError(
                f"{len(missing)} configurations of profile {profile.name!r} are missing, e.g. {missing[:3]}"
            )
    wall = merged_runs.drop_duplicates("config_hash").groupby("setting")["wall_seconds"].sum()
    meta = {
        "profile": sorted(merged_runs["profile"].unique()),
        "configurations": len(folders),
        "wall_seconds_per_setting": {k: float(v) for k, v in wall.items()},
        "provenance_of_collect": provenance(),
        "hardware": sorted(merged_runs["hardware"].unique()),
    }
    results.write_results(out, merged_runs, merged_curves, meta)
    return results.load(out)


def remove_configuration(folder: str | Path) -> None:
    """Delete one configuration folder so that the next sweep recomputes it."""
    shutil.rmtree(folder)
