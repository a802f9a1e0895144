"""train/checkpoint.py and --resume: atomic writes, corruption, kills, SIGTERM, NaN, bad output.

The kill tests run the real command line and SIGKILL it at random moments; the resumed run must
end with bitwise the same parameters and the same metrics as the run never interrupted.
"""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import LAUNCH, TINY, clean_env, final_params, leftovers, train_cli

from train import checkpoint as ck
from train.config import Config

# Long enough (~3,000 steps) that random kill times land inside training, not start-up.
KILL_JOB = ["--epochs", "2", "--steps_per_epoch", "1500", "--batch_size", "64",
            "--ckpt_every", "25", "--log_every", "10", "--quiet", "--outlier_fraction", "0.1"]


def tensors(v):
    return {"weight": np.full((1, 2), v, np.float32), "global_step": np.array([v], np.int32)}


def test_save_load_and_keep_the_newest(tmp_path):
    d = ck.CheckpointDir(tmp_path, keep=2)
    for step in (10, 20, 30):
        d.save(step, tensors(step), {"x": step})
    assert [m.name for m in d.manifests()] == ["ckpt-00000030.json", "ckpt-00000020.json"]
    assert sorted(p.name for p in d.dir.iterdir()) == [
        "ckpt-00000020.json", "ckpt-00000020.safetensors",
        "ckpt-00000030.json", "ckpt-00000030.safetensors"]
    got = d.latest(warn=pytest.fail)
    assert got.step == 30 and got.state == {"x": 30}
    np.testing.assert_array_equal(got.tensors["weight"], tensors(30)["weight"])


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_tensors", "bad_manifest"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    d = ck.CheckpointDir(tmp_path)
    d.save(1, tensors(1), {})
    d.save(2, tensors(2), {})
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
    got = d.latest(warn=warnings.append)
    assert got.step == 1 and len(warnings) == 1 and "ckpt-00000002.json is unusable" in warnings[0]


def test_no_good_checkpoint_is_an_error_not_garbage(tmp_path):
    d = ck.CheckpointDir(tmp_path)
    with pytest.raises(ck.CheckpointError, match="no checkpoint"):
        d.latest(warn=print)
    d.save(1, tensors(1), {})
    (d.dir / "ckpt-00000001.safetensors").write_bytes(b"garbage")
    with pytest.raises(ck.CheckpointError, match="all 1 checkpoints .* are corrupt"):
        d.latest(warn=lambda _: None)


@pytest.mark.parametrize("fail_at", ["tensors", "manifest"])
def test_a_full_disk_leaves_earlier_checkpoints_untouched(tmp_path, monkeypatch, fail_at):
    d = ck.CheckpointDir(tmp_path)
    d.save(1, tensors(1), {})
    before = {p.name: p.read_bytes() for p in d.dir.iterdir()}

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fail_at == "tensors":
        monkeypatch.setattr("mindspore.save_checkpoint", enospc)
    else:
        monkeypatch.setattr(ck.Path, "write_text", enospc)
    with pytest.raises(OSError, match="No space left"):
        d.save(2, tensors(2), {})
    after = {p.name: p.read_bytes() for p in d.dir.iterdir()
             if not p.name.endswith("2.safetensors")}  # a complete orphan, swept next save
    assert after == before  # nothing half-written remains; the old checkpoint is intact
    monkeypatch.undo()
    assert d.latest(warn=pytest.fail).step == 1


def test_fingerprint_names_every_difference():
    a = ck.fingerprint(Config(), world_size=2)
    assert ck.fingerprint(Config(batch_size=512), world_size=1) == a  # same global batch
    assert ck.fingerprint(Config(epochs=50), world_size=2) == a  # training longer is allowed
    with pytest.raises(ck.CheckpointError, match=r"global_batch_size 512 -> 256, lr 0.01 -> 0.2"):
        ck.check_fingerprint(a, ck.fingerprint(Config(lr=0.2), world_size=1))


def _metrics(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m.get("loss"), m.get("grad_norm"), m.get("eval_loss")) for m in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same job, never interrupted."""
    cwd = tmp_path_factory.mktemp("ref")
    r = train_cli([*KILL_JOB, "--out", "ref"], cwd)
    assert r.returncode == 0, r.stderr
    return cwd / "ref"


def _start(args, cwd, cmd=None, **env):
    cmd = cmd or [sys.executable, "-m", "train"]
    return subprocess.Popen([*cmd, *args], cwd=cwd, env=clean_env(**env), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_tree(proc):
    """SIGKILL a job the way a scheduler does: the launcher and every process under it (msrun
    puts its workers in sessions of their own, so the process group alone is not enough)."""
    import psutil

    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    proc.wait()


def _newest(out):
    """Name of the newest checkpoint manifest in a run folder, "" if none."""
    names = sorted(p.name for p in (out / "ckpt").glob("ckpt-*.json")) if out.exists() else []
    return names[-1] if names else ""


def _wait_for_checkpoint(out, proc, newer_than="", timeout=180):
    t0 = time.monotonic()
    while _newest(out) <= newer_than:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.05)


def test_sigkill_at_random_moments_then_resume_is_exact(tmp_path, reference):
    rng = random.Random(1234)
    out, rounds = tmp_path / "run", 0
    args = [*KILL_JOB, "--out", "run"]
    while True:
        newest = _newest(out)
        proc = _start(args + (["--resume"] if rounds else []), tmp_path)
        if rounds < 3:
            _wait_for_checkpoint(out, proc, newer_than=newest)
            time.sleep(rng.uniform(0.0, 1.0))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait(timeout=300)
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, proc.stderr.read()
        rounds += 1
    assert rounds == 3  # every kill landed during training
    got, s = final_params(out)
    assert got == final_params(reference)[0]  # bitwise
    assert _metrics(out) == _metrics(reference)  # no step lost or logged twice
    assert s["segments"] == 4 and s["steps"] == 3000


def test_kill_during_a_checkpoint_write(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start([*KILL_JOB, "--out", "run", "--test_ckpt_pause", "30"], tmp_path)
    # The first write pauses after the tensor file and before its manifest: kill it there.
    t0 = time.monotonic()
    while not (out / "ckpt").exists() or not list((out / "ckpt").glob("*.safetensors")):
        assert proc.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((out / "ckpt").glob("*.json")) == []  # no manifest: the checkpoint does not exist
    r = train_cli([*KILL_JOB, "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 2 and "holds no checkpoint" in r.stderr
    # A killed write after good checkpoints: resume uses the last complete one.
    proc = _start([*KILL_JOB, "--out", "run2", "--test_ckpt_pause", "0.3"], tmp_path)
    _wait_for_checkpoint(tmp_path / "run2", proc)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    r = train_cli([*KILL_JOB, "--out", "run2", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert final_params(tmp_path / "run2")[0] == final_params(reference)[0]
    assert not [p for p in (tmp_path / "run2" / "ckpt").iterdir() if p.name.startswith(".")]


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path, reference):
    proc = _start([*KILL_JOB, "--out", "run"], tmp_path)
    _wait_for_checkpoint(tmp_path / "run", proc)
    time.sleep(0.6)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    newest = sorted((tmp_path / "run" / "ckpt").glob("*.safetensors"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    r = train_cli([*KILL_JOB, "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"checkpoint {newest.stem}.json is unusable" in r.stderr
    assert final_params(tmp_path / "run")[0] == final_params(reference)[0]


def test_sigterm_checkpoints_and_exits_75_then_resumes_exactly(tmp_path, reference):
    proc = _start([*KILL_JOB, "--out", "run"], tmp_path)
    _wait_for_checkpoint(tmp_path / "run", proc)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 75
    r = train_cli([*KILL_JOB, "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    got, s = final_params(tmp_path / "run")
    assert got == final_params(reference)[0] and s["segments"] == 2
    assert _metrics(tmp_path / "run") == _metrics(reference)


def test_resume_refuses_a_different_config_and_writes_nothing(tmp_path):
    r = train_cli([*TINY, "--out", "run"], tmp_path)
    assert r.returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()
              and "logs" not in p.parts}
    r = train_cli([*TINY, "--out", "run", "--resume", "--lr", "0.5", "--loss", "mse"], tmp_path)
    assert r.returncode == 2
    assert "cannot resume: the config differs from the checkpoint's in loss 'huber' -> 'mse', " \
           "lr 0.01 -> 0.5" in r.stderr
    after = {p: p.read_bytes() for p in before}
    assert after == before


def test_resume_a_finished_run_with_more_epochs_trains_on(tmp_path):
    r = train_cli([*TINY, "--out", "run"], tmp_path)
    assert r.returncode == 0
    r = train_cli(["--out", "run", "--resume", "--epochs", "2"], tmp_path)  # config from the run
    assert r.returncode == 0, r.stderr
    s = final_params(tmp_path / "run")[1]
    assert s["steps"] == 40 and s["epochs"] == 2 and s["segments"] == 2
    steps = [m[0] for m in _metrics(tmp_path / "run") if m[1] is not None]
    assert steps == [10, 20, 30, 40]


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path):
    assert train_cli([*TINY, "--epochs", "2", "--out", "run"], tmp_path).returncode == 0
    config = (tmp_path / "run" / "config.yaml").read_text()
    r = train_cli(["--out", "run", "--resume", "--epochs", "1"], tmp_path)
    assert r.returncode == 2
    assert "the checkpoint is at step 40, past the 20 steps of --epochs 1" in r.stderr
    assert (tmp_path / "run" / "config.yaml").read_text() == config


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    r = train_cli([*TINY, "--ckpt_every", "5", "--nan_at_step", "13", "--out", "run"], tmp_path)
    assert r.returncode == 1
    assert "non-finite loss nan / gradient norm nan at step 13 on rank 0" in r.stderr
    steps = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "run" / "ckpt").glob("*.json"))
    assert steps == [5, 10]  # nothing written after the bad step
    r = train_cli([*TINY, "--ckpt_every", "5", "--nan_at_step", "13", "--skip_nonfinite", "1",
                   "--out", "skip"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "at step 13 on rank 0; update skipped" in r.stderr
    s = final_params(tmp_path / "skip")[1]
    assert s["skipped_nonfinite"] == [13] and np.isfinite(s["w"][0])


def test_unwritable_out_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    r = train_cli([*TINY, "--out", "file/run"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --out file/run: cannot write there (Not a directory)"]
    assert (tmp_path / "file").read_text() == "x"


def test_two_ranks_killed_then_preempted_under_msrun_then_finished_by_one_process(
        tmp_path, port):
    """2 msrun ranks with batch 32: SIGKILLed at a random moment, resumed under msrun and
    stopped by SIGTERM to the launch script (as a scheduler does), then finished by one process
    with batch 64 (same global batch). Ends where one uninterrupted process ends."""
    job = ["--epochs", "1", "--steps_per_epoch", "3000", "--batch_size", "32", "--ckpt_every",
           "25", "--log_every", "10", "--quiet"]
    ref = train_cli([*job, "--batch_size", "64", "--out", "ref"], tmp_path)
    assert ref.returncode == 0, ref.stderr
    msrun = ["bash", str(LAUNCH / "run_msrun.sh")]
    env = {"NPROC": "2", "MASTER_PORT": str(port), "LOG_DIR": str(tmp_path / "logs"),
           "NODE_TIMEOUT": "8"}
    rng = random.Random(7)
    # 1. SIGKILL of the whole job at a random moment after its first checkpoint.
    proc = _start([*job, "--out", "run"], tmp_path, cmd=msrun, **env)
    _wait_for_checkpoint(tmp_path / "run", proc)
    time.sleep(rng.uniform(0.5, 1.5))
    assert proc.poll() is None
    _kill_tree(proc)
    assert leftovers(str(port)) == []
    # 2. Resume under msrun; SIGTERM to the launch script: checkpoint, exit 75.
    newest = _newest(tmp_path / "run")
    proc = _start([*job, "--out", "run", "--resume"], tmp_path, cmd=msrun, **env)
    _wait_for_checkpoint(tmp_path / "run", proc, newer_than=newest)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 75, proc.stderr.read()[-2000:]
    stopped = int(_newest(tmp_path / "run").split("-")[1].split(".")[0])
    assert stopped % 10 == 0  # several ranks agree to stop at a --log_every boundary
    assert leftovers(str(port)) == []
    # 3. One process with the same global batch finishes the run.
    r = train_cli([*job, "--batch_size", "64", "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    got, s = final_params(tmp_path / "run")
    assert got == final_params(tmp_path / "ref")[0]
    assert s["segments"] == 3 and s["world_size"] == 1
    # Same steps logged once each; values equal to float rounding (the 2-rank gradient is a
    # mean of two half-batch means, the same math in another summation order; small gradient
    # norms near the optimum show it most, ~1e-4 relative).
    got_m, ref_m = _metrics(tmp_path / "run"), _metrics(tmp_path / "ref")
    assert [m[0] for m in got_m] == [m[0] for m in ref_m]
    np.testing.assert_allclose(np.array([m[1:] for m in got_m], dtype=float),
                               np.array([m[1:] for m in ref_m], dtype=float), rtol=1e-3, atol=1e-6)
