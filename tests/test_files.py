"""pipeline/files.py (and pipeline/guard.py): N shards of batch B see the rows one process sees
with batch N·B, the results go back to the data's units, held-out columns match by name, large
values keep their signal, a data file rewritten under a run stops it cleanly, and the launchers
refuse bad data before starting."""

import json
import sys

import numpy as np
import pytest
from helpers import (
    LAUNCH,
    bad_csv,
    newest_ckpt,
    open_,
    run,
    start,
    table,
    train_cli,
    wait_for,
    write_csv,
)

from pipeline.dataset import StepSource
from pipeline.limits import DataError


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


@pytest.mark.integration
def test_the_launchers_refuse_bad_data_before_starting(tmp_path, port):
    bad = bad_csv(tmp_path, "a,b,y\n1,2,3\n4,oops,6\n")
    r = run(["bash", str(LAUNCH / "run_msrun.sh"), "--data", str(bad), "--out", "o"], tmp_path,
            NPROC="2", MASTER_PORT=str(port), LOG_DIR=str(tmp_path / "logs"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {bad}: line 3, column 2 ('b'): 'oops' is not a number"
    assert not (tmp_path / "logs").exists() and not (tmp_path / "o").exists()


def test_held_out_columns_are_matched_by_name(tmp_path):
    rows = table(400)
    train = write_csv(tmp_path / "t.csv", ["temp", "pressure", "power"], rows[:300])
    same = write_csv(tmp_path / "e1.csv", ["temp", "pressure", "power"], rows[300:])
    shuffled = write_csv(tmp_path / "e2.csv", ["power", "temp", "pressure"],
                         rows[300:][:, [2, 0, 1]])
    a, _ = open_(train, eval_data=str(same))
    b, _ = open_(train, eval_data=str(shuffled))
    for x, y in zip(a.eval_rows(100), b.eval_rows(100)):
        np.testing.assert_array_equal(x, y)
    other = write_csv(tmp_path / "e3.csv", ["temp", "humidity", "power"], rows[300:])
    with pytest.raises(DataError, match="--eval_data .*e3.csv has no column 'pressure' \\(the "
                                        "training file's columns: temp, pressure, power\\)"):
        open_(train, eval_data=str(other))


def test_a_held_out_npy_is_matched_by_position_whatever_the_target(tmp_path):
    """--target names a CSV's column; a held-out .npy has no names: its columns are the
    training table's (features, then the target), as docs/data.md says."""
    rows = table(400)
    train = write_csv(tmp_path / "t.csv", ["temp", "pressure", "power"], rows[:300])
    by_name = write_csv(tmp_path / "e.csv", ["temp", "pressure", "power"], rows[300:])
    np.save(tmp_path / "e.npy", rows[300:][:, [1, 2, 0]].astype(np.float32))
    a, _ = open_(train, target="temp", eval_data=str(by_name))
    b, _ = open_(train, target="temp", eval_data=str(tmp_path / "e.npy"))
    for x, y in zip(a.eval_rows(100), b.eval_rows(100)):
        np.testing.assert_allclose(x, y, rtol=1e-6)


@pytest.mark.integration
def test_a_column_of_large_values_keeps_its_signal(tmp_path):
    """1e7 + a small signal: float32 holds it only centred (the cache stores columns relative
    to an offset, the statistics are float64): the fit finds w = 3, as float64 least squares."""
    rng = np.random.default_rng(3)
    s = rng.normal(0, 1, 3000)
    y = 3 * s + 1 + rng.normal(0, 0.1, 3000)
    path = write_csv(tmp_path / "big.csv", ["a", "y"], np.c_[1e7 + s, y])
    r = train_cli(["--data", str(path), "--out", "run", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    w = json.loads((tmp_path / "run" / "summary.json").read_text())["w"][0]
    assert w == pytest.approx(3.0, abs=0.01)


@pytest.mark.integration
def test_a_data_file_rewritten_during_training_stops_the_run_cleanly(tmp_path):
    """np.save over a float32 .npy the run maps: never a bus error. The run holds a lease:
    the writer waits, the run checkpoints and exits 75, then the writer goes on."""
    rows = table(20000, features=3).astype(np.float32)
    np.save(tmp_path / "d.npy", rows)
    proc = start(["--data", str(tmp_path / "d.npy"), "--epochs", "50", "--out", "run"],
                 tmp_path, TRAIN_FAULT="step_pause=0.01")
    wait_for(lambda: newest_ckpt(tmp_path / "run") > 0, proc, what="a checkpoint")
    np.save(tmp_path / "d.npy", rows[:10])  # blocks until the run has let go of the file
    assert proc.wait(timeout=60) == 75
    err = proc.stderr.read()
    assert "stopped: the data file is being rewritten by another process" in err, err
    assert "Bus error" not in err and len(np.load(tmp_path / "d.npy")) == 10


@pytest.mark.integration
def test_a_run_names_its_files_absolutely_and_resumes_from_any_folder(tmp_path):
    """The saved config holds absolute paths (fed back from another folder, it names the same
    files); the held-out file is compared by identity, so another one is refused."""
    rows = table(600)
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "t.csv", ["temp", "pressure", "power"], rows[:500])
    write_csv(tmp_path / "data" / "e1.csv", ["temp", "pressure", "power"], rows[500:])
    write_csv(tmp_path / "data" / "e2.csv", ["temp", "pressure", "power"], rows[450:550])
    args = ["--data", "data/t.csv", "--eval_data", "data/e1.csv", "--epochs", "2",
            "--batch_size", "64", "--quiet"]
    r = train_cli([*args, "--out", "run"], tmp_path)
    assert r.returncode == 0, r.stderr
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"data: {tmp_path}/data/t.csv" in saved and f"eval_data: {tmp_path}/data/e1.csv" in saved
    (tmp_path / "elsewhere").mkdir()
    r = train_cli(["--out", "../run", "--resume", "--epochs", "3"], tmp_path / "elsewhere")
    assert r.returncode == 0, r.stderr
    r = train_cli(["--out", "run", "--resume", "--epochs", "4", "--eval_data", "data/e2.csv"],
                  tmp_path)
    assert r.returncode == 2 and "cannot resume: the config differs from the checkpoint's in " \
        f"--eval_data ({tmp_path}/data/e1.csv, " in r.stderr and "e2.csv, " in r.stderr, r.stderr
    assert "{" not in r.stderr  # said as paths, sizes and hashes, never as a dict


# Every reader of a mapped table, after the file was truncated under it without a lease; then
# the race that check cannot see (it passed, then the file shrank): a short read, not SIGBUS.
# In a child process, since a bus error would end it.
_READERS = """
import os, sys
sys.path.insert(0, {tests!r})
from helpers import open_
from pipeline.limits import DataError
src, _ = open_({path!r})
os.truncate({path!r}, 256)  # the header stays, the rows are gone
readers = {{"objective_rows": lambda: next(src.objective_rows()),
           "eval_rows": lambda: src.eval_rows(100), "held_out": lambda: src.held_out(100),
           "sample_rows": lambda: src.sample_rows(10), "stream": lambda: src.stream.rows(0, 0, 8)}}
for race in (False, True):
    if race:
        src.mapped.changed = lambda: False
        readers.pop("stream")  # the steps' own reads stay on the mapping, checked before each
    for name, read in readers.items():
        try:
            read()
            print(name, "read")
        except DataError as e:
            print(name, "refused" if "changed while training" in str(e) else e)
"""


@pytest.mark.integration
def test_every_read_of_a_mapped_table_is_checked_even_without_a_lease(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, table(3000, features=3).astype(np.float32))
    code = _READERS.format(tests=str(LAUNCH.parent / "tests"), path=str(path))
    r = run([sys.executable, "-c", code], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]  # -7: SIGBUS
    lines = r.stdout.splitlines()
    assert len(lines) == 9 and all(ln.endswith(" refused") for ln in lines), r.stdout


@pytest.mark.integration
def test_a_data_file_truncated_in_the_finish_without_a_lease_is_one_line(tmp_path):
    """Another process holds the .npy open for writing, so the run has no lease; truncated
    during the Newton finish, the file is refused in one line (exit 2), never a bus error."""
    path = tmp_path / "d.npy"
    np.save(path, table(4000, features=3).astype(np.float32))
    with open(path, "r+b") as writer:  # the run's lease fails (EAGAIN)
        proc = start(["--data", str(path), "--epochs", "2", "--out", "run", "--quiet"],
                     tmp_path, TRAIN_FAULT="finish_pause=3")
        metrics = tmp_path / "run" / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and '"objective"' in metrics.read_text(), proc,
                 what="a Newton pass")
        writer.truncate(1024)
        rc = proc.wait(timeout=120)
    err = proc.stderr.read()
    assert rc == 2 and "changed while training (rewritten or truncated)" in err, err
    assert "Bus error" not in err and len(err.strip().splitlines()) == 2, err  # (+ the warning)
    assert not (tmp_path / "run" / "summary.json").exists()
    assert "no lease on the data file" in (tmp_path / "run" / "logs" / "rank_0.log").read_text()
