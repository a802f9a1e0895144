"""pipeline/files.py: every bad-data case through the one shared check (the launchers run the
same check in their pre-flight: one smoke test below), the order guarantee, the split, the
statistics and their cache, the units."""

import csv
import os

import numpy as np
import pytest
from conftest import LAUNCH, run

from pipeline import files
from pipeline.dataset import StepSource
from pipeline.files import DataError
from pipeline.source import open_source
from train.config import Config


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def table(n=1000, features=2, seed=0, outliers=0.1):
    """A sensor-like table: y = x·w + b + noise, some rows with large errors."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 100, (n, features))
    y = x @ np.linspace(1.5, -2, features) + 10 + rng.normal(0, 3, n)
    hit = rng.random(n) < outliers
    y[hit] += rng.choice([-1, 1], hit.sum()) * rng.uniform(50, 150, hit.sum())
    return np.concatenate([x, y[:, None]], axis=1)


def open_(path, world=1, **kw):
    cfg = Config(data=str(path), **{"batch_size": 16, **kw})
    return open_source(cfg, world), cfg


@pytest.fixture
def sensors(tmp_path):
    rows = table()
    return write_csv(tmp_path / "sensors.csv", ["temp", "pressure", "power"],
                     [[f"{v:.6f}" for v in r] for r in rows]), rows


def test_csv_npy_npz_and_mindrecord_give_the_same_table(tmp_path, sensors):
    from pipeline.convert import convert

    path, rows = sensors
    got = {}
    for ext in (".csv", ".npy", ".npz", ".mindrecord"):
        dst = path if ext == ".csv" else tmp_path / f"t{ext}"
        if ext != ".csv":
            assert convert(path, dst) == 1000
        src, _ = open_(dst)
        got[ext] = src.sample_rows(1000)
    for ext in (".npy", ".npz", ".mindrecord"):
        np.testing.assert_array_equal(got[ext][0], got[".csv"][0])
        np.testing.assert_array_equal(got[ext][1], got[".csv"][1])


def test_the_target_column_is_chosen_by_name(tmp_path, sensors):
    path, rows = sensors
    src, cfg = open_(path, target="temp")
    assert src.meta["columns"] == ["pressure", "power", "temp"]  # features, then the target
    x, y = src.sample_rows(5)
    assert src.describe().count("target 'temp'") == 1


def put(path, data):
    """Write a file (text or bytes); its path."""
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def bad_csv(tmp_path, body):
    (tmp_path / "bad.csv").write_text(body)
    return tmp_path / "bad.csv"


BAD = {
    "missing": (lambda t: t / "nope.csv", {}, "nope.csv: no such file"),
    "a folder": (lambda t: (t / "d.csv").mkdir() or t / "d.csv", {}, "not a regular file"),
    "unknown extension": (lambda t: put(t / "d.parquet", "x"), {},
                          "unknown format .parquet; accepted: .npy, .npz, .csv, .mindrecord"),
    "not a number": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,oops,6\n"), {},
                     "row 3, column 2 ('b'): 'oops' is not a number"),
    "unequal rows": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,5\n"), {},
                     "row 3 has 2 cells, the header 3"),
    "NaN": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,nan,6\n"), {},
            "row 2 holds NaN or inf (column 'b'); clean the file or pass --drop_nonfinite"),
    "no such target": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n"), {"target": "z"},
                       "no column 'z' for --target; columns: a, b, y"),
    "constant column": (lambda t: bad_csv(t, "a,b,y\n" + "".join(
        f"{i},7,{i}\n" for i in range(100))), {}, "column 'b' has the same value in every "
                                                  "training row"),
    "too few rows": (lambda t: bad_csv(t, "a,y\n" + "".join(f"{i},{2 * i}\n" for i in range(12))),
                     {}, "training rows are fewer than one global batch of 16"),
    "npy not 2-D": (lambda t: np.save(t / "v.npy", np.ones(5)) or t / "v.npy", {},
                    "expected a 2-D array (rows, features + target), got shape (5,)"),
    "npy and --target": (lambda t: np.save(t / "m.npy", np.ones((5, 2))) or t / "m.npy",
                         {"target": "y"}, "in m.npy (a .npy file) the target is the last column"),
    "npz without y": (lambda t: np.savez(t / "z.npz", x=np.ones((5, 2))) or t / "z.npz", {},
                      "no array 'y'"),
    "npz rows differ": (lambda t: np.savez(t / "z.npz", x=np.ones((5, 2)), y=np.ones(4))
                        or t / "z.npz", {}, "x must be (rows, features) and y (rows,)"),
    "broken npy": (lambda t: put(t / "b.npy", b"\x93NUMPY garbage"), {},
                   "not a valid .npy file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_one_clear_error(tmp_path, case):
    make, kw, message = BAD[case]
    path = make(tmp_path)
    with pytest.raises(DataError) as e:
        open_(path, **kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_non_finite_rows_can_be_dropped_and_are_counted(tmp_path):
    rows = table(200)
    rows[[3, 50], 1] = [np.nan, np.inf]
    np.save(tmp_path / "d.npy", rows.astype(np.float32))
    with pytest.raises(DataError, match="row 4 holds NaN or inf"):
        open_(tmp_path / "d.npy")
    src, _ = open_(tmp_path / "d.npy", drop_nonfinite=True)
    assert src.meta["rows"] == 198 and src.meta["dropped_nonfinite"] == 2
    assert "2 non-finite dropped" in src.describe()


def test_a_file_is_validated_once(tmp_path, sensors, monkeypatch):
    """The first open (a launcher's pre-flight) reads the file; the ranks' opens find the
    cached result and never parse it again."""
    path, _ = sensors
    calls = []
    real = files.read_chunks
    monkeypatch.setattr(files, "read_chunks", lambda *a: calls.append(a) or real(*a))
    open_(path)
    open_(path, world=2, batch_size=8)
    open_(path, world=4, batch_size=4)
    assert len(calls) == 1
    os.utime(path, ns=(1, 1))  # another file now (its identity changed): read again
    open_(path)
    assert len(calls) == 2


@pytest.mark.parametrize("rows", [1000, 3_000_000])
def test_the_split_is_blocks_drawn_from_the_seed(rows):
    s = files.Split(rows, seed=3, eval_fraction=0.1)
    assert s.bs == (1 if rows <= 2**20 else 3)
    held = rows - s.train_rows
    assert abs(held / rows - 0.1) < 0.01
    assert files.Split(rows, 3, 0.1).eval_blocks.tolist() == s.eval_blocks.tolist()
    assert files.Split(rows, 4, 0.1).eval_blocks.tolist() != s.eval_blocks.tolist()
    if rows == 1000:
        epoch = s.positions(0, 0, s.train_rows)
        assert sorted(epoch.tolist()) == sorted(set(range(rows)) - set(s.eval_rows(rows).tolist()))
        assert s.positions(1, 0, s.train_rows).tolist() != epoch.tolist()  # a new order


@pytest.mark.parametrize("n", [2, 4])
def test_n_shards_of_b_see_the_rows_one_process_sees_with_n_times_b(sensors, n):
    path, _ = sensors
    one, _ = open_(path, batch_size=8 * n)
    shards = [open_(path, world=n, batch_size=8)[0] for _ in range(n)]
    assert shards[0].steps_per_epoch == one.steps_per_epoch
    spe = one.steps_per_epoch

    def steps(src, world, rank, batch):
        s = StepSource(src.stream, batch, 1, world, spe, 2 * spe)
        return [s[c * world + rank] for c in range(2 * spe)]

    ref = steps(one, 1, 0, 8 * n)
    parts = [steps(src, n, r, 8) for r, src in enumerate(shards)]
    for t in range(2 * spe):
        got = np.concatenate([p[t][0].reshape(-1, 2) for p in parts])
        assert sorted(map(bytes, got)) == sorted(map(bytes, ref[t][0].reshape(-1, 2)))


def test_units_go_back_to_the_data(sensors):
    """A standardized (w, b) converted back predicts what it predicts in standardized units."""
    path, _ = sensors
    src, cfg = open_(path)
    w_std, b_std = [0.7, -0.4], 0.05
    w, b = src.params_in_units((w_std, b_std))
    x = np.array([[20.0, 55.0], [80.0, 40.0]])
    y_std = src.to_model(x) @ np.array(w_std) + b_std
    np.testing.assert_allclose(src.from_model(y_std), x @ np.array(w) + b, rtol=1e-5)
    assert src.loss_delta(cfg.delta) == pytest.approx(cfg.delta / src.std[-1])
    assert src.loss_unit == pytest.approx(src.std[-1] ** 2)


def test_the_launchers_refuse_bad_data_before_starting(tmp_path, port):
    bad = bad_csv(tmp_path, "a,b,y\n1,2,3\n4,oops,6\n")
    r = run(["bash", str(LAUNCH / "run_msrun.sh"), "--data", str(bad), "--out", "o"], tmp_path,
            NPROC="2", MASTER_PORT=str(port), LOG_DIR=str(tmp_path / "logs"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {bad}: row 3, column 2 ('b'): 'oops' is not a number"
    assert not (tmp_path / "logs").exists() and not (tmp_path / "o").exists()
