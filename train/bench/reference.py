"""The reference rows: the same SGD written by hand in NumPy (the practical ceiling on this
machine), and PyTorch eager (the optional `bench` extra)."""

from __future__ import annotations

import os
import time

import numpy as np

from train.bench import DELTA, LR, MOMENTUM, READ_EVERY, SEED, batches


def init_params() -> tuple[np.ndarray, np.ndarray]:
    from train.model import make_model

    m = make_model(1, SEED)
    return m.weight.asnumpy().copy(), m.bias.asnumpy().copy()


def run_numpy(batch: int, steps: int) -> tuple[float, list[float]]:
    """Hand-written float32 SGD with momentum on the Huber loss (clamp form)."""
    w, b = init_params()
    w, b = w.reshape(-1), b.copy()
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    data = batches(batch, steps)
    lr, mom, d = np.float32(LR), np.float32(MOMENTUM), np.float32(DELTA)
    t0 = None
    for i, (x, y) in enumerate(data):
        xs, ys = x[:, 0], y[:, 0]
        e = xs * w[0] + b[0] - ys
        c = np.clip(e, -d, d)
        _loss = float(np.mean(c * (e - np.float32(0.5) * c)))  # as the others compute it
        gw = np.float32(np.dot(c, xs) / batch)
        gb = np.float32(c.sum() / batch)
        # MindSpore's SGD: the first step takes the gradient itself as the momentum buffer.
        vw = np.float32(gw) if i == 0 else mom * vw + gw
        vb = np.float32(gb) if i == 0 else mom * vb + gb
        w, b = w - lr * vw, b - lr * vb
        if i == 0:
            t0 = time.perf_counter()
    return (steps - 1) * batch / (time.perf_counter() - t0), [float(w[0]), float(b[0])]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_torch(batch: int, steps: int) -> tuple[float, list[float]]:
    """PyTorch eager: nn.Linear, F.huber_loss, optim.SGD(momentum) - what a user would write."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    w, b = init_params()
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w))
        model.bias.copy_(torch.from_numpy(b))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches(batch, steps)]
    t0 = None
    for i, (x, y) in enumerate(data):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.huber_loss(model(x), y, delta=DELTA)
        loss.backward()
        opt.step()
        if i % READ_EVERY == 0:
            loss.item()  # the host read the MindSpore loop does once per log window
        if i == 0:
            t0 = time.perf_counter()
    return (steps - 1) * batch / (time.perf_counter() - t0), [
        float(model.weight.detach()[0, 0]), float(model.bias.detach()[0])]

