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


def test_master_address_choices(monkeypatch):
    assert cl.master_address({}, "me", {}) == "127.0.0.1"  # every rank on this host
    assert cl.master_address({"MASTER_ADDR": "localhost"}, "me", {}) == "127.0.0.1"  # a name
    with pytest.raises(cl.ClusterError, match="MASTER_ADDR 'no.such.host.invalid' does not "
                                              "resolve to an IPv4 address"):
        cl.master_address({"MASTER_ADDR": "no.such.host.invalid"}, "me", {})
    with pytest.raises(cl.ClusterError, match="resolves to 127.0.0.1 on me, which the other "
                                              "hosts \\(b\\) cannot reach"):
        cl.master_address({"MASTER_ADDR": "localhost"}, "me", {"b": ["10.9.9.2"]})
    # Several hosts: the local address on the route to another host, never loopback.
    monkeypatch.setattr(cl, "local_ipv4s", lambda iface=None: ["10.9.9.1", "192.168.5.5"])
    monkeypatch.setattr(cl, "_route_source", lambda peer: "10.9.9.1")
    assert cl.master_address({}, "a", {"b": ["10.9.9.2"]}) == "10.9.9.1"
    monkeypatch.setattr(cl, "_route_source", lambda peer: None)
    with pytest.raises(cl.ClusterError, match="no interface of a routes to the others"):
        cl.master_address({}, "a", {"b": ["10.9.9.2"]})
    monkeypatch.setattr(cl, "local_ipv4s", lambda iface=None: [] if iface else ["10.9.9.1"])
    with pytest.raises(cl.ClusterError, match="MASTER_IFACE 'eth7' has no IPv4 address"):
        cl.master_address({"MASTER_IFACE": "eth7"}, "a", {"b": ["10.9.9.2"]})


def test_scheduler_port_choices():
    assert cl.port_is_free(cl._scheduler_port({}))
    free = cl.free_port()
    assert cl._scheduler_port({"MASTER_PORT": str(free)}) == free
    with pytest.raises(cl.ClusterError, match="MASTER_PORT must be a port number"):
        cl._scheduler_port({"MASTER_PORT": "80"})


def test_busy_port_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(cl.ClusterError, match=f"MASTER_PORT {busy} is already in use"):
            cl._scheduler_port({"MASTER_PORT": str(busy)})
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


@pytest.mark.parametrize("env,match", [
    ({"CLUSTER_TIMEOUT": "soon"}, "CLUSTER_TIMEOUT must be a whole number of seconds >= 1"),
    ({"MS_NODE_TIMEOUT": "0"}, "MS_NODE_TIMEOUT must be a whole number of seconds >= 1"),
    ({"OMPI_COMM_WORLD_SIZE": "2", "MASTER_PORT": "99999"}, "MASTER_PORT must be a port number"),
    ({"OMPI_COMM_WORLD_SIZE": "2", "MASTER_ADDR": "x.invalid"}, "MASTER_ADDR 'x.invalid' does"),
    ({"OMPI_COMM_WORLD_SIZE": "2", "MASTER_IFACE": "nope9"}, "MASTER_IFACE 'nope9' is not an"),
])
def test_bad_launch_variables_are_refused(env, match):
    with pytest.raises(cl.ClusterError, match=match):
        cl.check_launch(0, env)


def test_device_probe():
    cl.probe_device("CPU", {})
    with pytest.raises(cl.ClusterError, match="--device Ascend: no /dev/davinci"):
        cl.probe_device("Ascend", {})
    cl.probe_device("Ascend", {"TRAIN_NO_DEVICE_PROBE": "1"})
