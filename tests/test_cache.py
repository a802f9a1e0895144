"""pipeline/cache.py: a file is validated once per job, and again when it changes; an entry
that is not what it claims is made again; what killed writers leave is swept; a full disk, a
stop signal while waiting, a copied MindRecord: one line each."""

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import open_, require, start, train_cli, wait_for

from pipeline import cache, formats
from pipeline.limits import DataError


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




def _entries(suffix):
    return sorted(cache.cache_dir().glob(f"*{suffix}"))


def _table_entry(path):
    """The cache's record and table for a converted file."""
    for meta in _entries(".json"):
        record = json.loads(meta.read_text())["record"]
        if record.get("source", {}).get("path") == str(path.resolve()):
            return meta, Path(record["table"])
    raise AssertionError("no cache record")


def _resign(meta, record):
    """A record edited by someone who knows the format: its checksum made to match."""
    meta.write_text(json.dumps({"record": record, "sha256": cache._digest(record)}))


@pytest.mark.parametrize("damage", ["stats {}", "truncated table", "replaced table",
                                    "edited record", "re-signed text offset",
                                    "re-signed huge max_abs", "re-signed column dropped",
                                    "re-signed stats std 0"])
def test_a_damaged_cache_entry_is_made_again(sensors, monkeypatch, tmp_path, damage):
    """The cache is ours: an entry that is not what it claims (its checksum; its fields'
    types; the table's size and sampled hash) is rebuilt, never trusted and never blamed on
    the user's file."""
    monkeypatch.setenv("TRAIN_CACHE_DIR", str(tmp_path / "cache"))
    path, _ = sensors
    good, _ = open_(path)
    rows = good.sample_rows(1000)
    meta, table = _table_entry(path)
    record = json.loads(meta.read_text())["record"]
    if damage in ("stats {}", "re-signed stats std 0"):
        for p in _entries(".json"):
            stats = json.loads(p.read_text())["record"]
            if "mean" in stats:
                zero = {**stats, "std": [0] * len(stats["std"])}
                _resign(p, {} if damage == "stats {}" else zero)
    elif damage == "re-signed huge max_abs":
        _resign(meta, {**record, "max_abs": 10 ** 400})
    elif damage == "re-signed column dropped":
        offset = record["offset"] and record["offset"][1:]
        _resign(meta, {**record, "columns": record["columns"][1:], "offset": offset})
    elif damage == "edited record":
        meta.write_text(meta.read_text().replace(f'"rows": {record["rows"]}',
                                                 f'"rows": {record["rows"] - 1}'))
        assert cache.read_json(meta) is None
    elif damage == "re-signed text offset":
        _resign(meta, {**record, "offset": ["1"] * len(record["columns"])})
    elif damage == "truncated table":
        table.write_bytes(table.read_bytes()[:-100])
    else:
        np.save(table, np.zeros_like(np.load(table)))  # the same shape, other values
    again, _ = open_(path)
    np.testing.assert_array_equal(again.sample_rows(1000)[0], rows[0])
    assert again.data_stats["mean"] == good.data_stats["mean"]
    assert again.columns == good.columns


@pytest.mark.integration
def test_temporaries_of_dead_writers_are_swept(sensors, monkeypatch, tmp_path):
    monkeypatch.setenv("TRAIN_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    me = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / "cache" / f".x.npy.{me}.{dead}.0badc0de.tmp"
    live = tmp_path / "cache" / f".y.npy.{me}.{os.getpid()}.0badc0de.tmp"
    other = tmp_path / "cache" / ".z.npy.otherhost.1.0badc0de.tmp"
    for p in (stale, live, other):
        p.write_text("partial")
    open_(sensors[0])
    assert not stale.exists() and live.exists() and other.exists()  # another host: a day


@pytest.mark.integration
def test_a_full_disk_while_converting_is_one_line(sensors, tmp_path):
    require("mounting a tmpfs for a real full disk needs root" if os.geteuid() != 0 else None)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        big = tmp_path / "big.csv"
        big.write_text("a,b,y\n" + "".join(f"{i},{i % 7},{2 * i}\n" for i in range(20000)))
        r = train_cli(["--data", str(big), "--out", "o"], tmp_path, TRAIN_CACHE_DIR=str(disk))
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [
            f"error: cannot write the data cache {disk} (No space left on device); free space "
            "there or set TRAIN_CACHE_DIR to another folder"]
        assert [p.name for p in disk.iterdir() if p.suffix == ".tmp"] == []
        assert not (tmp_path / "o").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.integration
def test_a_stop_signal_while_waiting_for_another_conversion_is_75(sensors, tmp_path):
    """Another process holds the entry's lock (converting); SIGTERM to the waiting run ends
    it at once with 75, instead of waiting for that process."""
    path, _ = sensors
    env_cache = tmp_path / "cache"
    key = cache.entry_key("table", cache.identity(path), "", False)
    env_cache.mkdir()
    holder = open(env_cache / f"{key}.lock", "w")
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        proc = start(["--data", str(path), "--out", "o"], tmp_path,
                     TRAIN_CACHE_DIR=str(env_cache))
        wait_for(lambda: _waiting_on_lock(proc.pid), proc, what="the run waiting on the lock")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 75
        assert "stopped: SIGTERM: stopped before the run started" in proc.stderr.read()
    finally:
        holder.close()


def _waiting_on_lock(pid):
    """True once the process has opened the cache's lock file (and so waits for it)."""
    try:
        return any(os.readlink(f).endswith(".lock") for f in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def test_a_copied_mindrecord_is_refused(sensors, tmp_path):
    """Its index names the original, which MindSpore's reader would read instead."""
    from pipeline.convert import convert

    path, _ = sensors
    convert(path, tmp_path / "a.mindrecord")
    shutil.copy(tmp_path / "a.mindrecord", tmp_path / "b.mindrecord")
    shutil.copy(tmp_path / "a.mindrecord.db", tmp_path / "b.mindrecord.db")
    with pytest.raises(DataError, match="its index b.mindrecord.db names 'a.mindrecord', not "
                                        "'b.mindrecord'"):
        open_(tmp_path / "b.mindrecord")
