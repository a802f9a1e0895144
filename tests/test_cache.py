"""pipeline/cache.py: a file is validated once per job, and again when it changes."""

import os

from pipeline import formats
from train.config import Config
from train.plan import open_source


def open_(path, world=1, **kw):
    """The source a run on this file would train on (through the plan's resolution)."""
    source = open_source(Config(data=str(path), **{"batch_size": 16, **kw}), world)
    return source, source.cfg


def test_a_file_is_validated_once(tmp_path, sensors, monkeypatch):
    """The first open (a launcher's pre-flight) reads the file; the ranks' opens find the
    cached result and never parse it again."""
    path, _ = sensors
    calls = []
    real = formats.read_chunks
    monkeypatch.setattr(formats, "read_chunks", lambda *a: calls.append(a) or real(*a))
    open_(path)
    open_(path, world=2, batch_size=8)
    open_(path, world=4, batch_size=4)
    assert len(calls) == 1
    os.utime(path, ns=(1, 1))  # another file now (its identity changed): read again
    open_(path)
    assert len(calls) == 2


