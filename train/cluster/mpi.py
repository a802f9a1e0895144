"""The mpi4py bootstrap: an MPI-started job (mpirun, srun) made a MindSpore dynamic cluster.

MindSpore has no MPI start method on CPU, so mpirun/srun only start the processes: rank 0 picks
the scheduler's address and port, starts MindSpore's scheduler as its child (without MPI's
variables; it dies with rank 0) and broadcasts the address; every rank then joins as
`MS_WORKER` with `MS_NODE_ID = MPI rank`. mpi4py is imported here, before MindSpore. Each rank's
stdout and stderr go to `LOG_DIR/worker_<rank>.log`, as under msrun.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from train.cluster import ending
from train.cluster.addresses import free_port, local_ipv4s, master_address, network_id, port_is_free
from train.cluster.env import MPI_PREFIXES, ClusterError, check_port
from train.cluster.process import set_pdeathsig
from train.launch import package_python


def _start_scheduler(host: str, port: int, world: int, device: str, log_dir: str | None,
                     timeout: int) -> subprocess.Popen:
    """Start MindSpore's scheduler as a child, without MPI's variables (it is not an MPI rank)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(MPI_PREFIXES)}
    env.update(MS_ROLE="MS_SCHED", MS_SCHED_HOST=host, MS_SCHED_PORT=str(port),
               MS_WORKER_NUM=str(world), MS_TOPO_TIMEOUT=str(timeout))
    out: Any = subprocess.DEVNULL
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        out = open(Path(log_dir) / "scheduler.log", "ab")  # noqa: SIM115 - child owns it
    code = f"from train.cluster.mpi import run_scheduler; run_scheduler({device!r})"
    return subprocess.Popen(package_python(code), env=env, stdout=out,
                            stderr=subprocess.STDOUT, preexec_fn=_child_setup)


def _child_setup() -> None:
    """In the scheduler child: die with rank 0 (and only so), never of a stop signal. mpirun
    forwards SIGUSR1 to each rank's process group and Slurm signals every process of a step:
    a scheduler killed by it while the cluster forms left the ranks retrying init() until
    CLUSTER_TIMEOUT. So it gets a session of its own and ignores the stop signals (ignored
    dispositions survive exec; MindSpore's scheduler sets none of its own); the ranks stop
    themselves, and the scheduler ends when they have, or with rank 0."""
    from train.stop import STOP_NAMES, unblock_in_child

    os.setsid()
    set_pdeathsig()
    for name in STOP_NAMES:
        signal.signal(getattr(signal, f"SIG{name}"), signal.SIG_IGN)
    unblock_in_child()


def _reap(proc: subprocess.Popen, timeout: float = 30) -> None:
    """At exit of rank 0: let the scheduler finish, kill it if it does not."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_listening(host: str, port: int, proc: subprocess.Popen, timeout: int) -> None:
    """Block until the scheduler accepts connections. A worker that dials a scheduler still
    importing mindspore was seen to stay unregistered until the cluster timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"the MindSpore scheduler exited with code {proc.returncode} "
                               "before the cluster formed (see LOG_DIR/scheduler.log)")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise ClusterError(f"the MindSpore scheduler did not listen on {host}:{port} "
                       f"within {timeout} s (CLUSTER_TIMEOUT)")


def run_scheduler(device: str) -> None:
    """Body of the scheduler process: `init()` serves the cluster and returns when it ends."""
    import mindspore as ms
    from mindspore.communication import init

    ms.set_device(device)
    init()


def redirect_output(log_dir: str, rank: int) -> None:
    """mpi mode: rank r's stdout/stderr go to LOG_DIR/worker_r.log, as msrun does: MindSpore's
    own output (its C++ log lines write to the file descriptors) goes there only.

    The console (mpirun forwards it) keeps the trainer's Python-level lines: rank 0's stdout
    and stderr, the other ranks' stderr only - their `error:` and `stopped:` lines - so that a
    failing rank is named where users look first (the terminal, Slurm's slurm-<id>.out).
    """
    path = Path(log_dir) / f"worker_{rank}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    console_err = os.fdopen(os.dup(2), "w", buffering=1)
    console_out = os.fdopen(os.dup(1), "w", buffering=1) if rank == 0 else None
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    # MindSpore's Python logger writes to the sys.stderr of its first line, and under Open MPI
    # that line comes at import ("dynamic cluster and OpenMPI at the same time", expected):
    # import it while sys.stderr is the log, so its lines stay there, as under msrun.
    sys.stderr = f
    try:
        import mindspore.log as ms_log

        getattr(ms_log, "_get_logger", lambda: None)()  # bound now, even with no warning yet
    finally:
        sys.stderr = _Tee(console_err, f)
    sys.stdout = _Tee(console_out, f) if console_out else f


class _Tee:
    """A text stream that writes to two streams."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def write(self, s: str) -> int:
        self.b.write(s)
        return self.a.write(s)

    def flush(self) -> None:
        self.a.flush()
        self.b.flush()

    def isatty(self) -> bool:
        return self.a.isatty()

    def fileno(self) -> int:
        return self.a.fileno()


def mpi_world() -> Any:
    """MPI's world communicator (mpi4py is imported here, before mindspore)."""
    try:
        from mpi4py import MPI
    except ImportError:
        from train.launch import pip_hint

        raise ClusterError("started by an MPI launcher but mpi4py is not installed: "
                           f"{pip_hint('mpi')}, or build mpi4py against your site MPI") from None
    return MPI.COMM_WORLD


def bootstrap(comm: Any, env: Mapping[str, str], device: str,
                   timeout: int) -> tuple[list[str], Callable[[str | None], None]]:
    """Make an MPI-started job a MindSpore dynamic cluster (sets this rank's MS_* variables).

    Returns every rank's host name and `ready(error)`, to call just before `init()`: it blocks
    until the scheduler accepts connections (a worker that dials a scheduler still importing
    MindSpore was seen to stay unregistered until the cluster timed out) and raises on every
    rank if any rank reports an error. Splitting the two lets every rank import MindSpore
    while the scheduler does (~3 s less to the first step).
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    me = socket.gethostname()
    everyone = comm.allgather((me, network_id(), local_ipv4s()))
    hosts = [h for h, _, _ in everyone]
    info, proc = None, None
    if rank == 0:
        try:
            # Another host is another name or another network namespace: containers (and the
            # tests' simulated hosts) can share a name, and 127.0.0.1 is not theirs to share.
            peers = {h: a for h, n, a in everyone if (h, n) != (me, network_id())}
            info = (master_address(env, me, peers), scheduler_port(env))
            proc = _start_scheduler(*info, size, device, env.get("LOG_DIR"), timeout)
            # Registered before mindspore is imported, so it runs after mindspore's own exit
            # hook has unregistered this worker: the scheduler ends once every worker has.
            atexit.register(_reap, proc)
            ending.scheduler(proc)  # stopped by the ordered end once every rank is done
        except (ClusterError, OSError) as e:  # every rank must hear it, or they wait forever
            info = str(e)
    info = comm.bcast(info, root=0)
    if isinstance(info, str):
        raise ClusterError(info)
    host, port = info
    os.environ.update(MS_ROLE="MS_WORKER", MS_NODE_ID=str(rank), MS_WORKER_NUM=str(size),
                      MS_SCHED_HOST=host, MS_SCHED_PORT=str(port), MS_TOPO_TIMEOUT=str(timeout))

    def ready(error: str | None) -> None:
        if proc is not None and error is None:
            try:
                _wait_listening(host, port, proc, timeout)
            except ClusterError as e:
                error = str(e)
        errors = [e for e in comm.allgather(error) if e]  # also the barrier before dialling
        if errors:
            raise ClusterError(errors[0])

    return hosts, ready


def scheduler_port(env: Mapping[str, str]) -> int:
    """MASTER_PORT when set (and free here), else a free port."""
    port_s = env.get("MASTER_PORT", "")
    if not port_s:
        return free_port()
    check_port(port_s)
    if not port_is_free(int(port_s)):
        raise ClusterError(f"MASTER_PORT {port_s} is already in use on this host; "
                           "pick a free port or unset it to let rank 0 choose one")
    return int(port_s)


