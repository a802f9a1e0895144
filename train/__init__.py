"""Data-parallel training with MindSpore: config, loss, model, step, loop, and the library
door for code of yours.

Reading order: `config` (what can be set) -> `cluster` (ranks) -> `loss`, `model`, `step` (the
math) -> `loop` (the run) -> `__main__` (the entry point). `user` and `network` take your own
network, loss and data (docs/network.md). mindspore is not imported here, so that
`train.cluster` can import mpi4py first.

    train.main(argv, *, model=None, loss=None, data=None) -> int   # the exit code
    train.fit(*, model=None, loss=None, data=None, **options) -> dict   # the summary
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # (`python -m train` imports this package before its signal handlers exist:
    from typing import Any  # it imports nothing it need not)

__all__ = ["FitError", "fit", "main"]


class FitError(RuntimeError):
    """`train.fit` did not finish: `exit_code` is what `python -m train` would have returned
    (1 the run failed, 2 bad input, 74 a run file could not be written, 75 stopped by a signal:
    continue with `resume=True`), the message its error line."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def main(argv: list[str] | None = None, *, model: Any = None, loss: Any = None,
         data: Any = None) -> int:
    """Run the trainer on command-line flags with your callables (a network factory, a loss,
    a map-style source); return the documented exit code (0, 1, 2, 74, 75)."""
    from train.__main__ import run

    return run(argv, model=model, loss=loss, data=data).code


def fit(*, model: Any = None, loss: Any = None, data: Any = None, **options: Any) -> dict:
    """Train with your callables and any Config field as a keyword (`epochs=3`,
    `model_args={"width": 16}`, `out="runs/a"`); return the run's summary (summary.json's
    dict). Raises FitError, with the exit code, where `main` would return non-zero."""
    import json

    from train.__main__ import run
    from train.config import FIELDS

    argv = []
    for key, value in options.items():
        if key not in FIELDS:
            raise FitError(2, f"error: train.fit got an unknown option {key!r}")
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        argv += [f"--{key}", str(value)]
    outcome = run(argv, model=model, loss=loss, data=data)
    if outcome.code != 0:
        raise FitError(outcome.code, outcome.message)
    return outcome.summary if outcome.summary is not None else {}
