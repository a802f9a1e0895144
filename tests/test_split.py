"""pipeline/split.py: the held-out blocks and each epoch's order are drawn from the seed."""

import pytest

from pipeline.split import Split


@pytest.mark.parametrize("rows", [1000, 3_000_000])
def test_the_split_is_blocks_drawn_from_the_seed(rows):
    s = Split(rows, seed=3, eval_fraction=0.1)
    assert s.bs == (1 if rows <= 2**20 else 3)
    held = rows - s.train_rows
    assert abs(held / rows - 0.1) < 0.01
    assert Split(rows, 3, 0.1).eval_blocks.tolist() == s.eval_blocks.tolist()
    assert Split(rows, 4, 0.1).eval_blocks.tolist() != s.eval_blocks.tolist()
    if rows == 1000:
        epoch = s.positions(0, 0, s.train_rows)
        assert sorted(epoch.tolist()) == sorted(set(range(rows)) - set(s.eval_rows(rows).tolist()))
        assert s.positions(1, 0, s.train_rows).tolist() != epoch.tolist()  # a new order


