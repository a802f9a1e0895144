"""`python -m train`: parse the config, join the cluster, build and run, report.

Exit codes: 0 done; 1 the run failed (names the rank and step); 2 bad config, launch setup or
checkpoint (one line on stderr, nothing damaged); 75 stopped by SIGTERM with a checkpoint
written (resume with --resume).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from train.config import Config


def main(argv: list[str] | None = None) -> int:
    """Entry point of the trainer; also what the launch scripts run on every rank."""
    from train import cluster as cl
    from train.checkpoint import CheckpointDir, CheckpointError
    from train.config import ConfigError, load_yaml, parse_config
    from train.output import check_out_dir, default_out_dir

    # 1. Parse and check everything that can be checked before any process group starts.
    try:
        cfg, _ = parse_config(argv)
        if cfg.resume:  # the run's own config is the base; flags (e.g. --epochs) override it
            saved = Path(cfg.out) / "config.yaml"
            if not CheckpointDir(Path(cfg.out)).manifests() or not saved.is_file():
                raise ConfigError(f"--resume: {cfg.out} holds no checkpoint to continue from")
            cfg, _ = parse_config(argv, base=load_yaml(str(saved)))
        elif cfg.out:
            check_out_dir(cfg.out)
        launch, world = cl.check_launch(cfg.world_size)
        if cfg.grad_backend == "mpi" and world > 1 and launch != "mpi":
            raise ConfigError(f"--grad_backend mpi needs an MPI launcher "
                              f"(launch/run_mpirun.sh or slurm.sbatch), not {launch}")
        if cfg.dry_run:
            return _dry_run(cfg, launch, world)
        cluster = cl.setup(cfg.device, cfg.world_size)  # msrun's scheduler ends inside this
    except (ConfigError, cl.ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # 2. Output: one folder for all ranks; rank 0 writes the run files. A resume first checks
    #    that the checkpoint is sound and belongs to this config, before touching anything.
    from train.checkpoint import resume_from
    from train.loop import PREEMPTED_EXIT, Preempted, train
    from train.output import RunOutput, run_record

    # Rank 0's clock and pid, so that all ranks agree and two jobs started in the same second
    # (a Slurm array) do not share a folder.
    out_dir = Path(cfg.out or default_out_dir(
        cluster.broadcast_int(int(time.time()) << 16 | os.getpid() & 0xFFFF)))
    try:
        out = RunOutput(out_dir, cluster.rank, cluster.is_main, cfg.quiet)
    except OSError as e:
        print(f"error: --out {out_dir}: cannot write there ({e.strerror or e})", file=sys.stderr)
        return 2
    ckpt = None
    if cfg.resume:
        try:
            ckpt = resume_from(out_dir, cfg, cluster.world_size, warn=out.warn)
        except CheckpointError as e:
            out.error(str(e))
            return 2
        out.truncate_metrics(ckpt.step)
    out.save_config(cfg)
    out.save_record(run_record(cfg, cluster))

    # 3. Train; a failure names this rank and takes the whole job down with it.
    try:
        summary = train(cfg, cluster, out, ckpt)
    except Preempted as e:
        out.info(str(e))
        return PREEMPTED_EXIT
    except Exception as e:  # noqa: BLE001 - report, log the traceback, exit non-zero
        out.log.exception("run failed")
        out.error(f"rank {cluster.rank} of {cluster.world_size} failed: {_first_line(e)}")
        cluster.abort()
        return 1
    out.summary(summary)
    w = ", ".join(f"{v:.4f}" for v in summary["w"])
    out.info(f"learned w = [{w}] (true {cfg.true_w}), b = {summary['b']:.4f} (true "
             f"{cfg.true_b}); eval {cfg.loss} loss {summary['eval_loss']:.4f}, eval MSE "
             f"{summary['eval_mse']:.4f}; {out_dir}")
    return 0


def _dry_run(cfg: Config, launch: str, world: int) -> int:
    """Print the resolved config and what the launcher would start; write nothing."""
    import yaml

    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    print(f"# launch: {launch}  world_size: {world}  "
          f"global_batch_size: {cfg.global_batch_size(world)}  "
          f"out: {cfg.out or 'runs/<time>-<pid>'}")
    return 0


def _first_line(e: BaseException) -> str:
    """The first informative line of an error (MindSpore's start with rulers and blank lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip().strip("-")]
    return lines[0] if lines else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
