"""The signal story, decided once: SIGTERM, SIGINT (Ctrl-C), SIGHUP and SIGUSR1 all mean "stop
at the next safe point, keep everything resumable, exit 75".

- Schedulers send SIGTERM before a kill (Slurm: `KillWait` later, SIGKILL); Slurm's
  `--signal=USR1@S` warns S seconds before the time limit; a user presses Ctrl-C or closes the
  terminal or ssh session (SIGHUP). All ask for the same thing, so they are handled alike.
- The request is recorded the moment the signal arrives, even while the main thread is inside
  MindSpore (a graph): SIGTERM, SIGHUP and SIGUSR1 are blocked in every thread and taken by
  one thread of ours with `sigwaitinfo`. Nothing else happens in that thread: the loop
  acts on the request at a step boundary (several ranks: at the next agreement point, about a
  second apart): rank 0 writes a checkpoint, every rank exits with `PREEMPTED_EXIT`. A signal
  before the first step needs no checkpoint: the run folder already holds its config, and
  `--resume` starts it from step 0.
- MindSpore installs its own SIGINT handler whenever it runs a graph, and that handler turns
  Ctrl-C into a SIGTERM the process sends itself. The waiting thread sees the sender
  (`si_pid`), so such a SIGTERM is reported as the SIGINT it was.
- Further signals while stopping are absorbed (counted): a second SIGTERM or Ctrl-C must not
  turn a clean stop into a torn one. SIGKILL remains the way to end a process at once, and a
  SIGKILL at any moment leaves the folder resumable from its newest complete checkpoint.
- While a rank joins the cluster, up to MindSpore's `init()` (`forming()`), a stop ends the
  process at once (one line, 75): nothing was trained, the run folder is not yet touched, and
  a rank blocked in an MPI call would otherwise wait for peers that are stopping too. `init()`
  itself holds the GIL until the cluster has formed (measured: no Python thread runs
  meanwhile): a stop that comes inside it is acted on at the first agreement point; a rank
  left inside it by a peer that stopped before is ended by its launcher (mpirun and srun end a
  job whose rank exited non-zero; run_msrun.sh ends msrun once a worker said `stopped:`).
- mpirun forwards only SIGUSR1 to its ranks: `run_mpirun.sh` writes the signal it was sent into
  the file `TRAIN_STOP_SIGNAL_FILE` names, and a SIGUSR1 is reported as that signal.

`install()` must run before any thread exists (first thing in `python -m train`, before NumPy
or MindSpore start theirs), so that every later thread inherits the blocked signals.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

# (No typing or dataclasses here: `python -m train` imports this module first, and a Ctrl-C
# before its handlers exist is a traceback; every millisecond before them counts.)
PREEMPTED_EXIT = 75  # EX_TEMPFAIL, "try again later": the folder is safe to --resume
# SIGIO: the kernel's notice that a process is opening the mapped data file for writing
# (pipeline/guard.py's lease): stop before it may go on.
WAITED = {signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGIO}
SIGNAL_FILE = "TRAIN_STOP_SIGNAL_FILE"  # names the signal behind a forwarded SIGUSR1
STOP_NAMES = ("TERM", "INT", "HUP", "USR1")
# A stop a launcher's trap took after its last check and before its exec: the trainer starts
# with this set to the signal's name, and stops at once.
PENDING = "TRAIN_PENDING_STOP"
DATA_REWRITTEN = "the data file is being rewritten by another process (SIGIO, a lease break)"


class Preempted(RuntimeError):
    """A stop was requested; the run stopped at a safe point (the message says where)."""


class StopRequest:
    """Records the first stop signal for the loop to act on (later ones change nothing). One
    run at a time owns the process's signals: the newest installed (train.fit may run several
    in one process; one waiting thread serves them all)."""

    _active: StopRequest | None = None
    _waiter: threading.Thread | None = None

    def __init__(self, early: bool = False) -> None:
        self.signal_name: str | None = None
        self.early = early  # installed before the run: the run takes over its request
        self._forming: str | None = None  # where a stop now ends the process at once

    def install(self) -> StopRequest:
        """Take over SIGTERM, SIGINT, SIGHUP and SIGUSR1 for this process."""
        before, StopRequest._active = StopRequest._active, self  # from now on signals come here
        if before is not None and before.early and before.signal_name is not None:
            self.request(before.signal_name)  # `python -m train` installed them first
        pending = os.environ.pop(PENDING, "")  # (once: not for a later run of train.fit)
        if pending in STOP_NAMES:  # a launcher's trap took it just before its exec
            self.request(f"SIG{pending}")
        signal.signal(signal.SIGINT, _handle)
        for sig in WAITED:  # a fallback: no thread should leave them unblocked
            signal.signal(sig, _handle)
        if StopRequest._waiter is None:
            signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
            StopRequest._waiter = threading.Thread(target=_wait, name="stop-signals",
                                                   daemon=True)
            StopRequest._waiter.start()
        return self

    def request(self, name: str) -> None:
        """Ask for a stop (as a signal does)."""
        if self.signal_name is None:
            self.signal_name = name
        if self._forming is not None:
            self._abandon()

    def forming(self, where: str) -> _Forming:
        """A context in which a stop ends the process at once with 75 (joining a cluster:
        nothing trained, nothing written); a stop already requested ends it on entry."""
        return _Forming(self, where)

    def _abandon(self) -> None:
        try:
            print(f"stopped: {self.signal_name}: stopped {self._forming}; nothing was trained",
                  file=sys.stderr, flush=True)
            sys.stdout.flush()
        finally:  # no exit hooks: MindSpore's and MPI's would wait for the peers
            os._exit(PREEMPTED_EXIT)

    @property
    def requested(self) -> bool:
        """True once any stop signal has arrived."""
        return self.signal_name is not None

    def check(self, where: str = "before the run started") -> None:
        """Raise Preempted if a stop was requested: for long work outside the training loop
        (a data file's conversion, a wait for another process's)."""
        if self.requested:
            raise Preempted(f"{self.signal_name}: stopped {where}; nothing was trained")


class _Forming:
    """StopRequest.forming()'s context."""

    def __init__(self, stop: StopRequest, where: str) -> None:
        self.stop, self.where = stop, where

    def __enter__(self) -> None:
        self.stop._forming = self.where
        if self.stop.requested:
            self.stop._abandon()

    def __exit__(self, *exc: object) -> None:
        self.stop._forming = None
        if self.stop.requested and exc[0] is None:
            self.stop._forming = self.where
            self.stop._abandon()


def _wait() -> None:
    while True:
        info = signal.sigwaitinfo(WAITED)
        name = signal.Signals(info.si_signo).name
        if info.si_signo == signal.SIGTERM and info.si_pid == os.getpid():
            name = "SIGINT"  # MindSpore's SIGINT handler re-sends Ctrl-C as SIGTERM
        elif info.si_signo == signal.SIGUSR1:
            name = forwarded_name()
        elif info.si_signo == signal.SIGIO:
            name = DATA_REWRITTEN
        if StopRequest._active is not None:
            StopRequest._active.request(name)


def forwarded_name() -> str:
    """The signal a launcher was sent and forwarded as SIGUSR1 (run_mpirun.sh: mpirun forwards
    no other), as the file TRAIN_STOP_SIGNAL_FILE holds it; SIGUSR1 if there is none (a rank
    on a host that does not share LOG_DIR, Slurm's --signal)."""
    path = os.environ.get(SIGNAL_FILE)
    if not path:
        return "SIGUSR1"
    try:  # untrusted: a few bytes, one of the stop signals' names, or nothing
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            text = os.read(fd, 16).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
    except OSError:
        return "SIGUSR1"
    return f"SIG{text}" if text in STOP_NAMES else "SIGUSR1"


def _handle(signum: int, frame: object) -> None:
    if StopRequest._active is not None:
        StopRequest._active.request(signal.Signals(signum).name)


def install_early() -> StopRequest:
    """Take the stop signals now, before the run's imports (`python -m train`, msrun's
    trainer.py); the run's own StopRequest takes over any request made meanwhile."""
    return StopRequest(early=True).install()


def unblock_in_child() -> None:
    """For `preexec_fn` of a child process: it must not inherit the blocked signals."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WAITED)
