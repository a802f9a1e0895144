"""`python -m train`: parse the config, own the run folder, join the cluster, train, report.

Exit codes: 0 done; 1 the run failed (names the rank and step); 2 bad input: config, flags,
data, launch environment, run folder or checkpoint (one line on stderr, nothing damaged);
74 a run file could not be written (disk full, permissions; earlier files intact);
75 stopped by SIGTERM, SIGINT, SIGHUP or SIGUSR1 at a safe point: continue with --resume.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # `python -m train`: the stop signals are taken before anything else
    # (train/cli.py's take_signals, written out: importing train.cli here would close an import
    # circle, train.cli's `fit` importing this module)
    try:
        from train.stop import install_early

        install_early()
    except KeyboardInterrupt:  # a Ctrl-C before the handlers existed (import of train.stop)
        sys.stderr.write("stopped: SIGINT before the run started; nothing ran\n")
        sys.exit(75)

# Only train.stop at import time: its signal handling must be in place before any module
# starts a thread (NumPy's BLAS, MindSpore), so that every thread inherits it.
import os  # noqa: E402 - after the handlers
from dataclasses import dataclass  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from train.stop import PREEMPTED_EXIT, StopRequest  # noqa: E402

if TYPE_CHECKING:
    from train import cluster as cl
    from train.config import Config
    from train.output import RunOutput
    from train.plan import RunPlan


@dataclass
class Outcome:
    """How a run ended: its exit code, its summary (finished runs) and its error line."""

    code: int
    summary: dict[str, Any] | None = None
    message: str = ""


def main(argv: list[str] | None = None, *, model: Any = None, loss: Any = None,
         data: Any = None) -> int:
    """Entry point of the trainer; also what the launch scripts run on every rank. `model`,
    `loss` and `data` are your callables (train.main, docs/network.md)."""
    return run(argv, model=model, loss=loss, data=data).code


def run(argv: list[str] | None = None, *, model: Any = None, loss: Any = None,
        data: Any = None) -> Outcome:
    """`main`, returning the summary and the error line as well (train.fit)."""
    stop = StopRequest().install()  # first: a signal during start-up is caught too
    from train import cluster as cl
    from train.cluster.process import die_with_launcher
    from train.exits import said
    from train.plan import RunPlan
    from train.user import UserCodeFailed, with_objects

    if cl.detect_launch(os.environ) != "single":
        die_with_launcher()  # ranks (msrun's, mpirun's) must not outlive their launcher
    cluster = None
    # 1. Everything that can be refused is refused before any process group starts.
    try:
        argv = with_objects(sys.argv[1:] if argv is None else argv, model=model, loss=loss,
                            data=data)
        plan = RunPlan.from_argv(argv, stop.check)
        if plan.cfg.dry_run:
            plan.faults.pause("start_pause", until=lambda: stop.requested)
            rc = plan.dry_run()
            stop.check("during the dry run")  # a signal meanwhile: 75, as a run would
            return Outcome(rc)
        if plan.launch == "single" and plan.layout is not None:
            plan.prepare()  # own the folder, choose the checkpoint: before importing MindSpore
        plan.faults.pause("start_pause", until=lambda: stop.requested)
        cluster = cl.setup(plan.cfg.device, plan.cfg.world_size, plan.cfg.deterministic,
                           stop=stop, faults=plan.faults)
        plan.build_network(cluster)  # a network of yours: built now, its checkpoint chosen next
        if plan.launch != "single":
            plan.prepare_on_ranks(cluster)  # rank 0 owns the folder and shares its decisions
        elif plan.owner is None:
            plan.prepare()
    except Exception as e:  # noqa: BLE001 - train/exits.py's table: a refusal (2), a stop
        e = _as_user_failure(e)  # during start-up (75), a file not written (74), your code (1)
        refusal = said(e)
        if refusal is None:
            raise
        if isinstance(e, UserCodeFailed):  # your code raised: its traceback first, the ranks down
            print(e.trace, end="", file=sys.stderr)
            if cluster is not None:
                cluster.abort()
        return _said(*refusal)
    return _train(plan, cluster, stop)


def _as_user_failure(e: BaseException) -> BaseException:
    """A source of yours that raised (pipeline/user.py's SourceRaised, which the data layer
    cannot name train's class for) as the UserCodeFailed it is; anything else as it is."""
    from pipeline.user import SourceRaised
    from train.user import UserCodeFailed

    return UserCodeFailed(e.what, e.exc) if isinstance(e, SourceRaised) else e


def _said(code: int, line: str) -> Outcome:
    """Print a refusal's one line on stderr; the outcome that carries it."""
    print(line, file=sys.stderr)
    return Outcome(code, message=line)


def _train(plan: RunPlan, cluster: cl.Cluster, stop: StopRequest) -> Outcome:
    """2. Output and training; a failure names this rank and takes the whole job down."""
    from train.exits import IO as IO_EXIT
    from train.exits import one_line
    from train.loop import Trainer
    from train.output import OutputError, RunOutput, run_record
    from train.stop import Preempted

    cfg = plan.cfg
    try:
        out = RunOutput(plan.out_dir, cluster.rank, cluster.is_main, cfg.quiet)
    except OutputError as e:
        return _said(IO_EXIT, f"error: rank {cluster.rank}: {one_line(e)}")
    who = f"rank {cluster.rank} of {cluster.world_size}"
    try:
        plan.start_output(out, cluster)
        out.save_record(run_record(cfg, cluster, plan.faults))
        summary = Trainer(plan, cluster, out, stop).run()
        out.summary(summary)
        _final_line(cfg, summary, out)
    except Preempted as e:
        out.stopped(str(e))
        return Outcome(PREEMPTED_EXIT, message=f"stopped: {e}")
    except OutputError as e:
        return _failed(out, cluster, IO_EXIT, f"{who}: {e}")
    except Exception as e:  # noqa: BLE001 - report, log the traceback, exit non-zero
        code, line, trace = _failure(plan, e)
        if trace:
            out.log.error(trace)
        return _failed(out, cluster, code, f"{who}{line}")
    return Outcome(0, summary)


def _failed(out: RunOutput, cluster: cl.Cluster, code: int, msg: str) -> Outcome:
    """This rank's error line; the other ranks may be waiting for it in a collective."""
    out.error(msg)
    cluster.abort()
    return Outcome(code, message=f"error: {msg}")


def _failure(plan: RunPlan, e: Exception) -> tuple[int, str, str]:
    """(exit code, the line after the rank, the traceback to log) of a failed run: the data
    to blame (a file rewritten under the run, a row of yours of another shape: 2), your code
    (its traceback, its line: 1), or anything else (1)."""
    import traceback

    from pipeline.limits import DataError
    from train.config import ConfigError
    from train.user import UserCodeFailed, user_frame

    cause = _as_user_failure(plan.source.failure() or e)
    if isinstance(cause, UserCodeFailed):
        return 1, f" failed in your code: {cause}", cause.trace
    if isinstance(cause, (DataError, ConfigError)):  # your data or code, refused (exit 2)
        return 2, f": {cause}", ""
    trace = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    where = user_frame(e)
    return 1, f" failed: {_first_line(e)}" + (f" ({where})" if where else ""), trace


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
    code = main()
    from train.cluster import ending  # (after main: it installs the signal handling first)

    ending.finish(code)  # an MPI-launched rank: the ordered end (train/cluster/ending.py)
