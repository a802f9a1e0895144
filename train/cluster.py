"""All rank and cluster logic: how the process was started, `init()`, and cross-rank helpers.

Three ways in, one result - an explicit `Cluster(rank, world_size, ...)`; one process is (0, 1):
- `single`: a plain process (laptop debugging, `launch/run_local.sh`). No `init()` at all.
- `msrun`: MindSpore's launcher set `MS_ROLE`, `MS_WORKER_NUM`, ... (`launch/run_msrun.sh`).
  msrun also runs this script as the scheduler (`MS_ROLE=MS_SCHED`): it must reach `init()`
  before doing anything else, and `init()` ends that process.
- `mpi`: mpirun/srun started the processes and MPI variables are set (`launch/run_mpirun.sh`,
  `launch/slurm.sbatch`). MindSpore has no MPI start method on CPU, so mpi4py bootstraps its
  dynamic cluster: rank 0 picks the scheduler address, starts the scheduler as its child, and
  broadcasts the address; every rank then joins as `MS_WORKER` with `MS_NODE_ID = MPI rank`.

Nothing outside this module calls `get_rank()`/`init()` or reads launcher variables.
Import order matters: mindspore is imported only inside `setup()`, after mpi4py.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Variables that say "an MPI launcher started me": Open MPI, MPICH/Intel MPI/srun --mpi=pmi2, PMIx.
# srun sets SLURM_STEP_NUM_TASKS in every task, with or without a PMI plugin.
_MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")
# Everything detect_launch() reads: a shell left with these from a cluster job is not one.
LAUNCH_VARS = ("MS_ROLE", *_MPI_SIZE_VARS)
_MPI_PREFIXES = ("OMPI_", "PMIX_", "PRTE_", "PMI_", "HYDRA_", "MPI_LOCALNRANKS")
DEFAULT_CLUSTER_TIMEOUT = 120  # seconds for all ranks to join (a lost rank: MS_NODE_TIMEOUT)


class ClusterError(RuntimeError):
    """Launch configuration that cannot work; reported as one line before any group starts."""


def detect_launch(env: Mapping[str, str]) -> str:
    """Which launcher started this process: `msrun`, `mpi` or `single`."""
    if env.get("MS_ROLE"):
        return "msrun"
    if any(env.get(v, "1").isdigit() and int(env[v]) > 1 for v in _MPI_SIZE_VARS if v in env):
        return "mpi"
    return "single"


def port_is_free(port: int, host: str = "") -> bool:
    """True if nothing listens on `port` (we can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the scheduler binds: connections of a just-killed job linger in TIME_WAIT for a
        # minute, and must not make a restart on the same port look refused.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """This process's place in the job. Single process: rank 0 of world_size 1."""

    rank: int = 0
    world_size: int = 1
    launch: str = "single"
    device: str = "CPU"
    hosts: list[str] = field(default_factory=lambda: [socket.gethostname()])
    _comm: Any = None  # mpi4py communicator in `mpi` mode

    @property
    def is_main(self) -> bool:
        """Rank 0 owns console output, metrics, summary and checkpoints."""
        return self.rank == 0

    def grad_reducer(self, params: list) -> Any:
        """Cross-rank gradient mean inside the jit step; None (identity) for one rank."""
        if self.world_size == 1:
            return None
        from mindspore import nn

        return nn.DistributedGradReducer(params, mean=True, degree=self.world_size)

    def host_grad_mean(self) -> Any:
        """For grad_backend=mpi: a function averaging a float32 vector over ranks with mpi4py
        (MPI's shared-memory Allreduce: ~1-2 us for 2 floats here, against ~1.2 ms through
        MindSpore's CPU collectives, docs/FINDINGS.md). Only an MPI-launched job has the
        communicator."""
        if self._comm is None:
            raise ClusterError(f"--grad_backend mpi needs an MPI launcher; this run was "
                               f"started by {self.launch}")
        from mpi4py import MPI

        comm, scale = self._comm, np.float32(1.0 / self.world_size)

        def mean(buf: np.ndarray) -> np.ndarray:
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            buf *= scale
            return buf

        return mean

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise float32 sum over ranks (MindSpore's CPU collectives take only float32
        or float16, and only sum). Identity for one rank."""
        values = np.asarray(values, dtype=np.float32)
        if self.world_size == 1:
            return values
        import mindspore as ms
        from mindspore import ops

        return ops.AllReduce()(ms.Tensor(values)).asnumpy()

    def broadcast_int(self, value: int) -> int:
        """Rank 0's non-negative integer (< 2**48) on every rank."""
        # 16-bit chunks: every partial sum is an exact float32 integer.
        chunks = [(value >> s) & 0xFFFF if self.is_main else 0 for s in (0, 16, 32)]
        got = self.all_sum(np.array(chunks))
        return sum(int(c) << s for c, s in zip(got, (0, 16, 32)))

    def check_identical(self, arrays: list[np.ndarray]) -> None:
        """Raise if the given arrays (the parameters) are not bitwise equal on every rank."""
        got = self.all_sum(checksum_terms(arrays)).astype(np.float64)
        # Cauchy-Schwarz: sum^2 == N*sum(squares) exactly when every rank has the same nibble.
        if np.any(got[:8] ** 2 != self.world_size * got[8:]):
            raise RuntimeError(f"parameters differ across ranks at the end of the run (rank "
                               f"{self.rank}): data parallelism broke")

    def abort(self) -> None:
        """Tear the whole job down now (mpi mode): a failed rank must not leave others waiting."""
        if self._comm is not None:
            self._comm.Abort(1)

def checksum_terms(arrays: list[np.ndarray]) -> np.ndarray:
    """One rank's contribution to check_identical: the 8 nibbles of a CRC-32 of the arrays and
    their squares. Small integers, so float32 sums stay exact for < 74k ranks."""
    h = 0
    for a in arrays:
        h = zlib.crc32(np.ascontiguousarray(a).tobytes(), h)
    nib = np.array([(h >> (4 * i)) & 0xF for i in range(8)], dtype=np.float32)
    return np.concatenate([nib, nib * nib])


def _set_pdeathsig() -> None:
    """In the child: die with SIGKILL when the parent (rank 0) dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _start_scheduler(host: str, port: int, world: int, device: str, log_dir: str | None,
                     timeout: int) -> subprocess.Popen:
    """Start MindSpore's scheduler as a child, without MPI's variables (it is not an MPI rank)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_MPI_PREFIXES)}
    env.update(MS_ROLE="MS_SCHED", MS_SCHED_HOST=host, MS_SCHED_PORT=str(port),
               MS_WORKER_NUM=str(world), MS_TOPO_TIMEOUT=str(timeout))
    out = subprocess.DEVNULL
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        out = open(Path(log_dir) / "scheduler.log", "ab")  # noqa: SIM115 - child owns it
    code = f"import train.cluster as c; c.run_scheduler({device!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out,
                            stderr=subprocess.STDOUT, preexec_fn=_set_pdeathsig)


def _reap(proc: subprocess.Popen, timeout: float = 30) -> None:
    """At exit of rank 0: let the scheduler finish, kill it if it does not."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_listening(host: str, port: int, proc: subprocess.Popen, timeout: int) -> None:
    """Block until the scheduler accepts connections. A worker that dials a scheduler still
    importing mindspore was seen to stay unregistered until the cluster timed out."""
    import time

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


def _redirect_output(log_dir: str, rank: int) -> None:
    """mpi mode: rank r's stdout/stderr go to LOG_DIR/worker_r.log, as msrun does.

    Rank 0 also keeps the console (mpirun forwards it): Python-level output is teed.
    """
    path = Path(log_dir) / f"worker_{rank}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    if rank == 0:
        sys.stdout = _Tee(sys.stdout, f)
        sys.stderr = _Tee(sys.stderr, f)
    else:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)


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


def _mpi_world() -> Any:
    """MPI's world communicator (mpi4py is imported here, before mindspore)."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise ClusterError("started by an MPI launcher but mpi4py is not installed: "
                           "pip install '.[mpi]' (or build mpi4py against your site MPI)") from None
    return MPI.COMM_WORLD


def _mpi_bootstrap(comm: Any, env: Mapping[str, str], device: str,
                   timeout: int) -> tuple[list[str], Callable[[str | None], None]]:
    """Make an MPI-started job a MindSpore dynamic cluster (sets this rank's MS_* variables).

    Returns every rank's host name and `ready(error)`, to call just before `init()`: it blocks
    until the scheduler accepts connections (a worker that dials a scheduler still importing
    MindSpore was seen to stay unregistered until the cluster timed out) and raises on every
    rank if any rank reports an error. Splitting the two lets every rank import MindSpore
    while the scheduler does (~3 s less to the first step).
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    hosts = comm.allgather(socket.gethostname())
    info, proc = None, None
    if rank == 0:
        try:
            info = _scheduler_address(env, single_host=len(set(hosts)) == 1)
            proc = _start_scheduler(*info, size, device, env.get("LOG_DIR"), timeout)
            # Registered before mindspore is imported, so it runs after mindspore's own exit
            # hook has unregistered this worker: the scheduler ends once every worker has.
            atexit.register(_reap, proc)
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


def _scheduler_address(env: Mapping[str, str], single_host: bool) -> tuple[str, int]:
    """(host, port) for the scheduler: MASTER_ADDR/MASTER_PORT when set, else chosen here."""
    port_s = env.get("MASTER_PORT", "")
    if port_s:
        if not port_s.isdigit() or not 1024 <= int(port_s) <= 65535:
            raise ClusterError(f"MASTER_PORT must be a port number in 1024-65535, got {port_s!r}")
        if not port_is_free(int(port_s)):
            raise ClusterError(f"MASTER_PORT {port_s} is already in use on this host; "
                               "pick a free port or unset it to let rank 0 choose one")
    port = int(port_s) if port_s else free_port()
    host = env.get("MASTER_ADDR", "")
    if not host:
        if single_host:
            host = "127.0.0.1"
        else:
            host = socket.gethostbyname(socket.gethostname())
            if host.startswith("127."):
                raise ClusterError(f"ranks span several hosts but this host's name resolves to "
                                   f"{host}; set MASTER_ADDR to an address the others can reach")
    return host, port


def check_launch(expected_world_size: int = 0,
                 env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(launch method, world size) from the launcher's variables, without starting anything.

    Raises ClusterError when `expected_world_size` (0 = any) differs from the launcher's.
    """
    env = os.environ if env is None else env
    launch = detect_launch(env)
    if launch == "single":
        world = 1
    elif launch == "msrun":
        world = int(env.get("MS_WORKER_NUM", "1") or 1)
    else:
        world = max(int(env[v]) for v in _MPI_SIZE_VARS if env.get(v, "").isdigit())
    timeout = env.get("CLUSTER_TIMEOUT", str(DEFAULT_CLUSTER_TIMEOUT))
    if not timeout.isdigit() or int(timeout) < 1:
        raise ClusterError(f"CLUSTER_TIMEOUT must be a whole number of seconds >= 1, "
                           f"got {timeout!r}")
    if expected_world_size and expected_world_size != world:
        raise ClusterError(f"--world_size {expected_world_size} does not match the {world} "
                           f"rank(s) the {launch} launcher started; pass --world_size {world} "
                           "or 0")
    return launch, world


def setup(device: str, expected_world_size: int = 0,
          env: Mapping[str, str] | None = None) -> Cluster:
    """Recognise the launcher, start the process group if there is more than one rank.

    Everything that can be refused (world size, MPI, scheduler port) is refused before any
    process group starts.
    """
    env = os.environ if env is None else env
    launch, world = check_launch(expected_world_size, env)
    if launch == "single":
        _set_device(device, device_id(launch, env))
        return Cluster(device=device)

    comm, local_rank, hosts, scheduler_ready = None, 0, [], None
    if launch == "mpi":
        comm = _mpi_world()
        if comm.Get_size() != world:
            raise ClusterError(f"the launcher started {world} tasks but MPI sees "
                               f"{comm.Get_size()}: under srun pass --mpi=pmix (or pmi2) and "
                               "use an mpi4py built for that MPI")
        timeout = int(env.get("CLUSTER_TIMEOUT", DEFAULT_CLUSTER_TIMEOUT))
        hosts, scheduler_ready = _mpi_bootstrap(comm, env, device, timeout)
        from mpi4py import MPI

        local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()  # index on this host
        error = None
        try:  # whatever fails here, every rank must hear it in ready(), or the others wait
            if env.get("LOG_DIR"):
                _redirect_output(env["LOG_DIR"], comm.Get_rank())
            _set_device(device, device_id(launch, env, local_rank))
        except Exception as e:  # noqa: BLE001 - passed on as one line to every rank
            error = f"rank {comm.Get_rank()}: {e}"
        scheduler_ready(error)
    else:
        _set_device(device, device_id(launch, env, local_rank))
    from mindspore.communication import get_group_size, get_rank, init

    init()  # on msrun's scheduler this serves the cluster; we never get past it there
    if os.environ.get("MS_ROLE") == "MS_SCHED":
        sys.exit(0)
    rank, world = get_rank(), get_group_size()
    assert comm is None or comm.Get_rank() == rank, "MS_NODE_ID must pin the MindSpore rank"
    hosts = hosts or _gather_hosts(world)
    return Cluster(rank=rank, world_size=world, launch=launch, device=device, hosts=hosts,
                   _comm=comm)


def _gather_hosts(world: int) -> list[str]:
    """Every rank's host name, in rank order, through MindSpore's AllGather (no mpi4py here)."""
    import mindspore as ms
    from mindspore import ops

    name = socket.gethostname().encode()[:64].ljust(64, b"\0")
    mine = ms.Tensor(np.frombuffer(name, dtype=np.uint8).astype(np.float32)[None])
    rows = ops.AllGather()(mine).asnumpy().astype(np.uint8)
    assert rows.shape == (world, 64)
    return [bytes(r).rstrip(b"\0").decode(errors="replace") for r in rows]


def device_id(launch: str, env: Mapping[str, str], local_rank: int = 0) -> int | None:
    """Which accelerator this process drives: None on CPU; msrun exports DEVICE_ID per worker;
    an MPI job uses the rank's index on its host; one process takes DEVICE_ID (default 0)."""
    if launch == "mpi":
        return local_rank
    return int(env.get("DEVICE_ID", "0") or 0)


def _set_device(device: str, dev_id: int | None) -> None:
    import mindspore as ms

    if device == "CPU" or dev_id is None:
        ms.set_device(device)
    else:
        ms.set_device(device, dev_id)


def term_workers(launcher_pid: int) -> int:
    """Send SIGTERM to the MindSpore workers under `launcher_pid` (msrun).

    msrun neither forwards SIGTERM nor keeps its workers in its process group (each gets its own
    session), so a scheduler's SIGTERM to msrun would never reach the trainer's checkpoint-and-
    exit path. The scheduler process is left alone: the workers still need it to finish.
    """
    import psutil

    try:
        children = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for p in children:
        try:
            if p.environ().get("MS_ROLE") == "MS_WORKER":
                p.send_signal(signal.SIGTERM)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return 0


def preflight(argv: list[str]) -> int:
    """Helpers for the launch scripts: `port-free PORT` (exit 0 if free, else a one-line error
    and 2), `free-port` (print one), `launch-vars` (the variables that make a launch),
    `term-workers PID` (forward SIGTERM to msrun's workers)."""
    if len(argv) == 2 and argv[0] == "port-free" and argv[1].isdigit():
        port = int(argv[1])
        if port_is_free(port):
            return 0
        print(f"error: MASTER_PORT {port} is already in use; pick a free port", file=sys.stderr)
        return 2
    if argv == ["free-port"]:
        print(free_port())
        return 0
    if argv == ["launch-vars"]:
        print(" ".join(LAUNCH_VARS))
        return 0
    if len(argv) == 2 and argv[0] == "term-workers" and argv[1].isdigit():
        return term_workers(int(argv[1]))
    print("usage: python -m train.cluster {port-free PORT | free-port | launch-vars | "
          "term-workers PID}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(preflight(sys.argv[1:]))
