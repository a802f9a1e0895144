"""train/cluster/__init__.py: launcher detection, device choice, pre-flight checks, one-rank
helpers."""


import numpy as np
import pytest

from train import cluster as cl


@pytest.mark.parametrize("env,expected", [
    ({}, "single"),
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "8"}, "msrun"),
    ({"MS_ROLE": "MS_SCHED"}, "msrun"),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "mpi"),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, "single"),
    ({"PMI_SIZE": "2"}, "mpi"),
    ({"SLURM_STEP_NUM_TASKS": "16", "SLURM_PROCID": "3"}, "mpi"),
    ({"SLURM_PROCID": "0"}, "single"),  # a batch script itself, not an srun task
])
def test_detect_launch(env, expected):
    assert cl.detect_launch(env) == expected


def test_device_id_per_launcher():
    assert cl.device_id("single", {}) == 0
    assert cl.device_id("single", {"DEVICE_ID": "3"}) == 3
    assert cl.device_id("msrun", {"DEVICE_ID": "5"}) == 5  # msrun exports it per worker
    assert cl.device_id("mpi", {"DEVICE_ID": "5"}, local_rank=2) == 2  # index on the host


@pytest.mark.parametrize("device,visible,local_rank,expected", [
    ("Ascend", "3", 5, 0),  # each task sees only its own device (Slurm's gres): the first
    ("Ascend", "4,5,6,7", 3, 3),  # a shared node: 4 ranks on its devices 4-7
    ("Ascend", "4,5,6,7", 5, None),  # 6 or more ranks on 4 devices: refused
    ("Ascend", "", 5, 5),  # unset: every device of the host is visible
    ("GPU", "0,1", 1, 1),
])
def test_an_mpi_ranks_device_follows_the_devices_it_can_see(device, visible, local_rank,
                                                            expected):
    env = {cl.VISIBLE_DEVICES[device]: visible} if visible else {}
    if expected is None:
        with pytest.raises(cl.ClusterError, match="ranks would share a device"):
            cl.device_id("mpi", env, local_rank, device)
    else:
        assert cl.device_id("mpi", env, local_rank, device) == expected


def test_a_forwarded_sigusr1_is_named_as_the_signal_the_launcher_got(tmp_path, monkeypatch):
    """run_mpirun.sh writes the signal it was sent into TRAIN_STOP_SIGNAL_FILE (mpirun forwards
    only SIGUSR1); the file is untrusted: anything but a stop signal's name is SIGUSR1."""
    from train.stop import SIGNAL_FILE, forwarded_name

    f = tmp_path / ".job.signal"
    monkeypatch.setenv(SIGNAL_FILE, str(f))
    assert forwarded_name() == "SIGUSR1"  # no file (a host that does not share LOG_DIR)
    for text, name in [("TERM\n", "SIGTERM"), ("HUP", "SIGHUP"), ("KILL\n", "SIGUSR1"),
                       ("TERM" * 100, "SIGUSR1")]:
        f.write_text(text)
        assert forwarded_name() == name
    (tmp_path / "elsewhere").write_text("INT\n")
    f.unlink()
    f.symlink_to(tmp_path / "elsewhere")
    assert forwarded_name() == "SIGUSR1"  # never through a link
    monkeypatch.delenv(SIGNAL_FILE)
    assert forwarded_name() == "SIGUSR1"


def test_single_process_is_rank_0_of_1():
    c = cl.setup("CPU", 0, env={})
    assert (c.rank, c.world_size, c.launch, c.is_main) == (0, 1, "single", True)
    assert c.grad_reducer([]) is None
    np.testing.assert_array_equal(c.all_sum(np.array([1.5, 2.0])), [1.5, 2.0])
    assert c.broadcast_int(1_790_000_000) == 1_790_000_000
    c.check_identical([np.ones(3, np.float32)])  # one rank: trivially identical


def test_world_size_mismatch_is_refused_before_anything_starts():
    with pytest.raises(cl.ClusterError, match="--world_size 2 does not match the 1 rank"):
        cl.setup("CPU", 2, env={})
    with pytest.raises(cl.ClusterError, match="--world_size 2 does not match the 8 rank"):
        cl.setup("CPU", 2, env={"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "8"})
    with pytest.raises(cl.ClusterError, match="--world_size 3 does not match the 4 rank"):
        cl.setup("CPU", 3, env={"OMPI_COMM_WORLD_SIZE": "4"})


def test_check_identical_catches_ranks_that_differ(monkeypatch):
    """Three simulated ranks: the all-reduce returns the sum of their contributions."""
    c = cl.Cluster(rank=0, world_size=3)
    mine = [np.array([1.0, 2.0], np.float32)]
    other = [np.array([1.0, 2.0000002], np.float32)]  # one bit away
    monkeypatch.setattr(c, "all_sum", lambda v: 3 * np.asarray(v, np.float32))
    c.check_identical(mine)  # all three hold the same bytes
    monkeypatch.setattr(c, "all_sum",
                        lambda v: 2 * np.asarray(v, np.float32) + cl.checksum_terms(other))
    with pytest.raises(RuntimeError, match="parameters differ across ranks"):
        c.check_identical(mine)


@pytest.mark.parametrize("env,match", [
    ({"CLUSTER_TIMEOUT": "soon"}, "CLUSTER_TIMEOUT must be a whole number of seconds >= 1"),
    ({"MS_NODE_TIMEOUT": "0"}, "MS_NODE_TIMEOUT must be a whole number of seconds >= 1"),
    ({"OMPI_COMM_WORLD_SIZE": "2", "MASTER_PORT": "99999"}, "MASTER_PORT must be a port number"),
    ({"OMPI_COMM_WORLD_SIZE": "2", "MASTER_ADDR": "x.invalid"}, "MASTER_ADDR 'x.invalid' does"),
    ({"OMPI_COMM_WORLD_SIZE": "2", "MASTER_IFACE": "nope9"}, "MASTER_IFACE 'nope9' is not an"),
])
def test_bad_launch_variables_are_refused(env, match):
    with pytest.raises(cl.ClusterError, match=match):
        cl.check_launch(0, env)


def test_device_probe():
    cl.probe_device("CPU", {})
    with pytest.raises(cl.ClusterError, match="--device Ascend: no /dev/davinci"):
        cl.probe_device("Ascend", {})
    cl.probe_device("Ascend", {"TRAIN_NO_DEVICE_PROBE": "1"})
