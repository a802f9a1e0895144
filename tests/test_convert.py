"""pipeline/convert.py: every format into every other, the checks training makes, and an
existing output never damaged."""

import sys

import numpy as np
import pytest
from helpers import bad_csv, open_, put, run, shadowing_train_py, truncated_npy


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
    from pipeline.convert import convert
    from train.cli import main

    path, _ = sensors
    out = tmp_path / "out"
    out.mkdir()
    for ext in (".mindrecord", ".npz", ".npy", ".csv"):
        assert convert(path, out / f"t{ext}") == 1000
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = bad_csv(tmp_path, "a,b,y\n1,2,3\n4,oops,6\n")
    for ext in (".mindrecord", ".npz", ".npy", ".csv"):
        assert main(["convert", str(bad), str(out / f"t{ext}")]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary left either


def test_convert_can_drop_bad_rows_and_says_how_many(tmp_path, capsys):
    from train.cli import main

    bad = bad_csv(tmp_path, "a,b,y\n1,2,3\n4,nan,6\n7,8,1e39\n9,9,9\n")
    assert main(["convert", str(bad), str(tmp_path / "c.npy")]) == 2  # refused, as training would
    assert main(["convert", str(bad), str(tmp_path / "c.npy"), "--drop_nonfinite"]) == 0
    out = capsys.readouterr().out
    assert "2 rows; 2 rows with NaN, inf or values beyond float32 dropped" in out
    assert np.load(tmp_path / "c.npy").tolist() == [[1, 2, 3], [9, 9, 9]]


@pytest.mark.integration
@pytest.mark.parametrize("args,message", [
    (["t.npy", "o.csv"], "t.npy: cannot read it as .npy"),
    (["good.csv", "missing/o.mindrecord"], "missing/o.mindrecord: cannot write it"),
    (["good.csv", "o.npy", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: src, dst"),
])
def test_convert_refusals_are_one_line(tmp_path, args, message):
    truncated_npy(tmp_path)
    put(tmp_path / "good.csv", "a,y\n1,2\n")
    shadowing_train_py(tmp_path)  # the alias hands over to `msdp convert`: the package's, not it
    r = run([sys.executable, "-m", "pipeline.convert", *args], tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv", "t.npy", "train.py"]


