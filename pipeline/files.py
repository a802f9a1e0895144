"""Rows from a file of yours, with the synthetic source's guarantees: sharded, the same stream
whatever the world size, exactly resumable, and never a silent wrong fit.

Opening a file (`FileData.open`) validates it once per job and maps its canonical table
(pipeline/cache.py), holds out rows (pipeline/split.py) and computes the training split's
statistics (pipeline/stats.py, cached beside the table). From those facts (training rows,
curvature, robust delta) the plan decides the options left automatic (train/auto.py);
`FileData.source` then builds the `FileSource` the trainer reads, with the resolved `DataSpec`
(pipeline/spec.py), and refuses what cannot train.

**Order.** Global step t takes the next G = N·B·A rows of the epoch's order; shard r takes its
micro-batches of them as pipeline/dataset.py lays out. The rows of a step are not reordered: the
step's gradient is their mean. So N ranks with batch B see exactly the rows one process with
batch N·B sees. The last partial global batch of an epoch (n_train mod G rows) is dropped and
reported.

**Units.** With `--standardize` (default for files) the model trains on features and target
standardized with the training split's mean and standard deviation; results are reported in
the data's own units: w, b converted back, losses multiplied by std(y)**2 (the Huber loss with
delta/std(y) in standardized units is exactly std(y)**2 times the loss with delta in the
target's units), and `--delta` is always in the target's units.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import cache
from pipeline.dataset import TableRows
from pipeline.formats import TableSpec
from pipeline.guard import CheckedTable, MappedFile, changed_error
from pipeline.limits import F32_MAX, F32_TINY, MAX_ABS_VALUE, DataError
from pipeline.spec import DataSpec
from pipeline.split import Split
from pipeline.stats import statistics, usable

HELD_OUT_LISTED = 10_000  # summary.json lists the held-out rows' indices up to this many
OBJECTIVE_ROWS = 1 << 21  # training rows the convergence check reads at most


def _offset(meta: dict[str, Any], columns: int) -> np.ndarray:
    """What a cached table's values are relative to (pipeline/cache.py), per column."""
    found = meta.get("offset")
    return np.zeros(columns) if found is None else np.asarray(found, np.float64)


def _map(table: Path, source: Path) -> np.ndarray:
    """The canonical table, memory-mapped; DataError if it is not a readable .npy."""
    try:
        return np.load(table, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{source}: cannot read it as a table ({str(e)[:100]})") from None


class FileStream(TableRows):
    """`pipeline.dataset.RowStream` over a mapped table: position i of epoch e is row
    `split.positions(e, i, 1)`, standardized if asked. A step's rows are whole blocks (plus
    the ends of two), so they are gathered block by block: at batch 65,536 one gather of
    ~10k blocks instead of 65k rows."""

    def __init__(self, table: np.ndarray, split: Split, shift: np.ndarray | None,
                 scale: np.ndarray | None, mapped: MappedFile) -> None:
        self.table, self.split, self.shift, self.scale = table, split, shift, scale
        self.mapped = mapped  # asked before every read: a rewritten file stops the run
        self.features = table.shape[1] - 1
        self.flat = np.asarray(table)  # a plain view of the mapping (no memmap overhead)
        bs = split.bs
        self.full_blocks = len(self.flat) // bs
        self.blocks3 = self.flat[:self.full_blocks * bs].reshape(-1, bs, table.shape[1])

    def standardize(self, a: np.ndarray) -> np.ndarray:
        """Table rows (features..., target) in the units the model trains in (float32)."""
        a = np.array(a, np.float32)
        if self.shift is not None:
            a -= self.shift
        if self.scale is not None:
            a *= self.scale
        return a

    def _gather(self, epoch: int, start: int, count: int) -> np.ndarray:
        if self.mapped.changed():
            raise changed_error(self.mapped.path)
        blocks, starts = self.split.order(epoch)
        bs = self.split.bs
        if bs == 1:
            return self.flat[blocks[start:start + count]]
        k0 = int(np.searchsorted(starts, start, side="right")) - 1
        k1 = int(np.searchsorted(starts, start + count, side="left"))
        ids = blocks[k0:k1]
        if ids.max(initial=-1) < self.full_blocks:
            a = np.take(self.blocks3, ids, axis=0).reshape(-1, self.flat.shape[1])
        else:  # the file's short last block is among them (once per epoch)
            a = np.concatenate([self.flat[b * bs:(b + 1) * bs] for b in ids])
        off = start - int(starts[k0])
        return a[off:off + count]

    def rows(self, epoch: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """x (count, features) and y (count, 1) of stream positions start..start+count."""
        a = self._gather(epoch, start, count)  # a fresh array (gathered): standardized in place
        if self.shift is not None:
            a -= self.shift
        if self.scale is not None:
            a *= self.scale
        return np.ascontiguousarray(a[:, :-1]), np.ascontiguousarray(a[:, -1:])


class FileData:
    """A validated data file (and `--eval_data`): its mapped table, held-out split and training
    statistics, before any option is resolved. `stop()` is called during long work (a
    conversion, a wait for another process's conversion) and raises to abandon it."""

    kind = "file"  # rows of a file, with statistics (train/auto.py decides from the kind)

    def __init__(self, ds: DataSpec, stop: Callable[[], None] | None = None) -> None:
        path = Path(ds.data)
        spec = TableSpec(ds.columns, ds.categorical)
        table_path, self.meta = cache.canonical(path, ds.target, ds.drop_nonfinite,
                                                stop=stop, spec=spec)
        # a categorical column's levels, as learned from this file (the held-out file's and
        # every later use's: resume, predict, export)
        self.levels: dict[str, list[str]] = self.meta["levels"]
        self.path, self.table = path, _map(table_path, path)
        if len(self.table) == 0:
            dropped = self.meta["dropped_nonfinite"]
            why = f"all {dropped} dropped as non-finite" if dropped else "only a header?"
            raise DataError(f"{path} holds no rows ({why})")
        self.mapped = MappedFile(table_path)  # the run stops if it changes (pipeline/guard.py)
        self.rows = CheckedTable(self.table, self.mapped, path)  # every read but the steps'
        self.offset = _offset(self.meta, self.table.shape[1])
        self.eval_table: CheckedTable | None = None
        self.eval_id, self.eval_offset, self.eval_columns = None, None, None
        eval_max = 0.0
        if ds.eval_data:
            eval_max = self._open_eval(ds, stop)
        self.split = Split(len(self.table), ds.seed, 0.0 if ds.eval_data else ds.eval_fraction)
        key = cache.entry_key("stats", self.meta["source"], ds.target, ds.drop_nonfinite,
                              ds.seed, ds.eval_fraction, self.eval_id, spec.key(),
                              self.levels)
        self.stats = cache.read_json(cache.cache_dir() / f"{key}.json")
        if not usable(self.stats, self.table.shape[1]):  # absent or damaged: again
            self.stats = statistics(self.rows, self.split, self.offset)
            cache.write_json(cache.cache_dir() / f"{key}.json", self.stats)
        self.features = self.table.shape[1] - 1
        self.train_rows = self.split.train_rows
        self.max_abs = max(self.meta["max_abs"], eval_max)  # every row, held-out ones included
        self.identity = {"file": self.meta["source"], "eval_data": self.eval_id}

    def _open_eval(self, ds: DataSpec, stop: Callable[[], None] | None) -> float:
        """The held-out file: its columns matched to the training file's by name (both CSV),
        else by position. Its largest magnitude."""
        path = Path(ds.eval_data)
        names = path.suffix.lower() == ".csv" and self.path.suffix.lower() == ".csv"
        # by name, the held-out file's target is the training file's, whatever its position;
        # by position it is the last column (a --target names a CSV's column only)
        target = (ds.target or self.meta["columns"][-1]) if names else \
            (ds.target if path.suffix.lower() == ".csv" else "")
        # by name, the held-out file's columns are picked and encoded as the training file's
        # (its levels, not its own: a level the training file lacks is refused)
        spec = TableSpec(ds.columns, ds.categorical, self.levels or None) if names else None
        eval_path, meta = cache.canonical(path, target, ds.drop_nonfinite, "--eval_data",
                                          stop=stop, spec=spec)
        self.eval_table = CheckedTable(_map(eval_path, path), MappedFile(eval_path), path)
        self.eval_id = meta["source"]
        self.eval_offset = _offset(meta, self.eval_table.shape[1])
        train = self.meta["columns"]
        if names:
            missing = [c for c in train if c not in meta["columns"]]
            if missing:
                raise DataError(f"--eval_data {path} has no column {missing[0]!r} (the "
                                f"training file's columns: {', '.join(train)}); columns are "
                                "matched by name")
            self.eval_columns = [meta["columns"].index(c) for c in train]
        elif self.eval_table.shape[1] != self.table.shape[1]:
            raise DataError(f"--eval_data {path} has {self.eval_table.shape[1] - 1} "
                            f"feature(s), --data {ds.data} {self.table.shape[1] - 1}")
        if len(self.eval_table) == 0:
            raise DataError(f"--eval_data {path} holds no rows")
        return meta["max_abs"]

    def curvature(self, standardized: bool) -> float:
        """The largest eigenvalue of the second moment of [features, 1] of the training rows,
        in standardized or in raw units (pipeline/stats.py)."""
        return self.stats["curvature_std" if standardized else "curvature_raw"]

    @property
    def robust_delta(self) -> float:
        """1.345 x the robust scale of a Huber fit of the training rows (the target's units)."""
        return self.stats["delta"]

    def source(self, spec: DataSpec, world: int, automatic: set[str]) -> FileSource:
        """The source the trainer reads, for a spec whose automatic values are resolved;
        DataError for what cannot train (a constant column, too few rows, ...)."""
        source = FileSource(self, spec, world, "delta" in automatic)
        source.check()
        return source


class FileSource:
    """A data file as the trainer sees it (pipeline/source.py has the synthetic one)."""

    def __init__(self, data: FileData, spec: DataSpec, world: int, auto_delta: bool) -> None:
        self.spec, self.meta, self.split, self.auto_delta = spec, data.meta, data.split, auto_delta
        self.path, self.eval_table, self.levels = data.path, data.eval_table, data.levels
        self.features, self.max_abs = data.features, data.max_abs
        self.global_batch = spec.global_batch(world)
        self.steps_per_epoch = spec.steps_per_epoch
        self.dropped_last = self.split.train_rows - self.steps_per_epoch * self.global_batch
        stats = self.data_stats = data.stats
        self.mean, self.std = np.array(stats["mean"]), np.array(stats["std"])
        self.lo, self.hi = stats["min"], stats["max"]
        std = bool(spec.standardize)
        self.mapped, self.offset, self.table = data.mapped, data.offset, data.rows
        self.eval_offset, self.eval_columns = data.eval_offset, data.eval_columns
        # table values are relative to the offset (pipeline/cache.py): centred in float64
        shift = (self.mean - self.offset).astype(np.float32) if std else \
            (-self.offset).astype(np.float32) if self.offset.any() else None
        with np.errstate(divide="ignore", over="ignore"):  # refused in check()
            scale = (1.0 / self.std).astype(np.float32) if std else None
        self.stream = FileStream(data.table, self.split, shift, scale, data.mapped)
        self._held_out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.loss_unit = float(self.std[-1]) ** 2 if std else 1.0
        self.stats = {"mean": stats["mean"], "std": stats["std"]} if std else None

    def check(self) -> None:
        """Refuse what cannot train with the resolved options."""
        spec, names, path = self.spec, self.meta["columns"], self.path
        if spec.standardize:  # first: everything below divides by these
            with np.errstate(divide="ignore", over="ignore"):
                flat = [(names[j], s) for j, s in enumerate(self.std)
                        if not (s > 0 and abs(np.float32(1.0 / s)) <= F32_MAX)]
            if flat:
                name, s = flat[0]
                how = "the same value" if s == 0 else f"almost the same value (std {s:.3g})"
                raise DataError(f"{path}: column {name!r} has {how} in every training row, so "
                                "it cannot be standardized in float32; drop it or pass "
                                "--standardize false")
        if not spec.standardize:
            big = self.max_abs  # every row of the file(s), held-out ones included
            if big >= MAX_ABS_VALUE:
                raise DataError(f"{path}: values up to {big:.3g} are too large to train on as "
                                f"they are (float32); they must stay below {MAX_ABS_VALUE:.0e}, or "
                                "pass --standardize true")
        delta = self.loss_delta(spec.delta)
        if not np.float32(delta) >= F32_TINY:
            raise DataError(f"--delta {spec.delta} is {delta:.3g} in standardized units, which "
                            "float32 cannot hold; give a larger --delta")
        if self.steps_per_epoch == 0:
            raise DataError(f"{path}: {self.split.train_rows} training rows are fewer than one "
                            f"global batch of {self.global_batch} (batch_size x accum_steps x "
                            "ranks); lower --batch_size")

    @property
    def columns(self) -> list[str]:
        """The features' names, then the target's."""
        return list(self.meta["columns"])

    def start(self) -> tuple[list[float], float]:
        """The least-squares fit (`--init least_squares`) in the units the model trains in."""
        w, b = np.array(self.data_stats["ls_w"]), float(self.data_stats["ls_b"])
        if not self.spec.standardize:
            return w.tolist(), b
        sx, sy, mx, my = self.std[:-1], self.std[-1], self.mean[:-1], self.mean[-1]
        return (w * sx / sy).tolist(), float((b + w @ mx - my) / sy)

    def objective_rows(self) -> Any:
        """The training rows the objective is measured on (all of them up to OBJECTIVE_ROWS,
        evenly spread beyond), in training units and in float64 (the statistician's optimum is
        that of the table's values, not of their float32 standardization), as (x, y) chunks.
        Every read is checked (pipeline/guard.py `CheckedTable`), the last pass's too."""
        rows = self.split.spread_rows(OBJECTIVE_ROWS)
        std = bool(self.spec.standardize)
        shift = self.mean - self.offset if std else -self.offset  # (table: values - offset)
        scale = 1.0 / self.std if std else np.ones_like(self.std)
        for i in range(0, len(rows), 1 << 16):
            a = (np.asarray(self.table[rows[i:i + (1 << 16)]], np.float64) - shift) * scale
            yield a[:, :-1], a[:, -1:]

    def target_mean(self) -> float:
        """The training rows' mean target, in the data's units (the model that predicts it)."""
        return float(self.mean[-1])

    def changed(self) -> bool:
        """True when the mapped table is no longer the file it was (pipeline/guard.py)."""
        return self.mapped.changed()

    def failure(self) -> Exception | None:
        """Why reading rows failed while training, if the data is to blame: the file was
        rewritten or truncated under the run."""
        return changed_error(self.spec.data) if self.changed() else None

    def hold(self) -> str:
        """Lease the mapped table for the training process (pipeline/guard.py); "" or why
        not."""
        return "" if self.mapped.hold() else self.mapped.why

    def eval_rows(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The held-out rows (at most `size`, in file order), in training units."""
        if self.eval_table is None:
            a = self.stream.standardize(self.table[self.split.eval_rows(size)])
        else:  # another file, with its own offset and column order: via the data's units
            x, y = self.held_out(size)
            a = np.concatenate([x, y[:, None]], axis=1)
            if self.spec.standardize:
                a = (a - self.mean) / self.std
            a = a.astype(np.float32)
        return np.ascontiguousarray(a[:, :-1]), np.ascontiguousarray(a[:, -1:])

    def held_out(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The held-out rows (at most `size`, in file order) in the data's units: features
        (rows, features) and target (rows,), float64. Read once: a separate held-out file is
        not leased, and a mapping of it must not be read again after it may have changed."""
        if size not in self._held_out:
            self._held_out[size] = self._read_held_out(size)
        return self._held_out[size]

    def _read_held_out(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if self.eval_table is not None:
            a = np.asarray(self.eval_table[:min(size, len(self.eval_table))], np.float64)
            a += self.eval_offset
            if self.eval_columns is not None:
                a = a[:, self.eval_columns]
        else:
            a = np.asarray(self.table[self.split.eval_rows(size)], np.float64)
            a += self.offset
        return a[:, :-1], a[:, -1]

    def max_eval_rows(self) -> int:
        """Held-out rows available."""
        if self.eval_table is not None:
            return len(self.eval_table)
        return self.split.rows - self.split.train_rows

    def loss_delta(self, delta: float) -> float:
        """--delta (the target's units) in the units the model trains in."""
        return delta / float(self.std[-1]) if self.spec.standardize else delta

    def params_in_units(self, wb: tuple[list[float], float] | None
                        ) -> tuple[list[float], float] | None:
        """Learned (w, b) of the linear model in the data's own units."""
        if wb is None or not self.spec.standardize:
            return wb
        w, b = np.array(wb[0]), wb[1]
        sx, sy, mx, my = self.std[:-1], self.std[-1], self.mean[:-1], self.mean[-1]
        w_orig = sy * w / sx
        return w_orig.tolist(), float(my + sy * b - (w_orig * mx).sum())

    def summary_extra(self, wb: tuple[list[float], float] | None) -> dict[str, Any]:
        """What the data was: rows used, dropped, split, units."""
        extra: dict[str, Any] = {"data": {
            "file": str(self.spec.data), "rows": self.meta["rows"],
            "train_rows": self.split.train_rows, "eval_rows": self.max_eval_rows(),
            "dropped_nonfinite": self.meta["dropped_nonfinite"],
            "dropped_last_batch_rows": self.dropped_last, "columns": self.meta["columns"],
            **({"levels": self.levels} if self.levels else {}),
            "standardized": bool(self.spec.standardize), "held_out": self._held_out_record()}}
        if wb is not None and self.spec.standardize:
            extra.update(w_standardized=wb[0], b_standardized=wb[1])
        return extra

    def _held_out_record(self) -> dict[str, Any]:
        """Which rows were held out, so that the fit can be reproduced outside the package."""
        if self.eval_table is not None:
            return {"rule": "every row of --eval_data; none of --data", "file":
                    str(self.spec.eval_data)}
        held = self.split.eval_rows(self.split.rows)
        return {"rule": "pipeline/split.py: the data rows (0-based, in file order, after the rows "
                        "--drop_nonfinite dropped) cut into blocks of block_size consecutive "
                        "rows; numpy.random.default_rng([seed, 0xDA7A, 0xE7A1]).permutation("
                        "blocks), whose first round(eval_fraction x blocks) (at least 1 when "
                        "eval_fraction > 0) are held out",
                "seed": self.spec.seed, "eval_fraction": self.spec.eval_fraction,
                "block_size": self.split.bs, "rows": int(len(held)),
                "indices": held.tolist() if len(held) <= HELD_OUT_LISTED else None}

    def sample_rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n training rows in file order, in the data's units."""
        idx = self.split.first_rows(self.split.train_blocks, n)
        a = (np.asarray(self.table[idx], np.float64) + self.offset).astype(np.float32)
        return a[:, :-1], a[:, -1:]

    def curve_x(self) -> np.ndarray:
        """The training range of the (one) feature."""
        return np.linspace(self.lo[0], self.hi[0], 101)

    def to_model(self, x: np.ndarray) -> np.ndarray:
        """Features in training units."""
        if not self.spec.standardize:
            return x.astype(np.float32)
        return ((x - self.mean[:-1]) / self.std[:-1]).astype(np.float32)

    def from_model(self, y: np.ndarray) -> np.ndarray:
        """Model outputs in the target's units."""
        return y * self.std[-1] + self.mean[-1] if self.spec.standardize else y

    def describe(self) -> str:
        """One line for --dry_run and the run's log."""
        spec, m = self.spec, self.meta
        dropped = f", {m['dropped_nonfinite']} non-finite dropped" if m["dropped_nonfinite"] else ""
        delta = f"delta {spec.delta:g} in {m['columns'][-1]}'s units"
        if self.auto_delta:
            delta += " (chosen from the data: 1.345 x the robust scale of a Huber fit)"
        if spec.standardize:
            delta += f", {self.loss_delta(spec.delta):.6g} standardized"
        return (f"data: {spec.data} ({m['rows']} rows{dropped}: {self.split.train_rows} train, "
                f"{self.max_eval_rows()} held out; {self.features} feature(s), target "
                f"{m['columns'][-1]!r}); {self.steps_per_epoch} steps per epoch of global batch "
                f"{self.global_batch} ({self.dropped_last} rows of the last partial batch "
                f"dropped); standardized: {'yes' if spec.standardize else 'no'}; {delta}")
