"""train/export.py: a MindIR that MindSpore loads and runs on raw float32 features, any number of
rows, predicting what train.predict predicts, with the features' names beside it."""

import json
import os
import sys

import numpy as np
import pytest
from helpers import DIABETES, finished_run, run

pytestmark = pytest.mark.integration  # every test here starts a process

LOAD = """
import sys, json, numpy as np, mindspore as ms
from mindspore import nn
ms.set_device("CPU")
net = nn.GraphCell(ms.load(sys.argv[1]))
x = np.loadtxt(sys.argv[2], delimiter=",", skiprows=1, dtype=np.float32)[:, :-1]
print(json.dumps({str(n): net(ms.Tensor(x[:n])).asnumpy().tolist() for n in (1, 7, len(x))}))
"""


@pytest.mark.parametrize("model", [[], ["--hidden", "8,4"]])
def test_the_mindir_predicts_what_predict_prints_on_any_number_of_rows(tmp_path, model):
    runs = finished_run(tmp_path, ["--data", str(DIABETES), "--epochs", "3", *model,
                                   "--quiet"], "run")
    r = run([sys.executable, "-m", "train.export", str(runs), "--out", "m.mindir"], tmp_path)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "m.mindir.json").read_text())
    header = open(DIABETES).readline().strip().split(",")
    assert meta["features"] == header[:-1] and meta["target"] == "target"
    assert "age, sex, bmi" in r.stdout  # the order is printed too
    assert "for MindSpore Lite on Ascend: m.mindir.lite.ini" in r.stdout
    r = run([sys.executable, "-c", LOAD, "m.mindir", str(DIABETES)], tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    p = run([sys.executable, "-m", "train.predict", str(runs), "--data", str(DIABETES),
             "--out", "p.csv"], tmp_path)
    assert p.returncode == 0, p.stderr
    pred = np.loadtxt(tmp_path / "p.csv", skiprows=1)
    for n, values in got.items():
        assert len(values) == int(n)
        np.testing.assert_allclose(values, pred[:int(n)], rtol=1e-5)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("m.mindir", "m.mindir.json", "m.mindir.lite.ini"):  # not ms.export's 0400
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    # MindSpore Lite on Ascend: float32, the input Lite names, preset batch sizes only
    assert meta["rows"] == {"mindspore": "any", "lite_ascend": [1, 8, 64, 512, 4096]}
    assert meta["lite"]["input_name"] == "x"
    ini = (tmp_path / "m.mindir.lite.ini").read_text().splitlines()
    assert [x for x in ini if not x.startswith("#")] == [
        "[ascend_context]", "input_format=ND", f"input_shape=x:[-1,{len(header) - 1}]",
        "dynamic_dims=[1],[8],[64],[512],[4096]", "precision_mode=enforce_fp32"]
    if not model:  # a features file that cannot be written: refused first, nothing left
        (tmp_path / "b.mindir.json").mkdir()
        r = run([sys.executable, "-m", "train.export", str(runs), "--out", "b.mindir"], tmp_path)
        assert r.returncode == 2 and r.stderr.strip() == (
            "error: --out: b.mindir.json exists and is not a file (the export writes b.mindir, "
            "b.mindir.json and b.mindir.lite.ini); choose another name")
        assert not (tmp_path / "b.mindir").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.mindir")]


def test_bad_output_names_are_refused(tmp_path):
    r = run([sys.executable, "-m", "train.export", str(tmp_path), "--out", "m.onnx"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == \
        "error: --out m.onnx: a MindIR file's name ends in .mindir"
    r = run([sys.executable, "-m", "train.export", str(tmp_path), "--out", "m.mindir"], tmp_path)
    assert r.returncode == 2 and "is not a run folder (no config.yaml)" in r.stderr
    for bad in ("8", "0,8", "1,\u0668", "1,2000000"):  # one size; 0; not ASCII; too large
        r = run([sys.executable, "-m", "train.export", str(tmp_path), "--out", "m.mindir",
                 "--lite_batches", bad], tmp_path)
        assert r.returncode == 2 and r.stderr.startswith(f"error: --lite_batches {bad}: 2 to "
                                                         "100 distinct batch sizes"), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    from train.export import lite_batches  # (in-process: a 5000-digit size made int() raise)
    from train.infer import InferError

    with pytest.raises(InferError, match=r"^--lite_batches 1,9{38}\.\.\.: 2 to 100 distinct"):
        lite_batches("1," + "9" * 5000)
