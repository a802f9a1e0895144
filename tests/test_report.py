"""Automatic values for a file (train/plan.py, pipeline/files.py) and what a run reports
(train/report.py, train/converge.py): defaults that reach the optimum, from a hundred rows to a
hundred thousand, checked against SciPy's minimiser of the same objective; a run that did not
converge, or does worse than predicting the mean, says so and still exits 0."""

import json

import numpy as np
import pytest
import yaml
from helpers import DIABETES, TINY, finished_run, huber, table, train_cli
from scipy.optimize import minimize

from train.config import Config
from train.options import load_yaml
from train.plan import open_source

pytestmark = pytest.mark.integration  # every test here starts a process


def objective_gap(run_dir):
    """(the run's training objective - SciPy's optimum of it) / the optimum, and the largest
    coefficient error in standardized units, in the units the model trained in, on the same
    training rows."""
    cfg = Config(**load_yaml(str(run_dir / "config.yaml")))
    source = open_source(cfg)
    x, y = (np.concatenate(a).astype(np.float64) for a in zip(*source.objective_rows()))
    d = source.loss_delta(cfg.delta)

    def loss(p):
        return huber(p, x, y, d)

    best = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="BFGS",
                    options={"gtol": 1e-13}).x
    s = json.loads((run_dir / "summary.json").read_text())
    got = np.array([*s["w_standardized"], s["b_standardized"]])
    error = float(np.abs(got - best).max())  # (x and y standardized, the means 0)
    return (loss(got)[0] - loss(best)[0]) / loss(best)[0], error, s


@pytest.mark.parametrize("rows", [100, 100_000])
def test_defaults_reach_the_optimum(tmp_path, rows):
    if rows == 100:
        path = tmp_path / "small.csv"
        a = table(rows, features=3, seed=4)
        path.write_text("a,b,c,y\n" + "".join(",".join(f"{v:.6f}" for v in r) + "\n" for r in a))
    else:
        path = tmp_path / "big.npy"
        np.save(path, table(rows, features=5, seed=5).astype(np.float32))
    run_dir = finished_run(tmp_path, ["--data", str(path), "--quiet"])
    gap, error, s = objective_gap(run_dir)
    assert s["converged"] is True and s["convergence"]["distance"] <= 1e-4
    assert error <= 1e-5 and gap <= 1e-9, (error, gap)  # SciPy agrees: at the optimum
    assert s["finish"]["method"] == "newton" and s["finish"]["at_step"] == s["steps"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["init"] == "least_squares" and saved["lr"] > 0  # recorded, concrete


def test_the_diabetes_table_with_defaults_names_its_coefficients(tmp_path):
    r = train_cli(["--data", str(DIABETES), "--out", "dia", "--quiet"], tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # converged: nothing to warn about
    gap, error, s = objective_gap(tmp_path / "dia")
    assert gap <= 1e-9 and error <= 1e-5
    names = open(DIABETES).readline().strip().split(",")
    assert s["features"] == names[:-1] and list(s["coefficients"]) == names[:-1]
    assert s["eval_mse"] < s["baseline"]["eval_mse_predicting_mean"]
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("learned target = ") and "·bmi" in line and "data's units" in line
    assert "; converged (" in line
    assert "chosen from the data" in r.stdout  # the automatic values are shown


def test_a_run_that_did_not_converge_says_so_and_its_hint_works_when_followed_once(tmp_path):
    """5 steps of batch 256 from random weights on 398 rows, without the finish: not converged,
    worse than the mean; the hint it prints, followed once, ends at the optimum."""
    r = train_cli(["--data", str(DIABETES), "--epochs", "5", "--batch_size", "256", "--lr",
                   "0.01", "--init", "random", "--finish", "none", "--out", "bad", "--quiet"],
                  tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2, r.stderr
    assert warnings[0].startswith("warning: not converged: a coefficient is still ")
    assert warnings[0].endswith("finish it there: --resume --out bad --finish newton")
    assert "is worse than predicting the training mean" in warnings[1]
    s = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert s["converged"] is False and s["convergence"]["distance"] > 0.1
    assert s["finish"] == {"method": "none", "reason": "--finish none"}
    assert "NOT converged" in r.stdout.strip().splitlines()[-1]
    again = train_cli(warnings[0].split("there: ")[1].split(), tmp_path)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    steps = s["steps"]
    gap, error, s = objective_gap(tmp_path / "bad")
    assert s["converged"] is True and error <= 1e-5 and s["steps"] == steps  # no step added
    assert yaml.safe_load((tmp_path / "bad" / "config.yaml").read_text())["finish"] == "newton"
    last = f"ckpt-{steps:08d}"  # written again, under the step's other name: one pair left
    assert {p.name for p in (tmp_path / "bad" / "ckpt").iterdir() if last in p.name} == {
        f"{last}.json", f"{last}.1.safetensors"}
    assert "; converged (coefficients within " in again.stdout


def test_the_synthetic_quick_start_reports_convergence(tmp_path):
    run_dir = finished_run(tmp_path, TINY)
    s = json.loads((run_dir / "summary.json").read_text())
    assert set(s["convergence"]) >= {"criterion", "distance", "objective", "excess",
                                     "relative_excess", "tol", "rows", "converged"}
    assert s["features"] == ["x0"] and s["target"] == "y"
