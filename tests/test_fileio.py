"""pipeline/fileio.py: a file written whole is the new one or the old one, never a link's
target and never half; JSON is strict."""

import json
import math

import pytest

from pipeline.fileio import finite_json, finite_numbers, json_text, tmp_name, write_atomic


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_atomic_replaces_the_file_whole(tmp_path):
    f = tmp_path / "summary.json"
    write_atomic(f, "old")
    write_atomic(f, b"new bytes")
    assert f.read_bytes() == b"new bytes" and _leftovers(tmp_path) == []


def test_a_link_is_replaced_not_written_through(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    (tmp_path / "out.txt").symlink_to(target)
    write_atomic(tmp_path / "out.txt", "mine")
    assert target.read_text() == "keep me"
    assert not (tmp_path / "out.txt").is_symlink() and (tmp_path / "out.txt").read_text() == "mine"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    """The rename fails (a folder stands at the name): the error propagates, nothing is left."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "inside").write_text("old")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "ckpt", "data")
    assert (tmp_path / "ckpt" / "inside").read_text() == "old" and _leftovers(tmp_path) == []


def test_temporary_names_are_hidden_beside_the_file_and_never_shared(tmp_path):
    a, b = tmp_name(tmp_path / "x.json"), tmp_name(tmp_path / "x.json")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(".x.json.") and a.name.endswith(".tmp")


def test_json_is_strict_non_finite_numbers_are_null():
    obj = {"loss": math.nan, "w": [1.5, math.inf, -math.inf], "nested": ({"b": 2},)}
    text = json_text(obj)
    assert json.loads(text) == {"loss": None, "w": [1.5, None, None], "nested": [{"b": 2}]}
    assert finite_json(2.5) == 2.5 and finite_json("nan") == "nan"  # strings are not numbers
    assert json.loads(json_text({"a": 1}, indent=2)) == {"a": 1}


@pytest.mark.parametrize("values, ok", [
    ([1, 2.5, -3e300], True),
    ([], True),
    ([True], False),  # JSON's true: an int to Python, not a number here
    ([math.nan], False),
    ([math.inf], False),
    ([10 ** 400], False),  # too large for a float
    (["1"], False),
    ([None], False),
])
def test_finite_numbers(values, ok):
    assert finite_numbers(values) is ok
