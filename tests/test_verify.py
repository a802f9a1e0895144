"""train/verify.py: the user-facing N-ranks-equal-one-process check, through its command line."""

import sys

import pytest
from helpers import TINY, leftovers, run

pytestmark = pytest.mark.integration  # every test here starts a process


def test_verify_passes_and_prints_the_difference(tmp_path, port):
    r = run([sys.executable, "-m", "train.verify", "--world_size", "2", "--out", "v", *TINY,
             "--batch_size", "8", "--clip_norm", "0.5"], tmp_path, MASTER_PORT=str(port),
            NODE_TIMEOUT="8")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.strip().startswith("2 ranks (msrun), batch 8") for ln in lines)
    assert any(ln.strip().startswith("1 process, batch 8 x accum 2") for ln in lines)
    verdict = next(ln for ln in lines if ln.startswith("largest parameter difference"))
    assert verdict.endswith("-> PASS")
    assert float(verdict.split(": ")[1].split()[0]) <= 1e-5
    assert leftovers() == []


def test_verify_refuses_bad_input(tmp_path):
    r = run([sys.executable, "-m", "train.verify", "--world_size", "1"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: --world_size must be >= 2, got 1"
    r = run([sys.executable, "-m", "train.verify", "--lr", "0"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: lr must be > 0 (at least 1.2e-38, float32's smallest normal number), got 0.0")
    r = run([sys.executable, "-m", "train.verify", "--dry_run"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == \
        "error: --dry_run is decided by msdp verify itself"
