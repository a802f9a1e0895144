"""Several nodes, simulated on one machine (tests/hosts.py: a network and UTS namespace per
host, joined by a bridge): launch/run_msrun.sh with NNODES=2, launch/run_mpirun.sh across both
hosts (Open MPI's remote-launch agent enters the other namespace instead of ssh), and Slurm
with one slurmd per host. Each reproduces one process, fails as a job when one host's rank
dies, and leaves nothing behind.
"""

import json
import subprocess
import time

import hosts as simulated
import pytest
import slurm as local_slurm
from helpers import (
    FAST_FAIL,
    LAUNCH,
    REPO,
    TINY,
    clean_env,
    final_params,
    finished_run,
    leftovers,
    require,
)

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
JOB = [*TINY, "--steps_per_epoch", "30", "--batch_size", "8", "--outlier_fraction", "0.2",
       "--quiet"]


@pytest.fixture(scope="module")
def hosts():
    require(simulated.available())
    with simulated.SimulatedHosts(2) as h:
        yield h


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    run = finished_run(tmp_path_factory.mktemp("single"), [*JOB, "--batch_size", "16"])
    return final_params(run)[0]


def on(hosts, i, cmd, cwd, **env):
    """Start a command on simulated host i."""
    return subprocess.Popen([*hosts.prefix(i), *cmd], cwd=cwd, env=clean_env(**FAST_FAIL, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def msrun_on_both(hosts, tmp_path, args, **env):
    """run_msrun.sh on each host (NNODES=2), node 0's name as MASTER_ADDR; (rc0, rc1, seconds)."""
    t0 = time.monotonic()
    procs = [on(hosts, i, ["bash", str(LAUNCH / "run_msrun.sh"), *args], tmp_path,
                NNODES="2", NODE_RANK=str(i), NPROC="1", MASTER_ADDR=hosts.names[0],
                MASTER_PORT="29511", LOG_DIR=str(tmp_path / f"logs{i}"), **env)
             for i in range(2)]
    rcs = [p.wait(timeout=240) for p in procs]
    return rcs, time.monotonic() - t0, [p.stderr.read() for p in procs]


def mpirun_across(hosts, tmp_path, args, **env):
    agent = hosts.agent(tmp_path / "agent.sh")
    p = on(hosts, 0, ["bash", str(LAUNCH / "run_mpirun.sh"), *args], tmp_path, NPROC="2",
           MPI_ARGS=f"--host {hosts.names[0]}:1,{hosts.names[1]}:1 --mca plm_rsh_agent {agent}",
           LOG_DIR=str(tmp_path / "logs"), **env)
    out, err = p.communicate(timeout=240)
    return p.returncode, out, err


def test_msrun_on_two_hosts_reproduces_one_process(hosts, tmp_path, single):
    rcs, _, errs = msrun_on_both(hosts, tmp_path, [*JOB, "--out", "run"])
    assert rcs == [0, 0], errs
    got, s = final_params(tmp_path / "run")
    assert max(abs(a - b) for a, b in zip(got, single)) <= 1e-5
    assert json.loads((tmp_path / "run" / "run.json").read_text())["rank_hosts"] == \
        {"0": hosts.names[0], "1": hosts.names[1]}
    assert leftovers() == []


def test_mpirun_across_two_hosts_reproduces_one_process(hosts, tmp_path, single):
    """MASTER_ADDR unset: rank 0 publishes its address on the route to the other host (its
    own name resolves to that address here, but 127.0.0.1 would hang the other rank)."""
    rc, out, err = mpirun_across(hosts, tmp_path, [*JOB, "--out", "run"])
    assert rc == 0, err[-2000:]
    got, s = final_params(tmp_path / "run")
    assert max(abs(a - b) for a, b in zip(got, single)) <= 1e-5
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert s["world_size"] == 2 and record["hosts"] == sorted(hosts.names)
    assert leftovers() == []


@pytest.mark.parametrize("launcher", ["msrun", "mpirun"])
def test_a_rank_dying_on_one_host_fails_the_job(hosts, tmp_path, launcher):
    args = [*JOB, "--out", "run"]
    if launcher == "msrun":
        rcs, seconds, errs = msrun_on_both(hosts, tmp_path, args, TRAIN_FAULT="fail@5:1")
        assert rcs[0] != 0 and rcs[1] != 0
        assert "error: rank 1 of 2 failed: test failure injected at step 5" in errs[1]
    else:
        rc, out, err = mpirun_across(hosts, tmp_path, args, TRAIN_FAULT="fail@5:1")
        assert rc != 0 and "rank 1 of 2 failed: test failure injected at step 5" in err
    assert not (tmp_path / "run" / "summary.json").exists()
    assert leftovers() == []


def test_slurm_with_a_slurmd_per_host(hosts, tmp_path_factory, single):
    """sbatch --nodes=2: one rank per simulated host through srun and PMIx; then a failing
    rank on the second host ends the job."""
    require(local_slurm.available())
    cwd = tmp_path_factory.mktemp("job")
    with local_slurm.LocalSlurm(tmp_path_factory.mktemp("slurm2"), hosts=hosts) as slurm:
        env = clean_env(REPO=str(REPO), LOG_DIR=str(cwd / "logs"), **FAST_FAIL)
        options = ["--nodes=2", "--ntasks-per-node=1", f"--output={cwd}/slurm-%j.out"]
        job = slurm.sbatch(REPO / "launch" / "slurm.sbatch", [*JOB, "--out", "run"], cwd, env,
                           options)
        info = slurm.wait(job)
        assert info["ExitCode"] == "0:0", (cwd / f"slurm-{job}.out").read_text()[-3000:]
        got, _ = final_params(cwd / "run")
        assert max(abs(a - b) for a, b in zip(got, single)) <= 1e-5
        job = slurm.sbatch(REPO / "launch" / "slurm.sbatch", [*JOB, "--out", "run2"], cwd,
                           {**env, "TRAIN_FAULT": "fail@5:1"}, options)
        info = slurm.wait(job)
        assert info["JobState"] == "FAILED"
        assert "error: rank 1 of 2 failed" in (cwd / f"slurm-{job}.out").read_text()
    assert leftovers() == []
