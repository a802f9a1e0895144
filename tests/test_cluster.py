"""train/cluster.py: launcher detection, device choice, pre-flight checks, one-rank helpers."""

import socket
import sys

import numpy as np
import pytest
from conftest import run

from train import cluster as cl


@pytest.mark.parametrize("env,expected", [
    ({}, "single"),
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "8"}, "msrun"),
    ({"MS_ROLE": "MS_SCHED"}, "msrun"),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "mpi"),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, "single"),
    ({"PMI_SIZE": "2"}, "mpi"),
    ({"SLURM_STEP_NUM_TASKS": "16", "SLURM_PROCID": "3"}, "mpi"),
    ({"SLURM_PROCID": "0"}, "single"),  # a batch script itself, not an srun task
])
def test_detect_launch(env, expected):
    assert cl.detect_launch(env) == expected


def test_device_id_per_launcher():
    assert cl.device_id("single", {}) == 0
    assert cl.device_id("single", {"DEVICE_ID": "3"}) == 3
    assert cl.device_id("msrun", {"DEVICE_ID": "5"}) == 5  # msrun exports it per worker
    assert cl.device_id("mpi", {"DEVICE_ID": "5"}, local_rank=2) == 2  # index on the host


def test_single_process_is_rank_0_of_1():
    c = cl.setup("CPU", 0, env={})
    assert (c.rank, c.world_size, c.launch, c.is_main) == (0, 1, "single", True)
    assert c.grad_reducer([]) is None
    np.testing.assert_array_equal(c.all_sum(np.array([1.5, 2.0])), [1.5, 2.0])
    assert c.broadcast_int(1_790_000_000) == 1_790_000_000
    c.check_identical([np.ones(3, np.float32)])  # one rank: trivially identical


def test_world_size_mismatch_is_refused_before_anything_starts():
    with pytest.raises(cl.ClusterError, match="--world_size 2 does not match the 1 rank"):
        cl.setup("CPU", 2, env={})
    with pytest.raises(cl.ClusterError, match="--world_size 2 does not match the 8 rank"):
        cl.setup("CPU", 2, env={"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "8"})
    with pytest.raises(cl.ClusterError, match="--world_size 3 does not match the 4 rank"):
        cl.setup("CPU", 3, env={"OMPI_COMM_WORLD_SIZE": "4"})


def test_scheduler_address_choices(monkeypatch):
    host, port = cl._scheduler_address({}, single_host=True)
    assert host == "127.0.0.1" and cl.port_is_free(port)
    free = cl.free_port()
    assert cl._scheduler_address({"MASTER_ADDR": "node0", "MASTER_PORT": str(free)}, True) == (
        "node0", free)
    with pytest.raises(cl.ClusterError, match="MASTER_PORT must be a port number"):
        cl._scheduler_address({"MASTER_PORT": "80"}, True)
    monkeypatch.setattr(cl.socket, "gethostbyname", lambda _: "127.0.1.1")
    with pytest.raises(cl.ClusterError, match="set MASTER_ADDR"):
        cl._scheduler_address({}, single_host=False)


def test_busy_port_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(cl.ClusterError, match=f"MASTER_PORT {busy} is already in use"):
            cl._scheduler_address({"MASTER_PORT": str(busy)}, True)
        r = run([sys.executable, "-m", "train.cluster", "port-free", str(busy)], tmp_path)
        assert r.returncode == 2 and f"MASTER_PORT {busy} is already in use" in r.stderr
    r = run([sys.executable, "-m", "train.cluster", "port-free", str(busy)], tmp_path)
    assert r.returncode == 0


def test_check_identical_catches_ranks_that_differ(monkeypatch):
    """Three simulated ranks: the all-reduce returns the sum of their contributions."""
    c = cl.Cluster(rank=0, world_size=3)
    mine = [np.array([1.0, 2.0], np.float32)]
    other = [np.array([1.0, 2.0000002], np.float32)]  # one bit away
    monkeypatch.setattr(c, "all_sum", lambda v: 3 * np.asarray(v, np.float32))
    c.check_identical(mine)  # all three hold the same bytes
    monkeypatch.setattr(c, "all_sum",
                        lambda v: 2 * np.asarray(v, np.float32) + cl.checksum_terms(other))
    with pytest.raises(RuntimeError, match="parameters differ across ranks"):
        c.check_identical(mine)


def test_bad_cluster_timeout_is_refused():
    with pytest.raises(cl.ClusterError, match="CLUSTER_TIMEOUT must be a whole number"):
        cl.check_launch(0, {"CLUSTER_TIMEOUT": "soon"})
