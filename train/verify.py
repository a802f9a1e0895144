"""`msdp verify`: does an N-rank run end where one process ends?

Runs the same short job three ways and compares every trained parameter (from each run's final
checkpoint, so the linear model and an MLP alike):
  1. N ranks through a launch script, per-rank --batch_size B;
  2. one process with --batch_size N*B;
  3. one process with --batch_size B --accum_steps N*A.
All three see the same rows in the same optimizer steps (pipeline/dataset.py), so the parameters
must agree to --tol. Prints the largest difference and PASS or FAIL (exit 0 or 1; 2 for bad
input, one line).

  msdp verify --world_size 2 --launcher msrun --epochs 1 --steps_per_epoch 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from train.checkpoint import CheckpointDir
from train.config import ConfigError, save_config
from train.exits import CommandParser, RunFailed, handled
from train.launch import TRAINER, scripts_dir
from train.model import trained_parameters
from train.options import build_parser, parse_config
from train.output import out_folder
from train.plan import open_resolved
from train.rundir import read_summary

LAUNCHERS = {"msrun": "run_msrun.sh", "mpirun": "run_mpirun.sh"}
NOT_HERE = ("--out", "--world_size", "--dry_run", "--resume")


def _args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = CommandParser(prog="msdp verify", description=__doc__.split("\n")[0],
                      epilog="Other flags are training flags (msdp fit --help).")
    p.add_argument("--world_size", type=int, default=2, help="ranks in the distributed run")
    p.add_argument("--launcher", choices=sorted(LAUNCHERS), default="msrun")
    p.add_argument("--tol", type=float, default=1e-5, help="largest accepted |difference|")
    p.add_argument("--out", default="", help="folder for the three runs (default: a temp dir)")
    return p.parse_known_args(argv)


def _run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with open(log, "w") as f:
        rc = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} ... exited with {rc}; see {log}")


def final_parameters(run_dir: Path) -> dict[str, np.ndarray]:
    """The trained parameters in a finished run's newest checkpoint (not optimizer state)."""
    from safetensors.numpy import load

    _, manifest = CheckpointDir(run_dir).manifests()[0]  # the newest (a run of its own)
    newest = manifest.parent / json.loads(manifest.read_text())["file"]
    return trained_parameters(load(newest.read_bytes()))


def main(argv: list[str] | None = None) -> int:
    """Run the three jobs and compare (`msdp verify`); exit 0 on PASS, 1 on FAIL or a failed
    run, 2 on bad input (train/exits.py)."""
    return handled(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    """`main`'s body: bad input raises (train/exits.py says the line and the code)."""
    args, rest = _args(argv)
    if args.world_size < 2:
        raise ConfigError(f"--world_size must be >= 2, got {args.world_size}")
    bad = [f for f in NOT_HERE if f in rest]
    if bad:
        raise ConfigError(f"{bad[0]} is decided by msdp verify itself")
    cfg, _ = parse_config(rest, parser=build_parser("msdp verify"))
    # automatic values resolved once, for N ranks: the three runs share them
    cfg = open_resolved(cfg, args.world_size)[0]
    root = Path(args.out or tempfile.mkdtemp(prefix="verify-"))
    out_folder(root)
    base = root / "base.yaml"
    cfg.quiet = True
    save_config(cfg, base)
    n, b, a = args.world_size, cfg.batch_size, cfg.accum_steps
    env = dict(os.environ, NPROC=str(n), LOG_DIR=str(root / "launcher_logs"))
    from train.cluster.addresses import free_port

    env.setdefault("MASTER_PORT", str(free_port()))
    runs = {
        f"{n} ranks ({args.launcher}), batch {b}": (
            ["bash", str(scripts_dir() / LAUNCHERS[args.launcher])],
            ["--batch_size", str(b), "--accum_steps", str(a), "--world_size", str(n)]),
        f"1 process, batch {n * b}": (
            TRAINER, ["--batch_size", str(n * b), "--accum_steps", str(a)]),
        f"1 process, batch {b} x accum {n * a}": (
            TRAINER, ["--batch_size", str(b), "--accum_steps", str(n * a)]),
    }
    params = {}
    try:
        for i, (name, (cmd, flags)) in enumerate(runs.items()):
            out = root / f"run{i}"
            print(f"running {name} ...", flush=True)
            _run([*cmd, "--config", str(base), "--out", str(out), *flags], env,
                 root / f"run{i}.log")
            params[name] = final_parameters(out)
    except RuntimeError as e:  # a run, or its checkpoint, failed: exit 1
        raise RunFailed(str(e)) from None
    summary = read_summary(root / "run0")
    units = "standardized units" if summary.get("data", {}).get("standardized") else \
        "the data's units"
    return _report(params, args.tol, root, summary.get("features") or [], units)


def _report(params: dict[str, dict[str, np.ndarray]], tol: float, root: Path,
            features: list[str], units: str) -> int:
    ref = next(iter(params.values()))
    diff = max(float(np.abs(p[k].astype(np.float64) - ref[k]).max())
               for p in params.values() for k in ref)
    if set(ref) == {"weight", "bias"}:
        print(f"the trained parameters, in the units the model trains in ({units}):")
    for name, p in params.items():
        if set(p) == {"weight", "bias"}:  # the linear model: show it
            w = ", ".join(f"{n} {float(v):.6f}" for n, v in zip(features, p["weight"].ravel()))
            print(f"  {name:<32} w = [{w}]  b = {float(p['bias'][0]):.6f}")
        else:
            print(f"  {name:<32} {sum(v.size for v in p.values())} parameters")
    verdict = "PASS" if diff <= tol else "FAIL"
    print(f"largest parameter difference: {diff:.3g} (tolerance {tol:g}) -> {verdict}")
    print(f"runs and logs: {root}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
