"""launch/*: the real launch scripts on CPU with 2 ranks (msrun, mpirun) and Slurm's translation.

Each multi-process test is a short job on a free port and checks that no process outlives it.
"""

import json
import os
import stat
import time

import pytest
from conftest import LAUNCH, TINY, final_params, leftovers, run, train_cli

FAST_FAIL = {"NODE_TIMEOUT": "8", "CLUSTER_TIMEOUT": "60"}


def msrun(args, cwd, port, **env):
    return run(["bash", str(LAUNCH / "run_msrun.sh"), *args], cwd, NPROC="2",
               MASTER_PORT=str(port), LOG_DIR=str(cwd / "launcher_logs"), **FAST_FAIL, **env)


def mpirun(args, cwd, **env):
    return run(["bash", str(LAUNCH / "run_mpirun.sh"), *args], cwd, NPROC="2",
               LOG_DIR=str(cwd / "launcher_logs"), **FAST_FAIL, **env)


@pytest.fixture(scope="module")
def single_b16(tmp_path_factory):
    """The reference: one process with the global batch of the 2-rank runs."""
    cwd = tmp_path_factory.mktemp("single")
    r = train_cli([*TINY, "--batch_size", "16", "--outlier_fraction", "0.2", "--out", "o"], cwd)
    assert r.returncode == 0, r.stderr
    return final_params(cwd / "o")[0]


def test_msrun_two_ranks_reproduce_one_process(tmp_path, port, single_b16):
    r = msrun([*TINY, "--batch_size", "8", "--outlier_fraction", "0.2", "--out", "o"], tmp_path,
              port)
    assert r.returncode == 0, r.stderr[-2000:]
    got, s = final_params(tmp_path / "o")
    assert max(abs(a - b) for a, b in zip(got, single_b16)) <= 1e-5
    assert s["world_size"] == 2 and s["global_batch_size"] == 16 and s["launch"] == "msrun"
    logs = sorted(p.name for p in (tmp_path / "o" / "logs").iterdir())
    assert logs == ["rank_0.log", "rank_1.log"]  # every rank keeps its own log
    launcher_logs = {p.name for p in (tmp_path / "launcher_logs").iterdir()}
    assert {"worker_0.log", "worker_1.log", "scheduler.log"} <= launcher_logs
    # Rank 1 is silent on the console and writes none of the run files.
    assert "epoch 1/1" not in (tmp_path / "launcher_logs" / "worker_1.log").read_text()
    assert json.loads((tmp_path / "o" / "run.json").read_text())["rank_hosts"].keys() == {"0", "1"}
    assert leftovers(str(port)) == [] and leftovers(str(tmp_path)) == []


@pytest.mark.parametrize("backend", ["mindspore", "mpi"])
def test_mpirun_two_ranks_reproduce_one_process(tmp_path, single_b16, backend):
    r = mpirun([*TINY, "--batch_size", "8", "--outlier_fraction", "0.2", "--out", "o",
                "--grad_backend", backend], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    got, s = final_params(tmp_path / "o")
    assert max(abs(a - b) for a, b in zip(got, single_b16)) <= 1e-5
    assert s["world_size"] == 2 and s["launch"] == "mpi"
    launcher_logs = {p.name for p in (tmp_path / "launcher_logs").iterdir()}
    assert launcher_logs == {"worker_0.log", "worker_1.log", "scheduler.log"}
    assert "learned w" in r.stdout  # rank 0 keeps the console
    assert leftovers(str(tmp_path)) == [] and leftovers("train.cluster as c") == []


@pytest.mark.parametrize("launcher", ["msrun", "mpirun"])
def test_a_dying_worker_fails_the_job_quickly_and_names_its_rank(tmp_path, port, launcher):
    args = [*TINY, "--batch_size", "8", "--fail_at_step", "5", "--fail_rank", "1", "--out", "o"]
    t0 = time.monotonic()
    r = msrun(args, tmp_path, port) if launcher == "msrun" else mpirun(args, tmp_path)
    elapsed = time.monotonic() - t0
    assert r.returncode != 0
    assert elapsed < 120  # bounded by NODE_TIMEOUT, not MindSpore's default of minutes
    log1 = (tmp_path / "launcher_logs" / "worker_1.log").read_text()
    assert "rank 1 of 2 failed: test failure injected at step 5" in log1
    if launcher == "msrun":
        assert "rank 1 of 2 failed" in r.stderr  # the script echoes the trainer's line
    else:
        assert "process rank 1" in r.stderr + r.stdout  # mpirun's report names it
    assert not (tmp_path / "o" / "summary.json").exists()
    assert leftovers(str(port)) == [] and leftovers(str(tmp_path)) == []


@pytest.mark.parametrize("launcher", ["msrun", "mpirun"])
def test_wrong_world_size_is_refused_before_starting(tmp_path, port, launcher):
    args = [*TINY, "--world_size", "3", "--out", "o"]
    r = msrun(args, tmp_path, port) if launcher == "msrun" else mpirun(args, tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: --world_size 3 does not match the 2 rank(s) the "
                                f"{'msrun' if launcher == 'msrun' else 'mpi'} launcher started; "
                                "pass --world_size 2 or 0")
    assert not (tmp_path / "o").exists() and not (tmp_path / "launcher_logs").exists()


@pytest.mark.parametrize("launcher", ["msrun", "mpirun"])
def test_busy_master_port_is_refused(tmp_path, launcher):
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        busy = s.getsockname()[1]
        if launcher == "msrun":
            r = msrun([*TINY, "--out", "o"], tmp_path, busy)
        else:
            r = mpirun([*TINY, "--out", "o"], tmp_path, MASTER_PORT=str(busy))
    assert r.returncode == 2
    assert f"MASTER_PORT {busy} is already in use" in r.stderr
    assert not (tmp_path / "o").exists()


def test_mpi_grad_backend_needs_mpirun_and_cpu(tmp_path, port):
    r = msrun([*TINY, "--grad_backend", "mpi"], tmp_path, port)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --grad_backend mpi needs an MPI launcher " \
                               "(launch/run_mpirun.sh or slurm.sbatch), not msrun"
    r = train_cli([*TINY, "--grad_backend", "mpi", "--device", "Ascend"], tmp_path)
    assert r.returncode == 2 and "grad_backend mpi is for CPU runs" in r.stderr


def test_missing_mpi_is_refused(tmp_path):
    r = mpirun([*TINY], tmp_path, MPIRUN="no-such-mpirun")
    assert r.returncode == 2 and "MPI launcher 'no-such-mpirun' not found" in r.stderr


def _stub(path, body):
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_script_translates_the_allocation(tmp_path):
    """Stand-in srun/scontrol on PATH record what the batch script asks of them."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    record = tmp_path / "srun.txt"
    _stub(bin_ / "srun", f'{{ echo "ARGS $*"; echo "MASTER_ADDR=$MASTER_ADDR"; '
                         f'echo "MASTER_PORT=$MASTER_PORT"; echo "LOG_DIR=$LOG_DIR"; '
                         f'}} > {record}\nexit 7\n')
    _stub(bin_ / "scontrol", 'test "$1 $2 $3" = "show hostnames node[07-08]" || exit 9\n'
                             'printf "node07\\nnode08\\n"\n')
    r = run(["bash", str(LAUNCH / "slurm.sbatch"), "--device", "Ascend", "--epochs", "3"],
            tmp_path, PATH=f"{bin_}:{os.environ['PATH']}", SLURM_JOB_ID="4242",
            SLURM_JOB_NODELIST="node[07-08]")
    assert r.returncode == 7  # the job's exit code is srun's
    lines = record.read_text().splitlines()
    assert lines[0] == ("ARGS --mpi=pmix --kill-on-bad-exit=1 python -m train --device Ascend "
                        "--epochs 3")
    assert lines[1:] == ["MASTER_ADDR=node07", "MASTER_PORT=24242", "LOG_DIR=logs/slurm-4242"]


def test_run_local_is_one_process_even_in_a_cluster_shell(tmp_path):
    r = run(["bash", str(LAUNCH / "run_local.sh"), *TINY, "--out", "o"], tmp_path,
            MS_ROLE="MS_WORKER", MS_WORKER_NUM="8", OMPI_COMM_WORLD_SIZE="4",
            SLURM_STEP_NUM_TASKS="4")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["launch"] == "single"
