"""The one run configuration: dataclass defaults, then an optional YAML file, then flags.

Every field carries its own help text, which is also what `--help` prints. Unknown YAML keys or
flags, duplicate keys, wrong types and values out of range are refused with a one-line
`ConfigError` naming the option and what it accepts; `python -m train` turns that into exit
code 2 before anything is written.

Some fields only mean something for one data source: `SYNTHETIC_ONLY` describe the generated
rows, `DATA_ONLY` a file given with `--data`. Giving one for the other source is refused, and
`config.yaml` holds only the fields that apply to its run, so that it can be fed back as is.
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

DESCRIPTION = ("Data-parallel MindSpore training of y = f(x) with a Huber (or MSE) loss, on "
               "synthetic rows or a file of yours. Options come from the defaults, then "
               "--config FILE, then these flags.")
DEVICES = ("CPU", "Ascend", "GPU")
LOSSES = ("huber", "mse")
LR_SCHEDULES = ("cosine", "constant")
GRAD_BACKENDS = ("mindspore", "mpi")
AMP_LEVELS = ("O0", "O1", "O2", "O3")
AMP_DTYPES = ("float16", "bfloat16")
JIT_LEVELS = ("O0", "O1")
# Options that only describe the synthetic source, or only a data file.
SYNTHETIC_ONLY = ("features", "true_w", "true_b", "noise_std", "outlier_fraction",
                  "outlier_scale", "steps_per_epoch")
DATA_ONLY = ("target", "eval_fraction", "eval_data", "drop_nonfinite")
# Per-invocation actions: never part of a saved config.
INVOCATION = ("out", "resume", "dry_run")
# Keys of earlier releases that are gone; a saved config holding them still loads (warned).
REMOVED = ("fail_at_step", "fail_rank", "nan_at_step", "test_ckpt_pause")


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
    seed: int = _f(0, "seeds the data order or stream and the initial weights (the same on "
                      "every rank)")
    world_size: int = _f(0, "expected number of ranks; 0 accepts what the launcher started, "
                            "anything else must match it")
    # --- data ---
    data: str = _f("", "a file of rows (.npy, .npz, .csv, .mindrecord); empty = the synthetic "
                       "y = x·w + b + noise source")
    target: str = _f("", "target column of a CSV file; empty = the last column")
    eval_fraction: float = _f(0.1, "share of the file's rows held out for evaluation, chosen "
                                   "by the seed; 0 = every row trains")
    eval_data: str = _f("", "a separate file of held-out rows (instead of --eval_fraction)")
    standardize: bool | None = _f(None, "train on standardized features and target (statistics "
                                        "of the training split); default: true with --data, "
                                        "false for the synthetic source")
    drop_nonfinite: bool = _f(False, "drop rows of --data holding NaN or inf (counted) instead "
                                     "of refusing the file")
    batch_size: int = _f(256, "rows per rank per micro-batch")
    accum_steps: int = _f(1, "micro-batches accumulated into one optimizer step")
    features: int = _f(1, "columns of x; the true weight is true_w for every column")
    true_w: float = _f(2.0, "true weight of every feature in y = x·w + b")
    true_b: float = _f(3.0, "true bias in y = x·w + b")
    noise_std: float = _f(1.0, "std of the Gaussian noise on y")
    outlier_fraction: float = _f(0.0, "share of training rows with a large error of random "
                                      "sign, in [0, 1)")
    outlier_scale: float = _f(50.0, "size of an outlier error (uniform in 0.5-1.5 times this)")
    eval_size: int = _f(4096, "rows evaluated at each epoch end (the synthetic clean held-out "
                              "set; with --data at most this many held-out rows)")
    # --- model and optimisation ---
    hidden: str = _f("", "widths of hidden ReLU layers, e.g. 64,64 (an MLP); empty = the "
                         "linear model y = x·w + b")
    epochs: int = _f(5, "passes over the data (synthetic: steps_per_epoch steps of fresh rows)")
    steps_per_epoch: int = _f(200, "optimizer steps per synthetic epoch (each is accum_steps "
                                   "micro-batches); with --data it follows from the file")
    lr: float = _f(0.01, "SGD learning rate (the peak, with a schedule)")
    lr_schedule: str = _f("cosine", "constant, or cosine decay to 0 over all steps (final "
                                    "weights then settle instead of jittering with the noise)",
                          choices=LR_SCHEDULES)
    momentum: float = _f(0.9, "SGD momentum, in [0, 1)")
    loss: str = _f("huber", "training loss", choices=LOSSES)
    delta: float | None = _f(None, "Huber threshold in the target's units: quadratic below "
                                   "|error| = delta, linear above; default 1.0, with --data "
                                   "1.345 times a robust scale of a first fit's residuals")
    clip_norm: float = _f(0.0, "clip gradients to this global norm after the all-reduce; 0 = off")
    grad_backend: str = _f("mindspore", "how ranks average gradients: mindspore (its collectives "
                                        "inside the jit step: HCCL, NCCL, CPU) or mpi (mpi4py "
                                        "Allreduce on the host; CPU, MPI-launched jobs only)",
                           choices=GRAD_BACKENDS)
    # --- precision and the device loop ---
    amp_level: str = _f("O0", "mixed precision (ms.amp.auto_mixed_precision): O0 float32, O1 "
                              "low-precision matmuls, O2 low-precision network with float32 "
                              "norms, O3 all low precision", choices=AMP_LEVELS)
    amp_dtype: str = _f("float16", "the low-precision type of amp_level O1-O3",
                        choices=AMP_DTYPES)
    loss_scale: str = _f("none", "loss scaling: none, dynamic (halve on overflow and skip the "
                                 "update, double after 1000 good steps) or a fixed number")
    deterministic: bool = _f(True, "deterministic kernels and collectives "
                                   "(ms.set_deterministic); results are then reproducible")
    jit_level: str = _f("O0", "MindSpore graph optimisation level of the train step",
                        choices=JIT_LEVELS)
    sink_size: int = _f(0, "Ascend/GPU: steps per ms.data_sink call (the dataset's device "
                           "queue); 0 = feed from the host. Accepted on CPU, which runs the "
                           "host path")
    # --- output ---
    log_every: int = _f(50, "write a metrics line every this many optimizer steps")
    out: str = _f("", "run folder; empty means runs/<time>-<hex> (hex: rank 0's pid, 4 "
                      "digits). Must be new or empty, "
                      "except with --resume")
    quiet: bool = _f(False, "no progress bar (epoch lines and files are written all the same)")
    dry_run: bool = _f(False, "check the config, the data and the launch environment, print "
                              "what would run, and exit without training or writing anything")
    # --- checkpoints and faults ---
    ckpt_every: int = _f(100, "write a checkpoint every this many optimizer steps (and at the "
                              "end); 0 = only at the end")
    keep_ckpts: int = _f(3, "checkpoints kept (the newest ones)")
    resume: bool = _f(False, "continue the run in --out: from its newest good checkpoint, or "
                             "from step 0 if it has none yet; its config.yaml is the base, "
                             "flags override (e.g. more --epochs)")
    skip_nonfinite: int = _f(0, "skip the update of up to this many steps whose loss or "
                                "gradient is not finite (reported); 0 = stop at the first one")

    def global_batch_size(self, world_size: int) -> int:
        """Rows per optimizer step across all ranks."""
        return self.batch_size * self.accum_steps * world_size

    @property
    def synthetic(self) -> bool:
        """True when the rows come from the built-in generator, not a file."""
        return not self.data

    def hidden_sizes(self) -> list[int]:
        """`hidden` as a list of layer widths ([] = linear model)."""
        return [int(v) for v in self.hidden.split(",")] if self.hidden.strip() else []

    def loss_scale_value(self) -> float | None:
        """The fixed loss scale, or None for `none` and `dynamic`."""
        return None if self.loss_scale in ("none", "dynamic") else float(self.loss_scale)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, in field order."""
        return dataclasses.asdict(self)

    def saved_dict(self) -> dict[str, Any]:
        """What config.yaml holds: the fields that apply to this run, without per-invocation
        actions, so that `--config config.yaml` reruns it as is."""
        skip = set(INVOCATION) | set(DATA_ONLY if self.synthetic else SYNTHETIC_ONLY)
        if self.eval_data:
            skip.add("eval_fraction")  # a separate held-out file replaces the split
        return {k: v for k, v in self.to_dict().items() if k not in skip}


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_PY_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "bool | None": bool,
             "float | None": float}


def _type(name: str) -> type:
    return _PY_TYPES[FIELDS[name].type]


def _expected(name: str) -> str:
    f = FIELDS[name]
    choices = f.metadata.get("choices")
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return "one of " + ", ".join(choices) if choices else names[_type(name)]


def _coerce(name: str, value: Any) -> Any:
    """Check one value's type (YAML gives typed values; ints are accepted for floats)."""
    want = _type(name)
    if value is None and FIELDS[name].default is None:
        return None  # an optional field left to its automatic value
    if name == "loss_scale" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = repr(value)  # `loss_scale: 1024` in YAML means the number
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{name}: expected {_expected(name)}, got {value!r}")
    return value


def _check(cond: bool, name: str, accepted: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{name} must be {accepted}, got {value!r}")


def _check_types(cfg: Config) -> None:
    for name, f in FIELDS.items():
        value = _coerce(name, getattr(cfg, name))
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")


def _check_ranges(cfg: Config) -> None:
    for name in ("batch_size", "accum_steps", "features", "eval_size", "epochs",
                 "steps_per_epoch", "log_every", "keep_ckpts"):
        _check(getattr(cfg, name) >= 1, name, "an integer >= 1", getattr(cfg, name))
    for name in ("ckpt_every", "skip_nonfinite", "sink_size"):
        _check(getattr(cfg, name) >= 0, name, "an integer >= 0", getattr(cfg, name))
    _check(cfg.seed >= 0, "seed", "an integer >= 0", cfg.seed)
    _check(cfg.world_size >= 0, "world_size", "0 (any) or the number of ranks", cfg.world_size)
    # float32 is what the step computes in: a smaller value rounds to 0 (or a denormal) there
    tiny = f"> 0 (at least {F32_TINY:.2g}, float32's smallest normal number)"
    _check(cfg.lr >= F32_TINY, "lr", tiny, cfg.lr)
    _check(0 <= cfg.momentum < 1, "momentum", "in [0, 1)", cfg.momentum)
    _check(cfg.delta is None or cfg.delta >= F32_TINY, "delta", tiny, cfg.delta)
    _check(cfg.clip_norm >= 0, "clip_norm", ">= 0 (0 = off)", cfg.clip_norm)
    _check(cfg.noise_std >= 0, "noise_std", ">= 0", cfg.noise_std)
    _check(0 <= cfg.outlier_fraction < 1, "outlier_fraction", "in [0, 1)", cfg.outlier_fraction)
    _check(cfg.outlier_scale >= 0, "outlier_scale", ">= 0", cfg.outlier_scale)
    _check(0 <= cfg.eval_fraction < 1, "eval_fraction", "in [0, 1)", cfg.eval_fraction)
    _check(re.fullmatch(r"\s*|\d+(,\d+)*", cfg.hidden) is not None
           and all(w >= 1 for w in cfg.hidden_sizes()), "hidden",
           "comma-separated layer widths >= 1 such as 64,64, or empty", cfg.hidden)
    if cfg.loss_scale not in ("none", "dynamic"):
        try:
            scale = float(cfg.loss_scale)
        except ValueError:
            scale = math.nan
        _check(math.isfinite(scale) and scale >= 1, "loss_scale",
               "none, dynamic or a number >= 1", cfg.loss_scale)
    _check(cfg.sink_size <= 4096, "sink_size", "an integer in 0-4096", cfg.sink_size)
    if cfg.sink_size > 1:  # the host regains control only between sink calls
        for name in ("log_every", "ckpt_every") + (("steps_per_epoch",) if cfg.synthetic else ()):
            value = getattr(cfg, name)
            _check(value % cfg.sink_size == 0, name,
                   f"a multiple of --sink_size {cfg.sink_size}", value)
    _check_magnitudes(cfg)


# float32 squares stay finite below ~1.8e19: refuse synthetic rows whose errors could not.
# float32 training with room for the loss and its gradients: synthetic targets and unstandardized
# file values stay below this.
MAX_ABS_VALUE = 1e15
F32_TINY = 1.1754944e-38  # np.finfo(np.float32).tiny: smaller rounds to 0 or a denormal


def _check_magnitudes(cfg: Config) -> None:
    """The synthetic rows must fit float32 with room for the loss: |y| well below 1e19."""
    if not cfg.synthetic:
        return
    worst = (10 * abs(cfg.true_w) * cfg.features + abs(cfg.true_b) + 40 * cfg.noise_std
             + 1.5 * cfg.outlier_scale)
    if worst > MAX_ABS_VALUE:
        raise ConfigError(f"true_w, true_b, noise_std and outlier_scale make targets up to "
                          f"{worst:.3g}; they must stay below {MAX_ABS_VALUE:.0e} "
                          "(float32 training)")


def validate(cfg: Config, given: set[str] | None = None) -> Config:
    """Raise ConfigError for the first value out of range; return cfg unchanged otherwise.
    `given` are the keys the user set (YAML or flags): those that do not apply to the data
    source are refused."""
    _check_types(cfg)
    _check_ranges(cfg)
    given = given or set()
    if cfg.synthetic:
        bad = [k for k in DATA_ONLY if k in given]
        if bad:
            raise ConfigError(f"--{bad[0]} describes a data file; it needs --data PATH")
    else:
        bad = [k for k in SYNTHETIC_ONLY if k in given]
        if bad:
            what = ("follows from the file" if bad[0] in ("features", "steps_per_epoch")
                    else "describes the synthetic source")
            raise ConfigError(f"--{bad[0]} {what}; it cannot be given with --data")
        if cfg.eval_data and "eval_fraction" in given and cfg.eval_fraction > 0:
            raise ConfigError("--eval_data and --eval_fraction both choose the held-out rows; "
                              "give one of them")
    if cfg.grad_backend == "mpi" and cfg.device != "CPU":
        raise ConfigError(f"grad_backend mpi is for CPU runs; with --device {cfg.device} use "
                          "mindspore (HCCL/NCCL)")
    if cfg.resume and not cfg.out:
        raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
    return cfg


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats (`1e-2` is a number, as in `--lr 1e-2`) and
    duplicate keys refused (PyYAML keeps the last one silently)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"), list("-+0123456789."))


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in out:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(path: str, warn: Any = None) -> dict[str, Any]:
    """Read a YAML mapping of config keys; every problem is a one-line ConfigError.
    Keys removed in this release are dropped, with a warning through `warn`."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"--config {path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"--config {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value, "
                          f"got {type(data).__name__}")
    removed = [k for k in data if k in REMOVED]
    if removed and warn is not None:
        warn(f"--config {path}: ignoring {', '.join(removed)} (removed; faults for tests are "
             "injected with the TRAIN_FAULT environment variable)")
    for key in data:
        if key not in FIELDS and key not in REMOVED:
            raise ConfigError(f"--config {path}: unknown key {key!r}{_suggest(str(key))}")
    return {k: _coerce(k, v) for k, v in data.items() if k not in REMOVED}


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name.lstrip("-"), list(FIELDS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{hint}; accepted: {', '.join(FIELDS)}"


def _bool(text: str) -> bool:
    value = {"true": True, "false": False, "1": True, "0": False}.get(text.lower())
    if value is None:
        raise ValueError(text)
    return value


_bool.__name__ = "bool"  # argparse names the type in "invalid bool value"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and no usage dump (the contract is: one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            bad = message.split(":", 1)[1].split()[0]
            message = f"unknown option {bad}{_suggest(bad)}"
        elif m := re.match(r"argument --(\w+): invalid \w+ value: (.*)", message):
            message = f"--{m[1]}: expected {_expected(m[1])}, got {m[2]}"
        elif m := re.match(r"argument --(\w+): expected one argument", message):
            message = f"--{m[1]}: expected {_expected(m[1])} after it"
        raise ConfigError(message)


def build_parser(prog: str = "python -m train", description: str | None = None) -> _Parser:
    """The command line: --config plus one flag per Config field, defaults left unset."""
    p = _Parser(prog=prog, description=description or DESCRIPTION,
                argument_default=argparse.SUPPRESS, allow_abbrev=False)
    p.add_argument("--config", metavar="FILE", help="YAML file of option: value pairs; "
                   "flags given on the command line override it")
    for name, f in FIELDS.items():
        help_ = f"{f.metadata['help']} (default: {f.default!r})"
        if _type(name) is bool:  # `--quiet` alone means true; `--standardize false` is explicit
            p.add_argument(f"--{name}", nargs="?", const=True, type=_bool, help=help_,
                           metavar="true|false")
        else:
            choices = f.metadata.get("choices")  # checked by validate(), shown by --help
            p.add_argument(f"--{name}", type=_type(name), help=help_,
                           metavar="{" + ",".join(choices) + "}" if choices else name.upper())
    return p


def parse_config(argv: list[str] | None = None, parser: _Parser | None = None,
                 base: dict[str, Any] | None = None, warn: Any = None, check: bool = True,
                 **overrides: Any) -> tuple[Config, argparse.Namespace]:
    """defaults < `base` < YAML < `overrides` < flags; returns the validated (unless not
    `check`) config and flags. `ns.given` holds the keys set by YAML, overrides or flags."""
    parser = parser or build_parser()
    ns = parser.parse_args(sys.argv[1:] if argv is None else argv)
    values: dict[str, Any] = dict(base or {})
    given: dict[str, Any] = {}
    if getattr(ns, "config", None):
        given.update(load_yaml(ns.config, warn))
    given.update(overrides)
    given.update({k: v for k, v in vars(ns).items() if k in FIELDS})
    values.update(given)
    ns.given = set(given)
    try:
        cfg = Config(**values)
    except TypeError as e:  # a base (a saved config.yaml) with a key this release lacks
        raise ConfigError(f"config: {e}") from None
    return (validate(cfg, ns.given) if check else cfg), ns


def config_text(cfg: Config) -> str:
    """The config as YAML that `--config` reads back."""
    return yaml.safe_dump(cfg.saved_dict(), sort_keys=False)


def save_config(cfg: Config, path: Path) -> None:
    """Write `config_text` atomically (a resumed run rewrites it; a kill must not leave half
    a file)."""
    from train.output import write_atomic

    write_atomic(path, config_text(cfg))
