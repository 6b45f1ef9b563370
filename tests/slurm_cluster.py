"""A one-node SLURM cluster on localhost for the tests: munged, slurmctld and slurmd, started and stopped here.

Everything lives in one temporary folder (munge key and socket, state, spool, logs, the job completion
log) except slurm.conf, which is written to SLURM's default path, ``/etc/slurm/slurm.conf``: the job
step of snakemake-executor-plugin-slurm (slurm-jobstep) drops ``SLURM_CONF`` from the environment of
the ``srun`` it runs inside each batch job, and without it srun looks only at the default path (then
at DNS, and fails). An existing file there is moved aside and put back when the cluster stops.

The cluster has no accounting database (``AccountingStorageType=accounting_storage/none``), as many
small clusters: ``sacct`` answers "accounting storage is disabled". SLURM's own record of every job
that ended is the job completion log (``JobCompType=jobcomp/filetxt``): one line per job with its id,
name, state, node and start/end times; :meth:`Cluster.completed_jobs` reads it. Ports are picked free
on 127.0.0.1; the daemons listen there, and nothing else is contacted.

Stopping: the jobs still queued are cancelled, then the three daemons are stopped by the PIDs this
module started (SIGTERM, then SIGKILL after a grace period), and nothing they started is left running.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
PARTITION = "cpu"
HEADER = "# written by tests/slurm_cluster.py for the test suite's one-node cluster; removed afterwards"


def _which(cmd: str) -> str | None:
    return shutil.which(cmd) or (f"/usr/sbin/{cmd}" if os.access(f"/usr/sbin/{cmd}", os.X_OK) else None)


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here (None when it can)."""
    missing = [c for c in COMMANDS if _which(c) is None]
    if missing:
        return (f"SLURM is not installed (missing: {', '.join(missing)}); scripts/bootstrap-slurm installs "
                "Debian's slurm-wlm and munge (as root, with apt-get)")
    if os.geteuid() != 0:
        return "the one-node SLURM cluster needs root (slurmd runs jobs as their user, and slurm.conf goes to /etc/slurm)"
    return None


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


@dataclass
class Cluster:
    root: Path
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    min_job_age: int = 300
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    start_seconds: float = 0.0
    _backup: Path | None = None

    @property
    def jobcomp(self) -> Path:
        return self.root / "jobcomp.txt"

    @property
    def env(self) -> dict[str, str]:
        """The environment for SLURM's client commands (they read /etc/slurm/slurm.conf)."""
        env = dict(os.environ)
        env.pop("SLURM_CONF", None)
        return env

    def config(self) -> str:
        r = self.root
        ctld_port, d_port = _free_ports(2)
        mem = int(_mem_mb() * 0.9)  # slurmd drains a node whose memory is below the configured one
        return "\n".join([
            HEADER,
            "ClusterName=cppotest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r}/munge/munge.socket",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r}/ctld",
            f"SlurmdSpoolDir={r}/d",
            f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/slurmctld.log",
            f"SlurmdLogFile={r}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",  # no cgroups in containers
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "SchedulerType=sched/backfill",
            "SlurmdParameters=config_overrides",
            "MpiDefault=none",
            "ReturnToService=2",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp}",
            f"MinJobAge={self.min_job_age}",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    # ------------------------------------------------------------------ start / stop
    def start(self, timeout: float = 60) -> None:
        t0 = time.monotonic()
        r = self.root
        for d in ("munge", "ctld", "d"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        subprocess.run([_which("mungekey"), "--create", "--keyfile", str(key)], check=True, capture_output=True)
        os.chmod(key, 0o400)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        if SLURM_CONF.exists() and not SLURM_CONF.read_text().startswith(HEADER):  # not a stale one of ours
            self._backup = r / "slurm.conf.before"
            shutil.move(SLURM_CONF, self._backup)
        SLURM_CONF.write_text(self.config())
        try:
            self._spawn("munged", [_which("munged"), "--foreground", "--force", f"--socket={r}/munge/munge.socket",
                                   f"--key-file={key}", f"--pid-file={r}/munge/munged.pid",
                                   f"--log-file={r}/munge/munged.log", f"--seed-file={r}/munge/munged.seed"])
            self._wait(lambda: (r / "munge" / "munge.socket").exists(), "munged's socket", timeout)
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
            self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), "slurmctld to answer", timeout)
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost"])
            self._wait(lambda: self._ok(["sinfo", "-h", "-N", "-o", "%T"], "idle"), "the node to be idle", timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)

    def _ok(self, argv: list[str], want: str) -> bool:
        res = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=20)
        return res.returncode == 0 and want in res.stdout

    def _wait(self, cond, what: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}:\n{self.logs()}")
            if cond():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")

    def logs(self, tail: int = 3000) -> str:
        out = []
        for p in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")) + [self.root / "munge" / "munged.log"]:
            if p.exists():
                out.append(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def cancel_all(self, timeout: float = 60) -> None:
        """Cancel every job still known to slurmctld and wait until none runs."""
        if "slurmctld" not in self.procs or self.procs["slurmctld"].poll() is not None:
            return
        subprocess.run(["scancel", "--full", "--partition", PARTITION], capture_output=True, env=self.env, timeout=30)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            res = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING,SUSPENDED,CONFIGURING", "-o", "%i"],
                                 capture_output=True, text=True, env=self.env, timeout=30)
            if res.returncode == 0 and not res.stdout.strip():
                return
            time.sleep(0.5)

    def stop(self, grace: float = 15) -> None:
        try:
            self.cancel_all()
        finally:
            for name in ("slurmd", "slurmctld", "munged"):
                p = self.procs.get(name)
                if p is None or p.poll() is not None:
                    continue
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(grace)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(grace)
            if SLURM_CONF.exists() and SLURM_CONF.read_text().startswith(HEADER):
                SLURM_CONF.unlink()
            if self._backup is not None and self._backup.exists():
                shutil.move(self._backup, SLURM_CONF)

    def alive(self) -> list[str]:
        return [f"{n} (pid {p.pid})" for n, p in self.procs.items() if p.poll() is None]

    # ------------------------------------------------------------------ SLURM's records
    def completed_jobs(self) -> dict[int, dict[str, str]]:
        """The job completion log: job id -> its fields (JobId, Name, JobState, NodeList, StartTime, EndTime, ...)."""
        jobs = {}
        if not self.jobcomp.exists():
            return jobs
        for line in self.jobcomp.read_text().splitlines():
            fields = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
            if "JobId" in fields:
                jobs[int(fields["JobId"])] = fields
        return jobs
