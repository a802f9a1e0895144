"""The train step, built by a factory: value_and_grad -> accumulate -> all-reduce -> unscale ->
finite check -> clip -> SGD (or skip) -> adjust the loss scale -> record the step on the device.

The returned function is compiled once with `@ms.jit`; it logs nothing. It returns this step's
metrics ([loss, squared gradient norm], a tensor the loop never has to read) and writes them
into `StepRecord`, a ring of per-step rows that stays on the device until the loop reads it
once per log window: on Ascend/GPU a read blocks the host until the device catches up, so
reading every step would throw away asynchronous dispatch. The loop sums the window on the host
from the ring, in float64 as before, so logged losses are what a per-step read gave.

Non-finite steps cannot wait for the host: their update is never applied, decided inside the
graph. The guard is arithmetic, not a branch (a graph `if` doubled the step time on CPU): with
`ok` false the gradients become 0, the lr 0 and the momentum 1, so SGD's update
`v = m·v + g; p = p - lr·v` leaves p and v bitwise unchanged while its step counter still
advances (the lr schedule follows the step count). With `ok` true the kernel sees exactly the
values it would without the guard, so results are bitwise those of an unguarded step.
`GuardedSGD` (train/optim.py) calls MindSpore's SGD kernel (`ops.SGD`, the one `nn.SGD` runs)
with the lr and momentum as inputs: writing them into parameters first, as `nn.SGD` would
need, was measured to cost ~20% of a batch-65,536 step on 2 CPU cores.

`ok` must be the same on every rank, or their parameters would part: it is decided on the
all-reduced gradients, and a rank's own non-finite loss (possible with finite, clamped Huber
gradients) is folded into its gradients first (`g + 0·loss` is NaN exactly when the loss is
not finite), so that the all-reduce carries it to every rank.

Loss scaling (`ms.amp.StaticLossScaler`/`DynamicLossScaler`): the loss is multiplied by the scale
before the gradient, the gradients divided by it after the all-reduce. Scales are powers of two,
so both are exact and a scaled run equals an unscaled one bitwise, except at overflows, whose
update is skipped like any non-finite step (the dynamic scaler then halves its scale). The ring
records the scale each step used, so that the loop can tell an overflow (scale above 1: expected,
not counted against --skip_nonfinite) from a non-finite step at scale 1.

Atlas training chips in saturation mode see an overflow only in the NPU's float status register
(`float_status_ops`): the step clears it first and reads it after the gradients, in
`TrainOneStepWithLossScaleCell`'s order (docs/ascend.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

StepFn = Callable[[Tensor, Tensor, Tensor], Tensor]
EvalFn = Callable[[Tensor, Tensor, Tensor], Tensor]


class StepRecord(nn.Cell):
    """A ring of `width` rows on the device: row (global step % width) holds that step's
    [loss, squared gradient norm(, loss scale)]. The loop reads it at least every `width`
    steps, so no row is overwritten unread."""

    def __init__(self, width: int, columns: int, params: list[Parameter]) -> None:
        super().__init__()
        self.width, self.columns = width, columns
        self.ring = Parameter(Tensor(np.zeros((width, columns), np.float32)), name="record.ring")
        self.scatter = ops.ScatterUpdate()  # (ops.scatter_update is deprecated after 2.9.0)
        ring = self.ring

        @ms.jit
        def snapshot() -> Tensor:
            finite = ops.stack([ops.isfinite(p).all() for p in params]).all()
            return ops.concat([ring.reshape(-1), finite.astype(ms.float32).reshape(1)])

        self._snapshot = snapshot

    def construct(self, step: Tensor, row: Tensor) -> Tensor:
        """Inside the step: write this step's row (`step` = the 0-based global step, (1,))."""
        return self.scatter(self.ring, step % self.width, row.reshape((1, self.columns)))

    def read(self) -> tuple[np.ndarray, bool]:
        """One device-to-host read: the ring (width, columns) and whether every parameter is
        finite."""
        v = self._snapshot().asnumpy()
        return v[:-1].reshape(self.width, self.columns).astype(np.float64), bool(v[-1])


def lr_values(lr: float, schedule: str, total_steps: int, steps: np.ndarray) -> np.ndarray:
    """The learning rate of 0-based optimizer steps `steps`: constant, or cosine decay from lr
    to 0 over `total_steps`; float64 arithmetic rounded to float32 (element-wise, so a slice
    equals the same entries of the whole table bitwise)."""
    if schedule == "constant":
        return np.full(len(steps), lr, np.float32)
    t = np.asarray(steps, dtype=np.float64)
    return (0.5 * lr * (1 + np.cos(np.pi * t / total_steps))).astype(np.float32)


class LrWindow(nn.Cell):
    """The learning rates of `width` consecutive steps on the device, refilled by the host when
    the run moves past them. A table of one value per step of the run grows with the run (10 GB
    for 2e8 steps), and an extra input tensor per call was measured to cost ~20% of a
    batch-65,536 step on CPU; this costs neither. A constant lr is a constant of the graph. The
    refill is a jit call, so on a device it is queued in order with the steps."""

    def __init__(self, lr: float, schedule: str, total_steps: int, width: int = 4096) -> None:
        super().__init__()
        self.constant = schedule == "constant"
        self.value = Tensor(np.float32(lr))
        self.spec, self.width = (lr, schedule, total_steps), width
        self.table = Parameter(Tensor(np.zeros(width, np.float32)), name="lr_window.table")
        self.base = Parameter(Tensor(np.zeros(1, np.int32)), name="lr_window.base")
        self._lo = self._hi = 0
        table, base = self.table, self.base
        assign = ops.Assign()  # (ops.assign is deprecated after 2.9.0)

        @ms.jit
        def refill(values: Tensor, first: Tensor) -> Tensor:
            assign(table, values)
            assign(base, first)
            return first

        self._refill = refill

    def construct(self, global_step: Tensor) -> Tensor:
        """Inside the step: the lr of the step about to be taken (0-based `global_step`)."""
        if self.constant:
            return self.value
        return self.table[global_step - self.base].reshape(())

    def cover(self, first: int, last: int) -> None:
        """Make sure 0-based steps first..last are in the table (host side, before a call)."""
        if self.constant or (self._lo <= first and last < self._hi):
            return
        lr, schedule, total = self.spec
        hi = min(first + self.width, max(total, first + 1))
        values = np.zeros(self.width, np.float32)
        values[:hi - first] = lr_values(lr, schedule, total, np.arange(first, hi))
        self._refill(Tensor(values), Tensor(np.array([first], np.int32)))
        self._lo, self._hi = first, hi


def make_loss_scaler(loss_scale: str) -> Any:
    """None, `ms.amp.DynamicLossScaler` (2**16, halve on overflow, double after 1000 good
    steps) or `ms.amp.StaticLossScaler`, from the config's --loss_scale."""
    if loss_scale == "none":
        return None
    if loss_scale == "dynamic":
        return ms.amp.DynamicLossScaler(scale_value=2.0 ** 16, scale_factor=2, scale_window=1000)
    return ms.amp.StaticLossScaler(float(loss_scale))


def on_ascend() -> bool:
    """Whether the step runs on an NPU (a function, so that tests can build the NPU's graph)."""
    return ms.get_context("device_target") == "Ascend"


def float_status_ops() -> tuple[Any, Any] | None:
    """(clear, get): `NPUClearFloatStatusV2`, `NPUGetFloatStatusV2`, where an overflow shows
    only in the NPU's float status: 910A, or 910B with MS_ASCEND_CHECK_OVERFLOW_MODE=
    SATURATION_MODE (the test of mindspore/amp.py:44-56 and 125-129). None elsewhere:
    `ms.amp.all_finite` then tests the values and keeps no state between calls."""
    if not on_ascend():
        return None
    from mindspore._c_expression import MSContext
    from mindspore.ops.operations.math_ops import NPUClearFloatStatusV2, NPUGetFloatStatusV2

    soc = MSContext.get_instance()
    if not (soc.ascend_soc_supports_feature("amp_loss_scale_train_classic_target") or (
            soc.ascend_soc_supports_feature("train_hq_dtype_line")
            and os.environ.get("MS_ASCEND_CHECK_OVERFLOW_MODE") == "SATURATION_MODE")):
        return None
    return NPUClearFloatStatusV2(), NPUGetFloatStatusV2()


def make_overflow_check(agree: Callable[[Tensor], Tensor] | None) -> tuple[
        Callable[[Tensor], Tensor], Callable[[tuple[Tensor, ...], Tensor], Tensor] | None]:
    """(start, finite) for use inside the jit step: `start(x)` is x, after the float status
    was cleared; `finite(grads, after)` whether the step overflowed nowhere, the same on every
    rank (`agree`: a sum over ranks), read once `after` is computed. `finite` is None on CPU
    and GPU, where an overflow is an inf or NaN value: the step's isfinite(sum of squared
    gradients) says it in one kernel, where `ms.amp.all_finite` took 11 more (42 -> 54 kernels
    per step, ~20% of a batch-256 step: docs/FINDINGS.md).

    Saturation mode follows mindspore/nn/wrap/loss_scale.py (2.10): the clear before the
    step's first computation, ordered by a depend on its input (`start_overflow_check`,
    475-482); the status read after the gradients (529-530), all-reduced (534), then cleared
    again once the flag is known (537-540; one rank: 543-546). `amp.all_finite` reads and
    clears at once (amp.py:130-137): a rank would clear before the all-reduce, and whatever
    ran between steps (the loop's eager all-reduces, the float16 eval step) would charge its
    status bits to the next step, skipped while the dynamic scale halves."""
    def as_is(x: Tensor) -> Tensor:  # (a def: graph mode cannot parse every lambda)
        return x

    if not on_ascend():
        return as_is, None
    ops_pair = float_status_ops()
    if ops_pair is None:
        def finite_values(grads: tuple[Tensor, ...], after: Tensor) -> Tensor:
            finite = ms.amp.all_finite(grads)
            if agree is not None:  # loss_scale.py:504-511: the flag as float32, summed
                flag = ops.logical_not(finite).astype(ms.float32).reshape((1,))
                finite = agree(flag)[0] < 0.5
            return finite

        return as_is, finite_values
    clear, get = ops_pair
    zeros = Tensor(np.zeros(8, np.int32))  # the ops' placeholder input (math_ops.py:2061-2160)

    def start(x: Tensor) -> Tensor:
        return ops.depend(x, clear(zeros))

    def finite_status(grads: tuple[Tensor, ...], after: Tensor) -> Tensor:
        status = ops.depend(zeros, after)
        got = get(status)
        if agree is not None:
            got = agree(got)  # every rank's status, summed: one rank's overflow is everyone's
        status = ops.depend(status, got)
        got = ops.depend(got, clear(status))
        return ops.equal(got, 0).all()

    return start, finite_status


@dataclass(frozen=True)
class OptimSpec:
    """The update: the guarded optimizer, the lr it takes, where the step is recorded."""

    optimizer: nn.Cell  # GuardedSGD or GuardedAdamW (make_optimizer): skips bitwise where not ok
    record: StepRecord  # the device's ring of per-step rows
    lr: LrWindow  # the learning rate of each step
    accum_steps: int = 1  # micro-batches averaged into one step (unrolled in the graph)
    clip_norm: float = 0.0  # global-norm clipping after the all-reduce; 0 = off


@dataclass(frozen=True)
class PrecisionSpec:
    """How the step computes: float width, loss scaling, the loss's shape, the compile level."""

    loss_scaler: Any = None  # make_loss_scaler's ms.amp Static/DynamicLossScaler, or None
    low_precision: bool = False  # the model computes in float16/bfloat16; the loss in float32
    scalar_loss: bool = False  # a loss of yours (one value): taken as shape (), any shape
    jit_level: str = "O0"  # ms.jit's jit_level


@dataclass(frozen=True)
class ReduceSpec:
    """How the ranks agree; all None for one rank."""

    grad_reducer: nn.Cell | None = None  # the gradients' cross-rank mean, in the graph
    host_grad_mean: Callable[[np.ndarray], np.ndarray] | None = None  # grad_backend=mpi's mean
    agree: Callable[[Tensor], Tensor] | None = None  # Ascend: a cross-rank sum of overflow flags


def make_train_step(model: nn.Cell, loss_fn: nn.Cell, optim: OptimSpec,
                    precision: PrecisionSpec = PrecisionSpec(),
                    reduce: ReduceSpec = ReduceSpec()) -> StepFn:
    """Build `step(xc, yc, i) -> [loss, sumsq]`: one optimizer step on micro-batches
    i .. i+A-1 (`i` an int32 scalar tensor) of a chunk xc (K*A, B, F), yc (K*A, B, 1) (see
    pipeline/dataset.py: a new input tensor costs more than a small step, so the pipeline
    delivers K steps at once), with the learning rate `optim.lr` holds for the step counter.

    Gradients of the A micro-batches are averaged, which for a mean-reduced loss over equal
    micro-batches is exactly the gradient of one batch of A*B rows. Then the cross-rank mean
    (`reduce.grad_reducer`; None for one rank), the finite check, global-norm clipping
    (`optim.clip_norm`, 0 = off; after the all-reduce, so every rank clips identically) and the
    guarded update. `loss` is this rank's mean over the window, `sumsq` the squared global norm
    of the averaged gradient before clipping.

    `reduce.agree` (Ascend, several ranks): a cross-rank sum of each rank's overflow flag, so
    that every rank skips the update that one rank's NPU status flagged.

    With `reduce.host_grad_mean` (grad_backend=mpi) the step is two jit calls with the
    cross-rank mean on the host between them: the gradients leave the graph as one flat float32
    vector (a host read every step, by design), are averaged by MPI, and come back for the
    update.
    """
    level = precision.jit_level
    jit = ms.jit(jit_level=level) if level != "O0" else ms.jit
    start_check, finite_check = make_overflow_check(reduce.agree)
    local_grads = _local_grads(model, loss_fn, optim, precision, start_check)
    update = _update(optim, precision.loss_scaler, finite_check)
    if reduce.host_grad_mean is None:
        return _one_graph(jit, local_grads, update, reduce.grad_reducer)
    return _host_mean(jit, local_grads, update, list(optim.optimizer.parameters),
                      reduce.host_grad_mean)


def _local_grads(model: nn.Cell, loss_fn: nn.Cell, optim: OptimSpec, precision: PrecisionSpec,
                 start_check: Callable[[Tensor], Tensor]) -> Callable[..., Any]:
    """`local_grads(xc, yc, i) -> (loss, grads)`: this rank's loss and gradients, averaged over
    the step's micro-batches (inside the jit step)."""
    # Plain locals, not the specs' attributes: the graph sees Python constants, as before.
    low_precision, scalar_loss = precision.low_precision, precision.scalar_loss
    loss_scaler, accum_steps = precision.loss_scaler, optim.accum_steps

    def forward_fn(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        pred = model(x)
        if low_precision:  # the loss is always computed in float32
            pred = pred.astype(ms.float32)
        loss = loss_fn(pred, y)
        if scalar_loss:
            loss = loss.astype(ms.float32).reshape(())
        return (loss_scaler.scale(loss) if loss_scaler is not None else loss), loss

    grad_fn = ms.value_and_grad(forward_fn, None, optim.optimizer.parameters, has_aux=True)

    def local_grads(xc: Tensor, yc: Tensor, i: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        xc = start_check(xc)  # saturation mode: the float status cleared before the forward
        (_, loss), grads = grad_fn(xc[i], yc[i])
        for a in range(1, accum_steps):  # unrolled at compile time: a Python constant
            (_, loss_i), grads_i = grad_fn(xc[i + a], yc[i + a])
            loss = loss + loss_i
            grads = tuple(g + gi for g, gi in zip(grads, grads_i))
        if accum_steps > 1:
            loss = loss / accum_steps
            grads = tuple(g / accum_steps for g in grads)
        # A non-finite local loss poisons the gradients, so that every rank sees it (above).
        return loss, grads[:-1] + (grads[-1] + loss * 0.0,)

    return local_grads


def _update(optim: OptimSpec, loss_scaler: Any,
            finite_check: Callable[[tuple[Tensor, ...], Tensor], Tensor] | None,
            ) -> Callable[[Tensor, tuple[Tensor, ...]], Tensor]:
    """`update(loss, grads) -> row`: unscale, finite check, clip, the guarded update, the
    record and the loss scale's adjustment, on the ranks' mean gradients (inside the jit)."""
    optimizer, record, lr, clip_norm = optim.optimizer, optim.record, optim.lr, optim.clip_norm
    one = Tensor(np.float32(1.0))
    nan = Tensor(np.float32(np.nan))

    def update(loss: Tensor, grads: tuple[Tensor, ...]) -> Tensor:
        scale = one  # the loss scale this step used (graph syntax: set on both branches)
        if loss_scaler is not None:
            scale = loss_scaler.scale_value.reshape(())
            grads = loss_scaler.unscale(grads)
        sumsq = ops.addn([ops.reduce_sum(ops.square(g)) for g in grads])
        # An inf or NaN anywhere in the gradients makes sumsq non-finite. On Ascend, MindSpore's
        # own check as well: on Atlas training chips (910A; 910B in saturation mode) an
        # overflow saturates instead of making inf/NaN, and only the NPU's float status says it
        # (make_overflow_check). The status is this device's: the ranks agree through `agree`.
        ok = ops.isfinite(sumsq)
        if finite_check is not None:  # (a Python constant: compiled away on CPU and GPU)
            ok = ops.logical_and(finite_check(grads, sumsq), ok)  # read after the norm
        if clip_norm > 0:  # global-norm clipping, reusing the norm just computed
            factor = clip_norm / ops.maximum(ops.sqrt(sumsq), clip_norm)
            grads = tuple(g * factor for g in grads)
        step = optimizer.global_step
        recorded = ops.where(ok, sumsq, nan)  # a skipped step reads as non-finite on the host
        row = ops.stack([loss, recorded] if loss_scaler is None else [loss, recorded, scale])
        record(step, row)
        optimizer(grads, lr(step), ok)  # skipped bitwise where not ok (GuardedSGD/AdamW)
        if loss_scaler is not None:
            loss_scaler.adjust(ok)
        return row

    return update


def _one_graph(jit: Callable[..., Any], local_grads: Callable[..., Any],
               update: Callable[..., Tensor], grad_reducer: nn.Cell | None) -> StepFn:
    """The step as one jit call, the gradients' all-reduce (if any) inside it."""
    @jit
    def train_step(xc: Tensor, yc: Tensor, i: Tensor) -> Tensor:
        loss, grads = local_grads(xc, yc, i)
        if grad_reducer is not None:
            grads = grad_reducer(grads)
        return update(loss, grads)

    return train_step


def _host_mean(jit: Callable[..., Any], local_grads: Callable[..., Any],
               update: Callable[..., Tensor], weights: list[Parameter],
               host_grad_mean: Callable[[np.ndarray], np.ndarray]) -> StepFn:
    """The step as two jit calls, the gradients averaged on the host between them (mpi)."""
    shapes = [p.shape for p in weights]
    sizes = [int(np.prod(s)) for s in shapes]

    @jit
    def grads_flat(xc: Tensor, yc: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        loss, grads = local_grads(xc, yc, i)
        return loss, ops.concat([g.reshape(-1) for g in grads])

    @jit
    def update_flat(loss: Tensor, flat: Tensor) -> Tensor:
        parts = ops.split(flat, sizes)
        return update(loss, tuple(p.reshape(s) for p, s in zip(parts, shapes)))

    def train_step_mpi(xc: Tensor, yc: Tensor, i: Tensor) -> Tensor:
        loss, flat = grads_flat(xc, yc, i)
        return update_flat(loss, Tensor(host_grad_mean(flat.asnumpy())))

    return train_step_mpi


def make_sink_step(step_fn: StepFn, dataset: Any, sink_size: int) -> Callable[[], Tensor]:
    """`sink_size` steps per call, each on the next batch of the dataset's device queue
    (`ms.data_sink`, Ascend/GPU only; the batches are chunks of one step, `i` = 0).

    No `jit_config`: MindSpore 2.10's data_sink hands a JitConfig's `exc_mode` and
    `infer_boost` to `ms.jit` as options (mindspore/train/data_sink.py:113-133), and jit warns
    about both ('infer_boost' deprecated, 'exc_mode' not recognized: graph/api.py:1064-1079),
    two warnings per run. The step is already `@ms.jit` at --jit_level, and data_sink calls it
    `sink_size` times per call from the host either way (data_sink.py:245-256); without a
    JitConfig only the queue's GetNext runs outside the graph (data_sink.py:229-232, 238-243).
    """
    zero = Tensor(np.int32(0))

    def one_step(x: Tensor, y: Tensor) -> Tensor:
        return step_fn(x, y, zero)

    return ms.data_sink(one_step, dataset, sink_size=sink_size)


def make_eval_step(model: nn.Cell, loss_fn: nn.Cell, low_precision: bool = False) -> EvalFn:
    """Build `eval(x, y, mask) -> [loss sum, squared-error sum, rows]` over the rows where mask
    is 1 (`loss_fn` with reduction none). Sums, so that ranks can add their shards."""

    @ms.jit
    def eval_step(x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        pred = model(x)
        if low_precision:
            pred = pred.astype(ms.float32)
        return ops.stack([(loss_fn(pred, y) * mask).sum(), (ops.square(pred - y) * mask).sum(),
                          mask.sum()])

    return eval_step


def make_user_eval_step(model: nn.Cell, loss_fn: nn.Cell,
                        low_precision: bool = False) -> EvalFn:
    """Build `eval(x, y) -> [loss x rows, 0, rows]` for a loss of yours, which gives one value
    per batch (a mean over its rows, as a loss's default reduction): summed over batches and
    ranks, then divided by the rows, it is the mean over the held-out rows."""

    @ms.jit
    def eval_step(x: Tensor, y: Tensor) -> Tensor:
        pred = model(x)
        if low_precision:
            pred = pred.astype(ms.float32)
        loss = loss_fn(pred, y).astype(ms.float32).reshape(())
        rows = ops.scalar_to_tensor(x.shape[0], ms.float32)
        return ops.stack([loss * rows, ops.zeros((), ms.float32), rows])

    return eval_step
