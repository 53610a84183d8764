"""A throwaway one-node Slurm cluster for tests, started from Debian's ``slurm-wlm`` and ``munge``.

Everything lives in one temporary folder: ``slurm.conf``, a fresh munge key, the daemons' state,
spool, pid and log files. The daemons listen on loopback ports picked at start; ``SLURM_CONF`` in
:attr:`SlurmCluster.env` points the client commands (``sbatch``, ``squeue``, ``scancel``,
``scontrol``, hence submitit) at this cluster and at nothing else. Every daemon is started in the
foreground by :class:`subprocess.Popen` and ended by its process id in :meth:`SlurmCluster.stop`.

The configuration is the smallest that runs job arrays on one machine: ``SlurmctldHost`` and
``NodeName`` are ``hostname -s`` (addressed as 127.0.0.1), ``select/cons_tres``,
``proctrack/linuxproc``, ``task/none``, ``SlurmUser=root``, one partition, no accounting
(``accounting_storage/none``, ``jobacct_gather/none``) so ``sacct`` has nothing to read.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Executables the cluster needs (Debian packages ``slurm-wlm`` and ``munge``).
REQUIRED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
PARTITION = "debug"
INSTALL_HINT = "apt-get update && apt-get install -y --no-install-recommends slurm-wlm munge"


def missing_executables() -> list[str]:
    """The Slurm and munge executables that are not on ``PATH`` (empty when all are there)."""
    return [name for name in REQUIRED if shutil.which(name) is None]


def unavailable_reason() -> str | None:
    """Why a cluster cannot start here (missing packages, not root), or ``None`` if it can."""
    missing = missing_executables()
    if missing:
        return f"Slurm/munge not installed (missing {', '.join(missing)}): {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "a one-node Slurm cluster with SlurmUser=root needs root"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(root: Path, host: str, cpus: int, ports: tuple[int, int]) -> str:
    """The text of ``slurm.conf`` for a one-node cluster whose files all live under ``root``."""
    ctld_port, slurmd_port = ports
    return f"""\
ClusterName=modarch
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long (default 120 s) before it may start again.
AuthInfo=socket={root}/munge/munge.socket,cred_expire=10
StateSaveLocation={root}/state/ctld
SlurmdSpoolDir={root}/state/slurmd
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# Look for startable jobs every 2 s (default 30 s) so a requeued task restarts promptly.
SchedulerParameters=bf_interval=2
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for 10 minutes (submitit reads their state).
MinJobAge=600
KillWait=2
InactiveLimit=0
SlurmdTimeout=300
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1024 State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """A one-node Slurm cluster under ``root``; :meth:`start` it, :meth:`stop` it."""

    root: Path
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands and for anything that calls them (submitit)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log(self, name: str) -> Path:
        """Path of a daemon's log file (``munged``, ``slurmctld`` or ``slurmd``)."""
        return self.root / "log" / f"{name}.log"

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        """Write the configuration, start munged, slurmctld and slurmd, wait for the node to idle."""
        for sub in ("munge", "state/ctld", "state/slurmd", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # munged refuses key and socket folders others can write to
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.conf.write_text(
            slurm_conf(self.root, self.host, self.cpus, (free_port(), free_port()))
        )
        munge = self.root / "munge"
        self._spawn(
            "munged",
            ["munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
             f"--key-file={key}", f"--pid-file={munge}/munged.pid",
             f"--seed-file={munge}/munged.seed", f"--log-file={self.log('munged')}",
             "--origin=127.0.0.1"],
        )  # fmt: skip
        self._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged's socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._scontrol_ok("ping"), timeout, "slurmctld to answer ping")
        self.start_slurmd()
        self.wait_node_idle(timeout)
        return self

    def start_slurmd(self) -> None:
        """Start (or restart, after :meth:`kill_slurmd`) the node daemon."""
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.host])

    def kill_slurmd(self) -> None:
        """SIGKILL the node daemon only (running job steps and their processes survive it)."""
        process = self.processes.pop("slurmd")
        process.kill()
        process.wait(timeout=10)

    def wait_node_idle(self, timeout: float = 60.0) -> None:
        """Wait until the node is up and accepts work (``sinfo`` state idle, mixed or allocated)."""

        def ready() -> bool:
            state = self.run(["sinfo", "-h", "-n", self.host, "-o", "%T"], check=False).stdout
            return state.strip().rstrip("*") in ("idle", "mixed", "allocated")

        self._wait(ready, timeout, f"node {self.host} to be idle")

    def run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster; returns the completed process."""
        return subprocess.run(
            args, env=self.env, capture_output=True, text=True, check=check, timeout=30
        )

    def stop(self) -> None:
        """End every daemon this object started, by process id (SIGTERM, then SIGKILL)."""
        if "slurmctld" in self.processes:  # cancel leftovers so no job step outlives the cluster
            self.run(["scancel", "--full", "--user=root"], check=False)
            time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def _spawn(self, name: str, args: list[str]) -> None:
        """Start one daemon in the foreground, its output appended to ``log/<name>.out``."""
        with open(self.root / "log" / f"{name}.out", "ab") as out:
            self.processes[name] = subprocess.Popen(
                args, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def _scontrol_ok(self, *args: str) -> bool:
        return self.run(["scontrol", *args], check=False).returncode == 0

    def _wait(self, condition, timeout: float, what: str) -> None:
        """Poll ``condition`` until true; on timeout raise with the daemons' log tails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}) {self._tails()}")
            if condition():
                return
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout:.0f} s for {what} {self._tails()}")

    def _tails(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            tail = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"\n--- {path.name}\n" + "\n".join(tail))
        return "".join(parts)
