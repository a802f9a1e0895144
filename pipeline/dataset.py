"""Optimizer steps of rows, served by a sharded GeneratorDataset.

Layout of the stream: an epoch is a sequence of micro-batches g = 0, 1, 2, ... of B rows (B the
per-rank batch); micro-batch g of an epoch holds that epoch's stream positions [g*B, (g+1)*B).
With N shards and A accumulation steps, optimizer step t of shard r is made of the
micro-batches (t*A + a)*N + r for a < A. So at step t the N shards together hold micro-batches
[t*A*N, (t+1)*A*N), i.e. positions [t*A*N*B, (t+1)*A*N*B): exactly the rows one process sees
with batch N*B (or batch B with A*N accumulation). The stream depends on the global batch only,
never on how it is split. What a position holds is the row source's business (`RowStream`):
a synthetic row, or a row of a file in that epoch's order (pipeline/files.py).

Each source item is a chunk of K consecutive optimizer steps of one shard, K*A micro-batches
stacked as (K*A, B, F) (a 3-D layout: indexing 4-D inputs in the jit step was measured ~5x
slower at batch 65,536). Items are generated vectorised: no per-sample items (measured ~40x
slower, docs/FINDINGS.md) and no `.batch()` stage. Item c*N + r is chunk c of shard r, and
GeneratorDataset's sharded sampler hands shard r exactly the items r, r+N, r+2N, ... Chunks
exist because every new input tensor costs a MindSpore jit call ~0.2-0.3 ms on CPU, more than a
whole batch-256 step: the train step takes the chunk and a step index, so that cost is paid
once per K steps. K is chosen so that a chunk holds about 16k rows (K = 1 once a step has more
than 8,192 rows). The last chunk is padded with zeros; the loop never runs the padded steps.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

CHUNK_ROWS = 16384  # rows per source item to aim for (see the module docstring)


class RowStream(Protocol):
    """Where rows come from: position `start` .. `start + count` of an epoch's stream. A row's
    x has shape `x_shape` and dtype `x_dtype` (the built-in sources: (features,) float32), its
    y `y_shape` and `y_dtype` ((1,) float32)."""

    x_shape: tuple[int, ...]
    x_dtype: Any
    y_shape: tuple[int, ...]
    y_dtype: Any

    def rows(self, epoch: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """x (count, *x_shape) and y (count, *y_shape)."""
        ...


class TableRows:
    """The row shapes of the built-in sources: x (features,) and y (1,), float32."""

    features: int
    x_dtype = y_dtype = np.dtype(np.float32)
    y_shape = (1,)

    @property
    def x_shape(self) -> tuple[int, ...]:
        """(features,)."""
        return (self.features,)


def steps_per_item(rows_per_step: int) -> int:
    """K, the optimizer steps in one source item: ~CHUNK_ROWS rows, at most 64 steps."""
    return max(1, min(64, CHUNK_ROWS // rows_per_step))


class StepSource:
    """Random-access source: item c*N + r is chunk c of shard r: x (K*A, B, *x_shape) and
    y (K*A, B, *y_shape), holding optimizer steps c*K .. c*K + K - 1 of that shard."""

    def __init__(self, stream: RowStream, batch_size: int, accum_steps: int, num_shards: int,
                 steps_per_epoch: int, num_steps: int, first_step: int = 0,
                 chunk: int = 1) -> None:
        self.stream = stream
        self.b, self.a, self.n, self.k = batch_size, accum_steps, num_shards, chunk
        self.xs, self.ys = tuple(stream.x_shape), tuple(stream.y_shape)
        self.steps_per_epoch = steps_per_epoch
        self.num_steps = num_steps
        self.first_step = first_step

    def __len__(self) -> int:
        return -(-self.num_steps // self.k) * self.n

    def __getitem__(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= item < len(self):
            raise IndexError(item)
        c, r = divmod(int(item), self.n)
        k, a, b = self.k, self.a, self.b
        steps = min(k, self.num_steps - c * k)
        first = self.first_step + c * k
        epoch, t = divmod(first, self.steps_per_epoch)
        if self.n == 1 and steps == k and t + k <= self.steps_per_epoch:
            # One shard and one epoch: the chunk's rows are adjacent, one call makes them all.
            xs, ys = self.stream.rows(epoch, t * a * b, k * a * b)
            return xs.reshape(k * a, b, *self.xs), ys.reshape(k * a, b, *self.ys)
        x = np.zeros((k, a, b, *self.xs), self.stream.x_dtype)
        y = np.zeros((k, a, b, *self.ys), self.stream.y_dtype)
        for j in range(steps):
            x[j], y[j] = self._step(first + j, r)
        return x.reshape(k * a, b, *self.xs), y.reshape(k * a, b, *self.ys)

    def _step(self, step: int, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Optimizer step `step` (0-based, of the run) of shard r: (A, B, *x_shape) and
        (A, B, *y_shape)."""
        epoch, t = divmod(step, self.steps_per_epoch)
        b, a, n = self.b, self.a, self.n
        if n == 1:  # the step's micro-batches are adjacent: one call
            x, y = self.stream.rows(epoch, t * a * b, a * b)
            return x.reshape(a, b, *self.xs), y.reshape(a, b, *self.ys)
        parts = [self.stream.rows(epoch, ((t * a + i) * n + r) * b, b) for i in range(a)]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])


def make_train_dataset(
    stream: RowStream,
    batch_size: int,
    accum_steps: int,
    steps_per_epoch: int,
    epochs: int,
    num_shards: int,
    shard_id: int,
    start_step: int = 0,
    chunk: int = 1,
) -> Any:
    """Shard `shard_id` of `num_shards`: one element per `chunk` optimizer steps,
    x (chunk*A, B, *x_shape) and y (chunk*A, B, *y_shape); the last element is zero-padded.

    `start_step` skips whole optimizer steps (used to resume): the stream stays the same.
    """
    import mindspore.dataset as ds

    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    source = StepSource(stream, batch_size, accum_steps, num_shards, steps_per_epoch,
                        num_steps=steps_per_epoch * epochs - start_step, first_step=start_step,
                        chunk=chunk)
    return ds.GeneratorDataset(
        source,
        column_names=["x", "y"],
        shuffle=False,  # order is the stream's; the rows themselves are random or permuted
        num_shards=num_shards,
        shard_id=shard_id,
        python_multiprocessing=False,  # threads: the work is numpy, which releases the GIL
    )


def eval_chunks(x: np.ndarray, y: np.ndarray, rank: int, world: int,
                chunk_rows: int = 65536) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """This rank's share of a held-out set: chunks r, r+N, ... of `chunk_rows` rows (the last
    zero-padded), each with a mask of the real rows (shaped to broadcast over a row of y).
    Every chunk has one shape: one compile."""
    n = len(x)
    size = max(1, min(chunk_rows, n))
    out = []
    for c in range(rank, -(-n // size), world):
        xs, ys = x[c * size:(c + 1) * size], y[c * size:(c + 1) * size]
        mask = np.zeros((size,) + (1,) * (y.ndim - 1), np.float32)
        mask[:len(xs)] = 1
        if len(xs) < size:
            pad = size - len(xs)
            xs = np.concatenate([xs, np.zeros((pad, *xs.shape[1:]), xs.dtype)])
            ys = np.concatenate([ys, np.zeros((pad, *ys.shape[1:]), ys.dtype)])
        out.append((np.ascontiguousarray(xs), np.ascontiguousarray(ys), mask))
    return out


def eval_batches(x: np.ndarray, y: np.ndarray, rank: int, world: int,
                 size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """This rank's share of a held-out set for a loss of yours, which gives one number per
    batch: chunks r, r+N, ... of `size` rows, the last one shorter (never padded, which would
    change a mean)."""
    size = max(1, size)
    return [(np.ascontiguousarray(x[c * size:(c + 1) * size]),
             np.ascontiguousarray(y[c * size:(c + 1) * size]))
            for c in range(rank, -(-len(x) // size), world)]
