"""Code of a user's that is wrong in each of the ways the package must answer clearly."""

import numpy as np
from mindspore import nn, ops
from mynet import Rows


def not_a_cell():
    """A model factory that returns something other than an nn.Cell."""
    return {"layers": 2}


def raises(width: int = 4):
    """A model factory with a bug of its own."""
    return [1, 2][width]


class VectorLoss(nn.Cell):
    """A loss that forgets to reduce: one value per row."""

    def construct(self, logits, labels):
        return ops.abs(logits - labels)


class Empty:
    """A source without rows."""

    def __len__(self):
        return 0

    def __getitem__(self, i):
        raise IndexError(i)


class Ragged(Rows):
    """Row 1500 gains a feature from its fifth read on (epoch 4: found while training, after
    the first checkpoints, not at row 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        if i == 1500:
            self.reads += 1
            if self.reads >= 5:
                return np.append(x, 0.0).astype(np.float32), y
        return x, y


class Failing(Rows):
    """Row 1500 raises inside the user's own __getitem__."""

    def __getitem__(self, i):
        if i == 1500:
            raise KeyError(f"no row {i} in the user's store")
        return super().__getitem__(i)
