"""A team's own network, loss and data (train/user.py, train/network.py, pipeline/user.py),
through both doors: `--model/--loss/--data MODULE:NAME` and a script of `train.main` run by a
launcher (SCRIPT=job.py). The network (tests/user/mynet.py: two hidden layers with LayerNorm),
the pinball loss and the source are the tests' own, not the package's.

One reference run (one process, batch 64, AdamW with weight decay) serves several checks:
2 msrun ranks of batch 32 reproduce it, a SIGKILLed run resumed from the command line ends on
it bitwise, and predict/export use it.
"""

import json
import os
import shutil
import signal
import sys

import numpy as np
import pytest
from helpers import (
    FAST_FAIL,
    LAUNCH,
    REPO,
    handles_signals,
    leftovers,
    newest_ckpt,
    run,
    start,
    wait_for,
)

pytestmark = pytest.mark.integration  # every test here starts a process

USER = REPO / "tests" / "user"
ARGS = ["--epochs", "10", "--ckpt_every", "50", "--log_every", "20", "--optimizer", "adamw",
        "--weight_decay", "0.01", "--lr", "0.003", "--quiet"]  # 28 steps an epoch: 280 steps
NET = ["--model", "mynet:Net", "--loss", "mynet:Pinball", "--data", "mynet:Rows"]


def team_folder(tmp_path):
    """A folder holding the team's module and job script (found from the launch folder)."""
    for name in ("mynet.py", "job.py", "broken.py"):
        shutil.copy(USER / name, tmp_path / name)
    return tmp_path


def line_of(text):
    """The line of tests/user/broken.py that holds `text` (where a user's error is raised)."""
    lines = (USER / "broken.py").read_text().splitlines()
    return next(i for i, ln in enumerate(lines, 1) if text in ln)


def tensors(run_dir):
    """The newest checkpoint's tensors."""
    from safetensors.numpy import load_file

    step = newest_ckpt(run_dir)
    return load_file(run_dir / "ckpt" / f"ckpt-{step:08d}.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`python job.py` (train.main with the team's objects), one process, batch 64."""
    cwd = team_folder(tmp_path_factory.mktemp("team"))
    r = run([sys.executable, "job.py", *ARGS, "--batch_size", "64", "--out", "ref"], cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    return cwd, cwd / "ref"


def test_the_run_records_import_paths_and_reports_what_applies(reference):
    cwd, ref = reference
    saved = (ref / "config.yaml").read_text()
    for line in ("model: mynet:Net", "loss: mynet:Pinball", "data: mynet:Rows",
                 "optimizer: adamw", "weight_decay: 0.01"):
        assert line in saved.splitlines()
    s = json.loads((ref / "summary.json").read_text())
    assert s["steps"] == 280 and s["model"] == "mynet:Net"
    assert s["eval_loss"] is not None and s["eval_loss"] < 0.2  # pinball on held-out rows
    assert s["converged"] is None and "built-in" in s["convergence"]["reason"]
    assert s["w"] is None and s["data"]["x"] == [[8], "float32"]
    r = run([sys.executable, "-m", "train", "--config", "ref/config.yaml", "--out", "again",
             "--dry_run"], cwd)  # the saved config is fed back as is
    assert r.returncode == 0 and "data: mynet:Rows (2048 rows" in r.stdout, r.stderr


def test_two_msrun_ranks_of_32_equal_one_process_of_64(reference, tmp_path, port):
    cwd, ref = reference
    folder = team_folder(tmp_path)
    r = run(["bash", str(LAUNCH / "run_msrun.sh"), *ARGS, "--batch_size", "32", "--out", "two"],
            folder, NPROC="2", MASTER_PORT=str(port), LOG_DIR=str(folder / "logs"),
            SCRIPT="job.py", **FAST_FAIL)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained mynet:Net" in r.stdout
    a, b = tensors(ref), tensors(folder / "two")
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a
                if not k.startswith(("adam_m.", "adam_v.")))
    assert worst <= 1e-5
    s = json.loads((folder / "two" / "summary.json").read_text())
    assert s["world_size"] == 2 and s["launch"] == "msrun" and s["global_batch_size"] == 64
    assert leftovers() == []


def test_a_sigkilled_run_resumes_bitwise_from_the_command_line(reference, tmp_path):
    cwd, ref = reference
    folder = team_folder(tmp_path)
    proc = start([*ARGS, "--batch_size", "64", "--out", "k"], folder,
                 cmd=[sys.executable, "job.py"], TRAIN_FAULT="step_pause=0.02")
    wait_for(lambda: newest_ckpt(folder / "k") >= 100, proc, what="checkpoint 100")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The script's objects were recorded as mynet:*: the trainer's own command line resumes.
    r = run([sys.executable, "-m", "train", "--resume", "--out", "k"], folder)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = tensors(ref), tensors(folder / "k")
    assert a.keys() == b.keys() and any(k.startswith("adam_m.") for k in a)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)  # bitwise, AdamW's moments too
    s = json.loads((folder / "k" / "summary.json").read_text())
    assert s["segments"] == 2


@pytest.mark.parametrize("change, named", [
    (["--model_args", "{width: 8}"], "model_args"),
    (["--loss", "huber"], "loss"),
    (["--data", "broken:Failing"], "data"),
    (["--optimizer", "sgd"], "optimizer"),
])
def test_resuming_with_other_code_is_refused_naming_it(reference, change, named):
    cwd, ref = reference
    before = sorted(p.name for p in (ref / "ckpt").iterdir())
    r = run([sys.executable, "-m", "train", "--resume", "--out", "ref", *change], cwd)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f" {named} " in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in (ref / "ckpt").iterdir()) == before


def test_predict_and_export_use_the_network_as_trained(reference, tmp_path):
    cwd, ref = reference
    sys.path.insert(0, str(USER))
    try:
        from mynet import Rows
    finally:
        sys.path.remove(str(USER))
    np.save(tmp_path / "x.npy", Rows().x[:50])
    r = run([sys.executable, "-m", "train.predict", str(ref), "--data", "x.npy", "--out",
             "p.npy"], tmp_path, PYTHONPATH=str(cwd))
    assert r.returncode == 0, r.stderr
    pred = np.load(tmp_path / "p.npy")
    assert pred.shape == (50, 1)  # one prediction row per input row
    r = run([sys.executable, "-m", "train.export", str(ref), "--out", "m.mindir"], tmp_path,
            PYTHONPATH=f"{cwd}{os.pathsep}{REPO}")  # this checkout's train, not an installed one
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.mindir.json").read_text())["input"].startswith(
        "float32 (rows, 8)")
    assert ":[-1,8]\ndynamic_dims=" in (tmp_path / "m.mindir.lite.ini").read_text()
    code = ("import mindspore as ms, numpy as np; from mindspore import nn; "
            "ms.set_device('CPU'); g = nn.GraphCell(ms.load('m.mindir')); "
            "x = np.load('x.npy'); print(np.abs(g(ms.Tensor(x)).asnumpy() - np.load('p.npy'))"
            ".max())")
    r = run([sys.executable, "-c", code], tmp_path)
    assert r.returncode == 0 and float(r.stdout.split()[-1]) == 0.0, r.stderr[-1000:]
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    r = run([sys.executable, "-m", "train.predict", str(ref), "--data", "bad.npy", "--out",
             "q.npy"], tmp_path, PYTHONPATH=str(cwd))
    assert r.returncode == 2 and "(rows, 8) float32" in r.stderr
    assert not (tmp_path / "q.npy").exists()


def test_amp_loss_scaling_clipping_accumulation_and_skips_on_a_user_network(tmp_path):
    """O1 with dynamic loss scaling, clipping and accumulation: an overflow is skipped and
    halves the scale; without a scaler a NaN step is skipped (--skip_nonfinite), the guard
    intact, and the run finishes with finite parameters."""
    folder = team_folder(tmp_path)
    common = [*NET, "--epochs", "2", "--batch_size", "16", "--accum_steps", "2", "--clip_norm",
              "1.0", "--quiet", "--log_every", "4"]
    r = run([sys.executable, "-m", "train", *common, "--amp_level", "O1", "--loss_scale",
             "dynamic", "--out", "amp"], folder, TRAIN_FAULT="overflow@3")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((folder / "amp" / "summary.json").read_text())
    assert s["overflow_skips"] == 1 and s["skipped_nonfinite"] == []
    scales = [m["loss_scale"] for m in map(json.loads, (folder / "amp" / "metrics.jsonl")
                                           .read_text().splitlines()) if "loss_scale" in m]
    assert scales[0] == 2.0 ** 15  # halved once
    r = run([sys.executable, "-m", "train", *common, "--optimizer", "adamw", "--skip_nonfinite",
             "1", "--out", "nan"], folder, TRAIN_FAULT="nan@3")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((folder / "nan" / "summary.json").read_text())
    assert s["skipped_nonfinite"] == [3] and np.isfinite(s["eval_loss"])


def test_train_fit_returns_the_summary_and_raises_with_the_exit_code(tmp_path):
    folder = team_folder(tmp_path)
    shutil.copy(USER / "fit_job.py", folder / "fit_job.py")
    ok = {"epochs": 1, "out": "f", "quiet": True, "model_args": {"width": 8}}
    r = run([sys.executable, "fit_job.py", json.dumps(ok)], folder)
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["steps"] == 28 and got["converged"] is None and got["eval_loss"] > 0
    assert "model_args:\n  width: 8" in (folder / "f" / "config.yaml").read_text()
    r = run([sys.executable, "fit_job.py", json.dumps({**ok, "out": "g", "epochs": 0})], folder)
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["exit_code"] == 2 and "epochs" in got["message"]
    r = run([sys.executable, "fit_job.py", json.dumps({**ok, "out": "f"})], folder)
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["exit_code"] == 2 and got["message"].startswith("error: ")  # f holds a run


@pytest.mark.parametrize("args, code, says", [
    (["--model", "nope:Net"], 2, "no module named 'nope'"),
    (["--model", "mynet:Nope"], 2, "mynet has no 'Nope'"),
    (["--model", "broken:not_a_cell"], 2, "returned a dict, not an mindspore.nn.Cell"),
    (["--model", "mynet:Net", "--loss", "broken:VectorLoss"], 2, "not a scalar"),
    (["--model", "mynet:Net", "--data", "broken:Empty"], 2, "its __len__ is 0"),
    (["--model", "mynet:Net", "--model_args", "{depth: 2}"], 2, "takes no argument 'depth'"),
    (["--model", "broken:raises"], 1, f"broken.py:{line_of('[1, 2][width]')} in raises"),
])
def test_bad_user_code_is_one_line(tmp_path, args, code, says):
    folder = team_folder(tmp_path)
    base = ["--data", "mynet:Rows", "--loss", "mynet:Pinball", "--epochs", "1", "--quiet"]
    r = run([sys.executable, "-m", "train", *base, *args, "--out", "o"], folder)
    assert r.returncode == code, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and says in last, r.stderr[-2000:]
    if code == 2:
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1 or \
            "rank 0 of 1" in last  # found once training started: the console's other lines


def test_a_bad_row_found_mid_run_stops_with_the_checkpoints_intact(tmp_path):
    folder = team_folder(tmp_path)
    args = [*NET[:4], "--data", "broken:Ragged", "--epochs", "6", "--ckpt_every", "10",
            "--quiet", "--out", "o"]
    r = run([sys.executable, "-m", "train", *args], folder)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        "error: rank 0 of 1: --data broken:Ragged: row 1500: x is float32[9], row 0's is "
        "float32[8] (every row must have row 0's shape and dtype)")
    assert newest_ckpt(folder / "o") == 60  # found at step 64: what was saved stays
    r = run([sys.executable, "-m", "train", *args, "--data", "broken:Failing", "--out", "p"],
            folder)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(
        "failed in your code: broken:Failing[1500] raised KeyError: \"no row 1500 in the "
        f"user's store\" ({folder}/broken.py:{line_of('raise KeyError')} in __getitem__)")
    assert "Traceback" in (folder / "p" / "logs" / "rank_0.log").read_text()  # yours to read


def test_a_stop_signal_to_a_user_script_checkpoints_and_exits_75(tmp_path):
    folder = team_folder(tmp_path)
    proc = start([*ARGS, "--out", "s"], folder, cmd=["bash", str(LAUNCH / "run_local.sh")],
                 SCRIPT="job.py", TRAIN_FAULT="step_pause=0.02")
    wait_for(lambda: newest_ckpt(folder / "s") >= 50, proc, what="checkpoint 50")
    assert handles_signals(proc.pid)  # run_local.sh execs the script: one process
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 75
    assert "stopped: SIGTERM: stopped at step" in proc.stderr.read()
    assert leftovers() == []


def test_dropout_drops_while_training(tmp_path):
    """The train step runs in training mode: with p = 0.2 the run differs from p = 0 (without
    training mode both are the same graph, bitwise). What holds for dropout: docs/network.md."""
    folder = team_folder(tmp_path)
    shutil.copy(USER / "dropnet.py", folder / "dropnet.py")
    args = ["--model", "dropnet:DropNet", *NET[2:], "--epochs", "1", "--quiet"]
    for name, extra in (("on", []), ("off", ["--model_args", "{p: 0.0}"])):
        r = run([sys.executable, "-m", "train", *args, *extra, "--out", name], folder)
        assert r.returncode == 0, r.stderr[-2000:]
    on, off = tensors(folder / "on"), tensors(folder / "off")
    assert any(on[k].tobytes() != off[k].tobytes() for k in on)


def test_a_user_network_on_a_file_predicts_by_column_name(tmp_path):
    """A network of yours on a CSV: standardized like the built-in model, predicted by column
    name in the target's units, exported with the standardization built in."""
    from helpers import DIABETES

    folder = team_folder(tmp_path)
    r = run([sys.executable, "-m", "train", "--data", str(DIABETES), "--model", "mynet:Net",
             "--model_args", "{features: 10}", "--loss", "mynet:Pinball", "--epochs", "3",
             "--quiet", "--out", "c"], folder)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "init: random" in (folder / "c" / "config.yaml").read_text()
    r = run([sys.executable, "-m", "train.predict", "c", "--data", str(DIABETES), "--json"],
            folder)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    assert got["rows"] == 442 and got["r2"] > 0 and "mynet:Pinball_loss" not in got
    r = run([sys.executable, "-m", "train.export", "c", "--out", "c.mindir"], folder)
    assert r.returncode == 0 and "age, sex, bmi" in r.stdout, r.stderr[-2000:]
