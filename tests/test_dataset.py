"""pipeline/dataset.py: sharding, shard-count independence, resume offsets, eval set."""

import numpy as np
import pytest

from pipeline import DataSpec, SyntheticStream, eval_chunks, make_train_dataset
from pipeline.synthetic import SyntheticRegression

SPEC = DataSpec(features=2, outlier_fraction=0.1)


def steps(num_shards, shard_id, batch, accum=1, steps_per_epoch=3, epochs=2, start_step=0,
          chunk=1):
    """All optimizer steps of one shard: a list of (x (A, B, F), y (A, B, 1)) numpy pairs."""
    data = make_train_dataset(SyntheticStream(SPEC, 11), batch, accum, steps_per_epoch, epochs,
                              num_shards=num_shards, shard_id=shard_id, start_step=start_step,
                              chunk=chunk)
    out = [(x[j * accum:(j + 1) * accum], y[j * accum:(j + 1) * accum])
           for x, y in data.create_tuple_iterator(output_numpy=True, num_epochs=1)
           for j in range(chunk)]
    return out[:steps_per_epoch * epochs - start_step]  # the last chunk's padding


def rows(step):
    x, y = step
    return x.reshape(-1, x.shape[-1]), y.reshape(-1, 1)


def test_shape_and_count():
    out = steps(1, 0, batch=4, accum=3)
    assert len(out) == 6
    assert out[0][0].shape == (3, 4, 2) and out[0][1].shape == (3, 4, 1)


@pytest.mark.parametrize("n", [2, 3])
def test_n_shards_of_b_equal_one_shard_of_n_times_b(n):
    one = steps(1, 0, batch=n * 4)
    shards = [steps(n, r, batch=4) for r in range(n)]
    for t, ref in enumerate(one):
        got_x = np.concatenate([rows(s[t])[0] for s in shards])
        np.testing.assert_array_equal(got_x, rows(ref)[0])  # same rows, same order
        got_y = np.concatenate([rows(s[t])[1] for s in shards])
        np.testing.assert_array_equal(got_y, rows(ref)[1])


def test_accumulation_sees_the_same_rows_as_the_big_batch():
    big = steps(1, 0, batch=12)
    small = steps(1, 0, batch=4, accum=3)
    for a, b in zip(big, small):
        np.testing.assert_array_equal(rows(a)[0], rows(b)[0])


def test_shards_are_disjoint_and_cover_each_epoch():
    n, b, spe = 3, 5, 4
    shards = [steps(n, r, batch=b, steps_per_epoch=spe) for r in range(n)]
    gen = SyntheticRegression(SPEC, 11)
    for epoch in range(2):
        seen = [rows(s[t])[0] for s in shards for t in range(epoch * spe, (epoch + 1) * spe)]
        seen = np.concatenate(seen)
        keys = {r.tobytes() for r in seen}
        assert len(keys) == len(seen) == n * b * spe  # disjoint: no row twice
        expected, _ = gen.rows(epoch, 0, n * b * spe)
        assert keys == {r.tobytes() for r in expected}  # together: exactly the epoch's rows
    assert not np.array_equal(rows(shards[0][0])[0], rows(shards[0][spe])[0])  # fresh per epoch


def test_start_step_continues_the_same_stream():
    full = steps(2, 1, batch=4)
    tail = steps(2, 1, batch=4, start_step=4)
    assert len(tail) == 2
    for a, b in zip(full[4:], tail):
        np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("num_shards", [1, 2])
@pytest.mark.parametrize("chunk", [2, 4, 7])
def test_chunks_hold_the_same_steps(num_shards, chunk):
    """Chunks of K steps (crossing epochs, with a padded last one) change nothing."""
    plain = steps(num_shards, num_shards - 1, batch=4, accum=2, steps_per_epoch=5)
    chunked = steps(num_shards, num_shards - 1, batch=4, accum=2, steps_per_epoch=5, chunk=chunk)
    assert len(chunked) == len(plain) == 10
    for a, b in zip(plain, chunked):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    tail = steps(num_shards, 0, batch=4, steps_per_epoch=5, start_step=3, chunk=chunk)
    full = steps(num_shards, 0, batch=4, steps_per_epoch=5)
    np.testing.assert_array_equal(tail[0][0], full[3][0])


def test_steps_per_item_aims_at_16k_rows():
    from pipeline.dataset import steps_per_item

    assert [steps_per_item(r) for r in (1, 256, 4096, 16384, 65536)] == [64, 64, 4, 1, 1]


def test_bad_shard_id_is_refused():
    with pytest.raises(ValueError, match="shard_id"):
        make_train_dataset(SyntheticStream(SPEC, 0), 4, 1, 2, 1, num_shards=2, shard_id=2)


def test_eval_set_is_clean_and_separate():
    x, y = SyntheticStream(SPEC, 11).eval_set(1000)
    train_x, _ = SyntheticRegression(SPEC, 11).rows(0, 0, 1000)
    assert not np.array_equal(x, train_x)
    assert np.all(np.abs(y[:, 0] - 2 * x.sum(axis=1) - 3) < 6)  # noise only, no outliers


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_chunks_split_the_held_out_rows_between_ranks(world):
    """Each rank evaluates its own chunks; together they are every row exactly once, and every
    chunk has one shape (one compile)."""
    x, y = SyntheticStream(SPEC, 11).eval_set(1000)
    parts = [eval_chunks(x, y, r, world, chunk_rows=300) for r in range(world)]
    got = np.concatenate([c[0][c[2][:, 0] == 1] for p in parts for c in p])
    assert sorted(map(bytes, got)) == sorted(map(bytes, x))
    assert {c[0].shape for p in parts for c in p} == {(300, 2)}
