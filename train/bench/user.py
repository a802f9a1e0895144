"""`python -m train.bench --user`: what the machinery costs a network of yours. The same network
(two hidden layers with LayerNorm), loss (pinball) and rows, trained three ways at one batch
size: through the package (`--model/--loss/--data MODULE:NAME`, from summary.json's
samples_per_s, compilation excluded), and in plain MindSpore loops of `value_and_grad` + `jit` +
`nn.AdamWeightDecay`, fed either by NumPy batches made into Tensors each step or by
`GeneratorDataset(rows).batch(B)`. Time per step, after a warm-up.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from train.launch import TRAINER
from train.rundir import read_summary

ROWS, FEATURES, WIDTH = 1 << 16, 16, 64


def BenchNet(features: int = FEATURES, width: int = WIDTH) -> Any:  # noqa: N802 - a factory
    """Dense -> LayerNorm -> ReLU, twice, then Dense to one output."""
    from mindspore import nn

    return nn.SequentialCell([nn.Dense(features, width), nn.LayerNorm((width,)), nn.ReLU(),
                              nn.Dense(width, width), nn.LayerNorm((width,)), nn.ReLU(),
                              nn.Dense(width, 1)])


def Pinball() -> Any:  # noqa: N802 - a factory
    """The median's pinball loss, as an nn.Cell."""
    from mindspore import nn, ops

    class _Pinball(nn.LossBase):
        def construct(self, logits: Any, labels: Any) -> Any:
            e = labels - logits
            return self.get_loss(ops.maximum(0.5 * e, -0.5 * e))

    return _Pinball()


class BenchRows:
    """2**16 rows of 16 features, y = sin(x·w) + noise: a map-style source."""

    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        self.x = rng.uniform(-1, 1, (ROWS, FEATURES)).astype(np.float32)
        self.y = np.sin(self.x @ np.linspace(-1, 1, FEATURES)).astype(np.float32)[:, None]

    def __len__(self) -> int:
        return ROWS

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.x[i], self.y[i]


def _plain(batch: int, steps: int, feed: str) -> float:
    """Seconds per step of a plain MindSpore loop (after 20 warm-up steps)."""
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore import Tensor, nn

    ms.set_seed(0)
    net, loss_fn, rows = BenchNet(), Pinball(), BenchRows()
    opt = nn.AdamWeightDecay(net.trainable_params(), learning_rate=1e-3, weight_decay=0.01)

    def forward(x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(net(x), y)

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    @ms.jit
    def step(x: Tensor, y: Tensor) -> Tensor:
        loss, grads = grad_fn(x, y)
        opt(grads)
        return loss

    net.set_train(True)
    if feed == "numpy":
        order = np.random.default_rng(0).permutation(ROWS)

        def batches() -> Any:
            for i in range(0, ROWS - batch + 1, batch):
                idx = order[i:i + batch]
                yield Tensor(rows.x[idx]), Tensor(rows.y[idx])
    else:
        data = ds.GeneratorDataset(rows, ["x", "y"], shuffle=True).batch(batch, True)

        def batches() -> Any:
            return data.create_tuple_iterator(num_epochs=1)
    done, t0 = 0, 0.0
    while done < steps + 20:
        for x, y in batches():
            step(x, y).asnumpy() if done % 50 == 0 else step(x, y)
            done += 1
            if done == 20:
                t0 = time.perf_counter()
            if done == steps + 20:
                break
    return (time.perf_counter() - t0) / steps


def _package(batch: int, epochs: int, root: Path) -> float:
    """Seconds per step through `python -m train` (its samples_per_s excludes compilation)."""
    out = root / f"user-{batch}"
    where = "train.bench.user"
    r = subprocess.run([*TRAINER, "--model", f"{where}:BenchNet", "--loss",
                        f"{where}:Pinball", "--data", f"{where}:BenchRows", "--optimizer",
                        "adamw", "--weight_decay", "0.01", "--lr", "0.001", "--batch_size",
                        str(batch), "--epochs", str(epochs), "--eval_fraction", "0.01",
                        "--quiet", "--out", str(out)], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-500:])
    return batch / read_summary(out)["samples_per_s"]


def run_user(root: Path, batches: tuple[int, ...] = (64, 256)) -> list[dict[str, Any]]:
    """One row per batch size: ms per step through the package and in the plain loops."""
    found = []
    for b in batches:
        steps = min(2000, ROWS // b * 2)
        found.append({"batch": b, "package_ms": 1e3 * _package(b, 2, root),
                      "plain_numpy_ms": 1e3 * _plain(b, steps, "numpy"),
                      "plain_dataset_ms": 1e3 * _plain(b, steps, "dataset")})
    return found
