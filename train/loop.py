"""The training loop of one rank, in phases: build (data, model, step), feed (one optimizer step
or one data-sink call at a time), read (the device's metrics, once per window), decide
(non-finite steps, stop requests), evaluate, checkpoint.

Host reads happen only at read points: log steps (`--log_every`), checkpoint steps, epoch ends,
the last step, and a stop. Between them the step's metrics stay on the device (train/step.py).
Several ranks must also agree when to stop after a signal: they exchange the stop flag at
agreement points about a second apart - every log step, plus a step interval that rank 0 fixes
at start from the measured step time and shares (until then at steps 1, 2, 4, 8, ...). So a
SIGTERM leads to a checkpoint within ~1 s + one step + the write, whatever `--log_every` is.

Run state that a resume needs beyond the tensors (position in the stream, the open metrics
window, timings, skipped steps) lives in one dict, `state`, saved in each checkpoint's manifest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import mindspore as ms
import numpy as np
from mindspore import Tensor

from pipeline import eval_chunks, make_train_dataset
from pipeline.dataset import eval_batches
from train import converge, report
from train.checkpoint import Checkpoint, CheckpointDir
from train.cluster import Cluster
from train.config import LOSSES
from train.finish import FinishStopped, finish_line, finish_linear
from train.loss import make_loss
from train.model import (
    LOSS_SCALE_COUNTER,
    LOSS_SCALE_VALUE,
    format_params,
    linear_params,
    make_model,
    mixed_precision,
    restore,
    state_tensors,
)
from train.network import check_outputs, make_user_loss
from train.optim import make_optimizer
from train.output import OutputError, RunOutput
from train.step import (
    LrWindow,
    OptimSpec,
    PrecisionSpec,
    ReduceSpec,
    StepRecord,
    make_eval_step,
    make_loss_scaler,
    make_sink_step,
    make_train_step,
    make_user_eval_step,
)
from train.stop import Preempted, StopRequest

if TYPE_CHECKING:
    from train.plan import RunPlan

AGREE_SECONDS = 1.0  # target spacing of the ranks' stop agreements
EPOCH_LINES = 20  # console lines for the epochs of a run, at most about (every epoch is logged)
RING_MAX = 4096  # most steps between two reads of the device's step record
FRESH_STATE: dict[str, Any] = {
    "window_loss": 0.0, "window_n": 0, "timed_steps": 0, "train_s": 0.0, "wall_s": 0.0,
    "loss": None, "eval_loss": None, "eval_mse": None, "skipped": [], "overflow_skips": 0,
    "segments": 0, "data_stats": None, "columns": None, "levels": None, "finish": None}


class NonFiniteError(RuntimeError):
    """The loss, the gradient or the parameters stopped being finite numbers."""


class Trainer:
    """One rank's run: `run()` trains up to epochs x steps_per_epoch steps and returns the
    summary. With `ckpt` it continues from it: the result equals the uninterrupted run."""

    def __init__(self, plan: RunPlan, cluster: Cluster, out: RunOutput,
                 stop: StopRequest) -> None:
        cfg, ckpt, faults = plan.cfg, plan.ckpt, plan.faults
        self.cfg, self.cluster, self.out, self.source = cfg, cluster, out, plan.source
        self.faults, self.stop, self.fingerprint = faults, stop, plan.fingerprint
        self.total, self.chunk, self.start_params = plan.total, plan.chunk, plan.start
        self.start = ckpt.step if ckpt else 0
        self.state = {**FRESH_STATE, **(ckpt.state if ckpt else {})}
        self.state["skipped"] = list(self.state["skipped"])
        self.state["segments"] += 1
        if self.state["finish"] and self.state["finish"]["at_step"] != self.total:
            self.state["finish"] = None  # a finished run trained on: its finish is history
        self.global_batch = cfg.global_batch_size(cluster.world_size)
        # Losses in the data's units: Huber (delta scaled with it) and MSE scale with std(y)^2
        # on a standardized file; a loss of yours is reported in the units it trains in.
        self.loss_unit = self.source.loss_unit if cfg.loss in LOSSES else 1.0
        # Steps per ms.data_sink call (Ascend/GPU; 0: fed from the host, as always on CPU),
        # and steps per call of either kind.
        self.sink = cfg.sink_size if cfg.device != "CPU" else 0
        self.k = self.sink or 1
        self._build_model(plan.net, ckpt)
        self._build_eval()
        why = self.source.hold()  # a data file that is rewritten stops the run (SIGIO)
        if why:
            out.log.info(f"no lease on the data file ({why}): a rewrite of it is noticed at "
                         "the next read of rows instead")
        self.record.read()  # compiles the read now, not inside the timed steps
        self.ckpts = CheckpointDir(out.dir, cfg.keep_ckpts,
                                   on_write=lambda: faults.pause("ckpt_pause"))
        self.saved_at = self.start if ckpt else -1
        self.t_start, self.t_first, self.first_done = time.perf_counter(), None, 0
        self.n_timed = 0  # steps after the first call of this process (which compiles)
        self.first_step_at: float | None = None
        self.agree_every: int | None = None if cluster.world_size > 1 else 1
        self.agree_from = self.start
        self.read_upto, self.window_steps = self.start, 0
        self.no_finish = converge.why_no_finish(self.cfg)

    # --- build -------------------------------------------------------------------------

    def _build_model(self, net: Any, ckpt: Checkpoint | None) -> None:
        """The network (yours, built by the plan, or the built-in one), the loss, optimizer,
        loss scaler and the train and eval steps; a checkpoint's tensors restored."""
        cfg = self.cfg
        self.net = net if net is not None else make_model(
            self.source.features, cfg.seed, cfg.hidden_sizes(), self.start_params)
        model = self.net
        low = cfg.amp_level != "O0"
        if low:
            model = mixed_precision(self.net, cfg.amp_level, cfg.amp_dtype)
        delta = self.source.loss_delta(cfg.delta)
        loss_fn = make_user_loss(cfg) if cfg.loss not in LOSSES else make_loss(cfg.loss, delta)
        if not cfg.builtin:  # code of yours: its output checked once, in one small graph
            check_outputs(model, loss_fn, self.source, cfg, low)  # (eval mode: no dropout)
        # Training mode for the train step (dropout drops, BatchNorm updates its statistics),
        # eval mode for the eval step: each jit function is compiled once, in its mode.
        self.model = model
        model.set_train(True)
        self.optimizer = make_optimizer(cfg.optimizer, self.net.trainable_params(),
                                        cfg.momentum, cfg.weight_decay)
        self.scaler = make_loss_scaler(cfg.loss_scale)
        self.tensors = state_tensors(self.net, self.optimizer, self.scaler)
        if ckpt:
            restore(self.tensors, ckpt)
        self.record = StepRecord(min(cfg.log_every, RING_MAX // self.k * self.k),
                                 2 if self.scaler is None else 3,
                                 list(self.optimizer.parameters))
        self.lr = LrWindow(cfg.lr, cfg.lr_schedule, self.total)
        mpi = cfg.grad_backend == "mpi" and self.cluster.world_size > 1
        self.step_fn = make_train_step(
            model, loss_fn,
            OptimSpec(self.optimizer, self.record, self.lr, cfg.accum_steps, cfg.clip_norm),
            PrecisionSpec(self.scaler, low, cfg.loss not in LOSSES, cfg.jit_level),
            ReduceSpec(
                None if mpi else self.cluster.grad_reducer(list(self.optimizer.parameters)),
                self.cluster.host_grad_mean() if mpi else None, self.cluster.flag_reducer()))
        if cfg.loss in LOSSES:
            self.eval_fn = make_eval_step(model, make_loss(cfg.loss, delta, reduction="none"),
                                          low_precision=low)
        else:  # a loss of yours gives one number per batch: no per-row mask, no MSE
            self.eval_fn = make_user_eval_step(model, loss_fn, low_precision=low)

    def _build_eval(self) -> None:
        x, y = self.source.eval_rows(self.cfg.eval_size)
        cl = self.cluster
        chunks = eval_chunks(x, y, cl.rank, cl.world_size) if self.cfg.loss in LOSSES else \
            eval_batches(x, y, cl.rank, cl.world_size, self.cfg.batch_size)
        self.eval_set = [tuple(Tensor(a) for a in c) for c in chunks]

    def _feed(self) -> Iterator[tuple[int, Any]]:
        """(steps done after the call, call) for every remaining call: one step per call from
        the host, or `sink_size` steps per `ms.data_sink` call (Ascend/GPU)."""
        cfg, cl = self.cfg, self.cluster
        a = cfg.accum_steps
        sink = self.sink
        chunk = 1 if sink else self.chunk
        data = make_train_dataset(
            self.source.stream, cfg.batch_size, a, self.source.steps_per_epoch, cfg.epochs,
            num_shards=cl.world_size, shard_id=cl.rank, start_step=self.start, chunk=chunk)
        if sink:  # written from MindSpore's documentation; first run on an NPU pending
            body = make_sink_step(self.step_fn, data, sink)
            for step in range(self.start + sink, self.total + 1, sink):
                self.lr.cover(step - sink, step - 1)
                yield step, body
            return
        index = [Tensor(np.int32(j * a)) for j in range(chunk)]  # made once: tensors cost
        step = self.start
        for xc, yc in data.create_tuple_iterator(num_epochs=1):
            for j in range(chunk):
                if step == self.total:
                    return  # the last chunk's padding
                step += 1
                self.lr.cover(step - 1, step - 1)
                yield step, self._host_call(step, xc, yc, index[j])

    def _host_call(self, step: int, xc: Tensor, yc: Tensor, i: Tensor) -> Any:
        scale = self.faults.input_scale(step)
        if scale is not None:  # TRAIN_FAULT nan@/overflow@: this step's inputs only
            # on the host: MindSpore 2.10's eager Tensor * float fails under NumPy 2
            xc = Tensor(xc.asnumpy() * np.float32(scale))
        return lambda: self.step_fn(xc, yc, i)

    # --- run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train to the end (or to a stop request) and return the summary."""
        cfg = self.cfg
        self.out.info(f"{self.cluster.launch}: rank {self.cluster.rank} of "
                      f"{self.cluster.world_size} on {cfg.device}; global batch "
                      f"{self.global_batch}; " + (f"steps {self.start + 1}-{self.total}"
                      if self.start < self.total else f"all {self.total} steps done")
                      + (f" (resumed at step {self.start})" if self.start else ""))
        self.out.progress(self.total, initial=self.start)
        self.t_window = time.perf_counter()
        try:
            if self._agree(self.start, force=True):
                self._stop_now(self.start)
            for step, call in self._feed() if self.start < self.total else ():
                call()
                self._after_call(step)
                self._at_boundary(step)
        finally:
            self.out.close_progress()
        self._finish()
        return self._summary()

    def _after_call(self, step: int) -> None:
        self.faults.check_fail(step, self.cluster.rank)
        self.faults.pause("step_pause")
        if self.t_first is None:
            self.t_first = time.perf_counter()  # throughput excludes graph compilation
            self.first_step_at = time.time()  # for launch-latency measurements (train.bench)
            self.first_done = step
        self.n_timed = step - self.first_done

    def _at_boundary(self, step: int) -> None:
        """Everything that happens between steps: reads, logs, eval, checkpoints, stops."""
        cfg = self.cfg
        in_epoch = step % self.source.steps_per_epoch
        log = step % cfg.log_every == 0 or in_epoch == 0 or step == self.total
        # (the last step's checkpoint holds SGD's parameters; the Newton finish, if any, then
        # writes it again with its own: a kill during the finish repeats it from there)
        save = step == self.total or bool(cfg.ckpt_every and step % cfg.ckpt_every == 0)
        if log or save or step % self.record.width == 0:  # the ring must not wrap unread
            self._read(step, log)
        stop = self._agree(step, force=log) and step < self.total  # on the last step: finish
        if in_epoch == 0:
            self._evaluate(step // self.source.steps_per_epoch, step)
        if stop:
            self._stop_now(step)
        if save:
            self._checkpoint(step)

    # --- read and decide ---------------------------------------------------------------------

    def _read(self, step: int, log: bool) -> None:
        """One device read: the steps since the last read into the window, the non-finite
        policy, then (log steps) a metrics line."""
        ring, params_finite = self.record.read()
        bad = []
        for s in range(self.read_upto + 1, step + 1):
            row = ring[(s - 1) % self.record.width]
            if math.isfinite(row[1]):  # the device's own test (train/step.py)
                self.state["window_loss"] += row[0]
                self.state["window_n"] += 1
            elif self.scaler is not None and row[2] > 1:  # dynamic or static, as both skip
                self.state["overflow_skips"] += 1  # expected: (dynamic) the scale halves
            else:
                bad.append(s)
        self.window_steps += step - self.read_upto  # run by this process (not a resumed window)
        self.read_upto = step
        self._check_finite(step, bad, params_finite)
        if log:
            self._log(step, ring[(step - 1) % self.record.width])

    def _log(self, step: int, row: np.ndarray) -> None:
        now = time.perf_counter()
        n = max(self.state["window_n"], 1)
        mean = self.cluster.all_sum(np.array([self.state["window_loss"] / n]))[0]
        self.state["loss"] = float(mean) / self.cluster.world_size
        sumsq = row[1]
        record = {"epoch": math.ceil(step / self.source.steps_per_epoch), "step": step,
                  "loss": self.state["loss"] * self.loss_unit,
                  # float32, as the device would take it (a float64 sqrt differs in the last bits)
                  "grad_norm": float(np.sqrt(np.float32(sumsq))) if sumsq >= 0 else None,
                  "samples_per_s": self.window_steps * self.global_batch / (now - self.t_window)}
        if self.scaler is not None:
            record.update(loss_scale=float(row[2]), overflow_skips=self.state["overflow_skips"])
        self.out.metrics(record)
        self.out.advance(step, loss=f"{record['loss']:.4f}")
        self.state["window_loss"], self.state["window_n"], self.t_window = 0.0, 0, now
        self.window_steps = 0

    def _check_finite(self, step: int, bad: list[int], params_finite: bool) -> None:
        """Apply --skip_nonfinite to the non-finite steps read from the device (their updates
        were never applied); non-finite parameters always stop the run."""
        cfg, rank = self.cfg, self.cluster.rank
        for s in bad:
            self.state["skipped"].append(s)
            if len(self.state["skipped"]) > cfg.skip_nonfinite:
                more = (f" (more than --skip_nonfinite {cfg.skip_nonfinite})"
                        if cfg.skip_nonfinite else "")
                raise NonFiniteError(f"non-finite loss or gradient at step {s} on rank {rank}"
                                     f"{more}; its update was not applied")
            self.out.warn(f"non-finite loss or gradient at step {s} on rank {rank}; "
                          "update skipped")
            self.out.metrics({"step": s, "skipped_nonfinite": True})
        if not params_finite:
            raise NonFiniteError(f"the parameters became non-finite by step {step} on rank "
                                 f"{rank} (lower --lr, or clip with --clip_norm)")

    def _agree(self, step: int, force: bool = False) -> bool:
        """Whether to stop now. One process: the signal flag. Several ranks: the flag is
        exchanged at agreement points only, so that every rank stops at the same step."""
        if self.cluster.world_size == 1:
            return self.stop.requested
        calls = (step - self.agree_from) // self.k  # a sink call is k steps
        due = force or (self.agree_every is None and calls > 0 and calls & (calls - 1) == 0) or (
            self.agree_every is not None and (step - self.agree_from) % self.agree_every == 0)
        if not due:
            return False
        got = self.cluster.all_sum(np.array([float(self.stop.requested), self._proposal()]))
        if self.agree_every is None and got[1] > 0:
            self.agree_every, self.agree_from = int(got[1]), step
        return bool(got[0] > 0)

    def _proposal(self) -> float:
        """Rank 0's agreement interval in steps, once ~0.5 s of steps have been timed."""
        if not self.cluster.is_main or self.agree_every is not None or self.t_first is None:
            return 0.0
        elapsed = time.perf_counter() - self.t_first
        if elapsed < 0.5 or self.n_timed < 1:
            return 0.0
        steps = max(1, round(AGREE_SECONDS * self.n_timed / elapsed))
        return float(-(-steps // self.k) * self.k)

    # --- evaluate, checkpoint, stop ---------------------------------------------------------

    def _held_out_loss(self) -> None:
        """The held-out loss and MSE (data units) into `state`, summed over all ranks."""
        sums = np.zeros(3)
        self.model.set_train(False)
        for batch in self.eval_set:
            sums += self.eval_fn(*batch).asnumpy()
        self.model.set_train(True)
        total = self.cluster.all_sum(sums)
        unit = self.loss_unit
        if total[2] > 0:
            self.state["eval_loss"] = float(total[0]) / float(total[2]) * unit
            if self.cfg.loss in LOSSES:  # (a loss of yours: its own figure only)
                self.state["eval_mse"] = float(total[1]) / float(total[2]) * unit

    def _evaluate(self, epoch: int, step: int) -> None:
        self._held_out_loss()
        self.out.metrics({"epoch": epoch, "step": step, "eval_loss": self.state["eval_loss"],
                          "eval_mse": self.state["eval_mse"]})
        every = -(-self.cfg.epochs // EPOCH_LINES)  # many epochs: about EPOCH_LINES lines
        if epoch % every and epoch != self.cfg.epochs:
            self.out.log.info(f"epoch {epoch}/{self.cfg.epochs} eval_loss "
                              f"{self.state['eval_loss']}")
        else:
            self._epoch_line(epoch, step)
        if self.state["eval_loss"] is not None and not math.isfinite(self.state["eval_loss"]):
            raise NonFiniteError(f"non-finite held-out loss at step {step} on rank "
                                 f"{self.cluster.rank}")

    def _epoch_line(self, epoch: int, step: int) -> None:
        params = self.source.params_in_units(None if self.cfg.model else linear_params(self.net))
        names = None if self.cfg.synthetic else self.source.columns[:-1]
        self.out.info(f"epoch {epoch}/{self.cfg.epochs}  step {step}  loss "
                      f"{_fmt(self.state['loss'], self.loss_unit)}  eval_loss "
                      f"{_fmt(self.state['eval_loss'], 1.0)}"
                      + (f"  {format_params(*params, names)}" if params else ""))

    def _checkpoint(self, step: int, again: bool = False) -> None:
        """Rank 0 writes the tensors and the run state (every rank's window made global);
        `again`: also when this step's checkpoint exists (it is replaced)."""
        if step == self.saved_at and not again:
            return
        self.saved_at = step
        if self.state["window_n"] and self.cluster.world_size > 1:
            # Only rank 0's state is saved, so the open metrics window must hold the same
            # (global) value on every rank. Done at every checkpoint, resumed or not, so that
            # an interrupted run does exactly the same arithmetic.
            total = self.cluster.all_sum(np.array([self.state["window_loss"]]))[0]
            self.state["window_loss"] = float(total) / self.cluster.world_size
        if not self.out.main:  # parameters are identical on every rank: one writer is enough
            return
        # The loss scaler's adjust() leaves its scalars shaped (1,): saved as the scalars they are.
        tensors = {n: p.asnumpy().reshape(()) if n in (LOSS_SCALE_VALUE, LOSS_SCALE_COUNTER)
                   else p.asnumpy() for n, p in self.tensors.items()}
        state = {**self.state, **self._totals(), "fingerprint": self.fingerprint,
                 "data_stats": self.source.stats, "columns": self.source.columns,
                 "levels": getattr(self.source, "levels", None) or None}
        try:
            self.ckpts.save(step, tensors, state)
        except OSError as e:
            raise OutputError(f"cannot write the checkpoint at step {step} in {self.ckpts.dir} "
                              f"({e.strerror or e}); earlier checkpoints are untouched"
                              ) from None

    def _stop_now(self, step: int) -> None:
        """A stop was agreed: checkpoint (unless nothing was trained), wait for rank 0's
        write, and leave with Preempted."""
        name = self.stop.signal_name or "a stop request"
        if step > self.start:
            if self.read_upto < step:  # not already read at this step (a log or save step)
                self._read(step, log=False)
            self._checkpoint(step)
            where = f"at step {step} with a checkpoint"
        else:
            where = "before its first step (nothing to save)"
        self.cluster.all_sum(np.zeros(1))  # barrier: rank 0's checkpoint is on disk
        raise Preempted(f"{name}: stopped {where}; continue with --resume --out {self.out.dir}")

    # --- the end -------------------------------------------------------------------------------

    def _finish(self) -> None:
        """The built-in linear model taken to the optimum (train/finish.py), then the last
        step's checkpoint written again with it; a stop request during it leaves with
        Preempted (that checkpoint holds SGD's parameters: --resume finishes them)."""
        done = self.state["finish"]
        if self.no_finish is not None or (done and done["at_step"] == self.total):
            return  # (a resumed run that was finished at this step already)

        def logged(record: dict[str, Any]) -> None:  # rank 0, after each pass
            self.out.metrics({"step": self.total, **record})
            self.faults.pause("finish_pause", until=lambda: self.stop.requested)
            if self.stop.requested:
                raise FinishStopped

        done = finish_linear(self.net, self.cfg, self.source, self.cluster, logged)
        if done is None:  # (the last step's checkpoint holds SGD's parameters)
            raise Preempted(f"{self.stop.signal_name or 'a stop request'}: stopped during the "
                            f"Newton finish; finish it with --resume --out {self.out.dir}")
        self.state["finish"] = {**done, "at_step": self.total}
        self._held_out_loss()  # of the finished model: what summary.json reports
        self.out.metrics({"step": self.total, "finished": True,  # (not an epoch's record)
                          "finished_eval_loss": self.state["eval_loss"],
                          "finished_eval_mse": self.state["eval_mse"]})
        self.out.info(finish_line(done))
        self._checkpoint(self.total, again=True)

    def _totals(self) -> dict[str, float]:
        """Run-wide counters: earlier processes' (from the checkpoint) plus this one's."""
        now = time.perf_counter()
        return {"timed_steps": self.state["timed_steps"] + self.n_timed,
                "train_s": self.state["train_s"] + (now - self.t_first if self.t_first else 0.0),
                "wall_s": self.state["wall_s"] + (now - self.t_start)}

    def _curve(self) -> dict[str, list[float]] | None:
        """The learned function on a grid, in the data's units (one feature only): what
        train.plot draws for the linear model and for an MLP alike."""
        if self.source.features != 1 or self.cfg.model or self.cfg.user_data:
            return None
        xs = self.source.curve_x()
        y = self.net(Tensor(self.source.to_model(xs[:, None]))).asnumpy()
        return {"x": xs.tolist(), "y": self.source.from_model(y)[:, 0].astype(float).tolist()}

    def _summary(self) -> dict[str, Any]:
        cfg, cl = self.cfg, self.cluster
        cl.check_identical([p.asnumpy() for p in self.optimizer.parameters])
        run = self._totals()
        wb = None if self.cfg.model else linear_params(self.net)  # (w, b); None: an MLP
        params = self.source.params_in_units(wb)
        conv, base = report.assess({p.name: p.asnumpy() for p in self.optimizer.parameters}
                                   if cl.is_main else None, cfg, self.source)  # (rank 0's)
        return {
            "w": params[0] if params else None, "b": params[1] if params else None,
            "features": self.source.columns[:-1], "target": self.source.columns[-1],
            "coefficients": report.named(self.source, params[0] if params else None),
            "units": "w, b, coefficients, losses, convergence figures: the data's units; "
                     "*_standardized: the standardized units the model trains in",
            "converged": None if "reason" in conv else bool(conv.get("converged")),
            "convergence": conv,
            "finish": self.state["finish"] or {"method": "none", "reason": self.no_finish},
            "baseline": base,
            "curve": self._curve(),
            **self.source.summary_extra(wb),
            "final_loss": None if self.state["loss"] is None
            else self.state["loss"] * self.loss_unit,
            "eval_loss": self.state["eval_loss"], "eval_mse": self.state["eval_mse"],
            "steps": self.total, "epochs": cfg.epochs, "world_size": cl.world_size,
            "global_batch_size": self.global_batch,
            "samples_per_s": run["timed_steps"] * self.global_batch / max(run["train_s"], 1e-9),
            "wall_s": run["wall_s"], "device": cfg.device, "launch": cl.launch,
            "loss": cfg.loss, "delta": cfg.delta, "seed": cfg.seed, "model": cfg.model or None,
            "optimizer": cfg.optimizer,
            "segments": self.state["segments"], "skipped_nonfinite": self.state["skipped"],
            "overflow_skips": self.state["overflow_skips"], "first_step_at": self.first_step_at,
            "mindspore_version": ms.__version__,
        }


def _fmt(value: float | None, unit: float) -> str:
    return "n/a" if value is None else f"{value * unit:.4f}"
