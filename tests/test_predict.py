"""train/predict.py (and train/infer.py behind it): a trained run's predictions, in the data's
units, for the rows of a file matched by column name; metrics when the file holds the target;
every bad run folder or file is one line and exit 2."""

import csv
import json
import os
import shutil
import sys

import numpy as np
import pytest
from helpers import DIABETES, TINY, finished_run, put, run, write_csv

pytestmark = pytest.mark.integration  # every test here starts a process


def predict(cwd, *args):
    return run([sys.executable, "-m", "train.predict", *map(str, args)], cwd)


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    """The diabetes table with every automatic value (checkpoints every 20 steps)."""
    cwd = tmp_path_factory.mktemp("linear")
    return finished_run(cwd, ["--data", str(DIABETES), "--ckpt_every", "20", "--keep_ckpts",
                              "200", "--quiet"], "dia")


@pytest.fixture(scope="module")
def table():
    a = np.loadtxt(DIABETES, delimiter=",", skiprows=1)
    names = open(DIABETES).readline().strip().split(",")
    return a, names


def test_columns_are_matched_by_name_and_rows_keep_their_order(linear_run, table, tmp_path):
    a, names = table
    s = json.loads((linear_run / "summary.json").read_text())
    order = [9, 3, 10, 0, 5, 1, 2, 8, 4, 7, 6]  # shuffled, with the target in the middle
    path = write_csv(tmp_path / "rows.csv", [names[j] for j in order] + ["note"],
                     [[*r[order], 7] for r in a])
    r = predict(tmp_path, linear_run, "--data", path, "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    got = np.loadtxt(tmp_path / "p.csv", skiprows=1)
    assert (tmp_path / "p.csv").read_text().startswith("prediction\n")
    expected = s["b"] + a[:, :-1] @ np.array([s["coefficients"][n] for n in names[:-1]])
    np.testing.assert_allclose(got, expected, rtol=1e-4)  # the data's units, file order
    assert f"{path}: 442 rows with a target; huber loss" in r.stdout and "R² 0." in r.stdout


def test_metrics_are_those_of_the_predictions(linear_run, tmp_path):
    r = predict(tmp_path, linear_run, "--data", DIABETES, "--json", "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    y = np.loadtxt(DIABETES, delimiter=",", skiprows=1)[:, -1]
    pred = np.loadtxt(tmp_path / "p.csv", skiprows=1)
    e = pred - y
    c = np.clip(e, -m["delta"], m["delta"])
    assert m["rows"] == 442 and m["target"] == "target"
    assert m["mse"] == pytest.approx(np.mean(e * e)) and m["mae"] == pytest.approx(
        np.mean(np.abs(e)))
    assert m["huber_loss"] == pytest.approx(np.mean(c * (e - c / 2)))
    assert m["r2"] == pytest.approx(1 - np.sum(e * e) / np.sum((y - y.mean()) ** 2))


def test_without_out_the_predictions_go_to_stdout(linear_run, table, tmp_path):
    a, names = table
    path = write_csv(tmp_path / "x.csv", names[:-1], a[:5, :-1])
    r = predict(tmp_path, linear_run, "--data", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "prediction" and len(r.stdout.splitlines()) == 6
    r = predict(tmp_path, linear_run, "--data", path, "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["predictions"]) == 5


def test_other_columns_are_not_read_and_a_blank_target_is_a_row_without_a_label(
        linear_run, table, tmp_path):
    a, names = table
    rows = [[*r[:-1], "" if i % 2 else f"{r[-1]:g}", "free text, even #"]
            for i, r in enumerate(a[:10])]
    path = write_csv(tmp_path / "new.csv", [*names, "note"], rows)
    r = predict(tmp_path, linear_run, "--data", path, "--json", "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["predicted"] == 10 and m["rows"] == 5  # metrics over the 5 labelled rows
    assert len(np.loadtxt(tmp_path / "p.csv", skiprows=1)) == 10


def test_a_column_of_large_values_is_predicted_in_float64(tmp_path):
    """1e7 + a small signal trains (the cache stores it centred): predict centres it in
    float64 too, and export, whose graph takes raw float32, refuses the run."""
    rng = np.random.default_rng(3)
    u = rng.uniform(0, 1, 2000)
    path = write_csv(tmp_path / "off.csv", ["a", "y"],
                     np.c_[1e7 + u, 3 * u + rng.normal(0, 0.05, 2000)])
    run_dir = finished_run(tmp_path, ["--data", str(path), "--quiet"], "off")
    r = predict(tmp_path, run_dir, "--data", path, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["r2"] > 0.95, r.stdout + r.stderr
    e = run([sys.executable, "-m", "train.export", str(run_dir), "--out", "m.mindir"], tmp_path)
    assert e.returncode == 2 and "feature 'a' holds values too large" in e.stderr


def test_a_named_checkpoint_is_used(linear_run, tmp_path):
    a = predict(tmp_path, linear_run, "--data", DIABETES, "--json", "--ckpt", "20")
    b = predict(tmp_path, linear_run, "--data", DIABETES, "--json")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout)["checkpoint"] == "ckpt-00000020"
    assert json.loads(a.stdout)["mse"] != json.loads(b.stdout)["mse"]


def test_an_mlp_and_a_synthetic_run_predict_too(tmp_path):
    mlp = finished_run(tmp_path, ["--data", str(DIABETES), "--hidden", "8", "--epochs", "2",
                                  "--quiet"], "mlp")
    r = predict(tmp_path, mlp, "--data", DIABETES, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["rows"] == 442, r.stderr
    syn = finished_run(tmp_path, TINY, "syn")
    path = write_csv(tmp_path / "x.csv", ["x0"], [[-1.0], [0.0], [2.5]])
    r = predict(tmp_path, syn, "--data", path, "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    s = json.loads((syn / "summary.json").read_text())
    np.testing.assert_allclose(np.loadtxt(tmp_path / "p.csv", skiprows=1),
                               s["b"] + s["w"][0] * np.array([-1.0, 0.0, 2.5]), rtol=1e-5)


BAD = {
    "missing column": (lambda t, a, n: write_csv(t / "m.csv", n[1:], a[:3, 1:]), "",
                       "has no column 'age', a feature of this run"),
    "not a number": (lambda t, a, n: (t / "b.csv").write_text(",".join(n) + "\n" + "1," * 10
                                                             + "x\n") and t / "b.csv", "",
                     "line 2, column 11 ('target'): 'x' is not a number"),
    "wrong columns": (lambda t, a, n: np.save(t / "w.npy", a[:, :4]) or t / "w.npy", "",
                      "has 4 columns; this run's model takes 10 feature(s)"),
    "not a run": (lambda t, a, n: DIABETES, "not-a-run", "is not a run folder (no config.yaml)"),
    "no checkpoint": (lambda t, a, n: DIABETES, "no-ckpt", "holds no checkpoint yet"),
    "unknown checkpoint": (lambda t, a, n: DIABETES, "--ckpt=999", "has no checkpoint '999'"),
    "a checkpoint path": (lambda t, a, n: DIABETES, "--ckpt=../x/ckpt-00000020",
                          "a checkpoint of RUN_DIR, by step (100) or name (ckpt-00000100), not a "
                          "path"),
    "out is the input": (lambda t, a, n: write_csv(t / "in.csv", n, a[:3]), "--out=in.csv",
                         "--out in.csv is the file to predict"),
    "out is a pipe": (lambda t, a, n: os.mkfifo(t / "f") or write_csv(t / "i.csv", n, a[:3]),
                      "--out=f", "--out f exists and is not a regular file (a device, pipe"),
    "only a header": (lambda t, a, n: write_csv(t / "h.csv", n, []), "", "h.csv holds no rows"),
    "a feature that is NaN": (lambda t, a, n: write_csv(t / "nan.csv", n, [[float("nan")] * 11]),
                              "", "line 2, column 1 ('age') is missing ('nan')"),
    "a target that is inf": (lambda t, a, n: write_csv(t / "inf.csv", n, [[1.0] * 10 + ["inf"]]),
                             "", "line 2, column 11 ('target') is inf; a target must be"),
    "a row of empty cells": (lambda t, a, n: put(t / "e.csv", ",".join(n) + "\n" + "1," * 10
                                                 + "1\n" + "," * 10 + "\n"), "",
                             "line 3, column 1 ('age') is missing (''); a feature must be"),
    "a feature that is NA": (lambda t, a, n: write_csv(t / "na.csv", n, [[1.0] * 4 + ["NA"]
                                                                        + [1.0] * 6]), "",
                             "line 2, column 5 ('s1') is missing ('NA')"),
    "--keep on a .npy": (lambda t, a, n: np.save(t / "k.npy", a) or t / "k.npy", "--keep=id",
                         "--keep names CSV columns; k.npy is a .npy file"),
    "a --keep column the file lacks": (lambda t, a, n: write_csv(t / "k.csv", n, a[:3]),
                                       "--keep=id", "k.csv has no column 'id' for --keep"),
    "a column named twice": (lambda t, a, n: write_csv(t / "d.csv", [*n, "bmi"], [[1.0] * 12]),
                             "", "names column 'bmi' twice"),
    "an Arabic-Indic digit": (lambda t, a, n: write_csv(t / "ar.csv", n, [
        [1.0] * 3 + ["\u0663"] + [1.0] * 7]), "",
        "line 2, column 4 ('bp'): '\u0663' is not a number"),
    "a finite feature beyond float32": (lambda t, a, n: write_csv(t / "big.csv", n, [
        [1.0] * 2 + ["1e300"] + [1.0] * 8]), "",
        "line 2, column 3 ('bmi') is '1e300', beyond float32's range"),
    # (past the csv module's cell limit, which importing MindSpore raises to 10 MiB)
    "an unclosed quote": (lambda t, a, n: put(t / "q.csv", ",".join(n) + ",note\n" + "1," * 11
                                              + '"' + "x" * (16 << 20) + "\n"), "",
                          "q.csv: line 2: not readable as CSV (field larger than field limit"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(linear_run, table, tmp_path, case):
    make, which, message = BAD[case]
    path = make(tmp_path, *table)
    run_dir, extra = linear_run, []
    if which == "not-a-run":
        run_dir = tmp_path
    elif which == "no-ckpt":
        run_dir = tmp_path / "empty"
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text((linear_run / "config.yaml").read_text())
    elif which:
        extra = [which]
    r = predict(tmp_path, run_dir, "--data", path, *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


@pytest.fixture(scope="module")
def categorical_run(tmp_path_factory):
    """A table with an id, a date, free text and a categorical column, trained on two of its
    columns (color one-hot encoded, drop-first)."""
    cwd = tmp_path_factory.mktemp("cat")
    rng = np.random.default_rng(0)
    color = rng.choice(["red", "blue", "green"], 400)
    a = rng.normal(size=400)
    y = 2 * a + np.select([color == "green", color == "red"], [3.0, -1.0], 0.0) + 5
    write_csv(cwd / "t.csv", ["id", "date", "color", "a", "note", "y"],
              [[f"id{i}", f"2024-02-{i % 28 + 1:02d}", c, f"{v:.6f}", f"text, {i}", f"{t:.6f}"]
               for i, (c, v, t) in enumerate(zip(color, a, y))])
    return finished_run(cwd, ["--data", "t.csv", "--columns", "color,a", "--categorical",
                              "color", "--epochs", "2", "--quiet"], "cat")


def test_a_categorical_run_predicts_with_its_levels_and_keeps_columns(categorical_run, tmp_path):
    s = json.loads((categorical_run / "summary.json").read_text())
    assert s["features"] == ["color=green", "color=red", "a"]
    assert s["data"]["levels"] == {"color": ["blue", "green", "red"]}
    path = write_csv(tmp_path / "new.csv", ["note", "a", "id", "color", "date"],
                     [["x, y", 1.0, "k1", "blue", "2024-03-01"],
                      ["z", 0.5, "k,2", "red", "2024-03-02"],
                      ["", 0.0, "k3", "green", "NA"]])
    r = predict(tmp_path, categorical_run, "--data", path, "--out", tmp_path / "p.csv",
                "--keep", "id,date")
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "id,date,prediction" and lines[2].startswith('"k,2",2024-03-02,')
    got = [float(r[2]) for r in csv.reader(lines[1:])]
    c = s["coefficients"]
    expected = s["b"] + np.array([c["a"], c["color=red"] + 0.5 * c["a"], c["color=green"]])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    r = predict(tmp_path, categorical_run, "--data", path, "--json", "--keep", "id")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kept"] == {"id": ["k1", "k,2", "k3"]}


def test_a_level_the_run_did_not_learn_is_refused_naming_it(categorical_run, tmp_path):
    path = write_csv(tmp_path / "new.csv", ["color", "a"], [["red", 1], ["purple", 2]])
    r = predict(tmp_path, categorical_run, "--data", path)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: {path}: line 3, column 1 ('color'): level 'purple' was not in the training "
        "file (its levels: blue, green, red)")


def test_export_lists_the_expanded_columns_and_their_levels(categorical_run, tmp_path):
    r = run([sys.executable, "-m", "train.export", str(categorical_run), "--out",
             str(tmp_path / "m.mindir")], tmp_path)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "m.mindir.json").read_text())
    assert meta["features"] == ["color=green", "color=red", "a"]
    assert meta["categorical"] == {"color": {"levels": ["blue", "green", "red"],
                                             "reference": "blue",
                                             "columns": ["color=green", "color=red"]}}
    assert "drop-first" in meta["encoding"]


def test_a_resume_that_changes_the_columns_is_refused(categorical_run):
    r = run([sys.executable, "-m", "train", "--resume", "--out", str(categorical_run),
             "--epochs", "3", "--columns", "color", "--quiet"], categorical_run.parent)
    assert r.returncode != 0 and "columns" in r.stderr, r.stderr


def test_out_never_names_the_run_folder_or_an_input(linear_run, table, tmp_path):
    """A prediction written over config.yaml, a checkpoint, the lock or the training data
    would break the next predict or --resume: each is refused, and nothing changes."""
    a, names = table
    rows = write_csv(tmp_path / "rows.csv", names, a[:5])
    before = {p: p.read_bytes() for p in linear_run.rglob("*") if p.is_file()}
    newest = sorted((linear_run / "ckpt").glob("*.json"))[-1]
    for out in [linear_run / "config.yaml", newest, linear_run / ".lock",
                linear_run / "new.csv", linear_run / "ckpt", DIABETES, rows]:
        r = predict(tmp_path, linear_run, "--data", rows, "--out", out)
        assert r.returncode == 2 and r.stderr.startswith("error: --out "), (out, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in linear_run.rglob("*") if p.is_file()} == before
    assert not (linear_run / "new.csv").exists()


def test_the_library_module_says_where_its_commands_are(tmp_path):
    """`python -m train.infer` is no command: --help names the ones that are (exit 0); an
    argument is refused with the same line (exit 2)."""
    r = run([sys.executable, "-m", "train.infer", "--help"], tmp_path)
    assert r.returncode == 0 and "msdp predict RUN_DIR" in r.stdout
    r = run([sys.executable, "-m", "train.infer", "run1"], tmp_path)
    assert r.returncode == 2 and "msdp export RUN_DIR" in r.stderr


def test_an_npz_of_features_alone_is_rows_to_predict(linear_run, table, tmp_path):
    """The help says the target is optional: an .npz holding x alone predicts, no metrics."""
    a, _ = table
    np.savez(tmp_path / "x.npz", x=a[:7, :-1])
    r = predict(tmp_path, linear_run, "--data", "x.npz", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["predicted"] == 7 and "mse" not in got and len(got["predictions"]) == 7


def test_a_config_edited_after_training_is_refused_naming_the_edits(linear_run, table, tmp_path):
    """`standardize: false` changed the predictions and `loss: mse` the metric: config.yaml
    is checked against the checkpoint's record of the options a resume must not change, by
    predict and export alike."""
    run_dir = shutil.copytree(linear_run, tmp_path / "run")
    text = (run_dir / "config.yaml").read_text()
    edited = text.replace("standardize: true\n", "standardize: false\n").replace(
        "loss: huber\n", "loss: mse\n")
    assert edited.count("false") == text.count("false") + 1 and "loss: mse" in edited
    (run_dir / "config.yaml").write_text(edited)
    newest = max((run_dir / "ckpt").glob("ckpt-*.json")).stem
    line = (f"error: {run_dir}/config.yaml differs from what checkpoint {newest} was trained "
            "with, in loss ('huber' in the checkpoint, 'mse' in config.yaml), standardize "
            "(True in the checkpoint, False in config.yaml); it was edited after training: "
            "restore those values")
    r = predict(tmp_path, run_dir, "--data", DIABETES)
    assert r.returncode == 2 and r.stderr.strip() == line, r.stderr
    r = run([sys.executable, "-m", "train.export", str(run_dir), "--out", "m.mindir"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == line, r.stderr
    assert not list(tmp_path.glob("*mindir*"))


def test_a_damaged_newest_checkpoint_is_skipped_saying_so(linear_run, tmp_path):
    run_dir = shutil.copytree(linear_run, tmp_path / "run")
    (older, _), (newest, manifest) = _newest_two(run_dir)
    tensors = run_dir / "ckpt" / json.loads(manifest.read_text())["file"]
    raw = bytearray(tensors.read_bytes())
    raw[-3] ^= 0xFF  # one flipped bit in a weight
    tensors.write_bytes(bytes(raw))
    r = predict(tmp_path, run_dir, "--data", DIABETES, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["checkpoint"] == f"ckpt-{older:08d}"
    assert r.stderr.strip() == (f"warning: checkpoint {manifest.name} is unusable (SHA-256 "
                                f"mismatch (truncated or corrupt)); using the older "
                                f"ckpt-{older:08d}")


def _newest_two(run_dir):
    """((step, manifest) of the second newest checkpoint, and of the newest)."""
    found = sorted((int(p.stem[5:]), p) for p in (run_dir / "ckpt").glob("ckpt-*.json"))
    return found[-2], found[-1]


def test_a_checkpoint_rotated_away_as_it_is_read_is_looked_for_again(linear_run, tmp_path,
                                                                     monkeypatch):
    """A live run with --keep_ckpts 1 writes checkpoint M and removes N between predict's
    listing (N) and its read of N: the folder is listed again and M is used, with no warning
    (nothing was damaged). The race made deterministic: the first listing is the one taken
    just before M appeared, and N goes as it returns."""
    from train import checkpoint as ck
    from train.infer import load_run

    run_dir = tmp_path / "run"
    (run_dir / "ckpt").mkdir(parents=True)
    shutil.copy(linear_run / "config.yaml", run_dir)
    (n, _), (m, _) = _newest_two(linear_run)
    for step in (n, m):
        manifest = linear_run / "ckpt" / f"ckpt-{step:08d}.json"
        shutil.copy(manifest, run_dir / "ckpt")
        shutil.copy(linear_run / "ckpt" / json.loads(manifest.read_text())["file"],
                    run_dir / "ckpt")
    real, listings = ck.CheckpointDir.manifests, []

    def listing(self, warn=None):
        found = real(self, warn)
        listings.append(found)
        if len(listings) > 1:
            return found
        for p in (run_dir / "ckpt").glob(f"ckpt-{n:08d}*"):  # rotated away
            p.unlink()
        return [(s, p) for s, p in found if s == n]  # (listed before M was written)

    monkeypatch.setattr(ck.CheckpointDir, "manifests", listing)
    warned = []
    model = load_run(run_dir, warn=warned.append)
    assert model.checkpoint.name == f"ckpt-{m:08d}.json" and len(listings) == 2
    assert warned == []
