"""The trainer against an adversarial user, through the real command line: hostile checkpoint
files, signals at bad moments, full disks, lost permissions, closed pipes, absurd values.

Each test is a class of problem (issue 10), not one example: every malformed checkpoint is
skipped for the newest good one, every stop signal ends in exit 75 with a resumable folder,
every file problem is one line with its exit code and leaves earlier files intact.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import (
    TINY,
    clean_env,
    final_params,
    finished_run,
    handles_signals,
    newest_ckpt,
    require,
    run,
    start,
    train_cli,
    wait_for,
)

pytestmark = pytest.mark.integration  # every test here starts a process

JOB = [*TINY, "--ckpt_every", "5", "--keep_ckpts", "10"]


def strict_json(path):
    """Parse JSON refusing NaN/Infinity, as strict readers do."""
    def refuse(name):
        raise ValueError(f"{path.name} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished 20-step run with checkpoints at 5, 10, 15 and 20."""
    return finished_run(tmp_path_factory.mktemp("good"), JOB)


def copy_run(good_run, tmp_path):
    shutil.copytree(good_run, tmp_path / "run")
    return tmp_path / "run"


def manifest(run, step):
    return run / "ckpt" / f"ckpt-{step:08d}.json"


def tensor_file(run, step):
    """The tensor file a checkpoint's manifest names (the last step's is written again after
    the Newton finish, under the step's other name: ckpt-<step>.1.safetensors)."""
    return run / "ckpt" / json.loads(manifest(run, step).read_text())["file"]


def edit_manifest(run, step, fn):
    m = manifest(run, step)
    body = json.loads(m.read_text())
    fn(body)
    m.write_text(json.dumps(body))


def snapshot(run):
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()
            and p.name != ".lock" and "logs" not in p.parts}


def _step(v):
    return lambda b: b.__setitem__("step", v)


def _symlink_to(target):
    def damage(run):
        data = tensor_file(run, 20)
        data.unlink()
        data.symlink_to(target)
    return damage


def _fifo(run):
    data = tensor_file(run, 20)
    data.unlink()
    os.mkfifo(data)


def _nan_weights(run):
    """Valid hash, NaN weights: a checkpoint written after parameters went bad."""
    import hashlib

    from safetensors.numpy import load, save

    data = tensor_file(run, 20)
    tensors = load(data.read_bytes())
    tensors["weight"] = np.full_like(tensors["weight"], np.nan)
    raw = save(tensors)
    data.write_bytes(raw)
    edit_manifest(run, 20, lambda b: b.update(sha256=hashlib.sha256(raw).hexdigest(),
                                              bytes=len(raw)))


def _reshape(run):
    """A tensor of the wrong shape with a valid hash (MindSpore would write analyze_fail.ir)."""
    import hashlib

    from safetensors.numpy import load, save

    data = tensor_file(run, 20)
    tensors = load(data.read_bytes())
    tensors["weight"] = np.zeros((1, 3), np.float32)
    raw = save(tensors)
    data.write_bytes(raw)
    edit_manifest(run, 20, lambda b: b.update(sha256=hashlib.sha256(raw).hexdigest(),
                                              bytes=len(raw)))


def _other_runs_file(run):
    """`file` pointing at another run's tensors (with their matching hash)."""
    other = run.parent / "other.safetensors"
    shutil.copy(run / "ckpt" / "ckpt-00000015.safetensors", other)
    edit_manifest(run, 20, lambda b: b.update(file="../../other.safetensors",
                                              sha256=manifest_hash(run, 15)))


def manifest_hash(run, step):
    return json.loads(manifest(run, step).read_text())["sha256"]


HOSTILE = {
    "negative step": lambda run: edit_manifest(run, 20, _step(-5)),
    "fractional step": lambda run: edit_manifest(run, 20, _step(19.5)),
    "step unlike its name": lambda run: edit_manifest(run, 20, _step(15)),
    "path in file": _other_runs_file,
    "absolute file": lambda run: edit_manifest(
        run, 20, lambda b: b.update(file=str(run / "ckpt" / "ckpt-00000015.safetensors"))),
    "missing state key": lambda run: edit_manifest(run, 20, lambda b: b["state"].pop("wall_s")),
    "missing state": lambda run: edit_manifest(run, 20, lambda b: b.pop("state")),
    "manifest is a list": lambda run: manifest(run, 20).write_text("[1, 2]"),
    "newer format": lambda run: edit_manifest(run, 20, lambda b: b.update(format_version=99)),
    "symlink to /dev/zero": _symlink_to("/dev/zero"),
    "FIFO": _fifo,
    "NaN weights": _nan_weights,
    "wrong shape": _reshape,
}


TRAIN_ON = {"FIFO", "wrong shape", "NaN weights"}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_checkpoint_is_skipped_for_the_newest_good_one(good_run, tmp_path, case):
    run = copy_run(good_run, tmp_path)
    HOSTILE[case](run)
    (run / "ckpt" / "ckpt-zzz.json").write_text("{}")  # a stray name is never "the newest"
    before = snapshot(run)
    r = train_cli(["--out", "run", "--resume", "--dry_run"], tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr  # reading never hangs (FIFO, /dev/zero)
    assert "checkpoint ckpt-00000020.json is unusable" in r.stderr
    assert "# resume: from checkpoint step 15" in r.stdout
    assert snapshot(run) == before  # nothing changed before a checkpoint is chosen
    if case not in TRAIN_ON:
        return  # the choice is the same code for every case; train on for a few
    r = train_cli(["--out", "run", "--resume", "--epochs", "2"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming from checkpoint step 15" in r.stdout
    assert final_params(run)[1]["steps"] == 40
    assert not (tmp_path / "rank_0").exists()  # MindSpore never saw a bad shape


def test_no_good_checkpoint_is_exit_2_and_changes_nothing(good_run, tmp_path):
    run = copy_run(good_run, tmp_path)
    for p in (run / "ckpt").glob("*.safetensors"):
        p.write_bytes(b"garbage")
    before = snapshot(run)
    r = train_cli(["--out", "run", "--resume"], tmp_path)
    assert r.returncode == 2 and "all 4 checkpoints" in r.stderr and "are unusable" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert snapshot(run) == before


def test_a_changed_model_is_refused_by_name_not_as_unusable_checkpoints(good_run, tmp_path):
    run = copy_run(good_run, tmp_path)
    before = snapshot(run)
    r = train_cli(["--out", "run", "--resume", "--hidden", "4", "--dry_run"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: cannot resume: the config differs from the checkpoint's in hidden '' -> '4'"]
    assert snapshot(run) == before


def test_a_resumed_file_run_takes_data_options_without_repeating_data(tmp_path):
    rows = "".join(f"{i % 17},{2 * (i % 17) + 3}\n" for i in range(200))
    (tmp_path / "d.csv").write_text("a,y\n" + rows)
    job = ["--data", "d.csv", "--epochs", "1", "--batch_size", "16", "--log_every", "5"]
    r = train_cli([*job, "--out", "run", "--ckpt_every", "5"], tmp_path)
    assert r.returncode == 0, r.stderr
    # the run's own config holds --data: a data option alone completes it
    r = train_cli(["--out", "run", "--resume", "--drop_nonfinite", "false", "--epochs", "2",
                   "--dry_run"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# resume: from checkpoint step 11" in r.stdout


def test_output_files_are_strict_json(good_run):
    for name in ("summary.json", "run.json"):
        strict_json(good_run / name)
    for m in (good_run / "ckpt").glob("*.json"):
        strict_json(m)
    for line in (good_run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(c))


# --- signals: every path ends in 75 with a resumable folder ----------------------------------


def _stop(proc, sig, times=1):
    for _ in range(times):
        proc.send_signal(sig)
    return proc.wait(timeout=120)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_during_start_up_is_75_and_the_folder_resumes(tmp_path, sig):
    """Before the first step (here: while the process pauses in start-up): no checkpoint is
    needed, the folder holds the run, --resume starts it from step 0."""
    proc = start([*TINY, "--out", "run"], tmp_path, TRAIN_FAULT="start_pause=60")
    wait_for(lambda: (tmp_path / "run" / ".lock").exists(), proc, what="the run folder")
    assert _stop(proc, sig) == 75
    err = proc.stderr.read()
    assert f"stopped: {sig.name}: stopped before its first step" in err
    r = train_cli([*TINY, "--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert final_params(tmp_path / "run")[1]["steps"] == 20


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_during_a_dry_run_is_75(tmp_path, sig):
    """A dry run checks and prints; a stop signal meanwhile is acted on, as a run's would be
    (the launch scripts' pre-flight is a dry run). SIGHUP (a closed terminal) is one."""
    proc = start([*TINY, "--dry_run"], tmp_path, TRAIN_FAULT="start_pause=60")
    wait_for(lambda: handles_signals(proc.pid), proc, what="the trainer's signal handling")
    assert _stop(proc, sig) == 75
    assert f"stopped: {sig.name}: stopped during the dry run" in proc.stderr.read()


def test_python_m_train_takes_the_stop_signals_before_anything_else(tmp_path):
    """A Ctrl-C in the first ~60 ms was a KeyboardInterrupt: `python -m train` now installs its
    handlers before any other import of its own (only train.stop's signal and threading come
    first), so a signal during its imports is a stop (75, one line), as the test above shows."""
    r = run([sys.executable, "-X", "importtime", "-m", "train", "--help"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    order = [ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines()
             if ln.startswith("import time:") and "|" in ln]
    ours = order[order.index("train") + 1:]
    first = ours[:ours.index("train.stop")]
    assert set(first) <= {"signal", "threading", "_weakrefset"}, first
    assert {"dataclasses", "numpy"} <= set(ours)  # both come later (the check can fail)


def test_a_stop_a_launcher_took_just_before_its_exec_goes_with_it(tmp_path):
    """A signal after a launcher's last check and before its `exec` runs only its trap, which
    exports TRAIN_PENDING_STOP: the trainer (or srun's tasks) starts stopped, never trains on."""
    r = train_cli([*TINY, "--out", "run", "--dry_run"], tmp_path, TRAIN_PENDING_STOP="HUP")
    assert r.returncode == 75, r.stderr[-2000:]
    assert r.stderr.strip() == "stopped: SIGHUP: stopped during the dry run; nothing was trained"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_while_stopping_is_absorbed(tmp_path, sig):
    """Two signals in a row (users and schedulers send them) still give a checkpoint and 75:
    the second arrives while the first checkpoint of the stop is being written."""
    args = [*TINY, "--steps_per_epoch", "1000", "--ckpt_every", "0", "--out", "run"]
    proc = start(args, tmp_path, TRAIN_FAULT="step_pause=0.01,ckpt_pause=2")
    wait_for(lambda: (tmp_path / "run" / "metrics.jsonl").exists(), proc, what="training")
    proc.send_signal(sig)
    wait_for(lambda: list((tmp_path / "run").glob("ckpt/*.safetensors")), proc,
             what="the stop's checkpoint write")
    assert _stop(proc, sig) == 75
    step = newest_ckpt(tmp_path / "run")
    assert step > 0 and f"stopped: {sig.name}: stopped at step {step}" in proc.stderr.read()
    r = train_cli([*args, "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr


def test_memory_does_not_grow_with_the_number_of_steps(tmp_path):
    """2e8 steps: no per-step table (the lr schedule is refilled on the device in windows)."""
    proc = start([*TINY, "--steps_per_epoch", "200000000", "--out", "run"], tmp_path,
                 TRAIN_FAULT="step_pause=0.01")
    wait_for(lambda: (tmp_path / "run" / "metrics.jsonl").exists(), proc, what="training")
    rss_anon = next(int(ln.split()[1]) for ln in open(f"/proc/{proc.pid}/status")
                    if ln.startswith("RssAnon:")) * 1024
    assert rss_anon < 1.5 * 2**30, f"{rss_anon / 2**30:.1f} GiB"
    assert _stop(proc, signal.SIGTERM) == 75


# --- files and permissions -------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A real, tiny file system (tmpfs) that a test can fill; needs root."""
    require("mounting a tmpfs for a real full disk needs root" if os.geteuid() != 0 else None)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk):
    """Fill the file system to the last byte."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)


def test_a_full_disk_mid_run_stops_with_74_and_the_run_resumes(tiny_disk, tmp_path):
    """Checkpoints of an MLP fill 1 MB within a few steps: the write that does not fit is one
    line, exit 74, the earlier checkpoints are intact; with room again, --resume continues."""
    args = [*TINY, "--hidden", "128,128", "--ckpt_every", "1", "--keep_ckpts", "100",
            "--out", str(tiny_disk / "run")]
    r = train_cli(args, tmp_path)
    assert r.returncode == 74, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "cannot write the checkpoint at step" in line and "No space left" in line
    assert "earlier checkpoints are untouched" in line and "Traceback" not in r.stderr
    last = newest_ckpt(tiny_disk / "run")
    assert last >= 1
    for p in (tiny_disk / "run" / "ckpt").iterdir():
        if p.stem != f"ckpt-{last:08d}":
            p.unlink()  # make room: keep the newest checkpoint only
    r = train_cli(["--out", str(tiny_disk / "run"), "--resume", "--ckpt_every", "0",
                   "--keep_ckpts", "1"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"resuming from checkpoint step {last}" in r.stdout


def test_a_full_disk_at_resume_is_74_and_damages_nothing(tiny_disk, tmp_path):
    run = tiny_disk / "run"
    assert train_cli([*TINY, "--out", str(run)], tmp_path).returncode == 0
    before = snapshot(run)
    fill(tiny_disk)
    r = train_cli(["--out", str(run), "--resume", "--epochs", "2"], tmp_path)
    assert r.returncode == 74, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "No space left on device" in lines[-1]
    assert "Traceback" not in r.stderr
    assert snapshot(run) == before
    assert not [p for p in run.rglob(".*tmp*")]  # no temporary file left behind


def test_an_unwritable_or_impossible_out_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    r = train_cli([*TINY, "--out", "file/run"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --out file/run: cannot write there (Not a directory)"]
    r = train_cli([*TINY, "--out", "x" * 300], tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == \
        f"error: --out {'x' * 300}: cannot write there (File name too long)"


def test_an_out_without_permission_is_one_line(tmp_path):
    require(None if os.geteuid() == 0 and shutil.which("setpriv") else
            "a real permission test needs root and setpriv (util-linux)")
    (tmp_path / "ro").mkdir(mode=0o555)
    # Root without the capability to override file permissions: a real permission denial.
    drop = "-dac_override,-dac_read_search"
    r = subprocess.run(["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}",
                        sys.executable, "-m", "train", *TINY, "--out", "ro/run"],
                       cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "error: --out ro/run: cannot write there (Permission denied)"


def test_a_closed_stdout_does_not_kill_the_run(tmp_path):
    """`python -m train | head -1`: the console goes quiet, training goes on."""
    proc = subprocess.Popen([sys.executable, "-m", "train", *TINY, "--out", "run"], cwd=tmp_path,
                            env=clean_env(TRAIN_FAULT="step_pause=0.05"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()  # the first line, then the reader goes away
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert (tmp_path / "run" / "summary.json").exists()


MINDSPORE_ERROR = """
import numpy as np, mindspore as ms
from mindspore import Tensor, nn
from train.__main__ import _first_line
ms.set_device("CPU")
net = ms.amp.auto_mixed_precision(nn.Dense(2, 1), "O2", ms.bfloat16)
try:
    net(Tensor(np.ones((2, 2), np.float32))).asnumpy()
except Exception as e:
    print(_first_line(e))
"""


def test_a_mindspore_error_is_summarised_by_its_informative_line(tmp_path):
    """MindSpore's messages open with rulers and section titles; the summary must be the line
    that says what failed: a real MindSpore error (bfloat16 MatMul on CPU, in a process of its
    own: bfloat16 casting leaves global state behind) and the shape of a kernel error."""
    from train.__main__ import _first_line

    r = subprocess.run([sys.executable, "-c", MINDSPORE_ERROR], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True)
    line = r.stdout.strip().splitlines()[-1]
    assert "MatMul" in line and not line.startswith("-"), r.stdout + r.stderr
    ms_style = ("\n----------------------------------------------------\n- Kernel error:\n"
                "----------------------------------------------------\n"
                "Launch kernel failed: AllReduce\n\n- C++ Call Stack:\nmindspore/x.cc:1")
    assert _first_line(RuntimeError(ms_style)) == "Launch kernel failed: AllReduce"
