"""train/cluster/addresses.py and the port choice of train/cluster/mpi.py: where the scheduler
listens, and busy or malformed ports refused in one line."""

import socket
import sys

import pytest
from helpers import run

from train.cluster import addresses as ad
from train.cluster import mpi
from train.cluster.env import ClusterError


def test_master_address_choices(monkeypatch):
    assert ad.master_address({}, "me", {}) == "127.0.0.1"  # every rank on this host
    assert ad.master_address({"MASTER_ADDR": "localhost"}, "me", {}) == "127.0.0.1"  # a name
    with pytest.raises(ClusterError, match="MASTER_ADDR 'no.such.host.invalid' does not "
                                              "resolve to an IPv4 address"):
        ad.master_address({"MASTER_ADDR": "no.such.host.invalid"}, "me", {})
    with pytest.raises(ClusterError, match="resolves to 127.0.0.1 on me, which the other "
                                              "hosts \\(b\\) cannot reach"):
        ad.master_address({"MASTER_ADDR": "localhost"}, "me", {"b": ["10.9.9.2"]})
    # Several hosts: the local address on the route to another host, never loopback.
    monkeypatch.setattr(ad, "local_ipv4s", lambda iface=None: ["10.9.9.1", "192.168.5.5"])
    monkeypatch.setattr(ad, "route_source", lambda peer: "10.9.9.1")
    assert ad.master_address({}, "a", {"b": ["10.9.9.2"]}) == "10.9.9.1"
    monkeypatch.setattr(ad, "route_source", lambda peer: None)
    with pytest.raises(ClusterError, match="no interface of a routes to the others"):
        ad.master_address({}, "a", {"b": ["10.9.9.2"]})
    monkeypatch.setattr(ad, "local_ipv4s", lambda iface=None: [] if iface else ["10.9.9.1"])
    with pytest.raises(ClusterError, match="MASTER_IFACE 'eth7' has no IPv4 address"):
        ad.master_address({"MASTER_IFACE": "eth7"}, "a", {"b": ["10.9.9.2"]})


def test_scheduler_port_choices():
    assert ad.port_is_free(mpi.scheduler_port({}))
    free = ad.free_port()
    assert mpi.scheduler_port({"MASTER_PORT": str(free)}) == free
    with pytest.raises(ClusterError, match="MASTER_PORT must be a port number"):
        mpi.scheduler_port({"MASTER_PORT": "80"})


@pytest.mark.integration
def test_busy_port_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(ClusterError, match=f"MASTER_PORT {busy} is already in use"):
            mpi.scheduler_port({"MASTER_PORT": str(busy)})
        r = run([sys.executable, "-m", "train.cluster", "port-free", str(busy)], tmp_path)
        assert r.returncode == 2 and f"MASTER_PORT {busy} is already in use" in r.stderr
    r = run([sys.executable, "-m", "train.cluster", "port-free", str(busy)], tmp_path)
    assert r.returncode == 0


