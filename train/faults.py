"""Fault injection for tests, from one environment variable: `TRAIN_FAULT`.

Faults never come from flags or a config file, so a user's saved config can never carry one.
`TRAIN_FAULT` is a comma-separated list of these kinds (the spellings are an interface: outside
tests and scripts rely on them):

  fail@STEP:RANK       that rank raises at optimizer step STEP
  nan@STEP             NaN inputs at step STEP on every rank (a non-finite loss and gradient)
  overflow@STEP        inf inputs at step STEP on every rank (what a loss-scale overflow looks
                       like to the step: non-finite scaled gradients)
  ckpt_pause=SECONDS   pause inside each checkpoint write, between the tensor file and the
                       manifest (to kill a process mid-write)
  step_pause=SECONDS   pause after every optimizer step (paces a run that a test kills or
                       signals, so that the test never races the machine's speed)
  finish_pause=SECONDS pause after each pass of the Newton finish (to kill a process in it)
  start_pause=SECONDS  pause during start-up, after the run folder is set up and before the
                       cluster starts, or in a dry run before it prints (to signal a process
                       that has not trained yet); a stop signal ends the pause
  join_pause=SECONDS   pause while joining the cluster, on every rank but rank 0, just before
                       MindSpore's init() (rank 0 then waits inside init() for them: to signal
                       a job while its cluster forms); a stop signal ends the process (75)

An unknown kind or a malformed value is a one-line error (exit 2). A run with faults warns on
stderr and records them in run.json, so that a TRAIN_FAULT left set in a shell is noticed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

ENV = "TRAIN_FAULT"
KINDS = ("fail@STEP:RANK", "nan@STEP", "overflow@STEP", "ckpt_pause=SECONDS",
         "step_pause=SECONDS", "start_pause=SECONDS", "finish_pause=SECONDS",
         "join_pause=SECONDS")


class FaultError(ValueError):
    """TRAIN_FAULT could not be parsed."""


@dataclass(frozen=True)
class Faults:
    """The faults to inject in this process (empty: none)."""

    text: str = ""
    fail: dict[int, int] = field(default_factory=dict)  # step -> rank
    nan: frozenset[int] = frozenset()
    overflow: frozenset[int] = frozenset()
    ckpt_pause: float = 0.0
    step_pause: float = 0.0
    start_pause: float = 0.0
    finish_pause: float = 0.0
    join_pause: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.text)

    def input_scale(self, step: int) -> float | None:
        """The factor to multiply step `step`'s inputs by, or None to leave them alone."""
        if step in self.nan:
            return float("nan")
        if step in self.overflow:
            return float("inf")
        return None

    def check_fail(self, step: int, rank: int) -> None:
        """Raise the injected failure if this rank is to fail at this step."""
        if self.fail.get(step) == rank:
            raise RuntimeError(f"test failure injected at step {step} ({ENV})")

    def pause(self, what: str, until: Callable[[], bool] | None = None) -> None:
        """Sleep for `what` (ckpt_pause, step_pause, start_pause, finish_pause or join_pause),
        if set;
        `until()` true ends it early (a stop signal)."""
        seconds = getattr(self, what)
        if not seconds:
            return
        if until is None:
            time.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while not until() and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


_ITEM = re.compile(r"(fail)@(\d+):(\d+)|(nan|overflow)@(\d+)|"
                   r"(ckpt_pause|step_pause|start_pause|finish_pause|join_pause)=(\d+(?:\.\d*)?)")


def parse(text: str) -> Faults:
    """Parse a TRAIN_FAULT value; FaultError names the first bad item."""
    fail: dict[int, int] = {}
    nan: set[int] = set()
    overflow: set[int] = set()
    pauses: dict[str, float] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        m = _ITEM.fullmatch(item)
        if m is None:
            raise FaultError(f"{ENV}: unknown fault {item!r}; accepted: {', '.join(KINDS)}")
        if m[1]:
            fail[int(m[2])] = int(m[3])
        elif m[4]:
            (nan if m[4] == "nan" else overflow).add(int(m[5]))
        else:
            pauses[m[6]] = float(m[7])
    return Faults(text=text.strip() if (fail or nan or overflow or pauses) else "", fail=fail,
                  nan=frozenset(nan), overflow=frozenset(overflow), **pauses)


def from_env(env: Mapping[str, str] | None = None) -> Faults:
    """The faults TRAIN_FAULT asks for in this process's environment."""
    return parse((os.environ if env is None else env).get(ENV, ""))
