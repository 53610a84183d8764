"""Slurm specifics of the ``submitit`` executor: job states without accounting, threads per task.

submitit learns the state of a Slurm job from ``sacct``. On a cluster without accounting storage
(``AccountingStorageType=accounting_storage/none``, common on small clusters and the only choice
without a ``slurmdbd`` database) ``sacct`` fails with "Slurm accounting storage is disabled": submitit
then logs ``Bypassing sacct error ..., status may be inaccurate`` on every poll, and a task that
ended without writing its result (cancelled, killed, its node lost) stays ``UNKNOWN`` for ever, so the
sweep waiting for it never returns. :class:`QueueWatcher` asks ``squeue`` instead, which knows every
job slurmctld still holds (running, pending, requeued, and finished ones for ``MinJobAge`` seconds);
a job that ``squeue`` no longer lists has finished, and submitit then reads its result file or reports
it as failed. :func:`watch_without_accounting` installs it on the jobs of a sweep when the cluster
has no accounting, and leaves submitit's ``sacct`` watcher alone when it has.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from typing import Any

from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

#: ``squeue`` state of a job that slurmctld no longer holds: finished (see :class:`QueueWatcher`).
GONE = "NOT_IN_QUEUE"


class QueueWatcher(SlurmInfoWatcher):
    """A submitit job watcher that reads job states from ``squeue`` instead of ``sacct``."""

    def _make_command(self) -> list[str] | None:
        """``squeue`` for every registered, unfinished job, one line per array task."""
        to_check = sorted({x.split("_")[0] for x in self._registered - self._finished})
        if not to_check:
            return None
        return [
            "squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N",
            f"--jobs={','.join(to_check)}",
        ]  # fmt: skip

    def update(self) -> None:
        """Refresh the states of the registered jobs with one ``squeue`` call."""
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return  # slurmctld unreachable for now: keep the old states, ask again later
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            return
        listed = self.read_info("JobID|State|NodeList\n" + proc.stdout)
        for job_id in self._registered - self._finished:
            self._info_dict[job_id] = listed.get(job_id, {"State": GONE})
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)


def accounting_enabled() -> bool:
    """Whether the cluster in ``SLURM_CONF`` stores accounting (so ``sacct`` can answer)."""
    try:
        proc = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return True  # cannot tell: keep submitit's default
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AccountingStorageType":
            return value.strip() != "accounting_storage/none"
    return True


def watch_without_accounting(jobs: Iterable[Any]) -> bool:
    """Make Slurm ``jobs`` (submitit futures) poll ``squeue`` if the cluster has no accounting.

    Returns whether the watcher was changed. Jobs of other clusters (``local``, ``debug``) and
    clusters with accounting keep submitit's behaviour.
    """
    slurm_jobs = [job for job in jobs if isinstance(job, SlurmJob)]
    if not slurm_jobs or accounting_enabled():
        return False
    watcher = QueueWatcher(delay_s=60)  # one per sweep: job ids repeat across clusters
    for job in slurm_jobs:
        job.watcher = watcher
    return True


def cpus_per_task() -> int | None:
    """``SLURM_CPUS_PER_TASK`` inside a Slurm task that asked for CPUs, else ``None``.

    Used as the torch thread count of an array task: without it, torch starts one thread per core
    of the whole node, however few cores the task was given.
    """
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def task_attempt() -> dict[str, str]:
    """Which Slurm job, array task and attempt (``SLURM_RESTART_COUNT``) runs this process."""
    names = {
        "job_id": "SLURM_JOB_ID",
        "array_job_id": "SLURM_ARRAY_JOB_ID",
        "array_task_id": "SLURM_ARRAY_TASK_ID",
        "restart_count": "SLURM_RESTART_COUNT",
    }
    found = {key: os.environ[var] for key, var in names.items() if var in os.environ}
    if found and "restart_count" not in found:
        found["restart_count"] = "0"  # Slurm sets it only once a job has been requeued
    return found
