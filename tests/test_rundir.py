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


# The names and readers: the writer (train/output.py) and every reader use one set of names.

def _written_run(tmp_path):
    """A run folder as train/output.py's writer leaves it, in-process (no training)."""
    from train.checkpoint import CheckpointDir
    from train.options import parse_config
    from train.output import RunOutput

    cfg = parse_config(["--epochs", "1", "--quiet"])[0]
    out = RunOutput(tmp_path / "run", rank=0, main=True, quiet=True)
    out.save_config(cfg)
    out.save_record({"argv": []})
    out.metrics({"epoch": 1, "step": 10, "loss": 0.5, "eval_loss": None})
    out.metrics({"epoch": 1, "step": 20, "loss": 0.25, "eval_loss": 0.3})
    out.summary({"features": ["x"], "w": [2.0], "b": 3.0, "target": "y",
                 "global_batch_size": 256, "curve": {"x": [0.0, 1.0], "y": [3.0, 5.0]}})
    assert CheckpointDir(out.dir).dir == rundir.ckpt_dir(out.dir)
    return cfg, out.dir


def test_the_readers_read_what_the_writer_wrote(tmp_path):
    cfg, run_dir = _written_run(tmp_path)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [rundir.CONFIG, rundir.RECORD, rundir.METRICS, rundir.SUMMARY, rundir.LOGS])
    assert rundir.rank_log(run_dir, 0).is_file() and rundir.kind(run_dir) == "run"
    assert rundir.read_config(run_dir) == cfg
    assert rundir.read_metrics(run_dir) == [(10, 0.5, None), (20, 0.25, 0.3)]
    assert rundir.read_summary(run_dir, cfg)["w"] == [2.0]


def _one_line(e):
    return len(str(e.value).splitlines()) == 1


def test_config_reader_refuses_in_one_line_and_fills_an_older_config(tmp_path):
    with pytest.raises(rundir.NotARun, match=rf"^{tmp_path} is not a run folder "
                                            r"\(no config.yaml\)$"):
        rundir.read_config(tmp_path)
    path = tmp_path / rundir.CONFIG
    for text, message in [("lr: [\n", f"the run's config {path}: not valid YAML at line 2"),
                          ("- 1\n", f"the run's config {path}: expected a mapping"),
                          ("lr: -1\n", f"{path}: lr must be > 0")]:
        path.write_text(text)
        with pytest.raises(ConfigError) as e:
            rundir.read_config(tmp_path)
        assert str(e.value).startswith(message) and _one_line(e), str(e.value)
    # A config.yaml of a release before `init` and `standardize`: what that release did.
    path.write_text("epochs: 1\n")
    cfg = rundir.read_config(tmp_path)
    assert (cfg.init, cfg.standardize, cfg.epochs) == ("random", False, 1)


def test_summary_reader_is_bounded_and_checked(tmp_path):
    cfg, run_dir = _written_run(tmp_path)
    path = run_dir / rundir.SUMMARY
    for text, message in [('{"w": [1.0', "not readable JSON"), ("[1]", "not a JSON object"),
                          ('{"w": [1.0, 2.0]}', "'w' is not 1 number(s), one per feature")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)) as e:
            rundir.read_summary(run_dir, cfg)
        assert _one_line(e)
    path.write_text('{"w": [1.0, 2.0]}')  # without a config: an object is all it checks
    assert rundir.read_summary(run_dir) == {"w": [1.0, 2.0]}
    with open(path, "r+b") as f:
        f.truncate(rundir.SUMMARY_MAX + 1)  # sparse: read no further than the bound
    with pytest.raises(ConfigError, match=f"larger than {rundir.SUMMARY_MAX} bytes"):
        rundir.read_summary(run_dir)


def test_metrics_reader_streams_past_long_and_torn_lines(tmp_path):
    path = tmp_path / rundir.METRICS
    long = '{"step": 5, "pad": "' + "x" * rundir.RECORD_MAX + '"}\n'
    path.write_text('{"step": 1, "loss": 1.0}\n' + long + '{"epoch": 1}\n{"step": 2, "lo')
    assert rundir.read_metrics(tmp_path) == [(1, 1.0, None)]
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": "0.5"}\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line 2: 'loss' and 'eval_loss'")):
        rundir.read_metrics(tmp_path)


NAMES = [rundir.CONFIG, rundir.SUMMARY, rundir.METRICS, rundir.RECORD, rundir.CKPT,
         rundir.LOGS, rundir.LOCK]


def _spelled(text):
    """A run-folder name written out in a string: as a whole path part, or a rank log."""
    parts = "|".join(re.escape(n) for n in NAMES)
    return re.search(rf"(^|/)({parts})($|/|\s)", text) or re.search(r"(^|/)rank_(\*|$)", text)


def test_only_rundir_spells_the_run_folders_names():
    """Every module of train/ names run files through train/rundir.py (docstrings, comments
    and prose in messages aside)."""
    import ast

    from helpers import REPO

    found = []
    for path in sorted((REPO / "train").rglob("*.py")):
        if path.name == "rundir.py" and path.parent.name == "train":
            continue
        tree = ast.parse(path.read_text())
        docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        found += [f"{path.relative_to(REPO)}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and id(n) not in docs and _spelled(n.value)]
    assert found == []
