"""The one run configuration: dataclass defaults, then an optional YAML file, then flags.

Every field carries its own help text, which is also what `--help` prints. Unknown YAML keys or
flags, wrong types and values out of range are refused with a one-line `ConfigError` naming the
option and what it accepts; `python -m train` turns that into exit code 2 before anything is
written.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DESCRIPTION = ("Data-parallel MindSpore training of y = x·w + b + noise. Options come from "
               "the defaults, then --config FILE, then these flags.")
DEVICES = ("CPU", "Ascend", "GPU")
LOSSES = ("huber", "mse")
LR_SCHEDULES = ("cosine", "constant")
GRAD_BACKENDS = ("mindspore", "mpi")


class ConfigError(ValueError):
    """A user error in the configuration; the message is one line meant for the console."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    """Everything a run depends on. Sizes are per rank unless a name says global."""

    # --- where and how it runs ---
    device: str = _f("CPU", "device target; Ascend uses HCCL, CPU the MindSpore CPU collectives",
                     choices=DEVICES)
    seed: int = _f(0, "seeds the data stream and the initial weights (identical on all ranks)")
    world_size: int = _f(0, "expected number of ranks; 0 accepts what the launcher started, "
                            "anything else must match it")
    # --- data ---
    batch_size: int = _f(256, "rows per rank per micro-batch")
    accum_steps: int = _f(1, "micro-batches accumulated into one optimizer step")
    features: int = _f(1, "columns of x; the true weight is true_w for every column")
    true_w: float = _f(2.0, "true weight of every feature in y = x·w + b")
    true_b: float = _f(3.0, "true bias in y = x·w + b")
    noise_std: float = _f(1.0, "std of the Gaussian noise on y")
    outlier_fraction: float = _f(0.0, "share of training rows with a large error of random "
                                      "sign, in [0, 1)")
    outlier_scale: float = _f(50.0, "size of an outlier error (uniform in 0.5-1.5 times this)")
    eval_size: int = _f(4096, "rows in the clean held-out set evaluated at each epoch end")
    # --- optimisation ---
    epochs: int = _f(5, "passes over steps_per_epoch optimizer steps (fresh rows each epoch)")
    steps_per_epoch: int = _f(200, "optimizer steps per epoch (each is accum_steps micro-batches)")
    lr: float = _f(0.01, "SGD learning rate (the peak, with a schedule)")
    lr_schedule: str = _f("cosine", "constant, or cosine decay to 0 over all steps (final "
                                    "weights then settle instead of jittering with the noise)",
                          choices=LR_SCHEDULES)
    momentum: float = _f(0.9, "SGD momentum, in [0, 1)")
    loss: str = _f("huber", "training loss", choices=LOSSES)
    delta: float = _f(1.0, "Huber threshold: quadratic below |error| = delta, linear above")
    clip_norm: float = _f(0.0, "clip gradients to this global norm after the all-reduce; 0 = off")
    grad_backend: str = _f("mindspore", "how ranks average gradients: mindspore (its collectives "
                                        "inside the jit step: HCCL, NCCL, CPU) or mpi (mpi4py "
                                        "Allreduce on the host; CPU, MPI-launched jobs only)",
                           choices=GRAD_BACKENDS)
    # --- output ---
    log_every: int = _f(50, "write a metrics line every this many optimizer steps")
    out: str = _f("", "run folder; empty means runs/<time>-<pid>. Must be new or empty")
    quiet: bool = _f(False, "no progress bar (epoch lines and files are written all the same)")
    dry_run: bool = _f(False, "check the config and the launch environment, print what would "
                              "run, and exit without training or writing anything")
    # --- checkpoints and faults ---
    ckpt_every: int = _f(100, "write a checkpoint every this many optimizer steps (and at the "
                              "end); 0 = only at the end")
    keep_ckpts: int = _f(3, "checkpoints kept (the newest ones)")
    resume: bool = _f(False, "continue the run in --out from its newest good checkpoint; its "
                             "config.yaml is the base, flags override (e.g. more --epochs)")
    skip_nonfinite: int = _f(0, "skip up to this many steps whose gradient is not finite "
                                "(reported); 0 = stop at the first one")
    # --- testing only ---
    fail_at_step: int = _f(-1, "TEST ONLY: raise on rank fail_rank at this step; -1 = never")
    fail_rank: int = _f(1, "TEST ONLY: the rank that fail_at_step makes fail")
    nan_at_step: int = _f(-1, "TEST ONLY: feed NaN inputs at this step on every rank; -1 = never")
    test_ckpt_pause: float = _f(0.0, "TEST ONLY: seconds to pause inside each checkpoint write")

    def global_batch_size(self, world_size: int) -> int:
        """Rows per optimizer step across all ranks."""
        return self.batch_size * self.accum_steps * world_size

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, in field order (what config.yaml holds)."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_PY_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _expected(name: str) -> str:
    f = FIELDS[name]
    choices = f.metadata.get("choices")
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
    return "one of " + ", ".join(choices) if choices else names[f.type]


def _coerce(name: str, value: Any) -> Any:
    """Check one value's type (YAML gives typed values; ints are accepted for floats)."""
    want = _PY_TYPES[FIELDS[name].type]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{name}: expected {_expected(name)}, got {value!r}")
    return value


def _check(cond: bool, name: str, accepted: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{name} must be {accepted}, got {value!r}")


def validate(cfg: Config) -> Config:
    """Raise ConfigError for the first value out of range; return cfg unchanged otherwise."""
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        _coerce(name, value)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    for name in ("batch_size", "accum_steps", "features", "eval_size", "epochs",
                 "steps_per_epoch", "log_every", "keep_ckpts"):
        _check(getattr(cfg, name) >= 1, name, "an integer >= 1", getattr(cfg, name))
    for name in ("ckpt_every", "skip_nonfinite", "test_ckpt_pause"):
        _check(getattr(cfg, name) >= 0, name, ">= 0", getattr(cfg, name))
    if cfg.grad_backend == "mpi" and cfg.device != "CPU":
        raise ConfigError(f"grad_backend mpi is for CPU runs; with --device {cfg.device} use "
                          "mindspore (HCCL/NCCL)")
    if cfg.resume and not cfg.out:
        raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
    _check(cfg.seed >= 0, "seed", "an integer >= 0", cfg.seed)
    _check(cfg.world_size >= 0, "world_size", "0 (any) or the number of ranks", cfg.world_size)
    _check(cfg.lr > 0, "lr", "> 0", cfg.lr)
    _check(0 <= cfg.momentum < 1, "momentum", "in [0, 1)", cfg.momentum)
    _check(cfg.delta > 0, "delta", "> 0", cfg.delta)
    _check(cfg.clip_norm >= 0, "clip_norm", ">= 0 (0 = off)", cfg.clip_norm)
    _check(cfg.noise_std >= 0, "noise_std", ">= 0", cfg.noise_std)
    _check(0 <= cfg.outlier_fraction < 1, "outlier_fraction", "in [0, 1)", cfg.outlier_fraction)
    _check(cfg.outlier_scale >= 0, "outlier_scale", ">= 0", cfg.outlier_scale)
    return cfg


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping of config keys; every problem is a one-line ConfigError."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"--config {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value, "
                          f"got {type(data).__name__}")
    for key in data:
        if key not in FIELDS:
            raise ConfigError(f"--config {path}: unknown key {key!r}{_suggest(str(key))}")
    return {k: _coerce(k, v) for k, v in data.items()}


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name.lstrip("-"), list(FIELDS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{hint}; accepted: {', '.join(FIELDS)}"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and no usage dump (the contract is: one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            bad = message.split(":", 1)[1].split()[0]
            message = f"unknown option {bad}{_suggest(bad)}"
        elif m := re.match(r"argument --(\w+): invalid \w+ value: (.*)", message):
            message = f"--{m[1]}: expected {_expected(m[1])}, got {m[2]}"
        raise ConfigError(message)


def build_parser(prog: str = "python -m train", description: str | None = None) -> _Parser:
    """The command line: --config plus one flag per Config field, defaults left unset."""
    p = _Parser(prog=prog, description=description or DESCRIPTION,
                argument_default=argparse.SUPPRESS, allow_abbrev=False)
    p.add_argument("--config", metavar="FILE", help="YAML file of option: value pairs; "
                   "flags given on the command line override it")
    for name, f in FIELDS.items():
        help_ = f"{f.metadata['help']} (default: {f.default!r})"
        if f.type == "bool":
            p.add_argument(f"--{name}", action="store_true", help=help_)
        else:
            choices = f.metadata.get("choices")  # checked by validate(), shown by --help
            p.add_argument(f"--{name}", type=_PY_TYPES[f.type], help=help_,
                           metavar="{" + ",".join(choices) + "}" if choices else name.upper())
    return p


def parse_config(argv: list[str] | None = None, parser: _Parser | None = None,
                 base: dict[str, Any] | None = None,
                 **overrides: Any) -> tuple[Config, argparse.Namespace]:
    """defaults < `base` < YAML < `overrides` < flags; returns the validated config and flags."""
    parser = parser or build_parser()
    ns = parser.parse_args(sys.argv[1:] if argv is None else argv)
    values: dict[str, Any] = dict(base or {})
    if getattr(ns, "config", None):
        values.update(load_yaml(ns.config))
    values.update(overrides)
    values.update({k: v for k, v in vars(ns).items() if k in FIELDS})
    return validate(Config(**values)), ns


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML that `--config` reads back (atomically: a resumed
    run rewrites it, and a kill must not leave half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.replace(path)
