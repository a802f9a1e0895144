"""train/output.py: what reaches the console (progress bar, dry run) and the run folder."""

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import pytest
import yaml
from helpers import TINY, clean_env, train_cli

pytestmark = pytest.mark.integration  # every test here starts a process


def _in_a_terminal(args, cwd):
    """Run the trainer with a pseudo-terminal as stdout/stderr; return everything it printed."""
    master, slave = pty.openpty()
    # A real terminal has a size; tqdm draws nothing on a 0-column one.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=cwd, env=clean_env(),
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_in_a_terminal_only(tmp_path):
    shown = _in_a_terminal([*TINY, "--out", "a"], tmp_path)
    assert "step/s" in shown or "s/step" in shown  # tqdm's bar
    assert "20/20" in shown
    quiet = _in_a_terminal([*TINY, "--out", "b", "--quiet"], tmp_path)
    assert "20/20" not in quiet and "epoch 1/1" in quiet  # the epoch line is printed either way
    piped = train_cli([*TINY, "--out", "c"], tmp_path)
    assert "20/20" not in piped.stderr + piped.stdout and "\r" not in piped.stderr
    assert "epoch 1/1" in piped.stdout


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    r = train_cli(["--dry_run", "--batch_size", "32", "--accum_steps", "2", "--out", "x"],
                  tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    config = [ln for ln in lines if not ln.startswith("#")]
    plan = [ln for ln in lines if ln.startswith("#")]
    assert yaml.safe_load("\n".join(config))["batch_size"] == 32
    assert plan[:2] == ["# launch: single  world_size: 1  global_batch_size: 64  out: x",
                        "# device: CPU  step path: host feeding, 64 step(s) per dataset item"]
    assert list(tmp_path.iterdir()) == []
    r = train_cli(["--dry_run", "--sink_size", "4", "--log_every", "40"], tmp_path,
                  MS_ROLE="MS_WORKER", MS_WORKER_NUM="8")
    assert "# launch: msrun  world_size: 8  global_batch_size: 2048" in r.stdout
    assert "(--sink_size 4 is for Ascend/GPU: MindSpore's data sink does not run on CPU)" \
        in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_run_record_names_versions_ranks_and_launch(tmp_path):
    assert train_cli([*TINY, "--out", "o"], tmp_path).returncode == 0
    import json

    rec = json.loads((tmp_path / "o" / "run.json").read_text())
    assert rec["launch"] == "single" and rec["world_size"] == 1 and rec["seed"] == 0
    assert set(rec["versions"]) == {"python", "mindspore", "numpy", "mpi4py"}
    assert rec["rank_hosts"] == {"0": os.uname().nodename} and rec["config"]["epochs"] == 1
