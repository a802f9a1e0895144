"""train/step.py: accumulation equals the big batch, clipping bounds the update, a non-finite
step changes nothing, loss scaling is exact, the lr window holds the schedule's exact values."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from pipeline import DataSpec
from pipeline.synthetic import SyntheticRegression
from train.loss import make_loss
from train.model import make_model
from train.optim import GuardedAdamW, GuardedSGD, make_optimizer
from train.step import (
    LrWindow,
    OptimSpec,
    PrecisionSpec,
    ReduceSpec,
    StepRecord,
    lr_values,
    make_loss_scaler,
    make_sink_step,
    make_train_step,
)


def build(features=2, accum=1, clip_norm=0.0, loss="huber", schedule="constant", total=100,
          loss_scale="none", width=64, optimizer="sgd", weight_decay=0.0):
    """A model, its guarded optimizer and the package's step; returns (step, optimizer,
    record, scaler)."""
    model = make_model(features, seed=0)
    opt = make_optimizer(optimizer, model.trainable_params(), 0.9, weight_decay)
    scaler = make_loss_scaler(loss_scale)
    record = StepRecord(width, 2 if scaler is None else 3, list(opt.parameters))
    lr = LrWindow(0.01, schedule, total)
    lr.cover(0, total - 1)
    step = make_train_step(model, make_loss(loss, 1.0),
                           OptimSpec(opt, record, lr, accum, clip_norm), PrecisionSpec(scaler))
    return step, opt, record, scaler


def state(opt):
    """Every tensor of the optimizer's state, flattened (params, its buffers (SGD's momentum
    and flags, AdamW's moments), the counter last)."""
    return np.concatenate([p.asnumpy().ravel().astype(np.float64) for p in
                           (*[q for q in opt.get_parameters() if q.name != "global_step"],
                            opt.global_step)])


def rows(batch, accum, t, features=2, outliers=0.2):
    gen = SyntheticRegression(DataSpec(features=features, outlier_fraction=outliers), seed=4)
    x, y = gen.rows(0, t * batch * accum, batch * accum)
    return Tensor(x.reshape(accum, batch, features)), Tensor(y.reshape(accum, batch, 1))


def train(batch, accum, steps=5, **kw):
    """Run `steps` optimizer steps on the stream's first rows; return the final parameters."""
    step, opt, record, _ = build(accum=accum, **kw)
    norms = []
    for t in range(steps):
        sumsq = step(*rows(batch, accum, t), Tensor(np.int32(0))).asnumpy()[1]
        norms.append(float(np.sqrt(sumsq)))
    return np.concatenate([p.asnumpy().ravel() for p in opt.parameters]), norms


@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("accum", [2, 4])
def test_accumulation_equals_one_big_batch(loss, accum):
    big, _ = train(batch=8 * accum, accum=1, loss=loss)
    small, _ = train(batch=8, accum=accum, loss=loss)
    np.testing.assert_allclose(small, big, rtol=0, atol=1e-5)
    start, _ = train(batch=8, accum=accum, loss=loss, steps=0)
    assert np.abs(big - start).max() > 1e-3  # the comparison is not between two no-ops


def test_clipping_bounds_the_first_update():
    start, _ = train(batch=64, accum=1, steps=0)
    clipped, norms = train(batch=64, accum=1, steps=1, clip_norm=0.5)
    free, _ = train(batch=64, accum=1, steps=1)
    assert norms[0] > 0.5  # the raw gradient is larger than the clip
    # First SGD step: update = lr * clipped gradient, so its norm is lr * clip_norm.
    np.testing.assert_allclose(np.linalg.norm(clipped - start), 0.01 * 0.5, rtol=1e-4)
    assert np.linalg.norm(free - start) > 0.01 * 0.5 * 1.5


def test_a_chunk_of_steps_indexed_in_the_graph_equals_one_step_per_call():
    """The pipeline hands the step K steps at once (pipeline/dataset.py); step i of a chunk must
    train exactly like the same rows fed alone."""
    gen = SyntheticRegression(DataSpec(features=2), seed=4)
    x, y = gen.rows(0, 0, 6 * 2 * 8)
    x, y = x.reshape(6 * 2, 8, 2), y.reshape(6 * 2, 8, 1)  # 6 steps of 2 micro-batches of 8
    results = []
    for chunked in (False, True):
        step, opt, _, _ = build(accum=2)
        for t in range(6):
            if chunked:
                step(Tensor(x), Tensor(y), Tensor(np.int32(2 * t)))
            else:
                step(Tensor(x[2 * t:2 * t + 2]), Tensor(y[2 * t:2 * t + 2]), Tensor(np.int32(0)))
        results.append(state(opt))
    np.testing.assert_array_equal(results[0], results[1])


def test_guarded_sgd_is_bitwise_nn_sgd():
    """The guard changes nothing for finite steps: the same as MindSpore's nn.SGD with its own
    per-step lr table, over a cosine schedule."""
    total = 30
    step, opt, _, _ = build(schedule="cosine", total=total)
    model = make_model(2, seed=0)
    ref = nn.SGD(model.trainable_params(), momentum=0.9,
                 learning_rate=Tensor(lr_values(0.01, "cosine", total, np.arange(total))))
    grad_fn = ms.value_and_grad(lambda x, y: make_loss("huber", 1.0)(model(x), y), None,
                                ref.parameters)
    for t in range(total):
        x, y = rows(16, 1, t)
        step(x, y, Tensor(np.int32(0)))
        _, grads = grad_fn(x[0], y[0])
        ref(grads)
    assert [p.asnumpy().tobytes() for p in opt.parameters] == \
        [p.asnumpy().tobytes() for p in ref.parameters]


def _not_on_cpu(inputs):
    raise AssertionError("ms.amp.all_finite is in a CPU step's graph")


@pytest.mark.parametrize("optimizer, weight_decay", [("sgd", 0.0), ("adamw", 0.01),
                                                     ("sgd", 0.01)])
@pytest.mark.parametrize("poison", ["nan_inputs", "inf_loss_finite_gradient"])
def test_a_non_finite_step_changes_nothing_but_the_step_counter(poison, optimizer,
                                                                 weight_decay, monkeypatch):
    # On CPU the values say it all (isfinite of the squared norm): MindSpore's all_finite,
    # 11 more kernels per step, is not in the graph (docs/FINDINGS.md, the batch-256 step).
    monkeypatch.setattr(ms.amp, "all_finite", _not_on_cpu)
    step, opt, record, _ = build(optimizer=optimizer, weight_decay=weight_decay)
    i0 = Tensor(np.int32(0))
    for t in range(3):
        step(*rows(16, 1, t), i0)
    before = state(opt)
    x, y = rows(16, 1, 3)
    if poison == "nan_inputs":
        x = Tensor(x.asnumpy() * np.nan)  # (host arithmetic: docs/FINDINGS.md, NumPy 2)
    else:  # every error ~3e38: each row's Huber loss is finite, their mean is not; the
        y = Tensor(np.full(y.shape, -3e38, np.float32))  # clamped gradient stays finite
    sumsq = step(x, y, i0).asnumpy()[1]
    assert not np.isfinite(sumsq)
    after = state(opt)
    np.testing.assert_array_equal(after[:-1], before[:-1])  # weights, momentum, flags: bitwise
    assert after[-1] == before[-1] + 1  # the counter moves: the lr schedule follows the steps
    ring, finite = record.read()
    assert finite and not np.isfinite(ring[3, 1]) and np.isfinite(ring[2, 1])


def test_adamw_is_mindspores_adam_weight_decay():
    """GuardedAdamW's update equals nn.AdamWeightDecay's, bitwise, with weight decay on the
    parameters MindSpore's filter picks."""
    from mindspore import nn

    step, opt, _, _ = build(optimizer="adamw", weight_decay=0.01)
    assert isinstance(opt, GuardedAdamW)
    model = make_model(2, seed=0)
    ref = nn.AdamWeightDecay(model.trainable_params(), learning_rate=0.01, weight_decay=0.01)
    grad_fn = ms.value_and_grad(lambda x, y: make_loss("huber", 1.0)(model(x), y), None,
                                ref.parameters)
    for t in range(3):
        x, y = rows(16, 1, t)
        step(x, y, Tensor(np.int32(0)))
        _, grads = grad_fn(x[0], y[0])
        ref(grads)
    for a, b in zip(opt.parameters, ref.parameters):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=0, atol=1e-7)


def test_loss_scaling_is_exact_and_skips_overflows():
    """A power-of-two scale changes no bit of the result; an overflow skips the update, halves
    the dynamic scale, and the run goes on exactly as a run that skipped that step."""
    plain, _ = train(batch=16, accum=2, steps=6)
    for scale in ("1024", "dynamic"):
        scaled, _ = train(batch=16, accum=2, steps=6, loss_scale=scale)
        np.testing.assert_array_equal(scaled, plain)
    runs = []
    for scale in ("dynamic", "none"):
        step, opt, record, scaler = build(loss_scale=scale)
        for t in range(6):
            x, y = rows(16, 1, t)
            if t == 2:
                x = x * float("inf")
            step(x, y, Tensor(np.int32(0)))
        runs.append(state(opt))
        if scaler is not None:
            ring, _ = record.read()
            assert ring[2, 2] == 2.0 ** 16 and ring[3, 2] == 2.0 ** 15  # halved after step 3
            assert float(scaler.scale_value.asnumpy()) == 2.0 ** 15
    np.testing.assert_array_equal(runs[0], runs[1])


def test_the_lr_window_holds_the_schedules_exact_values():
    total = 10_000
    table = lr_values(0.1, "cosine", total, np.arange(total))
    parts = np.concatenate([lr_values(0.1, "cosine", total, np.arange(a, min(a + 777, total)))
                            for a in range(0, total, 777)])
    assert table.tobytes() == parts.tobytes()  # a slice is the table's entries, bitwise
    w = LrWindow(0.1, "cosine", total, width=100)
    w.cover(250, 260)
    got = w.table.asnumpy()
    assert int(w.base.asnumpy()[0]) == 250 and got[:100].tobytes() == table[250:350].tobytes()
    w.cover(300, 349)  # inside: no refill
    assert int(w.base.asnumpy()[0]) == 250
    w.cover(349, 351)  # crosses the end: refill from 349
    assert int(w.base.asnumpy()[0]) == 349


class _OtherRankOverflowed(nn.Cell):
    """As the cross-rank sum of the overflow flag when another rank's NPU flagged one."""

    def construct(self, flag):
        return flag + 1.0


def _never_finite(inputs):
    """As ms.amp.all_finite on an Atlas chip whose float status saw an overflow: the values
    themselves are finite (saturated)."""
    return ops.logical_not(ops.isfinite(inputs[0]).all() | True)


@pytest.mark.parametrize("how", ["this device's status", "another rank's status"])
def test_the_overflow_check_is_mindspores_and_agreed_across_ranks(monkeypatch, how):
    """Atlas training chips saturate instead of making inf/NaN: the step must obey
    ms.amp.all_finite (which reads the NPU's float status there) and the ranks' agreement,
    not only the values. Finite gradients, an overflow said: the update is skipped bitwise."""
    model = make_model(2, seed=0)
    opt = GuardedSGD(model.trainable_params(), 0.9)
    record = StepRecord(8, 2, list(opt.parameters))
    lr = LrWindow(0.01, "constant", 10)
    monkeypatch.setattr("train.step.on_ascend", lambda: True)  # the NPU's graph, on CPU
    if how == "this device's status":
        monkeypatch.setattr(ms.amp, "all_finite", _never_finite)
        agree = None
    else:
        agree = _OtherRankOverflowed()
    step = make_train_step(model, make_loss("huber", 1.0), OptimSpec(opt, record, lr),
                           reduce=ReduceSpec(agree=agree))
    before = state(opt)
    row = step(*rows(16, 1, 0), Tensor(np.int32(0))).asnumpy()
    after = state(opt)
    n = 2 * sum(p.size for p in opt.parameters)  # weights, then momentum (then SGD's flags)
    np.testing.assert_array_equal(after[:n], before[:n])  # untouched, bitwise
    assert after[-1] == before[-1] + 1 and np.isnan(row[1])  # the host reads it as skipped


class _SaturationNpu:
    """An NPU in saturation mode, in-process: NPUClearFloatStatusV2 and NPUGetFloatStatusV2
    as pyfunc ops over a register of 8 int32, and recorders for the forward and both
    all-reduces. `log` lists the calls in the order the compiled step ran them."""

    def __init__(self):
        self.log, self.register, self.overflow = [], np.zeros(8, np.int32), False

    def op(self, name, body=None):
        def run(x):
            self.log.append(name)
            return x if body is None else body(x)

        return ops.Custom(run, out_shape=lambda s: s, out_dtype=lambda d: d, func_type="pyfunc")

    def clear(self, x):
        self.register[:] = 0
        return x

    def forward(self, x):
        if self.overflow:  # as a float16 overflow in the forward would set a status bit
            self.register[0] = 1
        return x


class _Recorded(nn.Cell):
    """The model, its input passed through a recorder first."""

    def __init__(self, net, record):
        super().__init__()
        self.net, self.record = net, record

    def construct(self, x):
        return self.net(self.record(x))


class _RecordedReducer(nn.Cell):
    """As the gradients' all-reduce of one rank: the gradients as they are, recorded."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def construct(self, grads):
        return (self.record(grads[0]),) + grads[1:]


def test_saturation_mode_clears_the_float_status_where_mindspores_cell_does(monkeypatch):
    """910A: the status is cleared before the forward (a bit set between steps, by the loop's
    eager all-reduces or the float16 eval step, is not charged to the step), read after the
    gradients and their all-reduce, all-reduced, and cleared again once the flag is known
    (nn/wrap/loss_scale.py: start_overflow_check, then the saturation-mode status read)."""
    npu = _SaturationNpu()
    monkeypatch.setattr("train.step.on_ascend", lambda: True)
    monkeypatch.setattr("train.step.float_status_ops", lambda: (
        npu.op("clear", npu.clear), npu.op("get", lambda x: npu.register.copy())))
    dense = make_model(2, seed=0)
    opt = GuardedSGD(dense.trainable_params(), 0.9)
    scaler = make_loss_scaler("dynamic")
    record = StepRecord(8, 3, list(opt.parameters))
    step = make_train_step(_Recorded(dense, npu.op("forward", npu.forward)),
                           make_loss("huber", 1.0),
                           OptimSpec(opt, record, LrWindow(0.01, "constant", 10)),
                           PrecisionSpec(loss_scaler=scaler),
                           ReduceSpec(grad_reducer=_RecordedReducer(npu.op("grad all-reduce")),
                                      agree=npu.op("flag all-reduce")))
    order = ["clear", "forward", "grad all-reduce", "get", "flag all-reduce", "clear"]
    for t, (set_before, overflow) in enumerate([(False, False), (True, False), (False, True)]):
        npu.log.clear()
        npu.register[3] = 1 if set_before else 0  # work between steps left a status bit
        npu.overflow = overflow
        before = state(opt)
        row = step(*rows(16, 1, t), Tensor(np.int32(0))).asnumpy()
        assert npu.log == order
        assert not npu.register.any()  # cleared after the flag's all-reduce
        changed = not np.array_equal(state(opt)[:6], before[:6])  # weights and momentum
        assert changed == (not overflow) and np.isnan(row[1]) == overflow, (t, row)
    assert float(scaler.scale_value.asnumpy()) == 2.0 ** 15  # halved once: the overflow only


def test_the_data_sink_takes_sink_size_steps_per_call_without_mindspore_warnings(monkeypatch,
                                                                                 caplog):
    """ms.data_sink with a JitConfig warned twice per run (exc_mode, infer_boost). Its device
    queue cannot run on CPU: the queue is replaced by the same batches, the rest of data_sink
    is MindSpore's own. Two calls of 2 steps equal 4 host steps bitwise, and nothing warns."""
    import importlib
    import types

    sink_module = importlib.import_module("mindspore.train.data_sink")  # (the module, not
    # the function mindspore.train exports under the same name)
    batches = [rows(16, 1, t) for t in range(4)]
    queue = iter(batches)
    real_context = sink_module.context
    monkeypatch.setattr(sink_module, "context", types.SimpleNamespace(
        get_context=lambda k: "Ascend" if k == "device_target" else real_context.get_context(k),
        GRAPH_MODE=real_context.GRAPH_MODE))
    monkeypatch.setattr(sink_module, "_init_sink_dataset",
                        lambda *a: (lambda: next(queue), False))
    host, host_opt, _, _ = build()
    for x, y in batches:
        host(x, y, Tensor(np.int32(0)))
    step, opt, _, _ = build()

    def warnings():  # MindSpore's logger writes to the stderr it found at import: its records
        got = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
               and "compiled again" not in r.getMessage()]  # (this test builds two steps)
        caplog.clear()
        return got

    warnings()
    body = make_sink_step(step, types.SimpleNamespace(), 2)
    body()
    body()
    assert warnings() == []
    np.testing.assert_array_equal(state(opt), state(host_opt))
    sink_module._get_jit_func(lambda: None, ms.JitConfig(jit_level="O0"))  # the old way warns
    got = " ".join(warnings())
    assert "infer_boost" in got and "exc_mode" in got  # (so this test sees MindSpore's warnings)
