"""A team's own code, as the tests use it: a network the package does not ship (two hidden
layers with LayerNorm), a loss it does not ship (pinball, the quantile loss) and a map-style
source of rows (y = sin(x·w) + noise, x of 8 features)."""

import numpy as np
from mindspore import nn, ops


class Net(nn.Cell):
    """Dense -> LayerNorm -> ReLU, twice, then Dense to one output."""

    def __init__(self, features: int = 8, width: int = 16) -> None:
        super().__init__()
        self.body = nn.SequentialCell([
            nn.Dense(features, width), nn.LayerNorm((width,)), nn.ReLU(),
            nn.Dense(width, width), nn.LayerNorm((width,)), nn.ReLU()])
        self.head = nn.Dense(width, 1)

    def construct(self, x):
        return self.head(self.body(x))


class Pinball(nn.LossBase):
    """The quantile loss: q·e for e >= 0, (q - 1)·e below, e = target - prediction."""

    def __init__(self, q: float = 0.5) -> None:
        super().__init__()
        self.q = q

    def construct(self, logits, labels):
        e = labels - logits
        return self.get_loss(ops.maximum(self.q * e, (self.q - 1) * e))


class Rows:
    """2,048 rows: x ~ U(-1, 1)^8, y = sin(x·w) + 0.1·noise; fixed by its own seed."""

    def __init__(self, n: int = 2048) -> None:
        rng = np.random.default_rng(7)
        self.x = rng.uniform(-1, 1, (n, 8)).astype(np.float32)
        w = np.linspace(-1, 1, 8)
        self.y = (np.sin(self.x @ w) + 0.1 * rng.normal(size=n)).astype(np.float32)[:, None]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]
