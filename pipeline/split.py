"""Which rows of a table are held out, and the order of the training rows in each epoch.

The rows are cut into blocks of `bs` consecutive rows (bs = 1 up to 2**20 rows: a full row
shuffle; above, the fewest rows that give at most 2**20 blocks, so that reads of a file larger
than memory stay sequential). A share `--eval_fraction` of the blocks, drawn from the seed, is
held out (the same whatever the world size). Epoch e visits the training blocks in an order
drawn from (seed, e); the epoch's stream is their rows, block after block.
"""

from __future__ import annotations

import numpy as np

from pipeline.limits import DataError

MAX_BLOCKS = 1 << 20


def block_size(rows: int) -> int:
    """Rows per block: 1 (a full row shuffle) up to 2**20 rows, then at most 2**20 blocks."""
    return max(1, -(-rows // MAX_BLOCKS))


def _rng(seed: int, *words: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0xDA7A, *words])


class Split:
    """The held-out blocks of a table of `rows` rows, and each epoch's order of the others."""

    def __init__(self, rows: int, seed: int, eval_fraction: float) -> None:
        self.rows, self.seed = rows, seed
        self.bs = block_size(rows)
        n_blocks = -(-rows // self.bs)
        held = round(eval_fraction * n_blocks) if eval_fraction > 0 else 0
        if eval_fraction > 0 and held == 0:
            held = 1
        if held >= n_blocks:
            raise DataError(f"{rows} rows leave nothing to train on with --eval_fraction "
                            f"{eval_fraction}; lower it or give --eval_data")
        order = _rng(seed, 0xE7A1).permutation(n_blocks)
        self.eval_blocks = np.sort(order[:held])
        self.train_blocks = np.sort(order[held:])
        self._train_mask = np.ones(n_blocks, bool)
        self._train_mask[self.eval_blocks] = False
        self.train_rows = int(self.starts(self.train_blocks)[-1])
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None

    def starts(self, blocks: np.ndarray) -> np.ndarray:
        """Where each of `blocks` starts in their concatenation, and (last) its length."""
        sizes = np.minimum(self.bs, self.rows - blocks * self.bs)  # the file's last is short
        return np.concatenate([[0], np.cumsum(sizes)])

    def is_train(self, rows: np.ndarray) -> np.ndarray:
        """A mask over row indices: True for training rows."""
        return self._train_mask[rows // self.bs]

    def order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch order: the training blocks permuted by (seed, epoch), and where each starts in
        the epoch's stream (`starts`). The last epoch asked for is kept."""
        if self._epoch is None or self._epoch[0] != epoch:
            blocks = self.train_blocks[_rng(self.seed, epoch).permutation(len(self.train_blocks))]
            self._epoch = (epoch, blocks, self.starts(blocks))
        return self._epoch[1], self._epoch[2]

    def rows_at(self, blocks: np.ndarray, pos: np.ndarray,
                starts: np.ndarray | None = None) -> np.ndarray:
        """Row indices of positions `pos` of the blocks' concatenation."""
        starts = self.starts(blocks) if starts is None else starts
        b = np.searchsorted(starts, pos, side="right") - 1
        return blocks[b] * self.bs + (pos - starts[b])

    def first_rows(self, blocks: np.ndarray, count: int) -> np.ndarray:
        """Row indices of the first `count` positions of the blocks' concatenation."""
        starts = self.starts(blocks)
        return self.rows_at(blocks, np.arange(min(count, int(starts[-1]))), starts)

    def positions(self, epoch: int, start: int, count: int) -> np.ndarray:
        """Row indices of stream positions start..start+count of an epoch."""
        blocks, starts = self.order(epoch)
        if self.bs == 1:
            return blocks[start:start + count]
        count = max(0, min(count, int(starts[-1]) - start))
        return self.rows_at(blocks, np.arange(start, start + count), starts)

    def spread_rows(self, limit: int) -> np.ndarray:
        """At most `limit` training row indices, evenly spread, in file order."""
        n = self.train_rows
        pos = np.linspace(0, n - 1, min(limit, n)).astype(np.int64)  # all of them: 0..n-1
        return np.sort(self.rows_at(self.train_blocks, pos))

    def eval_rows(self, limit: int) -> np.ndarray:
        """The first `limit` held-out row indices, in file order."""
        return self.first_rows(self.eval_blocks, limit)
