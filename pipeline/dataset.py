"""Micro-batches of synthetic rows, served by a sharded GeneratorDataset.

Layout of the stream: the run is a sequence of micro-batch *items* 0, 1, 2, ...; item g holds
rows [j*B, (j+1)*B) of epoch g // items_per_epoch, where j = g % items_per_epoch and B is the
per-rank micro-batch. GeneratorDataset's sharded sampler gives shard r the items r, r+N, r+2N, ...
and `.batch(accum_steps)` stacks A consecutive shard items into one optimizer step. So at step t
the N shards together hold items [t*A*N, (t+1)*A*N), i.e. rows [t*A*N*B, (t+1)*A*N*B): exactly
the rows one process sees with batch N*B (or batch B with A*N accumulation). The stream depends
on the global batch only, never on how it is split.
"""

from __future__ import annotations

import mindspore.dataset as ds
import numpy as np

from pipeline.synthetic import EVAL_STREAM, TRAIN_STREAM, DataSpec, SyntheticRegression


class BatchSource:
    """Random-access source: item k is one whole micro-batch (x, y), generated vectorised.

    Per-sample items batched afterwards were measured ~40x slower (docs/FINDINGS.md).
    """

    def __init__(
        self,
        spec: DataSpec,
        seed: int,
        batch_size: int,
        items_per_epoch: int,
        num_items: int,
        first_item: int = 0,
    ) -> None:
        self.gen = SyntheticRegression(spec, seed)
        self.batch_size = batch_size
        self.items_per_epoch = items_per_epoch
        self.num_items = num_items
        self.first_item = first_item

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= k < self.num_items:
            raise IndexError(k)
        epoch, j = divmod(self.first_item + int(k), self.items_per_epoch)
        return self.gen.rows(epoch, j * self.batch_size, self.batch_size, TRAIN_STREAM)


def make_train_dataset(
    spec: DataSpec,
    seed: int,
    batch_size: int,
    accum_steps: int,
    steps_per_epoch: int,
    epochs: int,
    num_shards: int,
    shard_id: int,
    start_step: int = 0,
) -> ds.Dataset:
    """Shard `shard_id` of `num_shards`: one element per optimizer step, x (A, B, F), y (A, B, 1).

    `start_step` skips whole optimizer steps (used to resume): the stream stays the same.
    """
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    items_per_step = accum_steps * num_shards
    total_steps = steps_per_epoch * epochs
    source = BatchSource(
        spec,
        seed,
        batch_size,
        items_per_epoch=steps_per_epoch * items_per_step,
        num_items=(total_steps - start_step) * items_per_step,
        first_item=start_step * items_per_step,
    )
    data = ds.GeneratorDataset(
        source,
        column_names=["x", "y"],
        shuffle=False,  # order is the stream's; the rows themselves are random
        num_shards=num_shards,
        shard_id=shard_id,
        python_multiprocessing=False,  # threads: the work is numpy, which releases the GIL
    )
    return data.batch(accum_steps, drop_remainder=True)


def eval_arrays(spec: DataSpec, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out set: `size` clean rows (no outliers) from the evaluation stream."""
    return SyntheticRegression(spec, seed).rows(0, 0, size, EVAL_STREAM, clean=True)
