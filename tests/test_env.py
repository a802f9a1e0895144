"""train/cluster/env.py: MASTER_PORT and the timeout variables are checked before any group
starts, with one line naming the variable and what it accepts."""

import pytest

from train.cluster.env import (
    DEFAULT_CLUSTER_TIMEOUT,
    LAUNCH_VARS,
    ClusterError,
    check_port,
    check_seconds,
)


@pytest.mark.parametrize("port", ["1024", "29500", "65535"])
def test_a_user_port_is_accepted(port):
    check_port(port)


@pytest.mark.parametrize("port", ["1023", "80", "65536", "0", "-1", "", "29500x", " 29500",
                                  "2e4"])
def test_anything_else_is_one_line_naming_the_range(port):
    with pytest.raises(ClusterError, match=r"^MASTER_PORT must be a port number in "
                                           r"1024-65535, got ") as e:
        check_port(port)
    assert repr(port) in str(e.value) and "\n" not in str(e.value)


def test_timeouts_are_whole_seconds_at_least_one():
    check_seconds({}, "CLUSTER_TIMEOUT", DEFAULT_CLUSTER_TIMEOUT)  # unset: the default
    check_seconds({}, "NODE_TIMEOUT", None)  # unset, no default: not used
    check_seconds({"NODE_TIMEOUT": "1"}, "NODE_TIMEOUT", None)
    for bad in ["0", "1.5", "-3", "ten", ""]:
        with pytest.raises(ClusterError, match=f"^NODE_TIMEOUT must be a whole number of "
                                               f"seconds >= 1, got {bad!r}$"):
            check_seconds({"NODE_TIMEOUT": bad}, "NODE_TIMEOUT", 600)


def test_every_launcher_variable_is_read():
    """detect_launch() reads these: msrun's role and each MPI flavour's world size."""
    assert {"MS_ROLE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
            "SLURM_STEP_NUM_TASKS"} == set(LAUNCH_VARS)
