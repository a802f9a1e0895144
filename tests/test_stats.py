"""pipeline/stats.py: one streaming pass gives numpy's moments, the least-squares fit and the
curvatures, keeps a small signal on a large offset, and its delta is statsmodels' RLM scale."""

import numpy as np
import pytest
from helpers import table

from pipeline.split import Split
from pipeline.stats import HUBER_TUNING, huber_scale, statistics, usable


@pytest.fixture(scope="module")
def rows():
    """1,000 sensor-like rows (2 features, target last; 10% outliers)."""
    return table()


def test_one_pass_gives_numpys_moments_and_least_squares(rows):
    s = statistics(rows, Split(len(rows), 0, 0.0), np.zeros(3))
    assert s["rows"] == 1000
    np.testing.assert_allclose(s["mean"], rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s["std"], rows.std(axis=0), rtol=1e-12)
    assert s["min"] == rows.min(axis=0).tolist() and s["max"] == rows.max(axis=0).tolist()
    a = np.concatenate([rows[:, :2], np.ones((1000, 1))], axis=1)
    fit = np.linalg.lstsq(a, rows[:, 2], rcond=None)[0]
    np.testing.assert_allclose([*s["ls_w"], s["ls_b"]], fit, rtol=1e-9)
    assert s["curvature_raw"] == pytest.approx(np.linalg.eigvalsh(a.T @ a / 1000)[-1])
    corr = np.corrcoef(rows[:, :2].T)
    assert s["curvature_std"] == pytest.approx(np.linalg.eigvalsh(corr)[-1])
    assert usable(s, 3)


def test_only_training_rows_count(rows):
    split = Split(len(rows), 0, 0.2)
    train = rows[split.is_train(np.arange(len(rows)))]
    s = statistics(rows, split, np.zeros(3))
    assert s["rows"] == len(train) == split.train_rows < 1000
    np.testing.assert_allclose(s["mean"], train.mean(axis=0), rtol=1e-12)


def test_a_small_signal_on_a_large_offset_keeps_its_statistics(rows):
    """A converted table stores values minus a per-column offset; the statistics are the
    same as the raw table's (centred co-moments, not raw sums of large numbers)."""
    offset = np.array([1e7, -1e7, 5e6])
    split = Split(len(rows), 0, 0.0)
    shifted = statistics(rows, split, offset)
    plain = statistics(rows + offset, split, np.zeros(3))
    np.testing.assert_allclose(shifted["std"], rows.std(axis=0), rtol=1e-9)
    np.testing.assert_allclose(plain["std"], rows.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(shifted["mean"], rows.mean(axis=0) + offset, rtol=1e-12)
    np.testing.assert_allclose(shifted["ls_w"], plain["ls_w"], rtol=1e-6)


def test_the_delta_is_rlms_scale_times_1345(rows):
    sm = pytest.importorskip("statsmodels.api")
    x, y = rows[:, :2], rows[:, 2]
    rlm = sm.RLM(y, sm.add_constant(x), M=sm.robust.norms.HuberT(HUBER_TUNING)).fit()
    w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0][:2]
    assert huber_scale(x, y, w) == pytest.approx(rlm.scale, rel=1e-4)
    s = statistics(rows, Split(len(rows), 0, 0.0), np.zeros(3))
    assert s["delta"] == pytest.approx(HUBER_TUNING * rlm.scale, rel=1e-4)
    assert 2.5 < s["delta"] / HUBER_TUNING < 3.5  # the noise's sigma (3), not the outliers'


def test_tied_targets_fall_back_to_the_least_squares_scale():
    """More than half the rows fit exactly: the robust scale is 0; delta must not be."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, (400, 1))
    y = 2 * x[:, 0] + 1
    y[:150] += rng.normal(0, 5, 150)
    s = statistics(np.c_[x, y], Split(400, 0, 0.0), np.zeros(2))
    assert s["delta"] > 1e-3


def test_a_record_is_usable_only_when_whole_and_sane(rows):
    s = statistics(rows, Split(len(rows), 0, 0.0), np.zeros(3))
    assert usable(s, 3) and not usable(s, 4) and not usable(None, 3)
    for key, value in [("std", [1.0, 0.0, 1.0]), ("delta", 0.0), ("ls_w", [1.0]),
                       ("ls_b", True), ("mean", [1.0, float("nan"), 2.0]),
                       ("curvature_raw", -1.0), ("curvature_std", "1")]:
        assert not usable({**s, key: value}, 3), key
    assert not usable({k: v for k, v in s.items() if k != "delta"}, 3)
