"""Installed, not only checked out: the wheel holds the launch scripts and the sbatch files
(train/launch.py); `python -m train.launch` runs them from site-packages, one process, msrun
and mpirun, with the installed package, from a folder that is not a checkout; the console
script `msdp` runs the installed package."""

import sys

import pytest
from helpers import FAST_FAIL, REPO, TINY, leftovers, run

pytestmark = pytest.mark.integration  # every test here starts a process

SCRIPTS = {"__init__.py", "_common.sh", "run_local.sh", "run_msrun.sh", "run_mpirun.sh",
           "slurm.sbatch", "slurm_msrun.sbatch", "trainer.py"}


def test_the_wheel_holds_the_scripts(installed, tmp_path):
    r = run([sys.executable, "-m", "train.launch", "--path"], tmp_path,
            PYTHONPATH=str(installed))
    assert r.returncode == 0 and r.stdout.strip() == str(installed / "train" / "_launch")
    assert SCRIPTS <= {p.name for p in (installed / "train" / "_launch").iterdir()}
    r = run([sys.executable, "-c", "import train; print(train.__file__)"], tmp_path,
            PYTHONPATH=str(installed))
    assert r.stdout.strip().startswith(str(installed))
    # install hints (a missing matplotlib or mpi4py) name the installed form, even from a checkout
    hint = [sys.executable, "-c", "from train.launch import pip_hint; print(pip_hint('plot'))"]
    for where in (installed, REPO):
        r = run(hint, tmp_path, PYTHONPATH=str(where))
        assert r.stdout.strip() == "pip install 'ms-dp-regression[plot]'", r.stderr


def test_the_console_script_runs_the_package_not_a_train_py_of_yours(installed, tmp_path):
    """`msdp` (setup.cfg's console script) from a folder holding a train.py of the user's:
    `python -m train` runs that file (the working folder comes first on sys.path), msdp the
    package."""
    msdp = installed / "bin" / "msdp"
    (tmp_path / "train.py").write_text("print('the user train.py ran')\n")
    r = run([str(msdp), "--help"], tmp_path, PYTHONPATH=str(installed))
    assert r.returncode == 0 and "fit " in r.stdout and "predict " in r.stdout, r.stderr
    r = run([str(msdp), "fit", "--dry_run", "--epochs", "2"], tmp_path, PYTHONPATH=str(installed))
    assert r.returncode == 0 and "epochs: 2" in r.stdout and "# launch: single" in r.stdout, \
        r.stderr
    assert "user train.py" not in r.stdout
    r = run([str(msdp), "config", "--epochs", "2"], tmp_path, PYTHONPATH=str(installed))
    assert r.returncode == 0 and "epochs: 2" in r.stdout and "#" not in r.stdout, r.stderr
    r = run([sys.executable, "-m", "train", "--dry_run"], tmp_path, PYTHONPATH=str(installed))
    assert r.stdout.strip() == "the user train.py ran"  # the bug the console script avoids


@pytest.mark.parametrize("launcher", ["local", "msrun", "mpirun"])
def test_the_installed_launchers_run(installed, tmp_path, port, launcher):
    """`local` runs a script of train.main (SCRIPT=), with the installed package."""
    script = {"SCRIPT": str(REPO / "tests" / "user" / "plain_job.py")} if launcher == "local" \
        else {}
    r = run([sys.executable, "-m", "train.launch", launcher, *TINY, "--out", "o"], tmp_path,
            PYTHONPATH=str(installed), NPROC="2", MASTER_PORT=str(port),
            LOG_DIR=str(tmp_path / "logs"), **FAST_FAIL, **script)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "o" / "summary.json").exists()
    if launcher == "msrun":  # the workers ran the installed shim, with the installed package
        log = (tmp_path / "logs" / "msrun_node0.log").read_text()
        assert f"{installed}/train/_launch/trainer.py" in log
    assert leftovers() == []


def test_a_bad_launcher_is_one_line(tmp_path):
    r = run([sys.executable, "-m", "train.launch", "slurm"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: unknown launcher 'slurm'; usage: msdp launch "
                                "{local,msrun,mpirun} [trainer options] | --path")
