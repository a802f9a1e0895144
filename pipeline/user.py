"""A map-style source of yours (`--data MODULE:NAME`): GeneratorDataset's random-access contract,
`__len__` and `__getitem__(i) -> (x, y)` with NumPy arrays of one shape and dtype each.

The package owns the order, exactly as for a file (pipeline/split.py, pipeline/dataset.py): the
held-out rows (`--eval_fraction`, chosen by the seed), each epoch's permutation of the training
rows, sharding and batching. So N ranks see what one process sees, and a resume continues the
same stream. Rows are taken as given: not standardized, not converted.

Every row is checked against row 0 as it is read: a row of another shape or dtype is a
`DataError` naming the row and both shapes (exit 2; a run that finds one mid-way stops with its
checkpoints intact). An exception raised by your `__getitem__` is `SourceRaised`, kept with its
traceback for the log (exit 1). The dataset engine reads rows in a thread of its own and wraps
what that thread raises in a message of its own, so the first failure is also kept
(`UserStream.failure`) for the trainer to report as it happened.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.limits import DataError
from pipeline.spec import DataSpec
from pipeline.split import Split


class SourceRaised(RuntimeError):
    """Your source's `__len__` or `__getitem__` raised `exc` (the message says which row)."""

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(f"{what} raised {type(exc).__name__}: {exc}")
        self.what, self.exc = what, exc


def _spec(a: np.ndarray) -> str:
    return f"{a.dtype}{list(a.shape)}"


def _pair(got: Any, name: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row i of your source as two NumPy arrays (x, y); DataError if it is not that."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise DataError(f"--data {name}: row {i} is a {type(got).__name__}, not a pair (x, y)")
    for what, a in zip("xy", got):
        if not isinstance(a, (np.ndarray, np.generic)):
            raise DataError(f"--data {name}: row {i}: {what} is a {type(a).__name__}, not a "
                            "NumPy array")
    return np.asarray(got[0]), np.asarray(got[1])


class UserStream:
    """`pipeline.dataset.RowStream` over your source: position i of epoch e is row
    `split.positions(e, i, 1)`, checked against row 0."""

    def __init__(self, src: Any, name: str, split: Split, x0: np.ndarray,
                 y0: np.ndarray) -> None:
        self.src, self.name, self.split = src, name, split
        self.x_shape, self.x_dtype = x0.shape, x0.dtype
        self.y_shape, self.y_dtype = y0.shape, y0.dtype
        self.features = int(np.prod(x0.shape)) if x0.shape else 1
        self.failure: Exception | None = None  # the first row that failed, as it happened

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row i as (x, y), checked."""
        try:
            got = self.src[i]
        except Exception as e:  # noqa: BLE001 - your code's own error, reported as such
            raise self._fail(SourceRaised(f"{self.name}[{i}]", e)) from e
        try:
            x, y = _pair(got, self.name, i)
        except DataError as e:
            raise self._fail(e) from None
        if x.shape != self.x_shape or x.dtype != self.x_dtype or y.shape != self.y_shape \
                or y.dtype != self.y_dtype:
            which, a, a0 = ("x", x, (self.x_shape, self.x_dtype)) \
                if x.shape != self.x_shape or x.dtype != self.x_dtype else \
                ("y", y, (self.y_shape, self.y_dtype))
            raise self._fail(DataError(
                f"--data {self.name}: row {i}: {which} is {_spec(a)}, row 0's is "
                f"{np.dtype(a0[1])}{list(a0[0])} (every row must have row 0's shape and dtype)"))
        return x, y

    def _fail(self, e: Exception) -> Exception:
        if self.failure is None:
            self.failure = e
        return e

    def gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows `idx`, stacked: x (n, *x_shape) and y (n, *y_shape)."""
        x = np.empty((len(idx), *self.x_shape), self.x_dtype)
        y = np.empty((len(idx), *self.y_shape), self.y_dtype)
        for j, i in enumerate(idx):
            x[j], y[j] = self.row(int(i))
        return x, y

    def rows(self, epoch: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions start..start+count of an epoch's stream."""
        return self.gather(self.split.positions(epoch, start, count))


class UserData:
    """Your source before the options are resolved: its length, row 0 and the split."""

    kind = "user"  # rows taken as given (train/auto.py decides from the kind)

    def __init__(self, src: Any, name: str, seed: int, eval_fraction: float) -> None:
        self.name = name
        if not (hasattr(src, "__len__") and hasattr(src, "__getitem__")):
            raise DataError(f"--data {name} returned a {type(src).__name__}, not a map-style "
                            "source (__len__ and __getitem__(i) -> (x, y))")
        try:
            n = len(src)
        except Exception as e:  # noqa: BLE001 - your code's own error
            raise SourceRaised(f"len({name}())", e) from e
        if n == 0:
            raise DataError(f"--data {name}: its __len__ is 0; a source needs rows")
        split = Split(n, seed, eval_fraction)  # (DataError: nothing left to train on)
        x0, y0 = _pair(_first(src, name), name, 0)
        self.stream, self.split = UserStream(src, name, split, x0, y0), split
        self.train_rows = split.train_rows
        self.features = self.stream.features
        self.identity = {"source": name, "rows": n, "x": [list(x0.shape), str(x0.dtype)],
                         "y": [list(y0.shape), str(y0.dtype)]}

    def source(self, spec: DataSpec, world: int, automatic: set[str]) -> UserSource:
        """The source the trainer reads, for a resolved spec."""
        return UserSource(self, spec, world)


def _first(src: Any, name: str) -> Any:
    try:
        return src[0]
    except Exception as e:  # noqa: BLE001 - your code's own error
        raise SourceRaised(f"{name}[0]", e) from e


class UserSource:
    """Your source as the trainer sees it: results are in its own units."""

    loss_unit = 1.0
    stats = None

    def __init__(self, data: UserData, spec: DataSpec, world: int) -> None:
        self.spec, self.name, self.split, self.stream = spec, data.name, data.split, data.stream
        self.features = data.features
        self.global_batch = spec.global_batch(world)
        self.steps_per_epoch = spec.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise DataError(f"--data {self.name}: {self.split.train_rows} training rows are "
                            f"fewer than one global batch of {self.global_batch} (batch_size x "
                            "accum_steps x ranks); lower --batch_size")
        self.dropped_last = self.split.train_rows - self.steps_per_epoch * self.global_batch
        self.identity = data.identity

    columns = ["x", "y"]

    def failure(self) -> Exception | None:
        """The first row that failed while training (a DataError or SourceRaised), if any."""
        return self.stream.failure

    def hold(self) -> str:
        """Nothing to lease."""
        return ""

    def eval_rows(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The held-out rows (at most `size`, in index order)."""
        return self.stream.gather(self.split.eval_rows(size))

    def max_eval_rows(self) -> int:
        """Held-out rows available."""
        return self.split.rows - self.split.train_rows

    def sample_rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n training rows, in index order."""
        return self.stream.gather(self.split.first_rows(self.split.train_blocks, n))

    def loss_delta(self, delta: float) -> float:
        """The Huber delta, in the rows' own units."""
        return delta

    def params_in_units(self, wb: Any) -> Any:
        """(w, b) of the built-in linear model, as trained (the rows are not rescaled)."""
        return wb

    def to_model(self, x: np.ndarray) -> np.ndarray:
        """Inputs as the model takes them: as given."""
        return x

    def from_model(self, y: np.ndarray) -> np.ndarray:
        """Outputs as the model gives them."""
        return y

    def summary_extra(self, wb: Any) -> dict[str, Any]:
        """What the data was: your source, its rows and shapes."""
        return {"data": {"source": self.name, "rows": self.split.rows,
                         "train_rows": self.split.train_rows, "eval_rows": self.max_eval_rows(),
                         "dropped_last_batch_rows": self.dropped_last,
                         "x": self.identity["x"], "y": self.identity["y"]}}

    def describe(self) -> str:
        """One line for --dry_run and the run's log."""
        (xs, xd), (ys, yd) = self.identity["x"], self.identity["y"]
        return (f"data: {self.name} ({self.split.rows} rows: {self.split.train_rows} train, "
                f"{self.max_eval_rows()} held out; x {xd}{xs}, y {yd}{ys}, taken as given); "
                f"{self.steps_per_epoch} steps per epoch of global batch {self.global_batch} "
                f"({self.dropped_last} rows of the last partial batch dropped)")
