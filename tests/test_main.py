"""`python -m train` end to end, through the real command line."""

import json

import pytest
import yaml
from helpers import TINY, train_cli

pytestmark = pytest.mark.integration  # every test here starts a process

SUMMARY_KEYS = {"w", "b", "true_w", "true_b", "final_loss", "eval_loss", "steps", "epochs",
                "world_size", "global_batch_size", "samples_per_s", "wall_s", "device",
                "mindspore_version"}


def test_default_run_converges_and_writes_its_files(tmp_path):
    r = train_cli([], tmp_path)  # no arguments at all: the quick start's command
    assert r.returncode == 0, r.stderr
    assert "learned w = [" in r.stdout and "(true 2.0)" in r.stdout
    assert r.stderr == ""  # nothing to warn about in the quick start
    (run,) = (tmp_path / "runs").iterdir()
    s = json.loads((run / "summary.json").read_text())
    assert SUMMARY_KEYS <= s.keys()
    assert abs(s["w"][0] - 2) < 0.05 and abs(s["b"] - 3) < 0.05
    assert s["steps"] == 1000 and s["world_size"] == 1 and s["global_batch_size"] == 256
    assert yaml.safe_load((run / "config.yaml").read_text())["batch_size"] == 256
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "loss" in m] == list(range(50, 1001, 50))
    assert [m["epoch"] for m in lines if "eval_loss" in m] == [1, 2, 3, 4, 5]
    assert (run / "logs" / "rank_0.log").stat().st_size > 0


def test_accumulation_and_features_through_the_cli(tmp_path):
    r = train_cli([*TINY, "--features", "3", "--accum_steps", "2", "--batch_size", "8",
                   "--out", "o"], tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert len(s["w"]) == 3 and s["global_batch_size"] == 16 and s["steps"] == 20


BAD = [
    (["--bogus"], "unknown option --bogus"),
    (["--lr", "abc"], "--lr"),
    (["--batch_size", "0"], "batch_size must be an integer >= 1"),
    (["--delta", "-1"], "delta must be > 0"),
    (["--lr", "0"], "lr must be > 0"),
    (["--outlier_fraction", "1.5"], "outlier_fraction must be in [0, 1)"),
    (["--device", "TPU"], "CPU, Ascend, GPU"),
    (["--loss", "l1"], "huber, mse"),
    (["--config", "missing.yaml"], "cannot read it"),
    (["--config", "bad.yaml"], "not valid YAML"),
    (["--config", "unknown.yaml"], "unknown key 'learning_rate'"),
    (["--config", "typed.yaml"], "epochs: expected an integer"),
    (["--world_size", "4"], "--world_size 4 does not match the 1 rank"),
    (["--device", "Ascend"], "--device Ascend: no /dev/davinci* device on this host"),
    (["--device", "GPU"], "--device GPU: no /dev/nvidia* device on this host"),
    (["--amp_level", "O2", "--amp_dtype", "bfloat16"], "--amp_dtype bfloat16 does not run on CPU"),
    (["--device", "GPU", "--amp_level", "O1", "--amp_dtype", "bfloat16"],
     "--amp_dtype bfloat16 does not run on GPU (MindSpore has bfloat16 kernels on Ascend only)"),
    (["--batch_size", "100000000", "--features", "50"], "GiB of host memory per rank"),
    (["--eval_size", "2000000000"], "GiB of host memory per rank"),
    (["--data", "two\nlines.csv"], "--data two\\nlines.csv: no such file"),  # still one line
]


@pytest.mark.parametrize("argv,message", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, argv, message):
    (tmp_path / "bad.yaml").write_text("lr: [1,\n")
    (tmp_path / "unknown.yaml").write_text("learning_rate: 0.1\n")
    (tmp_path / "typed.yaml").write_text("epochs: two\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = train_cli([*argv, "--out", "out"], tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_an_earlier_run_is_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    r = train_cli([*TINY, "--out", "out"], tmp_path)
    assert r.returncode == 2 and "is not empty" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert (out / "summary.json").read_text() == "{}"


def test_a_diverging_run_stops_naming_the_step(tmp_path):
    r = train_cli([*TINY, "--loss", "mse", "--lr", "5", "--momentum", "0",
                   "--lr_schedule", "constant", "--out", "o"], tmp_path)
    assert r.returncode == 1
    assert "non-finite loss or gradient at step" in r.stderr and "rank 0" in r.stderr
    step = int(r.stderr.split("at step ")[1].split()[0])
    assert 1 < step <= 20
    assert not (tmp_path / "o" / "summary.json").exists()
    assert "Traceback" in (tmp_path / "o" / "logs" / "rank_0.log").read_text()  # kept for debugging


def test_the_device_probe_can_be_skipped_to_check_an_ascend_command_line(tmp_path):
    r = train_cli(["--device", "Ascend", "--dry_run"], tmp_path, TRAIN_NO_DEVICE_PROBE="1",
                  MS_ROLE="MS_WORKER", MS_WORKER_NUM="8")
    assert r.returncode == 0, r.stderr
    assert "# launch: msrun  world_size: 8  global_batch_size: 2048" in r.stdout
    assert "# device: Ascend" in r.stdout


def test_a_device_mindspore_cannot_load_is_one_line_exit_2(tmp_path):
    """The probe skipped, MindSpore's set_device itself refuses GPU here (no CUDA 11 plugin
    libraries): one line naming what it needs, MindSpore's own ERROR lines held back."""
    r = train_cli(["--device", "GPU", "--out", "o"], tmp_path, TRAIN_NO_DEVICE_PROBE="1")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device GPU: MindSpore 2.10"), lines
    assert "its GPU plugin needs CUDA 11 (11.1 or 11.6: libcudart.so.11.0" in lines[0]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".lock"]  # reusable: "empty"


def test_help_documents_every_option(tmp_path):
    r = train_cli(["--help"], tmp_path)
    assert r.returncode == 0
    for flag in ("--config", "--device", "--seed", "--batch_size", "--epochs", "--steps_per_epoch",
                 "--lr", "--momentum", "--loss", "--delta", "--clip_norm", "--accum_steps",
                 "--features", "--noise_std", "--outlier_fraction", "--outlier_scale",
                 "--log_every", "--out"):
        assert flag in r.stdout
