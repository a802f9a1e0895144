"""The signal story, decided once: SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 all mean "stop at the
next safe point, keep everything resumable, exit 75".

- Schedulers send SIGTERM before a kill (Slurm: `KillWait` later, SIGKILL); Slurm's
  `--signal=USR1@S` warns S seconds before the time limit; a user presses Ctrl-C. All three
  ask for the same thing, so they are handled the same way.
- The handlers are installed first thing in `main()`, so a signal during start-up is caught too.
  A handler only records the request (it must not write files); the loop acts on it at a step
  boundary (several ranks: at the next agreement point, about a second apart): rank 0 writes a
  checkpoint, every rank exits with `PREEMPTED_EXIT`. A signal before the first step needs no
  checkpoint: the run folder already holds its config, and `--resume` starts it from step 0.
- Further signals while stopping are absorbed (noted in the log): a second SIGTERM or Ctrl-C must
  not turn a clean stop into a torn one. SIGKILL remains the way to end a process at once, and a
  SIGKILL at any moment leaves the folder resumable from its newest complete checkpoint.
"""

from __future__ import annotations

import signal
from typing import Any

PREEMPTED_EXIT = 75  # EX_TEMPFAIL, "try again later": the folder is safe to --resume
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preempted(RuntimeError):
    """A stop was requested; the run stopped at a safe point (the message says where)."""


class StopRequest:
    """Records the first stop signal (and counts later ones) for the loop to act on."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.count = 0

    def install(self) -> StopRequest:
        """Take over SIGTERM, SIGINT and SIGUSR1 for this process."""
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    def request(self, name: str) -> None:
        """Ask for a stop from inside the program (as a signal would)."""
        self.count += 1
        self.signal_name = self.signal_name or name

    @property
    def requested(self) -> bool:
        """True once any stop signal has arrived."""
        return self.signal_name is not None
