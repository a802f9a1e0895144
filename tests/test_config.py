"""train/config.py: defaults < YAML < flags, unknown keys refused, ranges checked."""

import dataclasses

import pytest
import yaml
from helpers import RESOLVED, RESOLVED_FILE

from train import checkpoint as ck
from train.config import (
    DATA_ONLY,
    FIELDS,
    INVOCATION,
    RESUME,
    SOURCES,
    SYNTHETIC_ONLY,
    Config,
    ConfigError,
    applies,
    resume_keys,
    save_config,
)
from train.options import build_parser, load_yaml, options_table, parse_config


def test_defaults():
    cfg, _ = parse_config([])
    assert cfg == Config()
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.init) == (None, None, None, "auto")
    assert Config(batch_size=256).global_batch_size(4) == 256 * 4


def test_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.5\nbatch_size: 8\nloss: mse\n")
    cfg, _ = parse_config(["--config", str(f), "--batch_size", "16"])
    assert (cfg.lr, cfg.batch_size, cfg.loss) == (0.5, 16, "mse")


def test_saved_config_reads_back_as_is(tmp_path):
    cfg = Config(lr=0.2, features=3, quiet=True, delta=1.5, out="runs/x", resume=True)
    save_config(cfg, tmp_path / "c.yaml")
    saved = yaml.safe_load((tmp_path / "c.yaml").read_text())
    # Per-invocation actions are not part of a run's config: feeding it back starts a new run.
    assert not {"out", "resume", "dry_run"} & saved.keys()
    assert not {"target", "eval_fraction", "eval_data", "drop_nonfinite"} & saved.keys()
    back, _ = parse_config(["--config", str(tmp_path / "c.yaml")])
    assert back == Config(lr=0.2, features=3, quiet=True, delta=1.5,
                          config=str(tmp_path / "c.yaml"))  # --config: an invocation detail
    # With a separate held-out file the split fraction does not apply, so it is not saved.
    files = Config(data="d.npy", eval_data="e.npy", eval_fraction=0.1).saved_dict()
    assert files["eval_data"] == "e.npy" and "eval_fraction" not in files


def test_yaml_numbers_are_read_as_the_flags_read_them(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 1e-2\nclip_norm: 5E+0\nnoise_std: .5\n")
    cfg, _ = parse_config(["--config", str(f)])
    assert (cfg.lr, cfg.clip_norm, cfg.noise_std) == (0.01, 5.0, 0.5)
    assert parse_config(["--lr", "1e-2"])[0].lr == cfg.lr


def test_removed_test_switches_are_dropped_with_a_warning(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.5\nfail_at_step: 3\ntest_ckpt_pause: 1.0\n")
    warnings = []
    assert load_yaml(str(f), warn=warnings.append) == {"lr": 0.5}
    assert len(warnings) == 1 and "fail_at_step, test_ckpt_pause" in warnings[0]
    assert "TRAIN_FAULT" in warnings[0]


@pytest.mark.parametrize("argv,expected", [
    ([], (True, False)),
    (["--deterministic", "false", "--quiet"], (False, True)),
    (["--deterministic", "0", "--quiet", "true"], (False, True)),
])
def test_bool_flags_take_an_optional_value(argv, expected):
    cfg, _ = parse_config(argv)
    assert (cfg.deterministic, cfg.quiet) == expected


def test_yaml_bools_are_written_as_the_flags_take_them(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("quiet: 1\ndeterministic: 0\n")
    cfg, _ = parse_config(["--config", str(f)])
    assert (cfg.quiet, cfg.deterministic) == (True, False)


@pytest.mark.parametrize("text,match", [
    ("lrr: 1\n", "unknown key 'lrr' \\(did you mean lr\\?\\)"),
    ("lr: fast\n", "lr: expected a number, got 'fast'"),
    ("batch_size: 1.5\n", "batch_size: expected an integer"),
    ("quiet: 2\n", "quiet: expected true or false"),
    ("quiet: 1.0\n", "quiet: expected true or false"),  # as --quiet 1.0
    ("quiet: yes\n", "quiet: expected true or false"),  # YAML 1.2: a string, as --quiet yes
    ("lr: !!int abc\n", "not a valid config"),
    ("lr: !!python/name:os.system\n", "not valid YAML"),
    ("- 1\n", "expected a mapping"),
    ("lr: [\n", "not valid YAML"),
    ("lr: 0.1\nbatch_size: 8\nlr: 0.2\n", "duplicate key 'lr' at line 3"),
])
def test_bad_yaml(tmp_path, text, match):
    """One line each, from the YAML 1.2 core schema (no YAML 1.1 yes/no, no Python tags)."""
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_yaml(str(f))


@pytest.mark.parametrize("argv,match", [
    (["--batch_size", "0"], "batch_size must be an integer >= 1, got 0"),
    (["--delta", "0"], "delta must be > 0"),
    (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["--resume"], "--resume needs --out RUN_DIR"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--outlier_fraction", "1"], r"outlier_fraction must be in \[0, 1\)"),
    (["--momentum", "1"], "momentum"),
    (["--lr", "nan"], "--lr: expected a number, got 'nan'"),  # YAML 1.2 spells it .nan
    (["--lr", ".nan"], "lr must be a finite number"),
    (["--lr", "1e-40"], r"lr must be > 0 \(at least 1.2e-38"),  # 0 in float32: nothing learned
    (["--delta", "1e-50"], r"delta must be > 0 \(at least 1.2e-38"),
    (["--device", "TPU"], "device must be one of CPU, Ascend, GPU, got 'TPU'"),
    (["--loss", "l1"], "loss must be one of huber, mse or MODULE:NAME, got 'l1'"),
    (["--lr", "x"], "--lr: expected a number, got 'x'"),
    (["--epochs", "1.5"], "--epochs: expected an integer, got '1.5'"),
    (["--bogus"], "unknown option --bogus"),
    (["--deterministic", "maybe"], "--deterministic: expected true or false, got 'maybe'"),
    (["--hidden", "64,x"], "hidden must be up to 64 layer widths in 1-1024"),
    (["--hidden", "64,0"], "hidden must be up to 64 layer widths in 1-1024"),
    # what compiles in reasonable memory and time (pipeline/limits.py, docs/FINDINGS.md)
    (["--hidden", ",".join(["8"] * 65)], "hidden must be up to 64 layer widths"),
    (["--hidden", "1025"], "hidden must be up to 64 layer widths in 1-1024"),
    (["--hidden", "1024,1024,1024,2"], "with at most 2,097,152 weights between them"),
    (["--hidden", "9" * 5000], "hidden must be up to 64"),  # (int() refuses 4,300 digits)
    (["--loss_scale", "fast"], "loss_scale must be none, dynamic or a number in 1-3.4e"),
    (["--loss_scale", "1e39"], r"loss_scale must be none, dynamic or a number in 1-3.4e\+38 "
                               r"\(float32's largest\), got '1e39'"),
    (["--sink_size", "4", "--log_every", "10"], "log_every must be a multiple of --sink_size 4"),
    (["--amp_level", "O4"], "amp_level must be one of O0, O1, O2, O3"),
    (["--true_w", "1e38"], r"must stay below 1e\+15"),
    (["--outlier_scale", "1e30"], r"must stay below 1e\+15"),
    (["--target", "y"], "--target describes a data file; it needs --data PATH"),
    (["--standardize", "maybe"], "--standardize: expected true or false"),
])
def test_bad_flags(argv, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(argv)


def test_loss_scale_may_be_a_yaml_number(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("loss_scale: 1024\n")
    assert parse_config(["--config", str(f)])[0].loss_scale_value() == 1024.0
    f.write_text("loss_scale: 0.5\n")
    with pytest.raises(ConfigError, match="loss_scale must be none, dynamic or a number in 1-"):
        parse_config(["--config", str(f)])
    f.write_text("loss_scale: 1.0e+39\n")  # beyond float32: inf in the step
    with pytest.raises(ConfigError, match="float32's largest"):
        parse_config(["--config", str(f)])
    f.write_text("loss_scale: 3.0e+38\n")
    assert parse_config(["--config", str(f)])[0].loss_scale_value() == 3e38


@pytest.mark.parametrize("argv,match", [
    (["--epochs", "999999999999999999999"], r"--epochs 999999999999999999999 x 200 steps per "
                                            r"epoch must be at most 2147483647 steps"),
    (["--steps_per_epoch", "10000000000000000000000"], "the step counter is int32"),
    (["--epochs", "10737419"], "lower --epochs or --steps_per_epoch"),  # 2^31 / 200, rounded up
])
def test_more_steps_than_the_step_counter_holds_are_refused_up_front(argv, match):
    from train.plan import RunPlan

    RunPlan.from_argv(["--epochs", "10737418", "--dry_run"])  # 2,147,483,600 steps: accepted
    with pytest.raises(ConfigError, match=match):
        RunPlan.from_argv([*argv, "--dry_run"])


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"lr: 0.1\n\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_yaml(str(f))


def test_every_field_says_what_it_is():
    """Help text, its source, its resume behaviour, whether it is an invocation detail: a field
    without them would be silently left out of the lists derived from them."""
    for name, f in FIELDS.items():
        m = f.metadata
        assert m.get("help") and m.get("source") in SOURCES and m.get("resume") in RESUME, name
        assert isinstance(m.get("invocation"), bool), name
    assert yaml.safe_load(yaml.safe_dump(Config().to_dict())) == Config().to_dict()


def test_derived_lists_follow_the_metadata():
    assert set(INVOCATION) == {"config", "out", "resume", "dry_run"}
    synthetic = Config(**RESOLVED).saved_dict()
    assert not (set(INVOCATION) | set(DATA_ONLY)) & synthetic.keys()
    on_file = Config(data="d.csv", **RESOLVED_FILE).saved_dict()
    assert not (set(INVOCATION) | set(SYNTHETIC_ONLY)) & on_file.keys()
    for cfg in (Config(**RESOLVED), Config(data="d.csv", **RESOLVED_FILE)):
        keys = set(ck.fingerprint(cfg, 1, None))
        assert keys == set(resume_keys(cfg.synthetic)) | {"data", "global_batch_size"}


def _another(name, value):
    """A valid value other than `value` for field `name`."""
    choices = FIELDS[name].metadata.get("choices")
    if choices:
        return next(c for c in choices if c != value)
    special = {"hidden": "8", "loss_scale": "dynamic", "momentum": 0.5, "eval_fraction": 0.2,
               "outlier_fraction": 0.3, "target": "y2", "eval_data": "e.csv"}
    if name in special:
        return special[name]
    return (not value) if isinstance(value, bool) else value + 1 if isinstance(value, int) \
        else (value * 2 if value else 1.0)


# (the data files count by their identity: test_files.py)
@pytest.mark.parametrize("name", [n for n in FIELDS if FIELDS[n].metadata["resume"] == "refuse"
                                  and n not in ("data", "eval_data")])
def test_every_refused_option_is_named_when_a_resume_changes_it(name):
    """Adding a `resume: refuse` option is enough for a resume that changes it to be refused by
    name: the fingerprint is made from the metadata, nothing else to edit."""
    base = Config(**RESOLVED) if applies(name, True) else \
        Config(data="d.csv", **RESOLVED_FILE)
    changed = dataclasses.replace(base, **{name: _another(name, getattr(base, name))})
    with pytest.raises(ck.CheckpointError, match=rf"in .*\b{name} "):
        ck.check_fingerprint(ck.fingerprint(base, 1), ck.fingerprint(changed, 1))


def test_docs_option_table_is_the_generated_one():
    """docs/options.md's table is `msdp config --markdown`: regenerate it after editing a
    field (the help text is written once, in train/config.py)."""
    from helpers import REPO

    page = (REPO / "docs" / "options.md").read_text()
    assert options_table() in page


def test_help_lists_every_option():
    text = build_parser().format_help()
    assert [n for n in FIELDS if f"--{n}" not in text] == []


@pytest.mark.parametrize("text,flags,expected", [
    ("seed: 010\n", ["--seed", "010"], ("seed", 10)),  # YAML 1.1 read 010 as 8
    ("hidden: [64, 64]\n", ["--hidden", "64,64"], ("hidden", "64,64")),
    ("hidden: 64\n", ["--hidden", "64"], ("hidden", "64")),
    ("device: ascend\n", ["--device", "ascend"], ("device", "Ascend")),
    ("loss: MSE\n", ["--loss", "MSE"], ("loss", "mse")),
    ("lr: .5\n", ["--lr", ".5"], ("lr", 0.5)),
])
def test_one_meaning_per_value_in_yaml_and_flags(tmp_path, text, flags, expected):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    name, value = expected
    assert getattr(parse_config(["--config", str(f)])[0], name) == value
    assert getattr(parse_config(flags)[0], name) == value


@pytest.mark.parametrize("text,flags,match", [
    ("quiet: yes\n", ["--quiet", "yes"], "quiet: expected true or false, got 'yes'"),
    ("lr: 1_000\n", ["--lr", "1_000"], "lr: expected a number, got '1_000'"),
    ("seed: 0x10\n", ["--seed", "0x10"], "seed: expected an integer, got '0x10'"),
])
def test_what_one_refuses_the_other_refuses(tmp_path, text, flags, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    for argv in (["--config", str(f)], flags):
        with pytest.raises(ConfigError, match=match):
            parse_config(argv)


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    """Nine levels of nine aliases expand to ~10^9 items: refused before any expansion."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    f = tmp_path / "bomb.yaml"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="a YAML alias \\(\\*name\\) at line 2: not accepted"):
        load_yaml(str(f))


def test_a_huge_config_file_is_refused(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text("lr: 0.1\n" + "#" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_yaml(str(f))
