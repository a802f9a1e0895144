"""train/cli.py and train/exits.py: the one command `msdp` (its commands, its refusals), the
one table from exceptions to exit codes, and the `python -m train.X` forms as aliases."""

import subprocess
import sys

import pytest
from helpers import run

from train import cli, exits

COMMANDS = ["fit", "predict", "export", "plot", "compare", "verify", "convert", "launch",
            "bench", "config"]


def _msdp(capsys, *argv):
    """`msdp ARGV` in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # --help ends in argparse's exit
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_every_command_with_one_line(capsys):
    code, out, _ = _msdp(capsys, "--help")
    assert code == 0 and list(cli.COMMANDS) == COMMANDS
    for name in COMMANDS:
        assert [ln for ln in out.splitlines() if ln.split()[:1] == [name]] != [], name


@pytest.mark.parametrize("argv,says", [((), "no command given"),
                                       (("bogus", "x"), "unknown command 'bogus'"),
                                       (("--bogus",), "--bogus; a command comes first, one of: "
                                                      "fit, predict,"),
                                       (("--bogus",), "unrecognized arguments: --bogus")])
def test_no_command_or_an_unknown_one_is_one_line_and_2(capsys, argv, says):
    code, out, err = _msdp(capsys, *argv)
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: ")
    assert says in lines[0], lines


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "fit"])
def test_each_commands_help_names_it(capsys, command):
    code, out, err = _msdp(capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: msdp {command} "), err


@pytest.mark.integration
def test_fit_help_is_the_trainers(tmp_path):
    """`msdp fit` takes the stop signals first and exits through the ordered end: a process."""
    r = run([sys.executable, "-c", "import sys; from train.cli import main; sys.exit(main())",
             "fit", "--help"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: msdp fit ") and "--epochs" in \
        r.stdout, r.stderr


@pytest.mark.integration
def test_an_alias_prints_what_its_command_prints(capsys, tmp_path):
    code, out, _ = _msdp(capsys, "predict", "--help")
    r = run([sys.executable, "-m", "train.predict", "--help"], tmp_path)
    assert code == r.returncode == 0 and r.stdout == out
    code, _, err = _msdp(capsys, "predict", "run", "--bogus")
    r = run([sys.executable, "-m", "train.predict", "run", "--bogus"], tmp_path)
    assert code == r.returncode == 2 and r.stderr == err


@pytest.mark.parametrize("argv,says", [
    (("predict", "run", "--data", "d.csv", "--bogus"), "unrecognized arguments: --bogus; usage: "
                                                       "msdp predict [-h] --data DATA"),
    (("convert", "a.csv", "b.npy", "--targt", "y"), "--targt y; usage: msdp convert [-h] "
                                                    "[--target TARGET]"),
    (("plot",), "required: RUN_DIR; usage: msdp plot [-h] RUN_DIR [RUN_DIR ...] (msdp plot "
                "--help)"),
])
def test_a_refused_flag_names_what_is_accepted(capsys, argv, says):
    """One line: the problem, then the command's usage (its flags and arguments)."""
    code, out, err = _msdp(capsys, *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and says in err, err


def test_config_prints_what_it_reads_back(capsys, tmp_path):
    """`msdp config` is config.yaml's text; fed back with --config it gives the same text."""
    code, first, err = _msdp(capsys, "config", "--epochs", "2", "--hidden", "8")
    assert code == 0 and "epochs: 2\n" in first and "hidden: '8'\n" in first, err
    (tmp_path / "c.yaml").write_text(first)
    code, again, err = _msdp(capsys, "config", "--config", str(tmp_path / "c.yaml"))
    assert code == 0 and again == first, err
    code, _, err = _msdp(capsys, "config", "--epochs", "0")
    assert code == 2 and err.startswith("error: epochs") and len(err.splitlines()) == 1


def test_config_markdown_is_the_options_table(capsys):
    from train.options import options_table

    assert _msdp(capsys, "config", "--markdown")[:2] == (0, options_table())
    code, _, err = _msdp(capsys, "config", "--markdown", "--lr", "1")
    assert code == 2 and err == "error: --markdown takes no other option\n"


def _instances():
    """One instance of each class the table names, with the code and prefix it documents."""
    from pipeline.limits import DataError
    from pipeline.user import SourceRaised
    from train.checkpoint import CheckpointError, ConfigChanged
    from train.cluster.env import ClusterError
    from train.config import ConfigError
    from train.faults import FaultError
    from train.infer import ConfigEdited, InferError
    from train.output import OutputError
    from train.stop import Preempted
    from train.user import UserCodeError, UserCodeFailed

    return [(Preempted("SIGTERM"), 75, "stopped"), (OutputError("disk full"), 74, "error"),
            (UserCodeFailed("your model", ValueError("x")), 1, "error"),
            (SourceRaised("your source", ValueError("x")), 1, "error"),
            (exits.RunFailed("a run"), 1, "error"), (exits.UsageError("u"), 2, "error"),
            (ConfigError("c"), 2, "error"), (UserCodeError("u"), 2, "error"),
            (ClusterError("c"), 2, "error"), (CheckpointError("c"), 2, "error"),
            (ConfigChanged("c", {}), 2, "error"), (FaultError("f"), 2, "error"),
            (DataError("d"), 2, "error"), (InferError("i"), 2, "error"),
            (ConfigEdited("e"), 2, "error")]


def test_the_table_maps_each_exception_as_documented(capsys):
    for e, code, prefix in _instances():
        rule = exits.rule_of(e)
        assert (rule.code, rule.prefix) == (code, prefix), type(e).__name__
    assert exits.rule_of(ValueError("not a refusal")) is None
    assert exits.rule_of(OSError("nor this")) is None


def test_the_handler_prints_one_line_and_returns_the_code(capsys):
    def fails(e):
        raise e

    assert exits.handled(fails, exits.UsageError("a\nb")) == 2
    assert capsys.readouterr().err == "error: a\\nb\n"  # one line, whatever the message holds
    from train.stop import Preempted

    assert exits.handled(fails, Preempted("SIGTERM at step 3")) == 75
    assert capsys.readouterr().err == "stopped: SIGTERM at step 3\n"
    with pytest.raises(KeyError):  # not in the table: a bug's traceback, not a refusal's line
        exits.handled(fails, KeyError("k"))
    assert exits.handled(lambda: 0) == 0


@pytest.mark.integration
def test_the_command_imports_nothing_heavy():
    """`msdp --help` and the start of `msdp fit` import no NumPy, YAML or MindSpore (train.stop,
    light, is where the stop code 75 is defined and what `msdp fit` imports first anyway)."""
    code = ("import sys; from train import cli; from train.exits import rule_of; "
            "rule_of(ValueError()); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'yaml', 'mindspore', 'pipeline') or m.startswith('train.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "['train.cli', 'train.exits', 'train.stop']"


@pytest.mark.parametrize("command", ["compare", "verify"])
def test_an_output_folder_that_cannot_be_made_is_one_line_and_74(capsys, command):
    """A folder no one can make (under /proc): one line and 74 before any run starts."""
    code, _, err = _msdp(capsys, command, "--out", "/proc/msdp-nope", "--epochs", "1")
    assert code == 74 and err.startswith("error: cannot create the folder /proc/msdp-nope (") \
        and len(err.splitlines()) == 1, err
