"""Process control around msrun: its workers die with it, it survives the stop signals the
launch script forwards, and the script can signal its workers.

msrun puts its workers in sessions of their own and forwards no signal, so neither process-group
tracking nor a signal to msrun reaches them; these helpers (used by the trainer and, through
`python -m train.cluster`, by launch/run_msrun.sh) make the workers' lifetime follow msrun's.
"""

from __future__ import annotations

import ctypes
import os
import signal


def set_pdeathsig() -> None:
    """Die with SIGKILL when the parent dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def die_with_launcher() -> None:
    """msrun's workers and scheduler: end when msrun ends. msrun puts workers in sessions of
    their own, so a SIGKILL to msrun (an out-of-memory killer, a scheduler) would leave them
    training for minutes; the kernel now kills them with it. msrun starts them from its main
    thread, which lives as long as msrun (PDEATHSIG follows the parent thread)."""
    parent = os.getppid()
    set_pdeathsig()
    if os.getppid() != parent:  # the launcher died before the line above ran
        os._exit(137)


def exec_supervised(argv: list[str]) -> None:
    """Become `argv` in a session of its own, killed when our parent (the launch script) dies,
    with SIGTERM, SIGHUP and SIGUSR1 ignored: a scheduler that signals every process of a job
    (Slurm's step) must not kill msrun before its workers have checkpointed; the script
    forwards those signals to the workers itself. (The workers re-install their own
    handlers; so does mpirun, which the mpirun script signals with SIGUSR1 to forward it to
    its ranks.)"""
    try:
        os.setsid()
    except PermissionError:  # already a group leader (a shell with job control): stay there
        pass
    set_pdeathsig()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    os.execvp(argv[0], argv)


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

