"""pipeline/files.py: every bad-data case through the one shared check (the launchers run the
same check in their pre-flight: one smoke test below), the order guarantee, the split, the
statistics and their cache, the units."""

import csv
import os
import sys
from pathlib import Path

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


def test_a_failed_conversion_leaves_an_existing_output_alone(tmp_path, sensors):
    from pipeline.convert import convert, main

    path, _ = sensors
    out = tmp_path / "out"
    out.mkdir()
    for ext in (".mindrecord", ".npz", ".npy", ".csv"):
        assert convert(path, out / f"t{ext}") == 1000
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = bad_csv(tmp_path, "a,b,y\n1,2,3\n4,oops,6\n")
    for ext in (".mindrecord", ".npz", ".npy", ".csv"):
        assert main([str(bad), str(out / f"t{ext}")]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary left either


def test_convert_can_drop_bad_rows_and_says_how_many(tmp_path, capsys):
    from pipeline.convert import main

    bad = bad_csv(tmp_path, "a,b,y\n1,2,3\n4,nan,6\n7,8,1e39\n9,9,9\n")
    assert main([str(bad), str(tmp_path / "c.npy")]) == 2  # refused, as training would
    assert main([str(bad), str(tmp_path / "c.npy"), "--drop_nonfinite"]) == 0
    out = capsys.readouterr().out
    assert "2 rows; 2 rows with NaN, inf or values beyond float32 dropped" in out
    assert np.load(tmp_path / "c.npy").tolist() == [[1, 2, 3], [9, 9, 9]]


@pytest.mark.parametrize("args,message", [
    (["t.npy", "o.csv"], "t.npy: cannot read it as .npy"),
    (["good.csv", "missing/o.mindrecord"], "missing/o.mindrecord: cannot write it"),
    (["good.csv", "o.npy", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: src, dst"),
])
def test_convert_refusals_are_one_line(tmp_path, args, message):
    truncated_npy(tmp_path)
    put(tmp_path / "good.csv", "a,y\n1,2\n")
    r = run([sys.executable, "-m", "pipeline.convert", *args], tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv", "t.npy"]


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
                     "line 3, column 2 ('b'): 'oops' is not a number"),
    "unequal rows": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,5\n"), {},
                     "line 3 has 2 cells, the header 3"),
    "NaN": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,nan,6\n"), {},
            "row 2 of the data holds NaN, inf or a value beyond float32's range (column 'b'); "
            "clean the file or pass --drop_nonfinite"),
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
    "npy shorter than its header says": (lambda t: truncated_npy(t), {},
                                         "cannot read it as .npy"),
    "beyond float32": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,1e39,6\n"), {},
                       "row 2 of the data holds NaN, inf or a value beyond float32's range "
                       "(column 'b')"),
    "no features": (lambda t: np.savez(t / "z.npz", x=np.ones((5, 0)), y=np.ones(5))
                    or t / "z.npz", {}, "no feature columns (only the target)"),
    "duplicate column names": (lambda t: bad_csv(t, "a,a,y\n1,2,3\n"), {"target": "a"},
                               "the header names 'a' more than once"),
    "unnamed column": (lambda t: bad_csv(t, "a,,y\n1,2,3\n"), {},
                       "column 2 of the header has no name"),
    "underscore in a number": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,1_000,6\n"), {},
                               "line 3, column 2 ('b'): '1_000' is not a number"),
    "name too long": (lambda t: t / ("a" * 300 + ".csv"), {}, "File name too long"),
    "empty --eval_data": (lambda t: bad_csv(t, "a,y\n" + "".join(f"{i},{i}\n" for i in range(99)))
                          and put(t / "e.csv", "a,y\n") and t / "bad.csv",
                          {"eval_data": "{t}/e.csv"}, "e.csv holds no rows"),
    "huge values unstandardized": (lambda t: bad_csv(t, "a,y\n" + "".join(
        f"{i},{i * 1e16}\n" for i in range(99))), {"standardize": False},
        "values up to 9.8e+17 are too large to train on as they are"),
    "huge held-out values unstandardized": (lambda t: bad_csv(t, "a,y\n" + "".join(
        f"{i},{i}\n" for i in range(99))) and put(t / "e.csv", "a,y\n1,2e20\n") and t / "bad.csv",
        {"standardize": False, "eval_data": "{t}/e.csv"}, "values up to 2e+20 are too large"),
    "delta that vanishes when standardized": (lambda t: bad_csv(t, "a,y\n" + "".join(
        f"{i},{i * 100}\n" for i in range(99))), {"delta": 1e-37},
        "in standardized units, which float32 cannot hold"),
}


def truncated_npy(t):
    np.save(t / "t.npy", np.ones((100, 3), np.float32))
    (t / "t.npy").write_bytes((t / "t.npy").read_bytes()[:-40])
    return t / "t.npy"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_one_clear_error(tmp_path, case):
    make, kw, message = BAD[case]
    path = make(tmp_path)
    kw = {k: v.format(t=tmp_path) if isinstance(v, str) else v for k, v in kw.items()}
    with pytest.raises(DataError) as e:
        open_(path, **kw)
    assert message in str(e.value) and "\n" not in str(e.value)
    # a refused pass leaves nothing in the cache but its records (no half-written table)
    cache = Path(files.cache_dir())
    left = [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] if cache.exists() else []
    assert not left


def test_a_csv_may_start_with_a_byte_order_mark_and_quote_its_numbers(tmp_path):
    path = put(tmp_path / "q.csv", '\ufeffa,b,y\n"1","2",3\n4,"5.5",6\n'.encode())
    names, chunks = files.read_chunks(path, "a")
    assert names == ["b", "y", "a"]
    assert np.concatenate(list(chunks)).tolist() == [[2, 3, 1], [5.5, 6, 4]]


def test_blank_lines_count_in_line_numbers_and_never_end_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CHUNK", 1)  # a chunk of nothing but a blank line, mid-file
    path = bad_csv(tmp_path, "a,b,y\n1,2,3\n\n\n4,5,6\n7,8,9\n")
    names, chunks = files.read_chunks(path, "")
    assert np.concatenate(list(chunks)).tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    path.write_text("a,b,y\n1,2,3\n\n\n4,oops,6\n")
    with pytest.raises(DataError, match="line 5, column 2"):
        list(files.read_chunks(path, "")[1])


def test_non_finite_rows_can_be_dropped_and_are_counted(tmp_path):
    rows = table(200)
    rows[[3, 50], 1] = [np.nan, np.inf]
    np.save(tmp_path / "d.npy", rows.astype(np.float32))
    with pytest.raises(DataError, match="row 4 of the data holds NaN, inf"):
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
    assert r.stderr.strip() == f"error: {bad}: line 3, column 2 ('b'): 'oops' is not a number"
    assert not (tmp_path / "logs").exists() and not (tmp_path / "o").exists()
