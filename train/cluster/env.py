"""What launchers put into a process's environment, the knobs the launch scripts pass, and
the error for a launch that cannot work."""

from __future__ import annotations

from collections.abc import Mapping

# Variables that say "an MPI launcher started me": Open MPI, MPICH/Intel MPI/srun --mpi=pmi2, PMIx.
# srun sets SLURM_STEP_NUM_TASKS in every task, with or without a PMI plugin.
MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")
# Everything detect_launch() reads: a shell left with these from a cluster job is not one.
LAUNCH_VARS = ("MS_ROLE", *MPI_SIZE_VARS)
MPI_PREFIXES = ("OMPI_", "PMIX_", "PRTE_", "PMI_", "HYDRA_", "MPI_LOCALNRANKS")
DEFAULT_CLUSTER_TIMEOUT = 600  # seconds for all ranks to join (msrun's own default)
NO_PROBE = "TRAIN_NO_DEVICE_PROBE"  # =1: skip the device probe (checking Ascend command lines)


class ClusterError(RuntimeError):
    """Launch configuration that cannot work; reported as one line before any group starts."""


def check_port(port_s: str) -> None:
    """MASTER_PORT must be a port number a user process may bind."""
    if not port_s.isdigit() or not 1024 <= int(port_s) <= 65535:
        raise ClusterError(f"MASTER_PORT must be a port number in 1024-65535, got {port_s!r}")


def check_seconds(env: Mapping[str, str], name: str, default: int | None) -> None:
    """A timeout variable must be a whole number of seconds >= 1 (unset: its default)."""
    value = env.get(name, "" if default is None else str(default))
    if value == "" and default is None:
        return
    if not value.isdigit() or int(value) < 1:
        raise ClusterError(f"{name} must be a whole number of seconds >= 1, got {value!r}")
