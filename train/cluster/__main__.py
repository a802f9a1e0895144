"""`python -m train.cluster COMMAND`: helpers for the launch scripts (one line and exit 2 on a
problem)."""

from __future__ import annotations

import sys

from train.cluster.addresses import free_port, port_is_free, resolve_host, route_source
from train.cluster.env import LAUNCH_VARS, ClusterError
from train.cluster.process import exec_supervised, term_workers


def preflight(argv: list[str]) -> int:
    """Helpers for the launch scripts (one line and exit 2 on a problem):
    `port-free PORT`, `free-port`, `launch-vars`, `resolve HOST` (print its IPv4 address),
    `route-to HOST` (print this host's address on the route to HOST),
    `term-workers PID [SIGNAME]` (forward a signal to msrun's workers) and
    `exec-supervised CMD ...` (run msrun or mpirun in a session of its own that dies with the
    script, with SIGTERM, SIGHUP and SIGUSR1 ignored until the program sets its own
    handlers)."""
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
            src = route_source(resolve_host(argv[1], "host"))
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
