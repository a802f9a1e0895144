"""`python -m train.bench [--quick] [--out DIR]`: where the time goes, side by side, in one run.

Rows (each the median of several repeats, each checking its trained parameters against the
reference run of the same data, so no optimisation can change the result unnoticed):
  seed       the seed article's loop: batch 1, a new Tensor per step, its jit step
  pipeline   this package in one process: GeneratorDataset into the jit step (batch 256..65536)
  prepared   the same step fed tensors made beforehand (pipeline efficiency = pipeline/prepared)
  torch      the same model, Huber loss and SGD in PyTorch eager on CPU (when torch is installed)
  numpy      the same SGD written by hand in NumPy: the practical ceiling on this machine
  Model.train  MindSpore's high-level Model.train on the same model, loss and data (no sink)
  dp2        2 ranks on CPU under msrun and under the mpirun bootstrap, against one process at
             the same global batch (the real trainer, through the real launch scripts)
  launch     seconds from starting the launch command to the end of the first optimizer step
Writes bench.json (rows + headline figures) and bench.png (samples/s against batch size).
`--memory_gib N` instead prints the trainer's own memory (RssAnon) on an N GiB .npy file against
a synthetic run (issue 12's memory claim).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"
LR, MOMENTUM, DELTA, SEED = 0.01, 0.9, 1.0, 0
# Parameters must agree to this (float32 sums in another order drift ~1e-5 at batch 65,536);
# tests/test_bench.py checks the MindSpore rows against each other bitwise.
PARAM_TOL = 1e-4
# The bench builds one jit step per row on purpose; MindSpore warns "compiled again" for each.
# Errors still print (GLOG_v=3); a user's own GLOG_v wins.
os.environ.setdefault("GLOG_v", "3")


def _batches(batch: int, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stream's first `steps` batches, as the pipeline would deliver them."""
    from pipeline import DataSpec, SyntheticStream

    gen = SyntheticStream(DataSpec(), SEED)
    return [gen.rows(0, t * batch, batch) for t in range(steps)]


def _timed(run: Callable[[], tuple[float, list[float]]], repeats: int) -> dict[str, Any]:
    """Median samples/s over repeats; every repeat's parameters must agree with the first."""
    rates, params = [], []
    for _ in range(repeats):
        rate, p = run()
        rates.append(rate)
        params.append(p)
    spread = max(abs(a - b) for p in params for a, b in zip(p, params[0]))
    return {"samples_per_s": statistics.median(rates), "repeats": repeats,
            "runs_s": rates, "params": params[0], "repeat_spread": spread}


# --- MindSpore rows -----------------------------------------------------------------------


def _ms_setup() -> tuple[Any, Any, Any]:
    """Fresh model + the package's step (constant lr) + its step record (read like the loop)."""
    from train.loss import HuberLoss
    from train.model import make_model
    from train.step import GuardedSGD, LrWindow, StepRecord, make_train_step

    model = make_model(1, SEED)
    opt = GuardedSGD(model.trainable_params())
    record, lr = StepRecord(READ_EVERY, 2, list(opt.parameters)), LrWindow(LR, "constant", 1)
    return model, record, make_train_step(model, HuberLoss(DELTA), opt, record, lr, MOMENTUM)


def _params(model: Any) -> list[float]:
    from train.model import linear_params

    w, b = linear_params(model)
    return [*w, b]


def _chunks(batch: int, steps: int, stream: Any = None) -> tuple[Any, list[Any], int]:
    """The package's pipeline as train.loop builds it: the chunk iterator, the in-chunk step
    indices, and K."""
    from mindspore import Tensor

    from pipeline import DataSpec, SyntheticStream, make_train_dataset
    from pipeline.dataset import steps_per_item

    k = steps_per_item(batch)
    stream = stream or SyntheticStream(DataSpec(), SEED)
    data = make_train_dataset(stream, batch, 1, steps, 1, num_shards=1, shard_id=0, chunk=k)
    return data.create_tuple_iterator(num_epochs=1), [Tensor(np.int32(j)) for j in range(k)], k


READ_EVERY = 50  # the loop reads the device's metrics once per log window (--log_every 50)


def npy_stream(batch: int, steps: int, root: Path) -> Any:
    """A .npy file holding the synthetic stream's first batch*steps rows, opened as the trainer
    opens `--data` (memory-mapped, validated, no held-out split, not standardized: the rows
    keep the synthetic scale)."""
    from pipeline.files import FileSource
    from train.config import Config

    path = root / f"rows-{batch}-{steps}.npy"
    if not path.exists():
        rows = np.concatenate([np.concatenate(b, axis=1) for b in _batches(batch, steps)])
        np.save(path, rows.astype(np.float32))
    cfg = Config(data=str(path), batch_size=batch, eval_fraction=0.0, standardize=False,
                 delta=DELTA)
    return FileSource.open(cfg, 1).stream


def run_pipeline(batch: int, steps: int, stream: Any = None) -> tuple[float, list[float]]:
    """GeneratorDataset -> jit step, as train.loop runs it; first step (compile) not timed."""
    model, metrics, step = _ms_setup()
    it, index, k = _chunks(batch, steps, stream)
    n, t0 = 0, None
    for xc, yc in it:
        for j in range(min(k, steps - n)):
            step(xc, yc, index[j])
            n += 1
            if n % READ_EVERY == 0:
                metrics.read()  # as the loop: one read per log window
            if t0 is None:
                metrics.read()  # the first step compiles: wait for it before timing
                t0 = time.perf_counter()
    params = _params(model)  # a read: waits for the last step
    rate = (steps - 1) * batch / (time.perf_counter() - t0)
    it.stop()  # its worker threads would otherwise compete with the next row
    return rate, params


def run_prepared(batch: int, steps: int, stream: Any = None) -> tuple[float, list[float]]:
    """The same step on the same chunks, all taken from the dataset before the clock starts:
    the step alone. (Tensors made with `Tensor(ndarray)` instead were measured slower to feed
    than the dataset's own at batch 256, which would flatter the pipeline.)"""
    model, metrics, step = _ms_setup()
    it, index, k = _chunks(batch, steps, stream)
    chunks = list(it)
    it.stop()
    work = [(xc, yc, index[j]) for c, (xc, yc) in enumerate(chunks)
            for j in range(min(k, steps - c * k))]
    step(*work[0])
    metrics.read()
    t0 = time.perf_counter()
    for n, args in enumerate(work[1:], 2):
        step(*args)
        if n % READ_EVERY == 0:
            metrics.read()
    params = _params(model)
    return (steps - 1) * batch / (time.perf_counter() - t0), params


def run_model_train(batch: int, steps: int) -> tuple[float, list[float]]:
    """MindSpore's high-level `Model.train`: the same Dense, Huber loss and SGD with momentum,
    fed by a GeneratorDataset of whole batches, no data sink (CPU refuses it). The seed
    article's argument is to leave `Model.train` for a functional step: this row says how much
    that buys. Timed from the end of the first step (compilation excluded)."""
    import mindspore.dataset as ds
    from mindspore import nn
    from mindspore.train import Callback, Model

    from train.loss import HuberLoss
    from train.model import make_model

    rows = _batches(batch, steps)

    class Source:
        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            return rows[i]

    class FirstStep(Callback):
        t0: float | None = None

        def on_train_step_end(self, run_context: Any) -> None:
            if self.t0 is None:
                self.t0 = time.perf_counter()

    net = make_model(1, SEED)
    opt = nn.SGD(net.trainable_params(), learning_rate=LR, momentum=MOMENTUM)
    data = ds.GeneratorDataset(Source(), ["x", "y"], shuffle=False, python_multiprocessing=False)
    timer = FirstStep()
    Model(net, loss_fn=HuberLoss(DELTA), optimizer=opt).train(
        1, data, callbacks=[timer], dataset_sink_mode=False)
    params = _params(net)
    return (steps - 1) * batch / (time.perf_counter() - timer.t0), params


def run_seed_loop(steps: int) -> tuple[float, list[float]]:
    """The seed article's loop, kept as written there: batch 1, select-form Huber, a new
    Tensor per step, `@ms.jit` train step (rows from our stream so that it can be checked)."""
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    class ArticleHuber(nn.LossBase):
        def __init__(self, delta: float = 1.0) -> None:
            super().__init__("mean")
            self.delta = delta

        def construct(self, logits: Tensor, labels: Tensor) -> Tensor:
            abs_error = ops.abs(logits - labels)
            small = 0.5 * ops.square(abs_error)
            large = self.delta * (abs_error - 0.5 * self.delta)
            return self.get_loss(ops.select(abs_error <= self.delta, small, large))

    from train.model import make_model

    net = make_model(1, SEED)
    loss_fn = ArticleHuber(DELTA)
    opt = nn.SGD(net.trainable_params(), learning_rate=LR, momentum=MOMENTUM)

    def forward_fn(data: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        logits = net(data)
        return loss_fn(logits, label), logits

    grad_fn = ms.value_and_grad(forward_fn, None, opt.parameters, has_aux=True)

    @ms.jit
    def train_step(data: Tensor, label: Tensor) -> Tensor:
        (loss, _), grads = grad_fn(data, label)
        opt(grads)
        return loss

    rows = _batches(1, steps)
    t0 = None
    for i, (x, y) in enumerate(rows):
        loss = train_step(Tensor([[float(x[0, 0])]], ms.float32),
                          Tensor([[float(y[0, 0])]], ms.float32))
        loss.asnumpy()  # the article sums loss.asnumpy() every step
        if i == 0:
            t0 = time.perf_counter()
    return (steps - 1) / (time.perf_counter() - t0), _params(net)


# --- reference implementations ------------------------------------------------------------


def _init_params() -> tuple[np.ndarray, np.ndarray]:
    from train.model import make_model

    m = make_model(1, SEED)
    return m.weight.asnumpy().copy(), m.bias.asnumpy().copy()


def run_numpy(batch: int, steps: int) -> tuple[float, list[float]]:
    """Hand-written float32 SGD with momentum on the Huber loss (clamp form)."""
    w, b = _init_params()
    w, b = w.reshape(-1), b.copy()
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    data = _batches(batch, steps)
    lr, mom, d = np.float32(LR), np.float32(MOMENTUM), np.float32(DELTA)
    t0 = None
    for i, (x, y) in enumerate(data):
        xs, ys = x[:, 0], y[:, 0]
        e = xs * w[0] + b[0] - ys
        c = np.clip(e, -d, d)
        _loss = float(np.mean(c * (e - np.float32(0.5) * c)))  # as the others compute it
        gw = np.float32(np.dot(c, xs) / batch)
        gb = np.float32(c.sum() / batch)
        # MindSpore's SGD: the first step takes the gradient itself as the momentum buffer.
        vw = np.float32(gw) if i == 0 else mom * vw + gw
        vb = np.float32(gb) if i == 0 else mom * vb + gb
        w, b = w - lr * vw, b - lr * vb
        if i == 0:
            t0 = time.perf_counter()
    return (steps - 1) * batch / (time.perf_counter() - t0), [float(w[0]), float(b[0])]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_torch(batch: int, steps: int) -> tuple[float, list[float]]:
    """PyTorch eager: nn.Linear, F.huber_loss, optim.SGD(momentum) - what a user would write."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    w, b = _init_params()
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w))
        model.bias.copy_(torch.from_numpy(b))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in _batches(batch, steps)]
    t0 = None
    for i, (x, y) in enumerate(data):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.huber_loss(model(x), y, delta=DELTA)
        loss.backward()
        opt.step()
        if i % READ_EVERY == 0:
            loss.item()  # the host read the MindSpore loop does once per log window
        if i == 0:
            t0 = time.perf_counter()
    return (steps - 1) * batch / (time.perf_counter() - t0), [
        float(model.weight.detach()[0, 0]), float(model.bias.detach()[0])]


# --- the real trainer through the launch scripts -------------------------------------------


def run_job(kind: str, batch: int, steps: int, root: Path) -> dict[str, Any]:
    """One training job (`single`, `msrun` or `mpirun`); returns its summary + launch latency."""
    from train.cluster import free_port

    out = root / f"{kind}-{batch}-{time.monotonic_ns()}"
    args = ["--batch_size", str(batch), "--epochs", "1", "--steps_per_epoch", str(steps),
            "--log_every", str(steps), "--ckpt_every", "0", "--lr_schedule", "constant",
            "--eval_size", "256", "--quiet", "--out", str(out)]
    env = dict(os.environ, NPROC="2", MASTER_PORT=str(free_port()), LOG_DIR=str(out) + "-logs")
    cmd = {"single": [sys.executable, "-m", "train"],
           "msrun": ["bash", str(LAUNCH_DIR / "run_msrun.sh")],
           "mpirun": ["bash", str(LAUNCH_DIR / "run_mpirun.sh")]}[kind]
    t0 = time.time()
    proc = subprocess.Popen([*cmd, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the launcher and everything it started
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} job failed ({proc.returncode}): {err.strip()[-500:]}")
    s = json.loads((out / "summary.json").read_text())
    s["launch_s"] = s["first_step_at"] - t0
    s["params"] = [*s["w"], s["b"]]
    return s


def run_memory(gib: int, root: Path) -> dict[str, Any]:
    """The trainer's own memory (RssAnon, MB) on a `gib` GiB float32 .npy against a synthetic
    run, each read a few steps after training started (mapped file pages are page cache:
    RssFile, not the process's)."""
    rows = (gib << 30) // 8
    big = np.lib.format.open_memmap(root / "big.npy", "w+", np.float32, (rows, 2))
    pattern = np.arange(1 << 22, dtype=np.float32) % 1000
    for i in range(0, rows, 1 << 22):
        k = min(1 << 22, rows - i)
        big[i:i + k, 0], big[i:i + k, 1] = pattern[:k], 2 * pattern[:k] + 3
    big.flush()
    del big
    env = dict(os.environ, TRAIN_FAULT="step_pause=0.05", TRAIN_CACHE_DIR=str(root / "cache"))
    found: dict[str, Any] = {"file_gib": gib}
    for name, args in (("synthetic", ["--steps_per_epoch", "100000"]),
                       ("npy", ["--data", str(root / "big.npy")])):
        out = root / name
        proc = subprocess.Popen([sys.executable, "-m", "train", *args, "--epochs", "1",
                                 "--log_every", "5", "--quiet", "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (out / "metrics.jsonl").exists() and proc.poll() is None:
            time.sleep(0.5)
        time.sleep(3)  # a few windows in
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        proc.terminate()
        proc.wait()
        for key in ("RssAnon", "RssFile"):
            found[f"{name}_{key}_mb"] = next(int(ln.split()[1]) for ln in status
                                             if ln.startswith(key + ":")) / 1024
    return found


# --- the run ------------------------------------------------------------------------------


def _check(row: dict[str, Any], ref: list[float], name: str) -> dict[str, Any]:
    diff = max(abs(a - b) for a, b in zip(row["params"], ref))
    row.update(name=name, param_diff=diff, params_ok=diff <= PARAM_TOL)
    return row


def main(argv: list[str] | None = None) -> int:
    """Run every row, print the table, write bench.json and bench.png."""
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer steps and repeats (about a minute on 2 cores)")
    p.add_argument("--out", default="", help="folder for bench.json and bench.png "
                   "(default: runs/bench-<time>)")
    p.add_argument("--memory_gib", type=int, default=0, metavar="N",
                   help="instead: the trainer's own memory (RssAnon) on an N GiB .npy against "
                   "a synthetic run (needs 2N GiB of free disk in the temp folder)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    # Data files and job folders (GBs with --memory_gib): removed however the bench ends.
    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    if args.memory_gib > 0:
        found = run_memory(args.memory_gib, scratch)
        print("\n".join(f"{k:<24} {v:,.0f}" for k, v in found.items()))
        return 0
    out = Path(args.out or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    import mindspore as ms

    ms.set_device("CPU")
    q = args.quick
    repeats = 3 if q else 5
    sizes = {256: 600 if q else 2000, 4096: 200 if q else 600, 65536: 30 if q else 100}
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        print(f"{row['name']:<34} {row.get('batch', ''):>6} {row['samples_per_s']:>14,.0f} "
              f"{row['param_diff']:>9.1e} {'ok' if row['params_ok'] else 'DIFFERENT'}",
              flush=True)

    print(f"{'row':<34} {'batch':>6} {'samples/s':>14} {'|dparam|':>9}")
    seed_steps = 1000 if q else 3000
    numpy_seed = run_numpy(1, seed_steps)[1]
    add({**_check(_timed(lambda: run_seed_loop(seed_steps), repeats), numpy_seed,
                  "seed article loop"), "batch": 1})
    for batch, steps in sizes.items():
        ref = _timed(lambda: run_pipeline(batch, steps), repeats)  # noqa: B023
        add({**_check(ref, ref["params"], "pipeline (GeneratorDataset)"), "batch": batch})
        for name, fn in (("prepared tensors (no pipeline)", run_prepared),
                         ("numpy hand-written", run_numpy),
                         *((("torch eager", run_torch),) if torch_available() else ())):
            row = _timed(lambda: fn(batch, steps), repeats)  # noqa: B023
            add({**_check(row, ref["params"], name), "batch": batch})
    # The same pipeline reading a .npy file (memory-mapped, shuffled by blocks) instead of
    # generating rows: efficiency = file pipeline / the same step on the file's tensors.
    files = scratch / "npy"
    files.mkdir()
    for batch, steps in ((256, sizes[256]), (65536, sizes[65536])):
        stream = npy_stream(batch, steps, files)
        ref = _timed(lambda: run_prepared(batch, steps, stream), repeats)  # noqa: B023
        add({**_check(ref, ref["params"], "prepared tensors (.npy rows)"), "batch": batch})
        row = _timed(lambda: run_pipeline(batch, steps, stream), repeats)  # noqa: B023
        add({**_check(row, ref["params"], "pipeline (.npy file)"), "batch": batch})
    # Model.train is slow at small batches: fewer steps, checked against NumPy on the same rows.
    for batch, steps in ((256, 150 if q else 400), (65536, 30 if q else 60)):
        row = _timed(lambda: run_model_train(batch, steps), repeats)  # noqa: B023
        add({**_check(row, run_numpy(batch, steps)[1], "Model.train (no sink)"), "batch": batch})

    root = scratch / "jobs"
    root.mkdir()
    job_steps, job_repeats = (300, 1) if q else (1000, 3)
    jobs: dict[str, list[dict[str, Any]]] = {}
    for kind, batch in (("single", 512), ("msrun", 256), ("mpirun", 256)):
        jobs[kind] = [run_job(kind, batch, job_steps, root) for _ in range(job_repeats)]
    ref = jobs["single"][0]["params"]
    for kind, label in (("single", "1 process, batch 512"), ("msrun", "2 ranks msrun, 256 each"),
                        ("mpirun", "2 ranks mpirun, 256 each")):
        runs = jobs[kind]
        row = {"samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
               "launch_s": statistics.median(r["launch_s"] for r in runs),
               "repeats": len(runs), "params": runs[0]["params"], "batch": 512}
        add(_check(row, ref, f"job: {label}"))
        print(f"{'':<34} launch to first step: {row['launch_s']:.1f} s")

    def rate(name: str, batch: int) -> float | None:
        return next((r["samples_per_s"] for r in rows
                     if r["name"] == name and r.get("batch") == batch), None)

    single = rate("job: 1 process, batch 512", 512)
    torch_rate = rate("torch eager", 256)
    headline = {
        "pipeline_efficiency": rate("pipeline (GeneratorDataset)", 256)
        / rate("prepared tensors (no pipeline)", 256),
        "vs_torch_eager": rate("pipeline (GeneratorDataset)", 256) / torch_rate
        if torch_rate else None,
        "vs_model_train": rate("pipeline (GeneratorDataset)", 256)
        / rate("Model.train (no sink)", 256),
        "samples_per_s_b65536": rate("pipeline (GeneratorDataset)", 65536),
        "pipeline_efficiency_b65536": rate("pipeline (GeneratorDataset)", 65536)
        / rate("prepared tensors (no pipeline)", 65536),
        "npy_efficiency": rate("pipeline (.npy file)", 256)
        / rate("prepared tensors (.npy rows)", 256),
        "npy_efficiency_b65536": rate("pipeline (.npy file)", 65536)
        / rate("prepared tensors (.npy rows)", 65536),
        "dp2_scaling": rate("job: 2 ranks msrun, 256 each", 512) / single,
        "dp2_scaling_mpirun": rate("job: 2 ranks mpirun, 256 each", 512) / single,
        "launch_s_single": next(r["launch_s"] for r in rows if r["name"].startswith("job: 1 ")),
        "launch_s_msrun2": next(r["launch_s"] for r in rows if "msrun" in r["name"]),
        "launch_s_mpirun2": next(r["launch_s"] for r in rows if "mpirun" in r["name"]),
        "all_params_ok": all(r["params_ok"] for r in rows),
    }
    print("\n" + "\n".join(f"{k:<24} {v:,.3f}" if isinstance(v, float) else f"{k:<24} {v}"
                           for k, v in headline.items()))
    report = {**headline, "quick": q, "rows": rows, "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "mindspore": ms.__version__,
        "numpy": np.__version__}}
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(rows, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0 if headline["all_params_ok"] else 1


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    from train.plot import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for name in ("pipeline (GeneratorDataset)", "prepared tensors (no pipeline)", "torch eager",
                 "numpy hand-written", "pipeline (.npy file)", "Model.train (no sink)"):
        pts = sorted((r["batch"], r["samples_per_s"]) for r in rows if r["name"] == name)
        if pts:
            ax.plot(*zip(*pts), "o--" if len(pts) == 2 else "o-", label=name)
    for r in rows:
        if r["name"] == "seed article loop" or r["name"].startswith("job: "):
            ax.plot([r["batch"]], [r["samples_per_s"]], "s", label=r["name"])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("global batch size")
    ax.set_ylabel("samples / s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
