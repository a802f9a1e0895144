"""pipeline/guard.py: a mapped table that changes under the run is noticed, and reads without a
lease go through pread, so a truncated file is one DataError, never SIGBUS."""

import os

import numpy as np
import pytest

from pipeline.guard import CheckedTable, MappedFile, changed_error
from pipeline.limits import DataError


@pytest.fixture
def table(tmp_path):
    """A (300, 3) float32 .npy file, its values and its checked, unleased view."""
    values = np.arange(900, dtype=np.float32).reshape(300, 3)
    path = tmp_path / "t.npy"
    np.save(path, values)
    checked = CheckedTable(np.load(path, mmap_mode="r"), MappedFile(path), "t.npy")
    return path, values, checked


@pytest.mark.parametrize("rows", [slice(10, 20), slice(None), [0, 5, 7], [3, 299, 4, 150],
                                  np.array([], np.int64)])
def test_reads_without_a_lease_are_the_rows(table, rows):
    _, values, checked = table
    assert not checked.mapped.held  # never leased: every read is a pread
    np.testing.assert_array_equal(checked[rows], values[rows].reshape(-1, 3))
    assert len(checked) == 300 and checked.shape == (300, 3)


def test_far_apart_rows_are_read_run_by_run(table):
    """Rows spread over much more than their count: one pread per run of consecutive rows."""
    path, values, _ = table
    big = np.zeros((5000, 3), np.float32)
    big[:, 0] = np.arange(5000)
    np.save(path, big)
    checked = CheckedTable(np.load(path, mmap_mode="r"), MappedFile(path), "t.npy")
    rows = [4999, 0, 1, 2, 2500]
    np.testing.assert_array_equal(checked[rows][:, 0], rows)


def test_a_truncated_table_is_one_data_error(table):
    path, _, checked = table
    os.truncate(path, path.stat().st_size - 40)
    assert checked.mapped.changed()
    with pytest.raises(DataError, match=r"^t.npy changed while training \(rewritten or "
                                        r"truncated\); the checkpoints written before are "
                                        r"intact"):
        checked[[0, 1]]


def test_a_rewrite_in_place_or_a_replaced_file_is_a_change(table):
    path, _, checked = table
    assert not checked.mapped.changed()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # same size, new mtime
    assert checked.mapped.changed()
    path.unlink()
    assert checked.mapped.changed()  # gone: changed, not an OSError


def test_no_lease_on_a_file_changed_since_it_was_validated(table):
    path, _, checked = table
    mapped = MappedFile(path)
    np.save(path, np.zeros((301, 3), np.float32))
    try:
        assert mapped.hold() is False and not mapped.held
        assert mapped.why == "it changed since it was validated"
    finally:
        os.close(mapped.fd)


def test_the_changed_error_is_one_line():
    e = changed_error("data.csv")
    assert isinstance(e, DataError) and "\n" not in str(e) and "--resume" in str(e)
