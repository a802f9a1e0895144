"""A trained run as a model to use: a run folder's newest good checkpoint (or a named one), its
features' names, and its standardization built into the network, so that it takes features in
the data's own units and predicts the target in its own units.

`train.predict` and `train.export` both use `load_run`, so the exported MindIR computes what
`train.predict` prints. The folder is data from outside: config.yaml is parsed and validated as a
resumed run's is, and the checkpoint is verified as `--resume` verifies it (train/checkpoint.py)
before any tensor reaches MindSpore. Every problem is an `InferError`: one line, exit 2.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from train import checkpoint as ck
from train import rundir
from train.config import Config, ConfigError, resume_keys
from train.model import layout_of, network_spec, state_layout, trained_parameters
from train.output import warn


class InferError(ValueError):
    """A run folder that cannot be used for inference; one line for the console (exit 2)."""


@dataclass
class RunModel:
    """A verified checkpoint of a run, ready to predict."""

    cfg: Config
    columns: list[str]  # the features' names, then the target's
    params: dict[str, np.ndarray]  # the model's parameters, in training units
    stats: dict[str, list[float]] | None  # mean and std of every column (standardized runs)
    checkpoint: Path
    x_spec: tuple[tuple[int, ...], str] | None = None  # a source of yours: a row's x (as given)
    net: Any = None  # a network of yours, built for the layout check (parameters set later)
    # --categorical columns' levels, sorted: the first is the reference (no column of its
    # own), feature `col=level` is 1 for each other level (pipeline/formats.py TableSpec)
    levels: dict[str, list[str]] | None = None

    @property
    def features(self) -> list[str]:
        """The features' names, in the order the model takes them."""
        return self.columns[:-1]

    @property
    def target(self) -> str:
        """The target's name."""
        return self.columns[-1]

    def _units(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of every column (zeros and ones for an unstandardized run)."""
        f = len(self.features)
        mean = np.array(self.stats["mean"]) if self.stats else np.zeros(f + 1)
        std = np.array(self.stats["std"]) if self.stats else np.ones(f + 1)
        return mean, std

    def model(self) -> Any:
        """The trained MindSpore network, in the units it trained in."""
        from mindspore import Tensor

        from train.model import make_model

        net = self.net if self.net is not None else make_model(
            len(self.features), self.cfg.seed, self.cfg.hidden_sizes())
        for p in net.get_parameters():
            p.set_data(Tensor(self.params[p.name]))
        return net

    def predict_raw(self, x: np.ndarray, net: Any = None) -> np.ndarray:
        """A source of yours: the network's output for inputs x (rows, *x) as given."""
        from mindspore import Tensor

        net = net or self.model()
        return net(Tensor(np.ascontiguousarray(x))).asnumpy()

    def float32_features(self) -> list[str]:
        """Features whose values float32 cannot hold to their spread (mean beyond 256
        standard deviations, the cache's threshold for storing a column centred): a network
        that takes raw float32 features loses them."""
        mean, std = self._units()
        return [n for n, m, s in zip(self.features, mean, std) if abs(m) > 256 * s]

    def network(self) -> Any:
        """A MindSpore cell: float32 features (rows, features) in the data's units -> the
        target (rows,) in its units, standardization built in (what train.export writes)."""
        from mindspore import Tensor, nn, ops

        net = self.model()
        mean, std = self._units()
        # the same float32 arithmetic as training's standardization (pipeline/files.py)
        shift, scale = mean[:-1].astype(np.float32), (1.0 / std[:-1]).astype(np.float32)
        y_scale, y_shift = np.float32(std[-1]), np.float32(mean[-1])

        class Predictor(nn.Cell):
            """Features in the data's units -> the target in its units."""

            def __init__(self) -> None:
                super().__init__()
                self.model = net
                self.shift, self.scale = Tensor(shift), Tensor(scale)
                self.y_scale, self.y_shift = Tensor(y_scale), Tensor(y_shift)

            def construct(self, x: Tensor) -> Tensor:
                y = self.model((x - self.shift) * self.scale) * self.y_scale + self.y_shift
                return ops.reshape(y, (-1,))

        return Predictor()

    def predict(self, x: np.ndarray, net: Any = None) -> np.ndarray:
        """Predictions (rows,) for features x (rows, features) in the data's units: centred
        and scaled in float64 on the host (a column of 1e7 + a small signal keeps it), the
        network in float32, back to the target's units in float64."""
        from mindspore import Tensor

        net = net or self.model()
        mean, std = self._units()
        z = ((np.asarray(x, np.float64) - mean[:-1]) / std[:-1]).astype(np.float32)
        y = net(Tensor(np.ascontiguousarray(z))).asnumpy().astype(np.float64)[:, 0]
        return y * std[-1] + mean[-1]


RELISTS = 5  # listings tried: a live run (--keep_ckpts 1) rotates its newest away as it is read


def load_run(run_dir: Path, checkpoint: str = "", warn: Callable[[str], None] = warn) -> RunModel:
    """The run in `run_dir` at its newest good checkpoint, or at `checkpoint` (a step, or a
    name like ckpt-00000100); InferError for anything else. A checkpoint that a live run
    replaced or removed while it was read is looked for again (the folder listed anew); one
    that is damaged is skipped for the next older, saying so through `warn`."""
    cfg = _config(run_dir)
    ckdir = ck.CheckpointDir(run_dir)
    step = _step_of(checkpoint) if checkpoint else None
    damaged: dict[str, tuple[int, str]] = {}  # manifest name -> (its step, why unusable)
    for _ in range(RELISTS):
        for at, manifest in _listing(run_dir, ckdir, step, checkpoint):
            if manifest.name in damaged:
                continue
            seen = _identity(manifest)
            try:
                model = _load(cfg, ckdir, at, manifest)
            except ConfigEdited:
                raise
            except (ck.CheckpointError, ValueError) as e:
                if seen is None or _identity(manifest) != seen:
                    break  # rotated away or written again as we read it: list anew
                damaged[manifest.name] = (at, str(e))
                continue
            for name, (newer, why) in damaged.items():
                if newer > at:  # (one found damaged before a relist may be older)
                    warn(f"checkpoint {name} is unusable ({why}); using the older "
                         f"{manifest.stem}")
            return model
        else:
            break  # every checkpoint listed was tried
    why = "; ".join(f"{n}: {w}" for n, (_, w) in damaged.items()) or \
        f"each was replaced as it was read, {RELISTS} times over"
    raise InferError(f"{run_dir}: no usable checkpoint ({why[:300]})")


def _listing(run_dir: Path, ckdir: ck.CheckpointDir, step: int | None,
             checkpoint: str) -> list[tuple[int, Path]]:
    """(step, manifest) of the run's checkpoints, newest first (only `step`'s if given);
    InferError if there is none."""
    try:
        manifests = ckdir.manifests()
    except ck.CheckpointError as e:
        raise InferError(str(e)) from None
    if step is not None:
        manifests = [(s, p) for s, p in manifests if s == step]
        if not manifests:
            raise InferError(f"{run_dir} has no checkpoint {checkpoint!r}; it has: "
                             + (", ".join(p.stem for _, p in ckdir.manifests()) or "none"))
    if not manifests:
        raise InferError(f"{run_dir} holds no checkpoint yet (a run writes one every "
                         "--ckpt_every steps and at its end)")
    return manifests


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which file `path` names now (None: no file): a checkpoint written again is another."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class ConfigEdited(InferError):
    """config.yaml no longer says what the checkpoint was trained with."""


def _check_edits(cfg: Config, state: dict, run_dir: Path, manifest: Path) -> None:
    """Refuse a config.yaml edited after training: the options a resume must not change,
    against the checkpoint's record of them (its fingerprint), as `--resume` compares them."""
    saved = state.get("fingerprint")
    if not isinstance(saved, dict):
        return  # an unreadable record: the checkpoint's verification says why
    skip = ("data", "eval_data", "global_batch_size", "network")  # identities, not options
    current = {k: getattr(cfg, k) for k in resume_keys(cfg.synthetic) if k not in skip}
    diffs = ck.config_diffs({k: v for k, v in saved.items() if k not in skip}, current)
    if diffs:
        name = rundir.CONFIG
        raise ConfigEdited(
            f"{run_dir / name} differs from what checkpoint {manifest.stem} was trained "
            "with, in " + ", ".join(f"{k} ({a!r} in the checkpoint, {b!r} in {name})"
                                    for k, (a, b) in diffs.items())
            + "; it was edited after training: restore those values")


def _config(run_dir: Path) -> Config:
    try:
        return rundir.read_config(run_dir)
    except ConfigError as e:  # (its message names the file)
        raise InferError(str(e)) from None


def _step_of(name: str) -> int:
    if Path(name).name != name:
        raise InferError(f"--ckpt {name!r}: a checkpoint of RUN_DIR, by step (100) or name "
                         "(ckpt-00000100), not a path")
    m = re.fullmatch(r"(?:ckpt-)?(\d+)(?:\.json|\.safetensors)?", name)
    if not m:
        raise InferError(f"--ckpt {name!r}: expected a step (100) or a checkpoint name "
                         "(ckpt-00000100)")
    return int(m[1])


def _load(cfg: Config, ckdir: ck.CheckpointDir, step: int, manifest: Path) -> RunModel:
    """One checkpoint, verified against the layout its own column names imply (a network of
    yours: the layout of the network its config builds)."""
    state = _state(manifest)
    _check_edits(cfg, state, ckdir.dir.parent, manifest)
    columns = _columns(cfg, state)
    x_spec = _x_spec(state) if cfg.user_data else None
    features = int(np.prod(x_spec[0])) if x_spec else len(columns) - 1
    net = None
    if cfg.model:
        net = _user_network(cfg)
        spec, trained = network_spec(net)
        layout = layout_of(spec, trained, cfg.loss_scale, cfg.optimizer)
    else:
        layout = state_layout(features, cfg.hidden_sizes(), cfg.loss_scale, cfg.optimizer)
    got = ckdir.load(step, manifest, layout)  # ValueError (unusable) says why
    stats = got.state.get("data_stats")
    levels = got.state.get("levels") or None
    if cfg.names("categorical") and levels is None:
        raise ValueError("a run with --categorical whose checkpoint lacks its levels")
    if cfg.standardize and (stats is None or len(stats["mean"]) != len(columns)):
        raise ValueError("a standardized run's checkpoint without matching statistics")
    return RunModel(cfg, columns, trained_parameters(got.tensors),
                    stats if cfg.standardize else None, manifest, x_spec, net, levels)


def _user_network(cfg: Config) -> Any:
    """The network `--model` builds, on the CPU (InferError for code that does not run)."""
    import mindspore as ms

    from train.network import build_model
    from train.user import UserCodeFailed

    ms.set_device("CPU")
    try:
        return build_model(cfg)
    except (ConfigError, UserCodeFailed) as e:
        raise InferError(str(e)) from None


def _state(manifest: Path) -> dict:
    """A manifest's run state as written ({} if unreadable: `ck.load` then says why), for
    what the layout depends on before the checkpoint is verified."""
    try:
        state = json.loads(ck.read_regular(manifest, ck.MANIFEST_MAX)).get("state", {})
    except (ValueError, AttributeError, OSError):
        return {}
    return state if isinstance(state, dict) else {}


def _x_spec(state: dict) -> tuple[tuple[int, ...], str]:
    """A source of yours: the shape and dtype of a row's x, as its checkpoint records them."""
    try:
        shape, dtype = state["fingerprint"]["data"]["x"]
        if not (isinstance(shape, list) and all(isinstance(d, int) and 0 < d < 2**31
                                                 for d in shape) and len(shape) <= 8):
            raise ValueError(shape)
        return tuple(shape), np.dtype(dtype).name
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"its record of the source's rows is unreadable ({e})") from None


def _columns(cfg: Config, state: dict) -> list[str]:
    """The names a checkpoint records; older checkpoints: the run's data file's header, or the
    synthetic names."""
    cols = state.get("columns")
    if isinstance(cols, list) and len(cols) >= 2 and all(isinstance(c, str) for c in cols):
        return cols
    if cfg.synthetic:
        return [f"x{j}" for j in range(cfg.features)] + ["y"]
    from pipeline.formats import TableSpec, read_chunks
    from pipeline.limits import DataError

    try:
        return read_chunks(Path(cfg.data), cfg.target, "--data",
                           TableSpec(cfg.names("columns")))[0]
    except DataError as e:
        raise InferError(f"this run's checkpoint predates column names and its --data file "
                         f"cannot tell them ({e})") from None


if __name__ == "__main__":  # a library: say where its commands are, not nothing
    import sys

    print("train.infer is the library behind `msdp predict RUN_DIR --data FILE` and "
          "`msdp export RUN_DIR --out FILE`; run one of those (--help for its options)",
          file=sys.stderr if sys.argv[1:] not in ([], ["--help"], ["-h"]) else sys.stdout)
    sys.exit(0 if sys.argv[1:] in ([], ["--help"], ["-h"]) else 2)
