"""pipeline/formats.py (through opening a file as a run does, pipeline/files.py and
pipeline/cache.py included): every bad-data case is one clear line; what a CSV may hold."""

from pathlib import Path

import numpy as np
import pytest
from helpers import bad_csv, open_, put, table, truncated_npy, write_csv

from pipeline import cache, formats
from pipeline.limits import DataError


def test_the_target_column_is_chosen_by_name(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["temp", "pressure", "power"], table())
    src, cfg = open_(path, target="temp")
    assert src.meta["columns"] == ["pressure", "power", "temp"]  # features, then the target
    x, y = src.sample_rows(5)
    assert src.describe().count("target 'temp'") == 1


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
            "line 3, column 2 ('b'): 'nan' is a missing value; fill it in, or pass "
            "--drop_nonfinite to drop the rows with a missing cell (counted)"),
    "an empty cell": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n\n4,,6\n"), {},
                      "line 4, column 2 ('b'): '' is a missing value"),
    "NA": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,5,6\n7, NA,9\n"), {},
           "line 4, column 2 ('b'): 'NA' is a missing value"),
    "a missing target": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,5,\n"), {},
                         "line 3, column 3 ('y'): '' is a missing value"),
    "inf": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4,inf,6\n"), {},
            "row 2 of the data holds NaN, inf or a value beyond float32's range (column 'b'); "
            "clean the file or pass --drop_nonfinite"),
    "text in a picked column": (lambda t: bad_csv(t, "a,b,y\n1,x,3\n"), {"columns": "a,b"},
                                "line 2, column 2 ('b'): 'x' is not a number"),
    "--columns names no column": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n"), {"columns": "a,c"},
                                  "no column 'c' (named by --columns or --categorical); "
                                  "columns: a, b, y"),
    "--columns names the target": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n"), {"columns": "a,y"},
                                   "'y' is the target; --columns and --categorical name "
                                   "features"),
    "--categorical outside --columns": (lambda t: bad_csv(t, "a,c,y\n1,u,3\n2,v,4\n"),
                                        {"columns": "a", "categorical": "c"},
                                        "--categorical c is not among --columns a"),
    "a categorical column of one level": (lambda t: bad_csv(t, "a,c,y\n1,u,3\n2,u,4\n"),
                                          {"categorical": "c"},
                                          "--categorical column 'c' holds one level only ('u')"),
    "--columns with a .npy": (lambda t: np.save(t / "m.npy", np.ones((5, 3))) or t / "m.npy",
                              {"columns": "x0"}, "--columns and --categorical pick and encode "
                                                 "a CSV's columns by name; m.npy is a .npy file"),
    "a held-out level the training file lacks": (
        lambda t: bad_csv(t, "a,c,y\n" + "".join(f"{i},{'uv'[i % 2]},{i}\n" for i in range(99)))
        and put(t / "e.csv", "a,c,y\n1,u,2\n3,w,4\n") and t / "bad.csv",
        {"categorical": "c", "eval_data": "{t}/e.csv"},
        "line 3, column 2 ('c'): level 'w' is not among the training file's levels (u, v)"),
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
    "a # inside a cell": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n4#junk,5,6\n"), {},
                          "line 3, column 1 ('a'): '4#junk' is not a number"),
    "a line starting with #": (lambda t: bad_csv(t, "a,b,y\n1,2,3\n#4,5,6\n7,8,9\n"), {},
                               "line 3, column 1 ('a'): '#4' is not a number"),
    "only a header": (lambda t: bad_csv(t, "a,b,y\n"), {}, "bad.csv holds no rows (only a "
                                                           "header?)"),
    "every row dropped": (lambda t: bad_csv(t, "a,y\n1,nan\ninf,2\n"), {"drop_nonfinite": True},
                          "bad.csv holds no rows (all 2 dropped as non-finite)"),
    "constant target": (lambda t: bad_csv(t, "a,y\n" + "".join(f"{i},5\n" for i in range(99))),
                        {}, "column 'y' has the same value in every training row"),
    "constant bool .npy": (lambda t: np.save(t / "b.npy", np.c_[np.arange(99) % 2 == 0,
                                                                  np.ones(99, bool)])
                           or t / "b.npy", {}, "column 'y' has the same value"),
    "equal huge values": (lambda t: bad_csv(t, "a,y\n" + "".join(f"{i},1e30\n"
                                                                for i in range(99))), {},
                          "column 'y' has the same value in every training row"),
    "std too small for float32": (lambda t: np.save(t / "s.npy", np.c_[
        np.arange(99.0), np.where(np.arange(99) % 2, 1e-39, 0.0), np.arange(99.0)])
        or t / "s.npy", {}, "column 'x1' has almost the same value (std 5e-40)"),
    "delta that vanishes when standardized": (lambda t: bad_csv(t, "a,y\n" + "".join(
        f"{i},{i * 100}\n" for i in range(99))), {"delta": 1e-37},
        "in standardized units, which float32 cannot hold"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_one_clear_error(tmp_path, case):
    make, kw, message = BAD[case]
    path = make(tmp_path)
    kw = {k: v.format(t=tmp_path) if isinstance(v, str) else v for k, v in kw.items()}
    with pytest.raises(DataError) as e:
        open_(path, **kw)
    assert message in str(e.value) and "\n" not in str(e.value)
    # a refused pass leaves nothing in the cache but its records (no half-written table)
    folder = Path(cache.cache_dir())
    left = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.exists() \
        else []
    assert not left


def test_a_csv_may_start_with_a_byte_order_mark_and_quote_its_numbers(tmp_path):
    path = put(tmp_path / "q.csv", '\ufeffa,b,y\n"1","2",3\n4,"5.5",6\n'.encode())
    names, chunks = formats.read_chunks(path, "a")
    assert names == ["b", "y", "a"]
    assert np.concatenate(list(chunks)).tolist() == [[2, 3, 1], [5.5, 6, 4]]


def test_blank_lines_count_in_line_numbers_and_never_end_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "CHUNK", 1)  # a chunk of nothing but a blank line, mid-file
    path = bad_csv(tmp_path, "a,b,y\n1,2,3\n\n\n4,5,6\n7,8,9\n")
    names, chunks = formats.read_chunks(path, "")
    assert np.concatenate(list(chunks)).tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    path.write_text("a,b,y\n1,2,3\n\n\n4,oops,6\n")
    with pytest.raises(DataError, match="line 5, column 2"):
        list(formats.read_chunks(path, "")[1])


def test_non_finite_rows_can_be_dropped_and_are_counted(tmp_path):
    rows = table(200)
    rows[[3, 50], 1] = [np.nan, np.inf]
    np.save(tmp_path / "d.npy", rows.astype(np.float32))
    with pytest.raises(DataError, match="row 4 of the data holds NaN, inf"):
        open_(tmp_path / "d.npy")
    src, _ = open_(tmp_path / "d.npy", drop_nonfinite=True)
    assert src.meta["rows"] == 198 and src.meta["dropped_nonfinite"] == 2
    assert "2 non-finite dropped" in src.describe()




def test_missing_cells_are_dropped_and_counted_with_drop_nonfinite(tmp_path):
    rows = [[f"{v:.6g}" for v in r] for r in table(200)]
    rows[3][0], rows[50][1], rows[70][2], rows[90][1] = "", "NA", "NaN", " nan "
    path = write_csv(tmp_path / "m.csv", ["a", "b", "y"], rows)
    with pytest.raises(DataError, match=r"line 5, column 1 \('a'\): '' is a missing value"):
        open_(path)
    src, _ = open_(path, drop_nonfinite=True)
    assert src.meta["rows"] == 196 and src.meta["dropped_nonfinite"] == 4
    assert "4 non-finite dropped" in src.describe()


def test_columns_pick_the_features_and_other_columns_may_hold_text_and_dates(tmp_path):
    t = table(300)
    rows = [[f"row {i}, quoted", f"2024-01-{i % 28 + 1:02d}", *map(str, r[:2]), "NA", r[2]]
            for i, r in enumerate(t)]
    path = write_csv(tmp_path / "p.csv", ["note", "date", "a", "b", "empty", "y"], rows)
    src, _ = open_(path, columns="b,a")
    assert src.meta["columns"] == ["b", "a", "y"]  # in --columns' order, then the target
    x, y = src.sample_rows(3)
    first = src.split.first_rows(src.split.train_blocks, 3)
    np.testing.assert_allclose(x, t[first][:, [1, 0]].astype(np.float32))
    with pytest.raises(DataError, match="'row 0, quoted' is not a number"):
        open_(path)  # without --columns every column but the target is a feature


def test_categorical_columns_are_one_hot_encoded_drop_first(tmp_path):
    rows = [[["red", "blue", "green"][i % 3], f"{i * 0.1:.3f}", f"{i % 3 + i * 0.01:.3f}"]
            for i in range(300)]
    path = write_csv(tmp_path / "c.csv", ["color", "a", "y"], rows)
    src, _ = open_(path, categorical="color")
    # sorted levels, the first (blue) the reference: no column of its own
    assert src.meta["columns"] == ["color=green", "color=red", "a", "y"]
    assert src.meta["levels"] == {"color": ["blue", "green", "red"]} == src.levels
    names, chunks = formats.read_chunks(path, "", "--data", formats.TableSpec(
        categorical=("color",), levels={"color": ["blue", "green", "red"]}))
    got = np.concatenate(list(chunks))
    assert got[:3, :2].tolist() == [[0, 1], [0, 0], [1, 0]]  # red, blue, green
    # the levels are part of the cache key: other columns, another table
    other, _ = open_(path, columns="a")
    assert other.meta["columns"] == ["a", "y"] and other.meta["levels"] == {}
