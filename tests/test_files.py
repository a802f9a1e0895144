"""pipeline/files.py: N shards of batch B see the rows one process sees with batch N·B, the
results go back to the data's units, and the launchers refuse bad data before starting."""

import numpy as np
import pytest
from helpers import LAUNCH, run

from pipeline.dataset import StepSource
from train.config import Config
from train.plan import open_source


def bad_csv(tmp_path, body):
    (tmp_path / "bad.csv").write_text(body)
    return tmp_path / "bad.csv"


def open_(path, world=1, **kw):
    """The source a run on this file would train on (through the plan's resolution)."""
    source = open_source(Config(data=str(path), **{"batch_size": 16, **kw}), world)
    return source, source.cfg


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
