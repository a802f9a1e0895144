"""launch/slurm.sbatch and launch/slurm_msrun.sbatch on a real Slurm (tests/slurm.py starts a
throwaway one: munged, slurmctld, slurmd from Debian's packages, private config and ports).

2 ranks on one node reproduce one process; `scancel --signal=TERM` gives a checkpoint and job
exit code 75, and a resubmitted `--resume` job ends bitwise where an uninterrupted job ends; a
failing rank ends the job in seconds, named in the job's output file; nothing outlives a job.
"""

import sys

import psutil
import pytest
import slurm as local_slurm
from helpers import (
    FAST_FAIL,
    MARK,
    REPO,
    clean_env,
    current,
    final_params,
    finished_run,
    handles_signals,
    leftovers,
    newest_ckpt,
    require,
    shadowing_train_py,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
JOB = ["--epochs", "1", "--steps_per_epoch", "60", "--log_every", "10", "--batch_size", "8",
       "--eval_size", "256", "--outlier_fraction", "0.2", "--quiet"]
SBATCH = REPO / "launch" / "slurm.sbatch"
SBATCH_MSRUN = REPO / "launch" / "slurm_msrun.sbatch"
# A script of train.main (docs/network.md) in place of the trainer: same flags,
# signals, exit codes and logs.
PLAIN_JOB = str(REPO / "tests" / "user" / "plain_job.py")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    require(local_slurm.available())
    with local_slurm.LocalSlurm(tmp_path_factory.mktemp("slurm")) as s:
        yield s


def submit(slurm, script, args, cwd, msrun=False, **env):
    """Submit a job for 2 ranks on one node, exporting this test's environment."""
    env = clean_env(REPO=str(REPO), LOG_DIR=str(cwd / "logs"), **FAST_FAIL,
                    **({"NPROC": "2"} if msrun else {}), **env)
    options = ["--nodes=1", f"--ntasks-per-node={1 if msrun else 2}",
               f"--output={cwd}/slurm-%j.out", "--export=ALL"]
    return slurm.sbatch(script, args, cwd, env, options)


def output(cwd, job):
    return (cwd / f"slurm-{job}.out").read_text()


@pytest.fixture(scope="module")
def uninterrupted(slurm, tmp_path_factory):
    """The 2-rank job, never interrupted, and one process with the same global batch."""
    cwd = tmp_path_factory.mktemp("ref")
    job = submit(slurm, SBATCH, [*JOB, "--out", "run"], cwd)
    info = slurm.wait(job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), output(cwd, job)
    single = finished_run(cwd, [*JOB, "--batch_size", "16"], "single")
    return final_params(cwd / "run")[0], final_params(single)[0]


def test_pmix_starts_one_mpi_world(slurm, tmp_path):
    """What docs/launching.md tells users to check first: srun's PMI plugin and mpi4py agree."""
    r = slurm.run(["srun", "--mpi=list"])
    assert "pmix" in r.stdout + r.stderr
    r = slurm.run(["srun", "--mpi=pmix", "-n", "2", sys.executable, "-c",
                   "from mpi4py import MPI; print(MPI.COMM_WORLD.Get_size())"], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["2", "2"], r.stderr


def test_two_ranks_reproduce_one_process(uninterrupted):
    ranks, single = uninterrupted
    assert max(abs(a - b) for a, b in zip(ranks, single)) <= 1e-5


def test_scancel_term_checkpoints_exits_75_and_the_resumed_job_is_exact(slurm, tmp_path,
                                                                       uninterrupted):
    """Run as SCRIPT=plain_job.py (train.main): it ends bitwise where the trainer ends."""
    job = submit(slurm, SBATCH, [*JOB, "--ckpt_every", "5", "--out", "run"], tmp_path,
                 TRAIN_FAULT="step_pause=0.05", SCRIPT=PLAIN_JOB)
    wait_for(lambda: newest_ckpt(tmp_path / "run") > 0, what="a checkpoint", timeout=120)
    slurm.run(["scancel", "--signal=TERM", str(job)])
    info = slurm.wait(job)
    assert info["ExitCode"] == "75:0", output(tmp_path, job)
    assert "stopped: SIGTERM: stopped at step" in output(tmp_path, job)
    assert leftovers() == []
    job = submit(slurm, SBATCH, [*JOB, "--ckpt_every", "5", "--out", "run", "--resume"],
                 tmp_path, SCRIPT=PLAIN_JOB)
    info = slurm.wait(job)
    assert info["ExitCode"] == "0:0", output(tmp_path, job)
    got, s = final_params(tmp_path / "run")
    assert got == uninterrupted[0] and s["segments"] == 2  # bitwise
    assert leftovers() == []


def test_a_stop_before_srun_starts_is_75(slurm, tmp_path):
    """slurm.sbatch's own trap: SIGTERM to the batch script alone (`scancel --batch`) during its
    pre-flight dry run is passed on to it, and the job exits 75, not bash's 143."""
    job = submit(slurm, SBATCH, [*JOB, "--out", "run"], tmp_path, TRAIN_FAULT="start_pause=120")

    def dry_run_listening():
        for p in psutil.process_iter():
            if _env(p).get(MARK) == current["mark"] and "--dry_run" in _cmdline(p):
                return handles_signals(p.pid)
        return False

    wait_for(dry_run_listening, what="the pre-flight dry run", timeout=120)
    slurm.run(["scancel", "--batch", "--signal=TERM", str(job)])
    info = slurm.wait(job)
    assert info["ExitCode"] == "75:0", output(tmp_path, job)
    assert "stopped: SIGTERM: stopped during the dry run" in output(tmp_path, job)
    assert not (tmp_path / "run").exists()
    assert leftovers() == []


def _cmdline(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.mark.parametrize("script", ["srun", "msrun"])
def test_a_failing_rank_ends_the_job_and_its_output_names_it(slurm, tmp_path, script):
    job = submit(slurm, SBATCH if script == "srun" else SBATCH_MSRUN, [*JOB, "--out", "run"],
                 tmp_path, msrun=script == "msrun", TRAIN_FAULT="fail@5:1")
    info = slurm.wait(job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0"
    assert "error: rank 1 of 2 failed: test failure injected at step 5" in output(tmp_path, job)
    minutes, seconds = info["RunTime"].split(":")[-2:]
    assert int(minutes) * 60 + int(seconds) < 90  # seconds after start-up, not heartbeat minutes
    assert leftovers() == []


def test_msrun_per_node_scancel_term_checkpoints_and_exits_75(slurm, tmp_path):
    """Also: the node's msrun gets the allocation's CPUs (the script asks for the whole node),
    not the one core srun would give without --cpus-per-task. The workers run a script of
    train.main (SCRIPT=)."""
    job = submit(slurm, SBATCH_MSRUN, [*JOB, "--steps_per_epoch", "3000", "--ckpt_every", "10",
                                       "--out", "run"], tmp_path, msrun=True,
                 TRAIN_FAULT="step_pause=0.02", SCRIPT=PLAIN_JOB)
    wait_for(lambda: newest_ckpt(tmp_path / "run") > 0, what="a checkpoint", timeout=120)
    envs = [_env(p) for p in psutil.process_iter()]
    cpus = {e.get("SLURM_CPUS_PER_TASK") for e in envs
            if e.get(MARK) == current["mark"] and e.get("MS_ROLE") == "MS_WORKER"}
    assert cpus == {"2"}  # the test Slurm's node has 2
    assert PLAIN_JOB in (tmp_path / "logs" / "msrun_node0.log").read_text()
    slurm.run(["scancel", "--signal=TERM", str(job)])
    info = slurm.wait(job)
    assert info["ExitCode"] == "75:0", output(tmp_path, job)
    step = newest_ckpt(tmp_path / "run")
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("worker_*.log"))
    assert logs.count(f"stopped: SIGTERM: stopped at step {step} with a checkpoint") == 2
    assert leftovers() == []  # msrun's workers (sessions of their own) went with the job


def _env(p):
    """A process's environment ({} if it is gone or not readable)."""
    try:
        return p.environ()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return {}


def test_an_installed_sbatch_file_runs_a_job(slurm, tmp_path, installed):
    """`sbatch "$(python -m train.launch --path)/slurm.sbatch"` from a folder that is not a
    checkout: the script finds the installed scripts and the installed package, not a train.py
    of yours in the submit folder."""
    shadowing_train_py(tmp_path)
    env = clean_env(PYTHONPATH=str(installed), LOG_DIR=str(tmp_path / "logs"), **FAST_FAIL)
    options = ["--nodes=1", "--ntasks-per-node=2", f"--output={tmp_path}/slurm-%j.out",
               "--export=ALL"]
    job = slurm.sbatch(installed / "train" / "_launch" / "slurm.sbatch",
                       [*JOB, "--out", "run"], tmp_path, env, options)
    info = slurm.wait(job)
    assert info["ExitCode"] == "0:0", output(tmp_path, job)
    assert (tmp_path / "run" / "summary.json").exists()
    assert leftovers() == []
