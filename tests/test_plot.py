"""train/plot.py: PNGs drawn from a run folder."""

import sys

import pytest
from helpers import TINY, run, train_cli
from PIL import Image


def test_plot_writes_loss_and_fit_pngs_into_the_run(tmp_path):
    assert train_cli([*TINY, "--out", "run"], tmp_path).returncode == 0
    r = run([sys.executable, "-m", "train.plot", "run"], tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("loss.png", "fit.png"):
        with Image.open(tmp_path / "run" / name) as im:
            im.verify()
        with Image.open(tmp_path / "run" / name) as im:
            assert im.format == "PNG" and im.size[0] >= 500 and im.size[1] >= 300


def test_plot_reads_a_killed_runs_torn_metrics(tmp_path):
    assert train_cli([*TINY, "--out", "run"], tmp_path).returncode == 0
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "step": 2')  # what a kill mid-write leaves
    r = run([sys.executable, "-m", "train.plot", "run"], tmp_path)
    assert r.returncode == 0, r.stderr


def test_plot_skips_the_fit_for_several_features(tmp_path):
    assert train_cli([*TINY, "--features", "2", "--out", "run"], tmp_path).returncode == 0
    r = run([sys.executable, "-m", "train.plot", "run"], tmp_path)
    assert r.returncode == 0 and (tmp_path / "run" / "loss.png").exists()
    assert not (tmp_path / "run" / "fit.png").exists()


def test_plot_refuses_a_folder_that_is_not_a_run(tmp_path):
    r = run([sys.executable, "-m", "train.plot", str(tmp_path)], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path} is not a run folder (no config.yaml and " \
                               "metrics.jsonl)"


@pytest.mark.parametrize("damage", ["summary", "config", "flag"])
def test_plot_refuses_malformed_runs_in_one_line(tmp_path, damage):
    assert train_cli([*TINY, "--out", "run"], tmp_path).returncode == 0
    args = ["run"]
    if damage == "summary":
        (tmp_path / "run" / "summary.json").write_text('{"w": [1.0')
    elif damage == "config":
        (tmp_path / "run" / "config.yaml").write_text("lr: [\n")
    else:
        args = ["--dry_run", "run"]
    r = run([sys.executable, "-m", "train.plot", *args], tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
