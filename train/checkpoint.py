"""Checkpoints that survive kills, full disks and hostile files.

Layout in `<out>/ckpt/`: `ckpt-<step>.safetensors` (the tensors) and `ckpt-<step>.json` (the
manifest: format version, step, SHA-256 and size of the tensor file, the run state a resume
needs, the config fingerprint). A checkpoint exists only once its manifest exists.

Writing: each file goes to a temporary name, is fsynced, then renamed; the manifest last. A
crash at any moment leaves the previous checkpoints, or those plus a complete new one.

Reading treats every file as data from outside. A manifest is used only if it is a regular file
named `ckpt-<digits>.json` whose JSON has the expected fields and types, whose `step` equals the
name's and is >= 0, whose `file` is exactly its own tensor file's name (no paths), and whose
tensor file is a regular file (no symlink, FIFO or device; opened with O_NOFOLLOW|O_NONBLOCK, so
reading never blocks) of the recorded size and hash, holding exactly the tensors of this model
(names, shapes, dtypes), all finite, with SGD's step counter equal to `step`. Anything else is
reported and skipped for the next older one; none good is `CheckpointError` (exit 2). Reading
changes nothing on disk. Checkpoints are ordered by the step parsed from the name, as a number.

Format versions: `FORMAT_VERSION` is written into every manifest. A reader accepts every version
up to its own and fills state that older versions lacked with the value that version implied
(`_STATE_DEFAULTS`; in the fingerprint, each option's `resume_missing`); version 0 is the
unversioned format of the first release. A newer version than the reader's is reported as such
and skipped.

Why safetensors, through its own library rather than `mindspore.save_checkpoint`: a plain,
documented layout (a JSON header plus raw tensors) that any tool can read without MindSpore or
unpickling, that MindSpore loads natively (`load_checkpoint(..., format="safetensors")`), and
whose bytes we write ourselves, so that a full disk is an `OSError` with its errno instead of
MindSpore's "Error while serializing".
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.fileio import finite_numbers, json_text, write_atomic
from train import rundir
from train.config import FIELDS, resume_keys, resume_missing

FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_NAME = re.compile(r"ckpt-(\d+)\.json")
# A step's tensors: ckpt-<step>.safetensors, or ckpt-<step>.1.safetensors when that step's
# checkpoint was written again (the last step's, after the Newton finish): the two names
# alternate so that the old pair stays whole until the new manifest replaces the old.
_TENSORS = re.compile(r"(ckpt-\d+)(?:\.1)?\.safetensors")
MANIFEST_MAX = 1 << 20  # bytes; a manifest is a few kB
# Run state: type checks, and the defaults for keys older versions did not write.
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "window_loss": (float, int), "window_n": (int,), "timed_steps": (int,),
    "train_s": (float, int), "wall_s": (float, int), "segments": (int,),
    "loss": (float, int, type(None)), "eval_loss": (float, int, type(None)),
    "eval_mse": (float, int, type(None)), "skipped": (list,), "overflow_skips": (int,),
    "fingerprint": (dict,), "data_stats": (dict, type(None)), "columns": (list, type(None)),
    "levels": (dict, type(None)), "finish": (dict, type(None))}
# What a checkpoint of an older version implied for a key it lacked (columns: names unknown).
_STATE_DEFAULTS: dict[str, Any] = {"overflow_skips": 0, "data_stats": None, "columns": None,
                                   "levels": None, "finish": None}


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that belongs to a different run."""


class ConfigChanged(CheckpointError):
    """The checkpoint belongs to another config: `diffs` maps each differing item to (the
    checkpoint's value, this run's)."""

    def __init__(self, message: str, diffs: dict[str, tuple[Any, Any]]) -> None:
        super().__init__(message)
        self.diffs = diffs


class _Unusable(ValueError):
    """One checkpoint is malformed; the message says how."""


def fingerprint(cfg: Any, world_size: int, data_id: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The items a resumed run must share with the checkpoint: the config's `resume: refuse`
    fields for its source (train/config.py), with the data file's identity standing for its
    name, and the global batch (not the world size: N ranks reproduce one process with the same
    global batch, so a run may resume on another number of ranks)."""
    fp = {k: getattr(cfg, k) for k in resume_keys(cfg.synthetic)}
    fp["data"] = data_id  # (a file's identity holds its --eval_data's too)
    fp["global_batch_size"] = cfg.global_batch_size(world_size)
    return fp


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume with a config that changes the math, naming every differing item. A
    key an older checkpoint lacks means what that release did: the option's `resume_missing`
    (its default unless the field says otherwise)."""
    diffs = config_diffs(saved, current)
    if diffs:
        raise ConfigChanged("cannot resume: the config differs from the checkpoint's in "
                            + ", ".join(_diff(k, a, b) for k, (a, b) in diffs.items()), diffs)


def config_diffs(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Each item whose value differs: (the checkpoint's, the config's); a key an older
    checkpoint lacks counts as its `resume_missing`."""
    saved = {**{k: resume_missing(k) for k in current if k in FIELDS and k not in saved},
             **saved}
    # The held-out file counts by its identity, in `data`: not by how its path was written
    # (runs save absolute paths; earlier releases saved them as given).
    saved, current = ({k: v for k, v in fp.items() if k != "eval_data"} for fp in (saved, current))
    return {k: (saved.get(k), current.get(k)) for k in sorted(set(saved) | set(current))
            if saved.get(k) != current.get(k)}


def _diff(key: str, a: Any, b: Any) -> str:
    """One differing item; for your network, its first differing parameter."""
    if key == "network" and isinstance(a, dict) and isinstance(b, dict):
        name = next((n for n in [*a, *b] if a.get(n) != b.get(n)), "?")
        return (f"your network's parameters ({name!r}: {_spec(a.get(name))} -> "
                f"{_spec(b.get(name))}; --model's code or --model_args changed)")
    if key == "data" and isinstance(a, dict) and isinstance(b, dict):
        parts = [f"{'--' + k if k != 'file' else '--data'} ({_file(a.get(k))} -> "
                 f"{_file(b.get(k))})" for k in ("file", "eval_data") if a.get(k) != b.get(k)]
        return f"{', '.join(parts) or 'data'}: a resume reads the run's own data files"
    return f"{key} {a!r} -> {b!r}"


def _file(f: Any) -> str:
    """A data file's identity as a person reads it: its path, size and content hash."""
    if not isinstance(f, dict):
        return "none" if f is None else repr(f)
    return f"{f.get('path')}, {f.get('size')} bytes, sha256 {str(f.get('head_tail_sha256'))[:12]}"


def _spec(v: Any) -> str:
    return "none" if v is None else f"{v[1]}{v[0]}" if isinstance(v, list) and len(v) == 2 \
        else repr(v)


@dataclass
class Checkpoint:
    """A verified checkpoint: tensors by name and the manifest's run state."""

    step: int
    tensors: dict[str, np.ndarray]
    state: dict[str, Any]
    path: Path
    version: int = FORMAT_VERSION


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; never follows a symlink and never
    blocks on a FIFO or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise _Unusable(f"{path.name}: cannot open it ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unusable(f"{path.name} is not a regular file")
        if st.st_size > max_bytes:
            raise _Unusable(f"{path.name} is {st.st_size} bytes, more than this model's "
                            f"checkpoint can be ({max_bytes})")
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse_constant(name: str) -> None:
    """NaN/Infinity (the unversioned format wrote a NaN loss before the first log) become
    None: allowed where a value may be missing, refused everywhere else."""
    return None


def _check_state(raw: Any) -> dict[str, Any]:
    """The manifest's run state with types checked and older versions' gaps filled."""
    if not isinstance(raw, dict):
        raise _Unusable("its state is not a mapping")
    state = {**_STATE_DEFAULTS, **raw}
    for key, types in _STATE_TYPES.items():
        if key not in state:
            raise _Unusable(f"its state lacks {key!r}")
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise _Unusable(f"its state has a malformed {key!r}: {str(value)[:40]}")
        if isinstance(value, int) and abs(value) > 2**62:
            raise _Unusable(f"its state has an out-of-range {key!r}")
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise _Unusable(f"its state has a non-finite {key!r}")
        if types[0] in (int, float) and isinstance(value, (int, float)) and value < 0 \
                and key != "window_loss" and key not in ("loss", "eval_loss", "eval_mse"):
            raise _Unusable(f"its state has a negative {key!r}: {value!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
               for s in state["skipped"]):
        raise _Unusable("its state has a malformed 'skipped' list")
    if state["segments"] < 1:
        raise _Unusable("its state has segments < 1")
    cols = state["columns"]
    if cols is not None and not (len(cols) >= 2 and all(isinstance(c, str) and c for c in cols)):
        raise _Unusable("its state has malformed column names")
    levels = state["levels"]  # a --categorical column's levels, sorted (the first: reference)
    if levels is not None and not all(
            isinstance(v, list) and len(v) >= 2 and all(isinstance(x, str) for x in v)
            for v in levels.values()):
        raise _Unusable("its state has malformed categorical levels")
    stats = state["data_stats"]
    if stats is not None and not (
            isinstance(stats.get("mean"), list) and isinstance(stats.get("std"), list)
            and len(stats["mean"]) == len(stats["std"])
            and finite_numbers(stats["mean"] + stats["std"])
            and all(v > 0 for v in stats["std"])):
        raise _Unusable("its state has malformed data statistics")
    if state["finish"] is not None and not _finish_ok(state["finish"]):
        raise _Unusable("its state has a malformed 'finish' record")
    return state


def _finish_ok(finish: dict[str, Any]) -> bool:
    """A Newton finish record as train/finish.py writes it (summary.json repeats it)."""
    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62

    return (count(finish.get("at_step")) and count(finish.get("passes", 0))
            and all(isinstance(finish.get(k, ""), str) for k in ("method", "stopped"))
            and finite_numbers([finish.get(k, 0.0) for k in ("objective_before",
                                                              "objective_after")]))


def _check_tensors(tensors: dict[str, np.ndarray], layout: dict[str, tuple[tuple, str]],
                   step: int) -> None:
    """Exactly this model's tensors, all finite, and SGD's counter at `step`."""
    missing = sorted(layout.keys() - tensors.keys())
    extra = sorted(tensors.keys() - layout.keys() - _LEGACY_TENSORS)
    if missing or extra:
        raise _Unusable(f"its tensors do not match this model (missing {missing}, "
                        f"unexpected {extra})")
    for name, (shape, dtype) in layout.items():
        t = tensors[name]
        if t.shape != tuple(shape) or t.dtype != np.dtype(dtype):
            raise _Unusable(f"tensor {name!r} is {t.dtype}{list(t.shape)}, this model's is "
                            f"{dtype}{list(shape)}")
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            raise _Unusable(f"tensor {name!r} holds non-finite values")
    if int(tensors["global_step"][0]) != step:
        raise _Unusable(f"its optimizer step counter is {int(tensors['global_step'][0])}, "
                        f"not its step {step}")


# Tensors the unversioned format also saved that are now set from the config at every step.
_LEGACY_TENSORS = {"momentum"}


class CheckpointDir:
    """The `ckpt/` folder of a run."""

    def __init__(self, run_dir: Path, keep: int = 3,
                 on_write: Callable[[], None] | None = None) -> None:
        self.dir = rundir.ckpt_dir(run_dir)
        self.keep = keep
        self._on_write = on_write  # TRAIN_FAULT ckpt_pause: between tensor file and manifest

    def manifests(self, warn: Callable[[str], None] | None = None) -> list[tuple[int, Path]]:
        """(step, manifest path) by step as a number, newest first; other names ignored."""
        try:
            entries = list(self.dir.iterdir()) if self.dir.is_dir() else []
        except OSError as e:
            raise CheckpointError(f"cannot read {self.dir} ({e.strerror or e})") from None
        found = []
        for p in entries:
            m = _NAME.fullmatch(p.name)
            if m:
                found.append((int(m[1]), p))
            elif warn and p.suffix == ".json" and not p.name.startswith("."):
                warn(f"ignoring {p.name} in {self.dir} (not a checkpoint manifest name)")
        return sorted(found, key=lambda sp: sp[0], reverse=True)

    def save(self, step: int, tensors: dict[str, np.ndarray], state: dict[str, Any]) -> Path:
        """Write checkpoint `step` atomically, then keep only the newest `keep`."""
        from safetensors.numpy import save as st_save

        rundir.subfolder(self.dir)  # a link named ckpt would take the checkpoints elsewhere
        name = f"ckpt-{step:08d}"
        manifest = self.dir / f"{name}.json"
        current = self._tensor_file(manifest)
        data = self.dir / (f"{name}.1{SUFFIX}" if current == f"{name}{SUFFIX}" else
                           f"{name}{SUFFIX}")
        # (not np.ascontiguousarray: it turns a 0-d scalar into shape (1,))
        raw = st_save({k: np.array(v, order="C", copy=True) for k, v in tensors.items()})
        write_atomic(data, raw)  # the tensors first: a manifest never names a missing file
        if self._on_write is not None:
            self._on_write()
        body = {"format_version": FORMAT_VERSION, "step": step, "file": data.name,
                "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "state": state}
        write_atomic(manifest, json_text(body, indent=2) + "\n")
        if current is not None and current != data.name:  # the replaced pair's tensors
            (self.dir / current).unlink(missing_ok=True)
        _fsync(self.dir)
        self._prune()
        return manifest

    def _tensor_file(self, manifest: Path) -> str | None:
        """The tensor file an existing manifest names (one of the step's two names), or
        None: no manifest, or one that names nothing usable."""
        try:
            body = json.loads(read_regular(manifest, MANIFEST_MAX))
        except (_Unusable, ValueError, RecursionError):
            return None
        got = body.get("file") if isinstance(body, dict) else None
        m = _TENSORS.fullmatch(got) if isinstance(got, str) else None
        return got if m and m[1] == manifest.stem else None

    def _prune(self) -> None:
        for _, old in self.manifests()[self.keep:]:
            old.unlink(missing_ok=True)
            old.with_suffix(SUFFIX).unlink(missing_ok=True)
            old.with_suffix(f".1{SUFFIX}").unlink(missing_ok=True)
        kept = {p.stem for _, p in self.manifests()}
        for p in self.dir.iterdir():  # leftovers of killed writes, and orphaned tensor files
            m = _TENSORS.fullmatch(p.name)
            if (p.name.startswith(".") and ".tmp" in p.name) or (m and m[1] not in kept):
                p.unlink(missing_ok=True)

    def load(self, step: int, manifest: Path, layout: dict[str, tuple[tuple, str]],
             fingerprint: dict[str, Any] | None = None) -> Checkpoint:
        """Read and verify one checkpoint; `_Unusable` says what is wrong with it. Whatever a
        hostile file makes the parsers raise (a JSON nested 100k deep, a 400-digit integer, a
        tensor type NumPy lacks, an I/O error) is reported the same way; a missing library is
        this machine's fault, not the checkpoint's, and is not."""
        import safetensors.numpy  # noqa: F401 - outside the try, for the reason above

        try:
            return self._load(step, manifest, layout, fingerprint)
        except (_Unusable, CheckpointError):
            raise
        except Exception as e:  # noqa: BLE001 - data from outside: any failure means unusable
            raise _Unusable(f"{type(e).__name__}: {str(e)[:100]}") from None

    def _load(self, step: int, manifest: Path, layout: dict[str, tuple[tuple, str]],
              fingerprint: dict[str, Any] | None) -> Checkpoint:
        from safetensors import SafetensorError
        from safetensors.numpy import load as st_load

        try:
            body = json.loads(read_regular(manifest, MANIFEST_MAX),
                              parse_constant=_parse_constant)
        except (UnicodeDecodeError, ValueError) as e:
            raise _Unusable(f"not valid JSON ({str(e)[:80]})") from None
        if not isinstance(body, dict):
            raise _Unusable("not a JSON object")
        version = body.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise _Unusable(f"malformed format_version {version!r}")
        if version > FORMAT_VERSION:
            raise _Unusable(f"format_version {version} was written by a newer release (this "
                            f"one reads up to {FORMAT_VERSION})")
        if body.get("step") != step or isinstance(body.get("step"), bool):
            raise _Unusable(f"its step {body.get('step')!r} is not the {step} of its name")
        names = (manifest.stem + SUFFIX, f"{manifest.stem}.1{SUFFIX}")
        if body.get("file") not in names:
            raise _Unusable(f"its file {body.get('file')!r} is not {' or '.join(names)}")
        digest = body.get("sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise _Unusable("malformed sha256")
        state = _check_state(body.get("state"))
        if state["finish"] is not None and state["finish"]["at_step"] != step:
            raise _Unusable(f"its finish record is of step {state['finish']['at_step']}")
        if fingerprint is not None:  # another config (e.g. --hidden) would misread its tensors
            check_fingerprint(state["fingerprint"], fingerprint)
        # Bound the read by what this model's tensors can take (plus a generous header).
        limit = 2 * sum(4 * int(np.prod(s)) for s, _ in layout.values()) + (1 << 20)
        raw = read_regular(self.dir / body["file"], limit)
        if "bytes" in body and body["bytes"] != len(raw):
            raise _Unusable(f"its tensor file is {len(raw)} bytes, not {body['bytes']} "
                            "(truncated?)")
        if hashlib.sha256(raw).hexdigest() != digest:
            raise _Unusable("SHA-256 mismatch (truncated or corrupt)")
        try:
            tensors = st_load(raw)
        except (SafetensorError, ValueError, TypeError) as e:
            raise _Unusable(f"unreadable tensor file ({e})") from None
        _check_tensors(tensors, layout, step)
        return Checkpoint(step, tensors, state, manifest, version)

    def latest(self, layout: dict[str, tuple[tuple, str]], warn: Callable[[str], None],
               only_step: int | None = None,
               fingerprint: dict[str, Any] | None = None) -> Checkpoint | None:
        """The newest checkpoint that verifies (warning about each bad newer one); None if the
        folder has none at all; CheckpointError if it has some but none is usable, or (given
        `fingerprint`) if a well-formed one belongs to another config."""
        manifests = self.manifests(warn)
        if only_step is not None:
            manifests = [(s, p) for s, p in manifests if s == only_step]
        if not manifests:
            return None
        for step, path in manifests:
            try:
                return self.load(step, path, layout, fingerprint)
            except _Unusable as e:
                warn(f"checkpoint {path.name} is unusable ({e}); trying an older one")
        raise CheckpointError(f"all {len(manifests)} checkpoints in {self.dir} are unusable; "
                              "nothing safe to resume from")


def resume_from(run_dir: Path, layout: dict[str, tuple[tuple, str]], current_fp: dict[str, Any],
                total_steps: int, warn: Callable[[str], None]) -> Checkpoint | None:
    """The checkpoint `--resume` continues from: the newest good one, or None (a run folder
    without checkpoints starts from step 0). CheckpointError if it belongs to another config
    or lies past the configured number of steps."""
    ckpt = CheckpointDir(run_dir).latest(layout, warn, fingerprint=current_fp)
    if ckpt is None:
        return None
    if ckpt.step > total_steps:
        raise CheckpointError(f"cannot resume: the checkpoint is at step {ckpt.step}, past the "
                              f"{total_steps} steps configured (raise --epochs)")
    return ckpt
