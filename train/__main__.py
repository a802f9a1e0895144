"""`python -m train`: parse the config, own the run folder, join the cluster, train, report.

Exit codes: 0 done; 1 the run failed (names the rank and step); 2 bad input: config, flags,
data, launch environment, run folder or checkpoint (one line on stderr, nothing damaged);
74 a run file could not be written (disk full, permissions; earlier files intact);
75 stopped by SIGTERM, SIGINT or SIGUSR1 at a safe point: continue with --resume.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

# Only train.stop at import time: its signal handling must be in place before any module
# starts a thread (NumPy's BLAS, MindSpore), so that every thread inherits it.
from train.stop import PREEMPTED_EXIT, StopRequest

if TYPE_CHECKING:
    from train import cluster as cl
    from train.config import Config
    from train.output import RunOutput
    from train.plan import RunPlan


def main(argv: list[str] | None = None) -> int:
    """Entry point of the trainer; also what the launch scripts run on every rank."""
    stop = StopRequest().install()  # first: a signal during start-up is caught too
    from pipeline.limits import DataError
    from train import cluster as cl
    from train.checkpoint import CheckpointError
    from train.cluster.process import die_with_launcher
    from train.config import ConfigError
    from train.faults import FaultError
    from train.output import IO_EXIT, OutputError, one_line
    from train.plan import RunPlan
    from train.stop import Preempted

    if cl.detect_launch(os.environ) != "single":
        die_with_launcher()  # ranks (msrun's, mpirun's) must not outlive their launcher
    # 1. Everything that can be refused is refused before any process group starts.
    try:
        plan = RunPlan.from_argv(argv, stop.check)
        if plan.cfg.dry_run:
            plan.faults.pause("start_pause", until=lambda: stop.requested)
            rc = plan.dry_run()
            stop.check("during the dry run")  # a signal meanwhile: 75, as a run would
            return rc
        if plan.launch == "single":
            plan.prepare()  # own the folder, choose the checkpoint: before importing MindSpore
        plan.faults.pause("start_pause", until=lambda: stop.requested)
        cluster = cl.setup(plan.cfg.device, plan.cfg.world_size, plan.cfg.deterministic)
        if plan.launch != "single":
            plan.prepare_on_ranks(cluster)  # rank 0 owns the folder and shares its decisions
    except (ConfigError, cl.ClusterError, CheckpointError, FaultError, DataError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except OutputError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return IO_EXIT
    except Preempted as e:  # a stop signal during start-up (a data conversion, a dry run)
        print(f"stopped: {one_line(e)}", file=sys.stderr)
        return PREEMPTED_EXIT
    return _train(plan, cluster, stop)


def _train(plan: RunPlan, cluster: cl.Cluster, stop: StopRequest) -> int:
    """2. Output and training; a failure names this rank and takes the whole job down."""
    from train.loop import Trainer
    from train.output import IO_EXIT, OutputError, RunOutput, one_line, run_record
    from train.stop import Preempted

    cfg = plan.cfg
    try:
        out = RunOutput(plan.out_dir, cluster.rank, cluster.is_main, cfg.quiet)
    except OutputError as e:
        print(f"error: rank {cluster.rank}: {one_line(e)}", file=sys.stderr)
        return IO_EXIT
    try:
        plan.start_output(out, cluster)
        out.save_record(run_record(cfg, cluster, plan.faults))
        summary = Trainer(plan, cluster, out, stop).run()
        out.summary(summary)
        _final_line(cfg, summary, out)
    except Preempted as e:
        out.stopped(str(e))
        return PREEMPTED_EXIT
    except OutputError as e:
        out.error(f"rank {cluster.rank} of {cluster.world_size}: {e}")
        cluster.abort()  # the other ranks may be waiting for this one in a collective
        return IO_EXIT
    except Exception as e:  # noqa: BLE001 - report, log the traceback, exit non-zero
        if plan.source.changed():  # the data file was rewritten under the run (a reader fails)
            out.error(f"rank {cluster.rank} of {cluster.world_size}: {cfg.data} changed while "
                      "training (rewritten or truncated); the checkpoints written before are "
                      "intact; --resume once the file is back as it was, or start a new run")
            cluster.abort()
            return 2
        out.log.exception("run failed")
        out.error(f"rank {cluster.rank} of {cluster.world_size} failed: {_first_line(e)}")
        cluster.abort()
        return 1
    return 0


def _final_line(cfg: Config, summary: dict, out: RunOutput) -> None:
    """Rank 0's last lines: the convergence figures are measured there only."""
    from train.report import final_lines

    if not out.main:
        return
    line, warnings = final_lines(cfg, summary, out.dir)
    for msg in warnings:
        out.warn(msg)
    out.info(line)


def _first_line(e: BaseException) -> str:
    """The informative line of an error. MindSpore's messages open with rulers and section
    titles (`- Kernel error:`, `- C++ Call Stack:`); the first line after those says what
    failed (`Launch kernel failed: AllReduce`)."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    lines = [ln for ln in lines if ln.strip("-= ") and not (ln.startswith("- ")
                                                            and ln.endswith(":"))]
    return lines[0] if lines else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
