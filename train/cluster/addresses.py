"""Addresses and ports: where rank 0's scheduler listens, and whether a port is free.

MindSpore's scheduler takes only an IP, so `MASTER_ADDR` (a host name or an IP) is resolved
here, and a name that does not resolve is refused before anything starts. Unset on a multi-host
job, rank 0 publishes the address of its interface that routes to the other ranks' hosts (never
127.x, which a Debian host name often resolves to); `MASTER_IFACE` picks the interface on
multi-NIC nodes. Hosts are told apart by name and network namespace (`network_id`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from train.cluster.env import ClusterError


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


def route_source(peer: str) -> str | None:
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
                               f"{me}; interfaces: {', '.join(interfaces())}")
        return addrs[0]
    mine = set(local_ipv4s())
    for addrs in peers.values():
        for addr in addrs:
            src = route_source(addr)
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


def interfaces() -> list[str]:
    """This host's interface names."""
    import psutil

    return sorted(psutil.net_if_addrs())

