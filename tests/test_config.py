"""train/config.py: defaults < YAML < flags, unknown keys refused, ranges checked."""

import pytest
import yaml

from train.config import Config, ConfigError, load_yaml, parse_config, save_config


def test_defaults():
    cfg, _ = parse_config([])
    assert cfg == Config()
    assert cfg.global_batch_size(4) == 256 * 4


def test_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.5\nbatch_size: 8\nloss: mse\n")
    cfg, _ = parse_config(["--config", str(f), "--batch_size", "16"])
    assert (cfg.lr, cfg.batch_size, cfg.loss) == (0.5, 16, "mse")


def test_saved_config_reads_back(tmp_path):
    cfg = Config(lr=0.2, features=3, quiet=True)
    save_config(cfg, tmp_path / "c.yaml")
    assert parse_config(["--config", str(tmp_path / "c.yaml")])[0] == cfg


@pytest.mark.parametrize("text,match", [
    ("lrr: 1\n", "unknown key 'lrr' \\(did you mean lr\\?\\)"),
    ("lr: fast\n", "lr: expected a number, got 'fast'"),
    ("batch_size: 1.5\n", "batch_size: expected an integer"),
    ("quiet: 1\n", "quiet: expected true or false"),
    ("- 1\n", "expected a mapping"),
    ("lr: [\n", "not valid YAML"),
])
def test_bad_yaml(tmp_path, text, match):
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
    (["--lr", "nan"], "lr must be a finite number"),
    (["--device", "TPU"], "device must be one of CPU, Ascend, GPU, got 'TPU'"),
    (["--loss", "l1"], "loss must be one of huber, mse, got 'l1'"),
    (["--lr", "x"], "--lr: expected a number, got 'x'"),
    (["--epochs", "1.5"], "--epochs: expected an integer, got '1.5'"),
    (["--bogus"], "unknown option --bogus"),
])
def test_bad_flags(argv, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(argv)


def test_every_field_is_documented():
    from train.config import FIELDS

    assert all(f.metadata.get("help") for f in FIELDS.values())
    assert yaml.safe_load(yaml.safe_dump(Config().to_dict())) == Config().to_dict()


def test_readme_documents_every_option():
    from conftest import REPO

    from train.config import FIELDS

    readme = (REPO / "README.md").read_text()
    missing = [n for n in FIELDS if f"`--{n}`" not in readme]
    assert missing == []
