"""train/rundir.py: a run folder has one owner; a dead owner never keeps it."""

import os
import re
import signal
import socket
import subprocess
import sys

import pytest
from helpers import TINY, clean_env, start, train_cli, wait_for

from pipeline.fileio import write_atomic
from train import rundir
from train.config import ConfigError


@pytest.mark.integration
def test_one_owner_at_a_time_and_the_kernel_releases_it(tmp_path):
    out = tmp_path / "run"
    owner = rundir.claim(out, resume=False)
    with pytest.raises(ConfigError, match=rf"in use by pid {os.getpid()} on host "
                                          rf"{socket.gethostname()}"):
        rundir.claim(out, resume=False)
    owner.release()
    rundir.claim(out, resume=False).release()  # empty again (only the lock file): a fresh run
    # An owner killed with SIGKILL leaves no lock behind.
    code = f"from train import rundir; rundir.claim(__import__('pathlib').Path({str(out)!r}), " \
           "False); print('owned', flush=True); __import__('time').sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=clean_env(), text=True,
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "owned"
    with pytest.raises(ConfigError, match=f"in use by pid {proc.pid}"):
        rundir.check(out, resume=False)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rundir.claim(out, resume=False).release()


def test_what_a_fresh_run_and_a_resume_accept(tmp_path):
    with pytest.raises(ConfigError, match="holds no run to continue"):
        rundir.claim(tmp_path / "typo", resume=True)
    assert not (tmp_path / "typo").exists()  # a refused resume leaves nothing behind
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty"):
        rundir.claim(tmp_path / "other", resume=False)
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("lr: 0.1\n")
    with pytest.raises(ConfigError, match="continue it with --resume"):
        rundir.claim(tmp_path / "run", resume=False)
    rundir.claim(tmp_path / "run", resume=True).release()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        rundir.claim(tmp_path / "file", resume=False)
    # A run killed between taking its folder and writing config.yaml leaves only the lock
    # file and logs/: that folder is still free for a fresh run.
    (tmp_path / "killed" / "logs").mkdir(parents=True)
    (tmp_path / "killed" / ".lock").write_text("")
    assert rundir.kind(tmp_path / "killed") == "empty"
    rundir.claim(tmp_path / "killed", resume=False).release()
    one_line = r"^--out [^\n]*: cannot write there \(File name too long\)$"
    with pytest.raises(ConfigError, match=one_line):
        rundir.claim(tmp_path / ("x" * 300), resume=False)  # ENAMETOOLONG: one line, no trace


@pytest.mark.integration
@pytest.mark.parametrize("second", ["fresh", "resume"])
def test_a_second_process_is_refused_while_the_first_trains(tmp_path, second):
    first = start([*TINY, "--steps_per_epoch", "400", "--out", "run", "--quiet"], tmp_path,
                  TRAIN_FAULT="step_pause=0.02")
    wait_for(lambda: (tmp_path / "run" / "config.yaml").exists(), first, what="the first run")
    args = [*TINY, "--out", "run"] + (["--resume"] if second == "resume" else [])
    r = train_cli(args, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: --out run is in use by pid {first.pid} on host {socket.gethostname()} (since ")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 75


LINK = "a symbolic link (a run never writes through one)"


@pytest.mark.parametrize("name", [".lock", "logs", "logs/rank_0.log", "ckpt", "metrics.jsonl"])
def test_a_run_never_writes_through_a_link(tmp_path, name):
    """A link planted where a run appends or writes into is refused before anything is
    written (a fresh folder may hold only the lock and logs; the others need --resume)."""
    victim = tmp_path / "victim"
    victim.mkdir() if name in ("logs", "ckpt") else victim.write_text("mine")
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    resume = name not in (".lock", "logs")
    if resume:
        (run_dir / "config.yaml").write_text("epochs: 1\n")
    if name == "logs":
        (run_dir / "logs").rmdir()
    (run_dir / name).symlink_to(victim)
    with pytest.raises(ConfigError, match=re.escape(f"--out {run_dir}: {name} is {LINK}; remove")):
        rundir.claim(run_dir, resume=resume)
    assert (run_dir / name).is_symlink()
    if victim.is_dir():
        assert not list(victim.iterdir())
    else:
        assert victim.read_text() == "mine"


def test_the_writers_replace_or_refuse_a_link(tmp_path):
    """What claim cannot see (a link put there later): whole files replace it, appends and
    sub-folders refuse it; the file it points to is never written."""
    victim = tmp_path / "victim"
    victim.write_text("mine")
    (tmp_path / "loss.png").symlink_to(victim)
    write_atomic(tmp_path / "loss.png", b"png")
    assert not (tmp_path / "loss.png").is_symlink() and (tmp_path / "loss.png").read_bytes() \
        == b"png"
    (tmp_path / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match=re.escape(LINK)):
        rundir.open_append(tmp_path / "metrics.jsonl")
    (tmp_path / "ckpt").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(OSError, match="a symbolic link"):
        rundir.subfolder(tmp_path / "ckpt")
    fd = rundir.open_append(tmp_path / "new.log")  # a regular file is created and appended to
    os.write(fd, b"line\n")
    os.close(fd)
    assert (tmp_path / "new.log").read_text() == "line\n" and victim.read_text() == "mine"


def test_a_lock_that_is_no_regular_file_is_refused(tmp_path):
    """A FIFO as `.lock` opened without blocking, then refused (ftruncate raised EINVAL)."""
    os.mkfifo(tmp_path / ".lock")
    with pytest.raises(ConfigError, match=r"its \.lock is not a regular file; remove it"):
        rundir.claim(tmp_path, resume=False)


@pytest.mark.integration
@pytest.mark.parametrize("case", ["fresh run, .lock", "resume, logs/rank_0.log"])
def test_the_trainer_refuses_a_planted_link_in_one_line(tmp_path, case):
    """The reported cases, through `python -m train` (refused before MindSpore is imported)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    name = case.split(", ")[1]
    (tmp_path / "run" / "logs").mkdir(parents=True)
    if "resume" in case:
        (tmp_path / "run" / "config.yaml").write_text("epochs: 1\n")
    (tmp_path / "run" / name).symlink_to(victim)
    r = train_cli([*TINY, "--out", "run", *(["--resume"] if "resume" in case else [])],
                  tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: --out run: {name} is {LINK}; remove it, or choose another folder")
    assert victim.read_text() == "mine"
