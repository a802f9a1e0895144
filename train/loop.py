"""The training loop: build data, model, loss, optimizer and step for this rank, then run."""

from __future__ import annotations

import math
import time
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from pipeline import DataSpec, eval_arrays, make_train_dataset
from train.cluster import Cluster
from train.config import Config
from train.loss import make_loss
from train.model import linear_params, make_model
from train.output import RunOutput
from train.step import make_eval_step, make_train_step


class NonFiniteError(RuntimeError):
    """The loss or the gradient stopped being a finite number."""


def data_spec(cfg: Config) -> DataSpec:
    """The data-shape part of the config."""
    return DataSpec(features=cfg.features, true_w=cfg.true_w, true_b=cfg.true_b,
                    noise_std=cfg.noise_std, outlier_fraction=cfg.outlier_fraction,
                    outlier_scale=cfg.outlier_scale)


def learning_rate(cfg: Config, total_steps: int) -> float | Tensor:
    """The lr for nn.SGD: a float, or one value per optimizer step (SGD indexes it itself)."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    t = np.arange(total_steps, dtype=np.float64)
    return Tensor((0.5 * cfg.lr * (1 + np.cos(np.pi * t / total_steps))).astype(np.float32))


def train(cfg: Config, cluster: Cluster, out: RunOutput) -> dict[str, Any]:
    """Train for cfg.epochs * cfg.steps_per_epoch optimizer steps; return the summary."""
    t_start = time.perf_counter()
    spec = data_spec(cfg)
    dataset = make_train_dataset(spec, cfg.seed, cfg.batch_size, cfg.accum_steps,
                                 cfg.steps_per_epoch, cfg.epochs,
                                 num_shards=cluster.world_size, shard_id=cluster.rank)
    model = make_model(cfg.features, cfg.seed)
    loss_fn = make_loss(cfg.loss, cfg.delta)
    total = cfg.epochs * cfg.steps_per_epoch
    optimizer = nn.SGD(model.trainable_params(), learning_rate=learning_rate(cfg, total),
                       momentum=cfg.momentum)
    step_fn = make_train_step(model, loss_fn, optimizer, cfg.accum_steps, cfg.clip_norm,
                              cluster.grad_reducer(optimizer.parameters))
    eval_fn = make_eval_step(model, loss_fn)
    eval_x, eval_y = (Tensor(a) for a in eval_arrays(spec, cfg.seed, cfg.eval_size))
    global_batch = cfg.global_batch_size(cluster.world_size)

    out.info(f"{cluster.launch}: rank {cluster.rank} of {cluster.world_size} on {cfg.device}; "
             f"global batch {global_batch}; {total} steps")
    out.progress(total)
    step, window_loss, window_n, t_window = 0, 0.0, 0, time.perf_counter()
    t_first = None  # end of the first step: throughput excludes graph compilation
    loss_v = eval_loss = math.nan
    for xs, ys in dataset.create_tuple_iterator(num_epochs=1):
        loss, grad_norm = step_fn(xs, ys)
        step += 1
        loss_v, norm_v = float(loss.asnumpy()), float(grad_norm.asnumpy())
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            raise NonFiniteError(f"non-finite loss {loss_v} / gradient norm {norm_v} at step "
                                 f"{step} on rank {cluster.rank}")
        if step == cfg.fail_at_step and cluster.rank == cfg.fail_rank:
            raise RuntimeError(f"test failure injected at step {step} (--fail_at_step)")
        t_first = t_first or time.perf_counter()
        window_loss, window_n = window_loss + loss_v, window_n + 1
        epoch, in_epoch = divmod(step, cfg.steps_per_epoch)
        if step % cfg.log_every == 0 or in_epoch == 0:
            now = time.perf_counter()
            # Mean over ranks, so the logged loss does not depend on how the batch is split.
            mean_loss = float(cluster.all_mean(np.array([window_loss / window_n]))[0])
            rate = window_n * global_batch / (now - t_window)
            out.metrics({"epoch": math.ceil(step / cfg.steps_per_epoch), "step": step,
                         "loss": mean_loss, "grad_norm": norm_v, "samples_per_s": rate})
            out.advance(window_n, loss=f"{mean_loss:.4f}", samples_s=f"{rate:,.0f}")
            window_loss, window_n, t_window = 0.0, 0, now
        if in_epoch == 0:
            eval_loss, eval_mse = (float(v.asnumpy()) for v in eval_fn(eval_x, eval_y))
            w, b = linear_params(model)
            out.metrics({"epoch": epoch, "step": step, "eval_loss": eval_loss,
                         "eval_mse": eval_mse})
            out.info(f"epoch {epoch}/{cfg.epochs}  step {step}  loss {mean_loss:.4f}  "
                     f"eval_loss {eval_loss:.4f}  w {_fmt(w)}  b {b:.4f}")
    out.close_progress()
    assert step == total, f"the pipeline delivered {step} steps, expected {total}"

    params = [p.asnumpy() for p in optimizer.parameters]
    cluster.check_identical(params)
    t_end = time.perf_counter()
    w, b = linear_params(model)
    return {
        "w": w, "b": b, "true_w": cfg.true_w, "true_b": cfg.true_b,
        "final_loss": mean_loss, "eval_loss": eval_loss, "eval_mse": eval_mse,
        "steps": step, "epochs": cfg.epochs, "world_size": cluster.world_size,
        "global_batch_size": global_batch,
        "samples_per_s": (step - 1) * global_batch / max(t_end - t_first, 1e-9),
        "wall_s": t_end - t_start, "device": cfg.device, "launch": cluster.launch,
        "loss": cfg.loss, "seed": cfg.seed, "mindspore_version": ms.__version__,
    }


def _fmt(w: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in w) + "]"
