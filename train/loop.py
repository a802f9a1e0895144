"""The training loop: build data, model, loss, optimizer and step for this rank, then run.

Run state that a resume needs beyond the tensors (position in the stream, the open metrics
window, timings, skipped steps) lives in one dict, `state`, saved in each checkpoint's manifest.
"""

from __future__ import annotations

import math
import signal
import time
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn

from pipeline import DataSpec, eval_arrays, make_train_dataset
from pipeline.dataset import steps_per_item
from train.checkpoint import Checkpoint, CheckpointDir, CheckpointError, fingerprint
from train.cluster import Cluster
from train.config import Config
from train.loss import make_loss
from train.model import format_params, linear_params, make_model
from train.output import RunOutput
from train.step import make_eval_step, make_train_step

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later" - a requeue script can key on it


class NonFiniteError(RuntimeError):
    """The loss or the gradient stopped being a finite number."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was written at a step boundary."""


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


def _state_tensors(optimizer: nn.Optimizer) -> dict[str, Parameter]:
    """Everything the optimizer owns that a resume needs: weights, momentum buffers, SGD's
    first-step flags and its step counter. Not the lr table, which the config rebuilds."""
    return {n: p for n, p in optimizer.parameters_and_names() if not n.startswith("learning_rate")}


def _restore(optimizer: nn.Optimizer, ckpt: Checkpoint) -> None:
    params = _state_tensors(optimizer)
    missing = params.keys() - ckpt.tensors.keys()
    if missing:
        raise CheckpointError(f"{ckpt.path.name} lacks {sorted(missing)}: not this model's")
    for name, p in params.items():
        p.set_data(Tensor(ckpt.tensors[name]))


class _SigtermFlag:
    """Turns SIGTERM into a flag read at step boundaries (a handler must not write files)."""

    def __init__(self) -> None:
        self.set = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.set = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def train(cfg: Config, cluster: Cluster, out: RunOutput,
          ckpt: Checkpoint | None = None) -> dict[str, Any]:
    """Train up to cfg.epochs * cfg.steps_per_epoch optimizer steps; return the summary.

    With `ckpt`, continue from it: same parameters, optimizer state, stream position and
    metrics window, so the result equals the uninterrupted run.
    """
    t_start = time.perf_counter()
    sigterm = _SigtermFlag()  # first: a SIGTERM during start-up also ends in a checkpoint
    total = cfg.epochs * cfg.steps_per_epoch
    start = ckpt.step if ckpt else 0
    state: dict[str, Any] = dict(ckpt.state) if ckpt else {
        "window_loss": 0.0, "window_n": 0, "timed_steps": 0, "train_s": 0.0, "wall_s": 0.0,
        "loss": math.nan, "eval_loss": math.nan, "eval_mse": math.nan, "skipped": [],
        "segments": 0}
    state["segments"] += 1
    spec = data_spec(cfg)
    chunk = steps_per_item(cfg.accum_steps * cfg.batch_size)
    chunks: Any = []  # a finished run resumed with the same epochs has nothing left to do
    if start < total:
        chunks = make_train_dataset(
            spec, cfg.seed, cfg.batch_size, cfg.accum_steps, cfg.steps_per_epoch, cfg.epochs,
            num_shards=cluster.world_size, shard_id=cluster.rank, start_step=start, chunk=chunk,
        ).create_tuple_iterator(num_epochs=1)
    # The first micro-batch of each step in a chunk; made once: every new tensor costs.
    index = [Tensor(np.int32(j * cfg.accum_steps)) for j in range(chunk)]
    model = make_model(cfg.features, cfg.seed)
    loss_fn = make_loss(cfg.loss, cfg.delta)
    optimizer = nn.SGD(model.trainable_params(), learning_rate=learning_rate(cfg, total),
                       momentum=cfg.momentum)
    if ckpt:
        _restore(optimizer, ckpt)
    mpi_grads = cfg.grad_backend == "mpi" and cluster.world_size > 1
    step_fn = make_train_step(
        model, loss_fn, optimizer, cfg.accum_steps, cfg.clip_norm,
        None if mpi_grads else cluster.grad_reducer(optimizer.parameters),
        skip_nonfinite=cfg.skip_nonfinite > 0,
        host_grad_mean=cluster.host_grad_mean() if mpi_grads else None)
    eval_fn = make_eval_step(model, loss_fn)
    eval_x, eval_y = (Tensor(a) for a in eval_arrays(spec, cfg.seed, cfg.eval_size))
    ckpts = CheckpointDir(out.dir, cfg.keep_ckpts,
                          on_write=(lambda: time.sleep(cfg.test_ckpt_pause))
                          if cfg.test_ckpt_pause else None)
    fp = fingerprint(cfg, cluster.world_size)
    global_batch = cfg.global_batch_size(cluster.world_size)

    def totals() -> dict[str, float]:
        """Run-wide counters: earlier processes' (from the checkpoint) plus this one's."""
        now = time.perf_counter()
        return {"timed_steps": state["timed_steps"] + max(n_seg - 1, 0),
                "train_s": state["train_s"] + (now - t_first if t_first else 0.0),
                "wall_s": state["wall_s"] + (now - t_start)}

    def save(step: int, run_state: dict[str, Any]) -> None:
        if not out.main:  # parameters are identical on every rank: one writer is enough
            return
        tensors = {n: p.asnumpy() for n, p in _state_tensors(optimizer).items()}
        try:
            ckpts.save(step, tensors, {**run_state, "fingerprint": fp})
        except OSError as e:
            raise OSError(f"cannot write the checkpoint at step {step} in {ckpts.dir} "
                          f"({e.strerror or e}); earlier checkpoints are untouched") from None

    out.info(f"{cluster.launch}: rank {cluster.rank} of {cluster.world_size} on {cfg.device}; "
             f"global batch {global_batch}; steps {start + 1}-{total}"
             + (f" (resumed from {ckpt.path.name})" if ckpt else ""))
    out.progress(total, initial=start)
    step, t_window, t_first, n_seg = start, time.perf_counter(), None, 0
    first_step_at = None
    try:
        for xc, yc, j in ((xc, yc, j) for xc, yc in chunks for j in range(chunk)):
            if step == total:
                break  # the last chunk's padding
            step += 1
            if step == cfg.nan_at_step:
                xc = xc * float("nan")
            loss_v, norm_v = (float(v) for v in step_fn(xc, yc, index[j]).asnumpy())
            if step == cfg.fail_at_step and cluster.rank == cfg.fail_rank:
                raise RuntimeError(f"test failure injected at step {step} (--fail_at_step)")
            # The norm is taken after the all-reduce: every rank sees the same value here.
            if not math.isfinite(norm_v):
                state["skipped"].append(step)
                msg = (f"non-finite loss {loss_v} / gradient norm {norm_v} at step {step} "
                       f"on rank {cluster.rank}")
                if len(state["skipped"]) > cfg.skip_nonfinite:
                    raise NonFiniteError(msg + (f" (more than --skip_nonfinite "
                                                f"{cfg.skip_nonfinite})" if cfg.skip_nonfinite
                                                else ""))
                out.warn(msg + "; update skipped")
                out.metrics({"step": step, "skipped_nonfinite": True})
            else:
                state["window_loss"] += loss_v
                state["window_n"] += 1
            n_seg += 1
            if t_first is None:
                t_first = time.perf_counter()  # throughput excludes graph compilation
                first_step_at = time.time()  # for launch-latency measurements (train.bench)
            epoch, in_epoch = divmod(step, cfg.steps_per_epoch)
            stop = sigterm.set
            if step % cfg.log_every == 0 or in_epoch == 0 or step == total:
                now = time.perf_counter()
                # Mean over ranks, so the logged loss does not depend on how the batch is
                # split; the same collective tells every rank whether any got SIGTERM.
                n = max(state["window_n"], 1)
                got = cluster.all_sum(np.array([state["window_loss"] / n, float(stop)]))
                state["loss"], stop = float(got[0]) / cluster.world_size, bool(got[1] > 0)
                out.metrics({"epoch": math.ceil(step / cfg.steps_per_epoch), "step": step,
                             "loss": state["loss"], "grad_norm": norm_v,
                             "samples_per_s": state["window_n"] * global_batch
                             / (now - t_window)})
                out.advance(step, loss=f"{state['loss']:.4f}")
                state["window_loss"], state["window_n"], t_window = 0.0, 0, now
            elif cluster.world_size > 1:
                stop = False  # ranks agree on stopping only at log steps (no extra collective)
            if in_epoch == 0:
                state["eval_loss"], state["eval_mse"] = (
                    float(v) for v in eval_fn(eval_x, eval_y).asnumpy())
                w, b = linear_params(model)
                out.metrics({"epoch": epoch, "step": step, "eval_loss": state["eval_loss"],
                             "eval_mse": state["eval_mse"]})
                out.info(f"epoch {epoch}/{cfg.epochs}  step {step}  loss {state['loss']:.4f}  "
                         f"eval_loss {state['eval_loss']:.4f}  {format_params(w, b)}")
            stop = stop and step < total  # SIGTERM on the last step: just finish
            if stop or step == total or (cfg.ckpt_every and step % cfg.ckpt_every == 0):
                if state["window_n"] and cluster.world_size > 1:
                    # Only rank 0's state is saved, so the open metrics window must hold the
                    # same (global) value on every rank. Done at every checkpoint, resumed or
                    # not, so that an interrupted run does exactly the same arithmetic.
                    total_loss = cluster.all_sum(np.array([state["window_loss"]]))[0]
                    state["window_loss"] = float(total_loss) / cluster.world_size
                save(step, {**state, **totals()})
            if stop:
                cluster.all_sum(np.zeros(1))  # barrier: rank 0's checkpoint is on disk
                raise Preempted(f"SIGTERM: stopped at step {step} with a checkpoint; "
                                f"continue with --resume --out {out.dir}")
    finally:
        sigterm.restore()
        out.close_progress()
    assert step == total, f"the pipeline delivered {step} steps, expected {total}"

    cluster.check_identical([p.asnumpy() for p in optimizer.parameters])
    run = totals()
    w, b = linear_params(model)
    return {
        "w": w, "b": b, "true_w": cfg.true_w, "true_b": cfg.true_b,
        "final_loss": state["loss"], "eval_loss": state["eval_loss"],
        "eval_mse": state["eval_mse"], "steps": step, "epochs": cfg.epochs,
        "world_size": cluster.world_size, "global_batch_size": global_batch,
        "samples_per_s": run["timed_steps"] * global_batch / max(run["train_s"], 1e-9),
        "wall_s": run["wall_s"], "device": cfg.device,
        "launch": cluster.launch, "loss": cfg.loss, "seed": cfg.seed,
        "segments": state["segments"], "skipped_nonfinite": state["skipped"],
        "first_step_at": first_step_at,
        "mindspore_version": ms.__version__,
    }
