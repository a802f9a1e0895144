"""train/checkpoint.py and --resume: atomic writes, validation, kills, SIGTERM, non-finite steps.

The kill tests run the real command line, paced with TRAIN_FAULT=step_pause so that a kill can
never arrive after the run has finished, however fast the machine; the resumed run must end
with bitwise the same parameters and the same metrics as the run never interrupted.
Hostile checkpoint files are in test_adversarial.py.
"""

import json
import os
import random
import signal
import time

import numpy as np
import pytest
from helpers import (
    DIABETES,
    LAUNCH,
    RESOLVED,
    TINY,
    final_params,
    finished_run,
    leftovers,
    metrics,
    newest_ckpt,
    start,
    train_cli,
    wait_for,
)

from train import checkpoint as ck
from train.config import Config
from train.model import state_layout

KILL_JOB = ["--epochs", "2", "--steps_per_epoch", "500", "--batch_size", "64", "--ckpt_every",
            "25", "--log_every", "10", "--quiet", "--outlier_fraction", "0.1"]
PACE = "step_pause=0.004"  # >= 4 s for the 1,000 steps: kills always land mid-run
LAYOUT = state_layout(2, [])


def tensors(step):
    t = {n: np.full(s, float(step), np.float32) for n, (s, d) in LAYOUT.items() if d == "float32"}
    return {**t, "global_step": np.array([step], np.int32)}


def state():
    return {"window_loss": 0.0, "window_n": 0, "timed_steps": 0, "train_s": 0.0, "wall_s": 0.0,
            "loss": None, "eval_loss": None, "eval_mse": None, "skipped": [], "segments": 1,
            "overflow_skips": 0, "fingerprint": {}, "data_stats": None}


def test_save_keep_the_newest_by_step_number(tmp_path):
    d = ck.CheckpointDir(tmp_path, keep=2)
    for step in (10, 99_999_999, 100_000_001):  # 9 digits must sort after 8
        d.save(step, tensors(step), state())
    assert [s for s, _ in d.manifests()] == [100_000_001, 99_999_999]
    got = d.latest(LAYOUT, warn=pytest.fail)
    assert got.step == 100_000_001 and got.version == ck.FORMAT_VERSION
    np.testing.assert_array_equal(got.tensors["weight"], tensors(100_000_001)["weight"])
    import mindspore as ms  # MindSpore reads our files natively

    loaded = ms.load_checkpoint(str(got.path.with_suffix(ck.SUFFIX)), format="safetensors")
    assert set(loaded) == set(LAYOUT)


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_tensors", "bad_manifest"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    d = ck.CheckpointDir(tmp_path)
    d.save(1, tensors(1), state())
    d.save(2, tensors(2), state())
    data, manifest = d.dir / "ckpt-00000002.safetensors", d.dir / "ckpt-00000002.json"
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:-7])
    elif damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[-1] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "drop_tensors":
        data.unlink()
    else:
        manifest.write_text('{"step": 2, "fi')
    warnings = []
    got = d.latest(LAYOUT, warn=warnings.append)
    assert got.step == 1 and len(warnings) == 1 and "ckpt-00000002.json is unusable" in warnings[0]


def test_a_step_written_again_keeps_a_whole_checkpoint_at_every_moment(tmp_path):
    """The Newton finish writes the last step's checkpoint again: the new tensors go to the
    step's other file name, so a kill before the new manifest leaves the old pair whole; once
    it is in place the old tensors go."""
    d = ck.CheckpointDir(tmp_path, keep=1)
    d.save(7, tensors(7), state())

    def weights(value):  # step 7's tensors (its step counter) with other weights
        return {**tensors(7), "weight": np.full(LAYOUT["weight"][0], value, np.float32)}

    finished = {**state(), "finish": {"method": "newton", "at_step": 7, "passes": 3,
                                      "stopped": "converged"}}

    class Killed(Exception):
        pass

    def kill():
        raise Killed

    d._on_write = kill  # between the tensor file and the manifest, as TRAIN_FAULT ckpt_pause
    with pytest.raises(Killed):
        d.save(7, weights(8.0), finished)
    got = d.latest(LAYOUT, warn=pytest.fail)  # the old pair, whole
    assert got.tensors["weight"][0, 0] == 7.0 and got.state["finish"] is None
    d._on_write = None
    d.save(7, weights(8.0), finished)
    got = d.latest(LAYOUT, warn=pytest.fail)
    assert got.tensors["weight"][0, 0] == 8.0 and got.state["finish"]["passes"] == 3
    assert sorted(p.name for p in d.dir.iterdir()) == ["ckpt-00000007.1.safetensors",
                                                       "ckpt-00000007.json"]
    d.save(7, weights(9.0), finished)  # and back to the first name
    assert sorted(p.name for p in d.dir.iterdir()) == ["ckpt-00000007.json",
                                                       "ckpt-00000007.safetensors"]
    d.save(8, tensors(10), state())  # keep=1: both of step 7's names go with its manifest
    assert sorted(p.name for p in d.dir.iterdir()) == ["ckpt-00000008.json",
                                                       "ckpt-00000008.safetensors"]


def test_no_checkpoint_is_none_and_none_good_is_an_error(tmp_path):
    d = ck.CheckpointDir(tmp_path)
    assert d.latest(LAYOUT, warn=pytest.fail) is None
    d.save(1, tensors(1), state())
    (d.dir / "ckpt-00000001.safetensors").write_bytes(b"garbage")
    with pytest.raises(ck.CheckpointError, match="all 1 checkpoints .* are unusable"):
        d.latest(LAYOUT, warn=lambda _: None)


def test_format_versions(tmp_path):
    """The first release's unversioned manifests still load (with their NaN loss and the
    momentum tensor they saved); a newer version than this reader's is skipped, named."""
    from safetensors.numpy import save as st_save

    d = ck.CheckpointDir(tmp_path)
    d.save(1, tensors(1), state())
    raw = st_save({**tensors(2), "momentum": np.array(0.9, np.float32)})
    (d.dir / "ckpt-00000002.safetensors").write_bytes(raw)
    import hashlib

    v0 = {k: v for k, v in state().items() if k not in ("overflow_skips", "data_stats")}
    body = {"step": 2, "file": "ckpt-00000002.safetensors", "format": "safetensors",
            "sha256": hashlib.sha256(raw).hexdigest(), "saved": "x", "state": v0}
    text = json.dumps(body).replace('"loss": null', '"loss": NaN')
    (d.dir / "ckpt-00000002.json").write_text(text)
    got = d.latest(LAYOUT, warn=pytest.fail)
    assert (got.step, got.version, got.state["overflow_skips"]) == (2, 0, 0)
    body["format_version"] = ck.FORMAT_VERSION + 1
    (d.dir / "ckpt-00000002.json").write_text(json.dumps(body))
    warnings = []
    assert d.latest(LAYOUT, warn=warnings.append).step == 1
    assert "written by a newer release" in warnings[0]


def _fp(world_size, **kw):
    """The fingerprint of a resolved synthetic config."""
    return ck.fingerprint(Config(**{**RESOLVED, **kw}), world_size=world_size)


def test_fingerprint_names_every_difference():
    a = _fp(2)
    assert _fp(1, batch_size=512) == a  # the same global batch
    assert _fp(2, epochs=50) == a  # training longer
    with pytest.raises(ck.CheckpointError, match=r"global_batch_size 512 -> 256, lr 0.01 -> 0.2"):
        ck.check_fingerprint(a, _fp(1, lr=0.2))
    # The first release had no MLP, mixed precision or data files: a fingerprint without those
    # keys means their defaults, and still resumes.
    later = ("hidden", "amp_level", "amp_dtype", "loss_scale", "data", "standardize")
    old = {k: v for k, v in a.items() if k not in later}
    ck.check_fingerprint(old, a)
    with pytest.raises(ck.CheckpointError, match="hidden '' -> '8'"):
        ck.check_fingerprint(old, _fp(2, hidden="8"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same job, never interrupted."""
    return finished_run(tmp_path_factory.mktemp("ref"), KILL_JOB, "ref")


@pytest.mark.integration
def test_sigkill_at_random_moments_then_resume_is_exact(tmp_path, reference):
    rng = random.Random(1234)
    out = tmp_path / "run"
    for kill in range(3):
        newest = newest_ckpt(out)
        proc = start([*KILL_JOB, "--out", "run"] + (["--resume"] if kill else []), tmp_path,
                     TRAIN_FAULT=PACE)
        wait_for(lambda n=newest: newest_ckpt(out) > n, proc, what="a new checkpoint")
        time.sleep(rng.uniform(0.0, 0.8))  # paced: the run cannot finish meanwhile
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    r = train_cli([*KILL_JOB, "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    got, s = final_params(out)
    assert got == final_params(reference)[0]  # bitwise
    assert metrics(out) == metrics(reference)  # no step lost or logged twice
    assert s["segments"] == 4 and s["steps"] == 1000


@pytest.mark.integration
def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path, reference):
    """A kill inside the first checkpoint write (after the tensor file, before its manifest)
    leaves a run folder without a checkpoint: --resume starts it from step 0, exactly."""
    out = tmp_path / "run"
    proc = start([*KILL_JOB, "--out", "run"], tmp_path, TRAIN_FAULT="ckpt_pause=600")
    wait_for(lambda: list(out.glob("ckpt/*.safetensors")), proc, what="the first tensor file")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((out / "ckpt").glob("*.json")) == []  # no manifest: the checkpoint does not exist
    r = train_cli([*KILL_JOB, "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming from step 0 (no checkpoint yet)" in r.stdout
    assert final_params(out)[0] == final_params(reference)[0]
    assert metrics(out) == metrics(reference)
    assert not [p for p in (out / "ckpt").iterdir() if p.name.startswith(".")]  # swept


@pytest.mark.integration
def test_a_stop_or_a_kill_during_the_newton_finish_resumes_exactly(tmp_path, reference):
    """The last step's checkpoint holds SGD's parameters until the finish writes it again: a
    SIGTERM inside the finish exits 75, a SIGKILL there loses nothing, and --resume finishes
    bitwise where the uninterrupted run ended, with no metrics line twice."""
    out = tmp_path / "run"

    def finishing(resume):
        proc = start([*KILL_JOB, "--out", "run"] + resume, tmp_path,
                     TRAIN_FAULT="finish_pause=600")
        wait_for(lambda: '"finish_pass"' in ((out / "metrics.jsonl").read_text()
                                             if (out / "metrics.jsonl").exists() else ""),
                 proc, what="a pass of the finish")
        return proc

    proc = finishing([])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 75
    assert "stopped during the Newton finish; finish it with --resume" in proc.stderr.read()
    proc = finishing(["--resume"])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert newest_ckpt(out) == 1000  # SGD's, unfinished
    r = train_cli([*KILL_JOB, "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    got, s = final_params(out)
    assert got == final_params(reference)[0] and metrics(out) == metrics(reference)
    assert s["finish"]["at_step"] == 1000 and s["finish"]["passes"] >= 2 and s["converged"]
    again = train_cli([*KILL_JOB, "--out", "run", "--resume"], tmp_path)  # finished: as it is
    assert again.returncode == 0 and final_params(out)[0] == got
    assert "all 1000 steps done (resumed at step 1000)" in again.stdout  # not "1001-1000"
    assert metrics(out) == metrics(reference)


@pytest.mark.integration
def test_sigterm_checkpoints_and_exits_75_then_resumes_exactly(tmp_path, reference):
    proc = start([*KILL_JOB, "--out", "run"], tmp_path, TRAIN_FAULT=PACE)
    wait_for(lambda: newest_ckpt(tmp_path / "run") > 0, proc, what="a checkpoint")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 75
    assert "stopped: SIGTERM: stopped at step" in proc.stderr.read()
    r = train_cli([*KILL_JOB, "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    got, s = final_params(tmp_path / "run")
    assert got == final_params(reference)[0] and s["segments"] == 2
    assert metrics(tmp_path / "run") == metrics(reference)


@pytest.mark.integration
def test_resume_refuses_a_different_config_and_changes_nothing(tmp_path):
    r = train_cli([*TINY, "--out", "run"], tmp_path)
    assert r.returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()
              and p.name != ".lock"}  # the lock file records its latest holder
    r = train_cli([*TINY, "--out", "run", "--resume", "--lr", "0.5", "--loss", "mse"], tmp_path)
    assert r.returncode == 2
    assert "cannot resume: the config differs from the checkpoint's in loss 'huber' -> 'mse', " \
           "lr 0.01 -> 0.5" in r.stderr
    # named before what the change would imply (--hidden: the linear model's --init)
    r = train_cli(["--data", str(DIABETES), "--epochs", "1", "--out", "file", "--quiet"],
                  tmp_path)
    assert r.returncode == 0, r.stderr
    r = train_cli(["--out", "file", "--resume", "--hidden", "4"], tmp_path)
    assert r.returncode == 2 and "differs from the run's in hidden '' -> '4'" in r.stderr
    after = {p: p.read_bytes() for p in before}
    assert after == before


@pytest.mark.integration
def test_resume_a_finished_run_with_more_epochs_trains_on(tmp_path):
    r = train_cli([*TINY, "--out", "run"], tmp_path)
    assert r.returncode == 0
    r = train_cli(["--out", "run", "--resume", "--epochs", "2"], tmp_path)  # config from the run
    assert r.returncode == 0, r.stderr
    s = final_params(tmp_path / "run")[1]
    assert s["steps"] == 40 and s["epochs"] == 2 and s["segments"] == 2
    steps = [m[0] for m in metrics(tmp_path / "run") if m[1] is not None]
    assert steps == [10, 20, 30, 40]
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "resume" not in config and "epochs: 2" in config  # rerunnable as is
    r = train_cli(["--out", "run", "--resume", "--epochs", "1"], tmp_path)
    assert r.returncode == 2
    assert "the checkpoint is at step 40, past the 20 steps configured" in r.stderr
    assert (tmp_path / "run" / "config.yaml").read_text() == config


@pytest.mark.integration
def test_non_finite_steps_stop_the_run_or_are_skipped(tmp_path):
    """Decided from the device's record at the next read: the bad step's update is never
    applied, nothing is written after it, and --skip_nonfinite lets N of them pass."""
    r = train_cli([*TINY, "--ckpt_every", "5", "--out", "run"], tmp_path, TRAIN_FAULT="nan@13")
    assert r.returncode == 1
    assert "rank 0 of 1 failed: non-finite loss or gradient at step 13 on rank 0; its update " \
           "was not applied" in r.stderr
    assert sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "run" / "ckpt").glob("*.json")) \
        == [5, 10]  # the read at the next checkpoint step (15) found it: nothing written after
    r = train_cli([*TINY, "--ckpt_every", "5", "--skip_nonfinite", "2", "--out", "skip"],
                  tmp_path, TRAIN_FAULT="nan@13,nan@14")
    assert r.returncode == 0, r.stderr
    assert "at step 13 on rank 0; update skipped" in r.stderr
    s = final_params(tmp_path / "skip")[1]
    assert s["skipped_nonfinite"] == [13, 14] and np.isfinite(s["w"][0])
    r = train_cli([*TINY, "--skip_nonfinite", "1", "--out", "over"], tmp_path,
                  TRAIN_FAULT="nan@3,nan@4")
    assert r.returncode == 1 and "at step 4 on rank 0 (more than --skip_nonfinite 1)" in r.stderr


@pytest.mark.integration
def test_two_ranks_killed_then_stopped_under_msrun_then_finished_by_one_process(
        tmp_path, port):
    """2 msrun ranks with batch 32: SIGKILLed (the launcher and everything under it), resumed
    under msrun and stopped by SIGTERM to the launch script, then finished by one process with
    batch 64 (the same global batch). Ends where one uninterrupted process ends."""
    job = ["--epochs", "1", "--steps_per_epoch", "600", "--batch_size", "32", "--ckpt_every",
           "25", "--log_every", "10", "--quiet"]
    ref = train_cli([*job, "--batch_size", "64", "--out", "ref"], tmp_path)
    assert ref.returncode == 0, ref.stderr
    msrun = ["bash", str(LAUNCH / "run_msrun.sh")]
    env = {"NPROC": "2", "MASTER_PORT": str(port), "LOG_DIR": str(tmp_path / "logs"),
           "NODE_TIMEOUT": "8", "TRAIN_FAULT": "step_pause=0.01"}
    proc = start([*job, "--out", "run"], tmp_path, cmd=msrun, **env)
    wait_for(lambda: newest_ckpt(tmp_path / "run") > 0, proc, what="a checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)  # the script and msrun die; the workers with them
    proc.wait()
    assert leftovers() == []
    newest = newest_ckpt(tmp_path / "run")
    proc = start([*job, "--out", "run", "--resume"], tmp_path, cmd=msrun, **env)
    wait_for(lambda: newest_ckpt(tmp_path / "run") > newest, proc, what="a new checkpoint")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 75, proc.stderr.read()[-2000:]
    assert leftovers() == []
    r = train_cli([*job, "--out", "run", "--resume"], tmp_path)  # batch 32, one process
    assert r.returncode == 2 and "global_batch_size 64 -> 32" in r.stderr
    assert "to resume on 1 rank(s) pass --batch_size 64" in r.stderr  # what to change
    r = train_cli([*job, "--batch_size", "64", "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    got, s = final_params(tmp_path / "run")
    assert got == final_params(tmp_path / "ref")[0]
    assert s["segments"] == 3 and s["world_size"] == 1
    # Same steps logged once each; values equal to float rounding (the 2-rank gradient is a
    # mean of two half-batch means, the same math in another summation order).
    got_m, ref_m = metrics(tmp_path / "run"), metrics(tmp_path / "ref")
    assert [m[0] for m in got_m] == [m[0] for m in ref_m]
    np.testing.assert_allclose(np.array([m[1:] for m in got_m], dtype=float),
                               np.array([m[1:] for m in ref_m], dtype=float), rtol=1e-3, atol=1e-6)
