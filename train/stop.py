"""The signal story, decided once: SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 all mean "stop at the
next safe point, keep everything resumable, exit 75".

- Schedulers send SIGTERM before a kill (Slurm: `KillWait` later, SIGKILL); Slurm's
  `--signal=USR1@S` warns S seconds before the time limit; a user presses Ctrl-C. All three
  ask for the same thing, so they are handled the same way.
- The request is recorded the moment the signal arrives, even while the main thread is inside
  MindSpore (cluster start-up, a graph): SIGTERM and SIGUSR1 are blocked in every thread and
  taken by one thread of ours with `sigwaitinfo`. Nothing else happens in that thread: the loop
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

`install()` must run before any thread exists (first thing in `main()`, before NumPy or
MindSpore start theirs), so that every later thread inherits the blocked signals.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

PREEMPTED_EXIT = 75  # EX_TEMPFAIL, "try again later": the folder is safe to --resume
# SIGIO: the kernel's notice that a process is opening the mapped data file for writing
# (pipeline/guard.py's lease): stop before it may go on.
WAITED = {signal.SIGTERM, signal.SIGUSR1, signal.SIGIO}
DATA_REWRITTEN = "the data file is being rewritten by another process (SIGIO, a lease break)"


class Preempted(RuntimeError):
    """A stop was requested; the run stopped at a safe point (the message says where)."""


class StopRequest:
    """Records the first stop signal for the loop to act on (later ones change nothing). One
    run at a time owns the process's signals: the newest installed (train.fit may run several
    in one process; one waiting thread serves them all)."""

    _active: StopRequest | None = None
    _waiter: threading.Thread | None = None

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def install(self) -> StopRequest:
        """Take over SIGTERM, SIGINT and SIGUSR1 for this process."""
        StopRequest._active = self
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

    @property
    def requested(self) -> bool:
        """True once any stop signal has arrived."""
        return self.signal_name is not None

    def check(self, where: str = "before the run started") -> None:
        """Raise Preempted if a stop was requested: for long work outside the training loop
        (a data file's conversion, a wait for another process's)."""
        if self.requested:
            raise Preempted(f"{self.signal_name}: stopped {where}; nothing was trained")


def _wait() -> None:
    while True:
        info = signal.sigwaitinfo(WAITED)
        name = signal.Signals(info.si_signo).name
        if info.si_signo == signal.SIGTERM and info.si_pid == os.getpid():
            name = "SIGINT"  # MindSpore's SIGINT handler re-sends Ctrl-C as SIGTERM
        elif info.si_signo == signal.SIGIO:
            name = DATA_REWRITTEN
        if StopRequest._active is not None:
            StopRequest._active.request(name)


def _handle(signum: int, frame: Any) -> None:
    if StopRequest._active is not None:
        StopRequest._active.request(signal.Signals(signum).name)


def unblock_in_child() -> None:
    """For `preexec_fn` of a child process: it must not inherit the blocked signals."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WAITED)
