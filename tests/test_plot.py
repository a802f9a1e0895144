"""train/plot.py: PNGs drawn from a run folder; every file of it read as data from outside."""

import json
import shutil
import sys

import numpy as np
import pytest
from helpers import TINY, finished_run, run, train_cli, write_csv
from PIL import Image

pytestmark = pytest.mark.integration  # every test here starts a process


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished synthetic run (one feature); tests plot copies of it."""
    return finished_run(tmp_path_factory.mktemp("tiny"), [*TINY, "--quiet"])


def plot(cwd, *args):
    return run([sys.executable, "-m", "train.plot", *map(str, args)], cwd)


def test_plot_writes_loss_and_fit_pngs_into_the_run(tiny, tmp_path):
    """...replacing a symbolic link planted at loss.png, never writing through it."""
    shutil.copytree(tiny, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (tmp_path / "run" / "loss.png").symlink_to(victim)
    r = plot(tmp_path, "run")
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "mine" and not (tmp_path / "run" / "loss.png").is_symlink()
    for name in ("loss.png", "fit.png"):
        with Image.open(tmp_path / "run" / name) as im:
            im.verify()
        with Image.open(tmp_path / "run" / name) as im:
            assert im.format == "PNG" and im.size[0] >= 500 and im.size[1] >= 300


def test_plot_reads_a_killed_runs_torn_metrics(tiny, tmp_path):
    shutil.copytree(tiny, tmp_path / "run")
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "step": 2')  # what a kill mid-write leaves
    r = plot(tmp_path, "run")
    assert r.returncode == 0, r.stderr


def test_plot_skips_the_fit_for_several_features(tmp_path):
    assert train_cli([*TINY, "--features", "2", "--out", "run"], tmp_path).returncode == 0
    r = plot(tmp_path, "run")
    assert r.returncode == 0 and (tmp_path / "run" / "loss.png").exists()
    assert not (tmp_path / "run" / "fit.png").exists()


def test_plot_refuses_a_folder_that_is_not_a_run(tmp_path):
    r = plot(tmp_path, tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path} is not a run folder (no config.yaml and " \
                               "metrics.jsonl)"


def _summary(**changes):
    def edit(run_dir):
        s = json.loads((run_dir / "summary.json").read_text())
        (run_dir / "summary.json").write_text(json.dumps({**s, **changes}))
    return edit


def _append_metrics(run_dir):
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 25, "eval_loss": "0.5"}\n{"step": 30}\n')


def _huge_summary(run_dir):  # 300 MB (sparse): read no further than the bound
    with open(run_dir / "summary.json", "r+b") as f:
        f.truncate(300 << 20)


DAMAGE = {  # what is done to the run folder -> what the one line says
    "a torn summary": (lambda d: (d / "summary.json").write_text('{"w": [1.0'),
                       "summary.json: not readable JSON"),
    "a broken config": (lambda d: (d / "config.yaml").write_text("lr: [\n"),
                        "the run's config"),
    "a flag": (None, "msdp plot takes run folders only, not --dry_run"),
    "w for 2 features": (_summary(w=[2.0, 1.0]), "'w' is not 1 number(s), one per feature"),
    "w_standardized of 3": (_summary(w_standardized=[1.0, 2.0, 3.0]),
                            "'w_standardized' is not 1 number(s), one per feature"),
    "a curve of text": (_summary(curve={"x": [1, 2], "y": "abc"}),
                        "'curve' is not x and y, lists of numbers of one length"),
    "a curve that is a list": (_summary(curve=[1, 2]), "'curve' is not x and y"),
    "b as text": (_summary(b="3"), "'b' is not a number"),
    "an eval_loss of text": (_append_metrics, "metrics.jsonl: line "),
    "a 300 MB summary": (_huge_summary, "summary.json: larger than 16777216 bytes"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_plot_refuses_malformed_runs_in_one_line(tiny, tmp_path, damage):
    shutil.copytree(tiny, tmp_path / "run")
    edit, message = DAMAGE[damage]
    if edit:
        edit(tmp_path / "run")
    r = plot(tmp_path, *(["--dry_run"] if damage == "a flag" else []), "run")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "run" / "fit.png").exists()


def test_a_figure_that_cannot_be_written_is_one_line_and_74(tiny, tmp_path):
    shutil.copytree(tiny, tmp_path / "run")
    (tmp_path / "run" / "loss.png").mkdir()  # (a folder in its place: the rename fails)
    (tmp_path / "run" / "loss.png" / "keep").write_text("mine")
    r = plot(tmp_path, "run")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 74 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: cannot write into ") and "loss.png" in lines[0], r.stderr
    assert (tmp_path / "run" / "loss.png" / "keep").read_text() == "mine"


def test_plot_refuses_a_data_file_moved_emptied_or_made_constant(tmp_path):
    """A file run's figures read its data again: whatever became of the file, one line."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    data = write_csv(tmp_path / "d.csv", ["a", "y"], np.c_[x, 2 * x + rng.normal(size=300)])
    run_dir = finished_run(tmp_path, ["--data", str(data), "--epochs", "1", "--quiet"])
    original = data.read_bytes()
    for what, change in [("no such file", lambda: data.rename(tmp_path / "moved.csv")),
                         ("a CSV needs a header row", lambda: data.write_text("")),
                         ("has the same value in every training row",
                          lambda: data.write_text("a,y\n" + "1,1\n" * 50))]:
        change()
        r = plot(tmp_path, run_dir)
        assert r.returncode == 2 and r.stderr.strip().startswith(
            "error: the run's data cannot be drawn (") and what in r.stderr, r.stderr
        data.write_bytes(original)
