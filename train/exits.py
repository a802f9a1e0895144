"""Exit codes, and the one table from exceptions to them: every command (`msdp ...`, and the
`python -m train...` aliases) raises, and `handled` prints the one line and returns the code.

  0  done
  1  the run failed (a run of compare or verify, your code)
  2  bad input: flags, config, data, launch environment, run folder, checkpoint
  74 a file could not be written (disk full, permissions; earlier files intact)
  75 stopped by a signal at a safe point (continue with --resume)

The table names classes by module and name and looks them up in `sys.modules` only: an
exception of a class whose module was never imported cannot exist, so this module imports
none of them (`msdp --help` and `msdp fit` stay light; train/cli.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from train.stop import PREEMPTED_EXIT as STOPPED  # 75, defined where stops are (light)

FAILED, BAD_INPUT, IO = 1, 2, 74  # IO: EX_IOERR, a run file could not be written


class RunFailed(RuntimeError):
    """A run a command started (compare's, verify's) failed: exit 1."""


class UsageError(ValueError):
    """A command line its parser refuses (`CommandParser`): exit 2."""


class Rule(NamedTuple):
    """One row of the table: the class (module, name), its exit code, its line's prefix."""

    module: str
    name: str
    code: int
    prefix: str


# Ordered: the first row whose class the exception is an instance of decides (OutputError is an
# OSError, ConfigEdited an InferError, UserCodeError a ConfigError: each a subclass of its row).
TABLE: tuple[Rule, ...] = (
    Rule("train.stop", "Preempted", STOPPED, "stopped"),
    Rule("train.output", "OutputError", IO, "error"),
    Rule("train.user", "UserCodeFailed", FAILED, "error"),
    Rule("pipeline.user", "SourceRaised", FAILED, "error"),
    Rule("train.exits", "RunFailed", FAILED, "error"),
    Rule("train.exits", "UsageError", BAD_INPUT, "error"),
    Rule("train.config", "ConfigError", BAD_INPUT, "error"),
    Rule("train.cluster.env", "ClusterError", BAD_INPUT, "error"),
    Rule("train.checkpoint", "CheckpointError", BAD_INPUT, "error"),
    Rule("train.faults", "FaultError", BAD_INPUT, "error"),
    Rule("pipeline.limits", "DataError", BAD_INPUT, "error"),
    Rule("train.infer", "InferError", BAD_INPUT, "error"),
)


def rule_of(e: BaseException) -> Rule | None:
    """The table's row for `e`, or None (not a refusal the table knows: it propagates)."""
    for rule in TABLE:
        cls = getattr(sys.modules.get(rule.module), rule.name, None)
        if cls is not None and isinstance(e, cls):
            return rule
    return None


def one_line(msg: object) -> str:
    """A message as one line (a file name may hold a newline): train.output.one_line's rule."""
    return str(msg).replace("\r", "\\r").replace("\n", "\\n")


def said(e: BaseException) -> tuple[int, str] | None:
    """`e`'s exit code and its one line (`error: ...`, `stopped: ...`); None for an exception
    the table does not know."""
    rule = rule_of(e)
    return None if rule is None else (rule.code, f"{rule.prefix}: {one_line(e)}")


def report(e: BaseException) -> int | None:
    """Print `e`'s one line on stderr and return its exit code; None, printing nothing, for an
    exception the table does not know."""
    refusal = said(e)
    if refusal is not None:
        print(refusal[1], file=sys.stderr)
    return None if refusal is None else refusal[0]


def handled(command: Callable[..., int], *args: Any) -> int:
    """Run a command's body: its exit code, or the table's for what it raised (one line)."""
    try:
        return command(*args)
    except Exception as e:  # noqa: BLE001 - the table decides; anything else propagates
        code = report(e)
        if code is None:
            raise
        return code


class CommandParser(argparse.ArgumentParser):
    """argparse whose refusals are one line and exit 2 (`UsageError`), without the usage
    text; --help as argparse prints it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}; {self.accepted()}")

    def accepted(self) -> str:
        """What this command accepts, on one line: its usage without the `usage:` word
        (the options, the arguments; `--help` says what each is)."""
        usage = " ".join(self.format_usage().split()[1:])
        return f"usage: {usage} ({self.prog} --help)"
