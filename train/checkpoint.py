"""Checkpoints that survive kills, corrupt files and full disks.

Layout in `<out>/ckpt/`: `ckpt-<step>.safetensors` (tensors, written by MindSpore's own
`save_checkpoint`) and `ckpt-<step>.json` (the manifest: training position, config
fingerprint, SHA-256 of the tensor file). A checkpoint exists only once its manifest exists.

Writes are atomic: each file is written under a temporary name, flushed to disk, then renamed;
the manifest is renamed last. A crash at any moment leaves either the previous checkpoints or
the previous ones plus a complete new one; stray temporary files are ignored and swept.
On resume the newest checkpoint whose hash matches is loaded; a corrupt or truncated newer one
is reported and skipped; garbage is never loaded.

Why safetensors: a plain, documented layout (a JSON header plus raw tensors) that other tools
can read without MindSpore or unpickling, and that MindSpore 2.x saves and loads natively.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from train.config import Config

FORMAT = "safetensors"
# Config items that change the math of the run. Not world_size: the data stream and the update
# depend only on the global batch (N ranks reproduce one process bitwise), so a run may resume
# on another number of ranks with the same global batch. Not epochs: "train longer" resumes.
MATH_KEYS = ("seed", "steps_per_epoch", "lr", "lr_schedule", "momentum", "loss", "delta",
             "clip_norm", "features", "true_w", "true_b", "noise_std", "outlier_fraction",
             "outlier_scale")


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that belongs to a different run."""


def fingerprint(cfg: Config, world_size: int) -> dict[str, Any]:
    """The items a resumed run must share with the checkpoint."""
    fp = {k: getattr(cfg, k) for k in MATH_KEYS}
    fp["global_batch_size"] = cfg.global_batch_size(world_size)
    return fp


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume with a config that changes the math, naming every differing item."""
    diff = [f"{k} {saved.get(k)!r} -> {current.get(k)!r}"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if diff:
        raise CheckpointError("cannot resume: the config differs from the checkpoint's in "
                              + ", ".join(diff))


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors by name and the manifest's training state."""

    step: int
    tensors: dict[str, np.ndarray]
    state: dict[str, Any]
    path: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointDir:
    """The `ckpt/` folder of a run."""

    def __init__(self, run_dir: Path, keep: int = 3,
                 on_write: Callable[[], None] | None = None) -> None:
        self.dir = run_dir / "ckpt"
        self.keep = keep
        self._on_write = on_write  # test hook: runs between the tensor file and the manifest

    def manifests(self) -> list[Path]:
        """Manifests, newest step first."""
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("ckpt-*.json"), reverse=True)

    def save(self, step: int, tensors: dict[str, np.ndarray], state: dict[str, Any]) -> Path:
        """Write checkpoint `step` atomically, then keep only the newest `keep`."""
        import mindspore as ms

        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{step:08d}"
        data, tmp_data = self.dir / f"{name}.{FORMAT}", self.dir / f".{name}.tmp.{FORMAT}"
        manifest, tmp_manifest = self.dir / f"{name}.json", self.dir / f".{name}.tmp.json"
        try:
            ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in tensors.items()],
                               str(tmp_data), format=FORMAT)
            _fsync(tmp_data)
            digest = _sha256(tmp_data)
            os.replace(tmp_data, data)
            if self._on_write is not None:
                self._on_write()
            body = {"step": step, "file": data.name, "format": FORMAT, "sha256": digest,
                    "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "state": state}
            tmp_manifest.write_text(json.dumps(body, indent=2) + "\n")
            _fsync(tmp_manifest)
            os.replace(tmp_manifest, manifest)
            _fsync(self.dir)
        except BaseException:
            for p in (tmp_data, tmp_manifest):
                p.unlink(missing_ok=True)
            raise
        self._prune()
        return manifest

    def _prune(self) -> None:
        for old in self.manifests()[self.keep:]:
            old.unlink(missing_ok=True)
            (self.dir / old.name.replace(".json", f".{FORMAT}")).unlink(missing_ok=True)
        kept = {m.stem for m in self.manifests()}
        for p in self.dir.iterdir():  # leftovers of killed writes, and orphaned tensor files
            if p.name.startswith(".") or (p.suffix == f".{FORMAT}" and p.stem not in kept):
                p.unlink(missing_ok=True)

    def latest(self, warn: Callable[[str], None]) -> Checkpoint:
        """The newest checkpoint that verifies; warns about each bad newer one."""
        import mindspore as ms

        manifests = self.manifests()
        if not manifests:
            raise CheckpointError(f"no checkpoint to resume from in {self.dir}")
        for m in manifests:
            try:
                body = json.loads(m.read_text())
                data = self.dir / body["file"]
                if _sha256(data) != body["sha256"]:
                    raise ValueError("SHA-256 mismatch (truncated or corrupt)")
                loaded = ms.load_checkpoint(str(data), format=body["format"])
                tensors = {k: v.asnumpy() for k, v in loaded.items()}
                return Checkpoint(int(body["step"]), tensors, body["state"], data)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
                warn(f"checkpoint {m.name} is unusable ({e}); trying an older one")
        raise CheckpointError(f"all {len(manifests)} checkpoints in {self.dir} are corrupt; "
                              "nothing safe to resume from")


def resume_from(run_dir: Path, cfg: Config, world_size: int,
                warn: Callable[[str], None]) -> Checkpoint:
    """The checkpoint `--resume` continues from: the newest good one, refused (CheckpointError)
    if it belongs to another config or lies past the configured number of steps."""
    ckpt = CheckpointDir(run_dir).latest(warn)
    check_fingerprint(ckpt.state["fingerprint"], fingerprint(cfg, world_size))
    total = cfg.epochs * cfg.steps_per_epoch
    if ckpt.step > total:
        raise CheckpointError(f"cannot resume: the checkpoint is at step {ckpt.step}, past the "
                              f"{total} steps of --epochs {cfg.epochs}")
    return ckpt
