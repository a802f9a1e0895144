"""`msdp COMMAND ...`: the one console command (setup.cfg's console_scripts). Each command hands
the rest of the command line to its own parser (`msdp COMMAND --help`); exit codes and error
lines are train/exits.py's. `python -m train` and `python -m train.X` are the same commands.

Nothing is imported here at module level but `sys`: `msdp fit` takes the stop signals
(train/stop.py's `install_early`) before any other import, as `python -m train` does, and the
console script runs from its own folder, so a `train.py` in the working folder is not imported
in the package's place (`python -m train` would run it).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # (typing itself is not imported: see above)
if TYPE_CHECKING:
    from typing import NoReturn

# name -> ("module:function" that takes the rest of the command line, its line in `msdp --help`)
COMMANDS = {
    "fit": ("train.cli:fit", "train a model (the trainer; python -m train)"),
    "predict": ("train.predict:main", "a trained model's predictions (and metrics) for a file"),
    "export": ("train.export:main", "a trained model as a MindIR file, for MindSpore Lite"),
    "plot": ("train.plot:main", "pictures of a run, written into its folder"),
    "compare": ("train.compare:main", "Huber against MSE on contaminated data"),
    "verify": ("train.verify:main", "check that an N-rank run ends where one process ends"),
    "convert": ("train.cli:convert", "convert a table between .csv .npy .npz .mindrecord"),
    "launch": ("train.launch:main", "run on several ranks: local, msrun or mpirun (or --path)"),
    "bench": ("train.bench.__main__:main", "the benchmarks: every row, bench.json, bench.png"),
    "config": ("train.cli:config", "the resolved config as YAML (for --config), or --markdown: "
                            "the options table"),
}


def main(argv: list[str] | None = None) -> int:
    """The console script `msdp`: run COMMAND with the rest of the command line."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fit"]:  # first, before argparse or anything else is imported
        return fit(argv[1:])
    from train.exits import handled

    return handled(_dispatch, argv)


def _dispatch(argv: list[str]) -> int:
    """Parse COMMAND and hand the rest to its own parser."""
    from importlib import import_module

    command, rest = _command(argv)
    module, function = COMMANDS[command][0].split(":")
    return getattr(import_module(module), function)(rest)


def _command(argv: list[str]) -> tuple[str, list[str]]:
    """(COMMAND, the rest): `msdp --help` lists the commands; no command or an unknown one
    raises UsageError (one line, exit 2)."""
    import argparse

    from train.exits import CommandParser, UsageError

    width = max(map(len, COMMANDS))
    p = CommandParser(
        prog="msdp", usage="msdp COMMAND [options]  (msdp COMMAND --help: its options)",
        description="Data-parallel regression training with MindSpore. Commands:\n" + "\n".join(
            f"  {name:<{width}}  {line}" for name, (_, line) in COMMANDS.items()),
        epilog="Exit codes: 0 done, 1 a run failed, 2 bad input, 74 a file could not be "
               "written,\n75 stopped at a safe point (continue with --resume).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", metavar="COMMAND", help=argparse.SUPPRESS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    try:
        args = p.parse_args(argv)
    except UsageError as e:  # `msdp --bogus`: name the commands, as for an unknown one
        raise UsageError(f"{str(e).split('; ')[0]}; a command comes first, one of: "
                         f"{', '.join(COMMANDS)} (msdp --help)") from None
    if args.command is None:
        raise UsageError(f"no command given; one of: {', '.join(COMMANDS)} (msdp --help)")
    if args.command not in COMMANDS:
        raise UsageError(f"unknown command {args.command!r}; one of: {', '.join(COMMANDS)} "
                         "(msdp --help)")
    return args.command, args.rest


def take_signals() -> None:
    """The stop signals, before any other import (train/stop.py `install_early`): what
    `msdp fit`, `python -m train` and the launchers' trainer do first. A Ctrl-C before the
    handlers exist (during the import of train.stop) is a stop too: exit 75."""
    try:
        from train.stop import install_early

        install_early()
    except KeyboardInterrupt:
        sys.stderr.write("stopped: SIGINT before the run started; nothing ran\n")
        sys.exit(75)


def fit(argv: list[str]) -> NoReturn:
    """`msdp fit`: exactly `python -m train` (train/__main__.py): the stop signals first, the
    run, then the ordered end of an MPI-launched rank (it exits the process)."""
    take_signals()
    from train.__main__ import main as run

    code = run(argv)
    from train.cluster import ending  # (after the run: it installs the signal handling first)

    ending.finish(code)  # an MPI-launched rank: the ordered end (train/cluster/ending.py)


def config(argv: list[str]) -> int:
    """`msdp config [training flags | --config FILE]`: the resolved config, as the YAML a run
    saves in config.yaml; `msdp config --markdown`: the options table (docs/options.md)."""
    from train.config import ConfigError, config_text
    from train.options import build_parser, options_table

    p = build_parser("msdp config", description="Print the resolved config of a run with these "
                     "flags, as the YAML the run saves (its config.yaml; --config takes it back), "
                     "or with --markdown alone the options table.")
    p.add_argument("--markdown", action="store_true", help="print the options table (markdown) "
                   "instead")
    ns = p.parse_args(argv)  # --help, and the flags' own refusals (ConfigError)
    if getattr(ns, "markdown", False):  # (the parser's defaults are unset)
        if argv != ["--markdown"]:
            raise ConfigError("--markdown takes no other option")
        print(options_table(), end="")
        return 0
    from train.plan import RunPlan

    plan = RunPlan.from_argv(argv)  # every automatic value decided, as a run decides it
    print(config_text(plan.cfg), end="")
    return 0


def convert(argv: list[str]) -> int:
    """`msdp convert IN OUT`: pipeline/convert.py's conversion as a command (pipeline/ holds the
    library function; the parser and the exit codes are the commands', here)."""
    from pathlib import Path

    from pipeline import convert as conv
    from pipeline.limits import DataError
    from train.exits import CommandParser

    summary = " ".join(conv.__doc__.split("\n\n")[0].split())  # the docstring's first paragraph
    p = CommandParser(prog="msdp convert", description=summary.split(": ", 1)[1])
    p.add_argument("src", type=Path, help="input: " + ", ".join(conv.FORMATS))
    p.add_argument("dst", type=Path, help="output, by its extension")
    p.add_argument("--target", default="", help="the target column of a CSV input")
    p.add_argument("--drop_nonfinite", action="store_true",
                   help="drop rows holding NaN, inf or values beyond float32 (else refused)")
    args = p.parse_args(argv)
    counts: dict = {}
    try:
        rows = conv.convert(args.src, args.dst, args.target, args.drop_nonfinite, counts)
    except DataError:
        raise
    except OSError as e:  # refused as bad input (2), as this command always did
        raise DataError(f"{args.dst}: cannot write it ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - MindSpore's MindRecord writer raises its own kinds
        why = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise DataError(f"{args.src} -> {args.dst}: {why}") from None
    dropped = counts.get("dropped", 0)
    print(f"{args.dst}: {rows} rows" + (f"; {dropped} rows with NaN, inf or values beyond "
                                        "float32 dropped" if dropped else ""))
    return 0


if __name__ == "__main__":  # `python -m train.cli ...` (what `python -m pipeline.convert` runs)
    sys.exit(main())
