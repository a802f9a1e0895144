"""Several hosts on one machine, for the launch tests: each host is a network namespace (its
own interfaces and 127.0.0.1) plus a UTS namespace (its own host name), joined by a veth pair
or a bridge. Traffic flows only between these namespaces; nothing is routed elsewhere. Name
resolution comes from `/etc/netns/<ns>/hosts`, which `ip netns exec` mounts as /etc/hosts.

Everything is created by `SimulatedHosts.__enter__` and removed by `__exit__`, processes
included (found by namespace). Needs root and iproute2; `available()` says why not otherwise.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

NETNS_ETC = Path("/etc/netns")


def available() -> str | None:
    """None if hosts can be simulated here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "simulating hosts needs root (network namespaces)"
    if not all(shutil.which(c) for c in ("ip", "unshare", "nsenter")):
        return "simulating hosts needs iproute2's `ip` and util-linux's `unshare`, `nsenter`"
    probe = f"msdpprobe{uuid.uuid4().hex[:6]}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class SimulatedHosts:
    """`n` hosts named <prefix>0..: `host(i).run(cmd)` runs a command there."""

    def __init__(self, n: int = 2, subnet: str = "10.77") -> None:
        tag = uuid.uuid4().hex[:5]
        self.names = [f"h{tag}{i}" for i in range(n)]
        self.namespaces = [f"msdp{tag}{i}" for i in range(n)]
        self.addresses = [f"{subnet}.{int(tag, 16) % 250}.{i + 1}" for i in range(n)]
        self.bridge = f"br{tag}"

    def __enter__(self) -> SimulatedHosts:
        try:
            self._create()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _create(self) -> None:
        # A bridge in the first namespace; every host joins it with a veth pair.
        hosts_file = "127.0.0.1 localhost\n" + "".join(
            f"{a} {h}\n" for h, a in zip(self.names, self.addresses))
        for ns in self.namespaces:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            (NETNS_ETC / ns).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / ns / "hosts").write_text(hosts_file)
        hub = self.namespaces[0]
        _ip("-n", hub, "link", "add", self.bridge, "type", "bridge")
        _ip("-n", hub, "link", "set", self.bridge, "up")
        for i, (ns, addr) in enumerate(zip(self.namespaces, self.addresses)):
            inner, outer = f"e{i}", f"p{i}{self.bridge}"[:15]
            _ip("-n", hub, "link", "add", outer, "type", "veth", "peer", "name", inner,
                "netns", ns)
            _ip("-n", hub, "link", "set", outer, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")

    def __exit__(self, *exc: object) -> None:
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)

    def prefix(self, i: int) -> list[str]:
        """The command prefix that runs a command on host i: its network namespace, its own
        host name (UTS namespace) and its /etc/hosts (a private mount namespace). Not `ip netns
        exec`, which also mounts a sysfs without the cgroup hierarchy slurmd needs."""
        ns, name = self.namespaces[i], self.names[i]
        return ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--uts", "--mount", "sh", "-c",
                f'hostname {name} && mount --bind /etc/netns/{ns}/hosts /etc/hosts && '
                'exec "$@"', "sh"]

    def agent(self, path: Path) -> Path:
        """An Open MPI remote-launch agent (`plm_rsh_agent`) that enters the named host's
        namespaces instead of ssh-ing to it."""
        cases = "\n".join(f'  {h}) exec {shlex.join(self.prefix(i))} sh -c "$*" ;;'
                          for i, h in enumerate(self.names))
        path.write_text("#!/bin/sh\n# plm_rsh_agent: HOST CMD -> run CMD on HOST\n"
                        f'host=$1; shift\ncase "$host" in\n{cases}\n'
                        '  *) echo "unknown host $host" >&2; exit 1 ;;\nesac\n')
        path.chmod(0o755)
        return path
