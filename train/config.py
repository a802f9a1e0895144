"""The one run configuration: dataclass defaults, then an optional YAML file, then flags.

Every field says what it is, in its metadata next to its help text:
- `source`: the data source it describes: `synthetic` (refused with --data), `file` (refused
  without it) or `both`; config.yaml holds only the fields that apply to its run;
- `resume`: `refuse` (changing it changes the result: a resume that changes it is refused,
  naming it; the checkpoint fingerprint is made of these) or `allow` (it cannot change the
  result: how often to log, how many checkpoints to keep, ...);
- `invocation`: a detail of one command (out, resume, dry_run, config), never saved.
Every list of keys the code needs (the refusals, config.yaml, the fingerprint, docs/options.md's
option table, `--help`) is derived from these; a test fails when a field lacks them.

Unknown keys or flags, duplicate keys, wrong types and values out of range are a one-line
`ConfigError` naming the option and what it accepts (exit 2, before anything is written).
`python -m train.options --markdown` prints docs/options.md's option table.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import limits
from pipeline.fileio import write_atomic
from pipeline.limits import F32_TINY, MAX_ABS_VALUE, synthetic_bound

DESCRIPTION = ("Data-parallel MindSpore training of y = f(x) with a Huber (or MSE) loss, on "
               "synthetic rows or a file of yours. Options come from the defaults, then "
               "--config FILE, then these flags.")
DEVICES = ("CPU", "Ascend", "GPU")
LOSSES = ("huber", "mse")
OPTIMIZERS = ("sgd", "adamw")
# `MODULE:NAME`: a Python object of yours, found as `import MODULE` finds it (train/user.py).
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # a loss scale; float() takes more
LR_SCHEDULES = ("cosine", "constant")
GRAD_BACKENDS = ("mindspore", "mpi")
AMP_LEVELS = ("O0", "O1", "O2", "O3")
AMP_DTYPES = ("float16", "bfloat16")
JIT_LEVELS = ("O0", "O1")
INITS = ("auto", "random", "least_squares")
FINISHES = ("newton", "none")
SOURCES = ("synthetic", "file", "both")
RESUME = ("refuse", "allow")
# Keys of earlier releases that are gone; a saved config holding them still loads (warned).
REMOVED = ("fail_at_step", "fail_rank", "nan_at_step", "test_ckpt_pause")


class ConfigError(ValueError):
    """A user error in the configuration; the message is one line meant for the console."""


def _f(default: Any, help: str, *, resume: str, source: str = "both", invocation: bool = False,
       **kw: Any) -> Any:
    """A field and what it is. Optional metadata: `choices`; `at_least` (an integer's lower
    bound); `shown` (the default as docs/options.md and --help show it); `resume_missing` (what a
    checkpoint written before this option existed implied, if not its default);
    `with_data` (why a synthetic option is refused with --data, if not "describes the synthetic
    source")."""
    meta = {"help": help, "resume": resume, "source": source, "invocation": invocation, **kw}
    if isinstance(default, dict):  # a mutable default: each Config gets its own
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def is_import_path(value: Any) -> bool:
    """True for `MODULE:NAME` (an object of yours), as `--model`, `--loss` and `--data` take."""
    return isinstance(value, str) and IMPORT_PATH.fullmatch(value) is not None


@dataclass
class Config:
    """Everything a run depends on. Sizes are per rank unless a name says global."""

    config: str = _f("", "YAML file of `option: value` pairs (the option names; YAML 1.2 numbers "
                         "such as `1e-2`; a duplicate key is an error); flags override it",
                     resume="allow", invocation=True, shown="none")
    # --- where and how it runs ---
    device: str = _f("CPU", "`CPU`, `Ascend` or `GPU`; a host without that device is refused at "
                            "once (`TRAIN_NO_DEVICE_PROBE=1` skips the probe, e.g. to check an "
                            "Ascend command line with `--dry_run` on a laptop)",
                     resume="allow", choices=DEVICES)
    seed: int = _f(0, "seeds the data stream or order and the initial weights (the same on all "
                      "ranks)", resume="refuse", at_least=0)
    world_size: int = _f(0, "expected number of ranks; 0 accepts what the launcher started, "
                            "anything else must match it", resume="allow", at_least=0)
    # --- data ---
    data: str = _f("", "a file of rows (`.npy`, `.npz`, `.csv`, `.mindrecord`), or `MODULE:NAME`: "
                       "a callable of yours returning a map-style source (`__len__`, "
                       "`__getitem__(i) -> (x, y)` NumPy arrays), taken as given; none = the "
                       "synthetic y = x·w + b + noise source. On `--resume` its identity is "
                       "compared (a file: path, size, modification time, a hash of its head "
                       "and tail; a source: its name, length, shapes and dtypes)",
                   resume="refuse", shown="none", resume_missing=None)
    target: str = _f("", "the target column of a CSV", resume="refuse", source="file",
                     shown="last column")
    columns: str = _f("", "the feature columns of a CSV, by name: `a,b,c` (or a YAML list); "
                          "every other column is ignored, whatever it holds (text, dates)",
                      resume="refuse", source="file", shown="all but the target")
    categorical: str = _f("", "text columns of a CSV to one-hot encode, `col1,col2`: levels "
                              "learned from the training file (sorted), drop-first (the first "
                              "level is the reference: columns `col=level` for the others)",
                          resume="refuse", source="file", shown="none")
    eval_fraction: float = _f(0.1, "share of a file's rows held out, chosen by the seed; 0 = "
                                    "every row trains", resume="refuse", source="file")
    eval_data: str = _f("", "a separate file of held-out rows instead", resume="refuse",
                        source="file", shown="none")
    standardize: bool | None = _f(None, "train on standardized features and target; results in "
                                        "the data's units (`true` needs `--data`: the synthetic "
                                        "rows are generated in known units)",
                                  resume="refuse", shown="true for files", resume_missing=False)
    drop_nonfinite: bool = _f(False, "drop rows holding a missing cell (empty, `NA`, `NaN`), inf "
                                     "or a value beyond float32 (counted) instead of refusing "
                                     "the file", resume="refuse", source="file")
    batch_size: int | None = _f(None, "rows per rank per micro-batch (a resume may change it at "
                                      "the same global batch). Files: automatic, see \"Training "
                                      "on a file: automatic values\"", resume="allow", at_least=1,
                                shown="256; files: automatic")
    accum_steps: int = _f(1, "micro-batches accumulated into one optimizer step", resume="allow",
                          at_least=1)
    features: int = _f(1, "columns of x; the true weight is `true_w` for every column",
                       resume="refuse", source="synthetic", at_least=1,
                       with_data="follows from the file")
    true_w: float = _f(2.0, "the true weight of every feature", resume="refuse",
                       source="synthetic")
    true_b: float = _f(3.0, "the true bias", resume="refuse", source="synthetic")
    noise_std: float = _f(1.0, "std of the Gaussian noise on y", resume="refuse",
                          source="synthetic")
    outlier_fraction: float = _f(0.0, "share of training rows with a large error of random sign, "
                                      "in [0, 1)", resume="refuse", source="synthetic")
    outlier_scale: float = _f(50.0, "size of an outlier error (uniform in 0.5-1.5 times this)",
                              resume="refuse", source="synthetic")
    eval_size: int = _f(4096, "rows evaluated at each epoch end (synthetic: the clean held-out "
                              "set; files: at most this many held-out rows)", resume="allow",
                        at_least=1)
    # --- model and optimisation ---
    model: str = _f("", "`MODULE:NAME`: a callable of yours (a class or a factory) returning an "
                        "`nn.Cell`, called on every rank once the device, the ranks and the seed "
                        "are set; none = the built-in linear model (or `--hidden` MLP)",
                    resume="refuse", shown="none", resume_missing="")
    model_args: dict = _f({}, "a YAML/JSON mapping such as `{width: 16}`: keyword arguments of "
                              "`--model`'s callable (which also gets the resolved `config` if it "
                              "takes a parameter of that name)", resume="refuse", shown="none")
    hidden: str = _f("", "widths of hidden ReLU layers, e.g. `64,64` (an MLP: up to 64 layers of "
                         "1-1024); none = the linear model", resume="refuse", shown="none")
    epochs: int | None = _f(None, "passes over the data (synthetic: `steps_per_epoch` steps of "
                                  "fresh rows); a resume may raise it to train on. Files: "
                                  "automatic", resume="allow", at_least=1,
                            shown="5; files: automatic")
    steps_per_epoch: int = _f(200, "optimizer steps per epoch; for a file it follows from the "
                                   "rows", resume="refuse", source="synthetic", at_least=1,
                              with_data="follows from the file")
    lr: float | None = _f(None, "learning rate (the peak, with a schedule). Automatic: 0.01 "
                                "(SGD) or 0.001 (AdamW); the built-in model with SGD on a file: "
                                "1 over the curvature of the data", resume="refuse",
                          shown="0.01 SGD, 0.001 AdamW; files: automatic")
    init: str = _f("auto", "where training starts: `random` (seeded), `least_squares` (the linear "
                           "model at the least-squares fit of the training rows, which the "
                           "automatic delta computes anyway; files only) or `auto` (least_squares "
                           "for the linear model on a file, else random)", resume="refuse",
                   choices=INITS, resume_missing="random")
    lr_schedule: str = _f("cosine", "`cosine` (decay to 0 over all steps: final weights settle "
                                    "instead of jittering with the noise) or `constant`",
                          resume="refuse", choices=LR_SCHEDULES)
    optimizer: str = _f("sgd", "`sgd` (with `--momentum`) or `adamw` (MindSpore's "
                               "`nn.AdamWeightDecay`: beta1 0.9, beta2 0.999, eps 1e-6)",
                        resume="refuse", choices=OPTIMIZERS)
    momentum: float = _f(0.9, "SGD momentum, in [0, 1)", resume="refuse")
    weight_decay: float = _f(0.0, "decoupled weight decay (AdamW) or L2 term added to the "
                                  "gradient (SGD), as MindSpore's optimizers apply it: to every "
                                  "parameter whose name holds neither `beta` nor `gamma`",
                             resume="refuse")
    finish: str = _f("newton", "after the last step, take the built-in linear model to the "
                               "exact optimum of its objective: float64 Newton passes over the "
                               "training rows (`newton`), or leave SGD's parameters as they "
                               "are (`none`). A resume may change it: `--resume --finish "
                               "newton` finishes a run that ended without it",
                     resume="allow", choices=FINISHES)
    loss: str = _f("huber", "`huber` (ours), `mse`, or `MODULE:NAME`: a callable of yours "
                            "returning a Cell `(prediction, target) -> scalar`",
                   resume="refuse", choices=LOSSES, imports=True)
    delta: float | None = _f(None, "Huber threshold in the target's units (files: 1.345 x the "
                                   "robust scale of a Huber fit with MAD rescaling, printed)",
                             resume="refuse", shown="1.0; files: from the data")
    clip_norm: float = _f(0.0, "clip gradients to this global norm after the all-reduce; 0 = off",
                          resume="refuse")
    grad_backend: str = _f("mindspore", "how ranks average gradients: `mindspore` (its "
                                        "collectives inside the jit step) or `mpi` (mpi4py "
                                        "`Allreduce` on the host; CPU runs started by "
                                        "`run_mpirun.sh` or `slurm.sbatch`; reads the gradients "
                                        "every step, by design; in one process there is nothing "
                                        "to average and it changes nothing)",
                           resume="allow", choices=GRAD_BACKENDS)
    # --- precision and the device loop ---
    amp_level: str = _f("O0", "mixed precision (`ms.amp.auto_mixed_precision`): O0 float32, O1 "
                              "low-precision matmuls, O2 low-precision network with float32 "
                              "norms, O3 all low precision", resume="refuse", choices=AMP_LEVELS)
    amp_dtype: str = _f("float16", "the low-precision type of O1-O3: `float16` or `bfloat16` "
                                   "(bfloat16: Ascend only, refused on CPU and GPU)",
                        resume="refuse", choices=AMP_DTYPES)
    loss_scale: str = _f("none", "`none`, `dynamic` (2^16, halved on overflow, doubled after "
                                 "1,000 good steps) or a fixed number in 1-3.4e38; an overflow's "
                                 "update is skipped and counted (`overflow_skips`)",
                         resume="refuse", shown="`none`")
    deterministic: bool = _f(True, "deterministic kernels and, on Ascend, deterministic HCCL "
                                   "reductions (`ms.set_deterministic`)", resume="allow")
    jit_level: str = _f("O0", "MindSpore's graph optimisation level for the step (`O0`, `O1`)",
                        resume="allow", choices=JIT_LEVELS)
    sink_size: int = _f(0, "Ascend/GPU: steps per `ms.data_sink` call; 0 = feed from the host. "
                           "Accepted on CPU (which runs the host path), so one config serves "
                           "both", resume="allow", at_least=0)
    # --- output ---
    log_every: int = _f(50, "a metrics line (and the device read behind it) every this many "
                            "optimizer steps", resume="allow", at_least=1)
    out: str = _f("", "run folder (`<hex>`: 4 hex digits of rank 0's pid); must be new or empty "
                      "(an earlier run is never overwritten), except with `--resume`",
                  resume="allow", invocation=True, shown="runs/<time>-<hex>")
    quiet: bool = _f(False, "no progress bar (epoch lines and files are written all the same)",
                     resume="allow")
    dry_run: bool = _f(False, "check the config, data, run folder and launch environment; print "
                              "the resolved config and plan; write nothing into the run folder "
                              "(a `--data` file is validated, and converted into the cache when "
                              "it is not a float32 `.npy`, as the run would). Under a launcher "
                              "every rank checks: `run_msrun.sh --dry_run` starts msrun",
                       resume="allow", invocation=True)
    # --- checkpoints and faults ---
    ckpt_every: int = _f(100, "write a checkpoint every this many optimizer steps (and at the "
                              "end); 0 = only at the end", resume="allow", at_least=0)
    keep_ckpts: int = _f(3, "checkpoints kept (the newest ones)", resume="allow", at_least=1)
    resume: bool = _f(False, "continue the run in `--out`: from its newest good checkpoint, or "
                             "from step 0 if it has none yet; its `config.yaml` is the base, "
                             "flags override (e.g. more `--epochs`)",
                      resume="allow", invocation=True)
    skip_nonfinite: int = _f(0, "skip the update of up to this many steps whose loss or gradient "
                                "is not finite (reported); 0 = stop at the first one",
                             resume="allow", at_least=0)

    def global_batch_size(self, world_size: int) -> int:
        """Rows per optimizer step across all ranks (of a resolved config)."""
        return self.batch_size * self.accum_steps * world_size

    @property
    def synthetic(self) -> bool:
        """True when the rows come from the built-in generator, not a file or a source."""
        return not self.data

    @property
    def user_data(self) -> bool:
        """True when `--data` names a source of yours (`MODULE:NAME`), not a file."""
        return is_import_path(self.data)

    @property
    def builtin(self) -> bool:
        """True for the built-in model and loss, False once `--model` or `--loss` is yours."""
        return not self.model and self.loss in LOSSES

    def hidden_sizes(self) -> list[int]:
        """`hidden` as a list of layer widths ([] = linear model)."""
        return [int(v) for v in self.hidden.split(",")] if self.hidden.strip() else []

    def names(self, option: str) -> tuple[str, ...]:
        """`columns` or `categorical` as names (() = none given)."""
        text = getattr(self, option)
        return tuple(c.strip() for c in text.split(",")) if text.strip() else ()

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


def _keys(**want: Any) -> tuple[str, ...]:
    return tuple(n for n, f in FIELDS.items() if all(f.metadata[k] == v for k, v in want.items()))


SYNTHETIC_ONLY = _keys(source="synthetic")  # refused with --data
DATA_ONLY = _keys(source="file")  # refused without --data
INVOCATION = _keys(invocation=True)  # never part of a saved config


def applies(name: str, synthetic: bool) -> bool:
    """Whether a field means something for a run on this source."""
    return FIELDS[name].metadata["source"] in ("both", "synthetic" if synthetic else "file")


def resume_keys(synthetic: bool) -> tuple[str, ...]:
    """The fields a resume must not change, for a run on this source (the fingerprint)."""
    return tuple(n for n in _keys(resume="refuse") if applies(n, synthetic))


def resume_missing(name: str) -> Any:
    """What a checkpoint written before field `name` existed implied for it."""
    meta = FIELDS[name].metadata
    return meta["resume_missing"] if "resume_missing" in meta else FIELDS[name].default


def saved_missing() -> dict[str, Any]:
    """What a config.yaml of an older release implied for the options it lacks (those whose
    `resume_missing` differs from "use the default"): the base of a resumed old run."""
    return {n: f.metadata["resume_missing"] for n, f in FIELDS.items()
            if f.metadata.get("resume_missing") is not None}


_PY_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "bool | None": bool,
             "float | None": float, "int | None": int, "dict": dict}


def value_type(name: str) -> type:
    """The Python type of a field's values."""
    return _PY_TYPES[FIELDS[name].type]


def expected(name: str) -> str:
    """What a field accepts, for error messages."""
    f = FIELDS[name]
    choices = f.metadata.get("choices")
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a mapping such as {width: 16}"}
    if choices:
        return "one of " + ", ".join(choices) + (" or MODULE:NAME" if f.metadata.get("imports")
                                                  else "")
    return names[value_type(name)]


def coerce(name: str, value: Any) -> Any:
    """Check one value's type (YAML gives typed values; ints are accepted for floats) and give
    it its one spelling: a choice in any case (`ascend`), `hidden` as a list or a number."""
    want = value_type(name)
    if value is None and FIELDS[name].default is None:
        return None  # an optional field left to its automatic value
    choices = FIELDS[name].metadata.get("choices")
    if choices and isinstance(value, str):
        value = next((c for c in choices if c.lower() == value.lower()), value)
    if name == "hidden" and isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        value = ",".join(map(str, value))  # `hidden: [64, 64]` is `--hidden 64,64`
    if name in ("columns", "categorical") and isinstance(value, list) and all(
            isinstance(v, str) for v in value):
        value = ",".join(value)  # `columns: [a, b]` is `--columns a,b`
    if name == "hidden" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if want is bool and type(value) is int and value in (0, 1):
        value = bool(value)  # `quiet: 1`, as `--quiet 1`
    if name == "loss_scale" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = repr(value)  # `loss_scale: 1024` in YAML means the number
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{name}: expected {expected(name)}, got {value!r}")
    if want is dict:
        _check_mapping(name, value)
    return value


def _check_mapping(name: str, value: dict) -> None:
    """Keyword names to plain YAML values (what config.yaml saves and reads back)."""
    def plain(v: Any, depth: int = 0) -> bool:
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if items is not None:
            return depth < 8 and all(plain(x, depth + 1) for x in items) and all(
                isinstance(k, str) for k in (v if isinstance(v, dict) else ()))
        return v is None or isinstance(v, (bool, int, str)) or (
            isinstance(v, float) and math.isfinite(v))
    if not all(isinstance(k, str) and k.isidentifier() for k in value) or not plain(value):
        raise ConfigError(f"{name}: expected a mapping of keyword names to numbers, strings, "
                          f"booleans or lists and mappings of them, got {value!r}")


def _check(cond: bool, name: str, accepted: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{name} must be {accepted}, got {value!r}")


def _check_types(cfg: Config) -> Config:
    """The config with every value of its field's type and spelling (or ConfigError)."""
    values = {}
    for name, f in FIELDS.items():
        value = values[name] = coerce(name, getattr(cfg, name))
        choices = f.metadata.get("choices")
        if choices and value not in choices and not (f.metadata.get("imports")
                                                     and is_import_path(value)):
            raise ConfigError(f"{name} must be {expected(name)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return dataclasses.replace(cfg, **values)


def _check_ranges(cfg: Config) -> None:
    for name, f in FIELDS.items():
        if "at_least" in f.metadata and getattr(cfg, name) is not None:
            low, value = f.metadata["at_least"], getattr(cfg, name)
            _check(value >= low, name, f"an integer >= {low}" if name != "world_size" else
                   "0 (any) or the number of ranks", value)
    # float32 is what the step computes in: a smaller value rounds to 0 (or a denormal) there
    tiny = f"> 0 (at least {F32_TINY:.2g}, float32's smallest normal number)"
    _check(cfg.lr is None or cfg.lr >= F32_TINY, "lr", tiny, cfg.lr)
    _check(0 <= cfg.momentum < 1, "momentum", "in [0, 1)", cfg.momentum)
    _check(cfg.delta is None or cfg.delta >= F32_TINY, "delta", tiny, cfg.delta)
    _check(cfg.clip_norm >= 0, "clip_norm", ">= 0 (0 = off)", cfg.clip_norm)
    _check(cfg.weight_decay >= 0, "weight_decay", ">= 0 (0 = off)", cfg.weight_decay)
    _check(cfg.noise_std >= 0, "noise_std", ">= 0", cfg.noise_std)
    _check(0 <= cfg.outlier_fraction < 1, "outlier_fraction", "in [0, 1)", cfg.outlier_fraction)
    _check(cfg.outlier_scale >= 0, "outlier_scale", ">= 0", cfg.outlier_scale)
    _check(0 <= cfg.eval_fraction < 1, "eval_fraction", "in [0, 1)", cfg.eval_fraction)
    sizes = cfg.hidden_sizes() if re.fullmatch(r"\s*|\d{1,9}(,\d{1,9})*", cfg.hidden) else [0]
    _check(limits.mlp_fits(sizes), "hidden", limits.MLP_ACCEPTED, cfg.hidden)  # it compiles
    if cfg.loss_scale not in ("none", "dynamic"):
        scale = float(cfg.loss_scale) if NUMBER.fullmatch(cfg.loss_scale) else 0.0
        _check(1 <= scale <= limits.F32_MAX, "loss_scale", "none, dynamic or a number in "
               f"1-{limits.F32_MAX:.2g} (float32's largest)", cfg.loss_scale)
    _check(cfg.sink_size <= 4096, "sink_size", "an integer in 0-4096", cfg.sink_size)
    if cfg.sink_size > 1:  # the host regains control only between sink calls
        for name in ("log_every", "ckpt_every") + (("steps_per_epoch",) if cfg.synthetic else ()):
            value = getattr(cfg, name)
            _check(value % cfg.sink_size == 0, name,
                   f"a multiple of --sink_size {cfg.sink_size}", value)
    _check_names(cfg)
    # The synthetic rows must fit float32 with room for the loss: |y| well below 1e19.
    worst = cfg.synthetic and synthetic_bound(cfg.true_w, cfg.features, cfg.true_b,
                                              cfg.noise_std, cfg.outlier_scale)
    if worst > MAX_ABS_VALUE:
        raise ConfigError(f"true_w, true_b, noise_std and outlier_scale make targets up to "
                          f"{worst:.3g}; they must stay below {MAX_ABS_VALUE:.0e}")


def _check_names(cfg: Config) -> None:
    """--columns, --categorical: names, each once; categorical ones among named columns."""
    for name in ("columns", "categorical"):
        found = cfg.names(name)
        _check(all(found) and len(set(found)) == len(found), name,
               "comma-separated column names, each once, or empty", getattr(cfg, name))
    columns = cfg.names("columns")
    if cfg.target and cfg.target in columns:
        raise ConfigError(f"--columns names {cfg.target!r}, the --target; columns are features")
    if outside := [c for c in cfg.names("categorical") if columns and c not in columns]:
        raise ConfigError(f"--categorical {outside[0]} is not among --columns {cfg.columns}; "
                          "a categorical column is a feature: list it there too")


def validate(cfg: Config, given: set[str] | None = None) -> Config:
    """Raise ConfigError for the first value out of range; return the config, each value in
    its one spelling, otherwise. `given` are the keys the user set (YAML or flags): those that
    do not apply to the data source are refused."""
    cfg = _check_types(cfg)
    _check_ranges(cfg)
    bad = [k for k in FIELDS if k in (given or ()) and not applies(k, cfg.synthetic)]
    if bad and cfg.synthetic:
        raise ConfigError(f"--{bad[0]} describes a data file; it needs --data PATH")
    if bad:
        what = FIELDS[bad[0]].metadata.get("with_data", "describes the synthetic source")
        raise ConfigError(f"--{bad[0]} {what}; it cannot be given with --data")
    if cfg.eval_data and "eval_fraction" in (given or ()) and cfg.eval_fraction > 0:
        raise ConfigError("--eval_data and --eval_fraction both choose the held-out rows; "
                          "give one of them")
    if cfg.init == "least_squares" and (cfg.hidden_sizes() or cfg.synthetic or cfg.model
                                        or cfg.user_data):
        raise ConfigError("--init least_squares starts the linear model on a file at its "
                          "least-squares fit; use --init random or auto"
                          + (" with --hidden" if cfg.hidden_sizes() else " with --model"
                             if cfg.model else " with a --data source" if cfg.user_data
                             else " without --data"))
    if cfg.grad_backend == "mpi" and cfg.device != "CPU":
        raise ConfigError(f"grad_backend mpi is for CPU runs; with --device {cfg.device} use "
                          "mindspore (HCCL/NCCL)")
    if cfg.resume and not cfg.out:
        raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
    return cfg


def config_text(cfg: Config) -> str:
    """The config as YAML that `--config` reads back."""
    return yaml.safe_dump(cfg.saved_dict(), sort_keys=False)


def save_config(cfg: Config, path: Path) -> None:
    """Write `config_text` atomically (a resumed run rewrites it; a kill must not leave half
    a file)."""
    write_atomic(path, config_text(cfg))
