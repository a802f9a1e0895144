"""The MindSpore rows of the benchmark, in this process: the package's pipeline and step, the
same step on prepared tensors, `Model.train`, and the seed article's loop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from train.bench import DELTA, LR, MOMENTUM, READ_EVERY, SEED, batches


def ms_setup() -> tuple[Any, Any, Any]:
    """Fresh model + the package's step (constant lr) + its step record (read like the loop)."""
    from train.loss import HuberLoss
    from train.model import make_model
    from train.optim import GuardedSGD
    from train.step import LrWindow, OptimSpec, StepRecord, make_train_step

    model = make_model(1, SEED)
    opt = GuardedSGD(model.trainable_params(), MOMENTUM)
    record, lr = StepRecord(READ_EVERY, 2, list(opt.parameters)), LrWindow(LR, "constant", 1)
    return model, record, make_train_step(model, HuberLoss(DELTA), OptimSpec(opt, record, lr))


def params_of(model: Any) -> list[float]:
    from train.model import linear_params

    w, b = linear_params(model)
    return [*w, b]


def item_chunks(batch: int, steps: int, stream: Any = None) -> tuple[Any, list[Any], int]:
    """The package's pipeline as train.loop builds it: the chunk iterator, the in-chunk step
    indices, and K."""
    from mindspore import Tensor

    from pipeline import DataSpec, SyntheticStream, make_train_dataset
    from pipeline.dataset import steps_per_item

    k = steps_per_item(batch)
    stream = stream or SyntheticStream(DataSpec(), SEED)
    data = make_train_dataset(stream, batch, 1, steps, 1, num_shards=1, shard_id=0, chunk=k)
    return data.create_tuple_iterator(num_epochs=1), [Tensor(np.int32(j)) for j in range(k)], k


def npy_stream(batch: int, steps: int, root: Path) -> Any:
    """A .npy file holding the synthetic stream's first batch*steps rows, opened as the trainer
    opens `--data` (memory-mapped, validated, no held-out split, not standardized: the rows
    keep the synthetic scale)."""
    from train.config import Config
    from train.plan import open_source

    path = root / f"rows-{batch}-{steps}.npy"
    if not path.exists():
        rows = np.concatenate([np.concatenate(b, axis=1) for b in batches(batch, steps)])
        np.save(path, rows.astype(np.float32))
    cfg = Config(data=str(path), batch_size=batch, eval_fraction=0.0, standardize=False,
                 delta=DELTA)
    return open_source(cfg).stream


def run_pipeline(batch: int, steps: int, stream: Any = None) -> tuple[float, list[float]]:
    """GeneratorDataset -> jit step, as train.loop runs it; first step (compile) not timed."""
    model, metrics, step = ms_setup()
    it, index, k = item_chunks(batch, steps, stream)
    n, t0 = 0, None
    for xc, yc in it:
        for j in range(min(k, steps - n)):
            step(xc, yc, index[j])
            n += 1
            if n % READ_EVERY == 0:
                metrics.read()  # as the loop: one read per log window
            if t0 is None:
                metrics.read()  # the first step compiles: wait for it before timing
                t0 = time.perf_counter()
    params = params_of(model)  # a read: waits for the last step
    rate = (steps - 1) * batch / (time.perf_counter() - t0)
    it.stop()  # its worker threads would otherwise compete with the next row
    return rate, params


def run_prepared(batch: int, steps: int, stream: Any = None) -> tuple[float, list[float]]:
    """The same step on the same chunks, all taken from the dataset before the clock starts:
    the step alone. (Tensors made with `Tensor(ndarray)` instead were measured slower to feed
    than the dataset's own at batch 256, which would flatter the pipeline.)"""
    model, metrics, step = ms_setup()
    it, index, k = item_chunks(batch, steps, stream)
    chunks = list(it)
    it.stop()
    work = [(xc, yc, index[j]) for c, (xc, yc) in enumerate(chunks)
            for j in range(min(k, steps - c * k))]
    step(*work[0])
    metrics.read()
    t0 = time.perf_counter()
    for n, args in enumerate(work[1:], 2):
        step(*args)
        if n % READ_EVERY == 0:
            metrics.read()
    params = params_of(model)
    return (steps - 1) * batch / (time.perf_counter() - t0), params


def run_model_train(batch: int, steps: int) -> tuple[float, list[float]]:
    """MindSpore's high-level `Model.train`: the same Dense, Huber loss and SGD with momentum,
    fed by a GeneratorDataset of whole batches, no data sink (CPU refuses it). The seed
    article's argument is to leave `Model.train` for a functional step: this row says how much
    that buys. Timed from the end of the first step (compilation excluded)."""
    import mindspore.dataset as ds
    from mindspore import nn
    from mindspore.train import Callback, Model

    from train.loss import HuberLoss
    from train.model import make_model

    rows = batches(batch, steps)

    class Source:
        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            return rows[i]

    class FirstStep(Callback):
        t0: float | None = None

        def on_train_step_end(self, run_context: Any) -> None:
            if self.t0 is None:
                self.t0 = time.perf_counter()

    net = make_model(1, SEED)
    opt = nn.SGD(net.trainable_params(), learning_rate=LR, momentum=MOMENTUM)
    data = ds.GeneratorDataset(Source(), ["x", "y"], shuffle=False, python_multiprocessing=False)
    timer = FirstStep()
    Model(net, loss_fn=HuberLoss(DELTA), optimizer=opt).train(
        1, data, callbacks=[timer], dataset_sink_mode=False)
    params = params_of(net)
    return (steps - 1) * batch / (time.perf_counter() - timer.t0), params


def run_seed_loop(steps: int) -> tuple[float, list[float]]:
    """The seed article's loop, kept as written there: batch 1, select-form Huber, a new
    Tensor per step, `@ms.jit` train step (rows from our stream so that it can be checked)."""
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    class ArticleHuber(nn.LossBase):
        def __init__(self, delta: float = 1.0) -> None:
            super().__init__("mean")
            self.delta = delta

        def construct(self, logits: Tensor, labels: Tensor) -> Tensor:
            abs_error = ops.abs(logits - labels)
            small = 0.5 * ops.square(abs_error)
            large = self.delta * (abs_error - 0.5 * self.delta)
            return self.get_loss(ops.select(abs_error <= self.delta, small, large))

    from train.model import make_model

    net = make_model(1, SEED)
    loss_fn = ArticleHuber(DELTA)
    opt = nn.SGD(net.trainable_params(), learning_rate=LR, momentum=MOMENTUM)

    def forward_fn(data: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        logits = net(data)
        return loss_fn(logits, label), logits

    grad_fn = ms.value_and_grad(forward_fn, None, opt.parameters, has_aux=True)

    @ms.jit
    def train_step(data: Tensor, label: Tensor) -> Tensor:
        (loss, _), grads = grad_fn(data, label)
        opt(grads)
        return loss

    rows = batches(1, steps)
    t0 = None
    for i, (x, y) in enumerate(rows):
        loss = train_step(Tensor([[float(x[0, 0])]], ms.float32),
                          Tensor([[float(y[0, 0])]], ms.float32))
        loss.asnumpy()  # the article sums loss.asnumpy() every step
        if i == 0:
            t0 = time.perf_counter()
    return (steps - 1) / (time.perf_counter() - t0), params_of(net)

