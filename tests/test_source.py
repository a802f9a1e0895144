"""Training on a file of yours, through the real command line and launchers: N ranks equal one
process (linear and MLP), exact resume mid-epoch, a changed file refused, the fit matches an
independent solver, a file larger than memory trains in bounded memory, the tools read it."""

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
    final_params,
    huber,
    leftovers,
    newest_ckpt,
    require,
    run,
    start,
    table,
    train_cli,
    wait_for,
)
from PIL import Image

from train.bench.jobs import big_npy
from train.verify import final_parameters

pytestmark = pytest.mark.integration  # every test here starts a process


@pytest.fixture(scope="module")
def sensors(tmp_path_factory):
    """2,000 rows, 2 features, 10% outliers, as a CSV (header, a named target)."""
    d = tmp_path_factory.mktemp("data")
    rows = table(2000)
    with open(d / "sensors.csv", "w") as f:
        f.write("temp,pressure,power\n")
        for r in rows:
            f.write(",".join(f"{v:.6f}" for v in r) + "\n")
    np.save(d / "sensors.npy", rows.astype(np.float32))
    return d


JOB = ["--epochs", "2", "--log_every", "10", "--quiet", "--lr", "0.05"]


def same_parameters(a, b, tol=1e-5):
    pa, pb = final_parameters(a), final_parameters(b)
    assert pa.keys() == pb.keys()
    return max(float(np.abs(pa[k] - pb[k]).max()) for k in pa) <= tol


@pytest.mark.parametrize("launcher,data,model", [("msrun", "sensors.csv", ["--hidden", "8,8"]),
                                                  ("mpirun", "sensors.npy", [])])
def test_n_ranks_on_a_file_equal_one_process(sensors, tmp_path, port, launcher, data, model):
    args = [*JOB, "--data", str(sensors / data), *model]
    r = train_cli([*args, "--batch_size", "32", "--out", "one"], tmp_path)
    assert r.returncode == 0, r.stderr
    script = "run_msrun.sh" if launcher == "msrun" else "run_mpirun.sh"
    r = run(["bash", str(LAUNCH / script), *args, "--batch_size", "16", "--out", "two"],
            tmp_path, NPROC="2", MASTER_PORT=str(port), LOG_DIR=str(tmp_path / "logs"), **FAST_FAIL)
    assert r.returncode == 0, r.stderr[-2000:]
    assert same_parameters(tmp_path / "one", tmp_path / "two")  # in standardized units
    s = final_params(tmp_path / "two")[1] if not model else json.loads(
        (tmp_path / "two" / "summary.json").read_text())
    assert s["data"]["dropped_last_batch_rows"] == 1800 - 56 * 32
    assert leftovers() == []


def test_a_run_on_a_file_resumes_mid_epoch_exactly(sensors, tmp_path):
    args = [*JOB, "--data", str(sensors / "sensors.csv"), "--hidden", "8", "--batch_size", "16",
            "--ckpt_every", "7"]
    r = train_cli([*args, "--out", "ref"], tmp_path)
    assert r.returncode == 0, r.stderr
    proc = start([*args, "--out", "run"], tmp_path, TRAIN_FAULT="step_pause=0.02")
    wait_for(lambda: newest_ckpt(tmp_path / "run") >= 21, proc, what="three checkpoints")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    r = train_cli(["--out", "run", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    ref, got = final_parameters(tmp_path / "ref"), final_parameters(tmp_path / "run")
    assert all(np.array_equal(ref[k], got[k]) for k in ref)  # bitwise
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["w"] is None and summary["segments"] == 2  # an MLP has no w and b


def test_a_changed_file_or_data_option_is_refused_on_resume(sensors, tmp_path):
    data = tmp_path / "d.csv"
    shutil.copy(sensors / "sensors.csv", data)
    r = train_cli([*JOB, "--data", str(data), "--batch_size", "64", "--out", "run"], tmp_path)
    assert r.returncode == 0, r.stderr
    r = train_cli(["--out", "run", "--resume", "--standardize", "false"], tmp_path)
    assert r.returncode == 2 and "standardize True -> False" in r.stderr
    with open(data, "a") as f:
        f.write("1,2,3\n")
    r = train_cli(["--out", "run", "--resume", "--epochs", "3"], tmp_path)
    assert r.returncode == 2
    assert "cannot resume: the config differs from the checkpoint's in --data (" in r.stderr
    assert f"{data}, " in r.stderr and "{" not in r.stderr, r.stderr  # a file, never a dict


def test_the_linear_huber_fit_matches_scipys_minimiser(sensors, tmp_path):
    """The same Huber objective (delta in the target's units, every row), minimised by SciPy:
    the trained model agrees to 1e-3 relative in the data's units."""
    from scipy.optimize import minimize

    rows = np.load(sensors / "sensors.npy").astype(np.float64)
    x, y = rows[:, :-1], rows[:, -1]
    delta = 4.0
    ref = minimize(lambda p: huber(p, x, y[:, None], delta), np.zeros(3), jac=True,
                   method="BFGS", options={"gtol": 1e-10}).x
    r = train_cli(["--data", str(sensors / "sensors.npy"), "--delta", str(delta),
                   "--eval_fraction", "0", "--batch_size", "100", "--epochs", "60",
                   "--lr", "0.1", "--quiet", "--out", "fit"], tmp_path)
    assert r.returncode == 0, r.stderr
    got, s = final_params(tmp_path / "fit")
    np.testing.assert_allclose(got, ref, rtol=1e-3)
    assert s["eval_loss"] is None  # no held-out rows asked for


def test_a_large_npy_trains_in_the_memory_of_a_synthetic_run(tmp_path):
    """A 1 GiB .npy is memory-mapped: the process's own memory (RssAnon; mapped file pages
    are page cache, RssFile) stays near a synthetic run's. (docs/data.md's figures are for a
    larger file; the test keeps to what the suite's time allows.)"""
    require("less than 3 GiB free for the 1 GiB test file"
            if shutil.disk_usage(tmp_path).free < 3 * (1 << 30) else None)
    big_npy(tmp_path / "big.npy", 1)

    def rss_anon(name, args):
        proc = start([*args, "--log_every", "5", "--quiet", "--out", name], tmp_path,
                     TRAIN_FAULT="step_pause=0.05")
        wait_for(lambda: (tmp_path / name / "metrics.jsonl").exists(), proc, timeout=300,
                 what="training")
        with open(f"/proc/{proc.pid}/status") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("RssAnon:"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 75
        return kb * 1024

    synthetic = rss_anon("synthetic", ["--epochs", "1", "--steps_per_epoch", "100000"])
    on_file = rss_anon("on_file", ["--data", str(tmp_path / "big.npy"), "--epochs", "1"])
    assert on_file < synthetic + 256 * 2**20, (on_file / 2**20, synthetic / 2**20)


def test_plot_and_compare_read_runs_on_files(sensors, tmp_path):
    one = tmp_path / "one.csv"
    with open(sensors / "sensors.csv") as f, open(one, "w") as g:
        for line in f:
            a, _, c = line.strip().split(",")
            g.write(f"{a},{c}\n")
    r = train_cli([*JOB, "--data", str(one), "--hidden", "16", "--out", "mlp"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trained an MLP (16)" in r.stdout
    r = run([sys.executable, "-m", "train.plot", "mlp"], tmp_path)
    assert r.returncode == 0 and (tmp_path / "mlp" / "fit.png").exists(), r.stderr
    assert (tmp_path / "mlp" / "predicted.png").exists()  # held-out predicted vs actual
    assert not (tmp_path / "mlp" / "coefficients.png").exists()  # an MLP has none
    r = run([sys.executable, "-m", "train.compare", "--out", "cmp", "--data", str(one),
             "--epochs", "1", "--batch_size", "64"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "held-out MSE" in r.stdout and "\ntemp " in r.stdout  # coefficients by name
    res = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert res.keys() == {"huber", "mse"} and len(res["huber"]["w"]) == 1
    assert list(res["huber"]["coefficients"]) == ["temp"]
    for png in ("compare.png", "huber/predicted.png", "huber/coefficients.png"):
        with Image.open(tmp_path / "cmp" / png) as im:
            assert im.format == "PNG" and im.size[0] >= 500
