"""What one process will run, decided before any process group starts: the config (with a
resumed run's own config as the base), injected faults, the launcher, the data source, the
automatic options made concrete, the run folder and the checkpoint to continue from.

**Automatic values are decided here, once.** An option left automatic (`delta`, `standardize`;
for a file, the steps per epoch) takes the value decided from the data's facts (`resolve`,
train/auto.py); the data layer states facts and never sees the config: it reads the
`DataSpec` built here (`data_spec`). The resolved config is what config.yaml saves,
what the fingerprint records and what every later stage reads.

Everything here runs without importing MindSpore, so that refusals are cheap and happen before
`init()`. One process owns its folder and chooses its checkpoint before MindSpore is even
imported; several ranks join the cluster first, then rank 0 does both and shares the outcome.
Nothing in the folder changes until a good checkpoint has been chosen (or none exists).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.dataset import steps_per_item
from pipeline.limits import MAX_STEPS
from pipeline.spec import DataSpec
from train import checkpoint as ck
from train import cluster as cl
from train import rundir
from train.auto import check_sink, choose
from train.config import LOSSES, Config, ConfigError, validate
from train.faults import Faults, from_env
from train.model import layout_of, network_spec, state_layout
from train.options import load_saved, parse_config, refuse_changes
from train.output import default_out_dir, warn
from train.user import check_options


class Notes(list):
    """Warnings of the planning stage: shown at once, kept for the run's log."""

    def __call__(self, msg: str) -> None:
        self.append(msg)
        warn(msg)


class RunPlan:
    """The decisions of `python -m train` up to the first step."""

    def __init__(self, cfg: Config, faults: Faults, launch: str, world: int, data: Any,
                 automatic: set[str], notes: Notes) -> None:
        self.cfg, self.faults, self.launch, self.world = cfg, faults, launch, world
        self.notes = notes
        self.source = make_source(cfg, data, world, automatic)
        self.automatic = {k: getattr(cfg, k) for k in sorted(automatic)} if not cfg.synthetic \
            else {}
        # where the linear model starts: the least-squares fit, or the seeded random weights
        self.start = self.source.start() if cfg.init == "least_squares" else None
        self.total = cfg.epochs * cfg.steps_per_epoch
        # steps per dataset item: ~16k rows; a source of yours, ~16k rows of 16 values
        wide = -(-self.source.features // 16) if cfg.user_data else 1
        self.chunk = steps_per_item(cfg.batch_size * cfg.accum_steps * wide)
        self.fingerprint = ck.fingerprint(cfg, world, data.identity)
        # The built-in model's tensors are known now; a network of yours only once it is built
        # (`build_network`, after the device is set): its checkpoint is chosen after that.
        self.layout = None if cfg.model else state_layout(
            data.features, cfg.hidden_sizes(), cfg.loss_scale, cfg.optimizer)
        self.net: Any = None
        self.out_dir = Path(cfg.out) if cfg.out else None
        self.ckpt: ck.Checkpoint | None = None
        self.owner: rundir.Owner | None = None  # holds the folder's lock while it lives

    @classmethod
    def from_argv(cls, argv: list[str] | None,
                  stop: Callable[[], None] | None = None) -> RunPlan:
        """Parse and check everything; ConfigError, ClusterError, FaultError on bad input.
        `stop()` is called during long work (a data file's conversion) and raises to end it."""
        from pipeline.source import open_data

        notes = Notes()
        # A resumed run's own config is the base and flags (e.g. --epochs) override it, so the
        # flags alone are checked only together with it (`--resume --target b` is complete).
        cfg, ns = parse_config(argv, warn=notes, check=False)
        if cfg.resume is True and isinstance(cfg.out, str) and cfg.out:
            if rundir.kind(Path(cfg.out)) != "run":
                rundir.check(Path(cfg.out), resume=True)  # "holds no run to continue"
            base = load_saved(str(Path(cfg.out) / rundir.CONFIG), warn=notes)
            try:
                cfg, _ = parse_config(argv, base=base, warn=notes)
            except ConfigError:  # a changed option is the cause, not what its change implies
                refuse_changes(cfg, ns.given, base)
                raise
        else:
            cfg = validate(cfg, ns.given)
        check_options(cfg)
        faults = from_env()
        launch, world = cl.check_launch(cfg.world_size)
        _check_compat(cfg, launch, world)  # what cannot work on any such host, first
        cl.probe_device(cfg.device)
        data = _open_user_data(cfg) if cfg.user_data else open_data(data_spec(cfg), stop)
        _check_user_code(cfg, data)
        cfg, automatic = resolve(cfg, data, world)
        plan = cls(cfg, faults, launch, world, data, automatic, notes)
        _check_memory(cfg, plan.source, plan.chunk)
        return plan

    def build_network(self, cluster: cl.Cluster) -> None:
        """Your network (`--model`), built on this rank now that the device, the ranks and the
        seed are set; its tensors make the checkpoint layout and join the fingerprint, so that
        a resume with another network is refused. Every rank must start from the same
        parameters: they were seeded alike; if they still differ, rank 0's are taken."""
        if not self.cfg.model:
            return
        from train.network import build_model

        self.net = build_model(self.cfg)
        try:
            spec, trained = network_spec(self.net)
        except ValueError as e:
            raise ConfigError(f"--model {self.cfg.model}: {e}") from None
        self.layout = layout_of(spec, trained, self.cfg.loss_scale, self.cfg.optimizer)
        self.fingerprint["network"] = {n: [list(s), d] for n, (s, d) in spec.items()}
        if cluster.world_size > 1:
            params = list(self.net.get_parameters())
            try:
                cluster.check_identical([p.asnumpy() for p in params])
            except RuntimeError:
                self.notes("your network's initial parameters differ across ranks (an "
                           "unseeded generator?): every rank takes rank 0's")
                cluster.broadcast_parameters(params)

    def prepare(self, out_dir: Path | None = None) -> None:
        """Own the run folder and choose the checkpoint (`--resume`); rank 0 or one process."""
        if out_dir is None:
            out_dir = self.out_dir or Path(default_out_dir(stamp()))
        self.out_dir = out_dir
        self.owner = rundir.claim(out_dir, self.cfg.resume, self.notes)
        if self.cfg.resume:
            self.ckpt = self._resume_from(out_dir)
            self._check_stats()
            # A data sink runs whole calls from the checkpoint on; CPU runs the host path.
            if self.ckpt is not None and self.cfg.device != "CPU" and self.cfg.sink_size > 1 \
                    and self.ckpt.step % self.cfg.sink_size:
                raise ConfigError(f"--sink_size {self.cfg.sink_size} does not divide the "
                                  f"checkpoint's step {self.ckpt.step}; resume with one that "
                                  "does")

    def _resume_from(self, out_dir: Path) -> ck.Checkpoint | None:
        """The checkpoint to continue from; a refusal for another global batch says which
        --batch_size keeps the checkpoint's on this many ranks."""
        try:
            return ck.resume_from(out_dir, self.layout, self.fingerprint, self.total, self.notes)
        except ck.ConfigChanged as e:
            saved = e.diffs.get("global_batch_size", (None,))[0]
            per = self.cfg.accum_steps * self.world
            if isinstance(saved, int) and saved % per == 0:
                raise ck.CheckpointError(
                    f"{e}; to resume on {self.world} rank(s) pass --batch_size {saved // per} "
                    f"(the checkpoint's global batch is {saved})") from None
            raise

    def _check_stats(self) -> None:
        """A resumed run standardizes with the statistics it started with."""
        saved = self.ckpt.state.get("data_stats") if self.ckpt else None
        if saved is not None and saved != self.source.stats:
            raise ck.CheckpointError("cannot resume: the data's statistics differ from the "
                                     "checkpoint's (a changed file, or another release)")

    def prepare_on_ranks(self, cluster: cl.Cluster) -> None:
        """Several ranks: rank 0 prepares, every rank learns the folder and the checkpoint."""
        out_dir = self.out_dir or Path(default_out_dir(cluster.broadcast_int(stamp())))
        err: Exception | None = None
        if cluster.is_main:
            try:
                self.prepare(out_dir)
            except Exception as e:  # noqa: BLE001 - whatever it is, every rank must hear of it
                err = e
        self.out_dir = out_dir
        if cluster.broadcast_int(1 if err else 0):  # every rank takes part, then stops
            raise err or ConfigError(f"rank 0 refused the run in {out_dir} (its error says why)")
        step = cluster.broadcast_int(self.ckpt.step + 1 if self.ckpt else 0) - 1
        if not cluster.is_main and step >= 0:
            try:
                self.ckpt = ck.CheckpointDir(out_dir).latest(self.layout, self.notes,
                                                             only_step=step)
            except ck.CheckpointError:
                self.ckpt = None
            if self.ckpt is None:
                err = ck.CheckpointError(f"checkpoint step {step} chosen by rank 0 is not "
                                         f"readable here (is {out_dir} on a shared file system?)")
        if cluster.all_sum([1.0 if err else 0.0])[0] > 0:  # any rank that cannot load stops all
            raise err or ck.CheckpointError(f"another rank could not read checkpoint step {step}")


    def start_output(self, out: Any, cluster: cl.Cluster) -> None:
        """The first writes into the folder, once its checkpoint is chosen: config.yaml, and a
        resumed run's metrics cut back to where it continues."""
        for msg in self.notes:
            out.log.warning(msg)
        if self.faults:  # a TRAIN_FAULT left set in a shell must not go unnoticed
            out.warn(f"TRAIN_FAULT={self.faults.text!r} is set: injecting test faults")
        if cluster.is_main:
            out.save_config(self.cfg)
            if self.cfg.resume:
                done = self.ckpt.state["finish"] if self.ckpt else None
                out.truncate_metrics(self.ckpt.step if self.ckpt else 0, finished=bool(
                    done and done["at_step"] == self.ckpt.step))
        out.info(f"# {self.source.describe()}")
        if self.automatic:
            out.info(f"# {self.describe_automatic()}")
        start = (f"resuming from checkpoint step {self.ckpt.step}" if self.ckpt else
                 "resuming from step 0 (no checkpoint yet)" if self.cfg.resume else "")
        if start:
            out.info(start)

    def describe_automatic(self) -> str:
        """One line: the values the data chose for the options left automatic (not delta and
        standardize, which the data line already gives)."""
        shown = {k: v for k, v in self.automatic.items() if k not in ("delta", "standardize")}
        return "chosen from the data (docs/data.md: automatic values): " + ", ".join(
            f"{k} {v}" for k, v in shown.items())

    def dry_run(self) -> int:
        """Print the resolved config and what the launcher would start; write nothing."""
        import yaml

        cfg = self.cfg
        if self.out_dir is not None:
            rundir.check(self.out_dir, cfg.resume)
            if cfg.resume and self.layout is not None:  # (yours: known once it is built)
                self.ckpt = self._resume_from(self.out_dir)
        print(yaml.safe_dump(cfg.saved_dict(), sort_keys=False), end="")
        print(f"# launch: {self.launch}  world_size: {self.world}  global_batch_size: "
              f"{cfg.global_batch_size(self.world)}  out: {cfg.out or 'runs/<time>-<hex>'}")
        print(f"# device: {cfg.device}  step path: {_step_path(cfg, self.chunk)}")
        print(f"# precision: amp_level {cfg.amp_level}"
              + (f" ({cfg.amp_dtype})" if cfg.amp_level != "O0" else "")
              + f", loss_scale {cfg.loss_scale}, deterministic {cfg.deterministic}, "
                f"jit_level {cfg.jit_level}")
        print(f"# {self.source.describe()}")
        if self.automatic:
            print(f"# {self.describe_automatic()}")
        if cfg.resume:
            print("# resume: " + (f"from checkpoint step {self.ckpt.step}" if self.ckpt
                                  else "the checkpoint is chosen once your network is built"
                                  if self.layout is None
                                  else "from step 0 (the folder has no checkpoint yet)"))
        if self.faults:
            print(f"# TRAIN_FAULT: {self.faults.text}")
        return 0


def stamp() -> int:
    """`unix_time << 16 | pid`: run folder names that two jobs started in the same second (a
    Slurm array) do not share."""
    return int(time.time()) << 16 | os.getpid() & 0xFFFF


def resolve(cfg: Config, data: Any, world: int) -> tuple[Config, set[str]]:
    """The config with every automatic value made concrete, and the names of those the data
    chose: what train/auto.py decides from the data's facts for each option left automatic
    (None, or `auto`), and for a file the steps per epoch its training rows give at this global
    batch."""
    if cfg.standardize and cfg.synthetic:
        raise ConfigError("--standardize true is for --data files; the synthetic rows are "
                          "generated in known units")
    auto = choose(cfg, data, world)
    # Absolute paths: the saved config then names the same files from any folder (a resume,
    # train.predict --run, train.plot).
    paths = {k: os.path.abspath(getattr(cfg, k)) for k in ("data", "eval_data")
             if getattr(cfg, k) and not (k == "data" and cfg.user_data)}
    cfg = dataclasses.replace(cfg, **auto, **paths)
    if not cfg.synthetic:
        cfg = dataclasses.replace(
            cfg, steps_per_epoch=data.train_rows // cfg.global_batch_size(world))
    if cfg.epochs * cfg.steps_per_epoch > MAX_STEPS:  # after the data set the steps per epoch
        per = "" if cfg.synthetic else " (from the file's rows)"
        raise ConfigError(f"--epochs {cfg.epochs} x {cfg.steps_per_epoch} steps per epoch{per} "
                          f"must be at most {MAX_STEPS} steps (the step counter is int32); "
                          "lower --epochs" + (" or --steps_per_epoch" if cfg.synthetic else ""))
    return cfg, set(auto)


def data_spec(cfg: Config) -> DataSpec:
    """What the data layer reads of a config (pipeline/spec.py): of a resolved config, the
    source's units and batch too."""
    # Every field is the option of the same name (the column lists as tuples of names).
    named = {"columns": cfg.names("columns"), "categorical": cfg.names("categorical")}
    return DataSpec(**{f.name: named[f.name] if f.name in named else getattr(cfg, f.name)
                       for f in dataclasses.fields(DataSpec)})


def make_source(cfg: Config, data: Any, world: int, automatic: set[str]) -> Any:
    """The source the trainer reads, for a resolved config; DataError for what cannot train."""
    source = data.source(data_spec(cfg), world, automatic)
    check_sink(cfg, data, source)
    return source


def open_resolved(cfg: Config, world: int = 1) -> tuple[Config, Any]:
    """The config resolved as a run resolves it, and the source it names: for the tools that
    read a run's data (train.plot, train.bench, train.verify)."""
    from pipeline.source import open_data

    data = open_data(data_spec(cfg))
    cfg, automatic = resolve(cfg, data, world)
    return cfg, make_source(cfg, data, world, automatic)


def open_source(cfg: Config, world: int = 1) -> Any:
    """The source a (saved, or fresh) config names, resolved as a run resolves it."""
    return open_resolved(cfg, world)[1]


def _step_path(cfg: Config, k: int) -> str:
    host = f"host feeding, {k} step(s) per dataset item"
    if not cfg.sink_size:
        return host
    if cfg.device == "CPU":
        return (f"{host} (--sink_size {cfg.sink_size} is for Ascend/GPU: MindSpore's data sink "
                "does not run on CPU)")
    return f"data sink (ms.data_sink), {cfg.sink_size} steps per call"


def _check_compat(cfg: Config, launch: str, world: int) -> None:
    """Combinations that cannot work on this launcher or device."""
    if cfg.grad_backend == "mpi" and world > 1 and launch != "mpi":
        raise ConfigError(f"--grad_backend mpi needs an MPI launcher "
                          f"(launch/run_mpirun.sh or slurm.sbatch), not {launch}")
    if cfg.device != "Ascend" and cfg.amp_level != "O0" and cfg.amp_dtype == "bfloat16":
        # MindSpore's bfloat16 support list: "only Ascend backend has adapted operators"
        raise ConfigError(f"--amp_dtype bfloat16 does not run on {cfg.device} (MindSpore has "
                          "bfloat16 kernels on Ascend only); use --amp_dtype float16 or "
                          "--amp_level O0")


def _open_user_data(cfg: Config) -> Any:
    """`--data MODULE:NAME`: your callable (and `config=`); its source checked (pipeline/user)."""
    from pipeline.user import UserData
    from train.user import call, resolve

    fn = resolve(cfg.data, "data")
    return UserData(call(fn, f"--data {cfg.data}", {}, cfg), cfg.data, cfg.seed,
                    cfg.eval_fraction)


def _check_user_code(cfg: Config, data: Any) -> None:
    """Code of yours must import now (exit 2 before anything starts), and the built-in model
    takes rows as the built-in sources give them."""
    from train.user import resolve

    if cfg.model:
        resolve(cfg.model, "model")
    if cfg.loss not in LOSSES:
        resolve(cfg.loss, "loss")
    if cfg.user_data and not cfg.model:
        (xs, xd), (ys, yd) = data.identity["x"], data.identity["y"]
        if len(xs) != 1 or xd != "float32" or ys != [1] or yd != "float32":
            raise ConfigError(f"the built-in model takes rows of x float32[features] and y "
                              f"float32[1]; --data {cfg.data} gives x {xd}{xs}, y {yd}{ys}: "
                              "give --model MODULE:NAME for your own network")


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# Dataset items in flight at once: MindSpore's prefetch queue (16 by default) plus the ones
# being made and used.
_ITEMS_IN_FLIGHT = 20


def _check_memory(cfg: Config, source: Any, chunk: int) -> None:
    """Refuse sizes that cannot fit in this host's free memory, with the size they need, instead
    of an out-of-memory kill (or the dataset engine's message) later."""
    f = source.features
    rows = cfg.batch_size * cfg.accum_steps * chunk
    # x, y and lr per item; making rows takes ~3 float64 temporaries per column.
    item = rows * (f + 2) * 4 + rows * (f + 5) * 8 * 3
    sizes = [f, *cfg.hidden_sizes(), 1]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    evals = min(cfg.eval_size, source.max_eval_rows())
    # The held-out rows stay as float32 x, y and a mask; making them takes the temporaries.
    need = (_ITEMS_IN_FLIGHT * item + evals * ((f + 2) * 4 + (f + 5) * 8 * 3) + 16 * params)
    free = _mem_available()
    if free is not None and need > free:
        raise ConfigError(f"batch_size {cfg.batch_size} x accum_steps {cfg.accum_steps} x "
                          f"{f} feature(s), eval_size {cfg.eval_size} and the model need about "
                          f"{need / 2**30:.1f} GiB of host memory per rank; "
                          f"{free / 2**30:.1f} GiB are available")
