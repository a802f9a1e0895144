"""A throwaway Slurm for the launch tests: real `munged`, `slurmctld` and `slurmd` from
Debian's packages (tests/setup_system.sh installs them), started here with a config in a
temporary folder, private ports and a private munge socket, so that a site's own Slurm is never
touched, and stopped by PID.

One node by default; with `SimulatedHosts`, one `slurmd` per simulated host (Debian's Slurm has
no multiple-slurmd support, but each simulated host has its own network namespace and name, so
each slurmd is an ordinary single daemon there).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from train.cluster.addresses import free_port

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo")
ENV_DROP = ("SLURM_", "TRAIN_TEST_MARK")


def available() -> str | None:
    """None if a throwaway Slurm can run here, else why not."""
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): run "
                "`tests/setup_system.sh` as root (Debian: slurm-wlm munge libpmix-dev)")
    if os.geteuid() != 0:
        return "the throwaway Slurm runs its daemons as root"
    if not list(Path("/usr/lib").glob("**/libpmix.so")):
        return "srun --mpi=pmix needs libpmix.so (Debian: libpmix-dev)"
    return None


class LocalSlurm:
    """`with LocalSlurm(root) as slurm:` - `slurm.env` points clients at it."""

    def __init__(self, root: Path, hosts: object | None = None, cpus: int = 2) -> None:
        self.root, self.hosts, self.cpus = root, hosts, cpus
        self.procs: list[subprocess.Popen] = []
        if hosts is None:
            self.nodes = [(socket.gethostname().split(".")[0], "127.0.0.1")]
        else:
            self.nodes = list(zip(hosts.names, hosts.addresses))  # type: ignore[attr-defined]
        self.conf = root / "slurm.conf"
        daemon_env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_DROP)}
        self.daemon_env = {**daemon_env, "SLURM_CONF": str(self.conf)}
        self.env = {"SLURM_CONF": str(self.conf), "PMIX_MCA_psec": "native"}

    def _prefix(self, i: int) -> list[str]:
        return [] if self.hosts is None else self.hosts.prefix(i)  # type: ignore[attr-defined]

    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "log", "munge", *(f"{k}/{n}" for n, _ in self.nodes
                                             for k in ("spool", "tmp"))):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o755)
        (r / "munge" / "munge.key").write_bytes(os.urandom(1024))
        (r / "munge" / "munge.key").chmod(0o600)
        (r / "plugstack.conf").write_text("")
        ctl_name, ctl_addr = self.nodes[0]
        lines = [
            "ClusterName=msdptest", f"SlurmctldHost={ctl_name}({ctl_addr})",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            # Job ids of its own: Open MPI names a job's shared-memory segments after its PMIx
            # namespace (/dev/shm/sm_segment.<host>.<uid>.<hash of slurm.pmix.<job>.<step>>), so
            # two throwaway Slurms running at once (several test runs on one machine) that both
            # count from 1 shared segments: lost messages (a hang in the first allgather) and
            # SIGSEGV in mca_btl_sm_poll_handle_frag (docs/FINDINGS.md, issue 23).
            f"FirstJobId={int.from_bytes(os.urandom(3), 'little') + 1000}",
            "AuthType=auth/munge", f"AuthInfo=socket={r}/munge/sock", "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool/%n", f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd-%n.pid", f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd-%n.log", f"PlugStackConfig={r}/plugstack.conf",
            # Per node: the simulated hosts share one /tmp, where PMIx's per-step directories
            # of two nodes would collide.
            f"TmpFS={r}/tmp/%n",
            # Tracking by parentage only: the hardest case for "nothing outlives the job"
            # (msrun's workers leave its process group).
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "MpiDefault=none",
            "ReturnToService=2", "SchedulerType=sched/builtin", "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none", "MinJobAge=3600",
            "SlurmdTimeout=60", "InactiveLimit=0",
            *(f"NodeName={n} NodeAddr={a} CPUs={self.cpus} State=UNKNOWN" for n, a in self.nodes),
            f"PartitionName=test Nodes={','.join(n for n, _ in self.nodes)} Default=YES "
            "MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _start(self, cmd: list[str], log: str) -> None:
        out = open(self.root / "log" / log, "wb")  # noqa: SIM115 - the daemon keeps it
        self.procs.append(subprocess.Popen(cmd, env=self.daemon_env, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def __enter__(self) -> LocalSlurm:
        self._write_config()
        r = self.root
        self._start(["munged", "-F", "--force", f"--socket={r}/munge/sock",
                     f"--key-file={r}/munge/munge.key", f"--pid-file={r}/munge/pid",
                     f"--seed-file={r}/munge/seed", f"--log-file={r}/munge/log"], "munged.out")
        self._wait(lambda: (r / "munge" / "sock").exists(), "munged")
        self._start([*self._prefix(0), "slurmctld", "-D", "-i", "-f", str(self.conf)],
                    "slurmctld.out")
        for i, (name, _) in enumerate(self.nodes):
            self._start([*self._prefix(i), "slurmd", "-D", "-f", str(self.conf), "-N", name],
                        f"slurmd-{name}.out")
        self._wait(self._all_idle, "every node idle")
        return self

    def _wait(self, cond: object, what: str, timeout: float = 60) -> None:
        t0 = time.monotonic()
        while not cond():  # type: ignore[operator]
            if any(p.poll() is not None for p in self.procs):
                logs = "".join(p.read_text()[-600:] for p in (self.root / "log").glob("*.out"))
                raise RuntimeError(f"a Slurm daemon exited while waiting for {what}:\n{logs}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"Slurm: timed out waiting for {what}")
            time.sleep(0.2)

    def _all_idle(self) -> bool:
        r = self.run(["sinfo", "-h", "-N", "-o", "%T"])
        states = r.stdout.split()
        return r.returncode == 0 and len(states) == len(self.nodes) and \
            all(s == "idle" for s in states)

    def run(self, cmd: list[str], host: int = 0, **kw: object) -> subprocess.CompletedProcess:
        """A Slurm client command (on simulated host `host`, if any)."""
        return subprocess.run([*self._prefix(host), *cmd], env={**self.daemon_env, **self.env},
                              capture_output=True, text=True, timeout=60, **kw)

    def sbatch(self, script: Path, args: list[str], cwd: Path, env: dict[str, str],
               options: list[str]) -> int:
        """Submit a batch script from `cwd` (on host 0) with `env` exported; the job id."""
        cmd = [*self._prefix(0), "sbatch", "--parsable", *options, str(script), *args]
        r = subprocess.run(cmd, cwd=cwd, env={**env, **self.env}, capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch failed: {r.stderr.strip()}")
        return int(r.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, ...)."""
        out = self.run(["scontrol", "show", "job", str(job_id)]).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def wait(self, job_id: int, timeout: float = 240) -> dict[str, str]:
        """Block until the job has ended; its final record."""
        t0 = time.monotonic()
        while True:
            info = self.job(job_id)
            if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                        "NODE_FAIL", "OUT_OF_MEMORY"):
                return info
            if time.monotonic() - t0 > timeout:
                self.run(["scancel", str(job_id)])
                raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout} s")
            time.sleep(0.25)

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):  # slurmds, then slurmctld, then munged
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
