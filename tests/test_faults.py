"""train/faults.py: TRAIN_FAULT, the one way tests inject faults (never flags or configs)."""

import math

import pytest
from helpers import TINY, train_cli

from train.faults import FaultError, parse


def test_the_documented_spellings():
    f = parse("fail@5:1, nan@7,overflow@9,ckpt_pause=0.5,step_pause=0.01,start_pause=2,"
              "join_pause=3")
    assert f.fail == {5: 1} and f.nan == {7} and f.overflow == {9}
    assert (f.ckpt_pause, f.step_pause, f.start_pause, f.join_pause) == (0.5, 0.01, 2.0, 3.0)
    assert math.isnan(f.input_scale(7)) and f.input_scale(9) == math.inf
    assert f.input_scale(8) is None
    with pytest.raises(RuntimeError, match="test failure injected at step 5"):
        f.check_fail(5, 1)
    f.check_fail(5, 0)  # another rank: nothing
    assert not parse("") and not parse(" , ")


@pytest.mark.parametrize("text", ["fail@5", "nan@x", "explode@3", "ckpt_pause=-1", "nan@5;"])
def test_an_unknown_or_malformed_fault_is_refused(text):
    with pytest.raises(FaultError, match="accepted: fail@STEP:RANK, nan@STEP"):
        parse(text)


@pytest.mark.integration
def test_a_bad_fault_is_exit_2_and_a_set_one_is_reported(tmp_path):
    r = train_cli([*TINY, "--out", "o"], tmp_path, TRAIN_FAULT="explode@3")
    assert r.returncode == 2 and r.stderr.startswith("error: TRAIN_FAULT: unknown fault")
    assert not (tmp_path / "o").exists()
    r = train_cli([*TINY, "--out", "o"], tmp_path, TRAIN_FAULT="step_pause=0")
    assert r.returncode == 0
    assert "TRAIN_FAULT='step_pause=0' is set: injecting test faults" in r.stderr
    import json

    assert json.loads((tmp_path / "o" / "run.json").read_text())["train_fault"] == "step_pause=0"


@pytest.mark.integration
def test_faults_are_not_options(tmp_path):
    r = train_cli(["--fail_at_step", "3"], tmp_path)
    assert r.returncode == 2 and "unknown option --fail_at_step" in r.stderr
