"""The plan's automatic values (train/auto.py, train/plan.py `resolve`) decided from the data's
facts, and the data contract (pipeline/spec.py): pipeline/ reads a `DataSpec`, never the
config. In process, no training job."""

import ast
import dataclasses
import importlib
import inspect
import re
from types import SimpleNamespace

import pytest
from helpers import DIABETES, REPO

from pipeline.limits import DataError
from pipeline.spec import DataSpec
from train import auto
from train.config import Config
from train.plan import data_spec, open_resolved


def file_facts(train_rows, curvature_std=4.0, curvature_raw=2e5, delta=1.234567891):
    """A stand-in for a `FileData`: only the facts the decision reads."""
    curv = {True: curvature_std, False: curvature_raw}
    return SimpleNamespace(kind="file", train_rows=train_rows, curvature=curv.__getitem__,
                           robust_delta=delta)


@pytest.mark.parametrize("rows, batch", [
    (1, 1), (7, 1), (8, 1), (16, 2), (100, 8), (398, 32), (2047, 128), (2048, 256),
    (1 << 20, 256), ((1 << 20) + 1, 256), (1 << 22, 1024), (1 << 24, 4096), (1 << 30, 65536)])
def test_the_global_batch_is_an_eighth_of_the_rows_as_a_power_of_two_capped(rows, batch):
    """At most 256 up to 2**20 rows; above, a 4,096th of them, 256 to 65,536."""
    assert auto.auto_global_batch(rows) == batch


@pytest.mark.parametrize("steps, target, epochs", [
    (12, 2000, 167), (13, 2000, 154), (12, 4000, 334), (1, 2000, 1000), (0, 2000, 1000),
    (1000, 2000, 2), (5000, 2000, 2), (7, 2000, 286)])
def test_the_epochs_give_about_the_target_steps_within_bounds(steps, target, epochs):
    assert auto.auto_epochs(steps, target) == epochs


def test_a_file_decides_per_rank_batch_epochs_lr_and_delta():
    data = file_facts(398, curvature_std=3.0)
    got = auto.suggested(Config(), data, 1)
    assert got == {"standardize": True, "delta": 1.23457, "batch_size": 32, "lr": 0.3333,
                   "epochs": 167, "init": "least_squares"}
    # per rank: the global batch over ranks x accumulation, at least 1
    assert auto.suggested(Config(accum_steps=2), data, 3)["batch_size"] == 5
    assert auto.suggested(Config(), data, 64)["batch_size"] == 1
    assert auto.suggested(Config(), data, 64)["epochs"] == 334  # 6 steps an epoch
    # a given batch sets the steps per epoch the epochs follow from
    assert auto.suggested(Config(batch_size=100), data, 1)["epochs"] == 667
    # an MLP: twice the steps, a random start
    mlp = auto.suggested(Config(hidden="8"), data, 1)
    assert (mlp["epochs"], mlp["init"]) == (334, "random")
    # not standardized: the raw curvature (4 significant digits)
    assert auto.suggested(Config(standardize=False), data, 1)["lr"] == 5e-06


def test_the_lr_and_delta_are_rounded_exactly_as_printed():
    """The lr is float(f"{1/curvature:.4g}") and the delta float(f"{delta:.6g}"), to the bit."""
    c, d = 1.0 / 3.9372642, 75.42714387
    got = auto.suggested(Config(), file_facts(1000, curvature_std=c, delta=d), 1)
    assert got["lr"] == float(f"{1.0 / c:.4g}") == 3.937
    assert got["delta"] == float(f"{d:.6g}") == 75.4271


def test_synthetic_and_user_sources_take_fixed_values():
    synthetic = SimpleNamespace(kind="synthetic", train_rows=None)
    assert auto.suggested(Config(), synthetic, 4) == {
        "standardize": False, "delta": 1.0, "batch_size": 256, "epochs": 5, "lr": 0.01,
        "init": "random"}
    user = SimpleNamespace(kind="user", train_rows=1843)
    assert auto.suggested(Config(), user, 1)["batch_size"] == 64  # a global batch of 64
    assert auto.suggested(Config(accum_steps=2), user, 1)["batch_size"] == 32
    small = SimpleNamespace(kind="user", train_rows=20)
    assert auto.suggested(Config(), small, 1)["batch_size"] == 2  # an eighth of its rows
    assert auto.suggested(Config(), small, 4)["batch_size"] == 1  # at least 1
    assert auto.suggested(Config(batch_size=7), user, 1)["batch_size"] == 7


def test_only_options_left_out_are_chosen_and_your_optimizer_or_network_decides_the_lr():
    data = file_facts(398)
    assert set(auto.choose(Config(batch_size=10, lr=0.5, standardize=True, delta=2.0,
                                  init="random", epochs=3), data, 1)) == set()
    assert auto.choose(Config(optimizer="adamw"), data, 1)["lr"] == 0.001
    yours = auto.choose(Config(model="mynet:Net"), data, 1)
    assert (yours["lr"], yours["init"]) == (0.01, "random")


def test_a_files_steps_per_epoch_must_be_a_multiple_of_the_sink_size():
    source = SimpleNamespace(path="d.csv", steps_per_epoch=12)
    file, user = SimpleNamespace(kind="file"), SimpleNamespace(kind="user")
    auto.check_sink(Config(sink_size=4), file, source)
    auto.check_sink(Config(sink_size=5), user, source)  # (only a file's is checked)
    with pytest.raises(DataError, match=r"^d\.csv gives 12 steps per epoch, not a multiple of "
                                        r"--sink_size 5 \(epoch ends must fall on sink calls\)$"):
        auto.check_sink(Config(sink_size=5), file, source)


def test_the_diabetes_table_decides_as_it_always_did():
    """The real file through the plan: the figures docs/data.md's example prints, bit for bit."""
    cfg, source = open_resolved(Config(data=str(DIABETES), target="target"))
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.delta, cfg.steps_per_epoch) == \
        (32, 167, 0.2538, 75.4271, 12)
    assert (cfg.standardize, cfg.init, source.global_batch) == (True, "least_squares", 32)
    cfg, _ = open_resolved(Config(data=str(DIABETES), target="target", standardize=False), 2)
    assert (cfg.batch_size, cfg.lr) == (16, 1.363e-05)


def test_the_data_spec_is_the_configs_values_by_the_same_names():
    cfg = Config(data="d.csv", target="t", columns="a, b", categorical="c", eval_fraction=0.2,
                 seed=3, batch_size=4, accum_steps=2, standardize=False, delta=2.5)
    spec = data_spec(cfg)
    for f in dataclasses.fields(DataSpec):
        want = cfg.names(f.name) if f.name in ("columns", "categorical") else getattr(cfg, f.name)
        assert getattr(spec, f.name) == want, f.name
    assert (spec.columns, spec.global_batch(3)) == (("a", "b"), cfg.global_batch_size(3))
    assert DataSpec() == data_spec(Config())  # the defaults are the config's


def _pipeline_functions():
    """Every function and method defined in pipeline/."""
    for path in sorted((REPO / "pipeline").glob("*.py")):
        if path.stem == "__init__":
            continue
        module = importlib.import_module(f"pipeline.{path.stem}")
        for _, obj in inspect.getmembers(module, inspect.isfunction):
            if obj.__module__ == module.__name__:
                yield obj
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                yield from (f for _, f in inspect.getmembers(cls, inspect.isfunction))


def test_pipeline_takes_a_data_spec_never_the_config():
    """No parameter of pipeline/ is a config (by name or type), and no line reads one."""
    bad = []
    for fn in _pipeline_functions():
        for name, p in inspect.signature(fn).parameters.items():
            if name in ("cfg", "config") or re.search(r"\bConfig\b", str(p.annotation)):
                bad.append(f"{fn.__qualname__}({name}: {p.annotation})")
    assert bad == []
    for path in sorted((REPO / "pipeline").glob("*.py")):
        names = {n.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Name)}
        assert not names & {"cfg", "Config"}, path.name
