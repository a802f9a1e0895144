"""train/loop.py: the training state it saves and restores (the loop itself runs end to end
through the command line in test_main.py, test_checkpoint.py and test_adversarial.py)."""

import json
import os
import signal
import sys

import numpy as np
import pytest
from helpers import TINY, final_params, finished_run, newest_ckpt, run, start, train_cli, wait_for

from train.checkpoint import Checkpoint
from train.model import layout_of, make_model, network_spec, restore, state_layout, state_tensors
from train.optim import make_optimizer
from train.step import make_loss_scaler


@pytest.mark.parametrize("hidden", [[], [4, 3]])
@pytest.mark.parametrize("loss_scale", ["none", "dynamic", "256"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_state_is_what_checkpoints_expect_and_restores_exactly(tmp_path, hidden, loss_scale,
                                                                   optimizer):
    """state_layout (MindSpore-free, used to validate checkpoints before loading) describes
    exactly the tensors the live network, optimizer and loss scaler hold; so does layout_of
    for a built network (how a network of yours is checked)."""
    net = make_model(3, 0, hidden)
    opt = make_optimizer(optimizer, net.trainable_params(), 0.9, 0.0)
    tensors = state_tensors(net, opt, make_loss_scaler(loss_scale))
    layout = state_layout(3, hidden, loss_scale, optimizer)
    assert {n: (tuple(p.shape), str(p.asnumpy().dtype)) for n, p in tensors.items()} == layout
    assert layout_of(*network_spec(net), loss_scale, optimizer) == layout
    saved = {n: np.full(p.shape, 7, p.asnumpy().dtype) for n, p in tensors.items()}
    restore(tensors, Checkpoint(5, saved, {}, tmp_path / "x"))
    assert all(np.all(p.asnumpy() == 7) for p in tensors.values())


READ_COUNTER = """
import sys, json
from mindspore import Tensor
counts = {"reads": 0}
depth = [0]
def wrap(name):
    original = getattr(Tensor, name)
    def counted(self, *a, **k):
        if depth[0] == 0:
            counts["reads"] += 1
        depth[0] += 1
        try:
            return original(self, *a, **k)
        finally:
            depth[0] -= 1
    setattr(Tensor, name, counted)
for name in ("asnumpy", "item", "tolist", "__float__", "__int__", "__bool__", "__index__",
             "__array__", "numpy"):
    wrap(name)
from train.__main__ import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, **counts}))
"""


def _reads(tmp_path, name, *args):
    r = run([sys.executable, "-c", READ_COUNTER, "--quiet", "--eval_size", "256",
             "--ckpt_every", "0", "--out", name, *args], tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["rc"] == 0
    return got["reads"]


@pytest.mark.integration
def test_metrics_stay_on_the_device_between_log_steps(tmp_path):
    """Tensor reads, counted from outside around the real entry point: a few per log window
    (the step record, plus epoch ends and the final checkpoint), never one per step."""
    job = ["--epochs", "2", "--steps_per_epoch", "500"]  # 1,000 steps
    two_windows = _reads(tmp_path, "a", *job, "--log_every", "500")
    twenty_windows = _reads(tmp_path, "b", *job, "--log_every", "50")
    assert two_windows < 100  # against >= 1,000 with a read per step
    assert twenty_windows - two_windows <= 18 * 3  # each extra window: a few reads at most
    print(f"reads: {two_windows} (2 windows), {twenty_windows} (20 windows)")


def _summary(tmp_path, name, *args, **env):
    return final_params(finished_run(tmp_path, [*TINY, "--steps_per_epoch", "30", *args], name,
                                     **env))


@pytest.mark.integration
def test_dynamic_loss_scaling_skips_overflows_and_matches_a_run_that_skipped_them(tmp_path):
    """Forced overflows: the scale halves, the update is skipped, and the run ends bitwise
    where a run without loss scaling that skipped the same steps ends; overflows do not
    count against --skip_nonfinite (0 here)."""
    got, s = _summary(tmp_path, "scaled", "--loss_scale", "dynamic",
                      TRAIN_FAULT="overflow@5,overflow@9")
    assert s["overflow_skips"] == 2 and s["skipped_nonfinite"] == []
    ref, r = _summary(tmp_path, "skipped", "--skip_nonfinite", "2",
                      TRAIN_FAULT="nan@5,nan@9")
    assert r["skipped_nonfinite"] == [5, 9]
    assert got == ref
    lines = [json.loads(x) for x in
             (tmp_path / "scaled" / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss_scale"] for m in lines if "loss_scale" in m][0] == 2.0 ** 14
    # A static scale's overflow is an overflow too: skipped and counted, not a stop at the
    # default --skip_nonfinite 0 (the scale stays; the run ends where the skipped run ends).
    fixed, f = _summary(tmp_path, "static", "--loss_scale", "256",
                        TRAIN_FAULT="overflow@5,overflow@9")
    assert f["overflow_skips"] == 2 and f["skipped_nonfinite"] == [] and fixed == ref


@pytest.mark.integration
def test_the_loss_scale_survives_a_resume_bitwise(tmp_path):
    args = ["--loss_scale", "dynamic", "--ckpt_every", "10", "--quiet"]
    ref, _ = _summary(tmp_path, "ref", *args, TRAIN_FAULT="overflow@3")
    proc = start([*TINY, "--steps_per_epoch", "30", "--out", "run", *args], tmp_path,
                 TRAIN_FAULT="overflow@3,step_pause=0.05")
    wait_for(lambda: newest_ckpt(tmp_path / "run") >= 10, proc, what="a checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    r = train_cli(["--out", "run", "--resume"], tmp_path, TRAIN_FAULT="overflow@3")
    assert r.returncode == 0, r.stderr
    got, s = final_params(tmp_path / "run")
    assert got == ref and s["overflow_skips"] == 1


@pytest.mark.integration
def test_mixed_precision_runs_on_cpu_in_float16(tmp_path):
    for level in ("O1", "O2"):
        got, s = _summary(tmp_path, level, "--amp_level", level, "--loss_scale", "dynamic")
        assert all(np.isfinite(got)) and s["steps"] == 30
    # O1 goes through mindspore.rewrite, which would write ./rewritten_network: not into the
    # user's working folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["O1", "O2"]


@pytest.mark.integration
def test_a_cpu_run_with_sink_size_resumes_from_any_step(tmp_path):
    """CPU runs --sink_size's config on the host path: a checkpoint at a step that is not a
    multiple of it (a stop signal can land anywhere) must resume, not strand the folder."""
    run = finished_run(tmp_path, [*TINY, "--steps_per_epoch", "16", "--ckpt_every", "3"])
    for p in (run / "ckpt").glob("ckpt-00000016.*"):
        p.unlink()  # as if killed after the checkpoint of step 15
    r = train_cli(["--out", "run", "--resume", "--epochs", "2", "--sink_size", "4",
                   "--log_every", "4", "--ckpt_every", "4"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming from checkpoint step 15" in r.stdout
    assert final_params(run)[1]["steps"] == 32
