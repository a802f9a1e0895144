"""train/compare.py: Huber is robust to outliers where MSE is not, shown on a small run."""

import json
import sys

import pytest
from helpers import run, shadowing_train_py
from PIL import Image

pytestmark = pytest.mark.integration  # every test here starts a process

SMALL = ["--epochs", "2", "--steps_per_epoch", "100", "--batch_size", "256", "--eval_size", "8192"]


def test_huber_beats_mse_on_contaminated_data(tmp_path):
    """One run's final parameters carry the noise of its last batches, so a single small run can
    land MSE close to the truth by luck; the claim is about the typical run: mean error over
    three seeds (each run is deterministic)."""
    errors = {"huber": [], "mse": []}
    clean = {"huber": 0.0, "mse": 0.0}
    for seed in (0, 1, 2):
        out = f"cmp{seed}"
        r = run([sys.executable, "-m", "train.compare", "--out", out, "--seed", str(seed), *SMALL],
                tmp_path)
        assert r.returncode == 0, r.stderr
        res = json.loads((tmp_path / out / "compare.json").read_text())
        assert res.keys() == {"huber", "mse"}
        for loss, v in res.items():
            errors[loss].append((abs(v["w"][0] - 2), abs(v["b"] - 3)))
            clean[loss] += v["eval_loss"]  # MSE on clean held-out rows
    # Both fits are finished at their optimum: MSE's is off by its outliers' variance only
    # (|b - 3| ~0.05), which the clean MSE shows as ~0.0025 over the noise's 1.
    assert clean["huber"] < clean["mse"]
    huber = [sum(e[i] for e in errors["huber"]) / 3 for i in (0, 1)]
    mse = [sum(e[i] for e in errors["mse"]) / 3 for i in (0, 1)]
    assert huber[0] < 0.05 and huber[1] < 0.05
    assert huber[0] * 3 < mse[0] and huber[1] * 3 < mse[1]  # clearly below, on w and on b
    assert "huber" in r.stdout and "mse" in r.stdout and "|b - true|" in r.stdout
    with Image.open(tmp_path / "cmp0" / "compare.png") as im:
        assert im.format == "PNG" and im.size[0] >= 800
    assert (tmp_path / "cmp0" / "huber" / "fit.png").exists()


@pytest.mark.parametrize("flag", ["--loss", "--dry_run", "--resume"])
def test_compare_decides_the_runs_itself(tmp_path, flag):
    r = run([sys.executable, "-m", "train.compare", flag] + (["mse"] if flag == "--loss" else []),
            tmp_path)
    assert r.returncode == 2 and f"error: {flag} is not a compare option" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_config_file_overrides_compares_defaults(tmp_path):
    """(With two features: no fitted line to draw, and it says so rather than claim a PNG.)
    From a folder holding a train.py of yours, started as `msdp compare` starts (`-P`: the
    working folder is not on the import path): its two runs are the package's trainer too."""
    (tmp_path / "c.yaml").write_text("outlier_fraction: 0.05\nfeatures: 2\n")
    shadowing_train_py(tmp_path)
    r = run([sys.executable, "-P", "-m", "train.compare", "--config", "c.yaml", "--out", "cmp",
             "--epochs", "1", "--steps_per_epoch", "20", "--eval_size", "256"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "5% of rows with outliers" in r.stdout
    assert not (tmp_path / "cmp" / "compare.png").exists() and "compare.png" not in \
        r.stdout.strip().splitlines()[-1] and (tmp_path / "cmp" / "compare.json").exists()
